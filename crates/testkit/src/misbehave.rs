//! Backends that fail the ways a proxy must cope with: one that never answers, one that resets
//! mid-response, an address that refuses, a slow one, one that drops its first connections,
//! an HTTP/1.1 echo behind TLS, and one that sends scripted bytes. Each listens on `127.0.0.1`
//! and stops when dropped.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::certs::TestCert;
use crate::echo::Echo;

fn localhost() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
}

/// A TLS server configuration presenting `cert` and offering `alpn`.
pub(crate) fn tls_server_config(
    cert: &TestCert,
    alpn: &[&str],
) -> std::io::Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(std::io::Error::other)?;
    let key =
        PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(std::io::Error::other)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(std::io::Error::other)?;
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// Counts of what a misbehaving backend saw.
#[derive(Debug, Default)]
struct Counts {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// A listener task that owns its connections: aborting it closes them all.
#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl Server {
    /// Accepts on an ephemeral port and runs `handle` for each connection.
    async fn start<F, Fut>(handle: F) -> std::io::Result<Server>
    where
        F: Fn(TcpStream, Arc<Counts>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(localhost()).await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        shared.connections.fetch_add(1, Ordering::SeqCst);
                        connections.spawn(handle(stream, shared.clone()));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(Server { addr, counts, task })
    }

    fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads until the end of a request head (`\r\n\r\n`); false on EOF or error first.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    return true;
                }
            }
        }
    }
}

/// Accepts connections and reads from them, but never answers and never closes them.
#[derive(Debug)]
pub struct Hang(Server);

impl Hang {
    pub async fn start() -> std::io::Result<Hang> {
        Server::start(|mut stream, counts| async move {
            let mut buf = [0u8; 4096];
            // How much of a `\r\n\r\n` the bytes so far end with, across reads.
            let mut matched = 0usize;
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                for &byte in &buf[..n] {
                    matched = match (matched, byte) {
                        (0 | 2, b'\r') | (1 | 3, b'\n') => matched + 1,
                        (_, b'\r') => 1,
                        _ => 0,
                    };
                    if matched == 4 {
                        counts.requests.fetch_add(1, Ordering::SeqCst);
                        matched = 0;
                    }
                }
            }
            // The peer closed its side: hold ours open until the server is dropped.
            std::future::pending::<()>().await;
        })
        .await
        .map(Hang)
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    pub fn port(&self) -> u16 {
        self.0.addr.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.0.connections()
    }

    /// HTTP/1 request heads received so far (counted by their `\r\n\r\n`).
    pub fn requests(&self) -> usize {
        self.0.requests()
    }
}

/// Answers each request with `200`, headers that promise [`ResetMidResponse::PROMISED`] bytes
/// and only [`ResetMidResponse::SENT`] of them, then resets the connection (`SO_LINGER` 0).
#[derive(Debug)]
pub struct ResetMidResponse(Server);

impl ResetMidResponse {
    /// The `Content-Length` announced.
    pub const PROMISED: usize = 1000;
    /// The body bytes actually sent before the reset.
    pub const SENT: usize = 100;

    pub async fn start() -> std::io::Result<ResetMidResponse> {
        Server::start(|mut stream, counts| async move {
            if !read_head(&mut stream).await {
                return;
            }
            counts.requests.fetch_add(1, Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                Self::PROMISED
            );
            let mut response = head.into_bytes();
            response.extend(std::iter::repeat_n(b'x', Self::SENT));
            if stream.write_all(&response).await.is_err() || stream.flush().await.is_err() {
                return;
            }
            // Let the client read the head before the reset discards what it has not read.
            tokio::time::sleep(Duration::from_millis(50)).await;
            // A zero linger makes the close an RST; with zero it does not block the thread.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
        })
        .await
        .map(ResetMidResponse)
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    pub fn port(&self) -> u16 {
        self.0.addr.port()
    }

    /// Requests received (and half answered) so far.
    pub fn requests(&self) -> usize {
        self.0.requests()
    }
}

/// An address on `127.0.0.1` that refuses connections for as long as this lives: a port bound
/// and never listened on. A port bound and then released would refuse too, but any socket in
/// the machine (another test's listener, an outgoing connection) may take it meanwhile.
/// `SO_REUSEADDR` still lets a test listen there on purpose, as an endpoint coming back.
#[derive(Debug)]
pub struct Refused {
    addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl Refused {
    pub fn new() -> std::io::Result<Refused> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(localhost())?;
        Ok(Refused {
            addr: socket.local_addr()?,
            _socket: socket,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Answers every request (HTTP/1.1 or h2c) with `200` and body `slow` after a delay.
#[derive(Debug)]
pub struct Slow {
    server: Server,
    answered: Arc<AtomicUsize>,
}

impl Slow {
    pub async fn start(delay: Duration) -> std::io::Result<Slow> {
        let answered = Arc::new(AtomicUsize::new(0));
        let done = answered.clone();
        let server = Server::start(move |stream, counts| {
            let done = done.clone();
            async move {
                let service = service_fn(move |_req| {
                    let counts = counts.clone();
                    let done = done.clone();
                    async move {
                        counts.requests.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        done.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"slow",
                        ))))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        })
        .await?;
        Ok(Slow { server, answered })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }

    /// Requests received so far, answered or not.
    pub fn requests(&self) -> usize {
        self.server.requests()
    }

    /// Requests answered so far (the others were abandoned or are still waiting).
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

/// Pipes a connection to `backend` until either side closes.
async fn forward<S>(mut stream: S, backend: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Ok(mut upstream) = TcpStream::connect(backend).await {
        let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
    }
}

/// Closes its first `fail_first` connections after reading a request head, without answering;
/// later connections get the [`Echo`] backend's JSON replies (its name is `flaky`).
#[derive(Debug)]
pub struct Flaky {
    server: Server,
    echo: Echo,
    failed: Arc<AtomicUsize>,
}

impl Flaky {
    pub async fn start(fail_first: usize) -> std::io::Result<Flaky> {
        let echo = Echo::start("flaky").await?;
        let backend = echo.addr();
        let failed = Arc::new(AtomicUsize::new(0));
        let failures = failed.clone();
        let server = Server::start(move |mut stream, counts| {
            let failures = failures.clone();
            async move {
                let fail = failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| {
                        (f < fail_first).then_some(f + 1)
                    })
                    .is_ok();
                if fail {
                    if read_head(&mut stream).await {
                        counts.requests.fetch_add(1, Ordering::SeqCst);
                    }
                    drop(stream);
                } else {
                    forward(stream, backend).await;
                }
            }
        })
        .await?;
        Ok(Flaky {
            server,
            echo,
            failed,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }

    /// Connections accepted so far, failed or not.
    pub fn connections(&self) -> usize {
        self.server.connections()
    }

    /// Connections closed (or being closed) without an answer so far.
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.echo.hits()
    }
}

/// The [`Echo`] backend behind TLS offering ALPN `http/1.1` only: answers with the same JSON
/// [`crate::EchoReply`] (`version` is `HTTP/1.1`).
#[derive(Debug)]
pub struct TlsEcho {
    server: Server,
    echo: Echo,
}

impl TlsEcho {
    pub async fn start(name: &str, cert: &TestCert) -> std::io::Result<TlsEcho> {
        let echo = Echo::start(name).await?;
        let backend = echo.addr();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls_server_config(cert, &["http/1.1"])?);
        let server = Server::start(move |stream, _| {
            let acceptor = acceptor.clone();
            async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    forward(tls, backend).await;
                }
            }
        })
        .await?;
        Ok(TlsEcho { server, echo })
    }

    pub fn name(&self) -> &str {
        self.echo.name()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }

    /// TCP connections accepted so far (handshakes that failed included).
    pub fn connections(&self) -> usize {
        self.server.connections()
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.echo.hits()
    }
}

/// What a [`Scripted`] backend does with the next request head on a connection.
#[derive(Debug, Clone)]
pub enum Step {
    /// Writes these bytes, exactly, and waits for the next request.
    Answer(Vec<u8>),
    /// Writes these bytes and closes the connection.
    AnswerAndClose(Vec<u8>),
    /// Writes these bytes one at a time, each in a write of its own, and waits for the next
    /// request: every split a reader can meet.
    Trickle(Vec<u8>),
    /// Closes the connection without answering.
    Close,
}

/// An HTTP/1.1 backend that takes each request head to the next step of its connection's
/// script, so a test can send any framing, any malformation, or nothing at all. Connections
/// take the scripts in the order they arrive; after its last step a connection stays open
/// until the peer closes it. Connections beyond the scripts are closed after their first
/// request head.
#[derive(Debug)]
pub struct Scripted {
    server: Server,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
    closed_by_peer: Arc<AtomicUsize>,
}

impl Scripted {
    pub async fn start(scripts: Vec<Vec<Step>>) -> std::io::Result<Scripted> {
        let scripts = Arc::new(std::sync::Mutex::new(
            scripts
                .into_iter()
                .collect::<std::collections::VecDeque<_>>(),
        ));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let closed_by_peer = Arc::new(AtomicUsize::new(0));
        let (seen, closed) = (heads.clone(), closed_by_peer.clone());
        let server = Server::start(move |mut stream, counts| {
            let script = scripts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front()
                .unwrap_or_else(|| vec![Step::Close]);
            let (seen, closed) = (seen.clone(), closed.clone());
            async move {
                let mut pending = Vec::new();
                for step in script {
                    let Some(head) = next_head(&mut stream, &mut pending).await else {
                        closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    counts.requests.fetch_add(1, Ordering::SeqCst);
                    seen.lock().unwrap_or_else(|p| p.into_inner()).push(head);
                    match step {
                        Step::Answer(bytes) => {
                            if stream.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        Step::Trickle(bytes) => {
                            for byte in bytes {
                                if stream.write_all(&[byte]).await.is_err() {
                                    return;
                                }
                                tokio::task::yield_now().await;
                            }
                        }
                        Step::AnswerAndClose(bytes) => {
                            let _ = stream.write_all(&bytes).await;
                            return;
                        }
                        Step::Close => return,
                    }
                }
                if let Some(head) = next_head(&mut stream, &mut pending).await {
                    counts.requests.fetch_add(1, Ordering::SeqCst);
                    seen.lock().unwrap_or_else(|p| p.into_inner()).push(head);
                } else {
                    closed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
        .await?;
        Ok(Scripted {
            server,
            heads,
            closed_by_peer,
        })
    }
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub fn connections(&self) -> usize {
        self.server.connections()
    }

    pub fn requests(&self) -> usize {
        self.server.requests()
    }

    /// The request heads received, in order, as text.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Connections the peer (the proxy) closed while this backend waited for a request.
    pub fn closed_by_peer(&self) -> usize {
        self.closed_by_peer.load(Ordering::SeqCst)
    }
}

/// The next request head on `stream` (bodies are not expected), keeping what follows it in
/// `pending`; `None` once the peer closes or fails.
async fn next_head(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<String> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = pending.drain(..end + 4).collect();
            return Some(String::from_utf8_lossy(&head).into_owned());
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}
