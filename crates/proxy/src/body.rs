//! Bodies in both directions: the client's request body on its way up (held to the size limit
//! and to the send timeout), the upstream's response body on its way down (held to the read
//! timeout), and the complete bodies Vestibule writes itself.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::Sleep;

/// Why a streamed body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error(transparent)]
    Upstream(#[from] crate::h1::H1Error),
}

/// A response body as it comes from an upstream: over a hyper client connection, or read
/// by the request's task from a direct HTTP/1.1 connection.
#[derive(Debug)]
pub(crate) enum ResponseBody {
    Hyper(Incoming),
    Direct(crate::h1::ResponseBody),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
            ResponseBody::Direct(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Hyper(body) => body.is_end_stream(),
            ResponseBody::Direct(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Hyper(body) => body.size_hint(),
            ResponseBody::Direct(body) => body.size_hint(),
        }
    }
}

/// Run once when a response body has all gone (or its client went away), with the bytes
/// sent. A method on a box rather than a boxed closure: the state is read where it lies
/// instead of being moved out first.
pub(crate) trait Done: Send + Sync {
    fn done(self: Box<Self>, sent: u64);
}

/// The body of a response to a client: the upstream's, streamed through with framing and
/// trailers kept, or a complete body of our own. It counts what it sends and says when it is
/// done (or abandoned), which is when a request is logged and measured.
pub struct ProxyBody {
    inner: Either<Timed<ResponseBody>, Full<Bytes>>,
    sent: u64,
    done: Option<Box<dyn Done>>,
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBody")
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl ProxyBody {
    /// The upstream's body. An HTTP/1.1 connection travels inside it (`h1::ResponseBody`)
    /// and goes back to the pool once the body has all been read.
    pub(crate) fn upstream(body: Timed<ResponseBody>) -> ProxyBody {
        ProxyBody {
            inner: Either::Left(body),
            sent: 0,
            done: None,
        }
    }

    /// Calls `done` with the body bytes sent once the body has ended, failed, or been
    /// dropped by a client that went away.
    pub(crate) fn on_done(&mut self, done: Box<dyn Done>) {
        self.done = Some(done);
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done.done(self.sent);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body given up on before its end leaves its connection mid-response: the
        // connection is dropped with it (in `inner`), never pooled.
        self.finish();
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let frame = match &mut this.inner {
            Either::Left(body) => ready!(Pin::new(body).poll_frame(cx)),
            Either::Right(body) => {
                ready!(Pin::new(body).poll_frame(cx)).map(|f| f.map_err(|never| match never {}))
            }
        };
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            None | Some(Err(_)) => this.finish(),
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

pub(crate) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    ProxyBody {
        inner: Either::Right(Full::new(bytes.into())),
        sent: 0,
        done: None,
    }
}

/// A request body sent upstream: the client's (first attempt), or none (a retry of a request
/// without body, or an upgrade).
pub(crate) type UpstreamBody = Either<Limited, Empty<Bytes>>;

pub(crate) fn empty() -> UpstreamBody {
    Either::Right(Empty::new())
}

/// A body whose frames must each arrive within `idle` of the previous one.
#[derive(Debug)]
pub struct Timed<B> {
    inner: B,
    idle: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<B> Timed<B> {
    pub(crate) fn new(inner: B, idle: Duration) -> Timed<B> {
        Timed {
            inner,
            idle,
            deadline: None,
        }
    }
}

impl<B> Body for Timed<B>
where
    B: Body<Data = Bytes> + Unpin,
    BodyError: From<B::Error>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                // The clock restarts with every frame; the timer is only armed while waiting.
                this.deadline = None;
                Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(BodyError::Idle(idle))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
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
