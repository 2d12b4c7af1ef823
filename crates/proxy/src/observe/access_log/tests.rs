//! The access log's tests: lines packed, formatted and written as requests' threads and the
//! writer do it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Method, Version};

use crate::server::client::IpText;

use super::clock::*;
use super::escape::*;
use super::format::*;
use super::line::*;
use super::pack::*;
use super::*;

/// An output the test can read after the writer is done.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Output {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        text.lines().map(str::to_owned).collect()
    }
}

/// Holds the first write until the test says so, to stall the writer thread.
struct Stalled {
    out: Output,
    gate: Arc<Barrier>,
    first: bool,
}

impl Write for Stalled {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if std::mem::take(&mut self.first) {
            // Once to tell the test the writer is stuck, once to be let go.
            self.gate.wait();
            self.gate.wait();
        }
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A request's logged values, owned so that tests can build and vary them.
#[derive(Clone)]
struct Record {
    time: SystemTime,
    client_ip: IpText,
    method: Method,
    host: String,
    path: String,
    protocol: Version,
    status: u16,
    bytes_sent: u64,
    bytes_received: u64,
    duration: Duration,
    upstreams: Vec<(&'static [u8], Option<u16>)>,
    upstream_duration: Option<Duration>,
    namespace: String,
    ingress: String,
    service: String,
    canary: bool,
    request_id: String,
    user_agent: Option<String>,
    referer: Option<String>,
    user: Option<String>,
}

impl Record {
    fn line(&self) -> Line<'_> {
        Line {
            time: self.time,
            client_ip: self.client_ip.as_bytes(),
            method: self.method.as_str().as_bytes(),
            host: self.host.as_bytes(),
            path: self.path.as_bytes(),
            protocol: protocol_name(self.protocol).as_bytes(),
            status: self.status,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            duration: self.duration,
            upstreams: &self.upstreams,
            upstream_duration: self.upstream_duration,
            names: Names {
                namespace: self.namespace.as_bytes(),
                ingress: self.ingress.as_bytes(),
                service: self.service.as_bytes(),
                canary: self.canary,
            },
            request_id: self.request_id.as_bytes(),
            user_agent: self.user_agent.as_deref().map(str::as_bytes),
            referer: self.referer.as_deref().map(str::as_bytes),
            user: self.user.as_deref().map(str::as_bytes),
        }
    }
}

fn record(path: &str) -> Record {
    Record {
        // 2026-11-30T08:40:01.123Z
        time: UNIX_EPOCH + Duration::from_millis(1_796_028_001_123),
        client_ip: IpText::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
        method: Method::GET,
        host: "shop.example.com".into(),
        path: path.into(),
        protocol: Version::HTTP_11,
        status: 200,
        bytes_sent: 512,
        bytes_received: 64,
        duration: Duration::from_micros(4_213),
        upstreams: vec![(b"10.0.0.6:8080", Some(502)), (b"10.0.0.7:8080", Some(200))],
        upstream_duration: Some(Duration::from_micros(3_100)),
        namespace: "shop".into(),
        ingress: "web".into(),
        service: "web-svc".into(),
        canary: true,
        request_id: "3f2a9c".into(),
        user_agent: Some("curl/8.5".into()),
        referer: Some("https://shop.example.com/".into()),
        user: Some("ann".into()),
    }
}

fn bare(path: &str) -> Record {
    Record {
        protocol: Version::HTTP_2,
        upstreams: Vec::new(),
        upstream_duration: None,
        namespace: "".into(),
        ingress: "".into(),
        service: "".into(),
        canary: false,
        user_agent: None,
        referer: None,
        user: None,
        ..record(path)
    }
}

/// `line` packed as a request's thread does and formatted as the writer does.
fn formatted(format: AccessLogFormat, line: &Line<'_>) -> Vec<u8> {
    let (mut packed, mut out) = (Vec::new(), Vec::new());
    pack(line, &mut packed);
    assert_eq!(
        format_lines(format, &packed, &mut out, usize::MAX),
        (&[][..], 0)
    );
    out
}

fn written(format: AccessLogFormat, records: Vec<Record>) -> Vec<String> {
    let out = Output::default();
    let log = AccessLog::start(format, Box::new(out.clone()));
    for r in &records {
        log.log(&r.line());
    }
    assert_eq!(log.dropped(), 0);
    drop(log);
    out.lines()
}

#[test]
fn json_lines_carry_every_field() {
    let lines = written(AccessLogFormat::Json, vec![record("/a?b=1"), bare("/")]);
    assert_eq!(lines.len(), 2);
    let full: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        full,
        serde_json::json!({
            "time": "2026-11-30T08:40:01.123Z",
            "client_ip": "203.0.113.9",
            "method": "GET",
            "host": "shop.example.com",
            "path": "/a?b=1",
            "protocol": "HTTP/1.1",
            "status": 200,
            "bytes_sent": 512,
            "bytes_received": 64,
            "duration_ms": 4.213,
            "upstream_addr": "10.0.0.6:8080, 10.0.0.7:8080",
            "upstream_status": "502, 200",
            "upstream_duration_ms": 3.1,
            "namespace": "shop",
            "ingress": "web",
            "service": "web-svc",
            "canary": true,
            "request_id": "3f2a9c",
            "user_agent": "curl/8.5",
            "referer": "https://shop.example.com/",
            "user": "ann",
        })
    );
    let absent: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(absent["protocol"], "HTTP/2.0");
    assert_eq!(absent["namespace"], "");
    for key in [
        "upstream_addr",
        "upstream_status",
        "upstream_duration_ms",
        "user_agent",
        "referer",
        "user",
    ] {
        assert!(absent[key].is_null(), "{key}: {absent}");
    }
}

#[test]
fn durations_and_addresses_keep_every_digit() {
    let cases = [
        (1_500, "1.500", "0.001", "0.0.0.0"),
        (999, "0.999", "0.000", "255.255.255.255"),
        (12_345, "12.345", "0.012", "10.20.3.100"),
        (7, "0.007", "0.000", "192.168.0.9"),
        (2_000_000, "2000.000", "2.000", "100.64.10.1"),
    ];
    for (micros, json_ms, text_s, client) in cases {
        let record = Record {
            duration: Duration::from_micros(micros),
            upstream_duration: Some(Duration::from_micros(micros)),
            client_ip: IpText::new(client.parse().unwrap()),
            ..record("/")
        };
        let json = written(AccessLogFormat::Json, vec![record.clone()]);
        assert!(
            json[0].contains(&format!("\"duration_ms\":{json_ms},")),
            "{}",
            json[0]
        );
        assert!(
            json[0].contains(&format!("\"upstream_duration_ms\":{json_ms},")),
            "{}",
            json[0]
        );
        assert!(
            json[0].contains(&format!("\"client_ip\":\"{client}\"")),
            "{}",
            json[0]
        );
        let text = written(AccessLogFormat::Text, vec![record]);
        let fields: Vec<&str> = text[0].split(' ').collect();
        assert_eq!(fields[0], client, "{}", text[0]);
        assert!(
            text[0].contains(&format!(" {text_s} 10.0.0.6:8080, 10.0.0.7:8080 ")),
            "{}",
            text[0]
        );
    }
    let v6 = Record {
        client_ip: IpText::new("2001:db8::1".parse().unwrap()),
        ..record("/")
    };
    let json = written(AccessLogFormat::Json, vec![v6]);
    assert!(
        json[0].contains("\"client_ip\":\"2001:db8::1\""),
        "{}",
        json[0]
    );
}

#[test]
fn thousandths_keep_three_places_up_to_the_largest() {
    for (n, want) in [
        (0, "0.000"),
        (7, "0.007"),
        (1_000, "1.000"),
        (123_456_789, "123456.789"),
        (u128::from(u64::MAX), "18446744073709551.615"),
        (u128::MAX, "18446744073709551.615"),
    ] {
        let mut out = Vec::new();
        thousandths(&mut out, n);
        assert_eq!(String::from_utf8(out).unwrap(), want, "{n}");
    }
}

#[test]
fn every_byte_is_judged_alike_wherever_it_stands() {
    // Places 0 to 7 fall in a whole word, 8 to 10 after it; the fillers sit next to the
    // edges of what is plain, where a borrow or carry would show.
    for also in [b'"', b' '] {
        for b in 0..=255u8 {
            let expected = (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' && b != also;
            for filler in [b'a', 0x21, 0x7e, 0x5d] {
                for at in 0..11 {
                    let mut value = [filler; 11];
                    value[at] = b;
                    assert_eq!(
                        plain(&value, also),
                        expected,
                        "{b:#x} at {at} among {filler:#x}, also {also:#x}"
                    );
                }
            }
        }
    }
    assert!(plain(b"", b' '));
}

#[test]
fn wall_times_follow_the_system_clock() {
    let now = SystemTime::now();
    for ago in [0, 200, 999, 1_500, 5_000] {
        let ago = Duration::from_millis(ago);
        let Some(at) = Instant::now().checked_sub(ago) else {
            continue;
        };
        let wall = wall_time(at);
        let expected = now.checked_sub(ago).unwrap();
        let off = wall
            .duration_since(expected)
            .unwrap_or_else(|e| e.duration());
        assert!(
            off < Duration::from_millis(100),
            "{ago:?} ago: off by {off:?}"
        );
    }
    // An instant after the last reading, as a request that started after it has.
    let wall = wall_time(Instant::now());
    let off = wall
        .duration_since(SystemTime::now())
        .unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_millis(100), "now: off by {off:?}");
}

#[test]
fn names_are_escaped_in_both_formats() {
    let names = [
        ("shop", "web", "web-svc", "shop/web/web-svc"),
        ("", "", "fallback", "-"),
        (
            "odd ns",
            "in\"g",
            "s\\vc\u{7}é",
            "odd\\x20ns/in\\x22g/s\\x5Cvc\\x07\\xC3\\xA9",
        ),
    ];
    for (namespace, ingress, service, text) in names {
        let record = Record {
            namespace: namespace.into(),
            ingress: ingress.into(),
            service: service.into(),
            ..record("/")
        };
        let json = formatted(AccessLogFormat::Json, &record.line());
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["namespace"], namespace);
        assert_eq!(v["ingress"], ingress);
        assert_eq!(v["service"], service);
        let line = String::from_utf8(formatted(AccessLogFormat::Text, &record.line())).unwrap();
        assert!(
            line.ends_with(&format!(" {text} \"shop.example.com\" 3f2a9c\n")),
            "{line}"
        );
    }
}

#[test]
fn json_escapes_hostile_strings() {
    let hostile = Record {
        user_agent: Some("a\"b\\c\nd\u{0}é".into()),
        ..record("/x\"y")
    };
    let lines = written(AccessLogFormat::Json, vec![hostile]);
    assert_eq!(lines.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["user_agent"], "a\"b\\c\nd\u{0}é");
    assert_eq!(v["path"], "/x\"y");
}

#[test]
fn packed_lines_read_back_as_they_were() {
    let many = Record {
        time: UNIX_EPOCH + Duration::new(4_102_444_799, 999_999_999),
        bytes_sent: u64::MAX,
        bytes_received: 0,
        duration: Duration::new(u64::MAX, 999_999_999),
        upstreams: vec![(b"10.0.0.1:80", None), (b"[2001:db8::1]:8443", Some(599))],
        upstream_duration: Some(Duration::ZERO),
        // Present but empty is not absent: JSON tells "" from null.
        user_agent: Some(String::new()),
        referer: None,
        request_id: String::new(),
        ..record("/\u{0}\u{7f}é")
    };
    let odd_names = Record {
        namespace: "".into(),
        ingress: "in\"g".into(),
        service: "s\\vc\u{7}é".into(),
        ..record("/")
    };
    for r in [record("/a?b=1"), bare("/"), many, odd_names] {
        let line = r.line();
        let mut packed = Vec::new();
        pack(&line, &mut packed);
        let mut upstreams = smallvec::SmallVec::new();
        assert_eq!(unpack(&packed[4..], &mut upstreams), Some(line));
    }
}

#[test]
fn a_damaged_buffer_loses_lines_but_never_panics() {
    let mut packed = Vec::new();
    for r in [record("/first"), bare("/second")] {
        pack(&r.line(), &mut packed);
    }
    let first = u32::from_ne_bytes(packed[..4].try_into().unwrap()) as usize + 4;
    for cut in 0..=packed.len() {
        let mut out = Vec::new();
        let (_, unreadable) =
            format_lines(AccessLogFormat::Json, &packed[..cut], &mut out, usize::MAX);
        let whole = usize::from(cut >= first) + usize::from(cut == packed.len());
        assert_eq!(
            out.iter().filter(|&&b| b == b'\n').count(),
            whole,
            "cut at {cut}"
        );
        assert_eq!(
            unreadable,
            u64::from(cut != first && cut != packed.len() && cut != 0)
        );
    }
    // A length that claims more than there is, and values that are not what they claim.
    let mut out = Vec::new();
    assert_eq!(
        format_lines(AccessLogFormat::Text, &[0xff; 64], &mut out, usize::MAX).1,
        1
    );
    let mut wrong = packed[..first].to_vec();
    wrong[4..12].fill(0xfe);
    assert_eq!(
        format_lines(AccessLogFormat::Text, &wrong, &mut out, usize::MAX).1,
        1
    );
    assert!(out.is_empty());
}

#[test]
fn lines_are_formatted_a_bounded_amount_at_a_time() {
    let records: Vec<Record> = (0..5).map(|i| record(&format!("/{i}"))).collect();
    let mut packed = Vec::new();
    for r in &records {
        pack(&r.line(), &mut packed);
    }
    let (mut rest, mut chunks, mut all) = (&packed[..], 0, Vec::new());
    while !rest.is_empty() {
        let mut out = Vec::new();
        // Past the limit by less than a line: one line at a time here.
        let (left, unreadable) = format_lines(AccessLogFormat::Text, rest, &mut out, 1);
        assert_eq!(unreadable, 0);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        rest = left;
        chunks += 1;
        all.extend_from_slice(&out);
    }
    assert_eq!(chunks, 5);
    let mut whole = Vec::new();
    format_lines(AccessLogFormat::Text, &packed, &mut whole, usize::MAX);
    assert_eq!(all, whole);
}

#[test]
fn json_replaces_bytes_that_are_not_utf8() {
    let r = record("/");
    let mut line = r.line();
    line.user_agent = Some(b"ok\xff\xfe\x1f");
    let out = formatted(AccessLogFormat::Json, &line);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["user_agent"], "ok\u{fffd}\u{fffd}\u{1f}");
}

#[test]
fn text_lines_read_like_nginx() {
    let lines = written(AccessLogFormat::Text, vec![record("/a?b"), bare("/")]);
    assert_eq!(
        lines,
        [
            "203.0.113.9 - ann [2026-11-30T08:40:01.123Z] \"GET /a?b HTTP/1.1\" 200 512 \
             \"https://shop.example.com/\" \"curl/8.5\" 64 0.004 \
             10.0.0.6:8080, 10.0.0.7:8080 502, 200 0.003 shop/web/web-svc \
             \"shop.example.com\" 3f2a9c",
            "203.0.113.9 - - [2026-11-30T08:40:01.123Z] \"GET / HTTP/2.0\" 200 512 \"-\" \
             \"-\" 64 0.004 - - - - \"shop.example.com\" 3f2a9c",
        ]
    );
}

#[test]
fn text_escaping_keeps_one_line_per_request() {
    let forged = "\" 200 1 \"-\" \"x\"\n10.0.0.1 - - [2026-01-01T00:00:00.000Z] \"GET /";
    let hostile = Record {
        host: "evil\r\n.com".into(),
        user_agent: Some(forged.into()),
        referer: Some("back\\slash\u{7f}\u{2028}".into()),
        request_id: "id with\nspaces".into(),
        ..record("/p\"q\n")
    };
    let lines = written(AccessLogFormat::Text, vec![hostile, record("/next")]);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let line = &lines[0];
    assert!(line.contains("\"GET /p\\x22q\\x0A HTTP/1.1\""), "{line}");
    assert!(
        line.contains("\"\\x22 200 1 \\x22-\\x22 \\x22x\\x22\\x0A10.0.0.1 - - "),
        "{line}"
    );
    assert!(
        line.contains("\"back\\x5Cslash\\x7F\\xE2\\x80\\xA8\""),
        "{line}"
    );
    assert!(line.contains("\"evil\\x0D\\x0A.com\""), "{line}");
    assert!(line.ends_with(" id\\x20with\\x0Aspaces"), "{line}");
    // Only the escapes' own quotes are left: the fields are still where parsers look.
    assert_eq!(line.matches('"').count(), 8, "{line}");
    assert!(lines[1].contains("\"GET /next HTTP/1.1\""));
}

#[test]
fn lines_arrive_in_order() {
    let paths: Vec<String> = (0..2000).map(|i| format!("/{i}")).collect();
    let lines = written(
        AccessLogFormat::Json,
        paths.iter().map(|p| record(p)).collect(),
    );
    let got: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["path"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(got, paths);
}

#[test]
fn a_full_buffer_drops_and_counts_instead_of_blocking() {
    let out = Output::default();
    let gate = Arc::new(Barrier::new(2));
    let stalled = Stalled {
        out: out.clone(),
        gate: Arc::clone(&gate),
        first: true,
    };
    // Room for one line at a time per thread.
    let log = AccessLog::with_limit(AccessLogFormat::Json, Box::new(stalled), 1);
    log.log(&record("/0").line());
    // The writer has taken /0 and is stuck writing it.
    gate.wait();
    let (done, finished) = std::sync::mpsc::channel();
    let logger = log.clone();
    let logging = std::thread::spawn(move || {
        for i in 1..=10 {
            logger.log(&record(&format!("/{i}")).line());
        }
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(10))
        .expect("logging blocked on the stalled writer");
    logging.join().unwrap();
    assert_eq!(log.dropped(), 9);
    gate.wait();
    drop(log);
    assert_eq!(paths(&out.lines()), ["/0", "/1"]);
}

fn paths(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["path"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn every_threads_lines_arrive_whole_and_in_order() {
    let out = Output::default();
    let log = AccessLog::start(AccessLogFormat::Json, Box::new(out.clone()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..5000 {
                    log.log(&record(&format!("/{t}/{i}")).line());
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(log.dropped(), 0);
    drop(log);
    let paths = paths(&out.lines());
    assert_eq!(paths.len(), 20_000);
    for t in 0..4 {
        let mine: Vec<&String> = paths
            .iter()
            .filter(|p| p.starts_with(&format!("/{t}/")))
            .collect();
        let want: Vec<String> = (0..5000).map(|i| format!("/{t}/{i}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>());
    }
}

#[test]
fn times_are_rfc3339_utc_with_milliseconds() {
    let mut out = Vec::new();
    for (time, want) in [
        (UNIX_EPOCH, "1970-01-01T00:00:00.000Z"),
        (
            UNIX_EPOCH + Duration::from_millis(1_709_251_199_999),
            "2024-02-29T23:59:59.999Z",
        ),
        (
            UNIX_EPOCH - Duration::from_secs(1),
            "1970-01-01T00:00:00.000Z",
        ),
        // The same second again, then the next: the cached date must follow.
        (
            UNIX_EPOCH + Duration::from_millis(1_796_028_001_123),
            "2026-11-30T08:40:01.123Z",
        ),
        (
            UNIX_EPOCH + Duration::from_millis(1_796_028_001_007),
            "2026-11-30T08:40:01.007Z",
        ),
        (
            UNIX_EPOCH + Duration::from_millis(1_796_028_002_000),
            "2026-11-30T08:40:02.000Z",
        ),
        (
            UNIX_EPOCH + Duration::from_secs(253_402_300_799),
            "9999-12-31T23:59:59.000Z",
        ),
        (
            UNIX_EPOCH + Duration::from_secs(253_402_300_800),
            "1970-01-01T00:00:00.000Z",
        ),
    ] {
        out.clear();
        write_time(&mut out, time);
        assert_eq!(String::from_utf8_lossy(&out), want);
    }
}
