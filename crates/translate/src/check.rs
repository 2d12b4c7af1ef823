//! The migration report of `vestibule check`: for each Ingress an ingress-nginx installation
//! serves, whether Vestibule serves it the same, differently (each difference named), only
//! after some work, or refuses part of it (snippets), read from a compile's report and table;
//! plus the installation's ConfigMap keys mapped to Vestibule's flags. Pure: the command reads
//! the objects and renders the result, whose serialised form is the versioned JSON schema.

mod configmap;
mod context;
mod diagnostics;
mod differences;
mod keys;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::{IngressClass, IngressClassSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::compile::{Compiled, Options};
use crate::report::{Severity, namespace_of};
use crate::snapshot::Snapshot;
use context::{Context, View, annotation, raw_path};

pub use configmap::{ConfigKey, ConfigMapCheck, KeyStatus};

/// The `schema` field of the JSON output. A new version is made for any change that could
/// break a reader (a field removed or renamed, a meaning changed); fields and finding codes
/// may be added within a version.
pub const SCHEMA: &str = "vestibule.dev/check/v1";

/// How an Ingress, or one finding about it, compares with ingress-nginx. Ordered: an
/// Ingress's verdict is its worst finding's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Served as ingress-nginx serves it (a finding at this level is a note).
    Same,
    /// Served, but some behaviour differs; each difference is a finding.
    Differs,
    /// Something must change first: an annotation that is ignored, a value that is
    /// invalid, or a part that fails closed (503).
    NeedsWork,
    /// A snippet, which Vestibule never executes, does something the safe subset cannot.
    Refused,
}

impl Level {
    /// As a person reads it.
    pub fn label(self) -> &'static str {
        match self {
            Level::Same => "same",
            Level::Differs => "differs",
            Level::NeedsWork => "needs work",
            Level::Refused => "refused",
        }
    }
}

/// What a finding is about, stable across versions of the schema so that CI can match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// Noted; ingress-nginx does the same.
    SameAsIngressNginx,
    /// A Secret the Ingress names was not read (no `--read-secrets`).
    SecretNotChecked,
    /// A Service the Ingress names is not in the files read, which hold no Service at all.
    ServiceNotChecked,
    /// Another Ingress's `use-regex` or `rewrite-target` makes this one's paths regexes.
    RegexHost,
    /// nginx's 301 from `/foo` to `/foo/` for a path ending in `/`.
    TrailingSlashRedirect,
    /// ingress-nginx's redirect to HTTPS drops a trailing slash; Vestibule's keeps the path.
    HttpsRedirectSlash,
    /// CORS origins are matched whole, not by their end.
    CorsOrigins,
    /// An annotation accepted without effect (nginx's buffers).
    NoOp,
    /// TLS passthrough reaches more names, or the endpoints rather than the cluster IP.
    SslPassthrough,
    /// `from-to-www-redirect` keeps the path and query exactly.
    WwwRedirect,
    /// Rate-limit counters: what happens when a replica's table is full.
    RateLimitMemory,
    /// A canary's requests are counted under its own name.
    CanaryMetrics,
    /// Affinity cookies: ingress-nginx's are not understood, and the default on failure.
    AffinityCookie,
    /// Response fields are not added to the answers Vestibule gives itself.
    ResponseHeaders,
    /// The Service port's `appProtocol` chooses the upstream protocol; nginx ignores it.
    UpstreamProtocol,
    /// A snippet within the safe subset, applied as typed rules.
    SnippetApplied,
    /// The TLS Secret's certificate: served where ingress-nginx would not, or not usable.
    TlsCertificate,
    /// `custom-http-errors` without an error backend.
    ErrorBackend,
    /// Any other difference the compile reported.
    Differs,
    /// An annotation Vestibule does not read.
    Unsupported,
    /// Protection that cannot be given: the Ingress's paths answer 503.
    FailClosed,
    /// A value Vestibule cannot use; the default applies instead.
    InvalidValue,
    /// A path that is not served.
    PathNotServed,
    /// A backend that cannot be reached: its paths answer 503.
    BackendUnavailable,
    /// Nothing, or no path, of the Ingress is served.
    NotServed,
    /// `ssl-passthrough` without `--enable-ssl-passthrough`.
    SslPassthroughOff,
    /// ingress-nginx checks client certificates on the whole host, Vestibule per Ingress.
    ClientCertificateHost,
    /// A TLS Secret that cannot be used.
    TlsSecret,
    /// A canary that is ignored: the main Ingress serves everything.
    CanaryIgnored,
    /// Any other problem the compile reported.
    NeedsWork,
    /// A snippet Vestibule does not apply.
    Snippet,
}

/// One thing about one Ingress.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub level: Level,
    pub code: Code,
    /// The field it is about, as `kubectl explain` spells it
    /// (`metadata.annotations["nginx.ingress.kubernetes.io/use-regex"]`).
    pub field: String,
    /// What Vestibule does, and where that is not what ingress-nginx does, what it did.
    pub message: String,
    /// What to do about it, when something can be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// For a snippet: whether the safe subset covers it, and the directive at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snippet: Option<SnippetCheck>,
}

/// A snippet annotation, judged.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SnippetCheck {
    /// The annotation without its prefix: `configuration-snippet`.
    pub key: String,
    /// Every directive is in the safe subset (it may still not apply, when it clashes with
    /// an annotation).
    pub covered: bool,
    /// The line (from 1) of the directive at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The directive at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directive: Option<String>,
}

/// The verdict on one Ingress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngressCheck {
    pub namespace: String,
    pub name: String,
    pub verdict: Level,
    /// Worst first.
    pub findings: Vec<Finding>,
}

/// An Ingress of another class, not checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// Counts of the verdicts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Ingresses of the class checked.
    pub ingresses: usize,
    pub same: usize,
    pub differs: usize,
    pub needs_work: usize,
    pub refused: usize,
    /// Ingresses of other classes, not checked.
    pub skipped: usize,
}

/// Something about the input as a whole rather than one Ingress.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ClusterFinding {
    pub severity: Severity,
    /// Where: a file, an object (`Service shop/web`), or `input`.
    pub source: String,
    pub message: String,
}

/// Where the objects came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    Files { paths: Vec<String> },
    Cluster,
}

/// What was checked, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Input {
    pub source: Source,
    pub controller_class: String,
    pub ingress_class: String,
    pub watch_ingress_without_class: bool,
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
    pub read_secrets: bool,
    pub enable_ssl_passthrough: bool,
    /// `namespace/name` of the ingress-nginx ConfigMap checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nginx_configmap: Option<String>,
}

/// The whole report: the JSON output of `vestibule check --output json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub input: Input,
    pub summary: Summary,
    /// Worst verdict first, then namespace and name.
    pub ingresses: Vec<IngressCheck>,
    pub skipped: Vec<Skipped>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configmap: Option<ConfigMapCheck>,
    pub cluster: Vec<ClusterFinding>,
}

impl Report {
    /// Whether any Ingress needs work or is refused: the command's exit status 1.
    pub fn needs_action(&self) -> bool {
        self.ingresses.iter().any(|i| i.verdict >= Level::NeedsWork)
    }
}

/// What the check needs besides the objects and their compile.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    pub source: &'a Source,
    /// Secrets were read, and missing ones are problems; otherwise a Secret an Ingress names
    /// is noted as not checked.
    pub read_secrets: bool,
    /// The ingress-nginx ConfigMap to map to flags, found in the input.
    pub nginx_configmap: Option<&'a ConfigMap>,
}

/// When the input holds no IngressClass at all (a `kubectl get ingress` dump), adds the one
/// ingress-nginx installs, named as `--ingress-class` and owned by `--controller-class`, so
/// that Ingresses naming it are checked. Returns the note saying so.
pub fn assume_class(snapshot: &mut Snapshot, options: &Options) -> Option<ClusterFinding> {
    if !snapshot.ingress_classes.is_empty() || snapshot.ingresses.is_empty() {
        return None;
    }
    snapshot
        .ingress_classes
        .push(std::sync::Arc::new(IngressClass {
            metadata: ObjectMeta {
                name: Some(options.ingress_class.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(IngressClassSpec {
                controller: Some(options.controller_class.clone()),
                parameters: None,
            }),
        }));
    Some(ClusterFinding {
        severity: Severity::Info,
        source: "input".to_owned(),
        message: format!(
            "no IngressClass in the input: Ingresses naming the class {:?} are taken to be {}'s, \
             as ingress-nginx installs it",
            options.ingress_class, options.controller_class
        ),
    })
}

/// Sets on `options` the flags of ingress-nginx's ConfigMap keys that change what the compile
/// makes of Ingresses (`ssl-redirect`, `force-ssl-redirect`,
/// `allow-cross-namespace-resources`), so that the check sees what Vestibule will serve once
/// the ConfigMap is carried over. Returns the note saying which were set, if any.
pub fn apply_config_map(config_map: &ConfigMap, options: &mut Options) -> Option<ClusterFinding> {
    let set = configmap::apply(config_map, options);
    (!set.is_empty()).then(|| ClusterFinding {
        severity: Severity::Info,
        source: format!(
            "ConfigMap {}/{}",
            namespace_of(&config_map.metadata),
            config_map.metadata.name.as_deref().unwrap_or("")
        ),
        message: format!(
            "Ingresses are checked as Vestibule serves them with {}, as this ConfigMap says",
            set.join(", ")
        ),
    })
}

/// The ConfigMap `namespace/name` among the objects read.
pub fn find_config_map<'s>(
    snapshot: &'s Snapshot,
    namespace: &str,
    name: &str,
) -> Option<&'s ConfigMap> {
    snapshot
        .config_maps
        .iter()
        .find(|c| {
            namespace_of(&c.metadata) == namespace && c.metadata.name.as_deref() == Some(name)
        })
        .map(|c| &**c)
}

/// Classifies every Ingress the compile found to be of the class checked.
pub fn check(
    snapshot: &Snapshot,
    options: &Options,
    compiled: &Compiled,
    settings: &Settings<'_>,
) -> Report {
    let context = Context::new(snapshot, compiled, settings);
    let mut findings: BTreeMap<(&str, &str), Vec<Finding>> = context
        .ingresses
        .keys()
        .map(|key| (*key, Vec::new()))
        .collect();
    let mut cluster = Vec::new();
    for diagnostic in &compiled.report.diagnostics {
        context.place(diagnostic, &mut findings, &mut cluster);
    }
    for (key, list) in &mut findings {
        if let Some(view) = context.view(*key) {
            list.extend(differences::detect(&context, &view));
        }
    }
    let mut ingresses: Vec<IngressCheck> = findings
        .into_iter()
        .map(|((namespace, name), findings)| verdict(namespace, name, findings))
        .collect();
    ingresses.sort_by(|a, b| {
        (b.verdict.cmp(&a.verdict))
            .then_with(|| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
    });
    let skipped: Vec<Skipped> = compiled
        .report
        .ingresses
        .iter()
        .filter(|i| !i.ours)
        .map(|i| Skipped {
            namespace: i.namespace.clone(),
            name: i.name.clone(),
            reason: i.reason.clone(),
        })
        .collect();
    cluster.sort();
    cluster.dedup();
    Report {
        schema: SCHEMA,
        input: input(options, settings),
        summary: summary(&ingresses, skipped.len()),
        ingresses,
        skipped,
        configmap: settings.nginx_configmap.map(configmap::check),
        cluster,
    }
}

/// An Ingress's findings, worst first, and the verdict they make.
fn verdict(namespace: &str, name: &str, mut findings: Vec<Finding>) -> IngressCheck {
    findings.sort_by(|a, b| b.level.cmp(&a.level).then_with(|| a.cmp(b)));
    findings.dedup();
    IngressCheck {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        verdict: findings
            .iter()
            .map(|f| f.level)
            .max()
            .unwrap_or(Level::Same),
        findings,
    }
}

fn summary(ingresses: &[IngressCheck], skipped: usize) -> Summary {
    let count = |level| ingresses.iter().filter(|i| i.verdict == level).count();
    Summary {
        ingresses: ingresses.len(),
        same: count(Level::Same),
        differs: count(Level::Differs),
        needs_work: count(Level::NeedsWork),
        refused: count(Level::Refused),
        skipped,
    }
}

fn input(options: &Options, settings: &Settings<'_>) -> Input {
    Input {
        source: settings.source.clone(),
        controller_class: options.controller_class.clone(),
        ingress_class: options.ingress_class.clone(),
        watch_ingress_without_class: options.watch_ingress_without_class,
        namespaces: options.watch_namespaces.clone(),
        read_secrets: settings.read_secrets,
        enable_ssl_passthrough: options.enable_ssl_passthrough,
        nginx_configmap: settings.nginx_configmap.map(|c| {
            format!(
                "{}/{}",
                namespace_of(&c.metadata),
                c.metadata.name.as_deref().unwrap_or("")
            )
        }),
    }
}
