//! The dashboard (`--dashboard`) through the binary: off by default, its page and files
//! served under a strict policy, and its JSON API telling what the live process does: routes
//! in the order they are tried, endpoint health, traffic totals, and configuration changes.
//! The page itself is driven in a browser by `tests/browser/dashboard.test.mjs`.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use vestibule_testkit::{Echo, ManifestDir, ingress, svc};

async fn api(v: &Vestibule, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{}{path}", v.admin))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Polls `path` until `done` holds for its JSON answer, or fails after 10 s with the last one.
async fn api_until(v: &Vestibule, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = api(v, path).await;
        if status == 200 && done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: never as expected: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn host<'v>(routes: &'v Value, name: &str) -> &'v Value {
    routes["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("no host {name} in {routes:#}"))
}

/// `shop.example` with overlapping rules, a younger Ingress whose rule is shadowed, and
/// Service `web` on one echo backend.
async fn shop() -> (Echo, ManifestDir) {
    let echo = Echo::start("web-1").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "shop")
                .created(10)
                .host("shop.example")
                .prefix("/", svc("web", 80))
                .prefix("/api", svc("web", 80))
                .exact("/api/v1", svc("web", 80)),
            ingress("default", "late")
                .created(20)
                .host("shop.example")
                .prefix("/api", svc("web", 80)),
            ingress("default", "broken")
                .host("broken.example")
                .prefix("/", svc("missing", 80)),
        ],
        &[("web", &[&echo])],
    );
    (echo, dir)
}

#[tokio::test]
async fn the_dashboard_is_off_unless_asked_for() {
    let (_echo, dir) = shop().await;
    let v = Vestibule::start(dir.path(), &[]);
    for path in ["/dashboard/", "/dashboard/app.js", "/api/v1/overview"] {
        let (status, body) = api(&v, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(
            body["error"].as_str().unwrap().contains("--dashboard"),
            "{body}"
        );
    }
    assert_eq!(admin_status(v.admin, "/debug/config"), Some(200));
}

#[tokio::test]
async fn routes_are_listed_in_the_order_they_are_tried() {
    let (_echo, dir) = shop().await;
    let v = Vestibule::start(dir.path(), &["--dashboard"]);
    let (status, routes) = api(&v, "/api/v1/routes").await;
    assert_eq!(status, 200);
    let shop = host(&routes, "shop.example");
    let order: Vec<(&str, &str, &str)> = shop["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap(),
                r["kind"].as_str().unwrap(),
                r["ingress"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("/api/v1", "Exact", "default/shop"),
            ("/api", "Prefix", "default/shop"),
            ("/", "Prefix", "default/shop"),
        ]
    );
    assert_eq!(shop["routes"][0]["backend"]["service"], "web");
    assert_eq!(shop["routes"][0]["backend"]["endpoints"], 1);
    let shadowed = &routes["shadowed"][0];
    assert_eq!(
        (
            &shadowed["ingress"],
            &shadowed["path"],
            &shadowed["held_by"]
        ),
        (
            &Value::from("default/late"),
            &Value::from("/api"),
            &Value::from("default/shop")
        ),
        "{routes:#}"
    );
    let broken = host(&routes, "broken.example");
    assert!(
        broken["routes"][0]["backend"]["unavailable"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{broken:#}"
    );

    // Filtering and cutting, and what a bad request gets.
    let (_, found) = api(&v, "/api/v1/routes?q=BROKEN").await;
    assert_eq!(found["total"], 1);
    assert_eq!(found["hosts"][0]["host"], "broken.example");
    let (_, cut) = api(&v, "/api/v1/routes?limit=1").await;
    assert_eq!(
        (
            cut["total"].as_u64(),
            cut["hosts"].as_array().unwrap().len()
        ),
        (Some(2), 1)
    );
    for bad in [
        "/api/v1/routes?limit=0",
        "/api/v1/routes?limit=x",
        "/api/v1/routes?sort=1",
    ] {
        let (status, body) = api(&v, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = api(&v, "/api/v1/nothing").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("overview"));
}

#[tokio::test]
async fn an_endpoint_that_refuses_connections_shows_as_ejected() {
    let live = Echo::start("live").await.unwrap();
    // A port with nothing listening: bound, then let go.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(&dir, vec![site("shop")], &[]);
    let service = vestibule_testkit::service("default", "web")
        .port("http", 80, 8080)
        .build();
    let slices = [
        vestibule_testkit::endpoint_slice("default", "web-live", "web")
            .port("http", i32::from(live.port()))
            .ready("127.0.0.1")
            .build(),
        vestibule_testkit::endpoint_slice("default", "web-dead", "web")
            .port("http", i32::from(dead.port()))
            .ready("127.0.0.1")
            .build(),
    ];
    dir.write("svc-web.yaml", &[&service, &slices[0], &slices[1]])
        .unwrap();
    let v = Vestibule::start(dir.path(), &["--dashboard"]);
    let dead_text = dead.to_string();
    let (_, before) = api(&v, "/api/v1/services").await;
    let endpoints = before["services"][0]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "{before:#}");
    assert!(
        endpoints.iter().all(|e| e["ejected"] == false),
        "{before:#}"
    );
    assert_eq!(before["services"][0]["routes"], 1);

    // Requests keep being served by the live endpoint while the dead one fails to connect
    // and is left out.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = get(&v, "shop.example", "/", "").await;
        assert_eq!(response.status, 200, "{}", response.body_text());
        let (_, now) = api(&v, "/api/v1/services").await;
        let ejected: Vec<&str> = now["services"][0]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ejected"] == true)
            .map(|e| e["address"].as_str().unwrap())
            .collect();
        if !ejected.is_empty() {
            assert_eq!(ejected, [dead_text.as_str()]);
            break;
        }
        assert!(Instant::now() < deadline, "never ejected: {now:#}");
    }
    let (_, overview) = api(&v, "/api/v1/overview").await;
    assert_eq!(
        (&overview["endpoints"], &overview["ejected_endpoints"]),
        (&Value::from(2), &Value::from(1))
    );
}

#[tokio::test]
async fn traffic_totals_count_requests_and_server_errors() {
    let (_echo, dir) = shop().await;
    let v = Vestibule::start(dir.path(), &["--dashboard"]);
    for _ in 0..3 {
        assert_eq!(get(&v, "shop.example", "/api/x", "").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&v, "broken.example", "/", "").await.status, 503);
    }
    let traffic = api_until(&v, "/api/v1/traffic", |t| {
        t["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ingress"] == "broken")
    })
    .await;
    assert_eq!(traffic["enabled"], true);
    let of = |ingress: &str| {
        traffic["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["ingress"] == ingress)
            .unwrap_or_else(|| panic!("no {ingress} in {traffic:#}"))
            .clone()
    };
    let shop = of("shop");
    assert_eq!(
        (shop["requests"].as_u64(), shop["server_errors"].as_u64()),
        (Some(3), Some(0))
    );
    let buckets: u64 = shop["duration_buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(buckets, 3, "every request is in one duration bucket");
    let broken = of("broken");
    assert_eq!(
        (
            broken["requests"].as_u64(),
            broken["server_errors"].as_u64()
        ),
        (Some(2), Some(2))
    );
    // Busiest first.
    assert_eq!(traffic["routes"][0]["ingress"], "shop");

    let off = Vestibule::start(dir.path(), &["--dashboard", "--metrics", "false"]);
    let (status, traffic) = api(&off, "/api/v1/traffic").await;
    assert_eq!((status, &traffic["enabled"]), (200, &Value::from(false)));
}

#[tokio::test]
async fn the_overview_follows_a_manifest_change() {
    let (_echo, dir) = shop().await;
    let v = Vestibule::start(dir.path(), &["--dashboard"]);
    let (_, first) = api(&v, "/api/v1/overview").await;
    assert_eq!(first["generation"], 1);
    assert_eq!(first["virtual_hosts"], 2);
    assert_eq!(first["ingresses"]["served"], 3);
    assert!(
        first["diagnostics"]["warning"].as_u64().unwrap() >= 1,
        "{first:#}"
    );
    let blog = site("blog").class("vestibule").build();
    dir.write("blog.yaml", &[&blog]).unwrap();
    let second = api_until(&v, "/api/v1/overview", |o| o["generation"] == 2).await;
    assert_eq!(second["virtual_hosts"], 3);
    assert_ne!(second["published_at"], first["published_at"]);
    let (_, routes) = api(&v, "/api/v1/routes?q=blog").await;
    assert_eq!(routes["hosts"][0]["host"], "blog.example");
    let (_, diagnostics) = api(&v, "/api/v1/diagnostics").await;
    assert!(
        diagnostics["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["object"]["name"] == "broken"),
        "{diagnostics:#}"
    );
}

#[tokio::test]
async fn the_page_and_its_files_come_only_from_the_binary_under_a_strict_policy() {
    let (_echo, dir) = shop().await;
    let v = Vestibule::start(dir.path(), &["--dashboard"]);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let moved = client
        .get(format!("http://{}/dashboard", v.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 301);
    assert_eq!(moved.headers()["location"], "/dashboard/");

    let mut texts = Vec::new();
    for (path, content_type) in [
        ("/dashboard/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
        ("/dashboard/icon.svg", "image/svg+xml"),
        ("/api/v1/overview", "application/json"),
    ] {
        let response = client
            .get(format!("http://{}{path}", v.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}: {headers:?}"
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.starts_with("default-src 'none'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-store");
        texts.push((path, response.text().await.unwrap()));
    }
    for (path, text) in texts.iter().filter(|(path, _)| !path.ends_with(".svg")) {
        // Nothing is fetched from elsewhere, and the script never parses data as markup.
        // (The icon's only URL is its XML namespace, which is never fetched.)
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{path}"
        );
        assert!(
            !text.contains("innerHTML") && !text.contains("eval("),
            "{path}"
        );
    }
    let html = &texts[0].1;
    for reference in html.split(['"', '\'']).filter(|s| s.starts_with('/')) {
        assert!(
            reference.starts_with("/dashboard/") || reference.starts_with("/api/v1/"),
            "{reference}"
        );
    }
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline code"
    );
}
