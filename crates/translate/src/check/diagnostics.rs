//! The compile's diagnostics on an Ingress, read as migration findings: which mean that
//! ingress-nginx did the same, which name a difference, which need work and which are a
//! refused snippet. Annotation keys are judged by the tables of `keys`; the remaining
//! diagnostics by [`RULES`], one row per kind of message.

use k8s_openapi::api::networking::v1::Ingress;

use super::keys;
use super::{Code, Context, Finding, Level, SnippetCheck, View};
use crate::annotations::{PREFIX, buffering};
use crate::report::{Diagnostic, Severity};
use crate::snippet;

/// Which field a rule applies to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum At {
    Any,
    Annotation,
    /// `spec.rules[i].host`
    Host,
    /// `spec.rules[i].http.paths[j]` and below, backends excepted.
    Path,
    /// A backend: a path's, the `spec.defaultBackend`, or the `default-backend` annotation.
    Backend,
    /// `spec.tls`
    Tls,
    /// `spec` itself, its rules and default backend as wholes.
    Spec,
}

impl At {
    fn of(field: &str) -> At {
        if field.starts_with("metadata.annotations[") {
            At::Annotation
        } else if field.starts_with("spec.tls") {
            At::Tls
        } else if field.contains(".backend") || field.starts_with("spec.defaultBackend") {
            At::Backend
        } else if field.contains(".http.paths[") {
            At::Path
        } else if field.starts_with("spec.rules[") && field.ends_with(".host") {
            At::Host
        } else {
            At::Spec
        }
    }

    fn covers(self, other: At) -> bool {
        self == At::Any || self == other
    }
}

/// A kind of diagnostic, recognised by its severity, its field and a fragment of its message.
struct Rule {
    severity: Severity,
    at: At,
    says: &'static str,
    level: Level,
    code: Code,
    /// What ingress-nginx does, added to the message.
    nginx: Option<&'static str>,
    fix: Option<&'static str>,
}

const fn rule(severity: Severity, at: At, says: &'static str, level: Level, code: Code) -> Rule {
    Rule {
        severity,
        at,
        says,
        level,
        code,
        nginx: None,
        fix: None,
    }
}

const fn also(severity: Severity, at: At, says: &'static str) -> Rule {
    Rule {
        nginx: Some("ingress-nginx does the same"),
        ..rule(severity, at, says, Level::Same, Code::SameAsIngressNginx)
    }
}

const fn with(mut r: Rule, nginx: Option<&'static str>, fix: Option<&'static str>) -> Rule {
    r.nginx = nginx;
    r.fix = fix;
    r
}

use Severity::{Error as E, Info as I, Warning as W};

/// Diagnostics with a meaning of their own for a migration, first match wins. Those no row
/// matches are read by severity alone: an error needs work, a warning is a difference, an
/// info finding a note.
const RULES: &[Rule] = &[
    with(
        rule(
            W,
            At::Host,
            "is in regex mode because",
            Level::Differs,
            Code::RegexHost,
        ),
        Some("ingress-nginx does the same, but only among the Ingresses it serves"),
        Some(
            "move this Ingress to Vestibule together with the one that switched the host, or give this one a host of its own",
        ),
    ),
    also(W, At::Host, "host names are case-insensitive"),
    with(
        rule(
            W,
            At::Path,
            "looks like a regular expression",
            Level::Same,
            Code::SameAsIngressNginx,
        ),
        Some("ingress-nginx also matches it as a literal prefix without use-regex"),
        None,
    ),
    with(
        rule(
            E,
            At::Path,
            "is already routed by Ingress",
            Level::Same,
            Code::SameAsIngressNginx,
        ),
        Some("ingress-nginx also keeps the older Ingress's path"),
        None,
    ),
    with(
        rule(
            E,
            At::Path,
            "this path is ignored",
            Level::NeedsWork,
            Code::PathNotServed,
        ),
        Some("requests for it go to another path of the host, or get 404"),
        None,
    ),
    rule(
        W,
        At::Backend,
        "answer 503",
        Level::NeedsWork,
        Code::BackendUnavailable,
    ),
    with(
        rule(
            W,
            At::Annotation,
            "passthrough needs the controller flag",
            Level::NeedsWork,
            Code::SslPassthroughOff,
        ),
        Some(
            "ingress-nginx passed these hosts' HTTPS through untouched if it ran with --enable-ssl-passthrough",
        ),
        Some("run Vestibule, and this check, with --enable-ssl-passthrough"),
    ),
    also(W, At::Any, "served over plain HTTP only"),
    also(W, At::Any, "nothing is passed"),
    also(W, At::Any, "ssl-passthrough needs a host"),
    also(W, At::Annotation, "has no effect without"),
    also(W, At::Annotation, "means something only with"),
    also(W, At::Annotation, "is sent only with a rewrite"),
    also(W, At::Annotation, "are kept only with auth-cache-key"),
    also(W, At::Annotation, "reads as 100"),
    also(W, At::Annotation, "wins, as in ingress-nginx"),
    also(W, At::Annotation, "; skipped"),
    also(W, At::Annotation, "holds no variable"),
    also(
        W,
        At::Annotation,
        "from an older Ingress; this one is ignored",
    ),
    also(W, At::Annotation, "is an Ingress host of its own"),
    also(W, At::Annotation, "this alias is ignored"),
    with(
        rule(
            W,
            At::Annotation,
            "there is no error backend",
            Level::Differs,
            Code::ErrorBackend,
        ),
        Some("ingress-nginx sends them to its own default backend"),
        Some("name an error backend with default-backend or --default-backend-service"),
    ),
    with(
        rule(
            W,
            At::Tls,
            "does not exist",
            Level::NeedsWork,
            Code::TlsSecret,
        ),
        Some(
            "ingress-nginx serves its default certificate then too, which clients reject: fix it before moving",
        ),
        Some("create the Secret, or check that it is in the Ingress's namespace"),
    ),
    with(
        rule(
            W,
            At::Tls,
            "does not name",
            Level::Differs,
            Code::TlsCertificate,
        ),
        Some("ingress-nginx serves its default certificate for this host instead"),
        Some("add the host to the certificate, or nothing if clients already accept it"),
    ),
    also(W, At::Tls, "already has TLS from an older Ingress"),
    rule(
        W,
        At::Any,
        "is not supported",
        Level::NeedsWork,
        Code::NeedsWork,
    ),
    rule(
        E,
        At::Annotation,
        "this canary is ignored",
        Level::NeedsWork,
        Code::CanaryIgnored,
    ),
    with(
        rule(
            E,
            At::Backend,
            "which is older, is used",
            Level::Same,
            Code::SameAsIngressNginx,
        ),
        Some("ingress-nginx also uses one Ingress's default backend"),
        None,
    ),
    rule(E, At::Spec, "", Level::NeedsWork, Code::NotServed),
    rule(
        E,
        At::Annotation,
        "paths are not served",
        Level::NeedsWork,
        Code::NotServed,
    ),
    rule(E, At::Annotation, "", Level::NeedsWork, Code::InvalidValue),
    rule(E, At::Tls, "Secret ", Level::NeedsWork, Code::TlsSecret),
    also(I, At::Annotation, "this is a canary Ingress"),
];

/// The Ingress loaded twice: the input's problem, not this Ingress's.
pub(super) fn is_duplicate(d: &Diagnostic) -> bool {
    d.field == "metadata.name" && d.message.contains("already loaded")
}

/// `metadata.annotations["nginx.ingress.kubernetes.io/KEY"]` → `KEY`.
fn annotation_key(field: &str) -> Option<&str> {
    field
        .strip_prefix("metadata.annotations[\"")?
        .strip_suffix("\"]")?
        .strip_prefix(PREFIX)
}

pub(super) fn classify(d: &Diagnostic, context: &Context<'_>, view: &View<'_>) -> Option<Finding> {
    let finding = |level, code, message: String| Finding {
        level,
        code,
        field: d.field.clone(),
        message,
        fix: None,
        snippet: None,
    };
    if let Some(found) = missing_secret(d, context) {
        return found;
    }
    if let Some(short) = annotation_key(&d.field) {
        if let Some(key) = keys::snippet(short) {
            return Some(snippet_finding(d, view.ingress, key));
        }
        if let Some(key) = keys::unsupported(short).filter(|_| d.severity == Severity::Warning) {
            let message = format!("ignored: ingress-nginx {}", key.nginx);
            let message = match key.level {
                Level::Same => format!("{message}; Vestibule does this anyway"),
                _ => message,
            };
            return Some(Finding {
                fix: Some(key.fix.to_owned()),
                ..finding(key.level, Code::Unsupported, message)
            });
        }
        if d.severity == Severity::Info && buffering::KEYS.contains(&short) {
            let value = view.annotation(short).unwrap_or("");
            let (level, nginx) = keys::no_op(short, value);
            let message = match level {
                Level::Same => format!("accepted: {value:?} {nginx}"),
                _ => format!("{}; ingress-nginx {nginx}", d.message),
            };
            return Some(finding(level, Code::NoOp, message));
        }
        if d.severity == Severity::Error && context.refused_keys(view.key).contains(&short) {
            return Some(Finding {
                fix: Some(keys::fail_closed_fix(short).to_owned()),
                ..finding(Level::NeedsWork, Code::FailClosed, fail_closed(&d.message))
            });
        }
    }
    if context.services_absent
        && d.message.starts_with("Service ")
        && (d.message.contains("not found") || d.message.contains("does not exist"))
    {
        return Some(finding(
            Level::Same,
            Code::ServiceNotChecked,
            format!(
                "{} is not in the files read, which hold no Service: not checked",
                d.message
                    .split(" not found")
                    .next()
                    .unwrap_or("")
                    .split(" does not exist")
                    .next()
                    .unwrap_or("")
            ),
        ));
    }
    let at = At::of(&d.field);
    let matched = RULES
        .iter()
        .find(|r| r.severity == d.severity && r.at.covers(at) && d.message.contains(r.says));
    Some(match matched {
        Some(r) => Finding {
            fix: r.fix.map(str::to_owned),
            ..finding(
                r.level,
                r.code,
                match r.nginx {
                    Some(nginx) => format!("{}; {nginx}", d.message),
                    None => d.message.clone(),
                },
            )
        },
        None => {
            let (level, code) = match d.severity {
                Severity::Error => (Level::NeedsWork, Code::NeedsWork),
                Severity::Warning => (Level::Differs, Code::Differs),
                Severity::Info => (Level::Same, Code::SameAsIngressNginx),
            };
            finding(level, code, d.message.clone())
        }
    })
}

/// The consequence first, unless the compile's message already says it.
fn fail_closed(message: &str) -> String {
    if message.contains("answer 503") {
        message.to_owned()
    } else {
        format!("every path of this Ingress answers 503 until this is fixed: {message}")
    }
}

/// A diagnostic on a Service or an EndpointSlice, for an Ingress whose routes use it.
pub(super) fn of_service(d: &Diagnostic) -> Finding {
    let (level, code) = match d.severity {
        Severity::Error => (Level::NeedsWork, Code::NeedsWork),
        // An unknown appProtocol gets HTTP/1.1, which is all ingress-nginx ever speaks
        // without backend-protocol.
        Severity::Warning if d.field.ends_with(".appProtocol") => {
            (Level::Same, Code::SameAsIngressNginx)
        }
        Severity::Warning => (Level::Differs, Code::Differs),
        Severity::Info => (Level::Same, Code::SameAsIngressNginx),
    };
    Finding {
        level,
        code,
        field: format!("{} {}: {}", d.object.kind, d.object, d.field),
        message: d.message.clone(),
        fix: None,
        snippet: None,
    }
}

/// What a Secret an Ingress names is for.
#[derive(Clone, Copy)]
enum SecretUse {
    Tls,
    BasicAuth,
    ClientCa,
    UpstreamCa,
}

/// A diagnostic saying a Secret does not exist. Without `--read-secrets` none was read, so
/// it is a note that the Secret was not checked (`Some(Some)`); with it, the diagnostic is
/// read as any other (`None`).
fn missing_secret(d: &Diagnostic, context: &Context<'_>) -> Option<Option<Finding>> {
    let usage = match annotation_key(&d.field) {
        Some("auth-secret") => SecretUse::BasicAuth,
        Some("auth-tls-secret") => SecretUse::ClientCa,
        Some("proxy-ssl-secret") => SecretUse::UpstreamCa,
        None if d.field.starts_with("spec.tls[") && d.field.ends_with(".secretName") => {
            SecretUse::Tls
        }
        _ => return None,
    };
    let name = d.message.strip_prefix("Secret ")?;
    let (name, _) = name.split_once(" does not exist")?;
    if context.read_secrets || name.contains(' ') {
        return None;
    }
    let (what, then) = match usage {
        SecretUse::Tls => (
            "TLS Secret",
            "when it is valid, its certificate is served for the hosts it names, as by ingress-nginx",
        ),
        SecretUse::BasicAuth => (
            "basic-authentication Secret",
            "if it is missing or holds no usable user, every path of this Ingress answers 503",
        ),
        SecretUse::ClientCa => (
            "client-certificate CA Secret",
            "if it is missing or has no ca.crt, every path of this Ingress answers 503",
        ),
        SecretUse::UpstreamCa => (
            "upstream CA Secret",
            "if it is missing or has no ca.crt, TLS connections to the backend fail",
        ),
    };
    Some(Some(Finding {
        level: Level::Same,
        code: Code::SecretNotChecked,
        field: d.field.clone(),
        message: format!("{what} {name} was not read, so not checked: {then}"),
        fix: Some(
            "run with --read-secrets to check it (no Secret content is ever printed)".to_owned(),
        ),
        snippet: None,
    }))
}

/// A snippet annotation: applied (the safe subset covers it), or refused with the directive
/// at fault and what replaces it.
fn snippet_finding(d: &Diagnostic, ingress: &Ingress, key: &keys::SnippetKey) -> Finding {
    let text = super::annotation(ingress, key.key).unwrap_or("");
    let closes = d.severity == Severity::Error && snippet::protects(text);
    let consequence = if closes {
        "; it holds access control, so every path of this Ingress answers 503 rather than being \
         served without it"
    } else {
        ""
    };
    let mut finding = Finding {
        level: Level::Refused,
        code: Code::Snippet,
        field: d.field.clone(),
        message: String::new(),
        fix: None,
        snippet: Some(SnippetCheck {
            key: key.key.to_owned(),
            covered: false,
            line: None,
            directive: None,
        }),
    };
    if !key.parsed {
        let first = first_directive(text);
        let closes = if key.key == "auth-snippet" {
            "; it was part of the authentication, so every path of this Ingress answers 503"
        } else {
            ""
        };
        finding.message = format!("never read: Vestibule executes no configuration text{closes}");
        finding.fix = Some(key.replacement.to_owned());
        if let Some((line, directive)) = first {
            finding.snippet = Some(SnippetCheck {
                key: key.key.to_owned(),
                covered: false,
                line: Some(line),
                directive: Some(directive.to_owned()),
            });
        }
        return finding;
    }
    match snippet::parse(text) {
        Ok(mapped) if d.severity == Severity::Info => {
            let mut notes = vec![format!(
                "applied as typed rules ({} directive{}), never executed",
                mapped.directives,
                if mapped.directives == 1 { "" } else { "s" }
            )];
            if key.key == "server-snippet" {
                notes.push(
                    "it applies to this Ingress's paths only, where nginx applied it to every \
                     Ingress of the host"
                        .to_owned(),
                );
            }
            if !mapped.response.is_empty() {
                notes.push(
                    "its response fields are not added to the answers Vestibule gives itself \
                     (redirects, 401, 403, 503), where nginx's more_set_headers adds them"
                        .to_owned(),
                );
            }
            finding.level = Level::Differs;
            finding.code = Code::SnippetApplied;
            finding.message = notes.join("; ");
            finding.snippet = Some(SnippetCheck {
                key: key.key.to_owned(),
                covered: true,
                line: None,
                directive: None,
            });
        }
        Ok(_) => {
            finding.message = format!("covered by the safe subset but not applied: {}", d.message);
            finding.fix = Some("set the list, or the answer, in one place".to_owned());
            finding.snippet = Some(SnippetCheck {
                key: key.key.to_owned(),
                covered: true,
                line: None,
                directive: None,
            });
        }
        Err(e) => {
            let directive = (!e.directive.is_empty()).then(|| e.directive.clone());
            finding.message = match &directive {
                Some(name) => format!(
                    "not applied: line {}: {name}: {}; nothing of this snippet applies{consequence}",
                    e.line, e.why
                ),
                None => format!("not applied: line {}: {}{consequence}", e.line, e.why),
            };
            finding.fix = Some(match &directive {
                Some(name) => format!("for {name}: {}", keys::replacement(name)),
                None => "correct the snippet's syntax, then see whether it maps".to_owned(),
            });
            finding.snippet = Some(SnippetCheck {
                key: key.key.to_owned(),
                covered: false,
                line: Some(e.line),
                directive,
            });
        }
    }
    finding
}

/// The first directive of a snippet that is never parsed, and its line, to name it.
fn first_directive(text: &str) -> Option<(usize, &str)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let word = line.split('#').next()?.split_whitespace().next()?;
        let word = word.trim_end_matches([';', '{']);
        (!word.is_empty()).then_some((i + 1, word))
    })
}
