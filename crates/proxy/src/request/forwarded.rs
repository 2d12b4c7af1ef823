//! The fields this hop sets on a request for the upstream: `X-Forwarded-For` (appended to
//! from a trusted proxy), `X-Forwarded-Proto`, `-Host` and `-Port` (kept from a trusted
//! proxy, else what this hop saw), `X-Real-IP`, and the request's `X-Request-ID`.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use crate::server::client::{ClientSide, IpText};
use crate::upstream::request::Forwarded;

pub(super) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub(super) static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub(super) static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
pub(super) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What a request's forwarding fields are made from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hop<'a> {
    pub(super) client: &'a ClientSide,
    /// The host as the client named it.
    pub(super) host: &'a HeaderValue,
    /// The peer is a trusted proxy: its forwarding fields are believed.
    pub(super) trusted: bool,
    /// The client, after trusted-proxy handling.
    pub(super) client_ip: IpAddr,
    pub(super) request_id: &'a HeaderValue,
}

/// The fields this hop sets. From a trusted proxy, `X-Forwarded-For` is appended to and the
/// proxy's `X-Forwarded-Proto`, `-Host` and `-Port` are kept; from anyone else they are
/// claims anyone could make, and are replaced by what this hop saw. Worked out once per
/// request, whatever the number of attempts.
#[inline]
pub(super) fn forwarded(headers: &HeaderMap, hop: &Hop<'_>) -> Forwarded {
    let client = hop.client;
    let mut fields = Forwarded::default();
    let peer = client.peer_value.clone();
    let mut previous = Vec::new();
    if hop.trusted {
        for value in headers.get_all(&X_FORWARDED_FOR) {
            let value = value.to_str().map_or("", str::trim);
            if !value.is_empty() {
                previous.extend_from_slice(value.as_bytes());
                previous.extend_from_slice(b", ");
            }
        }
    }
    let forwarded_for = if previous.is_empty() {
        peer.clone()
    } else {
        previous.extend_from_slice(client.peer_text.as_bytes());
        // Header-safe bytes only: an address, and values that were valid headers.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(previous)).ok()
    };
    let real_ip = if hop.client_ip == client.peer {
        peer
    } else {
        IpText::new(hop.client_ip).header_value()
    };
    if let Some(value) = forwarded_for {
        fields.push(&X_FORWARDED_FOR, value);
    }
    if let Some(value) = real_ip {
        fields.push(&X_REAL_IP, value);
    }
    let keep = |name: &HeaderName| hop.trusted && headers.contains_key(name);
    if !keep(&X_FORWARDED_PROTO) {
        let proto = if client.https { "https" } else { "http" };
        fields.push(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    // A trusted proxy's host is passed on only when it is one: an invalid value is replaced
    // by the request's own, checked, host.
    let valid_hosts = || {
        (headers.get_all(&X_FORWARDED_HOST).iter())
            .all(|v| vestibule_model::is_valid_authority(v.as_bytes()))
    };
    if !(keep(&X_FORWARDED_HOST) && valid_hosts()) {
        fields.push(&X_FORWARDED_HOST, hop.host.clone());
    }
    if !keep(&X_FORWARDED_PORT) {
        fields.push(&X_FORWARDED_PORT, client.port_value.clone());
    }
    fields.push(&X_REQUEST_ID, hop.request_id.clone());
    fields
}

/// The request's ID: the client's `X-Request-ID` when it sent a usable one (so a request
/// can be followed across proxies), else a new one.
#[inline]
pub(super) fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(id) if !id.is_empty() && id.len() <= 256 => id.clone(),
        _ => new_request_id(),
    }
}

/// 128 random bits as 32 hex digits, the shape of nginx's `$request_id`.
fn new_request_id() -> HeaderValue {
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

    fn applied(
        headers: &HeaderMap,
        client: &ClientSide,
        trusted: bool,
        client_ip: IpAddr,
        request_id: &HeaderValue,
    ) -> HeaderMap {
        let host = HeaderValue::from_static("a.com");
        let hop = Hop {
            client,
            host: &host,
            trusted,
            client_ip,
            request_id,
        };
        let mut out = headers.clone();
        forwarded(headers, &hop).apply(&mut out);
        out
    }

    #[test]
    fn forwarded_headers_append_and_replace() {
        let client = ClientSide::new("192.0.2.7".parse().unwrap(), 8080, false);
        let headers = map(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "1.2.3.4"),
        ]);
        let id = HeaderValue::from_static("0123456789abcdef0123456789abcdef");
        let untrusted = applied(&headers, &client, false, client.peer, &id);
        assert_eq!(untrusted["x-forwarded-for"], "192.0.2.7");
        assert_eq!(untrusted["x-real-ip"], "192.0.2.7");
        assert_eq!(untrusted["x-forwarded-proto"], "http");
        let real: IpAddr = "203.0.113.1".parse().unwrap();
        let trusted = applied(&headers, &client, true, real, &id);
        assert_eq!(trusted["x-forwarded-for"], "203.0.113.1, 192.0.2.7");
        assert_eq!(trusted["x-real-ip"], "203.0.113.1");
        assert_eq!(trusted["x-forwarded-proto"], "https");
        assert_eq!(trusted["x-forwarded-host"], "a.com");
        assert_eq!(trusted["x-forwarded-port"], "8080");
        assert_eq!(trusted["x-request-id"], id);
    }

    #[test]
    fn a_usable_request_id_is_kept_and_forwarded() {
        let kept = request_id(&map(&[("x-request-id", "abc")]));
        assert_eq!(kept, "abc");
        for unusable in ["", &"x".repeat(257)] {
            let replaced = request_id(&map(&[("x-request-id", unusable)]));
            assert_eq!(replaced.len(), 32, "{unusable:?}");
            assert!(replaced.as_bytes().iter().all(u8::is_ascii_hexdigit));
        }
        let client = ClientSide::new("::1".parse().unwrap(), 443, true);
        let headers = map(&[("x-request-id", "")]);
        let host = HeaderValue::from_static("a.com");
        let hop = Hop {
            client: &client,
            host: &host,
            trusted: false,
            client_ip: client.peer,
            request_id: &kept,
        };
        let fields = forwarded(&headers, &hop);
        assert!(fields.replaces(&X_REQUEST_ID));
        assert!(!fields.replaces(&http::header::HOST));
        let out = applied(&headers, &client, false, client.peer, &kept);
        assert_eq!(out["x-request-id"], "abc");
        assert_eq!(out["x-forwarded-for"], "::1");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["x-forwarded-port"], "443");
    }

    #[test]
    fn a_peer_named_by_proxy_protocol_is_the_one_forwarded() {
        let mut client = ClientSide::new("10.0.0.1".parse().unwrap(), 80, false);
        client.set_peer("198.51.100.4".parse().unwrap());
        let id = HeaderValue::from_static("id");
        let out = applied(&HeaderMap::new(), &client, false, client.peer, &id);
        assert_eq!(out["x-forwarded-for"], "198.51.100.4");
        assert_eq!(out["x-real-ip"], "198.51.100.4");
        assert_eq!(out["x-forwarded-port"], "80");
    }
}
