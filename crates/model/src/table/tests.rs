//! Table-driven tests for host choice, path precedence and the default backend.

use proptest::prelude::*;

use super::*;
use crate::path::PathKind::{self, Exact, Prefix};

fn origin(name: &str) -> RouteOrigin {
    RouteOrigin {
        namespace: "default".into(),
        name: name.into(),
        field: "spec.rules[0].http.paths[0]".into(),
    }
}

fn host(h: &str) -> HostPattern {
    HostPattern::parse(h).unwrap()
}

fn rule(kind: PathKind, path: &str) -> PathRule {
    PathRule::new(kind, path).unwrap()
}

/// Builds a table where each route's backend reason is its label, so a lookup can be checked by
/// name.
fn table(routes: &[(&str, PathKind, &str, &str)], default: Option<&str>) -> RouteTable {
    let mut b = TableBuilder::new();
    for (h, kind, path, label) in routes {
        b.route(
            host(h),
            rule(*kind, path),
            Backend::Unavailable {
                reason: (*label).into(),
            },
            origin(label),
        )
        .unwrap();
    }
    if let Some(label) = default {
        b.default_backend(DefaultBackend {
            backend: Backend::Unavailable {
                reason: label.into(),
            },
            origin: None,
            policy: None,
        })
        .unwrap();
    }
    b.build()
}

fn answer(t: &RouteTable, h: &str, p: &str) -> String {
    match t.lookup(h, p).target {
        Target::Route(route) => route.origin.name.to_string(),
        Target::Default(d) => match &d.backend {
            Backend::Unavailable { reason } => format!("default:{reason}"),
            Backend::Cluster(_) => "default".into(),
        },
        Target::NotFound => "404".into(),
    }
}

fn check(t: &RouteTable, cases: &[(&str, &str, &str)]) {
    for (h, p, want) in cases {
        assert_eq!(answer(t, h, p), *want, "request {h}{p}");
    }
}

#[test]
fn longest_prefix_wins_whatever_the_insertion_order() {
    let routes = [
        ("", Prefix, "/", "root"),
        ("", Prefix, "/api", "api"),
        ("", Prefix, "/api/v1", "v1"),
    ];
    let forward = table(&routes, None);
    let mut reversed = routes;
    reversed.reverse();
    let backward = table(&reversed, None);
    let cases = [
        ("a.com", "/", "root"),
        ("a.com", "/apix", "root"),
        ("a.com", "/api", "api"),
        ("a.com", "/api/", "api"),
        ("a.com", "/api/v2", "api"),
        ("a.com", "/api/v1", "v1"),
        ("a.com", "/api/v1/", "v1"),
        ("a.com", "/api/v1/users", "v1"),
        ("a.com", "/api/v10", "api"),
    ];
    check(&forward, &cases);
    check(&backward, &cases);
}

#[test]
fn trailing_slash_rule_and_nested_rule_do_not_swap() {
    // The case matchit gets wrong: `/api/` must not capture `/api/v1/...`.
    let t = table(
        &[("", Prefix, "/api/", "api"), ("", Prefix, "/api/v1/", "v1")],
        None,
    );
    check(
        &t,
        &[
            ("x", "/api", "api"),
            ("x", "/api/", "api"),
            ("x", "/api/v1", "v1"),
            ("x", "/api/v1/x", "v1"),
            ("x", "/api/v2/x", "api"),
        ],
    );
}

#[test]
fn exact_beats_prefix_of_equal_length() {
    let t = table(
        &[("", Prefix, "/foo", "prefix"), ("", Exact, "/foo", "exact")],
        None,
    );
    check(
        &t,
        &[
            ("x", "/foo", "exact"),
            ("x", "/foo/", "prefix"),
            ("x", "/foo/bar", "prefix"),
        ],
    );
}

#[test]
fn longer_prefix_beats_shorter_exact() {
    // Exact `/foo/` is shorter than Prefix `/foo/bar`, but only the prefix matches /foo/bar/x.
    let t = table(
        &[
            ("", Exact, "/foo/bar", "exact"),
            ("", Prefix, "/foo/bar/baz", "deep"),
            ("", Prefix, "/foo", "shallow"),
        ],
        None,
    );
    check(
        &t,
        &[
            ("x", "/foo/bar", "exact"),
            ("x", "/foo/bar/", "shallow"),
            ("x", "/foo/bar/baz/q", "deep"),
        ],
    );
}

#[test]
fn exact_is_case_sensitive_and_slash_sensitive() {
    let t = table(
        &[("", Exact, "/foo", "foo"), ("", Exact, "/bar/", "bar")],
        None,
    );
    check(
        &t,
        &[
            ("x", "/foo", "foo"),
            ("x", "/foo/", "404"),
            ("x", "/Foo", "404"),
            ("x", "/bar/", "bar"),
            ("x", "/bar", "404"),
        ],
    );
}

#[test]
fn prefix_matches_whole_elements_only() {
    let t = table(&[("", Prefix, "/aaa/bbb", "bbb")], None);
    check(
        &t,
        &[
            ("x", "/aaa/bbb", "bbb"),
            ("x", "/aaa/bbb/", "bbb"),
            ("x", "/aaa/bbb/ccc", "bbb"),
            ("x", "/aaa/bbbxyz", "404"),
            ("x", "/aaa/bb", "404"),
            ("x", "/aaa", "404"),
            ("x", "/AAA/bbb", "404"),
        ],
    );
}

#[test]
fn hosts_exact_then_one_label_wildcard_then_catch_all() {
    let t = table(
        &[
            ("foo.com", Prefix, "/", "exact-host"),
            ("*.foo.com", Prefix, "/", "wildcard"),
            ("bar.foo.com", Prefix, "/", "exact-sub"),
            ("", Prefix, "/", "catch-all"),
        ],
        None,
    );
    check(
        &t,
        &[
            ("foo.com", "/", "exact-host"),
            ("bar.foo.com", "/", "exact-sub"),
            ("baz.foo.com", "/", "wildcard"),
            ("baz.bar.foo.com", "/", "catch-all"),
            ("other.com", "/", "catch-all"),
            ("", "/", "catch-all"),
        ],
    );
}

#[test]
fn no_fall_through_from_a_matched_host_to_the_catch_all() {
    let t = table(
        &[
            ("foo.com", Prefix, "/app", "foo-app"),
            ("", Prefix, "/", "catch-all"),
        ],
        Some("d"),
    );
    check(
        &t,
        &[
            ("foo.com", "/app", "foo-app"),
            // foo.com has a virtual host, so its unmatched paths go to the default backend,
            // not to the catch-all host's `/`.
            ("foo.com", "/other", "default:d"),
            ("bar.com", "/other", "catch-all"),
        ],
    );
}

#[test]
fn default_backend_serves_unmatched_requests_on_any_host() {
    let t = table(&[("foo.com", Exact, "/x", "x")], Some("d"));
    check(
        &t,
        &[
            ("foo.com", "/x", "x"),
            ("foo.com", "/y", "default:d"),
            ("unknown.org", "/", "default:d"),
        ],
    );
    let without = table(&[("foo.com", Exact, "/x", "x")], None);
    check(&without, &[("unknown.org", "/", "404")]);
}

#[test]
fn first_default_backend_stays() {
    let mut b = TableBuilder::new();
    let first = DefaultBackend {
        backend: Backend::Unavailable {
            reason: "first".into(),
        },
        origin: Some(origin("first")),
        policy: None,
    };
    let second = DefaultBackend {
        origin: Some(origin("second")),
        ..first.clone()
    };
    assert!(b.default_backend(first.clone()).is_ok());
    assert_eq!(b.default_backend(second), Err(first));
}

#[test]
fn same_host_path_and_kind_conflict_first_wins() {
    let mut b = TableBuilder::new();
    let backend = Backend::Unavailable { reason: "".into() };
    b.route(
        host("a.com"),
        rule(Prefix, "/x"),
        backend.clone(),
        origin("old"),
    )
    .unwrap();
    let err = b
        .route(
            host("a.com"),
            rule(Prefix, "/x/"),
            backend.clone(),
            origin("new"),
        )
        .unwrap_err();
    assert_eq!(err.existing.name.as_ref(), "old");
    // Another kind or another host is not a conflict.
    b.route(
        host("a.com"),
        rule(Exact, "/x"),
        backend.clone(),
        origin("exact"),
    )
    .unwrap();
    b.route(host("b.com"), rule(Prefix, "/x"), backend, origin("b"))
        .unwrap();
    let t = b.build();
    check(&t, &[("a.com", "/x/y", "old"), ("a.com", "/x", "exact")]);
}

#[test]
fn clusters_are_shared_by_key_and_endpoints_sorted() {
    use crate::cluster::{EndpointAddress, UpstreamProtocol};
    let key = ClusterKey {
        namespace: "ns".into(),
        service: "svc".into(),
        port: 80,
        cluster_ip: false,
    };
    let ep = |s: &str| Endpoint {
        address: EndpointAddress::Socket(s.parse().unwrap()),
    };
    let mut b = TableBuilder::new();
    let a = b.cluster_with(key.clone(), || {
        (
            UpstreamProtocol::Http1,
            vec![ep("10.0.0.2:80"), ep("10.0.0.1:80"), ep("10.0.0.2:80")],
        )
    });
    let again = b.cluster_with(key, || unreachable!("the cluster exists already"));
    assert_eq!(a, again);
    let t = b.build();
    assert_eq!(
        t.cluster(a).endpoints,
        vec![ep("10.0.0.1:80"), ep("10.0.0.2:80")]
    );
}

fn arb_path(elements: &'static [&'static str]) -> impl Strategy<Value = (String, bool)> {
    let element = prop::sample::select(elements).prop_map(String::from);
    (prop::collection::vec(element, 0..4), any::<bool>()).prop_map(|(els, slash)| {
        let mut p = format!("/{}", els.join("/"));
        if slash && p.len() > 1 {
            p.push('/');
        }
        (p, slash)
    })
}

const RULE_ELEMENTS: &[&str] = &["a", "b", "ab", "A", "api", "v1"];
// Requests may also carry elements that no rule can hold (an encoded slash) and empty ones.
const REQUEST_ELEMENTS: &[&str] = &["a", "b", "ab", "A", "api", "v1", "x%2Fy", ""];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// The router answers exactly what "the highest-ranked rule that matches,
    /// per the one-rule definition" answers.
    #[test]
    fn router_agrees_with_the_definition(
        rules in prop::collection::vec((arb_path(RULE_ELEMENTS), any::<bool>()), 1..12),
        requests in prop::collection::vec(arb_path(REQUEST_ELEMENTS), 1..20),
    ) {
        let mut b = TableBuilder::new();
        let mut accepted: Vec<(PathRule, String)> = Vec::new();
        for (i, ((path, _), exact)) in rules.iter().enumerate() {
            let kind = if *exact { Exact } else { Prefix };
            let r = rule(kind, path);
            let label = format!("r{i}");
            let backend = Backend::Unavailable { reason: "".into() };
            if b.route(HostPattern::Any, r.clone(), backend, origin(&label)).is_ok() {
                accepted.push((r, label));
            }
        }
        let t = b.build();
        for (request, _) in &requests {
            let want = accepted
                .iter()
                .filter(|(r, _)| r.matches(request))
                .max_by_key(|(r, _)| r.rank())
                .map_or("404".to_string(), |(_, label)| label.clone());
            prop_assert_eq!(answer(&t, "h", request), want, "request {}", request);
        }
    }
}

#[test]
fn a_regex_host_matches_its_paths_in_order_and_plain_hosts_are_untouched() {
    use PathKind::Regex;
    let t = table(
        &[
            ("a.example", Regex, "/api", "short"),
            ("a.example", Regex, "/api/v[0-9]+", "versioned"),
            ("a.example", Regex, "/", "root"),
            ("b.example", Exact, "/api", "plain"),
        ],
        Some("fallback"),
    );
    assert_eq!(answer(&t, "a.example", "/API/v2/x"), "versioned");
    assert_eq!(answer(&t, "a.example", "/apix"), "short");
    assert_eq!(answer(&t, "a.example", "/z"), "root");
    assert_eq!(answer(&t, "b.example", "/api"), "plain");
    assert_eq!(answer(&t, "b.example", "/API"), "default:fallback");
}

#[test]
fn a_regex_rule_conflicts_only_with_the_same_regex() {
    let mut b = TableBuilder::new();
    let unavailable = || Backend::Unavailable { reason: "x".into() };
    let regex = PathRule::regex("/a.*").unwrap();
    b.route(
        host("a.example"),
        regex.clone(),
        unavailable(),
        origin("one"),
    )
    .unwrap();
    let again = b.route(host("a.example"), regex, unavailable(), origin("two"));
    assert_eq!(again.err().map(|c| c.existing.name), Some("one".into()));
    b.route(
        host("a.example"),
        rule(Exact, "/a.*"),
        unavailable(),
        origin("three"),
    )
    .unwrap();
}

#[test]
fn an_alias_reaches_the_same_routes_and_server_rules_answer_without_routes() {
    let mut b = TableBuilder::new();
    b.route(
        host("a.example"),
        rule(Prefix, "/"),
        Backend::Unavailable { reason: "a".into() },
        origin("a"),
    )
    .unwrap();
    assert!(b.alias(host("alias.example"), &host("a.example")));
    assert!(
        !b.alias(host("a.example"), &host("a.example")),
        "a host is not an alias"
    );
    assert!(
        !b.alias(host("alias.example"), &host("a.example")),
        "claimed once"
    );
    assert!(!b.alias(host("x.example"), &host("missing.example")));
    b.server_rules(
        &host("www.a.example"),
        ServerRules {
            app_root: None,
            redirect_host: Some("a.example".into()),
        },
    );
    let t = b.build();
    assert_eq!(answer(&t, "alias.example", "/x"), "a");
    let vhost = t
        .lookup("alias.example", "/")
        .vhost
        .map(|v| v.host.to_string());
    assert_eq!(vhost.as_deref(), Some("a.example"));
    let www = t.lookup("www.a.example", "/x");
    assert_eq!(www.target, Target::NotFound);
    let server = www.vhost.and_then(|v| v.server.as_deref());
    assert_eq!(
        server.and_then(|s| s.redirect_host.as_deref()),
        Some("a.example")
    );
}

#[test]
fn passthrough_is_found_by_server_name_exact_then_wildcard_and_first_holder_stays() {
    let mut b = TableBuilder::new();
    let unavailable = |label: &str| Backend::Unavailable {
        reason: label.into(),
    };
    let argo = b
        .route(
            host("argo.example"),
            rule(Prefix, "/"),
            unavailable("argo"),
            origin("argo"),
        )
        .unwrap();
    let other = b
        .route(
            host("argo.example"),
            rule(Prefix, "/api"),
            unavailable("api"),
            origin("api"),
        )
        .unwrap();
    let wild = b
        .route(
            host("*.pass.example"),
            rule(Prefix, "/"),
            unavailable("wild"),
            origin("wild"),
        )
        .unwrap();
    b.route(
        host("web.example"),
        rule(Prefix, "/"),
        unavailable("web"),
        origin("web"),
    )
    .unwrap();
    let plain = TableBuilder::new().build();
    assert!(!plain.has_passthrough());
    b.passthrough(&host("argo.example"), argo).unwrap();
    assert_eq!(b.passthrough(&host("argo.example"), other), Err(argo));
    b.passthrough(&host("*.pass.example"), wild).unwrap();
    let t = b.build();
    assert!(t.has_passthrough());
    let name = |server_name: Option<&str>| {
        t.passthrough(server_name)
            .map(|route| route.origin.name.to_string())
    };
    assert_eq!(name(Some("argo.example")).as_deref(), Some("argo"));
    assert_eq!(name(Some("ARGO.example.")).as_deref(), Some("argo"));
    assert_eq!(name(Some("a.pass.example")).as_deref(), Some("wild"));
    assert_eq!(name(Some("a.b.pass.example")), None);
    assert_eq!(name(Some("web.example")), None);
    assert_eq!(name(Some("unknown.example")), None);
    assert_eq!(name(None), None);
}
