//! Header rules between client and upstream: hop-by-hop headers removed both ways, and the
//! `X-Forwarded-*` family, `X-Real-IP` and `X-Request-ID` added for the upstream.

use std::io::Write as _;
use std::net::IpAddr;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes the headers that describe one connection rather than the message: those RFC 9110
/// names, `Proxy-Connection`, and any the `Connection` header lists (except `Host`, which a
/// client must not be able to strip that way).
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
/// name for each; `Host` is never listed, as a client must not be able to strip it.
pub(crate) fn connection_listed(value: &[u8]) -> impl Iterator<Item = HeaderName> + '_ {
    tokens(value)
        .filter(|token| {
            !token.eq_ignore_ascii_case(b"close")
                && !HOP_BY_HOP
                    .iter()
                    .any(|hop| token.eq_ignore_ascii_case(hop.as_str().as_bytes()))
        })
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .filter(|name| *name != header::HOST)
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

/// What the proxy knows about the client side of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientSide {
    pub(crate) peer: IpAddr,
    /// `peer` as text, formatted once per connection.
    pub(crate) peer_text: IpText,
    pub(crate) local_port: u16,
    pub(crate) https: bool,
}

impl ClientSide {
    pub(crate) fn new(peer: IpAddr, local_port: u16, https: bool) -> ClientSide {
        ClientSide {
            peer,
            peer_text: IpText::new(peer),
            local_port,
            https,
        }
    }

    /// The client a PROXY protocol header names, in place of the load balancer.
    pub(crate) fn set_peer(&mut self, peer: IpAddr) {
        self.peer = peer;
        self.peer_text = IpText::new(peer);
    }
}

/// An IP address as text, in a fixed buffer. Formatting an address with the standard
/// library's machinery costs more than all the forwarding headers together, so a
/// connection's peer is formatted once and copied from here.
#[derive(Clone, Copy)]
pub(crate) struct IpText {
    bytes: [u8; 45],
    len: u8,
}

impl IpText {
    pub(crate) fn new(ip: IpAddr) -> IpText {
        let mut text = IpText {
            bytes: [0; 45],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                let mut len = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.bytes[len] = b'.';
                        len += 1;
                    }
                    if octet >= 100 {
                        text.bytes[len] = b'0' + octet / 100;
                        len += 1;
                    }
                    if octet >= 10 {
                        text.bytes[len] = b'0' + octet / 10 % 10;
                        len += 1;
                    }
                    text.bytes[len] = b'0' + octet % 10;
                    len += 1;
                }
                text.len = len as u8;
            }
            IpAddr::V6(v6) => {
                // The longest IPv6 text is 45 bytes (an IPv4 tail after six groups).
                let mut rest = &mut text.bytes[..];
                let _ = write!(rest, "{v6}");
                let left = rest.len();
                text.len = (45 - left) as u8;
            }
        }
        text
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(self.as_bytes()).ok()
    }
}

impl std::fmt::Debug for IpText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The fields Vestibule sets on every request it forwards. From a trusted proxy,
/// `X-Forwarded-For` is appended to and the proxy's `X-Forwarded-Proto`, `-Host` and `-Port`
/// are kept; from anyone else they are claims anyone could make, and are replaced by what
/// this hop saw. `X-Real-IP` is the client as [`crate::client_ip::client_ip`] found it, and
/// `X-Request-ID` the request's ID. Worked out once per request; written into a header map
/// for hyper's client ([`Forwarded::apply`]), or straight into the request head by
/// `proxy::h1`, which skips the client's fields these replace ([`Forwarded::replaces`])
/// instead of going through a map.
pub(crate) struct Forwarded {
    fields: smallvec::SmallVec<[(&'static HeaderName, HeaderValue); 6]>,
}

impl Forwarded {
    pub(crate) fn new(
        headers: &HeaderMap,
        client: &ClientSide,
        host: &HeaderValue,
        trusted: bool,
        client_ip: IpAddr,
        request_id: &HeaderValue,
    ) -> Forwarded {
        let mut fields = smallvec::SmallVec::new();
        let peer = client.peer_text.header_value();
        let mut previous = Vec::new();
        if trusted {
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
        let real_ip = if client_ip == client.peer {
            peer
        } else {
            IpText::new(client_ip).header_value()
        };
        if let Some(value) = forwarded_for {
            fields.push((&X_FORWARDED_FOR, value));
        }
        if let Some(value) = real_ip {
            fields.push((&X_REAL_IP, value));
        }
        let keep = |name: &HeaderName| trusted && headers.contains_key(name);
        if !keep(&X_FORWARDED_PROTO) {
            let proto = if client.https { "https" } else { "http" };
            fields.push((&X_FORWARDED_PROTO, HeaderValue::from_static(proto)));
        }
        if !keep(&X_FORWARDED_HOST) {
            fields.push((&X_FORWARDED_HOST, host.clone()));
        }
        if !keep(&X_FORWARDED_PORT) {
            fields.push((&X_FORWARDED_PORT, port_value(client.local_port)));
        }
        fields.push((&X_REQUEST_ID, request_id.clone()));
        Forwarded { fields }
    }

    /// Sets the fields in `headers`, in place of the client's.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.fields {
            headers.insert(*name, value.clone());
        }
    }

    /// Whether a client's field of this name gives way to one of these.
    pub(crate) fn replaces(&self, name: &HeaderName) -> bool {
        self.fields.iter().any(|(ours, _)| *ours == name)
    }

    pub(crate) fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.fields.iter().map(|(name, value)| (*name, value))
    }
}

/// The usual listener ports without formatting or allocating.
fn port_value(port: u16) -> HeaderValue {
    match port {
        80 => HeaderValue::from_static("80"),
        443 => HeaderValue::from_static("443"),
        8080 => HeaderValue::from_static("8080"),
        8443 => HeaderValue::from_static("8443"),
        _ => HeaderValue::from(port),
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
        let client = ClientSide::new("192.0.2.7".parse().unwrap(), 8080, false);
        let mut headers = map(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "1.2.3.4"),
        ]);
        let host = HeaderValue::from_static("a.com");
        let id = HeaderValue::from_static("0123456789abcdef0123456789abcdef");
        let untrusted = {
            let mut headers = headers.clone();
            Forwarded::new(&headers, &client, &host, false, client.peer, &id).apply(&mut headers);
            headers
        };
        assert_eq!(untrusted["x-forwarded-for"], "192.0.2.7");
        assert_eq!(untrusted["x-real-ip"], "192.0.2.7");
        assert_eq!(untrusted["x-forwarded-proto"], "http");
        let real: IpAddr = "203.0.113.1".parse().unwrap();
        Forwarded::new(&headers, &client, &host, true, real, &id).apply(&mut headers);
        assert_eq!(headers["x-forwarded-for"], "203.0.113.1, 192.0.2.7");
        assert_eq!(headers["x-real-ip"], "203.0.113.1");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "a.com");
        assert_eq!(headers["x-forwarded-port"], "8080");
        assert_eq!(headers["x-request-id"], id);
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
        let mut headers = map(&[("x-request-id", "")]);
        let host = HeaderValue::from_static("a.com");
        let forwarded = Forwarded::new(&headers, &client, &host, false, client.peer, &kept);
        assert!(forwarded.replaces(&X_REQUEST_ID));
        assert!(!forwarded.replaces(&header::HOST));
        forwarded.apply(&mut headers);
        assert_eq!(headers["x-request-id"], "abc");
        assert_eq!(headers["x-forwarded-for"], "::1");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-port"], "443");
    }

    #[test]
    fn addresses_as_text_match_the_standard_form() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "::",
            "::1",
            "2001:db8::1",
            "::ffff:192.0.2.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "1:0:2:0:3:0:4:5",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
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
    fn a_peer_named_by_proxy_protocol_is_the_one_forwarded() {
        let mut client = ClientSide::new("10.0.0.1".parse().unwrap(), 80, false);
        client.set_peer("198.51.100.4".parse().unwrap());
        let mut headers = HeaderMap::new();
        let host = HeaderValue::from_static("a.com");
        let id = HeaderValue::from_static("id");
        Forwarded::new(&headers, &client, &host, false, client.peer, &id).apply(&mut headers);
        assert_eq!(headers["x-forwarded-for"], "198.51.100.4");
        assert_eq!(headers["x-real-ip"], "198.51.100.4");
        assert_eq!(headers["x-forwarded-port"], "80");
    }

    #[test]
    fn the_hop_by_hop_index_matches_the_table() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index(&header::HOST), None);
    }
}
