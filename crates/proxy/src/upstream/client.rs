//! The upstream layer's one door for the request path: send a request to an endpoint and get
//! the response head, or an error that says how far the request got. Behind it, and nowhere
//! else, it is decided how the request goes: over a pooled HTTP/1.1 connection the request's
//! own task drives (`h1`), over hyper's HTTP/1.1 client (upgrades, which hyper hands over to
//! the tunnel), or over a shared HTTP/2 connection; and a request whose pooled connection
//! turns out to have been closed by the upstream goes once more on a new one.
//!
//! Connecting is separate from sending on purpose: a connect failure means nothing of the
//! request left Vestibule, so any request may be tried on another endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Request, Response};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;
use vestibule_model::{EndpointAddress, UpstreamProtocol};

use super::connect::{ConnectError, connect, tls_connect};
use super::error::{BoxError, UpstreamError};
use super::h1::connection::{Connection, Stream};
use super::h1::request::{RequestHead, request_head};
use super::pool::{Pool, PoolKey, Return, UpstreamSettings};
use super::request::UpstreamRequest;
use super::response::ResponseBody;
use super::tls::{TlsClient, TlsResolved};
use crate::body::request::{Progress, UpstreamBody, empty};

/// Where one attempt goes, and how to connect.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) endpoint: &'a EndpointAddress,
    pub(crate) protocol: UpstreamProtocol,
    /// How to speak TLS to it, when TLS: settled with the table (`upstream::tls`).
    pub(crate) tls: Option<&'a TlsResolved>,
}

/// How long each part of an exchange may take (`proxy-*-timeout`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    /// Between two writes of the request body to the upstream.
    pub(crate) send: Duration,
    /// For the response head, once the request has gone.
    pub(crate) read: Duration,
}

impl Timeouts {
    /// A route's timeouts, from its proxy policy.
    #[inline]
    pub(crate) fn of(policy: &vestibule_model::ProxyPolicy) -> Timeouts {
        Timeouts {
            connect: policy.connect_timeout,
            send: policy.send_timeout,
            read: policy.read_timeout,
        }
    }
}

/// One request on its way upstream, over all its attempts: what it is, and its HTTP/1.1
/// head once written, which every attempt over such a connection sends as it is.
#[derive(Debug)]
pub(crate) struct Outgoing<'a> {
    request: UpstreamRequest<'a>,
    head: Option<RequestHead>,
}

impl<'a> Outgoing<'a> {
    #[inline]
    pub(crate) fn new(request: UpstreamRequest<'a>) -> Outgoing<'a> {
        Outgoing {
            request,
            head: None,
        }
    }

    pub(crate) fn request(&self) -> &UpstreamRequest<'a> {
        &self.request
    }

    /// The request, to change before it is sent: the head written for it is dropped.
    pub(crate) fn request_mut(&mut self) -> &mut UpstreamRequest<'a> {
        self.head = None;
        &mut self.request
    }
}

/// What came of one attempt.
#[derive(Debug)]
pub(crate) struct Sent {
    pub(crate) result: Result<Response<ResponseBody>, UpstreamError>,
    /// When the new connection this attempt made was ready; `None` when it took a pooled one
    /// (or made none).
    pub(crate) connected_at: Option<Instant>,
}

/// A connection found in the pool, or what it takes to make a new one: its pool key, its
/// TLS client, and whether the request's own task drives it.
enum Found<'t> {
    Pooled(Conn),
    New(PoolKey, Option<&'t TlsClient>, bool),
}

/// The upstream connection pool, shared by every listener.
#[derive(Debug)]
pub(crate) struct Upstreams {
    pool: Arc<Pool>,
}

/// A connection ready for one request.
#[derive(Debug)]
struct Conn {
    kind: ConnKind,
    /// Taken from the pool rather than just made.
    reused: bool,
}

#[derive(Debug)]
enum ConnKind {
    /// hyper's HTTP/1.1 client, for upgrades: hyper hands the connection over to the
    /// tunnel. Never pooled: after an answer other than 101 it closes.
    Http1 {
        sender: http1::SendRequest<UpstreamBody>,
        /// The task driving the connection: aborting it closes the connection.
        task: tokio::task::AbortHandle,
    },
    Direct(Connection, Return),
    Http2(http2::SendRequest<UpstreamBody>),
}

/// A request for one attempt, in the form its connection takes.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "the direct kind is the one nearly every request takes: boxing it would cost each \
              an allocation, where the size only costs a move or two"
)]
enum Outbound {
    /// Boxed: upgrades are the rare kind, and the common one stays small.
    Hyper(Box<Request<UpstreamBody>>),
    /// The head, the body when the request has one, and the map the response's fields are
    /// to go into. Given the request's own map, emptied, one map goes back and forth between
    /// hyper's server side (which keeps a response's map for the next request on the
    /// connection) and the upstream, instead of one being made and grown for every request.
    Direct(RequestHead, Option<UpstreamBody>, HeaderMap),
}

/// A request that failed, and the request itself when it may go again on a new connection:
/// it never left, or (without a body) the pooled connection it went on had been closed.
#[derive(Debug)]
struct SendError {
    error: BoxError,
    unsent: Option<Outbound>,
    reused: bool,
}

impl Upstreams {
    pub(crate) fn new(settings: &UpstreamSettings) -> Upstreams {
        Upstreams {
            pool: Pool::new(settings),
        }
    }

    /// Sends `outgoing` to `target` and waits for the response head, within `timeouts`.
    /// `body` is the client's body while no attempt has taken it: it is taken once a
    /// connection is ready, so a failure to connect leaves it for the next attempt; without
    /// it, the request goes with an empty body. `progress` (with the body) tells how far the
    /// body has got, which the send timeout is judged by. `resend`: the request may go once
    /// more on a new connection when its pooled one turns out closed.
    pub(crate) async fn send(
        &self,
        target: &Target<'_>,
        outgoing: &mut Outgoing<'_>,
        body: &mut Option<UpstreamBody>,
        progress: Option<&Progress>,
        timeouts: Timeouts,
        resend: bool,
    ) -> Sent {
        let upgrade = outgoing.request.upgrade.is_some();
        // A pooled connection is found without waiting, so the common path holds no
        // connecting state.
        let found = match self.find(target, upgrade, true) {
            Ok(Found::Pooled(conn)) => Ok(conn),
            Ok(Found::New(key, tls, direct)) => {
                Box::pin(self.open(target, timeouts.connect, key, tls, direct)).await
            }
            Err(e) => Err(e),
        };
        let conn = match found {
            Ok(conn) => conn,
            Err(e) => {
                return Sent {
                    result: Err(e.into()),
                    connected_at: None,
                };
            }
        };
        let connected_at = (!conn.reused).then(Instant::now);
        // The client's body, on the attempt that sends it, is watched by the send timeout
        // while it goes out; the read timeout starts once it has.
        let streaming = body.is_some();
        let body = body.take().unwrap_or_else(empty);
        let request = match outbound(&conn, outgoing, target, body) {
            Ok(request) => request,
            Err(why) => {
                return Sent {
                    result: Err(UpstreamError::Unsendable(why)),
                    connected_at,
                };
            }
        };
        let watched = progress.filter(|_| streaming);
        // Boxed, so that the exchange's futures are built in place on the heap rather than
        // moved through the caller's state on every attempt.
        let exchange = self.exchange(conn, request, target, timeouts, watched, upgrade, resend);
        Sent {
            result: Box::pin(exchange).await,
            connected_at,
        }
    }

    /// The request over `conn`, under the timeouts; a pooled connection the upstream had
    /// already closed gives the request back, which then goes once more on a new
    /// connection, body and all.
    #[expect(
        clippy::too_many_arguments,
        reason = "one attempt's parts, taken apart by `send` and used here once"
    )]
    async fn exchange(
        &self,
        conn: Conn,
        request: Outbound,
        target: &Target<'_>,
        timeouts: Timeouts,
        progress: Option<&Progress>,
        upgrade: bool,
        resend: bool,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let closer = conn.closer();
        let sending = async {
            match conn.send(request, resend).await {
                Err(SendError {
                    unsent: Some(request),
                    reused: true,
                    ..
                }) => match self
                    .checkout(target, timeouts.connect, upgrade, false)
                    .await
                {
                    Ok(conn) => conn.send(request, false).await.map_err(|e| e.error),
                    Err(e) => Err(BoxError::from(e)),
                },
                other => other.map_err(|e| e.error),
            }
        };
        tokio::pin!(sending);
        // While the client's body goes out (`progress`), no frame taken for the whole send
        // timeout ends the exchange; after that, the response head must begin within the
        // read timeout. Written out here rather than as a function of its own: each async
        // function on a request's way is one more state its future carries and moves.
        let timed_out = 'timed: {
            if let Some(progress) = progress {
                let mut body_done = std::pin::pin!(progress.sent.notified());
                loop {
                    let stalled_at = progress.last() + timeouts.send;
                    tokio::select! {
                        result = &mut sending => break 'timed Some(result),
                        () = &mut body_done => break,
                        () = tokio::time::sleep_until(stalled_at) => {
                            // No frame taken for the whole send timeout: the upstream has
                            // stopped reading (or the client stopped sending).
                            if progress.last() + timeouts.send <= tokio::time::Instant::now() {
                                break 'timed None;
                            }
                        }
                    }
                }
            }
            tokio::time::timeout(timeouts.read, sending).await.ok()
        };
        match timed_out {
            Some(result) => result.map_err(UpstreamError::Failed),
            None => {
                if let Some(closer) = closer {
                    closer.abort();
                }
                Err(UpstreamError::TimedOut)
            }
        }
    }

    /// A connection to the target: an idle pooled one when there is one and `reuse` allows,
    /// else a new one.
    async fn checkout(
        &self,
        target: &Target<'_>,
        timeout: Duration,
        upgrade: bool,
        reuse: bool,
    ) -> Result<Conn, ConnectError> {
        match self.find(target, upgrade, reuse)? {
            Found::Pooled(conn) => Ok(conn),
            // Boxed: connecting (TCP, TLS, handshake) is the rare path and its future is
            // large; inline, every request's future would carry its size.
            Found::New(key, tls, direct) => {
                Box::pin(self.open(target, timeout, key, tls, direct)).await
            }
        }
    }

    /// What `checkout` finds without waiting: a pooled connection, or what it takes to make
    /// one.
    fn find<'t>(
        &self,
        target: &Target<'t>,
        upgrade: bool,
        reuse: bool,
    ) -> Result<Found<'t>, ConnectError> {
        let tls = match target.tls {
            Some(Ok(client)) => Some(client),
            Some(Err(error)) => return Err(ConnectError::from(error)),
            None => None,
        };
        let key = PoolKey {
            endpoint: target.endpoint.clone(),
            protocol: target.protocol,
            tls: tls.map(|client| client.id),
        };
        let h2 = target.protocol.is_http2();
        // An HTTP/1.1 upgrade's connection goes to its tunnel: it is never one from the pool.
        let direct = !upgrade && !h2;
        if reuse && h2 {
            if let Some(sender) = self.pool.multiplexed(&key) {
                return Ok(Found::Pooled(Conn {
                    kind: ConnKind::Http2(sender),
                    reused: true,
                }));
            }
        } else if reuse
            && direct
            && let Some(conn) = self.pool.take_idle(&key)
        {
            return Ok(Found::Pooled(self.direct(key, conn, true)));
        }
        Ok(Found::New(key, tls.map(|client| &**client), direct))
    }

    /// A new connection to the target.
    async fn open(
        &self,
        target: &Target<'_>,
        timeout: Duration,
        key: PoolKey,
        tls: Option<&TlsClient>,
        direct: bool,
    ) -> Result<Conn, ConnectError> {
        let stream = connect(target.endpoint, timeout).await?;
        match (tls, target.protocol.is_http2()) {
            (None, _) if direct => {
                Ok(self.direct(key, Connection::new(Stream::Left(stream)), false))
            }
            (None, false) => http1(&key, stream).await,
            (None, true) => self.http2(key, stream).await,
            (Some(client), h2) => {
                let stream = tls_connect(stream, client, timeout).await?;
                if direct {
                    let conn = Connection::new(Stream::Right(Box::new(stream)));
                    Ok(self.direct(key, conn, false))
                } else if h2 {
                    self.http2(key, stream).await
                } else {
                    http1(&key, stream).await
                }
            }
        }
    }

    fn direct(&self, key: PoolKey, conn: Connection, reused: bool) -> Conn {
        let back = Return {
            key,
            pool: self.pool.clone(),
        };
        Conn {
            kind: ConnKind::Direct(conn, back),
            reused,
        }
    }

    async fn http2<I>(&self, key: PoolKey, io: I) -> Result<Conn, ConnectError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(io))
            .await
            .map_err(ConnectError::Handshake)?;
        let endpoint = key.endpoint.to_string();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(endpoint, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        self.pool.share(key, sender.clone());
        Ok(Conn {
            kind: ConnKind::Http2(sender),
            reused: false,
        })
    }
}

/// A hyper HTTP/1.1 client connection, with its task, for an upgrade.
async fn http1<I>(key: &PoolKey, io: I) -> Result<Conn, ConnectError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    let endpoint = key.endpoint.to_string();
    let task = tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            debug!(endpoint, error = %e, "upstream connection ended");
        }
    })
    .abort_handle();
    Ok(Conn {
        kind: ConnKind::Http1 { sender, task },
        reused: false,
    })
}

/// The request in the form `conn` takes: over a direct connection the head is written once,
/// on the first attempt that needs it, and the fields' map then carries the response's.
#[inline]
fn outbound(
    conn: &Conn,
    outgoing: &mut Outgoing<'_>,
    target: &Target<'_>,
    body: UpstreamBody,
) -> Result<Outbound, &'static str> {
    if !matches!(conn.kind, ConnKind::Direct(..)) {
        let request = outgoing
            .request
            .to_hyper(target.protocol, target.endpoint, body)?;
        return Ok(Outbound::Hyper(Box::new(request)));
    }
    let (head, fields) = match &outgoing.head {
        Some(head) => (head.clone(), HeaderMap::new()),
        None => {
            let head = request_head(&outgoing.request)?;
            // The fields are in the head now: their map takes the response's.
            let fields = std::mem::take(&mut outgoing.request.headers);
            (outgoing.head.insert(head).clone(), fields)
        }
    };
    Ok(Outbound::Direct(head, Some(body), fields))
}

impl Conn {
    /// Closes the connection when called, for a request given up on midway: an HTTP/1.1
    /// connection cannot be reused then, and it may still hold the client's body. (An
    /// HTTP/2 stream is reset by dropping its future.)
    fn closer(&self) -> Option<tokio::task::AbortHandle> {
        match &self.kind {
            ConnKind::Http1 { task, .. } => Some(task.clone()),
            // Closed by dropping it, with the exchange's future.
            ConnKind::Direct(..) | ConnKind::Http2(_) => None,
        }
    }

    /// Sends the request and waits for the response headers (the caller bounds the wait).
    /// A direct connection travels with the response body, back to the pool once the body
    /// has been read to its end.
    ///
    /// A direct request may go again on a new connection (`resend`) when the pooled one it
    /// went on gave nothing back: the upstream closed it as the request arrived.
    async fn send(
        self,
        request: Outbound,
        resend: bool,
    ) -> Result<Response<ResponseBody>, SendError> {
        let reused = self.reused;
        let failed = |mut e: hyper::client::conn::TrySendError<Request<UpstreamBody>>| SendError {
            unsent: e.take_message().map(|r| Outbound::Hyper(Box::new(r))),
            error: e.into_error().into(),
            reused,
        };
        match (self.kind, request) {
            (ConnKind::Direct(conn, back), Outbound::Direct(head, body, fields)) => {
                // Only a request without a body is ever sent again (`resend`).
                match conn.exchange(&head, body, back, fields).await {
                    Ok((parts, body)) => {
                        Ok(Response::from_parts(parts, ResponseBody::Direct(body)))
                    }
                    Err(failure) => Err(SendError {
                        unsent: (reused && resend && failure.nothing_back)
                            .then_some(Outbound::Direct(head, None, HeaderMap::new())),
                        error: failure.error.into(),
                        reused,
                    }),
                }
            }
            (ConnKind::Http2(mut sender), Outbound::Hyper(request)) => {
                let response = sender.try_send_request(*request).await.map_err(failed)?;
                Ok(response.map(ResponseBody::Hyper))
            }
            (ConnKind::Http1 { mut sender, .. }, Outbound::Hyper(request)) => {
                // The sender goes with this function: the connection carries no other request.
                let response = sender.try_send_request(*request).await.map_err(failed)?;
                Ok(response.map(ResponseBody::Hyper))
            }
            // `outbound` builds the request its connection asks for. Spelled out rather than
            // `_`, so that a new kind of either must be placed here.
            (ConnKind::Direct(..), Outbound::Hyper(_))
            | (ConnKind::Http2(_) | ConnKind::Http1 { .. }, Outbound::Direct(..)) => {
                Err(SendError {
                    error: "the request was built for the other kind of connection".into(),
                    unsent: None,
                    reused,
                })
            }
        }
    }
}
