//! "Hosts", "Paths" and "Default backend": what the compiled table serves, across Ingresses.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use vestibule_testkit::{ingress, svc};
use vestibule_translate::{Object, Options};

/// Our class plus Services `web`, `api`, `v1`, `other` with one endpoint each.
fn world() -> Vec<Object> {
    let mut objects = vec![our_class()];
    for (i, name) in ["web", "api", "v1", "other"].iter().enumerate() {
        objects.extend(backend("default", name, &format!("10.0.0.{}", i + 1)));
    }
    objects
}

fn with(extra: Vec<vestibule_testkit::fixtures::IngressBuilder>) -> Vec<Object> {
    let mut objects = world();
    objects.extend(extra.into_iter().map(|i| o(i.class("vestibule").build())));
    objects
}

const WEB: &str = "default/web:80 [10.0.0.1:8080]";
const API: &str = "default/api:80 [10.0.0.2:8080]";
const V1: &str = "default/v1:80 [10.0.0.3:8080]";
const OTHER: &str = "default/other:80 [10.0.0.4:8080]";

fn check(objects: Vec<Object>, cases: &[(&str, &str, &str)]) {
    let c = compile_default(objects);
    for (host, path, want) in cases {
        assert_eq!(serves(&c, host, path), *want, "request {host}{path}");
    }
}

#[test]
fn host_is_matched_case_insensitively_without_port_or_trailing_dot() {
    let c = compile_default(with(vec![
        ingress("default", "a")
            .host("Foo.COM")
            .prefix("/", svc("web", 80)),
    ]));
    for host in [
        "foo.com",
        "FOO.com",
        "foo.com:8080",
        "foo.com.",
        "Foo.Com.:80",
    ] {
        assert_eq!(serves(&c, host, "/"), format!("a -> {WEB}"), "host {host}");
    }
    assert_eq!(
        findings(&c),
        ["warning Ingress default/a spec.rules[0].host"]
    );
}

#[test]
fn one_label_wildcard_and_exact_over_wildcard_across_ingresses() {
    check(
        with(vec![
            ingress("default", "wild")
                .host("*.foo.com")
                .prefix("/", svc("web", 80)),
            ingress("default", "exact")
                .host("bar.foo.com")
                .prefix("/", svc("api", 80)),
        ]),
        &[
            ("baz.foo.com", "/", &format!("wild -> {WEB}")),
            ("bar.foo.com", "/", &format!("exact -> {API}")),
            ("baz.bar.foo.com", "/", "404"),
            ("foo.com", "/", "404"),
        ],
    );
}

#[test]
fn catch_all_host_only_when_no_host_matches_and_no_fall_through() {
    check(
        with(vec![
            ingress("default", "any")
                .any_host()
                .prefix("/", svc("other", 80)),
            ingress("default", "foo")
                .host("foo.com")
                .prefix("/app", svc("web", 80)),
        ]),
        &[
            ("foo.com", "/app/x", &format!("foo -> {WEB}")),
            // foo.com matched a virtual host: its paths only, never the catch-all's `/`.
            ("foo.com", "/other", "404"),
            ("bar.com", "/other", &format!("any -> {OTHER}")),
        ],
    );
}

#[test]
fn invalid_hosts_are_reported_and_other_rules_kept() {
    let c = compile_default(with(vec![
        ingress("default", "a")
            .host("foo.com:80")
            .prefix("/", svc("api", 80))
            .host("10.1.1.1")
            .prefix("/", svc("api", 80))
            .host("good.com")
            .prefix("/", svc("web", 80)),
    ]));
    assert_eq!(serves(&c, "good.com", "/"), format!("a -> {WEB}"));
    assert_eq!(
        findings(&c),
        [
            "error Ingress default/a spec.rules[0].host",
            "error Ingress default/a spec.rules[1].host"
        ]
    );
}

#[test]
fn longest_match_and_exact_over_prefix_across_ingresses() {
    let objects = with(vec![
        ingress("default", "root")
            .host("x.com")
            .prefix("/", svc("web", 80)),
        ingress("default", "api")
            .host("x.com")
            .prefix("/api/", svc("api", 80)),
        ingress("default", "v1")
            .host("x.com")
            .prefix("/api/v1", svc("v1", 80)),
        ingress("default", "exact")
            .host("x.com")
            .exact("/api", svc("other", 80)),
    ]);
    check(
        objects,
        &[
            ("x.com", "/", &format!("root -> {WEB}")),
            ("x.com", "/apiary", &format!("root -> {WEB}")),
            ("x.com", "/api", &format!("exact -> {OTHER}")),
            ("x.com", "/api/", &format!("api -> {API}")),
            ("x.com", "/api/v2", &format!("api -> {API}")),
            ("x.com", "/api/v1", &format!("v1 -> {V1}")),
            ("x.com", "/api/v1/users", &format!("v1 -> {V1}")),
            ("x.com", "/api/v1x", &format!("api -> {API}")),
        ],
    );
}

#[test]
fn exact_and_prefix_paths_per_the_spec_examples() {
    let objects = with(vec![
        ingress("default", "exact-foo")
            .host("e.com")
            .exact("/foo", svc("web", 80)),
        ingress("default", "prefix-bbb")
            .host("p.com")
            .prefix("/aaa/bbb", svc("web", 80)),
        ingress("default", "prefix-slash")
            .host("s.com")
            .prefix("/foo/", svc("web", 80)),
    ]);
    let hit = |name: &str| format!("{name} -> {WEB}");
    check(
        objects,
        &[
            ("e.com", "/foo", &hit("exact-foo")),
            ("e.com", "/foo/", "404"),
            ("e.com", "/FOO", "404"),
            ("p.com", "/aaa/bbb", &hit("prefix-bbb")),
            ("p.com", "/aaa/bbb/", &hit("prefix-bbb")),
            ("p.com", "/aaa/bbb/ccc", &hit("prefix-bbb")),
            ("p.com", "/aaa/bbbxyz", "404"),
            ("p.com", "/aaa/bb", "404"),
            ("p.com", "/aaa/BBB", "404"),
            ("s.com", "/foo", &hit("prefix-slash")),
            ("s.com", "/foo/", &hit("prefix-slash")),
        ],
    );
}

#[test]
fn implementation_specific_is_a_prefix() {
    let c = compile_default(with(vec![
        ingress("default", "is")
            .host("x.com")
            .implementation_specific("/docs", svc("web", 80)),
    ]));
    assert_eq!(serves(&c, "x.com", "/docs/a"), format!("is -> {WEB}"));
    assert_eq!(serves(&c, "x.com", "/docsx"), "404");
    assert!(findings(&c).is_empty());
}

#[test]
fn regex_looking_implementation_specific_paths_get_a_warning() {
    let c = compile_default(with(vec![
        ingress("default", "re")
            .host("x.com")
            .implementation_specific("/api(/|$)(.*)", svc("web", 80)),
    ]));
    assert_eq!(
        findings(&c),
        ["warning Ingress default/re spec.rules[0].http.paths[0].path"]
    );
}

#[test]
fn invalid_paths_and_path_types_are_reported_and_skipped() {
    let c = compile_default(with(vec![
        ingress("default", "bad")
            .host("x.com")
            .path("Regex", "/a", svc("web", 80))
            .path("", "/b", svc("web", 80))
            .prefix("relative", svc("web", 80))
            .exact("/a//b", svc("web", 80))
            .prefix("/good", svc("web", 80)),
    ]));
    assert_eq!(serves(&c, "x.com", "/good"), format!("bad -> {WEB}"));
    assert_eq!(serves(&c, "x.com", "/a"), "404");
    assert_eq!(
        findings(&c),
        [
            "error Ingress default/bad spec.rules[0].http.paths[0].pathType",
            "error Ingress default/bad spec.rules[0].http.paths[1].pathType",
            "error Ingress default/bad spec.rules[0].http.paths[2].path",
            "error Ingress default/bad spec.rules[0].http.paths[3].path",
        ]
    );
    let message = &c.report.diagnostics[0].message;
    assert!(message.contains("\"Regex\""), "{message}");
}

#[test]
fn same_host_path_and_type_in_two_ingresses_oldest_wins() {
    let objects = with(vec![
        ingress("default", "newer")
            .created(100)
            .host("x.com")
            .prefix("/p", svc("api", 80)),
        ingress("default", "older")
            .created(10)
            .host("x.com")
            .prefix("/p/", svc("web", 80)),
    ]);
    let c = compile_default(objects);
    assert_eq!(serves(&c, "x.com", "/p"), format!("older -> {WEB}"));
    assert_eq!(
        findings(&c),
        ["error Ingress default/newer spec.rules[0].http.paths[0]"]
    );
    let message = &c.report.diagnostics[0].message;
    assert!(message.contains("default/older"), "{message}");
}

#[test]
fn without_creation_time_namespace_and_name_decide_precedence() {
    let objects = with(vec![
        ingress("default", "b")
            .host("x.com")
            .prefix("/", svc("api", 80)),
        ingress("default", "a")
            .host("x.com")
            .prefix("/", svc("web", 80)),
    ]);
    assert_eq!(
        serves(&compile_default(objects), "x.com", "/"),
        format!("a -> {WEB}")
    );
    // An object with a creation time is older than one without.
    let objects = with(vec![
        ingress("default", "b")
            .created(5)
            .host("x.com")
            .prefix("/", svc("api", 80)),
        ingress("default", "a")
            .host("x.com")
            .prefix("/", svc("web", 80)),
    ]);
    assert_eq!(
        serves(&compile_default(objects), "x.com", "/"),
        format!("b -> {API}")
    );
}

#[test]
fn ingress_default_backend_serves_unmatched_requests_on_any_host() {
    let objects = with(vec![
        ingress("default", "d").default_backend(svc("other", 80)),
        ingress("default", "x")
            .host("x.com")
            .exact("/x", svc("web", 80)),
    ]);
    check(
        objects,
        &[
            ("x.com", "/x", &format!("x -> {WEB}")),
            ("x.com", "/y", &format!("default(d) -> {OTHER}")),
            ("nowhere.org", "/", &format!("default(d) -> {OTHER}")),
        ],
    );
}

#[test]
fn oldest_default_backend_wins_and_the_others_are_reported() {
    let objects = with(vec![
        ingress("default", "young")
            .created(50)
            .default_backend(svc("api", 80)),
        ingress("default", "old")
            .created(1)
            .default_backend(svc("web", 80)),
    ]);
    let c = compile_default(objects);
    assert_eq!(serves(&c, "any", "/"), format!("default(old) -> {WEB}"));
    assert_eq!(
        findings(&c),
        ["error Ingress default/young spec.defaultBackend"]
    );
}

#[test]
fn flag_default_backend_applies_only_without_an_ingress_one() {
    let flag = Options {
        default_backend_service: Some(("default".to_owned(), "other".to_owned())),
        ..Options::default()
    };
    let c = compile_with(with(vec![]), &flag);
    assert_eq!(serves(&c, "any", "/"), format!("default(flag) -> {OTHER}"));
    let c = compile_with(
        with(vec![
            ingress("default", "d").default_backend(svc("web", 80)),
        ]),
        &flag,
    );
    assert_eq!(serves(&c, "any", "/"), format!("default(d) -> {WEB}"));
    // A flag naming a missing Service: unmatched requests answer 503, with a warning.
    let missing = Options {
        default_backend_service: Some(("default".to_owned(), "nope".to_owned())),
        ..Options::default()
    };
    let c = compile_with(with(vec![]), &missing);
    assert_eq!(serves(&c, "any", "/"), "default(flag) -> 503");
    assert_eq!(
        findings(&c),
        ["warning Service default/nope --default-backend-service"]
    );
}

#[test]
fn the_flag_default_backend_is_read_outside_the_watched_namespaces() {
    let mut objects = vec![our_class()];
    objects.extend(backend("system", "fallback", "10.9.0.1"));
    objects.extend(backend("system", "unnamed", "10.9.0.2"));
    objects.push(o(ingress("system", "elsewhere")
        .class("vestibule")
        .host("elsewhere.example")
        .prefix("/", svc("unnamed", 80))
        .build()));
    let options = Options {
        watch_namespaces: vec!["default".to_owned()],
        default_backend_service: Some(("system".to_owned(), "fallback".to_owned())),
        ..Options::default()
    };
    let c = compile_with(objects, &options);
    assert_eq!(
        serves(&c, "any", "/"),
        "default(flag) -> system/fallback:80 [10.9.0.1:8080]"
    );
    // Everything else in that namespace stays out of scope.
    assert_eq!(
        serves(&c, "elsewhere.example", "/"),
        "default(flag) -> system/fallback:80 [10.9.0.1:8080]"
    );
    assert_eq!(findings(&c), Vec::<String>::new());
}

#[test]
fn without_any_default_backend_unmatched_requests_are_404() {
    let c = compile_default(with(vec![
        ingress("default", "x")
            .host("x.com")
            .exact("/x", svc("web", 80)),
    ]));
    assert_eq!(serves(&c, "x.com", "/y"), "404");
    assert_eq!(serves(&c, "y.com", "/x"), "404");
}

#[test]
fn an_ingress_with_neither_rules_nor_default_backend_is_reported() {
    let c = compile_default(with(vec![ingress("default", "empty")]));
    assert_eq!(findings(&c), ["error Ingress default/empty spec"]);
}

#[test]
fn unsupported_and_snippet_annotations_are_reported_not_executed() {
    let c = compile_default(with(vec![
        ingress("default", "a")
            .annotation(
                "nginx.ingress.kubernetes.io/configuration-snippet",
                "more_set_headers \"x: y\";\nlua_code_cache off;",
            )
            .annotation("nginx.ingress.kubernetes.io/some-future-key", "1")
            .annotation("example.com/unrelated", "1")
            .host("x.com")
            .prefix("/", svc("web", 80)),
    ]));
    assert_eq!(serves(&c, "x.com", "/"), format!("a -> {WEB}"));
    assert_eq!(
        findings(&c),
        [
            "warning Ingress default/a metadata.annotations[\"nginx.ingress.kubernetes.io/configuration-snippet\"]",
            "warning Ingress default/a metadata.annotations[\"nginx.ingress.kubernetes.io/some-future-key\"]",
        ]
    );
}
