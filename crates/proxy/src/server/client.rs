//! What the proxy knows about the client side of a connection: the peer's address (or the
//! one a PROXY protocol header named), the listener's port, and whether it is HTTPS.

use std::io::Write as _;
use std::net::IpAddr;

use http::HeaderValue;

/// The client side of one connection, shared by every request on it. What requests write
/// of it (the peer's address, the listener's port) is formatted once per connection.
#[derive(Debug, Clone)]
pub(crate) struct ClientSide {
    pub(crate) peer: IpAddr,
    /// `peer` as text.
    pub(crate) peer_text: IpText,
    /// `peer` as a header value (`X-Forwarded-For`, `X-Real-IP`).
    pub(crate) peer_value: Option<HeaderValue>,
    /// The listener's port as a header value (`X-Forwarded-Port`).
    pub(crate) port_value: HeaderValue,
    pub(crate) https: bool,
    /// The certificate chain the client presented in the TLS handshake, if it was asked
    /// for one and sent one.
    pub(crate) certificates: Option<std::sync::Arc<[rustls::pki_types::CertificateDer<'static>]>>,
}

impl ClientSide {
    pub(crate) fn new(peer: IpAddr, local_port: u16, https: bool) -> ClientSide {
        let peer_text = IpText::new(peer);
        ClientSide {
            peer,
            peer_value: peer_text.header_value(),
            peer_text,
            port_value: HeaderValue::from(local_port),
            https,
            certificates: None,
        }
    }

    /// The client a PROXY protocol header names, in place of the load balancer.
    pub(crate) fn set_peer(&mut self, peer: IpAddr) {
        self.peer = peer;
        self.peer_text = IpText::new(peer);
        self.peer_value = self.peer_text.header_value();
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

    pub(crate) fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(self.as_bytes()).ok()
    }
}

impl std::fmt::Debug for IpText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_peer_named_by_proxy_protocol_replaces_the_balancer() {
        let mut client = ClientSide::new("10.0.0.1".parse().unwrap(), 80, false);
        client.set_peer("198.51.100.4".parse().unwrap());
        assert_eq!(client.peer_text.as_bytes(), b"198.51.100.4");
        assert_eq!(client.peer_value.unwrap(), "198.51.100.4");
        assert_eq!(client.port_value, "80");
        assert_eq!(client.peer, "198.51.100.4".parse::<IpAddr>().unwrap());
    }
}
