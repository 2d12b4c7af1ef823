//! What Vestibule adds to, and changes in, the fields of requests and responses, through
//! `vestibule run`, as a migrating ingress-nginx user meets it: CORS (preflights answered
//! before access control, origins matched whole), and header rules (`custom-headers`, the
//! controller-wide ConfigMaps and hidden fields, redirects and cookies rewritten).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

use vestibule_testkit::{Echo, ManifestDir, raw};

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
    let cors = |name: &str| site(name).annotation(&key("enable-cors"), "true");
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
            site("stray").annotation(&key("cors-allow-origin"), "https://app.example.com"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_rules_set_hide_and_rewrite_fields_as_ingress_nginx_does() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            site("secure").annotation(&key("custom-headers"), "security"),
            site("unallowed").annotation(&key("custom-headers"), "secret"),
            site("missing").annotation(&key("custom-headers"), "nope"),
            site("legacy")
                .annotation(&key("proxy-redirect-from"), "http://internal/")
                .annotation(&key("proxy-redirect-to"), "https://legacy.example/")
                .annotation(&key("proxy-cookie-domain"), "internal.local legacy.example")
                .annotation(&key("proxy-cookie-path"), "/app/ /"),
            site("plain"),
        ],
        &[("web", &[&web])],
    );
    dir.write_raw(
        "configmaps.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: security, namespace: default}\n\
         data:\n  X-Frame-Options: DENY\n  X-Served-By: \"$host $request_id\"\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: secret, namespace: default}\n\
         data:\n  X-Internal-Token: abc\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: upstream-fields, namespace: default}\n\
         data:\n  X-Env: prod\n  X-Client: \"$remote_addr\"\n  X-Forwarded-Host: front.example\n\
         ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: every-response, namespace: default}\n\
         data:\n  X-Global: \"yes\"\n",
    )
    .unwrap();
    let flags = [
        "--proxy-set-headers",
        "default/upstream-fields",
        "--add-headers",
        "default/every-response",
        "--hide-headers",
        "X-Powered-By",
        "--global-allowed-response-headers",
        "X-Frame-Options,X-Served-By",
    ];
    let v = Vestibule::start(dir.path(), &flags);

    // Controller-wide: request fields set (Vestibule's own X-Forwarded-Host replaced),
    // response fields set and hidden, on every Ingress.
    let r = get(&v, "plain.example", "/?header=X-Powered-By:php", "").await;
    let seen = echoed(&r);
    assert_eq!(seen.header("x-env"), Some("prod"));
    assert_eq!(seen.header("x-client"), Some("127.0.0.1"));
    assert_eq!(
        seen.headers.get("x-forwarded-host").map(Vec::len),
        Some(1),
        "one X-Forwarded-Host: {:?}",
        seen.headers.get("x-forwarded-host")
    );
    assert_eq!(seen.header("x-forwarded-host"), Some("front.example"));
    assert_eq!(r.header("x-global"), Some("yes"));
    assert_eq!(r.header("x-powered-by"), None);

    // custom-headers: every response, whatever its status, its variables expanded.
    for target in ["/", "/?status=404"] {
        let r = get(&v, "secure.example", target, "X-Request-ID: req-7\r\n").await;
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{target}");
        assert_eq!(
            r.header("x-served-by"),
            Some("secure.example req-7"),
            "{target}"
        );
    }
    // A header the operator did not allow, or a ConfigMap that is not there: closed.
    assert_eq!(get(&v, "unallowed.example", "/", "").await.status, 503);
    assert_eq!(get(&v, "missing.example", "/", "").await.status, 503);

    // The upstream's redirects and cookies, rewritten.
    let target = "/?header=Location:http://internal/login\
                  &header=Set-Cookie:id=1;Domain=internal.local;Path=/app/x\
                  &header=Set-Cookie:other=2;Domain=elsewhere;Path=/b";
    let r = get(&v, "legacy.example", target, "").await;
    assert_eq!(r.header("location"), Some("https://legacy.example/login"));
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        cookies,
        [
            "id=1;Domain=legacy.example;Path=/x",
            "other=2;Domain=elsewhere;Path=/b"
        ]
    );

    let found = diagnostics(&v.config().await);
    for needles in [
        &[
            "error default/unallowed",
            "custom-headers",
            "X-Internal-Token",
            "503",
        ][..],
        &["error default/missing", "custom-headers", "does not exist"],
    ] {
        assert!(has(&found, needles), "{needles:?} in {found:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippets_in_the_safe_subset_apply_whole_and_others_not_at_all() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    let snippet = |name: &str, key_: &str, text: &str| site(name).annotation(&key(key_), text);
    write_world(
        &dir,
        vec![
            snippet(
                "headers",
                "configuration-snippet",
                "more_set_headers \"X-Frame-Options: SAMEORIGIN\";\n\
                 proxy_set_header X-Team platform;\n\
                 add_header X-Cache-Status hit;\n",
            ),
            snippet("office", "server-snippet", "allow 10.0.0.0/8;\ndeny all;"),
            snippet(
                "gone",
                "configuration-snippet",
                "return 410 \"gone for good\";",
            ),
            snippet(
                "partial",
                "configuration-snippet",
                "more_set_headers \"X-A: 1\";\nrewrite ^ /x break;",
            ),
            snippet(
                "guarded",
                "configuration-snippet",
                "location /admin {\n  deny all;\n}",
            ),
        ],
        &[("web", &[&web])],
    );
    let v = Vestibule::start(dir.path(), &[]);

    let r = get(&v, "headers.example", "/", "").await;
    assert_eq!(echoed(&r).header("x-team"), Some("platform"));
    assert_eq!(r.header("x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(r.header("x-cache-status"), Some("hit"));
    let r = get(&v, "headers.example", "/?status=404", "").await;
    assert_eq!(
        r.header("x-frame-options"),
        Some("SAMEORIGIN"),
        "any status"
    );
    assert_eq!(r.header("x-cache-status"), None, "add_header: not on a 404");

    assert_eq!(get(&v, "office.example", "/", "").await.status, 403);
    let r = get(&v, "gone.example", "/", "").await;
    assert_eq!((r.status, r.body_text().as_str()), (410, "gone for good"));
    // Not whole: nothing of it.
    let r = get(&v, "partial.example", "/", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-a"), None);
    // Not whole, and it held access control: closed.
    assert_eq!(get(&v, "guarded.example", "/", "").await.status, 503);

    let found = diagnostics(&v.config().await);
    for needles in [
        &[
            "info default/headers",
            "configuration-snippet",
            "safe subset",
        ][..],
        &[
            "warning default/partial",
            "line 2: rewrite",
            "nothing of this snippet",
        ],
        &["error default/guarded", "line 1: location", "503"],
    ] {
        assert!(has(&found, needles), "{needles:?} in {found:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_upstream_sends_to_the_cluster_ip_not_the_endpoints() {
    // The cluster IP's port and the endpoints' port lead to different backends, so the
    // answer says which way the request went.
    let by_ip = Echo::start("cluster-ip").await.unwrap();
    let by_endpoints = Echo::start("endpoints").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    // The Ingresses name the Service port that the cluster IP listens on.
    let port = i32::from(by_ip.port());
    let named = |name: &str| {
        vestibule_testkit::ingress("default", name)
            .host(&format!("{name}.example"))
            .prefix("/", vestibule_testkit::svc("web", port))
    };
    write_world(
        &dir,
        vec![
            named("direct").annotation(&key("service-upstream"), "true"),
            named("balanced"),
        ],
        &[],
    );
    dir.write_raw(
        "svc-web.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
             spec:\n  clusterIP: 127.0.0.1\n  ports:\n  - {{name: http, port: {ip_port}, \
             targetPort: {ep_port}}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata:\n  name: web-1\n  namespace: default\n  labels: \
             {{kubernetes.io/service-name: web}}\naddressType: IPv4\n\
             ports: [{{name: http, port: {ep_port}}}]\n\
             endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n",
            ip_port = by_ip.port(),
            ep_port = by_endpoints.port(),
        ),
    )
    .unwrap();
    let v = Vestibule::start(dir.path(), &[]);
    assert_eq!(
        echoed(&get(&v, "direct.example", "/", "").await).name,
        "cluster-ip"
    );
    assert_eq!(
        echoed(&get(&v, "balanced.example", "/", "").await).name,
        "endpoints"
    );
}

/// An Ingress `default/NAME` routing `NAME.example/` to `service` port 80.
fn to(name: &str, service: &str) -> vestibule_testkit::fixtures::IngressBuilder {
    vestibule_testkit::ingress("default", name)
        .host(&format!("{name}.example"))
        .prefix("/", vestibule_testkit::svc(service, 80))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_backend_serves_when_the_service_has_no_ready_endpoints() {
    let web = Echo::start("web").await.unwrap();
    let errors = Echo::start("errors").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            to("down", "empty").annotation(&key("default-backend"), "errors"),
            to("up", "web").annotation(&key("default-backend"), "errors"),
            to("bare", "empty"),
            to("typo", "empty").annotation(&key("default-backend"), "nope"),
        ],
        &[("web", &[&web]), ("errors", &[&errors]), ("empty", &[])],
    );
    let v = Vestibule::start(dir.path(), &[]);

    let r = get(&v, "down.example", "/a?b=1", "Accept: application/json\r\n").await;
    let seen = echoed(&r);
    assert_eq!(seen.name, "errors");
    assert_eq!(seen.path, "/a", "the path is kept");
    for (field, value) in [
        ("x-code", "503"),
        ("x-format", "application/json"),
        ("x-original-uri", "/a?b=1"),
        ("x-namespace", "default"),
        ("x-ingress-name", "down"),
        ("x-service-name", "empty"),
        ("x-service-port", "80"),
    ] {
        assert_eq!(seen.header(field), Some(value), "{field}");
    }
    assert!(seen.header("x-request-id").is_some());
    assert_eq!(echoed(&get(&v, "up.example", "/", "").await).name, "web");
    assert_eq!(get(&v, "bare.example", "/", "").await.status, 503);
    assert_eq!(get(&v, "typo.example", "/", "").await.status, 503);
    let found = diagnostics(&v.config().await);
    assert!(
        has(&found, &["warning default/typo", "default-backend", "nope"]),
        "{found:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_http_errors_are_answered_by_the_error_backend() {
    let web = Echo::start("web").await.unwrap();
    let errors = Echo::start("errors").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            to("pages", "web")
                .annotation(&key("custom-http-errors"), "404,502")
                .annotation(&key("default-backend"), "errors"),
            to("dead", "dead")
                .annotation(&key("custom-http-errors"), "502")
                .annotation(&key("default-backend"), "errors"),
            to("plain", "web"),
            to("bad", "web").annotation(&key("custom-http-errors"), "404,abc"),
        ],
        &[("web", &[&web]), ("errors", &[&errors])],
    );
    // A Service whose one endpoint refuses connections: Vestibule's own 502.
    dir.write_raw(
        "svc-dead.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: dead, namespace: default}\n\
         spec:\n  ports:\n  - {name: http, port: 80}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: dead-1\n  namespace: default\n  labels: \
         {kubernetes.io/service-name: dead}\naddressType: IPv4\n\
         ports: [{name: http, port: 1}]\n\
         endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]\n",
    )
    .unwrap();
    let flags = [
        "--custom-http-errors",
        "418",
        "--default-backend-service",
        "default/errors",
    ];
    let v = Vestibule::start(dir.path(), &flags);

    // The upstream's 404: the error backend's answer instead, asked for `/`.
    let r = get(
        &v,
        "pages.example",
        "/a?status=404",
        "Accept: text/html\r\n",
    )
    .await;
    let seen = echoed(&r);
    assert_eq!(seen.name, "errors");
    assert_eq!(seen.path, "/");
    assert_eq!(seen.header("x-code"), Some("404"));
    assert_eq!(seen.header("x-original-uri"), Some("/a?status=404"));
    assert_eq!(seen.header("x-format"), Some("text/html"));
    assert_eq!(seen.header("x-service-name"), Some("web"));
    // Statuses not listed pass.
    assert_eq!(echoed(&get(&v, "pages.example", "/", "").await).name, "web");
    let r = get(&v, "pages.example", "/?status=500", "").await;
    assert_eq!(r.status, 500);
    // Vestibule's own errors too.
    let r = get(&v, "dead.example", "/", "").await;
    let seen = echoed(&r);
    assert_eq!(
        (seen.name.as_str(), seen.header("x-code")),
        ("errors", Some("502"))
    );
    // The controller-wide list, to the controller's default backend.
    let r = get(&v, "plain.example", "/?status=418", "").await;
    assert_eq!(echoed(&r).header("x-code"), Some("418"));
    // An invalid list is ignored, with an error.
    assert_eq!(get(&v, "bad.example", "/?status=404", "").await.status, 404);
    let found = diagnostics(&v.config().await);
    assert!(
        has(&found, &["error default/bad", "custom-http-errors", "abc"]),
        "{found:#?}"
    );
}
