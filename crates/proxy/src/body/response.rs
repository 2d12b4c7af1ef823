//! The body of a response to a client: the upstream's, streamed through under the read
//! timeout, or a complete body of Vestibule's own; counted as it goes, with a hook run once
//! when it is done.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};

use super::error::BodyError;
use super::timed::Timed;
use crate::upstream::response::ResponseBody;

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
