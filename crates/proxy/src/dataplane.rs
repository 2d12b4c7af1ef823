//! The installed configuration: the routing table plus the runtime state that goes with it
//! (per-cluster balancers, TLS signing keys, each route's settled state: its policy, upstream
//! protocol and TLS client, metrics), swapped atomically. Requests and handshakes load it
//! without locks.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;
use rustls::sign::CertifiedKey;
use tracing::error;
use vestibule_model::{
    Backend, BackendProtocol, Canary, Certificate, ClusterKey, EndpointAddress, ExternalAuth,
    ProxyPolicy, Redirect, Refusal, Rewrite, RouteId, RouteOrigin, RoutePolicy, RouteTable,
    SourceRanges, UpstreamProtocol,
};

use crate::balance::ClusterBalancer;
use crate::crypto::{certified_key, provider};
use crate::observe::inspect::{ClusterHealth, EndpointHealth};
use crate::observe::metrics::{Metrics, RouteLabels, RouteStats};
use crate::request::access::BasicGuard;
use crate::request::auth::AuthService;
use crate::request::client_cert::ClientCertGuard;
use crate::request::cors::CorsFields;
use crate::request::limit::RateLimiter;
use crate::upstream::tls::{TlsClients, TlsResolved};

/// One installed table and the state that goes with its clusters and routes.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub(crate) table: Arc<RouteTable>,
    /// One per cluster, in cluster order.
    pub(crate) balancers: Vec<ClusterBalancer>,
    pub(crate) keys: Vec<Option<Arc<CertifiedKey>>>,
    /// What each route's requests need beyond the table, by route id.
    routes: Vec<RouteState>,
    /// The same for requests served by the default backend (or by none).
    default: RouteState,
    /// The TLS clients the routes use, for the next table to take over.
    tls_clients: TlsClients,
    /// Each rate-limited Ingress's counters, by zone, for the next table to take over.
    limiters: HashMap<Box<str>, Arc<RateLimiter>>,
}

/// Which part of the table a request was routed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteAt {
    Route(RouteId),
    Default,
}

/// What the data plane settled for one route (or the default backend) when its table was
/// installed: each setting a phase applies, ready to read, so that a request does no lookup,
/// parsing or allocation for it. A feature a route does not use costs it a branch.
#[derive(Debug)]
pub(crate) struct RouteState {
    /// Timeouts, retries, limits, balancing and upstream protocol: the route's Ingress's,
    /// or for the flag's default backend the controller-wide defaults.
    pub(crate) proxy: Arc<ProxyPolicy>,
    /// Set when its Ingress asks for protection that cannot be given: its requests get 503.
    pub(crate) refused: Option<Arc<Refusal>>,
    /// Every request is answered with this redirect.
    pub(crate) redirect: Option<Arc<Redirect>>,
    /// Every request is answered with this status and text.
    pub(crate) fixed: Option<Arc<vestibule_model::Fixed>>,
    /// The path the upstream gets.
    pub(crate) rewrite: Option<Arc<Rewrite>>,
    /// The `Host` the upstream gets, instead of the client's.
    pub(crate) upstream_host: Option<HeaderValue>,
    /// Users and password checks of basic authentication.
    pub(crate) basic_auth: Option<Arc<BasicGuard>>,
    /// The service every request is first put to (`auth-url`).
    pub(crate) external_auth: Option<Arc<AuthService>>,
    /// The client certificate check (`auth-tls-*`).
    pub(crate) client_cert: Option<Arc<ClientCertGuard>>,
    /// Which client addresses may use it (`*-source-range`).
    pub(crate) source_ranges: Option<Arc<SourceRanges>>,
    /// Its Ingress's request-rate limits, with their counters (`limit-*`).
    pub(crate) limiter: Option<Arc<RateLimiter>>,
    /// How its requests reach the backend; `None` for a backend that cannot be served.
    pub(crate) upstream: Option<Upstream>,
    /// Its metrics, when metrics are on.
    pub(crate) stats: Option<Arc<RouteStats>>,
    /// A canary Ingress's share of its requests.
    pub(crate) canary: Option<CanaryState>,
    /// Its CORS fields (`enable-cors`).
    pub(crate) cors: Option<Arc<CorsFields>>,
    /// Where its requests go when its cluster has no ready endpoints (`default-backend`).
    pub(crate) fallback: Option<(vestibule_model::ClusterId, Upstream)>,
    /// Where its responses of listed statuses are replaced from (`custom-http-errors`).
    pub(crate) custom_errors: Option<ErrorBackend>,
    /// Its header rules.
    pub(crate) headers: Option<Arc<vestibule_model::HeaderRules>>,
}

/// A route's error backend (`custom-http-errors`): the statuses it takes over, and where
/// it is.
#[derive(Debug)]
pub(crate) struct ErrorBackend {
    pub(crate) codes: Arc<[u16]>,
    pub(crate) cluster: vestibule_model::ClusterId,
    pub(crate) upstream: Upstream,
}

impl ErrorBackend {
    pub(crate) fn takes(&self, status: u16) -> bool {
        self.codes.contains(&status)
    }
}

/// The canary side of a route: which requests go there, how they reach its backend, and
/// its own metrics (under the canary Ingress's and Service's names).
#[derive(Debug)]
pub(crate) struct CanaryState {
    pub(crate) canary: Arc<Canary>,
    pub(crate) upstream: Option<Upstream>,
    pub(crate) stats: Option<Arc<RouteStats>>,
}

impl RouteState {
    /// A route with this proxy policy and nothing else: no access control, rewrite, rules or
    /// upstream (requests that no route claims).
    pub(crate) fn bare(proxy: Arc<ProxyPolicy>) -> RouteState {
        RouteState {
            proxy,
            refused: None,
            redirect: None,
            fixed: None,
            rewrite: None,
            upstream_host: None,
            basic_auth: None,
            external_auth: None,
            client_cert: None,
            source_ranges: None,
            limiter: None,
            upstream: None,
            stats: None,
            canary: None,
            cors: None,
            fallback: None,
            custom_errors: None,
            headers: None,
        }
    }
}

/// How a route's requests reach its backend, settled when the table is installed so that a
/// request only reads it.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) protocol: UpstreamProtocol,
    /// The TLS client, when `protocol` is TLS.
    pub(crate) tls: Option<TlsResolved>,
}

impl Runtime {
    fn new(
        table: Arc<RouteTable>,
        previous: Option<&Runtime>,
        default_policy: Arc<ProxyPolicy>,
        metrics: Option<&Metrics>,
        max_clients: usize,
    ) -> Runtime {
        // Rotation, response-time averages and ejections carry over by cluster key and
        // endpoint address, so an endpoint change elsewhere resets nothing here.
        let carried: HashMap<&ClusterKey, &ClusterBalancer> = previous
            .map(|p| {
                p.table
                    .clusters()
                    .iter()
                    .zip(&p.balancers)
                    .map(|(c, b)| (&c.key, b))
                    .collect()
            })
            .unwrap_or_default();
        let balancers = table
            .clusters()
            .iter()
            .map(|c| {
                ClusterBalancer::new(
                    &c.endpoints,
                    carried.get(&c.key).copied(),
                    fastrand::usize(..),
                )
            })
            .collect();
        let keys = signing_keys(&table, previous);
        let mut tls_clients = TlsClients::default();
        // Verified passwords carry over while a route's Secret stays the same.
        let guards: HashMap<u64, Arc<BasicGuard>> = previous
            .map(|p| {
                p.routes
                    .iter()
                    .chain([&p.default])
                    .filter_map(|r| r.basic_auth.as_ref())
                    .map(|g| (g.version(), Arc::clone(g)))
                    .collect()
            })
            .unwrap_or_default();
        let mut settle = Settle {
            table: &table,
            guards: &guards,
            metrics,
            previous_clients: previous.map(|p| &p.tls_clients),
            tls_clients: &mut tls_clients,
            previous_limiters: previous.map(|p| &p.limiters),
            limiters: HashMap::new(),
            max_clients,
        };
        let routes = table
            .routes()
            .iter()
            .map(|route| {
                let labels = Labels {
                    origin: Some(&route.origin),
                    host: Some(route.host.to_string().into()),
                };
                let mut state = settle.route(&route.backend, &route.policy, labels);
                state.canary = route.canary.as_ref().map(|canary| {
                    settle.canary(canary, &state.proxy, route.host.to_string().into())
                });
                state
            })
            .collect();
        let default = match table.default_backend() {
            Some(default) => {
                let flags = RoutePolicy {
                    proxy: default_policy,
                    ..RoutePolicy::default()
                };
                let policy = default.policy.as_deref().unwrap_or(&flags);
                let labels = Labels {
                    origin: default.origin.as_ref(),
                    host: None,
                };
                settle.route(&default.backend, policy, labels)
            }
            None => RouteState::bare(default_policy),
        };
        let limiters = settle.limiters;
        Runtime {
            table,
            balancers,
            keys,
            routes,
            default,
            tls_clients,
            limiters,
        }
    }

    /// What a route's requests need beyond the table.
    #[inline]
    pub(crate) fn route_state(&self, at: RouteAt) -> &RouteState {
        match at {
            RouteAt::Route(id) => self.routes.get(id.0 as usize).unwrap_or(&self.default),
            RouteAt::Default => &self.default,
        }
    }
}

/// Where a route came from, for its metrics' labels.
struct Labels<'a> {
    origin: Option<&'a RouteOrigin>,
    host: Option<Box<str>>,
}

/// Settles each route's state as a table is installed.
struct Settle<'a> {
    table: &'a RouteTable,
    guards: &'a HashMap<u64, Arc<BasicGuard>>,
    metrics: Option<&'a Metrics>,
    previous_clients: Option<&'a TlsClients>,
    tls_clients: &'a mut TlsClients,
    previous_limiters: Option<&'a HashMap<Box<str>, Arc<RateLimiter>>>,
    /// The new table's, by zone: every route of an Ingress shares its Ingress's.
    limiters: HashMap<Box<str>, Arc<RateLimiter>>,
    max_clients: usize,
}

impl Settle<'_> {
    fn route(&mut self, backend: &Backend, policy: &RoutePolicy, labels: Labels<'_>) -> RouteState {
        let proxy = Arc::clone(&policy.proxy);
        let stats = self.metrics.map(|metrics| {
            let (namespace, ingress) = labels
                .origin
                .map_or(("", ""), |o| (&*o.namespace, &*o.name));
            metrics.route_stats(RouteLabels {
                namespace: namespace.into(),
                ingress: ingress.into(),
                service: service_of(self.table, backend).into(),
                host: labels.host,
            })
        });
        let upstream = self.upstream(backend, &proxy);
        RouteState {
            proxy,
            refused: policy.refused.clone(),
            redirect: policy.redirect.clone(),
            fixed: policy.fixed.clone(),
            rewrite: policy.rewrite.clone(),
            // Checked in the compile as a host name with an optional port.
            upstream_host: policy
                .upstream_host
                .as_deref()
                .and_then(|h| HeaderValue::from_str(h).ok()),
            basic_auth: policy.basic_auth.as_ref().map(|auth| {
                self.guards
                    .get(&auth.version)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(BasicGuard::new(Arc::clone(auth))))
            }),
            external_auth: policy
                .external_auth
                .as_ref()
                .map(|auth| Arc::new(self.auth_service(auth))),
            client_cert: policy
                .client_auth
                .as_ref()
                .map(|auth| Arc::new(ClientCertGuard::new(Arc::clone(auth)))),
            source_ranges: policy.source_ranges.clone(),
            limiter: policy.rate_limit.as_ref().map(|limit| self.limiter(limit)),
            upstream,
            stats,
            canary: None,
            cors: policy.cors.as_ref().and_then(CorsFields::new).map(Arc::new),
            fallback: match &policy.fallback {
                Some(backend @ Backend::Cluster(id)) => {
                    self.upstream(backend, &policy.proxy).map(|u| (*id, u))
                }
                _ => None,
            },
            custom_errors: policy
                .custom_errors
                .as_ref()
                .and_then(|codes| self.error_backend(codes, policy)),
            headers: policy.headers.clone(),
        }
    }

    /// The error backend of a route with `custom-http-errors`: its `default-backend`, else
    /// the controller's (`--default-backend-service`); none, no interception.
    fn error_backend(&mut self, codes: &Arc<[u16]>, policy: &RoutePolicy) -> Option<ErrorBackend> {
        let flags = self
            .table
            .default_backend()
            .filter(|d| d.origin.is_none())
            .map(|d| &d.backend);
        let backend = policy.fallback.as_ref().or(flags)?;
        let Backend::Cluster(cluster) = backend else {
            return None;
        };
        Some(ErrorBackend {
            codes: Arc::clone(codes),
            cluster: *cluster,
            upstream: self.upstream(backend, &policy.proxy)?,
        })
    }

    /// The counters for an Ingress's limits: the previous table's while the limits are the
    /// same, so that a change elsewhere refills nobody's budget.
    fn limiter(&mut self, limit: &Arc<vestibule_model::RateLimit>) -> Arc<RateLimiter> {
        let same = |l: &&Arc<RateLimiter>| **l.limit() == **limit;
        if let Some(limiter) = self.limiters.get(&limit.zone).filter(same) {
            return Arc::clone(limiter);
        }
        let limiter = self
            .previous_limiters
            .and_then(|p| p.get(&limit.zone))
            .filter(same)
            .cloned()
            .unwrap_or_else(|| Arc::new(RateLimiter::new(Arc::clone(limit), self.max_clients)));
        self.limiters
            .insert(limit.zone.clone(), Arc::clone(&limiter));
        limiter
    }

    /// A route's canary side: its upstream settled as the route's, with the route's policy,
    /// and metrics of its own.
    fn canary(&mut self, canary: &Arc<Canary>, proxy: &ProxyPolicy, host: Box<str>) -> CanaryState {
        let stats = self.metrics.map(|metrics| {
            metrics.route_stats(RouteLabels {
                namespace: canary.origin.namespace.clone(),
                ingress: canary.origin.name.clone(),
                service: service_of(self.table, &canary.backend).into(),
                host: Some(host),
            })
        });
        CanaryState {
            canary: Arc::clone(canary),
            upstream: self.upstream(&canary.backend, proxy),
            stats,
        }
    }

    /// How an external authentication service is reached: its address and TLS client,
    /// settled like an upstream's.
    fn auth_service(&mut self, auth: &Arc<ExternalAuth>) -> AuthService {
        let endpoint = match auth.host.parse::<std::net::IpAddr>() {
            Ok(ip) => EndpointAddress::Socket(std::net::SocketAddr::new(ip, auth.port)),
            Err(_) => EndpointAddress::Dns {
                host: auth.host.clone(),
                port: auth.port,
            },
        };
        let tls = auth.https.then(|| {
            self.tls_clients
                .resolve(self.previous_clients, None, false, &auth.host)
        });
        AuthService::new(Arc::clone(auth), endpoint, tls)
    }

    fn upstream(&mut self, backend: &Backend, policy: &ProxyPolicy) -> Option<Upstream> {
        let Backend::Cluster(id) = backend else {
            return None;
        };
        let cluster = self.table.cluster(*id);
        let protocol = policy
            .backend_protocol
            .map_or(cluster.protocol, protocol_of);
        let tls = protocol.is_tls().then(|| {
            // Verified against, and sent when asked, unless `proxy-ssl-name` says otherwise:
            // the Service's DNS name.
            let name = format!("{}.{}.svc", cluster.key.service, cluster.key.namespace);
            let settings = policy.upstream_tls.as_deref();
            self.tls_clients
                .resolve(self.previous_clients, settings, protocol.is_http2(), &name)
        });
        Some(Upstream { protocol, tls })
    }
}

fn protocol_of(protocol: BackendProtocol) -> UpstreamProtocol {
    match protocol {
        BackendProtocol::Http => UpstreamProtocol::Http1,
        BackendProtocol::Https => UpstreamProtocol::Https,
        BackendProtocol::Grpc | BackendProtocol::H2c => UpstreamProtocol::H2c,
        BackendProtocol::Grpcs => UpstreamProtocol::H2Tls,
    }
}

/// The Service a backend names, empty for one that cannot be served.
fn service_of<'t>(table: &'t RouteTable, backend: &Backend) -> &'t str {
    match backend {
        Backend::Cluster(id) => &table.cluster(*id).key.service,
        Backend::Unavailable { .. } => "",
    }
}

fn signing_keys(table: &RouteTable, previous: Option<&Runtime>) -> Vec<Option<Arc<CertifiedKey>>> {
    fn material(c: &Certificate) -> (&[Vec<u8>], &[u8]) {
        (&c.chain, &c.key)
    }
    let reusable: HashMap<_, &Arc<CertifiedKey>> = previous
        .map(|p| {
            p.table
                .tls()
                .certificates()
                .iter()
                .zip(&p.keys)
                .filter_map(|(c, k)| Some((material(c), k.as_ref()?)))
                .collect()
        })
        .unwrap_or_default();
    let provider = provider();
    table
        .tls()
        .certificates()
        .iter()
        .map(|certificate| {
            if let Some(key) = reusable.get(&material(certificate)) {
                return Some((*key).clone());
            }
            match certified_key(certificate, &provider) {
                Ok(key) => Some(key),
                Err(e) => {
                    error!(error = %e, "certificate not installed; its hosts get the default");
                    None
                }
            }
        })
        .collect()
}

/// What the listeners serve from. Starts empty (every request gets 404) until the first
/// table is installed.
#[derive(Debug)]
pub struct DataPlane {
    runtime: ArcSwap<Runtime>,
    default_policy: Arc<ProxyPolicy>,
    metrics: Option<Arc<Metrics>>,
    /// Requests that matched nothing, counted under empty labels.
    unrouted: Option<Arc<RouteStats>>,
    /// Clients each rate-limited Ingress tracks at most (`--limit-max-clients`).
    max_clients: usize,
}

/// Clients a rate-limited Ingress tracks at most unless set otherwise: about 13 MB.
pub(crate) const DEFAULT_LIMIT_MAX_CLIENTS: usize = 100_000;

impl Default for DataPlane {
    fn default() -> Self {
        DataPlane::with_default_policy(Arc::default())
    }
}

impl DataPlane {
    pub fn new() -> Arc<DataPlane> {
        Arc::new(DataPlane::default())
    }

    /// A data plane whose flag-configured default backend is proxied with `policy` (the
    /// controller-wide defaults; Ingresses carry their own).
    pub fn with_default_policy(policy: Arc<ProxyPolicy>) -> DataPlane {
        DataPlane::with_metrics(policy, None)
    }

    /// As [`DataPlane::with_default_policy`], recording request metrics into `metrics`.
    pub fn with_metrics(policy: Arc<ProxyPolicy>, metrics: Option<Arc<Metrics>>) -> DataPlane {
        let unrouted = metrics.as_ref().map(|m| {
            m.route_stats(RouteLabels {
                namespace: Box::from(""),
                ingress: Box::from(""),
                service: Box::from(""),
                host: None,
            })
        });
        DataPlane {
            runtime: ArcSwap::from_pointee(Runtime::new(
                Arc::default(),
                None,
                policy.clone(),
                metrics.as_deref(),
                DEFAULT_LIMIT_MAX_CLIENTS,
            )),
            default_policy: policy,
            metrics,
            unrouted,
            max_clients: DEFAULT_LIMIT_MAX_CLIENTS,
        }
    }

    /// Sets how many clients each rate-limited Ingress tracks at most; past it, the client
    /// seen least recently is forgotten. Tables installed from here on use it.
    pub fn with_limit_max_clients(mut self, max_clients: usize) -> DataPlane {
        self.max_clients = max_clients.max(1);
        self
    }

    /// Where requests no route claimed are counted, when metrics are on.
    pub(crate) fn unrouted_stats(&self) -> Option<&Arc<RouteStats>> {
        self.unrouted.as_ref()
    }

    /// Installs a new table. Requests already under way finish on the table they started
    /// with; connections are not touched.
    pub fn install(&self, table: Arc<RouteTable>) {
        let previous = self.runtime.load();
        let next = Runtime::new(
            table,
            Some(&previous),
            self.default_policy.clone(),
            self.metrics.as_deref(),
            self.max_clients,
        );
        drop(previous);
        self.runtime.store(Arc::new(next));
        if let Some(metrics) = &self.metrics {
            // Label sets of routes gone with the previous table stop being reported.
            metrics.prune();
        }
    }

    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<Runtime>> {
        self.runtime.load()
    }

    /// The installed runtime, kept alive for as long as the caller holds it: a request and
    /// its retries finish on the table they started with.
    pub(crate) fn load_full(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// For each rate-limited Ingress (`namespace/name`), the clients it tracks now.
    pub fn rate_limited_clients(&self) -> Vec<(Box<str>, usize)> {
        let runtime = self.runtime.load();
        let mut zones: Vec<(Box<str>, usize)> = runtime
            .limiters
            .iter()
            .map(|(zone, limiter)| (zone.clone(), limiter.tracked()))
            .collect();
        zones.sort();
        zones
    }

    /// The table currently installed.
    pub fn table(&self) -> Arc<RouteTable> {
        self.runtime.load().table.clone()
    }

    /// Every cluster of the installed table with its endpoints' passive health, in the
    /// table's cluster order.
    pub fn endpoint_health(&self) -> Vec<ClusterHealth> {
        let runtime = self.runtime.load();
        let now = crate::balance::now_nanos();
        let mut routes = vec![0; runtime.table.clusters().len()];
        for route in runtime.table.routes() {
            if let Backend::Cluster(id) = route.backend
                && let Some(count) = routes.get_mut(id.0 as usize)
            {
                *count += 1;
            }
        }
        runtime
            .table
            .clusters()
            .iter()
            .zip(&runtime.balancers)
            .zip(routes)
            .map(|((cluster, balancer), routes)| ClusterHealth {
                namespace: cluster.key.namespace.to_string(),
                service: cluster.key.service.to_string(),
                port: cluster.key.port,
                routes,
                endpoints: balancer
                    .members()
                    .map(|(address, stats)| EndpointHealth {
                        address: address.to_owned(),
                        ejected: !stats.health.available(now),
                        in_flight: stats.ewma.in_flight(),
                    })
                    .collect(),
            })
            .collect()
    }
}
