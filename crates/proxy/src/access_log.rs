//! The access log: one line per request, JSON or text, built when the response ends and
//! written by a thread of its own so that a slow or stalled output never holds up a request.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::borrow::Cow;

use http::{HeaderValue, Method, Version};
use time::OffsetDateTime;

/// Records waiting for the writer: over a second of traffic at 40,000 requests/s between two
/// of its 20 ms rounds, so a briefly slow output loses nothing; past that, dropping lines
/// beats holding requests or growing without bound.
const CAPACITY: usize = 65_536;

/// How a record is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// nginx's combined format followed by the request's timings, upstream and route.
    Text,
}

/// A handle on the access log; clones share one writer thread. When the last handle is
/// dropped, the records still queued are written and the thread is joined.
#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

struct Inner {
    format: AccessLogFormat,
    // An `Option` only so that `drop` can close the channel before joining the writer.
    sender: Option<SyncSender<Record>>,
    dropped: AtomicU64,
    writer: Option<JoinHandle<()>>,
}

/// What is logged of one request. Owned, so that it can cross to the writer thread; the
/// formatting happens there, not on the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// When the request started.
    pub(crate) time: SystemTime,
    pub(crate) client_ip: IpAddr,
    pub(crate) method: Method,
    pub(crate) host: Text,
    /// Path and query, as the client sent them.
    pub(crate) path: Box<str>,
    pub(crate) protocol: Version,
    pub(crate) status: u16,
    /// Response body bytes.
    pub(crate) bytes_sent: u64,
    /// Request body bytes.
    pub(crate) bytes_received: u64,
    pub(crate) duration: Duration,
    /// The endpoints tried, as nginx's `$upstream_addr`: `10.0.0.1:8080, 10.0.0.2:8080`.
    pub(crate) upstream_addr: Option<Box<str>>,
    /// The status of each try, as nginx's `$upstream_status`: `502, 200`.
    pub(crate) upstream_status: Option<Box<str>>,
    pub(crate) upstream_duration: Option<Duration>,
    /// Empty when no route matched.
    pub(crate) namespace: Box<str>,
    pub(crate) ingress: Box<str>,
    pub(crate) service: Box<str>,
    pub(crate) request_id: Text,
    pub(crate) user_agent: Option<Text>,
    pub(crate) referer: Option<Text>,
}

/// A value taken from the request: the header itself (shared, not copied, since a record is
/// made for every request), or owned text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Text {
    Header(HeaderValue),
    Owned(Box<str>),
}

impl Text {
    /// The text, with bytes that are not UTF-8 replaced (they are escaped again on output).
    pub(crate) fn as_str(&self) -> Cow<'_, str> {
        match self {
            Text::Header(value) => String::from_utf8_lossy(value.as_bytes()),
            Text::Owned(text) => Cow::Borrowed(text),
        }
    }
}

impl From<HeaderValue> for Text {
    fn from(value: HeaderValue) -> Text {
        Text::Header(value)
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Text {
        Text::Owned(text.into())
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text::Owned(text.into())
    }
}

impl AccessLog {
    /// Starts the writer thread, which writes to `out` (standard output in production).
    pub fn start(format: AccessLogFormat, out: Box<dyn Write + Send>) -> AccessLog {
        Self::with_capacity(format, out, CAPACITY)
    }

    fn with_capacity(
        format: AccessLogFormat,
        out: Box<dyn Write + Send>,
        capacity: usize,
    ) -> AccessLog {
        let (sender, receiver) = sync_channel(capacity);
        let writer = std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || write_lines(format, &receiver, out));
        let writer = match writer {
            Ok(handle) => Some(handle),
            Err(error) => {
                // The receiver went with the failed closure, so every record counts as dropped
                // and the loss shows in `dropped`; the proxy itself still works.
                tracing::error!(%error, "cannot start the access log writer; no access log");
                None
            }
        };
        AccessLog {
            inner: Arc::new(Inner {
                format,
                sender: Some(sender),
                dropped: AtomicU64::new(0),
                writer,
            }),
        }
    }

    /// Queues `record` for writing; if the queue is full, drops it and counts it instead of
    /// waiting.
    pub(crate) fn log(&self, record: Record) {
        let sent = match &self.inner.sender {
            Some(sender) => sender.try_send(record),
            None => return,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = sent {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped so far because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.inner.format)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(writer) = self.writer.take() {
            // A panicking writer has nothing left to write; the proxy need not hear of it.
            let _ = writer.join();
        }
    }
}

/// How often the writer thread wakes to write what has queued up. The request path never
/// wakes it: a wake-up per request (a futex call and a context switch, on the very core that
/// serves traffic when the process is pinned) would cost more than the line itself.
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// The writer thread: until every handle is gone, wakes every [`WRITE_EVERY`], formats what
/// queued up, each line in one `write_all` (so that a line is never split between two writes
/// that another writer of the same output could come between), and flushes.
fn write_lines(format: AccessLogFormat, records: &Receiver<Record>, out: Box<dyn Write + Send>) {
    use std::sync::mpsc::TryRecvError;
    let mut out = BufWriter::with_capacity(64 << 10, out);
    let mut line = Vec::with_capacity(1024);
    let mut failing = false;
    loop {
        std::thread::sleep(WRITE_EVERY);
        let mut result = Ok(());
        let closed = loop {
            match records.try_recv() {
                Ok(record) => {
                    line.clear();
                    let written = match format {
                        AccessLogFormat::Json => json_line(&record, &mut line),
                        AccessLogFormat::Text => text_line(&record, &mut line),
                    };
                    if written.is_ok() {
                        result = result.and(out.write_all(&line));
                    }
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        result = result.and(out.flush());
        match result {
            // Reported once per outage, not once per line.
            Err(error) if !failing => {
                tracing::warn!(%error, "cannot write the access log; lines are being lost");
                failing = true;
            }
            Err(_) => {}
            Ok(()) => failing = false,
        }
        if closed {
            return;
        }
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// RFC 3339 in UTC with milliseconds: `2026-11-30T08:40:01.123Z`.
fn write_time(out: &mut Vec<u8>, time: SystemTime) -> io::Result<()> {
    thread_local! {
        // Lines come in time order, many within one second: the date and time of day are
        // formatted once per second.
        static SECOND: std::cell::RefCell<(u64, Vec<u8>)> =
            const { std::cell::RefCell::new((u64::MAX, Vec::new())) };
    }
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != seconds {
            let at = i64::try_from(seconds)
                .ok()
                .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            cached.1.clear();
            write!(
                cached.1,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second(),
            )?;
            cached.0 = seconds;
        }
        out.extend_from_slice(&cached.1);
        write!(out, ".{:03}Z", since.subsec_millis())
    })
}

/// A count of thousandths written as a decimal with three places (`1234` → `1.234`), in
/// integer arithmetic: float formatting was a visible share of the writer's time.
struct Thousandths(u128);

impl fmt::Display for Thousandths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

fn json_line(r: &Record, out: &mut Vec<u8>) -> io::Result<()> {
    fn string(out: &mut Vec<u8>, key: &str, value: Option<&str>) -> io::Result<()> {
        write!(out, ",\"{key}\":")?;
        Ok(serde_json::to_writer(out, &value)?)
    }
    out.extend_from_slice(b"{\"time\":\"");
    write_time(out, r.time)?;
    write!(out, "\",\"client_ip\":\"{}\"", r.client_ip)?;
    string(out, "method", Some(r.method.as_str()))?;
    string(out, "host", Some(&r.host.as_str()))?;
    string(out, "path", Some(&r.path))?;
    string(out, "protocol", Some(protocol(r.protocol)))?;
    write!(
        out,
        ",\"status\":{},\"bytes_sent\":{},\"bytes_received\":{},\"duration_ms\":{}",
        r.status,
        r.bytes_sent,
        r.bytes_received,
        Thousandths(r.duration.as_micros())
    )?;
    string(out, "upstream_addr", r.upstream_addr.as_deref())?;
    string(out, "upstream_status", r.upstream_status.as_deref())?;
    match r.upstream_duration {
        Some(d) => write!(
            out,
            ",\"upstream_duration_ms\":{}",
            Thousandths(d.as_micros())
        )?,
        None => out.extend_from_slice(b",\"upstream_duration_ms\":null"),
    }
    string(out, "namespace", Some(&r.namespace))?;
    string(out, "ingress", Some(&r.ingress))?;
    string(out, "service", Some(&r.service))?;
    string(out, "request_id", Some(&r.request_id.as_str()))?;
    let user_agent = r.user_agent.as_ref().map(Text::as_str);
    string(out, "user_agent", user_agent.as_deref())?;
    let referer = r.referer.as_ref().map(Text::as_str);
    string(out, "referer", referer.as_deref())?;
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// `client - - [time] "METHOD path PROTOCOL" status bytes_sent "referer" "user agent"
/// bytes_received seconds upstream_addr upstream_status upstream_seconds namespace/ingress/service
/// "host" request_id`, `-` standing for what is absent. The first fields are nginx's combined
/// format and the next ones follow ingress-nginx's `upstreaminfo`, so existing parsers need
/// little change.
fn text_line(r: &Record, out: &mut Vec<u8>) -> io::Result<()> {
    write!(out, "{} - - [", r.client_ip)?;
    write_time(out, r.time)?;
    out.extend_from_slice(b"] \"");
    escape(out, r.method.as_str(), false);
    out.push(b' ');
    escape(out, &r.path, false);
    write!(
        out,
        " {}\" {} {} ",
        protocol(r.protocol),
        r.status,
        r.bytes_sent
    )?;
    let referer = r.referer.as_ref().map(Text::as_str);
    quoted(out, referer.as_deref());
    out.push(b' ');
    let user_agent = r.user_agent.as_ref().map(Text::as_str);
    quoted(out, user_agent.as_deref());
    write!(
        out,
        " {} {} ",
        r.bytes_received,
        Thousandths(r.duration.as_millis())
    )?;
    // Vestibule's own values, in nginx's own form ("a, b" for several tries): not escaped.
    out.extend_from_slice(r.upstream_addr.as_deref().unwrap_or("-").as_bytes());
    out.push(b' ');
    out.extend_from_slice(r.upstream_status.as_deref().unwrap_or("-").as_bytes());
    match r.upstream_duration {
        Some(d) => write!(out, " {} ", Thousandths(d.as_millis()))?,
        None => out.extend_from_slice(b" - "),
    }
    if r.namespace.is_empty() {
        out.push(b'-');
    } else {
        escape(out, &r.namespace, true);
        out.push(b'/');
        escape(out, &r.ingress, true);
        out.push(b'/');
        escape(out, &r.service, true);
    }
    out.push(b' ');
    quoted(out, Some(&r.host.as_str()));
    out.push(b' ');
    // The client may have chosen the ID (`X-Request-ID`), so it is escaped like the rest.
    if r.request_id.as_str().is_empty() {
        out.push(b'-');
    } else {
        escape(out, &r.request_id.as_str(), true);
    }
    out.push(b'\n');
    Ok(())
}

fn quoted(out: &mut Vec<u8>, value: Option<&str>) {
    out.push(b'"');
    escape(out, value.unwrap_or("-"), false);
    out.push(b'"');
}

/// Writes `value` with `"`, `\`, control characters and every byte outside ASCII as `\xHH`, as
/// nginx does, so that no client-sent string can end a field or a line early or forge one;
/// `bare` also escapes spaces, for fields that are not quoted.
fn escape(out: &mut Vec<u8>, value: &str, bare: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\' || (bare && b == b' ') {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::Ipv4Addr;
    use std::sync::{Barrier, Mutex};

    use super::*;

    /// An output the test can read after the writer is done.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().unwrap().clone();
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
            text.lines().map(str::to_owned).collect()
        }
    }

    /// Holds the first write until the test says so, to stall the writer thread.
    struct Stalled {
        out: Shared,
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

    fn record(path: &str) -> Record {
        Record {
            // 2026-11-30T08:40:01.123Z
            time: UNIX_EPOCH + Duration::from_millis(1_796_028_001_123),
            client_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
            method: Method::GET,
            host: "shop.example.com".into(),
            path: path.into(),
            protocol: Version::HTTP_11,
            status: 200,
            bytes_sent: 512,
            bytes_received: 64,
            duration: Duration::from_micros(4_213),
            upstream_addr: Some("10.0.0.6:8080, 10.0.0.7:8080".into()),
            upstream_status: Some("502, 200".into()),
            upstream_duration: Some(Duration::from_micros(3_100)),
            namespace: "shop".into(),
            ingress: "web".into(),
            service: "web-svc".into(),
            request_id: "3f2a9c".into(),
            user_agent: Some("curl/8.5".into()),
            referer: Some("https://shop.example.com/".into()),
        }
    }

    fn bare(path: &str) -> Record {
        Record {
            protocol: Version::HTTP_2,
            upstream_addr: None,
            upstream_status: None,
            upstream_duration: None,
            namespace: "".into(),
            ingress: "".into(),
            service: "".into(),
            user_agent: None,
            referer: None,
            ..record(path)
        }
    }

    fn written(format: AccessLogFormat, records: Vec<Record>) -> Vec<String> {
        let out = Shared::default();
        let log = AccessLog::start(format, Box::new(out.clone()));
        for r in records {
            log.log(r);
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
                "request_id": "3f2a9c",
                "user_agent": "curl/8.5",
                "referer": "https://shop.example.com/",
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
        ] {
            assert!(absent[key].is_null(), "{key}: {absent}");
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
    fn text_lines_read_like_nginx() {
        let lines = written(AccessLogFormat::Text, vec![record("/a?b"), bare("/")]);
        assert_eq!(
            lines,
            [
                "203.0.113.9 - - [2026-11-30T08:40:01.123Z] \"GET /a?b HTTP/1.1\" 200 512 \
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
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let out = Shared::default();
        let gate = Arc::new(Barrier::new(2));
        let stalled = Stalled {
            out: out.clone(),
            gate: Arc::clone(&gate),
            first: true,
        };
        let log = AccessLog::with_capacity(AccessLogFormat::Json, Box::new(stalled), 4);
        log.log(record("/0"));
        // The writer has taken /0 and is stuck writing it: the queue is empty.
        gate.wait();
        let (done, finished) = std::sync::mpsc::channel();
        let logger = log.clone();
        let logging = std::thread::spawn(move || {
            for i in 1..=10 {
                logger.log(record(&format!("/{i}")));
            }
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("logging blocked on the stalled writer");
        logging.join().unwrap();
        assert_eq!(log.dropped(), 6);
        gate.wait();
        drop(log);
        let paths: Vec<String> = out
            .lines()
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["path"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(paths, ["/0", "/1", "/2", "/3", "/4"]);
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
        ] {
            out.clear();
            write_time(&mut out, time).unwrap();
            assert_eq!(String::from_utf8_lossy(&out), want);
        }
    }
}
