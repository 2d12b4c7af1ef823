//! HTTP/2 abuse on raw sockets through `vestibule run` (h2c with prior knowledge on the
//! plain listener): CONTINUATION, SETTINGS and PING floods, HPACK bombs and broken dynamic
//! table updates, flow-control abuse. Each is written frame by frame, as an attacker's tool
//! would; each must end in a GOAWAY, a 431 or a cut connection within a deadline, reach no
//! backend, and leave the process serving the next request.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use vestibule_testkit::{Echo, EchoReply, ManifestDir};

// Frame types and flags (RFC 9113 section 6), and the error codes asserted (section 7).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const COMPRESSION_ERROR: u32 = 0x9;
const ENHANCE_YOUR_CALM: u32 = 0xb;
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest frame payload a peer may send before SETTINGS_MAX_FRAME_SIZE raises it.
const MAX_FRAME: usize = 16_384;
/// How long any answer may take.
const DEADLINE: Duration = Duration::from_secs(10);

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    assert!(len < 1 << 24);
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = values
        .iter()
        .flat_map(|(id, value)| [&id.to_be_bytes()[..], &value.to_be_bytes()[..]].concat())
        .collect();
    frame(SETTINGS, 0, 0, &payload)
}

// HPACK (RFC 7541) by hand: integers with an N-bit prefix, strings without Huffman coding.

fn hpack_int(first: u8, prefix_bits: u32, value: usize, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | u8::try_from(value).unwrap());
        return;
    }
    out.push(first | u8::try_from(max).unwrap());
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push(u8::try_from(rest & 0x7f).unwrap() | 0x80);
        rest >>= 7;
    }
    out.push(u8::try_from(rest).unwrap());
}

fn hpack_str(text: &[u8], out: &mut Vec<u8>) {
    hpack_int(0, 7, text.len(), out);
    out.extend_from_slice(text);
}

/// A literal field without indexing, its name given.
fn literal(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    hpack_str(name.as_bytes(), &mut out);
    hpack_str(value, &mut out);
    out
}

/// A literal field without indexing whose name is entry `index` of the static table.
fn literal_named(index: usize, value: &str) -> Vec<u8> {
    let mut out = Vec::new();
    hpack_int(0x00, 4, index, &mut out);
    hpack_str(value.as_bytes(), &mut out);
    out
}

/// A literal field added to the dynamic table (where it becomes entry 62).
fn literal_indexed(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x40];
    hpack_str(name.as_bytes(), &mut out);
    hpack_str(value, &mut out);
    out
}

/// `GET path` for `a.example`: `:method GET`, `:scheme http` from the static table.
fn request_block(path: &str) -> Vec<u8> {
    let mut out = vec![0x82, 0x86];
    out.extend(literal_named(4, path));
    out.extend(literal_named(1, "a.example"));
    out
}

/// A frame as read off the wire.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// What a GOAWAY said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GoAway {
    last_stream: u32,
    code: u32,
}

/// The answer to a flood that began before any stream was served.
const CALMED_BEFORE_ANY_STREAM: GoAway = GoAway {
    last_stream: 0,
    code: ENHANCE_YOUR_CALM,
};

/// A client connection after the preface, whose frames a task reads as they come: a client
/// that stops reading to write its flood could lose the GOAWAY to the reset that follows it.
struct RawH2 {
    write: OwnedWriteHalf,
    frames: mpsc::UnboundedReceiver<Frame>,
}

impl RawH2 {
    /// Connects, sends the preface with `values` as our SETTINGS, and acknowledges the
    /// server's SETTINGS.
    async fn connect(addr: SocketAddr, values: &[(u16, u32)]) -> RawH2 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (mut read, write) = tcp.into_split();
        let (tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut head = [0u8; 9];
            while read.read_exact(&mut head).await.is_ok() {
                let len =
                    usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
                let mut payload = vec![0u8; len];
                if read.read_exact(&mut payload).await.is_err() {
                    break;
                }
                let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                let frame = Frame {
                    kind: head[3],
                    flags: head[4],
                    stream,
                    payload,
                };
                if tx.send(frame).is_err() {
                    break;
                }
            }
        });
        let mut h2 = RawH2 { write, frames };
        h2.send(&[PREFACE, &settings(values)].concat())
            .await
            .unwrap();
        let first = h2.next().await.expect("the server's SETTINGS");
        assert_eq!((first.kind, first.flags & ACK), (SETTINGS, 0), "{first:?}");
        h2.send(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
        h2
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write.write_all(bytes).await
    }

    /// The next frame, `None` once the server has closed the connection.
    async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(DEADLINE, self.frames.recv())
            .await
            .expect("a frame, or the connection closed, in time")
    }

    /// The GOAWAY the server sends, skipping other frames; then the connection must close.
    async fn goaway(&mut self) -> GoAway {
        let goaway = loop {
            let Some(frame) = self.next().await else {
                panic!("the connection closed without a GOAWAY");
            };
            if frame.kind == GOAWAY {
                let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                break GoAway {
                    last_stream: word(&frame.payload[..4]) & 0x7fff_ffff,
                    code: word(&frame.payload[4..8]),
                };
            }
        };
        while self.next().await.is_some() {}
        goaway
    }

    /// The response on `stream`: its status and body.
    async fn response(&mut self, stream: u32) -> (u16, Vec<u8>) {
        let mut status = None;
        let mut body = Vec::new();
        loop {
            let Some(frame) = self.next().await else {
                panic!("the connection closed before the response on stream {stream}");
            };
            if frame.kind == GOAWAY {
                panic!("GOAWAY before the response on stream {stream}: {frame:?}");
            }
            if frame.stream != stream {
                continue;
            }
            match frame.kind {
                HEADERS if status.is_none() => status = Some(status_of(&frame)),
                DATA => body.extend_from_slice(&frame.payload),
                _ => {}
            }
            if frame.flags & END_STREAM != 0 && matches!(frame.kind, HEADERS | DATA) {
                return (status.expect("response headers"), body);
            }
        }
    }

    /// `GET path` on `stream`, answered: its status and body.
    async fn get(&mut self, stream: u32, path: &str) -> (u16, Vec<u8>) {
        let request = frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            stream,
            &request_block(path),
        );
        self.send(&request).await.unwrap();
        self.response(stream).await
    }
}

/// The `:status` of a response HEADERS frame (END_HEADERS, no padding or priority), read
/// as the h2 crate writes it first: an indexed static status, or a literal one whose value
/// is Huffman-coded digits.
fn status_of(frame: &Frame) -> u16 {
    assert!(
        frame.flags & END_HEADERS != 0 && frame.flags & 0x28 == 0,
        "{frame:?}"
    );
    let block = &frame.payload;
    let int = |at: usize, bits: u32| -> (usize, usize) {
        let max = (1usize << bits) - 1;
        let mut value = usize::from(block[at]) & max;
        let mut at = at + 1;
        if value == max {
            let mut shift = 0;
            loop {
                let b = usize::from(block[at]);
                value += (b & 0x7f) << shift;
                shift += 7;
                at += 1;
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        (value, at)
    };
    let mut at = 0;
    while block[at] & 0xe0 == 0x20 {
        at = int(at, 5).1;
    }
    if block[at] & 0x80 != 0 {
        let statuses = [200, 204, 206, 304, 400, 404, 500];
        let (index, _) = int(at, 7);
        return statuses[index
            .checked_sub(8)
            .filter(|i| *i < 7)
            .expect("a static status")];
    }
    let bits = if block[at] & 0x40 != 0 { 6 } else { 4 };
    let (name, after) = int(at, bits);
    assert_eq!(name, 8, ":status first");
    let huffman = block[after] & 0x80 != 0;
    let (len, start) = int(after, 7);
    let value = &block[start..start + len];
    let digits = if huffman {
        huffman_digits(value)
    } else {
        String::from_utf8(value.to_vec()).unwrap()
    };
    digits.parse().unwrap()
}

/// Digits in HPACK's Huffman code: `0`-`2` are `000` and two bits, `3`-`9` are `011` and
/// three (RFC 7541 Appendix B); the end is padded with ones.
fn huffman_digits(bytes: &[u8]) -> String {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let value = |from: usize, n: usize| bits[from..from + n].iter().fold(0u8, |v, b| v << 1 | b);
    let mut out = String::new();
    let mut at = 0;
    while bits.len() - at >= 5 && bits[at..].contains(&0) {
        match value(at, 3) {
            0b000 if value(at + 3, 2) < 3 => {
                out.push(char::from(b'0' + value(at + 3, 2)));
                at += 5;
            }
            0b011 => {
                out.push(char::from(b'2' + value(at + 3, 3)));
                at += 6;
            }
            _ => panic!("not a digit in {bytes:?}"),
        }
    }
    out
}

/// `a.example/` to the echo `web`, served by a new process with `extra` flags.
async fn one_site(extra: &[&str]) -> (Echo, ManifestDir, Vestibule) {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(&dir, vec![site("a")], &[("web", &[&web])]);
    let v = Vestibule::start(dir.path(), extra);
    (web, dir, v)
}

/// A normal request on a new connection is served by `web`.
async fn still_served(v: &Vestibule) {
    let mut h2 = RawH2::connect(v.http, &[]).await;
    let (status, body) = h2.get(1, "/after").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let reply: EchoReply = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (reply.name.as_str(), reply.path.as_str()),
        ("web", "/after")
    );
}

/// Writes `frames` one after another until the server stops taking them: how many bytes it
/// took, or `None` if it took them all.
async fn write_until_refused(
    h2: &mut RawH2,
    frames: impl Iterator<Item = Vec<u8>>,
) -> Option<usize> {
    let mut written = 0;
    for frame in frames {
        if h2.send(&frame).await.is_err() {
            return Some(written);
        }
        written += frame.len();
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off_and_never_forwarded() {
    let (web, _dir, v) = one_site(&[]).await;

    // Thousands of tiny CONTINUATION frames after a HEADERS without END_HEADERS: the stream
    // never opens, and the connection goes after a handful.
    let mut h2 = RawH2::connect(v.http, &[]).await;
    let mut flood = frame(HEADERS, END_STREAM, 1, &request_block("/flood"));
    for i in 0..10_000 {
        flood.extend(frame(CONTINUATION, 0, 1, &literal(&format!("x-{i}"), b"1")));
    }
    let _ = h2.send(&flood).await;
    assert_eq!(h2.goaway().await, CALMED_BEFORE_ANY_STREAM);

    // A header block of 128 MiB in full-size frames: cut off long before it is all written
    // (what the sockets between hold is a few MiB), so never held in memory.
    let mut h2 = RawH2::connect(v.http, &[]).await;
    let fields: Vec<u8> = (0..16)
        .flat_map(|i| literal(&format!("x-pad-{i}"), &[b'p'; 1000]))
        .collect();
    let mut block = request_block("/huge");
    block.extend_from_slice(&fields);
    assert!(block.len() <= MAX_FRAME);
    let frames = std::iter::once(frame(HEADERS, END_STREAM, 1, &block))
        .chain((0..8192).map(|_| frame(CONTINUATION, 0, 1, &fields)));
    let written = write_until_refused(&mut h2, frames).await;
    let sent = h2.goaway().await;
    assert_eq!(sent.last_stream, 0, "{sent:?}");
    // Too many CONTINUATION frames, or a block too large to go on decoding.
    assert!(
        sent.code == ENHANCE_YOUR_CALM || sent.code == COMPRESSION_ERROR,
        "{sent:?}"
    );
    let written = written.expect("the server stopped reading the block");
    assert!(written < 64 << 20, "{written} bytes taken");

    assert_eq!(web.received(), 0, "no request reached the backend");
    still_served(&v).await;
    assert_eq!(web.received(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_blocks_past_the_limits_are_431_and_never_forwarded() {
    let (web, _dir, v) = one_site(&[]).await;
    // 36 KiB in three frames, within HTTP/2's SETTINGS_MAX_HEADER_LIST_SIZE (the URI and
    // header limits together) but over the 32 KiB header limit; then 60 KiB, over both.
    for kib in [36, 60] {
        let mut h2 = RawH2::connect(v.http, &[]).await;
        let stream = 1;
        let mut block = request_block("/big");
        for i in 0..kib {
            block.extend(literal(&format!("x-pad-{i}"), &[b'p'; 1000]));
        }
        let chunks: Vec<&[u8]> = block.chunks(MAX_FRAME).collect();
        assert!(chunks.len() > 1);
        let mut frames = frame(HEADERS, END_STREAM, stream, chunks[0]);
        for (i, chunk) in chunks.iter().enumerate().skip(1) {
            let last = if i == chunks.len() - 1 {
                END_HEADERS
            } else {
                0
            };
            frames.extend(frame(CONTINUATION, last, stream, chunk));
        }
        h2.send(&frames).await.unwrap();
        let (status, _) = h2.response(stream).await;
        assert_eq!(status, 431, "{kib} KiB");
        // The connection is still good for a normal request.
        let (status, body) = h2.get(3, "/after").await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!(
        web.received(),
        2,
        "only the normal requests reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bombs_are_refused_and_never_forwarded() {
    let (web, _dir, v) = one_site(&[]).await;
    let entry = literal_indexed("x-bomb", &[b'b'; 4000]);
    // One 4 KB field in the dynamic table, then its index (one byte) again and again: a
    // block of a few KB that decodes to `refs` times 4 KB.
    let bomb = |refs: usize| {
        let mut block = request_block("/bomb");
        block.extend_from_slice(&entry);
        block.extend(std::iter::repeat_n(0xbe, refs));
        block
    };
    // 40 KB decoded: past the 32 KiB header limit. 52 KB: past HTTP/2's header list limit.
    // Both answered 431; the connection (and its HPACK state) stays usable.
    for refs in [9, 12] {
        let mut h2 = RawH2::connect(v.http, &[]).await;
        let block = bomb(refs);
        assert!(block.len() < 4200);
        h2.send(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block))
            .await
            .unwrap();
        assert_eq!(h2.response(1).await.0, 431, "{refs} references");
        assert_eq!(h2.get(3, "/after").await.0, 200);
    }
    // 400 KB decoded from 4 KB on the wire: past any header block worth decoding, the
    // connection goes.
    let mut h2 = RawH2::connect(v.http, &[]).await;
    h2.send(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &bomb(100)))
        .await
        .unwrap();
    assert_eq!(h2.goaway().await, CALMED_BEFORE_ANY_STREAM);

    // A dynamic table size update past the 4,096 bytes SETTINGS_HEADER_TABLE_SIZE allows:
    // a compression error, whatever code it is sent as (h2 sends PROTOCOL_ERROR).
    let mut h2 = RawH2::connect(v.http, &[]).await;
    let mut block = Vec::new();
    hpack_int(0x20, 5, 1 << 20, &mut block);
    block.extend(request_block("/resized"));
    h2.send(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block))
        .await
        .unwrap();
    let sent = h2.goaway().await;
    assert_eq!(sent.last_stream, 0, "{sent:?}");
    assert!(
        sent.code == COMPRESSION_ERROR || sent.code == PROTOCOL_ERROR,
        "{sent:?}"
    );

    // A client offering a 4 GiB table for the server's responses is answered as any other:
    // the server keeps its own bound on what it stores.
    let mut h2 = RawH2::connect(v.http, &[(SETTINGS_HEADER_TABLE_SIZE, u32::MAX)]).await;
    for stream in [1, 3, 5] {
        let (status, body) = h2.get(stream, "/big-table").await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    assert_eq!(
        web.received(),
        2 + 3,
        "only the normal requests reached the backend"
    );
    still_served(&v).await;
}

/// A client that floods SETTINGS (or PING) frames and never reads the acknowledgements: the
/// server answers one at a time and reads no further while its answer cannot go out, so it
/// holds no more than the sockets do, and the client-send timeout then ends the connection.
/// Another client is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_are_cut_off_while_others_are_served() {
    let (web, _dir, v) = one_site(&["--client-send-timeout", "1s"]).await;
    let mut good = RawH2::connect(v.http, &[]).await;
    let mut stream = 1;
    for kind in [SETTINGS, PING] {
        let mut tcp = TcpStream::connect(v.http).await.unwrap();
        let one = match kind {
            SETTINGS => settings(&[(SETTINGS_HEADER_TABLE_SIZE, 4096)]),
            _ => frame(PING, 0, 0, &[7; 8]),
        };
        let batch = one.repeat(1000);
        tcp.write_all(PREFACE).await.unwrap();
        tcp.write_all(&settings(&[])).await.unwrap();
        let flood = async {
            let mut frames = 0usize;
            while tcp.write_all(&batch).await.is_ok() {
                frames += 1000;
            }
            frames
        };
        // Served while the flood runs, and after it.
        let (frames, (status, _)) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(20), flood),
            good.get(stream, "/during"),
        );
        let frames = frames.expect("the flooding connection is closed");
        assert_eq!(status, 200);
        assert!(frames < 10_000_000, "{kind}: {frames} frames taken");
        stream += 2;
        assert_eq!(good.get(stream, "/after").await.0, 200);
        stream += 2;
    }
    assert_eq!(web.received(), 4);
    still_served(&v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_abuse_ends_the_connection() {
    let (web, _dir, v) = one_site(&[]).await;
    let increment = |n: u32| n.to_be_bytes();
    // The connection's window past 2^31-1, and an increment of zero (RFC 9113 6.9).
    for (frames, code) in [
        (
            [
                frame(WINDOW_UPDATE, 0, 0, &increment(0x7fff_ffff)),
                frame(WINDOW_UPDATE, 0, 0, &increment(0x7fff_ffff)),
            ]
            .concat(),
            FLOW_CONTROL_ERROR,
        ),
        (frame(WINDOW_UPDATE, 0, 0, &increment(0)), PROTOCOL_ERROR),
    ] {
        let mut h2 = RawH2::connect(v.http, &[]).await;
        h2.send(&frames).await.unwrap();
        assert_eq!(h2.goaway().await.code, code);
    }
    assert_eq!(web.received(), 0);
    still_served(&v).await;
}
