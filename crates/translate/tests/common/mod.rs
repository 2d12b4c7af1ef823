//! Shared helpers for the translate tests: compile objects, then ask what a request would hit.

#![allow(dead_code)]

use vestibule_model::{Backend, Target, request_host};
use vestibule_testkit::{endpoint_slice, ingress_class, service};
use vestibule_translate::{Compiled, Object, Options, Severity, Snapshot, compile};

pub(crate) const CONTROLLER: &str = "vestibule.dev/ingress-controller";

pub(crate) fn o(object: impl Into<Object>) -> Object {
    object.into()
}

/// Our IngressClass `vestibule`.
pub(crate) fn our_class() -> Object {
    o(ingress_class("vestibule", CONTROLLER).build())
}

/// A Service `name` with one port `http` 80 → 8080 and one ready endpoint `ip:8080`.
pub(crate) fn backend(ns: &str, name: &str, ip: &str) -> Vec<Object> {
    vec![
        o(service(ns, name).port("http", 80, 8080).build()),
        o(endpoint_slice(ns, &format!("{name}-1"), name)
            .port("http", 8080)
            .ready(ip)
            .build()),
    ]
}

pub(crate) fn compile_with(objects: Vec<Object>, options: &Options) -> Compiled {
    compile(&Snapshot::from_objects(objects), options)
}

pub(crate) fn compile_default(objects: Vec<Object>) -> Compiled {
    compile_with(objects, &Options::default())
}

/// What a request would reach, in one comparable string:
/// `ingress-name -> ns/service:port [endpoints]`, `ingress-name -> 503`, `default -> ...` or
/// `404`.
pub(crate) fn serves(c: &Compiled, host: &str, path: &str) -> String {
    let describe = |backend: &Backend| match backend {
        Backend::Cluster(id) => {
            let cluster = c.table.cluster(*id);
            let endpoints: Vec<String> = cluster
                .endpoints
                .iter()
                .map(|e| e.address.to_string())
                .collect();
            format!("{} [{}]", cluster.key, endpoints.join(" "))
        }
        Backend::Unavailable { .. } => "503".to_owned(),
    };
    match c.table.lookup(&request_host(host), path).target {
        Target::Route(route) => {
            format!("{} -> {}", route.origin.name, describe(&route.backend))
        }
        Target::Default(d) => format!(
            "default({}) -> {}",
            d.origin
                .as_ref()
                .map_or("flag".to_owned(), |o| o.name.to_string()),
            describe(&d.backend)
        ),
        Target::NotFound => "404".to_owned(),
    }
}

/// Diagnostics as `severity object field` strings, for compact assertions.
pub(crate) fn findings(c: &Compiled) -> Vec<String> {
    c.report
        .diagnostics
        .iter()
        .map(|d| {
            let level = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Info => "info",
            };
            format!("{level} {:?} {} {}", d.object.kind, d.object, d.field)
        })
        .collect()
}

pub(crate) fn is_ours(c: &Compiled, ns: &str, name: &str) -> bool {
    c.report
        .ingresses
        .iter()
        .any(|i| i.namespace == ns && i.name == name && i.ours)
}
