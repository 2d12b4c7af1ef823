//! HTTP field rules that hold on both sides of the proxy: which fields describe one
//! connection rather than the message (hop-by-hop), and how comma-separated values split.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// Removes the headers that describe one connection rather than the message: those RFC 9110
/// names, `Proxy-Connection`, and any the `Connection` header lists (except `Host` and
/// `Content-Length`, see [`connection_listed`]).
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds the few a message carries (usually none, or only
    // `Connection`), where removing each of them by name would hash every one.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if let Some(listed) = headers.get(header::CONNECTION) {
        let listed: Vec<HeaderName> = connection_listed(listed.as_bytes()).collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// The names a `Connection` value lists for removal. `keep-alive` and `close`, nearly always
/// the only tokens, and the names removed anyway are skipped, which saves building a header
/// name for each. `Host` and `Content-Length` are never listed: a peer must not be able to
/// strip the message's host, nor the length its body was read by, which would send the
/// body on re-framed (chunked) and disagree with what was received (found by the
/// upstream_h1 fuzz target).
pub(crate) fn connection_listed(value: &[u8]) -> impl Iterator<Item = HeaderName> + '_ {
    tokens(value)
        .filter(|token| {
            !token.eq_ignore_ascii_case(b"close")
                && !HOP_BY_HOP
                    .iter()
                    .any(|hop| token.eq_ignore_ascii_case(hop.as_str().as_bytes()))
        })
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .filter(|name| *name != header::HOST && *name != header::CONTENT_LENGTH)
}

/// The comma-separated tokens of a header value, without the spaces around them.
pub(crate) fn tokens(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Whether the comma-separated header `name` lists `token` (case-insensitively), as
/// `Connection: keep-alive, Upgrade` lists `upgrade`.
pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(token.as_bytes())))
}

/// Whether `name` belongs to one connection rather than the message (RFC 9110 section 7.6.1,
/// and `Proxy-Connection`).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop_index(name).is_some()
}

/// Where `name` is in [`HOP_BY_HOP`]: a match on the text, which compiles to a length test
/// and a comparison or two, where comparing with each name in turn cost more than the hash
/// lookups this scan replaces.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "te" => Some(3),
        "trailer" => Some(4),
        "transfer-encoding" => Some(5),
        "upgrade" => Some(6),
        _ => None,
    }
}

/// The RFC 9110 hop-by-hop names, and `Proxy-Connection`, in [`hop_by_hop_index`]'s order.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_lists_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret, host, Content-Length"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("host", "a.com"),
            ("content-length", "5"),
            ("user-agent", "curl/8"),
        ]);
        remove_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "host", "user-agent"]);
    }

    #[test]
    fn only_the_hop_by_hop_headers_present_are_removed() {
        let mut headers = map(&[("host", "a.com"), ("te", "trailers"), ("accept", "*/*")]);
        remove_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "accept"]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn the_hop_by_hop_index_matches_the_table() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index(&header::HOST), None);
    }

    #[test]
    fn tokens_are_listed_case_insensitively() {
        let headers = map(&[("connection", "keep-alive, Upgrade")]);
        assert!(has_token(&headers, &header::CONNECTION, "upgrade"));
        assert!(!has_token(&headers, &header::CONNECTION, "close"));
        let listed: Vec<HeaderName> =
            connection_listed(b"close, keep-alive, X-Secret, Host, te, content-length").collect();
        assert_eq!(listed, [HeaderName::from_static("x-secret")]);
    }
}
