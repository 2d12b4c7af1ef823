//! Finding where a request goes: the virtual host by the request's host, then the route by
//! its path, in the table installed when the request arrived, which the request keeps until
//! it is done; and the route's own limit on the request body.

use std::sync::Arc;

use vestibule_model::{Backend, ServerRules, Target};

use super::limit::{InFlight, Refused};
use crate::dataplane::{DataPlane, RouteAt, RouteState, Runtime, Upstream};
use crate::observe::metrics::{AuthKind, AuthOutcome, RouteStats};
use crate::respond::ProxyError;
use crate::settings::ProxySettings;

/// What the table says of a request.
#[derive(Debug)]
pub(super) enum Routing {
    Found(Routed),
    /// No route matched and there is no default backend. `hsts`: the host has TLS and the
    /// request came over HTTPS, so even the 404 carries the policy.
    NotFound {
        hsts: bool,
        server: Option<Arc<ServerRules>>,
    },
}

impl Routing {
    /// What the host answers before its routes, when anything.
    #[inline]
    pub(super) fn server(&self) -> Option<&ServerRules> {
        match self {
            Routing::Found(routed) => routed.server.as_deref(),
            Routing::NotFound { server, .. } => server.as_deref(),
        }
    }
}

/// The route (or the default backend) a request matched.
#[derive(Debug)]
pub(super) struct Routed {
    /// Held for the whole request, retries included: a request finishes on the table it
    /// started with.
    pub(super) runtime: Arc<Runtime>,
    pub(super) at: RouteAt,
    /// The host has TLS and the request came over HTTPS: responses carry HSTS.
    pub(super) hsts: bool,
    /// The route wants plain-HTTP requests sent to HTTPS (`ssl-redirect` on a host with
    /// TLS, or `force-ssl-redirect`).
    pub(super) wants_https: bool,
    /// What the host answers before its routes, when anything (`app-root`, `www.`).
    pub(super) server: Option<Arc<ServerRules>>,
}

/// Looks the request up in the installed table.
#[inline]
pub(super) fn route(dataplane: &DataPlane, https: bool, host: &str, path: &str) -> Routing {
    let runtime = dataplane.load_full();
    let lookup = runtime.table.lookup(host, path);
    let hsts = https && lookup.vhost.is_some_and(|v| v.tls);
    let server = lookup.vhost.and_then(|v| v.server.clone());
    let (at, wants_https) = match lookup.target {
        Target::Route(route) => (
            RouteAt::Route(route.id),
            lookup.vhost.is_some_and(|v| route.redirects_http(v)),
        ),
        Target::Default(_) => (RouteAt::Default, false),
        Target::NotFound => return Routing::NotFound { hsts, server },
    };
    Routing::Found(Routed {
        runtime,
        at,
        hsts,
        wants_https,
        server,
    })
}

impl Routed {
    /// What the data plane settled for the route when its table was installed.
    #[inline]
    pub(super) fn state(&self) -> &RouteState {
        self.runtime.route_state(self.at)
    }

    /// Where the route sends its requests.
    #[inline]
    pub(super) fn backend(&self) -> Option<&Backend> {
        let table = &self.runtime.table;
        match self.at {
            RouteAt::Route(id) => Some(&table.route(id).backend),
            RouteAt::Default => table.default_backend().map(|d| &d.backend),
        }
    }

    /// The matched rule's path: where an affinity cookie applies unless set otherwise.
    #[inline]
    pub(super) fn rule_path(&self) -> &str {
        match self.at {
            RouteAt::Route(id) => &self.runtime.table.route(id).rule.path,
            RouteAt::Default => "/",
        }
    }

    /// Counts an access-control decision in the route's metrics, when they are on.
    #[inline]
    pub(super) fn count_auth(&self, kind: AuthKind, outcome: AuthOutcome) {
        if let Some(stats) = &self.state().stats {
            stats.auth(kind, outcome);
        }
    }

    /// Refuses every request of a route whose Ingress asks for protection that cannot be
    /// given: fail closed.
    #[inline]
    pub(super) fn check_access(&self) -> Result<(), ProxyError> {
        match &self.state().refused {
            Some(refusal) => Err(ProxyError::Refused(refusal.keys.clone())),
            None => Ok(()),
        }
    }

    /// Counts the request against its Ingress's request-rate limits: refused with the
    /// operator's status when the client is over one; else the request's place in flight,
    /// held until its response is done, when connections are limited.
    #[inline]
    pub(super) fn limit(
        &self,
        client: std::net::IpAddr,
        settings: &ProxySettings,
    ) -> Result<Option<InFlight>, ProxyError> {
        let Some(limiter) = &self.state().limiter else {
            return Ok(None);
        };
        limiter.admit(client).map_err(|refused| {
            ProxyError::Limited(match refused {
                Refused::Connections => settings.limit_conn_status,
                Refused::Rate => settings.limit_req_status,
            })
        })
    }

    /// How requests reach the chosen side's backend.
    #[inline]
    pub(super) fn upstream(&self, canary: bool, fallback: bool) -> Option<&Upstream> {
        let state = self.state();
        match (&state.canary, canary, &state.fallback, fallback) {
            (Some(side), true, _, _) => side.upstream.as_ref(),
            (_, _, Some((_, upstream)), true) => Some(upstream),
            _ => state.upstream.as_ref(),
        }
    }

    /// The canary side's metrics, when metrics are on.
    #[inline]
    pub(super) fn canary_stats(&self) -> Option<Arc<RouteStats>> {
        self.state().canary.as_ref()?.stats.clone()
    }

    /// Refuses a body the client announced as larger than the route allows (413); one
    /// sent without a length is cut off as it passes the limit instead.
    #[inline]
    pub(super) fn check_length(&self, content_length: Option<u64>) -> Result<(), ProxyError> {
        let limit = self.state().proxy.body_size_limit;
        match (limit, content_length) {
            (Some(limit), Some(length)) if length > limit => {
                Err(ProxyError::PayloadTooLarge(limit))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vestibule_model::{
        HostPattern, PathKind, PathRule, ProxyPolicy, RouteOrigin, RoutePolicy, TableBuilder,
    };

    fn origin(name: &str) -> RouteOrigin {
        RouteOrigin {
            namespace: "ns".into(),
            name: name.into(),
            field: "spec.rules[0]".into(),
        }
    }

    /// A data plane whose routes each name their Ingress; `force` routes redirect to HTTPS.
    fn dataplane(routes: &[(&str, PathKind, &str, &str, bool)]) -> DataPlane {
        let mut builder = TableBuilder::new();
        for (host, kind, path, name, force) in routes {
            let policy = RoutePolicy {
                force_ssl_redirect: *force,
                proxy: Arc::new(ProxyPolicy {
                    body_size_limit: Some(10),
                    ..ProxyPolicy::default()
                }),
                ..RoutePolicy::default()
            };
            let backend = Backend::Unavailable {
                reason: "test".into(),
            };
            let rule = PathRule::new(*kind, path).unwrap();
            let host = HostPattern::parse(host).unwrap();
            builder
                .route_with(host, rule, backend, origin(name), policy)
                .unwrap();
        }
        let dataplane = DataPlane::default();
        dataplane.install(Arc::new(builder.build()));
        dataplane
    }

    fn found(routing: Routing) -> Routed {
        match routing {
            Routing::Found(routed) => routed,
            Routing::NotFound { .. } => panic!("no route"),
        }
    }

    fn ingress(routed: &Routed) -> String {
        match routed.at {
            RouteAt::Route(id) => routed.runtime.table.route(id).origin.name.to_string(),
            RouteAt::Default => "default".into(),
        }
    }

    #[test]
    fn the_route_is_found_by_host_then_path() {
        use PathKind::{Exact, Prefix};
        let plane = dataplane(&[
            ("a.example", Prefix, "/", "root", false),
            ("a.example", Exact, "/api", "exact", false),
            ("a.example", Prefix, "/api", "prefix", true),
            ("*.example", Prefix, "/", "wild", false),
        ]);
        let cases = [
            ("a.example", "/x", "root", "/"),
            ("a.example", "/api", "exact", "/api"),
            ("a.example", "/api/v1", "prefix", "/api"),
            ("a.example", "/apiv1", "root", "/"),
            ("b.example", "/api", "wild", "/"),
        ];
        for (host, path, expected, rule) in cases {
            let routed = found(route(&plane, false, host, path));
            assert_eq!(ingress(&routed), expected, "{host}{path}");
            assert_eq!(routed.rule_path(), rule, "{host}{path}");
        }
        assert!(matches!(
            route(&plane, true, "c.other", "/"),
            Routing::NotFound { hsts: false, .. }
        ));
    }

    #[test]
    fn a_route_that_wants_https_says_so_and_no_tls_means_no_hsts() {
        let plane = dataplane(&[("a.example", PathKind::Prefix, "/", "forced", true)]);
        let routed = found(route(&plane, true, "a.example", "/"));
        assert!(routed.wants_https);
        assert!(!routed.hsts, "HSTS only for hosts with TLS");
        let plane = dataplane(&[("a.example", PathKind::Prefix, "/", "plain", false)]);
        assert!(!found(route(&plane, false, "a.example", "/")).wants_https);
    }

    #[test]
    fn an_announced_body_over_the_routes_limit_is_refused() {
        let plane = dataplane(&[("a.example", PathKind::Prefix, "/", "small", false)]);
        let routed = found(route(&plane, false, "a.example", "/"));
        assert!(routed.check_length(None).is_ok());
        assert!(routed.check_length(Some(10)).is_ok());
        let refused = routed.check_length(Some(11)).unwrap_err();
        assert_eq!(refused.status().as_u16(), 413);
    }
}
