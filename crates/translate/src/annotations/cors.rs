//! Cross-origin resource sharing (`enable-cors`, `cors-allow-origin`, `cors-allow-methods`,
//! `cors-allow-headers`, `cors-expose-headers`, `cors-allow-credentials`, `cors-max-age`),
//! with ingress-nginx's defaults and checks: an invalid value gets the default, an invalid
//! origin is skipped. CORS relaxes what browsers allow; it protects nothing, so nothing here
//! closes the Ingress.

use std::sync::Arc;

use vestibule_model::{AllowedOrigins, Cors, OriginPattern};

use super::syntax::{parse_bool, parse_uint};
use super::{BOOLEAN, IngressSettings, Reader};

pub(super) const KEYS: &[&str] = &[
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
];

const METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,\
                       Cache-Control,Content-Type,Range,Authorization";
const MAX_AGE: u64 = 1_728_000;

/// A comma-separated list of tokens (`GET, POST`), each of `allowed` bytes, or `*` when
/// `star`; ingress-nginx's check, so no value can carry anything but names into a field.
fn list(value: &str, allowed: impl Fn(u8) -> bool, star: bool) -> Option<String> {
    let items: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    let ok = |i: &&str| (star && *i == "*") || i.bytes().all(&allowed);
    (!items.is_empty() && items.iter().all(ok)).then(|| items.join(", "))
}

fn header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

pub(super) fn read(reader: &mut Reader<'_>, settings: &mut IngressSettings) {
    if !KEYS.iter().any(|k| reader.has(k)) {
        return;
    }
    let enabled = reader.read("enable-cors", parse_bool, BOOLEAN, false) == Some(true);
    if !enabled {
        let stray: Vec<&str> = KEYS[1..]
            .iter()
            .copied()
            .filter(|k| reader.has(k))
            .collect();
        for key in stray {
            reader.warning(
                key,
                "this has no effect without enable-cors: \"true\"; ignored",
            );
        }
        return;
    }
    let origins = match reader.get("cors-allow-origin").map(str::trim) {
        None | Some("") | Some("*") => AllowedOrigins::Any,
        Some(value) => {
            let mut patterns = Vec::new();
            for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                if entry == "*" {
                    patterns.clear();
                    break;
                }
                match OriginPattern::parse(entry) {
                    Ok(p) => patterns.push(p),
                    Err(e) => reader.warning("cors-allow-origin", format!("{e}; skipped")),
                }
            }
            match patterns.is_empty() {
                // Only `*`, or nothing valid: ingress-nginx falls back to `*` too.
                true => AllowedOrigins::Any,
                false => AllowedOrigins::List(patterns),
            }
        }
    };
    let methods = reader
        .read(
            "cors-allow-methods",
            |v| list(v, |b| b.is_ascii_alphabetic(), false),
            "a comma-separated list of methods",
            METHODS,
        )
        .unwrap_or_else(|| METHODS.to_owned());
    let headers = reader
        .read(
            "cors-allow-headers",
            |v| list(v, header_name_byte, false),
            "a comma-separated list of header names",
            HEADERS,
        )
        .unwrap_or_else(|| HEADERS.to_owned());
    let expose = reader.read(
        "cors-expose-headers",
        |v| list(v, header_name_byte, true),
        "a comma-separated list of header names or *",
        "none",
    );
    let credentials = reader
        .read("cors-allow-credentials", parse_bool, BOOLEAN, true)
        .unwrap_or(true);
    let max_age = reader
        .read(
            "cors-max-age",
            parse_uint::<u64>,
            "a whole number of seconds",
            MAX_AGE,
        )
        .unwrap_or(MAX_AGE);
    settings.policy.cors = Some(Arc::new(Cors {
        origins,
        methods: methods.into(),
        headers: headers.into(),
        expose: expose.map(Into::into),
        credentials,
        max_age,
    }));
}
