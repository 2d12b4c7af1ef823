//! A gRPC echo backend (`vestibule.test.Echo`, over h2c or h2 with TLS) and a tonic client for
//! it that can dial one address while naming another host in `:authority`.
//!
//! The service has two methods, with hand-written prost messages (no protoc):
//!
//! ```proto
//! service Echo {
//!   rpc Unary(EchoRequest) returns (EchoReply);
//!   rpc Chat(stream EchoRequest) returns (stream EchoReply);
//! }
//! ```
//!
//! A request's `delay_ms` makes the backend wait before it answers (cut short with
//! `DEADLINE_EXCEEDED` when the request's `grpc-timeout` runs out first), and a non-zero
//! `fail_with_code` makes it fail with that `grpc-status`: in `Chat`, that ends the stream.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use http::{HeaderMap, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::server::{StreamingService, UnaryService};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::certs::TestCert;

/// The tonic this client is built with, for `Request`, `Status`, `Code` and `Streaming`.
pub use tonic;

/// The service's full name, as in the request path `/vestibule.test.Echo/Unary`.
pub const SERVICE: &str = "vestibule.test.Echo";
const UNARY_PATH: &str = "/vestibule.test.Echo/Unary";
const CHAT_PATH: &str = "/vestibule.test.Echo/Chat";

/// Errors from connecting a client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `vestibule.test.EchoRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    /// Sent back in the reply.
    #[prost(string, tag = "1")]
    pub message: String,
    /// 0 to succeed, else the `grpc-status` to fail with.
    #[prost(int32, tag = "2")]
    pub fail_with_code: i32,
    /// How long the backend waits before it answers.
    #[prost(uint32, tag = "3")]
    pub delay_ms: u32,
}

impl EchoRequest {
    /// A request that succeeds at once with `message` echoed.
    pub fn new(message: impl Into<String>) -> EchoRequest {
        EchoRequest {
            message: message.into(),
            ..EchoRequest::default()
        }
    }
}

/// `vestibule.test.EchoReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    /// The request's `message`.
    #[prost(string, tag = "1")]
    pub message: String,
    /// The name of the backend that answered.
    #[prost(string, tag = "2")]
    pub backend: String,
}

/// What a [`GrpcEcho`] saw of the last call's request head.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// `:authority` (or `Host`), as the backend received it.
    pub authority: Option<String>,
    /// e.g. `/vestibule.test.Echo/Unary`.
    pub path: String,
    /// Regular headers, among them `grpc-timeout` when the client set a deadline.
    pub headers: HeaderMap,
}

#[derive(Debug)]
struct State {
    name: Arc<str>,
    calls: AtomicUsize,
    connections: AtomicUsize,
    last: Mutex<Option<SeenRequest>>,
}

/// A running gRPC echo backend on `127.0.0.1`; stops when dropped.
#[derive(Debug)]
pub struct GrpcEcho {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl GrpcEcho {
    /// Serves h2c (HTTP/2 with prior knowledge, as gRPC does in cleartext) on an ephemeral port.
    pub async fn start(name: &str) -> std::io::Result<GrpcEcho> {
        Self::start_inner(name, None).await
    }

    /// Serves HTTP/2 over TLS with `cert`, offering ALPN `h2` only.
    pub async fn start_tls(name: &str, cert: &TestCert) -> std::io::Result<GrpcEcho> {
        let config = crate::misbehave::tls_server_config(cert, &["h2"])?;
        Self::start_inner(name, Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn start_inner(
        name: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<GrpcEcho> {
        let listener =
            TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            name: name.into(),
            calls: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            last: Mutex::new(None),
        });
        let task = tokio::spawn(accept_loop(listener, tls, state.clone()));
        Ok(GrpcEcho { addr, state, task })
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Calls (`Unary` or `Chat`) received so far.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// The request head of the last call received.
    pub fn last_request(&self) -> Option<SeenRequest> {
        self.state
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for GrpcEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_connection(stream, state).await;
                    }
                }
                None => serve_connection(stream, state).await,
            }
        });
    }
}

async fn serve_connection<S>(stream: S, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = service_fn(move |req| route(req, state.clone()));
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn route(
    req: http::Request<Incoming>,
    state: Arc<State>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    let seen = SeenRequest {
        authority: req.uri().authority().map(|a| a.to_string()).or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        }),
        path: req.uri().path().to_owned(),
        headers: req.headers().clone(),
    };
    *state
        .last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(seen);
    let codec = ProstCodec::<EchoReply, EchoRequest>::default();
    let handler = Handler(state.clone());
    let response = match req.uri().path() {
        UNARY_PATH => {
            state.calls.fetch_add(1, Ordering::SeqCst);
            tonic::server::Grpc::new(codec).unary(handler, req).await
        }
        CHAT_PATH => {
            state.calls.fetch_add(1, Ordering::SeqCst);
            tonic::server::Grpc::new(codec)
                .streaming(handler, req)
                .await
        }
        path => Status::unimplemented(format!("no method {path}")).into_http(),
    };
    Ok(response)
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[derive(Clone)]
struct Handler(Arc<State>);

/// `grpc-timeout` as a duration: an integer and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Waits `delay_ms`, fails if asked to, else echoes: what both methods do with one message.
async fn answer(
    name: &str,
    request: EchoRequest,
    deadline: Option<tokio::time::Instant>,
) -> Result<EchoReply, Status> {
    if request.delay_ms > 0 {
        let until = tokio::time::Instant::now() + Duration::from_millis(request.delay_ms.into());
        match deadline {
            Some(deadline) if deadline < until => {
                tokio::time::sleep_until(deadline).await;
                return Err(Status::deadline_exceeded(format!(
                    "{name}: deadline exceeded before the {} ms delay ended",
                    request.delay_ms
                )));
            }
            _ => tokio::time::sleep_until(until).await,
        }
    }
    if request.fail_with_code != 0 {
        return Err(Status::new(
            Code::from(request.fail_with_code),
            format!("{name} failed as asked"),
        ));
    }
    Ok(EchoReply {
        message: request.message,
        backend: name.to_owned(),
    })
}

impl UnaryService<EchoRequest> for Handler {
    type Response = EchoReply;
    type Future = BoxFuture<Result<tonic::Response<EchoReply>, Status>>;

    fn call(&mut self, request: tonic::Request<EchoRequest>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            let deadline =
                grpc_timeout(request.metadata()).map(|t| tokio::time::Instant::now() + t);
            answer(&state.name, request.into_inner(), deadline)
                .await
                .map(tonic::Response::new)
        })
    }
}

impl StreamingService<EchoRequest> for Handler {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = std::future::Ready<Result<tonic::Response<ReplyStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<EchoRequest>>) -> Self::Future {
        let name = self.0.name.clone();
        let deadline = grpc_timeout(request.metadata()).map(|t| tokio::time::Instant::now() + t);
        // One reply per message as it arrives; the first failure ends the stream.
        let replies = futures_util::stream::unfold(Some(request.into_inner()), move |incoming| {
            let name = name.clone();
            async move {
                let mut incoming = incoming?;
                match incoming.message().await {
                    Ok(Some(message)) => match answer(&name, message, deadline).await {
                        Ok(reply) => Some((Ok(reply), Some(incoming))),
                        Err(status) => Some((Err(status), None)),
                    },
                    Ok(None) => None,
                    Err(status) => Some((Err(status), None)),
                }
            }
        });
        std::future::ready(Ok(tonic::Response::new(Box::pin(replies) as ReplyStream)))
    }
}

/// A tonic client of `vestibule.test.Echo`.
#[derive(Debug, Clone)]
pub struct EchoClient {
    inner: tonic::client::Grpc<Channel>,
}

impl EchoClient {
    /// Connects (h2c) to `uri`, e.g. `http://127.0.0.1:8080`; `:authority` is the URI's.
    pub async fn connect(uri: &str) -> Result<EchoClient, BoxError> {
        let channel = Endpoint::from_shared(uri.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok(Self::from_channel(channel))
    }

    /// Connects (h2c) to `addr` while sending `authority` (e.g. `echo.test` or
    /// `echo.test:8080`) as `:authority`, as a client that resolved that host to `addr` does.
    pub async fn connect_via(addr: SocketAddr, authority: &str) -> Result<EchoClient, BoxError> {
        let origin: Uri = format!("http://{authority}").parse()?;
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .origin(origin)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok(Self::from_channel(channel))
    }

    /// Connects over TLS to `addr` (SNI `server_name`, ALPN `h2`, any certificate accepted)
    /// and sends `https://{authority}` as `:scheme` and `:authority`.
    pub async fn connect_tls_via(
        addr: SocketAddr,
        server_name: &str,
        authority: &str,
    ) -> Result<EchoClient, BoxError> {
        let origin: Uri = format!("https://{authority}").parse()?;
        let connector = TlsConnect {
            addr,
            server_name: server_name.to_owned(),
            config: crate::tls::client_config(&["h2"]),
        };
        let channel = Endpoint::from_shared(format!("https://{addr}"))?
            .origin(origin)
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(connector)
            .await?;
        Ok(Self::from_channel(channel))
    }

    /// Wraps a channel made elsewhere.
    pub fn from_channel(channel: Channel) -> EchoClient {
        EchoClient {
            inner: tonic::client::Grpc::new(channel),
        }
    }

    /// Calls `Unary`. Pass a `tonic::Request` to add metadata or a deadline
    /// (`Request::set_timeout` sends `grpc-timeout`). tonic enforces the deadline itself too:
    /// when its timer fires before an answer, the call fails with `Cancelled` and the message
    /// "Timeout expired"; a `DEADLINE_EXCEEDED` status is one that came from the other side.
    pub async fn unary(
        &mut self,
        request: impl tonic::IntoRequest<EchoRequest>,
    ) -> Result<EchoReply, Status> {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(UNARY_PATH);
        self.inner
            .unary(request.into_request(), path, ProstCodec::default())
            .await
            .map(tonic::Response::into_inner)
    }

    /// Calls `Chat` with `requests` (a `Stream` of [`EchoRequest`], or a `tonic::Request` of
    /// one). The replies come one per request as each arrives; see [`chat_channel`] to
    /// interleave sending and receiving.
    pub async fn chat(
        &mut self,
        requests: impl tonic::IntoStreamingRequest<Message = EchoRequest>,
    ) -> Result<Streaming<EchoReply>, Status> {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(CHAT_PATH);
        self.inner
            .streaming(
                requests.into_streaming_request(),
                path,
                ProstCodec::default(),
            )
            .await
            .map(tonic::Response::into_inner)
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))
    }
}

/// A sender and the stream of what it sends, for [`EchoClient::chat`]: dropping the sender
/// ends the client's half of the call.
pub fn chat_channel() -> (
    tokio::sync::mpsc::Sender<EchoRequest>,
    impl Stream<Item = EchoRequest> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|message| (message, rx))
    });
    (tx, stream)
}

/// Dials TLS to a fixed address, whatever URI the channel asks for.
#[derive(Clone)]
struct TlsConnect {
    addr: SocketAddr,
    server_name: String,
    config: Arc<rustls::ClientConfig>,
}

impl tower_service::Service<Uri> for TlsConnect {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = BoxFuture<std::io::Result<Self::Response>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let connected =
                crate::tls::connect(this.addr, Some(&this.server_name), &this.config).await?;
            Ok(TokioIo::new(connected.stream))
        })
    }
}
