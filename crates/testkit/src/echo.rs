//! An echo backend on a real socket: answers every request with JSON describing what it
//! received, so tests can see exactly what the proxy forwarded.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the echo backend saw, as it reports it in its response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoReply {
    pub name: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub host: Option<String>,
    pub version: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body_len: usize,
}

impl EchoReply {
    /// The first value of a header (names are lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// A running echo backend; stops when dropped.
#[derive(Debug)]
pub struct Echo {
    name: String,
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

/// Requests seen by an echo backend.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests whose headers arrived.
    pub received: AtomicUsize,
    /// Requests answered.
    pub answered: AtomicUsize,
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// The description of the last request that asked to be kept (`record=1`).
    pub last: std::sync::Mutex<Option<Bytes>>,
}

impl Echo {
    /// Starts on `127.0.0.1` and an ephemeral port.
    pub async fn start(name: &str) -> std::io::Result<Echo> {
        Self::bind(name, SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await
    }

    /// Starts on a given address (port 0 for an ephemeral one).
    pub async fn bind(name: &str, addr: SocketAddr) -> std::io::Result<Echo> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(serve(listener, name.to_owned(), counters.clone()));
        Ok(Echo {
            name: name.to_owned(),
            addr,
            counters,
            task,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The last request that asked to be kept (`record=1`), as the backend saw it.
    pub fn last_recorded(&self) -> Option<EchoReply> {
        let last = self.counters.last.lock().ok()?.clone()?;
        serde_json::from_slice(&last).ok()
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.counters.answered.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Requests that arrived so far, answered or not.
    pub fn received(&self) -> usize {
        self.counters.received.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests have arrived, up to `timeout`. Returns whether they did.
    pub async fn wait_received(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.received() < n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves echo replies on `listener` until the task is dropped. Public so the `vestibule-echo`
/// binary can run the same server.
pub async fn serve(listener: TcpListener, name: String, counters: Arc<Counters>) {
    let name: Arc<str> = name.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        counters.connections.fetch_add(1, Ordering::SeqCst);
        let name = name.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, name.clone(), counters.clone()));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // Whatever the proxy lets through, the echo reads: its own limit must not be
            // the one a test meets.
            builder.http1().max_headers(1000);
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// The largest body `bytes=N` makes.
const MAX_BYTES: usize = 16 << 20;

/// Answers with the JSON description. Query parameters change the behaviour for tests:
/// `delay_ms=N` waits before answering, `status=N` sets the status code, `bytes=N` answers
/// N bytes of text (at most 16 MiB) in place of the description, as a page or an asset would;
/// `header=name:value` (repeatable) adds a response field, and `record=1` keeps the request's
/// description for [`Echo::last_recorded`]: with both, an echo plays an authentication service.
async fn respond(
    req: Request<Incoming>,
    name: Arc<str>,
    counters: Arc<Counters>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    counters.received.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body_len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let query = parts.uri.query();
    if let Some(ms) = query_param(query, "delay_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = query_param(query, "status")
        .and_then(|v| v.parse().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    counters.answered.fetch_add(1, Ordering::SeqCst);
    let (body, content_type) = match query_param(query, "bytes").and_then(|v| v.parse().ok()) {
        Some(n) => (padding(n), "text/plain"),
        None => (describe(&parts, &name, body_len), "application/json"),
    };
    if query_param(query, "record").is_some()
        && let Ok(mut last) = counters.last.lock()
    {
        *last = Some(describe(&parts, &name, body_len));
    }
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    let added = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.strip_prefix("header="))
        .filter_map(|field| field.split_once(':'));
    for (field, value) in added {
        if let (Ok(field), Ok(value)) = (
            http::HeaderName::from_bytes(field.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            headers.append(field, value);
        }
    }
    Ok(response)
}

/// `n` bytes of text (at most [`MAX_BYTES`]), cut from one buffer made once, so that
/// answering a large body costs the backend no allocation or fill per request.
fn padding(n: usize) -> Bytes {
    static PADDING: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    PADDING
        .get_or_init(|| Bytes::from(vec![b'x'; MAX_BYTES]))
        .slice(..n.min(MAX_BYTES))
}

/// The request as [`EchoReply`] JSON.
fn describe(parts: &http::request::Parts, name: &str, body_len: usize) -> Bytes {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let host = parts
        .headers
        .get(http::header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    let reply = EchoReply {
        name: name.to_owned(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        host,
        version: format!("{:?}", parts.version),
        headers,
        body_len,
    };
    Bytes::from(serde_json::to_vec(&reply).unwrap_or_default())
}
