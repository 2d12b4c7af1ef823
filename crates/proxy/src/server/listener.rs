//! Listening sockets: binding, accepting connections (backing off when the process runs out
//! of file descriptors), and draining on shutdown: stop accepting, let open connections finish
//! their requests, give up at the deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::client::ClientSide;
use super::connection::{Server, accept_connection};
use super::tls::TlsConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound listening socket, not yet serving.
pub struct Listener {
    tcp: TcpListener,
    addr: SocketAddr,
    tls: Option<TlsConfig>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.addr)
            .field("scheme", &self.scheme())
            .finish()
    }
}

impl Listener {
    /// A clear-text listener.
    pub async fn bind_http(addr: SocketAddr) -> Result<Listener, ServeError> {
        Self::bind(addr, None).await
    }

    /// A listener that terminates TLS with `config` (see [`crate::server_config`]).
    pub async fn bind_https(addr: SocketAddr, config: TlsConfig) -> Result<Listener, ServeError> {
        Self::bind(addr, Some(config)).await
    }

    async fn bind(addr: SocketAddr, tls: Option<TlsConfig>) -> Result<Listener, ServeError> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let addr = tcp
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let listener = Listener { tcp, addr, tls };
        // Logged at bind: from here on the kernel queues connections, even while the first
        // configuration is still being read.
        info!(listener = listener.scheme().name(), address = %addr, "listening");
        Ok(listener)
    }

    pub fn scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }

    /// The address actually bound (with the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled, then drains: returns once every connection has
    /// finished, or at `drain_deadline`, whichever comes first. Returns the number of
    /// connections still open at that point.
    pub async fn serve(
        self,
        server: Arc<Server>,
        shutdown: CancellationToken,
        drain_deadline: Duration,
    ) -> usize {
        let tracker = TaskTracker::new();
        let scheme = self.scheme();
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.tcp.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let client =
                        ClientSide::new(peer.ip(), self.addr.port(), scheme == Scheme::Https);
                    tracker.spawn(accept_connection(
                        server.clone(),
                        stream,
                        self.tls.clone(),
                        client,
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // Usually out of file descriptors: wait for some to be freed rather than
                    // spin on the error.
                    warn!(address = %self.addr, error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        drop(self.tcp);
        tracker.close();
        let open = tracker.len();
        info!(address = %self.addr, open_connections = open, "stopped accepting; draining");
        if tokio::time::timeout(drain_deadline, tracker.wait())
            .await
            .is_err()
        {
            let left = tracker.len();
            warn!(address = %self.addr, open_connections = left, "drain deadline reached");
            return left;
        }
        0
    }
}
