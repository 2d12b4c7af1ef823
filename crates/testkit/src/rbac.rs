//! A small Kubernetes RBAC evaluator, for checking the manifests in `deploy/` against what the
//! controller asks of the API server.
//!
//! It follows the API server's authorizer for the parts that matter to a controller's
//! ServiceAccount:
//!
//! - a binding applies when one of its subjects is the ServiceAccount (`kind: ServiceAccount`,
//!   whose namespace defaults to the RoleBinding's), the user
//!   `system:serviceaccount:NS:NAME`, or one of the groups every ServiceAccount is in
//!   (`system:serviceaccounts`, `system:serviceaccounts:NS`, `system:authenticated`);
//! - a ClusterRoleBinding grants its ClusterRole everywhere, for cluster-scoped and
//!   all-namespaces requests too; a RoleBinding grants its Role, or the ClusterRole it
//!   references, only for requests in its own namespace;
//! - a rule matches when `apiGroups` holds the group or `*`, `verbs` holds the verb or `*`, and
//!   `resources` holds `*`, the resource (or `resource/subresource`), or `*/subresource`.
//!
//! Approximations, all on the side of the manifests at hand:
//!
//! - requests carry no object name, so a rule with `resourceNames` is taken to match the
//!   verbs that act on one named object (`get`, `update`, `patch`, `delete`) and never the
//!   others (`list`, `watch`, `create`, `deletecollection`), which cannot be limited by name;
//! - `aggregationRule` on ClusterRoles and `nonResourceURLs` rules are ignored;
//! - objects without `metadata.namespace` are in `default`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One YAML document of a manifest directory.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: PathBuf,
    /// 1-based position of the document in its file.
    pub index: usize,
    pub value: Value,
}

impl Document {
    /// `file #index (Kind name)`, for messages.
    pub fn label(&self) -> String {
        let field = |key: &str| {
            self.value
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned()
        };
        let name = self
            .value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        format!(
            "{} #{} ({} {name})",
            self.file.display(),
            self.index,
            field("kind")
        )
    }

    pub fn kind(&self) -> Option<&str> {
        self.value.get("kind").and_then(Value::as_str)
    }

    /// The document as a typed object; the message names the document.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.value.clone()).map_err(|e| format!("{}: {e}", self.label()))
    }
}

/// Every non-empty document of the `.yaml` and `.yml` files in `dir` and its subdirectories,
/// in path order, then document order (the order `kubectl apply -f DIR` uses).
pub fn read_documents(dir: &Path) -> Result<Vec<Document>, String> {
    let mut files = Vec::new();
    collect_yaml_files(dir, &mut files)?;
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
        let values: Vec<Value> = serde_saphyr::from_multiple(&text)
            .map_err(|e| format!("{}: not YAML: {e}", file.display()))?;
        for (i, value) in values.into_iter().enumerate() {
            if value.is_null() {
                continue;
            }
            documents.push(Document {
                file: file.clone(),
                index: i + 1,
                value,
            });
        }
    }
    Ok(documents)
}

/// The YAML files directly in `dir`, as `kubectl apply -f DIR` reads them: subdirectories
/// (`deploy/helm/`, `deploy/grafana/`) are not manifests to apply.
fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("{}: cannot list: {e}", dir.display()))?
            .path();
        if path.is_file() && path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// The RBAC objects of a set of manifests.
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    cluster_roles: BTreeMap<String, ClusterRole>,
    /// By (namespace, name).
    roles: BTreeMap<(String, String), Role>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    role_bindings: Vec<RoleBinding>,
}

impl Rbac {
    /// Reads the ClusterRoles, ClusterRoleBindings, Roles and RoleBindings of the YAML files
    /// in `dir` (see [`read_documents`]); documents of other kinds are skipped.
    pub fn load(dir: &Path) -> Result<Rbac, String> {
        Rbac::from_documents(&read_documents(dir)?)
    }

    /// The same, from the text of one multi-document YAML file.
    pub fn from_yaml(text: &str) -> Result<Rbac, String> {
        let values: Vec<Value> =
            serde_saphyr::from_multiple(text).map_err(|e| format!("not YAML: {e}"))?;
        let documents: Vec<Document> = values
            .into_iter()
            .enumerate()
            .filter(|(_, value)| !value.is_null())
            .map(|(i, value)| Document {
                file: PathBuf::from("<yaml>"),
                index: i + 1,
                value,
            })
            .collect();
        Rbac::from_documents(&documents)
    }

    fn from_documents(documents: &[Document]) -> Result<Rbac, String> {
        let mut rbac = Rbac::default();
        for document in documents {
            let is_rbac = document
                .value
                .get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| v.starts_with("rbac.authorization.k8s.io/"));
            if !is_rbac {
                continue;
            }
            match document.kind() {
                Some("ClusterRole") => {
                    let role: ClusterRole = document.parse()?;
                    let name = role.metadata.name.clone().unwrap_or_default();
                    rbac.cluster_roles.insert(name, role);
                }
                Some("Role") => {
                    let role: Role = document.parse()?;
                    let key = (
                        namespace_of(role.metadata.namespace.as_deref()).to_owned(),
                        role.metadata.name.clone().unwrap_or_default(),
                    );
                    rbac.roles.insert(key, role);
                }
                Some("ClusterRoleBinding") => rbac.cluster_role_bindings.push(document.parse()?),
                Some("RoleBinding") => rbac.role_bindings.push(document.parse()?),
                _ => {}
            }
        }
        Ok(rbac)
    }

    /// Whether the ServiceAccount `service_account_namespace/service_account` may make the
    /// request: `verb` (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`) on `resource` (plural, as in the URL: `ingresses`) of API `group`
    /// (`""` for the core group), with an optional `subresource` (`status`), in `namespace`,
    /// or cluster-wide (cluster-scoped objects, and lists across all namespaces) when `None`.
    #[allow(clippy::too_many_arguments)]
    pub fn allows(
        &self,
        service_account_namespace: &str,
        service_account: &str,
        verb: &str,
        group: &str,
        resource: &str,
        subresource: Option<&str>,
        namespace: Option<&str>,
    ) -> bool {
        let who = ServiceAccount {
            namespace: service_account_namespace,
            name: service_account,
        };
        let request = Request {
            verb,
            group,
            resource,
            subresource,
        };
        let by_cluster_binding = self.cluster_role_bindings.iter().any(|binding| {
            binding.role_ref.kind == "ClusterRole"
                && who.is_among(binding.subjects.as_deref(), None)
                && self
                    .cluster_roles
                    .get(&binding.role_ref.name)
                    .is_some_and(|role| request.is_allowed_by(role.rules.as_deref()))
        });
        if by_cluster_binding {
            return true;
        }
        let Some(namespace) = namespace else {
            return false;
        };
        self.role_bindings.iter().any(|binding| {
            let binding_namespace = namespace_of(binding.metadata.namespace.as_deref());
            if binding_namespace != namespace
                || !who.is_among(binding.subjects.as_deref(), Some(binding_namespace))
            {
                return false;
            }
            let rules = match binding.role_ref.kind.as_str() {
                "ClusterRole" => self
                    .cluster_roles
                    .get(&binding.role_ref.name)
                    .and_then(|role| role.rules.as_deref()),
                "Role" => self
                    .roles
                    .get(&(binding_namespace.to_owned(), binding.role_ref.name.clone()))
                    .and_then(|role| role.rules.as_deref()),
                _ => None,
            };
            request.is_allowed_by(rules)
        })
    }
}

fn namespace_of(namespace: Option<&str>) -> &str {
    match namespace {
        Some(ns) if !ns.is_empty() => ns,
        _ => "default",
    }
}

struct ServiceAccount<'a> {
    namespace: &'a str,
    name: &'a str,
}

impl ServiceAccount<'_> {
    /// `binding_namespace` is `None` for ClusterRoleBindings.
    fn is_among(&self, subjects: Option<&[Subject]>, binding_namespace: Option<&str>) -> bool {
        subjects
            .unwrap_or_default()
            .iter()
            .any(|subject| self.is(subject, binding_namespace))
    }

    fn is(&self, subject: &Subject, binding_namespace: Option<&str>) -> bool {
        match subject.kind.as_str() {
            "ServiceAccount" => {
                let namespace = subject
                    .namespace
                    .as_deref()
                    .filter(|ns| !ns.is_empty())
                    .or(binding_namespace);
                subject.name == self.name && namespace == Some(self.namespace)
            }
            "User" => {
                subject.name == format!("system:serviceaccount:{}:{}", self.namespace, self.name)
            }
            "Group" => {
                subject.name == "system:serviceaccounts"
                    || subject.name == "system:authenticated"
                    || subject.name == format!("system:serviceaccounts:{}", self.namespace)
            }
            _ => false,
        }
    }
}

struct Request<'a> {
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    subresource: Option<&'a str>,
}

impl Request<'_> {
    fn is_allowed_by(&self, rules: Option<&[PolicyRule]>) -> bool {
        rules
            .unwrap_or_default()
            .iter()
            .any(|rule| self.matches(rule))
    }

    fn matches(&self, rule: &PolicyRule) -> bool {
        let holds = |list: Option<&[String]>, wanted: &str| {
            list.unwrap_or_default()
                .iter()
                .any(|item| item == "*" || item == wanted)
        };
        holds(Some(&rule.verbs), self.verb)
            && holds(rule.api_groups.as_deref(), self.group)
            && self.resource_matches(rule.resources.as_deref().unwrap_or_default())
            && self.names_match(rule.resource_names.as_deref().unwrap_or_default())
    }

    fn resource_matches(&self, resources: &[String]) -> bool {
        let combined = match self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.to_owned(),
        };
        resources.iter().any(|item| {
            item == "*"
                || *item == combined
                || self
                    .subresource
                    .is_some_and(|sub| item.strip_prefix("*/") == Some(sub))
        })
    }

    fn names_match(&self, names: &[String]) -> bool {
        names.is_empty() || matches!(self.verb, "get" | "update" | "patch" | "delete")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SA_NS: &str = "infra";
    const SA: &str = "ctl";

    fn rbac(text: &str) -> Rbac {
        Rbac::from_yaml(text).unwrap()
    }

    fn cluster_role(rules: &str) -> String {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: reader}}\nrules:\n{rules}"
        )
    }

    const CLUSTER_BINDING: &str = "
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader}
subjects: [{kind: ServiceAccount, name: ctl, namespace: infra}]
";

    fn with_cluster_binding(rules: &str) -> Rbac {
        rbac(&format!("{}\n---\n{CLUSTER_BINDING}", cluster_role(rules)))
    }

    #[test]
    fn cluster_role_binding_grants_everywhere_and_cluster_wide() {
        let r = with_cluster_binding(
            "  - {apiGroups: [networking.k8s.io], resources: [ingresses], verbs: [list, watch]}\n",
        );
        for ns in [None, Some("shop"), Some(SA_NS)] {
            assert!(r.allows(
                SA_NS,
                SA,
                "list",
                "networking.k8s.io",
                "ingresses",
                None,
                ns
            ));
            assert!(r.allows(
                SA_NS,
                SA,
                "watch",
                "networking.k8s.io",
                "ingresses",
                None,
                ns
            ));
        }
    }

    #[test]
    fn verb_group_and_resource_must_all_match() {
        let r = with_cluster_binding(
            "  - {apiGroups: [networking.k8s.io], resources: [ingresses], verbs: [get]}\n",
        );
        assert!(r.allows(
            SA_NS,
            SA,
            "get",
            "networking.k8s.io",
            "ingresses",
            None,
            None
        ));
        assert!(!r.allows(
            SA_NS,
            SA,
            "delete",
            "networking.k8s.io",
            "ingresses",
            None,
            None
        ));
        assert!(!r.allows(SA_NS, SA, "get", "extensions", "ingresses", None, None));
        assert!(!r.allows(SA_NS, SA, "get", "", "ingresses", None, None));
        assert!(!r.allows(
            SA_NS,
            SA,
            "get",
            "networking.k8s.io",
            "ingressclasses",
            None,
            None
        ));
    }

    #[test]
    fn core_group_is_the_empty_string() {
        let r =
            with_cluster_binding("  - {apiGroups: [\"\"], resources: [secrets], verbs: [get]}\n");
        assert!(r.allows(SA_NS, SA, "get", "", "secrets", None, Some("a")));
        assert!(!r.allows(SA_NS, SA, "get", "apps", "secrets", None, Some("a")));
    }

    #[test]
    fn subresources_are_separate_resources() {
        let r = with_cluster_binding(
            "  - {apiGroups: [networking.k8s.io], resources: [ingresses/status], verbs: [patch]}\n",
        );
        assert!(r.allows(
            SA_NS,
            SA,
            "patch",
            "networking.k8s.io",
            "ingresses",
            Some("status"),
            None
        ));
        assert!(!r.allows(
            SA_NS,
            SA,
            "patch",
            "networking.k8s.io",
            "ingresses",
            None,
            None
        ));
        assert!(!r.allows(
            SA_NS,
            SA,
            "patch",
            "networking.k8s.io",
            "ingresses",
            Some("scale"),
            None
        ));

        let main_only = with_cluster_binding(
            "  - {apiGroups: [networking.k8s.io], resources: [ingresses], verbs: [patch]}\n",
        );
        assert!(!main_only.allows(
            SA_NS,
            SA,
            "patch",
            "networking.k8s.io",
            "ingresses",
            Some("status"),
            None
        ));
    }

    #[test]
    fn wildcards_match_anything_in_their_field() {
        let r =
            with_cluster_binding("  - {apiGroups: [\"*\"], resources: [\"*\"], verbs: [\"*\"]}\n");
        assert!(r.allows(
            SA_NS,
            SA,
            "deletecollection",
            "apps",
            "deployments",
            None,
            Some("x")
        ));
        assert!(r.allows(SA_NS, SA, "patch", "", "pods", Some("status"), None));

        let any_status = with_cluster_binding(
            "  - {apiGroups: [\"*\"], resources: [\"*/status\"], verbs: [update]}\n",
        );
        assert!(any_status.allows(
            SA_NS,
            SA,
            "update",
            "apps",
            "deployments",
            Some("status"),
            None
        ));
        assert!(!any_status.allows(SA_NS, SA, "update", "apps", "deployments", None, None));
        assert!(!any_status.allows(
            SA_NS,
            SA,
            "update",
            "apps",
            "deployments",
            Some("scale"),
            None
        ));
    }

    #[test]
    fn resource_names_match_only_verbs_on_one_object() {
        let r = with_cluster_binding(
            "  - {apiGroups: [\"\"], resources: [configmaps], resourceNames: [one], verbs: [get, list, watch, update, create]}\n",
        );
        assert!(r.allows(SA_NS, SA, "get", "", "configmaps", None, Some("a")));
        assert!(r.allows(SA_NS, SA, "update", "", "configmaps", None, Some("a")));
        assert!(!r.allows(SA_NS, SA, "list", "", "configmaps", None, Some("a")));
        assert!(!r.allows(SA_NS, SA, "watch", "", "configmaps", None, Some("a")));
        assert!(!r.allows(SA_NS, SA, "create", "", "configmaps", None, Some("a")));
    }

    #[test]
    fn only_the_bound_service_account_is_granted() {
        let r =
            with_cluster_binding("  - {apiGroups: [\"\"], resources: [services], verbs: [list]}\n");
        assert!(r.allows(SA_NS, SA, "list", "", "services", None, None));
        assert!(!r.allows(SA_NS, "other", "list", "", "services", None, None));
        assert!(!r.allows("elsewhere", SA, "list", "", "services", None, None));
    }

    const LEASE_ROLE: &str = "
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: leases, namespace: infra}
rules:
  - {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, create, update]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: leases, namespace: infra}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: leases}
subjects: [{kind: ServiceAccount, name: ctl, namespace: infra}]
";

    #[test]
    fn role_binding_grants_only_in_its_namespace() {
        let r = rbac(LEASE_ROLE);
        assert!(r.allows(
            SA_NS,
            SA,
            "update",
            "coordination.k8s.io",
            "leases",
            None,
            Some(SA_NS)
        ));
        assert!(!r.allows(
            SA_NS,
            SA,
            "update",
            "coordination.k8s.io",
            "leases",
            None,
            Some("default")
        ));
        assert!(!r.allows(
            SA_NS,
            SA,
            "update",
            "coordination.k8s.io",
            "leases",
            None,
            None
        ));
        assert!(!r.allows(
            SA_NS,
            SA,
            "list",
            "coordination.k8s.io",
            "leases",
            None,
            Some(SA_NS)
        ));
    }

    #[test]
    fn role_binding_uses_the_role_of_its_own_namespace() {
        let text = LEASE_ROLE.replacen(
            "metadata: {name: leases, namespace: infra}",
            "metadata: {name: leases, namespace: other}",
            1,
        );
        let r = rbac(&text);
        assert!(!r.allows(
            SA_NS,
            SA,
            "get",
            "coordination.k8s.io",
            "leases",
            None,
            Some(SA_NS)
        ));
    }

    #[test]
    fn role_binding_may_reference_a_cluster_role_within_its_namespace() {
        let text = format!(
            "{}\n---\n{}",
            cluster_role("  - {apiGroups: [\"\"], resources: [secrets], verbs: [list]}\n"),
            "
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader}
subjects: [{kind: ServiceAccount, name: ctl, namespace: infra}]
"
        );
        let r = rbac(&text);
        assert!(r.allows(SA_NS, SA, "list", "", "secrets", None, Some("shop")));
        assert!(!r.allows(SA_NS, SA, "list", "", "secrets", None, Some("bank")));
        assert!(!r.allows(SA_NS, SA, "list", "", "secrets", None, None));
    }

    #[test]
    fn service_account_subject_namespace_defaults_to_the_role_binding_namespace() {
        let r = rbac(&LEASE_ROLE.replace(
            "{kind: ServiceAccount, name: ctl, namespace: infra}",
            "{kind: ServiceAccount, name: ctl}",
        ));
        assert!(r.allows(
            SA_NS,
            SA,
            "get",
            "coordination.k8s.io",
            "leases",
            None,
            Some(SA_NS)
        ));
        assert!(!r.allows(
            "default",
            SA,
            "get",
            "coordination.k8s.io",
            "leases",
            None,
            Some(SA_NS)
        ));
    }

    #[test]
    fn user_and_group_subjects_name_service_accounts_too() {
        for subject in [
            "{kind: User, apiGroup: rbac.authorization.k8s.io, name: \"system:serviceaccount:infra:ctl\"}",
            "{kind: Group, apiGroup: rbac.authorization.k8s.io, name: \"system:serviceaccounts:infra\"}",
            "{kind: Group, apiGroup: rbac.authorization.k8s.io, name: \"system:serviceaccounts\"}",
        ] {
            let binding = CLUSTER_BINDING.replace(
                "{kind: ServiceAccount, name: ctl, namespace: infra}",
                subject,
            );
            let text = format!(
                "{}\n---\n{binding}",
                cluster_role("  - {apiGroups: [\"\"], resources: [services], verbs: [get]}\n")
            );
            assert!(
                rbac(&text).allows(SA_NS, SA, "get", "", "services", None, None),
                "{subject}"
            );
        }
        let stranger = CLUSTER_BINDING.replace(
            "{kind: ServiceAccount, name: ctl, namespace: infra}",
            "{kind: User, apiGroup: rbac.authorization.k8s.io, name: jane}",
        );
        let text = format!(
            "{}\n---\n{stranger}",
            cluster_role("  - {apiGroups: [\"\"], resources: [services], verbs: [get]}\n")
        );
        assert!(!rbac(&text).allows(SA_NS, SA, "get", "", "services", None, None));
    }

    #[test]
    fn a_binding_to_a_missing_role_grants_nothing() {
        let r = rbac(CLUSTER_BINDING);
        assert!(!r.allows(SA_NS, SA, "get", "", "services", None, None));
    }

    #[test]
    fn other_kinds_are_skipped() {
        let text = format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: ctl, namespace: infra}}\n---\n{}\n---\n{CLUSTER_BINDING}",
            cluster_role("  - {apiGroups: [\"\"], resources: [services], verbs: [get]}\n")
        );
        assert!(rbac(&text).allows(SA_NS, SA, "get", "", "services", None, None));
    }

    #[test]
    fn load_reads_yaml_files_of_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), LEASE_ROLE).unwrap();
        std::fs::write(dir.path().join("README.md"), "not: [yaml").unwrap();
        let r = Rbac::load(dir.path()).unwrap();
        assert!(r.allows(
            SA_NS,
            SA,
            "create",
            "coordination.k8s.io",
            "leases",
            None,
            Some(SA_NS)
        ));

        std::fs::write(dir.path().join("b.yml"), "kind: [unclosed").unwrap();
        assert!(Rbac::load(dir.path()).is_err());
    }
}
