//! The data plane: listeners that accept HTTP/1.1 and HTTP/2, the per-request path from the
//! published routing table to an endpoint and back, round-robin balancing, pooled upstream
//! connections, and the one module that turns failures into responses.
//!
//! A request loads the installed table once, without a lock, and finishes on that table even
//! if a new one is installed meanwhile.

mod balance;
mod body;
mod dataplane;
mod forward;
mod headers;
mod listener;
mod respond;
mod upstream;

pub use body::ProxyBody;
pub use dataplane::DataPlane;
pub use listener::{Listener, Scheme, ServeError};
pub use respond::ProxyError;
pub use upstream::UpstreamSettings;

use std::time::Duration;

/// Settings of the data plane that are fixed for the process's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    pub upstream: UpstreamSettings,
    /// Time a client has to send a request's headers.
    pub client_header_timeout: Duration,
    /// HTTP/2 streams one client connection may have open at once.
    pub http2_max_concurrent_streams: u32,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            upstream: UpstreamSettings::default(),
            client_header_timeout: Duration::from_secs(60),
            http2_max_concurrent_streams: 128,
        }
    }
}
