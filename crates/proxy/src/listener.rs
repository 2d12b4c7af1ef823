//! Listeners: accept TCP connections, complete the TLS handshake on HTTPS listeners, serve
//! HTTP/1.1 and HTTP/2 (by ALPN over TLS, by prior knowledge in clear text) on each through
//! hyper-util's auto builder, and drain on shutdown: stop accepting, let open connections
//! finish their requests, give up at the deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::rt::{Read, Write};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::dataplane::DataPlane;
use crate::forward::handle;
use crate::headers::ClientSide;
use crate::metrics::{Handshake, Listener as MetricsListener, Protocol};
use crate::proxy_protocol::read_header;
use crate::upstream::Upstreams;
use crate::{Observability, ProxySettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound listening socket, not yet serving.
pub struct Listener {
    tcp: TcpListener,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.addr)
            .field("scheme", &self.scheme())
            .finish()
    }
}

impl Listener {
    /// A clear-text listener.
    pub async fn bind_http(addr: SocketAddr) -> Result<Listener, ServeError> {
        Self::bind(addr, None).await
    }

    /// A listener that terminates TLS with `config` (see [`crate::server_config`]).
    pub async fn bind_https(
        addr: SocketAddr,
        config: Arc<ServerConfig>,
    ) -> Result<Listener, ServeError> {
        Self::bind(addr, Some(TlsAcceptor::from(config))).await
    }

    async fn bind(addr: SocketAddr, tls: Option<TlsAcceptor>) -> Result<Listener, ServeError> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let addr = tcp
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let listener = Listener { tcp, addr, tls };
        // Logged at bind: from here on the kernel queues connections, even while the first
        // configuration is still being read.
        info!(listener = listener.scheme().name(), address = %addr, "listening");
        Ok(listener)
    }

    pub fn scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }

    /// The address actually bound (with the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled, then drains: returns once every connection has
    /// finished, or at `drain_deadline`, whichever comes first. Returns the number of
    /// connections still open at that point.
    pub async fn serve(
        self,
        server: Arc<Server>,
        shutdown: CancellationToken,
        drain_deadline: Duration,
    ) -> usize {
        let tracker = TaskTracker::new();
        let scheme = self.scheme();
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.tcp.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let client =
                        ClientSide::new(peer.ip(), self.addr.port(), scheme == Scheme::Https);
                    tracker.spawn(accept_connection(
                        server.clone(),
                        stream,
                        self.tls.clone(),
                        client,
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // Usually out of file descriptors: wait for some to be freed rather than
                    // spin on the error.
                    warn!(address = %self.addr, error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        drop(self.tcp);
        tracker.close();
        let open = tracker.len();
        info!(address = %self.addr, open_connections = open, "stopped accepting; draining");
        if tokio::time::timeout(drain_deadline, tracker.wait())
            .await
            .is_err()
        {
            let left = tracker.len();
            warn!(address = %self.addr, open_connections = left, "drain deadline reached");
            return left;
        }
        0
    }
}

/// What every listener hands its connections to: the installed configuration, the HTTP
/// settings, and one upstream connection pool, so that the HTTP and HTTPS listeners reuse the
/// same keep-alive connections to each endpoint.
pub struct Server {
    dataplane: Arc<DataPlane>,
    upstreams: Upstreams,
    builder: auto::Builder<TokioExecutor>,
    settings: ProxySettings,
    observe: Observability,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Server {
    pub fn new(dataplane: Arc<DataPlane>, settings: ProxySettings) -> Arc<Server> {
        Self::with_observability(dataplane, settings, Observability::default())
    }

    /// A server that records request metrics and writes access log lines.
    pub fn with_observability(
        dataplane: Arc<DataPlane>,
        settings: ProxySettings,
        observe: Observability,
    ) -> Arc<Server> {
        Arc::new(Server {
            dataplane,
            upstreams: Upstreams::new(&settings.upstream),
            builder: builder(&settings),
            settings,
            observe,
        })
    }
}

fn builder(settings: &ProxySettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Room for the largest request line and header block we accept, so that our own check
    // answers 414 or 431 for what is merely too large, and hyper refuses only the absurd.
    let head = settings.max_uri_bytes + settings.max_request_header_bytes + 1024;
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.client_header_timeout)
        .max_buf_size(head.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(head).unwrap_or(u32::MAX))
        // Rapid reset (CVE-2023-44487): streams a client opens and cancels at once still
        // cost work; past this many pending resets, or this many protocol errors, the
        // connection is closed with GOAWAY.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(1024))
        .enable_connect_protocol();
    builder
}

/// Completes the TLS handshake when there is one, then serves the connection.
async fn accept_connection(
    server: Arc<Server>,
    mut stream: TcpStream,
    tls: Option<TlsAcceptor>,
    mut client: ClientSide,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    if server.settings.proxy_protocol {
        // The load balancer in front speaks first; until it has, nothing else is read.
        let timeout = server.settings.client_header_timeout;
        match read_header(&mut stream, timeout).await {
            Ok(header) => {
                if let Some(source) = header.source {
                    client.set_peer(source.ip());
                }
            }
            Err(e) => {
                debug!(peer = %client.peer, error = %e, "no valid PROXY protocol header; connection closed");
                return;
            }
        }
    }
    let metrics = server.observe.metrics.clone();
    let Some(acceptor) = tls else {
        // The connection's protocol, for the metrics: HTTP/2 with prior knowledge opens with
        // its preface, anything else is HTTP/1.
        let _open = match &metrics {
            Some(metrics) => {
                let mut start = [0u8; 4];
                let peeked = tokio::time::timeout(
                    server.settings.client_header_timeout,
                    stream.peek(&mut start),
                )
                .await;
                let protocol = match peeked {
                    Ok(Ok(4)) if &start == b"PRI " => Protocol::Http2,
                    Ok(Ok(_)) => Protocol::Http1,
                    // Closed or silent before a byte: not a connection worth counting.
                    _ => return,
                };
                Some(metrics.connection(MetricsListener::Http, protocol))
            }
            None => None,
        };
        return serve_connection(server, TokioIo::new(stream), client, shutdown).await;
    };
    let handshake = tokio::time::timeout(
        server.settings.tls_handshake_timeout,
        acceptor.accept(stream),
    );
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                debug!(peer = %client.peer, error = %e, "TLS handshake failed");
                if let Some(metrics) = &metrics {
                    metrics.tls_handshake(Handshake::Failed);
                }
                return;
            }
            Err(_) => {
                debug!(peer = %client.peer, "TLS handshake timed out");
                if let Some(metrics) = &metrics {
                    metrics.tls_handshake(Handshake::TimedOut);
                }
                return;
            }
        },
        _ = shutdown.cancelled() => return,
    };
    let _open = metrics.as_ref().map(|metrics| {
        metrics.tls_handshake(Handshake::Ok);
        let protocol = match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        metrics.connection(MetricsListener::Https, protocol)
    });
    serve_connection(server, TokioIo::new(stream), client, shutdown).await;
}

async fn serve_connection<I>(
    server: Arc<Server>,
    io: I,
    client: ClientSide,
    shutdown: CancellationToken,
) where
    I: Read + Write + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let service = {
        let server = server.clone();
        let activity = activity.clone();
        service_fn(move |request| {
            let server = server.clone();
            let activity = activity.clone();
            // Boxed: hyper moves the future it is given into its own slot, and a box moves
            // as a pointer. The request's own future is boxed apart: awaited inline, it
            // would take its size twice over in this one (once where it is made, once
            // where it is awaited), and every byte of that is copied per request.
            Box::pin(async move {
                let _busy = activity.begin();
                let request = Box::pin(handle(
                    &server.dataplane,
                    &server.upstreams,
                    &server.settings,
                    &server.observe,
                    client,
                    request,
                ));
                Ok::<_, Infallible>(request.await)
            })
        })
    };
    let connection = server.builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let idle = server.settings.client_keepalive_timeout;
    let result = loop {
        let quiet_until = activity.quiet_since() + idle;
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = shutdown.cancelled() => {
                // HTTP/1.1: finish the request in flight, then close. HTTP/2: GOAWAY, then
                // finish the open streams.
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
            _ = tokio::time::sleep_until(quiet_until) => {
                // A keep-alive connection with nothing in flight for the whole idle timeout
                // is closed the same graceful way: a response still being written finishes.
                if activity.idle_for(idle) {
                    connection.as_mut().graceful_shutdown();
                    break connection.await;
                }
            }
        }
    };
    if let Err(e) = result {
        debug!(peer = %client.peer, error = %e, "connection ended with an error");
    }
}

/// Requests in flight on one client connection, and when the last one ended.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    /// Nanoseconds after `start` at which the last request ended.
    since: AtomicU64,
    start: tokio::time::Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            since: AtomicU64::new(0),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    fn quiet_since(&self) -> tokio::time::Instant {
        self.start + Duration::from_nanos(self.since.load(Ordering::SeqCst))
    }

    fn idle_for(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && self.quiet_since().elapsed() >= idle
    }
}

/// Marks a request in flight until dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let at = u64::try_from(self.0.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.since.store(at, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
