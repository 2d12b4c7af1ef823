//! A response body read from its upstream connection as the client side asks for it: by
//! length, in chunks (with trailers) or until the upstream closes; the connection goes back
//! to the pool once the body has all come.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};

use super::connection::Connection;
use super::error::H1Error;
use super::response::{Chunk, MAX_FIELDS, MAX_HEAD, State};
use crate::upstream::pool::Return;

/// A chunk-size line with its extensions.
const MAX_CHUNK_LINE: usize = 4096;

/// A response body read from its connection as it is asked for.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    pub(crate) conn: Option<Connection>,
    pub(crate) state: State,
    /// Where the connection goes once the body has all come; `None` when it must close.
    pub(crate) reuse: Option<Return>,
}

impl ResponseBody {
    /// The body has all come: the connection goes back to the pool, unless the upstream
    /// sent more than the response (nothing may follow a response that was not asked for).
    pub(crate) fn release(&mut self) {
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
            // httparse passes any byte in an extension, a bare LF among them, which nginx
            // takes for the end of the line: the two would disagree on where the chunk's data
            // starts. RFC 9112 section 7.1.1 allows no control there but HTAB.
            if buf[..len - 2]
                .iter()
                .any(|&b| b.is_ascii_control() && b != b'\t')
            {
                return Err(H1Error::Invalid("a control character in a chunk-size line"));
            }
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
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            Err(H1Error::HeadTooLarge(MAX_HEAD))
        }
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
    fn chunk_size_lines_hold_no_controls_but_tabs() {
        assert_eq!(chunk_size(b"5 \t;a=\"x\ty\"\r\n").unwrap(), Some((13, 5)));
        assert_eq!(chunk_size(b"5;\xff\r\n").unwrap(), Some((5, 5)));
        // A bare LF ends the line for nginx: the chunk's data would start at `b`.
        assert!(chunk_size(b"5;a\nb\r\nhello\r\n").is_err());
        assert!(chunk_size(b"0;\0\r\n\r\n").is_err());
        assert!(chunk_size(b"5;a\x7f\r\n").is_err());
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
}
