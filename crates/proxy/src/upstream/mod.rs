//! Everything between the request path and the endpoints: one call to send a request and get
//! its response head (`client`), the connection pool, connecting, the TLS client settings, the
//! HTTP/1.1 codec the request's own task drives, and how failures are classified.

pub(crate) mod client;
pub(crate) mod connect;
pub(crate) mod error;
pub(crate) mod h1;
pub(crate) mod pool;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod tls;
