//! Entry points for the fuzz targets in `fuzz/`: the readers of hostile bytes that are private
//! to this crate, behind plain functions over bytes. Hidden and not an API: it changes with
//! the targets.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::Body as _;
use tokio::io::{AsyncRead, ReadBuf};

use crate::request::access;
use crate::server::proxy_protocol;
use crate::upstream::h1::body::ResponseBody;
use crate::upstream::h1::connection::Connection;
use crate::upstream::h1::response::{self, Chunk, State};

/// How a response body is delimited, as [`response_head`] decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`: this many bytes.
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
    /// No body (`HEAD`, 204, 304, a length of 0).
    Done,
}

/// An upstream's response head as the proxy reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes the head takes, its blank line included.
    pub len: usize,
    pub status: u16,
    pub http10: bool,
    /// The fields passed on to the client, in order.
    pub fields: Vec<(String, Vec<u8>)>,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Reads a response head at the start of `buf` as an exchange does: `Ok(None)` while it is
/// incomplete, `Err` (the reason) when the response is refused. `head_method`: the request
/// was a `HEAD`.
pub fn response_head(buf: &[u8], head_method: bool) -> Result<Option<ResponseHead>, String> {
    let Some((len, parsed)) = response::parse_head(buf).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let head = Bytes::copy_from_slice(&buf[..len]);
    let (mut headers, delimiting) = parsed
        .headers(&head, HeaderMap::new())
        .map_err(|e| e.to_string())?;
    let (state, keep_alive) = response::framing(
        parsed.status,
        parsed.version,
        head_method,
        &delimiting,
        &mut headers,
    )
    .map_err(|e| e.to_string())?;
    let framing = match state {
        State::Length(n) => Framing::Length(n),
        State::Chunked(_) => Framing::Chunked,
        State::Close => Framing::Close,
        State::Done => Framing::Done,
    };
    Ok(Some(ResponseHead {
        len,
        status: parsed.status.as_u16(),
        http10: parsed.version == http::Version::HTTP_10,
        fields: fields(&headers),
        framing,
        keep_alive,
    }))
}

/// What a response body reader delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedBody {
    /// The data frames, joined.
    pub data: Vec<u8>,
    /// The trailer fields of a chunked body, in order.
    pub trailers: Vec<(String, Vec<u8>)>,
    pub end: BodyEnd,
    /// Bytes of the pieces put in the connection's buffer by then: with one byte per piece,
    /// the bytes the reader needed to come to its end.
    pub fed: usize,
}

/// How reading a body ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BodyEnd {
    /// The body is complete.
    Complete,
    /// Every piece was used and the reader wants more (the upstream never closes here).
    #[default]
    Starved,
    /// The reader refused what it read; the reason.
    Failed(String),
}

/// Reads a response body delimited by `framing` through the reader the proxy uses, from a
/// connection on which `pieces` arrive one read at a time, in order. Bytes after the end of
/// the body are left unread, as they would be on the connection.
///
/// The connection is a loopback socket whose peer never sends: each time the reader asks the
/// socket for more, the next piece is put in the connection's buffer instead.
pub fn response_body(framing: Framing, pieces: &[&[u8]]) -> Result<DecodedBody, io::Error> {
    let runtime = runtime()?;
    let stream = {
        let _entered = runtime.enter();
        tokio::net::TcpStream::from_std(idle_socket()?)?
    };
    let state = match framing {
        Framing::Length(0) | Framing::Done => State::Done,
        Framing::Length(n) => State::Length(n),
        Framing::Chunked => State::Chunked(Chunk::Size),
        Framing::Close => State::Close,
    };
    let mut body = ResponseBody {
        conn: Some(Connection::new(tokio_util::either::Either::Left(stream))),
        state,
        reuse: None,
    };
    if matches!(body.state, State::Done) {
        body.release();
    }
    let mut decoded = DecodedBody::default();
    let mut pieces = pieces.iter();
    let mut cx = Context::from_waker(Waker::noop());
    decoded.end = loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(None) => break BodyEnd::Complete,
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => decoded.data.extend_from_slice(&data),
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        decoded.trailers.extend(fields(&trailers));
                    }
                }
            },
            Poll::Ready(Some(Err(e))) => break BodyEnd::Failed(e.to_string()),
            // Only a read from the socket waits.
            Poll::Pending => match (pieces.next(), body.conn.as_mut()) {
                (Some(piece), Some(conn)) => {
                    conn.buf.extend_from_slice(piece);
                    decoded.fed += piece.len();
                }
                _ => break BodyEnd::Starved,
            },
        }
    };
    drop(body);
    // Closed sockets are released from the runtime's driver only when it turns.
    runtime.block_on(tokio::task::yield_now());
    Ok(decoded)
}

/// Reads a PROXY protocol header from a connection on which `pieces` arrive one read at a
/// time (each after the reader has been made to wait once), then the connection ends. The
/// header's addresses (`None` when it gives none) or why it was refused, and how many bytes
/// the reader took from the connection.
pub fn proxy_header(pieces: &[&[u8]]) -> Result<(ProxyAddresses, usize), io::Error> {
    let mut io = Pieces {
        pieces: pieces.to_vec(),
        next: 0,
        at: 0,
        taken: 0,
        waited: false,
    };
    let read = runtime()?.block_on(proxy_protocol::read_header(&mut io, Duration::from_secs(5)));
    let addresses = read
        .map(|h| (h.source, h.destination))
        .map_err(|e| e.to_string());
    Ok((addresses, io.taken))
}

/// A PROXY header's source and destination, or why it was refused.
pub type ProxyAddresses = Result<(Option<SocketAddr>, Option<SocketAddr>), String>;

/// The user and password of an `Authorization` field, as basic authentication reads them.
pub fn basic_credentials(authorization: &[u8]) -> Option<(String, String)> {
    access::decode(&HeaderValue::from_bytes(authorization).ok()?)
}

/// Whether `password` matches an htpasswd `hash`, as basic authentication verifies it.
pub fn verify_password(password: &str, hash: &str) -> bool {
    access::verify_password(password, hash)
}

fn fields(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

/// One current-thread runtime for every call: building one per input would cost more than
/// the parse.
fn runtime() -> io::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
        .ok_or_else(|| io::Error::other("no runtime"))
}

/// A new descriptor of a connected loopback socket whose peer never sends nor closes.
fn idle_socket() -> io::Result<std::net::TcpStream> {
    static PAIR: OnceLock<Option<(std::net::TcpStream, std::net::TcpStream)>> = OnceLock::new();
    let pair = PAIR.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
        let ours = std::net::TcpStream::connect(listener.local_addr().ok()?).ok()?;
        let (peer, _) = listener.accept().ok()?;
        ours.set_nonblocking(true).ok()?;
        Some((ours, peer))
    });
    let (ours, _peer) = pair
        .as_ref()
        .ok_or_else(|| io::Error::other("no loopback connection"))?;
    ours.try_clone()
}

/// A connection that delivers its pieces one read at a time, making the reader wait once
/// before each, then ends; counts what was taken.
struct Pieces<'a> {
    pieces: Vec<&'a [u8]>,
    next: usize,
    /// How much of `pieces[next]` was taken.
    at: usize,
    taken: usize,
    waited: bool,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this
            .pieces
            .get(this.next)
            .is_some_and(|p| this.at == p.len())
        {
            this.next += 1;
            this.at = 0;
        }
        let Some(piece) = this.pieces.get(this.next) else {
            return Poll::Ready(Ok(()));
        };
        if !this.waited {
            this.waited = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = buf.remaining().min(piece.len() - this.at);
        buf.put_slice(&piece[this.at..this.at + n]);
        this.at += n;
        this.taken += n;
        if this.at == piece.len() {
            this.waited = false;
        }
        Poll::Ready(Ok(()))
    }
}
