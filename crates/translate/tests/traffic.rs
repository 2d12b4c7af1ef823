//! Traffic-control annotations as compiled: the request-rate limits of an Ingress (one
//! budget for all its paths; a value that cannot be read closes it) and canary Ingresses
//! (joined to the main route with the same host, path and path type; mistakes drop the
//! canary and leave the main serving).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use vestibule_model::{Backend, Canary, Cidr, RateLimit, Route, Target};
use vestibule_testkit::{ingress, svc};
use vestibule_translate::{Compiled, Object};

const PREFIX: &str = "nginx.ingress.kubernetes.io/";

fn annotated(name: &str, host: &str, annotations: &[(&str, &str)]) -> Object {
    let mut builder = ingress("default", name).class("vestibule");
    for (short, value) in annotations {
        builder = builder.annotation(&format!("{PREFIX}{short}"), value);
    }
    o(builder
        .host(host)
        .prefix("/", svc("web", 80))
        .prefix("/api", svc("web", 80))
        .build())
}

fn world(ingresses: Vec<Object>) -> Compiled {
    let mut objects = vec![our_class()];
    objects.extend(backend("default", "web", "10.0.0.1"));
    objects.extend(backend("default", "next", "10.0.0.2"));
    objects.extend(ingresses);
    compile_default(objects)
}

fn route<'c>(c: &'c Compiled, host: &str, path: &str) -> &'c Route {
    match c.table.lookup(host, path).target {
        Target::Route(route) => route,
        other => panic!("{host}{path}: {other:?}"),
    }
}

fn limit(c: &Compiled, path: &str) -> Option<Arc<RateLimit>> {
    route(c, "x.com", path).policy.rate_limit.clone()
}

/// The compile has an error at the annotation `short`.
fn assert_error_at(c: &Compiled, short: &str) {
    let found = findings(c);
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("error") && f.contains(short)),
        "{short}: {found:?}"
    );
}

#[test]
fn rate_limits_are_one_budget_per_ingress_with_ingress_nginx_defaults() {
    let c = world(vec![annotated(
        "a",
        "x.com",
        &[("limit-rps", "5"), ("limit-whitelist", "10.0.0.0/8, ::1")],
    )]);
    assert_eq!(findings(&c), Vec::<String>::new());
    let root = limit(&c, "/").unwrap();
    assert_eq!(
        *root,
        RateLimit {
            zone: "default/a".into(),
            connections: None,
            rps: Some(5),
            rpm: None,
            burst_multiplier: 5,
            exempt: vec![
                Cidr::parse("10.0.0.0/8").unwrap(),
                Cidr::parse("::1").unwrap()
            ],
        }
    );
    assert!(Arc::ptr_eq(&root, &limit(&c, "/api").unwrap()), "shared");

    let c = world(vec![annotated(
        "a",
        "x.com",
        &[
            ("limit-connections", "2"),
            ("limit-rpm", "60"),
            ("limit-burst-multiplier", "1"),
            ("limit-rps", "0"),
        ],
    )]);
    assert_eq!(findings(&c), Vec::<String>::new());
    let l = limit(&c, "/").unwrap();
    assert_eq!(
        (l.connections, l.rps, l.rpm, l.burst_multiplier),
        (Some(2), None, Some(60), 1)
    );
    assert!(route(&c, "x.com", "/").policy.refused.is_none());
}

#[test]
fn a_rate_limit_that_cannot_be_read_closes_the_ingress() {
    for (short, value) in [
        ("limit-rps", "ten"),
        ("limit-rpm", "-1"),
        ("limit-connections", "1.5"),
        ("limit-burst-multiplier", "0"),
        ("limit-allowlist", "10.0.0.0/33"),
    ] {
        let c = world(vec![annotated(
            "a",
            "x.com",
            &[("limit-rps", "1"), (short, value)],
        )]);
        let refused = route(&c, "x.com", "/").policy.refused.clone();
        assert!(
            refused.is_some_and(|r| r.keys.contains(short)),
            "{short}: {value}"
        );
        assert_error_at(&c, short);
    }
    // Modifiers alone do nothing, and say so.
    let c = world(vec![annotated(
        "a",
        "x.com",
        &[
            ("limit-burst-multiplier", "3"),
            ("limit-allowlist", "10.0.0.0/8"),
        ],
    )]);
    assert!(limit(&c, "/").is_none());
    let found = findings(&c);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|f| f.starts_with("warning")), "{found:?}");
}

/// A canary of `default/main` on x.com `/` and `/api`, sending to Service `next`.
fn canary(name: &str, seconds: i64, path_type: &str, annotations: &[(&str, &str)]) -> Object {
    let mut builder = ingress("default", name)
        .class("vestibule")
        .created(seconds)
        .annotation(&format!("{PREFIX}canary"), "true");
    for (short, value) in annotations {
        builder = builder.annotation(&format!("{PREFIX}{short}"), value);
    }
    o(builder
        .host("x.com")
        .path(path_type, "/api", svc("next", 80))
        .build())
}

fn main_ingress() -> Object {
    o(ingress("default", "main")
        .class("vestibule")
        .created(1)
        .host("x.com")
        .prefix("/", svc("web", 80))
        .prefix("/api", svc("web", 80))
        .build())
}

fn canary_of(c: &Compiled, path: &str) -> Option<Arc<Canary>> {
    route(c, "x.com", path).canary.clone()
}

fn service(c: &Compiled, backend: &Backend) -> String {
    match backend {
        Backend::Cluster(id) => c.table.cluster(*id).key.service.to_string(),
        Backend::Unavailable { .. } => "503".into(),
    }
}

#[test]
fn a_canary_joins_the_main_route_with_the_same_host_path_and_type() {
    let c = world(vec![
        main_ingress(),
        canary(
            "beta",
            2,
            "Prefix",
            &[
                ("canary-weight", "30"),
                ("canary-weight-total", "300"),
                ("canary-by-header", "X-Beta"),
                ("canary-by-header-pattern", "^on$"),
                ("canary-by-cookie", "beta"),
                ("affinity-canary-behavior", "legacy"),
                ("rewrite-target", "/elsewhere"),
            ],
        ),
        // Same path, later: one canary per path.
        canary("gamma", 3, "Prefix", &[("canary-weight", "50")]),
        // Exact /api is not the main's Prefix /api.
        canary("delta", 4, "Exact", &[("canary-weight", "50")]),
    ]);
    assert!(canary_of(&c, "/").is_none(), "only the canary's paths");
    let beta = canary_of(&c, "/api").unwrap();
    assert_eq!(&*beta.origin.name, "beta");
    assert_eq!(service(&c, &beta.backend), "next");
    assert_eq!(
        (beta.weight, beta.weight_total, beta.sticky),
        (30, 300, false)
    );
    let header = beta.header.as_ref().unwrap();
    assert_eq!(&*header.name, "x-beta");
    assert_eq!(header.pattern.as_ref().map(|p| p.as_str()), Some("^on$"));
    assert_eq!(beta.cookie.as_deref(), Some("beta"));
    // The main's own policy stays: the canary's rewrite does not apply.
    let api = route(&c, "x.com", "/api");
    assert_eq!(api.origin.name.as_ref(), "main");
    assert!(api.policy.rewrite.is_none());
    assert_eq!(service(&c, &api.backend), "web");
    let found = findings(&c);
    for expected in [
        "info Ingress default/beta metadata.annotations[\"nginx.ingress.kubernetes.io/canary\"]",
        "warning Ingress default/gamma spec.rules[0].http.paths[0]",
        "error Ingress default/delta spec.rules[0].http.paths[0]",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "{expected} in {found:#?}"
        );
    }
    assert_eq!(found.len(), 3, "{found:#?}");
}

#[test]
fn canary_mistakes_drop_the_canary_and_the_main_serves() {
    for (short, value) in [
        ("canary-weight", "101"),
        ("canary-weight", "x"),
        ("canary-by-header-pattern", "(open"),
        ("canary-by-header", "bad header"),
        ("affinity-canary-behavior", "sometimes"),
    ] {
        let c = world(vec![
            main_ingress(),
            canary(
                "beta",
                2,
                "Prefix",
                &[("canary-by-header", "X-Beta"), (short, value)],
            ),
        ]);
        assert!(canary_of(&c, "/api").is_none(), "{short}: {value}");
        assert_error_at(&c, short);
    }
    // Canary keys on an Ingress that is not a canary: ignored with a warning.
    let c = world(vec![annotated("a", "x.com", &[("canary-weight", "10")])]);
    assert!(canary_of(&c, "/").is_none());
    assert_eq!(
        findings(&c),
        vec![
            "warning Ingress default/a metadata.annotations[\"nginx.ingress.kubernetes.io/canary-weight\"]"
        ]
    );
}
