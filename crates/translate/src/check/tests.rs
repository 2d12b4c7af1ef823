//! The classification, on real compiles: each verdict, each difference detector, the
//! Secret and Service notes, and the ConfigMap table. The compile's messages are matched by
//! the check, so these tests also catch a message that changed under it.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use vestibule_testkit::fixtures::IngressBuilder;
use vestibule_testkit::{endpoint_slice, ingress, ingress_class, service, svc};

use super::*;
use crate::{Object, compile};

const NGINX: &str = "k8s.io/ingress-nginx";

fn nginx_options() -> Options {
    Options {
        controller_class: NGINX.to_owned(),
        ingress_class: "nginx".to_owned(),
        ..Options::default()
    }
}

/// `objects` plus the class `nginx`, the Services `web` and `api` in `shop` with endpoints.
fn world(objects: Vec<Object>) -> Snapshot {
    let mut all: Vec<Object> = vec![
        ingress_class("nginx", NGINX).build().into(),
        ingress_class("other", "example.com/other").build().into(),
    ];
    for name in ["web", "api"] {
        all.push(service("shop", name).port("http", 80, 8080).build().into());
        all.push(
            endpoint_slice("shop", &format!("{name}-1"), name)
                .port("http", 8080)
                .ready("10.0.0.1")
                .build()
                .into(),
        );
    }
    all.extend(objects);
    Snapshot::from_objects(all)
}

fn run_with(snapshot: &Snapshot, options: &Options, read_secrets: bool) -> Report {
    let compiled = compile(snapshot, options);
    let source = Source::Files {
        paths: vec!["dump.json".to_owned()],
    };
    let settings = Settings {
        source: &source,
        read_secrets,
        nginx_configmap: None,
    };
    check(snapshot, options, &compiled, &settings)
}

fn run(objects: Vec<Object>) -> Report {
    run_with(&world(objects), &nginx_options(), false)
}

fn nginx(name: &str) -> IngressBuilder {
    ingress("shop", name).class("nginx")
}

fn of<'r>(report: &'r Report, name: &str) -> &'r IngressCheck {
    report
        .ingresses
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} not checked: {report:#?}"))
}

fn codes(check: &IngressCheck) -> Vec<Code> {
    check.findings.iter().map(|f| f.code).collect()
}

fn finding(check: &IngressCheck, code: Code) -> &Finding {
    check
        .findings
        .iter()
        .find(|f| f.code == code)
        .unwrap_or_else(|| panic!("no {code:?} in {check:#?}"))
}

#[test]
fn a_plain_ingress_is_the_same_and_other_classes_are_skipped() {
    let report = run(vec![
        nginx("plain")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
        ingress("shop", "theirs")
            .class("other")
            .host("b.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
    ]);
    let plain = of(&report, "plain");
    assert_eq!(plain.verdict, Level::Same, "{plain:#?}");
    assert!(plain.findings.is_empty(), "{plain:#?}");
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].name, "theirs");
    assert_eq!(report.summary.same, 1);
    assert_eq!(report.summary.skipped, 1);
    assert_eq!(report.schema, "vestibule.dev/check/v1");
    assert!(!report.needs_action());
}

#[test]
fn another_ingress_switching_the_host_to_regex_mode_is_a_named_difference() {
    let report = run(vec![
        nginx("api")
            .created(1)
            .host("shop.example")
            .exact("/api", svc("api", 80))
            .build()
            .into(),
        nginx("rewrite")
            .created(2)
            .annotation("nginx.ingress.kubernetes.io/use-regex", "true")
            .host("shop.example")
            .implementation_specific("/v[0-9]+/", svc("web", 80))
            .build()
            .into(),
    ]);
    let api = of(&report, "api");
    assert_eq!(api.verdict, Level::Differs, "{api:#?}");
    let regex = finding(api, Code::RegexHost);
    assert!(regex.message.contains("shop/rewrite"), "{regex:#?}");
    assert!(regex.fix.is_some());
    // The Ingress that asked for regex mode gets what it asked for.
    assert_eq!(of(&report, "rewrite").verdict, Level::Same);
}

#[test]
fn a_path_ending_in_a_slash_differs_by_nginx_redirect_unless_the_bare_path_exists() {
    let report = run(vec![
        nginx("docs")
            .host("a.example")
            .prefix("/docs/", svc("web", 80))
            .exact("/exact/", svc("web", 80))
            .build()
            .into(),
        nginx("both")
            .host("b.example")
            .prefix("/app/", svc("web", 80))
            .exact("/app", svc("web", 80))
            .build()
            .into(),
        nginx("regex")
            .annotation("nginx.ingress.kubernetes.io/use-regex", "true")
            .host("c.example")
            .prefix("/static/", svc("web", 80))
            .build()
            .into(),
    ]);
    let docs = of(&report, "docs");
    let slashes: Vec<&Finding> = docs
        .findings
        .iter()
        .filter(|f| f.code == Code::TrailingSlashRedirect)
        .collect();
    assert_eq!(slashes.len(), 2, "{docs:#?}");
    assert_eq!(slashes[0].field, "spec.rules[0].http.paths[0]");
    assert!(slashes[0].message.contains("301 to /docs/"), "{slashes:#?}");
    assert!(
        slashes[0]
            .message
            .contains("sends it to this path's Service")
    );
    assert!(
        slashes[1]
            .message
            .contains("does not match it to this Exact path")
    );
    assert!(!codes(of(&report, "both")).contains(&Code::TrailingSlashRedirect));
    assert!(!codes(of(&report, "regex")).contains(&Code::TrailingSlashRedirect));
}

#[test]
fn the_https_redirect_keeps_a_trailing_slash_unless_preserve_trailing_slash_says_so_anyway() {
    let report = run(vec![
        nginx("tls")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .tls(&["a.example"], "a-tls")
            .build()
            .into(),
        nginx("preserved")
            .annotation(
                "nginx.ingress.kubernetes.io/preserve-trailing-slash",
                "true",
            )
            .host("b.example")
            .prefix("/", svc("web", 80))
            .tls(&["b.example"], "b-tls")
            .build()
            .into(),
        nginx("plain-http")
            .host("c.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
    ]);
    let tls = of(&report, "tls");
    assert_eq!(tls.verdict, Level::Differs, "{tls:#?}");
    let redirect = finding(tls, Code::HttpsRedirectSlash);
    assert!(
        redirect.message.contains("https://a.example/docs"),
        "{redirect:#?}"
    );
    // Without --read-secrets, the Secret is a note, not a problem.
    let secret = finding(tls, Code::SecretNotChecked);
    assert_eq!(secret.level, Level::Same);
    assert!(secret.message.contains("shop/a-tls"), "{secret:#?}");
    let preserved = of(&report, "preserved");
    assert_eq!(preserved.verdict, Level::Same, "{preserved:#?}");
    assert_eq!(finding(preserved, Code::Unsupported).level, Level::Same);
    assert!(!codes(of(&report, "plain-http")).contains(&Code::HttpsRedirectSlash));
}

#[test]
fn with_read_secrets_a_missing_tls_secret_needs_work() {
    let snapshot = world(vec![
        nginx("tls")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .tls(&["a.example"], "a-tls")
            .build()
            .into(),
    ]);
    let report = run_with(&snapshot, &nginx_options(), true);
    let tls = of(&report, "tls");
    assert_eq!(tls.verdict, Level::NeedsWork, "{tls:#?}");
    assert!(
        finding(tls, Code::TlsSecret)
            .message
            .contains("default certificate then too")
    );
    assert!(report.needs_action());
}

#[test]
fn cors_with_listed_origins_differs_and_with_any_origin_does_not() {
    let report = run(vec![
        nginx("listed")
            .annotation("nginx.ingress.kubernetes.io/enable-cors", "true")
            .annotation(
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "https://app.example.com",
            )
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
        nginx("any")
            .annotation("nginx.ingress.kubernetes.io/enable-cors", "true")
            .host("b.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
    ]);
    let listed = finding(of(&report, "listed"), Code::CorsOrigins);
    assert!(
        listed.message.contains("https://evil-app.example.com"),
        "{listed:#?}"
    );
    assert_eq!(of(&report, "any").verdict, Level::Same);
}

#[test]
fn buffering_keys_are_the_same_when_they_say_what_vestibule_does_else_a_no_op_difference() {
    let report = run(vec![
        nginx("off")
            .annotation("nginx.ingress.kubernetes.io/proxy-buffering", "off")
            .annotation("nginx.ingress.kubernetes.io/proxy-request-buffering", "off")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
        nginx("on")
            .annotation("nginx.ingress.kubernetes.io/proxy-request-buffering", "on")
            .host("b.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
    ]);
    let off = of(&report, "off");
    assert_eq!(off.verdict, Level::Same, "{off:#?}");
    assert_eq!(codes(off), [Code::NoOp, Code::NoOp]);
    let on = finding(of(&report, "on"), Code::NoOp);
    assert_eq!(on.level, Level::Differs);
    assert!(
        on.message.contains("reads the whole request body"),
        "{on:#?}"
    );
}

#[test]
fn an_unsupported_annotation_needs_work_and_says_what_ingress_nginx_did() {
    let report = run(vec![
        nginx("mirror")
            .annotation(
                "nginx.ingress.kubernetes.io/mirror-target",
                "https://copy.example/$request_uri",
            )
            .annotation("nginx.ingress.kubernetes.io/made-up-key", "1")
            .annotation("nginx.ingress.kubernetes.io/enable-rewrite-log", "true")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
    ]);
    let mirror = of(&report, "mirror");
    assert_eq!(mirror.verdict, Level::NeedsWork);
    let levels: BTreeMap<&str, Level> = mirror
        .findings
        .iter()
        .map(|f| (f.field.as_str(), f.level))
        .collect();
    let field = |k: &str| format!("metadata.annotations[\"nginx.ingress.kubernetes.io/{k}\"]");
    assert_eq!(levels[field("mirror-target").as_str()], Level::NeedsWork);
    assert_eq!(levels[field("made-up-key").as_str()], Level::NeedsWork);
    assert_eq!(levels[field("enable-rewrite-log").as_str()], Level::Differs);
    let target = mirror
        .findings
        .iter()
        .find(|f| f.field == field("mirror-target"))
        .unwrap();
    assert!(
        target.message.contains("copies each request"),
        "{target:#?}"
    );
}

#[test]
fn fail_closed_annotations_and_invalid_values_need_work_with_their_consequence() {
    let report = run(vec![
        nginx("digest")
            .annotation("nginx.ingress.kubernetes.io/auth-type", "digest")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
        nginx("timeout")
            .annotation("nginx.ingress.kubernetes.io/proxy-read-timeout", "soon")
            .host("b.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
        nginx("missing")
            .host("c.example")
            .prefix("/", svc("gone", 80))
            .build()
            .into(),
    ]);
    let digest = finding(of(&report, "digest"), Code::FailClosed);
    assert_eq!(digest.level, Level::NeedsWork);
    assert!(
        digest.message.contains("this Ingress's paths answer 503"),
        "{digest:#?}"
    );
    assert!(digest.fix.as_deref().unwrap().contains("auth-type: basic"));
    let timeout = finding(of(&report, "timeout"), Code::InvalidValue);
    assert!(
        timeout.message.contains("the default applies (60s)"),
        "{timeout:#?}"
    );
    let missing = finding(of(&report, "missing"), Code::BackendUnavailable);
    assert!(missing.message.contains("answer 503"), "{missing:#?}");
}

#[test]
fn a_dump_without_services_notes_them_as_not_checked() {
    let snapshot = Snapshot::from_objects([
        Object::from(ingress_class("nginx", NGINX).build()),
        nginx("web")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
    ]);
    let report = run_with(&snapshot, &nginx_options(), false);
    let web = of(&report, "web");
    assert_eq!(web.verdict, Level::Same, "{web:#?}");
    assert!(
        finding(web, Code::ServiceNotChecked)
            .message
            .contains("shop/web")
    );
}

#[test]
fn a_snippet_outside_the_safe_subset_is_refused_with_the_directive_its_line_and_a_replacement() {
    let report =
        run(vec![
        nginx("rewrite")
            .annotation(
                "nginx.ingress.kubernetes.io/configuration-snippet",
                "more_set_headers \"X-Frame-Options: DENY\";\nrewrite ^/old/(.*) /new/$1 break;\n",
            )
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
        nginx("guarded")
            .annotation(
                "nginx.ingress.kubernetes.io/server-snippet",
                "location /metrics { deny all; }",
            )
            .host("b.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
        nginx("stream")
            .annotation("nginx.ingress.kubernetes.io/auth-snippet", "\nproxy_set_header X-Team a;")
            .host("c.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
    ]);
    let rewrite = of(&report, "rewrite");
    assert_eq!(rewrite.verdict, Level::Refused, "{rewrite:#?}");
    let snippet = finding(rewrite, Code::Snippet);
    let detail = snippet.snippet.as_ref().unwrap();
    assert!(!detail.covered);
    assert_eq!(detail.line, Some(2));
    assert_eq!(detail.directive.as_deref(), Some("rewrite"));
    assert!(
        snippet.fix.as_deref().unwrap().contains("rewrite-target"),
        "{snippet:#?}"
    );
    let guarded = finding(of(&report, "guarded"), Code::Snippet);
    assert!(guarded.message.contains("answers 503"), "{guarded:#?}");
    assert_eq!(
        guarded.snippet.as_ref().unwrap().directive.as_deref(),
        Some("location")
    );
    let auth = finding(of(&report, "stream"), Code::Snippet);
    assert!(auth.message.contains("never read"), "{auth:#?}");
    assert_eq!(auth.snippet.as_ref().unwrap().line, Some(2));
    assert!(
        auth.fix
            .as_deref()
            .unwrap()
            .contains("auth-proxy-set-headers")
    );
}

#[test]
fn a_snippet_the_safe_subset_covers_is_applied_and_differs() {
    let report = run(vec![
        nginx("headers")
            .annotation(
                "nginx.ingress.kubernetes.io/server-snippet",
                "more_set_headers \"X-Frame-Options: DENY\";",
            )
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
    ]);
    let headers = of(&report, "headers");
    assert_eq!(headers.verdict, Level::Differs, "{headers:#?}");
    let applied = finding(headers, Code::SnippetApplied);
    assert!(applied.snippet.as_ref().unwrap().covered);
    assert!(
        applied
            .message
            .contains("applied as typed rules (1 directive)")
    );
    assert!(applied.message.contains("every Ingress of the host"));
}

#[test]
fn client_certificates_on_a_shared_host_need_work_on_the_ingress_that_loses_them() {
    let ca = vestibule_testkit::certs::ca("clients");
    let secret = vestibule_testkit::fixtures::ca_secret("shop", "client-ca", &ca.cert_pem);
    let snapshot = world(vec![
        nginx("checked")
            .created(1)
            .annotation(
                "nginx.ingress.kubernetes.io/auth-tls-secret",
                "shop/client-ca",
            )
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
        nginx("open")
            .created(2)
            .host("a.example")
            .prefix("/api", svc("api", 80))
            .build()
            .into(),
        secret.into(),
    ]);
    // Whether the CA was read or not: the annotations say the host checks certificates.
    for read_secrets in [true, false] {
        let report = run_with(&snapshot, &nginx_options(), read_secrets);
        let open = of(&report, "open");
        assert_eq!(open.verdict, Level::NeedsWork, "{open:#?}");
        assert!(
            finding(open, Code::ClientCertificateHost)
                .message
                .contains("shop/checked")
        );
        assert!(!codes(of(&report, "checked")).contains(&Code::ClientCertificateHost));
    }
}

#[test]
fn a_missing_auth_secret_is_a_note_without_read_secrets_and_fails_closed_with_it() {
    let objects = || {
        vec![
            nginx("basic")
                .annotation("nginx.ingress.kubernetes.io/auth-type", "basic")
                .annotation("nginx.ingress.kubernetes.io/auth-secret", "users")
                .host("a.example")
                .prefix("/", svc("web", 80))
                .build()
                .into(),
        ]
    };
    let unread = run(objects());
    let basic = of(&unread, "basic");
    assert_eq!(basic.verdict, Level::Same, "{basic:#?}");
    assert!(
        finding(basic, Code::SecretNotChecked)
            .message
            .contains("answers 503")
    );
    let read = run_with(&world(objects()), &nginx_options(), true);
    assert_eq!(
        finding(of(&read, "basic"), Code::FailClosed).level,
        Level::NeedsWork
    );
}

#[test]
fn canaries_affinity_and_rate_limits_name_their_differences() {
    let report = run(vec![
        nginx("main")
            .created(1)
            .annotation("nginx.ingress.kubernetes.io/affinity", "cookie")
            .annotation("nginx.ingress.kubernetes.io/limit-rps", "10")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
        nginx("main-canary")
            .created(2)
            .annotation("nginx.ingress.kubernetes.io/canary", "true")
            .annotation("nginx.ingress.kubernetes.io/canary-weight", "10")
            .host("a.example")
            .prefix("/", svc("api", 80))
            .build()
            .into(),
    ]);
    let main = of(&report, "main");
    assert_eq!(
        codes(main),
        [Code::RateLimitMemory, Code::AffinityCookie],
        "{main:#?}"
    );
    assert!(finding(main, Code::AffinityCookie).fix.is_some());
    let canary = finding(of(&report, "main-canary"), Code::CanaryMetrics);
    assert!(canary.message.contains("affinity cookies"), "{canary:#?}");
}

#[test]
fn the_service_port_app_protocol_is_a_difference_unless_backend_protocol_is_set() {
    let snapshot = world(vec![
        service("shop", "grpc")
            .port("grpc", 9000, 9000)
            .app_protocol("kubernetes.io/h2c")
            .build()
            .into(),
        nginx("plain")
            .host("a.example")
            .prefix("/", svc("grpc", 9000))
            .build()
            .into(),
        nginx("said")
            .annotation("nginx.ingress.kubernetes.io/backend-protocol", "GRPC")
            .host("b.example")
            .prefix("/", svc("grpc", 9000))
            .build()
            .into(),
    ]);
    let report = run_with(&snapshot, &nginx_options(), false);
    let plain = finding(of(&report, "plain"), Code::UpstreamProtocol);
    assert!(plain.message.contains("HTTP/2 in clear text"), "{plain:#?}");
    assert_eq!(of(&report, "said").verdict, Level::Same);
}

#[test]
fn passthrough_without_the_flag_needs_work_and_with_it_names_the_endpoints() {
    let build = || {
        vec![
            nginx("argocd")
                .annotation("nginx.ingress.kubernetes.io/ssl-passthrough", "true")
                .host("argocd.example")
                .prefix("/", svc("web", 80))
                .build()
                .into(),
        ]
    };
    let off = run(build());
    assert_eq!(
        finding(of(&off, "argocd"), Code::SslPassthroughOff).level,
        Level::NeedsWork
    );
    let options = Options {
        enable_ssl_passthrough: true,
        ..nginx_options()
    };
    let on = run_with(&world(build()), &options, false);
    let argocd = of(&on, "argocd");
    assert_eq!(argocd.verdict, Level::Differs, "{argocd:#?}");
    assert!(
        finding(argocd, Code::SslPassthrough)
            .message
            .contains("endpoints")
    );
}

#[test]
fn verdicts_sort_worst_first() {
    let report = run(vec![
        nginx("a-same")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
        nginx("b-work")
            .annotation("nginx.ingress.kubernetes.io/proxy-read-timeout", "soon")
            .host("b.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
    ]);
    let names: Vec<&str> = report.ingresses.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["b-work", "a-same"]);
    assert_eq!((report.summary.needs_work, report.summary.same), (1, 1));
}

#[test]
fn a_dump_without_ingress_classes_assumes_ingress_nginx_s() {
    let mut snapshot = Snapshot::from_objects([Object::from(
        nginx("web")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build(),
    )]);
    let options = nginx_options();
    let note = assume_class(&mut snapshot, &options).unwrap();
    assert!(note.message.contains("\"nginx\""), "{note:?}");
    let report = run_with(&snapshot, &options, false);
    assert_eq!(report.summary.ingresses, 1);
    // Once there is a class, nothing is assumed.
    assert!(assume_class(&mut snapshot, &options).is_none());
}

fn config_map(data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            namespace: Some("ingress-nginx".to_owned()),
            name: Some("ingress-nginx-controller".to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

#[test]
fn configmap_keys_map_to_flags_or_say_why_not() {
    let checked = configmap::check(&config_map(&[
        ("use-forwarded-headers", "true"),
        ("proxy-real-ip-cidr", "10.0.0.0/8, 192.168.0.0/16"),
        ("ssl-redirect", "false"),
        ("hsts", "true"),
        ("proxy-body-size", "8m"),
        ("proxy-next-upstream", "error timeout http_502"),
        ("large-client-header-buffers", "4 16k"),
        ("load-balance", "ewma"),
        ("log-format-upstream", "$remote_addr $request"),
        ("allow-snippet-annotations", "true"),
        ("reuse-port", "true"),
        ("otel-service-name", "edge"),
        ("something-new", "1"),
    ]));
    let by_key: BTreeMap<&str, &ConfigKey> =
        checked.keys.iter().map(|k| (k.key.as_str(), k)).collect();
    let flag = |k: &str| {
        by_key[k]
            .flag
            .as_deref()
            .unwrap_or_else(|| panic!("{k}: {:?}", by_key[k]))
    };
    assert_eq!(
        flag("use-forwarded-headers"),
        "--trusted-proxies 10.0.0.0/8,192.168.0.0/16"
    );
    assert_eq!(flag("proxy-real-ip-cidr"), flag("use-forwarded-headers"));
    assert_eq!(flag("ssl-redirect"), "--ssl-redirect false");
    assert_eq!(by_key["ssl-redirect"].status, KeyStatus::Flag);
    assert_eq!(by_key["hsts"].status, KeyStatus::Default);
    assert_eq!(flag("proxy-body-size"), "--proxy-body-size 8m");
    assert_eq!(
        flag("proxy-next-upstream"),
        "--proxy-next-upstream \"error timeout http_502\""
    );
    assert_eq!(
        flag("large-client-header-buffers"),
        "--max-request-header-bytes 65536 --max-uri-bytes 16384"
    );
    assert_eq!(flag("load-balance"), "--load-balance ewma");
    assert_eq!(
        by_key["log-format-upstream"].status,
        KeyStatus::NoEquivalent
    );
    assert!(
        by_key["log-format-upstream"]
            .note
            .as_deref()
            .unwrap()
            .contains("fixed schemas")
    );
    assert_eq!(
        by_key["allow-snippet-annotations"].status,
        KeyStatus::NotNeeded
    );
    assert_eq!(by_key["reuse-port"].status, KeyStatus::NotNeeded);
    assert_eq!(by_key["otel-service-name"].status, KeyStatus::NoEquivalent);
    assert_eq!(by_key["something-new"].status, KeyStatus::Unknown);
}

#[test]
fn forwarded_headers_from_everyone_are_flagged() {
    let checked = configmap::check(&config_map(&[("use-forwarded-headers", "true")]));
    let key = &checked.keys[0];
    assert_eq!(key.flag.as_deref(), Some("--trusted-proxies 0.0.0.0/0"));
    assert!(
        key.note.as_deref().unwrap().contains("every client"),
        "{key:?}"
    );
    let off = configmap::check(&config_map(&[("proxy-real-ip-cidr", "10.0.0.0/8")]));
    assert_eq!(off.keys[0].status, KeyStatus::NotNeeded);
}

#[test]
fn the_report_serialises_with_its_schema_and_kebab_case_levels() {
    let report = run(vec![
        nginx("work")
            .annotation("nginx.ingress.kubernetes.io/proxy-read-timeout", "soon")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build()
            .into(),
    ]);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["schema"], "vestibule.dev/check/v1");
    assert_eq!(json["input"]["source"]["kind"], "files");
    assert_eq!(json["ingresses"][0]["verdict"], "needs-work");
    assert_eq!(json["ingresses"][0]["findings"][0]["code"], "invalid-value");
    assert_eq!(json["summary"]["needs_work"], 1);
}
