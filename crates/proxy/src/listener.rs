//! Listeners: accept TCP connections, complete the TLS handshake on HTTPS listeners, serve
//! HTTP/1.1 and HTTP/2 (by ALPN over TLS, by prior knowledge in clear text) on each through
//! hyper-util's auto builder, time request heads and idle connections, and drain on
//! shutdown: stop accepting, let open connections finish their requests, give up at the
//! deadline.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
use crate::respond::request_timeout;
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
        // Timed by [`ClientIo`] instead: hyper's clock also runs while a keep-alive
        // connection waits for its next request, cutting it at the header timeout rather
        // than the idle one, and ends the connection without the 408 a client is owed.
        .header_read_timeout(None)
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
        let (listener, clock) = (MetricsListener::Http, HeadClock::Undecided);
        return serve_connection(server, stream, listener, clock, client, shutdown).await;
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
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    let _open = metrics.as_ref().map(|metrics| {
        metrics.tls_handshake(Handshake::Ok);
        metrics.connection(MetricsListener::Https, protocol)
    });
    let clock = match protocol {
        Protocol::Http2 => HeadClock::Off,
        Protocol::Http1 => HeadClock::Http1,
    };
    serve_connection(
        server,
        stream,
        MetricsListener::Https,
        clock,
        client,
        shutdown,
    )
    .await;
}

async fn serve_connection<S>(
    server: Arc<Server>,
    stream: S,
    listener: MetricsListener,
    clock: HeadClock,
    client: ClientSide,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(ClientIo {
        inner: stream,
        activity: activity.clone(),
        timeout: server.settings.client_header_timeout,
        clock,
        sleep: None,
        write_blocked: false,
    });
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
                let response = request.await;
                if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    // The connection becomes a tunnel: its bytes are no request heads.
                    activity.upgraded.store(true, Ordering::Relaxed);
                }
                Ok::<_, Infallible>(response)
            })
        })
    };
    let connection = server.builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let idle = server.settings.client_keepalive_timeout;
    let result = loop {
        // Busy (a request in flight, or a request head arriving, which the head clock
        // times), the connection cannot be idle for `idle` before `idle` from now: waking
        // at its last quiet moment plus `idle`, long past, would spin.
        let wake = if activity.busy() {
            tokio::time::Instant::now() + idle
        } else {
            activity.quiet_since() + idle
        };
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = shutdown.cancelled() => {
                // HTTP/1.1: finish the request in flight, then close. HTTP/2: GOAWAY, then
                // finish the open streams.
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
            _ = tokio::time::sleep_until(wake) => {
                // A keep-alive connection with nothing in flight for the whole idle timeout
                // is closed the same graceful way: a response still being written finishes.
                if activity.idle_for(idle) {
                    connection.as_mut().graceful_shutdown();
                    break connection.await;
                }
            }
        }
    };
    if activity.head_timed_out.load(Ordering::Relaxed) {
        debug!(peer = %client.peer, "request headers not received within the client header timeout; answered 408");
        if let Some(metrics) = &server.observe.metrics {
            metrics.header_timeout(listener);
        }
    } else if let Err(e) = result {
        debug!(peer = %client.peer, error = %e, "connection ended with an error");
    }
}

/// Requests in flight on one client connection, when the last one ended, and when the head
/// of the next began to arrive.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    /// Nanoseconds after `start` at which the last request ended.
    since: AtomicU64,
    /// Nanoseconds after `start`, plus one, from which the request head now arriving is
    /// timed; [`ARMED`] when its bytes have begun to arrive but the clock is not read yet; 0
    /// when none is arriving ([`ClientIo`]). Relaxed: it orders nothing else, and over
    /// HTTP/1, the only protocol timed, the connection's own task alone touches it.
    head: AtomicU64,
    /// Upgraded to a tunnel (a WebSocket): no more request heads.
    upgraded: AtomicBool,
    /// A request head did not arrive within the client header timeout: answered 408.
    head_timed_out: AtomicBool,
    start: tokio::time::Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            since: AtomicU64::new(0),
            head: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            head_timed_out: AtomicBool::new(false),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head.store(0, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .min(ARMED - 2)
    }

    fn quiet_since(&self) -> tokio::time::Instant {
        self.start + Duration::from_nanos(self.since.load(Ordering::SeqCst))
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0 || self.head.load(Ordering::Relaxed) != 0
    }

    fn idle_for(&self, idle: Duration) -> bool {
        !self.busy() && self.quiet_since().elapsed() >= idle
    }
}

/// A request head's bytes have begun to arrive; the clock is read when the connection next
/// waits for more, so that a head arriving whole costs no clock reading.
const ARMED: u64 = u64::MAX;

/// Marks a request in flight until dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.since.store(self.0.now(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a connection's request heads are timed: HTTP/1 only, as HTTP/2 has no heads
/// between requests to wait for (its frames arrive whenever they like).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadClock {
    /// Clear text, nothing read yet: HTTP/2 with prior knowledge opens with its preface,
    /// `PRI `, which the first bytes decide.
    Undecided,
    Http1,
    Off,
}

/// The client's side of a connection, as hyper reads and writes it. It times each HTTP/1
/// request head from its first byte: one not complete within the header timeout is answered
/// 408 and the connection closed. The clock starts only when bytes arrive with no request
/// in flight, so a keep-alive connection waiting for its next request is left to the idle
/// timeout; a response still being written restarts it, so the wait is the client's alone.
struct ClientIo<S> {
    inner: S,
    activity: Arc<Activity>,
    timeout: Duration,
    clock: HeadClock,
    /// Made on the first head timed, then reset to each head's deadline.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The last write could not go out: hyper is still sending a response.
    write_blocked: bool,
}

impl<S> ClientIo<S> {
    /// Bytes have arrived: decides the protocol on the first ones, and starts the head's clock
    /// when they begin a request head.
    fn arrived(&mut self, bytes: &[u8]) {
        const PREFACE: &[u8] = b"PRI ";
        if self.clock == HeadClock::Undecided {
            // The preface's first bytes come in the first read: a client sends it whole.
            let n = bytes.len().min(PREFACE.len());
            self.clock = if bytes[..n] == PREFACE[..n] {
                HeadClock::Off
            } else {
                HeadClock::Http1
            };
        }
        if self.clock != HeadClock::Http1 {
            return;
        }
        let activity = &self.activity;
        if activity.upgraded.load(Ordering::Relaxed) {
            self.clock = HeadClock::Off;
            return;
        }
        if activity.in_flight.load(Ordering::SeqCst) == 0
            && activity.head.load(Ordering::Relaxed) == 0
        {
            activity.head.store(ARMED, Ordering::Relaxed);
        }
    }

    /// Whether the head now arriving is past its deadline; if not yet, the task is woken at
    /// the deadline.
    fn head_overdue(&mut self, cx: &mut Context<'_>) -> bool {
        let activity = &self.activity;
        let mut head = activity.head.load(Ordering::Relaxed);
        if self.clock != HeadClock::Http1 || head == 0 || self.write_blocked {
            return false;
        }
        if head == ARMED {
            head = activity.now() + 1;
            activity.head.store(head, Ordering::Relaxed);
        }
        let deadline = activity.start + Duration::from_nanos(head - 1) + self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx).is_ready()
    }

    /// A write went out: a response is still being sent, so a head that began meanwhile is
    /// timed from the next wait.
    fn wrote(&mut self, result: &Poll<io::Result<usize>>) {
        self.write_blocked = result.is_pending();
        if matches!(result, Poll::Ready(Ok(n)) if *n > 0) {
            let head = &self.activity.head;
            if head.load(Ordering::Relaxed) != 0 {
                head.store(ARMED, Ordering::Relaxed);
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.clock != HeadClock::Off && buf.filled().len() > before {
                    this.arrived(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.head_overdue(cx) => {
                this.activity.head.store(0, Ordering::Relaxed);
                this.activity.head_timed_out.store(true, Ordering::Relaxed);
                // hyper is reading a head, so nothing of its own is on the way out. Sent
                // only if the socket takes it whole at once; the connection closes either
                // way, and hyper, seeing a read error, answers nothing itself.
                let answer = request_timeout();
                if let Poll::Ready(Ok(n)) = Pin::new(&mut this.inner).poll_write(cx, &answer)
                    && n == answer.len()
                {
                    let _ = Pin::new(&mut this.inner).poll_flush(cx);
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request head did not arrive within the client header timeout",
                )))
            }
            other => other,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
