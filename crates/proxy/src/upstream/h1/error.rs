//! Why an HTTP/1.1 exchange with an upstream, or the reading of its response body, failed.

use std::io;

/// Why an HTTP/1.1 exchange with an upstream, or the reading of its response body, failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("writing the request: {0}")]
    Write(io::Error),
    #[error("reading the response: {0}")]
    Read(io::Error),
    #[error("the connection closed {0}")]
    Closed(&'static str),
    #[error("the response is not valid HTTP/1.1: {0}")]
    Parse(httparse::Error),
    #[error("the response is not valid HTTP/1.1: {0}")]
    Invalid(&'static str),
    /// Past the limit, in bytes: nginx's "upstream sent too big header".
    #[error("the response head is larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("the request body: {0}")]
    RequestBody(Box<dyn std::error::Error + Send + Sync>),
}
