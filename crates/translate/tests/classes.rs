//! "Which Ingresses are ours": IngressClass, the legacy annotation, default class, namespaces.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use vestibule_testkit::{ingress, ingress_class, svc};
use vestibule_translate::Options;

fn web() -> Vec<vestibule_translate::Object> {
    backend("default", "web", "10.0.0.1")
}

#[test]
fn ingress_class_name_of_our_controller_is_served() {
    let mut objects = web();
    objects.push(our_class());
    objects.push(o(ingress("default", "a")
        .class("vestibule")
        .prefix("/", svc("web", 80))
        .build()));
    let c = compile_default(objects);
    assert!(is_ours(&c, "default", "a"));
    assert_eq!(
        serves(&c, "x.com", "/"),
        "a -> default/web:80 [10.0.0.1:8080]"
    );
}

#[test]
fn ingress_class_of_another_controller_is_ignored() {
    let mut objects = web();
    objects.push(our_class());
    objects.push(o(ingress_class("nginx", "k8s.io/ingress-nginx").build()));
    objects.push(o(ingress("default", "a")
        .class("nginx")
        .prefix("/", svc("web", 80))
        .build()));
    let c = compile_default(objects);
    assert!(!is_ours(&c, "default", "a"));
    assert_eq!(serves(&c, "x.com", "/"), "404");
    let reason = &c.report.ingresses[0].reason;
    assert!(reason.contains("k8s.io/ingress-nginx"), "{reason}");
    // Not ours is not invalid: nothing to report.
    assert_eq!(findings(&c), Vec::<String>::new());
}

#[test]
fn missing_ingress_class_means_not_ours() {
    let mut objects = web();
    objects.push(o(ingress("default", "a")
        .class("vestibule")
        .prefix("/", svc("web", 80))
        .build()));
    let c = compile_default(objects);
    assert!(!is_ours(&c, "default", "a"));
    assert_eq!(serves(&c, "x.com", "/"), "404");
}

#[test]
fn legacy_annotation_is_honoured_when_it_names_our_class() {
    let annotated = |name: &str, class: &str| {
        o(ingress("default", name)
            .annotation("kubernetes.io/ingress.class", class)
            .host(&format!("{name}.com"))
            .prefix("/", svc("web", 80))
            .build())
    };
    let mut objects = web();
    objects.push(annotated("ours", "vestibule"));
    objects.push(annotated("theirs", "nginx"));
    let c = compile_default(objects);
    assert!(is_ours(&c, "default", "ours"));
    assert!(!is_ours(&c, "default", "theirs"));
    assert_eq!(serves(&c, "theirs.com", "/"), "404");

    let custom = Options {
        ingress_class: "nginx".to_owned(),
        ..Options::default()
    };
    let mut objects = web();
    objects.push(annotated("theirs", "nginx"));
    assert!(is_ours(
        &compile_with(objects, &custom),
        "default",
        "theirs"
    ));
}

#[test]
fn ingress_class_name_wins_over_the_annotation() {
    let mut objects = web();
    objects.push(our_class());
    objects.push(o(ingress_class("nginx", "k8s.io/ingress-nginx").build()));
    objects.push(o(ingress("default", "spec-theirs")
        .class("nginx")
        .annotation("kubernetes.io/ingress.class", "vestibule")
        .build()));
    objects.push(o(ingress("default", "spec-ours")
        .class("vestibule")
        .annotation("kubernetes.io/ingress.class", "nginx")
        .build()));
    let c = compile_default(objects);
    assert!(!is_ours(&c, "default", "spec-theirs"));
    assert!(is_ours(&c, "default", "spec-ours"));
}

#[test]
fn ingress_without_class_needs_our_default_class_or_the_flag() {
    let classless = || o(ingress("default", "a").prefix("/", svc("web", 80)).build());

    let mut plain = web();
    plain.push(our_class());
    plain.push(classless());
    assert!(!is_ours(&compile_default(plain.clone()), "default", "a"));

    let mut with_default = web();
    with_default.push(o(ingress_class("vestibule", CONTROLLER)
        .default_class()
        .build()));
    with_default.push(classless());
    let c = compile_default(with_default);
    assert!(is_ours(&c, "default", "a"));
    assert_eq!(
        serves(&c, "x.com", "/"),
        "a -> default/web:80 [10.0.0.1:8080]"
    );

    let mut other_default = web();
    other_default.push(our_class());
    other_default.push(o(ingress_class("nginx", "k8s.io/ingress-nginx")
        .default_class()
        .build()));
    other_default.push(classless());
    assert!(!is_ours(&compile_default(other_default), "default", "a"));

    let flag = Options {
        watch_ingress_without_class: true,
        ..Options::default()
    };
    assert!(is_ours(&compile_with(plain, &flag), "default", "a"));
}

#[test]
fn watch_namespaces_limits_what_is_read() {
    let mut objects = backend("team-a", "web", "10.0.0.1");
    objects.extend(backend("team-b", "web", "10.0.0.2"));
    objects.push(our_class());
    objects.push(o(ingress("team-a", "a")
        .class("vestibule")
        .host("a.com")
        .prefix("/", svc("web", 80))
        .build()));
    objects.push(o(ingress("team-b", "b")
        .class("vestibule")
        .host("b.com")
        .prefix("/", svc("web", 80))
        .build()));
    let only_a = Options {
        watch_namespaces: vec!["team-a".to_owned()],
        ..Options::default()
    };
    let c = compile_with(objects.clone(), &only_a);
    assert_eq!(
        serves(&c, "a.com", "/"),
        "a -> team-a/web:80 [10.0.0.1:8080]"
    );
    assert_eq!(serves(&c, "b.com", "/"), "404");
    assert_eq!(c.report.ingresses.len(), 1);
    let all = compile_default(objects);
    assert_eq!(
        serves(&all, "b.com", "/"),
        "b -> team-b/web:80 [10.0.0.2:8080]"
    );
}
