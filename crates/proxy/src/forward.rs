//! The request path, as plain phase functions over the installed table: check the request's
//! size, find the host and path, pick an endpoint, rewrite the request for the upstream, send
//! it (trying other endpoints when that is safe), tidy the response, and bridge upgraded
//! connections.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue, SERVER, SET_COOKIE,
    STRICT_TRANSPORT_SECURITY, TE, UPGRADE,
};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::{debug, warn};
use vestibule_model::{
    Backend, ClusterId, EndpointAddress, ProxyPolicy, RouteId, Target, UpstreamProtocol,
    normalize_request_path, request_host,
};

use crate::access_log::{Line, Names};
use crate::balance::{self, PickInput};
use crate::body::{Limited, Progress, ProxyBody, ResponseBody, Timed, UpstreamBody, empty};
use crate::dataplane::{DataPlane, Runtime, Upstream};
use crate::h1;
use crate::headers::{
    ClientSide, Forwarded, IpText, X_REQUEST_ID, has_token, remove_hop_by_hop, request_id,
};
use crate::metrics::{MethodClass, RouteStats, UpstreamErrorKind};
use crate::respond::{BoxError, ProxyError, SERVER_NAME, Style, error_response, redirect_to_https};
use crate::upstream::{ConnectError, Outbound, SendError, Target as UpstreamTarget, Upstreams};
use crate::{Observability, ProxySettings};

/// Answers one request: the upstream's response, Vestibule's redirect to HTTPS, or its own
/// response for a failure.
pub(crate) async fn handle(
    dataplane: &DataPlane,
    upstreams: &Upstreams,
    settings: &ProxySettings,
    observe: &Observability,
    client: ClientSide,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let style = Style::of(request.headers());
    let request_id = request_id(request.headers());
    // What the access log needs of the request, taken before it is rewritten.
    let logged = observe
        .access_log
        .as_ref()
        .map(|_| LoggedRequest::of(&request, &request_id));
    let method = MethodClass::of(request.method());
    let mut trace = Trace {
        logging: observe.access_log.is_some(),
        ..Trace::default()
    };
    // Boxed for the reason the listener boxes this function's future: awaited inline, a
    // future takes its size twice in the one awaiting it.
    let forwarded = Box::pin(forward(
        dataplane,
        upstreams,
        settings,
        client,
        request,
        &request_id,
        &mut trace,
    ));
    let mut response = match forwarded.await {
        Ok(response) => response,
        Err(error) => {
            if error.status().is_server_error() {
                warn!(status = error.status().as_u16(), error = %error, "request failed");
            } else {
                debug!(status = error.status().as_u16(), error = %error, "request refused");
            }
            error_response(&error, style)
        }
    };
    // Returned so a client can quote it, whoever answered.
    response.headers_mut().insert(&X_REQUEST_ID, request_id);
    let status = response.status().as_u16();
    let stats = if observe.metrics.is_some() {
        trace.stats.take().or_else(|| dataplane.unrouted_stats())
    } else {
        None
    };
    let log = observe.access_log.clone().zip(logged).filter(|_| trace.log);
    if stats.is_some() || log.is_some() {
        let received = trace.received.take();
        let client_ip = match trace.client_ip {
            Some(ip) if ip != client.peer => IpText::new(ip),
            _ => client.peer_text,
        };
        let upstreams = std::mem::take(&mut trace.upstreams);
        let origin = trace.origin.take();
        let upstream_time = trace.upstream_time;
        response.body_mut().on_done(Box::new(Completion {
            started,
            method,
            status,
            stats,
            log,
            received,
            client_ip,
            upstreams,
            origin,
            upstream_time,
        }));
    }
    // On every response of a TLS host, Vestibule's own included, as browsers only take the
    // policy from HTTPS responses and any of them will do. A backend's own policy is kept.
    if trace.hsts
        && let Some(value) = &settings.hsts
    {
        response
            .headers_mut()
            .entry(STRICT_TRANSPORT_SECURITY)
            .or_insert_with(|| value.clone());
    }
    response
}

/// Every endpoint a request tried (its index in the cluster), with its status when it
/// answered: one, nearly always, kept inline rather than in an allocation of its own.
type Tries = smallvec::SmallVec<[(usize, Option<u16>); 1]>;

/// What a request's metrics and log line need once its response body has gone: kept in a
/// box the body owns, and read in place when it ends.
struct Completion {
    started: Instant,
    method: MethodClass,
    status: u16,
    stats: Option<Arc<RouteStats>>,
    log: Option<(crate::AccessLog, LoggedRequest)>,
    received: Option<Arc<Progress>>,
    client_ip: IpText,
    upstreams: Tries,
    origin: Option<Origin>,
    upstream_time: Option<Duration>,
}

impl crate::body::Done for Completion {
    fn done(self: Box<Self>, sent: u64) {
        let duration = self.started.elapsed();
        let received = self
            .received
            .as_ref()
            .map_or(0, |p| p.received.load(Ordering::Relaxed));
        if let Some(stats) = &self.stats {
            stats.request(self.method, self.status, duration);
            stats.bytes(received, sent);
        }
        if let Some((log, request)) = &self.log {
            // The endpoints tried are in the table the request was routed by.
            let upstreams: smallvec::SmallVec<[(&[u8], Option<u16>); 2]> = match &self.origin {
                Some(origin) => {
                    let balancer = &origin.runtime.balancers[origin.cluster.0 as usize];
                    self.upstreams
                        .iter()
                        .map(|&(i, status)| (balancer.address_text(i).as_bytes(), status))
                        .collect()
                }
                None => smallvec::SmallVec::new(),
            };
            log.log(&Line {
                time: crate::access_log::wall_time(self.started.into_std()),
                client_ip: self.client_ip.as_bytes(),
                method: request.method.as_str().as_bytes(),
                host: request.host(),
                path: request
                    .uri
                    .path_and_query()
                    .map_or(b"/", |pq| pq.as_str().as_bytes()),
                protocol: crate::access_log::protocol_name(request.version).as_bytes(),
                status: self.status,
                bytes_sent: sent,
                bytes_received: received,
                duration,
                upstreams: &upstreams,
                upstream_duration: self.upstream_time,
                names: self
                    .origin
                    .as_ref()
                    .map_or_else(Names::default, Origin::names),
                request_id: request.request_id.as_bytes(),
                user_agent: request.user_agent.as_ref().map(HeaderValue::as_bytes),
                referer: request.referer.as_ref().map(HeaderValue::as_bytes),
            });
        }
    }
}

/// Where a request goes after the table is consulted.
enum Step {
    Forward(Plan),
    /// Plain HTTP for a host that wants HTTPS.
    Redirect,
}

/// What the table decided for a request that is forwarded.
struct Plan {
    /// Held for the whole request, retries included: a request finishes on the table it
    /// started with.
    runtime: Arc<Runtime>,
    cluster: ClusterId,
    policy: Arc<ProxyPolicy>,
    /// The route's metrics, when metrics are on.
    stats: Option<Arc<RouteStats>>,
    /// Where the route came from, looked up only when a log line needs it.
    origin: OriginAt,
}

/// Which part of the table a request was routed by.
#[derive(Clone, Copy)]
enum OriginAt {
    Route(RouteId),
    Default,
}

impl Plan {
    /// How the request reaches its backend.
    fn upstream(&self) -> Option<&Upstream> {
        self.runtime.upstream(match self.origin {
            OriginAt::Route(id) => Some(id),
            OriginAt::Default => None,
        })
    }

    /// Where the request went, for its log line: a handle on the table, not a copy of names.
    fn origin(&self) -> Origin {
        Origin {
            runtime: Arc::clone(&self.runtime),
            at: self.origin,
            cluster: self.cluster,
        }
    }
}

/// The route and cluster a request went to, in the table it was routed by.
struct Origin {
    runtime: Arc<Runtime>,
    at: OriginAt,
    cluster: ClusterId,
}

impl Plan {
    /// The matched rule's path: where an affinity cookie applies unless set otherwise.
    fn rule_path(&self) -> &str {
        match self.origin {
            OriginAt::Route(id) => &self.runtime.table.route(id).rule.path,
            OriginAt::Default => "/",
        }
    }
}

impl Origin {
    /// Namespace, Ingress and Service for the log line.
    fn names(&self) -> Names<'_> {
        let table = &self.runtime.table;
        let origin = match self.at {
            OriginAt::Route(id) => Some(&table.route(id).origin),
            OriginAt::Default => table.default_backend().and_then(|d| d.origin.as_ref()),
        };
        let (namespace, ingress) = origin.map_or(("", ""), |o| (&*o.namespace, &*o.name));
        Names {
            namespace: namespace.as_bytes(),
            ingress: ingress.as_bytes(),
            service: table.cluster(self.cluster).key.service.as_bytes(),
        }
    }
}

async fn forward(
    dataplane: &DataPlane,
    upstreams: &Upstreams,
    settings: &ProxySettings,
    client: ClientSide,
    request: Request<Incoming>,
    request_id: &HeaderValue,
    trace: &mut Trace,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = request.into_parts();
    let header_bytes = check_sizes(&parts, settings)?;
    let host_value = request_authority(&parts)?;
    let host_str = host_value
        .to_str()
        .map_err(|_| ProxyError::BadRequest("the host is not valid"))?;
    let host = request_host(host_str);
    let path = normalize_request_path(parts.uri.path())
        .map_err(|_| ProxyError::BadRequest("the request path is not valid"))?;
    let plan = match route(dataplane, client, &host, &path, &mut trace.hsts)? {
        Step::Forward(plan) => plan,
        Step::Redirect => {
            let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            return redirect_to_https(&host, settings.https_redirect_port, target);
        }
    };
    let policy = plan.policy.clone();
    trace.stats = plan.stats.clone();
    trace.log = policy.access_log;
    if trace.logging {
        trace.origin = Some(plan.origin());
    }
    if let (Some(limit), Some(length)) = (policy.body_size_limit, content_length(&parts.headers))
        && length > limit
    {
        return Err(ProxyError::PayloadTooLarge(limit));
    }
    let trusted = settings.trusted_proxies.contains(client.peer);
    let client_ip = if trusted {
        crate::client_ip::client_ip(client.peer, &parts.headers, &settings.trusted_proxies)
    } else {
        client.peer
    };
    trace.client_ip = Some(client_ip);
    // The normalised path is what was routed, so it is what the upstream gets; most paths
    // need no normalising, and then the target goes as it came.
    let upstream_target: std::borrow::Cow<'_, str> = match (&path, parts.uri.query()) {
        (std::borrow::Cow::Borrowed(_), _) => parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .into(),
        (normalised, Some(query)) => format!("{normalised}?{query}").into(),
        (normalised, None) => normalised.to_string().into(),
    };
    let upgrade = upgrade_protocol(&parts);
    let client_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
    let hash_key = match &policy.balance {
        vestibule_model::Balance::Hash(key) => Some(balance::hash_key(
            key,
            &balance::HashRequest {
                remote_addr: client_ip,
                request_uri: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
                uri: &path,
                host: &host,
                headers: &parts.headers,
            },
        )),
        _ => None,
    };
    let affinity = policy.affinity.as_ref().map(|affinity| {
        let value =
            balance::affinity::cookie_value(&parts.headers, &affinity.name).map(str::to_owned);
        (affinity.clone(), value)
    });

    remove_hop_by_hop(&mut parts.headers);
    // The client's `100-continue` was answered here, when its body was first read; the
    // upstream gets the body without being asked.
    parts.headers.remove(http::header::EXPECT);
    let forwarded = Forwarded::new(
        &parts.headers,
        &client,
        &host_value,
        trusted,
        client_ip,
        request_id,
    );
    let grpc_trailers = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // A tunnel's bytes flow through the upgraded connection, never as a body; a request
    // without a body sends none, on every attempt alike.
    let replayable = upgrade.is_some() || body_is_empty(&parts, &body);
    let progress = (!replayable).then(Progress::new);
    trace.received = progress.clone();
    let mut first_body = progress.as_ref().map(|progress| {
        Either::Left(Limited::new(
            body,
            policy.body_size_limit,
            policy.send_timeout,
            progress.clone(),
        ))
    });
    let idempotent = is_idempotent(&parts.method);

    let cluster = plan.runtime.table.cluster(plan.cluster);
    let balancer = &plan.runtime.balancers[plan.cluster.0 as usize];
    let Some(upstream) = plan.upstream() else {
        // A plan is made only for a route to a cluster, and each such route has its upstream.
        return Err(ProxyError::BackendUnavailable(
            "the route has no upstream settings".into(),
        ));
    };
    let protocol = upstream.protocol;
    let tries = match policy.next_upstream_tries {
        0 => u32::MAX,
        n => n,
    };
    let deadline = policy.next_upstream_timeout.map(|t| Instant::now() + t);
    // Over a connection this task drives (`Conn::is_direct`), the request's head is written
    // once, for every attempt.
    let framing = if replayable {
        h1::BodyFraming::None
    } else if content_length(&parts.headers).is_some() {
        h1::BodyFraming::Length
    } else {
        h1::BodyFraming::Chunked
    };
    let mut direct_head: Option<h1::RequestHead> = None;
    // Once the body may have reached the upstream, only a replayable request of a method
    // that may be repeated is tried again.
    let may_repeat = replayable && (idempotent || policy.next_upstream.non_idempotent);
    // Inline: a request nearly always tries one endpoint, and seldom more than a few.
    let mut tried: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
    let mut last_error: Option<ProxyError> = None;
    let mut fallback: Option<Response<ResponseBody>> = None;
    let mut set_cookie: Option<HeaderValue> = None;
    let mut rng = |n: usize| fastrand::usize(..n.max(1));

    for attempt in 0..tries {
        if attempt > 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // One clock reading for the pick, the connect time and (on a pooled connection) the
        // upstream's response time.
        let started = std::time::Instant::now();
        let input = PickInput {
            hash_key: hash_key.as_deref(),
            now_nanos: balance::nanos_at(started),
            excluded: &tried,
        };
        let index = match &affinity {
            Some((rule, cookie)) => {
                let Some(pick) = balancer.pick_sticky(
                    rule,
                    &policy.balance,
                    cookie.as_deref(),
                    &input,
                    &mut rng,
                ) else {
                    break;
                };
                if let Some(value) = &pick.set_value {
                    set_cookie = balance::affinity::set_cookie(
                        rule,
                        value,
                        plan.rule_path(),
                        client.https,
                        unix_now(),
                    )
                    .ok();
                }
                pick.index
            }
            None => match balancer.pick(&policy.balance, &input, &mut rng) {
                Some(index) => index,
                None => break,
            },
        };
        tried.push(index);
        let endpoint = &cluster.endpoints[index].address;
        let stats = balancer.stats(index);
        if attempt > 0
            && let Some(route) = &plan.stats
        {
            route.retry();
        }
        let sample = trace.upstreams.len();
        if trace.logging {
            trace.upstreams.push((index, None));
        }
        let target = UpstreamTarget {
            endpoint,
            protocol,
            connect_timeout: policy.connect_timeout,
            tls: upstream.tls.as_ref(),
            upgrade: upgrade.is_some(),
        };
        let conn = match upstreams.checkout(&target).await {
            Ok(conn) => conn,
            Err(e) => {
                let ejected = stats.health.record_failure(balance::now_nanos());
                if let Some(route) = &plan.stats {
                    route.upstream_error(connect_error_kind(&e));
                    if ejected {
                        route.ejection();
                    }
                }
                let retry = if e.is_timeout() {
                    policy.next_upstream.timeout
                } else {
                    policy.next_upstream.error
                };
                debug!(endpoint = %endpoint, error = %e, retry, "connecting failed");
                last_error = Some(connect_error(endpoint, e));
                // Nothing was sent: safe to try elsewhere whatever the method.
                if retry {
                    continue;
                }
                break;
            }
        };
        // The client's body, on the attempt that sends it, is watched by the send timeout
        // while it goes out; the read timeout starts once it has.
        let streaming = first_body.is_some();
        let body = match first_body.take() {
            Some(body) => body,
            None if replayable => empty(),
            // The body went to an earlier attempt and cannot be sent again.
            None => break,
        };
        let request = if conn.is_direct() {
            let (head, fields) = match &direct_head {
                Some(head) => (head.clone(), HeaderMap::new()),
                None => {
                    let head = h1::request_head(
                        &parts.method,
                        &upstream_target,
                        &host_value,
                        &parts.headers,
                        &forwarded,
                        framing,
                        header_bytes,
                    )
                    .map_err(ProxyError::BadRequest)?;
                    // The fields are in the head now: their map takes the response's.
                    let fields = std::mem::take(&mut parts.headers);
                    (direct_head.insert(head).clone(), fields)
                }
            };
            Outbound::Direct(head, Some(body), fields)
        } else {
            let outgoing = Outgoing {
                parts: &parts,
                path_and_query: &upstream_target,
                host: &host_value,
                forwarded: &forwarded,
                protocol,
                upgrade: upgrade.as_ref(),
                grpc_trailers,
            };
            Outbound::Hyper(Box::new(upstream_request(&outgoing, endpoint, body)?))
        };
        let waiting = if conn.reused() {
            started
        } else {
            let now = std::time::Instant::now();
            if let Some(route) = &plan.stats {
                route.upstream_connect(now - started);
            }
            now
        };
        let in_flight = stats.ewma.start();
        let closer = conn.closer();
        // Boxed, so that the exchange's futures are built in place on the heap rather than
        // moved through this (large) function's state on every attempt.
        let sent = Box::pin(async {
            let exchange = async {
                match conn.send(request, may_repeat).await {
                    // A pooled connection the upstream had already closed: the request goes
                    // once more on a new connection, body and all.
                    Err(SendError {
                        unsent: Some(request),
                        reused: true,
                        ..
                    }) => match upstreams.checkout_new(&target).await {
                        Ok(conn) => conn.send(request, false).await.map_err(|e| e.error),
                        Err(e) => Err(BoxError::from(e)),
                    },
                    other => other.map_err(|e| e.error),
                }
            };
            tokio::pin!(exchange);
            if let (true, Some(progress)) = (streaming, &progress) {
                let mut body_done = std::pin::pin!(progress.sent.notified());
                loop {
                    let stalled_at = progress.last() + policy.send_timeout;
                    tokio::select! {
                        result = &mut exchange => return Ok(result),
                        () = &mut body_done => break,
                        () = tokio::time::sleep_until(stalled_at) => {
                            // No frame taken for the whole send timeout: the upstream has
                            // stopped reading (or the client stopped sending).
                            if progress.last() + policy.send_timeout <= Instant::now() {
                                return Err(());
                            }
                        }
                    }
                }
            }
            tokio::time::timeout(policy.read_timeout, exchange)
                .await
                .map_err(|_| ())
        })
        .await;
        let now = std::time::Instant::now();
        in_flight.finish(balance::nanos_at(now), now - started);
        // Once the body may have reached the upstream, only a replayable request of a
        // method that may be repeated is tried again.
        let may_repeat = replayable && (idempotent || policy.next_upstream.non_idempotent);
        let response = match sent {
            Err(()) => {
                if let Some(closer) = closer {
                    closer.abort();
                }
                if let Some(route) = &plan.stats {
                    route.upstream_error(UpstreamErrorKind::Timeout);
                }
                last_error = Some(ProxyError::UpstreamTimeout {
                    endpoint: endpoint.to_string(),
                });
                if may_repeat && policy.next_upstream.timeout {
                    continue;
                }
                break;
            }
            Ok(Err(e)) => {
                if progress
                    .as_ref()
                    .is_some_and(|p| p.exceeded.load(Ordering::Relaxed))
                {
                    return Err(ProxyError::PayloadTooLarge(
                        policy.body_size_limit.unwrap_or_default(),
                    ));
                }
                if let Some(route) = &plan.stats {
                    route.upstream_error(UpstreamErrorKind::Reset);
                }
                last_error = Some(ProxyError::UpstreamFailed {
                    endpoint: endpoint.to_string(),
                    source: e,
                });
                if may_repeat && policy.next_upstream.error {
                    continue;
                }
                break;
            }
            Ok(Ok(exchanged)) => exchanged,
        };
        stats.health.record_success();
        let status = response.status().as_u16();
        let upstream_time = now - waiting;
        trace.upstream_time = Some(upstream_time);
        if let Some(tried) = trace.upstreams.get_mut(sample) {
            tried.1 = Some(status);
        }
        if let Some(route) = &plan.stats {
            route.upstream_response(upstream_time);
        }
        if policy.next_upstream.on_status(status)
            && may_repeat
            && attempt + 1 < tries
            && tried.len() < cluster.endpoints.len()
        {
            debug!(endpoint = %endpoint, status, "trying another endpoint");
            // Passed on as it is if no other endpoint does better.
            fallback = Some(response);
            continue;
        }
        return Ok(finish(
            response,
            client_upgrade,
            upgrade.as_ref(),
            policy.read_timeout,
            set_cookie,
        ));
    }
    if let Some(response) = fallback {
        return Ok(finish(
            response,
            client_upgrade,
            upgrade.as_ref(),
            policy.read_timeout,
            set_cookie,
        ));
    }
    Err(last_error.unwrap_or_else(|| ProxyError::NoEndpoints(cluster.key.to_string())))
}

/// What one request went through, for its metrics and its access log line.
struct Trace {
    /// An access log is written: the request's origin and upstreams are collected.
    logging: bool,
    /// The response carries `Strict-Transport-Security` (a TLS host over HTTPS), decided by
    /// the lookup and needed on Vestibule's own error responses too.
    hsts: bool,
    stats: Option<Arc<RouteStats>>,
    /// The route wants its requests logged (`enable-access-log`).
    log: bool,
    origin: Option<Origin>,
    client_ip: Option<std::net::IpAddr>,
    /// Every endpoint tried, with its status when it answered.
    upstreams: Tries,
    upstream_time: Option<Duration>,
    received: Option<Arc<Progress>>,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            logging: false,
            hsts: false,
            stats: None,
            // Requests no route claims (404s, bad requests) are logged too.
            log: true,
            origin: None,
            client_ip: None,
            upstreams: Tries::new(),
            upstream_time: None,
            received: None,
        }
    }
}

/// The request as the client sent it, for its log line. Header values and the target are
/// kept as they are (reference counts, no copies).
struct LoggedRequest {
    method: Method,
    uri: http::Uri,
    host: Option<HeaderValue>,
    version: Version,
    request_id: HeaderValue,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
}

impl LoggedRequest {
    fn of(request: &Request<Incoming>, request_id: &HeaderValue) -> LoggedRequest {
        // One pass over the names, which compare as cheaply as integers, where three
        // lookups would hash a name each.
        let (mut host, mut user_agent, mut referer) = (None, None, None);
        for (name, value) in request.headers() {
            let slot = if *name == HOST {
                &mut host
            } else if *name == http::header::USER_AGENT {
                &mut user_agent
            } else if *name == http::header::REFERER {
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

fn connect_error_kind(error: &ConnectError) -> UpstreamErrorKind {
    match error {
        ConnectError::Refused => UpstreamErrorKind::Refused,
        ConnectError::TimedOut(_) => UpstreamErrorKind::Timeout,
        ConnectError::Tls(_) | ConnectError::ServerName(_) => UpstreamErrorKind::Tls,
        ConnectError::Io(_) | ConnectError::Handshake(_) => UpstreamErrorKind::Other,
    }
}

fn connect_error(endpoint: &EndpointAddress, error: ConnectError) -> ProxyError {
    if error.is_timeout() {
        ProxyError::UpstreamTimeout {
            endpoint: endpoint.to_string(),
        }
    } else {
        ProxyError::UpstreamConnect {
            endpoint: endpoint.to_string(),
            source: Box::new(error),
        }
    }
}

/// The upstream's response made ready for the client; for a 101, the tunnel is started.
fn finish(
    response: Response<ResponseBody>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    upgrade: Option<&Upgrade>,
    read_timeout: Duration,
    set_cookie: Option<HeaderValue>,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    let upgrade_header = switching
        .then(|| parts.headers.get(UPGRADE).cloned())
        .flatten();
    // `proxy::h1` leaves the connection's fields out as it reads them.
    if !matches!(body, ResponseBody::Direct(_)) {
        remove_hop_by_hop(&mut parts.headers);
    }
    if let (true, Some(upgrade)) = (switching, upgrade) {
        if upgrade.extended_connect {
            // RFC 8441: the tunnel opens with a 2xx, and the HTTP/1.1 handshake's proof
            // belongs to the hop it was made on.
            parts.status = StatusCode::OK;
            parts.headers.remove(http::header::SEC_WEBSOCKET_ACCEPT);
        } else {
            if let Some(value) = upgrade_header {
                parts.headers.insert(UPGRADE, value);
            }
            parts
                .headers
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        // hyper keeps the upstream side of the upgrade in the response's extensions.
        let upstream_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        if let (Some(client), Some(upstream)) = (client_upgrade, upstream_upgrade) {
            tokio::spawn(tunnel(client, upstream));
        }
    }
    if !parts.headers.contains_key(SERVER) {
        parts.headers.insert(SERVER, SERVER_NAME);
    }
    if let Some(cookie) = set_cookie {
        parts.headers.append(SET_COOKIE, cookie);
    }
    Response::from_parts(parts, ProxyBody::upstream(Timed::new(body, read_timeout)))
}

/// Copies bytes both ways between the upgraded client and upstream connections. The tunnel
/// holds no configuration, so it outlives any number of table changes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut upstream = hyper_util::rt::TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(error = %e, "tunnel closed");
    }
}

/// How a client asks for a tunnel.
#[derive(Debug, Clone)]
struct Upgrade {
    /// The protocol, as `Upgrade` names it (`websocket`).
    protocol: HeaderValue,
    /// HTTP/2 extended CONNECT (RFC 8441) rather than an HTTP/1.1 `Upgrade`: the upstream
    /// still gets an HTTP/1.1 upgrade, and the client a 200 instead of the 101.
    extended_connect: bool,
}

/// The protocol a client asks to switch to: `Upgrade` with `Connection: upgrade` on
/// HTTP/1.1, or CONNECT with `:protocol` on HTTP/2.
fn upgrade_protocol(parts: &Parts) -> Option<Upgrade> {
    if parts.version == Version::HTTP_2 {
        if parts.method != Method::CONNECT {
            return None;
        }
        let protocol = parts.extensions.get::<hyper::ext::Protocol>()?;
        return Some(Upgrade {
            protocol: HeaderValue::from_str(protocol.as_str()).ok()?,
            extended_connect: true,
        });
    }
    if parts.version != Version::HTTP_11 {
        return None;
    }
    if !has_token(&parts.headers, &CONNECTION, "upgrade") {
        return None;
    }
    Some(Upgrade {
        protocol: parts.headers.get(UPGRADE)?.clone(),
        extended_connect: false,
    })
}

/// A `Sec-WebSocket-Key`: 16 random bytes in base64, for upstreams of extended CONNECT
/// clients, which send none (RFC 8441 section 5).
fn websocket_key() -> HeaderValue {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = fastrand::u128(..).to_be_bytes();
    let mut out = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    HeaderValue::try_from(out).unwrap_or(HeaderValue::from_static("dmVzdGlidWxlLXdzLWtleQ=="))
}

/// The request for one attempt, in the form the upstream's protocol wants.
/// What every attempt of one request sends, whichever endpoint it goes to.
struct Outgoing<'a> {
    parts: &'a Parts,
    /// The normalised path, and the query as sent.
    path_and_query: &'a str,
    host: &'a HeaderValue,
    forwarded: &'a Forwarded,
    protocol: UpstreamProtocol,
    upgrade: Option<&'a Upgrade>,
    grpc_trailers: bool,
}

fn upstream_request(
    outgoing: &Outgoing<'_>,
    endpoint: &EndpointAddress,
    body: UpstreamBody,
) -> Result<Request<UpstreamBody>, ProxyError> {
    let Outgoing {
        parts,
        path_and_query,
        host,
        forwarded,
        protocol,
        upgrade,
        grpc_trailers,
    } = *outgoing;
    let invalid = |_| ProxyError::BadRequest("the request target is not valid");
    let mut builder = Request::builder().method(parts.method.clone());
    let mut headers = parts.headers.clone();
    forwarded.apply(&mut headers);
    if upgrade.is_some_and(|u| u.extended_connect) {
        if protocol.is_http2() {
            return Err(ProxyError::BadRequest(
                "tunnels to HTTP/2 backends are not supported",
            ));
        }
        builder = builder.method(Method::GET);
        headers
            .entry(http::header::SEC_WEBSOCKET_KEY)
            .or_insert_with(websocket_key);
        headers
            .entry(http::header::SEC_WEBSOCKET_VERSION)
            .or_insert(HeaderValue::from_static("13"));
    }
    if protocol.is_http2() {
        // HTTP/2 carries the host as `:authority`; gRPC needs `te: trailers` kept.
        let authority = host
            .to_str()
            .ok()
            .filter(|h| !h.is_empty())
            .map_or_else(|| endpoint.to_string(), str::to_owned);
        let scheme = if protocol.is_tls() { "https" } else { "http" };
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path_and_query)
            .build()
            .map_err(invalid)?;
        headers.remove(HOST);
        if grpc_trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
        builder = builder.uri(uri).version(Version::HTTP_2);
    } else {
        let uri: Uri = path_and_query
            .parse()
            .map_err(|_| ProxyError::BadRequest("the request target is not valid"))?;
        // HTTP/2 carries the host in `:authority`, and an absolute-form HTTP/1.1 target
        // overrides `Host`: either way the upstream gets it as `Host`.
        headers.insert(HOST, host.clone());
        if let Some(upgrade) = upgrade {
            headers.insert(UPGRADE, upgrade.protocol.clone());
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        builder = builder.uri(uri).version(Version::HTTP_11);
    }
    let mut request = builder.body(body).map_err(invalid)?;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Refuses request lines and header blocks past the limits, as nginx's
/// `large_client_header_buffers` does. The header block's size, as HTTP/1.1 writes it, is
/// kept for the upstream request's buffer.
fn check_sizes(parts: &Parts, settings: &ProxySettings) -> Result<usize, ProxyError> {
    let uri_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > settings.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    let headers: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers > settings.max_request_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    Ok(headers)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Whether the request has no body at all, so it can be sent again without keeping a copy.
fn body_is_empty(parts: &Parts, body: &Incoming) -> bool {
    use http_body::Body as _;
    body.is_end_stream() || content_length(&parts.headers) == Some(0)
}

/// Methods nginx repeats on another upstream (it never repeats POST, LOCK or PATCH).
fn is_idempotent(method: &Method) -> bool {
    !matches!(method.as_str(), "POST" | "LOCK" | "PATCH")
}

/// The host the request is for: `:authority` for HTTP/2, the target's authority for an
/// absolute-form HTTP/1.1 request (RFC 9112 says to ignore `Host` then), else `Host`.
///
/// An HTTP/2 request whose `Host` names another host than its `:authority` is refused, as
/// RFC 9113 section 8.3.1 recommends: routing by one and forwarding the other is how cache
/// poisoning and routing confusion start. HTTP/1.1 without `Host` is refused (RFC 9112);
/// HTTP/1.0 without it gets the catch-all virtual host.
fn request_authority(parts: &Parts) -> Result<HeaderValue, ProxyError> {
    let header = parts.headers.get(HOST);
    match (parts.uri.authority(), header) {
        (Some(authority), Some(header)) if parts.version == Version::HTTP_2 => {
            let same = header
                .to_str()
                .is_ok_and(|h| request_host(h) == request_host(authority.as_str()));
            if !same {
                return Err(ProxyError::BadRequest(
                    "the Host header and :authority name different hosts",
                ));
            }
            HeaderValue::from_str(authority.as_str())
                .map_err(|_| ProxyError::BadRequest("the host is not valid"))
        }
        (Some(authority), _) => HeaderValue::from_str(authority.as_str())
            .map_err(|_| ProxyError::BadRequest("the host is not valid")),
        (None, Some(header)) => Ok(header.clone()),
        (None, None) if parts.version == Version::HTTP_10 => Ok(HeaderValue::from_static("")),
        (None, None) => Err(ProxyError::BadRequest("the request has no Host header")),
    }
}

/// Looks the request up in the installed table and decides: redirect, or forward to a
/// cluster. Sets `hsts` when the response is to carry `Strict-Transport-Security`.
fn route(
    dataplane: &DataPlane,
    client: ClientSide,
    host: &str,
    path: &str,
    hsts: &mut bool,
) -> Result<Step, ProxyError> {
    let runtime = dataplane.load_full();
    let lookup = runtime.table.lookup(host, path);
    *hsts = client.https && lookup.vhost.is_some_and(|v| v.tls);
    let (backend, policy, stats, origin) = match lookup.target {
        Target::Route(route) => {
            let wants_https = lookup.vhost.is_some_and(|v| route.redirects_http(v));
            // cert-manager's HTTP-01 solver answers on plain HTTP: redirecting it would stop
            // the certificate that makes HTTPS work from ever being issued.
            if wants_https && !client.https && !host.is_empty() && !is_acme_challenge(path) {
                return Ok(Step::Redirect);
            }
            (
                &route.backend,
                route.policy.proxy.clone(),
                runtime.route_stats(route.id),
                OriginAt::Route(route.id),
            )
        }
        Target::Default(default) => (
            &default.backend,
            runtime.default_policy.clone(),
            runtime.default_stats.clone(),
            OriginAt::Default,
        ),
        Target::NotFound => return Err(ProxyError::NoRoute),
    };
    let cluster = match backend {
        Backend::Cluster(id) => ClusterId(id.0),
        Backend::Unavailable { reason } => {
            return Err(ProxyError::BackendUnavailable(reason.clone()));
        }
    };
    if runtime.table.cluster(cluster).endpoints.is_empty() {
        return Err(ProxyError::NoEndpoints(
            runtime.table.cluster(cluster).key.to_string(),
        ));
    }
    Ok(Step::Forward(Plan {
        runtime,
        cluster,
        policy,
        stats,
        origin,
    }))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn is_acme_challenge(path: &str) -> bool {
    path.starts_with("/.well-known/acme-challenge/")
}
