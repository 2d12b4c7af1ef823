//! Proxy policy: the controller-wide defaults in `Options`, each `nginx.ingress.kubernetes.io/`
//! proxy annotation's valid forms and the diagnostic for each invalid one, per-Ingress
//! policies, and the upstream protocol from a Service port's `appProtocol`.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use vestibule_model::{
    AffinityMode, Backend, BackendProtocol, Balance, CookieAffinity, HashKey, HashPart,
    NextUpstream, ProxyPolicy, SameSite, Target, UpstreamProtocol, UpstreamTls,
};
use vestibule_testkit::{certs, endpoint_slice, ingress, service, svc};
use vestibule_translate::{Compiled, Object, Options, Severity};

const PREFIX: &str = "nginx.ingress.kubernetes.io/";

fn field(short: &str) -> String {
    format!("metadata.annotations[{:?}]", format!("{PREFIX}{short}"))
}

/// Ingress `default/a` routing `x.com/` to Service `web`, with these annotations (short keys).
fn compile_annotated(
    annotations: &[(&str, &str)],
    extra: Vec<Object>,
    options: &Options,
) -> Compiled {
    let mut builder = ingress("default", "a").class("vestibule");
    for (short, value) in annotations {
        builder = builder.annotation(&format!("{PREFIX}{short}"), value);
    }
    let mut objects = vec![our_class()];
    objects.extend(backend("default", "web", "10.0.0.1"));
    objects.extend(extra);
    objects.push(o(builder.host("x.com").prefix("/", svc("web", 80)).build()));
    compile_with(objects, options)
}

fn annotated(annotations: &[(&str, &str)]) -> Compiled {
    compile_annotated(annotations, vec![], &Options::default())
}

fn proxy_at(c: &Compiled, host: &str, path: &str) -> Arc<ProxyPolicy> {
    match c.table.lookup(host, path).target {
        Target::Route(route) => route.policy.proxy.clone(),
        other => panic!("{host}{path} matched no route: {other:?}"),
    }
}

fn proxy(c: &Compiled) -> Arc<ProxyPolicy> {
    proxy_at(c, "x.com", "/")
}

/// The policy for one valid annotation, which must give no diagnostic.
fn valid(short: &str, value: &str) -> Arc<ProxyPolicy> {
    let c = annotated(&[(short, value)]);
    assert_eq!(findings(&c), Vec::<String>::new(), "{short}: {value:?}");
    proxy(&c)
}

/// One invalid annotation: exactly one error at its field, naming the value and saying the
/// default applies; returns the message and the policy.
fn invalid(short: &str, value: &str) -> (String, Arc<ProxyPolicy>) {
    let c = annotated(&[(short, value)]);
    let d = &c.report.diagnostics;
    assert_eq!(d.len(), 1, "{short}: {value:?}: {d:#?}");
    assert_eq!(d[0].severity, Severity::Error, "{short}: {value:?}");
    assert_eq!(d[0].field, field(short));
    assert_eq!(d[0].object.to_string(), "default/a");
    assert!(
        d[0].message.contains(&format!("{value:?}")),
        "names the value: {}",
        d[0].message
    );
    (d[0].message.clone(), proxy(&c))
}

/// An invalid value whose default is the controller-wide one.
fn invalid_default_applies(short: &str, value: &str) {
    let (message, policy) = invalid(short, value);
    assert!(
        message.contains("the default applies"),
        "{short}: {value:?}: {message}"
    );
    assert_eq!(*policy, ProxyPolicy::default(), "{short}: {value:?}");
}

fn warnings_at(c: &Compiled) -> Vec<String> {
    c.report
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.field.clone())
        .collect()
}

#[test]
fn without_annotations_routes_get_the_options_policy_in_one_shared_allocation() {
    let mut objects = vec![our_class()];
    objects.extend(backend("default", "web", "10.0.0.1"));
    for (name, host) in [("a", "a.com"), ("b", "b.com")] {
        objects.push(o(ingress("default", name)
            .class("vestibule")
            // Other annotations do not make a policy of their own.
            .annotation("nginx.ingress.kubernetes.io/ssl-redirect", "false")
            .host(host)
            .prefix("/", svc("web", 80))
            .prefix("/two", svc("web", 80))
            .build()));
    }
    let c = compile_default(objects);
    assert_eq!(findings(&c), Vec::<String>::new());
    let a = proxy_at(&c, "a.com", "/");
    assert_eq!(*a, ProxyPolicy::default());
    assert!(Arc::ptr_eq(&a, &proxy_at(&c, "a.com", "/two")));
    assert!(Arc::ptr_eq(&a, &proxy_at(&c, "b.com", "/")));
}

#[test]
fn all_routes_of_an_annotated_ingress_share_its_policy() {
    let mut objects = vec![our_class()];
    objects.extend(backend("default", "web", "10.0.0.1"));
    objects.push(o(ingress("default", "a")
        .class("vestibule")
        .annotation("nginx.ingress.kubernetes.io/proxy-read-timeout", "5")
        .host("a.com")
        .prefix("/", svc("web", 80))
        .exact("/x", svc("web", 80))
        .host("b.com")
        .prefix("/", svc("web", 80))
        .build()));
    let c = compile_default(objects);
    let first = proxy_at(&c, "a.com", "/");
    assert_eq!(first.read_timeout, Duration::from_secs(5));
    assert!(Arc::ptr_eq(&first, &proxy_at(&c, "a.com", "/x")));
    assert!(Arc::ptr_eq(&first, &proxy_at(&c, "b.com", "/")));
}

#[test]
fn options_defaults_apply_and_each_ingress_overrides_only_what_it_names() {
    let options = Options {
        proxy: ProxyPolicy {
            read_timeout: Duration::from_secs(120),
            body_size_limit: None,
            balance: Balance::Ewma,
            ..ProxyPolicy::default()
        },
        ..Options::default()
    };
    let mut objects = vec![our_class()];
    objects.extend(backend("default", "web", "10.0.0.1"));
    objects.push(o(ingress("default", "plain")
        .class("vestibule")
        .host("plain.com")
        .prefix("/", svc("web", 80))
        .build()));
    objects.push(o(ingress("default", "tuned")
        .class("vestibule")
        .annotation("nginx.ingress.kubernetes.io/proxy-read-timeout", "30")
        .annotation("nginx.ingress.kubernetes.io/proxy-body-size", "8m")
        .host("tuned.com")
        .prefix("/", svc("web", 80))
        .build()));
    // An invalid value falls back to the Options' value, not ingress-nginx's.
    objects.push(o(ingress("default", "broken")
        .class("vestibule")
        .annotation("nginx.ingress.kubernetes.io/proxy-read-timeout", "soon")
        .host("broken.com")
        .prefix("/", svc("web", 80))
        .build()));
    let c = compile_with(objects, &options);
    assert_eq!(
        findings(&c),
        [format!(
            "error Ingress default/broken {}",
            field("proxy-read-timeout")
        )]
    );
    assert!(c.report.diagnostics[0].message.contains("(120s)"));
    assert_eq!(*proxy_at(&c, "plain.com", "/"), options.proxy);
    assert_eq!(*proxy_at(&c, "broken.com", "/"), options.proxy);
    assert_eq!(
        *proxy_at(&c, "tuned.com", "/"),
        ProxyPolicy {
            read_timeout: Duration::from_secs(30),
            body_size_limit: Some(8 << 20),
            ..options.proxy.clone()
        }
    );
}

#[test]
fn two_ingresses_on_one_service_keep_their_own_policies() {
    let mut objects = vec![our_class()];
    objects.extend(backend("default", "web", "10.0.0.1"));
    objects.push(o(ingress("default", "slow")
        .class("vestibule")
        .annotation("nginx.ingress.kubernetes.io/proxy-read-timeout", "300")
        .annotation("nginx.ingress.kubernetes.io/affinity", "cookie")
        .host("x.com")
        .prefix("/reports", svc("web", 80))
        .build()));
    objects.push(o(ingress("default", "fast")
        .class("vestibule")
        .annotation("nginx.ingress.kubernetes.io/proxy-read-timeout", "2")
        .annotation("nginx.ingress.kubernetes.io/load-balance", "ewma")
        .host("x.com")
        .prefix("/api", svc("web", 80))
        .build()));
    let c = compile_default(objects);
    assert_eq!(findings(&c), Vec::<String>::new());
    let slow = proxy_at(&c, "x.com", "/reports");
    let fast = proxy_at(&c, "x.com", "/api");
    assert_eq!(slow.read_timeout, Duration::from_secs(300));
    assert_eq!(slow.affinity.as_deref(), Some(&CookieAffinity::default()));
    assert_eq!(slow.balance, Balance::RoundRobin);
    assert_eq!(fast.read_timeout, Duration::from_secs(2));
    assert_eq!(fast.affinity, None);
    assert_eq!(fast.balance, Balance::Ewma);
    // One cluster serves both.
    assert_eq!(c.table.clusters().len(), 1);
}

#[test]
fn timeouts_take_seconds_or_nginx_time_units() {
    let s = Duration::from_secs;
    for (value, want) in [
        ("30", s(30)),
        ("500ms", Duration::from_millis(500)),
        ("30s", s(30)),
        ("2m", s(120)),
        ("1h", s(3600)),
        ("1m30s", s(90)),
    ] {
        assert_eq!(valid("proxy-connect-timeout", value).connect_timeout, want);
        assert_eq!(valid("proxy-send-timeout", value).send_timeout, want);
        assert_eq!(valid("proxy-read-timeout", value).read_timeout, want);
    }
}

#[test]
fn invalid_timeouts_are_errors_and_the_default_applies() {
    for short in [
        "proxy-connect-timeout",
        "proxy-send-timeout",
        "proxy-read-timeout",
    ] {
        for value in ["0", "0s", "-1", "1.5", "abc", "", "30 s", "10y"] {
            invalid_default_applies(short, value);
        }
    }
}

#[test]
fn next_upstream_conditions() {
    let default = NextUpstream::default();
    assert_eq!(
        valid("proxy-next-upstream", "error timeout").next_upstream,
        default
    );
    assert_eq!(
        valid("proxy-next-upstream", "off").next_upstream,
        NextUpstream::off()
    );
    assert_eq!(
        valid("proxy-next-upstream", "invalid_header").next_upstream,
        NextUpstream {
            error: true,
            ..NextUpstream::off()
        }
    );
    assert_eq!(
        valid(
            "proxy-next-upstream",
            "http_500 http_502  http_503 http_504 http_403 http_404 http_429 non_idempotent"
        )
        .next_upstream,
        NextUpstream {
            http_500: true,
            http_502: true,
            http_503: true,
            http_504: true,
            http_403: true,
            http_404: true,
            http_429: true,
            non_idempotent: true,
            ..NextUpstream::off()
        }
    );
    for value in ["error bogus", "off error", "", "Error", "http_501"] {
        invalid_default_applies("proxy-next-upstream", value);
    }
    let (message, _) = invalid("proxy-next-upstream", "error bogus");
    assert!(message.contains("\"bogus\""), "{message}");
    assert!(message.contains("(error timeout)"), "{message}");
}

#[test]
fn next_upstream_tries_and_timeout() {
    assert_eq!(
        valid("proxy-next-upstream-tries", "0").next_upstream_tries,
        0
    );
    assert_eq!(
        valid("proxy-next-upstream-tries", "5").next_upstream_tries,
        5
    );
    for value in ["-1", "x", "1.5", "+2", ""] {
        invalid_default_applies("proxy-next-upstream-tries", value);
    }
    let timeout = |v| valid("proxy-next-upstream-timeout", v).next_upstream_timeout;
    assert_eq!(timeout("0"), None);
    assert_eq!(timeout("10"), Some(Duration::from_secs(10)));
    assert_eq!(timeout("1m"), Some(Duration::from_secs(60)));
    for value in ["-1", "x", "1.5"] {
        invalid_default_applies("proxy-next-upstream-timeout", value);
    }
}

#[test]
fn body_size_uses_nginx_sizes_and_zero_means_no_limit() {
    for (value, want) in [
        ("0", None),
        ("100", Some(100)),
        ("8k", Some(8 << 10)),
        ("8K", Some(8 << 10)),
        ("1m", Some(1 << 20)),
        ("1M", Some(1 << 20)),
        ("1g", Some(1 << 30)),
        ("1G", Some(1 << 30)),
    ] {
        assert_eq!(
            valid("proxy-body-size", value).body_size_limit,
            want,
            "{value}"
        );
    }
    for value in ["1t", "-1", "abc", "1.5m", "10mb", ""] {
        invalid_default_applies("proxy-body-size", value);
    }
}

#[test]
fn load_balance_algorithms() {
    assert_eq!(
        valid("load-balance", "round_robin").balance,
        Balance::RoundRobin
    );
    assert_eq!(valid("load-balance", "ewma").balance, Balance::Ewma);
    for value in ["least_conn", "EWMA", "chash", ""] {
        invalid_default_applies("load-balance", value);
    }
}

fn hash(parts: Vec<HashPart>, subset_size: Option<u32>) -> Balance {
    Balance::Hash(HashKey { parts, subset_size })
}

#[test]
fn upstream_hash_by_templates() {
    for (value, parts) in [
        ("$request_uri", vec![HashPart::RequestUri]),
        ("$remote_addr", vec![HashPart::RemoteAddr]),
        ("$uri$host", vec![HashPart::Uri, HashPart::Host]),
        (
            "$http_x_user_ID",
            vec![HashPart::Header("x-user-id".into())],
        ),
        ("$cookie_session", vec![HashPart::Cookie("session".into())]),
        ("$arg_tenant", vec![HashPart::Arg("tenant".into())]),
        (
            "u-${remote_addr}:$arg_id",
            vec![
                HashPart::Literal("u-".into()),
                HashPart::RemoteAddr,
                HashPart::Literal(":".into()),
                HashPart::Arg("id".into()),
            ],
        ),
    ] {
        assert_eq!(
            valid("upstream-hash-by", value).balance,
            hash(parts, None),
            "{value}"
        );
    }
}

#[test]
fn upstream_hash_by_overrides_load_balance_and_takes_subsets() {
    let c = annotated(&[
        ("load-balance", "ewma"),
        ("upstream-hash-by", "$request_uri"),
    ]);
    assert_eq!(findings(&c), Vec::<String>::new());
    assert_eq!(proxy(&c).balance, hash(vec![HashPart::RequestUri], None));

    let c = annotated(&[
        ("upstream-hash-by", "$request_uri"),
        ("upstream-hash-by-subset", "true"),
    ]);
    assert_eq!(findings(&c), Vec::<String>::new());
    assert_eq!(proxy(&c).balance, hash(vec![HashPart::RequestUri], Some(3)));

    let c = annotated(&[
        ("upstream-hash-by", "$request_uri"),
        ("upstream-hash-by-subset", "true"),
        ("upstream-hash-by-subset-size", "5"),
    ]);
    assert_eq!(findings(&c), Vec::<String>::new());
    assert_eq!(proxy(&c).balance, hash(vec![HashPart::RequestUri], Some(5)));

    let c = annotated(&[
        ("upstream-hash-by", "$request_uri"),
        ("upstream-hash-by-subset", "false"),
    ]);
    assert_eq!(findings(&c), Vec::<String>::new());
    assert_eq!(proxy(&c).balance, hash(vec![HashPart::RequestUri], None));
}

#[test]
fn invalid_upstream_hash_by_is_ignored_with_an_error() {
    for value in ["$scheme", "$", "${uri", "$request", "$http_", ""] {
        let (message, policy) = invalid("upstream-hash-by", value);
        assert!(message.contains("ignored"), "{message}");
        assert_eq!(policy.balance, Balance::RoundRobin, "{value}");
    }
    // load-balance still applies when the hash key is ignored.
    let c = annotated(&[("load-balance", "ewma"), ("upstream-hash-by", "$nope")]);
    assert_eq!(
        findings(&c),
        [format!(
            "error Ingress default/a {}",
            field("upstream-hash-by")
        )]
    );
    assert_eq!(proxy(&c).balance, Balance::Ewma);
    // Subsets: a bad size keeps 3; bad flags are errors.
    let c = annotated(&[
        ("upstream-hash-by", "$uri"),
        ("upstream-hash-by-subset", "true"),
        ("upstream-hash-by-subset-size", "0"),
    ]);
    assert_eq!(
        findings(&c),
        [format!(
            "error Ingress default/a {}",
            field("upstream-hash-by-subset-size")
        )]
    );
    assert_eq!(proxy(&c).balance, hash(vec![HashPart::Uri], Some(3)));
    let c = annotated(&[
        ("upstream-hash-by", "$uri"),
        ("upstream-hash-by-subset", "yes"),
    ]);
    assert_eq!(
        findings(&c),
        [format!(
            "error Ingress default/a {}",
            field("upstream-hash-by-subset")
        )]
    );
    assert_eq!(proxy(&c).balance, hash(vec![HashPart::Uri], None));
}

#[test]
fn hash_annotations_that_do_nothing_are_warnings() {
    let c = annotated(&[
        ("upstream-hash-by-subset", "true"),
        ("upstream-hash-by-subset-size", "4"),
    ]);
    assert_eq!(
        warnings_at(&c),
        [
            field("upstream-hash-by-subset"),
            field("upstream-hash-by-subset-size")
        ]
    );
    assert_eq!(*proxy(&c), ProxyPolicy::default());
    let c = annotated(&[
        ("upstream-hash-by", "$uri"),
        ("upstream-hash-by-subset-size", "4"),
    ]);
    assert_eq!(warnings_at(&c), [field("upstream-hash-by-subset-size")]);
    // A key without variables is allowed, but sends everything to one endpoint.
    let c = annotated(&[("upstream-hash-by", "constant")]);
    assert_eq!(warnings_at(&c), [field("upstream-hash-by")]);
    assert_eq!(
        proxy(&c).balance,
        hash(vec![HashPart::Literal("constant".into())], None)
    );
}

#[test]
fn cookie_affinity_with_every_setting() {
    let c = annotated(&[
        ("affinity", "cookie"),
        ("affinity-mode", "persistent"),
        ("session-cookie-name", "route"),
        ("session-cookie-max-age", "3600"),
        ("session-cookie-expires", "60"),
        ("session-cookie-path", "/app"),
        ("session-cookie-secure", "true"),
        ("session-cookie-samesite", "strict"),
        ("session-cookie-change-on-failure", "false"),
    ]);
    assert_eq!(findings(&c), Vec::<String>::new());
    assert_eq!(
        proxy(&c).affinity.as_deref(),
        Some(&CookieAffinity {
            name: "route".into(),
            max_age: Some(3600),
            path: Some("/app".into()),
            secure: true,
            same_site: Some(SameSite::Strict),
            mode: AffinityMode::Persistent,
            change_on_failure: false,
        })
    );
}

#[test]
fn cookie_affinity_defaults_and_variants() {
    let affinity = |extra: &[(&str, &str)]| {
        let mut all = vec![("affinity", "cookie")];
        all.extend_from_slice(extra);
        let c = annotated(&all);
        assert_eq!(findings(&c), Vec::<String>::new(), "{extra:?}");
        proxy(&c).affinity.as_deref().cloned().unwrap()
    };
    let defaults = affinity(&[]);
    assert_eq!(defaults.name.as_ref(), "INGRESSCOOKIE");
    assert_eq!(defaults.mode, AffinityMode::Balanced);
    assert!(defaults.change_on_failure);
    assert_eq!(defaults.max_age, None);
    assert_eq!(defaults.path, None);
    assert!(!defaults.secure);
    assert_eq!(defaults.same_site, None);
    // Expires is the lifetime when max-age is absent.
    assert_eq!(
        affinity(&[("session-cookie-expires", "172800")]).max_age,
        Some(172800)
    );
    assert_eq!(
        affinity(&[("affinity-mode", "balanced")]).mode,
        AffinityMode::Balanced
    );
    for (value, want) in [
        ("Strict", SameSite::Strict),
        ("LAX", SameSite::Lax),
        ("lax", SameSite::Lax),
        ("None", SameSite::None),
    ] {
        assert_eq!(
            affinity(&[("session-cookie-samesite", value)]).same_site,
            Some(want)
        );
    }
}

#[test]
fn invalid_affinity_settings_are_errors_and_the_default_applies() {
    let (message, policy) = invalid("affinity", "ip");
    assert!(message.contains("the default applies"), "{message}");
    assert_eq!(policy.affinity, None);
    for (short, value) in [
        ("affinity-mode", "sticky"),
        ("session-cookie-name", "bad name"),
        ("session-cookie-name", "a=b"),
        ("session-cookie-name", ""),
        ("session-cookie-max-age", "-1"),
        ("session-cookie-max-age", "0"),
        ("session-cookie-max-age", "1h"),
        ("session-cookie-expires", "tomorrow"),
        ("session-cookie-path", "app"),
        ("session-cookie-path", "/a;b"),
        ("session-cookie-secure", "yes"),
        ("session-cookie-samesite", "always"),
        ("session-cookie-change-on-failure", "maybe"),
    ] {
        let c = annotated(&[("affinity", "cookie"), (short, value)]);
        assert_eq!(
            findings(&c),
            [format!("error Ingress default/a {}", field(short))],
            "{short}: {value:?}"
        );
        let message = &c.report.diagnostics[0].message;
        assert!(message.contains(&format!("{value:?}")), "{message}");
        assert!(message.contains("the default applies"), "{message}");
        assert_eq!(
            proxy(&c).affinity.as_deref(),
            Some(&CookieAffinity::default()),
            "{short}: {value:?}"
        );
    }
    // An invalid max-age leaves expires to set the lifetime.
    let c = annotated(&[
        ("affinity", "cookie"),
        ("session-cookie-max-age", "x"),
        ("session-cookie-expires", "60"),
    ]);
    assert_eq!(findings(&c).len(), 1);
    assert_eq!(proxy(&c).affinity.as_ref().unwrap().max_age, Some(60));
}

#[test]
fn session_cookie_settings_without_affinity_are_warnings() {
    let keys = [
        ("affinity-mode", "persistent"),
        ("session-cookie-name", "route"),
        ("session-cookie-max-age", "10"),
        ("session-cookie-expires", "10"),
        ("session-cookie-path", "/"),
        ("session-cookie-secure", "true"),
        ("session-cookie-samesite", "Lax"),
        ("session-cookie-change-on-failure", "true"),
    ];
    let c = annotated(&keys);
    let mut want: Vec<String> = keys.iter().map(|(k, _)| field(k)).collect();
    want.sort();
    assert_eq!(warnings_at(&c), want);
    assert!(!c.report.has_errors());
    assert!(
        c.report.diagnostics[0]
            .message
            .contains("no effect without affinity")
    );
    assert_eq!(*proxy(&c), ProxyPolicy::default());
}

#[test]
fn backend_protocols_are_case_insensitive() {
    for (value, want) in [
        ("HTTP", BackendProtocol::Http),
        ("http", BackendProtocol::Http),
        ("HTTPS", BackendProtocol::Https),
        ("GRPC", BackendProtocol::Grpc),
        ("grpc", BackendProtocol::Grpc),
        ("GRPCS", BackendProtocol::Grpcs),
        ("H2C", BackendProtocol::H2c),
        ("h2c", BackendProtocol::H2c),
    ] {
        assert_eq!(
            valid("backend-protocol", value).backend_protocol,
            Some(want)
        );
    }
    for value in ["AJP", "fcgi"] {
        let (message, policy) = invalid("backend-protocol", value);
        assert!(message.contains("not supported"), "{message}");
        assert!(message.contains("the default applies"), "{message}");
        assert_eq!(policy.backend_protocol, None);
    }
    for value in ["AUTO_HTTP", "HTTP2", ""] {
        invalid_default_applies("backend-protocol", value);
    }
}

fn ca_secret(name: &str, ca: Option<&str>) -> Object {
    o(Secret {
        metadata: ObjectMeta {
            namespace: Some("default".to_owned()),
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: ca.map(|pem| {
            BTreeMap::from([("ca.crt".to_owned(), ByteString(pem.as_bytes().to_vec()))])
        }),
        ..Secret::default()
    })
}

fn tls_of(c: &Compiled) -> UpstreamTls {
    proxy(c).upstream_tls.as_deref().cloned().unwrap()
}

#[test]
fn upstream_tls_verifies_against_the_secret_ca() {
    let one = certs::cert(&["ca-one.example"]);
    let two = certs::cert(&["ca-two.example"]);
    let bundle = format!("{}{}", one.cert_pem, two.cert_pem);
    let c = compile_annotated(
        &[
            ("proxy-ssl-verify", "on"),
            ("proxy-ssl-secret", "default/upstream-ca"),
            ("proxy-ssl-name", "API.internal.example"),
            ("proxy-ssl-server-name", "on"),
        ],
        vec![ca_secret("upstream-ca", Some(&bundle))],
        &Options::default(),
    );
    assert_eq!(findings(&c), Vec::<String>::new());
    assert_eq!(
        tls_of(&c),
        UpstreamTls {
            verify: true,
            ca: vec![one.der.clone(), two.der.clone()],
            server_name: Some("api.internal.example".into()),
            send_sni: true,
        }
    );
    // Only a name: verification stays off, as in ingress-nginx.
    let c = annotated(&[("proxy-ssl-name", "api.example")]);
    assert_eq!(findings(&c), Vec::<String>::new());
    assert_eq!(
        tls_of(&c),
        UpstreamTls {
            server_name: Some("api.example".into()),
            ..UpstreamTls::default()
        }
    );
    let c = annotated(&[
        ("proxy-ssl-verify", "off"),
        ("proxy-ssl-server-name", "off"),
    ]);
    assert_eq!(findings(&c), Vec::<String>::new());
    assert_eq!(tls_of(&c), UpstreamTls::default());
}

#[test]
fn upstream_tls_fails_closed_when_the_ca_cannot_be_had() {
    let garbage =
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    let key_only = certs::cert(&["x.example"]).key_pem;
    for (secret, objects, says) in [
        ("default/missing", vec![], "does not exist"),
        (
            "default/no-ca",
            vec![ca_secret("no-ca", None)],
            "has no ca.crt",
        ),
        (
            "default/empty",
            vec![ca_secret("empty", Some(""))],
            "has no ca.crt",
        ),
        (
            "default/key-only",
            vec![ca_secret("key-only", Some(&key_only))],
            "holds no certificate",
        ),
        (
            "default/garbage",
            vec![ca_secret("garbage", Some(garbage))],
            "cannot be read",
        ),
        ("upstream-ca", vec![], "is not namespace/name"),
        ("a/b/c", vec![], "is not namespace/name"),
    ] {
        for verify in ["on", "off"] {
            let c = compile_annotated(
                &[("proxy-ssl-verify", verify), ("proxy-ssl-secret", secret)],
                objects.clone(),
                &Options::default(),
            );
            assert_eq!(
                findings(&c),
                [format!(
                    "error Ingress default/a {}",
                    field("proxy-ssl-secret")
                )],
                "{secret}"
            );
            let message = &c.report.diagnostics[0].message;
            assert!(message.contains(says), "{secret}: {message}");
            assert!(message.contains("trusts nothing"), "{message}");
            let tls = tls_of(&c);
            assert!(tls.verify, "{secret} with verify {verify}");
            assert!(tls.ca.is_empty());
        }
    }
}

#[test]
fn verify_without_a_secret_is_an_error_and_trusts_nothing() {
    let c = annotated(&[("proxy-ssl-verify", "on")]);
    assert_eq!(
        findings(&c),
        [format!(
            "error Ingress default/a {}",
            field("proxy-ssl-verify")
        )]
    );
    assert!(c.report.diagnostics[0].message.contains("proxy-ssl-secret"));
    let tls = tls_of(&c);
    assert!(tls.verify);
    assert!(tls.ca.is_empty());
}

#[test]
fn invalid_upstream_tls_flags_are_errors_and_the_default_applies() {
    for (short, value) in [
        ("proxy-ssl-verify", "true"),
        ("proxy-ssl-verify", "ON"),
        ("proxy-ssl-server-name", "yes"),
        ("proxy-ssl-name", "not a name"),
        ("proxy-ssl-name", "$host"),
        ("proxy-ssl-name", ""),
    ] {
        let (message, policy) = invalid(short, value);
        assert!(message.contains("the default applies"), "{message}");
        assert_eq!(
            policy.upstream_tls.as_deref(),
            Some(&UpstreamTls::default()),
            "{short}: {value:?}"
        );
    }
}

#[test]
fn other_annotations_keep_their_warnings_and_buffering_keys_are_noted() {
    let c = annotated(&[
        ("mirror-target", "https://mirror.example$request_uri"),
        ("server-snippet", "rewrite ^ /x;"),
        ("proxy-buffering", "on"),
        ("proxy-read-timeout", "10"),
    ]);
    assert_eq!(
        findings(&c),
        [
            format!("warning Ingress default/a {}", field("mirror-target")),
            format!("info Ingress default/a {}", field("proxy-buffering")),
            format!("warning Ingress default/a {}", field("server-snippet")),
        ]
    );
    assert_eq!(proxy(&c).read_timeout, Duration::from_secs(10));
}

#[test]
fn app_protocol_sets_the_cluster_protocol() {
    let cases = [
        (None, UpstreamProtocol::Http1),
        (Some("http"), UpstreamProtocol::Http1),
        (Some("kubernetes.io/ws"), UpstreamProtocol::Http1),
        (Some("kubernetes.io/h2c"), UpstreamProtocol::H2c),
        (Some("grpc"), UpstreamProtocol::H2c),
        (Some("https"), UpstreamProtocol::Https),
        (Some("HTTPS"), UpstreamProtocol::Https),
        (Some("kubernetes.io/https"), UpstreamProtocol::Https),
        (Some("kubernetes.io/wss"), UpstreamProtocol::Https),
    ];
    let mut objects = vec![our_class()];
    let mut rules = ingress("default", "a").class("vestibule").host("x.com");
    for (i, (app, _)) in cases.iter().enumerate() {
        let name = format!("s{i}");
        let mut builder = service("default", &name).port("http", 80, 8080);
        if let Some(app) = app {
            builder = builder.app_protocol(app);
        }
        objects.push(o(builder.build()));
        objects.push(o(endpoint_slice("default", &format!("{name}-1"), &name)
            .port("http", 8080)
            .ready("10.0.0.1")
            .build()));
        rules = rules.prefix(&format!("/{name}"), svc(&name, 80));
    }
    objects.push(o(rules.build()));
    let c = compile_default(objects);
    assert_eq!(findings(&c), Vec::<String>::new());
    for (i, (app, want)) in cases.iter().enumerate() {
        let Target::Route(route) = c.table.lookup("x.com", &format!("/s{i}")).target else {
            panic!("no route /s{i}");
        };
        let Backend::Cluster(id) = route.backend else {
            panic!("no cluster for /s{i}");
        };
        assert_eq!(c.table.cluster(id).protocol, *want, "{app:?}");
    }
}

#[test]
fn an_unknown_app_protocol_is_http1_with_a_warning_on_the_service() {
    let mut objects = vec![our_class()];
    objects.push(o(service("default", "odd")
        .port("metrics", 9090, 9090)
        .port("web", 80, 8080)
        .app_protocol("example.com/custom")
        .build()));
    objects.push(o(endpoint_slice("default", "odd-1", "odd")
        .port("web", 8080)
        .ready("10.0.0.9")
        .build()));
    // Two Ingresses on the same port: the Service is reported once.
    for name in ["a", "b"] {
        objects.push(o(ingress("default", name)
            .class("vestibule")
            .host(&format!("{name}.com"))
            .prefix("/", svc("odd", 80))
            .build()));
    }
    let c = compile_default(objects);
    assert_eq!(
        findings(&c),
        ["warning Service default/odd spec.ports[1].appProtocol"]
    );
    assert!(
        c.report.diagnostics[0]
            .message
            .contains("\"example.com/custom\"")
    );
    assert_eq!(c.table.clusters()[0].protocol, UpstreamProtocol::Http1);
    assert_eq!(
        serves(&c, "a.com", "/"),
        "a -> default/odd:80 [10.0.0.9:8080]"
    );
}

#[test]
fn app_protocol_applies_to_external_name_services() {
    let mut objects = vec![our_class()];
    objects.push(o(service("default", "ext")
        .external_name("api.example.com")
        .port("https", 443, 443)
        .app_protocol("https")
        .build()));
    objects.push(o(ingress("default", "a")
        .class("vestibule")
        .host("x.com")
        .prefix("/", svc("ext", 443))
        .build()));
    let c = compile_default(objects);
    assert_eq!(findings(&c), Vec::<String>::new());
    assert_eq!(c.table.clusters()[0].protocol, UpstreamProtocol::Https);
}

#[test]
fn enable_access_log_takes_go_booleans() {
    for value in ["false", "False", "FALSE", "f", "F", "0"] {
        assert!(!valid("enable-access-log", value).access_log, "{value:?}");
    }
    for value in ["true", "True", "TRUE", "t", "T", "1"] {
        let policy = valid("enable-access-log", value);
        assert!(policy.access_log, "{value:?}");
        assert_eq!(*policy, ProxyPolicy::default(), "{value:?}");
    }
}

#[test]
fn invalid_enable_access_log_is_an_error_and_the_default_applies() {
    for value in ["off", "no", "yes", "tRuE", "", " false"] {
        invalid_default_applies("enable-access-log", value);
    }
}

#[test]
fn enable_access_log_falls_back_to_the_options_default() {
    let options = Options {
        proxy: ProxyPolicy {
            access_log: false,
            ..ProxyPolicy::default()
        },
        ..Options::default()
    };
    let c = compile_annotated(&[("enable-access-log", "nope")], vec![], &options);
    assert_eq!(
        findings(&c),
        [format!(
            "error Ingress default/a {}",
            field("enable-access-log")
        )]
    );
    assert!(c.report.diagnostics[0].message.contains("(false)"));
    assert!(!proxy(&c).access_log);
    let c = compile_annotated(&[("enable-access-log", "true")], vec![], &options);
    assert!(proxy(&c).access_log);
}

/// ingress-nginx applies the annotations of an Ingress with a backend and no rules to its
/// catch-all location; the flag's default backend has no Ingress, so the defaults.
#[test]
fn a_default_backend_is_proxied_as_its_ingress_annotations_say() {
    let defaults = Options::default();
    let mut objects = vec![our_class()];
    objects.extend(backend("default", "web", "10.0.0.1"));
    objects.push(o(ingress("default", "catch-all")
        .class("vestibule")
        .annotation(&format!("{PREFIX}proxy-read-timeout"), "7")
        .annotation(&format!("{PREFIX}backend-protocol"), "HTTPS")
        .default_backend(svc("web", 80))
        .build()));
    let c = compile_with(objects.clone(), &defaults);
    assert_eq!(findings(&c), Vec::<String>::new());
    let Target::Default(default) = c.table.lookup("any.example", "/").target else {
        panic!("no default backend");
    };
    let policy = default
        .policy
        .as_ref()
        .map(|p| &*p.proxy)
        .expect("the Ingress's policy");
    assert_eq!(policy.read_timeout, Duration::from_secs(7));
    assert_eq!(policy.backend_protocol, Some(BackendProtocol::Https));
    assert_eq!(
        policy.connect_timeout, defaults.proxy.connect_timeout,
        "what no annotation sets stays the default"
    );

    let flag = Options {
        default_backend_service: Some(("default".to_owned(), "web".to_owned())),
        ..Options::default()
    };
    let c = compile_with(objects[..objects.len() - 1].to_vec(), &flag);
    let Target::Default(default) = c.table.lookup("any.example", "/").target else {
        panic!("no default backend");
    };
    assert_eq!(default.policy, None);
}
