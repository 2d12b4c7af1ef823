//! A request head for an upstream, as HTTP/1.1 bytes, written once per request and sent as it
//! is on every attempt; and the last chunk of a chunked request body.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::upstream::request::{BodyFraming, UpstreamRequest};

/// A request head, written once per request and sent as it is on every attempt.
#[derive(Debug, Clone)]
pub(crate) struct RequestHead {
    pub(super) bytes: Bytes,
    /// A response to HEAD has no body, whatever its header says.
    pub(super) head_method: bool,
    pub(super) body: BodyFraming,
    /// Largest response head accepted.
    pub(super) head_limit: usize,
}

/// No route accepts smaller response heads than nginx's default buffer.
const MIN_HEAD_LIMIT: usize = 4 << 10;

/// The request for the upstream, as HTTP/1.1 bytes: the method and target, `Host` first,
/// then the client's remaining fields as they are (hop-by-hop ones already removed) but for
/// those `forwarded` replaces, then `forwarded`'s. The client's header block size (as the size
/// check measured it) makes the buffer once at about the right size.
pub(crate) fn request_head(request: &UpstreamRequest<'_>) -> Result<RequestHead, &'static str> {
    let UpstreamRequest {
        method,
        target,
        host,
        headers,
        forwarded,
        body,
        header_bytes,
        response_head_limit,
        ..
    } = request;
    let body = *body;
    // Anything that could end the request line early or smuggle a second one (spaces,
    // control characters) is refused rather than written. Bytes past ASCII are kept, as
    // the client's own parser let them in.
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic() || b >= 0x80) {
        return Err("the request target is not valid");
    }
    // Room for the fields Vestibule adds (`X-Forwarded-*`, `X-Real-IP`, `X-Request-ID`) too.
    let mut out =
        BytesMut::with_capacity(method.as_str().len() + target.len() + header_bytes + 320);
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
        head_limit: (*response_head_limit).max(MIN_HEAD_LIMIT),
    })
}

fn put_field(out: &mut BytesMut, name: &HeaderName, value: &HeaderValue) {
    out.put_slice(name.as_str().as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

/// The last chunk of a chunked request body, with the client's trailer fields.
pub(super) fn last_chunk(trailers: &HeaderMap) -> Bytes {
    let mut out = BytesMut::from(&b"0\r\n"[..]);
    for (name, value) in trailers {
        put_field(&mut out, name, value);
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    use crate::upstream::request::Forwarded;

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    /// The fields this hop sets, as the rewrite phase makes them for a client at 192.0.2.7
    /// on port 80 asking for example.com.
    fn forwarded() -> Forwarded {
        static NAMES: [HeaderName; 6] = [
            HeaderName::from_static("x-forwarded-for"),
            HeaderName::from_static("x-real-ip"),
            HeaderName::from_static("x-forwarded-proto"),
            HeaderName::from_static("x-forwarded-host"),
            HeaderName::from_static("x-forwarded-port"),
            HeaderName::from_static("x-request-id"),
        ];
        let values = [
            "192.0.2.7",
            "192.0.2.7",
            "http",
            "example.com",
            "80",
            "id-1",
        ];
        let mut forwarded = Forwarded::default();
        for (name, value) in NAMES.iter().zip(values) {
            forwarded.push(name, HeaderValue::from_static(value));
        }
        forwarded
    }

    fn head(
        method: &Method,
        target: &str,
        fields: &HeaderMap,
        body: BodyFraming,
    ) -> Result<RequestHead, &'static str> {
        request_head(&UpstreamRequest {
            response_head_limit: 64 << 10,
            method: method.clone(),
            target: Cow::Borrowed(target),
            host: HeaderValue::from_static("example.com"),
            headers: fields.clone(),
            forwarded: forwarded(),
            upgrade: None,
            grpc: false,
            body,
            header_bytes: 0,
        })
    }

    #[test]
    fn request_heads_carry_host_first_and_refuse_unsafe_targets() {
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

    #[test]
    fn the_last_chunk_carries_the_clients_trailers() {
        assert_eq!(&last_chunk(&HeaderMap::new())[..], b"0\r\n\r\n");
        let trailers = headers(&[("grpc-status", "0")]);
        assert_eq!(&last_chunk(&trailers)[..], b"0\r\ngrpc-status: 0\r\n\r\n");
    }
}
