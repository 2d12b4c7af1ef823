//! Diagnostics: what could not be used, named by object and field, as a value the compile
//! returns rather than log lines.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    IngressClass,
    Ingress,
    Service,
    EndpointSlice,
    Secret,
    ConfigMap,
}

impl Kind {
    pub fn is_namespaced(self) -> bool {
        !matches!(self, Kind::IngressClass)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Which object a diagnostic is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectRef {
    pub kind: Kind,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> ObjectRef {
        ObjectRef {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Objects without a namespace are in `default`, as `kubectl apply` would put them.
    pub fn of(kind: Kind, meta: &ObjectMeta) -> ObjectRef {
        let namespace = if kind.is_namespaced() {
            namespace_of(meta)
        } else {
            ""
        };
        ObjectRef::new(kind, namespace, meta.name.as_deref().unwrap_or(""))
    }
}

pub(crate) fn namespace_of(meta: &ObjectMeta) -> &str {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => "default",
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Accepted and understood, for the record: a key Vestibule reads but needs nothing
    /// from (nginx's buffering settings), or what a setting amounts to here.
    Info,
    /// Used, but not as the user probably meant (a missing Service answers 503 until it
    /// appears, an unsupported annotation is ignored).
    Warning,
    /// The object, or the part the field names, is invalid and was skipped.
    Error,
}

/// One finding about one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    pub object: ObjectRef,
    /// Path of the field, as `kubectl explain` spells it: `spec.rules[0].host`.
    pub field: String,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `namespace/name: field: message`, with `warning: ` before the message of a warning.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Info => "info: ",
            Severity::Warning => "warning: ",
            Severity::Error => "",
        };
        write!(
            f,
            "{}: {}: {level}{}",
            self.object, self.field, self.message
        )
    }
}

/// Whether an Ingress is served by this controller, and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct IngressOutcome {
    pub namespace: String,
    pub name: String,
    pub ours: bool,
    pub reason: String,
}

/// Everything a compile found, sorted so that equal inputs give equal reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub diagnostics: Vec<Diagnostic>,
    pub ingresses: Vec<IngressOutcome>,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// The Ingresses this controller serves.
    pub fn ours(&self) -> impl Iterator<Item = &IngressOutcome> {
        self.ingresses.iter().filter(|i| i.ours)
    }
}

/// Collects diagnostics during a compile.
#[derive(Debug, Default)]
pub(crate) struct Diagnostics {
    list: Vec<Diagnostic>,
}

impl Diagnostics {
    pub(crate) fn push(
        &mut self,
        severity: Severity,
        object: &ObjectRef,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.list.push(Diagnostic {
            object: object.clone(),
            field: field.into(),
            severity,
            message: message.into(),
        });
    }

    pub(crate) fn error(
        &mut self,
        object: &ObjectRef,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(Severity::Error, object, field, message);
    }

    pub(crate) fn info(
        &mut self,
        object: &ObjectRef,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(Severity::Info, object, field, message);
    }

    pub(crate) fn warning(
        &mut self,
        object: &ObjectRef,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(Severity::Warning, object, field, message);
    }

    /// Sorted and without repeats, so the report does not depend on the order of the input.
    pub(crate) fn finish(mut self) -> Vec<Diagnostic> {
        self.list.sort();
        self.list.dedup();
        self.list
    }
}
