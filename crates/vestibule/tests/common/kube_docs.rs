//! Reading Kubernetes manifests in tests: every document typed by its kind with no field lost,
//! and the `vestibule run` flags the Deployment passes. Shared by the tests of `deploy/`
//! (`deploy.rs`) and of the Helm chart that renders it (`helm.rs`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use vestibule_testkit::rbac::Document;

/// The names of the YAML files directly in `dir`: the manifests `kubectl apply -f DIR`
/// applies (and `rbac::read_documents` reads).
pub(crate) fn yaml_file_names(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every object of a set of manifests, typed by kind.
#[derive(Default)]
pub(crate) struct Manifests {
    pub(crate) namespaces: Vec<Namespace>,
    pub(crate) service_accounts: Vec<ServiceAccount>,
    pub(crate) cluster_roles: Vec<ClusterRole>,
    pub(crate) cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub(crate) roles: Vec<Role>,
    pub(crate) role_bindings: Vec<RoleBinding>,
    pub(crate) ingress_classes: Vec<IngressClass>,
    pub(crate) deployments: Vec<Deployment>,
    pub(crate) services: Vec<Service>,
    pub(crate) disruption_budgets: Vec<PodDisruptionBudget>,
    pub(crate) autoscalers: Vec<HorizontalPodAutoscaler>,
    /// Objects of the Prometheus Operator's CRDs.
    pub(crate) custom: Vec<Document>,
}

impl Manifests {
    pub(crate) fn deployment(&self) -> &Deployment {
        assert_eq!(self.deployments.len(), 1, "one Deployment");
        &self.deployments[0]
    }

    pub(crate) fn service(&self) -> &Service {
        assert_eq!(self.services.len(), 1, "one Service");
        &self.services[0]
    }
}

/// Parses `document` as `T` and checks that nothing was lost on the way: a misspelt or
/// misplaced field is ignored by deserialisation, and by the API server too, so it would
/// silently not apply. Serialising the typed object back must give the document again.
pub(crate) fn typed<T: Serialize + DeserializeOwned>(document: &Document) -> T {
    let object: T = document.parse().unwrap_or_else(|e| panic!("{e}"));
    let back = serde_json::to_value(&object).unwrap();
    if let Some(difference) = first_difference(&document.value, &back, String::new()) {
        panic!(
            "{}: {difference} (a field the Kubernetes type does not have, or a misplaced one)",
            document.label()
        );
    }
    object
}

pub(crate) fn first_difference(written: &Value, typed: &Value, at: String) -> Option<String> {
    match (written, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{at}.{key}");
                match b.get(key) {
                    Some(other) => {
                        if let Some(d) = first_difference(value, other, here) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{here} is not read")),
                }
            }
            b.keys()
                .find(|key| !a.contains_key(*key))
                .map(|key| format!("{at}.{key} appears when read"))
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, format!("{at}[{i}]"))),
        _ if written == typed => None,
        _ => Some(format!("{at}: written {written}, read as {typed}")),
    }
}

/// Every document of `documents`, typed; ServiceMonitors and PrometheusRules, which
/// k8s-openapi has no types for, are kept as they were written.
pub(crate) fn typed_manifests(documents: &[Document]) -> Manifests {
    assert!(!documents.is_empty(), "no YAML documents");
    let mut m = Manifests::default();
    for document in documents {
        match document.kind() {
            Some("Namespace") => m.namespaces.push(typed(document)),
            Some("ServiceAccount") => m.service_accounts.push(typed(document)),
            Some("ClusterRole") => m.cluster_roles.push(typed(document)),
            Some("ClusterRoleBinding") => m.cluster_role_bindings.push(typed(document)),
            Some("Role") => m.roles.push(typed(document)),
            Some("RoleBinding") => m.role_bindings.push(typed(document)),
            Some("IngressClass") => m.ingress_classes.push(typed(document)),
            Some("Deployment") => m.deployments.push(typed(document)),
            Some("Service") => m.services.push(typed(document)),
            Some("PodDisruptionBudget") => m.disruption_budgets.push(typed(document)),
            Some("HorizontalPodAutoscaler") => m.autoscalers.push(typed(document)),
            Some("ServiceMonitor" | "PrometheusRule") => m.custom.push(document.clone()),
            other => panic!(
                "{}: kind {other:?} is not one this test knows; add it here",
                document.label()
            ),
        }
    }
    m
}

pub(crate) fn container(deployment: &Deployment) -> &Container {
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.containers.len(), 1, "one container");
    &pod.containers[0]
}

pub(crate) fn container_port(container: &Container, name: &str) -> i32 {
    container
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("the container has no port named {name}"))
        .container_port
}

pub(crate) fn pod_labels(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap_or_default()
}

pub(crate) fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector.match_labels.clone().unwrap_or_default();
    assert!(!match_labels.is_empty(), "selector with no labels");
    assert!(
        selector.match_expressions.is_none(),
        "matchExpressions not checked by this test"
    );
    match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `vestibule run --help`, from the binary this test was built with.
pub(crate) fn run_help() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_vestibule"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success(), "vestibule run --help failed");
    String::from_utf8(output.stdout).unwrap()
}

/// The help entry of `--flag`: its own line and the description lines under it.
pub(crate) fn help_entry<'h>(help: &'h str, flag: &str) -> Option<Vec<&'h str>> {
    let lines: Vec<&str> = help.lines().collect();
    let start = lines.iter().position(|line| {
        line.trim_start()
            .split([' ', ','])
            .any(|word| word == format!("--{flag}"))
    })?;
    let end = lines[start + 1..]
        .iter()
        .position(|line| line.trim_start().starts_with('-'))
        .map_or(lines.len(), |i| start + 1 + i);
    Some(lines[start..end].to_vec())
}

pub(crate) fn help_default(help: &str, flag: &str) -> String {
    let entry = help_entry(help, flag).unwrap_or_else(|| panic!("--{flag} not in run --help"));
    let text = entry.join(" ");
    let from = text
        .find("[default: ")
        .unwrap_or_else(|| panic!("--{flag} has no default"))
        + "[default: ".len();
    text[from..].split(']').next().unwrap().to_owned()
}

/// `(flag, value)` of each `--flag=value` or `--flag value` of `args`, after `run`.
pub(crate) fn flags(args: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            continue;
        };
        match flag.split_once('=') {
            Some((name, value)) => out.push((name.to_owned(), Some(value.to_owned()))),
            None => {
                let value = iter.next_if(|next| !next.starts_with("--")).cloned();
                out.push((flag.to_owned(), value));
            }
        }
    }
    out
}

/// The value the controller runs with: from the Deployment's args, else the flag's default.
pub(crate) fn effective(args: &[String], help: &str, flag: &str) -> String {
    flags(args)
        .into_iter()
        .find(|(name, _)| name == flag)
        .and_then(|(_, value)| value)
        .unwrap_or_else(|| help_default(help, flag))
}

pub(crate) fn port_of(addr: &str) -> i32 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

pub(crate) fn parse_duration(text: &str) -> Duration {
    if let Some(ms) = text.strip_suffix("ms") {
        return Duration::from_millis(ms.parse().unwrap());
    }
    if let Some(s) = text.strip_suffix('s') {
        return Duration::from_secs(s.parse().unwrap());
    }
    if let Some(m) = text.strip_suffix('m') {
        return Duration::from_secs(m.parse::<u64>().unwrap() * 60);
    }
    Duration::from_secs(text.parse().unwrap())
}

pub(crate) fn args(container: &Container) -> Vec<String> {
    container.args.clone().unwrap_or_default()
}

// --- RBAC ------------------------------------------------------------------------------------

pub(crate) const NS: &str = "vestibule";
pub(crate) const SA: &str = "vestibule";

/// `(verb, group, resource, subresource, namespace)`
pub(crate) type Call = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// What the controller asks of the API server.
pub(crate) const NEEDED: &[Call] = &[
    // Watches, across all namespaces (and in one, with --watch-namespace).
    ("get", "networking.k8s.io", "ingressclasses", None, None),
    ("list", "networking.k8s.io", "ingressclasses", None, None),
    ("watch", "networking.k8s.io", "ingressclasses", None, None),
    ("list", "networking.k8s.io", "ingresses", None, None),
    ("watch", "networking.k8s.io", "ingresses", None, None),
    ("list", "networking.k8s.io", "ingresses", None, Some("shop")),
    (
        "watch",
        "networking.k8s.io",
        "ingresses",
        None,
        Some("shop"),
    ),
    ("list", "", "services", None, None),
    ("watch", "", "services", None, None),
    ("list", "", "services", None, Some("shop")),
    ("watch", "", "services", None, Some("shop")),
    ("list", "discovery.k8s.io", "endpointslices", None, None),
    ("watch", "discovery.k8s.io", "endpointslices", None, None),
    (
        "list",
        "discovery.k8s.io",
        "endpointslices",
        None,
        Some("shop"),
    ),
    (
        "watch",
        "discovery.k8s.io",
        "endpointslices",
        None,
        Some("shop"),
    ),
    ("list", "", "secrets", None, None),
    ("watch", "", "secrets", None, None),
    ("list", "", "secrets", None, Some("shop")),
    ("watch", "", "secrets", None, Some("shop")),
    ("list", "", "configmaps", None, None),
    ("watch", "", "configmaps", None, None),
    ("list", "", "configmaps", None, Some("shop")),
    ("watch", "", "configmaps", None, Some("shop")),
    // --publish-service and --default-ssl-certificate, wherever they are.
    ("get", "", "services", None, Some("vestibule")),
    ("list", "", "services", None, Some("vestibule")),
    ("watch", "", "services", None, Some("vestibule")),
    ("get", "", "secrets", None, Some("vestibule")),
    // Status of the Ingresses served.
    ("get", "networking.k8s.io", "ingresses", None, Some("shop")),
    (
        "patch",
        "networking.k8s.io",
        "ingresses",
        Some("status"),
        Some("shop"),
    ),
    (
        "update",
        "networking.k8s.io",
        "ingresses",
        Some("status"),
        Some("shop"),
    ),
    // Events on Ingresses.
    ("create", "events.k8s.io", "events", None, Some("shop")),
    ("patch", "events.k8s.io", "events", None, Some("shop")),
    // Leader election, in the controller's namespace.
    (
        "get",
        "coordination.k8s.io",
        "leases",
        None,
        Some("vestibule"),
    ),
    (
        "create",
        "coordination.k8s.io",
        "leases",
        None,
        Some("vestibule"),
    ),
    (
        "update",
        "coordination.k8s.io",
        "leases",
        None,
        Some("vestibule"),
    ),
];

/// What it must not be able to do.
pub(crate) const REFUSED: &[Call] = &[
    // Leases anywhere but its own namespace, and more than it uses on them.
    (
        "get",
        "coordination.k8s.io",
        "leases",
        None,
        Some("default"),
    ),
    (
        "update",
        "coordination.k8s.io",
        "leases",
        None,
        Some("kube-system"),
    ),
    (
        "create",
        "coordination.k8s.io",
        "leases",
        None,
        Some("shop"),
    ),
    ("list", "coordination.k8s.io", "leases", None, None),
    (
        "delete",
        "coordination.k8s.io",
        "leases",
        None,
        Some("vestibule"),
    ),
    (
        "patch",
        "coordination.k8s.io",
        "leases",
        None,
        Some("vestibule"),
    ),
    // Secrets are read-only.
    ("create", "", "secrets", None, Some("shop")),
    ("update", "", "secrets", None, Some("shop")),
    ("patch", "", "secrets", None, Some("shop")),
    ("delete", "", "secrets", None, Some("shop")),
    ("deletecollection", "", "secrets", None, Some("shop")),
    // Ingresses: only their status is written.
    (
        "create",
        "networking.k8s.io",
        "ingresses",
        None,
        Some("shop"),
    ),
    (
        "update",
        "networking.k8s.io",
        "ingresses",
        None,
        Some("shop"),
    ),
    (
        "patch",
        "networking.k8s.io",
        "ingresses",
        None,
        Some("shop"),
    ),
    (
        "delete",
        "networking.k8s.io",
        "ingresses",
        None,
        Some("shop"),
    ),
    ("update", "networking.k8s.io", "ingressclasses", None, None),
    ("patch", "", "services", None, Some("shop")),
    ("patch", "", "services", Some("status"), Some("vestibule")),
    (
        "update",
        "discovery.k8s.io",
        "endpointslices",
        None,
        Some("shop"),
    ),
    // Events only through events.k8s.io, and never read back.
    ("create", "", "events", None, Some("shop")),
    ("list", "events.k8s.io", "events", None, None),
    ("delete", "events.k8s.io", "events", None, Some("shop")),
    // Nothing else.
    ("list", "", "pods", None, None),
    ("get", "", "pods", None, Some("vestibule")),
    ("update", "", "configmaps", None, Some("shop")),
    ("list", "", "endpoints", None, None),
    ("list", "", "namespaces", None, None),
    ("list", "", "nodes", None, None),
    (
        "create",
        "",
        "serviceaccounts",
        Some("token"),
        Some("vestibule"),
    ),
    ("list", "apps", "deployments", None, None),
    (
        "create",
        "rbac.authorization.k8s.io",
        "rolebindings",
        None,
        Some("vestibule"),
    ),
];
