//! What Vestibule adds to, and changes in, the fields of requests and responses, through
//! `vestibule run`, as a migrating ingress-nginx user meets it: CORS (preflights answered
//! before access control, origins matched whole).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

use vestibule_testkit::{Echo, ManifestDir, ingress, raw, svc};

/// `METHOD /` to `host` with an `Origin`, through the plain listener.
async fn from_origin(v: &Vestibule, method: &str, host: &str, origin: &str) -> raw::RawResponse {
    let request = format!(
        "{method} / HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
    );
    raw::send(v.http, &request, std::time::Duration::from_secs(10))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_listed_origins_whole_and_preflights_before_access_control() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    let cors = |name: &str| {
        ingress("default", name)
            .host(&format!("{name}.example"))
            .prefix("/", svc("web", 80))
            .annotation(&key("enable-cors"), "true")
    };
    write_world(
        &dir,
        vec![
            cors("api")
                .annotation(
                    &key("cors-allow-origin"),
                    "https://app.example.com, https://*.tenant.example, not-an-origin",
                )
                .annotation(&key("cors-expose-headers"), "X-Total, X-Page")
                .annotation(&key("cors-max-age"), "600"),
            cors("closed")
                .annotation(&key("cors-allow-origin"), "https://app.example.com")
                .annotation(&key("allowlist-source-range"), "10.0.0.0/8"),
            cors("open").annotation(&key("cors-allow-credentials"), "false"),
            ingress("default", "stray")
                .host("stray.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("cors-allow-origin"), "https://app.example.com"),
        ],
        &[("web", &[&web])],
    );
    let v = Vestibule::start(dir.path(), &[]);
    let app = "https://app.example.com";

    // A listed origin: its own Origin back, with the route's fields, on the upstream's
    // response.
    let r = from_origin(&v, "GET", "api.example", app).await;
    assert_eq!(echoed(&r).name, "web");
    assert_eq!(r.header("access-control-allow-origin"), Some(app));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, PUT, POST, DELETE, PATCH, OPTIONS")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("X-Total, X-Page")
    );
    assert_eq!(r.header("vary"), Some("Origin"));
    // The preflight is Vestibule's: 204, the upstream never asked.
    let hits = web.hits();
    let r = from_origin(&v, "OPTIONS", "api.example", app).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(app));
    assert_eq!(r.header("content-type"), Some("text/plain charset=UTF-8"));
    assert_eq!(web.hits(), hits);
    // One-label wildcards; everything else matched whole.
    let wild = from_origin(&v, "GET", "api.example", "https://eu-1.tenant.example").await;
    assert_eq!(
        wild.header("access-control-allow-origin"),
        Some("https://eu-1.tenant.example")
    );
    for other in [
        "https://a.b.tenant.example",
        "https://evil-app.example.com",
        "https://app.example.com.evil.example",
        "http://app.example.com",
    ] {
        let r = from_origin(&v, "GET", "api.example", other).await;
        assert_eq!(r.header("access-control-allow-origin"), None, "{other}");
        assert_eq!(r.header("vary"), Some("Origin"), "{other}");
        // Not a preflight the route answers: the upstream gets the OPTIONS.
        let r = from_origin(&v, "OPTIONS", "api.example", other).await;
        assert_eq!(echoed(&r).method, "OPTIONS", "{other}");
    }

    // Before access control: the preflight passes an allow list that refuses the request,
    // and the refusal itself carries the fields, so the browser can read it.
    let r = from_origin(&v, "OPTIONS", "closed.example", app).await;
    assert_eq!(r.status, 204);
    let r = from_origin(&v, "GET", "closed.example", app).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("access-control-allow-origin"), Some(app));

    // `*`, the default: every response, with or without an Origin.
    let r = raw::send(
        v.http,
        "GET / HTTP/1.1\r\nHost: open.example\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert_eq!(r.header("vary"), None);
    let r = from_origin(&v, "OPTIONS", "open.example", "https://any.example").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    // Without enable-cors, nothing; and the mistakes are said.
    let r = from_origin(&v, "GET", "stray.example", app).await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    let found = diagnostics(&v.config().await);
    for needles in [
        &["warning default/api", "cors-allow-origin", "not-an-origin"][..],
        &["warning default/stray", "cors-allow-origin", "enable-cors"],
    ] {
        assert!(has(&found, needles), "{needles:?} in {found:#?}");
    }
}
