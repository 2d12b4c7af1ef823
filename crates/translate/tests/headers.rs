//! Header rules as compiled: `custom-headers` (each field allowed by the operator, else the
//! Ingress closes), the controller-wide ConfigMaps (a bad field is an error on the ConfigMap
//! and is left out), and the redirect and cookie rewriting keys.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use vestibule_model::{HeaderOp, HeaderRules, Replace, Target};
use vestibule_testkit::{ingress, svc};
use vestibule_translate::{Compiled, Object, Options};

const PREFIX: &str = "nginx.ingress.kubernetes.io/";

fn config_map(name: &str, data: &[(&str, &str)]) -> Object {
    o(ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..ConfigMap::default()
    })
}

fn compiled(annotations: &[(&str, &str)], options: &Options) -> Compiled {
    let mut builder = ingress("default", "a").class("vestibule");
    for (short, value) in annotations {
        builder = builder.annotation(&format!("{PREFIX}{short}"), value);
    }
    let mut objects = vec![our_class()];
    objects.extend(backend("default", "web", "10.0.0.1"));
    objects.push(config_map(
        "security",
        &[("X-Frame-Options", "DENY"), ("X-Id", "$request_id")],
    ));
    objects.push(config_map(
        "fields",
        &[
            ("X-Env", "prod"),
            ("Bad Name", "x"),
            ("X-Cookie", "$cookie_id"),
        ],
    ));
    objects.push(o(builder.host("x.com").prefix("/", svc("web", 80)).build()));
    compile_with(objects, options)
}

fn rules(c: &Compiled) -> Option<Arc<HeaderRules>> {
    match c.table.lookup("x.com", "/").target {
        Target::Route(route) => route.policy.headers.clone(),
        other => panic!("{other:?}"),
    }
}

fn refused(c: &Compiled) -> bool {
    match c.table.lookup("x.com", "/").target {
        Target::Route(route) => route.policy.refused.is_some(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn custom_headers_need_every_field_allowed() {
    let allowed = Options {
        global_allowed_response_headers: vec!["x-frame-options".into(), "X-Id".into()],
        ..Options::default()
    };
    let c = compiled(&[("custom-headers", "security")], &allowed);
    assert_eq!(findings(&c), Vec::<String>::new());
    let found = rules(&c).unwrap();
    let names: Vec<&str> = found.response.iter().map(|r| r.op.name()).collect();
    assert_eq!(names, ["x-frame-options", "x-id"]);
    assert!(!refused(&c));
    for (value, options) in [
        ("security", Options::default()),
        ("missing", allowed.clone()),
        ("other/security", allowed.clone()),
    ] {
        let c = compiled(&[("custom-headers", value)], &options);
        assert!(refused(&c), "{value}");
        let found = findings(&c);
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("error") && f.contains("custom-headers")),
            "{value}: {found:?}"
        );
    }
}

#[test]
fn the_flags_configmaps_apply_to_every_route_less_their_bad_fields() {
    let options = Options {
        proxy_set_headers: Some(("default".into(), "fields".into())),
        add_headers: Some(("default".into(), "absent".into())),
        hide_headers: vec!["Server".into()],
        ..Options::default()
    };
    let c = compiled(&[], &options);
    let rules = rules(&c).unwrap();
    assert_eq!(rules.request, [HeaderOp::set("X-Env", "prod").unwrap()]);
    assert_eq!(rules.response.len(), 1);
    assert_eq!(rules.response[0].op, HeaderOp::remove("server").unwrap());
    let found = findings(&c);
    for expected in [
        "error ConfigMap default/fields data.Bad Name",
        "error ConfigMap default/fields data.X-Cookie",
        "error ConfigMap default/absent data",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "{expected} in {found:#?}"
        );
    }
}

#[test]
fn redirects_and_cookies_are_rewritten_by_pairs() {
    let c = compiled(
        &[
            ("proxy-redirect-from", "http://in/"),
            ("proxy-redirect-to", "https://out/"),
            ("proxy-cookie-domain", "in.local out.example"),
            ("proxy-cookie-path", "off"),
        ],
        &Options::default(),
    );
    assert_eq!(findings(&c), Vec::<String>::new());
    let r = rules(&c).unwrap();
    let pair = |from: &str, to: &str| Replace {
        from: from.into(),
        to: to.into(),
    };
    assert_eq!(r.redirect, Some(pair("http://in/", "https://out/")));
    assert_eq!(r.cookie_domain, Some(pair("in.local", "out.example")));
    assert_eq!(r.cookie_path, None);
    let c = compiled(
        &[
            ("proxy-redirect-from", "default"),
            ("proxy-redirect-to", "https://out/"),
        ],
        &Options::default(),
    );
    assert!(rules(&c).is_none());
    assert_eq!(findings(&c), Vec::<String>::new());
    for (short, value) in [
        ("proxy-redirect-from", "http://in/"),
        ("proxy-cookie-path", "/only-one"),
    ] {
        let c = compiled(&[(short, value)], &Options::default());
        let found = findings(&c);
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("error") && f.contains(short)),
            "{short}: {found:?}"
        );
        assert!(!refused(&c), "not protection: {short}");
    }
}
