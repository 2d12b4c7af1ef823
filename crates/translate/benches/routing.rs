//! Routing at scale: per-request lookup (host and path normalisation included) and compile
//! time, on 10,000 Ingresses with 50,000 paths over 5,000 hosts; and lookup on one host in
//! regex mode with 1,000 regex paths. Also `explain` (`vestibule explain`, `/debug/explain`)
//! on both, whose target is 50 ms per query.
//!
//! `cargo bench -p vestibule-translate --bench routing`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use vestibule_model::{Probe, Target, normalize_request_path, request_host};
use vestibule_testkit::scale::{scale_requests, scale_set};
use vestibule_testkit::{ingress, ingress_class, svc};
use vestibule_translate::{Object, Options, Snapshot, compile};

const INGRESSES: usize = 10_000;
const HOSTS: usize = 5_000;

fn snapshot() -> Snapshot {
    let set = scale_set(INGRESSES, HOSTS);
    let objects = set
        .classes
        .into_iter()
        .map(Object::from)
        .chain(set.ingresses.into_iter().map(Object::from))
        .chain(set.services.into_iter().map(Object::from))
        .chain(set.slices.into_iter().map(Object::from));
    Snapshot::from_objects(objects)
}

/// The requests' bytes in one buffer, as a proxy has them (fresh off the socket, close
/// together) rather than scattered over thousands of heap allocations, which would make the
/// benchmark measure cache misses on its own input.
fn packed(requests: Vec<(String, String)>) -> Vec<(&'static str, &'static str)> {
    let mut arena = String::new();
    let mut spans = Vec::new();
    for (host, path) in &requests {
        let h = arena.len();
        arena.push_str(host);
        let p = arena.len();
        arena.push_str(path);
        spans.push((h..p, p..arena.len()));
    }
    let arena: &'static str = Box::leak(arena.into_boxed_str());
    spans
        .into_iter()
        .map(|(h, p)| (&arena[h], &arena[p]))
        .collect()
}

fn routing(c: &mut Criterion) {
    let snapshot = snapshot();
    let options = Options::default();
    let compiled = compile(&snapshot, &options);
    assert_eq!(
        compiled.table.routes().len(),
        INGRESSES * 5,
        "every path compiled"
    );
    assert!(
        !compiled.report.has_errors(),
        "{:?}",
        compiled.report.errors().next()
    );
    let table = compiled.table;
    let requests = packed(scale_requests(INGRESSES, HOSTS, 4096));
    let hits = requests
        .iter()
        .filter(|(h, p)| !matches!(table.lookup(h, p).target, Target::NotFound))
        .count();
    let requests: Vec<(&str, &str)> = requests.iter().map(|(h, p)| (*h, *p)).collect();
    assert!(
        hits > requests.len() / 2,
        "the request mix mostly hits routes"
    );

    let mut group = c.benchmark_group("routing");
    let mut i = 0;
    group.bench_function("lookup_10k_ingresses", |b| {
        b.iter(|| {
            let (host, path) = &requests[i % requests.len()];
            i += 1;
            let host = request_host(black_box(host));
            let path = normalize_request_path(black_box(path)).unwrap_or_default();
            black_box(matches!(
                table.lookup(&host, &path).target,
                Target::Route(_)
            ))
        })
    });
    let warm: Vec<(&str, &str)> = requests.iter().take(16).copied().collect();
    let mut j = 0;
    group.bench_function("lookup_10k_ingresses_warm16", |b| {
        b.iter(|| {
            let (host, path) = &warm[j % warm.len()];
            j += 1;
            let host = request_host(black_box(host));
            let path = normalize_request_path(black_box(path)).unwrap_or_default();
            black_box(matches!(
                table.lookup(&host, &path).target,
                Target::Route(_)
            ))
        })
    });
    let mut k = 0;
    group.bench_function("explain_10k_ingresses", |b| {
        b.iter(|| {
            let (host, path) = &requests[k % requests.len()];
            k += 1;
            black_box(table.explain(&probe(host, path)).is_ok())
        })
    });
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("compile_10k_ingresses", |b| {
        b.iter(|| black_box(compile(black_box(&snapshot), &options)))
    });
    group.finish();
}

const REGEX_PATHS: usize = 1_000;

/// One host with `use-regex` and 1,000 paths of the shapes regex users write.
fn regex_snapshot() -> Snapshot {
    let mut regex = ingress("default", "regex")
        .class("vestibule")
        .host("regex.example")
        .annotation("nginx.ingress.kubernetes.io/use-regex", "true");
    for i in 0..REGEX_PATHS {
        let path = match i % 4 {
            0 => format!("/svc{i}/v[0-9]+/items"),
            1 => format!("/svc{i}/(orders|carts)/[a-z0-9-]+"),
            2 => format!("/svc{i}(/|$)(.*)"),
            _ => format!("/svc{i}/static/.*\\.(css|js)$"),
        };
        regex = regex.implementation_specific(&path, svc("web", 80));
    }
    let class = ingress_class("vestibule", "vestibule.dev/ingress-controller").build();
    Snapshot::from_objects([Object::from(class), Object::from(regex.build())])
}

fn regex_host(c: &mut Criterion) {
    let compiled = compile(&regex_snapshot(), &Options::default());
    assert_eq!(
        compiled.table.routes().len(),
        REGEX_PATHS,
        "every path compiled"
    );
    let table = compiled.table;
    let requests: Vec<String> = (0..4096)
        .map(|n| {
            let i = (n * 7919) % (REGEX_PATHS + 50);
            match i % 4 {
                _ if i >= REGEX_PATHS => format!("/none{i}/x"),
                0 => format!("/svc{i}/v2/items"),
                1 => format!("/svc{i}/orders/ab-12"),
                2 => format!("/svc{i}/deep/er"),
                _ => format!("/svc{i}/static/app.css"),
            }
        })
        .collect();
    let hits = requests
        .iter()
        .filter(|p| matches!(table.lookup("regex.example", p).target, Target::Route(_)))
        .count();
    assert!(
        hits > requests.len() * 9 / 10,
        "the mix mostly hits: {hits}"
    );
    let mut group = c.benchmark_group("routing");
    let mut i = 0;
    group.bench_function("lookup_regex_host_1k_paths", |b| {
        b.iter(|| {
            let path = &requests[i % requests.len()];
            i += 1;
            let host = request_host(black_box("regex.example"));
            let path = normalize_request_path(black_box(path)).unwrap_or_default();
            black_box(matches!(
                table.lookup(&host, &path).target,
                Target::Route(_)
            ))
        })
    });
    let mut k = 0;
    group.bench_function("explain_regex_host_1k_paths", |b| {
        b.iter(|| {
            let path = &requests[k % requests.len()];
            k += 1;
            black_box(table.explain(&probe("regex.example", path)).is_ok())
        })
    });
    group.finish();
}

fn probe<'a>(host: &'a str, target: &'a str) -> Probe<'a> {
    Probe {
        host,
        target,
        method: "GET",
        ..Probe::default()
    }
}

criterion_group!(benches, routing, regex_host);
criterion_main!(benches);
