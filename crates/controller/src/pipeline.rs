//! The compile loop: take the source's latest snapshot, compile it on a blocking thread,
//! publish, then wait for the next settled change.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tracing::{Instrument, debug, error, info, info_span};
use vestibule_translate::{CertMemory, Context, Options, compile_with, unix_now};

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
    loop {
        let current = source.borrow_and_update().clone();
        let span = info_span!("compile", objects = current.snapshot.len());
        async {
            let started = Instant::now();
            let opts = options.clone();
            let input = current.clone();
            let remembered = memory.clone();
            let compiled = tokio::task::spawn_blocking(move || {
                let context = Context {
                    options: &opts,
                    memory: &remembered,
                    now: unix_now(),
                };
                compile_with(&input.snapshot, context)
            })
            .await;
            let elapsed = started.elapsed();
            match compiled {
                Ok(mut compiled) => {
                    memory = Arc::new(std::mem::take(&mut compiled.memory));
                    let errors = compiled.report.errors().count();
                    let warnings = compiled.report.diagnostics.len() - errors;
                    let _publish = info_span!("publish").entered();
                    for diagnostic in compiled.report.diagnostics.iter().take(100) {
                        debug!(object = %diagnostic.object, field = %diagnostic.field, severity = ?diagnostic.severity, "{}", diagnostic.message);
                    }
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
        if !debounce.settle(&mut source).await {
            return;
        }
    }
}
