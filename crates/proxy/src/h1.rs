//! HTTP/1.1 to upstreams, driven by the request's own task: the request head goes out in one
//! write, the request body (if any) follows as the client sends it while the connection is
//! watched for an early answer, the response head is parsed from the connection's buffer,
//! and the response body is read from the connection as the client side asks for it. No
//! task, channel or cross-task wake-up sits between the two sides, which is most of what a
//! pooled hyper client connection costs per request.
//!
//! Upgrades still go through hyper's client (`upstream`), which hands the connection over to
//! the tunnel.

use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::body::UpstreamBody;
use crate::headers::{Forwarded, connection_listed, is_hop_by_hop, tokens};
use crate::upstream::Return;

/// The most a response head (status line and header fields) may take: past it the upstream
/// is answered with a 502, as nginx does for "upstream sent too big header".
const MAX_HEAD: usize = 64 * 1024;
/// Header fields in one response head, or in one trailer section.
const MAX_FIELDS: usize = 128;
/// A chunk-size line with its extensions.
const MAX_CHUNK_LINE: usize = 4096;
/// Interim (1xx) responses skipped before the final one.
const MAX_INTERIM: usize = 16;
/// What one read asks the socket for.
const READ_SIZE: usize = 16 * 1024;

/// Why an HTTP/1.1 exchange with an upstream, or the reading of its response body, failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("writing the request: {0}")]
    Write(io::Error),
    #[error("reading the response: {0}")]
    Read(io::Error),
    #[error("the connection closed {0}")]
    Closed(&'static str),
    #[error("the response is not valid HTTP/1.1: {0}")]
    Parse(httparse::Error),
    #[error("the response is not valid HTTP/1.1: {0}")]
    Invalid(&'static str),
    #[error("the response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the request body: {0}")]
    RequestBody(Box<dyn std::error::Error + Send + Sync>),
}

/// A connection to an upstream, in clear text (left) or TLS (right).
pub(crate) type Stream =
    tokio_util::either::Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// An idle or busy HTTP/1.1 connection and what has been read from it but not yet used.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: Stream,
    buf: BytesMut,
}

/// A request head, written once per request and sent as it is on every attempt.
#[derive(Debug, Clone)]
pub(crate) struct RequestHead {
    bytes: Bytes,
    /// A response to HEAD has no body, whatever its header says.
    head_method: bool,
    body: BodyFraming,
}

/// How the request's body goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// There is none.
    None,
    /// As the client framed it, by the `Content-Length` it sent.
    Length,
    /// In chunks: the client sent no length (HTTP/1.1 chunks, or HTTP/2 without one).
    Chunked,
}

/// The request for the upstream, as HTTP/1.1 bytes: the method and target, `Host` first,
/// then the client's remaining fields as they are (hop-by-hop ones already removed) but for
/// those `forwarded` replaces, then `forwarded`'s. `client_fields` is the size of the
/// client's header block (as the size check measured it), so the buffer is made once at
/// about the right size.
pub(crate) fn request_head(
    method: &Method,
    target: &str,
    host: &HeaderValue,
    headers: &HeaderMap,
    forwarded: &Forwarded,
    body: BodyFraming,
    client_fields: usize,
) -> Result<RequestHead, &'static str> {
    // Anything that could end the request line early or smuggle a second one (spaces,
    // control characters) is refused rather than written. Bytes past ASCII are kept, as
    // the client's own parser let them in.
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic() || b >= 0x80) {
        return Err("the request target is not valid");
    }
    // Room for the fields Vestibule adds (`X-Forwarded-*`, `X-Real-IP`, `X-Request-ID`) too.
    let mut out =
        BytesMut::with_capacity(method.as_str().len() + target.len() + client_fields + 320);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\nhost: ");
    out.put_slice(host.as_bytes());
    out.put_slice(b"\r\n");
    let mut has_length = false;
    for (name, value) in headers {
        // A chunked body's length is its chunks': a length field beside them is how
        // requests are smuggled.
        if *name == HOST
            || (*name == CONTENT_LENGTH && body == BodyFraming::Chunked)
            || forwarded.replaces(name)
        {
            continue;
        }
        has_length |= *name == CONTENT_LENGTH;
        put_field(&mut out, name, value);
    }
    for (name, value) in forwarded.fields() {
        put_field(&mut out, name, value);
    }
    if body == BodyFraming::Chunked {
        out.put_slice(b"transfer-encoding: chunked\r\n");
    } else if !has_length
        && !matches!(
            method.as_str(),
            "GET" | "HEAD" | "DELETE" | "OPTIONS" | "TRACE"
        )
    {
        // A method whose requests usually carry a body is sent with an explicit empty one,
        // which servers that insist on a length (411) accept.
        out.put_slice(b"content-length: 0\r\n");
    }
    out.put_slice(b"\r\n");
    Ok(RequestHead {
        bytes: out.freeze(),
        head_method: *method == Method::HEAD,
        body,
    })
}

fn put_field(out: &mut BytesMut, name: &HeaderName, value: &HeaderValue) {
    out.put_slice(name.as_str().as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

/// How a failed exchange ended, for the decision to send it again on a new connection.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: H1Error,
    /// Not one byte of a response came back: on a connection that had been idle, the
    /// upstream most likely closed it as the request went out, without seeing the request.
    pub(crate) nothing_back: bool,
}

impl Connection {
    pub(crate) fn new(stream: Stream) -> Connection {
        Connection {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Whether an idle connection can take a request: the upstream has neither closed it
    /// nor sent anything unasked. Costs no system call while the socket has had no event.
    pub(crate) fn is_usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        Pin::new(&mut self.stream)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    /// Sends the request and reads the response head. The body is read through the returned
    /// [`ResponseBody`], which hands the connection back to the pool (`reuse`) once the body
    /// has all come and the connection may carry another request.
    ///
    /// The response's fields go into `fields`, emptied first: the caller passes the map the
    /// request's fields came in, whose room is already there.
    pub(crate) async fn exchange(
        mut self,
        request: &RequestHead,
        body: Option<UpstreamBody>,
        reuse: Return,
        fields: HeaderMap,
    ) -> Result<(http::response::Parts, ResponseBody), Failure> {
        let written = async {
            self.stream.write_all(&request.bytes).await?;
            self.stream.flush().await
        };
        if let Err(e) = written.await {
            return Err(Failure {
                error: H1Error::Write(e),
                nothing_back: true,
            });
        }
        // A response that began before the request body was all sent leaves the connection
        // in the middle of a request: it closes after the response.
        let mut body_unsent = false;
        // An upstream that answers early may close without reading the rest, and the write
        // then fails: the answer it wrote first is still the one to give.
        let mut write_failed = None;
        if let (Some(body), true) = (body, request.body != BodyFraming::None) {
            let chunked = request.body == BodyFraming::Chunked;
            match self.send_body(body, chunked).await {
                Ok(all_sent) => body_unsent = !all_sent,
                Err(H1Error::Write(e)) => {
                    body_unsent = true;
                    write_failed = Some(e);
                }
                Err(error) => return Err(self.failed(error)),
            }
        }
        let mut interim = 0;
        loop {
            let parsed = if self.buf.is_empty() {
                Ok(None)
            } else {
                parse_head(&self.buf)
            };
            let (head_len, parsed) = match parsed {
                Ok(Some(parsed)) => parsed,
                Ok(None) => {
                    if self.buf.len() >= MAX_HEAD {
                        return Err(self.failed(H1Error::HeadTooLarge));
                    }
                    match std::future::poll_fn(|cx| self.poll_fill(cx)).await {
                        Ok(0) => {
                            let nothing_back = self.buf.is_empty() && interim == 0;
                            let state = if nothing_back {
                                "before the response began"
                            } else {
                                "in the middle of the response head"
                            };
                            return Err(Failure {
                                error: write_failed.map_or(H1Error::Closed(state), H1Error::Write),
                                nothing_back,
                            });
                        }
                        Ok(_) => continue,
                        Err(e) => {
                            let nothing_back = self.buf.is_empty() && interim == 0;
                            return Err(Failure {
                                error: write_failed.map_or(H1Error::Read(e), H1Error::Write),
                                nothing_back,
                            });
                        }
                    }
                }
                Err(error) => return Err(self.failed(error)),
            };
            if parsed.status.is_informational() {
                // 100 Continue, 103 Early Hints: the final response follows. A 101 to a
                // request that asked for no upgrade leaves a connection that is no longer
                // HTTP.
                if parsed.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(self.failed(H1Error::Invalid("an unrequested 101")));
                }
                interim += 1;
                if interim > MAX_INTERIM {
                    return Err(self.failed(H1Error::Invalid("too many interim responses")));
                }
                self.buf.advance(head_len);
                continue;
            }
            let head = self.buf.split_to(head_len).freeze();
            let (mut headers, delimiting) = match parsed.headers(&head, fields) {
                Ok(parsed) => parsed,
                Err(error) => return Err(self.failed(error)),
            };
            let (framing, keep_alive) = match framing(
                parsed.status,
                parsed.version,
                request.head_method,
                &delimiting,
                &mut headers,
            ) {
                Ok(framing) => framing,
                Err(error) => return Err(self.failed(error)),
            };
            let mut parts = http::Response::new(()).into_parts().0;
            parts.status = parsed.status;
            parts.version = parsed.version;
            parts.headers = headers;
            let mut body = ResponseBody {
                conn: Some(self),
                state: framing,
                reuse: (keep_alive && !body_unsent).then_some(reuse),
            };
            if matches!(body.state, State::Done) {
                body.release();
            }
            return Ok((parts, body));
        }
    }

    /// Sends the request body as the client gives it, while watching the connection: a
    /// final response that begins first ends the sending (`false`), as the upstream wants no
    /// more (a 413, a 401, a redirect). Interim responses (100 Continue) do not.
    async fn send_body(&mut self, mut body: UpstreamBody, chunked: bool) -> Result<bool, H1Error> {
        let mut pending = Bytes::new();
        let mut ended = false;
        std::future::poll_fn(|cx| {
            loop {
                // The upstream's side first: anything it says may change what to do.
                if self.buf.len() < MAX_HEAD {
                    match self.poll_fill(cx) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(H1Error::Closed(
                                "while the request body was sent",
                            )));
                        }
                        Poll::Ready(Ok(_)) => match parse_head(&self.buf)? {
                            Some((len, head))
                                if head.status.is_informational()
                                    && head.status != StatusCode::SWITCHING_PROTOCOLS =>
                            {
                                self.buf.advance(len);
                                continue;
                            }
                            Some(_) => return Poll::Ready(Ok(false)),
                            None => continue,
                        },
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(H1Error::Read(e))),
                        Poll::Pending => {}
                    }
                } else {
                    // A head this large fails where heads are read.
                    return Poll::Ready(Ok(false));
                }
                if !pending.is_empty() {
                    let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &pending))
                        .map_err(H1Error::Write)?;
                    if n == 0 {
                        return Poll::Ready(Err(H1Error::Write(io::ErrorKind::WriteZero.into())));
                    }
                    pending.advance(n);
                    continue;
                }
                if ended {
                    ready!(Pin::new(&mut self.stream).poll_flush(cx)).map_err(H1Error::Write)?;
                    return Poll::Ready(Ok(true));
                }
                match ready!(Pin::new(&mut body).poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if data.is_empty() => {}
                        Ok(data) if !chunked => pending = data,
                        Ok(data) => {
                            let mut out = BytesMut::with_capacity(data.len() + 20);
                            // Writing to a BytesMut cannot fail.
                            let _ = write!(out, "{:x}\r\n", data.len());
                            out.put_slice(&data);
                            out.put_slice(b"\r\n");
                            pending = out.freeze();
                        }
                        Err(frame) => {
                            ended = true;
                            if chunked {
                                let trailers = frame.into_trailers().unwrap_or_default();
                                pending = last_chunk(&trailers);
                            }
                        }
                    },
                    None => {
                        ended = true;
                        if chunked {
                            pending = Bytes::from_static(b"0\r\n\r\n");
                        }
                    }
                    Some(Err(e)) => return Poll::Ready(Err(H1Error::RequestBody(e))),
                }
            }
        })
        .await
    }

    fn failed(&self, error: H1Error) -> Failure {
        Failure {
            error,
            nothing_back: false,
        }
    }

    /// Reads what the socket has into the buffer: the count, 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }
}

/// Parses a response head at the start of `buf`: its length and what it holds, or `None`
/// while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, ParsedHead)>, H1Error> {
    // Left uninitialised: writing out the whole array on every parse cost more than the
    // parse.
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(H1Error::Parse(e)),
    };
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Invalid("the status code"))?;
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Where each field lies in the head, so the values can be shared with the head's
    // bytes rather than copied once the buffer is split. In u32s, which a head of at most
    // MAX_HEAD bytes (and the read after it) fits: the list is half the size to move.
    let base = buf.as_ptr() as usize;
    let offset = |at: usize| u32::try_from(at).map_err(|_| H1Error::HeadTooLarge);
    let mut at = FieldsAt::with_capacity(response.headers.len());
    for field in response.headers.iter() {
        at.push([
            offset(field.name.as_ptr() as usize - base)?,
            offset(field.name.len())?,
            offset(field.value.as_ptr() as usize - base)?,
            offset(field.value.len())?,
        ]);
    }
    Ok(Some((
        len,
        ParsedHead {
            status,
            version,
            at,
        },
    )))
}

/// Where each field's name and value start in a head, and their lengths.
type FieldsAt = smallvec::SmallVec<[[u32; 4]; 16]>;

/// The last chunk of a chunked request body, with the client's trailer fields.
fn last_chunk(trailers: &HeaderMap) -> Bytes {
    let mut out = BytesMut::from(&b"0\r\n"[..]);
    for (name, value) in trailers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// A response head's status, version, and where its fields are.
struct ParsedHead {
    status: StatusCode,
    version: Version,
    at: FieldsAt,
}

impl ParsedHead {
    /// The head's fields, in `headers` (emptied first), but for those that belong to the
    /// connection (RFC 9110 section 7.6.1): they are noted in [`Delimiting`] instead, in the
    /// same pass, so that neither framing the body nor tidying the response for the client
    /// looks a field up again.
    fn headers(
        &self,
        head: &Bytes,
        mut headers: HeaderMap,
    ) -> Result<(HeaderMap, Delimiting), H1Error> {
        headers.clear();
        headers.reserve(self.at.len());
        let mut delimiting = Delimiting::default();
        let mut listed = Vec::new();
        for &[name, name_len, value, value_len] in &self.at {
            let [name, name_len, value, value_len] =
                [name, name_len, value, value_len].map(|n| n as usize);
            let name = HeaderName::from_bytes(&head[name..name + name_len])
                .map_err(|_| H1Error::Invalid("a header field name"))?;
            let bytes = &head[value..value + value_len];
            if name == CONNECTION {
                delimiting.close |= tokens(bytes).any(|t| t.eq_ignore_ascii_case(b"close"));
                listed.extend(connection_listed(bytes));
                continue;
            }
            if name == TRANSFER_ENCODING {
                // The last coding of the last field decides (RFC 9112 section 6.3).
                let last = tokens(bytes).next_back().unwrap_or_default();
                delimiting.chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
                continue;
            }
            if name == CONTENT_LENGTH {
                delimiting.add_length(bytes);
            } else if is_hop_by_hop(&name) {
                continue;
            }
            let value = HeaderValue::from_maybe_shared(head.slice(value..value + value_len))
                .map_err(|_| H1Error::Invalid("a header field value"))?;
            headers.append(name, value);
        }
        for name in listed {
            headers.remove(name);
        }
        Ok((headers, delimiting))
    }
}

/// What a response head says about where its body ends and whether its connection stays
/// open.
#[derive(Debug, Default)]
struct Delimiting {
    /// `Connection` lists `close`.
    close: bool,
    /// `Transfer-Encoding` was sent: whether it ends in `chunked`.
    chunked: Option<bool>,
    /// `Content-Length`, when sent: its value, or why it cannot be used.
    length: Option<Result<u64, &'static str>>,
}

impl Delimiting {
    /// One `Content-Length` field: a list of equal lengths is one length (RFC 9110
    /// section 8.6); anything else makes the length unusable.
    fn add_length(&mut self, value: &[u8]) {
        for part in tokens(value) {
            let parsed = if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                Err("Content-Length")
            } else {
                std::str::from_utf8(part)
                    .ok()
                    .and_then(|p| p.parse::<u64>().ok())
                    .ok_or("Content-Length")
            };
            self.length = match (self.length.take(), parsed) {
                (Some(Err(e)), _) | (_, Err(e)) => Some(Err(e)),
                (Some(Ok(n)), Ok(m)) if n != m => Some(Err("differing Content-Length values")),
                (_, Ok(m)) => Some(Ok(m)),
            };
        }
    }
}

/// How the response body is delimited (RFC 9112 section 6.3), and whether the connection
/// may carry another request after it.
fn framing(
    status: StatusCode,
    version: Version,
    head_method: bool,
    delimiting: &Delimiting,
    headers: &mut HeaderMap,
) -> Result<(State, bool), H1Error> {
    let mut keep_alive = version == Version::HTTP_11 && !delimiting.close;
    if head_method || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((State::Done, keep_alive));
    }
    if let Some(chunked) = delimiting.chunked {
        // Both framings at once is how responses are smuggled: the chunked one is read, the
        // length is not passed on (RFC 9112 section 6.3), and the connection is not trusted
        // with another request.
        if delimiting.length.is_some() {
            headers.remove(CONTENT_LENGTH);
            keep_alive = false;
        }
        return Ok(if chunked {
            (State::Chunked(Chunk::Size), keep_alive)
        } else {
            (State::Close, false)
        });
    }
    Ok(match delimiting.length {
        Some(Err(e)) => return Err(H1Error::Invalid(e)),
        Some(Ok(0)) => (State::Done, keep_alive),
        Some(Ok(n)) => (State::Length(n), keep_alive),
        None => (State::Close, false),
    })
}

/// Where in the body the reader is.
#[derive(Debug)]
enum State {
    /// This many bytes to come.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the upstream closes.
    Close,
    Done,
}

#[derive(Debug)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk.
    Trailers,
}

/// A response body read from its connection as it is asked for.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    conn: Option<Connection>,
    state: State,
    /// Where the connection goes once the body has all come; `None` when it must close.
    reuse: Option<Return>,
}

impl ResponseBody {
    /// The body has all come: the connection goes back to the pool, unless the upstream
    /// sent more than the response (nothing may follow a response that was not asked for).
    fn release(&mut self) {
        self.state = State::Done;
        if let (Some(conn), Some(reuse)) = (self.conn.take(), self.reuse.take())
            && conn.buf.is_empty()
        {
            reuse.park(conn);
        }
    }

    fn fail(&mut self, error: H1Error) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // Bytes wanted before the state can move on, when the buffer does not have them.
            let starved = match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) | State::Chunked(Chunk::Data(left)) => {
                    if conn.buf.is_empty() {
                        true
                    } else {
                        let take = conn
                            .buf
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        let data = conn.buf.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            match this.state {
                                State::Length(_) => this.release(),
                                _ => this.state = State::Chunked(Chunk::DataEnd),
                            }
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Close => {
                    if conn.buf.is_empty() {
                        match ready!(conn.poll_fill(cx)) {
                            Ok(0) => {
                                // Not reusable (`framing`): the connection closes here.
                                this.release();
                                return Poll::Ready(None);
                            }
                            Ok(_) => {}
                            Err(e) => return this.fail(H1Error::Read(e)),
                        }
                    }
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked(Chunk::Size) => match chunk_size(&conn.buf) {
                    Ok(Some((line, 0))) => {
                        conn.buf.advance(line);
                        this.state = State::Chunked(Chunk::Trailers);
                        false
                    }
                    Ok(Some((line, size))) => {
                        conn.buf.advance(line);
                        this.state = State::Chunked(Chunk::Data(size));
                        false
                    }
                    Ok(None) => true,
                    Err(error) => return this.fail(error),
                },
                State::Chunked(Chunk::DataEnd) => {
                    if conn.buf.len() < 2 {
                        true
                    } else if conn.buf.starts_with(b"\r\n") {
                        conn.buf.advance(2);
                        this.state = State::Chunked(Chunk::Size);
                        false
                    } else {
                        return this.fail(H1Error::Invalid("chunk data not followed by CRLF"));
                    }
                }
                State::Chunked(Chunk::Trailers) => match trailers(&conn.buf) {
                    Ok(Some((len, fields))) => {
                        conn.buf.advance(len);
                        this.release();
                        if fields.is_empty() {
                            return Poll::Ready(None);
                        }
                        return Poll::Ready(Some(Ok(Frame::trailers(fields))));
                    }
                    Ok(None) => true,
                    Err(error) => return this.fail(error),
                },
            };
            if starved {
                match ready!(conn.poll_fill(cx)) {
                    Ok(0) => return this.fail(H1Error::Closed("before the response body ended")),
                    Ok(_) => {}
                    Err(e) => return this.fail(H1Error::Read(e)),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

/// A complete chunk-size line at the start of `buf`: its length with the CRLF, and the size.
/// httparse reads the line (hex size, extensions ignored); what it lets through that a
/// response has no business sending is refused here: a line with no digits, and a line
/// (extensions and all) longer than [`MAX_CHUNK_LINE`].
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, H1Error> {
    let invalid = || H1Error::Invalid("a chunk size");
    match buf.first() {
        None => return Ok(None),
        Some(b) if !b.is_ascii_hexdigit() => return Err(invalid()),
        Some(_) => {}
    }
    match httparse::parse_chunk_size(buf).map_err(|_| invalid())? {
        httparse::Status::Complete((len, size)) if len <= MAX_CHUNK_LINE + 2 => {
            Ok(Some((len, size)))
        }
        httparse::Status::Partial if buf.len() <= MAX_CHUNK_LINE => Ok(None),
        _ => Err(H1Error::Invalid("a chunk-size line is too long")),
    }
}

/// A complete trailer section at the start of `buf`: its length and its fields.
fn trailers(buf: &[u8]) -> Result<Option<(usize, HeaderMap)>, H1Error> {
    if buf.starts_with(b"\r\n") {
        return Ok(Some((2, HeaderMap::new())));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for field in fields {
                let name = HeaderName::from_bytes(field.name.as_bytes())
                    .map_err(|_| H1Error::Invalid("a trailer field name"))?;
                let value = HeaderValue::from_bytes(field.value)
                    .map_err(|_| H1Error::Invalid("a trailer field value"))?;
                map.append(name, value);
            }
            Ok(Some((len, map)))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err(H1Error::HeadTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(H1Error::Parse(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_hex_with_extensions_ignored() {
        assert_eq!(chunk_size(b"1a\r\nxyz").unwrap(), Some((4, 26)));
        assert_eq!(chunk_size(b"FF;name=value\r\n").unwrap(), Some((15, 255)));
        assert_eq!(chunk_size(b"0\r\n\r\n").unwrap(), Some((3, 0)));
        assert_eq!(chunk_size(b"10").unwrap(), None);
        assert!(chunk_size(b"zz\r\n").is_err());
        assert!(chunk_size(b"\r\n").is_err());
        // Sixteen hex digits fill a u64; a seventeenth would overflow it.
        let most = chunk_size(b"ffffffffffffffff\r\n").unwrap();
        assert_eq!(most, Some((18, u64::MAX)));
        assert!(chunk_size(b"10000000000000000\r\n").is_err());
        // Extensions are bounded with the line, complete or not.
        let long = format!("1;{}", "x".repeat(MAX_CHUNK_LINE));
        assert!(chunk_size(long.as_bytes()).is_err());
        assert!(chunk_size(format!("{long}\r\n").as_bytes()).is_err());
        assert!(chunk_size(format!("1;{}\r\n", "x".repeat(100)).as_bytes()).is_ok());
    }

    #[test]
    fn trailer_sections_are_read_whole() {
        let (len, fields) = trailers(b"grpc-status: 0\r\nx-a: b\r\n\r\nnext")
            .unwrap()
            .unwrap();
        assert_eq!(len, 26);
        assert_eq!(fields["grpc-status"], "0");
        assert_eq!(fields["x-a"], "b");
        assert_eq!(trailers(b"\r\n").unwrap().unwrap().0, 2);
        assert!(trailers(b"grpc-status: 0\r\n").unwrap().is_none());
    }

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    /// A response head with these fields, parsed and framed as `exchange` does it: the
    /// framing, the connection's fate, and the fields the client would get.
    fn frame(
        status: u16,
        version: &str,
        head_method: bool,
        fields: &[(&str, &str)],
    ) -> Result<(State, bool, HeaderMap), H1Error> {
        let mut text = format!("{version} {status} X\r\n");
        for (name, value) in fields {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        let (len, parsed) = parse_head(text.as_bytes())?.expect("a complete head");
        assert_eq!(len, text.len());
        let head = Bytes::from(text);
        let (mut headers, delimiting) = parsed.headers(&head, HeaderMap::new())?;
        let (state, keep_alive) = framing(
            parsed.status,
            parsed.version,
            head_method,
            &delimiting,
            &mut headers,
        )?;
        Ok((state, keep_alive, headers))
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let v11 = "HTTP/1.1";
        let length = frame(200, v11, false, &[("content-length", "5")]).unwrap();
        assert!(matches!(length, (State::Length(5), true, _)));
        assert_eq!(length.2["content-length"], "5", "the length is passed on");
        // A repeated, equal length is one length, in one field or in several.
        let repeated = frame(200, v11, false, &[("content-length", "5, 5")]).unwrap();
        assert!(matches!(repeated, (State::Length(5), true, _)));
        let fields = [("content-length", "5"), ("Content-Length", "5")];
        assert!(matches!(
            frame(200, v11, false, &fields).unwrap(),
            (State::Length(5), true, _)
        ));
        assert!(frame(200, v11, false, &[("content-length", "5, 6")]).is_err());
        let fields = [("content-length", "5"), ("content-length", "6")];
        assert!(frame(200, v11, false, &fields).is_err());
        assert!(frame(200, v11, false, &[("content-length", "+5")]).is_err());
        assert!(frame(200, v11, false, &[("content-length", "")]).is_err());
        let chunked = frame(200, v11, false, &[("transfer-encoding", "gzip, chunked")]).unwrap();
        assert!(matches!(chunked, (State::Chunked(Chunk::Size), true, _)));
        assert!(
            !chunked.2.contains_key("transfer-encoding"),
            "the coding belongs to the upstream's connection"
        );
        // The last field decides.
        let fields = [
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "gzip"),
        ];
        let last = frame(200, v11, false, &fields).unwrap();
        assert!(matches!(last, (State::Close, false, _)));
        let both = frame(
            200,
            v11,
            false,
            &[("transfer-encoding", "chunked"), ("content-length", "5")],
        )
        .unwrap();
        assert!(matches!(both, (State::Chunked(Chunk::Size), false, _)));
        assert!(
            !both.2.contains_key("content-length"),
            "the length is dropped"
        );
        let unframed = frame(200, v11, false, &[("transfer-encoding", "gzip")]).unwrap();
        assert!(matches!(unframed, (State::Close, false, _)));
        assert!(matches!(
            frame(200, v11, false, &[]).unwrap(),
            (State::Close, false, _)
        ));
        let head = frame(200, v11, true, &[("content-length", "5")]).unwrap();
        assert!(matches!(head, (State::Done, true, _)));
        let not_modified = frame(304, v11, false, &[("content-length", "5")]);
        assert!(matches!(not_modified.unwrap(), (State::Done, true, _)));
        let closing = frame(
            200,
            v11,
            false,
            &[("content-length", "1"), ("connection", "keep-alive, Close")],
        );
        assert!(matches!(closing.unwrap(), (State::Length(1), false, _)));
        let old = frame(200, "HTTP/1.0", false, &[("content-length", "1")]).unwrap();
        assert!(matches!(old, (State::Length(1), false, _)));
    }

    #[test]
    fn the_upstream_connections_own_fields_stay_behind() {
        let (_, keep_alive, fields) = frame(
            200,
            "HTTP/1.1",
            false,
            &[
                ("x-secret", "1"),
                ("content-length", "0"),
                ("Connection", "keep-alive, X-Secret, Host"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("upgrade", "h2c"),
                ("trailer", "x-sum"),
                ("host", "kept"),
                ("x-kept", "2"),
            ],
        )
        .unwrap();
        assert!(keep_alive);
        let mut names: Vec<&str> = fields.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "host", "x-kept"]);
    }

    #[test]
    fn request_heads_carry_host_first_and_refuse_unsafe_targets() {
        let host = HeaderValue::from_static("example.com");
        let client = crate::headers::ClientSide::new([192, 0, 2, 7].into(), 80, false);
        let id = HeaderValue::from_static("id-1");
        let head = |method: &Method, target: &str, fields: &HeaderMap, framing| {
            let forwarded = Forwarded::new(fields, &client, &host, false, client.peer, &id);
            request_head(method, target, &host, fields, &forwarded, framing, 0)
        };
        let fields = headers(&[
            ("host", "other"),
            ("x-forwarded-for", "198.51.100.1"),
            ("accept", "*/*"),
            ("x-request-id", "from-client"),
        ]);
        let none = BodyFraming::None;
        let get = head(&Method::GET, "/a?b=c", &fields, none).unwrap();
        assert_eq!(
            std::str::from_utf8(&get.bytes).unwrap(),
            "GET /a?b=c HTTP/1.1\r\nhost: example.com\r\naccept: */*\r\n\
             x-forwarded-for: 192.0.2.7\r\nx-real-ip: 192.0.2.7\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: example.com\r\n\
             x-forwarded-port: 80\r\nx-request-id: id-1\r\n\r\n",
            "the client's claims give way to what this hop saw"
        );
        let post = head(&Method::POST, "/", &HeaderMap::new(), none).unwrap();
        assert!(post.bytes.ends_with(b"content-length: 0\r\n\r\n"));
        let sized = headers(&[("content-length", "5")]);
        let chunked = head(&Method::POST, "/", &sized, BodyFraming::Chunked);
        let chunked = chunked.unwrap().bytes;
        assert!(chunked.ends_with(b"\r\ntransfer-encoding: chunked\r\n\r\n"));
        assert!(!chunked.windows(14).any(|w| w == b"content-length"));
        let length = head(&Method::PUT, "/", &sized, BodyFraming::Length).unwrap();
        assert!(
            length
                .bytes
                .starts_with(b"PUT / HTTP/1.1\r\nhost: example.com\r\ncontent-length: 5\r\n")
        );
        assert!(head(&Method::GET, "/a b", &fields, none).is_err());
        assert!(head(&Method::GET, "/a\tb", &fields, none).is_err());
        assert!(head(&Method::GET, "/caf\u{e9}", &fields, none).is_ok());
        assert!(head(&Method::GET, "/a\r\nx", &fields, none).is_err());
        assert!(head(&Method::HEAD, "/", &fields, none).unwrap().head_method);
    }
}
