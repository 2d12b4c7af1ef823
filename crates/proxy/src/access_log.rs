//! The access log: one line per request, JSON or text. When a response ends, the serving
//! thread packs the request's values into a buffer of its own; a thread of the log's own
//! formats and writes them, so that neither the formatting nor a slow or stalled output
//! holds up a request.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::Version;
use time::OffsetDateTime;

/// Packed requests that may wait for the writer, per thread that serves requests: over a
/// second of traffic at 50,000 requests/s, so a briefly slow output loses nothing; past that,
/// dropping lines beats holding requests or growing without bound.
const PENDING_LIMIT: usize = 16 << 20;

/// How a record is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// nginx's combined format followed by the request's timings, upstream and route.
    Text,
}

/// A handle on the access log; clones share one writer thread. When the last handle is
/// dropped, the lines still pending are written and the thread is joined.
#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

/// What the request threads and the writer thread share.
struct Shared {
    /// Tells this log's buffers apart from another's in a thread's [`BUFFERS`].
    id: u64,
    format: AccessLogFormat,
    limit: usize,
    /// One per thread that has logged a request. Each thread packs its requests into its own
    /// buffer, whose lock only the writer's swap every [`WRITE_EVERY`] ever contends.
    buffers: Mutex<Vec<Arc<Buffer>>>,
    dropped: AtomicU64,
    closing: AtomicBool,
}

type Buffer = Mutex<Vec<u8>>;

thread_local! {
    /// This thread's buffer in each access log it has written to, by the log's id.
    static BUFFERS: RefCell<Vec<(u64, Arc<Buffer>)>> = const { RefCell::new(Vec::new()) };
}

/// One request, as its log line shows it. A request's thread fills it in with values
/// borrowed from the request, its response and the table, and packs it into the thread's
/// buffer, so that logging a request allocates nothing; the writer unpacks it, borrowing
/// from that buffer.
#[derive(Debug, PartialEq)]
pub(crate) struct Line<'a> {
    /// When the request started.
    pub(crate) time: SystemTime,
    pub(crate) client_ip: &'a [u8],
    pub(crate) method: &'a [u8],
    pub(crate) host: &'a [u8],
    /// Path and query, as the client sent them.
    pub(crate) path: &'a [u8],
    /// `HTTP/1.1` and the like ([`protocol_name`]).
    pub(crate) protocol: &'a [u8],
    pub(crate) status: u16,
    /// Response body bytes.
    pub(crate) bytes_sent: u64,
    /// Request body bytes.
    pub(crate) bytes_received: u64,
    pub(crate) duration: Duration,
    /// Every endpoint tried, in order, with its status when it answered: nginx's
    /// `$upstream_addr` and `$upstream_status` (`10.0.0.1:8080, 10.0.0.2:8080`, `502, 200`).
    pub(crate) upstreams: &'a [(&'a [u8], Option<u16>)],
    pub(crate) upstream_duration: Option<Duration>,
    pub(crate) names: Names<'a>,
    pub(crate) request_id: &'a [u8],
    pub(crate) user_agent: Option<&'a [u8]>,
    pub(crate) referer: Option<&'a [u8]>,
}

/// Where a request went, as its line names it: the route's namespace and Ingress and the
/// Service that answered, all empty when no route matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Names<'a> {
    pub(crate) namespace: &'a [u8],
    pub(crate) ingress: &'a [u8],
    pub(crate) service: &'a [u8],
}

impl AccessLog {
    /// Starts the writer thread, which writes to `out` (standard output in production).
    pub fn start(format: AccessLogFormat, out: Box<dyn Write + Send>) -> AccessLog {
        Self::with_limit(format, out, PENDING_LIMIT)
    }

    fn with_limit(format: AccessLogFormat, out: Box<dyn Write + Send>, limit: usize) -> AccessLog {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let shared = Arc::new(Shared {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            format,
            limit,
            buffers: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        });
        let for_writer = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || write_lines(&for_writer, out));
        let writer = match writer {
            Ok(handle) => Some(handle),
            Err(error) => {
                // Nothing will take the lines, so none is kept: each counts as dropped and
                // the loss shows in `dropped`; the proxy itself still works.
                shared.closing.store(true, Ordering::Relaxed);
                tracing::error!(%error, "cannot start the access log writer; no access log");
                None
            }
        };
        AccessLog {
            inner: Arc::new(Inner { shared, writer }),
        }
    }

    /// Packs `line` into this thread's buffer; if the writer has fallen so far behind that
    /// the buffer is full, drops the line and counts it instead of waiting.
    pub(crate) fn log(&self, line: &Line<'_>) {
        let shared = &self.inner.shared;
        if shared.closing.load(Ordering::Relaxed) {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        shared.with_buffer(|buffer| {
            let mut pending = buffer.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.len() >= shared.limit {
                drop(pending);
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            pack(line, &mut pending);
        });
    }

    /// Lines dropped so far because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Shared {
    /// Runs `f` on this thread's buffer, registered with the writer on the thread's first
    /// line.
    fn with_buffer(&self, f: impl FnOnce(&Buffer)) {
        BUFFERS.with(|buffers| {
            let mut buffers = buffers.borrow_mut();
            if let Some((_, buffer)) = buffers.iter().find(|(id, _)| *id == self.id) {
                return f(buffer);
            }
            // Forget the buffers of logs that are gone (only this thread still holds them).
            buffers.retain(|(_, buffer)| Arc::strong_count(buffer) > 1);
            let buffer = Arc::new(Mutex::new(Vec::with_capacity(64 << 10)));
            self.buffers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::clone(&buffer));
            f(&buffer);
            buffers.push((self.id, buffer));
        })
    }
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.inner.shared.format)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        if let Some(writer) = self.writer.take() {
            writer.thread().unpark();
            // A panicking writer has nothing left to write; the proxy need not hear of it.
            let _ = writer.join();
        }
    }
}

/// How often the writer thread wakes to format and write what has gathered. The request path
/// never wakes it: a wake-up per request (a futex call and a context switch, on the very core
/// that serves traffic when the process is pinned) would cost more than the line itself.
/// Each wake-up has a cost of its own, so fewer is cheaper: measured side by side on one
/// core, waking every 20 ms cost 0.4–0.6% more CPU per request than every 50 ms, and every
/// 4 ms another 0.9%. A line still reaches the output within a twentieth of a second.
const WRITE_EVERY: Duration = Duration::from_millis(50);

/// About how much formatted text the writer gathers before writing it: a buffer this size,
/// reused, stays in the CPU's cache, where formatting a whole batch before writing it would
/// sweep a batch's worth of memory through the cache that requests share.
const WRITE_SIZE: usize = 32 << 10;

/// The writer thread: until the log closes, wakes every [`WRITE_EVERY`], swaps each thread's
/// buffer for an empty one, and formats and writes what it held. Lines are formatted here in
/// a batch, where the formatting code stays in the cache from one line to the next, rather
/// than one at a time between requests. Lines go out whole, [`WRITE_SIZE`] at a time, so no
/// line is ever split between two writes that another writer of the same output could come
/// between.
fn write_lines(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut spare = Vec::with_capacity(64 << 10);
    let mut lines = Vec::with_capacity(WRITE_SIZE + 1024);
    let mut failing = false;
    loop {
        std::thread::park_timeout(WRITE_EVERY);
        // Read before the last round, so that a line logged before closing is written.
        let closing = shared.closing.load(Ordering::Relaxed);
        let buffers: Vec<Arc<Buffer>> = shared
            .buffers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut result = Ok(());
        for buffer in &buffers {
            std::mem::swap(
                &mut *buffer.lock().unwrap_or_else(PoisonError::into_inner),
                &mut spare,
            );
            let mut rest = &spare[..];
            while !rest.is_empty() {
                let (left, unreadable) = format_lines(shared.format, rest, &mut lines, WRITE_SIZE);
                rest = left;
                if unreadable > 0 {
                    shared.dropped.fetch_add(unreadable, Ordering::Relaxed);
                }
                if !lines.is_empty() {
                    result = result.and(out.write_all(&lines));
                }
                lines.clear();
            }
            spare.clear();
            // A burst must not leave a large buffer behind for good.
            spare.shrink_to(1 << 20);
        }
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
        if closing {
            return;
        }
    }
}

// A packed line: a `u32` length, then the values below in this order. Numbers are in the
// machine's own byte order, as only this process reads them; each byte string is a `u32`
// length and its bytes, an absent one the length `u32::MAX` alone. An endpoint that gave no
// status is packed with status 0.

/// The fixed-size part: time (seconds, nanoseconds), duration (the same), upstream duration
/// (the same; [`ABSENT`] nanoseconds, which no duration has, when there is none), bytes
/// sent, bytes received, status.
const FIXED: usize = 8 + 4 + 8 + 4 + 8 + 4 + 8 + 8 + 2;
const ABSENT: u32 = u32::MAX;

/// Appends `line` packed.
fn pack(line: &Line<'_>, out: &mut Vec<u8>) {
    // Room for a typical packed line at once rather than growth checks failing on the way.
    out.reserve(512);
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut fixed = [0; FIXED];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        fixed[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    let since = line.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    for duration in [Some(since), Some(line.duration), line.upstream_duration] {
        let (seconds, nanos) = duration.map_or((0, ABSENT), |d| (d.as_secs(), d.subsec_nanos()));
        put(&seconds.to_ne_bytes());
        put(&nanos.to_ne_bytes());
    }
    put(&line.bytes_sent.to_ne_bytes());
    put(&line.bytes_received.to_ne_bytes());
    put(&line.status.to_ne_bytes());
    out.extend_from_slice(&fixed);
    for bytes in [
        line.client_ip,
        line.method,
        line.host,
        line.path,
        line.protocol,
        line.request_id,
        line.names.namespace,
        line.names.ingress,
        line.names.service,
    ] {
        put_bytes(out, Some(bytes));
    }
    put_bytes(out, line.user_agent);
    put_bytes(out, line.referer);
    let tries = u32::try_from(line.upstreams.len()).unwrap_or(0);
    out.extend_from_slice(&tries.to_ne_bytes());
    for (address, status) in &line.upstreams[..tries as usize] {
        put_bytes(out, Some(address));
        out.extend_from_slice(&status.unwrap_or(0).to_ne_bytes());
    }
    let length = u32::try_from(out.len() - start - 4).unwrap_or(ABSENT);
    out[start..start + 4].copy_from_slice(&length.to_ne_bytes());
}

/// A byte string as [`pack`] writes it. Nothing here comes near 4 GiB (headers are limited
/// long before), but a longer one would be cut rather than misread.
#[inline(always)]
fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            let bytes = &bytes[..bytes.len().min(ABSENT as usize - 1)];
            out.extend_from_slice(&(bytes.len() as u32).to_ne_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&ABSENT.to_ne_bytes()),
    }
}

/// Formats packed lines from `packed` into `out` until `out` holds `limit` bytes or more, or
/// none is left; returns what is left of `packed`, and how many lines could not be read,
/// which only a bug could cause: those are left out, and counted as dropped.
fn format_lines<'p>(
    format: AccessLogFormat,
    mut packed: &'p [u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> (&'p [u8], u64) {
    let mut unreadable = 0;
    while !packed.is_empty() && out.len() < limit {
        let mut reader = Reader(packed);
        let Some(one) = reader.u32().and_then(|length| reader.take(length as usize)) else {
            return (&[], unreadable + 1);
        };
        packed = reader.0;
        let mut upstreams = smallvec::SmallVec::<[(&[u8], Option<u16>); 2]>::new();
        match unpack(one, &mut upstreams) {
            Some(line) => match format {
                AccessLogFormat::Json => json_line(&line, out),
                AccessLogFormat::Text => text_line(&line, out),
            },
            None => unreadable += 1,
        }
    }
    (packed, unreadable)
}

/// Reads back what [`pack`] wrote, borrowing from it.
fn unpack<'a, 's>(
    packed: &'a [u8],
    upstreams: &'s mut smallvec::SmallVec<[(&'a [u8], Option<u16>); 2]>,
) -> Option<Line<'s>> {
    let mut r = Reader(packed);
    let mut duration = || {
        let seconds = r.u64()?;
        let nanos = r.u32()?;
        if nanos == ABSENT {
            return Some(None);
        }
        Duration::from_secs(seconds)
            .checked_add(Duration::from_nanos(nanos.into()))
            .map(Some)
    };
    let since = duration()??;
    let took = duration()??;
    let upstream_duration = duration()?;
    let (bytes_sent, bytes_received, status) = (r.u64()?, r.u64()?, r.u16()?);
    let (client_ip, method, host, path) = (r.bytes()?, r.bytes()?, r.bytes()?, r.bytes()?);
    let (protocol, request_id) = (r.bytes()?, r.bytes()?);
    let names = Names {
        namespace: r.bytes()?,
        ingress: r.bytes()?,
        service: r.bytes()?,
    };
    let (user_agent, referer) = (r.optional()?, r.optional()?);
    for _ in 0..r.u32()? {
        let address = r.bytes()?;
        let status = r.u16()?;
        upstreams.push((address, (status != 0).then_some(status)));
    }
    let upstreams: &'s [(&'a [u8], Option<u16>)] = upstreams;
    Some(Line {
        time: UNIX_EPOCH.checked_add(since)?,
        client_ip,
        method,
        host,
        path,
        protocol,
        status,
        bytes_sent,
        bytes_received,
        duration: took,
        upstreams,
        upstream_duration,
        names,
        request_id,
        user_agent,
        referer,
    })
}

/// A cursor over a packed line.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_ne_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_ne_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_ne_bytes)
    }

    fn optional(&mut self) -> Option<Option<&'a [u8]>> {
        match self.u32()? {
            ABSENT => Some(None),
            length => self.take(length as usize).map(Some),
        }
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        self.optional()?
    }
}

/// The protocol as a line names it.
pub(crate) fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// The wall-clock time at `at`, an instant near now: worked out from a reading of both clocks
/// that this thread took within a second of it, so that a line costs no clock call of its
/// own (the request's start is already an `Instant`). A clock stepped by an operator or NTP
/// shows in the log within a second.
pub(crate) fn wall_time(at: Instant) -> SystemTime {
    thread_local! {
        static READING: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
    }
    const FRESH: Duration = Duration::from_secs(1);
    if let Some(reading) = READING.get() {
        let (wall, apart) = by_reading(at, reading);
        if apart < FRESH {
            return wall;
        }
    }
    let reading = (Instant::now(), SystemTime::now());
    READING.set(Some(reading));
    by_reading(at, reading).0
}

/// `at` on the wall clock by a reading of both clocks, and how far apart `at` and the reading
/// are: requests end out of order, so `at` may come before the reading as well as after.
fn by_reading(at: Instant, (instant, wall): (Instant, SystemTime)) -> (SystemTime, Duration) {
    match at.checked_duration_since(instant) {
        Some(after) => (wall.checked_add(after).unwrap_or(wall), after),
        None => {
            let before = instant.saturating_duration_since(at);
            (wall.checked_sub(before).unwrap_or(wall), before)
        }
    }
}

thread_local! {
    /// Lines come in time order, many within one second: the date and time of day are
    /// worked out once per second.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// RFC 3339 in UTC with milliseconds: `2026-11-30T08:40:01.123Z`.
fn write_time(out: &mut Vec<u8>, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    if SECOND.get().0 != seconds {
        SECOND.set((seconds, date_and_time(seconds)));
    }
    out.extend_from_slice(&SECOND.get().1);
    let millis = since.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

/// `2026-11-30T08:40:01` for `seconds` after the epoch. Kept out of line: once a second, it
/// need not crowd the path every line takes.
#[cold]
#[inline(never)]
fn date_and_time(seconds: u64) -> [u8; 19] {
    // Years past 9999 do not fit RFC 3339's four digits; the epoch stands in for them.
    let at = i64::try_from(seconds)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .filter(|at| at.year() <= 9999)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let year = at.year().unsigned_abs();
    let two = |n: u8| [b'0' + n / 10, b'0' + n % 10];
    let [y1, y2] = two(u8::try_from(year / 100).unwrap_or(0));
    let [y3, y4] = two(u8::try_from(year % 100).unwrap_or(0));
    let [mo1, mo2] = two(u8::from(at.month()));
    let [d1, d2] = two(at.day());
    let [h1, h2] = two(at.hour());
    let [mi1, mi2] = two(at.minute());
    let [s1, s2] = two(at.second());
    [
        y1, y2, y3, y4, b'-', mo1, mo2, b'-', d1, d2, b'T', h1, h2, b':', mi1, mi2, b':', s1, s2,
    ]
}

// The small helpers below are inlined into the line formatters so that their constant keys
// and separators are copied as constants: a library `memcpy` call for each few-byte piece
// of a line cost more than the formatting itself.

#[inline(always)]
fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A response status: three digits, as every status `http` takes has.
#[inline(always)]
fn status_code(out: &mut Vec<u8>, status: u16) {
    if (100..1000).contains(&status) {
        let digit = |d: u16| b'0' + (d % 10) as u8;
        out.extend_from_slice(&[digit(status / 100), digit(status / 10), digit(status)]);
    } else {
        number(out, status);
    }
}

/// A count of thousandths written as a decimal with three places (`1234` → `1.234`).
/// Takes `u128` as `Duration` gives it, but formats in `u64`: 128-bit division is slow.
fn thousandths(out: &mut Vec<u8>, n: u128) {
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    number(out, n / 1000);
    let frac = n % 1000;
    let digit = |d: u64| b'0' + (d % 10) as u8;
    out.extend_from_slice(&[b'.', digit(frac / 100), digit(frac / 10), digit(frac)]);
}

/// nginx's `$upstream_addr`: every endpoint tried, `10.0.0.1:8080, 10.0.0.2:8080`. The
/// addresses come from the table, which holds only IP addresses and valid DNS names: nothing
/// to escape.
fn upstream_addrs(out: &mut Vec<u8>, upstreams: &[(&[u8], Option<u16>)]) {
    for (i, (address, _)) in upstreams.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(address);
    }
}

/// nginx's `$upstream_status`: each try's status, `-` for one that got no answer (`-, 200`).
fn upstream_statuses(out: &mut Vec<u8>, upstreams: &[(&[u8], Option<u16>)]) {
    for (i, (_, status)) in upstreams.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        match status {
            Some(status) => status_code(out, *status),
            None => out.push(b'-'),
        }
    }
}

/// The inside of a JSON string holding `value`: valid UTF-8 is kept, with quotes,
/// backslashes and control characters escaped; bytes that are not UTF-8 become U+FFFD.
fn json_text(out: &mut Vec<u8>, value: &[u8]) {
    if plain(value, b'"') {
        out.extend_from_slice(value);
        return;
    }
    match std::str::from_utf8(value) {
        Ok(text) => escape_all(out, text),
        Err(_) => escape_all(out, &String::from_utf8_lossy(value)),
    }
}

/// Whether every byte of `bytes` is printable ASCII other than `"`, `\` and `also`: what
/// both formats copy as it is, and nearly every value is. Eight bytes are checked at a time
/// with word arithmetic, so that a long user agent costs little more than a short path.
fn plain(bytes: &[u8], also: u8) -> bool {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut eight = [0; 8];
        eight.copy_from_slice(word);
        if odd_bytes(u64::from_le_bytes(eight), also) != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|&b| plain_byte(b, also))
}

/// [`plain`] for one byte: for the few after the last whole word, and for escaping.
#[inline(always)]
fn plain_byte(b: u8, also: u8) -> bool {
    PRINTABLE[usize::from(b)] && b != also
}

/// Nonzero when some byte of `x` is below `0x20`, above `0x7e`, or `"`, `\` or `also`. Each
/// test is exact for the word as a whole, though a borrow or carry may mark the wrong byte,
/// which does not matter here.
#[inline(always)]
fn odd_bytes(x: u64, also: u8) -> u64 {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // High bit set in some byte when a byte of `x` is below `n` (for `n` up to 0x80).
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let above = (x.wrapping_add(ONES) | x) & HIGH;
    let equal = |b: u8| below(x ^ (ONES * u64::from(b)), 1);
    below(x, 0x20) | above | equal(b'"') | equal(b'\\') | equal(also)
}

/// Printable ASCII but `"` and `\`.
static PRINTABLE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        table[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    table
};

/// [`json_text`] for text known to hold something to escape (or non-ASCII, which valid
/// UTF-8 keeps as it is).
fn escape_all(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut clean = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean..i]);
        out.extend_from_slice(escaped);
        clean = i + 1;
    }
    out.extend_from_slice(&bytes[clean..]);
}

/// `value` as a JSON string, or `null` when the header was absent; `key` ends with the
/// opening quote, which `null` must not have.
#[inline(always)]
fn json_optional(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    match value {
        Some(value) => {
            out.extend_from_slice(key);
            json_text(out, value);
            out.push(b'"');
        }
        None => {
            out.extend_from_slice(&key[..key.len() - 1]);
            out.extend_from_slice(b"null");
        }
    }
}

// Each constant piece below runs from the end of one value to the start of the next, so that
// a line is about one copy per field: a copy is a length check and an update of the Vec's
// length, which cost more than the bytes they copy.
fn json_line(r: &Line<'_>, out: &mut Vec<u8>) {
    // Room for a typical line at once rather than growth checks failing along the way.
    out.reserve(1024);
    out.extend_from_slice(b"{\"time\":\"");
    write_time(out, r.time);
    out.extend_from_slice(b"\",\"client_ip\":\"");
    out.extend_from_slice(r.client_ip);
    // A method is a token and the protocol one of a few names: nothing in them to escape.
    out.extend_from_slice(b"\",\"method\":\"");
    out.extend_from_slice(r.method);
    out.extend_from_slice(b"\",\"host\":\"");
    json_text(out, r.host);
    out.extend_from_slice(b"\",\"path\":\"");
    json_text(out, r.path);
    out.extend_from_slice(b"\",\"protocol\":\"");
    out.extend_from_slice(r.protocol);
    out.extend_from_slice(b"\",\"status\":");
    status_code(out, r.status);
    out.extend_from_slice(b",\"bytes_sent\":");
    number(out, r.bytes_sent);
    out.extend_from_slice(b",\"bytes_received\":");
    number(out, r.bytes_received);
    out.extend_from_slice(b",\"duration_ms\":");
    thousandths(out, r.duration.as_micros());
    if r.upstreams.is_empty() {
        out.extend_from_slice(b",\"upstream_addr\":null,\"upstream_status\":null");
    } else {
        out.extend_from_slice(b",\"upstream_addr\":\"");
        upstream_addrs(out, r.upstreams);
        out.extend_from_slice(b"\",\"upstream_status\":\"");
        upstream_statuses(out, r.upstreams);
        out.push(b'"');
    }
    out.extend_from_slice(b",\"upstream_duration_ms\":");
    match r.upstream_duration {
        Some(d) => thousandths(out, d.as_micros()),
        None => out.extend_from_slice(b"null"),
    }
    json_names(out, &r.names);
    out.extend_from_slice(b",\"request_id\":\"");
    json_text(out, r.request_id);
    out.push(b'"');
    json_optional(out, b",\"user_agent\":\"", r.user_agent);
    json_optional(out, b",\"referer\":\"", r.referer);
    out.extend_from_slice(b"}\n");
}

/// `,"namespace":"…","ingress":"…","service":"…"`.
fn json_names(out: &mut Vec<u8>, names: &Names<'_>) {
    out.extend_from_slice(b",\"namespace\":\"");
    json_text(out, names.namespace);
    out.extend_from_slice(b"\",\"ingress\":\"");
    json_text(out, names.ingress);
    out.extend_from_slice(b"\",\"service\":\"");
    json_text(out, names.service);
    out.push(b'"');
}

/// `namespace/ingress/service`, or `-` for a request no Ingress routed.
fn text_names(out: &mut Vec<u8>, names: &Names<'_>) {
    if names.namespace.is_empty() {
        out.push(b'-');
        return;
    }
    escape(out, names.namespace, true);
    out.push(b'/');
    escape(out, names.ingress, true);
    out.push(b'/');
    escape(out, names.service, true);
}

/// `client - - [time] "METHOD path PROTOCOL" status bytes_sent "referer" "user agent"
/// bytes_received seconds upstream_addr upstream_status upstream_seconds namespace/ingress/service
/// "host" request_id`, `-` standing for what is absent. The first fields are nginx's combined
/// format and the next ones follow ingress-nginx's `upstreaminfo`, so existing parsers need
/// little change.
fn text_line(r: &Line<'_>, out: &mut Vec<u8>) {
    // As in `json_line`, separators are copied together where they meet.
    out.reserve(512);
    out.extend_from_slice(r.client_ip);
    out.extend_from_slice(b" - - [");
    write_time(out, r.time);
    out.extend_from_slice(b"] \"");
    // A method is a token (hyper takes no other): nothing in it to escape.
    out.extend_from_slice(r.method);
    out.push(b' ');
    escape(out, r.path, false);
    out.push(b' ');
    out.extend_from_slice(r.protocol);
    out.extend_from_slice(b"\" ");
    status_code(out, r.status);
    out.push(b' ');
    number(out, r.bytes_sent);
    out.extend_from_slice(b" \"");
    escape(out, r.referer.unwrap_or(b"-"), false);
    out.extend_from_slice(b"\" \"");
    escape(out, r.user_agent.unwrap_or(b"-"), false);
    out.extend_from_slice(b"\" ");
    number(out, r.bytes_received);
    out.push(b' ');
    thousandths(out, r.duration.as_millis());
    // Vestibule's own values, in nginx's own form ("a, b" for several tries): not escaped.
    if r.upstreams.is_empty() {
        out.extend_from_slice(b" - - ");
    } else {
        out.push(b' ');
        upstream_addrs(out, r.upstreams);
        out.push(b' ');
        upstream_statuses(out, r.upstreams);
        out.push(b' ');
    }
    match r.upstream_duration {
        Some(d) => thousandths(out, d.as_millis()),
        None => out.push(b'-'),
    }
    out.push(b' ');
    text_names(out, &r.names);
    out.extend_from_slice(b" \"");
    escape(out, r.host, false);
    out.extend_from_slice(b"\" ");
    // The client may have chosen the ID (`X-Request-ID`), so it is escaped like the rest.
    if r.request_id.is_empty() {
        out.push(b'-');
    } else {
        escape(out, r.request_id, true);
    }
    out.push(b'\n');
}

/// Writes `value` with `"`, `\`, control characters and every byte outside ASCII as `\xHH`, as
/// nginx does, so that no client-sent string can end a field or a line early or forge one;
/// `bare` also escapes spaces, for fields that are not quoted.
fn escape(out: &mut Vec<u8>, value: &[u8], bare: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let also = if bare { b' ' } else { b'"' };
    if plain(value, also) {
        out.extend_from_slice(value);
        return;
    }
    let mut clean = 0;
    for (i, &b) in value.iter().enumerate() {
        if !plain_byte(b, also) {
            out.extend_from_slice(&value[clean..i]);
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
            clean = i + 1;
        }
    }
    out.extend_from_slice(&value[clean..]);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::{Barrier, Mutex};

    use http::Method;

    use crate::headers::IpText;

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
        request_id: String,
        user_agent: Option<String>,
        referer: Option<String>,
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
                },
                request_id: self.request_id.as_bytes(),
                user_agent: self.user_agent.as_deref().map(str::as_bytes),
                referer: self.referer.as_deref().map(str::as_bytes),
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
            request_id: "3f2a9c".into(),
            user_agent: Some("curl/8.5".into()),
            referer: Some("https://shop.example.com/".into()),
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
            user_agent: None,
            referer: None,
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
}
