//! "Backends": Service ports by number and name, EndpointSlice port resolution, readiness,
//! ExternalName, and what a missing Service or port does.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use vestibule_testkit::{endpoint_slice, ingress, service, svc, svc_named};
use vestibule_translate::{Object, Options};

fn routed(
    backend: k8s_openapi::api::networking::v1::IngressBackend,
    mut objects: Vec<Object>,
) -> vestibule_translate::Compiled {
    objects.push(our_class());
    objects.push(o(ingress("shop", "a")
        .class("vestibule")
        .host("x.com")
        .prefix("/", backend)
        .build()));
    compile_default(objects)
}

/// Service `api`: port `http` 80 → 8080 and port `admin` 9000 → 9090, two slices with
/// different port numbers for `http` (as during a rollout that changes the container port).
fn api() -> Vec<Object> {
    vec![
        o(service("shop", "api")
            .port("http", 80, 8080)
            .port("admin", 9000, 9090)
            .build()),
        o(endpoint_slice("shop", "api-a", "api")
            .port("http", 8080)
            .port("admin", 9090)
            .ready("10.1.0.1")
            .build()),
        o(endpoint_slice("shop", "api-b", "api")
            .port("http", 8081)
            .ready("10.1.0.2")
            .build()),
    ]
}

#[test]
fn port_number_selects_the_service_port_and_slices_give_endpoint_ports() {
    let c = routed(svc("api", 80), api());
    assert_eq!(
        serves(&c, "x.com", "/"),
        "a -> shop/api:80 [10.1.0.1:8080 10.1.0.2:8081]"
    );
}

#[test]
fn port_name_selects_the_service_port_by_name() {
    let c = routed(svc_named("api", "admin"), api());
    assert_eq!(
        serves(&c, "x.com", "/"),
        "a -> shop/api:9000 [10.1.0.1:9090]"
    );
}

#[test]
fn unnamed_service_port_matches_unnamed_slice_port() {
    let objects = vec![
        o(service("shop", "one").port("", 80, 3000).build()),
        o(endpoint_slice("shop", "one-x", "one")
            .port("", 3000)
            .ready("10.2.0.1")
            .build()),
    ];
    let c = routed(svc("one", 80), objects);
    assert_eq!(serves(&c, "x.com", "/"), "a -> shop/one:80 [10.2.0.1:3000]");
}

#[test]
fn only_ready_and_not_terminating_endpoints_receive_traffic() {
    let objects = vec![
        o(service("shop", "web").port("http", 80, 8080).build()),
        o(endpoint_slice("shop", "web-1", "web")
            .port("http", 8080)
            .ready("10.3.0.1")
            .unconditioned("10.3.0.2")
            .not_ready("10.3.0.3")
            .terminating("10.3.0.4")
            .build()),
    ];
    let c = routed(svc("web", 80), objects);
    assert_eq!(
        serves(&c, "x.com", "/"),
        "a -> shop/web:80 [10.3.0.1:8080 10.3.0.2:8080]"
    );
}

#[test]
fn slices_of_other_services_or_namespaces_are_not_used() {
    let mut objects = api();
    objects.push(o(endpoint_slice("shop", "web-1", "web")
        .port("http", 8080)
        .ready("10.9.9.1")
        .build()));
    objects.push(o(endpoint_slice("other", "api-z", "api")
        .port("http", 8080)
        .ready("10.9.9.2")
        .build()));
    let c = routed(svc("api", 80), objects);
    assert_eq!(
        serves(&c, "x.com", "/"),
        "a -> shop/api:80 [10.1.0.1:8080 10.1.0.2:8081]"
    );
}

#[test]
fn service_with_no_ready_endpoints_is_a_cluster_without_endpoints() {
    let objects = vec![
        o(service("shop", "web").port("http", 80, 8080).build()),
        o(endpoint_slice("shop", "web-1", "web")
            .port("http", 8080)
            .not_ready("10.3.0.1")
            .build()),
    ];
    let c = routed(svc("web", 80), objects);
    // The proxy answers 503 for an empty cluster; the route itself is valid.
    assert_eq!(serves(&c, "x.com", "/"), "a -> shop/web:80 []");
    assert!(findings(&c).is_empty());
}

#[test]
fn ipv6_and_fqdn_slices() {
    let objects = vec![
        o(service("shop", "web").port("http", 80, 8080).build()),
        o(endpoint_slice("shop", "web-6", "web")
            .address_type("IPv6")
            .port("http", 8080)
            .ready("fd00::1")
            .build()),
        o(endpoint_slice("shop", "web-dns", "web")
            .address_type("FQDN")
            .port("http", 8080)
            .ready("pod.example.internal")
            .build()),
    ];
    let c = routed(svc("web", 80), objects);
    assert_eq!(
        serves(&c, "x.com", "/"),
        "a -> shop/web:80 [[fd00::1]:8080 pod.example.internal:8080]"
    );
}

#[test]
fn bad_endpoint_addresses_are_reported_on_the_slice() {
    let objects = vec![
        o(service("shop", "web").port("http", 80, 8080).build()),
        o(endpoint_slice("shop", "web-1", "web")
            .port("http", 8080)
            .ready("not-an-ip")
            .ready("10.3.0.1")
            .build()),
    ];
    let c = routed(svc("web", 80), objects);
    assert_eq!(serves(&c, "x.com", "/"), "a -> shop/web:80 [10.3.0.1:8080]");
    assert_eq!(
        findings(&c),
        ["warning EndpointSlice shop/web-1 endpoints[0].addresses[0]"]
    );
}

#[test]
fn external_name_service_proxies_to_the_dns_name_on_the_ingress_port() {
    let objects = vec![o(service("shop", "ext")
        .external_name("api.example.com")
        .build())];
    let c = routed(svc("ext", 443), objects);
    assert_eq!(
        serves(&c, "x.com", "/"),
        "a -> shop/ext:443 [api.example.com:443]"
    );
}

#[test]
fn missing_service_answers_503_and_reports_the_field() {
    let mut objects = api();
    objects.push(our_class());
    objects.push(o(ingress("shop", "b")
        .class("vestibule")
        .host("ok.com")
        .prefix("/", svc("api", 80))
        .build()));
    let c = routed(svc("nope", 80), objects);
    assert_eq!(serves(&c, "x.com", "/"), "a -> 503");
    assert_eq!(
        serves(&c, "ok.com", "/"),
        "b -> shop/api:80 [10.1.0.1:8080 10.1.0.2:8081]"
    );
    assert_eq!(
        findings(&c),
        ["warning Ingress shop/a spec.rules[0].http.paths[0].backend.service.name"]
    );
}

#[test]
fn missing_port_answers_503_and_reports_the_field() {
    let c = routed(svc("api", 81), api());
    assert_eq!(serves(&c, "x.com", "/"), "a -> 503");
    assert_eq!(
        findings(&c),
        ["warning Ingress shop/a spec.rules[0].http.paths[0].backend.service.port.number"]
    );
    let c = routed(svc_named("api", "grpc"), api());
    assert_eq!(serves(&c, "x.com", "/"), "a -> 503");
    assert_eq!(
        findings(&c),
        ["warning Ingress shop/a spec.rules[0].http.paths[0].backend.service.port.name"]
    );
}

#[test]
fn invalid_backend_references_are_errors() {
    let mut no_port = svc("api", 80);
    if let Some(s) = no_port.service.as_mut() {
        s.port = None;
    }
    let c = routed(no_port, api());
    assert_eq!(serves(&c, "x.com", "/"), "404");
    assert_eq!(
        findings(&c),
        ["error Ingress shop/a spec.rules[0].http.paths[0].backend.service.port"]
    );
    let c = routed(svc("api", 70000), api());
    assert_eq!(
        findings(&c),
        ["error Ingress shop/a spec.rules[0].http.paths[0].backend.service.port.number"]
    );
}

#[test]
fn clusters_are_shared_between_routes_to_the_same_service_port() {
    let mut objects = api();
    objects.push(our_class());
    objects.push(o(ingress("shop", "a")
        .class("vestibule")
        .host("x.com")
        .prefix("/", svc("api", 80))
        .host("y.com")
        .prefix("/", svc_named("api", "http"))
        .build()));
    let c = compile_default(objects);
    assert_eq!(c.table.clusters().len(), 1);
}

/// `ssl-passthrough` with `--enable-ssl-passthrough`: a named host's `/` path carries it;
/// other paths, a host-less rule, an Ingress with no `/` and a second claimant are told why
/// they do not; without the flag it is only a warning.
#[test]
fn passthrough_goes_to_the_root_path_of_a_named_host() {
    let pass = "nginx.ingress.kubernetes.io/ssl-passthrough";
    let objects = || {
        let mut objects = vec![our_class()];
        objects.extend(backend("default", "argo", "10.0.0.1"));
        objects.extend(backend("default", "web", "10.0.0.2"));
        let passed = |name: &str| {
            ingress("default", name)
                .class("vestibule")
                .annotation(pass, "true")
        };
        objects.push(o(passed("argo")
            .created(5)
            .host("argo.example")
            .prefix("/", svc("argo", 80))
            .prefix("/api", svc("web", 80))
            .build()));
        objects.push(o(passed("again")
            .created(10)
            .host("argo.example")
            .exact("/", svc("web", 80))
            .build()));
        objects.push(o(passed("nameless")
            .any_host()
            .prefix("/", svc("web", 80))
            .build()));
        objects.push(o(passed("deep")
            .host("deep.example")
            .prefix("/x", svc("web", 80))
            .build()));
        objects
    };
    let on = compile_with(
        objects(),
        &Options {
            enable_ssl_passthrough: true,
            ..Options::default()
        },
    );
    let table = &on.table;
    let argo = table.passthrough(Some("argo.example")).unwrap();
    assert_eq!((&*argo.origin.name, &*argo.rule.path), ("argo", "/"));
    assert!(table.passthrough(Some("deep.example")).is_none());
    assert!(table.passthrough(None).is_none());
    // Plain HTTP routing is untouched.
    assert!(serves(&on, "argo.example", "/api/v1").starts_with("argo -> default/web:80"));
    let found = findings(&on);
    for expected in [
        "warning Ingress default/argo spec.rules[0].http.paths[1]",
        "warning Ingress default/again spec.rules[0].http.paths[0]",
        "warning Ingress default/nameless metadata.annotations[\"nginx.ingress.kubernetes.io/ssl-passthrough\"]",
        "warning Ingress default/deep metadata.annotations[\"nginx.ingress.kubernetes.io/ssl-passthrough\"]",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "{expected}: {found:#?}"
        );
    }
    assert_eq!(found.len(), 4, "{found:#?}");

    let off = compile_default(objects());
    assert!(!off.table.has_passthrough());
    let found = findings(&off);
    assert_eq!(found.len(), 4, "one warning per Ingress: {found:#?}");
    assert!(
        found
            .iter()
            .all(|f| f.ends_with("[\"nginx.ingress.kubernetes.io/ssl-passthrough\"]"))
    );
}
