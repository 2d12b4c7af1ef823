//! The data plane: listeners that accept HTTP/1.1 and HTTP/2 in clear text and over TLS
//! (`server`), the request path from the published routing table to an endpoint and back as
//! named phases (`request`), the upstream connections (`upstream`), balancing (`balance`),
//! the request record, metrics and access log (`observe`), and the one module that turns
//! failures (and redirects) into responses (`respond`).
//!
//! A request loads the installed table once, without a lock, and finishes on that table even
//! if a new one is installed meanwhile.

mod balance;
mod body;
mod crypto;
mod dataplane;
mod fields;
#[doc(hidden)]
pub mod fuzzing;
mod observe;
mod request;
mod respond;
mod server;
mod settings;
mod upstream;

pub use body::error::BodyError;
pub use body::response::ProxyBody;
pub use crypto::TlsError;
pub use dataplane::DataPlane;
pub use observe::Observability;
pub use observe::access_log::{AccessLog, AccessLogFormat};
pub use observe::inspect::{ClusterHealth, EndpointHealth, TrafficTotals};
pub use observe::metrics::{Metrics, MetricsOptions};
pub use request::limit::{InFlight, RateLimiter, Refused};
pub use respond::ProxyError;
pub use server::client_ip::{TrustedProxies, TrustedProxiesError};
pub use server::connection::Server;
pub use server::listener::{Listener, Scheme, ServeError};
pub use server::tls::{TlsConfig, self_signed_certificate, server_config};
pub use settings::{ProxySettings, hsts_header};
pub use upstream::h1::error::H1Error;
pub use upstream::pool::UpstreamSettings;
