//! Read-only views of the data plane's live state, for the admin dashboard: request totals
//! per label set and the passive health of every endpoint. Taking one only loads atomics
//! that requests keep anyway, so a reader never holds a request up and, when no one reads,
//! nothing is spent.

use std::time::Duration;

/// One metrics label set's requests since the process started (or since the set first
/// served), summed over methods. A reader turns two of these into rates.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficTotals {
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    /// Only with `--metrics-per-host`.
    pub host: Option<String>,
    pub requests: u64,
    /// Answered 4xx.
    pub client_errors: u64,
    /// Answered 5xx (or a status no client can read).
    pub server_errors: u64,
    /// The summed duration of every request counted.
    pub duration_sum: Duration,
    /// Requests by duration bucket: (upper bound in seconds, requests in this bucket only);
    /// the last bound is infinite.
    pub duration_buckets: Vec<(f64, u64)>,
}

/// One cluster (a Service port) of the installed table and how its endpoints fare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHealth {
    pub namespace: String,
    pub service: String,
    pub port: u16,
    /// Routes of the same table that send to it (their canaries not counted).
    pub routes: usize,
    pub endpoints: Vec<EndpointHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    pub address: String,
    /// Left out of balancing for now after failed connections ([`crate::DataPlane`]'s
    /// passive health); it comes back by itself.
    pub ejected: bool,
    /// Requests under way to it.
    pub in_flight: u32,
}
