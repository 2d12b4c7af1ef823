//! Connections to endpoints, behind this module's small interface (`checkout`, `Conn::send`)
//! so the pool can be replaced without touching the request path: HTTP/1.1 keep-alive
//! connections pooled per endpoint with an idle timeout and a cap, one shared HTTP/2
//! connection per endpoint, in clear text or TLS.
//!
//! HTTP/1.1 connections are driven by the request's own task ([`crate::h1`]) for every
//! request but upgrades, which take a new hyper client connection each (with its task):
//! hyper hands it over to the tunnel.
//!
//! Connecting is separate from sending on purpose: a connect failure means nothing of the
//! request left Vestibule, so any request may be tried on another endpoint.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tracing::debug;
use vestibule_model::{EndpointAddress, UpstreamProtocol, UpstreamTls};

use crate::body::{ResponseBody, UpstreamBody};
use crate::h1;

/// Pool limits towards upstreams. Timeouts are per route (`ProxyPolicy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// Idle keep-alive connections are closed after this long.
    pub idle_timeout: Duration,
    /// Idle keep-alive connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            idle_timeout: Duration::from_secs(60),
            max_idle_per_endpoint: 320,
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) endpoint: &'a EndpointAddress,
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) connect_timeout: Duration,
    /// How to speak TLS to it, when TLS: settled with the table ([`TlsClients`]).
    pub(crate) tls: Option<&'a TlsResolved>,
    /// The request asks for an upgrade: over HTTP/1.1 it takes a hyper connection of its
    /// own, which hyper hands over to the tunnel. Any other goes over a connection the
    /// request's task drives ([`h1`]).
    pub(crate) upgrade: bool,
}

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connection refused")]
    Refused,
    #[error("connecting timed out after {0:?}")]
    TimedOut(Duration),
    #[error("{0}")]
    Io(io::Error),
    #[error("TLS: {0}")]
    Tls(io::Error),
    #[error("HTTP handshake: {0}")]
    Handshake(hyper::Error),
    #[error("the upstream TLS name {0:?} is not valid")]
    ServerName(String),
}

impl ConnectError {
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, ConnectError::TimedOut(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    endpoint: EndpointAddress,
    protocol: UpstreamProtocol,
    /// The [`TlsClient`]'s id, when TLS.
    tls: Option<u64>,
}

/// The pool's keys come from the configuration, never from a client, so they need no
/// flooding-resistant hash: SipHash cost more than the rest of a pool lookup.
type KeyHasher = foldhash::fast::RandomState;

/// A request-driven HTTP/1.1 connection waiting in the pool, and since when.
#[derive(Debug)]
struct Idle {
    conn: h1::Connection,
    since: Instant,
}

/// The connections kept, and the limits they are kept under; shared with the connections
/// out on a request ([`Return`]) and with the sweeper.
#[derive(Debug)]
pub(crate) struct Pool {
    settings: UpstreamSettings,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    idle: HashMap<PoolKey, Vec<Idle>, KeyHasher>,
    multiplexed: HashMap<PoolKey, http2::SendRequest<UpstreamBody>, KeyHasher>,
    /// The task that closes idle direct connections (which have no task of their own to
    /// notice a close or a timeout) runs.
    sweeping: bool,
}

/// How requests to one backend speak TLS: its settings, ALPN and name, made into a client
/// when a table is installed, so that a request only reads it.
#[derive(Debug)]
pub(crate) struct TlsClient {
    /// Never given to another client: pooled connections are keyed by it, so a connection
    /// made with one setting is never taken for another.
    id: u64,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
}

/// Why a backend's TLS client could not be made: each of its requests fails to connect so.
#[derive(Debug, Clone)]
pub(crate) enum TlsClientError {
    Name(Box<str>),
    Config(Arc<str>),
}

impl TlsClientError {
    fn connect_error(&self) -> ConnectError {
        match self {
            TlsClientError::Name(name) => ConnectError::ServerName(name.to_string()),
            TlsClientError::Config(why) => ConnectError::Tls(io::Error::other(why.to_string())),
        }
    }
}

pub(crate) type TlsResolved = Result<Arc<TlsClient>, TlsClientError>;

/// The TLS clients of one installed table, by setting, ALPN and name. A table takes over
/// the clients of the one before for the settings it keeps, so their pooled connections
/// stay in use; those no route uses any more go with the old table.
#[derive(Debug, Default)]
pub(crate) struct TlsClients {
    by_setting: HashMap<TlsSetting, TlsResolved>,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TlsSetting {
    /// `None`: TLS without verification, as ingress-nginx does.
    tls: Option<UpstreamTls>,
    h2: bool,
    name: Box<str>,
}

impl TlsClients {
    /// The client for `tls` and ALPN `h2`, to the name `tls` gives or else `name`: this
    /// table's, the one before's, or a new one.
    pub(crate) fn resolve(
        &mut self,
        previous: Option<&TlsClients>,
        tls: Option<&UpstreamTls>,
        h2: bool,
        name: &str,
    ) -> TlsResolved {
        let setting = TlsSetting {
            tls: tls.cloned(),
            h2,
            name: tls
                .and_then(|t| t.server_name.as_deref())
                .unwrap_or(name)
                .into(),
        };
        if let Some(client) = self.by_setting.get(&setting) {
            return client.clone();
        }
        let client = match previous.and_then(|p| p.by_setting.get(&setting)) {
            Some(client) => client.clone(),
            None => tls_client(&setting),
        };
        self.by_setting.insert(setting, client.clone());
        client
    }
}

fn tls_client(setting: &TlsSetting) -> TlsResolved {
    static IDS: AtomicU64 = AtomicU64::new(0);
    let name = ServerName::try_from(setting.name.to_string())
        .map_err(|_| TlsClientError::Name(setting.name.clone()))?;
    let mut config = client_config(setting.tls.as_ref(), setting.h2)
        .map_err(|e| TlsClientError::Config(e.to_string().into()))?;
    // As ingress-nginx: no SNI unless `proxy-ssl-server-name: on`.
    config.enable_sni = setting.tls.as_ref().is_some_and(|t| t.send_sni);
    Ok(Arc::new(TlsClient {
        id: IDS.fetch_add(1, Ordering::Relaxed),
        name,
        config: Arc::new(config),
    }))
}

/// The upstream connection pool, shared by every listener.
#[derive(Debug)]
pub(crate) struct Upstreams {
    pool: Arc<Pool>,
}

/// A connection ready for one request.
#[derive(Debug)]
pub(crate) struct Conn {
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
    Direct(h1::Connection, Return),
    Http2(http2::SendRequest<UpstreamBody>),
}

/// Where a direct HTTP/1.1 connection goes back to once its response has all been read.
#[derive(Debug)]
pub(crate) struct Return {
    key: PoolKey,
    pool: Arc<Pool>,
}

impl Return {
    pub(crate) fn park(self, conn: h1::Connection) {
        let settings = &self.pool.settings;
        let mut state = lock(&self.pool.state);
        if !state.sweeping {
            // Bodies are read on the runtime; outside one (a runtime shutting down) the
            // connection is simply not kept.
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            state.sweeping = true;
            runtime.spawn(sweep(Arc::downgrade(&self.pool)));
        }
        let idle = state.idle.entry(self.key).or_default();
        if idle.len() < settings.max_idle_per_endpoint {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

/// Closes idle direct connections that timed out or that the upstream closed, for as long as
/// the pool lives: they have no task of their own to notice (HTTP/2 connections do).
async fn sweep(pool: std::sync::Weak<Pool>) {
    let Some(idle_timeout) = pool.upgrade().map(|p| p.settings.idle_timeout) else {
        return;
    };
    let every = (idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut state = lock(&pool.state);
        state.idle.retain(|_, idle| {
            idle.retain_mut(|i| i.since.elapsed() < idle_timeout && i.conn.is_usable());
            !idle.is_empty()
        });
    }
}

/// A request for one attempt, in the form its connection takes.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "the direct kind is the one nearly every request takes: boxing it would cost each \
              an allocation, where the size only costs a move or two"
)]
pub(crate) enum Outbound {
    /// Boxed: upgrades are the rare kind, and the common one stays small.
    Hyper(Box<Request<UpstreamBody>>),
    /// The head, the body when the request has one, and the map the response's fields are
    /// to go into. Given the request's own map, emptied, one map goes back and forth between
    /// hyper's server side (which keeps a response's map for the next request on the
    /// connection) and the upstream, instead of one being made and grown for every request.
    Direct(h1::RequestHead, Option<UpstreamBody>, HeaderMap),
}

/// A request that failed, and the request itself when it may go again on a new connection:
/// it never left, or (without a body) the pooled connection it went on had been closed.
#[derive(Debug)]
pub(crate) struct SendError {
    pub(crate) error: crate::respond::BoxError,
    pub(crate) unsent: Option<Outbound>,
    pub(crate) reused: bool,
}

fn lock(state: &Mutex<PoolState>) -> MutexGuard<'_, PoolState> {
    // A panic while holding the lock leaves only connection lists behind; they stay usable.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Upstreams {
    pub(crate) fn new(settings: &UpstreamSettings) -> Upstreams {
        Upstreams {
            pool: Arc::new(Pool {
                settings: settings.clone(),
                state: Mutex::default(),
            }),
        }
    }

    /// A connection to the target: an idle pooled one when there is one, else a new one.
    pub(crate) async fn checkout(&self, target: &Target<'_>) -> Result<Conn, ConnectError> {
        self.connection(target, true).await
    }

    /// A connection made for this request, never a pooled one.
    pub(crate) async fn checkout_new(&self, target: &Target<'_>) -> Result<Conn, ConnectError> {
        self.connection(target, false).await
    }

    async fn connection(&self, target: &Target<'_>, reuse: bool) -> Result<Conn, ConnectError> {
        let tls = match target.tls {
            Some(Ok(client)) => Some(client),
            Some(Err(error)) => return Err(error.connect_error()),
            None => None,
        };
        let key = PoolKey {
            endpoint: target.endpoint.clone(),
            protocol: target.protocol,
            tls: tls.map(|client| client.id),
        };
        let h2 = target.protocol.is_http2();
        // An HTTP/1.1 upgrade's connection goes to its tunnel: it is never one from the pool.
        let direct = !target.upgrade && !h2;
        let key = if reuse && (direct || h2) {
            match self.reuse(key) {
                Ok(conn) => return Ok(conn),
                Err(key) => key,
            }
        } else {
            key
        };
        // Boxed: connecting (TCP, TLS, handshake) is the rare path and its future is large;
        // inline, every request's future would carry its size.
        Box::pin(self.open(target, key, tls.map(|client| &**client), direct)).await
    }

    /// A new connection to the target.
    async fn open(
        &self,
        target: &Target<'_>,
        key: PoolKey,
        tls: Option<&TlsClient>,
        direct: bool,
    ) -> Result<Conn, ConnectError> {
        let stream = connect(target.endpoint, target.connect_timeout).await?;
        match (tls, target.protocol.is_http2()) {
            (None, _) if direct => {
                Ok(self.direct(key, h1::Connection::new(h1::Stream::Left(stream)), false))
            }
            (None, false) => self.http1(key, stream).await,
            (None, true) => self.http2(key, stream).await,
            (Some(client), h2) => {
                let stream = tls_connect(stream, client, target.connect_timeout).await?;
                if direct {
                    Ok(self.direct(
                        key,
                        h1::Connection::new(h1::Stream::Right(Box::new(stream))),
                        false,
                    ))
                } else if h2 {
                    self.http2(key, stream).await
                } else {
                    self.http1(key, stream).await
                }
            }
        }
    }

    /// A pooled connection for `key`, or the key back when there is none to use.
    fn reuse(&self, key: PoolKey) -> Result<Conn, PoolKey> {
        let mut state = lock(&self.pool.state);
        if key.protocol.is_http2() {
            let Some(sender) = state.multiplexed.get(&key) else {
                return Err(key);
            };
            if sender.is_closed() {
                state.multiplexed.remove(&key);
                return Err(key);
            }
            return Ok(Conn {
                kind: ConnKind::Http2(sender.clone()),
                reused: true,
            });
        }
        let Some(idle) = state.idle.get_mut(&key) else {
            return Err(key);
        };
        // Most recently used first: it is the least likely to have been closed by the
        // upstream's own keep-alive timeout.
        while let Some(mut candidate) = idle.pop() {
            if candidate.since.elapsed() < self.pool.settings.idle_timeout
                && candidate.conn.is_usable()
            {
                drop(state);
                return Ok(self.direct(key, candidate.conn, true));
            }
        }
        Err(key)
    }

    async fn http1<I>(&self, key: PoolKey, io: I) -> Result<Conn, ConnectError>
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

    fn direct(&self, key: PoolKey, conn: h1::Connection, reused: bool) -> Conn {
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
        lock(&self.pool.state)
            .multiplexed
            .insert(key, sender.clone());
        Ok(Conn {
            kind: ConnKind::Http2(sender),
            reused: false,
        })
    }
}

impl Conn {
    /// Taken from the pool rather than made for this request.
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// Closes the connection when called, for a request given up on midway: an HTTP/1.1
    /// connection cannot be reused then, and it may still hold the client's body. (An
    /// HTTP/2 stream is reset by dropping its future.)
    pub(crate) fn closer(&self) -> Option<tokio::task::AbortHandle> {
        match &self.kind {
            ConnKind::Http1 { task, .. } => Some(task.clone()),
            // Closed by dropping it, with the exchange's future.
            ConnKind::Direct(..) | ConnKind::Http2(_) => None,
        }
    }

    /// Takes its requests as [`Outbound::Direct`].
    pub(crate) fn is_direct(&self) -> bool {
        matches!(self.kind, ConnKind::Direct(..))
    }

    /// Sends the request and waits for the response headers (the caller bounds the wait).
    /// A direct connection travels with the response body, back to the pool once the body
    /// has been read to its end.
    ///
    /// A direct request may go again on a new connection (`resend`) when the pooled one it
    /// went on gave nothing back: the upstream closed it as the request arrived.
    pub(crate) async fn send(
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
            // The request path builds the request its connection asks for (`is_direct`).
            // Spelled out rather than `_`, so that a new kind of either must be placed here.
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

async fn connect(endpoint: &EndpointAddress, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let attempt = async {
        match endpoint {
            EndpointAddress::Socket(addr) => TcpStream::connect(*addr).await,
            EndpointAddress::Dns { host, port } => TcpStream::connect((host.as_ref(), *port)).await,
        }
    };
    let stream = match tokio::time::timeout(timeout, attempt).await {
        Err(_) => return Err(ConnectError::TimedOut(timeout)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::Refused);
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
            return Err(ConnectError::TimedOut(timeout));
        }
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn tls_connect(
    stream: TcpStream,
    client: &TlsClient,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
    let connector = TlsConnector::from(client.config.clone());
    let handshake = connector.connect(client.name.clone(), stream);
    match tokio::time::timeout(timeout, handshake).await {
        Err(_) => Err(ConnectError::TimedOut(timeout)),
        Ok(Err(e)) => Err(ConnectError::Tls(e)),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// A client configuration: verification against the given CAs when asked, else none (the
/// ingress-nginx default, since in-cluster backends mostly present self-signed certificates).
fn client_config(
    tls: Option<&UpstreamTls>,
    h2: bool,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = crate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match tls.filter(|t| t.verify) {
        Some(tls) => {
            let mut roots = rustls::RootCertStore::empty();
            for der in &tls.ca {
                // A CA that does not parse was reported by the compile; it trusts nothing.
                let _ = roots.add(CertificateDer::from(der.clone()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// Accepts any certificate, but still checks the handshake signatures, so the connection is
/// encrypted to whoever holds the key the upstream presented.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(name: &str) -> UpstreamTls {
        UpstreamTls {
            server_name: Some(name.into()),
            ..UpstreamTls::default()
        }
    }

    fn id(resolved: &TlsResolved) -> u64 {
        resolved.as_ref().unwrap().id
    }

    #[test]
    fn tls_clients_are_shared_carried_over_and_never_confused() {
        let a = settings("a.internal");
        let mut first = TlsClients::default();
        let one = first.resolve(None, Some(&a), false, "svc-1.ns.svc");
        // The same setting, ALPN and name: the same client, wherever in the table.
        let again = first.resolve(None, Some(&a), false, "svc-2.ns.svc");
        assert!(Arc::ptr_eq(one.as_ref().unwrap(), again.as_ref().unwrap()));
        // ALPN, settings or name apart: another client, under another id.
        let others = [
            first.resolve(None, Some(&a), true, "svc-1.ns.svc"),
            first.resolve(None, None, false, "svc-1.ns.svc"),
            first.resolve(None, None, false, "svc-2.ns.svc"),
            first.resolve(None, Some(&settings("b.internal")), false, "svc-1.ns.svc"),
        ];
        let mut ids: Vec<u64> = others.iter().map(id).chain([id(&one)]).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 5);

        // The next table keeps the clients of the settings it keeps, and only those.
        let mut second = TlsClients::default();
        let kept = second.resolve(Some(&first), Some(&a), false, "svc-9.ns.svc");
        assert_eq!(id(&kept), id(&one));
        assert_eq!(second.by_setting.len(), 1);
        // A setting that skipped a table comes back as a new client, under a new id.
        let third = TlsClients::default();
        let mut fourth = TlsClients::default();
        let back = fourth.resolve(Some(&third), None, false, "svc-1.ns.svc");
        assert!(ids.iter().all(|&old| id(&back) > old));
    }

    #[test]
    fn a_name_that_cannot_be_a_tls_name_fails_each_connection_with_it() {
        let mut clients = TlsClients::default();
        let resolved = clients.resolve(None, None, false, "not a name");
        let error = resolved.unwrap_err().connect_error();
        assert!(
            matches!(&error, ConnectError::ServerName(name) if name == "not a name"),
            "{error}"
        );
    }
}
