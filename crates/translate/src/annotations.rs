//! The `nginx.ingress.kubernetes.io/` annotations: the ones honoured are parsed into typed
//! settings (an invalid value is reported and the default applies); every other one gets a
//! warning, so that migrating users see what is ignored instead of guessing.

use std::collections::BTreeMap;

use vestibule_model::RoutePolicy;

use crate::report::{Diagnostics, ObjectRef};

pub(crate) const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Keys whose values ingress-nginx pasted into its configuration verbatim.
const SNIPPETS: &[&str] = &[
    "configuration-snippet",
    "server-snippet",
    "stream-snippet",
    "auth-snippet",
    "modsecurity-snippet",
];

/// Settings an Ingress's annotations give to all its paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IngressSettings {
    pub(crate) policy: RoutePolicy,
}

pub(crate) fn read(
    annotations: Option<&BTreeMap<String, String>>,
    object: &ObjectRef,
    diags: &mut Diagnostics,
) -> IngressSettings {
    let mut settings = IngressSettings::default();
    for (key, value) in annotations.into_iter().flatten() {
        let Some(short) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let field = format!("metadata.annotations[{key:?}]");
        let mut boolean = |target: &mut bool| match parse_bool(value) {
            Some(v) => *target = v,
            None => diags.error(
                object,
                field.clone(),
                format!("{value:?} is not a boolean (\"true\" or \"false\"); the default applies"),
            ),
        };
        match short {
            "ssl-redirect" => boolean(&mut settings.policy.ssl_redirect),
            "force-ssl-redirect" => boolean(&mut settings.policy.force_ssl_redirect),
            _ if SNIPPETS.contains(&short) => diags.warning(
                object,
                field,
                "configuration snippets are never executed; this annotation is ignored",
            ),
            _ => diags.warning(
                object,
                field,
                "this annotation is not supported yet and is ignored",
            ),
        }
    }
    settings
}

/// Booleans as ingress-nginx reads them (Go's `strconv.ParseBool`).
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_like_ingress_nginx() {
        for v in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_bool(v), Some(true), "{v}");
        }
        for v in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_bool(v), Some(false), "{v}");
        }
        for v in ["yes", "on", "", " true", "tRuE"] {
            assert_eq!(parse_bool(v), None, "{v}");
        }
    }
}
