//! "TLS": certificates from Secrets bound to host names by SNI, bad Secrets reported and
//! replaced by the last good certificate or the default, the default certificate, the
//! ssl-redirect annotations, and certificate expiry as operators see it.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use vestibule_model::{CertificateRef, HostPattern, KeyFormat, Target};
use vestibule_testkit::certs::{self, KeyEncoding, TestCert, Validity};
use vestibule_testkit::fixtures::IngressBuilder;
use vestibule_testkit::{ingress, svc, tls_secret};
use vestibule_translate::{
    CertMemory, Compiled, Context, Object, Options, Severity, Snapshot, unix_now,
};

const NS: &str = "default";
const DAY: i64 = 24 * 60 * 60;

/// Our class plus a Service `web` with one endpoint.
fn world() -> Vec<Object> {
    let mut objects = vec![our_class()];
    objects.extend(backend(NS, "web", "10.0.0.1"));
    objects
}

/// An Ingress of our class in `default`.
fn ing(name: &str) -> IngressBuilder {
    ingress(NS, name).class("vestibule")
}

/// An Ingress serving `/` of `host` from `web`, with TLS for `host` from Secret `secret`.
fn site(name: &str, host: &str, secret: &str) -> IngressBuilder {
    ing(name)
        .host(host)
        .prefix("/", svc("web", 80))
        .tls(&[host], secret)
}

fn secret_of(name: &str, cert: &TestCert) -> Secret {
    tls_secret(NS, name, &cert.cert_pem, &cert.key_pem)
}

fn secret(name: &str, cert: &TestCert) -> Object {
    o(secret_of(name, cert))
}

/// A `kubernetes.io/tls` Secret whose `tls.crt` holds `crt` verbatim.
fn secret_with_crt(name: &str, crt: &str) -> Object {
    let key = certs::cert(&["x.example"]).key_pem;
    o(tls_secret(NS, name, crt, &key))
}

fn objects(extra: impl IntoIterator<Item = Object>) -> Vec<Object> {
    let mut objects = world();
    objects.extend(extra);
    objects
}

/// Compiles at `now` (Unix seconds) with the memory of an earlier compile.
fn compile_at(objects: &[Object], options: &Options, memory: &CertMemory, now: i64) -> Compiled {
    vestibule_translate::compile_with(
        &Snapshot::from_objects(objects.to_vec()),
        Context {
            options,
            memory,
            now,
        },
    )
}

fn compile_now(objects: &[Object]) -> Compiled {
    compile_at(
        objects,
        &Options::default(),
        &CertMemory::default(),
        unix_now(),
    )
}

/// Which certificate a handshake for `server_name` gets, by label: the label of the test
/// certificate whose DER is the served leaf, `default` for the default certificate.
fn served(c: &Compiled, server_name: Option<&str>, known: &[(&str, &TestCert)]) -> String {
    let tls = c.table.tls();
    match tls.for_server_name(server_name) {
        CertificateRef::Default => "default".to_owned(),
        CertificateRef::Index(i) => {
            let certificate = tls
                .certificate(i)
                .unwrap_or_else(|| panic!("{server_name:?} is bound to index {i}, out of range"));
            let leaf = &certificate.chain[0];
            known
                .iter()
                .find(|(_, cert)| cert.der == *leaf)
                .map_or_else(
                    || format!("an unknown certificate ({:?})", certificate.info),
                    |(label, _)| (*label).to_owned(),
                )
        }
    }
}

/// The one diagnostic at `field`.
fn diagnostic<'c>(c: &'c Compiled, field: &str) -> &'c vestibule_translate::Diagnostic {
    let at: Vec<_> = c
        .report
        .diagnostics
        .iter()
        .filter(|d| d.field == field)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "diagnostics at {field}: {:#?}",
        c.report.diagnostics
    );
    at[0]
}

fn vhost_tls(c: &Compiled, host: &str) -> bool {
    c.table
        .virtual_host(host)
        .unwrap_or_else(|| panic!("no virtual host serves {host}"))
        .tls
}

/// Whether a plain-HTTP request for `host` + `path` is redirected to HTTPS.
fn redirects(c: &Compiled, host: &str, path: &str) -> bool {
    let lookup = c.table.lookup(host, path);
    let Target::Route(route) = lookup.target else {
        panic!("{host}{path} matches no route: {:?}", lookup.target);
    };
    route.redirects_http(lookup.vhost.expect("a matched route has a virtual host"))
}

fn host(pattern: &str) -> HostPattern {
    HostPattern::parse(pattern).unwrap()
}

#[test]
fn sni_picks_the_exact_then_the_wildcard_certificate_and_the_default_for_other_names() {
    let a = certs::cert(&["a.example"]);
    let w = certs::cert(&["*.w.example"]);
    let c = compile_now(&objects([
        o(site("exact", "a.example", "a-tls").build()),
        o(site("wild", "*.w.example", "w-tls").build()),
        o(ing("plain")
            .host("plain.example")
            .prefix("/", svc("web", 80))
            .build()),
        secret("a-tls", &a),
        secret("w-tls", &w),
    ]));
    assert_eq!(findings(&c), Vec::<String>::new());
    let known = [("a", &a), ("w", &w)];
    for (name, want) in [
        (Some("a.example"), "a"),
        (Some("A.Example."), "a"),
        (Some("b.w.example"), "w"),
        (Some("other.w.example"), "w"),
        // A wildcard covers exactly one label.
        (Some("c.b.w.example"), "default"),
        (Some("w.example"), "default"),
        (Some("plain.example"), "default"),
        (Some("unknown.example"), "default"),
        // A client connecting by IP address sends no server name.
        (None, "default"),
    ] {
        assert_eq!(served(&c, name, &known), want, "server name {name:?}");
    }

    let tls = c.table.tls();
    assert_eq!(tls.certificates().len(), 2);
    let CertificateRef::Index(i) = tls.for_server_name(Some("a.example")) else {
        unreachable!("checked above");
    };
    let info = &tls.certificate(i).unwrap().info;
    assert_eq!(info.dns_names, ["a.example"]);
    assert_eq!(info.source, "default/a-tls");
    assert_eq!(tls.configured_default(), None);

    assert!(vhost_tls(&c, "a.example"));
    assert!(vhost_tls(&c, "b.w.example"));
    assert!(!vhost_tls(&c, "plain.example"));
}

/// A Secret that cannot be used, what the diagnostic says, and how bad it is.
struct BadSecret {
    kind: &'static str,
    object: Option<Object>,
    severity: Severity,
    /// A phrase the message must contain, besides the Secret's name.
    says: &'static str,
    /// The certificate it holds, which must not be served.
    der: Option<Vec<u8>>,
}

fn bad_secrets(name: &str) -> Vec<BadSecret> {
    let mut wrong_type = secret_of(name, &certs::cert(&["bad.example"]));
    wrong_type.type_ = Some("Opaque".to_owned());
    let mut without_key = secret_of(name, &certs::cert(&["bad.example"]));
    without_key.data.as_mut().unwrap().remove("tls.key");
    let mut empty_key = secret_of(name, &certs::cert(&["bad.example"]));
    empty_key
        .data
        .as_mut()
        .unwrap()
        .insert("tls.key".to_owned(), ByteString(Vec::new()));
    let mismatched = certs::mismatched(&["bad.example"]);
    let expired = certs::expired(&["bad.example"]);
    vec![
        BadSecret {
            kind: "missing",
            object: None,
            severity: Severity::Warning,
            says: "does not exist",
            der: None,
        },
        BadSecret {
            kind: "wrong type",
            object: Some(o(wrong_type)),
            severity: Severity::Error,
            says: "Opaque",
            der: None,
        },
        BadSecret {
            kind: "tls.crt is not PEM",
            object: Some(secret_with_crt(name, "this is not a certificate\n")),
            severity: Severity::Error,
            says: "tls.crt",
            der: None,
        },
        BadSecret {
            kind: "tls.crt is broken PEM",
            object: Some(secret_with_crt(
                name,
                "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
            )),
            severity: Severity::Error,
            says: "tls.crt",
            der: None,
        },
        BadSecret {
            kind: "tls.crt is PEM but not a certificate",
            object: Some(secret_with_crt(
                name,
                "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
            )),
            severity: Severity::Error,
            says: "tls.crt",
            der: None,
        },
        BadSecret {
            kind: "key of another certificate",
            object: Some(secret(name, &mismatched)),
            severity: Severity::Error,
            says: "does not belong",
            der: Some(mismatched.der.clone()),
        },
        BadSecret {
            kind: "expired",
            object: Some(secret(name, &expired)),
            severity: Severity::Error,
            says: "expired",
            der: Some(expired.der.clone()),
        },
        BadSecret {
            kind: "no tls.key",
            object: Some(o(without_key)),
            severity: Severity::Error,
            says: "tls.key",
            der: None,
        },
        BadSecret {
            kind: "empty tls.key",
            object: Some(o(empty_key)),
            severity: Severity::Error,
            says: "tls.key",
            der: None,
        },
    ]
}

#[test]
fn a_bad_secret_is_reported_and_its_host_gets_the_default_certificate_alone() {
    let good = certs::cert(&["good.example"]);
    let other = certs::cert(&["other.example"]);
    for bad in bad_secrets("bad-tls") {
        let kind = bad.kind;
        // The bad Secret is the second TLS entry of an Ingress whose first entry is good,
        // and another Ingress has a good Secret of its own.
        let mut objects = objects([
            o(ing("site")
                .host("good.example")
                .prefix("/", svc("web", 80))
                .host("bad.example")
                .prefix("/", svc("web", 80))
                .tls(&["good.example"], "good-tls")
                .tls(&["bad.example"], "bad-tls")
                .build()),
            o(site("other", "other.example", "other-tls").build()),
            secret("good-tls", &good),
            secret("other-tls", &other),
        ]);
        objects.extend(bad.object);
        let c = compile_now(&objects);

        let level = match bad.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        assert_eq!(
            findings(&c),
            [format!(
                "{level} Ingress default/site spec.tls[1].secretName"
            )],
            "{kind}"
        );
        let message = &diagnostic(&c, "spec.tls[1].secretName").message;
        assert!(message.contains("default/bad-tls"), "{kind}: {message}");
        assert!(message.contains(bad.says), "{kind}: {message}");
        assert!(message.contains("default certificate"), "{kind}: {message}");

        let known = [("good", &good), ("other", &other)];
        assert_eq!(served(&c, Some("bad.example"), &known), "default", "{kind}");
        assert_eq!(served(&c, Some("good.example"), &known), "good", "{kind}");
        assert_eq!(served(&c, Some("other.example"), &known), "other", "{kind}");
        let tls = c.table.tls();
        assert_eq!(tls.certificates().len(), 2, "{kind}");
        if let Some(der) = &bad.der {
            assert!(
                tls.certificates().iter().all(|c| c.chain[0] != *der),
                "{kind}: the bad certificate is in the table"
            );
        }
        // Still a TLS host, on the default certificate; routing is unaffected.
        assert!(
            tls.hosts()
                .contains(&(host("bad.example"), CertificateRef::Default))
        );
        assert_eq!(
            serves(&c, "bad.example", "/"),
            "site -> default/web:80 [10.0.0.1:8080]"
        );
    }
}

#[test]
fn pkcs8_pkcs1_and_sec1_keys_all_load() {
    let validity = Validity::default();
    let pkcs8 = certs::cert_with(&["pkcs8.example"], KeyEncoding::Pkcs8, validity);
    let pkcs1 = certs::cert_with(&["pkcs1.example"], KeyEncoding::Pkcs1, validity);
    let sec1 = certs::cert_with(&["sec1.example"], KeyEncoding::Sec1, validity);
    assert!(pkcs1.key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert!(sec1.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert!(pkcs8.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let c = compile_now(&objects([
        o(site("pkcs8", "pkcs8.example", "pkcs8-tls").build()),
        o(site("pkcs1", "pkcs1.example", "pkcs1-tls").build()),
        o(site("sec1", "sec1.example", "sec1-tls").build()),
        secret("pkcs8-tls", &pkcs8),
        secret("pkcs1-tls", &pkcs1),
        secret("sec1-tls", &sec1),
    ]));
    assert_eq!(findings(&c), Vec::<String>::new());
    let known = [("pkcs8", &pkcs8), ("pkcs1", &pkcs1), ("sec1", &sec1)];
    for (label, format) in [
        ("pkcs8", KeyFormat::Pkcs8),
        ("pkcs1", KeyFormat::Pkcs1),
        ("sec1", KeyFormat::Sec1),
    ] {
        let name = format!("{label}.example");
        assert_eq!(served(&c, Some(&name), &known), label);
        let CertificateRef::Index(i) = c.table.tls().for_server_name(Some(&name)) else {
            unreachable!("checked above");
        };
        let certificate = c.table.tls().certificate(i).unwrap();
        assert_eq!(certificate.key_format, format, "{label}");
        assert!(!certificate.key.is_empty(), "{label}");
    }
}

/// The Ingress `site` with TLS for a.example from `a-tls`, compiled once with a good Secret:
/// the Ingress, the certificate, and the compile whose memory the next one starts from.
fn first_good_compile(now: i64) -> (Object, TestCert, Compiled) {
    let first = certs::cert(&["a.example"]);
    let ingress = o(site("site", "a.example", "a-tls").build());
    let good = compile_at(
        &objects([ingress.clone(), secret("a-tls", &first)]),
        &Options::default(),
        &CertMemory::default(),
        now,
    );
    (ingress, first, good)
}

#[test]
fn a_secret_that_goes_bad_keeps_its_last_good_certificate() {
    let (options, now) = (Options::default(), unix_now());
    let (ingress, first, good) = first_good_compile(now);
    assert_eq!(findings(&good), Vec::<String>::new());
    assert_eq!(good.memory.len(), 1);

    let bad_versions = [
        ("garbage", Some(secret_with_crt("a-tls", "garbage"))),
        ("deleted", None),
        (
            "mismatched key",
            Some(secret("a-tls", &certs::mismatched(&["a.example"]))),
        ),
    ];
    for (kind, bad) in bad_versions {
        let objects = objects([ingress.clone()].into_iter().chain(bad));
        let c = compile_at(&objects, &options, &good.memory, now);
        assert_eq!(
            served(&c, Some("a.example"), &[("first", &first)]),
            "first",
            "{kind}"
        );
        let d = diagnostic(&c, "spec.tls[0].secretName");
        assert_eq!(d.object.to_string(), "default/site", "{kind}");
        assert!(d.message.contains("default/a-tls"), "{kind}: {}", d.message);
        assert!(
            d.message.contains("last good certificate"),
            "{kind}: {}",
            d.message
        );
        assert_eq!(
            c.report.diagnostics.len(),
            1,
            "{kind}: {:#?}",
            c.report.diagnostics
        );

        // Still remembered for the compile after, however long the Secret stays bad.
        let again = compile_at(&objects, &options, &c.memory, now + DAY);
        assert_eq!(
            served(&again, Some("a.example"), &[("first", &first)]),
            "first",
            "{kind}, compiled again"
        );
    }
}

#[test]
fn a_last_good_certificate_is_dropped_once_it_has_expired() {
    let (options, now) = (Options::default(), unix_now());
    let (ingress, first, good) = first_good_compile(now);
    let not_after = good.table.tls().certificates()[0].info.not_after;
    assert!(not_after > now + 300 * DAY, "valid for a year: {not_after}");

    // Up to its expiry, the last good certificate stands in for a broken Secret.
    let broken = objects([ingress.clone(), secret_with_crt("a-tls", "garbage")]);
    let still = compile_at(&broken, &options, &good.memory, not_after);
    assert_eq!(
        served(&still, Some("a.example"), &[("first", &first)]),
        "first"
    );

    // After it, the default certificate is served and the memory forgets it.
    let later = compile_at(&broken, &options, &good.memory, not_after + 1);
    assert_eq!(
        served(&later, Some("a.example"), &[("first", &first)]),
        "default"
    );
    let message = &diagnostic(&later, "spec.tls[0].secretName").message;
    assert!(message.contains("default/a-tls"), "{message}");
    assert!(message.contains("default certificate is used"), "{message}");
    assert!(later.memory.is_empty(), "{:?}", later.memory);

    // The same goes for a Secret left unchanged while its certificate expires.
    let unchanged = objects([ingress, secret("a-tls", &first)]);
    let expired = compile_at(&unchanged, &options, &good.memory, not_after + 1);
    assert_eq!(
        findings(&expired),
        ["error Ingress default/site spec.tls[0].secretName"]
    );
    let message = &diagnostic(&expired, "spec.tls[0].secretName").message;
    assert!(message.contains("expired"), "{message}");
    assert_eq!(
        served(&expired, Some("a.example"), &[("first", &first)]),
        "default"
    );
    assert!(expired.memory.is_empty(), "{:?}", expired.memory);
}

#[test]
fn a_fixed_secret_replaces_the_last_good_certificate() {
    let (options, now) = (Options::default(), unix_now());
    let (ingress, first, good) = first_good_compile(now);
    let second = certs::cert(&["a.example"]);
    let known = [("first", &first), ("second", &second)];
    let bad = compile_at(
        &objects([ingress.clone(), secret_with_crt("a-tls", "garbage")]),
        &options,
        &good.memory,
        now,
    );
    assert_eq!(served(&bad, Some("a.example"), &known), "first");
    let fixed = compile_at(
        &objects([ingress, secret("a-tls", &second)]),
        &options,
        &bad.memory,
        now,
    );
    assert_eq!(findings(&fixed), Vec::<String>::new());
    assert_eq!(served(&fixed, Some("a.example"), &known), "second");
    assert_eq!(fixed.table.tls().certificates().len(), 1);
}

#[test]
fn a_certificate_that_does_not_name_a_listed_host_is_served_for_it_with_a_warning() {
    let a = certs::cert(&["a.example"]);
    let c = compile_now(&objects([
        o(ing("site")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .host("b.example")
            .prefix("/", svc("web", 80))
            .tls(&["a.example", "b.example"], "a-tls")
            .build()),
        secret("a-tls", &a),
    ]));
    assert_eq!(
        findings(&c),
        ["warning Ingress default/site spec.tls[0].hosts[1]"]
    );
    let message = &diagnostic(&c, "spec.tls[0].hosts[1]").message;
    assert!(message.contains("default/a-tls"), "{message}");
    assert!(message.contains("b.example"), "{message}");
    assert!(message.contains("a.example"), "{message}");
    assert_eq!(served(&c, Some("a.example"), &[("a", &a)]), "a");
    assert_eq!(served(&c, Some("b.example"), &[("a", &a)]), "a");
    assert!(vhost_tls(&c, "b.example"));
}

#[test]
fn rule_hosts_the_certificate_covers_get_tls_without_being_listed() {
    let cert = certs::cert(&["a.example", "b.example", "*.w.example", "d.example"]);
    let known = [("cert", &cert)];
    let c = compile_now(&objects([
        o(ing("site")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .host("b.example")
            .prefix("/", svc("web", 80))
            .host("x.w.example")
            .prefix("/", svc("web", 80))
            .host("c.example")
            .prefix("/", svc("web", 80))
            .tls(&["a.example"], "site-tls")
            .build()),
        // Covered by the certificate, but of another Ingress, which has no TLS section.
        o(ing("other")
            .host("d.example")
            .prefix("/", svc("web", 80))
            .build()),
        secret("site-tls", &cert),
    ]));
    assert_eq!(findings(&c), Vec::<String>::new());
    for name in ["a.example", "b.example", "x.w.example"] {
        assert_eq!(served(&c, Some(name), &known), "cert", "{name}");
        assert!(vhost_tls(&c, name), "{name}");
    }
    // Only the rule host is bound, not the certificate's wildcard.
    assert_eq!(served(&c, Some("y.w.example"), &known), "default");
    // Neither listed nor covered.
    assert_eq!(served(&c, Some("c.example"), &known), "default");
    assert!(!vhost_tls(&c, "c.example"));
    assert!(!redirects(&c, "c.example", "/"));
    // Covered, but not a host of the Ingress with the certificate.
    assert_eq!(served(&c, Some("d.example"), &known), "default");
    assert!(!vhost_tls(&c, "d.example"));
    let hosts: Vec<String> = c
        .table
        .tls()
        .hosts()
        .iter()
        .map(|(h, _)| h.to_string())
        .collect();
    assert_eq!(hosts, ["a.example", "b.example", "x.w.example"]);
}

#[test]
fn the_older_ingress_keeps_a_tls_host_two_ingresses_claim() {
    let old = certs::cert(&["shared.example"]);
    let new = certs::cert(&["shared.example"]);
    let known = [("old", &old), ("new", &new)];
    // Named so that name order and age order disagree.
    let newer = o(ing("a-new")
        .created(20)
        .host("shared.example")
        .prefix("/new", svc("web", 80))
        .tls(&["shared.example"], "new-tls")
        .build());
    let older = o(ing("z-old")
        .created(10)
        .host("shared.example")
        .prefix("/", svc("web", 80))
        .tls(&["shared.example"], "old-tls")
        .build());
    let secrets = [secret("old-tls", &old), secret("new-tls", &new)];
    for order in [
        vec![newer.clone(), older.clone()],
        vec![older.clone(), newer.clone()],
    ] {
        let c = compile_now(&objects(order.into_iter().chain(secrets.clone())));
        assert_eq!(served(&c, Some("shared.example"), &known), "old");
        assert_eq!(
            findings(&c),
            ["warning Ingress default/a-new spec.tls[0].hosts[0]"]
        );
        let message = &diagnostic(&c, "spec.tls[0].hosts[0]").message;
        assert!(message.contains("default/old-tls"), "{message}");
        assert!(message.contains("older Ingress"), "{message}");
        // Both Ingresses' paths are still served.
        assert_eq!(
            serves(&c, "shared.example", "/new"),
            "a-new -> default/web:80 [10.0.0.1:8080]"
        );
        assert_eq!(
            serves(&c, "shared.example", "/"),
            "z-old -> default/web:80 [10.0.0.1:8080]"
        );
    }
}

fn with_default_certificate() -> Options {
    Options {
        default_ssl_certificate: Some(("ingress".to_owned(), "fallback-tls".to_owned())),
        ..Options::default()
    }
}

#[test]
fn a_configured_default_certificate_serves_names_no_tls_host_matches() {
    let fallback = certs::cert(&["fallback.example"]);
    let a = certs::cert(&["a.example"]);
    let known = [("fallback", &fallback), ("a", &a)];
    let c = compile_at(
        &objects([
            o(site("site", "a.example", "a-tls").build()),
            secret("a-tls", &a),
            o(tls_secret(
                "ingress",
                "fallback-tls",
                &fallback.cert_pem,
                &fallback.key_pem,
            )),
        ]),
        &with_default_certificate(),
        &CertMemory::default(),
        unix_now(),
    );
    assert_eq!(findings(&c), Vec::<String>::new());
    let tls = c.table.tls();
    let configured = tls.configured_default().expect("a configured default");
    assert_eq!(configured.chain[0], fallback.der);
    assert_eq!(configured.info.source, "ingress/fallback-tls");
    assert_eq!(served(&c, None, &known), "fallback");
    assert_eq!(served(&c, Some("unknown.example"), &known), "fallback");
    assert_eq!(served(&c, Some("a.example"), &known), "a");
}

#[test]
fn the_default_certificate_is_read_outside_the_watched_namespaces() {
    let fallback = certs::cert(&["fallback.example"]);
    let other = certs::cert(&["other.example"]);
    let options = Options {
        watch_namespaces: vec![NS.to_owned()],
        ..with_default_certificate()
    };
    let c = compile_at(
        &objects([
            o(tls_secret(
                "ingress",
                "fallback-tls",
                &fallback.cert_pem,
                &fallback.key_pem,
            )),
            // Not named by the flag: outside the watched namespaces, so not read.
            o(tls_secret(
                "ingress",
                "other-tls",
                &other.cert_pem,
                &other.key_pem,
            )),
        ]),
        &options,
        &CertMemory::default(),
        unix_now(),
    );
    assert_eq!(findings(&c), Vec::<String>::new());
    let configured = c
        .table
        .tls()
        .configured_default()
        .expect("a configured default");
    assert_eq!(configured.chain[0], fallback.der);
    assert_eq!(c.table.tls().certificates().len(), 1);
}

#[test]
fn a_missing_or_bad_default_certificate_is_reported_and_the_generated_one_is_used() {
    let a = certs::cert(&["a.example"]);
    let garbage = o(tls_secret("ingress", "fallback-tls", "garbage", "garbage"));
    let expired = certs::expired(&["fallback.example"]);
    let expired = o(tls_secret(
        "ingress",
        "fallback-tls",
        &expired.cert_pem,
        &expired.key_pem,
    ));
    for (kind, object, level) in [
        ("missing", None, "warning"),
        ("garbage", Some(garbage), "error"),
        ("expired", Some(expired), "error"),
    ] {
        let objects = objects(
            [
                o(site("site", "a.example", "a-tls").build()),
                secret("a-tls", &a),
            ]
            .into_iter()
            .chain(object),
        );
        let c = compile_at(
            &objects,
            &with_default_certificate(),
            &CertMemory::default(),
            unix_now(),
        );
        assert_eq!(
            findings(&c),
            [format!(
                "{level} Secret ingress/fallback-tls --default-ssl-certificate"
            )],
            "{kind}"
        );
        let message = &diagnostic(&c, "--default-ssl-certificate").message;
        assert!(
            message.contains("ingress/fallback-tls"),
            "{kind}: {message}"
        );
        assert!(message.contains("self-signed"), "{kind}: {message}");
        let tls = c.table.tls();
        assert!(tls.configured_default().is_none(), "{kind}");
        assert_eq!(tls.for_server_name(None), CertificateRef::Default, "{kind}");
        assert_eq!(
            tls.for_server_name(Some("unknown.example")),
            CertificateRef::Default,
            "{kind}"
        );
        assert_eq!(served(&c, Some("a.example"), &[("a", &a)]), "a", "{kind}");
    }
}

const SSL_REDIRECT: &str = "nginx.ingress.kubernetes.io/ssl-redirect";
const FORCE_SSL_REDIRECT: &str = "nginx.ingress.kubernetes.io/force-ssl-redirect";

#[test]
fn plain_http_is_redirected_for_tls_hosts_unless_ssl_redirect_is_false() {
    let cert = certs::cert(&["a.example"]);
    let c = compile_now(&objects([
        o(site("site", "a.example", "a-tls").build()),
        // Another Ingress on the same TLS host opts out for its own path only.
        o(ing("api")
            .annotation(SSL_REDIRECT, "false")
            .host("a.example")
            .prefix("/api", svc("web", 80))
            .build()),
        o(ing("plain")
            .host("plain.example")
            .prefix("/", svc("web", 80))
            .build()),
        secret("a-tls", &cert),
    ]));
    assert_eq!(findings(&c), Vec::<String>::new());
    assert!(redirects(&c, "a.example", "/"));
    assert!(!redirects(&c, "a.example", "/api/v1"));
    assert!(!redirects(&c, "plain.example", "/"));
}

#[test]
fn ssl_redirect_and_force_ssl_redirect_read_booleans_as_ingress_nginx_does() {
    let cert = certs::cert(&["a.example"]);
    for (value, want) in [
        ("false", false),
        ("0", false),
        ("f", false),
        ("F", false),
        ("FALSE", false),
        ("False", false),
        ("true", true),
        ("1", true),
        ("t", true),
        ("T", true),
        ("TRUE", true),
        ("True", true),
    ] {
        let c = compile_now(&objects([
            o(site("tls", "a.example", "a-tls")
                .annotation(SSL_REDIRECT, value)
                .build()),
            o(ing("plain")
                .annotation(FORCE_SSL_REDIRECT, value)
                .host("plain.example")
                .prefix("/", svc("web", 80))
                .build()),
            secret("a-tls", &cert),
        ]));
        assert_eq!(findings(&c), Vec::<String>::new(), "{value}");
        assert_eq!(
            redirects(&c, "a.example", "/"),
            want,
            "ssl-redirect: {value}"
        );
        assert!(!vhost_tls(&c, "plain.example"));
        assert_eq!(
            redirects(&c, "plain.example", "/"),
            want,
            "force-ssl-redirect: {value}"
        );
    }
}

#[test]
fn force_ssl_redirect_redirects_even_with_ssl_redirect_false() {
    let c = compile_now(&objects([o(ing("plain")
        .annotation(FORCE_SSL_REDIRECT, "true")
        .annotation(SSL_REDIRECT, "false")
        .host("plain.example")
        .prefix("/", svc("web", 80))
        .build())]));
    assert_eq!(findings(&c), Vec::<String>::new());
    assert!(redirects(&c, "plain.example", "/"));
}

#[test]
fn an_invalid_redirect_boolean_is_an_error_and_the_default_applies() {
    let cert = certs::cert(&["a.example"]);
    let c = compile_now(&objects([
        o(site("tls", "a.example", "a-tls")
            .annotation(SSL_REDIRECT, "maybe")
            .build()),
        o(ing("plain")
            .annotation(FORCE_SSL_REDIRECT, "yes")
            .host("plain.example")
            .prefix("/", svc("web", 80))
            .build()),
        secret("a-tls", &cert),
    ]));
    let ssl_field = format!("metadata.annotations[{SSL_REDIRECT:?}]");
    let force_field = format!("metadata.annotations[{FORCE_SSL_REDIRECT:?}]");
    assert_eq!(
        ssl_field,
        r#"metadata.annotations["nginx.ingress.kubernetes.io/ssl-redirect"]"#
    );
    assert_eq!(
        findings(&c),
        [
            format!("error Ingress default/plain {force_field}"),
            format!("error Ingress default/tls {ssl_field}"),
        ]
    );
    let message = &diagnostic(&c, &ssl_field).message;
    assert!(message.contains("\"maybe\""), "{message}");
    assert!(message.contains("default applies"), "{message}");
    assert!(diagnostic(&c, &force_field).message.contains("\"yes\""));
    // ssl-redirect defaults to on, force-ssl-redirect to off.
    assert!(redirects(&c, "a.example", "/"));
    assert!(!redirects(&c, "plain.example", "/"));
}

/// Seconds until a certificate's `not_after`, in whole days (rounded).
fn days_left(not_after: i64, now: i64) -> i64 {
    (not_after - now + DAY / 2).div_euclid(DAY)
}

#[test]
fn earliest_expiry_is_the_soonest_expiry_among_the_certificates_in_use() {
    let now = unix_now();
    let valid_for = |name: &str, days: i64| {
        certs::cert_with(
            &[name],
            KeyEncoding::Pkcs8,
            Validity {
                from_days: -1,
                until_days: days,
            },
        )
    };
    let month = valid_for("month.example", 30);
    let soon = valid_for("soon.example", 10);
    let quarter = valid_for("quarter.example", 90);
    let c = compile_at(
        &objects([
            o(site("month", "month.example", "month-tls").build()),
            o(site("soon", "soon.example", "soon-tls").build()),
            o(site("quarter", "quarter.example", "quarter-tls").build()),
            // Expired, so not in use: it does not count.
            o(site("gone", "gone.example", "gone-tls").build()),
            secret("month-tls", &month),
            secret("soon-tls", &soon),
            secret("quarter-tls", &quarter),
            secret("gone-tls", &certs::expired(&["gone.example"])),
        ]),
        &Options::default(),
        &CertMemory::default(),
        now,
    );
    let tls = c.table.tls();
    assert_eq!(tls.certificates().len(), 3);
    let soon_cert = tls
        .certificates()
        .iter()
        .find(|c| c.chain[0] == soon.der)
        .expect("the 10-day certificate is in use");
    let earliest = tls.earliest_expiry().expect("certificates are in use");
    assert_eq!(earliest, soon_cert.info.not_after);
    assert_eq!(days_left(earliest, now), 10);

    let none = compile_now(&world());
    assert_eq!(none.table.tls().earliest_expiry(), None);
}

#[test]
fn a_certificate_that_serves_no_host_does_not_count_for_earliest_expiry() {
    let now = unix_now();
    let older = certs::cert_with(
        &["shared.example"],
        KeyEncoding::Pkcs8,
        Validity {
            from_days: -1,
            until_days: 90,
        },
    );
    let losing = certs::cert_with(
        &["shared.example"],
        KeyEncoding::Pkcs8,
        Validity {
            from_days: -1,
            until_days: 5,
        },
    );
    let c = compile_at(
        &objects([
            o(site("old", "shared.example", "old-tls").created(1).build()),
            o(ing("new")
                .created(2)
                .host("shared.example")
                .prefix("/new", svc("web", 80))
                .tls(&["shared.example"], "new-tls")
                .build()),
            secret("old-tls", &older),
            secret("new-tls", &losing),
        ]),
        &Options::default(),
        &CertMemory::default(),
        now,
    );
    let known = [("older", &older), ("losing", &losing)];
    assert_eq!(served(&c, Some("shared.example"), &known), "older");
    // The newer Ingress's certificate is served for no name at all.
    assert_eq!(days_left(c.table.tls().earliest_expiry().unwrap(), now), 90);
}

/// Objects with every kind of TLS interaction: a configured default certificate, two
/// Ingresses claiming one host (with and without creation times), a wildcard, a missing and
/// a broken Secret, a Secret shared by two Ingresses, an uncovered listed host, annotations.
fn tls_pool() -> Vec<Object> {
    let a = certs::cert(&["a.example", "covered.example"]);
    let a2 = certs::cert(&["a.example"]);
    let w = certs::cert(&["*.w.example"]);
    let t1 = certs::cert(&["t.example"]);
    let t2 = certs::cert(&["t.example"]);
    let fallback = certs::cert(&["fallback.example"]);
    objects([
        o(ing("one")
            .created(2)
            .host("a.example")
            .prefix("/", svc("web", 80))
            .host("covered.example")
            .prefix("/", svc("web", 80))
            .tls(&["a.example"], "a-tls")
            .build()),
        o(ing("two")
            .created(1)
            .annotation(SSL_REDIRECT, "false")
            .host("a.example")
            .prefix("/two", svc("web", 80))
            .tls(&["a.example", "uncovered.example"], "a2-tls")
            .build()),
        o(site("wild", "*.w.example", "w-tls")
            .annotation(FORCE_SSL_REDIRECT, "maybe")
            .build()),
        // No creation times: name order decides.
        o(ing("t1")
            .host("t.example")
            .prefix("/1", svc("web", 80))
            .tls(&["t.example"], "t1-tls")
            .build()),
        o(ing("t2")
            .host("t.example")
            .prefix("/2", svc("web", 80))
            .tls(&["t.example"], "t2-tls")
            .build()),
        o(site("missing", "missing.example", "nowhere-tls").build()),
        o(site("broken", "broken.example", "broken-tls").build()),
        o(site("shares", "shares.example", "w-tls").created(5).build()),
        secret("a-tls", &a),
        secret("a2-tls", &a2),
        secret("w-tls", &w),
        secret("t1-tls", &t1),
        secret("t2-tls", &t2),
        secret_with_crt("broken-tls", "garbage"),
        o(tls_secret(
            "ingress",
            "fallback-tls",
            &fallback.cert_pem,
            &fallback.key_pem,
        )),
    ])
}

#[test]
fn tls_compiles_the_same_whatever_the_input_order() {
    let pool = tls_pool();
    let options = with_default_certificate();
    let now = unix_now();
    let first = compile_at(&pool, &options, &CertMemory::default(), now);
    // Something to compare: certificates, bindings and diagnostics of several kinds.
    assert!(first.table.tls().certificates().len() >= 5);
    assert!(first.table.tls().configured_default().is_some());
    assert!(first.report.diagnostics.len() >= 5, "{:#?}", first.report);

    let mut reversed = pool.clone();
    reversed.reverse();
    let mut rotated = pool.clone();
    rotated.rotate_left(pool.len() / 2);
    for (label, order) in [("reversed", reversed), ("rotated", rotated)] {
        let other = compile_at(&order, &options, &CertMemory::default(), now);
        assert_eq!(other.table, first.table, "{label}");
        assert_eq!(other.report, first.report, "{label}");
        assert_eq!(other.memory, first.memory, "{label}");
        // And with the memory of the first compile, the same again.
        let next = compile_at(&order, &options, &first.memory, now);
        assert_eq!(next.table, first.table, "{label}, with memory");
        assert_eq!(next.report, first.report, "{label}, with memory");
    }
}
