//! One client connection from accept to close: the PROXY protocol header when configured,
//! the TLS handshake on HTTPS listeners (within its timeout; or for a passed-through host, a
//! splice to its Service once the ClientHello is read), then HTTP/1.1 or HTTP/2 (by ALPN
//! over TLS, by prior knowledge in clear text) through hyper-util's auto builder, each request
//! handed to the request path; closed when idle for the keep-alive timeout, and gracefully on
//! shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::{StartHandshake, TlsStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::client::ClientSide;
use super::client_io::{Activity, ClientIo, HeadClock};
use super::passthrough::{read_hello, splice};
use super::proxy_protocol::read_header;
use super::tls::TlsConfig;
use crate::body::response::ProxyBody;
use crate::dataplane::{DataPlane, Runtime};
use crate::observe::Observability;
use crate::observe::metrics::{Handshake, Listener as MetricsListener, Protocol};
use crate::request::Shared;
use crate::settings::ProxySettings;
use crate::upstream::client::Upstreams;

/// Longest an idle connection being closed gracefully may take to finish closing (the idle
/// timeout itself when shorter).
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// What every listener hands its connections to: what requests read ([`Shared`]: the
/// installed configuration, the settings, one upstream connection pool, so that the HTTP and
/// HTTPS listeners reuse the same keep-alive connections to each endpoint) and how the
/// connections are served.
pub struct Server {
    shared: Shared,
    builder: auto::Builder<TokioExecutor>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("settings", &self.shared.settings)
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
            builder: builder(&settings),
            shared: Shared {
                dataplane,
                upstreams: Upstreams::new(&settings.upstream),
                settings,
                observe,
            },
        })
    }

    fn settings(&self) -> &ProxySettings {
        &self.shared.settings
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
        .max_buf_size(head.max(8192))
        // hyper parses up to 100 fields in place and allocates room for more per request, so
        // the limit is explicit (`--max-request-header-fields`) rather than hyper's default.
        .max_headers(settings.max_request_header_fields);
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
pub(super) async fn accept_connection(
    server: Arc<Server>,
    mut stream: TcpStream,
    tls: Option<TlsConfig>,
    mut client: ClientSide,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    if server.settings().proxy_protocol {
        // The load balancer in front speaks first; until it has, nothing else is read.
        let timeout = server.settings().client_header_timeout;
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
    let Some(tls) = tls else {
        // Shared by the connection's requests, each taking a reference count.
        let client = Arc::new(client);
        return serve_clear_text(server, stream, client, shutdown).await;
    };
    let stream = match handshake(&server, stream, &tls, &client, &shutdown).await {
        Some(Handshaken::Tls(stream)) => stream,
        Some(Handshaken::Splice(stream, hello, runtime, route)) => {
            let metrics = server.shared.observe.metrics.as_ref();
            let _open =
                metrics.map(|m| m.connection(MetricsListener::Https, Protocol::Passthrough));
            return splice(stream, hello, runtime, route, client.peer).await;
        }
        None => return,
    };
    if let Some(chain) = stream.get_ref().1.peer_certificates() {
        let chain: Vec<_> = chain.iter().map(|c| c.clone().into_owned()).collect();
        client.certificates = Some(chain.into());
    }
    let client = Arc::new(client);
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    let _open = server.shared.observe.metrics.as_ref().map(|metrics| {
        metrics.tls_handshake(Handshake::Ok);
        metrics.connection(MetricsListener::Https, protocol)
    });
    let clock = match protocol {
        Protocol::Http2 => HeadClock::Off,
        _ => HeadClock::Http1,
    };
    let listener = MetricsListener::Https;
    serve_connection(server, stream, listener, clock, client, shutdown).await;
}

/// A clear-text connection, counted by its protocol when metrics are on: HTTP/2 with prior
/// knowledge opens with its preface, anything else is HTTP/1.
async fn serve_clear_text(
    server: Arc<Server>,
    stream: TcpStream,
    client: Arc<ClientSide>,
    shutdown: CancellationToken,
) {
    let _open = match &server.shared.observe.metrics {
        Some(metrics) => {
            let mut start = [0u8; 4];
            let timeout = server.settings().client_header_timeout;
            let peeked = tokio::time::timeout(timeout, stream.peek(&mut start)).await;
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
    serve_connection(server, stream, listener, clock, client, shutdown).await;
}

/// What a TLS connection's start settled.
// Made once per connection and taken apart at once; boxing the stream would cost every read
// of the connection an indirection to spare one move.
#[allow(clippy::large_enum_variant)]
enum Handshaken {
    /// Terminated here.
    Tls(TlsStream<TcpStream>),
    /// For a passed-through host: to be spliced to this route's backend, with the bytes of
    /// its ClientHello.
    Splice(TcpStream, Vec<u8>, Arc<Runtime>, vestibule_model::RouteId),
}

/// The TLS handshake, or for a passed-through host the ClientHello, within the handshake
/// timeout; `None` (counted) when it fails or times out, or when shutdown comes first.
async fn handshake(
    server: &Server,
    mut stream: TcpStream,
    tls: &TlsConfig,
    client: &ClientSide,
    shutdown: &CancellationToken,
) -> Option<Handshaken> {
    let metrics = server.shared.observe.metrics.as_ref();
    let timeout = server.settings().tls_handshake_timeout;
    // The ClientHello first: its server name says whether the connection is passed through,
    // and whether to ask for a client certificate. Its bytes are kept only while some host
    // is passed through.
    let accept = async {
        let keep = server.shared.dataplane.load().table.has_passthrough();
        let hello = read_hello(&mut stream, keep).await?;
        let runtime = server.shared.dataplane.load_full();
        let (passed, asks) = {
            let hello = hello.accepted.client_hello();
            let (table, name) = (&runtime.table, hello.server_name());
            let passed = table.passthrough(name).map(|route| route.id);
            (passed, table.asks_client_certificate(name))
        };
        if let (Some(route), Some(bytes)) = (passed, hello.bytes) {
            return Ok(Handshaken::Splice(stream, bytes, runtime, route));
        }
        drop(runtime);
        let config = if asks { &tls.asking } else { &tls.plain };
        let start = StartHandshake::from_parts(hello.accepted, stream);
        start.into_stream(config.clone()).await.map(Handshaken::Tls)
    };
    let handshake = tokio::time::timeout(timeout, accept);
    let failed = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(e)) => {
                debug!(peer = %client.peer, error = %e, "TLS handshake failed");
                Handshake::Failed
            }
            Err(_) => {
                debug!(peer = %client.peer, "TLS handshake timed out");
                Handshake::TimedOut
            }
        },
        _ = shutdown.cancelled() => return None,
    };
    if let Some(metrics) = metrics {
        metrics.tls_handshake(failed);
    }
    None
}

async fn serve_connection<S>(
    server: Arc<Server>,
    stream: S,
    listener: MetricsListener,
    clock: HeadClock,
    client: Arc<ClientSide>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let timeout = server.settings().client_header_timeout;
    let timeouts = (timeout, server.settings().client_send_timeout);
    let io = TokioIo::new(ClientIo::new(stream, activity.clone(), timeouts, clock));
    let service = {
        let server = server.clone();
        let activity = activity.clone();
        let client = client.clone();
        service_fn(move |request| {
            // Boxed: hyper moves the future it is given into its own slot, and a box moves
            // as a pointer.
            Box::pin(serve_request(
                server.clone(),
                activity.clone(),
                client.clone(),
                request,
            ))
        })
    };
    let connection = server.builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let idle = server.settings().client_keepalive_timeout;
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
                    // Nothing is in flight: what is left is HTTP/2's GOAWAY and PING, which a
                    // silent client never acknowledges. Past the grace, the socket is closed.
                    let grace = idle.min(IDLE_CLOSE_GRACE);
                    match tokio::time::timeout(grace, connection.as_mut()).await {
                        Ok(result) => break result,
                        Err(_) => break Ok(()),
                    }
                }
            }
        }
    };
    if activity.head_timed_out.load(Ordering::Relaxed) {
        debug!(peer = %client.peer, "request headers not received within the client header timeout; answered 408");
        if let Some(metrics) = &server.shared.observe.metrics {
            metrics.header_timeout(listener);
        }
    } else if let Err(e) = result {
        debug!(peer = %client.peer, error = %e, "connection ended with an error");
    }
}

/// One request on the connection, counted as in flight while it is answered.
async fn serve_request(
    server: Arc<Server>,
    activity: Arc<Activity>,
    client: Arc<ClientSide>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let _busy = activity.begin();
    // Boxed apart: awaited inline, the request's future would take its size twice over in
    // this one (once where it is made, once where it is awaited), and every byte of that is
    // copied per request.
    let response = Box::pin(server.shared.handle(&client, request)).await;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // The connection becomes a tunnel: its bytes are no request heads.
        activity.upgraded.store(true, Ordering::Relaxed);
    }
    Ok(response)
}
