//! Bodies in both directions: the client's request body on its way up, the response body on
//! its way down, the idle timer both are held to, and why a body stopped.

pub(crate) mod error;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod timed;
