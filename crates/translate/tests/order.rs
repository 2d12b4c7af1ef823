//! The compile's output does not depend on the order of its input.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use vestibule_testkit::{endpoint_slice, ingress, ingress_class, service, svc};
use vestibule_translate::{Object, Options, Snapshot, compile};

/// A pool of objects with every kind of interaction: conflicts, two default backends,
/// wildcards, a missing Service, a class of another controller, slices over two Services.
fn pool() -> Vec<Object> {
    let mut objects = vec![
        our_class(),
        o(ingress_class("nginx", "k8s.io/ingress-nginx").build()),
        o(service("a", "web").port("http", 80, 8080).build()),
        o(service("a", "api")
            .port("http", 80, 8080)
            .port("admin", 81, 9000)
            .build()),
        o(endpoint_slice("a", "web-1", "web")
            .port("http", 8080)
            .ready("10.0.0.1")
            .ready("10.0.0.2")
            .build()),
        o(endpoint_slice("a", "web-2", "web")
            .port("http", 8081)
            .ready("10.0.0.3")
            .build()),
        o(endpoint_slice("a", "api-1", "api")
            .port("http", 8080)
            .port("admin", 9000)
            .ready("10.0.1.1")
            .build()),
    ];
    let ingresses = [
        ingress("a", "one")
            .created(3)
            .host("x.com")
            .prefix("/", svc("web", 80))
            .exact("/api", svc("api", 80)),
        ingress("a", "two")
            .created(1)
            .host("x.com")
            .prefix("/", svc("api", 80)),
        ingress("a", "three")
            .host("*.x.com")
            .prefix("/", svc("api", 81))
            .default_backend(svc("web", 80)),
        ingress("a", "four")
            .created(2)
            .default_backend(svc("api", 80)),
        ingress("a", "five")
            .any_host()
            .prefix("/z", svc("missing", 80)),
        ingress("b", "six")
            .host("x.com")
            .prefix("/", svc("web", 80)),
    ];
    objects.extend(
        ingresses
            .into_iter()
            .map(|i| o(i.class("vestibule").build())),
    );
    objects.push(o(ingress("a", "theirs")
        .class("nginx")
        .host("x.com")
        .prefix("/", svc("web", 80))
        .build()));
    objects
}

proptest! {
    #[test]
    fn compile_is_independent_of_input_order(order in Just(pool()).prop_shuffle()) {
        let options = Options::default();
        let reference = compile(&Snapshot::from_objects(pool()), &options);
        let shuffled = compile(&Snapshot::from_objects(order), &options);
        prop_assert_eq!(&reference, &shuffled);
    }
}

#[test]
fn the_pool_exercises_conflicts_and_defaults() {
    // Guards the property test: were the pool to lose its conflicts, it would prove little.
    let c = compile(&Snapshot::from_objects(pool()), &Options::default());
    let f = findings(&c);
    assert!(
        f.iter()
            .any(|d| d.contains("a/one spec.rules[0].http.paths[0]")),
        "{f:?}"
    );
    assert!(
        f.iter().any(|d| d.contains("a/three spec.defaultBackend")),
        "{f:?}"
    );
    assert_eq!(serves(&c, "x.com", "/"), "two -> a/api:80 [10.0.1.1:8080]");
    assert_eq!(
        serves(&c, "q.x.com", "/"),
        "three -> a/api:81 [10.0.1.1:9000]"
    );
    assert_eq!(
        serves(&c, "none.org", "/"),
        "default(four) -> a/api:80 [10.0.1.1:8080]"
    );
}
