//! A WebSocket echo backend over HTTP/1.1 that keeps the handshake's request headers for
//! assertions, and a client that connects to any address with a chosen `Host`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as HandshakeRequest, Response as HandshakeResponse,
};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async, client_async};

pub use tokio_tungstenite::tungstenite;
pub use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The client side of a WebSocket connection made by [`ws_connect`].
pub type WsClient = WebSocketStream<TcpStream>;

#[derive(Debug, Default)]
struct State {
    connections: AtomicUsize,
    upgraded: AtomicUsize,
    last: Mutex<Option<(String, HeaderMap)>>,
}

/// A running WebSocket echo backend on `127.0.0.1`: echoes text and binary messages, answers
/// pings (tungstenite does), closes when the client closes. Stops when dropped.
#[derive(Debug)]
pub struct WsEcho {
    name: String,
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl WsEcho {
    /// Starts on an ephemeral port.
    pub async fn start(name: &str) -> std::io::Result<WsEcho> {
        let listener =
            TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(WsEcho {
            name: name.to_owned(),
            addr,
            state,
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

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// WebSocket handshakes completed so far.
    pub fn upgrades(&self) -> usize {
        self.state.upgraded.load(Ordering::SeqCst)
    }

    /// The last handshake request's headers (`Host`, `Upgrade`, `Sec-WebSocket-*`, and what
    /// the proxy added).
    pub fn last_request_headers(&self) -> Option<HeaderMap> {
        self.last().map(|(_, headers)| headers)
    }

    /// The last handshake request's path and query.
    pub fn last_request_path(&self) -> Option<String> {
        self.last().map(|(path, _)| path)
    }

    fn last(&self) -> Option<(String, HeaderMap)> {
        self.state
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        tokio::spawn(async move {
            // The callback's signature is tungstenite's.
            #[allow(clippy::result_large_err)]
            let record = |request: &HandshakeRequest,
                          response: HandshakeResponse|
             -> Result<HandshakeResponse, ErrorResponse> {
                let path = request
                    .uri()
                    .path_and_query()
                    .map_or_else(|| request.uri().path().to_owned(), |p| p.to_string());
                *state
                    .last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((path, request.headers().clone()));
                Ok(response)
            };
            let Ok(mut ws) = accept_hdr_async(stream, record).await else {
                return;
            };
            state.upgraded.fetch_add(1, Ordering::SeqCst);
            while let Some(Ok(message)) = ws.next().await {
                let echo = match message {
                    Message::Text(_) | Message::Binary(_) => message,
                    // Pongs to pings are queued by tungstenite and go out with the next write
                    // or flush; the close reply likewise.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                        if ws.flush().await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Message::Close(_) => {
                        let _ = ws.flush().await;
                        return;
                    }
                };
                if ws.send(echo).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Opens a WebSocket to `addr` (a proxy, or a backend directly) for `ws://{host}{path}`:
/// `host` is sent in `Host`, `path` (with any query) in the request line.
pub async fn ws_connect(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<WsClient, tungstenite::Error> {
    let request = format!("ws://{host}{path}").into_client_request()?;
    ws_connect_with(addr, request).await
}

/// Like [`ws_connect`], with a handshake request built by the caller (extra headers,
/// subprotocols): start from `format!("ws://{host}{path}").into_client_request()`.
pub async fn ws_connect_with(
    addr: SocketAddr,
    request: tungstenite::handshake::client::Request,
) -> Result<WsClient, tungstenite::Error> {
    let stream = TcpStream::connect(addr).await?;
    let (ws, _response) = client_async(request, stream).await?;
    Ok(ws)
}
