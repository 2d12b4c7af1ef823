//! The connections kept between requests: idle HTTP/1.1 keep-alive connections per endpoint,
//! most recently used first, under an idle timeout and a cap, closed by a sweeper when they
//! time out or the upstream closes them; and one shared HTTP/2 connection per endpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::client::conn::http2;
use tokio::time::Instant;
use vestibule_model::{EndpointAddress, UpstreamProtocol};

use super::h1::connection::Connection;
use crate::body::request::UpstreamBody;

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

/// Which connections may serve a request: the endpoint, the protocol, and the TLS client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub(super) endpoint: EndpointAddress,
    pub(super) protocol: UpstreamProtocol,
    /// The TLS client's id, when TLS: a connection made with one setting is never taken for
    /// another.
    pub(super) tls: Option<u64>,
}

/// The pool's keys come from the configuration, never from a client, so they need no
/// flooding-resistant hash: SipHash cost more than the rest of a pool lookup.
type KeyHasher = foldhash::fast::RandomState;

/// A request-driven HTTP/1.1 connection waiting in the pool, and since when.
#[derive(Debug)]
struct Idle {
    conn: Connection,
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

impl Pool {
    pub(super) fn new(settings: &UpstreamSettings) -> Arc<Pool> {
        Arc::new(Pool {
            settings: settings.clone(),
            state: Mutex::default(),
        })
    }

    /// An idle HTTP/1.1 connection for `key` that can take a request, if there is one.
    #[inline]
    pub(super) fn take_idle(&self, key: &PoolKey) -> Option<Connection> {
        let mut state = lock(&self.state);
        let idle = state.idle.get_mut(key)?;
        // Most recently used first: it is the least likely to have been closed by the
        // upstream's own keep-alive timeout.
        while let Some(mut candidate) = idle.pop() {
            if candidate.since.elapsed() < self.settings.idle_timeout && candidate.conn.is_usable()
            {
                return Some(candidate.conn);
            }
        }
        None
    }

    /// The shared HTTP/2 connection for `key`, while it is open.
    pub(super) fn multiplexed(&self, key: &PoolKey) -> Option<http2::SendRequest<UpstreamBody>> {
        let mut state = lock(&self.state);
        let sender = state.multiplexed.get(key)?;
        if sender.is_closed() {
            state.multiplexed.remove(key);
            return None;
        }
        Some(sender.clone())
    }

    /// Shares a new HTTP/2 connection for the next requests to `key`.
    pub(super) fn share(&self, key: PoolKey, sender: http2::SendRequest<UpstreamBody>) {
        lock(&self.state).multiplexed.insert(key, sender);
    }
}

/// Where a direct HTTP/1.1 connection goes back to once its response has all been read.
#[derive(Debug)]
pub(crate) struct Return {
    pub(super) key: PoolKey,
    pub(super) pool: Arc<Pool>,
}

impl Return {
    pub(crate) fn park(self, conn: Connection) {
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

fn lock(state: &Mutex<PoolState>) -> MutexGuard<'_, PoolState> {
    // A panic while holding the lock leaves only connection lists behind; they stay usable.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
