//! Canary Ingresses (`canary: "true"` with `canary-weight`, `canary-weight-total`,
//! `canary-by-header`, `canary-by-header-value`, `canary-by-header-pattern`,
//! `canary-by-cookie`, `affinity-canary-behavior`). A canary Ingress is not served on its own:
//! each of its paths takes a share of the main Ingress's route with the same host, path and
//! path type. A mistake in a canary key drops the canary and leaves the main serving
//! everything, which is what the main's users had before the canary was made.

use vestibule_model::{CanaryHeader, Pattern};

use super::syntax::{parse_bool, parse_uint};
use super::{IngressSettings, Reader};

pub(super) const KEYS: &[&str] = &[
    "canary",
    "canary-weight",
    "canary-weight-total",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "affinity-canary-behavior",
];

const IGNORED: &str = "this canary is ignored and the main Ingress serves every request";

/// How a canary Ingress splits the main's requests; the compile adds its backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CanaryRule {
    pub(crate) header: Option<CanaryHeader>,
    pub(crate) cookie: Option<Box<str>>,
    pub(crate) weight: u32,
    pub(crate) weight_total: u32,
    pub(crate) sticky: bool,
}

/// Whether the annotations make this Ingress a canary (`canary: "true"`).
pub(super) fn is_canary(reader: &Reader<'_>) -> bool {
    reader.get("canary").and_then(parse_bool) == Some(true)
}

/// Reads a canary Ingress's keys. Every other key of a canary Ingress is left alone: the
/// requests it takes are handled by the main Ingress's settings, as in ingress-nginx.
pub(super) fn read(reader: &mut Reader<'_>, settings: &mut IngressSettings) {
    settings.is_canary = true;
    settings.canary = rule(reader).ok();
    let others = reader.values.keys().filter(|k| !KEYS.contains(k)).count();
    if others > 0 {
        reader.info(
            "canary",
            format!(
                "this is a canary Ingress: its {others} other annotation(s) do not apply; the \
                 requests it takes are handled by the main Ingress's settings (rewrite, \
                 authentication, timeouts), as in ingress-nginx"
            ),
        );
    }
}

/// Canary keys on an Ingress that is not a canary: ignored, as in ingress-nginx.
pub(super) fn stray(reader: &mut Reader<'_>) {
    let stray: Vec<&str> = reader
        .values
        .keys()
        .copied()
        .filter(|k| KEYS.contains(k))
        .collect();
    for key in stray {
        let message = if key == "canary" {
            match reader.get(key).and_then(parse_bool) {
                Some(_) => continue,
                None => "not a boolean (\"true\" or \"false\"); this Ingress is served as a main",
            }
        } else {
            "this has no effect without canary: \"true\"; ignored"
        };
        reader.warning(key, message);
    }
}

/// An HTTP field name: one or more token characters (RFC 9110).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The rule, or the key whose mistake drops the canary (reported).
fn rule(reader: &mut Reader<'_>) -> Result<CanaryRule, &'static str> {
    let fail = |reader: &mut Reader<'_>, key: &'static str, why: String| {
        reader.error(key, format!("{why}; {IGNORED}"));
        key
    };
    let number = |reader: &mut Reader<'_>, key: &'static str| -> Result<Option<u32>, String> {
        match reader.get(key) {
            None => Ok(None),
            Some(v) => parse_uint::<u32>(v)
                .map(Some)
                .ok_or_else(|| format!("{v:?} is not a whole number (0 or more)")),
        }
    };
    let weight = match number(reader, "canary-weight") {
        Ok(w) => w.unwrap_or(0),
        Err(why) => return Err(fail(reader, "canary-weight", why)),
    };
    let weight_total = match number(reader, "canary-weight-total") {
        Ok(None) => 100,
        Ok(Some(total)) if total >= 100 => total,
        Ok(Some(total)) => {
            reader.warning(
                "canary-weight-total",
                format!(
                    "{total} is below 100, which ingress-nginx reads as 100; so does Vestibule"
                ),
            );
            100
        }
        Err(why) => return Err(fail(reader, "canary-weight-total", why)),
    };
    if weight > weight_total {
        let why = format!("{weight} is above the weight total ({weight_total})");
        return Err(fail(reader, "canary-weight", why));
    }
    let header = match reader.get("canary-by-header").map(str::trim) {
        None | Some("") => None,
        Some(name) => {
            if !is_token(name) {
                let why = format!("{name:?} is not a header name");
                return Err(fail(reader, "canary-by-header", why));
            }
            let value = reader
                .get("canary-by-header-value")
                .filter(|v| !v.is_empty())
                .map(Box::from);
            let pattern = match reader.get("canary-by-header-pattern") {
                Some(source) if value.is_none() && !source.is_empty() => {
                    match Pattern::new(source, false) {
                        Ok(p) => Some(p),
                        Err(why) => return Err(fail(reader, "canary-by-header-pattern", why)),
                    }
                }
                _ => None,
            };
            Some(CanaryHeader {
                name: name.to_ascii_lowercase().into(),
                value,
                pattern,
            })
        }
    };
    if header.is_none() {
        for key in ["canary-by-header-value", "canary-by-header-pattern"] {
            if reader.has(key) {
                reader.warning(key, "this has no effect without canary-by-header; ignored");
            }
        }
    } else if reader.has("canary-by-header-value") && reader.has("canary-by-header-pattern") {
        reader.info(
            "canary-by-header-pattern",
            "canary-by-header-value is set too, and wins, as in ingress-nginx",
        );
    }
    let cookie = reader
        .get("canary-by-cookie")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(Box::from);
    let sticky = match reader.get("affinity-canary-behavior") {
        None | Some("sticky") => true,
        Some("legacy") => false,
        Some(other) => {
            let why = format!("{other:?} is not sticky or legacy");
            return Err(fail(reader, "affinity-canary-behavior", why));
        }
    };
    Ok(CanaryRule {
        header,
        cookie,
        weight,
        weight_total,
        sticky,
    })
}
