//! Reading the request head: the request line and header block held to their limits (414,
//! 431), the host the request is for (`:authority`, an absolute-form target, or `Host`), the
//! path normalised for routing, the client's address after trusted-proxy handling, and
//! whether that client is blocked everywhere.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{HOST, HeaderValue};
use http::{HeaderMap, Uri, Version};
use vestibule_model::{
    Blocklist, is_valid_authority, normalize_request_path, request_host, routing_path,
};

use crate::respond::ProxyError;
use crate::server::client::ClientSide;
use crate::server::client_ip::{TrustedProxies, client_ip};
use crate::settings::ProxySettings;

/// What the rest of the request path needs of the request head.
#[derive(Debug)]
pub(super) struct Head<'u> {
    /// The host as the request named it, port and all: what the upstream gets as `Host` and
    /// `X-Forwarded-Host`.
    pub(super) authority: HeaderValue,
    /// The path and query exactly as the client sent them.
    pub(super) target: &'u str,
    /// The path, dot segments removed and unreserved characters decoded: what the upstream
    /// gets, and what is routed unless `routed_as` says otherwise.
    pub(super) path: Cow<'u, str>,
    /// For a path with encoded slashes or backslashes, the path as a backend that decodes
    /// them reads it, which is what is routed ([`vestibule_model::routing_path`]).
    routed_as: Option<String>,
    /// The size of the header block, as HTTP/1.1 writes it.
    pub(super) header_bytes: usize,
    /// The body's announced length.
    pub(super) content_length: Option<u64>,
}

impl<'u> Head<'u> {
    /// Reads the head of a request for `uri`, with these fields, in this version of HTTP.
    #[inline]
    pub(super) fn read(
        uri: &'u Uri,
        headers: &HeaderMap,
        version: Version,
        settings: &ProxySettings,
    ) -> Result<Head<'u>, ProxyError> {
        let header_bytes = check_sizes(uri, headers, settings)?;
        let authority = request_authority(uri, headers, version)?;
        authority
            .to_str()
            .map_err(|_| ProxyError::BadRequest("the host is not valid"))?;
        let path = normalize_request_path(uri.path())
            .map_err(|_| ProxyError::BadRequest("the request path is not valid"))?;
        let routed_as = match routing_path(&path) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(read)) => Some(read),
            Err(_) => {
                return Err(ProxyError::BadRequest(
                    "the request path climbs above the root once its encoded slashes are \
                     decoded",
                ));
            }
        };
        Ok(Head {
            authority,
            target: uri.path_and_query().map_or("/", |pq| pq.as_str()),
            path,
            routed_as,
            header_bytes,
            content_length: content_length(headers),
        })
    }

    /// The path to route by.
    #[inline]
    pub(super) fn routing_path(&self) -> &str {
        self.routed_as.as_deref().unwrap_or(&self.path)
    }

    /// The host to route by: lower case, without port or trailing dot.
    #[inline]
    pub(super) fn host(&self) -> Cow<'_, str> {
        // Checked to be text when the head was read.
        request_host(self.authority.to_str().unwrap_or_default())
    }

    /// The path and query as the upstream gets them: the normalised path is what was
    /// routed, so it is what goes; most paths need no normalising, and then the target goes
    /// as it came.
    #[inline]
    pub(super) fn upstream_target(&self, uri: &Uri) -> Cow<'u, str> {
        match (&self.path, uri.query()) {
            (Cow::Borrowed(_), _) => Cow::Borrowed(self.target),
            (normalised, Some(query)) => format!("{normalised}?{query}").into(),
            (normalised, None) => normalised.to_string().into(),
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The client's address: the peer's, or from a trusted proxy the one its forwarding fields
/// name. Also whether the peer is trusted.
#[inline]
pub(super) fn client_address(
    client: &ClientSide,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> (IpAddr, bool) {
    if trusted.contains(client.peer) {
        (client_ip(client.peer, headers, trusted), true)
    } else {
        (client.peer, false)
    }
}

/// Refuses (403) a client blocked on every host (`--block-cidrs`, `--block-user-agents`).
#[inline]
pub(super) fn check_blocked(
    blocked: &Blocklist,
    client: IpAddr,
    headers: &HeaderMap,
) -> Result<(), ProxyError> {
    let agent = headers.get(http::header::USER_AGENT);
    match blocked.blocks(client, agent.map(HeaderValue::as_bytes)) {
        true => Err(ProxyError::Forbidden),
        false => Ok(()),
    }
}

/// Whether the request's scheme is HTTPS: the connection's, or from a trusted proxy the first
/// value of its `X-Forwarded-Proto`, so that a proxy in front that took the TLS off does not
/// make an HTTPS request look like plain HTTP (and redirect it forever).
#[inline]
pub(super) fn forwarded_https(https: bool, headers: &HeaderMap, trusted: bool) -> bool {
    if !trusted {
        return https;
    }
    let Some(value) = headers.get("x-forwarded-proto") else {
        return https;
    };
    let first = value.as_bytes().split(|b| *b == b',').next().unwrap_or(b"");
    match first.trim_ascii() {
        p if p.eq_ignore_ascii_case(b"https") => true,
        p if p.eq_ignore_ascii_case(b"http") => false,
        _ => https,
    }
}

/// Refuses request lines and header blocks past the limits, as nginx's
/// `large_client_header_buffers` does. The header block's size, as HTTP/1.1 writes it, is
/// kept for the upstream request's buffer.
#[inline]
fn check_sizes(
    uri: &Uri,
    headers: &HeaderMap,
    settings: &ProxySettings,
) -> Result<usize, ProxyError> {
    let uri_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > settings.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    let headers: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers > settings.max_request_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    Ok(headers)
}

/// The host the request is for: `:authority` for HTTP/2, the target's authority for an
/// absolute-form HTTP/1.1 request, else `Host`.
///
/// Refused (400): a `Host` or authority that is not a host and port, two `Host` fields, an
/// authority with user information, and a `Host` that names another host than the
/// `:authority` or absolute-form target. RFC 9112 would have the `Host` ignored in that
/// last case and RFC 9113 section 8.3.1 recommends refusing it; refusing both alike keeps
/// routing by one and forwarding the other, how cache poisoning and routing confusion
/// start, out of reach. HTTP/1.1 without `Host` is refused (RFC 9112); HTTP/1.0 without it
/// gets the catch-all virtual host.
#[inline]
fn request_authority(
    uri: &Uri,
    headers: &HeaderMap,
    version: Version,
) -> Result<HeaderValue, ProxyError> {
    let mut fields = headers.get_all(HOST).iter();
    let header = fields.next();
    if fields.next().is_some() {
        return Err(ProxyError::BadRequest(
            "the request has more than one Host header",
        ));
    }
    // RFC 9112 §3.2: a Host that is not a host and port is refused, never routed (to the
    // catch-all rule, say) or passed on.
    if header.is_some_and(|h| !is_valid_authority(h.as_bytes())) {
        return Err(ProxyError::BadRequest(
            "the Host header is not a valid host",
        ));
    }
    match (uri.authority(), header) {
        (Some(authority), header) => {
            let text = authority.as_str();
            if text.contains('@') {
                return Err(ProxyError::BadRequest(
                    "the request target's authority carries user information",
                ));
            }
            if !is_valid_authority(text.as_bytes()) {
                return Err(ProxyError::BadRequest("the host is not valid"));
            }
            // An absolute-form target (or `:authority`) and a Host that disagree: one of the
            // two would be routed and the other believed by the upstream.
            let same = |h: &HeaderValue| {
                h.to_str()
                    .is_ok_and(|h| request_host(h) == request_host(text))
            };
            if header.is_some_and(|h| !same(h)) {
                return Err(ProxyError::BadRequest(
                    "the Host header and the request target name different hosts",
                ));
            }
            HeaderValue::from_str(text).map_err(|_| ProxyError::BadRequest("the host is not valid"))
        }
        (None, Some(header)) => Ok(header.clone()),
        (None, None) if version == Version::HTTP_10 => Ok(HeaderValue::from_static("")),
        (None, None) => Err(ProxyError::BadRequest("the request has no Host header")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(version: Version, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut request = Request::builder().version(version).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_trusted_proxys_forwarded_proto_is_the_scheme() {
        let headers = |v: &str| parts(Version::HTTP_11, "/", &[("x-forwarded-proto", v)]).headers;
        let cases = [
            ("https", false, true, true),
            ("HTTPS, http", false, true, true),
            ("http", true, true, false),
            ("https", false, false, false),
            ("gopher", true, true, true),
        ];
        for (value, tls, trusted, want) in cases {
            assert_eq!(
                forwarded_https(tls, &headers(value), trusted),
                want,
                "{value} {tls} {trusted}"
            );
        }
        let none = parts(Version::HTTP_11, "/", &[]).headers;
        assert!(forwarded_https(true, &none, true));
        assert!(!forwarded_https(false, &none, true));
    }

    fn read(parts: &http::request::Parts) -> Result<(String, String, String), u16> {
        read_with(parts, &ProxySettings::default())
    }

    fn read_with(
        parts: &http::request::Parts,
        settings: &ProxySettings,
    ) -> Result<(String, String, String), u16> {
        let head = Head::read(&parts.uri, &parts.headers, parts.version, settings)
            .map_err(|e| e.status().as_u16())?;
        let target = head.upstream_target(&parts.uri).into_owned();
        Ok((head.host().into_owned(), head.path.into_owned(), target))
    }

    fn ok(host: &str, path: &str, target: &str) -> Result<(String, String, String), u16> {
        Ok((host.into(), path.into(), target.into()))
    }

    #[test]
    fn the_host_comes_from_authority_or_host_and_is_normalised() {
        let h11 = Version::HTTP_11;
        let cases = [
            (
                parts(h11, "/a", &[("host", "Shop.Example.com:8080")]),
                ok("shop.example.com", "/a", "/a"),
            ),
            (
                parts(h11, "http://a.example/x?q=1", &[("host", "A.example")]),
                ok("a.example", "/x", "/x?q=1"),
            ),
            (
                parts(h11, "http://a.example/x?q=1", &[("host", "b.example")]),
                Err(400),
            ),
            (parts(h11, "/", &[("host", "a b")]), Err(400)),
            (
                parts(h11, "/", &[("host", "a.example"), ("host", "a.example")]),
                Err(400),
            ),
            (parts(h11, "/", &[]), Err(400)),
            (parts(Version::HTTP_10, "/", &[]), ok("", "/", "/")),
            (
                parts(
                    Version::HTTP_2,
                    "https://a.example/",
                    &[("host", "b.example")],
                ),
                Err(400),
            ),
            (
                parts(
                    Version::HTTP_2,
                    "https://a.example/",
                    &[("host", "A.example:443")],
                ),
                ok("a.example", "/", "/"),
            ),
        ];
        for (parts, expected) in cases {
            assert_eq!(read(&parts), expected, "{} {:?}", parts.uri, parts.headers);
        }
    }

    #[test]
    fn the_path_is_normalised_for_routing_and_forwarding_with_the_query_kept() {
        let h11 = Version::HTTP_11;
        let host = [("host", "a")];
        assert_eq!(
            read(&parts(h11, "/a/./b/../c?x=%2F", &host)),
            ok("a", "/a/c", "/a/c?x=%2F")
        );
        assert_eq!(
            read(&parts(h11, "/%7Euser", &host)),
            ok("a", "/~user", "/~user")
        );
        assert_eq!(
            read(&parts(h11, "/a%2Fb", &host)),
            ok("a", "/a%2Fb", "/a%2Fb")
        );
        assert_eq!(read(&parts(h11, "/../x", &host)), ok("a", "/x", "/x"));
        assert_eq!(read(&parts(h11, "/%zz", &host)), Err(400));
    }

    #[test]
    fn request_lines_and_header_blocks_past_their_limits_are_refused() {
        let settings = ProxySettings {
            max_uri_bytes: 16,
            max_request_header_bytes: 64,
            ..ProxySettings::default()
        };
        let h11 = Version::HTTP_11;
        let host = [("host", "a")];
        assert!(read_with(&parts(h11, "/0123456789abcde", &host), &settings).is_ok());
        assert_eq!(
            read_with(&parts(h11, "/0123456789abcdef", &host), &settings),
            Err(414)
        );
        let long = "v".repeat(60);
        assert_eq!(
            read_with(&parts(h11, "/", &[("host", "a"), ("x", &long)]), &settings),
            Err(431)
        );
    }

    #[test]
    fn only_a_trusted_peer_names_the_client() {
        let trusted = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        let headers = [("host", "a"), ("x-forwarded-for", "203.0.113.5")];
        let request = parts(Version::HTTP_11, "/", &headers);
        let proxy = ClientSide::new("10.1.2.3".parse().unwrap(), 80, false);
        let stranger = ClientSide::new("192.0.2.1".parse().unwrap(), 80, false);
        assert_eq!(
            client_address(&proxy, &request.headers, &trusted),
            ("203.0.113.5".parse().unwrap(), true)
        );
        assert_eq!(
            client_address(&stranger, &request.headers, &trusted),
            ("192.0.2.1".parse().unwrap(), false)
        );
    }
}
