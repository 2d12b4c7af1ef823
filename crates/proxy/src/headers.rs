//! Header rules between client and upstream: hop-by-hop headers removed both ways, and the
//! `X-Forwarded-*` family, `X-Real-IP` and `X-Request-ID` added for the upstream.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the headers that describe one connection rather than the message: those RFC 9110
/// names, `Proxy-Connection`, and any the `Connection` header lists (except `Host`, which a
/// client must not be able to strip that way).
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(listed) = headers.get(header::CONNECTION) {
        let listed: Vec<HeaderName> = listed
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .filter(|name| *name != header::HOST)
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// What the proxy knows about the client side of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientSide {
    pub(crate) peer: IpAddr,
    pub(crate) local_port: u16,
    pub(crate) https: bool,
}

/// Adds the forwarding headers. From a trusted proxy, `X-Forwarded-For` is appended to and
/// the proxy's `X-Forwarded-Proto`, `-Host` and `-Port` are kept; from anyone else they are
/// claims anyone could make, and are replaced by what this hop saw. `X-Real-IP` is the
/// client as [`crate::client_ip::client_ip`] found it.
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    client: &ClientSide,
    host: &HeaderValue,
    trusted: bool,
    client_ip: IpAddr,
) {
    let peer = client.peer.to_string();
    let previous = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let forwarded_for = if trusted && !previous.is_empty() {
        format!("{previous}, {peer}")
    } else {
        peer
    };
    // Header-safe characters only: IP addresses, and values that were valid headers.
    if let Ok(value) = HeaderValue::try_from(forwarded_for) {
        headers.insert(&X_FORWARDED_FOR, value);
    }
    if let Ok(value) = HeaderValue::try_from(client_ip.to_string()) {
        headers.insert(&X_REAL_IP, value);
    }
    let keep = |headers: &HeaderMap, name: &HeaderName| trusted && headers.contains_key(name);
    if !keep(headers, &X_FORWARDED_PROTO) {
        headers.insert(
            &X_FORWARDED_PROTO,
            HeaderValue::from_static(if client.https { "https" } else { "http" }),
        );
    }
    if !keep(headers, &X_FORWARDED_HOST) {
        headers.insert(&X_FORWARDED_HOST, host.clone());
    }
    if !keep(headers, &X_FORWARDED_PORT) {
        headers.insert(&X_FORWARDED_PORT, HeaderValue::from(client.local_port));
    }
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(&X_REQUEST_ID, new_request_id());
    }
}

/// The request's ID: the client's `X-Request-ID` when it sent a usable one (so a request
/// can be followed across proxies), else a new one.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(id) if !id.is_empty() && id.len() <= 256 => id.clone(),
        _ => new_request_id(),
    }
}

/// 128 random bits as 32 hex digits, the shape of nginx's `$request_id`.
pub(crate) fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    let mut bits = fastrand::u128(..);
    for digit in id.iter_mut().rev() {
        *digit = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ("connection", "keep-alive, x-secret, host"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("host", "a.com"),
            ("user-agent", "curl/8"),
        ]);
        remove_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "user-agent"]);
    }

    #[test]
    fn forwarded_headers_append_and_replace() {
        let client = ClientSide {
            peer: "192.0.2.7".parse().unwrap(),
            local_port: 8080,
            https: false,
        };
        let mut headers = map(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "1.2.3.4"),
        ]);
        let host = HeaderValue::from_static("a.com");
        let untrusted = {
            let mut headers = headers.clone();
            add_forwarded(&mut headers, &client, &host, false, client.peer);
            headers
        };
        assert_eq!(untrusted["x-forwarded-for"], "192.0.2.7");
        assert_eq!(untrusted["x-real-ip"], "192.0.2.7");
        assert_eq!(untrusted["x-forwarded-proto"], "http");
        let real: IpAddr = "203.0.113.1".parse().unwrap();
        add_forwarded(&mut headers, &client, &host, true, real);
        assert_eq!(headers["x-forwarded-for"], "203.0.113.1, 192.0.2.7");
        assert_eq!(headers["x-real-ip"], "203.0.113.1");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "a.com");
        assert_eq!(headers["x-forwarded-port"], "8080");
        let id = headers["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn an_existing_request_id_is_kept() {
        let client = ClientSide {
            peer: "::1".parse().unwrap(),
            local_port: 443,
            https: true,
        };
        let mut headers = map(&[("x-request-id", "abc")]);
        add_forwarded(
            &mut headers,
            &client,
            &HeaderValue::from_static("a.com"),
            false,
            client.peer,
        );
        assert_eq!(headers["x-request-id"], "abc");
        assert_eq!(headers["x-forwarded-for"], "::1");
        assert_eq!(headers["x-forwarded-proto"], "https");
    }
}
