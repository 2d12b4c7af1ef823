//! The client's side of a connection as hyper reads and writes it, with the clocks that
//! hyper's own cannot keep right: each HTTP/1 request head timed from its first byte (408
//! when it does not arrive whole within the client header timeout), and what the keep-alive
//! idle timeout needs to know (requests in flight, when the last one ended).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::respond::request_timeout;

/// Requests in flight on one client connection, when the last one ended, and when the head
/// of the next began to arrive.
#[derive(Debug)]
pub(super) struct Activity {
    in_flight: AtomicUsize,
    /// Nanoseconds after `start` at which the last request ended.
    since: AtomicU64,
    /// Nanoseconds after `start`, plus one, from which the request head now arriving is
    /// timed; [`ARMED`] when its bytes have begun to arrive but the clock is not read yet; 0
    /// when none is arriving ([`ClientIo`]). Relaxed: it orders nothing else, and over
    /// HTTP/1, the only protocol timed, the connection's own task alone touches it.
    head: AtomicU64,
    /// Upgraded to a tunnel (a WebSocket): no more request heads.
    pub(super) upgraded: AtomicBool,
    /// A request head did not arrive within the client header timeout: answered 408.
    pub(super) head_timed_out: AtomicBool,
    start: tokio::time::Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            since: AtomicU64::new(0),
            head: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            head_timed_out: AtomicBool::new(false),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Activity {
    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head.store(0, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .min(ARMED - 2)
    }

    pub(super) fn quiet_since(&self) -> tokio::time::Instant {
        self.start + Duration::from_nanos(self.since.load(Ordering::SeqCst))
    }

    pub(super) fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0 || self.head.load(Ordering::Relaxed) != 0
    }

    pub(super) fn idle_for(&self, idle: Duration) -> bool {
        !self.busy() && self.quiet_since().elapsed() >= idle
    }
}

/// A request head's bytes have begun to arrive; the clock is read when the connection next
/// waits for more, so that a head arriving whole costs no clock reading.
const ARMED: u64 = u64::MAX;

/// Marks a request in flight until dropped.
pub(super) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.since.store(self.0.now(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a connection's request heads are timed: HTTP/1 only, as HTTP/2 has no heads
/// between requests to wait for (its frames arrive whenever they like).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeadClock {
    /// Clear text, nothing read yet: HTTP/2 with prior knowledge opens with its preface,
    /// `PRI `, which the first bytes decide.
    Undecided,
    Http1,
    Off,
}

/// The client's side of a connection, as hyper reads and writes it. It times each HTTP/1
/// request head from its first byte: one not complete within the header timeout is answered
/// 408 and the connection closed. The clock starts only when bytes arrive with no request
/// in flight, so a keep-alive connection waiting for its next request is left to the idle
/// timeout; a response still being written restarts it, so the wait is the client's alone.
pub(super) struct ClientIo<S> {
    inner: S,
    activity: Arc<Activity>,
    timeout: Duration,
    clock: HeadClock,
    /// Made on the first head timed, then reset to each head's deadline.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The last write could not go out: hyper is still sending a response.
    write_blocked: bool,
    /// Longest a write may wait on a client that reads nothing (nginx's `send_timeout`).
    send_timeout: Duration,
    /// Armed when a write first finds the client not reading; disarmed when one goes out.
    write_stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> ClientIo<S> {
    pub(super) fn new(
        inner: S,
        activity: Arc<Activity>,
        (timeout, send_timeout): (Duration, Duration),
        clock: HeadClock,
    ) -> ClientIo<S> {
        ClientIo {
            inner,
            activity,
            timeout,
            clock,
            sleep: None,
            write_blocked: false,
            send_timeout,
            write_stall: None,
        }
    }

    /// A write that could not go out: past the send timeout with nothing written, the
    /// client is not reading, and the connection fails rather than holding its response
    /// (and the upstream connection behind it) forever. Only writes that wait get here.
    #[cold]
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let send_timeout = self.send_timeout;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(send_timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of its response within the send timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Bytes have arrived: decides the protocol on the first ones, and starts the head's clock
    /// when they begin a request head.
    fn arrived(&mut self, bytes: &[u8]) {
        const PREFACE: &[u8] = b"PRI ";
        if self.clock == HeadClock::Undecided {
            // The preface's first bytes come in the first read: a client sends it whole.
            let n = bytes.len().min(PREFACE.len());
            self.clock = if bytes[..n] == PREFACE[..n] {
                HeadClock::Off
            } else {
                HeadClock::Http1
            };
        }
        if self.clock != HeadClock::Http1 {
            return;
        }
        let activity = &self.activity;
        if activity.upgraded.load(Ordering::Relaxed) {
            self.clock = HeadClock::Off;
            return;
        }
        if activity.in_flight.load(Ordering::SeqCst) == 0
            && activity.head.load(Ordering::Relaxed) == 0
        {
            activity.head.store(ARMED, Ordering::Relaxed);
        }
    }

    /// Whether the head now arriving is past its deadline; if not yet, the task is woken at
    /// the deadline.
    fn head_overdue(&mut self, cx: &mut Context<'_>) -> bool {
        let activity = &self.activity;
        let mut head = activity.head.load(Ordering::Relaxed);
        if self.clock != HeadClock::Http1 || head == 0 || self.write_blocked {
            return false;
        }
        if head == ARMED {
            head = activity.now() + 1;
            activity.head.store(head, Ordering::Relaxed);
        }
        let deadline = activity.start + Duration::from_nanos(head - 1) + self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx).is_ready()
    }

    /// A write went out: a response is still being sent, so a head that began meanwhile is
    /// timed from the next wait.
    fn wrote(&mut self, result: &Poll<io::Result<usize>>) {
        self.write_blocked = result.is_pending();
        if matches!(result, Poll::Ready(Ok(n)) if *n > 0) {
            if self.write_stall.is_some() {
                self.write_stall = None;
            }
            let head = &self.activity.head;
            if head.load(Ordering::Relaxed) != 0 {
                head.store(ARMED, Ordering::Relaxed);
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.clock != HeadClock::Off && buf.filled().len() > before {
                    this.arrived(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.head_overdue(cx) => {
                this.activity.head.store(0, Ordering::Relaxed);
                this.activity.head_timed_out.store(true, Ordering::Relaxed);
                // hyper is reading a head, so nothing of its own is on the way out. Sent
                // only if the socket takes it whole at once; the connection closes either
                // way, and hyper, seeing a read error, answers nothing itself.
                let answer = request_timeout();
                if let Poll::Ready(Ok(n)) = Pin::new(&mut this.inner).poll_write(cx, &answer)
                    && n == answer.len()
                {
                    let _ = Pin::new(&mut this.inner).poll_flush(cx);
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request head did not arrive within the client header timeout",
                )))
            }
            other => other,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&result);
        if result.is_pending() {
            return self.stalled(cx);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&result);
        if result.is_pending() {
            return self.stalled(cx);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
