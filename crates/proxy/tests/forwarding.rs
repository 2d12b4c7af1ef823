//! The request path end to end over real sockets: routing, what the backend sees, what the
//! client gets, balancing, and table changes under open connections.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use vestibule_testkit::misbehave::Refused;
use vestibule_testkit::{Echo, ingress, raw, svc};

#[tokio::test]
async fn routes_by_host_and_path_over_http1_and_h2c() {
    let web = Echo::start("web").await.unwrap();
    let api = Echo::start("api").await.unwrap();
    let proxy = Proxy::start(world(
        vec![
            ingress("default", "site")
                .host("shop.example")
                .prefix("/", svc("web", 80))
                .prefix("/api", svc("api", 80)),
        ],
        &[("web", &[&web]), ("api", &[&api])],
    ))
    .await;
    let hosts = ["shop.example", "other.example"];
    for client in [proxy.http1(&hosts), proxy.h2c(&hosts)] {
        for (path, want) in [("/", "web"), ("/api/items", "api"), ("/apix", "web")] {
            let response = client
                .get(proxy.url_for("shop.example", path))
                .send()
                .await
                .unwrap();
            assert_eq!(echo_of(response).await.name, want, "{path}");
        }
    }
    // Wrong host: no virtual host and no default backend.
    let response = proxy
        .h2c(&hosts)
        .get(proxy.url_for("other.example", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["server"], "vestibule");
}

#[tokio::test]
async fn the_backend_sees_http11_with_the_request_kept_and_forwarding_headers_added() {
    let web = Echo::start("web").await.unwrap();
    let proxy = Proxy::start(world(
        vec![
            ingress("default", "a")
                .host("a.example")
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web])],
    ))
    .await;
    let hosts = ["a.example"];
    for (client, label) in [(proxy.http1(&hosts), "http1"), (proxy.h2c(&hosts), "h2c")] {
        let response = client
            .get(proxy.url_for("a.example", "/p/q?x=1&y=%20z"))
            .header("user-agent", "vestibule-test/1.0")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-request-id", "keep-me")
            .send()
            .await
            .unwrap();
        let seen = echo_of(response).await;
        assert_eq!(seen.version, "HTTP/1.1", "{label}");
        assert_eq!(seen.method, "GET");
        assert_eq!(seen.path, "/p/q");
        assert_eq!(seen.query.as_deref(), Some("x=1&y=%20z"));
        let authority = format!("a.example:{}", proxy.addr.port());
        assert_eq!(seen.host.as_deref(), Some(authority.as_str()), "{label}");
        assert_eq!(seen.header("user-agent"), Some("vestibule-test/1.0"));
        // The client is no trusted proxy: what it claims is replaced, not appended to.
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        assert_eq!(seen.header("x-forwarded-host"), Some(authority.as_str()));
        let port = proxy.addr.port().to_string();
        assert_eq!(seen.header("x-forwarded-port"), Some(port.as_str()));
        assert_eq!(seen.header("x-request-id"), Some("keep-me"));
    }
    // Without one, a request ID is generated.
    let seen = echo_of(
        proxy
            .http1(&hosts)
            .get(proxy.url_for("a.example", "/"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen.header("x-request-id").map(str::len), Some(32));
}

#[tokio::test]
async fn host_rules_for_http2_and_http11() {
    let web = Echo::start("web").await.unwrap();
    let proxy = Proxy::start(world(
        vec![
            ingress("default", "a")
                .any_host()
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web])],
    ))
    .await;
    // HTTP/2 with a Host header naming another host than :authority: refused.
    let response = proxy
        .h2c(&["a.example"])
        .get(proxy.url_for("a.example", "/"))
        .header("host", "b.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // The same host with another port is the same host.
    let response = proxy
        .h2c(&["a.example"])
        .get(proxy.url_for("a.example", "/"))
        .header("host", "A.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // HTTP/1.1 must carry Host; HTTP/1.0 need not.
    let no_host = "GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
    let response = raw::send(proxy.addr, no_host, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(response.status, 400);
    let old = "GET / HTTP/1.0\r\n\r\n";
    let response = raw::send(proxy.addr, old, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    // Absolute-form target: its authority is the host; a Host that disagrees is refused.
    let absolute =
        "GET http://abs.example/x HTTP/1.1\r\nHost: ABS.example\r\nConnection: close\r\n\r\n";
    let response = raw::send(proxy.addr, absolute, Duration::from_secs(10))
        .await
        .unwrap();
    let seen: vestibule_testkit::EchoReply = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(seen.host.as_deref(), Some("abs.example"));
    assert_eq!(seen.path, "/x");
    let disagreeing =
        "GET http://abs.example/x HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n";
    let response = raw::send(proxy.addr, disagreeing, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(response.status, 400);
}

#[tokio::test]
async fn every_method_is_forwarded_with_its_body() {
    let web = Echo::start("web").await.unwrap();
    let proxy = Proxy::start(world(
        vec![
            ingress("default", "a")
                .any_host()
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web])],
    ))
    .await;
    let client = http1();
    for method in [
        "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "PURGE",
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client
            .request(method.clone(), proxy.url("/m"))
            .body("twelve bytes")
            .send()
            .await
            .unwrap();
        let seen = echo_of(response).await;
        assert_eq!(seen.method, method.as_str());
        assert_eq!(seen.body_len, 12, "{method}");
    }
    let head = client.head(proxy.url("/m")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.headers().contains_key("content-length"));
}

#[tokio::test]
async fn responses_keep_content_length_and_get_date_and_server() {
    let web = Echo::start("web").await.unwrap();
    let proxy = Proxy::start(world(
        vec![
            ingress("default", "a")
                .host("a.example")
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web])],
    ))
    .await;
    let response = raw::get(proxy.addr, "a.example", "/x").await.unwrap();
    assert_eq!(response.status, 200);
    let length: usize = response.header("content-length").unwrap().parse().unwrap();
    assert_eq!(length, response.body.len());
    assert_eq!(response.header("transfer-encoding"), None);
    assert!(response.header("date").is_some());
    assert_eq!(response.header("server"), Some("vestibule"));
    assert_eq!(response.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn sequential_requests_spread_evenly_over_ten_endpoints() {
    let mut echoes = Vec::new();
    for i in 0..10 {
        echoes.push(Echo::start(&format!("e{i}")).await.unwrap());
    }
    let refs: Vec<&Echo> = echoes.iter().collect();
    let proxy = Proxy::start(world(
        vec![
            ingress("default", "a")
                .any_host()
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &refs)],
    ))
    .await;
    let client = http1();
    for _ in 0..100 {
        let response = client.get(proxy.url("/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let hits: Vec<usize> = echoes.iter().map(Echo::hits).collect();
    assert_eq!(hits, vec![10; 10]);
}

#[tokio::test]
async fn paths_are_normalised_before_matching_and_forwarding() {
    let public = Echo::start("public").await.unwrap();
    let admin = Echo::start("admin").await.unwrap();
    let proxy = Proxy::start(world(
        vec![
            ingress("default", "a")
                .host("a.example")
                .prefix("/", svc("public", 80))
                .prefix("/admin", svc("admin", 80)),
        ],
        &[("public", &[&public]), ("admin", &[&admin])],
    ))
    .await;
    let cases = [
        ("/static/../admin/users", "admin", "/admin/users"),
        ("/static/%2e%2e/admin", "admin", "/admin"),
        ("/./admin/./x", "admin", "/admin/x"),
        ("/%61dmin", "admin", "/admin"),
        // Routed as a backend that decodes %2F reads it, forwarded as it came.
        ("/admin%2Fusers", "admin", "/admin%2Fusers"),
        ("/admin/..%2Fpublic", "public", "/admin/..%2Fpublic"),
        ("/../../etc/passwd", "public", "/etc/passwd"),
    ];
    for (target, backend, forwarded) in cases {
        let response = raw::get(proxy.addr, "a.example", target).await.unwrap();
        assert_eq!(response.status, 200, "{target}");
        let seen: vestibule_testkit::EchoReply = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(
            (seen.name.as_str(), seen.path.as_str()),
            (backend, forwarded),
            "{target}"
        );
    }
    for bad in ["/a%zz", "/admin/..%2F..%2Fetc/passwd"] {
        let response = raw::get(proxy.addr, "a.example", bad).await.unwrap();
        assert_eq!(response.status, 400, "{bad}");
    }
}

#[tokio::test]
async fn vestibule_answers_404_503_502_and_504_itself() {
    let slow = Echo::start("slow").await.unwrap();
    let dead = Refused::new().unwrap();
    let dead_addr = dead.addr();
    let mut objects = world(
        vec![
            ingress("default", "a")
                .annotation("nginx.ingress.kubernetes.io/proxy-read-timeout", "300ms")
                .host("a.example")
                .prefix("/missing", svc("nope", 80))
                .prefix("/empty", svc("empty", 80))
                .prefix("/dead", svc("dead", 80))
                .prefix("/slow", svc("slow", 80)),
        ],
        &[("slow", &[&slow])],
    );
    let empty = vestibule_testkit::service("default", "empty")
        .port("http", 80, 8080)
        .build();
    objects.push(empty.into());
    let dead = vestibule_testkit::service("default", "dead")
        .port("http", 80, 8080)
        .build();
    objects.push(dead.into());
    objects.push(
        vestibule_testkit::endpoint_slice("default", "dead-1", "dead")
            .port("http", i32::from(dead_addr.port()))
            .ready("127.0.0.1")
            .build()
            .into(),
    );
    let settings = vestibule_proxy::ProxySettings::default();
    let proxy = Proxy::start_with(objects, settings, Duration::from_secs(5)).await;
    let cases = [
        ("/nothing-here", 404),
        ("/missing", 503),
        ("/empty", 503),
        ("/dead", 502),
        ("/slow?delay_ms=2000", 504),
    ];
    for (target, status) in cases {
        let response = raw::get(proxy.addr, "a.example", target).await.unwrap();
        assert_eq!(response.status, status, "{target}");
        assert_eq!(response.header("server"), Some("vestibule"));
        assert!(response.body_text().starts_with(&status.to_string()));
    }
    let json = proxy
        .http1(&["a.example"])
        .get(proxy.url_for("a.example", "/dead"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 502);
    let body: serde_json::Value = json.json().await.unwrap();
    assert_eq!(body["status"], 502);
}

/// An upstream connection goes back to the pool once its response has been read, whatever
/// the response: with a body, with none at all (HEAD, 204, 304), after a request body.
#[tokio::test]
async fn one_upstream_connection_carries_requests_one_after_another() {
    let web = Echo::start("web").await.unwrap();
    let proxy = Proxy::start(world(
        vec![
            ingress("default", "a")
                .host("a.example")
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web])],
    ))
    .await;
    let client = proxy.http1(&["a.example"]);
    let url = |path: &str| proxy.url_for("a.example", path);
    let rounds = 3;
    for _ in 0..rounds {
        let response = client.get(url("/page")).send().await.unwrap();
        assert_eq!(echo_of(response).await.path, "/page");
        let response = client.head(url("/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.bytes().await.unwrap().is_empty());
        for status in [204, 304] {
            let response = client
                .get(url(&format!("/?status={status}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), status);
            assert!(response.bytes().await.unwrap().is_empty());
        }
        let response = client
            .post(url("/upload"))
            .body(vec![b'x'; 100_000])
            .send()
            .await
            .unwrap();
        assert_eq!(echo_of(response).await.body_len, 100_000);
    }
    assert_eq!(web.hits(), rounds * 5);
    assert_eq!(
        web.connections(),
        1,
        "every request after the first reuses the connection"
    );
}

#[tokio::test]
async fn a_new_table_applies_to_the_next_request_on_an_open_connection() {
    let one = Echo::start("one").await.unwrap();
    let two = Echo::start("two").await.unwrap();
    let services: &[(&str, &[&Echo])] = &[("one", &[&one]), ("two", &[&two])];
    let route_to = |name: &str| {
        world(
            vec![
                ingress("default", "a")
                    .any_host()
                    .prefix("/", svc(name, 80)),
            ],
            services,
        )
    };
    let proxy = Proxy::start(route_to("one")).await;
    // One client, one pooled keep-alive connection.
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    assert_eq!(
        echo_of(client.get(proxy.url("/")).send().await.unwrap())
            .await
            .name,
        "one"
    );
    proxy.install(route_to("two"));
    assert_eq!(
        echo_of(client.get(proxy.url("/")).send().await.unwrap())
            .await
            .name,
        "two"
    );
    proxy.install(route_to("one"));
    let h2 = h2c();
    assert_eq!(
        echo_of(h2.get(proxy.url("/")).send().await.unwrap())
            .await
            .name,
        "one"
    );
    proxy.install(route_to("two"));
    assert_eq!(
        echo_of(h2.get(proxy.url("/")).send().await.unwrap())
            .await
            .name,
        "two"
    );
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_request_and_stops_accepting() {
    let slow = Echo::start("slow").await.unwrap();
    let proxy = Proxy::start(world(
        vec![
            ingress("default", "a")
                .any_host()
                .prefix("/", svc("slow", 80)),
        ],
        &[("slow", &[&slow])],
    ))
    .await;
    let in_flight = tokio::spawn(raw::get(proxy.addr, "a.example", "/?delay_ms=500"));
    assert!(slow.wait_received(1, Duration::from_secs(10)).await);
    assert_eq!(slow.hits(), 0, "still in flight when the shutdown starts");
    proxy.shutdown.cancel();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(proxy.task.await.unwrap(), 0, "every connection drained");
    assert!(tokio::net::TcpStream::connect(proxy.addr).await.is_err());
}

#[tokio::test]
async fn an_external_name_service_is_reached_through_dns() {
    let echo = Echo::start("outside").await.unwrap();
    let mut objects = world(
        vec![
            ingress("default", "a")
                .any_host()
                .prefix("/", svc("ext", i32::from(echo.port()))),
        ],
        &[],
    );
    objects.push(
        vestibule_testkit::service("default", "ext")
            .external_name("localhost")
            .build()
            .into(),
    );
    let proxy = Proxy::start(objects).await;
    let response = raw::get(proxy.addr, "a.example", "/via-dns").await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body_text());
    let seen: vestibule_testkit::EchoReply = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(seen.name, "outside");
    assert_eq!(seen.host.as_deref(), Some("a.example"));
}
