//! Large, realistic object sets for benchmarks and scale figures.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::fixtures::{endpoint_slice, ingress, ingress_class, service, svc};

/// Objects of a cluster with `ingresses` Ingresses spread over `hosts` host names, each with
/// five paths (three Prefix at depths 1 to 4, one Exact, one ImplementationSpecific), one
/// Service per Ingress with an EndpointSlice of three ready endpoints. One host in ten is a
/// wildcard. Every route is distinct, so nothing is lost to conflicts.
#[derive(Debug, Clone, Default)]
pub struct ScaleSet {
    pub classes: Vec<IngressClass>,
    pub ingresses: Vec<Ingress>,
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
}

pub const PATHS_PER_INGRESS: usize = 5;

pub fn host_name(h: usize) -> String {
    if h % 10 == 9 {
        format!("*.w{h}.example.com")
    } else {
        format!("app{h}.example.com")
    }
}

pub fn scale_set(ingresses: usize, hosts: usize) -> ScaleSet {
    let hosts = hosts.max(1);
    let mut set = ScaleSet {
        classes: vec![ingress_class("vestibule", "vestibule.dev/ingress-controller").build()],
        ..ScaleSet::default()
    };
    for i in 0..ingresses {
        let ns = format!("team{}", i % 50);
        let name = format!("app{i}");
        // Ingresses sharing a host get distinct path trees.
        let base = format!("/s{}", i / hosts);
        let ing = ingress(&ns, &name)
            .class("vestibule")
            .created(i64::try_from(i).unwrap_or(0))
            .host(&host_name(i % hosts))
            .prefix(&base, svc(&name, 80))
            .prefix(&format!("{base}/api"), svc(&name, 80))
            .prefix(&format!("{base}/api/v1/items"), svc(&name, 80))
            .exact(&format!("{base}/healthz"), svc(&name, 80))
            .implementation_specific(&format!("{base}/static"), svc(&name, 80))
            .build();
        set.ingresses.push(ing);
        set.services
            .push(service(&ns, &name).port("http", 80, 8080).build());
        let octet = |k: usize| (i * 3 + k) % 250 + 1;
        set.slices.push(
            endpoint_slice(&ns, &format!("{name}-abcde"), &name)
                .port("http", 8080)
                .ready(&format!(
                    "10.{}.{}.{}",
                    i / 62_500 % 250,
                    i / 250 % 250,
                    octet(0)
                ))
                .ready(&format!(
                    "10.{}.{}.{}",
                    i / 62_500 % 250,
                    i / 250 % 250,
                    octet(1)
                ))
                .ready(&format!(
                    "10.{}.{}.{}",
                    i / 62_500 % 250,
                    i / 250 % 250,
                    octet(2)
                ))
                .build(),
        );
    }
    set
}

/// Request host and path pairs against a [`scale_set`]: hits at every depth, Exact and
/// wildcard hits, and misses, in a fixed pseudo-random order.
pub fn scale_requests(ingresses: usize, hosts: usize, count: usize) -> Vec<(String, String)> {
    let hosts = hosts.max(1);
    let mut rng = fastrand::Rng::with_seed(7);
    (0..count)
        .map(|_| {
            let i = rng.usize(..ingresses.max(1));
            let host = host_name(i % hosts).replace('*', "x");
            let base = format!("/s{}", i / hosts);
            let path = match rng.u8(..6) {
                0 => format!("{base}/api/v1/items/42"),
                1 => format!("{base}/api/v2"),
                2 => format!("{base}/healthz"),
                3 => format!("{base}/static/css/site.css"),
                4 => "/nothing/here".to_owned(),
                _ => format!("{base}/index.html"),
            };
            (host, path)
        })
        .collect()
}
