//! The installed configuration: the routing table plus the runtime state that goes with it
//! (per-cluster balancers, TLS signing keys), swapped atomically. Requests and handshakes
//! load it without locks.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use tracing::error;
use vestibule_model::{Certificate, ClusterKey, ProxyPolicy, RouteTable};

use crate::balance::ClusterBalancer;
use crate::tls::{certified_key, provider};

/// One installed table and the state that goes with its clusters.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub(crate) table: Arc<RouteTable>,
    /// One per cluster, in cluster order.
    pub(crate) balancers: Vec<ClusterBalancer>,
    pub(crate) keys: Vec<Option<Arc<CertifiedKey>>>,
    /// For requests served by the flag's default backend, which no Ingress annotates.
    pub(crate) default_policy: Arc<ProxyPolicy>,
}

impl Runtime {
    fn new(
        table: Arc<RouteTable>,
        previous: Option<&Runtime>,
        default_policy: Arc<ProxyPolicy>,
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
        Runtime {
            table,
            balancers,
            keys,
            default_policy,
        }
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
        DataPlane {
            runtime: ArcSwap::from_pointee(Runtime::new(Arc::default(), None, policy.clone())),
            default_policy: policy,
        }
    }

    /// Installs a new table. Requests already under way finish on the table they started
    /// with; connections are not touched.
    pub fn install(&self, table: Arc<RouteTable>) {
        let previous = self.runtime.load();
        let next = Runtime::new(table, Some(&previous), self.default_policy.clone());
        self.runtime.store(Arc::new(next));
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
