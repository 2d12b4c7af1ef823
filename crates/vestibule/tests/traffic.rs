//! Traffic control through `vestibule run`, as a migrating ingress-nginx user meets it:
//! clients blocked everywhere, request-rate limits per client and per Ingress, and canary
//! Ingresses (header, cookie, weight, affinity), with a weight ramp under load. Clients are
//! told apart by `X-Forwarded-For` from a trusted proxy (the test itself).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use vestibule_testkit::{Echo, ManifestDir, ingress, svc};

fn from(ip: &str) -> String {
    format!("X-Forwarded-For: {ip}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_addresses_and_user_agents_get_403_on_every_host() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(&dir, vec![site("site")], &[("web", &[&web])]);
    let flags = [
        "--trusted-proxies",
        "127.0.0.1/32",
        "--block-cidrs",
        "203.0.113.0/24,2001:db8:bad::/48",
        "--block-user-agents",
        "BadBot/1.0,~*scanner",
    ];
    let v = Vestibule::start(dir.path(), &flags);
    let status = |host: &'static str, extra: String| {
        let v = &v;
        async move { get(v, host, "/", &extra).await.status }
    };
    assert_eq!(status("site.example", from("198.51.100.1")).await, 200);
    assert_eq!(status("site.example", from("203.0.113.9")).await, 403);
    assert_eq!(status("site.example", from("2001:db8:bad::1")).await, 403);
    assert_eq!(
        status("unknown.example", from("203.0.113.9")).await,
        403,
        "before routing: even where nothing is routed"
    );
    assert_eq!(status("unknown.example", from("198.51.100.1")).await, 404);
    let agent = |ua: &str| format!("User-Agent: {ua}\r\n");
    assert_eq!(status("site.example", agent("badbot/1.0")).await, 403);
    assert_eq!(status("site.example", agent("BadBot/1.0 (x)")).await, 200);
    assert_eq!(status("site.example", agent("Mass SCANNER 2")).await, 403);
    assert_eq!(status("site.example", agent("Mozilla/5.0")).await, 200);
    assert_eq!(web.hits(), 3, "blocked requests never reach the backend");

    // A typo in a flag stops the start with the flag named.
    for (flag, value) in [
        ("--block-cidrs", "10.0.0/8x"),
        ("--block-user-agents", "~(unclosed"),
        ("--limit-req-status-code", "200"),
    ] {
        let out = Command::new(BIN)
            .args(["run", "--manifests"])
            .arg(dir.path())
            .args([flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_count_per_client_share_the_ingress_budget_and_survive_reloads() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    let api = |rpm: &str| {
        ingress("default", "api")
            .host("api.example")
            .prefix("/a", svc("web", 80))
            .prefix("/b", svc("web", 80))
            .annotation(&key("limit-rpm"), rpm)
            .annotation(&key("limit-allowlist"), "10.99.0.0/16")
    };
    let world = |rpm: &str, extra: Option<&str>| {
        let mut ingresses = vec![
            api(rpm),
            ingress("default", "tight")
                .host("tight.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("limit-rpm"), "1")
                .annotation(&key("limit-burst-multiplier"), "2"),
            ingress("default", "typo")
                .host("typo.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("limit-rps"), "ten"),
        ];
        if let Some(name) = extra {
            ingresses.push(
                ingress("default", name)
                    .host(&format!("{name}.example"))
                    .prefix("/", svc("web", 80)),
            );
        }
        ingresses
    };
    write_world(&dir, world("1", None), &[("web", &[&web])]);
    let flags = [
        "--trusted-proxies",
        "127.0.0.1/32",
        "--limit-req-status-code",
        "429",
    ];
    let v = Vestibule::start(dir.path(), &flags);
    let status = |host: &'static str, path: &'static str, ip: &'static str| {
        let v = &v;
        async move { get(v, host, path, &from(ip)).await.status }
    };
    // One request a minute with a burst of 5: from cold, 6 back to back, shared by both
    // paths of the Ingress.
    for i in 0..6 {
        let path = if i % 2 == 0 { "/a" } else { "/b" };
        assert_eq!(status("api.example", path, "10.1.1.1").await, 200, "{i}");
    }
    assert_eq!(status("api.example", "/a", "10.1.1.1").await, 429);
    assert_eq!(status("api.example", "/b", "10.1.1.1").await, 429);
    assert_eq!(
        status("api.example", "/a", "10.1.1.2").await,
        200,
        "per client"
    );
    for _ in 0..10 {
        assert_eq!(
            status("api.example", "/a", "10.99.1.1").await,
            200,
            "exempt"
        );
    }
    // Another Ingress has a budget of its own: 1 × 2 + 1.
    for _ in 0..3 {
        assert_eq!(status("tight.example", "/", "10.1.1.1").await, 200);
    }
    assert_eq!(status("tight.example", "/", "10.1.1.1").await, 429);
    // A value that cannot be read closes the Ingress.
    assert_eq!(status("typo.example", "/", "10.1.1.1").await, 503);
    let found = diagnostics(&v.config().await);
    assert!(
        has(&found, &["error default/typo", "limit-rps", "503"]),
        "{found:#?}"
    );

    // A change elsewhere refills nobody's budget.
    let generation = v.generation();
    write_world(&dir, world("1", Some("other")), &[("web", &[&web])]);
    v.wait_generation(generation);
    assert_eq!(status("other.example", "/", "10.1.1.1").await, 200);
    assert_eq!(status("api.example", "/a", "10.1.1.1").await, 429);
    // A change of the limit itself starts it afresh.
    let generation = v.generation();
    write_world(&dir, world("2", Some("other")), &[("web", &[&web])]);
    v.wait_generation(generation);
    assert_eq!(status("api.example", "/a", "10.1.1.1").await, 200);
}

/// Host `api.example` → Service `web` (one echo), with one annotation, run behind
/// `--trusted-proxies 127.0.0.1/32` with `flags`.
async fn api(annotation: (&str, &str), flags: &[&str]) -> (Echo, ManifestDir, Vestibule) {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    let api = ingress("default", "api")
        .host("api.example")
        .prefix("/", svc("web", 80))
        .annotation(&key(annotation.0), annotation.1);
    write_world(&dir, vec![api], &[("web", &[&web])]);
    let mut all = vec!["--trusted-proxies", "127.0.0.1/32"];
    all.extend_from_slice(flags);
    let v = Vestibule::start(dir.path(), &all);
    (web, dir, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_connections_counts_requests_in_flight_per_client() {
    let (web, _dir, v) = api(
        ("limit-connections", "1"),
        &["--limit-conn-status-code", "503"],
    )
    .await;
    let v = Arc::new(v);
    let slow = {
        let v = Arc::clone(&v);
        tokio::spawn(async move {
            get(&v, "api.example", "/?delay_ms=1500", &from("10.1.1.1"))
                .await
                .status
        })
    };
    assert!(web.wait_received(1, Duration::from_secs(10)).await);
    let second = get(&v, "api.example", "/", &from("10.1.1.1")).await;
    assert_eq!(second.status, 503, "a second request in flight");
    let other = get(&v, "api.example", "/", &from("10.1.1.2")).await;
    assert_eq!(other.status, 200, "another client");
    assert_eq!(slow.await.unwrap(), 200);
    let after = get(&v, "api.example", "/", &from("10.1.1.1")).await;
    assert_eq!(
        after.status, 200,
        "the place is given back with the response"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_clients_is_tracked_up_to_the_cap() {
    let (_web, _dir, v) = api(("limit-rps", "1000"), &["--limit-max-clients", "200"]).await;
    let client = v.client(&["api.example"]);
    let tracked = || async {
        let metrics = v.metrics().await;
        metrics
            .lines()
            .find(|l| l.starts_with("vestibule_rate_limit_clients{") && l.contains("\"api\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
            .unwrap_or(0)
    };
    for n in 0..3_000u32 {
        let ip = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
        let response = client
            .get(v.url("api.example", "/"))
            .header("X-Forwarded-For", ip)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        if n == 30 {
            assert_eq!(tracked().await, 31, "every client counted below the cap");
        }
    }
    let after = tracked().await;
    // The cap is kept per shard (16 of them), rounded up.
    assert!(
        (150..=208).contains(&after),
        "{after} clients tracked with a cap of 200"
    );
}

/// A main Ingress and its canary on `host`: main → Service `main`, canary → Service
/// `canary`. `main_extra` and `canary_extra` are annotations.
fn pair(
    host: &str,
    main_extra: &[(&str, &str)],
    canary_extra: &[(&str, &str)],
) -> Vec<vestibule_testkit::fixtures::IngressBuilder> {
    let name = host.split('.').next().unwrap_or(host);
    let mut main = ingress("default", name)
        .host(host)
        .prefix("/", svc("main", 80))
        .created(1);
    for (k, value) in main_extra {
        main = main.annotation(&key(k), value);
    }
    let mut canary = ingress("default", &format!("{name}-canary"))
        .host(host)
        .prefix("/", svc("canary", 80))
        .created(2)
        .annotation(&key("canary"), "true");
    for (k, value) in canary_extra {
        canary = canary.annotation(&key(k), value);
    }
    vec![main, canary]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_split_by_affinity_header_cookie_then_weight() {
    let main = Echo::start("main").await.unwrap();
    let canary = Echo::start("canary").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    let mut ingresses = Vec::new();
    ingresses.extend(pair(
        "app.example",
        &[("upstream-vhost", "internal.example")],
        &[
            ("canary-by-header", "X-Canary"),
            ("canary-by-cookie", "canary_user"),
            // Not for a canary: the main's settings apply.
            ("upstream-vhost", "ignored.example"),
        ],
    ));
    ingresses.extend(pair(
        "value.example",
        &[],
        &[
            ("canary-by-header", "X-Canary"),
            ("canary-by-header-value", "beta"),
        ],
    ));
    ingresses.extend(pair(
        "pattern.example",
        &[],
        &[
            ("canary-by-header", "X-Canary"),
            ("canary-by-header-pattern", "^(beta|gamma)$"),
        ],
    ));
    ingresses.extend(pair(
        "sticky.example",
        &[("affinity", "cookie")],
        &[("canary-by-header", "X-Canary"), ("canary-weight", "100")],
    ));
    // Mistakes: each canary is dropped and its main serves everything.
    ingresses.extend(pair(
        "over.example",
        &[],
        &[("canary-weight", "120"), ("canary-weight-total", "100")],
    ));
    ingresses.extend(pair(
        "badpattern.example",
        &[],
        &[
            ("canary-by-header", "X-Canary"),
            ("canary-by-header-pattern", "(unclosed"),
            ("canary-weight", "100"),
        ],
    ));
    ingresses.push(
        ingress("default", "orphan")
            .host("nomain.example")
            .prefix("/", svc("canary", 80))
            .annotation(&key("canary"), "true")
            .annotation(&key("canary-weight"), "100"),
    );
    ingresses.push(
        ingress("default", "second")
            .host("app.example")
            .prefix("/", svc("canary", 80))
            .created(3)
            .annotation(&key("canary"), "true"),
    );
    write_world(
        &dir,
        ingresses,
        &[("main", &[&main]), ("canary", &[&canary])],
    );
    let v = Vestibule::start(dir.path(), &["--access-log", "json"]);
    let side = |host: &'static str, extra: &'static str| {
        let v = &v;
        async move {
            let response = get(v, host, "/", extra).await;
            (echoed(&response).name, response)
        }
    };
    let name = |host: &'static str, extra: &'static str| async move { side(host, extra).await.0 };

    assert_eq!(name("app.example", "").await, "main");
    assert_eq!(name("app.example", "X-Canary: always\r\n").await, "canary");
    assert_eq!(name("app.example", "X-Canary: never\r\n").await, "main");
    assert_eq!(
        name(
            "app.example",
            "X-Canary: never\r\nCookie: canary_user=always\r\n"
        )
        .await,
        "main",
        "the header decides before the cookie"
    );
    assert_eq!(
        name(
            "app.example",
            "X-Canary: other\r\nCookie: canary_user=always\r\n"
        )
        .await,
        "canary",
        "a header value that says nothing falls through to the cookie"
    );
    assert_eq!(
        name("app.example", "Cookie: canary_user=never\r\n").await,
        "main"
    );
    let (_, response) = side("app.example", "X-Canary: always\r\n").await;
    assert_eq!(
        echoed(&response).host.as_deref(),
        Some("internal.example"),
        "the main's upstream-vhost applies to the canary's requests"
    );

    assert_eq!(name("value.example", "X-Canary: beta\r\n").await, "canary");
    assert_eq!(
        name("value.example", "X-Canary: always\r\n").await,
        "main",
        "with a value, only the value"
    );
    assert_eq!(
        name("pattern.example", "X-Canary: gamma\r\n").await,
        "canary"
    );
    assert_eq!(name("pattern.example", "X-Canary: delta\r\n").await, "main");

    // Affinity: a session the main started stays on the main, even at weight 100; one the
    // canary started stays on the canary.
    let (first, response) = side("sticky.example", "X-Canary: never\r\n").await;
    assert_eq!(first, "main");
    let cookie = response
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let with_cookie: &'static str = Box::leak(format!("Cookie: {cookie}\r\n").into_boxed_str());
    for _ in 0..5 {
        assert_eq!(name("sticky.example", with_cookie).await, "main");
    }
    let (first, response) = side("sticky.example", "").await;
    assert_eq!(first, "canary", "weight 100");
    let cookie = response
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let canary_cookie: &'static str =
        Box::leak(format!("Cookie: {cookie}\r\nX-Canary: never\r\n").into_boxed_str());
    assert_eq!(
        name("sticky.example", canary_cookie).await,
        "canary",
        "sticky: the canary's session stays, before the header is looked at"
    );

    for host in ["over.example", "badpattern.example"] {
        let host: &'static str = host;
        for _ in 0..5 {
            assert_eq!(name(host, "X-Canary: gamma\r\n").await, "main", "{host}");
        }
    }
    assert_eq!(get(&v, "nomain.example", "/", "").await.status, 404);

    let found = diagnostics(&v.config().await);
    for needles in [
        &[
            "error default/over-canary",
            "canary-weight",
            "main Ingress serves",
        ][..],
        &[
            "error default/badpattern-canary",
            "canary-by-header-pattern",
        ],
        &["error default/orphan", "no main Ingress"],
        &[
            "warning default/second",
            "already has a canary",
            "app-canary",
        ],
        &[
            "info default/app-canary",
            "canary",
            "main Ingress's settings",
        ],
    ] {
        assert!(has(&found, needles), "{needles:?} in {found:#?}");
    }

    // The access log and the metrics say which side served.
    let served_by = |lines: &[String], canary: bool, ingress: &str, service: &str| {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|e| {
                e["host"] == "app.example"
                    && e["canary"] == canary
                    && e["ingress"] == ingress
                    && e["service"] == service
            })
    };
    v.wait_access_log_until("a line for each side", |lines| {
        served_by(lines, true, "app-canary", "canary") && served_by(lines, false, "app", "main")
    });
    let metrics = v.metrics().await;
    let served = |ingress: &str, service: &str| {
        metrics.lines().any(|l| {
            l.starts_with("vestibule_http_requests_total{")
                && l.contains(&format!("ingress=\"{ingress}\""))
                && l.contains(&format!("service=\"{service}\""))
        })
    };
    assert!(served("app-canary", "canary"), "{metrics}");
    assert!(served("app", "main"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_ramp_under_load_fails_no_request_and_follows_the_weight() {
    let main = Echo::start("main").await.unwrap();
    let canary = Echo::start("canary").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    let world = |weight: u32| {
        pair(
            "app.example",
            &[],
            &[("canary-weight", &weight.to_string())],
        )
    };
    write_world(
        &dir,
        world(0),
        &[("main", &[&main]), ("canary", &[&canary])],
    );
    let v = Arc::new(Vestibule::start(dir.path(), &[]));

    // Load: keep-alive clients sending all through the ramp; none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let client = v.client(&["app.example"]);
            let url = v.url("app.example", "/load");
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let ok = match client.get(&url).send().await {
                        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    let client = v.client(&["app.example"]);
    const N: usize = 400;
    for step in 0..=20u32 {
        let weight = step * 5;
        if step > 0 {
            let generation = v.generation();
            write_world(
                &dir,
                world(weight),
                &[("main", &[&main]), ("canary", &[&canary])],
            );
            v.wait_generation(generation);
        }
        let mut to_canary = 0;
        for _ in 0..N {
            let reply: vestibule_testkit::EchoReply = client
                .get(v.url("app.example", "/"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            to_canary += usize::from(reply.name == "canary");
        }
        let share = to_canary as f64 / N as f64;
        let expected = f64::from(weight) / 100.0;
        match weight {
            // At the ends there is no chance involved.
            0 | 100 => assert_eq!(share, expected, "weight {weight}"),
            // Over 4.5 standard deviations at the widest (p = 0.5, n = 400): 0.113.
            _ => assert!(
                (share - expected).abs() <= 0.115,
                "weight {weight}: {share} went to the canary"
            ),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 100, "the load ran: {sent}");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the ramp"
    );
}
