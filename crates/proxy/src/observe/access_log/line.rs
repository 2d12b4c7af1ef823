//! One request as its access log line shows it, borrowed from the request, its response and
//! the table while it is packed, and from the packed bytes while it is formatted.

use std::time::{Duration, SystemTime};

use http::Version;

/// One request, as its log line shows it. A request's thread fills it in with values
/// borrowed from the request, its response and the table, and packs it into the thread's
/// buffer, so that logging a request allocates nothing; the writer unpacks it, borrowing
/// from that buffer.
#[derive(Debug, PartialEq)]
pub(crate) struct Line<'a> {
    /// When the request started.
    pub(crate) time: SystemTime,
    pub(crate) client_ip: &'a [u8],
    pub(crate) method: &'a [u8],
    pub(crate) host: &'a [u8],
    /// Path and query, as the client sent them.
    pub(crate) path: &'a [u8],
    /// `HTTP/1.1` and the like ([`protocol_name`]).
    pub(crate) protocol: &'a [u8],
    pub(crate) status: u16,
    /// Response body bytes.
    pub(crate) bytes_sent: u64,
    /// Request body bytes.
    pub(crate) bytes_received: u64,
    pub(crate) duration: Duration,
    /// Every endpoint tried, in order, with its status when it answered: nginx's
    /// `$upstream_addr` and `$upstream_status` (`10.0.0.1:8080, 10.0.0.2:8080`, `502, 200`).
    pub(crate) upstreams: &'a [(&'a [u8], Option<u16>)],
    pub(crate) upstream_duration: Option<Duration>,
    pub(crate) names: Names<'a>,
    pub(crate) request_id: &'a [u8],
    pub(crate) user_agent: Option<&'a [u8]>,
    pub(crate) referer: Option<&'a [u8]>,
    /// Who the request was let through as: basic authentication's user, or the one the
    /// authentication service named (nginx's `$remote_user`).
    pub(crate) user: Option<&'a [u8]>,
}

/// Where a request went, as its line names it: the route's namespace and Ingress and the
/// Service that answered, all empty when no route matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Names<'a> {
    pub(crate) namespace: &'a [u8],
    pub(crate) ingress: &'a [u8],
    pub(crate) service: &'a [u8],
    /// The route's canary served the request: the names are the canary Ingress's and
    /// Service's.
    pub(crate) canary: bool,
}

/// The protocol as a line names it.
pub(crate) fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}
