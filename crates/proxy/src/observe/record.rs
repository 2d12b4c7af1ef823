//! The one record of a request: what the request path decided and measured (the route, the
//! endpoints tried and how each answered, timings, sizes), filled in by the request path from
//! each phase's result, then handed to observability once, when the response body is done.
//! The route's metrics and the access log line both come from it.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::{HOST, HeaderValue, REFERER, USER_AGENT};
use http::{Method, Request, Response, Uri, Version};
use tokio::time::Instant;
use vestibule_model::ClusterId;

use super::Observability;
use super::access_log::AccessLog;
use super::access_log::clock::wall_time;
use super::access_log::line::{Line, Names, protocol_name};
use super::metrics::{MethodClass, RouteStats};
use crate::body::request::Progress;
use crate::body::response::{Done, ProxyBody};
use crate::dataplane::{RouteAt, Runtime};
use crate::request::limit::InFlight;
use crate::server::client::{ClientSide, IpText};
use crate::upstream::error::UpstreamErrorKind;

/// One attempt to get a response from an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// The endpoint's index in its cluster.
    pub(crate) endpoint: usize,
    /// The response status, when one came.
    pub(crate) status: Option<u16>,
    /// How it failed, when it did on the upstream's side.
    pub(crate) error: Option<UpstreamErrorKind>,
    /// The failure took the endpoint out of rotation (passive health).
    pub(crate) ejected: bool,
    /// The time to make a new connection, when this attempt made one.
    pub(crate) connect: Option<Duration>,
    /// The time from the request leaving (from the pick, on a pooled connection) to the
    /// response head.
    pub(crate) response: Option<Duration>,
}

/// Every attempt of a request: one, nearly always, kept inline rather than in an allocation
/// of its own.
pub(crate) type Attempts = smallvec::SmallVec<[Attempt; 1]>;

/// What one request went through.
pub(crate) struct Record {
    started: Instant,
    method: MethodClass,
    /// The request as the client sent it, kept when an access log is written.
    request: Option<LoggedRequest>,
    /// The connection's peer, and its text, formatted once per connection.
    peer: (IpAddr, IpText),
    /// The client, after trusted-proxy handling.
    client_ip: Option<IpAddr>,
    /// Where the table sent it, when it matched a route or the default backend.
    origin: Option<Origin>,
    /// The route's metrics.
    stats: Option<Arc<RouteStats>>,
    /// The route wants its requests logged (`enable-access-log`).
    log: bool,
    /// The response carries `Strict-Transport-Security` (a TLS host over HTTPS), decided by
    /// the route phase and owed on Vestibule's own error responses too.
    pub(crate) hsts: bool,
    /// What the route's CORS policy owes every response, Vestibule's own included.
    pub(crate) cors: Option<crate::request::cors::Owed>,
    /// What the route's header rules owe the response, once worked out.
    pub(crate) headers: Option<crate::request::headers::OwedResponse>,
    attempts: Attempts,
    /// How far the request body got, when it had one.
    received: Option<Arc<Progress>>,
    /// Who access control let it through as, when it says.
    user: Option<Box<str>>,
    /// Its place in flight for `limit-connections`, given back when the response is done.
    in_flight: Option<InFlight>,
}

/// Where a request went: a handle on the table it was routed by, not a copy of names, looked
/// into only when a log line is written.
struct Origin {
    runtime: Arc<Runtime>,
    at: RouteAt,
    cluster: Option<ClusterId>,
    /// The route's canary served it.
    canary: bool,
}

impl Record {
    /// The user access control let the request through as.
    #[inline]
    pub(crate) fn user(&mut self, user: &str) {
        self.user = Some(user.into());
    }

    /// The record of a request that has just arrived.
    #[inline]
    pub(crate) fn start<B>(
        observe: &Observability,
        client: &ClientSide,
        request: &Request<B>,
        request_id: &HeaderValue,
    ) -> Record {
        Record {
            started: Instant::now(),
            peer: (client.peer, client.peer_text),
            method: MethodClass::of(request.method()),
            // Taken before the request is rewritten.
            request: observe
                .access_log
                .as_ref()
                .map(|_| LoggedRequest::of(request, request_id)),
            client_ip: None,
            origin: None,
            stats: None,
            // Requests no route claims (404s, bad requests) are logged too.
            log: true,
            hsts: false,
            cors: None,
            headers: None,
            attempts: Attempts::new(),
            received: None,
            user: None,
            in_flight: None,
        }
    }

    /// Holds the request's place in flight until its response is done.
    #[inline]
    pub(crate) fn hold(&mut self, in_flight: Option<InFlight>) {
        self.in_flight = in_flight;
    }

    /// The pick sent the request to the route's canary: counted in the canary's metrics,
    /// and logged under its Ingress and Service.
    #[inline]
    pub(crate) fn canary(&mut self, stats: Option<Arc<RouteStats>>) {
        if stats.is_some() {
            self.stats = stats;
        }
        if let Some(origin) = &mut self.origin {
            origin.canary = true;
        }
    }

    /// The client address the head phase settled on.
    #[inline]
    pub(crate) fn client(&mut self, ip: IpAddr) {
        self.client_ip = Some(ip);
    }

    /// The route (or default backend) the request matched, with its metrics and whether it
    /// is logged.
    #[inline]
    pub(crate) fn routed(
        &mut self,
        runtime: &Arc<Runtime>,
        at: RouteAt,
        stats: Option<Arc<RouteStats>>,
        log: bool,
    ) {
        self.stats = stats;
        self.log = log;
        if self.request.is_some() {
            self.origin = Some(Origin {
                runtime: Arc::clone(runtime),
                at,
                cluster: None,
                canary: false,
            });
        }
    }

    /// The cluster the pick phase chose.
    #[inline]
    pub(crate) fn cluster(&mut self, cluster: ClusterId) {
        if let Some(origin) = &mut self.origin {
            origin.cluster = Some(cluster);
        }
    }

    /// What the send phase went through.
    #[inline]
    pub(crate) fn sent(&mut self, attempts: Attempts, received: Option<Arc<Progress>>) {
        self.attempts = attempts;
        self.received = received;
    }

    /// Hands the record to observability, to be counted and logged once the response's body
    /// is done; `unrouted` counts a request no route claimed.
    #[inline]
    pub(crate) fn finish(
        self,
        observe: &Observability,
        unrouted: Option<&Arc<RouteStats>>,
        response: &mut Response<ProxyBody>,
    ) {
        let stats = match observe.metrics {
            Some(_) => self.stats.or_else(|| unrouted.cloned()),
            None => None,
        };
        let log = match (&observe.access_log, self.request) {
            (Some(log), Some(request)) if self.log => Some((log.clone(), request)),
            _ => None,
        };
        if stats.is_none() && log.is_none() && self.in_flight.is_none() {
            return;
        }
        let client_ip = match self.client_ip {
            Some(ip) if ip != self.peer.0 => IpText::new(ip),
            _ => self.peer.1,
        };
        let status = response.status().as_u16();
        response.body_mut().on_done(Box::new(Completion {
            started: self.started,
            method: self.method,
            status,
            stats,
            log,
            received: self.received,
            client_ip,
            attempts: self.attempts,
            origin: self.origin,
            user: self.user,
            _in_flight: self.in_flight,
        }));
    }
}

/// A record whose response is on its way: counted and logged when the body is done.
struct Completion {
    started: Instant,
    method: MethodClass,
    status: u16,
    stats: Option<Arc<RouteStats>>,
    log: Option<(AccessLog, LoggedRequest)>,
    received: Option<Arc<Progress>>,
    client_ip: IpText,
    attempts: Attempts,
    origin: Option<Origin>,
    user: Option<Box<str>>,
    /// Dropped with the completion, when the body is done.
    _in_flight: Option<InFlight>,
}

impl Done for Completion {
    fn done(self: Box<Self>, sent: u64) {
        let duration = self.started.elapsed();
        let received = self
            .received
            .as_ref()
            .map_or(0, |p| p.received.load(Ordering::Relaxed));
        if let Some(stats) = &self.stats {
            count(stats, &self.attempts);
            stats.request(self.method, self.status, duration);
            stats.bytes(received, sent);
        }
        if let Some((log, request)) = &self.log {
            self.write_line(log, request, duration, received, sent);
        }
    }
}

/// The attempts' share of a route's metrics: retries, upstream errors and ejections, connect
/// and response times.
fn count(stats: &RouteStats, attempts: &[Attempt]) {
    for (i, attempt) in attempts.iter().enumerate() {
        if i > 0 {
            stats.retry();
        }
        if let Some(connect) = attempt.connect {
            stats.upstream_connect(connect);
        }
        if let Some(kind) = attempt.error {
            stats.upstream_error(kind);
        }
        if attempt.ejected {
            stats.ejection();
        }
        if let Some(response) = attempt.response {
            stats.upstream_response(response);
        }
    }
}

impl Completion {
    fn write_line(
        &self,
        log: &AccessLog,
        request: &LoggedRequest,
        duration: Duration,
        received: u64,
        sent: u64,
    ) {
        // The endpoints tried are in the table the request was routed by.
        let upstreams: smallvec::SmallVec<[(&[u8], Option<u16>); 2]> = match &self.origin {
            Some(Origin {
                runtime,
                cluster: Some(cluster),
                ..
            }) => {
                let balancer = &runtime.balancers[cluster.0 as usize];
                self.attempts
                    .iter()
                    .map(|a| (balancer.address_text(a.endpoint).as_bytes(), a.status))
                    .collect()
            }
            _ => smallvec::SmallVec::new(),
        };
        let upstream_duration = self.attempts.iter().rev().find_map(|a| a.response);
        log.log(&Line {
            time: wall_time(self.started.into_std()),
            client_ip: self.client_ip.as_bytes(),
            method: request.method.as_str().as_bytes(),
            host: request.host(),
            path: request
                .uri
                .path_and_query()
                .map_or(b"/", |pq| pq.as_str().as_bytes()),
            protocol: protocol_name(request.version).as_bytes(),
            status: self.status,
            bytes_sent: sent,
            bytes_received: received,
            duration,
            upstreams: &upstreams,
            upstream_duration,
            names: self
                .origin
                .as_ref()
                .map_or_else(Names::default, Origin::names),
            request_id: request.request_id.as_bytes(),
            user_agent: request.user_agent.as_ref().map(HeaderValue::as_bytes),
            referer: request.referer.as_ref().map(HeaderValue::as_bytes),
            user: self.user.as_deref().map(str::as_bytes),
        });
    }
}

impl Origin {
    /// Namespace, Ingress and Service for the log line.
    fn names(&self) -> Names<'_> {
        let table = &self.runtime.table;
        let origin = match self.at {
            RouteAt::Route(id) => {
                let route = table.route(id);
                match &route.canary {
                    Some(canary) if self.canary => Some(&canary.origin),
                    _ => Some(&route.origin),
                }
            }
            RouteAt::Default => table.default_backend().and_then(|d| d.origin.as_ref()),
        };
        let (namespace, ingress) = origin.map_or(("", ""), |o| (&*o.namespace, &*o.name));
        let service = self
            .cluster
            .map_or("", |cluster| &*table.cluster(cluster).key.service);
        Names {
            namespace: namespace.as_bytes(),
            ingress: ingress.as_bytes(),
            service: service.as_bytes(),
            canary: self.canary,
        }
    }
}

/// The request as the client sent it, for its log line. Header values and the target are
/// kept as they are (reference counts, no copies).
struct LoggedRequest {
    method: Method,
    uri: Uri,
    host: Option<HeaderValue>,
    version: Version,
    request_id: HeaderValue,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
}

impl LoggedRequest {
    fn of<B>(request: &Request<B>, request_id: &HeaderValue) -> LoggedRequest {
        // One pass over the names, which compare as cheaply as integers, where three
        // lookups would hash a name each.
        let (mut host, mut user_agent, mut referer) = (None, None, None);
        for (name, value) in request.headers() {
            let slot = if *name == HOST {
                &mut host
            } else if *name == USER_AGENT {
                &mut user_agent
            } else if *name == REFERER {
                &mut referer
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        }
        LoggedRequest {
            method: request.method().clone(),
            uri: request.uri().clone(),
            host: host.filter(|_| request.uri().authority().is_none()),
            version: request.version(),
            request_id: request_id.clone(),
            user_agent,
            referer,
        }
    }

    /// The authority of an HTTP/2 request, else the `Host` header.
    fn host(&self) -> &[u8] {
        match self.uri.authority() {
            Some(authority) => authority.as_str().as_bytes(),
            None => self.host.as_ref().map_or(b"", HeaderValue::as_bytes),
        }
    }
}
