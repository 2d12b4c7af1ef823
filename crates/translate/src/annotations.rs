//! The `nginx.ingress.kubernetes.io/` annotations: which ones are honoured, and a warning for
//! every other one, so that migrating users see what is ignored instead of guessing.

use std::collections::BTreeMap;

use crate::report::{Diagnostics, ObjectRef};

pub(crate) const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Keys (without the prefix) this version honours.
const SUPPORTED: &[&str] = &[];

/// Keys whose values ingress-nginx pasted into its configuration verbatim.
const SNIPPETS: &[&str] = &[
    "configuration-snippet",
    "server-snippet",
    "stream-snippet",
    "auth-snippet",
    "modsecurity-snippet",
];

pub(crate) fn check(
    annotations: Option<&BTreeMap<String, String>>,
    object: &ObjectRef,
    diags: &mut Diagnostics,
) {
    for key in annotations.into_iter().flat_map(|a| a.keys()) {
        let Some(short) = key.strip_prefix(PREFIX) else {
            continue;
        };
        if SUPPORTED.contains(&short) {
            continue;
        }
        let field = format!("metadata.annotations[{key:?}]");
        if SNIPPETS.contains(&short) {
            diags.warning(
                object,
                field,
                "configuration snippets are never executed; this annotation is ignored",
            );
        } else {
            diags.warning(
                object,
                field,
                "this annotation is not supported yet and is ignored",
            );
        }
    }
}
