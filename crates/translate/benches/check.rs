//! `vestibule check` at the scale of a large ingress-nginx installation: 5,000 Ingresses
//! (25,000 paths over 2,500 hosts, one in ten with CORS, buffering, a snippet or regex
//! paths), compiled and classified. The target is the whole command under 5 seconds; the
//! compile and the classification are most of it (the rest is reading the dump, measured by
//! `bench/check.sh`).
//!
//! `cargo bench -p vestibule-translate --bench check`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::networking::v1::Ingress;
use vestibule_testkit::scale::scale_set;
use vestibule_translate::check::{self, Settings, Source};
use vestibule_translate::{Object, Options, Snapshot, compile};

const INGRESSES: usize = 5_000;
const HOSTS: usize = 2_500;

/// Annotations a migrating cluster has on some of its Ingresses, one set in ten each.
fn annotate(i: usize, ingress: &mut Ingress) {
    let set: &[(&str, &str)] = match i % 10 {
        1 => &[
            ("enable-cors", "true"),
            ("cors-allow-origin", "https://app.example.com"),
        ],
        2 => &[("proxy-buffering", "on"), ("proxy-body-size", "16m")],
        3 => &[(
            "configuration-snippet",
            "more_set_headers \"X-Frame-Options: DENY\";",
        )],
        4 => &[("configuration-snippet", "rewrite ^/old/(.*) /new/$1 break;")],
        5 => &[("mirror-target", "https://mirror.example/$request_uri")],
        6 => &[("affinity", "cookie"), ("limit-rps", "10")],
        _ => &[],
    };
    let annotations = ingress.metadata.annotations.get_or_insert_default();
    for (key, value) in set {
        annotations.insert(
            format!("nginx.ingress.kubernetes.io/{key}"),
            (*value).to_owned(),
        );
    }
}

fn snapshot() -> Snapshot {
    let mut set = scale_set(INGRESSES, HOSTS);
    for (i, ingress) in set.ingresses.iter_mut().enumerate() {
        annotate(i, ingress);
    }
    let objects = set
        .classes
        .into_iter()
        .map(Object::from)
        .chain(set.ingresses.into_iter().map(Object::from))
        .chain(set.services.into_iter().map(Object::from))
        .chain(set.slices.into_iter().map(Object::from));
    Snapshot::from_objects(objects)
}

fn bench(c: &mut Criterion) {
    let snapshot = snapshot();
    // The scale set's class is Vestibule's; check it as if it were the one being left.
    let options = Options::default();
    let source = Source::Files {
        paths: vec!["dump.json".to_owned()],
    };
    let settings = Settings {
        source: &source,
        read_secrets: false,
        nginx_configmap: None,
    };
    let compiled = compile(&snapshot, &options);
    let report = check::check(&snapshot, &options, &compiled, &settings);
    assert_eq!(report.summary.ingresses, INGRESSES, "every Ingress checked");
    assert!(report.summary.refused > 0 && report.summary.differs > 0);

    let mut group = c.benchmark_group("check");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("classify_5k_ingresses", |b| {
        b.iter(|| black_box(check::check(&snapshot, &options, &compiled, &settings)));
    });
    group.bench_function("compile_and_classify_5k_ingresses", |b| {
        b.iter(|| {
            let compiled = compile(&snapshot, &options);
            black_box(check::check(&snapshot, &options, &compiled, &settings))
        });
    });
    group.bench_function("json_5k_ingresses", |b| {
        b.iter(|| black_box(serde_json::to_vec(&report).map(|v| v.len())));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
