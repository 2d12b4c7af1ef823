//! `vestibule run` as a user runs it: a manifests directory, echo backends, real clients,
//! live edits, broken files, and SIGTERM.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use vestibule_testkit::{Echo, EchoReply, ManifestDir, ingress, raw, svc};

async fn name_at(client: &reqwest::Client, url: &str) -> Result<String, u16> {
    let response = client.get(url).send().await.unwrap();
    if response.status() != 200 {
        return Err(response.status().as_u16());
    }
    Ok(response.json::<EchoReply>().await.unwrap().name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_manifests_directory_over_http1_and_h2c() {
    let web = Echo::start("web").await.unwrap();
    let api = Echo::start("api").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "site")
                .host("shop.example")
                .prefix("/", svc("web", 80))
                .prefix("/api", svc("api", 80)),
        ],
        &[("web", &[&web]), ("api", &[&api])],
    );
    let v = Vestibule::start(dir.path(), &[]);
    for client in [v.client(&["shop.example"]), v.h2c(&["shop.example"])] {
        assert_eq!(
            name_at(&client, &v.url("shop.example", "/")).await,
            Ok("web".into())
        );
        assert_eq!(
            name_at(&client, &v.url("shop.example", "/api/x")).await,
            Ok("api".into())
        );
    }
    let other = v.client(&["other.example"]);
    assert_eq!(
        name_at(&other, &v.url("other.example", "/")).await,
        Err(404)
    );
}

/// Writes `b.yaml` routing b.example to `service`, and waits until it is served.
fn route_b_to(v: &Vestibule, dir: &ManifestDir, service: &str) {
    let generation = v.generation();
    let b = ingress("default", "b")
        .class("vestibule")
        .host("b.example")
        .prefix("/", svc(service, 80))
        .build();
    dir.write("b.yaml", &[&b]).unwrap();
    v.wait_generation(generation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_backends_see_and_clients_get_through_vestibule_run() {
    let mut echoes = Vec::new();
    for i in 0..10 {
        echoes.push(Echo::start(&format!("e{i}")).await.unwrap());
    }
    let refs: Vec<&Echo> = echoes.iter().collect();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "a")
                .host("a.example")
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &refs)],
    );
    let v = Vestibule::start(dir.path(), &[]);
    let client = v.client(&["a.example"]);

    // Every method, with its body, arrives as HTTP/1.1 with path, query and User-Agent kept.
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client
            .request(method.clone(), v.url("a.example", "/p/./q?x=1"))
            .header("user-agent", "tester/2")
            .body("0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
        let seen: EchoReply = response.json().await.unwrap();
        assert_eq!(seen.method, method.as_str());
        assert_eq!(seen.version, "HTTP/1.1");
        assert_eq!(
            (seen.path.as_str(), seen.query.as_deref()),
            ("/p/q", Some("x=1"))
        );
        assert_eq!(seen.header("user-agent"), Some("tester/2"));
        assert_eq!(seen.body_len, 10, "{method}");
    }

    // Framing, Date and Server, as they come off the wire.
    let raw = raw::get(v.http, "a.example", "/").await.unwrap();
    let length: usize = raw.header("content-length").unwrap().parse().unwrap();
    assert_eq!(length, raw.body.len());
    assert_eq!(raw.header("transfer-encoding"), None);
    assert!(raw.header("date").is_some());
    assert_eq!(raw.header("server"), Some("vestibule"));

    // 100 sequential requests spread evenly over the 10 endpoints (the 8 above and the raw
    // one also took turns, so count from here).
    let before: Vec<usize> = echoes.iter().map(Echo::hits).collect();
    for _ in 0..100 {
        let response = client.get(v.url("a.example", "/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let spread: Vec<usize> = echoes
        .iter()
        .zip(&before)
        .map(|(e, b)| e.hits() - b)
        .collect();
    assert_eq!(spread, vec![10; 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_added_edited_and_removed_takes_effect_without_restart() {
    let one = Echo::start("one").await.unwrap();
    let two = Echo::start("two").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "a")
                .host("a.example")
                .prefix("/", svc("one", 80)),
        ],
        &[("one", &[&one])],
    );
    let v = Vestibule::start(dir.path(), &[]);
    let client = v.client(&["a.example", "b.example"]);
    let pid = v.pid();
    assert_eq!(name_at(&client, &v.url("b.example", "/")).await, Err(404));

    // Added: a new file with a new Ingress and Service.
    write_service(&dir, "two", &[&two]);
    route_b_to(&v, &dir, "two");
    assert_eq!(
        name_at(&client, &v.url("b.example", "/")).await,
        Ok("two".into())
    );

    // Edited: b.example now routes to `one`.
    route_b_to(&v, &dir, "one");
    assert_eq!(
        name_at(&client, &v.url("b.example", "/")).await,
        Ok("one".into())
    );

    // Removed.
    let generation = v.generation();
    dir.remove("b.yaml").unwrap();
    v.wait_generation(generation);
    assert_eq!(name_at(&client, &v.url("b.example", "/")).await, Err(404));
    assert_eq!(
        name_at(&client, &v.url("a.example", "/")).await,
        Ok("one".into())
    );
    assert_eq!(v.pid(), pid, "same process throughout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_leaves_every_route_served_and_is_reported() {
    let web = Echo::start("web").await.unwrap();
    let api = Echo::start("api").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "a")
                .host("a.example")
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web]), ("api", &[&api])],
    );
    let b = ingress("default", "b")
        .class("vestibule")
        .host("b.example")
        .prefix("/", svc("api", 80))
        .build();
    dir.write("b.yaml", &[&b]).unwrap();
    let mut v = Vestibule::start(dir.path(), &[]);
    let client = v.client(&["a.example", "b.example"]);

    let generation = v.generation();
    dir.write_raw(
        "b.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nspec: [unclosed\n",
    )
    .unwrap();
    v.wait_generation(generation);
    // The broken file's last good objects stay in service, and so does everything else.
    assert_eq!(
        name_at(&client, &v.url("a.example", "/")).await,
        Ok("web".into())
    );
    assert_eq!(
        name_at(&client, &v.url("b.example", "/")).await,
        Ok("api".into())
    );
    let config = v.config().await;
    let problems = config["source_problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{config:#}");
    assert!(problems[0]["source"].as_str().unwrap().ends_with("b.yaml"));
    v.wait_for_log(Duration::from_secs(5), |l| {
        l["level"] == "WARN" && l["path"].as_str().is_some_and(|p| p.ends_with("b.yaml"))
    });

    // An invalid object (not a syntax error) is skipped and reported; the rest is served.
    let generation = v.generation();
    let bad = ingress("default", "bad")
        .class("vestibule")
        .host("c.example")
        .path("Regex", "/", svc("web", 80))
        .build();
    dir.write("bad.yaml", &[&bad]).unwrap();
    v.wait_generation(generation);
    let config = v.config().await;
    let diagnostics = config["diagnostics"].as_array().unwrap();
    assert!(
        diagnostics.iter().any(|d| d["object"]["name"] == "bad"
            && d["field"] == "spec.rules[0].http.paths[0].pathType"
            && d["severity"] == "error"),
        "{config:#}"
    );
    assert_eq!(
        name_at(&client, &v.url("a.example", "/")).await,
        Ok("web".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_config_shows_the_table_with_endpoints() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "a")
                .host("a.example")
                .exact("/x", svc("web", 80)),
        ],
        &[("web", &[&web])],
    );
    let v = Vestibule::start(dir.path(), &[]);
    let config = v.config().await;
    assert_eq!(config["generation"], 1);
    assert_eq!(config["installed_generation"], 1);
    assert_eq!(config["objects"]["ingresses"], 1);
    assert_eq!(config["ingresses"][0]["ours"], true);
    let vhost = &config["table"]["virtual_hosts"][0];
    assert_eq!(vhost["host"], "a.example");
    assert_eq!(vhost["routes"][0]["rule"]["kind"], "Exact");
    assert_eq!(vhost["routes"][0]["rule"]["path"], "/x");
    let cluster = &config["table"]["clusters"][0];
    assert_eq!(cluster["key"]["service"], "web");
    assert_eq!(cluster["endpoints"][0]["address"], web.addr().to_string());
    assert_eq!(admin_status(v.admin, "/healthz"), Some(200));
    assert_eq!(admin_status(v.admin, "/nope"), Some(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request_then_exits_zero() {
    let slow = Echo::start("slow").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "a")
                .any_host()
                .prefix("/", svc("slow", 80)),
        ],
        &[("slow", &[&slow])],
    );
    let mut v = Vestibule::start(dir.path(), &["--shutdown-grace-period", "20s"]);
    let in_flight = tokio::spawn(raw::send(
        v.http,
        "GET /?delay_ms=1000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(20),
    ));
    assert!(slow.wait_received(1, Duration::from_secs(10)).await);
    v.signal("TERM");
    v.wait_for_log(Duration::from_secs(5), |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("shutting down"))
    });
    // Readiness is off at once while the request is still being served.
    assert_eq!(admin_status(v.admin, "/readyz"), Some(503));
    assert_eq!(slow.hits(), 0);
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status, 200);
    let status = v.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{:#?}", v.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_can_come_from_the_environment() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    // Only a classless Ingress: served only with --watch-ingress-without-class.
    let classless = ingress("default", "a")
        .any_host()
        .prefix("/", svc("web", 80))
        .build();
    dir.write("a.yaml", &[&classless]).unwrap();
    write_service(&dir, "web", &[&web]);
    let mut command = std::process::Command::new(BIN);
    command
        .args(["run", "--log-format", "json"])
        .env("VESTIBULE_HTTP_ADDR", "127.0.0.1:0")
        .env("VESTIBULE_HTTPS_ADDR", "127.0.0.1:0")
        .env("VESTIBULE_ADMIN_ADDR", "127.0.0.1:0")
        .env("VESTIBULE_MANIFESTS", dir.path())
        .env("VESTIBULE_WATCH_INGRESS_WITHOUT_CLASS", "true");
    let v = Vestibule::spawn(command);
    let client = v.client(&["x.example"]);
    assert_eq!(
        name_at(&client, &v.url("x.example", "/")).await,
        Ok("web".into())
    );
}

#[test]
fn without_manifests_or_a_cluster_run_fails_with_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(BIN)
        .args(["run", "--http-addr", "127.0.0.1:0", "--https-addr"])
        .args(["127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .env_remove("VESTIBULE_MANIFESTS")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Kubernetes API"), "{stderr}");
    assert!(stderr.contains("--manifests"), "{stderr}");
}

#[test]
fn a_missing_manifests_path_fails_at_start() {
    let output = std::process::Command::new(BIN)
        .args(["run", "--manifests", "/nonexistent/vestibule-manifests"])
        .args(["--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/vestibule-manifests"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_flags_set_defaults_that_annotations_override() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "small")
                .host("small.example")
                .prefix("/", svc("web", 80)),
            ingress("default", "large")
                .annotation("nginx.ingress.kubernetes.io/proxy-body-size", "8k")
                .host("large.example")
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web])],
    );
    let v = Vestibule::start(
        dir.path(),
        &[
            "--proxy-body-size",
            "1k",
            "--trusted-proxies",
            "127.0.0.1/32",
        ],
    );
    let client = v.client(&["small.example", "large.example"]);
    let body = vec![b'x'; 4096];
    let small = client
        .post(v.url("small.example", "/"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 413);
    let large = client
        .post(v.url("large.example", "/"))
        .header("x-forwarded-for", "198.51.100.4")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 200);
    let seen: EchoReply = large.json().await.unwrap();
    assert_eq!(seen.body_len, 4096);
    // 127.0.0.1 is a trusted proxy here: its client's address is believed.
    assert_eq!(seen.header("x-real-ip"), Some("198.51.100.4"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("198.51.100.4, 127.0.0.1")
    );
}

#[test]
fn invalid_proxy_flags_are_refused_with_the_value_named() {
    for (flag, value) in [
        ("--trusted-proxies", "10.1.2.3/8"),
        ("--proxy-body-size", "1x"),
        ("--proxy-read-timeout", "soon"),
        ("--proxy-next-upstream", "error sometimes"),
    ] {
        let output = std::process::Command::new(BIN)
            .args(["run", "--manifests", ".", flag, value])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{stderr}");
    }
}

/// `--worker-threads 1` runs everything (proxy, admin, manifest source, signals) on a
/// current-thread runtime: all of it must still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_serves_follows_edits_and_shuts_down() {
    let web = Echo::start("web").await.unwrap();
    let api = Echo::start("api").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "site")
                .host("shop.example")
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web]), ("api", &[&api])],
    );
    let mut v = Vestibule::start(dir.path(), &["--worker-threads", "1"]);
    for client in [v.client(&["shop.example"]), v.h2c(&["shop.example"])] {
        assert_eq!(
            name_at(&client, &v.url("shop.example", "/")).await,
            Ok("web".into())
        );
    }
    route_b_to(&v, &dir, "api");
    let b = v.client(&["b.example"]);
    assert_eq!(
        name_at(&b, &v.url("b.example", "/")).await,
        Ok("api".into())
    );
    assert_eq!(admin_status(v.admin, "/readyz"), Some(200));
    v.signal("TERM");
    let status = v.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{:#?}", v.logs());
}
