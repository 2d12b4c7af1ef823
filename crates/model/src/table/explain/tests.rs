//! The explanation agrees with the lookup it explains.

use super::*;
use crate::table::{Backend, RouteOrigin, TableBuilder};

fn origin(name: &str) -> RouteOrigin {
    RouteOrigin {
        namespace: "default".into(),
        name: name.into(),
        field: "spec.rules[0].http.paths[0]".into(),
    }
}

fn probe(host: &'static str, target: &'static str) -> Probe<'static> {
    Probe {
        host,
        target,
        method: "GET",
        ..Probe::default()
    }
}

#[test]
fn the_winner_is_the_lookups_and_every_other_rule_says_why_not() {
    let mut b = TableBuilder::new();
    let host = HostPattern::parse("shop.example").unwrap();
    let unavailable = || Backend::Unavailable {
        reason: "test".into(),
    };
    for (kind, path, name) in [
        (PathKind::Prefix, "/", "root"),
        (PathKind::Prefix, "/api", "api"),
        (PathKind::Exact, "/api/v1", "exact"),
        (PathKind::Prefix, "/apiv2", "apiv2"),
    ] {
        let rule = PathRule::new(kind, path).unwrap();
        b.route(host.clone(), rule, unavailable(), origin(name))
            .unwrap();
    }
    let rule = PathRule::new(PathKind::Prefix, "/api").unwrap();
    assert!(b.route(host, rule, unavailable(), origin("late")).is_err());
    let table = b.build();
    let explained = table
        .explain(&probe("Shop.Example:8080", "/api/v1/x?y=1"))
        .unwrap();
    assert_eq!(explained.request.host, "shop.example");
    assert_eq!(explained.host.how, HostMatch::Exact);
    let verdicts: Vec<(&str, Verdict)> = (explained.rules.iter())
        .map(|c| (c.ingress.as_str(), c.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("default/api", Verdict::Won),
            ("default/root", Verdict::Lost),
            ("default/exact", Verdict::NoMatch),
            ("default/apiv2", Verdict::NoMatch),
            ("default/late", Verdict::Shadowed),
        ]
    );
    assert!(
        explained.rules[1]
            .reason
            .contains("default/api (Prefix /api) is a longer match")
    );
    let explained = table.explain(&probe("shop.example", "/apiv2x")).unwrap();
    let apiv2 = explained
        .rules
        .iter()
        .find(|c| c.ingress == "default/apiv2")
        .unwrap();
    assert_eq!(apiv2.verdict, Verdict::NoMatch);
    assert!(
        apiv2.reason.contains("not a prefix element-wise"),
        "{}",
        apiv2.reason
    );
    assert!(table.explain(&probe("a b", "/")).is_err());
    assert!(table.explain(&probe("shop.example", "no-slash")).is_err());
}
