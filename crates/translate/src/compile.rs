//! The compile: which Ingresses are ours, their TLS, their rules in precedence order,
//! backends, and the default backend, into one table and one report.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, Ingress, IngressBackend, IngressRule, IngressSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use vestibule_model::{
    Backend, Certificate, CertificateRef, DefaultBackend, ExternalAuth, HostPattern, PathKind,
    PathRule, ProxyPolicy, Rewrite, RouteId, RouteOrigin, RoutePolicy, RouteTable, ServerRules,
    SourceRanges, TableBuilder,
};

mod canary;

use crate::annotations::{self, IngressSettings};
use crate::backend::{PortRef, SERVICE_NAME_LABEL, ServiceRef, Services};
use crate::class::Classes;
use crate::report::{Diagnostics, IngressOutcome, Kind, ObjectRef, Report, Severity, namespace_of};
use crate::snapshot::Snapshot;
use crate::tls::{CertMemory, Loaded, Secrets};

/// Controller settings that change what is compiled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Options {
    /// IngressClasses whose `spec.controller` equals this are ours.
    pub controller_class: String,
    /// Value of the legacy `kubernetes.io/ingress.class` annotation that means us.
    pub ingress_class: String,
    /// Serve Ingresses that name no class even when no IngressClass of ours is the default.
    pub watch_ingress_without_class: bool,
    /// `(namespace, name)` of a Service serving requests that match no rule, used when no
    /// Ingress sets `spec.defaultBackend`.
    pub default_backend_service: Option<(String, String)>,
    /// Namespaces to read; empty means all.
    pub watch_namespaces: Vec<String>,
    /// `(namespace, name)` of the TLS Secret served when no TLS host matches a handshake.
    pub default_ssl_certificate: Option<(String, String)>,
    /// Timeouts, retries, body limit, balancing and upstream TLS for every route, before the
    /// annotations of its Ingress override them.
    pub proxy: ProxyPolicy,
    /// Plain HTTP is redirected to HTTPS on hosts with TLS unless an Ingress says otherwise
    /// (`--ssl-redirect`, ingress-nginx's `ssl-redirect`).
    pub ssl_redirect: bool,
    /// Plain HTTP is redirected to HTTPS on every host unless an Ingress says otherwise
    /// (`--force-ssl-redirect`).
    pub force_ssl_redirect: bool,
    /// Annotations may name Secrets in other namespaces than their Ingress's
    /// (`auth-secret`); off, as in ingress-nginx.
    pub allow_cross_namespace_resources: bool,
    /// External authentication for every Ingress that has none of its own and does not
    /// opt out (`--global-auth-url` and its companions).
    pub global_auth: Option<Arc<ExternalAuth>>,
    /// Paths that the global authentication spares (`--no-auth-locations`), by prefix.
    pub no_auth_locations: Vec<String>,
    /// Client addresses every Ingress allows or denies unless its own annotations say
    /// otherwise (`--allowlist-source-range`, `--denylist-source-range`).
    pub source_ranges: Option<Arc<SourceRanges>>,
    /// `(namespace, name)` of a ConfigMap of fields set on every request sent upstream
    /// (`--proxy-set-headers`).
    pub proxy_set_headers: Option<(String, String)>,
    /// `(namespace, name)` of a ConfigMap of fields set on every response
    /// (`--add-headers`).
    pub add_headers: Option<(String, String)>,
    /// Fields removed from every response (`--hide-headers`).
    pub hide_headers: Vec<String>,
    /// The response fields `custom-headers` may set (`--global-allowed-response-headers`).
    pub global_allowed_response_headers: Vec<String>,
    /// Statuses every Ingress sends to the error backend unless its `custom-http-errors`
    /// says otherwise (`--custom-http-errors`).
    pub custom_http_errors: Vec<u16>,
    /// `ssl-passthrough` is honoured (`--enable-ssl-passthrough`); without it the
    /// annotation is only a warning.
    pub enable_ssl_passthrough: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            controller_class: "vestibule.dev/ingress-controller".to_owned(),
            ingress_class: "vestibule".to_owned(),
            watch_ingress_without_class: false,
            default_backend_service: None,
            watch_namespaces: Vec::new(),
            default_ssl_certificate: None,
            proxy: ProxyPolicy::default(),
            ssl_redirect: true,
            force_ssl_redirect: false,
            allow_cross_namespace_resources: false,
            global_auth: None,
            no_auth_locations: vec!["/.well-known/acme-challenge".to_owned()],
            source_ranges: None,
            proxy_set_headers: None,
            add_headers: None,
            hide_headers: Vec::new(),
            global_allowed_response_headers: Vec::new(),
            custom_http_errors: Vec::new(),
            enable_ssl_passthrough: false,
        }
    }
}

/// The output of a compile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    pub table: RouteTable,
    pub report: Report,
    /// Give this to the next compile, so Secrets that go bad keep their last good certificate.
    pub memory: CertMemory,
}

/// Everything a compile depends on besides the snapshot. The compile reads no clock and
/// keeps no state of its own: the time and the memory of last good certificates come in here.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub options: &'a Options,
    pub memory: &'a CertMemory,
    /// Unix seconds, for certificate expiry.
    pub now: i64,
}

/// Compiles with the current time and no memory of earlier compiles: for one-off use such as
/// `vestibule validate`. A long-running process uses [`compile_with`].
pub fn compile(snapshot: &Snapshot, options: &Options) -> Compiled {
    compile_with(
        snapshot,
        Context {
            options,
            memory: &CertMemory::default(),
            now: unix_now(),
        },
    )
}

/// The current time as [`Context::now`] wants it.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Compiles a snapshot. Never fails: what cannot be used is skipped and reported.
pub fn compile_with(snapshot: &Snapshot, context: Context<'_>) -> Compiled {
    let options = context.options;
    let in_scope = |meta: &ObjectMeta| {
        options.watch_namespaces.is_empty()
            || options
                .watch_namespaces
                .iter()
                .any(|ns| ns == namespace_of(meta))
    };
    // Objects that a flag names are read wherever they are: the operator chose them, and
    // `--watch-namespace` limits which Ingresses are served, not where the flags may point.
    let flag_names = |flag: &Option<(String, String)>, namespace: &str, name: Option<&str>| {
        flag.as_ref()
            .is_some_and(|(ns, n)| ns == namespace && Some(n.as_str()) == name)
    };
    let default_service = |meta: &ObjectMeta, name: Option<&str>| {
        flag_names(&options.default_backend_service, namespace_of(meta), name)
    };
    let classes = Classes::new(&snapshot.ingress_classes, options);
    let services = Services::new(
        snapshot.services.iter().filter(|s| {
            in_scope(&s.metadata) || default_service(&s.metadata, s.metadata.name.as_deref())
        }),
        snapshot.endpoint_slices.iter().filter(|s| {
            let service = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str);
            in_scope(&s.metadata) || default_service(&s.metadata, service)
        }),
    );
    let mut ingresses: Vec<&Ingress> = snapshot
        .ingresses
        .iter()
        .map(|i| &**i)
        .filter(|i| in_scope(&i.metadata))
        .collect();
    // Precedence between Ingresses is by age, so they are compiled oldest first and every
    // "first one wins" below means "oldest wins", whatever order the source listed them in.
    ingresses.sort_by(|a, b| age_key(&a.metadata).cmp(&age_key(&b.metadata)));

    let mut compiler = Compiler {
        options,
        services,
        secrets: Secrets::new(
            snapshot.secrets.iter().filter(|s| {
                in_scope(&s.metadata)
                    || flag_names(
                        &options.default_ssl_certificate,
                        namespace_of(&s.metadata),
                        s.metadata.name.as_deref(),
                    )
            }),
            context.memory,
            context.now,
        ),
        builder: TableBuilder::new(),
        diags: Diagnostics::default(),
        default_policy: RoutePolicy {
            ssl_redirect: options.ssl_redirect,
            force_ssl_redirect: options.force_ssl_redirect,
            proxy: Arc::new(options.proxy.clone()),
            external_auth: options.global_auth.clone(),
            source_ranges: options.source_ranges.clone(),
            custom_errors: (!options.custom_http_errors.is_empty())
                .then(|| options.custom_http_errors.as_slice().into()),
            ..RoutePolicy::default()
        },
        regex_hosts: HashMap::new(),
    };
    compiler.default_certificate();
    let mut outcomes = Vec::new();
    let mut seen = HashSet::new();
    let mut ours: Vec<(&Ingress, ObjectRef)> = Vec::new();
    for ingress in ingresses {
        let object = ObjectRef::of(Kind::Ingress, &ingress.metadata);
        if !seen.insert((object.namespace.clone(), object.name.clone())) {
            compiler.diags.error(
                &object,
                "metadata.name",
                "another Ingress with this namespace and name is already loaded; this one is ignored",
            );
            continue;
        }
        let decision = classes.decide(ingress, options);
        outcomes.push(IngressOutcome {
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            ours: decision.is_ok(),
            reason: decision.clone().unwrap_or_else(|why_not| why_not),
        });
        if decision.is_ok() {
            ours.push((ingress, object));
        }
    }
    let config_maps: annotations::ConfigMaps<'_> = snapshot
        .config_maps
        .iter()
        .map(|c| {
            let name = c.metadata.name.as_deref().unwrap_or("");
            ((namespace_of(&c.metadata), name), &**c)
        })
        .collect();
    compiler.default_policy.headers = annotations::headers::global(
        options.proxy_set_headers.as_ref(),
        options.add_headers.as_ref(),
        &options.hide_headers,
        &config_maps,
        &mut compiler.diags,
    );
    let settings: Vec<IngressSettings> = ours
        .iter()
        .map(|(ingress, object)| {
            annotations::read(
                ingress.metadata.annotations.as_ref(),
                object,
                &compiler.default_policy,
                &annotations::Env {
                    secrets: &compiler.secrets,
                    config_maps: &config_maps,
                    cross_namespace: options.allow_cross_namespace_resources,
                    allowed_response_headers: &options.global_allowed_response_headers,
                    error_backend_flag: options.default_backend_service.is_some(),
                    ssl_passthrough: options.enable_ssl_passthrough,
                },
                &mut compiler.diags,
            )
        })
        .collect();
    compiler.regex_hosts = regex_hosts(&ours, &settings);
    for ((ingress, object), settings) in ours.iter().zip(&settings) {
        if !settings.is_canary {
            compiler.ingress(ingress, object, settings);
        }
    }
    for ((ingress, object), settings) in ours.iter().zip(&settings) {
        if let Some(rule) = settings.canary.as_ref().filter(|_| settings.is_canary) {
            compiler.canary(ingress, object, rule);
        }
    }
    compiler.servers(&ours, &settings);
    compiler.flag_default_backend();
    outcomes.sort();
    Compiled {
        table: compiler.builder.build(),
        report: Report {
            diagnostics: compiler.diags.finish(),
            ingresses: outcomes,
        },
        memory: compiler.secrets.finish(),
    }
}

/// Oldest first: creation time (objects without one, as in manifest files, after those with
/// one), then namespace and name.
fn age_key(meta: &ObjectMeta) -> (bool, Option<k8s_openapi::jiff::Timestamp>, &str, &str) {
    let created = meta.creation_timestamp.as_ref().map(|t| t.0);
    (
        created.is_none(),
        created,
        namespace_of(meta),
        meta.name.as_deref().unwrap_or(""),
    )
}

struct Compiler<'s> {
    options: &'s Options,
    services: Services<'s>,
    secrets: Secrets<'s>,
    builder: TableBuilder,
    diags: Diagnostics,
    /// The flags' policy; its `proxy` is shared by the routes of every Ingress whose
    /// annotations change none of it.
    default_policy: RoutePolicy,
    /// Hosts in regex mode, with the (oldest) Ingress that put them there.
    regex_hosts: HashMap<HostPattern, ObjectRef>,
}

impl Compiler<'_> {
    fn ingress(&mut self, ingress: &Ingress, object: &ObjectRef, settings: &IngressSettings) {
        let Some(spec) = &ingress.spec else {
            self.diags.error(object, "spec", "spec is missing");
            return;
        };
        self.ingress_tls(spec, object);
        let rules = spec.rules.as_deref().unwrap_or(&[]);
        if rules.is_empty() && spec.default_backend.is_none() {
            self.diags.error(
                object,
                "spec",
                "an Ingress needs at least one rule or a defaultBackend",
            );
        }
        if let Some(default) = &spec.default_backend {
            self.ingress_default_backend(default, object, settings);
        }
        let fallback = settings
            .default_backend
            .as_deref()
            .and_then(|name| self.fallback(name, object));
        let has_root = |rule: &IngressRule| {
            rule.host.is_some()
                && (rule.http.iter()).any(|http| http.paths.iter().any(|p| raw_path(p) == "/"))
        };
        let without_passthrough;
        let settings = if settings.passthrough && !rules.iter().any(has_root) {
            self.diags.warning(
                object,
                annotations::field("ssl-passthrough"),
                "no rule of this Ingress has a `/` path on a named host, so nothing is passed \
                 through",
            );
            without_passthrough = IngressSettings {
                passthrough: false,
                ..settings.clone()
            };
            &without_passthrough
        } else {
            settings
        };
        for (i, rule) in rules.iter().enumerate() {
            let raw_host = rule.host.as_deref().unwrap_or("");
            let host = match HostPattern::parse(raw_host) {
                Ok(host) => host,
                Err(e) => {
                    self.diags.error(
                        object,
                        format!("spec.rules[{i}].host"),
                        format!("{e}; this rule is ignored"),
                    );
                    continue;
                }
            };
            if raw_host.bytes().any(|b| b.is_ascii_uppercase()) {
                self.diags.warning(
                    object,
                    format!("spec.rules[{i}].host"),
                    format!("host names are case-insensitive; matched as {host}"),
                );
            }
            let Some(http) = &rule.http else {
                continue;
            };
            if settings.unservable {
                continue;
            }
            self.regex_note(&host, http.paths.iter(), object, settings, i);
            if http.paths.is_empty() {
                self.diags.error(
                    object,
                    format!("spec.rules[{i}].http.paths"),
                    "a rule with http needs at least one path",
                );
            }
            for (j, path) in http.paths.iter().enumerate() {
                let field = format!("spec.rules[{i}].http.paths[{j}]");
                self.path(&host, path, object, &field, (settings, fallback.as_ref()));
            }
        }
    }

    /// One rule path: `settings` are its Ingress's, with the Ingress's `default-backend`
    /// resolved.
    fn path(
        &mut self,
        host: &HostPattern,
        path: &HTTPIngressPath,
        object: &ObjectRef,
        field: &str,
        (settings, fallback): (&IngressSettings, Option<&Backend>),
    ) {
        let raw = raw_path(path);
        let regex = self.regex_hosts.contains_key(host);
        let rule = match if regex {
            regex_rule(path)
        } else {
            path_rule(path)
        } {
            Ok(rule) => rule,
            Err((sub, message)) => {
                self.diags.error(
                    object,
                    format!("{field}.{sub}"),
                    format!("{message}; this path is ignored"),
                );
                return;
            }
        };
        if !regex
            && path.path_type == "ImplementationSpecific"
            && path.path.as_deref().is_some_and(|p| {
                p.contains([
                    '^', '$', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\',
                ])
            })
        {
            self.diags.warning(
                object,
                format!("{field}.path"),
                "this looks like a regular expression, but without use-regex \
                 ImplementationSpecific paths are matched as literal prefixes",
            );
        }
        let backend_field = format!("{field}.backend");
        let cluster_ip = settings.service_upstream;
        let Some(backend) = self.backend(&path.backend, object, &backend_field, cluster_ip) else {
            return;
        };
        let origin = origin(object, field);
        let mut policy = settings.policy.clone();
        policy.fallback = fallback.cloned();
        let spared = |l: &String| raw.starts_with(l.as_str());
        if let (Some(global), Some(auth)) = (&self.options.global_auth, &policy.external_auth)
            && Arc::ptr_eq(global, auth)
            && self.options.no_auth_locations.iter().any(spared)
        {
            policy.external_auth = None;
        }
        if let Some(target) = settings.rewrite_target.as_deref().filter(|t| *t != raw) {
            let prefix = settings.forwarded_prefix.as_deref();
            match Rewrite::new(raw, target, prefix) {
                Ok(rewrite) => policy.rewrite = Some(Arc::new(rewrite)),
                Err(e) => {
                    self.diags.error(
                        object,
                        format!("{field}.path"),
                        format!("rewrite-target cannot apply: {e}; this path is ignored"),
                    );
                    return;
                }
            }
        }
        let added = (self.builder).route_with(host.clone(), rule.clone(), backend, origin, policy);
        match added {
            Ok(id) if settings.passthrough => self.passthrough(host, id, raw, object, field),
            Ok(_) => {}
            Err(conflict) => self.conflict(host, &rule, &conflict.existing, object, field),
        }
    }

    /// `ssl-passthrough` for one rule path: only a named host's `/` path carries it, as in
    /// ingress-nginx.
    fn passthrough(
        &mut self,
        host: &HostPattern,
        id: RouteId,
        raw: &str,
        object: &ObjectRef,
        field: &str,
    ) {
        let problem = if raw != "/" {
            "with ssl-passthrough, HTTPS for this host goes untouched to the Service of its `/` \
             path; this path is served over plain HTTP only"
                .to_owned()
        } else if *host == HostPattern::Any {
            "ssl-passthrough needs a host (connections are passed through by their TLS server \
             name); this path is served as usual"
                .to_owned()
        } else if let Err(holder) = self.builder.passthrough(host, id) {
            let holder = &self.builder.route_at(holder).origin;
            format!(
                "host {host} is already passed through to the `/` path of Ingress {}/{} ({}); \
                 this path is served over plain HTTP only",
                holder.namespace, holder.name, holder.field
            )
        } else {
            return;
        };
        self.diags.warning(object, field, problem);
    }

    fn conflict(
        &mut self,
        host: &HostPattern,
        rule: &PathRule,
        existing: &RouteOrigin,
        object: &ObjectRef,
        field: &str,
    ) {
        self.diags.error(
            object,
            field,
            format!(
                "{:?} path {} on host {host} is already routed by Ingress {}/{} ({}), which \
                 takes precedence as the older definition; this path is ignored",
                rule.kind, rule.path, existing.namespace, existing.name, existing.field
            ),
        );
    }

    /// Warns an Ingress whose paths on `host` are read as regular expressions because
    /// another Ingress put the host in regex mode.
    fn regex_note<'p>(
        &mut self,
        host: &HostPattern,
        mut paths: impl Iterator<Item = &'p HTTPIngressPath>,
        object: &ObjectRef,
        settings: &IngressSettings,
        rule: usize,
    ) {
        let Some(by) = self.regex_hosts.get(host) else {
            return;
        };
        if by == object || paths.any(|p| settings.wants_regex(raw_path(p))) {
            return;
        }
        let message = format!(
            "host {host} is in regex mode because Ingress {by} uses use-regex or \
             rewrite-target: as in ingress-nginx, every path of this rule is matched as a \
             case-insensitive regular expression anchored at the start only (an Exact /api \
             also matches /API and /api/x)"
        );
        self.diags
            .warning(object, format!("spec.rules[{rule}].host"), message);
    }

    /// What Ingresses set on their hosts rather than their paths: `app-root`,
    /// `from-to-www-redirect` and `server-alias`, the oldest Ingress winning.
    fn servers(&mut self, ours: &[(&Ingress, ObjectRef)], settings: &[IngressSettings]) {
        let hosts_of = |ingress: &Ingress| -> Vec<HostPattern> {
            let mut hosts: Vec<HostPattern> = ingress
                .spec
                .iter()
                .flat_map(|s| s.rules.iter().flatten())
                .filter_map(|r| HostPattern::parse(r.host.as_deref().unwrap_or("")).ok())
                .collect();
            // A host named by two rules of one Ingress is that Ingress's once.
            let mut seen = HashSet::new();
            hosts.retain(|h| seen.insert(h.clone()));
            hosts
        };
        let all: HashSet<HostPattern> = ours.iter().flat_map(|(i, _)| hosts_of(i)).collect();
        // The oldest Ingress's rules win: each host's entry is filled in age order.
        let mut rules: HashMap<HostPattern, ServerRules> = HashMap::new();
        for ((ingress, object), settings) in ours.iter().zip(settings) {
            let hosts = hosts_of(ingress);
            if let Some(root) = &settings.app_root {
                for host in &hosts {
                    let server = rules.entry(host.clone()).or_default();
                    if server.app_root.is_some() {
                        self.diags.warning(
                            object,
                            annotations::field("app-root"),
                            format!("{host} has an app-root from an older Ingress; this one is ignored there"),
                        );
                    } else {
                        server.app_root = Some(root.clone());
                    }
                }
            }
            if settings.www_redirect {
                for host in &hosts {
                    let HostPattern::Exact(name) = host else {
                        continue;
                    };
                    let other = match name.strip_prefix("www.") {
                        Some(bare) => bare.to_owned(),
                        None => format!("www.{name}"),
                    };
                    let Ok(other) = HostPattern::parse(&other) else {
                        continue;
                    };
                    if all.contains(&other) {
                        self.diags.warning(
                            object,
                            annotations::field("from-to-www-redirect"),
                            format!("{other} is an Ingress host of its own; it is not redirected to {host}"),
                        );
                        continue;
                    }
                    let server = rules.entry(other).or_default();
                    if server.redirect_host.is_none() {
                        server.redirect_host = Some(name.clone());
                    }
                }
            }
            self.aliases(hosts.first(), &all, object, settings);
        }
        for (host, server) in rules {
            self.builder.server_rules(&host, server);
        }
    }

    /// `server-alias`: more names for the Ingress's first host, with its certificate.
    fn aliases(
        &mut self,
        host: Option<&HostPattern>,
        all: &HashSet<HostPattern>,
        object: &ObjectRef,
        settings: &IngressSettings,
    ) {
        let field = || annotations::field("server-alias");
        for alias in &settings.aliases {
            let refused = if all.contains(alias) {
                Some(format!("{alias} is an Ingress host of its own"))
            } else if let Some(host) = host.filter(|h| **h != HostPattern::Any) {
                if self.builder.alias(alias.clone(), host) {
                    if let Some(to) = self.builder.tls().bound(host) {
                        let _ = self.builder.tls().bind(alias, to);
                    }
                    None
                } else if self.builder.has_host(host) {
                    Some(format!(
                        "{alias} is already an alias of an older Ingress's host"
                    ))
                } else {
                    Some(format!(
                        "{host} has no path served, so {alias} has nothing to reach"
                    ))
                }
            } else {
                Some("this Ingress has no named host to give aliases to".to_owned())
            };
            if let Some(why) = refused {
                self.diags
                    .warning(object, field(), format!("{why}; this alias is ignored"));
            }
        }
    }

    /// `spec.tls`: binds each listed host to its Secret's certificate (oldest Ingress first),
    /// and, as ingress-nginx does, the Ingress's rule hosts that no TLS entry lists to a
    /// certificate of this Ingress whose names cover them.
    fn ingress_tls(&mut self, spec: &IngressSpec, object: &ObjectRef) {
        let mut listed: Vec<HostPattern> = Vec::new();
        let mut own: Vec<(Arc<Certificate>, CertificateRef)> = Vec::new();
        for (i, tls) in spec.tls.iter().flatten().enumerate() {
            let (certificate, to) = match tls.secret_name.as_deref().filter(|n| !n.is_empty()) {
                // A TLS entry without a Secret: its hosts are TLS hosts on the default
                // certificate (TLS terminated with a wildcard or default certificate).
                None => (None, CertificateRef::Default),
                Some(name) => {
                    let loaded = self.load_secret(
                        (&object.namespace, name),
                        object,
                        &format!("spec.tls[{i}].secretName"),
                        "the default certificate",
                    );
                    match loaded.certificate {
                        Some(c) => {
                            let index = self.builder.tls().certificate(&c);
                            (Some(c), CertificateRef::Index(index))
                        }
                        None => (None, CertificateRef::Default),
                    }
                }
            };
            for (j, raw) in tls.hosts.iter().flatten().enumerate() {
                let field = format!("spec.tls[{i}].hosts[{j}]");
                let host = match HostPattern::parse(raw) {
                    Ok(HostPattern::Any) => {
                        self.diags
                            .error(object, field, "a TLS host must not be empty");
                        continue;
                    }
                    Ok(host) => host,
                    Err(e) => {
                        self.diags
                            .error(object, field, format!("{e}; this TLS host is ignored"));
                        continue;
                    }
                };
                if let Some(c) = &certificate
                    && !c.info.covers(&host)
                {
                    self.diags.warning(
                        object,
                        &field,
                        format!(
                            "the certificate of Secret {} does not name {host} (it names {}); \
                             it is served for {host} anyway",
                            c.info.source,
                            names(&c.info.dns_names)
                        ),
                    );
                }
                if let Err(existing) = self.builder.tls().bind(&host, to)
                    && existing != to
                {
                    let holder = self.describe(existing);
                    self.diags.warning(
                        object,
                        &field,
                        format!(
                            "{host} already has TLS from an older Ingress ({}); this entry is \
                             ignored for it",
                            holder
                        ),
                    );
                }
                listed.push(host);
            }
            if let Some(c) = certificate {
                own.push((c, to));
            }
        }
        for rule in spec.rules.iter().flatten() {
            let Ok(host) = HostPattern::parse(rule.host.as_deref().unwrap_or("")) else {
                continue;
            };
            if host == HostPattern::Any || listed.contains(&host) {
                continue;
            }
            if let Some((_, to)) = own.iter().find(|(c, _)| c.info.covers(&host)) {
                // Bound already by an older Ingress: that one wins, silently, as when listed.
                let _ = self.builder.tls().bind(&host, *to);
            }
        }
    }

    fn describe(&mut self, reference: CertificateRef) -> String {
        match reference {
            CertificateRef::Default => "the default certificate".to_owned(),
            CertificateRef::Index(i) => self
                .builder
                .tls()
                .certificate_at(i)
                .map(|c| format!("Secret {}", c.info.source))
                .unwrap_or_default(),
        }
    }

    /// `--default-ssl-certificate`: the certificate for handshakes no TLS host matches.
    fn default_certificate(&mut self) {
        let Some((ns, name)) = &self.options.default_ssl_certificate else {
            return;
        };
        let loaded = self.load_secret(
            (ns, name),
            &ObjectRef::new(Kind::Secret, ns, name),
            "--default-ssl-certificate",
            "the generated self-signed certificate",
        );
        if let Some(certificate) = loaded.certificate {
            self.builder.tls().set_default(&certificate);
        }
    }

    /// Loads a TLS Secret and reports on `object` at `field` what is wrong with it, if
    /// anything, and what is served instead (its last good certificate, or `otherwise`).
    fn load_secret(
        &mut self,
        (namespace, name): (&str, &str),
        object: &ObjectRef,
        field: &str,
        otherwise: &str,
    ) -> Loaded {
        let loaded = self.secrets.load(namespace, name);
        if let Some(problem) = &loaded.problem {
            let severity = if problem.is_error() {
                Severity::Error
            } else {
                Severity::Warning
            };
            self.diags.push(
                severity,
                object,
                field,
                format!(
                    "Secret {namespace}/{name} {problem}; {}",
                    loaded.fallback(otherwise)
                ),
            );
        }
        loaded
    }

    fn ingress_default_backend(
        &mut self,
        default: &IngressBackend,
        object: &ObjectRef,
        settings: &IngressSettings,
    ) {
        let field = "spec.defaultBackend";
        let Some(backend) = self.backend(default, object, field, settings.service_upstream) else {
            return;
        };
        // Its Ingress's proxying annotations apply, as ingress-nginx applies them to the
        // catch-all location, and so does a refusal (fail closed); the HTTPS redirects do
        // not, as they are a host's, and a default backend answers whatever host was asked;
        // nor do the path redirects and rewrites, which belong to the Ingress's paths.
        let candidate = DefaultBackend {
            backend,
            origin: Some(origin(object, field)),
            policy: Some(Arc::new(RoutePolicy {
                ssl_redirect: false,
                force_ssl_redirect: false,
                redirect: None,
                rewrite: None,
                ..settings.policy.clone()
            })),
        };
        if let Err(existing) = self.builder.default_backend(candidate) {
            let by = existing
                .origin
                .map(|o| format!("{}/{}", o.namespace, o.name))
                .unwrap_or_default();
            self.diags.error(
                object,
                field,
                format!(
                    "the default backend of Ingress {by}, which is older, is used; this one is ignored"
                ),
            );
        }
    }

    /// Resolves a backend. `None` when the reference itself is invalid (the path is skipped);
    /// an unavailable backend when it is valid but cannot be served (the path answers 503).
    /// `default-backend`: the Service's first port, as ingress-nginx takes it, resolved once
    /// for the Ingress.
    fn fallback(&mut self, name: &str, object: &ObjectRef) -> Option<Backend> {
        let field = annotations::field("default-backend");
        let first = self
            .services
            .get(&object.namespace, name)
            .and_then(|s| s.spec.as_ref()?.ports.as_ref()?.first())
            .and_then(|p| u16::try_from(p.port).ok());
        let Some(port) = first else {
            let message = format!(
                "Service {}/{name} does not exist or has no port; requests whose Service has \
                 no ready endpoints answer 503",
                object.namespace
            );
            self.diags.warning(object, field, message);
            return None;
        };
        let reference = ServiceRef {
            namespace: &object.namespace,
            name,
            port: PortRef::Number(port),
            referrer: object,
            field: &field,
            cluster_ip: false,
        };
        let backend = self
            .services
            .resolve(&reference, &mut self.builder, &mut self.diags);
        matches!(backend, Backend::Cluster(_)).then_some(backend)
    }

    /// `cluster_ip`: the Ingress has `service-upstream: "true"`.
    fn backend(
        &mut self,
        b: &IngressBackend,
        object: &ObjectRef,
        field: &str,
        cluster_ip: bool,
    ) -> Option<Backend> {
        let service = match (&b.service, &b.resource) {
            (Some(_), Some(_)) => {
                self.diags.error(
                    object,
                    field,
                    "service and resource cannot both be set; this backend is ignored",
                );
                return None;
            }
            (None, Some(resource)) => {
                let reason = format!(
                    "resource backends ({} {}) are not supported",
                    resource.kind, resource.name
                );
                self.diags.warning(
                    object,
                    format!("{field}.resource"),
                    format!("{reason}; requests for this backend answer 503"),
                );
                return Some(Backend::Unavailable {
                    reason: reason.into(),
                });
            }
            (None, None) => {
                self.diags.error(
                    object,
                    field,
                    "a backend needs a service; this backend is ignored",
                );
                return None;
            }
            (Some(service), None) => service,
        };
        let field = format!("{field}.service");
        if service.name.is_empty() {
            self.diags
                .error(object, format!("{field}.name"), "service name is required");
            return None;
        }
        let port = match service.port.as_ref().map(|p| (p.number, p.name.as_deref())) {
            Some((Some(n), None)) => match u16::try_from(n) {
                Ok(n) if n != 0 => PortRef::Number(n),
                _ => {
                    self.diags.error(
                        object,
                        format!("{field}.port.number"),
                        format!("port {n} is not between 1 and 65535; this backend is ignored"),
                    );
                    return None;
                }
            },
            Some((None, Some(name))) if !name.is_empty() => PortRef::Name(name),
            Some((Some(_), Some(_))) => {
                self.diags.error(
                    object,
                    format!("{field}.port"),
                    "set either port.number or port.name, not both; this backend is ignored",
                );
                return None;
            }
            _ => {
                self.diags.error(
                    object,
                    format!("{field}.port"),
                    "a service backend needs port.number or port.name; this backend is ignored",
                );
                return None;
            }
        };
        let reference = ServiceRef {
            namespace: &object.namespace,
            name: &service.name,
            port,
            referrer: object,
            field: &field,
            cluster_ip,
        };
        Some(
            self.services
                .resolve(&reference, &mut self.builder, &mut self.diags),
        )
    }

    /// `--default-backend-service`, used only when no Ingress sets a default backend. It serves
    /// on the Service's first port.
    fn flag_default_backend(&mut self) {
        let Some((ns, name)) = &self.options.default_backend_service else {
            return;
        };
        let object = ObjectRef::new(Kind::Service, ns, name);
        let field = "--default-backend-service";
        let first_port = self
            .services
            .get(ns, name)
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.ports.as_ref())
            .and_then(|p| p.first())
            .and_then(|p| u16::try_from(p.port).ok());
        let backend = match first_port {
            Some(port) => {
                let reference = ServiceRef {
                    namespace: ns,
                    name,
                    port: PortRef::Number(port),
                    referrer: &object,
                    field,
                    cluster_ip: false,
                };
                // Resolve into a scratch report first: the flag's own warnings name the flag.
                let mut scratch = Diagnostics::default();
                let backend = self
                    .services
                    .resolve(&reference, &mut self.builder, &mut scratch);
                for d in scratch.finish() {
                    // Problems of the Service itself (its appProtocol) keep their own field.
                    let at = if d.field.starts_with(field) {
                        field
                    } else {
                        &d.field
                    };
                    self.diags.push(d.severity, &d.object, at, d.message);
                }
                backend
            }
            None => {
                let reason = if self.services.get(ns, name).is_some() {
                    format!("Service {ns}/{name} has no ports")
                } else {
                    format!("Service {ns}/{name} not found")
                };
                self.diags.warning(
                    &object,
                    field,
                    format!("{reason}; requests that match no rule answer 503"),
                );
                Backend::Unavailable {
                    reason: reason.into(),
                }
            }
        };
        // Err only means an Ingress already set one, which takes precedence.
        let _ = self.builder.default_backend(DefaultBackend {
            backend,
            origin: None,
            policy: None,
        });
    }
}

fn names(names: &[String]) -> String {
    if names.is_empty() {
        "no DNS names".to_owned()
    } else {
        names.join(", ")
    }
}

fn origin(object: &ObjectRef, field: &str) -> RouteOrigin {
    RouteOrigin {
        namespace: object.namespace.as_str().into(),
        name: object.name.as_str().into(),
        field: field.into(),
    }
}

/// The rule for one path, or the sub-field and message of why it is invalid.
/// A path as written, or `/` when empty, as ingress-nginx reads it.
fn raw_path(p: &HTTPIngressPath) -> &str {
    p.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/")
}

/// A path of a host in regex mode: a regular expression whatever its type, as in
/// ingress-nginx.
fn regex_rule(p: &HTTPIngressPath) -> Result<PathRule, (&'static str, String)> {
    if let ("pathType", message) = path_rule(p).err().unwrap_or(("", String::new())) {
        return Err(("pathType", message));
    }
    let path = raw_path(p);
    PathRule::regex(path).map_err(|e| ("path", format!("path {path:?}: {e}")))
}

/// The hosts in regex mode: those where some path of some Ingress asks for it. The oldest
/// such Ingress is named in the warnings of the others.
fn regex_hosts(
    ours: &[(&Ingress, ObjectRef)],
    settings: &[IngressSettings],
) -> HashMap<HostPattern, ObjectRef> {
    let mut hosts = HashMap::new();
    for ((ingress, object), settings) in ours.iter().zip(settings) {
        if !settings.use_regex && settings.rewrite_target.is_none() || settings.unservable {
            continue;
        }
        let rules = ingress.spec.iter().flat_map(|s| s.rules.iter().flatten());
        for rule in rules {
            let Ok(host) = HostPattern::parse(rule.host.as_deref().unwrap_or("")) else {
                continue;
            };
            let mut paths = rule.http.iter().flat_map(|h| &h.paths);
            if paths.any(|p| settings.wants_regex(raw_path(p))) {
                hosts.entry(host).or_insert_with(|| object.clone());
            }
        }
    }
    hosts
}

fn path_rule(p: &HTTPIngressPath) -> Result<PathRule, (&'static str, String)> {
    let path = p.path.as_deref().unwrap_or("");
    let invalid = |e: vestibule_model::PathError| ("path", format!("path {path:?}: {e}"));
    match p.path_type.as_str() {
        "Exact" => PathRule::new(PathKind::Exact, path).map_err(invalid),
        "Prefix" => PathRule::new(PathKind::Prefix, path).map_err(invalid),
        // ingress-nginx treats an empty ImplementationSpecific path as `/`.
        "ImplementationSpecific" if path.is_empty() => {
            PathRule::implementation_specific("/").map_err(invalid)
        }
        "ImplementationSpecific" => PathRule::implementation_specific(path).map_err(invalid),
        "" => Err((
            "pathType",
            "pathType is required: Exact, Prefix or ImplementationSpecific".to_owned(),
        )),
        other => Err((
            "pathType",
            format!("pathType {other:?} is not Exact, Prefix or ImplementationSpecific"),
        )),
    }
}
