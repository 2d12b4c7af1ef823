//! What the data plane tells operators: the request record each request fills in and hands
//! over once it is done, the Prometheus metrics, and the access log.

use std::sync::Arc;

use access_log::AccessLog;
use metrics::Metrics;

pub(crate) mod access_log;
pub(crate) mod inspect;
pub(crate) mod metrics;
pub(crate) mod record;

/// What the data plane reports to: request metrics and the access log, each optional.
#[derive(Debug, Clone, Default)]
pub struct Observability {
    pub metrics: Option<Arc<Metrics>>,
    pub access_log: Option<AccessLog>,
}
