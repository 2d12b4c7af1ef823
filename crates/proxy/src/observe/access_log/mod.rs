//! The access log: one line per request, JSON or text. When a response ends, the serving
//! thread packs the request's values into a buffer of its own; a thread of the log's own
//! formats and writes them, so that neither the formatting nor a slow or stalled output
//! holds up a request.

use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

pub use format::AccessLogFormat;
use format::format_lines;
use line::Line;
use pack::pack;

pub(crate) mod clock;
mod escape;
mod format;
pub(crate) mod line;
mod pack;

/// Packed requests that may wait for the writer, per thread that serves requests: over a
/// second of traffic at 50,000 requests/s, so a briefly slow output loses nothing; past that,
/// dropping lines beats holding requests or growing without bound.
const PENDING_LIMIT: usize = 16 << 20;

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
/// Each wake-up has a cost of its own, so fewer is cheaper (`bench/README.md` has the
/// figures); a line still reaches the output within a twentieth of a second.
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

#[cfg(test)]
mod tests;
