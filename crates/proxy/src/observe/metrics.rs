//! Prometheus metrics of the data plane, in the spirit of ingress-nginx's.
//!
//! The request path only ever touches atomics behind handles resolved when a table is
//! installed ([`RouteStats`]), so recording takes no lock and allocates nothing after a
//! series' first sample. Everything is turned into exposition text at scrape time by a
//! [`Collector`], and label values come only from the compiled table, never from a request,
//! so the number of series stays bounded by the configuration.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder, MetricEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::observe::inspect::TrafficTotals;
use crate::upstream::error::UpstreamErrorKind;

/// Choices that change which series exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsOptions {
    /// Adds a `host` label to the request metrics. Off by default because every host of
    /// every Ingress then becomes its own series.
    pub per_host: bool,
}

/// The data plane's metrics for the whole process.
pub struct Metrics {
    per_host: bool,
    /// Control-plane side only (installs and scrapes), never locked by a request.
    routes: Mutex<HashMap<RouteLabels, Arc<RouteStats>>>,
    /// Indexed by [`Listener`] then [`Protocol`]; an `Arc` each so a guard can outlive any
    /// borrow of `Metrics`.
    connections: [[Arc<ConnectionCell>; 3]; 2],
    tls_handshakes: [AtomicU64; 3],
    /// Connections answered 408 by the client header timeout, by [`Listener`].
    header_timeouts: [AtomicU64; 2],
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The label sets can number in the thousands: a count says enough.
        f.debug_struct("Metrics")
            .field("per_host", &self.per_host)
            .field("label_sets", &self.lock_routes().len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(options: MetricsOptions) -> Arc<Metrics> {
        Arc::new(Metrics {
            per_host: options.per_host,
            routes: Mutex::new(HashMap::new()),
            connections: Default::default(),
            tls_handshakes: Default::default(),
            header_timeouts: Default::default(),
        })
    }

    /// The stats for a label set, created on first use and shared by every route with equal
    /// labels, so counters carry over from one installed table to the next. `host` is
    /// dropped unless [`MetricsOptions::per_host`].
    ///
    /// The caller keeps the `Arc` for as long as it may record: [`Metrics::prune`] forgets
    /// sets nobody else holds.
    pub(crate) fn route_stats(&self, mut labels: RouteLabels) -> Arc<RouteStats> {
        if !self.per_host {
            labels.host = None;
        }
        let mut routes = self.lock_routes();
        let stats = routes
            .entry(labels)
            .or_insert_with_key(|labels| Arc::new(RouteStats::new(labels.clone())));
        Arc::clone(stats)
    }

    /// Forgets the label sets no route refers to any more, so series of deleted Ingresses
    /// stop being exported. Meant for after an install; a set still held by a table that
    /// in-flight requests finish on, or by a scrape running meanwhile, goes at a later call.
    pub(crate) fn prune(&self) {
        self.lock_routes()
            .retain(|_, stats| Arc::strong_count(stats) > 1);
    }

    /// Counts a client connection as open until the guard is dropped.
    pub(crate) fn connection(&self, listener: Listener, protocol: Protocol) -> ConnectionGuard {
        let cell = &self.connections[listener as usize][protocol as usize];
        cell.total.fetch_add(1, Relaxed);
        cell.open.fetch_add(1, Relaxed);
        ConnectionGuard {
            cell: Arc::clone(cell),
        }
    }

    pub(crate) fn tls_handshake(&self, outcome: Handshake) {
        self.tls_handshakes[outcome as usize].fetch_add(1, Relaxed);
    }

    /// A connection closed with 408: a request's headers did not arrive in time. Not a
    /// request of any route, so counted here rather than in the request metrics.
    pub(crate) fn header_timeout(&self, listener: Listener) {
        self.header_timeouts[listener as usize].fetch_add(1, Relaxed);
    }

    /// Adds the data plane's collector to a registry. The names carry their `vestibule_`
    /// prefix themselves, like the controller's, so the registry should have none.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register_collector(Box::new(ProxyCollector(Arc::clone(self))));
    }

    fn lock_routes(&self) -> MutexGuard<'_, HashMap<RouteLabels, Arc<RouteStats>>> {
        // The map is never left half-updated by a panic, so a poisoned lock is still sound.
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Each label set's request totals, in label order.
    pub fn traffic(&self) -> Vec<TrafficTotals> {
        self.snapshot().iter().map(|stats| stats.totals()).collect()
    }

    /// The label sets in a stable order, copied out so a scrape does not hold up installs.
    fn snapshot(&self) -> Vec<Arc<RouteStats>> {
        let mut routes: Vec<Arc<RouteStats>> = self.lock_routes().values().cloned().collect();
        routes.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        routes
    }
}

/// What identifies a route in the metrics. Values come from the compiled table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RouteLabels {
    pub(crate) namespace: Box<str>,
    pub(crate) ingress: Box<str>,
    pub(crate) service: Box<str>,
    pub(crate) host: Option<Box<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    Http,
    Https,
}

impl Listener {
    const ALL: [(Listener, &'static str); 2] =
        [(Listener::Http, "http"), (Listener::Https, "https")];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
    /// TLS spliced to a backend untouched (`ssl-passthrough`).
    Passthrough,
}

impl Protocol {
    const ALL: [(Protocol, &'static str); 3] = [
        (Protocol::Http1, "http1"),
        (Protocol::Http2, "http2"),
        (Protocol::Passthrough, "passthrough"),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    Ok,
    Failed,
    TimedOut,
}

const HANDSHAKE_NAMES: [&str; 3] = ["ok", "failed", "timed_out"];

/// The request method, folded so that arbitrary extension methods cannot add series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MethodClass {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Other,
}

const METHOD_NAMES: [&str; 8] = [
    "get", "head", "post", "put", "delete", "patch", "options", "other",
];

impl MethodClass {
    pub(crate) fn of(method: &Method) -> MethodClass {
        match *method {
            Method::GET => MethodClass::Get,
            Method::HEAD => MethodClass::Head,
            Method::POST => MethodClass::Post,
            Method::PUT => MethodClass::Put,
            Method::DELETE => MethodClass::Delete,
            Method::PATCH => MethodClass::Patch,
            Method::OPTIONS => MethodClass::Options,
            _ => MethodClass::Other,
        }
    }
}

const UPSTREAM_ERROR_NAMES: [&str; 5] = ["refused", "timeout", "reset", "tls", "other"];

const STATUS_NAMES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100) - 1,
        // Not a status a client can make sense of: as bad as a server error.
        _ => 4,
    }
}

/// Everything recorded for one label set.
pub(crate) struct RouteStats {
    labels: RouteLabels,
    requests: [[AtomicU64; 5]; 8],
    /// Boxed and created on a cell's first request, so thousands of routes cost little until
    /// traffic arrives; most routes only ever see a few method and status combinations.
    durations: [[OnceLock<Box<Histogram>>; 5]; 8],
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    upstream_connect: OnceLock<Box<Histogram>>,
    upstream_response: OnceLock<Box<Histogram>>,
    upstream_errors: [AtomicU64; 5],
    retries: AtomicU64,
    ejections: AtomicU64,
    /// Access-control decisions, by kind and outcome.
    auth: [[AtomicU64; 3]; 3],
    /// Time the external authentication service took to answer.
    auth_service: OnceLock<Box<Histogram>>,
}

/// Which access control decided.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AuthKind {
    Basic,
    External,
    Certificate,
}

/// What it decided: let through, refused (401, 403, 400), or could not decide (500).
#[derive(Debug, Clone, Copy)]
pub(crate) enum AuthOutcome {
    Allowed,
    Denied,
    Error,
}

const AUTH_KIND_NAMES: [&str; 3] = ["basic", "external", "certificate"];
const AUTH_OUTCOME_NAMES: [&str; 3] = ["allowed", "denied", "error"];

impl fmt::Debug for RouteStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteStats")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl RouteStats {
    fn new(labels: RouteLabels) -> RouteStats {
        RouteStats {
            labels,
            requests: Default::default(),
            durations: Default::default(),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            upstream_connect: OnceLock::new(),
            upstream_response: OnceLock::new(),
            upstream_errors: Default::default(),
            retries: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            auth: Default::default(),
            auth_service: OnceLock::new(),
        }
    }

    pub(crate) fn auth(&self, kind: AuthKind, outcome: AuthOutcome) {
        self.auth[kind as usize][outcome as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn auth_service(&self, duration: Duration) {
        histogram(&self.auth_service).observe(duration);
    }

    /// One answered request. Statuses outside 100..=599 count as 5xx.
    pub(crate) fn request(&self, method: MethodClass, status: u16, duration: Duration) {
        let (method, class) = (method as usize, status_class(status));
        self.requests[method][class].fetch_add(1, Relaxed);
        histogram(&self.durations[method][class]).observe(duration);
    }

    /// Body bytes received from and sent to the client.
    pub(crate) fn bytes(&self, received: u64, sent: u64) {
        if received > 0 {
            self.request_bytes.fetch_add(received, Relaxed);
        }
        if sent > 0 {
            self.response_bytes.fetch_add(sent, Relaxed);
        }
    }

    pub(crate) fn upstream_connect(&self, duration: Duration) {
        histogram(&self.upstream_connect).observe(duration);
    }

    /// Time until the response headers arrived.
    pub(crate) fn upstream_response(&self, duration: Duration) {
        histogram(&self.upstream_response).observe(duration);
    }

    pub(crate) fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    pub(crate) fn ejection(&self) {
        self.ejections.fetch_add(1, Relaxed);
    }

    fn series<'a>(
        &'a self,
        per_host: bool,
        extra: &'a [(&'static str, &'static str)],
    ) -> SeriesLabels<'a> {
        SeriesLabels {
            route: &self.labels,
            per_host,
            extra,
        }
    }

    fn totals(&self) -> TrafficTotals {
        let count = |class: usize| -> u64 {
            self.requests
                .iter()
                .map(|by_class| by_class[class].load(Relaxed))
                .sum()
        };
        let mut buckets = [0u64; 12];
        let mut sum_micros = 0u64;
        for histogram in self.durations.iter().flatten().filter_map(OnceLock::get) {
            for (total, bucket) in buckets.iter_mut().zip(&histogram.buckets) {
                *total = total.saturating_add(bucket.load(Relaxed));
            }
            sum_micros = sum_micros.saturating_add(histogram.sum_micros.load(Relaxed));
        }
        TrafficTotals {
            namespace: self.labels.namespace.to_string(),
            ingress: self.labels.ingress.to_string(),
            service: self.labels.service.to_string(),
            host: self.labels.host.as_deref().map(str::to_owned),
            requests: (0..STATUS_NAMES.len()).map(count).sum(),
            client_errors: count(3),
            server_errors: count(4),
            duration_sum: Duration::from_micros(sum_micros),
            duration_buckets: BOUNDS
                .iter()
                .chain([&f64::INFINITY])
                .copied()
                .zip(buckets)
                .collect(),
        }
    }

    fn served_any(&self) -> bool {
        self.requests
            .iter()
            .flatten()
            .any(|count| count.load(Relaxed) > 0)
    }
}

fn histogram(cell: &OnceLock<Box<Histogram>>) -> &Histogram {
    cell.get_or_init(Box::default)
}

/// Upper bounds of the buckets, ingress-nginx's and Prometheus' usual ones.
const BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// [`BOUNDS`] as durations, so placing a sample is integer comparisons.
const BOUND_DURATIONS: [Duration; 11] = [
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2500),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

#[derive(Debug, Default)]
struct Histogram {
    /// Not cumulative, so a sample is a single increment; the last bucket is `+Inf`. The
    /// count is their sum rather than a counter of its own, so `_count` always equals the
    /// `+Inf` bucket even when a scrape races a sample.
    buckets: [AtomicU64; 12],
    /// Microseconds rather than an `f64`, so adding is one `fetch_add` instead of a CAS loop;
    /// it would take half a million years of summed time to overflow.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, duration: Duration) {
        // Bounds are inclusive (`le`): the first bound not below the sample.
        let bucket = BOUND_DURATIONS.partition_point(|bound| *bound < duration);
        self.buckets[bucket].fetch_add(1, Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let mut buckets = [(f64::INFINITY, 0); 12];
        let mut count = 0;
        for ((slot, bound), bucket) in buckets
            .iter_mut()
            .zip(BOUNDS.iter().chain([&f64::INFINITY]))
            .zip(&self.buckets)
        {
            let n = bucket.load(Relaxed);
            *slot = (*bound, n);
            count += n;
        }
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

#[derive(Debug, Default)]
struct ConnectionCell {
    open: AtomicI64,
    total: AtomicU64,
}

/// A client connection counted as open; dropping it counts the connection closed.
#[derive(Debug)]
#[must_use = "the connection counts as open only while the guard lives"]
pub(crate) struct ConnectionGuard {
    cell: Arc<ConnectionCell>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.cell.open.fetch_sub(1, Relaxed);
    }
}

/// A route's labels followed by a metric's own.
struct SeriesLabels<'a> {
    route: &'a RouteLabels,
    per_host: bool,
    extra: &'a [(&'static str, &'static str)],
}

impl EncodeLabelSet for SeriesLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        let route = self.route;
        EncodeLabel::encode(&("namespace", &*route.namespace), encoder.encode_label())?;
        EncodeLabel::encode(&("ingress", &*route.ingress), encoder.encode_label())?;
        EncodeLabel::encode(&("service", &*route.service), encoder.encode_label())?;
        if self.per_host {
            // Present on every series when asked for, empty for requests without a host,
            // so all series of a metric have the same label names.
            let host = route.host.as_deref().unwrap_or("");
            EncodeLabel::encode(&("host", host), encoder.encode_label())?;
        }
        for label in self.extra {
            EncodeLabel::encode(label, encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Registered in the admin server's registry; encodes whatever has been recorded so far.
#[derive(Debug)]
struct ProxyCollector(Arc<Metrics>);

impl Collector for ProxyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let metrics = &*self.0;
        let per_host = metrics.per_host;
        let routes = metrics.snapshot();

        let mut metric = encoder.encode_descriptor(
            "vestibule_http_requests",
            "Requests answered, by route, method and status class.",
            None,
            MetricType::Counter,
        )?;
        for route in &routes {
            for (method, counts) in METHOD_NAMES.into_iter().zip(&route.requests) {
                for (status, count) in STATUS_NAMES.into_iter().zip(counts) {
                    let count = count.load(Relaxed);
                    if count > 0 {
                        let extra = [("method", method), ("status", status)];
                        let labels = route.series(per_host, &extra);
                        ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
                    }
                }
            }
        }

        let mut metric = encoder.encode_descriptor(
            "vestibule_http_request_duration_seconds",
            "Time taken to answer requests, by route, method and status class.",
            None,
            MetricType::Histogram,
        )?;
        for route in &routes {
            for (method, cells) in METHOD_NAMES.into_iter().zip(&route.durations) {
                for (status, cell) in STATUS_NAMES.into_iter().zip(cells) {
                    if let Some(histogram) = cell.get() {
                        let extra = [("method", method), ("status", status)];
                        let labels = route.series(per_host, &extra);
                        histogram.encode(metric.encode_family(&labels)?)?;
                    }
                }
            }
        }

        // A route that has answered shows zero bytes rather than no series.
        let bytes = |route: &RouteStats, counter: &AtomicU64| {
            let bytes = counter.load(Relaxed);
            (bytes > 0 || route.served_any()).then_some(bytes)
        };
        route_counter(
            &mut encoder,
            "vestibule_http_request_bytes",
            "Request body bytes received from clients, by route.",
            &routes,
            per_host,
            |route| bytes(route, &route.request_bytes),
        )?;
        route_counter(
            &mut encoder,
            "vestibule_http_response_bytes",
            "Response body bytes sent to clients, by route.",
            &routes,
            per_host,
            |route| bytes(route, &route.response_bytes),
        )?;

        route_histogram(
            &mut encoder,
            "vestibule_upstream_connect_duration_seconds",
            "Time taken to open connections to endpoints, by route.",
            &routes,
            per_host,
            |route| &route.upstream_connect,
        )?;
        route_histogram(
            &mut encoder,
            "vestibule_upstream_response_duration_seconds",
            "Time from sending a request to an endpoint to receiving its response headers, \
             by route.",
            &routes,
            per_host,
            |route| &route.upstream_response,
        )?;

        let mut metric = encoder.encode_descriptor(
            "vestibule_upstream_errors",
            "Failed attempts to get a response from an endpoint, by route and kind.",
            None,
            MetricType::Counter,
        )?;
        for route in &routes {
            for (kind, count) in UPSTREAM_ERROR_NAMES.into_iter().zip(&route.upstream_errors) {
                let count = count.load(Relaxed);
                if count > 0 {
                    let extra = [("kind", kind)];
                    let labels = route.series(per_host, &extra);
                    ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
                }
            }
        }

        let mut metric = encoder.encode_descriptor(
            "vestibule_auth_decisions",
            "Access-control decisions, by route, kind (basic, external, certificate) and \
             outcome (allowed, denied, error).",
            None,
            MetricType::Counter,
        )?;
        for route in &routes {
            for (kind, counts) in AUTH_KIND_NAMES.into_iter().zip(&route.auth) {
                for (outcome, count) in AUTH_OUTCOME_NAMES.into_iter().zip(counts) {
                    let count = count.load(Relaxed);
                    if count > 0 {
                        let extra = [("kind", kind), ("outcome", outcome)];
                        let labels = route.series(per_host, &extra);
                        ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
                    }
                }
            }
        }
        route_histogram(
            &mut encoder,
            "vestibule_auth_service_duration_seconds",
            "Time the external authentication service (auth-url) took to answer, by route.",
            &routes,
            per_host,
            |route| &route.auth_service,
        )?;

        let touched = |count: u64| (count > 0).then_some(count);
        route_counter(
            &mut encoder,
            "vestibule_upstream_retries",
            "Requests sent again to another endpoint after a failed attempt, by route.",
            &routes,
            per_host,
            |route| touched(route.retries.load(Relaxed)),
        )?;
        route_counter(
            &mut encoder,
            "vestibule_upstream_ejections",
            "Endpoints taken out of rotation by passive health checking, by route.",
            &routes,
            per_host,
            |route| touched(route.ejections.load(Relaxed)),
        )?;

        let connection_series = || {
            Listener::ALL
                .into_iter()
                .flat_map(|(listener, listener_name)| {
                    Protocol::ALL
                        .into_iter()
                        .filter_map(move |(protocol, protocol_name)| {
                            let cell = &metrics.connections[listener as usize][protocol as usize];
                            let labels = [("listener", listener_name), ("protocol", protocol_name)];
                            // Combinations never seen (h2c, say) stay out of the exposition.
                            (cell.total.load(Relaxed) > 0).then_some((labels, cell))
                        })
                })
        };
        let mut metric = encoder.encode_descriptor(
            "vestibule_connections_open",
            "Client connections open, by listener and protocol.",
            None,
            MetricType::Gauge,
        )?;
        for (labels, cell) in connection_series() {
            ConstGauge::new(cell.open.load(Relaxed)).encode(metric.encode_family(&labels)?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "vestibule_connections",
            "Client connections accepted, by listener and protocol.",
            None,
            MetricType::Counter,
        )?;
        for (labels, cell) in connection_series() {
            ConstCounter::new(cell.total.load(Relaxed)).encode(metric.encode_family(&labels)?)?;
        }

        let mut metric = encoder.encode_descriptor(
            "vestibule_tls_handshakes",
            "TLS handshakes with clients, by outcome.",
            None,
            MetricType::Counter,
        )?;
        for (outcome, count) in HANDSHAKE_NAMES.into_iter().zip(&metrics.tls_handshakes) {
            let count = count.load(Relaxed);
            if count > 0 {
                let labels = [("outcome", outcome)];
                ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
            }
        }

        let mut metric = encoder.encode_descriptor(
            "vestibule_client_header_timeouts",
            "Client connections answered 408 and closed because a request's headers did not \
             arrive within the client header timeout, by listener.",
            None,
            MetricType::Counter,
        )?;
        // Both listeners always, at zero too: a rate over a series that appears only at
        // its first event misses that event.
        for (listener, name) in Listener::ALL {
            let count = metrics.header_timeouts[listener as usize].load(Relaxed);
            let labels = [("listener", name)];
            ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// A counter with only the route's labels; `value` gives `None` for a series to leave out.
fn route_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    routes: &[Arc<RouteStats>],
    per_host: bool,
    value: impl Fn(&RouteStats) -> Option<u64>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for route in routes {
        if let Some(value) = value(route) {
            let labels = route.series(per_host, &[]);
            ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// A histogram with only the route's labels, for the routes that have recorded into it.
fn route_histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    routes: &[Arc<RouteStats>],
    per_host: bool,
    cell: impl Fn(&RouteStats) -> &OnceLock<Box<Histogram>>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for route in routes {
        if let Some(histogram) = cell(route).get() {
            histogram.encode(metric.encode_family(&route.series(per_host, &[]))?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn labels(namespace: &str, ingress: &str, service: &str, host: Option<&str>) -> RouteLabels {
        RouteLabels {
            namespace: namespace.into(),
            ingress: ingress.into(),
            service: service.into(),
            host: host.map(Into::into),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn traffic_totals_sum_methods_and_split_statuses() {
        let metrics = Metrics::new(MetricsOptions::default());
        let shop = metrics.route_stats(labels("default", "shop", "web", Some("a.example")));
        shop.request(MethodClass::Get, 200, ms(3));
        shop.request(MethodClass::Post, 201, ms(30));
        shop.request(MethodClass::Get, 404, ms(3));
        shop.request(MethodClass::Get, 503, ms(2000));
        shop.request(MethodClass::Other, 700, ms(20_000));
        let idle = metrics.route_stats(labels("default", "idle", "web", None));
        let traffic = metrics.traffic();
        assert_eq!(traffic.len(), 2);
        let totals = traffic.iter().find(|t| t.ingress == "shop").unwrap();
        assert_eq!(
            (totals.requests, totals.client_errors, totals.server_errors),
            (5, 1, 2),
            "a status no client can read counts as a server error"
        );
        assert_eq!(totals.host, None, "hosts only with per_host");
        assert_eq!(totals.duration_sum, ms(3 + 30 + 3 + 2000 + 20_000));
        let counts: Vec<u64> = totals.duration_buckets.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, [2, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 1]);
        assert!(totals.duration_buckets[11].0.is_infinite());
        let idle_totals = traffic.iter().find(|t| t.ingress == "idle").unwrap();
        assert_eq!(idle_totals.requests, 0);
        drop((shop, idle));
    }

    /// The samples of an exposition: name, labels, value.
    struct Exposition {
        text: String,
        samples: Vec<(String, BTreeMap<String, String>, f64)>,
    }

    fn scrape(metrics: &Arc<Metrics>) -> Exposition {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(parse_sample)
            .collect();
        Exposition { text, samples }
    }

    fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value = match value {
            "+Inf" => f64::INFINITY,
            value => value.parse().unwrap(),
        };
        let Some((name, rest)) = series.split_once('{') else {
            return (series.to_owned(), BTreeMap::new(), value);
        };
        let mut labels = BTreeMap::new();
        let mut rest = rest.strip_suffix('}').unwrap();
        while !rest.is_empty() {
            let (key, after) = rest.split_once("=\"").unwrap();
            let (value, after) = after.split_once('"').unwrap();
            labels.insert(key.to_owned(), value.to_owned());
            rest = after.strip_prefix(',').unwrap_or(after);
        }
        (name.to_owned(), labels, value)
    }

    impl Exposition {
        /// The value of the series with exactly these labels.
        fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
            let wanted: BTreeMap<String, String> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let mut found = self
                .samples
                .iter()
                .filter(|(n, l, _)| n == name && *l == wanted)
                .map(|(_, _, v)| *v);
            let value = found.next();
            assert_eq!(
                found.next(),
                None,
                "{name} {labels:?} twice in\n{}",
                self.text
            );
            value
        }

        fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
            self.get(name, labels)
                .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{}", self.text))
        }

        fn count(&self, name: &str) -> usize {
            self.samples.iter().filter(|(n, _, _)| n == name).count()
        }

        /// The buckets of one histogram series, by `le`, and its count and sum.
        fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> (Vec<(String, f64)>, f64, f64) {
            let wanted: BTreeMap<String, String> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let buckets = self
                .samples
                .iter()
                .filter(|(n, _, _)| *n == format!("{name}_bucket"))
                .filter_map(|(_, l, v)| {
                    let mut l = l.clone();
                    let le = l.remove("le")?;
                    (l == wanted).then_some((le, *v))
                })
                .collect();
            (
                buckets,
                self.value(&format!("{name}_count"), labels),
                self.value(&format!("{name}_sum"), labels),
            )
        }
    }

    const ROUTE: [(&str, &str); 3] = [
        ("namespace", "shop"),
        ("ingress", "web"),
        ("service", "api"),
    ];

    fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        ROUTE.iter().copied().chain(extra.iter().copied()).collect()
    }

    fn cumulative(buckets: &[u64; 12]) -> Vec<(String, f64)> {
        let les = [
            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0",
            "+Inf",
        ];
        let mut total = 0;
        les.iter()
            .zip(buckets)
            .map(|(le, n)| {
                total += n;
                ((*le).to_owned(), total as f64)
            })
            .collect()
    }

    #[test]
    fn requests_by_method_and_status_class() {
        let metrics = Metrics::new(MetricsOptions::default());
        let stats = metrics.route_stats(labels("shop", "web", "api", Some("shop.example")));
        stats.request(MethodClass::Get, 200, ms(3));
        stats.request(MethodClass::Get, 204, ms(20));
        stats.request(MethodClass::Get, 200, ms(2000));
        stats.request(MethodClass::Post, 503, ms(300));
        stats.request(MethodClass::Other, 404, ms(1));
        // Outside 100..=599: counted as server errors.
        stats.request(MethodClass::Put, 600, ms(1));
        stats.request(MethodClass::Put, 42, ms(1));
        let out = scrape(&metrics);

        let requests = "vestibule_http_requests_total";
        let get_2xx = with(&[("method", "get"), ("status", "2xx")]);
        assert_eq!(out.value(requests, &get_2xx), 3.0);
        let post_5xx = with(&[("method", "post"), ("status", "5xx")]);
        assert_eq!(out.value(requests, &post_5xx), 1.0);
        let other_4xx = with(&[("method", "other"), ("status", "4xx")]);
        assert_eq!(out.value(requests, &other_4xx), 1.0);
        let put_5xx = with(&[("method", "put"), ("status", "5xx")]);
        assert_eq!(out.value(requests, &put_5xx), 2.0);
        // Untouched cells, and the host label without per_host, are absent.
        assert_eq!(out.count(requests), 4, "{}", out.text);
        assert!(!out.text.contains("host="), "{}", out.text);

        let duration = "vestibule_http_request_duration_seconds";
        let (buckets, count, sum) = out.histogram(duration, &get_2xx);
        assert_eq!(buckets, cumulative(&[1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0]));
        assert_eq!(count, 3.0);
        assert!((sum - 2.023).abs() < 1e-9, "{sum}");
        let (buckets, count, sum) = out.histogram(duration, &post_5xx);
        assert_eq!(buckets, cumulative(&[0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]));
        assert_eq!(count, 1.0);
        assert!((sum - 0.3).abs() < 1e-9, "{sum}");
        assert_eq!(out.count(&format!("{duration}_count")), 4);
        assert_eq!(out.count(&format!("{duration}_bucket")), 4 * 12);

        assert!(
            out.text
                .contains("# TYPE vestibule_http_requests counter\n")
        );
        assert!(out.text.contains(&format!("# TYPE {duration} histogram\n")));
        assert!(out.text.ends_with("# EOF\n"));
    }

    #[test]
    fn bucket_bounds_are_inclusive() {
        let metrics = Metrics::new(MetricsOptions::default());
        let stats = metrics.route_stats(labels("shop", "web", "api", None));
        stats.request(MethodClass::Get, 200, ms(5));
        stats.request(MethodClass::Get, 200, ms(5) + Duration::from_nanos(1));
        stats.request(MethodClass::Get, 200, ms(10_000));
        stats.request(MethodClass::Get, 200, ms(10_001));
        stats.request(MethodClass::Get, 200, Duration::MAX);
        let out = scrape(&metrics);
        let get_2xx = with(&[("method", "get"), ("status", "2xx")]);
        let (buckets, count, _) =
            out.histogram("vestibule_http_request_duration_seconds", &get_2xx);
        assert_eq!(buckets, cumulative(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]));
        assert_eq!(count, 5.0);
    }

    #[test]
    fn bytes_and_upstream_series() {
        let metrics = Metrics::new(MetricsOptions::default());
        let stats = metrics.route_stats(labels("shop", "web", "api", None));
        let idle = metrics.route_stats(labels("shop", "web", "idle", None));
        stats.request(MethodClass::Get, 200, ms(1));
        stats.bytes(0, 1000);
        stats.bytes(0, 24);
        stats.upstream_connect(ms(2));
        stats.upstream_connect(ms(30));
        stats.upstream_response(ms(70));
        stats.upstream_error(UpstreamErrorKind::Refused);
        stats.upstream_error(UpstreamErrorKind::Refused);
        stats.upstream_error(UpstreamErrorKind::Tls);
        stats.retry();
        stats.retry();
        stats.ejection();
        let out = scrape(&metrics);

        let route = with(&[]);
        assert_eq!(
            out.value("vestibule_http_response_bytes_total", &route),
            1024.0
        );
        // Served, so zero rather than missing.
        assert_eq!(out.value("vestibule_http_request_bytes_total", &route), 0.0);
        let connect = "vestibule_upstream_connect_duration_seconds";
        let (buckets, count, sum) = out.histogram(connect, &route);
        assert_eq!(buckets, cumulative(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(count, 2.0);
        assert!((sum - 0.032).abs() < 1e-9, "{sum}");
        let response = "vestibule_upstream_response_duration_seconds";
        let (buckets, count, _) = out.histogram(response, &route);
        assert_eq!(buckets, cumulative(&[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(count, 1.0);
        let errors = "vestibule_upstream_errors_total";
        assert_eq!(out.value(errors, &with(&[("kind", "refused")])), 2.0);
        assert_eq!(out.value(errors, &with(&[("kind", "tls")])), 1.0);
        assert_eq!(out.count(errors), 2);
        assert_eq!(out.value("vestibule_upstream_retries_total", &route), 2.0);
        assert_eq!(out.value("vestibule_upstream_ejections_total", &route), 1.0);

        // A route that recorded nothing has no series at all.
        assert!(!out.text.contains("idle"), "{}", out.text);
        drop(idle);
    }

    #[test]
    fn equal_labels_share_stats() {
        let metrics = Metrics::new(MetricsOptions::default());
        let a = metrics.route_stats(labels("shop", "web", "api", Some("a.example")));
        // Without per_host the host does not tell routes apart.
        let b = metrics.route_stats(labels("shop", "web", "api", Some("b.example")));
        let other = metrics.route_stats(labels("shop", "web", "cart", None));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &other));
        a.request(MethodClass::Get, 200, ms(1));
        b.request(MethodClass::Get, 200, ms(1));
        other.request(MethodClass::Get, 200, ms(1));
        let out = scrape(&metrics);
        let get_2xx = [("method", "get"), ("status", "2xx")];
        assert_eq!(
            out.value("vestibule_http_requests_total", &with(&get_2xx)),
            2.0
        );
        let cart = [
            ("namespace", "shop"),
            ("ingress", "web"),
            ("service", "cart"),
            ("method", "get"),
            ("status", "2xx"),
        ];
        assert_eq!(out.value("vestibule_http_requests_total", &cart), 1.0);
    }

    #[test]
    fn per_host_adds_the_host_label() {
        let metrics = Metrics::new(MetricsOptions { per_host: true });
        let a = metrics.route_stats(labels("shop", "web", "api", Some("a.example")));
        let b = metrics.route_stats(labels("shop", "web", "api", Some("b.example")));
        let none = metrics.route_stats(labels("", "", "", None));
        assert!(!Arc::ptr_eq(&a, &b));
        a.request(MethodClass::Get, 200, ms(1));
        b.request(MethodClass::Get, 200, ms(1));
        b.request(MethodClass::Get, 200, ms(1));
        none.request(MethodClass::Get, 404, ms(1));
        let out = scrape(&metrics);
        let requests = "vestibule_http_requests_total";
        let series = |host| with(&[("host", host), ("method", "get"), ("status", "2xx")]);
        assert_eq!(out.value(requests, &series("a.example")), 1.0);
        assert_eq!(out.value(requests, &series("b.example")), 2.0);
        let unrouted = [
            ("namespace", ""),
            ("ingress", ""),
            ("service", ""),
            ("host", ""),
            ("method", "get"),
            ("status", "4xx"),
        ];
        assert_eq!(out.value(requests, &unrouted), 1.0);
        let bytes = "vestibule_http_response_bytes_total";
        assert_eq!(out.value(bytes, &with(&[("host", "a.example")])), 0.0);
    }

    #[test]
    fn prune_forgets_unreferenced_label_sets() {
        let metrics = Metrics::new(MetricsOptions::default());
        let kept = metrics.route_stats(labels("shop", "web", "api", None));
        let gone = metrics.route_stats(labels("shop", "old", "api", None));
        kept.request(MethodClass::Get, 200, ms(1));
        gone.request(MethodClass::Get, 200, ms(1));
        // Another holder keeps a set alive.
        let held = metrics.route_stats(labels("shop", "old", "api", None));
        drop(gone);
        metrics.prune();
        assert_eq!(metrics.lock_routes().len(), 2);
        drop(held);
        metrics.prune();
        assert_eq!(metrics.lock_routes().len(), 1);

        let out = scrape(&metrics);
        let get_2xx = [("method", "get"), ("status", "2xx")];
        assert_eq!(
            out.value("vestibule_http_requests_total", &with(&get_2xx)),
            1.0
        );
        assert!(!out.text.contains("old"), "{}", out.text);
        // Coming back starts from zero.
        let again = metrics.route_stats(labels("shop", "old", "api", None));
        assert!(!again.served_any());
        assert!(Arc::ptr_eq(
            &kept,
            &metrics.route_stats(labels("shop", "web", "api", None))
        ));
    }

    #[test]
    fn connections_and_handshakes() {
        let metrics = Metrics::new(MetricsOptions::default());
        let first = metrics.connection(Listener::Https, Protocol::Http2);
        let second = metrics.connection(Listener::Https, Protocol::Http2);
        let plain = metrics.connection(Listener::Http, Protocol::Http1);
        metrics.tls_handshake(Handshake::Ok);
        metrics.tls_handshake(Handshake::Ok);
        metrics.tls_handshake(Handshake::TimedOut);
        metrics.header_timeout(Listener::Https);

        let out = scrape(&metrics);
        let h2 = [("listener", "https"), ("protocol", "http2")];
        let h1 = [("listener", "http"), ("protocol", "http1")];
        assert_eq!(out.value("vestibule_connections_open", &h2), 2.0);
        assert_eq!(out.value("vestibule_connections_open", &h1), 1.0);
        assert_eq!(out.count("vestibule_connections_open"), 2);
        assert_eq!(out.count("vestibule_connections_total"), 2);
        let handshakes = "vestibule_tls_handshakes_total";
        assert_eq!(out.value(handshakes, &[("outcome", "ok")]), 2.0);
        assert_eq!(out.value(handshakes, &[("outcome", "timed_out")]), 1.0);
        assert_eq!(out.get(handshakes, &[("outcome", "failed")]), None);
        let timeouts = "vestibule_client_header_timeouts_total";
        assert_eq!(out.value(timeouts, &[("listener", "https")]), 1.0);
        assert_eq!(out.value(timeouts, &[("listener", "http")]), 0.0);
        assert!(
            out.text
                .contains("# TYPE vestibule_connections_open gauge\n")
        );

        drop(first);
        drop(plain);
        let out = scrape(&metrics);
        assert_eq!(out.value("vestibule_connections_open", &h2), 1.0);
        assert_eq!(out.value("vestibule_connections_open", &h1), 0.0);
        assert_eq!(out.value("vestibule_connections_total", &h2), 2.0);
        assert_eq!(out.value("vestibule_connections_total", &h1), 1.0);
        drop(second);
        let out = scrape(&metrics);
        assert_eq!(out.value("vestibule_connections_open", &h2), 0.0);
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let metrics = Metrics::new(MetricsOptions::default());
        let stats = metrics.route_stats(labels("shop", "web", "api", None));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        stats.request(MethodClass::Get, 200, ms(1));
                        stats.bytes(1, 2);
                    }
                });
            }
        });
        let out = scrape(&metrics);
        let get_2xx = with(&[("method", "get"), ("status", "2xx")]);
        assert_eq!(
            out.value("vestibule_http_requests_total", &get_2xx),
            40_000.0
        );
        let (_, count, sum) = out.histogram("vestibule_http_request_duration_seconds", &get_2xx);
        assert_eq!(count, 40_000.0);
        assert!((sum - 40.0).abs() < 1e-6, "{sum}");
        assert_eq!(
            out.value("vestibule_http_response_bytes_total", &with(&[])),
            80_000.0
        );
    }

    #[test]
    fn label_values_of_every_kind_and_outcome() {
        let metrics = Metrics::new(MetricsOptions::default());
        let stats = metrics.route_stats(labels("shop", "web", "api", None));
        let kinds = [
            (UpstreamErrorKind::Refused, "refused"),
            (UpstreamErrorKind::Timeout, "timeout"),
            (UpstreamErrorKind::Reset, "reset"),
            (UpstreamErrorKind::Tls, "tls"),
            (UpstreamErrorKind::Other, "other"),
        ];
        for (kind, _) in kinds {
            stats.upstream_error(kind);
        }
        let outcomes = [
            (Handshake::Ok, "ok"),
            (Handshake::Failed, "failed"),
            (Handshake::TimedOut, "timed_out"),
        ];
        for (outcome, _) in outcomes {
            metrics.tls_handshake(outcome);
        }
        let out = scrape(&metrics);
        for (_, kind) in kinds {
            let series = with(&[("kind", kind)]);
            assert_eq!(out.value("vestibule_upstream_errors_total", &series), 1.0);
        }
        for (_, outcome) in outcomes {
            let series = [("outcome", outcome)];
            assert_eq!(out.value("vestibule_tls_handshakes_total", &series), 1.0);
        }
    }

    #[test]
    fn method_classes() {
        assert_eq!(MethodClass::of(&Method::GET), MethodClass::Get);
        assert_eq!(MethodClass::of(&Method::OPTIONS), MethodClass::Options);
        assert_eq!(MethodClass::of(&Method::CONNECT), MethodClass::Other);
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(MethodClass::of(&custom), MethodClass::Other);
    }
}
