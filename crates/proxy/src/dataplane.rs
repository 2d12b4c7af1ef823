//! The installed configuration: the routing table plus the runtime state that goes with it
//! (per-cluster balancers, TLS signing keys), swapped atomically. Requests and handshakes
//! load it without locks.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use tracing::error;
use vestibule_model::{Certificate, ClusterKey, RouteTable};

use crate::balance::RoundRobin;
use crate::tls::{certified_key, provider};

/// One installed table and the state that goes with its clusters.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub(crate) table: Arc<RouteTable>,
    /// Indexed by `ClusterId`.
    pub(crate) balancers: Vec<RoundRobin>,
    /// Signing keys, indexed like `table.tls().certificates()`. `None` for a certificate the
    /// TLS library refused, whose names then get the fallback certificate.
    pub(crate) keys: Vec<Option<Arc<CertifiedKey>>>,
}

impl Runtime {
    fn new(table: Arc<RouteTable>, previous: Option<&Runtime>) -> Runtime {
        // Carry each cluster's rotation over, so a table change (an endpoint added, say)
        // does not send the next request of every cluster to its first endpoint.
        let carried: HashMap<&ClusterKey, usize> = previous
            .map(|p| {
                p.table
                    .clusters()
                    .iter()
                    .zip(&p.balancers)
                    .map(|(c, b)| (&c.key, b.position()))
                    .collect()
            })
            .unwrap_or_default();
        let balancers = table
            .clusters()
            .iter()
            .map(|c| {
                let start = carried
                    .get(&c.key)
                    .copied()
                    .unwrap_or_else(|| fastrand::usize(..));
                RoundRobin::starting_at(start)
            })
            .collect();
        let keys = signing_keys(&table, previous);
        Runtime {
            table,
            balancers,
            keys,
        }
    }
}

/// Makes a signing key for each certificate of `table`, reusing the previous runtime's key for
/// a certificate that has not changed: loading keys costs more than the rest of an install.
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
}

impl Default for DataPlane {
    fn default() -> Self {
        DataPlane {
            runtime: ArcSwap::from_pointee(Runtime::new(Arc::default(), None)),
        }
    }
}

impl DataPlane {
    pub fn new() -> Arc<DataPlane> {
        Arc::new(DataPlane::default())
    }

    /// Installs a new table. Requests already under way finish on the table they started
    /// with; connections are not touched.
    pub fn install(&self, table: Arc<RouteTable>) {
        let previous = self.runtime.load();
        let next = Runtime::new(table, Some(&previous));
        self.runtime.store(Arc::new(next));
    }

    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<Runtime>> {
        self.runtime.load()
    }

    /// The table currently installed.
    pub fn table(&self) -> Arc<RouteTable> {
        self.runtime.load().table.clone()
    }
}
