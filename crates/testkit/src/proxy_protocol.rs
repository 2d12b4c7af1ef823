//! PROXY protocol headers (HAProxy's specification) as a load balancer would send them ahead
//! of a connection's own bytes, for tests of listeners that expect one.

use std::net::{IpAddr, SocketAddr};

/// A version 1 (text) header: `PROXY TCP4 …` or `PROXY TCP6 …`. A header names one family,
/// so when `src` and `dst` differ the IPv4 one is sent as an IPv4-mapped IPv6 address.
pub fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    let protocol = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {protocol} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A version 2 (binary) header with the PROXY command over TCP, followed by `tlvs` as (type,
/// value) pairs. Mixed families are sent as IPv6, as in [`v1`].
///
/// # Panics
///
/// If the header's length does not fit the 16-bit length field.
pub fn v2(src: SocketAddr, dst: SocketAddr, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    let mut block = Vec::new();
    let family = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            block.extend_from_slice(&s.octets());
            block.extend_from_slice(&d.octets());
            0x11
        }
        (s, d) => {
            block.extend_from_slice(&ipv6_octets(s));
            block.extend_from_slice(&ipv6_octets(d));
            0x21
        }
    };
    block.extend_from_slice(&src.port().to_be_bytes());
    block.extend_from_slice(&dst.port().to_be_bytes());
    for (kind, value) in tlvs {
        block.push(*kind);
        block.extend_from_slice(&u16_len(value.len()).to_be_bytes());
        block.extend_from_slice(value);
    }
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    // Version 2, command PROXY.
    header.push(0x21);
    header.push(family);
    header.extend_from_slice(&u16_len(block.len()).to_be_bytes());
    header.extend_from_slice(&block);
    header
}

fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    if src.is_ipv4() == dst.is_ipv4() {
        return (src, dst);
    }
    let v6 = |a: SocketAddr| SocketAddr::new(IpAddr::V6(ipv6_octets(a.ip()).into()), a.port());
    (v6(src), v6(dst))
}

fn ipv6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    }
}

fn u16_len(len: usize) -> u16 {
    assert!(
        len <= usize::from(u16::MAX),
        "PROXY v2 length {len} exceeds 65535"
    );
    len as u16
}
