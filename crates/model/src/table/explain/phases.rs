//! The phases after routing, as the request path meets them (the host's redirects, the
//! route's early answers, access control, rewrite, canary, backend), each decided for one
//! explained request.

use std::sync::Arc;

use super::{BackendView, Explanation, Phase, Probe, RequestView};
use crate::cors::CorsAnswer;
use crate::table::{Backend, Route, RoutePolicy, RouteTable, Target, VirtualHost};

/// The phases after routing, each as the request path decides it. Ends at the first that
/// answers the request itself.
struct Phases<'e> {
    out: &'e mut Vec<Phase>,
}

impl Phases<'_> {
    fn say(&mut self, phase: &'static str, decision: &'static str, reason: String) {
        self.out.push(Phase {
            phase,
            decision,
            reason,
        });
    }
}

impl RouteTable {
    pub(super) fn phases(
        &self,
        explained: &mut Explanation,
        vhost: Option<&VirtualHost>,
        target: Target<'_>,
        probe: &Probe<'_>,
    ) {
        let mut phases = Phases {
            out: &mut explained.phases,
        };
        let request = &explained.request;
        if let Some(answer) = server_answer(vhost, request, probe) {
            phases.say("early answers", "redirect", answer.clone());
            explained.outcome = answer;
            return;
        }
        let (route, policy) = match target {
            Target::Route(route) => (Some(route), &route.policy),
            Target::Default(default) => match &default.policy {
                Some(policy) => (None, &**policy),
                None => {
                    self.default_flag_backend(explained, &default.backend);
                    return;
                }
            },
            Target::NotFound => {
                let reason = "no rule matches and there is no default backend".to_owned();
                phases.say("route", "answer", format!("404: {reason}"));
                explained.outcome = "answered 404 Not Found".to_owned();
                return;
            }
        };
        if let Some(answer) = early(route, vhost, policy, request, probe) {
            phases.say("early answers", answer.0, answer.1.clone());
            explained.outcome = answer.1;
            return;
        }
        phases.say(
            "early answers",
            "pass",
            "no redirect or fixed answer".to_owned(),
        );
        if let Some(refusal) = access(policy, probe, &mut phases) {
            explained.outcome = refusal;
            return;
        }
        rewrite(route, policy, request, probe, &mut phases);
        let backend = match route {
            Some(route) => self.pick(route, probe, &mut phases),
            None => match target {
                Target::Default(default) => {
                    self.main_backend(&default.backend, policy, &mut phases)
                }
                _ => None,
            },
        };
        explained.policy = Some(Arc::clone(&policy.proxy));
        explained.outcome = match &backend {
            Some(b) if !b.endpoints.is_empty() => format!(
                "proxied to {} ({} endpoint{})",
                b.service,
                b.endpoints.len(),
                if b.endpoints.len() == 1 { "" } else { "s" }
            ),
            Some(b) => format!("answered 503: {} has no ready endpoints", b.service),
            None => "answered 503: the backend cannot be served".to_owned(),
        };
        explained.backend = backend;
    }

    /// The controller's `--default-backend-service`: proxied with the defaults, no phase of
    /// an Ingress's.
    fn default_flag_backend(&self, explained: &mut Explanation, backend: &Backend) {
        let mut phases = Phases {
            out: &mut explained.phases,
        };
        let reason = "no rule matches: the --default-backend-service serves it, with the \
                      controller's defaults"
            .to_owned();
        phases.say("route", "pass", reason);
        let policy = RoutePolicy::default();
        let view = self.main_backend(backend, &policy, &mut phases);
        explained.outcome = match &view {
            Some(b) if !b.endpoints.is_empty() => format!("proxied to {}", b.service),
            _ => "answered 503: the default backend cannot be served".to_owned(),
        };
        explained.backend = view;
    }

    /// The route's side (main or canary) and its Service.
    fn pick(
        &self,
        route: &Route,
        probe: &Probe<'_>,
        phases: &mut Phases<'_>,
    ) -> Option<BackendView> {
        if let Some(canary) = &route.canary {
            let name = format!("{}/{}", canary.origin.namespace, canary.origin.name);
            let header = (canary.header.as_ref()).and_then(|h| probe.header(&h.name));
            let cookie = (canary.cookie.as_deref()).and_then(|c| probe.cookie(c));
            let usable = match canary.backend {
                Backend::Cluster(id) => !self.cluster(id).endpoints.is_empty(),
                Backend::Unavailable { .. } => false,
            };
            match canary.decides(header, cookie) {
                _ if !usable => phases.say(
                    "canary",
                    "main",
                    format!("canary {name} has no ready endpoints: the main serves"),
                ),
                Some(true) => {
                    let by = if header.is_some() { "header" } else { "cookie" };
                    phases.say(
                        "canary",
                        "canary",
                        format!("the canary {by} sends it to {name}"),
                    );
                    let mut view = self.backend_view(&canary.backend)?;
                    view.canary = true;
                    return Some(view);
                }
                Some(false) => {
                    let reason = format!("the canary header or cookie says never: not {name}");
                    phases.say("canary", "main", reason);
                }
                None => phases.say(
                    "canary",
                    "depends",
                    format!(
                        "neither its header nor its cookie decides: {} in {} requests go to \
                         {name}, the rest to the main (an affinity cookie from an earlier \
                         response keeps a client's side)",
                        canary.weight, canary.weight_total
                    ),
                ),
            }
        }
        self.main_backend(&route.backend, &route.policy, phases)
    }

    fn main_backend(
        &self,
        backend: &Backend,
        policy: &RoutePolicy,
        phases: &mut Phases<'_>,
    ) -> Option<BackendView> {
        let Some(view) = self.backend_view(backend) else {
            if let Backend::Unavailable { reason } = backend {
                phases.say("backend", "refuse", format!("503: {reason}"));
            }
            return None;
        };
        if view.endpoints.is_empty()
            && let Some(fallback) = policy.fallback.as_ref().and_then(|b| self.backend_view(b))
            && !fallback.endpoints.is_empty()
        {
            let reason = format!(
                "{} has no ready endpoints: the Ingress's default-backend {} serves it",
                view.service, fallback.service
            );
            phases.say("backend", "fallback", reason);
            return Some(BackendView {
                fallback: true,
                ..fallback
            });
        }
        let reason = match view.endpoints.len() {
            0 => format!("{} has no ready endpoints: 503", view.service),
            n => format!("{}: {n} ready endpoint(s)", view.service),
        };
        phases.say(
            "backend",
            if view.endpoints.is_empty() {
                "refuse"
            } else {
                "pass"
            },
            reason,
        );
        Some(view)
    }

    fn backend_view(&self, backend: &Backend) -> Option<BackendView> {
        let Backend::Cluster(id) = backend else {
            return None;
        };
        let cluster = self.cluster(*id);
        Some(BackendView {
            service: cluster.key.to_string(),
            canary: false,
            fallback: false,
            endpoints: (cluster.endpoints.iter())
                .map(|e| e.address.to_string())
                .collect(),
        })
    }
}

/// The host's own redirects (`from-to-www-redirect`, `app-root`), which come before any
/// rule's.
fn server_answer(
    vhost: Option<&VirtualHost>,
    request: &RequestView,
    probe: &Probe<'_>,
) -> Option<String> {
    let server = vhost?.server.as_deref()?;
    let scheme = if request.https { "https" } else { "http" };
    if let Some(to) = &server.redirect_host {
        return Some(format!(
            "redirected 308 to {scheme}://{to}{} (from-to-www-redirect)",
            probe.target
        ));
    }
    match &server.app_root {
        Some(root) if request.path == "/" => Some(format!(
            "redirected 302 to {scheme}://{}{root} (app-root)",
            request.host
        )),
        _ => None,
    }
}

/// The route's own answers, in the request path's order: a CORS preflight, a fixed redirect,
/// a snippet's `return`, then the redirect to HTTPS.
fn early(
    route: Option<&Route>,
    vhost: Option<&VirtualHost>,
    policy: &RoutePolicy,
    request: &RequestView,
    probe: &Probe<'_>,
) -> Option<(&'static str, String)> {
    if let Some(cors) = &policy.cors
        && request.method == "OPTIONS"
        && cors.answer(probe.header("origin")) != CorsAnswer::None
    {
        return Some((
            "answer",
            "answered 204: a CORS preflight from an allowed origin".into(),
        ));
    }
    if let Some(redirect) = &policy.redirect {
        let reason = format!("redirected {} to {}", redirect.code, redirect.location);
        return Some(("redirect", reason));
    }
    if let Some(fixed) = &policy.fixed {
        let reason = format!("answered {} by the snippet's return", fixed.code);
        return Some(("answer", reason));
    }
    let wants_https = route.zip(vhost).is_some_and(|(r, v)| r.redirects_http(v));
    if wants_https && !request.https && !request.path.starts_with("/.well-known/acme-challenge/") {
        let why = if policy.force_ssl_redirect {
            "force-ssl-redirect"
        } else {
            "the host has TLS and ssl-redirect is on"
        };
        let reason = format!(
            "redirected to https://{}{} ({why}; 308 unless --http-redirect-code says otherwise)",
            request.host, probe.target
        );
        return Some(("redirect", reason));
    }
    None
}

/// Access control, in the request path's order; the answer when it refuses.
fn access(policy: &RoutePolicy, probe: &Probe<'_>, phases: &mut Phases<'_>) -> Option<String> {
    if let Some(refusal) = &policy.refused {
        let reason = format!(
            "503: the Ingress asks for protection Vestibule cannot give ({}), so it is closed",
            refusal.keys
        );
        phases.say("access control", "refuse", reason.clone());
        return Some(format!("answered {reason}"));
    }
    // `decided`: what the request's own fields settle; the rest depends on what the client
    // sends (credentials, certificates) or on how fast it comes.
    let (mut checks, mut decided) = (Vec::new(), Vec::new());
    if let Some(limit) = &policy.rate_limit {
        let exempt = probe.client.is_some_and(|c| limit.exempts(c));
        let rates: Vec<String> = [
            limit.rps.map(|r| format!("{r}/s")),
            limit.rpm.map(|r| format!("{r}/min")),
            limit.connections.map(|c| format!("{c} at once")),
        ]
        .into_iter()
        .flatten()
        .collect();
        checks.push(if exempt {
            "the client is exempt from the rate limit".to_owned()
        } else {
            format!("rate limited per client ({})", rates.join(", "))
        });
    }
    if let Some(ranges) = &policy.source_ranges {
        match probe.client {
            Some(client) if !ranges.admits(client) => {
                let reason = format!("403: {client} is not admitted by the allow and deny lists");
                phases.say("access control", "refuse", reason.clone());
                return Some(format!("answered {reason}"));
            }
            Some(client) => {
                decided.push(format!("{client} is admitted by the allow and deny lists"))
            }
            None => checks.push(
                "allow and deny lists apply (give --client-ip to check an address)".to_owned(),
            ),
        }
    }
    if let Some(client) = &policy.client_auth {
        checks.push(format!(
            "client certificates are checked ({:?}, CA from {})",
            client.verify, client.source
        ));
    }
    if let Some(basic) = &policy.basic_auth {
        checks.push(format!(
            "basic authentication (realm {:?}, users from {})",
            basic.realm, basic.source
        ));
    }
    if let Some(external) = &policy.external_auth {
        let scheme = if external.https { "https" } else { "http" };
        checks.push(format!(
            "the authentication service {scheme}://{}:{} is asked first",
            external.host, external.port
        ));
    }
    let decision = if checks.is_empty() { "pass" } else { "depends" };
    checks.append(&mut decided);
    if let Some(limit) = policy.proxy.body_size_limit {
        checks.push(format!("bodies over {limit} bytes get 413"));
    }
    let reason = checks.join("; ");
    phases.say("access control", decision, reason);
    None
}

fn rewrite(
    route: Option<&Route>,
    policy: &RoutePolicy,
    request: &RequestView,
    probe: &Probe<'_>,
    phases: &mut Phases<'_>,
) {
    let query = request.query.as_deref();
    let rewritten = (policy.rewrite.as_ref())
        .zip(route)
        .and_then(|(rewrite, route)| Some((rewrite.apply(&request.path, query)?, route)));
    let sent = match rewritten {
        Some((target, route)) => {
            format!(
                "rewritten to {target} (rewrite-target of {})",
                route.rule.path
            )
        }
        None => {
            let target = match query {
                Some(q) => format!("{}?{q}", request.path),
                None => request.path.clone(),
            };
            let unmatched = if policy.rewrite.is_some() {
                " (the rewrite pattern does not match)"
            } else {
                ""
            };
            format!("sent as {target}{unmatched}")
        }
    };
    let host = match &policy.upstream_host {
        Some(host) => format!("Host: {host} (upstream-vhost)"),
        None => format!("Host: {}", probe.host),
    };
    let decision = if policy.rewrite.is_some() {
        "rewrite"
    } else {
        "pass"
    };
    phases.say("rewrite", decision, format!("{sent}; {host}"));
}
