//! Ingress status: the leader writes `status.loadBalancer.ingress` of the Ingresses this
//! controller serves, with the addresses clients reach it at, and only where it differs.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, stream};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::Stores;
use crate::Publisher;

/// Patches in flight at once, so 10,000 Ingresses neither take minutes nor flood the API.
const CONCURRENT_PATCHES: usize = 8;
/// Status is checked again this often, to put back what someone else overwrote.
const RESYNC_EVERY: Duration = Duration::from_secs(60);

/// Where the addresses written to status come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusAddresses {
    /// `--publish-service`: that Service's load-balancer addresses, else its cluster IP.
    Service { namespace: String, name: String },
    /// `--publish-status-address`: IPs or host names as given.
    Fixed(Vec<String>),
}

/// One address in status, in the form Kubernetes stores it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Address {
    ip: Option<String>,
    hostname: Option<String>,
}

impl Address {
    fn parse(value: &str) -> Address {
        match value.parse::<IpAddr>() {
            Ok(ip) => Address {
                ip: Some(ip.to_string()),
                hostname: None,
            },
            Err(_) => Address {
                ip: None,
                hostname: Some(value.to_owned()),
            },
        }
    }

    fn to_status(&self) -> IngressLoadBalancerIngress {
        IngressLoadBalancerIngress {
            ip: self.ip.clone(),
            hostname: self.hostname.clone(),
            ports: None,
        }
    }
}

/// The addresses a Service publishes: its load balancer's, else its external IPs, else its
/// cluster IP (an ExternalName Service publishes its name).
fn service_addresses(service: &Service) -> Vec<Address> {
    let from_balancer: Vec<Address> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let ip = i.ip.clone().filter(|ip| !ip.is_empty());
            let hostname = i.hostname.clone().filter(|h| !h.is_empty());
            (ip.is_some() || hostname.is_some()).then_some(Address { ip, hostname })
        })
        .collect();
    if !from_balancer.is_empty() {
        return normalized(from_balancer);
    }
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return spec
            .external_name
            .iter()
            .map(|name| Address::parse(name))
            .collect();
    }
    if let Some(external) = spec.external_ips.as_ref().filter(|ips| !ips.is_empty()) {
        return normalized(external.iter().map(|ip| Address::parse(ip)).collect());
    }
    spec.cluster_ip
        .iter()
        .filter(|ip| !ip.is_empty() && ip.as_str() != "None")
        .map(|ip| Address::parse(ip))
        .collect()
}

fn normalized(mut addresses: Vec<Address>) -> Vec<Address> {
    addresses.sort();
    addresses.dedup();
    addresses
}

fn current_addresses(ingress: &Ingress) -> Vec<Address> {
    normalized(
        ingress
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .map(|i| Address {
                ip: i.ip.clone().filter(|ip| !ip.is_empty()),
                hostname: i.hostname.clone().filter(|h| !h.is_empty()),
            })
            .collect(),
    )
}

/// Writes status while this replica leads.
pub struct StatusWriter {
    client: Client,
    stores: Stores,
    publisher: Arc<Publisher>,
    leader: watch::Receiver<bool>,
    source: StatusAddresses,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl StatusWriter {
    pub fn new(
        client: Client,
        stores: Stores,
        publisher: Arc<Publisher>,
        leader: watch::Receiver<bool>,
        source: StatusAddresses,
    ) -> StatusWriter {
        StatusWriter {
            client,
            stores,
            publisher,
            leader,
            source,
        }
    }

    /// Runs until the publisher goes away.
    pub async fn run(mut self) {
        let (addresses_tx, mut addresses) = watch::channel::<Option<Vec<Address>>>(None);
        let _follower = match &self.source {
            StatusAddresses::Fixed(values) => {
                addresses_tx.send_replace(Some(normalized(
                    values.iter().map(|v| Address::parse(v)).collect(),
                )));
                None
            }
            StatusAddresses::Service { namespace, name } => {
                Some(AbortOnDrop(tokio::spawn(follow_service(
                    Api::namespaced(self.client.clone(), namespace),
                    name.clone(),
                    addresses_tx,
                ))))
            }
        };
        let mut generations = self.publisher.subscribe();
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = generations.changed() => if changed.is_err() { return },
                changed = self.leader.changed() => if changed.is_err() { return },
                changed = addresses.changed() => if changed.is_err() { return },
                _ = resync.tick() => {}
            }
            if !*self.leader.borrow_and_update() {
                continue;
            }
            let Some(desired) = addresses.borrow_and_update().clone() else {
                continue;
            };
            self.sync(&desired).await;
        }
    }

    /// Patches every Ingress of ours whose status differs from `desired`.
    async fn sync(&self, desired: &[Address]) {
        let Some(published) = self.publisher.current() else {
            return;
        };
        let stale: Vec<Arc<Ingress>> = published
            .report
            .ours()
            .filter_map(|outcome| self.stores.ingress(&outcome.namespace, &outcome.name))
            .filter(|ingress| current_addresses(ingress) != desired)
            .collect();
        if stale.is_empty() {
            return;
        }
        let status: Vec<IngressLoadBalancerIngress> =
            desired.iter().map(Address::to_status).collect();
        let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": status } } });
        let written = stream::iter(stale)
            .map(|ingress| {
                let patch = &patch;
                async move {
                    let namespace = ingress.metadata.namespace.as_deref().unwrap_or("default");
                    let name = ingress.metadata.name.as_deref().unwrap_or_default();
                    let api: Api<Ingress> = Api::namespaced(self.client.clone(), namespace);
                    match api
                        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                    {
                        Ok(_) => {
                            debug!(ingress = %format!("{namespace}/{name}"), "status written");
                            true
                        }
                        Err(e) => {
                            warn!(ingress = %format!("{namespace}/{name}"), error = %e, "could not write status; retrying later");
                            false
                        }
                    }
                }
            })
            .buffer_unordered(CONCURRENT_PATCHES)
            .collect::<Vec<bool>>()
            .await;
        let ok = written.iter().filter(|w| **w).count();
        info!(
            written = ok,
            failed = written.len() - ok,
            "Ingress status updated"
        );
    }
}

/// Follows the `--publish-service` Service's addresses. While it is missing, the last
/// addresses stay (status is never cleared because of a watch hiccup).
async fn follow_service(
    api: Api<Service>,
    name: String,
    addresses: watch::Sender<Option<Vec<Address>>>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(service) | Event::InitApply(service)) => {
                let next = service_addresses(&service);
                if next.is_empty() {
                    warn!(service = %name, "the --publish-service Service has no address yet");
                    continue;
                }
                addresses.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(&next);
                    *current = Some(next);
                    changed
                });
            }
            Ok(Event::Delete(_)) => {
                warn!(service = %name, "the --publish-service Service was deleted; Ingress status keeps its last addresses");
            }
            Ok(Event::Init | Event::InitDone) => {}
            Err(e) => {
                warn!(service = %name, error = %e, "watching the --publish-service Service failed; retrying")
            }
        }
    }
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
    };

    fn service(spec: ServiceSpec, balancer: &[(&str, &str)]) -> Service {
        Service {
            spec: Some(spec),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        balancer
                            .iter()
                            .map(|(ip, host)| LoadBalancerIngress {
                                ip: Some((*ip).to_owned()).filter(|s| !s.is_empty()),
                                hostname: Some((*host).to_owned()).filter(|s| !s.is_empty()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cluster_ip(ip: &str) -> ServiceSpec {
        ServiceSpec {
            cluster_ip: Some(ip.to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn the_load_balancer_wins_over_the_cluster_ip() {
        let s = service(
            cluster_ip("10.0.0.1"),
            &[("203.0.113.9", ""), ("", "lb.example.com")],
        );
        assert_eq!(
            service_addresses(&s),
            vec![
                Address::parse("lb.example.com"),
                Address::parse("203.0.113.9")
            ]
        );
    }

    #[test]
    fn without_a_load_balancer_the_cluster_ip_is_published() {
        assert_eq!(
            service_addresses(&service(cluster_ip("10.0.0.1"), &[])),
            vec![Address::parse("10.0.0.1")]
        );
        assert!(service_addresses(&service(cluster_ip("None"), &[])).is_empty());
    }

    #[test]
    fn external_ips_come_before_the_cluster_ip() {
        let spec = ServiceSpec {
            external_ips: Some(vec!["198.51.100.2".into()]),
            ..cluster_ip("10.0.0.1")
        };
        assert_eq!(
            service_addresses(&service(spec, &[])),
            vec![Address::parse("198.51.100.2")]
        );
    }

    #[test]
    fn addresses_parse_as_ips_or_host_names() {
        assert_eq!(
            Address::parse("2001:db8::1").ip.as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            Address::parse("ingress.example.com").hostname.as_deref(),
            Some("ingress.example.com")
        );
    }
}
