//! Who the client is: the connection's peer, unless that peer is a proxy trusted to say,
//! through `X-Forwarded-For` or `X-Real-IP`, whom it forwards for. As nginx's realip module
//! with `real_ip_recursive on`.
//!
//! The peer is the socket's peer address, or the PROXY protocol source address on listeners
//! that take one (the load balancer that sent it is trusted by the listener's configuration,
//! not by this list).
//!
//! How forwarding headers should follow the same decision, for the upstream to see what this
//! proxy believed:
//!
//! - From a peer that is not trusted, the incoming `X-Forwarded-For`, `-Proto`, `-Host`,
//!   `-Port` and `X-Real-IP` are claims anyone can make: they are replaced, never appended to.
//!   `X-Forwarded-For` becomes the peer alone, the others describe this hop.
//! - From a trusted peer they were written by a proxy we believe: the peer is appended to
//!   `X-Forwarded-For` (so the chain stays complete), `-Proto`, `-Host` and `-Port` are kept
//!   when present (the client talked to that proxy, not to us) and set from this hop when not.
//! - `X-Real-IP` is always set to [`client_ip`]'s answer, trusted or not.

// Not called yet: the request path is wired to it separately. Remove once it is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::HeaderMap;
use http::header::HeaderName;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The networks whose addresses may speak for the client. Empty: trust nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    v4: Vec<Network<u32>>,
    v6: Vec<Network<u128>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network<T> {
    address: T,
    mask: T,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trusted proxy {entry:?}: {reason}")]
pub struct TrustedProxiesError {
    pub entry: String,
    pub reason: String,
}

impl TrustedProxies {
    /// Parses addresses (`192.168.1.7`, `::1`: that one address) and CIDRs (`10.0.0.0/8`,
    /// `fd00::/8`), surrounding whitespace ignored.
    pub fn parse<I, S>(entries: I) -> Result<TrustedProxies, TrustedProxiesError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut trusted = TrustedProxies::default();
        for entry in entries {
            let entry = entry.as_ref();
            let error = |reason: String| TrustedProxiesError {
                entry: entry.to_owned(),
                reason,
            };
            let text = entry.trim();
            let (address, prefix) = match text.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (text, None),
            };
            let address: IpAddr = address
                .parse()
                .map_err(|_| error("not an IP address or CIDR".to_owned()))?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                // `u8::from_str` alone would also take a leading `+`.
                Some(p) if (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|&p| p <= max)
                    .ok_or_else(|| error(format!("prefix length is not between 0 and {max}")))?,
                Some(_) => return Err(error(format!("prefix length is not between 0 and {max}"))),
            };
            match address {
                IpAddr::V4(ip) => trusted.v4.push(
                    network(u32::from(ip), prefix, 32, |a| {
                        format!("{}/{prefix}", Ipv4Addr::from(a))
                    })
                    .map_err(error)?,
                ),
                IpAddr::V6(ip) => {
                    let v6 = network(u128::from(ip), prefix, 128, |a| {
                        format!("{}/{prefix}", Ipv6Addr::from(a))
                    })
                    .map_err(error)?;
                    // Peers in the IPv4-mapped range are compared as IPv4 (see `contains`),
                    // so a range within it is kept as the IPv4 range it is.
                    match (ip.to_ipv4_mapped(), prefix.checked_sub(96)) {
                        (Some(v4), Some(v4_prefix)) => trusted.v4.push(Network {
                            address: u32::from(v4),
                            mask: mask(v4_prefix, 32),
                        }),
                        _ => trusted.v6.push(v6),
                    }
                }
            }
        }
        Ok(trusted)
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`.
        match ip.to_canonical() {
            IpAddr::V4(ip) => {
                let ip = u32::from(ip);
                self.v4.iter().any(|n| ip & n.mask == n.address)
            }
            IpAddr::V6(ip) => {
                let ip = u128::from(ip);
                self.v6.iter().any(|n| ip & n.mask == n.address)
            }
        }
    }
}

trait Bits: Copy + Eq + std::ops::BitAnd<Output = Self> + std::ops::Not<Output = Self> {
    const ZERO: Self;
    fn checked_shl(self, by: u32) -> Option<Self>;
}

impl Bits for u32 {
    const ZERO: Self = 0;
    fn checked_shl(self, by: u32) -> Option<Self> {
        u32::checked_shl(self, by)
    }
}

impl Bits for u128 {
    const ZERO: Self = 0;
    fn checked_shl(self, by: u32) -> Option<Self> {
        u128::checked_shl(self, by)
    }
}

fn mask<T: Bits>(prefix: u8, width: u8) -> T {
    (!T::ZERO)
        .checked_shl(u32::from(width - prefix))
        .unwrap_or(T::ZERO)
}

/// Refuses host bits beyond the prefix rather than dropping them: `192.168.1.7/8` is more
/// likely a typo for `/32` than a wish to trust all of 192.0.0.0/8.
fn network<T: Bits>(
    address: T,
    prefix: u8,
    width: u8,
    show: impl Fn(T) -> String,
) -> Result<Network<T>, String> {
    let mask = mask(prefix, width);
    if address & mask != address {
        return Err(format!(
            "has bits set beyond the prefix length (the network is {})",
            show(address & mask)
        ));
    }
    Ok(Network { address, mask })
}

/// The client's address for a request that came from `peer`.
///
/// A peer that is not trusted is the client, whatever the headers say. A trusted peer's
/// `X-Forwarded-For` is read from the right, past the addresses of trusted proxies, to the
/// first address that is not one: the last hop no trusted proxy can vouch past. An entry that
/// is not an address ends the walk at the last address read. Without `X-Forwarded-For`, a
/// trusted peer's `X-Real-IP` is taken.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    let mut read_any = false;
    // Later header lines were added by later hops, as were later entries within a line.
    for line in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(line) = line.to_str() else {
            return client;
        };
        // Empty list elements are allowed, and ignored, in HTTP list headers.
        for entry in line.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some(ip) = forwarded_address(entry) else {
                return client;
            };
            read_any = true;
            client = ip;
            if !trusted.contains(ip) {
                return ip;
            }
        }
    }
    if read_any {
        // Every address was a trusted proxy's: the first one is as far as anyone vouches.
        return client;
    }
    let mut real_ip = headers.get_all(&X_REAL_IP).iter();
    match (real_ip.next(), real_ip.next()) {
        (Some(value), None) => value
            .to_str()
            .ok()
            .and_then(|v| forwarded_address(v.trim()))
            .unwrap_or(peer),
        // Two lines, or none: nothing to choose by.
        _ => peer,
    }
}

/// An address as proxies write them: `192.0.2.7`, `2001:db8::7`, and with a port, which some
/// add, `192.0.2.7:5678` or `[2001:db8::7]:5678`; or bracketed alone, `[2001:db8::7]`.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(address) = entry.parse::<SocketAddr>() {
        return Some(address.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(entries).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn parses_addresses_and_cidrs() {
        let t = trusted(&[
            "10.0.0.0/8",
            " 192.168.1.7 ",
            "::1/128",
            "fd00::/8",
            "0.0.0.0/0",
        ]);
        assert!(t.contains(ip("10.255.0.1")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("fdab::1")));
        assert!(!t.contains(ip("fe80::1")));
        assert!(!t.contains(ip("::2")));
        let t = trusted(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"]);
        assert!(!t.contains(ip("11.0.0.0")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(!t.contains(ip("fc00::1")));
        assert!(trusted(&["::/0"]).contains(ip("2001:db8::1")));
        assert!(!trusted(&["::/0"]).contains(ip("192.0.2.1")));
    }

    #[test]
    fn parse_errors_name_the_entry() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0.0/ 8",
            "10.0.0.1/8",
            "fd00::1/8",
            "10.0.0",
            "example.com",
            "",
            "fe80::1%eth0",
            "[::1]",
        ] {
            let error = TrustedProxies::parse(["127.0.0.1", bad]).unwrap_err();
            assert_eq!(error.entry, bad);
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
        let error = TrustedProxies::parse(["10.1.2.3/8"]).unwrap_err();
        assert!(error.to_string().contains("10.0.0.0/8"), "{error}");
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges_and_mapped_ranges_match_ipv4_peers() {
        let t = trusted(&["10.0.0.0/8"]);
        assert!(t.contains(ip("::ffff:10.1.2.3")));
        assert!(!t.contains(ip("::ffff:11.1.2.3")));
        let t = trusted(&["::ffff:10.0.0.0/104"]);
        assert!(t.contains(ip("10.1.2.3")));
        assert!(t.contains(ip("::ffff:10.1.2.3")));
        assert!(!t.contains(ip("11.1.2.3")));
    }

    #[test]
    fn an_empty_list_trusts_nobody() {
        let t = TrustedProxies::parse(Vec::<String>::new()).unwrap();
        assert!(t.is_empty());
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.1"));
        assert_eq!(client_ip(ip("::1"), &h, &t), ip("::1"));
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "10.0.0.5, 1.1.1.1"),
            ("x-real-ip", "1.1.1.1"),
        ]);
        assert_eq!(client_ip(ip("192.0.2.7"), &h, &t), ip("192.0.2.7"));
    }

    #[test]
    fn a_chain_through_two_trusted_proxies() {
        let t = trusted(&["10.0.0.0/8", "192.168.1.7"]);
        // The client's own claim (6.6.6.6) comes before the first proxy's entry.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 192.168.1.7")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &t), ip("203.0.113.9"));
        // The same chain over several header lines.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "192.168.1.7"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &t), ip("203.0.113.9"));
        // X-Forwarded-For wins over X-Real-IP.
        let h = headers(&[
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.9,192.168.1.7"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &t), ip("203.0.113.9"));
    }

    #[test]
    fn all_trusted_gives_the_leftmost() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.8")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &t), ip("10.0.0.9"));
    }

    #[test]
    fn ipv6_and_mapped_ipv4() {
        let t = trusted(&["fd00::/8", "10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "2001:db8::7, fd00::2")]);
        assert_eq!(client_ip(ip("fd00::1"), &h, &t), ip("2001:db8::7"));
        let h = headers(&[("x-forwarded-for", "[2001:db8::7]:4711, ::ffff:10.0.0.3")]);
        assert_eq!(client_ip(ip("::ffff:10.0.0.2"), &h, &t), ip("2001:db8::7"));
        let h = headers(&[("x-forwarded-for", "192.0.2.7:4711, [fd00::2]")]);
        assert_eq!(client_ip(ip("fd00::1"), &h, &t), ip("192.0.2.7"));
        // Untrusted mapped peers are returned as they are.
        assert_eq!(
            client_ip(ip("::ffff:192.0.2.7"), &h, &t),
            ip("::ffff:192.0.2.7")
        );
    }

    #[test]
    fn a_malformed_entry_ends_the_walk_at_the_last_good_address() {
        let t = trusted(&["10.0.0.0/8"]);
        for (xff, expected) in [
            ("203.0.113.9, unknown, 10.0.0.3", "10.0.0.3"),
            ("203.0.113.9, 10.0.0.4, garbage", "10.0.0.2"),
            ("203.0.113.9, 10.0.0.4 10.0.0.3", "10.0.0.2"),
            ("203.0.113.9, 999.0.0.1", "10.0.0.2"),
            ("203.0.113.9, fe80::1%eth0", "10.0.0.2"),
            ("203.0.113.9, 10.0.0.3:99999", "10.0.0.2"),
            // Empty elements are skipped, as in any HTTP list.
            ("203.0.113.9, , 10.0.0.3,", "203.0.113.9"),
        ] {
            let h = headers(&[("x-forwarded-for", xff)]);
            assert_eq!(client_ip(ip("10.0.0.2"), &h, &t), ip(expected), "{xff}");
        }
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        h.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"10.0.0.3 \xff").unwrap(),
        );
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &t), ip("10.0.0.2"));
    }

    #[test]
    fn x_real_ip_when_there_is_no_x_forwarded_for() {
        let t = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        for (real_ip, expected) in [
            (&["203.0.113.9"][..], "203.0.113.9"),
            (&[" 2001:db8::7 "], "2001:db8::7"),
            (&["not an address"], "10.0.0.2"),
            (&["203.0.113.9, 203.0.113.8"], "10.0.0.2"),
            (&["203.0.113.9", "203.0.113.8"], "10.0.0.2"),
        ] {
            let mut h = HeaderMap::new();
            for value in real_ip {
                h.append(&X_REAL_IP, HeaderValue::from_str(value).unwrap());
            }
            assert_eq!(client_ip(peer, &h, &t), ip(expected), "{real_ip:?}");
        }
        // An X-Forwarded-For with nothing in it counts as none.
        let h = headers(&[("x-forwarded-for", " , "), ("x-real-ip", "203.0.113.9")]);
        assert_eq!(client_ip(peer, &h, &t), ip("203.0.113.9"));
        assert_eq!(client_ip(peer, &HeaderMap::new(), &t), peer);
    }
}
