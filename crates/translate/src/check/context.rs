//! What the classification looks up about each Ingress, indexed once from the compile's
//! table and the objects, and where each diagnostic of the compile belongs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::api::networking::v1::Ingress;
use vestibule_model::{Backend, Canary, HostPattern, PathKind, Route, RouteId, VirtualHost};

use super::{ClusterFinding, Finding, Settings, Source, diagnostics};
use crate::annotations::PREFIX;
use crate::annotations::syntax::parse_bool;
use crate::compile::Compiled;
use crate::report::{Diagnostic, Kind, namespace_of};
use crate::snapshot::Snapshot;

pub(super) type Key<'a> = (&'a str, &'a str);

/// Everything the classification looks up, indexed once so that a large cluster is checked
/// in one pass over each list.
pub(super) struct Context<'a> {
    pub(super) compiled: &'a Compiled,
    pub(super) read_secrets: bool,
    /// The files read hold no Service at all (an Ingress-only dump): missing Services are
    /// not problems of the Ingresses.
    pub(super) services_absent: bool,
    /// The Ingresses of the class checked.
    pub(super) ingresses: HashMap<Key<'a>, &'a Ingress>,
    /// Each Ingress's routes, with their virtual host.
    pub(super) routes: HashMap<Key<'a>, Vec<(&'a Route, &'a VirtualHost)>>,
    /// The routes each canary Ingress takes a share of.
    pub(super) canaries: HashMap<Key<'a>, Vec<(&'a Route, &'a Canary)>>,
    /// Hosts whose paths are regular expressions.
    pub(super) regex_hosts: HashSet<&'a HostPattern>,
    /// Every rule path (as written) of every served Ingress, by host.
    pub(super) host_paths: HashMap<HostPattern, HashSet<&'a str>>,
    /// Hosts where some Ingress checks client certificates (`auth-tls-secret`), with the
    /// oldest that does.
    pub(super) client_cert_hosts: HashMap<HostPattern, Key<'a>>,
    /// The Ingresses whose routes use each Service.
    pub(super) service_users: HashMap<Key<'a>, BTreeSet<Key<'a>>>,
    /// EndpointSlice `namespace/name` → its Service's name.
    pub(super) slice_services: HashMap<Key<'a>, &'a str>,
}

/// One Ingress with what the compile made of it.
pub(super) struct View<'a> {
    pub(super) key: Key<'a>,
    pub(super) ingress: &'a Ingress,
    pub(super) routes: &'a [(&'a Route, &'a VirtualHost)],
    pub(super) canary_of: &'a [(&'a Route, &'a Canary)],
}

impl<'a> View<'a> {
    pub(super) fn annotation(&self, short: &str) -> Option<&'a str> {
        annotation(self.ingress, short)
    }
}

pub(super) fn annotation<'a>(ingress: &'a Ingress, short: &str) -> Option<&'a str> {
    let annotations = ingress.metadata.annotations.as_ref()?;
    annotations
        .iter()
        .find(|(k, _)| k.strip_prefix(PREFIX) == Some(short))
        .map(|(_, v)| v.as_str())
}

/// The rule path as ingress-nginx reads it: `/` when empty.
pub(super) fn raw_path(path: Option<&str>) -> &str {
    path.filter(|p| !p.is_empty()).unwrap_or("/")
}

impl<'a> Context<'a> {
    pub(super) fn new(
        snapshot: &'a Snapshot,
        compiled: &'a Compiled,
        settings: &Settings<'_>,
    ) -> Self {
        let ours: HashSet<(&str, &str)> = compiled
            .report
            .ours()
            .map(|o| (o.namespace.as_str(), o.name.as_str()))
            .collect();
        let mut ingresses = HashMap::new();
        for ingress in &snapshot.ingresses {
            let key = (
                namespace_of(&ingress.metadata),
                ingress.metadata.name.as_deref().unwrap_or(""),
            );
            if ours.contains(&key) {
                ingresses.entry(key).or_insert(&**ingress);
            }
        }
        let table = &compiled.table;
        let mut vhost_of: HashMap<RouteId, &VirtualHost> = HashMap::new();
        for vhost in table.virtual_hosts() {
            for id in vhost.route_ids() {
                vhost_of.insert(*id, vhost);
            }
        }
        let mut context = Context {
            compiled,
            read_secrets: settings.read_secrets,
            services_absent: matches!(settings.source, Source::Files { .. })
                && snapshot.services.is_empty(),
            ingresses,
            routes: HashMap::new(),
            canaries: HashMap::new(),
            regex_hosts: HashSet::new(),
            host_paths: HashMap::new(),
            client_cert_hosts: HashMap::new(),
            service_users: HashMap::new(),
            slice_services: HashMap::new(),
        };
        for route in table.routes() {
            let key = (&*route.origin.namespace, &*route.origin.name);
            if let Some(vhost) = vhost_of.get(&route.id) {
                context.routes.entry(key).or_default().push((route, *vhost));
            }
            if let Some(canary) = &route.canary {
                let key = (&*canary.origin.namespace, &*canary.origin.name);
                context
                    .canaries
                    .entry(key)
                    .or_default()
                    .push((route, &**canary));
            }
            if route.rule.kind == PathKind::Regex {
                context.regex_hosts.insert(&route.host);
            }
            if let Backend::Cluster(id) = &route.backend {
                let cluster = table.cluster(*id);
                context
                    .service_users
                    .entry((&*cluster.key.namespace, &*cluster.key.service))
                    .or_default()
                    .insert(key);
            }
        }
        // Oldest first, as the compile and ingress-nginx take them: the first Ingress of a host
        // that checks client certificates is the one whose settings nginx gives the host.
        let mut by_age: Vec<(&Key<'a>, &&'a Ingress)> = context.ingresses.iter().collect();
        by_age.sort_by_key(|(key, ingress)| {
            let created = ingress.metadata.creation_timestamp.as_ref().map(|t| t.0);
            (created.is_none(), created, **key)
        });
        for (key, ingress) in by_age {
            // A canary's paths are its main's, so they add nothing to what a host has.
            if annotation(ingress, "canary").and_then(parse_bool) == Some(true) {
                continue;
            }
            let checks_certificates = annotation(ingress, "auth-tls-secret").is_some()
                && annotation(ingress, "auth-tls-verify-client") != Some("off");
            for rule in ingress.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
                let Ok(host) = HostPattern::parse(rule.host.as_deref().unwrap_or("")) else {
                    continue;
                };
                if checks_certificates {
                    context
                        .client_cert_hosts
                        .entry(host.clone())
                        .or_insert(*key);
                }
                let paths = rule.http.iter().flat_map(|h| &h.paths);
                context
                    .host_paths
                    .entry(host)
                    .or_default()
                    .extend(paths.map(|p| raw_path(p.path.as_deref())));
            }
        }
        for slice in &snapshot.endpoint_slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::backend::SERVICE_NAME_LABEL));
            if let (Some(name), Some(service)) = (slice.metadata.name.as_deref(), service) {
                context
                    .slice_services
                    .insert((namespace_of(&slice.metadata), name), service);
            }
        }
        context
    }

    pub(super) fn view<'s>(&'s self, key: Key<'s>) -> Option<View<'s>> {
        Some(View {
            key,
            ingress: self.ingresses.get(&key)?,
            routes: self.routes.get(&key).map_or(&[], Vec::as_slice),
            canary_of: self.canaries.get(&key).map_or(&[], Vec::as_slice),
        })
    }

    /// The annotation keys that closed an Ingress's routes (503).
    pub(super) fn refused_keys(&self, key: Key<'_>) -> Vec<&'a str> {
        let from_routes = self
            .routes
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|(route, _)| route.policy.refused.as_deref());
        let from_default = self
            .compiled
            .table
            .default_backend()
            .filter(|d| {
                d.origin
                    .as_ref()
                    .is_some_and(|o| (&*o.namespace, &*o.name) == key)
            })
            .and_then(|d| d.policy.as_deref()?.refused.as_deref());
        let mut keys: Vec<&str> = from_routes
            .chain(from_default)
            .flat_map(|r| r.keys.split(", "))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Puts a diagnostic with the Ingress it is about: its own, or, for a Service or an
    /// EndpointSlice, every Ingress whose routes use the Service. Others concern nothing
    /// checked, except an Ingress loaded twice, which is the input's.
    pub(super) fn place(
        &self,
        diagnostic: &'a Diagnostic,
        findings: &mut BTreeMap<Key<'a>, Vec<Finding>>,
        cluster: &mut Vec<ClusterFinding>,
    ) {
        let object = &diagnostic.object;
        let key = (object.namespace.as_str(), object.name.as_str());
        match object.kind {
            Kind::Ingress => match (self.view(key), findings.get_mut(&key)) {
                (Some(view), Some(list)) if !diagnostics::is_duplicate(diagnostic) => {
                    list.extend(diagnostics::classify(diagnostic, self, &view));
                }
                _ => cluster.push(ClusterFinding {
                    severity: diagnostic.severity,
                    source: format!("Ingress {object}"),
                    message: format!("{}: {}", diagnostic.field, diagnostic.message),
                }),
            },
            Kind::Service | Kind::EndpointSlice => {
                let service = match object.kind {
                    Kind::Service => Some(key.1),
                    _ => self.slice_services.get(&key).copied(),
                };
                let users = service.and_then(|s| self.service_users.get(&(key.0, s)));
                for user in users.into_iter().flatten() {
                    if let Some(list) = findings.get_mut(user) {
                        list.push(diagnostics::of_service(diagnostic));
                    }
                }
            }
            Kind::IngressClass | Kind::Secret | Kind::ConfigMap => {}
        }
    }
}
