//! Annotation values on any input: the value parsers (`values::*`) must answer without
//! panicking, and what they accept must write back to a value they read the same; a whole
//! Ingress annotated with the input must compile without panicking, the same each time, with
//! every diagnostic naming a field that exists, and nothing it builds may put CR, LF or NUL
//! on the wire.
//!
//! Input: lines of `key=value`; the key is an `nginx.ingress.kubernetes.io/` annotation (the
//! prefix is added), the value anything up to the end of the line.

#![no_main]

#[path = "common/objects.rs"]
mod objects;

use std::collections::BTreeMap;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vestibule_model::NextUpstream;
use vestibule_translate::{CertMemory, Context, Kind, compile_with, values};

/// A fixed time, so that compiling twice can be compared: the fixture's certificate is
/// valid then.
const NOW: i64 = 1_800_000_000;

fn show_next_upstream(n: &NextUpstream) -> String {
    let tokens: Vec<&str> = [
        (n.error, "error"),
        (n.timeout, "timeout"),
        (n.http_500, "http_500"),
        (n.http_502, "http_502"),
        (n.http_503, "http_503"),
        (n.http_504, "http_504"),
        (n.http_403, "http_403"),
        (n.http_404, "http_404"),
        (n.http_429, "http_429"),
        (n.non_idempotent, "non_idempotent"),
    ]
    .into_iter()
    .filter_map(|(on, token)| on.then_some(token))
    .collect();
    if tokens.is_empty() {
        "off".to_owned()
    } else {
        tokens.join(" ")
    }
}

fn check_values(value: &str) {
    let duration = values::duration(value);
    let with_fractions = values::duration_with_fractions(value);
    if let Some(d) = duration {
        assert_eq!(
            with_fractions,
            Some(d),
            "{value:?}: fractions allowed read it otherwise"
        );
        if let Ok(millis) = u64::try_from(d.as_millis()) {
            assert_eq!(
                values::duration(&format!("{millis}ms")),
                Some(d),
                "{value:?}"
            );
            if d.subsec_millis() == 0 {
                assert_eq!(
                    values::duration(&d.as_secs().to_string()),
                    Some(d),
                    "{value:?}"
                );
            }
        }
    } else if !value.contains('.') {
        assert_eq!(
            with_fractions, None,
            "{value:?}: read only with fractions allowed"
        );
    }
    if let Some(d) = with_fractions {
        assert!(d <= Duration::MAX);
    }
    if let Some(n) = values::size(value) {
        assert_eq!(values::size(&n.to_string()), Some(n), "{value:?}");
        if n != 0 && n % 1024 == 0 {
            assert_eq!(
                values::size(&format!("{}k", n / 1024)),
                Some(n),
                "{value:?}"
            );
        }
    }
    if let Ok(n) = values::next_upstream(value) {
        let shown = show_next_upstream(&n);
        assert_eq!(
            values::next_upstream(&shown),
            Ok(n),
            "{value:?} written as {shown:?}"
        );
    }
    let _ = values::password_hash(value.as_bytes());
}

/// Every string in `value` (a route's policy as JSON) that would reach the wire is free of
/// CR, LF and NUL; `path` says where it is, for the message.
fn check_strings(value: &serde_json::Value, path: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => {
            // Never sent: the canary's header pattern (a regex matched against values), the
            // balancer's hash key and the auth cache's key (what they hash), a refusal's keys
            // (for the log, escaped there), and the rewrite's pattern (a route path, matched
            // against requests; its target is refused with control characters in the model).
            let not_sent = path
                .iter()
                .any(|p| ["pattern", "hash", "cache", "refused", "rewrite"].contains(&&**p));
            if !not_sent {
                assert!(
                    !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0),
                    "{}: {s:?}",
                    path.join(".")
                );
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                check_strings(item, path);
                path.pop();
            }
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                path.push(key.clone());
                check_strings(item, path);
                path.pop();
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut annotations = BTreeMap::new();
    for line in text.split('\n').take(64) {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        check_values(value);
        annotations.insert(format!("{}{key}", objects::PREFIX), value.to_owned());
    }
    let fields: Vec<String> = annotations
        .keys()
        .map(|key| format!("metadata.annotations[{key:?}]"))
        .collect();
    let snapshot = objects::snapshot(annotations, None);
    let memory = CertMemory::default();
    let context = Context {
        options: objects::options(),
        memory: &memory,
        now: NOW,
    };
    let compiled = compile_with(&snapshot, context);
    let again = compile_with(&snapshot, context);
    assert!(compiled == again, "two compiles of one snapshot differ");
    for d in &compiled.report.diagnostics {
        assert!(!d.field.is_empty(), "{d}");
        // An annotation's diagnostic names one that is there, or says it is missing.
        let annotation = d.field.strip_prefix("metadata.annotations[\"");
        if let (Some(annotation), Kind::Ingress, "web") =
            (annotation, d.object.kind, &*d.object.name)
        {
            let short = annotation
                .trim_end_matches("\"]")
                .trim_start_matches(objects::PREFIX);
            assert!(
                fields.contains(&d.field) || d.message.contains(short),
                "{d}: no such annotation"
            );
        }
    }
    for route in compiled.table.routes() {
        let policy = match serde_json::to_value(&route.policy) {
            Ok(policy) => policy,
            Err(e) => panic!("a policy that does not serialise: {e}"),
        };
        check_strings(&policy, &mut Vec::new());
        if let Some(redirect) = &route.policy.redirect {
            assert!((300..=308).contains(&redirect.code), "{}", redirect.code);
        }
        if let Some(fixed) = &route.policy.fixed {
            assert!((200..=599).contains(&fixed.code), "{}", fixed.code);
        }
        for code in route.policy.custom_errors.iter().flat_map(|c| c.iter()) {
            assert!((100..=599).contains(code), "custom error {code}");
        }
        let proxy = &route.policy.proxy;
        assert!(!proxy.connect_timeout.is_zero() && !proxy.send_timeout.is_zero());
        assert!(!proxy.read_timeout.is_zero());
        assert_ne!(proxy.body_size_limit, Some(0), "0 means no limit");
    }
});
