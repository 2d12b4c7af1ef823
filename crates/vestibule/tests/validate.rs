//! `vestibule validate`: diagnostics as `namespace/name: field: message`, and the exit code.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::BIN;
use vestibule_testkit::{ManifestDir, ingress, ingress_class, service, svc};

fn validate(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN)
        .arg("validate")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_bundled_examples_are_valid() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let (code, stdout, stderr) = validate(&[examples]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("0 errors"), "{stderr}");
}

#[test]
fn invalid_objects_are_printed_with_their_field_and_exit_one() {
    let dir = ManifestDir::new().unwrap();
    let class = ingress_class("vestibule", "vestibule.dev/ingress-controller").build();
    let web = service("shop", "web").port("http", 80, 8080).build();
    let bad = ingress("shop", "bad")
        .class("vestibule")
        .host("a.example")
        .path("Regex", "/", svc("web", 80))
        .build();
    let warned = ingress("shop", "warned")
        .class("vestibule")
        .host("b.example")
        .prefix("/", svc("missing", 80))
        .build();
    dir.write("all.yaml", &[&class, &web, &bad, &warned])
        .unwrap();
    let (code, stdout, stderr) = validate(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("shop/bad: spec.rules[0].http.paths[0].pathType: pathType \"Regex\""),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("shop/warned: spec.rules[0].http.paths[0].backend.service.name: warning: Service shop/missing not found"),
        "{stdout}"
    );
    assert!(stderr.contains("1 errors, 1 warnings"), "{stderr}");
}

#[test]
fn warnings_alone_exit_zero() {
    let dir = ManifestDir::new().unwrap();
    let class = ingress_class("vestibule", "vestibule.dev/ingress-controller").build();
    let only_ingress = ingress("shop", "a")
        .class("vestibule")
        .prefix("/", svc("web", 80))
        .build();
    dir.write("a.yaml", &[&class, &only_ingress]).unwrap();
    let (code, stdout, _) = validate(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("warning: Service shop/web not found"),
        "{stdout}"
    );
}

#[test]
fn unreadable_files_are_errors() {
    let dir = ManifestDir::new().unwrap();
    dir.write_raw("broken.yaml", "kind: [").unwrap();
    let (code, stdout, _) = validate(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stdout.contains("broken.yaml: "), "{stdout}");
    let (code, _, stderr) = validate(&["/nonexistent/x.yaml"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/x.yaml"), "{stderr}");
}

#[test]
fn bad_tls_secrets_are_reported() {
    use vestibule_testkit::certs::{cert, expired, mismatched};
    use vestibule_testkit::tls_secret;
    let dir = ManifestDir::new().unwrap();
    let class = ingress_class("vestibule", "vestibule.dev/ingress-controller").build();
    let web = service("shop", "web").port("http", 80, 8080).build();
    let site = ingress("shop", "site")
        .class("vestibule")
        .host("a.example")
        .prefix("/", svc("web", 80))
        .tls(&["a.example"], "mismatched")
        .tls(&["b.example"], "expired")
        .tls(&["c.example"], "absent")
        .tls(&["d.example"], "good")
        .build();
    let bad_key = mismatched(&["a.example"]);
    let old = expired(&["b.example"]);
    let good = cert(&["d.example"]);
    let secrets = [
        tls_secret("shop", "mismatched", &bad_key.cert_pem, &bad_key.key_pem),
        tls_secret("shop", "expired", &old.cert_pem, &old.key_pem),
        tls_secret("shop", "good", &good.cert_pem, &good.key_pem),
    ];
    dir.write(
        "all.yaml",
        &[&class, &web, &site, &secrets[0], &secrets[1], &secrets[2]],
    )
    .unwrap();
    let (code, stdout, stderr) = validate(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let line_for = |secret: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("\"{secret}\"")) || l.contains(&format!("shop/{secret}")))
            .copied()
            .unwrap_or_else(|| panic!("no line for {secret}: {stdout}"))
    };
    assert!(
        line_for("mismatched").starts_with("shop/site: spec.tls[0].secretName:"),
        "{stdout}"
    );
    assert!(
        line_for("expired").starts_with("shop/site: spec.tls[1].secretName:"),
        "{stdout}"
    );
    assert!(
        line_for("absent").starts_with("shop/site: spec.tls[2].secretName:"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("\"good\"") && !stdout.contains("shop/good"),
        "{stdout}"
    );
}
