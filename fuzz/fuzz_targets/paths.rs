//! Hosts and request paths on any input: validating, normalising and routing them must not
//! panic, the normal form must be stable, and the route chosen must be the one a backend that
//! decodes every escape (and reads `\` as `/`) would pick for the path it is sent: a path the
//! proxy routes never climbs above the root, or elsewhere, in the backend's reading.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vestibule_model::{
    Backend, PathKind, PathRule, RouteOrigin, RouteTable, TableBuilder, Target, HostPattern,
    is_valid_authority, normalize_request_path, request_host, routing_path,
};

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut b = TableBuilder::new();
        let host = HostPattern::parse("a.example").unwrap_or(HostPattern::Any);
        for (kind, path) in [
            (PathKind::Prefix, "/"),
            (PathKind::Prefix, "/a"),
            (PathKind::Prefix, "/a/b"),
            (PathKind::Exact, "/x"),
            (PathKind::Prefix, "/admin"),
        ] {
            let Ok(rule) = PathRule::new(kind, path) else { continue };
            let origin = RouteOrigin {
                namespace: "fuzz".into(),
                name: format!("{kind:?}{path}").into(),
                field: "spec".into(),
            };
            let backend = Backend::Unavailable { reason: "fuzz".into() };
            let _ = b.route(host.clone(), rule, backend, origin);
        }
        b.build()
    })
}

fn route(path: &str) -> String {
    match table().lookup("a.example", path).target {
        Target::Route(route) => route.origin.name.to_string(),
        _ => "none".to_owned(),
    }
}

/// How a backend that decodes every escape once, reads `\` as `/`, merges slashes and
/// resolves dot segments (as nginx does) reads a path; `None` when it climbs above the root.
fn backend_reading(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                decoded.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'\\', _, _) => {
                decoded.push(b'/');
                i += 1;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let text = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    for segment in text.split('/').skip(1) {
        match segment {
            ".." => {
                out.pop()?;
            }
            "." | "" => {}
            s => out.push(s),
        }
    }
    // A trailing slash stays, as nginx keeps it: Exact `/x` and `/x/` are different rules in
    // every Ingress controller, whatever a backend that drops it then reads.
    let directory = !out.is_empty()
        && (text.ends_with('/') || text.ends_with("/.") || text.ends_with("/.."));
    let slash = if directory { "/" } else { "" };
    Some(format!("/{}{slash}", out.join("/")))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (host, path) = text.split_once('\n').unwrap_or(("a.example", text));
    if is_valid_authority(host.as_bytes()) {
        let normal = request_host(host);
        assert!(!normal.contains(['/', ' ', '@']), "{host:?} -> {normal:?}");
    }
    let Ok(normal) = normalize_request_path(path) else {
        return;
    };
    let again = normalize_request_path(&normal).map(|p| p.into_owned());
    assert_eq!(again.as_deref(), Ok(&*normal), "normalising twice changes {path:?}");
    let Ok(routed) = routing_path(&normal) else {
        return;
    };
    let Some(read) = backend_reading(&normal) else {
        panic!("{path:?} is routed as {routed:?}, but a decoding backend climbs above the root");
    };
    assert_eq!(route(&routed), route(&read), "{path:?}: routed {routed:?}, read {read:?}");
});
