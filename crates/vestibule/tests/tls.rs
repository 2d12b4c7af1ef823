//! HTTPS through `vestibule run` as a user runs it: TLS Secrets in manifest files, rotated by
//! editing the file, a broken Secret keeping the last good certificate, the default
//! certificate flag, redirect and HSTS flags, and what `/debug/config` says about it all.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::{Duration, Instant};

use serde_json::Value;
use vestibule_testkit::certs::{TestCert, cert, expiring_in, mismatched};
use vestibule_testkit::tls::{Session, client_config, connect, fetch};
use vestibule_testkit::{Echo, EchoReply, ManifestDir, ingress, raw, svc, tls_secret};

fn write_secret(dir: &ManifestDir, file: &str, name: &str, cert: &TestCert) {
    let secret = tls_secret("default", name, &cert.cert_pem, &cert.key_pem);
    dir.write(file, &[&secret]).unwrap();
}

/// `shop.example` routed to the echo `web`, with TLS from the Secret `shop-tls`.
fn write_shop(dir: &ManifestDir, web: &Echo) {
    write_world(
        dir,
        vec![
            ingress("default", "site")
                .host("shop.example")
                .prefix("/", svc("web", 80))
                .tls(&["shop.example"], "shop-tls"),
        ],
        &[("web", &[web])],
    );
}

fn diagnostics_of(config: &Value) -> Vec<String> {
    config["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{} {}: {}", d["object"], d["field"], d["message"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_by_editing_the_secret_and_a_broken_one_keeps_the_last_good() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_shop(&dir, &web);
    let first = cert(&["shop.example"]);
    write_secret(&dir, "secret.yaml", "shop-tls", &first);
    let v = Vestibule::start(dir.path(), &[]);

    let config = client_config(&["h2", "http/1.1"]);
    let mut open = Session::open(v.https, Some("shop.example"), &config)
        .await
        .unwrap();
    assert!(open.is_http2());
    assert_eq!(open.certificate, first.der);
    let reply = open.get("shop.example", "/").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        serde_json::from_str::<EchoReply>(&reply.body).unwrap().name,
        "web"
    );

    // Renewal: the file is rewritten, as cert-manager rewrites the Secret.
    let second = cert(&["shop.example"]);
    let generation = v.generation();
    write_secret(&dir, "secret.yaml", "shop-tls", &second);
    v.wait_generation(generation);
    // A new client: a resumed session would report the certificate of the session it resumed.
    let fresh = connect(v.https, Some("shop.example"), &client_config(&["h2"]))
        .await
        .unwrap();
    assert_eq!(fresh.certificate, second.der);
    let reply = open.get("shop.example", "/").await.unwrap();
    assert_eq!(
        reply.status, 200,
        "the connection opened before the change still works"
    );

    // A bad update (a key of another certificate): reported, and the host keeps serving the
    // certificate it had.
    let generation = v.generation();
    write_secret(
        &dir,
        "secret.yaml",
        "shop-tls",
        &mismatched(&["shop.example"]),
    );
    v.wait_generation(generation);
    let after = connect(v.https, Some("shop.example"), &client_config(&["h2"]))
        .await
        .unwrap();
    assert_eq!(after.certificate, second.der);
    let config_json = v.config().await;
    let diagnostics = diagnostics_of(&config_json);
    assert!(
        diagnostics
            .iter()
            .any(|d| d.contains("spec.tls[0].secretName") && d.contains("shop-tls")),
        "{diagnostics:#?}"
    );

    // /debug/config says which certificate serves the host, and where it came from.
    let tls = &config_json["tls"];
    let host = &tls["hosts"][0];
    assert_eq!(host["host"], "shop.example");
    assert_eq!(host["default"], false);
    assert_eq!(host["certificate"]["source"], "default/shop-tls");
    assert_eq!(host["certificate"]["dns_names"][0], "shop.example");
    assert!(
        host["certificate"]["not_after"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(tls["earliest_expiry"], host["certificate"]["not_after"]);
    assert_eq!(
        tls["default_certificate"]["source"],
        "(generated at start-up)"
    );

    // Deleting the Secret: still the last good certificate, and a warning that it is missing.
    let generation = v.generation();
    dir.remove("secret.yaml").unwrap();
    v.wait_generation(generation);
    let after = connect(v.https, Some("shop.example"), &client_config(&["h2"]))
        .await
        .unwrap();
    assert_eq!(after.certificate, second.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_certificate_comes_from_the_flag_or_is_generated() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "site")
                .host("shop.example")
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web])],
    );
    let fallback = cert(&["fallback.example"]);
    write_secret(&dir, "default-cert.yaml", "fallback", &fallback);

    let generated = Vestibule::start(dir.path(), &[]);
    let logs = generated.logs();
    assert!(
        logs.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("self-signed"))),
        "the generated certificate is logged as such"
    );
    let config = client_config(&["http/1.1"]);
    let presented = connect(generated.https, None, &config).await.unwrap();
    assert_ne!(presented.certificate, fallback.der);
    // The generated certificate, recognisable by its subject in the DER.
    let subject = b"Vestibule default certificate";
    assert!(
        presented
            .certificate
            .windows(subject.len())
            .any(|w| w == subject),
        "the generated certificate is presented"
    );
    let tls = &generated.config().await["tls"];
    assert_eq!(tls["hosts_without_tls"][0], "shop.example");
    assert_eq!(
        tls["default_certificate"]["subject"],
        "CN=Vestibule default certificate"
    );

    let flagged = Vestibule::start(
        dir.path(),
        &["--default-ssl-certificate", "default/fallback"],
    );
    for name in [None, Some("unknown.example"), Some("shop.example")] {
        let presented = connect(flagged.https, name, &config).await.unwrap();
        assert_eq!(presented.certificate, fallback.der, "{name:?}");
    }
    let mut session = Session::open(flagged.https, None, &config).await.unwrap();
    let reply = session.get("shop.example", "/").await.unwrap();
    assert_eq!(reply.status, 200);
    let tls = &flagged.config().await["tls"];
    assert_eq!(tls["default_certificate"]["source"], "default/fallback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_port_and_hsts_follow_the_flags() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_shop(&dir, &web);
    write_secret(&dir, "secret.yaml", "shop-tls", &cert(&["shop.example"]));
    let v = Vestibule::start(
        dir.path(),
        &[
            "--https-port-for-redirects",
            "8443",
            "--hsts-max-age",
            "300",
            "--hsts-include-subdomains",
            "false",
        ],
    );
    let response = raw::get(v.http, "shop.example", "/cart?id=7")
        .await
        .unwrap();
    assert_eq!(response.status, 308);
    assert_eq!(
        response.header("location"),
        Some("https://shop.example:8443/cart?id=7")
    );
    let config = client_config(&["h2"]);
    let mut session = Session::open(v.https, Some("shop.example"), &config)
        .await
        .unwrap();
    let reply = session.get("shop.example", "/").await.unwrap();
    assert_eq!(reply.headers["strict-transport-security"], "max-age=300");

    let off = Vestibule::start(dir.path(), &["--hsts", "false"]);
    let reply = fetch(
        off.https,
        Some("shop.example"),
        &config,
        "shop.example",
        "/",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    assert!(!reply.headers.contains_key("strict-transport-security"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_secret_with_string_data_is_served() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_shop(&dir, &web);
    let certificate = cert(&["shop.example"]);
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    // As people write it by hand: PEM text under stringData rather than base64 under data.
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: shop-tls\n  namespace: default\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&certificate.cert_pem),
        indent(&certificate.key_pem)
    );
    dir.write_raw("secret.yaml", &yaml).unwrap();
    let v = Vestibule::start(dir.path(), &[]);
    let config = client_config(&["http/1.1"]);
    let mut session = Session::open(v.https, Some("shop.example"), &config)
        .await
        .unwrap();
    assert_eq!(session.certificate, certificate.der);
    assert_eq!(session.get("shop.example", "/").await.unwrap().status, 200);
    assert_eq!(diagnostics_of(&v.config().await), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_expires_while_served_is_replaced_without_any_change() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_shop(&dir, &web);
    let fallback = cert(&["fallback.example"]);
    write_secret(&dir, "fallback.yaml", "fallback", &fallback);
    // Long enough for the start and the first handshake on a busy machine.
    let lifetime = 8;
    let short = expiring_in(&["shop.example"], lifetime);
    let expires = Instant::now() + Duration::from_secs(lifetime as u64);
    write_secret(&dir, "secret.yaml", "shop-tls", &short);
    let v = Vestibule::start(
        dir.path(),
        &["--default-ssl-certificate", "default/fallback"],
    );
    let config = client_config(&["http/1.1"]);
    let first = connect(v.https, Some("shop.example"), &config)
        .await
        .unwrap();
    assert!(
        Instant::now() < expires,
        "the first handshake came after the certificate expired"
    );
    assert_eq!(first.certificate, short.der, "served while valid");

    // No file changes from here on: only the clock moves. Once the certificate has expired,
    // the host gets the default certificate, as it would from a fresh start.
    let deadline = expires + Duration::from_secs(5);
    loop {
        let presented = connect(v.https, Some("shop.example"), &config)
            .await
            .unwrap();
        if presented.certificate == fallback.der {
            assert!(
                Instant::now() + Duration::from_secs(1) >= expires,
                "replaced before it expired"
            );
            break;
        }
        assert_eq!(presented.certificate, short.der);
        assert!(
            Instant::now() < deadline,
            "the expired certificate is still served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config = v.config().await;
    let diagnostics = diagnostics_of(&config);
    assert!(
        diagnostics.iter().any(|d| d.contains("expired")),
        "the expiry is reported: {diagnostics:#?}"
    );
}
