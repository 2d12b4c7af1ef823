//! HTTPS end to end over real sockets with a real TLS client: certificates picked by SNI,
//! HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2 and 1.3, session resumption, certificate rotation
//! under an open connection, the redirect from HTTP, and HSTS.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use vestibule_proxy::{ProxySettings, hsts_header};
use vestibule_testkit::certs::{TestCert, cert};
use vestibule_testkit::tls::{Session, client_config, client_config_with, connect, fetch};
use vestibule_testkit::{Echo, EchoReply, endpoint_slice, ingress, raw, service, svc, tls_secret};
use vestibule_translate::Object;

fn secret(name: &str, cert: &TestCert) -> Object {
    tls_secret("default", name, &cert.cert_pem, &cert.key_pem).into()
}

fn echo_name(reply: &vestibule_testkit::tls::Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.body);
    serde_json::from_str::<EchoReply>(&reply.body).unwrap().name
}

/// `a.example` and `*.w.example` with certificates of their own, `plain.example` without TLS.
struct Site {
    a: TestCert,
    w: TestCert,
    objects: Vec<Object>,
    _echoes: Vec<Echo>,
}

async fn site() -> Site {
    let a_echo = Echo::start("a").await.unwrap();
    let w_echo = Echo::start("w").await.unwrap();
    let plain_echo = Echo::start("plain").await.unwrap();
    let a = cert(&["a.example"]);
    let w = cert(&["*.w.example"]);
    let mut objects = world(
        vec![
            ingress("default", "a")
                .host("a.example")
                .prefix("/", svc("a", 80))
                .tls(&["a.example"], "a-tls"),
            ingress("default", "w")
                .host("*.w.example")
                .prefix("/", svc("w", 80))
                .tls(&["*.w.example"], "w-tls"),
            ingress("default", "plain")
                .host("plain.example")
                .prefix("/", svc("plain", 80)),
        ],
        &[
            ("a", &[&a_echo]),
            ("w", &[&w_echo]),
            ("plain", &[&plain_echo]),
        ],
    );
    objects.push(secret("a-tls", &a));
    objects.push(secret("w-tls", &w));
    Site {
        a,
        w,
        objects,
        _echoes: vec![a_echo, w_echo, plain_echo],
    }
}

#[tokio::test]
async fn sni_picks_the_certificate_exact_then_wildcard_then_default() {
    let site = site().await;
    let proxy = Proxy::start(site.objects.clone()).await;
    let config = client_config(&["http/1.1"]);
    let presented = |name: Option<&'static str>| {
        let config = config.clone();
        let addr = proxy.https;
        async move { connect(addr, name, &config).await.unwrap().certificate }
    };
    assert_eq!(presented(Some("a.example")).await, site.a.der);
    assert_eq!(presented(Some("A.EXAMPLE")).await, site.a.der);
    assert_eq!(presented(Some("x.w.example")).await, site.w.der);
    // One label only: a deeper name is not covered by the wildcard.
    let deep = presented(Some("y.x.w.example")).await;
    let unknown = presented(Some("unknown.example")).await;
    let no_sni = presented(None).await;
    let plain = presented(Some("plain.example")).await;
    for other in [&deep, &unknown, &plain] {
        assert_eq!(
            other, &no_sni,
            "names without a certificate get the default"
        );
    }
    assert_ne!(no_sni, site.a.der);
    assert_ne!(no_sni, site.w.der);
    assert!(!no_sni.is_empty());

    // And the request inside is routed by its own host, as on plain HTTP.
    for (sni, host, want) in [
        ("a.example", "a.example", "a"),
        ("x.w.example", "x.w.example", "w"),
        ("plain.example", "plain.example", "plain"),
    ] {
        let mut session = Session::open(proxy.https, Some(sni), &config)
            .await
            .unwrap();
        assert!(!session.is_http2());
        let reply = session.get(host, "/").await.unwrap();
        assert_eq!(echo_name(&reply), want, "{host}");
    }
}

#[tokio::test]
async fn alpn_negotiates_http2_and_requests_are_routed_by_authority() {
    let site = site().await;
    let proxy = Proxy::start(site.objects.clone()).await;
    let config = client_config(&["h2", "http/1.1"]);
    let mut session = Session::open(proxy.https, Some("a.example"), &config)
        .await
        .unwrap();
    assert_eq!(session.alpn.as_deref(), Some(&b"h2"[..]));
    assert!(session.is_http2());
    let reply = session.get("a.example", "/x").await.unwrap();
    assert_eq!(echo_name(&reply), "a");
    let echoed: EchoReply = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(echoed.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echoed.host.as_deref(), Some("a.example"));
    // The same connection carries a request for another host: routing follows `:authority`,
    // not the name the handshake was for.
    let reply = session.get("b.w.example", "/").await.unwrap();
    assert_eq!(echo_name(&reply), "w");

    let http1_only = client_config(&["http/1.1"]);
    let mut session = Session::open(proxy.https, Some("a.example"), &http1_only)
        .await
        .unwrap();
    assert_eq!(session.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let reply = session.get("a.example", "/").await.unwrap();
    assert_eq!(echo_name(&reply), "a");
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_both_served_and_sessions_resume() {
    let site = site().await;
    let proxy = Proxy::start(site.objects.clone()).await;
    for (versions, want) in [
        (
            &[&rustls::version::TLS13][..],
            rustls::ProtocolVersion::TLSv1_3,
        ),
        (
            &[&rustls::version::TLS12][..],
            rustls::ProtocolVersion::TLSv1_2,
        ),
    ] {
        let config = client_config_with(&["http/1.1"], versions);
        let mut first = Session::open(proxy.https, Some("a.example"), &config)
            .await
            .unwrap();
        assert!(!first.resumed);
        // A TLS 1.3 ticket arrives after the handshake; a request makes sure it was read.
        assert_eq!(echo_name(&first.get("a.example", "/").await.unwrap()), "a");
        let second = connect(proxy.https, Some("a.example"), &config)
            .await
            .unwrap();
        assert_eq!(second.version, Some(want));
        assert!(second.resumed, "{want:?}: the second handshake resumed");
        assert_eq!(second.certificate, site.a.der);
    }
}

#[tokio::test]
async fn a_rotated_certificate_reaches_new_handshakes_while_open_connections_keep_working() {
    let site = site().await;
    let proxy = Proxy::start(site.objects.clone()).await;
    let config = client_config(&["h2"]);
    let mut open = Session::open(proxy.https, Some("a.example"), &config)
        .await
        .unwrap();
    assert_eq!(open.certificate, site.a.der);
    assert_eq!(echo_name(&open.get("a.example", "/").await.unwrap()), "a");

    let renewed = cert(&["a.example"]);
    let mut objects = site.objects.clone();
    objects
        .retain(|o| !matches!(o, Object::Secret(s) if s.metadata.name.as_deref() == Some("a-tls")));
    objects.push(secret("a-tls", &renewed));
    proxy.install(objects);

    let fresh = connect(proxy.https, Some("a.example"), &client_config(&["h2"]))
        .await
        .unwrap();
    assert_eq!(fresh.certificate, renewed.der);
    for _ in 0..3 {
        let reply = open.get("a.example", "/").await.unwrap();
        assert_eq!(
            echo_name(&reply),
            "a",
            "the open HTTP/2 connection still serves"
        );
    }
    // Other hosts were not touched.
    let w = connect(proxy.https, Some("x.w.example"), &config)
        .await
        .unwrap();
    assert_eq!(w.certificate, site.w.der);
}

#[tokio::test]
async fn plain_http_for_a_tls_host_is_redirected_with_path_and_query() {
    let site = site().await;
    let proxy = Proxy::start(site.objects.clone()).await;
    let response = raw::get(proxy.addr, "a.example:8080", "/shop/items?page=2&sort=asc")
        .await
        .unwrap();
    assert_eq!(response.status, 308);
    assert_eq!(
        response.header("location"),
        Some("https://a.example/shop/items?page=2&sort=asc")
    );
    assert_eq!(response.header("server"), Some("vestibule"));
    // A wildcard TLS host redirects to the name that was asked for.
    let response = raw::get(proxy.addr, "Deep.W.Example", "/").await.unwrap();
    assert_eq!(response.status, 308);
    assert_eq!(response.header("location"), Some("https://deep.w.example/"));
    // No TLS, no redirect.
    let response = raw::get(proxy.addr, "plain.example", "/").await.unwrap();
    assert_eq!(response.status, 200);

    // Behind a port mapping, the redirect names the HTTPS port clients reach.
    let settings = ProxySettings {
        https_redirect_port: 8443,
        ..ProxySettings::default()
    };
    let mapped = Proxy::start_with(
        site.objects.clone(),
        settings,
        std::time::Duration::from_secs(5),
    )
    .await;
    let response = raw::get(mapped.addr, "a.example", "/p?q=1").await.unwrap();
    assert_eq!(
        response.header("location"),
        Some("https://a.example:8443/p?q=1")
    );
}

#[tokio::test]
async fn redirect_annotations_and_acme_challenges() {
    let web = Echo::start("web").await.unwrap();
    let solver = Echo::start("solver").await.unwrap();
    let optout = cert(&["optout.example"]);
    let secured = cert(&["secured.example"]);
    let mut objects = world(
        vec![
            ingress("default", "optout")
                .annotation("nginx.ingress.kubernetes.io/ssl-redirect", "false")
                .host("optout.example")
                .prefix("/", svc("web", 80))
                .tls(&["optout.example"], "optout-tls"),
            ingress("default", "forced")
                .annotation("nginx.ingress.kubernetes.io/force-ssl-redirect", "true")
                .host("forced.example")
                .prefix("/", svc("web", 80)),
            ingress("default", "secured")
                .host("secured.example")
                .prefix("/", svc("web", 80))
                .tls(&["secured.example"], "secured-tls"),
            // What cert-manager creates for an HTTP-01 challenge: an Exact path on the host.
            ingress("default", "cm-acme-http-solver")
                .host("secured.example")
                .exact("/.well-known/acme-challenge/t0ken", svc("solver", 80)),
        ],
        &[("web", &[&web]), ("solver", &[&solver])],
    );
    objects.push(secret("optout-tls", &optout));
    objects.push(secret("secured-tls", &secured));
    let proxy = Proxy::start(objects).await;

    let response = raw::get(proxy.addr, "optout.example", "/").await.unwrap();
    assert_eq!(
        response.status, 200,
        "ssl-redirect: false serves plain HTTP"
    );
    assert_eq!(response.header("strict-transport-security"), None);

    let response = raw::get(proxy.addr, "forced.example", "/a?b")
        .await
        .unwrap();
    assert_eq!(response.status, 308);
    assert_eq!(
        response.header("location"),
        Some("https://forced.example/a?b")
    );

    let response = raw::get(
        proxy.addr,
        "secured.example",
        "/.well-known/acme-challenge/t0ken",
    )
    .await
    .unwrap();
    assert_eq!(
        response.status, 200,
        "the HTTP-01 solver is reached over HTTP"
    );
    assert_eq!(solver.hits(), 1);
    let response = raw::get(proxy.addr, "secured.example", "/anything")
        .await
        .unwrap();
    assert_eq!(response.status, 308);
}

#[tokio::test]
async fn hsts_is_sent_on_https_for_tls_hosts_only() {
    let site = site().await;
    let proxy = Proxy::start(site.objects.clone()).await;
    let config = client_config(&["h2", "http/1.1"]);
    let mut a = Session::open(proxy.https, Some("a.example"), &config)
        .await
        .unwrap();
    let reply = a.get("a.example", "/").await.unwrap();
    assert_eq!(
        reply.headers["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    // A host without TLS, reached over HTTPS with the default certificate: no HSTS, which
    // would otherwise pin browsers to a certificate that is not the host's.
    let mut plain = Session::open(proxy.https, Some("plain.example"), &config)
        .await
        .unwrap();
    let reply = plain.get("plain.example", "/").await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(!reply.headers.contains_key("strict-transport-security"));

    // Never on plain HTTP.
    let response = raw::get(proxy.addr, "plain.example", "/").await.unwrap();
    assert_eq!(response.header("strict-transport-security"), None);

    // Configurable, and off when asked.
    for (hsts, want) in [
        (
            Some(hsts_header(600, false, true)),
            Some("max-age=600; preload"),
        ),
        (None, None),
    ] {
        let settings = ProxySettings {
            hsts,
            ..ProxySettings::default()
        };
        let proxy = Proxy::start_with(
            site.objects.clone(),
            settings,
            std::time::Duration::from_secs(5),
        )
        .await;
        let mut a = Session::open(proxy.https, Some("a.example"), &config)
            .await
            .unwrap();
        let reply = a.get("a.example", "/").await.unwrap();
        assert_eq!(
            reply
                .headers
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            want
        );
    }
}

/// A backend that answers every request with `response`, verbatim, then closes.
async fn fixed_backend(response: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn hsts_is_added_to_own_responses_and_a_backends_own_policy_is_kept() {
    let own_policy = fixed_backend(
        "HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=60\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\nok",
    )
    .await;
    let a = cert(&["a.example"]);
    let mut objects = world(
        vec![
            ingress("default", "a")
                .host("a.example")
                .prefix("/", svc("gone", 80))
                .prefix("/own", svc("own", 80))
                .tls(&["a.example"], "a-tls"),
        ],
        &[],
    );
    objects.push(secret("a-tls", &a));
    objects.push(
        service("default", "own")
            .port("http", 80, 8080)
            .build()
            .into(),
    );
    objects.push(
        endpoint_slice("default", "own-1", "own")
            .port("http", own_policy.port().into())
            .ready(&own_policy.ip().to_string())
            .build()
            .into(),
    );
    let proxy = Proxy::start(objects).await;
    let config = client_config(&["http/1.1"]);
    let mut session = Session::open(proxy.https, Some("a.example"), &config)
        .await
        .unwrap();
    let reply = session.get("a.example", "/").await.unwrap();
    assert_eq!(reply.status, 503, "the Service does not exist");
    assert_eq!(
        reply.headers["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    let reply = fetch(proxy.https, Some("a.example"), &config, "a.example", "/own")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let values: Vec<_> = reply
        .headers
        .get_all("strict-transport-security")
        .iter()
        .collect();
    assert_eq!(values, ["max-age=60"]);
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_dropped_and_others_are_served() {
    let site = site().await;
    let settings = ProxySettings {
        tls_handshake_timeout: std::time::Duration::from_millis(300),
        ..ProxySettings::default()
    };
    let proxy = Proxy::start_with(
        site.objects.clone(),
        settings,
        std::time::Duration::from_secs(5),
    )
    .await;
    let stalled = tokio::net::TcpStream::connect(proxy.https).await.unwrap();
    // Not TLS at all: the handshake fails at once rather than at the timeout.
    let garbage = raw::send(
        proxy.https,
        "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(
        garbage.is_err(),
        "plain HTTP on the HTTPS port gets no HTTP response"
    );
    let config = client_config(&["http/1.1"]);
    let mut session = Session::open(proxy.https, Some("a.example"), &config)
        .await
        .unwrap();
    assert_eq!(
        echo_name(&session.get("a.example", "/").await.unwrap()),
        "a"
    );
    // The stalled connection is closed by the server once the handshake deadline passes.
    let mut stalled = stalled;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stalled, &mut buf),
    )
    .await
    .expect("the server closes a stalled handshake");
    assert!(matches!(read, Ok(0) | Err(_)));
}
