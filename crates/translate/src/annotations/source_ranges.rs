//! Allow and deny lists of client addresses (`whitelist-source-range`, its newer name
//! `allowlist-source-range`, `denylist-source-range`). A list that cannot be read closes the
//! Ingress: guessing which clients were meant would widen or narrow it.

use std::sync::Arc;

use vestibule_model::Cidr;

use super::{IngressSettings, Reader};

pub(super) const KEYS: &[&str] = &[
    "whitelist-source-range",
    "allowlist-source-range",
    "denylist-source-range",
];

/// A comma-separated list of addresses and CIDR ranges.
pub fn ranges(value: &str) -> Result<Vec<Cidr>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(Cidr::parse)
        .collect()
}

/// Reads the lists over the controller-wide ones (`--allowlist-source-range`,
/// `--denylist-source-range`), which an annotation replaces. Returns the keys that must
/// close the Ingress.
pub(super) fn read(reader: &mut Reader<'_>, settings: &mut IngressSettings) -> Vec<&'static str> {
    if !KEYS.iter().any(|k| reader.get(k).is_some()) {
        return Vec::new();
    }
    let mut lists = settings
        .policy
        .source_ranges
        .as_deref()
        .cloned()
        .unwrap_or_default();
    let allow_key = if reader.get("allowlist-source-range").is_some() {
        if reader.get("whitelist-source-range").is_some() {
            reader.info(
                "whitelist-source-range",
                "allowlist-source-range is set too, and wins, as in ingress-nginx",
            );
        }
        Some("allowlist-source-range")
    } else if reader.get("whitelist-source-range").is_some() {
        Some("whitelist-source-range")
    } else {
        None
    };
    let mut closing = Vec::new();
    for (key, list) in [
        (allow_key, &mut lists.allow),
        (Some("denylist-source-range"), &mut lists.deny),
    ] {
        let Some(key) = key else { continue };
        let Some(value) = reader.get(key) else {
            continue;
        };
        match ranges(value) {
            Ok(parsed) => *list = parsed,
            Err(e) => {
                reader.error(key, format!("{e}; this Ingress's paths answer 503"));
                closing.push(key);
            }
        }
    }
    settings.policy.source_ranges =
        (!lists.allow.is_empty() || !lists.deny.is_empty()).then(|| Arc::new(lists));
    closing
}
