//! Differences from ingress-nginx that no diagnostic names, because Vestibule's behaviour is
//! intended: found from the Ingress and what the compile made of it, one detector per
//! documented difference (docs/upgrading-from-ingress-nginx.md, docs/annotations.md).

use std::collections::BTreeSet;

use vestibule_model::{AllowedOrigins, Backend, HostPattern, UpstreamProtocol};

use super::{Code, Context, Finding, Level, View, raw_path};
use crate::annotations::field;
use crate::annotations::syntax::parse_bool;

type Detector = fn(&Context<'_>, &View<'_>) -> Vec<Finding>;

/// Every detector, in the order their findings are listed within a level.
const DETECTORS: &[Detector] = &[
    client_certificate_host,
    trailing_slash_redirect,
    https_redirect_slash,
    cors_origins,
    ssl_passthrough,
    www_redirect,
    upstream_protocol,
    response_headers,
    affinity_cookie,
    rate_limit_memory,
    canary_metrics,
];

pub(super) fn detect(context: &Context<'_>, view: &View<'_>) -> Vec<Finding> {
    DETECTORS.iter().flat_map(|d| d(context, view)).collect()
}

fn differs(code: Code, field: String, message: String, fix: Option<String>) -> Finding {
    Finding {
        level: Level::Differs,
        code,
        field,
        message,
        fix,
        snippet: None,
    }
}

fn is_on(view: &View<'_>, short: &str) -> bool {
    view.annotation(short).and_then(parse_bool) == Some(true)
}

/// nginx answers a request for `/foo` with 301 to `/foo/` when a location is `/foo/`
/// (`ngx_http_proxy_module`'s redirect for prefix locations ending in a slash), unless the
/// host also has `/foo` itself; regex locations are spared. The Ingress specification has
/// Prefix `/foo/` match `/foo`, and Exact `/foo/` not.
fn trailing_slash_redirect(context: &Context<'_>, view: &View<'_>) -> Vec<Finding> {
    let mut found = Vec::new();
    let rules = view
        .ingress
        .spec
        .iter()
        .flat_map(|s| s.rules.iter().flatten());
    for (i, rule) in rules.enumerate() {
        let Ok(host) = HostPattern::parse(rule.host.as_deref().unwrap_or("")) else {
            continue;
        };
        if context.regex_hosts.contains(&host) {
            continue;
        }
        let paths = rule.http.iter().flat_map(|h| h.paths.iter());
        for (j, path) in paths.enumerate() {
            let raw = raw_path(path.path.as_deref());
            let bare = raw.trim_end_matches('/');
            let field = format!("spec.rules[{i}].http.paths[{j}]");
            let served = view.routes.iter().any(|(r, _)| *r.origin.field == field);
            let has_bare = context
                .host_paths
                .get(&host)
                .is_some_and(|p| p.contains(bare));
            if bare.is_empty() || bare.len() == raw.len() || !served || has_bare {
                continue;
            }
            let nginx = format!(
                "a request for {bare}, without the slash: ingress-nginx answers 301 to {raw} \
                 (nginx's redirect for a location ending in /)"
            );
            let (message, fix) = if path.path_type == "Exact" {
                (
                    format!(
                        "{nginx}; Vestibule does not match it to this Exact path, so another path of the host, or 404, answers"
                    ),
                    format!("add an Exact path {bare} if clients request it without the slash"),
                )
            } else {
                (
                    format!(
                        "{nginx}; Vestibule sends it to this path's Service, as the Ingress specification has {raw} match {bare}"
                    ),
                    format!(
                        "nothing, unless pages under {raw} use relative links that need the slash: then let the application redirect {bare}"
                    ),
                )
            };
            found.push(differs(
                Code::TrailingSlashRedirect,
                field,
                message,
                Some(fix),
            ));
        }
    }
    found
}

/// ingress-nginx's redirect to HTTPS (`lua_ingress.lua`) drops a trailing slash from the
/// request target unless `preserve-trailing-slash` is true; Vestibule's keeps it.
fn https_redirect_slash(_: &Context<'_>, view: &View<'_>) -> Vec<Finding> {
    if is_on(view, "preserve-trailing-slash") {
        return Vec::new();
    }
    let Some((route, _)) = view
        .routes
        .iter()
        .find(|(r, vhost)| r.redirects_http(vhost))
    else {
        return Vec::new();
    };
    let has_tls = view.ingress.spec.as_ref().is_some_and(|s| s.tls.is_some());
    let at = if route.policy.force_ssl_redirect && is_on(view, "force-ssl-redirect") {
        field("force-ssl-redirect")
    } else if has_tls {
        "spec.tls".to_owned()
    } else {
        // The host has TLS from another Ingress.
        route.origin.field.to_string()
    };
    let host = match &route.host {
        HostPattern::Exact(name) => name.to_string(),
        other => other.to_string(),
    };
    vec![differs(
        Code::HttpsRedirectSlash,
        at,
        format!(
            "plain-HTTP requests are redirected to HTTPS with the path as requested; \
             ingress-nginx drops a trailing slash (http://{host}/docs/ goes to \
             https://{host}/docs) unless preserve-trailing-slash is \"true\""
        ),
        None,
    )]
}

/// Decision 5: origins are matched whole, where ingress-nginx's pattern is anchored at the
/// end only.
fn cors_origins(_: &Context<'_>, view: &View<'_>) -> Vec<Finding> {
    let listed = view.routes.iter().any(|(r, _)| {
        r.policy
            .cors
            .as_deref()
            .is_some_and(|c| matches!(c.origins, AllowedOrigins::List(_)))
    });
    if !listed {
        return Vec::new();
    }
    let first = view.annotation("cors-allow-origin").and_then(|v| {
        v.split(',')
            .map(str::trim)
            .find(|o| o.contains("://") && !o.contains('*'))
    });
    let example = first
        .and_then(|o| o.split_once("://"))
        .map(|(scheme, host)| format!(" (for {scheme}://{host}, also {scheme}://evil-{host})"))
        .unwrap_or_default();
    vec![differs(
        Code::CorsOrigins,
        field("cors-allow-origin"),
        format!(
            "origins are matched whole (scheme, host and port); ingress-nginx's pattern is \
             anchored at the end only, so it also let in origins that merely end with a listed \
             one{example}. Responses also carry Vary: Origin"
        ),
        Some("list every origin that must be let in".to_owned()),
    )]
}

/// TLS passthrough reaches wildcard hosts and aliases, and the Service's endpoints.
fn ssl_passthrough(context: &Context<'_>, view: &View<'_>) -> Vec<Finding> {
    let mut found = Vec::new();
    for (route, vhost) in view
        .routes
        .iter()
        .filter(|(r, v)| v.passthrough == Some(r.id))
    {
        let host = &vhost.host;
        let mut say = |message: String, fix: Option<&str>| {
            found.push(differs(
                Code::SslPassthrough,
                field("ssl-passthrough"),
                message,
                fix.map(str::to_owned),
            ));
        };
        if matches!(host, HostPattern::Wildcard(_)) {
            say(
                format!(
                    "HTTPS for {host} is passed through untouched; ingress-nginx matches exact host names only, so it terminated TLS for this wildcard host itself"
                ),
                None,
            );
        }
        if !vhost.aliases.is_empty() {
            let aliases: Vec<String> = vhost.aliases.iter().map(ToString::to_string).collect();
            say(
                format!(
                    "the server-alias names ({}) are passed through too; ingress-nginx terminated TLS for them",
                    aliases.join(", ")
                ),
                None,
            );
        }
        let to_endpoints = match &route.backend {
            Backend::Cluster(id) => !context.compiled.table.cluster(*id).key.cluster_ip,
            Backend::Unavailable { .. } => false,
        };
        if to_endpoints {
            say(
                format!(
                    "connections for {host} go to the Service's endpoints, balanced by Vestibule; ingress-nginx sends them to the Service's cluster IP"
                ),
                Some("add service-upstream: \"true\" to use the cluster IP"),
            );
        }
    }
    found
}

fn www_redirect(_: &Context<'_>, view: &View<'_>) -> Vec<Finding> {
    if !is_on(view, "from-to-www-redirect") || view.routes.is_empty() {
        return Vec::new();
    }
    vec![differs(
        Code::WwwRedirect,
        field("from-to-www-redirect"),
        "the redirect between the www. name and the bare one keeps the path and query exactly, \
         with the port of the request's Host; ingress-nginx drops a trailing slash from the \
         path and may add :80"
            .to_owned(),
        None,
    )]
}

/// Vestibule uses the Service port's `appProtocol` when `backend-protocol` is not set;
/// ingress-nginx never reads `appProtocol`.
fn upstream_protocol(context: &Context<'_>, view: &View<'_>) -> Vec<Finding> {
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for (route, _) in view.routes {
        let Backend::Cluster(id) = &route.backend else {
            continue;
        };
        if route.policy.proxy.backend_protocol.is_some() {
            continue;
        }
        let cluster = context.compiled.table.cluster(*id);
        let spoken = match cluster.protocol {
            UpstreamProtocol::Http1 => continue,
            UpstreamProtocol::H2c => "HTTP/2 in clear text",
            UpstreamProtocol::Https => "HTTPS",
            UpstreamProtocol::H2Tls => "HTTP/2 over TLS",
        };
        if !seen.insert(cluster.key.clone()) {
            continue;
        }
        let service = format!(
            "{}/{} port {}",
            cluster.key.namespace, cluster.key.service, cluster.key.port
        );
        found.push(differs(
            Code::UpstreamProtocol,
            format!("{}.backend", route.origin.field),
            format!(
                "Vestibule speaks {spoken} to Service {service}, as its appProtocol says; \
                 ingress-nginx ignores appProtocol and speaks HTTP/1.1 in clear text unless \
                 backend-protocol says otherwise"
            ),
            Some(format!(
                "nothing if the backend speaks {spoken}; else set backend-protocol: HTTP"
            )),
        ));
    }
    found
}

fn response_headers(_: &Context<'_>, view: &View<'_>) -> Vec<Finding> {
    let applied = view.annotation("custom-headers").is_some()
        && view.routes.iter().any(|(r, _)| {
            r.policy.refused.is_none()
                && r.policy
                    .headers
                    .as_deref()
                    .is_some_and(|h| !h.response.is_empty())
        });
    if !applied {
        return Vec::new();
    }
    vec![differs(
        Code::ResponseHeaders,
        field("custom-headers"),
        "its fields are set on the responses of requests that reach the upstream (and on the \
         error backend's, 502 and 504), not on the answers Vestibule gives before that \
         (redirects, CORS preflights, 401, 403, 503), where nginx's more_set_headers adds them"
            .to_owned(),
        None,
    )]
}

fn affinity_cookie(_: &Context<'_>, view: &View<'_>) -> Vec<Finding> {
    if !view
        .routes
        .iter()
        .any(|(r, _)| r.policy.proxy.affinity.is_some())
    {
        return Vec::new();
    }
    let mut message = "affinity cookies that ingress-nginx set are not understood: each client \
                       that has one is placed afresh, once, after the move"
        .to_owned();
    let mut fix = None;
    if view
        .annotation("session-cookie-change-on-failure")
        .is_none()
    {
        message.push_str(
            "; when a session's endpoint is gone, Vestibule picks another and sets a new cookie \
             (session-cookie-change-on-failure defaults to true here, to false in ingress-nginx)",
        );
        fix = Some(
            "set session-cookie-change-on-failure: \"false\" to keep ingress-nginx's behaviour"
                .to_owned(),
        );
    }
    vec![differs(
        Code::AffinityCookie,
        field("affinity"),
        message,
        fix,
    )]
}

fn rate_limit_memory(_: &Context<'_>, view: &View<'_>) -> Vec<Finding> {
    if !view
        .routes
        .iter()
        .any(|(r, _)| r.policy.rate_limit.is_some())
    {
        return Vec::new();
    }
    let key = ["limit-rps", "limit-rpm", "limit-connections"]
        .into_iter()
        .find(|k| view.annotation(k).is_some())
        .unwrap_or("limit-rps");
    vec![differs(
        Code::RateLimitMemory,
        field(key),
        "limits are counted per client in each replica, as in ingress-nginx; but when a \
         replica tracks --limit-max-clients clients (100,000 by default) for this Ingress, the \
         one seen least recently is forgotten and starts again with a full burst, where nginx \
         refuses new clients once its 10 MB zone is full; and a change of the limits starts \
         the counters afresh"
            .to_owned(),
        None,
    )]
}

fn canary_metrics(_: &Context<'_>, view: &View<'_>) -> Vec<Finding> {
    if view.canary_of.is_empty() {
        return Vec::new();
    }
    let mut message = "the requests this canary takes are counted in \
                       vestibule_http_requests_total, and logged, under this Ingress's name \
                       and Service (\"canary\": true in the JSON access log); ingress-nginx \
                       counts them under the main Ingress, with the canary backend in a label"
        .to_owned();
    if view
        .canary_of
        .iter()
        .any(|(main, _)| main.policy.proxy.affinity.is_some())
    {
        message.push_str(
            "; the main's affinity cookies mark the canary side, and those ingress-nginx set \
             are not understood, so sessions are placed afresh once",
        );
    }
    vec![differs(
        Code::CanaryMetrics,
        field("canary"),
        message,
        Some("adapt the analysis queries of Argo Rollouts or Flagger (docs/upgrading-from-ingress-nginx.md)".to_owned()),
    )]
}

/// nginx checks client certificates per host, with the settings of the oldest Ingress that
/// has them; Vestibule per route. Paths of other Ingresses on such a host lose the check.
fn client_certificate_host(context: &Context<'_>, view: &View<'_>) -> Vec<Finding> {
    let mut hosts = BTreeSet::new();
    let mut found = Vec::new();
    if view.annotation("auth-tls-secret").is_some() {
        return Vec::new();
    }
    for (route, _) in view.routes {
        let Some(owner) = context.client_cert_hosts.get(&route.host) else {
            continue;
        };
        if *owner == view.key || !hosts.insert(route.host.to_string()) {
            continue;
        }
        let host = &route.host;
        found.push(Finding {
            level: Level::NeedsWork,
            code: Code::ClientCertificateHost,
            field: route.origin.field.to_string(),
            message: format!(
                "ingress-nginx asks for and checks client certificates on every path of \
                 {host}, with the auth-tls annotations of Ingress {}/{}; Vestibule checks them \
                 on that Ingress's paths only, so this Ingress's paths on {host} are served \
                 without a client certificate",
                owner.0, owner.1
            ),
            fix: Some("add the same auth-tls-* annotations to this Ingress".to_owned()),
            snippet: None,
        });
    }
    found
}
