//! Header rules from annotations: `custom-headers` (response fields from a ConfigMap, each
//! name on `--global-allowed-response-headers`, as ingress-nginx requires), and the
//! rewriting of the upstream's redirects and cookies (`proxy-redirect-from`/`-to`,
//! `proxy-cookie-domain`, `proxy-cookie-path`). They add to the controller-wide rules
//! (`--add-headers`, `--proxy-set-headers`, `--hide-headers`) already in the policy. A
//! `custom-headers` that cannot be honoured closes the Ingress, as ingress-nginx's 503 does.

use std::sync::Arc;

use vestibule_model::{HeaderOp, HeaderRules, Replace, ResponseOp};

use super::external::config_map;
use super::{ConfigMaps, IngressSettings, Reader};

pub(super) const KEYS: &[&str] = &[
    "custom-headers",
    "proxy-redirect-from",
    "proxy-redirect-to",
    "proxy-cookie-domain",
    "proxy-cookie-path",
];

/// Reads the keys into the policy's rules. Returns the keys that must close the Ingress.
pub(super) fn read(
    reader: &mut Reader<'_>,
    settings: &mut IngressSettings,
    config_maps: &ConfigMaps<'_>,
    allowed: &[String],
    cross_namespace: bool,
) -> Vec<&'static str> {
    if !KEYS.iter().any(|k| reader.has(k)) {
        return Vec::new();
    }
    let mut rules = settings
        .policy
        .headers
        .as_deref()
        .cloned()
        .unwrap_or_default();
    let mut closing = Vec::new();
    if let Some(reference) = reader.get("custom-headers") {
        let namespace = reader.object.namespace.clone();
        let read = config_map(reference, &namespace, config_maps, cross_namespace)
            .and_then(|data| custom_headers(&data, allowed));
        match read {
            Ok(ops) => rules.response.extend(ops),
            Err(e) => {
                reader.error(
                    "custom-headers",
                    format!("{e}; this Ingress's paths answer 503"),
                );
                closing.push("custom-headers");
            }
        }
    }
    rules.redirect = redirect(reader);
    for (key, target) in [
        ("proxy-cookie-domain", &mut rules.cookie_domain),
        ("proxy-cookie-path", &mut rules.cookie_path),
    ] {
        if let Some(value) = reader.get(key) {
            *target = pair(value);
            if target.is_none() && value.trim() != "off" {
                reader.error(key, format!("{value:?} is not \"FROM TO\" or off; ignored"));
            }
        }
    }
    settings.policy.headers = (!rules.is_empty()).then(|| Arc::new(rules));
    closing
}

/// `FROM TO`, two words.
fn pair(value: &str) -> Option<Replace> {
    let mut words = value.split_whitespace();
    let (from, to) = (words.next()?, words.next()?);
    if words.next().is_some() || from.bytes().chain(to.bytes()).any(|b| b.is_ascii_control()) {
        return None;
    }
    Some(Replace {
        from: from.into(),
        to: to.into(),
    })
}

/// `proxy-redirect-from` and `-to`: off by default, and `default` or `off` as `from` keeps
/// it off.
fn redirect(reader: &mut Reader<'_>) -> Option<Replace> {
    let from = reader.get("proxy-redirect-from").map(str::trim);
    let to = reader.get("proxy-redirect-to").map(str::trim);
    match (from, to) {
        (None | Some("default" | "off"), _) => {
            if to.is_some() && from.is_none() {
                reader.warning(
                    "proxy-redirect-to",
                    "this has no effect without proxy-redirect-from",
                );
            }
            None
        }
        (Some(from), Some(to))
            if !from.is_empty()
                && !from
                    .bytes()
                    .chain(to.bytes())
                    .any(|b| b.is_ascii_control() || b == b' ') =>
        {
            Some(Replace {
                from: from.into(),
                to: to.into(),
            })
        }
        (Some(from), to) => {
            let why = match to {
                None => "proxy-redirect-to is missing".to_owned(),
                Some(to) => format!("{from:?} to {to:?} is not a pair of URL prefixes"),
            };
            reader.error("proxy-redirect-from", format!("{why}; ignored"));
            None
        }
    }
}

/// The fields of a `custom-headers` ConfigMap, each name allowed by the operator.
pub(crate) fn custom_headers(
    data: &[(String, String)],
    allowed: &[String],
) -> Result<Vec<ResponseOp>, String> {
    let mut ops = Vec::new();
    for (name, value) in data {
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(name.trim())) {
            return Err(format!(
                "the header {name} is not in --global-allowed-response-headers"
            ));
        }
        let op = HeaderOp::set(name, value).map_err(|e| format!("the header {name}: {e}"))?;
        ops.push(ResponseOp { op, always: true });
    }
    Ok(ops)
}

/// The controller-wide rules: `--proxy-set-headers` and `--add-headers` (ConfigMaps of
/// fields, `namespace/name`) and `--hide-headers`. A ConfigMap that is missing, or a field in
/// it that cannot be used, is an error on the ConfigMap; the rest applies.
pub(crate) fn global(
    proxy_set_headers: Option<&(String, String)>,
    add_headers: Option<&(String, String)>,
    hide_headers: &[String],
    config_maps: &ConfigMaps<'_>,
    diags: &mut crate::report::Diagnostics,
) -> Option<Arc<HeaderRules>> {
    use crate::report::{Kind, ObjectRef};
    let mut rules = HeaderRules::default();
    for (flag, reference, response) in [
        ("--proxy-set-headers", proxy_set_headers, false),
        ("--add-headers", add_headers, true),
    ] {
        let Some((namespace, name)) = reference else {
            continue;
        };
        let object = ObjectRef::new(Kind::ConfigMap, namespace, name);
        let Some(found) = config_maps.get(&(namespace.as_str(), name.as_str())) else {
            let message = format!("{flag} names this ConfigMap, which does not exist");
            diags.error(&object, "data", message);
            continue;
        };
        for (key, value) in found.data.iter().flatten() {
            match HeaderOp::set(key, value) {
                Ok(op) if response => rules.response.push(ResponseOp { op, always: true }),
                Ok(op) => rules.request.push(op),
                Err(e) => {
                    let message = format!("{e}; this field is not set ({flag})");
                    diags.error(&object, format!("data.{key}"), message);
                }
            }
        }
    }
    for name in hide_headers {
        // Checked when the flag was read.
        if let Ok(op) = HeaderOp::remove(name) {
            rules.response.push(ResponseOp { op, always: true });
        }
    }
    (!rules.is_empty()).then(|| Arc::new(rules))
}
