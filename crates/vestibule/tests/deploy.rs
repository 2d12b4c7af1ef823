#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The manifests in `deploy/` and the `Dockerfile`: that they are what Kubernetes and the
//! binary accept, that they fit together, and that the RBAC grants what the controller does and
//! nothing more.

#[path = "common/kube_docs.rs"]
mod kube_docs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_docs::{
    Call, Manifests, NEEDED, NS, REFUSED, SA, args, container, container_port, effective, flags,
    help_entry, parse_duration, pod_labels, port_of, run_help, selects, typed_manifests, workspace,
};
use vestibule_testkit::rbac::{self, Rbac};

const CONTROLLER: &str = "vestibule.dev/ingress-controller";

/// `deploy/`'s own manifests, without the chart under `deploy/helm/` (`kubectl apply -f
/// deploy/` does not descend into subdirectories).
fn deploy_dir() -> PathBuf {
    workspace().join("deploy")
}

fn manifests() -> Manifests {
    typed_manifests(&rbac::read_documents(&deploy_dir()).unwrap())
}

// ---------------------------------------------------------------------------------------------

#[test]
fn every_document_is_a_known_kind_with_only_known_fields() {
    let m = manifests();
    assert_eq!(m.namespaces.len(), 1);
    assert_eq!(m.service_accounts.len(), 1);
    assert_eq!(m.cluster_roles.len(), 1);
    assert_eq!(m.cluster_role_bindings.len(), 1);
    assert_eq!(m.roles.len(), 1);
    assert_eq!(m.role_bindings.len(), 1);
    assert_eq!(m.ingress_classes.len(), 1);
    assert_eq!(m.deployments.len(), 1);
    assert_eq!(m.services.len(), 1);
    assert_eq!(m.disruption_budgets.len(), 1);
}

#[test]
fn namespaced_objects_are_in_the_vestibule_namespace_and_cluster_ones_in_none() {
    let m = manifests();
    let namespace = m.namespaces[0].metadata.name.clone().unwrap();
    assert_eq!(namespace, "vestibule");
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
        assert_eq!(
            meta.namespace.as_deref(),
            Some(namespace.as_str()),
            "{:?} must name its namespace (kubectl apply would otherwise use the current one)",
            meta.name
        );
    }
    let cluster_scoped = m
        .namespaces
        .iter()
        .map(|o| &o.metadata)
        .chain(m.cluster_roles.iter().map(|o| &o.metadata))
        .chain(m.cluster_role_bindings.iter().map(|o| &o.metadata))
        .chain(m.ingress_classes.iter().map(|o| &o.metadata));
    for meta in cluster_scoped {
        assert_eq!(meta.namespace, None, "{:?} is cluster-scoped", meta.name);
    }
}

#[test]
fn the_container_runs_locked_down() {
    let m = manifests();
    let deployment = m.deployment();
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let c = container(deployment);
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    let pod_sc = pod.security_context.as_ref();

    let run_as_non_root = sc
        .run_as_non_root
        .or(pod_sc.and_then(|p| p.run_as_non_root));
    assert_eq!(run_as_non_root, Some(true));
    let user = sc.run_as_user.or(pod_sc.and_then(|p| p.run_as_user));
    let group = sc.run_as_group.or(pod_sc.and_then(|p| p.run_as_group));
    assert_eq!(user, Some(65532));
    assert_eq!(group, Some(65532));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_ne!(sc.privileged, Some(true));
    let capabilities = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert!(capabilities.add.as_deref().unwrap_or_default().is_empty());
    let seccomp = sc
        .seccomp_profile
        .as_ref()
        .or(pod_sc.and_then(|p| p.seccomp_profile.as_ref()))
        .expect("seccompProfile");
    assert_eq!(seccomp.type_, "RuntimeDefault");

    assert_eq!(pod.automount_service_account_token, Some(true));
    assert_eq!(
        pod.enable_service_links,
        Some(false),
        "service links would put VESTIBULE_* variables in the environment, where flags are read"
    );
    assert_eq!(pod.host_network, None);
    let resources = c.resources.as_ref().expect("resources");
    assert!(
        resources
            .requests
            .as_ref()
            .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory"))
    );
    assert!(
        resources
            .limits
            .as_ref()
            .is_some_and(|l| l.contains_key("memory"))
    );
}

#[test]
fn the_image_is_this_version() {
    let m = manifests();
    let image = container(m.deployment()).image.clone().unwrap();
    assert_eq!(
        image,
        format!(
            "ghcr.io/vestibule-dev/vestibule:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn args_are_flags_of_vestibule_run() {
    let m = manifests();
    let args = args(container(m.deployment()));
    assert_eq!(
        args.first().map(String::as_str),
        Some("run"),
        "the image's entrypoint is the binary; args start with the subcommand"
    );
    let help = run_help();
    for (flag, _) in flags(&args) {
        assert!(
            help_entry(&help, &flag).is_some(),
            "--{flag} is not a flag of `vestibule run`:\n{help}"
        );
    }
    assert!(
        !flags(&args).iter().any(|(flag, _)| flag == "manifests"),
        "in a cluster, Vestibule reads the API server"
    );
}

#[test]
fn publish_service_is_the_service_in_deploy() {
    let m = manifests();
    let args = args(container(m.deployment()));
    let (_, value) = flags(&args)
        .into_iter()
        .find(|(flag, _)| flag == "publish-service")
        .expect("--publish-service, so Ingress status shows the load balancer's address");
    let service = m.service();
    assert_eq!(
        value.as_deref(),
        Some(
            format!(
                "{}/{}",
                service.metadata.namespace.as_deref().unwrap(),
                service.metadata.name.as_deref().unwrap()
            )
            .as_str()
        )
    );
}

#[test]
fn downward_api_gives_the_pod_name_and_namespace() {
    let m = manifests();
    let env = container(m.deployment()).env.clone().unwrap_or_default();
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} not set"));
        let field = var
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .unwrap_or_else(|| panic!("{name} not from the downward API"));
        assert_eq!(field.field_path, path);
    }
}

#[test]
fn container_ports_are_the_listener_ports() {
    let m = manifests();
    let c = container(m.deployment());
    let args = args(c);
    let help = run_help();
    for (name, flag) in [
        ("http", "http-addr"),
        ("https", "https-addr"),
        ("admin", "admin-addr"),
    ] {
        assert_eq!(
            container_port(c, name),
            port_of(&effective(&args, &help, flag)),
            "port {name} and --{flag}"
        );
    }
}

#[test]
fn probes_use_healthz_and_readyz_on_the_admin_port() {
    let m = manifests();
    let c = container(m.deployment());
    let admin = container_port(c, "admin");
    for (probe, path) in [
        (c.liveness_probe.as_ref(), "/healthz"),
        (c.readiness_probe.as_ref(), "/readyz"),
    ] {
        let get = probe
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("httpGet probe on {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        let port = match &get.port {
            IntOrString::Int(port) => *port,
            IntOrString::String(name) => container_port(c, name),
        };
        assert_eq!(port, admin, "{path} is served on the admin port");
    }
}

#[test]
fn termination_grace_outlasts_the_pause_and_the_shutdown_grace_period() {
    let m = manifests();
    let deployment = m.deployment();
    let c = container(deployment);
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let grace = parse_duration(&effective(&args(c), &run_help(), "shutdown-grace-period"));
    let pause = c
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .map_or(0, |s| s.seconds);
    let termination = pod
        .termination_grace_period_seconds
        .expect("terminationGracePeriodSeconds");
    assert!(
        Duration::from_secs(u64::try_from(termination - pause).unwrap()) > grace,
        "terminationGracePeriodSeconds {termination} must exceed the preStop pause {pause}s plus --shutdown-grace-period {grace:?}"
    );
}

#[test]
fn two_replicas_spread_over_nodes_and_kept_by_a_disruption_budget() {
    let m = manifests();
    let deployment = m.deployment();
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let labels = pod_labels(deployment);
    assert!(
        selects(&spec.selector, &labels),
        "the Deployment selects its pods"
    );

    let pod = spec.template.spec.as_ref().unwrap();
    let spread = pod
        .topology_spread_constraints
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|t| {
            t.topology_key == "kubernetes.io/hostname"
                && t.label_selector
                    .as_ref()
                    .is_some_and(|s| selects(s, &labels))
        });
    let anti_affinity = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .is_some_and(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|w| {
                    w.pod_affinity_term.topology_key == "kubernetes.io/hostname"
                        && w.pod_affinity_term
                            .label_selector
                            .as_ref()
                            .is_some_and(|s| selects(s, &labels))
                })
        });
    assert!(spread || anti_affinity, "replicas prefer different nodes");

    let pdb = &m.disruption_budgets[0];
    let pdb_spec = pdb.spec.as_ref().unwrap();
    assert_eq!(pdb_spec.min_available, Some(IntOrString::Int(1)));
    assert!(selects(pdb_spec.selector.as_ref().unwrap(), &labels));
    assert_eq!(pdb.metadata.namespace, deployment.metadata.namespace);
}

#[test]
fn the_ingress_class_names_the_controller_and_is_not_the_default() {
    let m = manifests();
    let class = &m.ingress_classes[0];
    assert_eq!(class.metadata.name.as_deref(), Some("vestibule"));
    let controller = class.spec.as_ref().unwrap().controller.as_deref();
    assert_eq!(controller, Some(CONTROLLER));
    assert_eq!(
        controller.map(str::to_owned),
        Some(effective(
            &args(container(m.deployment())),
            &run_help(),
            "controller-class"
        )),
        "the class must name the controller class Vestibule runs with"
    );
    let is_default = class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("ingressclass.kubernetes.io/is-default-class"));
    assert_ne!(is_default.map(String::as_str), Some("true"));
}

#[test]
fn the_service_sends_80_and_443_to_the_named_container_ports() {
    let m = manifests();
    let deployment = m.deployment();
    let c = container(deployment);
    let service = m.service();
    let spec = service.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(
        spec.external_traffic_policy.as_deref(),
        Some("Local"),
        "client addresses are kept"
    );
    let labels = pod_labels(deployment);
    let selector = spec.selector.clone().unwrap();
    assert!(!selector.is_empty());
    assert!(
        selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the Service selects the pods"
    );
    assert_eq!(service.metadata.namespace, deployment.metadata.namespace);

    let ports = spec.ports.as_deref().unwrap();
    let mut exposed: Vec<(i32, i32)> = ports
        .iter()
        .map(|p| {
            let target = match p.target_port.as_ref().expect("targetPort") {
                IntOrString::String(name) => container_port(c, name),
                IntOrString::Int(port) => *port,
            };
            (p.port, target)
        })
        .collect();
    exposed.sort_unstable();
    assert_eq!(
        exposed,
        vec![
            (80, container_port(c, "http")),
            (443, container_port(c, "https"))
        ],
        "80 and 443 only; the admin port is not exposed"
    );
    for p in ports {
        assert!(
            matches!(p.target_port, Some(IntOrString::String(_))),
            "port {} targets a named port",
            p.port
        );
    }
}

#[test]
fn the_lease_role_is_namespaced_where_the_controller_runs() {
    let m = manifests();
    let deployment = m.deployment();
    let namespace = deployment.metadata.namespace.clone();
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let account = pod
        .service_account_name
        .clone()
        .expect("serviceAccountName");
    assert!(m.service_accounts.iter().any(
        |sa| sa.metadata.name.as_ref() == Some(&account) && sa.metadata.namespace == namespace
    ));

    let lease_roles: Vec<&Role> = m
        .roles
        .iter()
        .filter(|r| {
            r.rules.as_deref().unwrap_or_default().iter().any(|rule| {
                rule.resources
                    .as_deref()
                    .unwrap_or_default()
                    .contains(&"leases".to_owned())
            })
        })
        .collect();
    assert_eq!(lease_roles.len(), 1);
    assert_eq!(lease_roles[0].metadata.namespace, namespace);
    for role in &m.cluster_roles {
        for rule in role.rules.as_deref().unwrap_or_default() {
            let resources = rule.resources.as_deref().unwrap_or_default();
            assert!(
                !resources.iter().any(|r| r == "leases" || r == "*"),
                "ClusterRole {:?} grants leases cluster-wide",
                role.metadata.name
            );
        }
    }
}

// --- RBAC ------------------------------------------------------------------------------------

#[test]
fn rbac_allows_every_call_the_controller_makes() {
    let rbac = Rbac::load(&deploy_dir()).unwrap();
    let refused: Vec<&Call> = NEEDED
        .iter()
        .filter(|(verb, group, resource, sub, ns)| {
            !rbac.allows(NS, SA, verb, group, resource, *sub, *ns)
        })
        .collect();
    assert!(refused.is_empty(), "not allowed: {refused:#?}");
}

#[test]
fn rbac_allows_nothing_more() {
    let rbac = Rbac::load(&deploy_dir()).unwrap();
    let allowed: Vec<&Call> = REFUSED
        .iter()
        .filter(|(verb, group, resource, sub, ns)| {
            rbac.allows(NS, SA, verb, group, resource, *sub, *ns)
        })
        .collect();
    assert!(allowed.is_empty(), "allowed but not needed: {allowed:#?}");

    // No wildcards anywhere, so nothing is granted by accident as the API grows.
    let m = manifests();
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
        let fields = [
            rule.api_groups.clone().unwrap_or_default(),
            rule.resources.clone().unwrap_or_default(),
            rule.verbs.clone(),
        ];
        assert!(
            fields.iter().flatten().all(|item| !item.contains('*')),
            "wildcard in {rule:?}"
        );
    }
    // Other accounts get nothing.
    assert!(!rbac.allows("default", "default", "list", "", "secrets", None, None));
    assert!(!rbac.allows(NS, "default", "list", "", "secrets", None, None));
}

// --- Dockerfile ------------------------------------------------------------------------------

struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

/// The stages of a Dockerfile: `FROM` lines and the instructions under them, with line
/// continuations joined and comments dropped.
fn dockerfile_stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical.into_iter().filter(|l| !l.is_empty()) {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = instruction.to_ascii_uppercase();
        let rest = rest.trim().to_owned();
        if instruction == "FROM" {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => None,
            };
            stages.push(Stage {
                base: words[0].to_owned(),
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("instruction before FROM")
                .instructions
                .push((instruction, rest));
        }
    }
    stages
}

fn last<'s>(stage: &'s Stage, instruction: &str) -> Option<&'s str> {
    stage
        .instructions
        .iter()
        .rev()
        .find(|(i, _)| i == instruction)
        .map(|(_, rest)| rest.as_str())
}

fn rust_version() -> (u32, u32) {
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("rust-version"))
        .unwrap();
    let version = line.split('"').nth(1).unwrap();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn dockerfile_builds_the_binary_and_runs_it_as_non_root() {
    let text = std::fs::read_to_string(workspace().join("Dockerfile")).unwrap();
    let stages = dockerfile_stages(&text);
    assert!(stages.len() >= 2, "a build stage and a runtime stage");

    // Build stage: an official Rust image at least as new as the workspace's rust-version.
    let build = &stages[0];
    let name = build.name.clone().expect("the build stage is named");
    let tag = build
        .base
        .strip_prefix("rust:")
        .expect("built on the official rust image");
    let mut numbers = tag
        .split(['.', '-'])
        .take(2)
        .map(|p| p.parse::<u32>().expect("a versioned rust tag"));
    let tag_version = (numbers.next().unwrap(), numbers.next().unwrap());
    assert!(
        tag_version >= rust_version(),
        "rust:{tag} is older than rust-version"
    );
    let runs: Vec<&str> = build
        .instructions
        .iter()
        .filter(|(i, _)| i == "RUN")
        .map(|(_, rest)| rest.as_str())
        .collect();
    assert!(
        runs.iter()
            .any(|r| r.contains("cargo build --release --locked -p vestibule")),
        "cargo build --release --locked -p vestibule in {runs:?}"
    );

    // Runtime stage: distroless, non-root, the binary as entrypoint.
    let runtime = stages.last().unwrap();
    assert!(
        runtime.base.starts_with("gcr.io/distroless/cc-debian12")
            && runtime.base.ends_with(":nonroot"),
        "runtime base {}",
        runtime.base
    );
    assert!(
        build.base.contains("bookworm"),
        "the binary links against the glibc of Debian 12, which the runtime image has"
    );
    let binary = Path::new(env!("CARGO_BIN_EXE_vestibule"))
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(binary, "vestibule");
    let installed = format!("/usr/local/bin/{binary}");
    let copied = runtime.instructions.iter().any(|(i, rest)| {
        i == "COPY" && rest.contains(&format!("--from={name}")) && rest.ends_with(&installed)
    });
    assert!(copied, "COPY --from={name} ... {installed}");

    let user = last(runtime, "USER").expect("USER");
    assert_eq!(user, "65532:65532");
    let entrypoint: Vec<String> =
        serde_json::from_str(last(runtime, "ENTRYPOINT").expect("ENTRYPOINT"))
            .expect("ENTRYPOINT in exec (JSON) form");
    assert_eq!(entrypoint, vec![installed]);
    let cmd: Vec<String> = serde_json::from_str(last(runtime, "CMD").expect("CMD")).unwrap();
    assert_eq!(cmd, vec!["run"]);

    // The ports it exposes are the ones the Deployment declares.
    let mut exposed: Vec<i32> = runtime
        .instructions
        .iter()
        .filter(|(i, _)| i == "EXPOSE")
        .flat_map(|(_, rest)| {
            rest.split_whitespace()
                .map(|p| p.trim_end_matches("/tcp").parse::<i32>().unwrap())
        })
        .collect();
    exposed.sort_unstable();
    let m = manifests();
    let mut declared: Vec<i32> = container(m.deployment())
        .ports
        .as_deref()
        .unwrap()
        .iter()
        .map(|p| p.container_port)
        .collect();
    declared.sort_unstable();
    assert_eq!(exposed, declared);
}

#[test]
fn dockerignore_keeps_the_build_context_small_but_complete() {
    let text = std::fs::read_to_string(workspace().join(".dockerignore")).unwrap();
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        patterns
            .iter()
            .any(|p| p.trim_start_matches('/').trim_end_matches('/') == "target"),
        "target/ is not sent to the builder"
    );
    // What `cargo build --locked` needs must stay in the context.
    for needed in ["Cargo.toml", "Cargo.lock", "crates", ".cargo"] {
        assert!(
            !patterns
                .iter()
                .any(|p| p.trim_start_matches('/').trim_end_matches('/') == needed),
            "{needed} is excluded"
        );
    }
}
