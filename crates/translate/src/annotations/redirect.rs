//! Redirects an Ingress asks for: `permanent-redirect` and `temporal-redirect` (with their
//! codes) on its paths, `app-root` and `from-to-www-redirect` on its hosts.

use std::sync::Arc;

use vestibule_model::Redirect;

use super::syntax::{parse_bool, parse_uint};
use super::{BOOLEAN, IngressSettings, Reader};

pub(super) const KEYS: &[&str] = &[
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "temporal-redirect-code",
    "app-root",
    "from-to-www-redirect",
];

pub(super) fn read(reader: &mut Reader<'_>, settings: &mut IngressSettings) {
    let permanent = redirect(reader, "permanent-redirect", 301);
    let temporal = redirect(reader, "temporal-redirect", 302);
    if temporal.is_some() && permanent.is_some() {
        reader.warning(
            "permanent-redirect",
            "temporal-redirect is set too, and wins, as in ingress-nginx",
        );
    }
    settings.policy.redirect = temporal.or(permanent).map(Arc::new);
    if let Some(root) = reader.get("app-root") {
        if root.starts_with('/') && !root.starts_with("//") && is_header_safe(root) {
            settings.app_root = Some(root.into());
        } else {
            reader.error(
                "app-root",
                format!("{root:?} is not a path starting with '/'; it is ignored"),
            );
        }
    }
    if let Some(on) = reader.read("from-to-www-redirect", parse_bool, BOOLEAN, false) {
        settings.www_redirect = on;
    }
}

/// `key` and `key-code`, when `key` holds a URL Vestibule can send.
fn redirect(reader: &mut Reader<'_>, key: &str, default_code: u16) -> Option<Redirect> {
    let code_key = format!("{key}-code");
    let code = reader
        .read(
            &code_key,
            |v| parse_uint::<u16>(v).filter(|c| (300..=308).contains(c)),
            "a redirect status code from 300 to 308",
            default_code,
        )
        .unwrap_or(default_code);
    let location = reader.get(key)?;
    let scheme = location
        .split_once("://")
        .map(|(s, rest)| (s.to_ascii_lowercase(), rest));
    let valid = matches!(&scheme, Some((s, rest)) if (s == "http" || s == "https") && !rest.is_empty())
        && !location.contains('$')
        && is_header_safe(location);
    if !valid {
        reader.error(
            key,
            format!(
                "{location:?} is not an absolute http or https URL without variables; \
                 there is no redirect"
            ),
        );
        return None;
    }
    Some(Redirect {
        code,
        location: location.into(),
    })
}

/// Printable ASCII without spaces: a value that goes into a `Location` as it is.
fn is_header_safe(value: &str) -> bool {
    value.bytes().all(|b| b.is_ascii_graphic())
}
