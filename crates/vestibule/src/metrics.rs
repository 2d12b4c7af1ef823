//! Metrics about configuration, certificates and the controller, read at scrape time from what
//! is published: nothing here is on the request path. The proxy's request metrics are
//! registered next to these (`vestibule_proxy::metrics`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::UNIX_EPOCH;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::sync::watch;
use vestibule_controller::Publisher;
use vestibule_controller::kubernetes::SourceStats;
use vestibule_model::CertificateRef;
use vestibule_translate::{Kind, Severity};

/// What exists only when running against the API server, set once it has started.
#[derive(Debug)]
pub(crate) struct ClusterHandles {
    pub leader: watch::Receiver<bool>,
    pub stats: Arc<SourceStats>,
}

/// The configuration collector.
#[derive(Debug)]
pub(crate) struct ConfigCollector {
    pub publisher: Arc<Publisher>,
    pub cluster: Arc<OnceLock<ClusterHandles>>,
    pub dataplane: Arc<vestibule_proxy::DataPlane>,
}

const KINDS: [(Kind, &str); 6] = [
    (Kind::IngressClass, "ingressclass"),
    (Kind::Ingress, "ingress"),
    (Kind::Service, "service"),
    (Kind::EndpointSlice, "endpointslice"),
    (Kind::Secret, "secret"),
    (Kind::ConfigMap, "configmap"),
];

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

impl Collector for ConfigCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(cluster) = self.cluster.get() {
            let stats = &cluster.stats;
            let metric = encoder.encode_descriptor(
                "vestibule_watch_errors",
                "Kubernetes API watch failures, each retried with back-off.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(stats.watch_errors.load(Ordering::Relaxed)).encode(metric)?;
            let metric = encoder.encode_descriptor(
                "vestibule_watch_relists",
                "Full relists after the first (410 Gone, or a watch that could not resume).",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(stats.relists.load(Ordering::Relaxed)).encode(metric)?;
            let leading = if *cluster.leader.borrow() { 1.0 } else { 0.0 };
            gauge(
                &mut encoder,
                "vestibule_leader",
                "1 while this replica is the elected leader (writes status and Events).",
                leading,
            )?;
        }
        let zones = self.dataplane.rate_limited_clients();
        if !zones.is_empty() {
            let mut metric = encoder.encode_descriptor(
                "vestibule_rate_limit_clients",
                "Clients a rate-limited Ingress tracks (capped by --limit-max-clients).",
                None,
                MetricType::Gauge,
            )?;
            for (zone, clients) in zones {
                let (namespace, ingress) = zone.split_once('/').unwrap_or(("", &zone));
                let labels = [("namespace", namespace), ("ingress", ingress)];
                ConstGauge::new(clients as i64).encode(metric.encode_family(&labels)?)?;
            }
        }
        let Some(published) = self.publisher.current() else {
            return Ok(());
        };
        gauge(
            &mut encoder,
            "vestibule_config_generation",
            "Generation of the published configuration.",
            published.generation as f64,
        )?;
        gauge(
            &mut encoder,
            "vestibule_config_last_compile_seconds",
            "Time the last compile took.",
            published.compile_time.as_secs_f64(),
        )?;
        let published_at = published
            .published_at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        gauge(
            &mut encoder,
            "vestibule_config_last_publish_timestamp_seconds",
            "When the current configuration was published (Unix time).",
            published_at,
        )?;
        let objects = published.objects;
        let counts = [
            objects.ingress_classes,
            objects.ingresses,
            objects.services,
            objects.endpoint_slices,
            objects.secrets,
            objects.config_maps,
        ];
        let mut metric = encoder.encode_descriptor(
            "vestibule_config_objects",
            "Objects the last compile read, by kind.",
            None,
            MetricType::Gauge,
        )?;
        for ((_, kind), count) in KINDS.iter().zip(counts) {
            ConstGauge::new(count as i64).encode(metric.encode_family(&[("kind", *kind)])?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "vestibule_config_diagnostics",
            "Diagnostics of the last compile, by object kind and severity.",
            None,
            MetricType::Gauge,
        )?;
        for (kind, kind_name) in KINDS {
            for (severity, severity_name) in [
                (Severity::Error, "error"),
                (Severity::Warning, "warning"),
                (Severity::Info, "info"),
            ] {
                let count = published
                    .report
                    .diagnostics
                    .iter()
                    .filter(|d| d.object.kind == kind && d.severity == severity)
                    .count();
                let labels = [("kind", kind_name), ("severity", severity_name)];
                ConstGauge::new(count as i64).encode(metric.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut encoder,
            "vestibule_config_ingresses_served",
            "Ingresses of this controller's class in the configuration.",
            published.report.ours().count() as f64,
        )?;
        let tls = published.table.tls();
        let mut metric = encoder.encode_descriptor(
            "vestibule_certificate_expiry_timestamp_seconds",
            "When the certificate served for a TLS host expires (Unix time).",
            None,
            MetricType::Gauge,
        )?;
        for (host, certificate) in tls.hosts() {
            // Hosts on the default certificate have none of their own to expire.
            let CertificateRef::Index(index) = certificate else {
                continue;
            };
            if let Some(certificate) = tls.certificate(*index) {
                let name = host.to_string();
                let labels = [("host", name.as_str())];
                ConstGauge::new(certificate.info.not_after)
                    .encode(metric.encode_family(&labels)?)?;
            }
        }
        if let Some(earliest) = tls.earliest_expiry() {
            gauge(
                &mut encoder,
                "vestibule_certificate_earliest_expiry_timestamp_seconds",
                "When the first of the served certificates expires (Unix time).",
                earliest as f64,
            )?;
        }
        Ok(())
    }
}

/// Access log lines lost because the output could not keep up.
#[derive(Debug)]
pub(crate) struct AccessLogCollector(pub vestibule_proxy::AccessLog);

impl Collector for AccessLogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metric = encoder.encode_descriptor(
            "vestibule_access_log_dropped",
            "Access log lines dropped because the output could not keep up.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.0.dropped()).encode(metric)
    }
}
