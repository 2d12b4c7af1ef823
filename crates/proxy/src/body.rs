//! The body of a response to a client: the upstream's, streamed through, or one Vestibule
//! wrote itself.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

/// Streamed from the upstream (framing and trailers kept) or a complete body of our own.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Either::Right(Full::new(bytes.into()))
}
