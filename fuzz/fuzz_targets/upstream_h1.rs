//! Upstream HTTP/1.1 responses on any input: the head parser and the body reader must answer
//! without panicking, the same however the reads split the bytes, and what they pass on must
//! be safe and agree with the head: no CR, LF or NUL in a field, none of the connection's own
//! fields, the body a length announces and nothing past it, and a chunked body read as a
//! strict RFC 9112 reading reads it.
//!
//! Input: a flags byte (bit 0: the request was a HEAD), a count `n` (at most 16) and `n` read
//! sizes, then the response as the upstream sends it. The read sizes cut the response into
//! the pieces successive reads deliver, repeated to its end.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vestibule_proxy::fuzzing::{
    BodyEnd, DecodedBody, Framing, ResponseHead, response_body, response_head,
};

/// Fields that belong to the upstream's connection and are never passed on.
const CONNECTION_FIELDS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn unsafe_byte(b: u8) -> bool {
    b == b'\r' || b == b'\n' || b == 0
}

/// `bytes` cut into pieces of the sizes in `sizes`, repeated (a size of 0 is an empty read).
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

fn check_head(head: &ResponseHead, head_method: bool) {
    for (name, value) in &head.fields {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
        );
        assert!(!value.iter().copied().any(unsafe_byte), "{name}: {value:?}");
        assert!(
            !CONNECTION_FIELDS.contains(&name.as_str()),
            "{name} passed on"
        );
    }
    let lengths: Vec<&[u8]> = head
        .fields
        .iter()
        .filter(|(name, _)| name == "content-length")
        .map(|(_, value)| &value[..])
        .collect();
    let no_body = head_method || head.status == 204 || head.status == 304;
    match head.framing {
        Framing::Length(n) => {
            assert!(!no_body && n > 0);
            // Every value passed on is a list of that one length.
            assert!(!lengths.is_empty());
            for value in lengths {
                for part in value.split(|&b| b == b',') {
                    let text = std::str::from_utf8(part.trim_ascii()).unwrap_or("");
                    assert_eq!(text.parse::<u64>().ok(), Some(n), "{value:?}");
                }
            }
        }
        Framing::Chunked => assert!(lengths.is_empty(), "a length passed on with a chunked body"),
        Framing::Close => assert!(!head.keep_alive, "read to the close, yet kept"),
        Framing::Done => {}
    }
    if head.http10 {
        assert!(!head.keep_alive);
    }
}

/// A strict reading of a chunked body (RFC 9112 section 7.1), with the leniencies the proxy
/// may have without risk: whitespace after the size, any extension text without controls,
/// and trailer lines that end in a bare LF (section 2.2). The data, the trailer fields (name
/// lower-cased, value trimmed) and where the body ends; `None` when the bytes are not a
/// complete chunked body. Sizes of at most 16 digits, lines of at most 4 KiB and 128 trailer
/// fields, the proxy's bounds.
fn strict_chunked(body: &[u8]) -> Option<(Vec<u8>, Vec<(String, Vec<u8>)>, usize)> {
    let control = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let line_len = body[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = &body[at..at + line_len];
        if line_len > 4096 {
            return None;
        }
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 16 {
            return None;
        }
        let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()?;
        let rest = &line[digits..];
        let blank = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let ext = &rest[blank..];
        if !(ext.is_empty() || ext[0] == b';') || ext.iter().copied().any(control) {
            return None;
        }
        at += line_len + 2;
        if size == 0 {
            break;
        }
        let end = at.checked_add(usize::try_from(size).ok()?)?;
        if body.len() < end.checked_add(2)? || &body[end..end + 2] != b"\r\n" {
            return None;
        }
        data.extend_from_slice(&body[at..end]);
        at = end + 2;
    }
    let mut trailers = Vec::new();
    loop {
        let line_len = body[at..].iter().position(|&b| b == b'\n')?;
        let line = &body[at..at + line_len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at += line_len + 1;
        if line.is_empty() {
            break;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
        if name.is_empty() || !name.iter().all(token) || value.iter().copied().any(control) {
            return None;
        }
        let value = value.trim_ascii();
        trailers.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            value.to_vec(),
        ));
        if trailers.len() > 128 {
            return None;
        }
    }
    Some((data, trailers, at))
}

fn decode(framing: Framing, pieces: &[&[u8]]) -> DecodedBody {
    match response_body(framing, pieces) {
        Ok(body) => body,
        Err(e) => panic!("no loopback socket for the body reader: {e}"),
    }
}

/// The decoded body, as order-free as a field map is, and however it was fed.
fn comparable(mut body: DecodedBody) -> DecodedBody {
    body.trailers.sort();
    body.fed = 0;
    body
}

fn check_body(framing: Framing, body: &[u8], sizes: &[u8]) {
    let whole = decode(framing, &[body]);
    let split = decode(framing, &pieces(body, sizes));
    assert_eq!(
        comparable(whole.clone()),
        comparable(split),
        "the reads' split changes the body"
    );
    // One byte per read: the reader stops asking at the last byte it needs.
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    let byte_by_byte = decode(framing, &bytes);
    let used = byte_by_byte.fed;
    assert_eq!(
        comparable(whole.clone()),
        comparable(byte_by_byte),
        "one byte per read changes the body"
    );
    match framing {
        Framing::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            assert_eq!(
                whole.data,
                body[..n.min(body.len())],
                "the length's bytes, no more"
            );
            assert!(whole.trailers.is_empty());
            let complete = body.len() >= n;
            assert_eq!(whole.end == BodyEnd::Complete, complete);
            if complete {
                assert_eq!(used, n, "read past the announced length");
            }
        }
        Framing::Close => {
            assert_eq!(whole.data, body);
            assert_eq!(
                whole.end,
                BodyEnd::Starved,
                "done before the upstream closed"
            );
        }
        Framing::Done => {
            assert!(whole.data.is_empty() && whole.trailers.is_empty());
            assert_eq!(whole.end, BodyEnd::Complete);
        }
        Framing::Chunked => {
            let strict = strict_chunked(body);
            if let Some((data, trailers, end)) = &strict {
                let mut trailers = trailers.clone();
                trailers.sort();
                assert_eq!(
                    whole.end,
                    BodyEnd::Complete,
                    "a valid chunked body is refused"
                );
                assert_eq!(&whole.data, data);
                assert_eq!(&comparable(whole.clone()).trailers, &trailers);
                assert_eq!(used, *end, "read past the end of a chunked body");
            }
            if whole.end == BodyEnd::Complete {
                let Some((_, _, end)) = strict else {
                    panic!(
                        "a chunked body the strict reading refuses is taken: {:?}",
                        String::from_utf8_lossy(&body[..used])
                    );
                };
                assert_eq!(used, end);
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let [flags, count, rest @ ..] = input else {
        return;
    };
    let count = usize::from(*count).min(16).min(rest.len());
    let (sizes, response) = rest.split_at(count);
    let head_method = flags & 1 == 1;
    let parsed = response_head(response, head_method);
    // The head is read again after every read until it is complete: a prefix of a head is
    // incomplete, never refused, and anything after it changes nothing.
    let mut cut = 0;
    for &size in sizes.iter().cycle().take(64) {
        cut += usize::from(size);
        if size == 0 || cut >= response.len() {
            break;
        }
        let early = response_head(&response[..cut], head_method);
        match &parsed {
            Ok(Some(head)) if cut < head.len => {
                assert_eq!(early, Ok(None), "a head cut at {cut} of {}", head.len);
            }
            Ok(Some(_)) => assert_eq!(early, parsed),
            Ok(None) => assert_eq!(early, Ok(None)),
            Err(_) => {}
        }
    }
    let Ok(Some(head)) = parsed else {
        return;
    };
    check_head(&head, head_method);
    check_body(head.framing, &response[head.len..], sizes);
});
