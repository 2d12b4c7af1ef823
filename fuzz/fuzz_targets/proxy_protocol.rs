//! The PROXY protocol reader on any input: it must answer without panicking, the same however
//! the connection's reads split the bytes, and never take a byte past the header it accepts
//! (what follows is TLS or HTTP, for the next reader). A header it accepts is a whole v1
//! line or v2 block, and its addresses written out again, in either version, read back the
//! same.
//!
//! Input: a count `n` (at most 16) and `n` read sizes, then the bytes the connection
//! delivers. The read sizes cut them into the pieces successive reads deliver, repeated to
//! the end.

#![no_main]

use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use vestibule_proxy::fuzzing::{ProxyAddresses, proxy_header};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn pieces<'a>(bytes: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    if sizes.iter().all(|&s| s == 0) {
        return vec![bytes];
    }
    let mut out = Vec::new();
    let mut rest = bytes;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at(usize::from(size).min(rest.len()));
        out.push(piece);
        rest = after;
    }
    out
}

fn read(pieces: &[&[u8]]) -> (ProxyAddresses, usize) {
    match proxy_header(pieces) {
        Ok(read) => read,
        Err(e) => panic!("no runtime: {e}"),
    }
}

/// The addresses as a v1 line and as a v2 block; `None` for a mixed pair, which neither
/// version can carry.
fn written(source: SocketAddr, destination: SocketAddr) -> Option<(Vec<u8>, Vec<u8>)> {
    let (family, v2_family, mut addresses) = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ("TCP4", 0x11, [s.octets(), d.octets()].concat()),
        (IpAddr::V6(s), IpAddr::V6(d)) => ("TCP6", 0x21, [s.octets(), d.octets()].concat()),
        _ => return None,
    };
    let v1 = format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    );
    addresses.extend_from_slice(&source.port().to_be_bytes());
    addresses.extend_from_slice(&destination.port().to_be_bytes());
    let mut v2 = V2_SIGNATURE.to_vec();
    v2.extend_from_slice(&[0x21, v2_family]);
    v2.extend_from_slice(&u16::try_from(addresses.len()).ok()?.to_be_bytes());
    v2.extend_from_slice(&addresses);
    Some((v1.into_bytes(), v2))
}

fuzz_target!(|input: &[u8]| {
    let [count, rest @ ..] = input else {
        return;
    };
    let count = usize::from(*count).min(16).min(rest.len());
    let (sizes, stream) = rest.split_at(count);
    let whole = read(&[stream]);
    let split = read(&pieces(stream, sizes));
    assert_eq!(whole, split, "the reads' split changes the header");
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(whole, read(&bytes), "one byte per read changes the header");
    let (addresses, taken) = whole;
    assert!(taken <= stream.len());
    let Ok((source, destination)) = addresses else {
        return;
    };
    let header = &stream[..taken];
    if header.starts_with(b"PROXY ") {
        assert!(header.len() <= 107, "a v1 header of {} bytes", header.len());
        assert!(header.ends_with(b"\r\n"));
        assert_eq!(header.iter().filter(|&&b| b == b'\n').count(), 1);
    } else {
        assert!(header.starts_with(V2_SIGNATURE), "{header:?}");
        let len = u16::from_be_bytes([header[14], header[15]]);
        assert_eq!(
            taken,
            16 + usize::from(len),
            "the v2 length is not what was taken"
        );
        assert!(taken <= 4096);
    }
    // The header alone, and with something else after it, reads the same.
    assert_eq!(read(&[header]), (Ok((source, destination)), taken));
    assert_eq!(
        read(&[header, b"\x16\x03\x01"]),
        (Ok((source, destination)), taken)
    );
    assert_eq!(source.is_some(), destination.is_some());
    if let (Some(source), Some(destination)) = (source, destination) {
        let Some((v1, v2)) = written(source, destination) else {
            panic!("a mixed pair of addresses: {source} {destination}");
        };
        let expected = (Ok((Some(source), Some(destination))), v1.len());
        assert_eq!(read(&[&v1]), expected, "{:?}", String::from_utf8_lossy(&v1));
        let expected = (Ok((Some(source), Some(destination))), v2.len());
        assert_eq!(read(&[&v2]), expected);
    }
});
