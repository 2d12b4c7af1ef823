//! The installed configuration: the routing table plus per-cluster runtime state (the
//! balancers), swapped atomically. Requests load it without locks.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use vestibule_model::{ClusterKey, RouteTable};

use crate::balance::RoundRobin;

/// One installed table and the state that goes with its clusters.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub(crate) table: Arc<RouteTable>,
    /// Indexed by `ClusterId`.
    pub(crate) balancers: Vec<RoundRobin>,
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
        Runtime { table, balancers }
    }
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
