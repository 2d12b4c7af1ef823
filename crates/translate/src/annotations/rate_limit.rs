//! Request-rate limits (`limit-connections`, `limit-rps`, `limit-rpm` and their modifiers
//! `limit-burst-multiplier`, `limit-allowlist` / `limit-whitelist`), counted per client
//! address with one budget per Ingress, as ingress-nginx does. A value that cannot be read
//! closes the Ingress: a guessed limit would either let a flood through or refuse clients.

use std::sync::Arc;

use vestibule_model::RateLimit;

use super::syntax::parse_uint;
use super::{IngressSettings, Reader, source_ranges};

pub(super) const KEYS: &[&str] = &[
    "limit-connections",
    "limit-rps",
    "limit-rpm",
    "limit-burst-multiplier",
    "limit-allowlist",
    "limit-whitelist",
];

/// ingress-nginx's `limit-burst-multiplier` default.
const BURST_MULTIPLIER: u32 = 5;

const CLOSES: &str = "this Ingress's paths answer 503";

/// Reads the limits into the policy. Returns the keys that must close the Ingress.
pub(super) fn read(reader: &mut Reader<'_>, settings: &mut IngressSettings) -> Vec<&'static str> {
    if !KEYS.iter().any(|k| reader.has(k)) {
        return Vec::new();
    }
    let mut closing = Vec::new();
    let mut count = |reader: &mut Reader<'_>, key: &'static str| -> Option<u32> {
        let value = reader.get(key)?;
        match parse_uint::<u32>(value) {
            // 0 turns the limit off, as in ingress-nginx.
            Some(n) => (n > 0).then_some(n),
            None => {
                reader.error(
                    key,
                    format!("{value:?} is not a whole number (0 or more); {CLOSES}"),
                );
                closing.push(key);
                None
            }
        }
    };
    let connections = count(reader, "limit-connections");
    let rps = count(reader, "limit-rps");
    let rpm = count(reader, "limit-rpm");
    let burst_multiplier = match reader.get("limit-burst-multiplier") {
        None => BURST_MULTIPLIER,
        Some(value) => match parse_uint::<u32>(value).filter(|n| *n > 0) {
            Some(n) => n,
            None => {
                reader.error(
                    "limit-burst-multiplier",
                    format!("{value:?} is not a whole number above 0; {CLOSES}"),
                );
                closing.push("limit-burst-multiplier");
                BURST_MULTIPLIER
            }
        },
    };
    let allow_key = if reader.has("limit-allowlist") {
        if reader.has("limit-whitelist") {
            reader.info(
                "limit-whitelist",
                "limit-allowlist is set too, and wins, as in ingress-nginx",
            );
        }
        Some("limit-allowlist")
    } else if reader.has("limit-whitelist") {
        Some("limit-whitelist")
    } else {
        None
    };
    let mut exempt = Vec::new();
    if let Some(key) = allow_key
        && let Some(value) = reader.get(key)
    {
        match source_ranges::ranges(value) {
            Ok(ranges) => exempt = ranges,
            Err(e) => {
                reader.error(key, format!("{e}; {CLOSES}"));
                closing.push(key);
            }
        }
    }
    if connections.is_none() && rps.is_none() && rpm.is_none() {
        for key in [
            "limit-burst-multiplier",
            "limit-allowlist",
            "limit-whitelist",
        ] {
            if reader.has(key) && !closing.contains(&key) {
                reader.warning(
                    key,
                    "this has no effect without limit-connections, limit-rps or limit-rpm",
                );
            }
        }
        return closing;
    }
    let object = reader.object;
    settings.policy.rate_limit = Some(Arc::new(RateLimit {
        zone: format!("{}/{}", object.namespace, object.name).into(),
        connections,
        rps,
        rpm,
        burst_multiplier,
        exempt,
    }));
    closing
}
