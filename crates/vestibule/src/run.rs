//! `vestibule run`: wires a source, the compile pipeline, the data plane, the listeners and
//! the admin server together, and shuts them down in order on a signal.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use vestibule_controller::{Debounce, ManifestSource, Publisher, run_pipeline};
use vestibule_proxy::{
    AccessLog, DataPlane, Listener, Metrics, MetricsOptions, Observability, Server,
    self_signed_certificate, server_config,
};

use crate::admin::{self, AdminState};
use crate::cli::RunArgs;
use crate::cluster;
use crate::metrics::{AccessLogCollector, ConfigCollector};

/// Files: let a burst of writes (an editor's save, `kubectl`-style multi-file updates)
/// finish before reading.
const FILE_DEBOUNCE: Debounce = Debounce {
    holdoff: Duration::from_millis(100),
    max_delay: Duration::from_secs(1),
};

/// Compiles: coalesce changes that arrive together, but never hold one back for long.
const COMPILE_DEBOUNCE: Debounce = Debounce {
    holdoff: Duration::from_millis(50),
    max_delay: Duration::from_millis(500),
};

/// For sources whose snapshots come settled.
const SETTLED: Debounce = Debounce {
    holdoff: Duration::ZERO,
    max_delay: Duration::ZERO,
};

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // One provider for the whole process, before anything builds a TLS configuration. An
    // error means one is installed already, which is as good.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // One worker: a current-thread runtime on the main thread, without the work-stealing
    // scheduler's cross-thread bookkeeping (wake-ups, atomics, a parked driver thread),
    // which is pure overhead when there is no other worker to steal from.
    let mut runtime = if args.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    runtime.enable_all().thread_name("vestibule");
    if args.worker_threads > 1 {
        runtime.worker_threads(args.worker_threads);
    }
    let runtime = runtime.build().context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut options = args.compile.options()?;
    options.proxy = args.proxy.policy();
    let default_policy = Arc::new(options.proxy.clone());
    let options = Arc::new(options);
    if args.manifests.is_empty() {
        args.cluster.check().map_err(anyhow::Error::msg)?;
    }
    let publisher = Publisher::new();
    let metrics = args.metrics.then(|| {
        Metrics::new(MetricsOptions {
            per_host: args.metrics_per_host,
        })
    });
    let access_log = args
        .access_log()
        .map(|format| AccessLog::start(format, access_log_output()));
    let dataplane = Arc::new(
        DataPlane::with_metrics(default_policy, metrics.clone())
            .with_limit_max_clients(args.limit_max_clients),
    );
    let fallback = self_signed_certificate().context("making the default TLS certificate")?;
    if args.compile.default_ssl_certificate.is_none() {
        info!(
            subject = %fallback.info.subject,
            "no --default-ssl-certificate: serving a self-signed certificate generated at \
             start-up to handshakes for names without a certificate of their own"
        );
    }
    let settings = args.proxy_settings();
    let tls_config =
        server_config(dataplane.clone(), &fallback, &settings).context("configuring TLS")?;
    let cluster_handles = Arc::new(std::sync::OnceLock::new());
    let mut registry = prometheus_client::registry::Registry::default();
    if let Some(metrics) = &metrics {
        metrics.register(&mut registry);
    }
    if let Some(log) = &access_log {
        registry.register_collector(Box::new(AccessLogCollector(log.clone())));
    }
    registry.register_collector(Box::new(ConfigCollector {
        publisher: publisher.clone(),
        cluster: cluster_handles.clone(),
        dataplane: dataplane.clone(),
    }));
    let dashboard = args.dashboard.then(|| crate::dashboard::Sources {
        dataplane: dataplane.clone(),
        metrics: metrics.clone(),
    });
    let state = AdminState::new(
        publisher.clone(),
        fallback.info.clone(),
        registry,
        dashboard,
    );
    tokio::spawn(install_each_generation(
        publisher.clone(),
        dataplane.clone(),
        state.clone(),
    ));

    // Every address is bound before any configuration is read, so a taken port fails the
    // start at once; the admin server answers (not ready) while the first lists run.
    let http = Listener::bind_http(args.http_addr).await?;
    let https = Listener::bind_https(args.https_addr, tls_config).await?;
    let admin_listener = TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding the admin address {}", args.admin_addr))?;
    info!(
        listener = "admin",
        address = %admin_listener.local_addr().unwrap_or(args.admin_addr),
        "listening"
    );
    tokio::spawn(admin::serve(admin_listener, state.clone()));

    let shutdown = CancellationToken::new();
    let (source_rx, election) = if args.manifests.is_empty() {
        let started = tokio::select! {
            started = cluster::start(&args, &options, &publisher, shutdown.clone()) => started?,
            signal = shutdown_signal() => {
                info!(signal = signal?, "stopped before the first configuration was read");
                return Ok(ExitCode::SUCCESS);
            }
        };
        let _ = cluster_handles.set(started.handles);
        (started.source, Some(started.election))
    } else {
        let source = ManifestSource::open(args.manifests.clone()).context("reading manifests")?;
        let (source_tx, source_rx) = watch::channel(Arc::new(source.current()));
        tokio::spawn(async move {
            if let Err(e) = source.watch(source_tx, FILE_DEBOUNCE).await {
                error!(error = %e, "the manifest source stopped; the last configuration stays in service");
            }
        });
        (source_rx, None)
    };
    // The cluster source sends only settled snapshots already; waiting again would only add
    // latency.
    let debounce = if args.manifests.is_empty() {
        SETTLED
    } else {
        COMPILE_DEBOUNCE
    };
    tokio::spawn(run_pipeline(
        source_rx,
        options,
        publisher.clone(),
        debounce,
    ));

    let grace = args.shutdown_grace_period;
    let server = Server::with_observability(
        dataplane,
        settings,
        Observability {
            metrics,
            access_log,
        },
    );
    let mut http_task = tokio::spawn(http.serve(server.clone(), shutdown.clone(), grace));
    let mut https_task = tokio::spawn(https.serve(server, shutdown.clone(), grace));

    let signal = tokio::select! {
        signal = shutdown_signal() => signal?,
        result = &mut http_task => {
            result.context("the HTTP listener failed")?;
            bail!("the HTTP listener stopped unexpectedly");
        }
        result = &mut https_task => {
            result.context("the HTTPS listener failed")?;
            bail!("the HTTPS listener stopped unexpectedly");
        }
    };
    info!(signal, grace_period = ?grace, "shutting down: readiness off, draining connections");
    state.draining.store(true, Ordering::SeqCst);
    // Also hands the leader lease over, while the connections drain.
    shutdown.cancel();
    tokio::select! {
        results = async { tokio::join!(http_task, https_task) } => {
            let left = results.0.context("the HTTP listener failed while draining")?
                + results.1.context("the HTTPS listener failed while draining")?;
            if let Some(election) = election {
                let _ = election.await;
            }
            info!(closed_at_deadline = left, "stopped");
            Ok(ExitCode::SUCCESS)
        }
        signal = shutdown_signal() => {
            let signal = signal?;
            warn!(signal, "second signal: exiting without waiting for the drain");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Installs every published configuration into the data plane, and records the generation
/// for readiness.
async fn install_each_generation(
    publisher: Arc<Publisher>,
    dataplane: Arc<DataPlane>,
    state: Arc<AdminState>,
) {
    let mut generations = publisher.subscribe();
    loop {
        let announced = *generations.borrow_and_update();
        if announced > 0
            && let Some(published) = publisher.current()
        {
            dataplane.install(published.table.clone());
            state
                .installed
                .store(published.generation, Ordering::SeqCst);
            info!(generation = published.generation, "configuration installed");
        }
        if generations.changed().await.is_err() {
            return;
        }
    }
}

/// Standard output, where the access log goes.
fn access_log_output() -> Box<dyn std::io::Write + Send> {
    #[cfg(target_os = "linux")]
    widen_stdout_pipe();
    Box::new(std::io::stdout())
}

/// How much a pipe on standard output should hold: the access log's 50 ms batch of JSON lines
/// at 50,000 requests/s, where Linux's default of 64 KiB holds a fraction of one.
#[cfg(target_os = "linux")]
const STDOUT_PIPE_SIZE: usize = 1 << 20;

/// Widens standard output's buffer when it is a pipe, as it is in a container, where the
/// runtime reads it. With the default, the log's writer fills the pipe partway through each
/// batch and sleeps until the reader catches up, many times a second, which costs CPU per
/// request (`bench/README.md` has the figure). Pages are taken only as lines wait in the
/// pipe.
/// Never narrows a pipe already wider, and stays within the system's limit for unprivileged
/// processes (`/proc/sys/fs/pipe-max-size`).
#[cfg(target_os = "linux")]
fn widen_stdout_pipe() {
    let stdout = std::io::stdout();
    // Not a pipe (a terminal, a file): nothing to do.
    let Ok(current) = rustix::pipe::fcntl_getpipe_size(&stdout) else {
        return;
    };
    let target = stdout_pipe_target();
    if current >= target {
        return;
    }
    match rustix::pipe::fcntl_setpipe_size(&stdout, target) {
        Ok(size) => tracing::debug!(size, "widened the standard output pipe"),
        Err(error) => tracing::debug!(%error, current, "cannot widen the standard output pipe"),
    }
}

/// [`STDOUT_PIPE_SIZE`], or the system's limit when that is lower.
#[cfg(target_os = "linux")]
fn stdout_pipe_target() -> usize {
    std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|max| max.trim().parse::<usize>().ok())
        .map_or(STDOUT_PIPE_SIZE, |max| max.min(STDOUT_PIPE_SIZE))
}

async fn shutdown_signal() -> anyhow::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("listening for Ctrl-C")?;
        Ok("Ctrl-C")
    }
}
