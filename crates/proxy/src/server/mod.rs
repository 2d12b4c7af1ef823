//! The client side: listening sockets, each connection from accept to close (PROXY protocol,
//! TLS termination or passthrough, HTTP/1.1 and HTTP/2), the clocks on a connection's request heads and idle
//! time, and who the client is (its address, trusted proxies).

pub(crate) mod client;
pub(crate) mod client_io;
pub(crate) mod client_ip;
pub(crate) mod connection;
pub(crate) mod listener;
pub(crate) mod passthrough;
pub(crate) mod proxy_protocol;
pub(crate) mod tls;
