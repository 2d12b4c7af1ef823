//! The client's request body on its way up: held to the route's size limit and to the send
//! timeout, with its progress shared with the request path; or the empty body of an attempt
//! that sends none.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use tokio::sync::Notify;

use super::error::BodyError;
use super::timed::Timed;

/// A request body sent upstream: the client's (first attempt), or none (a retry of a request
/// without body, or an upgrade).
pub(crate) type UpstreamBody = Either<Limited, Empty<Bytes>>;

pub(crate) fn empty() -> UpstreamBody {
    Either::Right(Empty::new())
}

/// The client's request body, cut off once it passes the size limit (when `Content-Length`
/// did not announce the size, so it could not be refused up front) and when the client stops
/// sending. Its [`Progress`] tells the request path how far it got.
#[derive(Debug)]
pub(crate) struct Limited {
    inner: Timed<Incoming>,
    limit: Option<u64>,
    seen: u64,
    progress: Arc<Progress>,
}

/// How far a request body has got towards the upstream: when the last frame was taken, and
/// whether it has all gone. The send timeout is judged from this, because a body nobody
/// asks for (the upstream stopped reading) has no timer of its own running.
#[derive(Debug)]
pub(crate) struct Progress {
    /// Told once the body has ended (or failed), so the read timeout can start.
    pub(crate) sent: Notify,
    /// Body bytes taken from the client so far.
    pub(crate) received: AtomicU64,
    /// The body passed the size limit: the failure is the client's (413), not the upstream's.
    pub(crate) exceeded: AtomicBool,
    /// The client's body failed on its way in (malformed chunked framing, a reset, no data
    /// for the idle timeout): the failure is the client's too.
    pub(crate) broken: AtomicBool,
    /// When the last frame was taken, in nanoseconds after `start`.
    last: AtomicU64,
    start: tokio::time::Instant,
}

impl Progress {
    pub(crate) fn new() -> Arc<Progress> {
        Arc::new(Progress {
            sent: Notify::new(),
            received: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            last: AtomicU64::new(0),
            start: tokio::time::Instant::now(),
        })
    }

    /// When the upstream last took a frame (or the body started).
    pub(crate) fn last(&self) -> tokio::time::Instant {
        self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    fn moved(&self) {
        let since = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(since, Ordering::Relaxed);
    }
}

impl Limited {
    pub(crate) fn new(
        body: Incoming,
        limit: Option<u64>,
        idle: Duration,
        progress: Arc<Progress>,
    ) -> Limited {
        Limited {
            inner: Timed::new(body, idle),
            limit,
            seen: 0,
            progress,
        }
    }
}

impl Body for Limited {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Err(_)) = &frame {
            this.progress.broken.store(true, Ordering::Relaxed);
        }
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            this.seen += data.len() as u64;
            this.progress.received.store(this.seen, Ordering::Relaxed);
        }
        if let Some(limit) = this.limit
            && this.seen > limit
        {
            this.progress.exceeded.store(true, Ordering::Relaxed);
            this.progress.sent.notify_one();
            return Poll::Ready(Some(Err(BodyError::TooLarge(limit))));
        }
        // With a known length the sender may never ask past the last frame: the end is
        // told as soon as it is known.
        this.progress.moved();
        if !matches!(frame, Some(Ok(_))) || this.inner.is_end_stream() {
            this.progress.sent.notify_one();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
