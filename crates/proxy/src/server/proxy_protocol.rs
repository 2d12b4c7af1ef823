//! The receiving side of the PROXY protocol, versions 1 and 2 as HAProxy's specification
//! defines them: the header a load balancer sends ahead of the client's bytes to say whom the
//! connection is really from.
//!
//! Only the header's bytes are read, never more: what follows belongs to TLS or HTTP, and the
//! stream is handed on as it is, without a buffer to drain first.

// Not called yet: the listener is wired to it separately. Remove once it is.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// What a PROXY header says about the connection. `None` when it gives no addresses (v1
/// `UNKNOWN`, v2 `LOCAL`, v2 over `AF_UNSPEC` or `AF_UNIX`): the socket's own addresses apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProxyHeader {
    pub(crate) source: Option<SocketAddr>,
    pub(crate) destination: Option<SocketAddr>,
}

impl ProxyHeader {
    const NO_ADDRESSES: ProxyHeader = ProxyHeader {
        source: None,
        destination: None,
    };
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyProtocolError {
    /// The connection starts with something else: a client talking to the listener directly,
    /// or a load balancer not configured to send the header.
    #[error("the connection does not start with a PROXY protocol header")]
    NotProxyProtocol,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("unsupported PROXY protocol version {0}")]
    UnsupportedVersion(u8),
    #[error("PROXY protocol header longer than {limit} bytes")]
    TooLong { limit: usize },
    #[error("no complete PROXY protocol header within {0:?}")]
    TimedOut(Duration),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

const V1_PREFIX: &[u8] = b"PROXY ";
/// `PROXY UNKNOWN\r\n`, the shortest v1 header; v2 headers are longer still (16 bytes).
const V1_MIN: usize = 15;
/// The specification's worst case: `PROXY UNKNOWN` followed by two full-length IPv6
/// addresses and ports.
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED: usize = 16;
/// Room for the addresses and the TLVs load balancers send (ids, ALPN, TLS details), as
/// nginx allows; the 16-bit length would otherwise let a peer make us buffer 64 KiB.
const V2_MAX: usize = 4096;

/// Reads a PROXY protocol header (either version) from the start of `io`, consuming exactly
/// its bytes. Fails with [`ProxyProtocolError::TimedOut`] if the whole header has not arrived
/// within `timeout`. On any error the connection cannot be served and should be closed.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyProtocolError> {
    tokio::time::timeout(timeout, read_unbounded(io))
        .await
        .map_err(|_| ProxyProtocolError::TimedOut(timeout))?
}

async fn read_unbounded<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<ProxyHeader, ProxyProtocolError> {
    // Every header of either version is at least V1_MIN bytes long, so reading that many
    // first cannot take anything that follows the header.
    let mut start = [0u8; V2_FIXED];
    let got = read_full(io, &mut start[..V1_MIN]).await?;
    let start_read = &start[..got];
    if !could_start_header(start_read) {
        return Err(ProxyProtocolError::NotProxyProtocol);
    }
    if got < V1_MIN {
        return Err(closed_early());
    }
    if start.starts_with(V1_PREFIX) {
        read_v1(io, &start[..V1_MIN]).await
    } else {
        read_exact(io, &mut start[V1_MIN..]).await?;
        read_v2(io, &start).await
    }
}

/// Whether `bytes`, however few, can be the beginning of a header of either version.
fn could_start_header(bytes: &[u8]) -> bool {
    let is_prefix_of = |expected: &[u8]| {
        let n = bytes.len().min(expected.len());
        bytes[..n] == expected[..n]
    };
    is_prefix_of(V1_PREFIX) || is_prefix_of(V2_SIGNATURE)
}

async fn read_v1<R: AsyncRead + Unpin>(
    io: &mut R,
    start: &[u8],
) -> Result<ProxyHeader, ProxyProtocolError> {
    let rest = &start[V1_PREFIX.len()..];
    if !(rest.starts_with(b"TCP4 ")
        || rest.starts_with(b"TCP6 ")
        || rest.starts_with(b"UNKNOWN\r")
        || rest.starts_with(b"UNKNOWN "))
    {
        return Err(ProxyProtocolError::Malformed(
            "v1 protocol is not TCP4, TCP6 or UNKNOWN",
        ));
    }
    let mut line = Vec::with_capacity(V1_MAX);
    line.extend_from_slice(start);
    loop {
        if let Some(newline) = line.iter().position(|&b| b == b'\n') {
            // Reads never go past the shortest valid rest of the line, so in a valid header
            // the line feed can only be the last byte read.
            if newline + 1 != line.len() {
                return Err(ProxyProtocolError::Malformed(
                    "v1 header has a line feed before its end",
                ));
            }
            return parse_v1(&line);
        }
        if line.len() >= V1_MAX {
            return Err(ProxyProtocolError::TooLong { limit: V1_MAX });
        }
        let want = v1_shortest_rest(&line).min(V1_MAX - line.len());
        let filled = line.len();
        line.resize(filled + want, 0);
        read_exact(io, &mut line[filled..]).await?;
    }
}

/// The fewest bytes that can still follow `line`, a v1 header read up to some point, if it is
/// valid: several bytes per read instead of one, without reading past the CRLF.
fn v1_shortest_rest(line: &[u8]) -> usize {
    if line.last() == Some(&b'\r') {
        return 1;
    }
    if line.starts_with(b"PROXY TCP") {
        // `PROXY TCPn src dst sport dport`: five spaces, each followed by at least one byte.
        let spaces = line.iter().filter(|&&b| b == b' ').count();
        let missing_fields = 5usize.saturating_sub(spaces);
        let field_just_started = usize::from(line.last() == Some(&b' '));
        return missing_fields * 2 + field_just_started + 2;
    }
    2
}

fn parse_v1(line: &[u8]) -> Result<ProxyHeader, ProxyProtocolError> {
    use ProxyProtocolError::Malformed;
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or(Malformed("v1 header does not end in CRLF"))?;
    if line.contains(&b'\r') {
        return Err(Malformed("v1 header has a carriage return before its end"));
    }
    let rest = line
        .strip_prefix(V1_PREFIX)
        .ok_or(ProxyProtocolError::NotProxyProtocol)?;
    // The specification has receivers ignore whatever follows UNKNOWN on the line.
    if rest == b"UNKNOWN" || rest.starts_with(b"UNKNOWN ") {
        return Ok(ProxyHeader::NO_ADDRESSES);
    }
    let rest = std::str::from_utf8(rest).map_err(|_| Malformed("v1 header is not ASCII"))?;
    let mut fields = rest.split(' ');
    let (Some(protocol), Some(source), Some(destination), Some(source_port), Some(dest_port), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(Malformed(
            "v1 header does not have exactly five fields separated by single spaces",
        ));
    };
    let (source, destination) = match protocol {
        "TCP4" => (
            IpAddr::V4(v1_address::<Ipv4Addr>(source)?),
            IpAddr::V4(v1_address::<Ipv4Addr>(destination)?),
        ),
        "TCP6" => (
            IpAddr::V6(v1_address::<Ipv6Addr>(source)?),
            IpAddr::V6(v1_address::<Ipv6Addr>(destination)?),
        ),
        _ => return Err(Malformed("v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(ProxyHeader {
        source: Some(SocketAddr::new(source, v1_port(source_port)?)),
        destination: Some(SocketAddr::new(destination, v1_port(dest_port)?)),
    })
}

fn v1_address<A: std::str::FromStr>(field: &str) -> Result<A, ProxyProtocolError> {
    field.parse().map_err(|_| {
        ProxyProtocolError::Malformed("v1 address is not an address of the stated family")
    })
}

fn v1_port(field: &str) -> Result<u16, ProxyProtocolError> {
    // `u16::from_str` alone would also take a leading `+`.
    if (1..=5).contains(&field.len()) && field.bytes().all(|b| b.is_ascii_digit()) {
        // Five digits may still be more than 65535.
        return field.parse().map_err(|_| {
            ProxyProtocolError::Malformed("v1 port is not a decimal number up to 65535")
        });
    }
    Err(ProxyProtocolError::Malformed(
        "v1 port is not a decimal number up to 65535",
    ))
}

const V2_COMMAND_LOCAL: u8 = 0x0;
const V2_COMMAND_PROXY: u8 = 0x1;
const V2_UNSPEC: u8 = 0x00;
const V2_TCP4: u8 = 0x11;
const V2_UDP4: u8 = 0x12;
const V2_TCP6: u8 = 0x21;
const V2_UDP6: u8 = 0x22;
const V2_UNIX_STREAM: u8 = 0x31;
const V2_UNIX_DGRAM: u8 = 0x32;
const V2_TCP4_ADDRESSES: usize = 12;
const V2_TCP6_ADDRESSES: usize = 36;
const V2_UNIX_ADDRESSES: usize = 216;

async fn read_v2<R: AsyncRead + Unpin>(
    io: &mut R,
    fixed: &[u8; V2_FIXED],
) -> Result<ProxyHeader, ProxyProtocolError> {
    use ProxyProtocolError::Malformed;
    if !fixed.starts_with(V2_SIGNATURE) {
        return Err(ProxyProtocolError::NotProxyProtocol);
    }
    let version = fixed[12] >> 4;
    if version != 2 {
        return Err(ProxyProtocolError::UnsupportedVersion(version));
    }
    let command = fixed[12] & 0x0f;
    let family = fixed[13];
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if V2_FIXED + len > V2_MAX {
        return Err(ProxyProtocolError::TooLong { limit: V2_MAX });
    }
    // Checked before the rest is read, so that a bad header fails without waiting for it.
    let addresses_len = match (command, family) {
        (V2_COMMAND_LOCAL, _) => None,
        (V2_COMMAND_PROXY, V2_UNSPEC) => Some(0),
        (V2_COMMAND_PROXY, V2_TCP4) => Some(V2_TCP4_ADDRESSES),
        (V2_COMMAND_PROXY, V2_TCP6) => Some(V2_TCP6_ADDRESSES),
        (V2_COMMAND_PROXY, V2_UNIX_STREAM) => Some(V2_UNIX_ADDRESSES),
        (V2_COMMAND_PROXY, V2_UDP4 | V2_UDP6 | V2_UNIX_DGRAM) => {
            return Err(Malformed("v2 header describes a datagram flow"));
        }
        (V2_COMMAND_PROXY, _) => {
            return Err(Malformed("v2 address family or transport is undefined"));
        }
        _ => return Err(Malformed("v2 command is neither LOCAL nor PROXY")),
    };
    if addresses_len.is_some_and(|needed| len < needed) {
        return Err(Malformed("v2 length is too short for the addresses"));
    }
    let mut block = vec![0u8; len];
    read_exact(io, &mut block).await?;
    // LOCAL: health checks and the like from the load balancer itself; the specification has
    // the receiver discard the block whatever it holds.
    let Some(addresses_len) = addresses_len else {
        return Ok(ProxyHeader::NO_ADDRESSES);
    };
    let (addresses, tlvs) = block.split_at(addresses_len);
    check_tlvs(tlvs)?;
    Ok(match family {
        V2_TCP4 => {
            let ip = |at: usize| {
                Ipv4Addr::new(
                    addresses[at],
                    addresses[at + 1],
                    addresses[at + 2],
                    addresses[at + 3],
                )
            };
            let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
            ProxyHeader {
                source: Some(SocketAddr::new(IpAddr::V4(ip(0)), port(8))),
                destination: Some(SocketAddr::new(IpAddr::V4(ip(4)), port(10))),
            }
        }
        V2_TCP6 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&addresses[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
            ProxyHeader {
                source: Some(SocketAddr::new(IpAddr::V6(ip(0)), port(32))),
                destination: Some(SocketAddr::new(IpAddr::V6(ip(16)), port(34))),
            }
        }
        _ => ProxyHeader::NO_ADDRESSES,
    })
}

/// The TLVs are not used, but must fill the rest of the header exactly, as HAProxy checks:
/// anything else means the sender and this reader disagree on the header's layout.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyProtocolError> {
    while !tlvs.is_empty() {
        let [_kind, len_high, len_low, rest @ ..] = tlvs else {
            return Err(ProxyProtocolError::Malformed("v2 TLV is cut short"));
        };
        let len = usize::from(u16::from_be_bytes([*len_high, *len_low]));
        tlvs = rest.get(len..).ok_or(ProxyProtocolError::Malformed(
            "v2 TLV is longer than the header",
        ))?;
    }
    Ok(())
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
async fn read_full<R: AsyncRead + Unpin>(io: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match io.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

async fn read_exact<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut [u8],
) -> Result<(), ProxyProtocolError> {
    if read_full(io, buf).await? < buf.len() {
        return Err(closed_early());
    }
    Ok(())
}

fn closed_early() -> ProxyProtocolError {
    ProxyProtocolError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed inside the PROXY protocol header",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;
    use vestibule_testkit::proxy_protocol::{v1, v2};

    const LONG: Duration = Duration::from_secs(5);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Reads a header from `bytes` and returns it with what the reader left unread.
    async fn read_from(bytes: &[u8]) -> (Result<ProxyHeader, ProxyProtocolError>, Vec<u8>) {
        let mut reader = bytes;
        let header = read_header(&mut reader, LONG).await;
        (header, reader.to_vec())
    }

    async fn parse(bytes: &[u8]) -> Result<ProxyHeader, ProxyProtocolError> {
        read_from(bytes).await.0
    }

    fn addressed(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader {
            source: Some(addr(source)),
            destination: Some(addr(destination)),
        }
    }

    /// Followed by a request, so that a reader that wants more than a valid header would
    /// have finds it, rather than the end of the stream.
    async fn malformed(bytes: &[u8]) {
        let result = parse(&[bytes, b"GET / HTTP/1.1\r\n\r\n"].concat()).await;
        assert!(
            matches!(result, Err(ProxyProtocolError::Malformed(_))),
            "{:?}: {result:?}",
            String::from_utf8_lossy(bytes)
        );
    }

    #[tokio::test]
    async fn v1_tcp4() {
        let (header, rest) =
            read_from(b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(
            header.unwrap(),
            addressed("192.0.2.7:56324", "10.0.0.1:443")
        );
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn v1_tcp6() {
        let (header, rest) =
            read_from(b"PROXY TCP6 2001:db8::7 ::ffff:10.0.0.1 0 65535\r\n\x16\x03\x01").await;
        assert_eq!(
            header.unwrap(),
            addressed("[2001:db8::7]:0", "[::ffff:10.0.0.1]:65535")
        );
        assert_eq!(rest, b"\x16\x03\x01");
    }

    #[tokio::test]
    async fn v1_unknown() {
        for line in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY UNKNOWN \xff whatever\r\n",
        ] {
            let mut bytes = line.to_vec();
            bytes.extend_from_slice(b"GET /");
            let (header, rest) = read_from(&bytes).await;
            assert_eq!(header.unwrap(), ProxyHeader::NO_ADDRESSES);
            assert_eq!(rest, b"GET /");
        }
    }

    #[tokio::test]
    async fn v1_longest_header_is_accepted_and_one_more_byte_is_not() {
        let a = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let longest_tcp6 = format!("PROXY TCP6 {a} {a} 65535 65535\r\n");
        assert!(parse(longest_tcp6.as_bytes()).await.is_ok());
        // The specification's example of the longest header.
        let longest = format!("PROXY UNKNOWN {a} {a} 65535 65535\r\n");
        assert_eq!(longest.len(), V1_MAX);
        assert!(parse(longest.as_bytes()).await.is_ok());
        let unknown = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 16));
        assert_eq!(unknown.len(), V1_MAX);
        assert!(parse(unknown.as_bytes()).await.is_ok());
        let too_long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 15));
        assert!(matches!(
            parse(too_long.as_bytes()).await,
            Err(ProxyProtocolError::TooLong { limit: V1_MAX })
        ));
        let endless = format!("PROXY TCP4 {}", "1".repeat(500));
        assert!(matches!(
            parse(endless.as_bytes()).await,
            Err(ProxyProtocolError::TooLong { .. })
        ));
    }

    #[tokio::test]
    async fn v1_malformed() {
        for bytes in [
            &b"PROXY TCP4  192.0.2.7 10.0.0.1 1 2\r\n"[..],
            b"PROXY TCP4 192.0.2.7  10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2 \r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2 3\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\r\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1\r2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1\t2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 +1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 -1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 000001 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 0x10 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2a\r\n",
            b"PROXY TCP4 192.0.2.007 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.256 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 ::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 ::1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n",
            b"PROXY TCP6 ::1 192.0.2.7 1 2\r\n",
            b"PROXY TCP6 [::1] ::1 1 2\r\n",
            b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.\xc3\xa9 10.0.0.1 1 2\r\n",
            b"PROXY TCP5 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY tcp4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY UNKNOWN\n\r\n",
            b"PROXY UNKNOWN x\ry\r\n",
            b"PROXY  TCP4 192.0.2.7 10.0.0.1 1 2\r\n",
        ] {
            malformed(bytes).await;
        }
    }

    #[tokio::test]
    async fn not_a_proxy_header() {
        for bytes in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdefgh",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"proxy TCP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY\tTCP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"\r\n\r\n\0\r\nQUIX\n\x21\x11\0\x0c",
            b"G",
        ] {
            let result = parse(bytes).await;
            assert!(
                matches!(result, Err(ProxyProtocolError::NotProxyProtocol)),
                "{bytes:?}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_connection_closed_inside_the_header_is_an_io_error() {
        for bytes in [
            &b""[..],
            b"PROX",
            b"PROXY TCP4 192.0.2.7 10.0",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\r",
            b"\r\n\r\n\0\r\nQUIT\n",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\0\x0c\xc0\0\x02",
        ] {
            let result = parse(bytes).await;
            assert!(
                matches!(&result, Err(ProxyProtocolError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof),
                "{bytes:?}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn v2_ipv4_from_the_specification_bytes() {
        let mut bytes = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        bytes.extend_from_slice(&[192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb]);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (header, rest) = read_from(&bytes).await;
        assert_eq!(
            header.unwrap(),
            addressed("192.0.2.7:56324", "10.0.0.1:443")
        );
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn v2_ipv4_and_ipv6_with_tlvs() {
        let tlvs: &[(u8, &[u8])] = &[
            (0x01, b"h2"),                  // ALPN
            (0x04, b""),                    // NOOP, empty
            (0xea, b"\x01vpce-0123456789"), // AWS VPC endpoint
        ];
        for (source, destination) in [
            ("192.0.2.7:56324", "10.0.0.1:443"),
            ("[2001:db8::7]:1", "[fd00::1]:8443"),
        ] {
            let (source, destination) = (addr(source), addr(destination));
            let mut bytes = v2(source, destination, tlvs);
            bytes.extend_from_slice(b"\x16\x03\x01after");
            let (header, rest) = read_from(&bytes).await;
            assert_eq!(
                header.unwrap(),
                ProxyHeader {
                    source: Some(source),
                    destination: Some(destination)
                }
            );
            assert_eq!(rest, b"\x16\x03\x01after");
        }
    }

    #[tokio::test]
    async fn v2_local_unspec_and_unix_give_no_addresses() {
        let tlv = b"\x04\x00\x03abc";
        let fixed = |command: u8, family: u8, len: usize| {
            let mut bytes = V2_SIGNATURE.to_vec();
            bytes.extend_from_slice(&[0x20 | command, family]);
            bytes.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
            bytes
        };
        let mut local = fixed(V2_COMMAND_LOCAL, V2_UNSPEC, 0);
        local.extend_from_slice(b"rest");
        // LOCAL's block is discarded, whatever the family and whatever it holds.
        let mut local_with_block = fixed(V2_COMMAND_LOCAL, 0x77, 5);
        local_with_block.extend_from_slice(b"\xff\xff\xff\xff\xffrest");
        let mut unspec = fixed(V2_COMMAND_PROXY, V2_UNSPEC, tlv.len());
        unspec.extend_from_slice(tlv);
        unspec.extend_from_slice(b"rest");
        let mut unix = fixed(
            V2_COMMAND_PROXY,
            V2_UNIX_STREAM,
            V2_UNIX_ADDRESSES + tlv.len(),
        );
        unix.extend_from_slice(&[b'/'; V2_UNIX_ADDRESSES]);
        unix.extend_from_slice(tlv);
        unix.extend_from_slice(b"rest");
        for bytes in [local, local_with_block, unspec, unix] {
            let (header, rest) = read_from(&bytes).await;
            assert_eq!(header.unwrap(), ProxyHeader::NO_ADDRESSES);
            assert_eq!(rest, b"rest");
        }
    }

    #[tokio::test]
    async fn v2_malformed() {
        let header = |ver_cmd: u8, family: u8, block: &[u8]| {
            let mut bytes = V2_SIGNATURE.to_vec();
            bytes.extend_from_slice(&[ver_cmd, family]);
            bytes.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
            bytes.extend_from_slice(block);
            bytes
        };
        let ipv4 = [192, 0, 2, 7, 10, 0, 0, 1, 0, 1, 0, 2];
        let with = |tail: &[u8]| [&ipv4[..], tail].concat();
        for bytes in [
            header(0x22, V2_TCP4, &ipv4),                      // command 2
            header(0x2f, V2_TCP4, &ipv4),                      // command 15
            header(0x21, V2_UDP4, &ipv4),                      // datagrams
            header(0x21, V2_UDP6, &[0; 36]),                   // datagrams
            header(0x21, V2_UNIX_DGRAM, &[0; 216]),            // datagrams
            header(0x21, 0x10, &ipv4),                         // AF_INET, no transport
            header(0x21, 0x13, &ipv4),                         // undefined transport
            header(0x21, 0x41, &ipv4),                         // undefined family
            header(0x21, V2_TCP4, &ipv4[..11]),                // addresses cut short
            header(0x21, V2_TCP6, &[0; 35]),                   // addresses cut short
            header(0x21, V2_UNIX_STREAM, &[0; 215]),           // addresses cut short
            header(0x21, V2_TCP4, &with(b"\x01")),             // TLV header cut short
            header(0x21, V2_TCP4, &with(b"\x01\x00")),         // TLV header cut short
            header(0x21, V2_TCP4, &with(b"\x01\x00\x03ab")),   // TLV value cut short
            header(0x21, V2_TCP4, &with(b"\x01\x00\x00\x02")), // second TLV cut short
            header(0x21, V2_UNSPEC, b"\x01\x00\x05ab"),        // TLV value cut short
        ] {
            malformed(&bytes).await;
        }
    }

    #[tokio::test]
    async fn v2_other_versions_and_oversized_headers_are_refused() {
        for version in [0x0, 0x1, 0x3, 0xf] {
            let mut bytes = V2_SIGNATURE.to_vec();
            bytes.extend_from_slice(&[(version << 4) | 1, V2_TCP4, 0, 12]);
            bytes.extend_from_slice(&[0; 12]);
            let result = parse(&bytes).await;
            assert!(
                matches!(result, Err(ProxyProtocolError::UnsupportedVersion(v)) if v == version),
                "{result:?}"
            );
        }
        let biggest = V2_MAX - V2_FIXED;
        let tlv_value = vec![0u8; biggest - V2_TCP4_ADDRESSES - 3];
        let bytes = v2(
            addr("192.0.2.7:1"),
            addr("10.0.0.1:2"),
            &[(0x04, &tlv_value)],
        );
        assert_eq!(bytes.len(), V2_MAX);
        assert!(parse(&bytes).await.is_ok());
        let tlv_value = vec![0u8; tlv_value.len() + 1];
        let bytes = v2(
            addr("192.0.2.7:1"),
            addr("10.0.0.1:2"),
            &[(0x04, &tlv_value)],
        );
        assert!(matches!(
            parse(&bytes).await,
            Err(ProxyProtocolError::TooLong { limit: V2_MAX })
        ));
    }

    #[tokio::test]
    async fn testkit_v1_encoder_round_trips() {
        for (source, destination) in [
            ("192.0.2.7:56324", "10.0.0.1:443"),
            ("[2001:db8::7]:1", "[::1]:80"),
        ] {
            let (source, destination) = (addr(source), addr(destination));
            let (header, rest) = read_from(&v1(source, destination)).await;
            assert_eq!(
                header.unwrap(),
                ProxyHeader {
                    source: Some(source),
                    destination: Some(destination)
                }
            );
            assert!(rest.is_empty());
        }
    }

    #[tokio::test]
    async fn works_on_a_tcp_stream_in_pieces_and_leaves_the_rest_on_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let header = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n";
            for piece in header.chunks(7) {
                stream.write_all(piece).await.unwrap();
                stream.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let header = read_header(&mut stream, LONG).await.unwrap();
        assert_eq!(header, addressed("192.0.2.7:56324", "10.0.0.1:443"));
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
        client.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_that_never_completes_times_out() {
        for partial in [
            &b""[..],
            b"PROXY TCP4 192.0.2.7",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00",
        ] {
            let (mut ours, mut theirs) = tokio::io::duplex(1024);
            theirs.write_all(partial).await.unwrap();
            let started = tokio::time::Instant::now();
            let result = read_header(&mut ours, Duration::from_secs(3)).await;
            assert!(
                matches!(result, Err(ProxyProtocolError::TimedOut(t)) if t == Duration::from_secs(3)),
                "{result:?}"
            );
            assert_eq!(started.elapsed(), Duration::from_secs(3));
            drop(theirs);
        }
    }

    /// A v1 or v2 header for any addresses, with random TLVs for v2.
    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
            any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
        ]
    }

    fn any_header() -> impl Strategy<Value = (Vec<u8>, ProxyHeader)> {
        let tlvs = prop::collection::vec(
            (any::<u8>(), prop::collection::vec(any::<u8>(), 0..40)),
            0..4,
        );
        (
            any_ip(),
            any_ip(),
            any::<u16>(),
            any::<u16>(),
            any::<bool>(),
            tlvs,
        )
            .prop_map(
                |(source_ip, destination_ip, source_port, dest_port, version_1, tlvs)| {
                    let source = SocketAddr::new(source_ip, source_port);
                    let destination = SocketAddr::new(destination_ip, dest_port);
                    let tlvs: Vec<(u8, &[u8])> = tlvs.iter().map(|(k, v)| (*k, &v[..])).collect();
                    let bytes = if version_1 {
                        v1(source, destination)
                    } else {
                        v2(source, destination, &tlvs)
                    };
                    let header = ProxyHeader {
                        source: Some(source),
                        destination: Some(destination),
                    };
                    (bytes, header)
                },
            )
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(future)
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = block_on(parse(&bytes));
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_start_never_panic(
            start in prop_oneof![Just(&b"PROXY "[..]), Just(&b"PROXY TCP4 "[..]), Just(&b"PROXY TCP6 "[..]), Just(&V2_SIGNATURE[..])],
            bytes in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let _ = block_on(parse(&[start, &bytes[..]].concat()));
        }

        #[test]
        fn valid_headers_are_read_exactly(
            (header, expected) in any_header(),
            after in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let bytes = [&header[..], &after[..]].concat();
            let (result, rest) = block_on(read_from(&bytes));
            prop_assert_eq!(result.unwrap(), normalized(expected));
            prop_assert_eq!(rest, after);
        }

        #[test]
        fn every_strict_prefix_of_a_valid_header_is_incomplete((header, _) in any_header()) {
            let results = block_on(async {
                let mut results = Vec::new();
                for end in 0..header.len() {
                    results.push(parse(&header[..end]).await);
                }
                results
            });
            for (end, result) in results.iter().enumerate() {
                prop_assert!(
                    matches!(result, Err(ProxyProtocolError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof),
                    "{:?}: {:?}", &header[..end], result
                );
            }
        }
    }

    /// The testkit encoders send mixed families as IPv6, v4 addresses mapped.
    fn normalized(header: ProxyHeader) -> ProxyHeader {
        match (header.source, header.destination) {
            (Some(s), Some(d)) if s.is_ipv4() != d.is_ipv4() => {
                let v6 = |a: SocketAddr| match a.ip() {
                    IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
                    IpAddr::V6(_) => a,
                };
                ProxyHeader {
                    source: Some(v6(s)),
                    destination: Some(v6(d)),
                }
            }
            _ => header,
        }
    }
}
