//! Publish: each compiled configuration becomes an immutable snapshot with a generation
//! number, swapped in atomically; readers load it without locks and are told when it changes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use serde::Serialize;
use tokio::sync::watch;
use vestibule_model::RouteTable;
use vestibule_translate::{Compiled, Report, Snapshot};

use crate::SourceProblem;

/// How many objects of each kind the compile read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ObjectCounts {
    pub ingress_classes: usize,
    pub ingresses: usize,
    pub services: usize,
    pub endpoint_slices: usize,
    pub secrets: usize,
    pub config_maps: usize,
}

impl ObjectCounts {
    pub fn of(snapshot: &Snapshot) -> ObjectCounts {
        ObjectCounts {
            ingress_classes: snapshot.ingress_classes.len(),
            ingresses: snapshot.ingresses.len(),
            services: snapshot.services.len(),
            endpoint_slices: snapshot.endpoint_slices.len(),
            secrets: snapshot.secrets.len(),
            config_maps: snapshot.config_maps.len(),
        }
    }
}

/// One published configuration.
#[derive(Debug)]
pub struct Published {
    /// Starts at 1 and grows by one with every configuration that differs from the last.
    pub generation: u64,
    pub table: Arc<RouteTable>,
    pub report: Report,
    pub problems: Vec<SourceProblem>,
    pub objects: ObjectCounts,
    pub published_at: SystemTime,
    pub compile_time: Duration,
}

/// The current configuration, and a signal for those who follow it.
#[derive(Debug)]
pub struct Publisher {
    current: ArcSwapOption<Published>,
    generation: watch::Sender<u64>,
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher {
            current: ArcSwapOption::empty(),
            generation: watch::Sender::new(0),
        }
    }
}

impl Publisher {
    pub fn new() -> Arc<Publisher> {
        Arc::new(Publisher::default())
    }

    /// Publishes a compile result unless it equals the current configuration. Returns the
    /// new generation, or `None` when nothing changed.
    pub fn publish(
        &self,
        compiled: Compiled,
        problems: Vec<SourceProblem>,
        objects: ObjectCounts,
        compile_time: Duration,
    ) -> Option<u64> {
        let previous = self.current.load_full();
        if let Some(previous) = &previous
            && *previous.table == compiled.table
            && previous.report == compiled.report
            && previous.problems == problems
        {
            return None;
        }
        let generation = previous.map_or(1, |p| p.generation + 1);
        self.current.store(Some(Arc::new(Published {
            generation,
            table: Arc::new(compiled.table),
            report: compiled.report,
            problems,
            objects,
            published_at: SystemTime::now(),
            compile_time,
        })));
        self.generation.send_replace(generation);
        Some(generation)
    }

    /// The current configuration; `None` until the first publish.
    pub fn current(&self) -> Option<Arc<Published>> {
        self.current.load_full()
    }

    /// Follows the generation number (0 before the first publish).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
