//! The dashboard's JSON API (`/api/v1/...`): what the page reads, documented in
//! `docs/dashboard.md` for scripts too. Every answer is built from the published
//! configuration and the data plane's atomics at the time of the request; lists are
//! filtered (`q`) and cut (`limit`) before they are encoded, so the answer stays small and
//! quick however many Ingresses are installed.

use std::cmp::Reverse;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use vestibule_controller::Published;
use vestibule_model::{Backend, PathKind, Route, RouteTable, VirtualHost};
use vestibule_translate::Severity;

use super::Sources;
use crate::admin::{AdminState, rfc3339, tls_view};

/// Items a list answers with unless `limit` says otherwise, and the most it may ask.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// A list request's `q` (case-insensitive substring) and `limit`.
#[derive(Debug)]
pub(super) struct Query {
    needle: String,
    limit: usize,
}

impl Query {
    pub(super) fn parse(query: &str) -> Result<Query, String> {
        let mut parsed = Query {
            needle: String::new(),
            limit: DEFAULT_LIMIT,
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "q" => parsed.needle = value.trim().to_lowercase(),
                "limit" => {
                    parsed.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            format!("limit {value:?} is not a number in 1..={MAX_LIMIT}")
                        })?;
                }
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        Ok(parsed)
    }

    /// Whether any of `texts` holds the needle (every item does when there is none).
    fn admits<'t>(&self, texts: impl IntoIterator<Item = &'t str>) -> bool {
        self.needle.is_empty()
            || texts
                .into_iter()
                .any(|t| t.to_lowercase().contains(&self.needle))
    }
}

/// Counts and times for the page's header: generation, when it changed, and how much of
/// everything there is.
pub(super) fn overview(state: &AdminState, sources: &Sources, published: &Published) -> Value {
    let table = &published.table;
    let health = sources.dataplane.endpoint_health();
    let endpoints: usize = health.iter().map(|c| c.endpoints.len()).sum();
    let ejected = health
        .iter()
        .flat_map(|c| &c.endpoints)
        .filter(|e| e.ejected)
        .count();
    let severity = |level: Severity| {
        published
            .report
            .diagnostics
            .iter()
            .filter(|d| d.severity == level)
            .count()
    };
    json!({
        "generation": published.generation,
        "installed_generation": state.installed.load(Ordering::SeqCst),
        "published_at": jiff::Timestamp::try_from(published.published_at)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        "compile_time_ms": published.compile_time.as_secs_f64() * 1000.0,
        "draining": state.draining.load(Ordering::SeqCst),
        "objects": published.objects,
        "ingresses": {
            "served": published.report.ours().count(),
            "ignored": published.report.ingresses.len() - published.report.ours().count(),
        },
        "virtual_hosts": table.virtual_hosts().len(),
        "routes": table.routes().len(),
        "services": table.clusters().len(),
        "endpoints": endpoints,
        "ejected_endpoints": ejected,
        "certificates": table.tls().certificates().len(),
        "earliest_expiry": table.tls().earliest_expiry().map(rfc3339),
        "diagnostics": {
            "error": severity(Severity::Error),
            "warning": severity(Severity::Warning),
            "info": severity(Severity::Info),
        },
        "source_problems": published.problems.len(),
        "metrics": sources.metrics.is_some(),
    })
}

/// Virtual hosts and their routes in the order the table tries them, so the first route
/// whose path matches a request is the one that wins, as `explain` would say.
pub(super) fn routes(published: &Published, query: &Query) -> Value {
    let table = &published.table;
    let mut total = 0;
    let mut hosts = Vec::new();
    for vhost in table.virtual_hosts() {
        let host = vhost.host.to_string();
        let admitted = query.admits(std::iter::once(host.as_str()).chain(
            vhost.route_ids().iter().flat_map(|id| {
                let route = table.route(*id);
                [
                    &*route.origin.name,
                    &*route.rule.path,
                    service_name(table, route),
                ]
            }),
        ));
        if !admitted {
            continue;
        }
        total += 1;
        if hosts.len() < query.limit {
            hosts.push(host_json(table, vhost, host));
        }
    }
    let shadowed: Vec<Value> = table
        .shadowed()
        .iter()
        .filter(|s| query.admits([&*s.origin.name, &*s.rule.path]))
        .take(query.limit)
        .map(|s| {
            let by = &table.route(s.by).origin;
            json!({
                "host": s.host.to_string(),
                "path": &*s.rule.path,
                "kind": kind_name(s.rule.kind),
                "ingress": format!("{}/{}", s.origin.namespace, s.origin.name),
                "field": &*s.origin.field,
                "held_by": format!("{}/{}", by.namespace, by.name),
            })
        })
        .collect();
    json!({
        "generation": published.generation,
        "total": total,
        "hosts": hosts,
        "shadowed": shadowed,
        "default_backend": table.default_backend().map(|d| json!({
            "backend": backend_json(table, &d.backend),
            "ingress": d.origin.as_ref().map(|o| format!("{}/{}", o.namespace, o.name)),
        })),
    })
}

fn host_json(table: &RouteTable, vhost: &VirtualHost, host: String) -> Value {
    let mut routes: Vec<&Route> = vhost
        .route_ids()
        .iter()
        .map(|id| table.route(*id))
        .collect();
    // The sort is stable: rules of equal rank stay in the table's order, which is how the
    // table breaks such ties too.
    routes.sort_by_key(|r| Reverse(r.rule.rank()));
    json!({
        "host": host,
        "tls": vhost.tls,
        "aliases": vhost.aliases.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "passthrough": vhost.passthrough.map(|id| {
            let origin = &table.route(id).origin;
            format!("{}/{}", origin.namespace, origin.name)
        }),
        "routes": routes.iter().map(|r| route_json(table, vhost, r)).collect::<Vec<_>>(),
    })
}

fn route_json(table: &RouteTable, vhost: &VirtualHost, route: &Route) -> Value {
    json!({
        "path": &*route.rule.path,
        "kind": kind_name(route.rule.kind),
        "ingress": format!("{}/{}", route.origin.namespace, route.origin.name),
        "field": &*route.origin.field,
        "backend": backend_json(table, &route.backend),
        "redirects_http": route.redirects_http(vhost),
        "features": features(route),
        "canary": route.canary.as_ref().map(|c| json!({
            "ingress": format!("{}/{}", c.origin.namespace, c.origin.name),
            "backend": backend_json(table, &c.backend),
            "weight": c.weight,
            "weight_total": c.weight_total,
            "header": c.header.as_ref().map(|h| &*h.name),
            "cookie": c.cookie.as_deref(),
        })),
    })
}

fn kind_name(kind: PathKind) -> &'static str {
    match kind {
        PathKind::Exact => "Exact",
        PathKind::Prefix => "Prefix",
        PathKind::Regex => "Regex",
    }
}

fn service_name<'t>(table: &'t RouteTable, route: &Route) -> &'t str {
    match route.backend {
        Backend::Cluster(id) => &table.cluster(id).key.service,
        Backend::Unavailable { .. } => "",
    }
}

fn backend_json(table: &RouteTable, backend: &Backend) -> Value {
    match backend {
        Backend::Cluster(id) => {
            let cluster = table.cluster(*id);
            json!({
                "namespace": &*cluster.key.namespace,
                "service": &*cluster.key.service,
                "port": cluster.key.port,
                "endpoints": cluster.endpoints.len(),
            })
        }
        Backend::Unavailable { reason } => json!({ "unavailable": &**reason }),
    }
}

/// The per-route settings in force, by the names users know them by.
fn features(route: &Route) -> Vec<&'static str> {
    let policy = &route.policy;
    [
        (policy.refused.is_some(), "refused"),
        (policy.redirect.is_some(), "redirect"),
        (policy.fixed.is_some(), "fixed response"),
        (policy.rewrite.is_some(), "rewrite"),
        (policy.upstream_host.is_some(), "upstream host"),
        (policy.basic_auth.is_some(), "basic auth"),
        (policy.external_auth.is_some(), "external auth"),
        (policy.client_auth.is_some(), "client certificates"),
        (policy.source_ranges.is_some(), "allow list"),
        (policy.rate_limit.is_some(), "rate limit"),
        (policy.cors.is_some(), "CORS"),
        (policy.fallback.is_some(), "default backend"),
        (policy.custom_errors.is_some(), "custom errors"),
        (policy.headers.is_some(), "header rules"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

/// Services (one per port the served table sends to) with their endpoints' passive health
/// and how many routes use each.
pub(super) fn services(sources: &Sources, published: &Published, query: &Query) -> Value {
    let mut total = 0;
    let mut services = Vec::new();
    for cluster in sources.dataplane.endpoint_health() {
        if !query.admits([cluster.namespace.as_str(), &cluster.service]) {
            continue;
        }
        total += 1;
        if services.len() >= query.limit {
            continue;
        }
        services.push(json!({
            "namespace": cluster.namespace,
            "service": cluster.service,
            "port": cluster.port,
            "routes": cluster.routes,
            "endpoints": cluster.endpoints.iter().map(|e| json!({
                "address": e.address,
                "ejected": e.ejected,
                "in_flight": e.in_flight,
            })).collect::<Vec<_>>(),
        }));
    }
    json!({
        "generation": published.generation,
        "total": total,
        "services": services,
    })
}

pub(super) fn certificates(state: &AdminState, published: &Published) -> Value {
    let mut view = tls_view(&published.table, &state.generated_certificate);
    view["generation"] = json!(published.generation);
    view
}

/// Findings of the last compile (worst first) and the problems of the source (files that
/// did not parse, lists that failed).
pub(super) fn diagnostics(published: &Published, query: &Query) -> Value {
    let mut found: Vec<_> = published
        .report
        .diagnostics
        .iter()
        .filter(|d| {
            query.admits([
                &*d.object.namespace,
                &*d.object.name,
                d.field.as_str(),
                d.message.as_str(),
            ])
        })
        .collect();
    found.sort_by_key(|d| Reverse(d.severity));
    json!({
        "generation": published.generation,
        "total": found.len(),
        "diagnostics": found.into_iter().take(query.limit).collect::<Vec<_>>(),
        "source_problems": published.problems.iter().map(|p| json!({
            "source": p.source,
            "message": p.message,
        })).collect::<Vec<_>>(),
        "ignored_ingresses": published.report.ingresses.iter()
            .filter(|i| !i.ours)
            .take(query.limit)
            .collect::<Vec<_>>(),
    })
}

/// Request totals since start per metrics label set, busiest first, with the time they
/// were read: two readings make rates.
pub(super) fn traffic(sources: &Sources, query: &Query) -> Value {
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let Some(metrics) = &sources.metrics else {
        return json!({ "enabled": false, "at_ms": at_ms, "total": 0, "routes": [] });
    };
    let mut totals: Vec<_> = metrics
        .traffic()
        .into_iter()
        .filter(|t| {
            query.admits([
                t.namespace.as_str(),
                &t.ingress,
                &t.service,
                t.host.as_deref().unwrap_or(""),
            ])
        })
        .collect();
    totals.sort_by_key(|t| Reverse(t.requests));
    json!({
        "enabled": true,
        "at_ms": at_ms,
        "total": totals.len(),
        "routes": totals.iter().take(query.limit).map(|t| json!({
            "namespace": t.namespace,
            "ingress": t.ingress,
            "service": t.service,
            "host": t.host,
            "requests": t.requests,
            "client_errors": t.client_errors,
            "server_errors": t.server_errors,
            "duration_sum_seconds": t.duration_sum.as_secs_f64(),
            "duration_buckets": t.duration_buckets.iter().map(|(le, n)| json!({
                "le": if le.is_finite() { json!(le) } else { json!("+Inf") },
                "count": n,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}
