//! What the request path asks the upstream layer to send: the request as it is to leave
//! (method, target, `Host`, the client's fields and the fields this hop sets in their
//! place), in no protocol's form yet. The upstream layer writes it as HTTP/1.1 bytes
//! (`upstream::h1`) or builds hyper's request from it for HTTP/2 and upgrades (here).

use std::borrow::Cow;

use http::header::{CONNECTION, HOST, HeaderName, HeaderValue, TE, UPGRADE};
use http::{HeaderMap, Method, Request, Uri, Version};
use vestibule_model::{EndpointAddress, UpstreamProtocol};

use crate::body::request::UpstreamBody;

/// One request, as every attempt sends it, whichever endpoint it goes to.
#[derive(Debug)]
pub(crate) struct UpstreamRequest<'a> {
    pub(crate) method: Method,
    /// Path and query, as the upstream gets them.
    pub(crate) target: Cow<'a, str>,
    /// What the upstream gets as `Host` (or `:authority`).
    pub(crate) host: HeaderValue,
    /// The client's fields, hop-by-hop ones already removed.
    pub(crate) headers: HeaderMap,
    /// Fields this hop sets, each in place of the client's of the same name.
    pub(crate) forwarded: Forwarded,
    /// The client asks for a tunnel.
    pub(crate) upgrade: Option<Upgrade>,
    /// A gRPC request: an HTTP/2 upstream is told it takes trailers.
    pub(crate) grpc: bool,
    pub(crate) body: BodyFraming,
    /// The size of the client's header block, so an HTTP/1.1 head's buffer is made once at
    /// about the right size.
    pub(crate) header_bytes: usize,
    /// Largest HTTP/1.1 response head accepted for it (the route's `proxy-buffer-size`).
    pub(crate) response_head_limit: usize,
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

/// How a client asks for a tunnel.
#[derive(Debug, Clone)]
pub(crate) struct Upgrade {
    /// The protocol, as `Upgrade` names it (`websocket`).
    pub(crate) protocol: HeaderValue,
    /// HTTP/2 extended CONNECT (RFC 8441) rather than an HTTP/1.1 `Upgrade`: the upstream
    /// still gets an HTTP/1.1 upgrade, and the client a 200 instead of the 101.
    pub(crate) extended_connect: bool,
}

/// The fields this hop sets on a request (`X-Forwarded-*`, `X-Real-IP`, `X-Request-ID`),
/// each replacing any the client sent under that name. Written into a header map for hyper
/// ([`Forwarded::apply`]), or straight into an HTTP/1.1 head, which skips the client's
/// fields these replace ([`Forwarded::replaces`]) instead of going through a map.
#[derive(Debug, Default)]
pub(crate) struct Forwarded {
    fields: smallvec::SmallVec<[(&'static HeaderName, HeaderValue); 6]>,
}

impl Forwarded {
    #[inline]
    pub(crate) fn push(&mut self, name: &'static HeaderName, value: HeaderValue) {
        self.fields.push((name, value));
    }

    /// Sets the fields in `headers`, in place of the client's.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.fields {
            headers.insert(*name, value.clone());
        }
    }

    /// Drops the fields of this name: a route's own rule sets it instead.
    pub(crate) fn forget(&mut self, name: &HeaderName) {
        self.fields.retain(|(ours, _)| *ours != name);
    }

    /// Whether a client's field of this name gives way to one of these.
    #[inline]
    pub(crate) fn replaces(&self, name: &HeaderName) -> bool {
        self.fields.iter().any(|(ours, _)| *ours == name)
    }

    #[inline]
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.fields.iter().map(|(name, value)| (*name, value))
    }
}

impl<'a> UpstreamRequest<'a> {
    /// A request Vestibule makes on the side (to an authentication service, an error
    /// backend): no body, no upgrade, a small head.
    pub(crate) fn side(
        method: Method,
        target: Cow<'a, str>,
        host: HeaderValue,
        headers: HeaderMap,
        forwarded: Forwarded,
    ) -> UpstreamRequest<'a> {
        UpstreamRequest {
            method,
            target,
            host,
            headers,
            forwarded,
            upgrade: None,
            grpc: false,
            body: BodyFraming::None,
            header_bytes: 1024,
            response_head_limit: 64 << 10,
        }
    }
}

impl UpstreamRequest<'_> {
    /// The request as hyper's client takes it, for one attempt on `endpoint`: HTTP/2 with
    /// `:authority`, or HTTP/1.1 with `Host` (the upgrade kind). An error names what the
    /// request cannot be sent as.
    pub(crate) fn to_hyper(
        &self,
        protocol: UpstreamProtocol,
        endpoint: &EndpointAddress,
        body: UpstreamBody,
    ) -> Result<Request<UpstreamBody>, &'static str> {
        const INVALID: &str = "the request target is not valid";
        let mut builder = Request::builder().method(self.method.clone());
        let mut headers = self.headers.clone();
        self.forwarded.apply(&mut headers);
        if self.upgrade.as_ref().is_some_and(|u| u.extended_connect) {
            if protocol.is_http2() {
                return Err("tunnels to HTTP/2 backends are not supported");
            }
            builder = builder.method(Method::GET);
            headers
                .entry(http::header::SEC_WEBSOCKET_KEY)
                .or_insert_with(websocket_key);
            headers
                .entry(http::header::SEC_WEBSOCKET_VERSION)
                .or_insert(HeaderValue::from_static("13"));
        }
        if protocol.is_http2() {
            // HTTP/2 carries the host as `:authority`; gRPC needs `te: trailers` kept.
            let authority = self
                .host
                .to_str()
                .ok()
                .filter(|h| !h.is_empty())
                .map_or_else(|| endpoint.to_string(), str::to_owned);
            let scheme = if protocol.is_tls() { "https" } else { "http" };
            let uri = Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(&*self.target)
                .build()
                .map_err(|_| INVALID)?;
            headers.remove(HOST);
            if self.grpc {
                headers.insert(TE, HeaderValue::from_static("trailers"));
            }
            builder = builder.uri(uri).version(Version::HTTP_2);
        } else {
            let uri: Uri = self.target.parse().map_err(|_| INVALID)?;
            // HTTP/2 carries the host in `:authority`, and an absolute-form HTTP/1.1 target
            // overrides `Host`: either way the upstream gets it as `Host`.
            headers.insert(HOST, self.host.clone());
            if let Some(upgrade) = &self.upgrade {
                headers.insert(UPGRADE, upgrade.protocol.clone());
                headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            }
            builder = builder.uri(uri).version(Version::HTTP_11);
        }
        let mut request = builder.body(body).map_err(|_| INVALID)?;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// A `Sec-WebSocket-Key`: 16 random bytes in base64, for upstreams of extended CONNECT
/// clients, which send none (RFC 8441 section 5).
fn websocket_key() -> HeaderValue {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = fastrand::u128(..).to_be_bytes();
    let mut out = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    HeaderValue::try_from(out).unwrap_or(HeaderValue::from_static("dmVzdGlidWxlLXdzLWtleQ=="))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::request::empty;

    fn request(protocol_upgrade: Option<Upgrade>) -> UpstreamRequest<'static> {
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("*/*"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        let mut forwarded = Forwarded::default();
        static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
        forwarded.push(&XFF, HeaderValue::from_static("192.0.2.7"));
        UpstreamRequest {
            response_head_limit: 64 << 10,
            method: Method::GET,
            target: Cow::Borrowed("/a?b=c"),
            host: HeaderValue::from_static("example.com"),
            headers,
            forwarded,
            upgrade: protocol_upgrade,
            grpc: true,
            body: BodyFraming::None,
            header_bytes: 0,
        }
    }

    #[test]
    fn http2_requests_carry_the_host_as_authority_and_keep_trailers_for_grpc() {
        let endpoint = EndpointAddress::Socket("10.0.0.1:80".parse().unwrap());
        let h2 = request(None)
            .to_hyper(UpstreamProtocol::H2c, &endpoint, empty())
            .unwrap();
        assert_eq!(h2.uri(), "http://example.com/a?b=c");
        assert_eq!(h2.version(), Version::HTTP_2);
        assert!(!h2.headers().contains_key(HOST));
        assert_eq!(h2.headers()[TE], "trailers");
        assert_eq!(h2.headers()["x-forwarded-for"], "192.0.2.7");
        let h1 = request(None)
            .to_hyper(UpstreamProtocol::Http1, &endpoint, empty())
            .unwrap();
        assert_eq!(h1.uri(), "/a?b=c");
        assert_eq!(h1.headers()[HOST], "example.com");
    }

    #[test]
    fn an_extended_connect_becomes_a_websocket_upgrade_and_never_goes_over_http2() {
        let endpoint = EndpointAddress::Socket("10.0.0.1:80".parse().unwrap());
        let upgrade = Upgrade {
            protocol: HeaderValue::from_static("websocket"),
            extended_connect: true,
        };
        let sent = request(Some(upgrade.clone()))
            .to_hyper(UpstreamProtocol::Http1, &endpoint, empty())
            .unwrap();
        assert_eq!(sent.method(), Method::GET);
        assert_eq!(sent.headers()[UPGRADE], "websocket");
        assert_eq!(sent.headers()[CONNECTION], "upgrade");
        assert_eq!(sent.headers()["sec-websocket-version"], "13");
        assert_eq!(sent.headers()["sec-websocket-key"].len(), 24);
        let refused = request(Some(upgrade)).to_hyper(UpstreamProtocol::H2c, &endpoint, empty());
        assert!(refused.is_err());
    }
}
