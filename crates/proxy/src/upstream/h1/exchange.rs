//! One request over an HTTP/1.1 connection, driven by the request's own task: the head goes
//! out in one write, the body (if any) follows as the client sends it while the connection is
//! watched for an early answer, and the response head is read, interim responses skipped.
//! No task, channel or cross-task wake-up sits between the two sides, which is most of what
//! a pooled hyper client connection costs per request.

use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body::Body;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::body::ResponseBody;
use super::connection::Connection;
use super::error::H1Error;
use super::request::{RequestHead, last_chunk};
use super::response::{ParsedHead, State, framing, parse_head};
use crate::body::request::UpstreamBody;
use crate::upstream::pool::Return;
use crate::upstream::request::BodyFraming;

/// Interim (1xx) responses skipped before the final one.
const MAX_INTERIM: usize = 16;

/// How a failed exchange ended, for the decision to send it again on a new connection.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: H1Error,
    /// Not one byte of a response came back: on a connection that had been idle, the
    /// upstream most likely closed it as the request went out, without seeing the request.
    pub(crate) nothing_back: bool,
}

impl Connection {
    /// Sends the request and reads the response head. The body is read through the returned
    /// [`ResponseBody`], which hands the connection back to the pool (`reuse`) once the body
    /// has all come and the connection may carry another request.
    ///
    /// The response's fields go into `fields`, emptied first: the caller passes the map the
    /// request's fields came in, whose room is already there.
    pub(crate) async fn exchange(
        mut self,
        request: &RequestHead,
        body: Option<UpstreamBody>,
        reuse: Return,
        fields: HeaderMap,
    ) -> Result<(http::response::Parts, ResponseBody), Failure> {
        let written = async {
            self.stream.write_all(&request.bytes).await?;
            self.stream.flush().await
        };
        if let Err(e) = written.await {
            return Err(Failure {
                error: H1Error::Write(e),
                nothing_back: true,
            });
        }
        // A response that began before the request body was all sent leaves the connection
        // in the middle of a request: it closes after the response.
        let mut body_unsent = false;
        // An upstream that answers early may close without reading the rest, and the write
        // then fails: the answer it wrote first is still the one to give.
        let mut write_failed = None;
        if let (Some(body), true) = (body, request.body != BodyFraming::None) {
            let chunked = request.body == BodyFraming::Chunked;
            match self.send_body(body, chunked, request.head_limit).await {
                Ok(all_sent) => body_unsent = !all_sent,
                Err(H1Error::Write(e)) => {
                    body_unsent = true;
                    write_failed = Some(e);
                }
                Err(error) => return Err(self.failed(error)),
            }
        }
        let mut interim = 0;
        let (head_len, parsed) = std::future::poll_fn(|cx| {
            self.poll_head(cx, &mut interim, &mut write_failed, request.head_limit)
        })
        .await?;
        let head = self.buf.split_to(head_len).freeze();
        let (mut headers, delimiting) = match parsed.headers(&head, fields) {
            Ok(parsed) => parsed,
            Err(error) => return Err(self.failed(error)),
        };
        let (framing, keep_alive) = match framing(
            parsed.status,
            parsed.version,
            request.head_method,
            &delimiting,
            &mut headers,
        ) {
            Ok(framing) => framing,
            Err(error) => return Err(self.failed(error)),
        };
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = parsed.status;
        parts.version = parsed.version;
        parts.headers = headers;
        let mut body = ResponseBody {
            conn: Some(self),
            state: framing,
            reuse: (keep_alive && !body_unsent).then_some(reuse),
        };
        if matches!(body.state, State::Done) {
            body.release();
        }
        Ok((parts, body))
    }

    /// Reads until the final response's head is in the buffer, skipping interim responses
    /// (counted in `interim`): its length and what it holds. A write that failed while the
    /// body went out is the error to give when no answer follows.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        interim: &mut usize,
        write_failed: &mut Option<io::Error>,
        limit: usize,
    ) -> Poll<Result<(usize, ParsedHead), Failure>> {
        loop {
            let parsed = if self.buf.is_empty() {
                Ok(None)
            } else {
                parse_head(&self.buf)
            };
            let (head_len, parsed) = match parsed {
                Ok(Some(parsed)) => parsed,
                Ok(None) => {
                    if self.buf.len() >= limit {
                        return Poll::Ready(Err(self.failed(H1Error::HeadTooLarge(limit))));
                    }
                    let read = ready!(self.poll_fill(cx));
                    if let Ok(n) = read
                        && n > 0
                    {
                        continue;
                    }
                    let nothing_back = self.buf.is_empty() && *interim == 0;
                    let error = match (write_failed.take(), read) {
                        (Some(e), _) => H1Error::Write(e),
                        (None, Err(e)) => H1Error::Read(e),
                        (None, Ok(_)) if nothing_back => {
                            H1Error::Closed("before the response began")
                        }
                        (None, Ok(_)) => H1Error::Closed("in the middle of the response head"),
                    };
                    return Poll::Ready(Err(Failure {
                        error,
                        nothing_back,
                    }));
                }
                Err(error) => return Poll::Ready(Err(self.failed(error))),
            };
            // Whole in the buffer, perhaps in one read that carried it past the limit, or
            // behind an earlier response on a reused connection: the limit is on the head,
            // not on what one read brought.
            if head_len > limit {
                return Poll::Ready(Err(self.failed(H1Error::HeadTooLarge(limit))));
            }
            if !parsed.status.is_informational() {
                return Poll::Ready(Ok((head_len, parsed)));
            }
            // 100 Continue, 103 Early Hints: the final response follows. A 101 to a request
            // that asked for no upgrade leaves a connection that is no longer HTTP.
            if parsed.status == StatusCode::SWITCHING_PROTOCOLS {
                let error = H1Error::Invalid("an unrequested 101");
                return Poll::Ready(Err(self.failed(error)));
            }
            *interim += 1;
            if *interim > MAX_INTERIM {
                let error = H1Error::Invalid("too many interim responses");
                return Poll::Ready(Err(self.failed(error)));
            }
            self.buf.advance(head_len);
        }
    }

    /// Sends the request body as the client gives it, while watching the connection: a
    /// final response that begins first ends the sending (`false`), as the upstream wants no
    /// more (a 413, a 401, a redirect). Interim responses (100 Continue) do not.
    async fn send_body(
        &mut self,
        mut body: UpstreamBody,
        chunked: bool,
        head_limit: usize,
    ) -> Result<bool, H1Error> {
        let mut pending = Bytes::new();
        let mut ended = false;
        std::future::poll_fn(|cx| {
            loop {
                // The upstream's side first: anything it says may change what to do.
                if self.buf.len() < head_limit {
                    match self.poll_fill(cx) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(H1Error::Closed(
                                "while the request body was sent",
                            )));
                        }
                        Poll::Ready(Ok(_)) => match parse_head(&self.buf)? {
                            Some((len, head))
                                if head.status.is_informational()
                                    && head.status != StatusCode::SWITCHING_PROTOCOLS =>
                            {
                                self.buf.advance(len);
                                continue;
                            }
                            Some(_) => return Poll::Ready(Ok(false)),
                            None => continue,
                        },
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(H1Error::Read(e))),
                        Poll::Pending => {}
                    }
                } else {
                    // A head this large fails where heads are read.
                    return Poll::Ready(Ok(false));
                }
                if !pending.is_empty() {
                    let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &pending))
                        .map_err(H1Error::Write)?;
                    if n == 0 {
                        return Poll::Ready(Err(H1Error::Write(io::ErrorKind::WriteZero.into())));
                    }
                    pending.advance(n);
                    continue;
                }
                if ended {
                    ready!(Pin::new(&mut self.stream).poll_flush(cx)).map_err(H1Error::Write)?;
                    return Poll::Ready(Ok(true));
                }
                match ready!(Pin::new(&mut body).poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if data.is_empty() => {}
                        Ok(data) if !chunked => pending = data,
                        Ok(data) => {
                            let mut out = BytesMut::with_capacity(data.len() + 20);
                            // Writing to a BytesMut cannot fail.
                            let _ = write!(out, "{:x}\r\n", data.len());
                            out.put_slice(&data);
                            out.put_slice(b"\r\n");
                            pending = out.freeze();
                        }
                        Err(frame) => {
                            ended = true;
                            if chunked {
                                let trailers = frame.into_trailers().unwrap_or_default();
                                pending = last_chunk(&trailers);
                            }
                        }
                    },
                    None => {
                        ended = true;
                        if chunked {
                            pending = Bytes::from_static(b"0\r\n\r\n");
                        }
                    }
                    Some(Err(e)) => return Poll::Ready(Err(H1Error::RequestBody(e))),
                }
            }
        })
        .await
    }

    fn failed(&self, error: H1Error) -> Failure {
        Failure {
            error,
            nothing_back: false,
        }
    }
}
