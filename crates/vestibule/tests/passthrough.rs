//! `ssl-passthrough` through `vestibule run --enable-ssl-passthrough`, as Argo CD's users run
//! it: the host's HTTPS connections reach its Service untouched (the backend's own certificate,
//! every byte, both directions, half-closes), every other host is terminated as before, plain
//! HTTP for the host is still routed, and bad or unknown hellos harm nobody else.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vestibule_testkit::certs::{TestCert, cert};
use vestibule_testkit::misbehave::TlsEcho;
use vestibule_testkit::tls::{Session, client_config, client_hello};
use vestibule_testkit::{Echo, ManifestDir, endpoint_slice, ingress, service, svc, tls_secret};

const PASS: &str = "nginx.ingress.kubernetes.io/ssl-passthrough";

/// Service `name` (port `https` 443) with one endpoint, `addr`.
fn write_tls_service(dir: &ManifestDir, name: &str, addr: SocketAddr) {
    let service = service("default", name).port("https", 443, 8443).build();
    let slice = endpoint_slice("default", &format!("{name}-0"), name)
        .port("https", i32::from(addr.port()))
        .ready(&addr.ip().to_string())
        .build();
    dir.write(&format!("svc-{name}.yaml"), &[&service, &slice])
        .unwrap();
}

fn write_secret(dir: &ManifestDir, name: &str, cert: &TestCert) {
    let secret = tls_secret("default", name, &cert.cert_pem, &cert.key_pem);
    dir.write(&format!("secret-{name}.yaml"), &[&secret])
        .unwrap();
}

/// `argo.example`: `/` to the TLS backend `argo`, `/api` to the echo `web`, with a TLS
/// section of its own (the certificate served when it is not passed through) and plain HTTP
/// not redirected;
/// `shop.example` terminated here, to `web`.
fn argo_world(dir: &ManifestDir, web: &Echo, passthrough: bool) {
    let mut argo = ingress("default", "argo")
        .host("argo.example")
        .prefix("/", svc("argo", 443))
        .prefix("/api", svc("web", 80))
        .tls(&["argo.example"], "argo-tls")
        .annotation("nginx.ingress.kubernetes.io/ssl-redirect", "false");
    if passthrough {
        argo = argo.annotation(PASS, "true");
    }
    let shop = ingress("default", "shop")
        .host("shop.example")
        .prefix("/", svc("web", 80))
        .tls(&["shop.example"], "shop-tls");
    write_world(dir, vec![argo, shop], &[("web", &[web])]);
}

/// A TCP backend that reads each connection to its end, then writes back everything it
/// read and closes: what arrives at the client is what the backend was sent, and arrives
/// only if the client's half-close reached the backend.
struct Mirror {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Mirror {
    async fn start() -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    if stream.read_to_end(&mut got).await.is_ok() {
                        let _ = stream.write_all(&got).await;
                    }
                });
            }
        });
        Mirror { addr, accepted }
    }
}

/// Sends `bytes` to the HTTPS listener, closes the sending side, and reads until the
/// connection closes (an error counts as closed).
async fn send_and_half_close(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got));
    let _ = read.await.expect("the connection ends");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_through_host_shows_its_backends_certificate_and_others_are_terminated() {
    let web = Echo::start("web").await.unwrap();
    let argo_cert = cert(&["argo.example"]);
    let argo = TlsEcho::start("argo", &argo_cert).await.unwrap();
    let (ours, shop) = (cert(&["argo.example"]), cert(&["shop.example"]));
    let dir = ManifestDir::new().unwrap();
    argo_world(&dir, &web, true);
    write_tls_service(&dir, "argo", argo.addr());
    write_secret(&dir, "argo-tls", &ours);
    write_secret(&dir, "shop-tls", &shop);
    let v = Vestibule::start(dir.path(), &["--enable-ssl-passthrough"]);
    let tls = client_config(&["h2", "http/1.1"]);

    // The backend's handshake, certificate and ALPN; its answer.
    let mut session = Session::open(v.https, Some("argo.example"), &tls)
        .await
        .unwrap();
    assert_eq!(session.certificate, argo_cert.der);
    assert!(!session.is_http2(), "the backend offers http/1.1 only");
    let reply = session.get("argo.example", "/anything").await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("\"argo\""), "{}", reply.body);
    // Another host on the same listener: terminated here, with our certificate, over h2.
    let mut session = Session::open(v.https, Some("shop.example"), &tls)
        .await
        .unwrap();
    assert_eq!(session.certificate, shop.der);
    assert!(session.is_http2());
    let reply = session.get("shop.example", "/").await.unwrap();
    assert!(reply.body.contains("\"web\""), "{}", reply.body);
    // Plain HTTP for the passed-through host is routed as before.
    assert_eq!(
        echoed(&get(&v, "argo.example", "/api/x", "").await).name,
        "web"
    );
    let said = diagnostics(&v.config().await);
    assert!(
        has(&said, &["default/argo", "paths[1]", "plain HTTP only"]),
        "{said:#?}"
    );
    let metrics = v.metrics().await;
    assert!(
        metrics
            .contains("vestibule_connections_total{listener=\"https\",protocol=\"passthrough\"} 1"),
        "{metrics}"
    );

    // Not a TLS hello: closed, and nothing else is disturbed.
    let answer =
        send_and_half_close(v.https, b"GET / HTTP/1.1\r\nHost: argo.example\r\n\r\n").await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    let session = Session::open(v.https, Some("argo.example"), &tls)
        .await
        .unwrap();
    assert_eq!(session.certificate, argo_cert.der);

    // The annotation removed: the host is terminated here from the next connection on.
    let generation = v.generation();
    argo_world(&dir, &web, false);
    v.wait_generation(generation);
    let mut session = Session::open(v.https, Some("argo.example"), &tls)
        .await
        .unwrap();
    assert_eq!(session.certificate, ours.der);
    // Its `/` is now proxied: the TLS backend cannot read plain HTTP.
    let reply = session.get("argo.example", "/api/x").await.unwrap();
    assert!(reply.body.contains("\"web\""), "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_pass_untouched_both_ways_and_a_half_close_is_passed_on() {
    let web = Echo::start("web").await.unwrap();
    let mirror = Mirror::start().await;
    // An endpoint that refuses connections: a port just freed.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    let dir = ManifestDir::new().unwrap();
    let pass = |name: &str, service: &str| {
        ingress("default", name)
            .annotation(PASS, "true")
            .host(&format!("{name}.example"))
            .prefix("/", svc(service, 443))
    };
    write_world(
        &dir,
        vec![pass("raw", "mirror"), pass("gone", "gone")],
        &[("web", &[&web])],
    );
    write_tls_service(&dir, "mirror", mirror.addr);
    write_tls_service(&dir, "gone", gone_addr);
    let v = Vestibule::start(dir.path(), &["--enable-ssl-passthrough"]);

    // A hello without a server name is never passed through.
    let no_name = send_and_half_close(v.https, &client_hello(None)).await;
    assert!(
        !no_name.is_empty(),
        "answered by our own TLS, an alert at least"
    );
    // An endpoint that refuses: the client's connection is closed, nothing else happens.
    assert!(
        send_and_half_close(v.https, &client_hello(Some("gone.example")))
            .await
            .is_empty()
    );
    assert_eq!(mirror.accepted.load(Ordering::SeqCst), 0);

    // The hello and whatever follows it reach the backend byte for byte; the backend sees
    // the client's half-close, and its answer still reaches the client after it.
    let mut sent = client_hello(Some("raw.example"));
    sent.extend_from_slice(b"then anything at all: \x00\xff\r\n");
    sent.extend(std::iter::repeat_n(7u8, 200_000));
    assert_eq!(send_and_half_close(v.https, &sent).await, sent);
    assert_eq!(mirror.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_the_annotation_is_a_warning_and_tls_is_terminated() {
    let web = Echo::start("web").await.unwrap();
    let argo = TlsEcho::start("argo", &cert(&["argo.example"]))
        .await
        .unwrap();
    let ours = cert(&["argo.example"]);
    let dir = ManifestDir::new().unwrap();
    argo_world(&dir, &web, true);
    write_tls_service(&dir, "argo", argo.addr());
    write_secret(&dir, "argo-tls", &ours);
    write_secret(&dir, "shop-tls", &cert(&["shop.example"]));
    let v = Vestibule::start(dir.path(), &[]);

    let session = Session::open(v.https, Some("argo.example"), &client_config(&["h2"]))
        .await
        .unwrap();
    assert_eq!(session.certificate, ours.der);
    let said = diagnostics(&v.config().await);
    assert!(
        has(
            &said,
            &[
                "warning default/argo",
                "ssl-passthrough",
                "--enable-ssl-passthrough"
            ]
        ),
        "{said:#?}"
    );
    assert_eq!(argo.connections(), 0);
}
