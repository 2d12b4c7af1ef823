//! The installed configuration: the routing table plus the runtime state that goes with it
//! (per-cluster balancers, TLS signing keys, each route's upstream protocol and TLS client),
//! swapped atomically. Requests and handshakes load it without locks.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use tracing::error;
use vestibule_model::{
    Backend, BackendProtocol, Certificate, ClusterKey, ProxyPolicy, RouteId, RouteTable,
    UpstreamProtocol,
};

use crate::metrics::{Metrics, RouteLabels, RouteStats};

use crate::balance::ClusterBalancer;
use crate::tls::{certified_key, provider};
use crate::upstream::{TlsClients, TlsResolved};

/// One installed table and the state that goes with its clusters.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub(crate) table: Arc<RouteTable>,
    /// One per cluster, in cluster order.
    pub(crate) balancers: Vec<ClusterBalancer>,
    pub(crate) keys: Vec<Option<Arc<CertifiedKey>>>,
    /// For requests served by the default backend: its Ingress's policy, or the
    /// controller-wide defaults for the flag's, which no Ingress annotates.
    pub(crate) default_policy: Arc<ProxyPolicy>,
    /// Metrics of each route, by route id, when metrics are on.
    route_stats: Vec<Arc<RouteStats>>,
    pub(crate) default_stats: Option<Arc<RouteStats>>,
    /// How each route's requests reach its backend, by route id; `None` for a backend that
    /// cannot be served.
    upstreams: Vec<Option<Upstream>>,
    default_upstream: Option<Upstream>,
    /// The TLS clients `upstreams` use, for the next table to take over.
    tls_clients: TlsClients,
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
        let (route_stats, default_stats) = match metrics {
            Some(metrics) => {
                let labels = |namespace: &str, ingress: &str, service: &str, host| RouteLabels {
                    namespace: namespace.into(),
                    ingress: ingress.into(),
                    service: service.into(),
                    host,
                };
                let routes = table
                    .routes()
                    .iter()
                    .map(|route| {
                        metrics.route_stats(labels(
                            &route.origin.namespace,
                            &route.origin.name,
                            service_of(&table, &route.backend),
                            Some(route.host.to_string().into()),
                        ))
                    })
                    .collect();
                let default = table.default_backend().map(|default| {
                    let (namespace, ingress) = default
                        .origin
                        .as_ref()
                        .map_or(("", ""), |o| (&*o.namespace, &*o.name));
                    let service = service_of(&table, &default.backend);
                    metrics.route_stats(labels(namespace, ingress, service, None))
                });
                (routes, default)
            }
            None => (Vec::new(), None),
        };
        let mut tls_clients = TlsClients::default();
        let previous_clients = previous.map(|p| &p.tls_clients);
        let mut upstream = |backend: &Backend, policy: &ProxyPolicy| {
            let Backend::Cluster(id) = backend else {
                return None;
            };
            let cluster = table.cluster(*id);
            let protocol = policy
                .backend_protocol
                .map_or(cluster.protocol, protocol_of);
            let tls = protocol.is_tls().then(|| {
                // Verified against, and sent when asked, unless `proxy-ssl-name` says
                // otherwise: the Service's DNS name.
                let name = format!("{}.{}.svc", cluster.key.service, cluster.key.namespace);
                let settings = policy.upstream_tls.as_deref();
                tls_clients.resolve(previous_clients, settings, protocol.is_http2(), &name)
            });
            Some(Upstream { protocol, tls })
        };
        let upstreams = table
            .routes()
            .iter()
            .map(|route| upstream(&route.backend, &route.policy.proxy))
            .collect();
        let default_policy = table
            .default_backend()
            .and_then(|default| default.proxy.clone())
            .unwrap_or(default_policy);
        let default_upstream = table
            .default_backend()
            .and_then(|default| upstream(&default.backend, &default_policy));
        Runtime {
            table,
            balancers,
            keys,
            default_policy,
            route_stats,
            default_stats,
            upstreams,
            default_upstream,
            tls_clients,
        }
    }

    /// How a route's requests reach its backend; the default backend's for `None`.
    pub(crate) fn upstream(&self, route: Option<RouteId>) -> Option<&Upstream> {
        match route {
            Some(id) => self.upstreams.get(id.0 as usize)?.as_ref(),
            None => self.default_upstream.as_ref(),
        }
    }

    /// The metrics of a route, when metrics are on.
    pub(crate) fn route_stats(&self, id: RouteId) -> Option<Arc<RouteStats>> {
        self.route_stats.get(id.0 as usize).cloned()
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
}

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
            )),
            default_policy: policy,
            metrics,
            unrouted,
        }
    }

    pub(crate) fn unrouted_stats(&self) -> Option<Arc<RouteStats>> {
        self.unrouted.clone()
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

    /// The table currently installed.
    pub fn table(&self) -> Arc<RouteTable> {
        self.runtime.load().table.clone()
    }
}
