//! Response heads from upstreams: parsing a head at the start of a connection's buffer,
//! sorting its fields from those that belong to the connection, and deciding from them how
//! the body is delimited (RFC 9112 section 6.3) and whether the connection may be reused.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use super::error::H1Error;
use crate::fields::{connection_listed, is_hop_by_hop, tokens};

/// The most a response head (status line and header fields) may take: past it the upstream
/// is answered with a 502, as nginx does for "upstream sent too big header".
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Header fields in one response head, or in one trailer section.
pub(super) const MAX_FIELDS: usize = 128;

/// Parses a response head at the start of `buf`: its length and what it holds, or `None`
/// while it is incomplete.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(usize, ParsedHead)>, H1Error> {
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
    let offset = |at: usize| u32::try_from(at).map_err(|_| H1Error::HeadTooLarge(MAX_HEAD));
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

/// A response head's status, version, and where its fields are.
pub(crate) struct ParsedHead {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    at: FieldsAt,
}

impl ParsedHead {
    /// The head's fields, in `headers` (emptied first), but for those that belong to the
    /// connection (RFC 9110 section 7.6.1): they are noted in [`Delimiting`] instead, in the
    /// same pass, so that neither framing the body nor tidying the response for the client
    /// looks a field up again.
    pub(crate) fn headers(
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
pub(crate) struct Delimiting {
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
pub(crate) fn framing(
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
pub(crate) enum State {
    /// This many bytes to come.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the upstream closes.
    Close,
    Done,
}

#[derive(Debug)]
pub(crate) enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk.
    Trailers,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
