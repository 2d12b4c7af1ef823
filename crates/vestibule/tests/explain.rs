//! `vestibule explain` and `/debug/explain`: for each way a rule wins or loses, the reason a
//! user reads (text) and the field a script reads (JSON), then each phase's decision.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;
use vestibule_testkit::fixtures::IngressBuilder;
use vestibule_testkit::manifests::Manifest;
use vestibule_testkit::{ManifestDir, endpoint_slice, ingress, ingress_class, service, svc};

const A: &str = "nginx.ingress.kubernetes.io/";

/// Service `name` port 80 with one ready endpoint `ip`:8080.
fn write_service(dir: &ManifestDir, name: &str, ip: &str) {
    let service = service("shop", name).port("http", 80, 8080).build();
    let slice = endpoint_slice("shop", &format!("{name}-0"), name)
        .port("http", 8080)
        .ready(ip)
        .build();
    dir.write(&format!("svc-{name}.yaml"), &[&service, &slice])
        .unwrap();
}

fn ours(name: &str, created: i64) -> IngressBuilder {
    ingress("shop", name).class("vestibule").created(created)
}

/// The fixture: every way a rule can win or lose.
fn world() -> ManifestDir {
    let dir = ManifestDir::new().unwrap();
    let class = ingress_class("vestibule", "vestibule.dev/ingress-controller").build();
    write_service(&dir, "web", "10.0.0.1");
    write_service(&dir, "api", "10.0.0.2");
    let ingresses = [
        ours("shop", 10)
            .host("shop.example")
            .prefix("/", svc("web", 80))
            .prefix("/api", svc("api", 80))
            .exact("/api/v1", svc("web", 80))
            .prefix("/apiv2", svc("web", 80))
            .exact("/docs", svc("api", 80))
            .prefix("/docs", svc("web", 80)),
        // The same host, path and type as `shop`'s, and younger: never served.
        ours("late", 20)
            .host("shop.example")
            .prefix("/api", svc("web", 80)),
        ours("wild", 30)
            .host("*.example.org")
            .prefix("/", svc("web", 80)),
        ours("www", 40)
            .host("www.example.org")
            .prefix("/", svc("api", 80)),
        ours("regex", 50)
            .annotation(&format!("{A}use-regex"), "true")
            .host("re.example")
            .implementation_specific("/a.*", svc("web", 80))
            .implementation_specific("/ab.*", svc("api", 80)),
        ours("guarded", 60)
            .annotation(&format!("{A}allowlist-source-range"), "10.0.0.0/8")
            .annotation(&format!("{A}rewrite-target"), "/$2")
            .host("app.example")
            .implementation_specific("/app(/|$)(.*)", svc("api", 80)),
        ours("canary", 70)
            .annotation(&format!("{A}canary"), "true")
            .annotation(&format!("{A}canary-by-header"), "X-Canary")
            .host("shop.example")
            .prefix("/", svc("api", 80)),
        ours("secure", 80)
            .annotation(&format!("{A}force-ssl-redirect"), "true")
            .host("secure.example")
            .prefix("/", svc("web", 80)),
    ];
    let ingresses: Vec<_> = ingresses.into_iter().map(IngressBuilder::build).collect();
    let mut objects: Vec<&dyn Manifest> = vec![&class];
    objects.extend(ingresses.iter().map(|i| i as &dyn Manifest));
    dir.write("ingresses.yaml", &objects).unwrap();
    dir
}

fn explain(dir: &ManifestDir, host: &str, path: &str, extra: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN)
        .args([
            "explain",
            host,
            path,
            "--manifests",
            dir.path().to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json(dir: &ManifestDir, host: &str, path: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--output", "json"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = explain(dir, host, path, &args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// The rule of `ingress` with this path, from the explanation's `rules`.
fn rule<'v>(explained: &'v Value, ingress: &str, path: &str) -> &'v Value {
    explained["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ingress"] == ingress && r["path"] == path)
        .unwrap_or_else(|| panic!("no rule {ingress} {path}: {explained:#}"))
}

fn phase<'v>(explained: &'v Value, name: &str) -> &'v Value {
    explained["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == name)
        .unwrap_or_else(|| panic!("no phase {name}: {explained:#}"))
}

#[test]
fn each_rule_of_the_host_says_why_it_won_or_lost() {
    let dir = world();
    let e = json(&dir, "shop.example", "/api/v1", &[]);
    assert_eq!(e["host"]["match"], "exact");
    assert_eq!(e["target"]["by"], "rule");
    assert_eq!(e["target"]["ingress"], "shop/shop");
    let won = rule(&e, "shop/shop", "/api/v1");
    assert_eq!(won["verdict"], "won");
    assert_eq!(won["kind"], "Exact");
    let api = rule(&e, "shop/shop", "/api");
    assert_eq!(api["verdict"], "lost");
    assert!(
        api["reason"]
            .as_str()
            .unwrap()
            .contains("is a longer match"),
        "{api}"
    );
    assert_eq!(rule(&e, "shop/shop", "/apiv2")["verdict"], "no_match");
    // The younger Ingress's identical rule is never served, and says whose it is.
    let late = rule(&e, "shop/late", "/api");
    assert_eq!(late["verdict"], "shadowed");
    assert!(
        late["reason"].as_str().unwrap().contains("shop/shop"),
        "{late}"
    );

    // Longest prefix, and a prefix that is one only by characters.
    let e = json(&dir, "shop.example", "/apiv2x/y", &[]);
    assert_eq!(rule(&e, "shop/shop", "/")["verdict"], "won");
    let apiv2 = rule(&e, "shop/shop", "/apiv2");
    assert_eq!(apiv2["verdict"], "no_match");
    assert!(
        apiv2["reason"]
            .as_str()
            .unwrap()
            .contains("not a prefix element-wise"),
        "{apiv2}"
    );
    let e = json(&dir, "shop.example", "/api/users", &[]);
    assert_eq!(rule(&e, "shop/shop", "/api")["verdict"], "won");
    let exact = rule(&e, "shop/shop", "/api/v1");
    assert!(
        exact["reason"]
            .as_str()
            .unwrap()
            .contains("not exactly /api/v1"),
        "{exact}"
    );
    let root = rule(&e, "shop/shop", "/");
    assert!(
        root["reason"].as_str().unwrap().contains("longer match"),
        "{root}"
    );

    // The same path as Exact and as Prefix: Exact wins.
    let e = json(&dir, "shop.example", "/docs", &[]);
    let exact = e["rules"][0].clone();
    assert_eq!(
        (exact["kind"].as_str(), exact["path"].as_str()),
        (Some("Exact"), Some("/docs"))
    );
    assert_eq!(exact["verdict"], "won");
    let prefix = e["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "Prefix" && r["path"] == "/docs")
        .unwrap();
    assert!(
        prefix["reason"]
            .as_str()
            .unwrap()
            .contains("Exact beats Prefix at the same length"),
        "{prefix}"
    );

    // The text form says the same for a person.
    let (code, text, _) = explain(&dir, "shop.example", "/api/v1", &[]);
    assert_eq!(code, 0);
    assert!(text.contains("won       Exact /api/v1"), "{text}");
    assert!(text.contains("shadowed"), "{text}");
    assert!(
        text.contains("outcome   proxied to shop/web:80 (1 endpoint)"),
        "{text}"
    );
}

#[test]
fn hosts_exact_before_wildcard_and_regex_hosts_in_trying_order() {
    let dir = world();
    let e = json(&dir, "WWW.example.org:8443", "/", &[]);
    assert_eq!(e["request"]["host"], "www.example.org");
    assert_eq!(e["host"]["match"], "exact");
    assert_eq!(e["backend"]["service"], "shop/api:80");
    let e = json(&dir, "shop.example.org", "/", &[]);
    assert_eq!(e["host"]["match"], "wildcard");
    assert_eq!(e["host"]["entry"], "*.example.org");
    assert!(
        e["host"]["reason"].as_str().unwrap().contains("one label"),
        "{e:#}"
    );
    // Two labels: not covered by a one-label wildcard.
    let e = json(&dir, "a.b.example.org", "/", &[]);
    assert_eq!(e["host"]["match"], "none");
    assert_eq!(e["target"]["by"], "not_found");
    assert_eq!(e["outcome"], "answered 404 Not Found");

    // Regex mode: longer rule paths first; both match /abc, /ab.* is tried first.
    let e = json(&dir, "re.example", "/abc", &[]);
    assert_eq!(e["host"]["regex"], true);
    assert_eq!(rule(&e, "shop/regex", "/ab.*")["verdict"], "won");
    let later = rule(&e, "shop/regex", "/a.*");
    assert_eq!(later["verdict"], "lost");
    assert!(
        later["reason"].as_str().unwrap().contains("tried later"),
        "{later}"
    );
}

#[test]
fn each_phase_decides_as_the_proxy_would() {
    let dir = world();
    // Allow list: an address outside it is refused, one inside passes; the rewrite result.
    let e = json(
        &dir,
        "app.example",
        "/app/cart?id=3",
        &["--client-ip", "192.0.2.1"],
    );
    assert_eq!(phase(&e, "access control")["decision"], "refuse");
    assert!(e["outcome"].as_str().unwrap().contains("403"), "{e:#}");
    let e = json(
        &dir,
        "app.example",
        "/app/cart?id=3",
        &["--client-ip", "10.1.2.3"],
    );
    assert_eq!(phase(&e, "access control")["decision"], "pass");
    let rewrite = phase(&e, "rewrite");
    assert_eq!(rewrite["decision"], "rewrite");
    assert!(
        rewrite["reason"]
            .as_str()
            .unwrap()
            .starts_with("rewritten to /cart?id=3"),
        "{rewrite}"
    );
    assert_eq!(e["policy"]["next_upstream_tries"], 3);

    // The canary by its header; without it, the weight (none here) leaves the main.
    let e = json(&dir, "shop.example", "/", &["-H", "X-Canary: always"]);
    assert_eq!(phase(&e, "canary")["decision"], "canary");
    assert_eq!(e["backend"]["canary"], true);
    assert_eq!(e["backend"]["service"], "shop/api:80");
    assert_eq!(e["backend"]["endpoints"][0], "10.0.0.2:8080");
    let e = json(&dir, "shop.example", "/", &[]);
    assert_eq!(phase(&e, "canary")["decision"], "depends");
    assert_eq!(e["backend"]["service"], "shop/web:80");

    // force-ssl-redirect: plain HTTP redirected, HTTPS proxied.
    let e = json(&dir, "secure.example", "/x?y=1", &[]);
    assert_eq!(phase(&e, "early answers")["decision"], "redirect");
    assert!(
        e["outcome"]
            .as_str()
            .unwrap()
            .contains("https://secure.example/x?y=1"),
        "{e:#}"
    );
    let e = json(&dir, "secure.example", "/x", &["--https"]);
    assert_eq!(phase(&e, "early answers")["decision"], "pass");

    // A default backend takes what no rule matches.
    let default = ours("fallback", 90).default_backend(svc("api", 80)).build();
    dir.write("default.yaml", &[&default]).unwrap();
    let e = json(&dir, "nowhere.example", "/", &[]);
    assert_eq!(e["target"]["by"], "default_backend");
    assert_eq!(e["target"]["ingress"], "shop/fallback");
    assert_eq!(e["backend"]["service"], "shop/api:80");
}

#[test]
fn bad_requests_and_unreadable_input_exit_two() {
    let dir = world();
    let (code, _, stderr) = explain(&dir, "shop.example", "no-slash", &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("is not a path"), "{stderr}");
    let (code, _, stderr) = explain(&dir, "bad host", "/", &[]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = explain(&dir, "shop.example", "/", &["-H", "no colon"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("Name: value"), "{stderr}");
    let output = Command::new(BIN)
        .args([
            "explain",
            "a.example",
            "/",
            "--manifests",
            "/nonexistent/vestibule",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/vestibule"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_instance_explains_its_live_table() {
    let dir = world();
    let v = Vestibule::start(dir.path(), &[]);
    let (status, body) = blocking_get(
        v.admin,
        "/debug/explain?host=shop.example&path=/api/v1&header=X-Canary:%20always",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rule(&e, "shop/shop", "/api/v1")["verdict"], "won");
    assert_eq!(e["generation"], v.generation());
    let (status, body) = blocking_get(v.admin, "/debug/explain?host=shop.example").unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("host and path are required"), "{body}");

    // The live table: a change to the manifests is explained once installed.
    let generation = v.generation();
    let moved = ours("shop", 10)
        .host("shop.example")
        .prefix("/", svc("web", 80));
    let class = ingress_class("vestibule", "vestibule.dev/ingress-controller").build();
    dir.write("ingresses.yaml", &[&class, &moved.build()])
        .unwrap();
    v.wait_generation(generation);
    let (_, body) = blocking_get(v.admin, "/debug/explain?host=shop.example&path=/api/v1").unwrap();
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rule(&e, "shop/shop", "/")["verdict"], "won");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_cluster_it_lists_once_and_writes_nothing() {
    let api = vestibule_testkit::apiserver::ApiServer::start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path()).unwrap();
    api.apply(&ingress_class("vestibule", "vestibule.dev/ingress-controller").build());
    api.apply(&service("shop", "web").port("http", 80, 8080).build());
    api.apply(
        &endpoint_slice("shop", "web-0", "web")
            .port("http", 8080)
            .ready("10.0.0.7")
            .build(),
    );
    api.apply(
        &ours("shop", 10)
            .host("shop.example")
            .prefix("/", svc("web", 80))
            .build(),
    );
    let kubeconfig = kubeconfig.to_str().unwrap().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["explain", "shop.example", "/x", "--output", "json"])
            .args(["--kubeconfig", &kubeconfig])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let e: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(e["backend"]["endpoints"][0], "10.0.0.7:8080");
    let requests = api.requests();
    assert!(requests.iter().any(|r| r.resource == "ingresses"));
    assert!(
        requests.iter().all(|r| r.verb == "list"),
        "{:?}",
        requests
            .iter()
            .map(|r| (&r.verb, &r.resource))
            .collect::<Vec<_>>()
    );
}
