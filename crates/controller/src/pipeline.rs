//! The compile loop: take the source's latest snapshot, compile it on a blocking thread,
//! publish, then wait for the next settled change, or for a served certificate to expire.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{Instrument, debug, error, info, info_span, warn};
use vestibule_translate::{CertMemory, Context, Diagnostic, Options, compile_with, unix_now};

use crate::publish::{ObjectCounts, Publisher};
use crate::{Debounce, SourceSnapshot};

/// Compiles and publishes every settled change of `source` until the source is dropped.
/// A compile that panics is logged and the last good configuration stays published.
pub async fn run_pipeline(
    mut source: watch::Receiver<Arc<SourceSnapshot>>,
    options: Arc<Options>,
    publisher: Arc<Publisher>,
    debounce: Debounce,
) {
    // Each compile hands the next one the certificates that were good, so a Secret that goes
    // bad keeps serving its last good certificate.
    let mut memory = Arc::new(CertMemory::default());
    // The soonest expiry among the certificates served. A compile drops expired certificates,
    // so one that expires while served needs a compile of its own: nothing else changes.
    let mut next_expiry: Option<i64> = None;
    // Errors already logged: each is logged when it appears, not again on every compile.
    let mut logged: HashSet<Diagnostic> = HashSet::new();
    loop {
        let current = source.borrow_and_update().clone();
        let span = info_span!("compile", objects = current.snapshot.len());
        async {
            let started = Instant::now();
            let opts = options.clone();
            let input = current.clone();
            let remembered = memory.clone();
            let now = unix_now();
            let compiled = tokio::task::spawn_blocking(move || {
                let context = Context {
                    options: &opts,
                    memory: &remembered,
                    now,
                };
                compile_with(&input.snapshot, context)
            })
            .await;
            let elapsed = started.elapsed();
            match compiled {
                Ok(mut compiled) => {
                    memory = Arc::new(std::mem::take(&mut compiled.memory));
                    // Only expiries to come: one already past that is still served (none
                    // is, today) must not make this loop spin.
                    next_expiry = compiled.table.tls().next_expiry(now);
                    let errors = compiled.report.errors().count();
                    let warnings = compiled.report.warnings().count();
                    let _publish = info_span!("publish").entered();
                    for diagnostic in compiled.report.diagnostics.iter().take(100) {
                        debug!(object = %diagnostic.object, field = %diagnostic.field, severity = ?diagnostic.severity, "{}", diagnostic.message);
                    }
                    // An error is part of the object not served as written (or, failing
                    // closed, answering 503): the log says so when it first happens.
                    let errors_now: HashSet<Diagnostic> =
                        compiled.report.errors().cloned().collect();
                    for diagnostic in errors_now.difference(&logged).take(100) {
                        warn!(object = %diagnostic.object, field = %diagnostic.field, "{}", diagnostic.message);
                    }
                    logged = errors_now;
                    let generation = publisher.publish(
                        compiled,
                        current.problems.clone(),
                        ObjectCounts::of(&current.snapshot),
                        elapsed,
                    );
                    if let Some(generation) = generation {
                        info!(
                            generation,
                            compile_ms = elapsed.as_secs_f64() * 1000.0,
                            errors,
                            warnings,
                            source_problems = current.problems.len(),
                            "configuration published"
                        );
                    }
                }
                Err(e) => error!(
                    error = %e,
                    "compile failed; the last good configuration stays in service"
                ),
            }
        }
        .instrument(span)
        .await;
        tokio::select! {
            settled = debounce.settle(&mut source) => {
                if !settled {
                    return;
                }
            }
            () = passed(next_expiry) => {
                info!("a served certificate has expired; compiling again");
            }
        }
    }
}

/// Resolves once Unix time `at` is past; never for `None`.
async fn passed(at: Option<i64>) {
    let Some(at) = at else {
        return std::future::pending().await;
    };
    loop {
        let left = at.saturating_sub(unix_now());
        // A compile takes a certificate as expired once its `not_after` second is over.
        if left < 0 {
            return;
        }
        // In steps of an hour at most: the wall clock can be set while waiting, and the
        // runtime's timers do not reach years ahead.
        let step = u64::try_from(left).unwrap_or(0).saturating_add(1).min(3600);
        tokio::time::sleep(Duration::from_secs(step)).await;
    }
}
