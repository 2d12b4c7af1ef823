//! Why a streamed body stopped, in either direction.

use std::time::Duration;

use crate::upstream::h1::error::H1Error;

/// Why a streamed body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error(transparent)]
    Upstream(#[from] H1Error),
}
