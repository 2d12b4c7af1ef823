//! HTTP/1.1 to upstreams, driven by the request's own task rather than a connection task of
//! its own: the request head and body go out, the response head is parsed from the
//! connection's buffer, and the response body is read from the connection as the client side
//! asks for it. Upgrades go through hyper's client instead (`upstream::client`), which hands
//! the connection over to the tunnel.

pub(crate) mod body;
pub(crate) mod connection;
pub(crate) mod error;
pub(crate) mod exchange;
pub(crate) mod request;
pub(crate) mod response;
