//! Picking where a request goes within its route: the side, main or canary (in
//! ingress-nginx's order: affinity, header, cookie, weight), then its cluster (a backend
//! that cannot be served, or one with no ready endpoints, is answered 503 here), then for
//! each attempt an endpoint, by the route's balancing and cookie affinity, never one the
//! request already tried.

use std::net::IpAddr;
use std::time::Instant;

use http::{HeaderMap, HeaderValue};
use vestibule_model::{Backend, Balance, Canary, ClusterId, CookieAffinity};

use super::head::Head;
use super::route::Routed;
use crate::balance::{self, ClusterBalancer, HashRequest, PickInput};
use crate::respond::ProxyError;
use crate::upstream::request::UpstreamRequest;

/// Where the pick sent a request: the cluster, and whether it is the route's canary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Chosen {
    pub(super) cluster: ClusterId,
    pub(super) canary: bool,
    /// The route's `default-backend`, its own cluster having no ready endpoints.
    pub(super) fallback: bool,
}

/// The side and cluster the request goes to: 503 when the main's backend cannot be served
/// or has no ready endpoints. A canary whose backend has none is passed over, as
/// ingress-nginx drops such a canary, and the main serves.
#[inline]
pub(super) fn cluster(routed: &Routed, headers: &HeaderMap) -> Result<Chosen, ProxyError> {
    if let Some(side) = &routed.state().canary {
        let canary = &side.canary;
        let affinity = routed.state().proxy.affinity.as_deref();
        if let Backend::Cluster(id) = canary.backend
            && !routed.runtime.table.cluster(id).endpoints.is_empty()
            && wants_canary(canary, affinity, headers, |total| fastrand::u32(1..=total))
        {
            return Ok(Chosen {
                cluster: id,
                canary: true,
                fallback: false,
            });
        }
    }
    main(routed)
}

/// Whether a request goes to the canary, in ingress-nginx's order: an affinity cookie set by
/// the main keeps it there, one set by the canary keeps it on the canary (unless the
/// behaviour is `legacy`); then the header, then the cookie, then a draw of 1 to the weight
/// total (`draw`).
fn wants_canary(
    canary: &Canary,
    affinity: Option<&CookieAffinity>,
    headers: &HeaderMap,
    draw: impl FnOnce(u32) -> u32,
) -> bool {
    if let Some(affinity) = affinity
        && let Some(value) = balance::affinity::cookie_value(headers, &affinity.name)
    {
        match balance::affinity::side(value) {
            Some(false) => return false,
            Some(true) if canary.sticky => return true,
            _ => {}
        }
    }
    let header = (canary.header.as_ref())
        .and_then(|h| headers.get(&*h.name))
        .map(|value| value.to_str().unwrap_or(""));
    let cookie =
        (canary.cookie.as_deref()).and_then(|name| balance::affinity::cookie_value(headers, name));
    if let Some(decided) = canary.decides(header, cookie) {
        return decided;
    }
    canary.weight > 0 && draw(canary.weight_total.max(1)) <= canary.weight
}

/// The main's cluster: 503 when its backend cannot be served or has no ready endpoints,
/// unless the route's `default-backend` has some.
fn main(routed: &Routed) -> Result<Chosen, ProxyError> {
    let cluster = match routed.backend() {
        Some(Backend::Cluster(id)) => *id,
        Some(Backend::Unavailable { reason }) => {
            return Err(ProxyError::BackendUnavailable(reason.clone()));
        }
        // A default backend is routed to only when the table has one.
        None => return Err(ProxyError::NoRoute),
    };
    let table = &routed.runtime.table;
    let cluster = table.cluster(cluster);
    if !cluster.endpoints.is_empty() {
        return Ok(Chosen {
            cluster: cluster.id,
            canary: false,
            fallback: false,
        });
    }
    match &routed.state().fallback {
        Some((id, _)) if !table.cluster(*id).endpoints.is_empty() => Ok(Chosen {
            cluster: *id,
            canary: false,
            fallback: true,
        }),
        _ => Err(ProxyError::NoEndpoints(cluster.key.to_string())),
    }
}

/// How one request's endpoints are picked: the cluster's balancer, with what the request
/// brings to it (its hash key, its affinity cookie), worked out once for all attempts.
pub(super) struct Balancing<'r> {
    balancer: &'r ClusterBalancer,
    balance: &'r Balance,
    /// The bytes `upstream-hash-by` hashes, when the route balances by hash.
    hash_key: Option<Vec<u8>>,
    /// Cookie affinity, and the value of the client's affinity cookie.
    affinity: Option<(&'r CookieAffinity, Option<String>)>,
    /// The matched rule's path: where a new affinity cookie applies unless set otherwise.
    rule_path: &'r str,
    https: bool,
    /// The canary side: its affinity cookies say so.
    canary: bool,
}

/// One attempt's endpoint.
pub(super) struct Pick {
    /// Its index in the cluster.
    pub(super) index: usize,
    /// A new affinity cookie for the client, when the pick made one.
    pub(super) set_cookie: Option<HeaderValue>,
}

impl<'r> Balancing<'r> {
    #[inline]
    pub(super) fn new(
        routed: &'r Routed,
        chosen: Chosen,
        head: &Head<'_>,
        request: &UpstreamRequest<'_>,
        client_ip: IpAddr,
        https: bool,
    ) -> Balancing<'r> {
        let policy = &*routed.state().proxy;
        let hash_key = match &policy.balance {
            Balance::Hash(key) => Some(balance::hash_key(
                key,
                &HashRequest {
                    remote_addr: client_ip,
                    request_uri: head.target,
                    uri: &head.path,
                    host: &head.host(),
                    headers: &request.headers,
                },
            )),
            _ => None,
        };
        let affinity = policy.affinity.as_deref().map(|affinity| {
            let value = balance::affinity::cookie_value(&request.headers, &affinity.name)
                .map(|v| balance::affinity::unmarked(v).to_owned());
            (affinity, value)
        });
        Balancing {
            balancer: &routed.runtime.balancers[chosen.cluster.0 as usize],
            balance: &policy.balance,
            hash_key,
            affinity,
            rule_path: routed.rule_path(),
            https,
            canary: chosen.canary,
        }
    }

    /// The cluster's balancer: endpoints' addresses, health and response times.
    #[inline]
    pub(super) fn balancer(&self) -> &'r ClusterBalancer {
        self.balancer
    }

    /// The endpoint for the next attempt, at `now`, or `None` when the cluster has none left
    /// to try: `tried` are passed over.
    #[inline]
    pub(super) fn next(&self, tried: &[usize], now: Instant) -> Option<Pick> {
        let mut rng = |n: usize| fastrand::usize(..n.max(1));
        let input = PickInput {
            hash_key: self.hash_key.as_deref(),
            now_nanos: balance::nanos_at(now),
            excluded: tried,
        };
        let Some((rule, cookie)) = &self.affinity else {
            let index = self.balancer.pick(self.balance, &input, &mut rng)?;
            return Some(Pick {
                index,
                set_cookie: None,
            });
        };
        let pick =
            self.balancer
                .pick_sticky(rule, self.balance, cookie.as_deref(), &input, &mut rng)?;
        let set_cookie = pick.set_value.map(|value| match self.canary {
            true => balance::affinity::marked(&value),
            false => value,
        });
        let set_cookie = set_cookie.as_ref().and_then(|value| {
            balance::affinity::set_cookie(rule, value, self.rule_path, self.https, unix_now()).ok()
        });
        Some(Pick {
            index: pick.index,
            set_cookie,
        })
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vestibule_model::{CanaryHeader, Pattern, RouteOrigin};

    fn canary(weight: u32, total: u32, sticky: bool) -> Canary {
        Canary {
            backend: Backend::Unavailable { reason: "t".into() },
            origin: RouteOrigin {
                namespace: "ns".into(),
                name: "app-canary".into(),
                field: "spec".into(),
            },
            header: Some(CanaryHeader {
                name: "x-canary".into(),
                value: None,
                pattern: None,
            }),
            cookie: Some("canary_user".into()),
            weight,
            weight_total: total,
            sticky,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (http::HeaderName::from_static(n), v.parse().unwrap()))
            .collect()
    }

    fn affinity() -> CookieAffinity {
        CookieAffinity {
            name: "route".into(),
            ..CookieAffinity::default()
        }
    }

    #[test]
    fn affinity_then_header_then_cookie_then_weight() {
        let never_drawn = |_: u32| -> u32 { panic!("no draw expected") };
        let c = canary(0, 100, true);
        let a = affinity();
        let main_session = format!("route={}", balance::affinity::encode(7));
        let canary_session = format!(
            "route={}",
            balance::affinity::marked(&balance::affinity::encode(7))
        );
        let wants = |h: &HeaderMap| wants_canary(&c, Some(&a), h, never_drawn);
        assert!(!wants(&headers(&[
            ("cookie", &main_session),
            ("x-canary", "always")
        ])));
        assert!(wants(&headers(&[
            ("cookie", &canary_session),
            ("x-canary", "never")
        ])));
        assert!(wants(&headers(&[
            ("x-canary", "always"),
            ("cookie", "canary_user=never")
        ])));
        assert!(!wants(&headers(&[
            ("x-canary", "never"),
            ("cookie", "canary_user=always")
        ])));
        assert!(wants(&headers(&[
            ("x-canary", "maybe"),
            ("cookie", "canary_user=always")
        ])));
        assert!(!wants(&headers(&[("cookie", "canary_user=never")])));
        assert!(
            !wants_canary(&c, Some(&a), &headers(&[]), |_| 1),
            "weight 0 never draws"
        );
        // A value not ours, or legacy behaviour, falls through to the rest.
        let legacy = canary(0, 100, false);
        let h = headers(&[("cookie", &canary_session), ("x-canary", "never")]);
        assert!(!wants_canary(&legacy, Some(&a), &h, never_drawn));
        let h = headers(&[("cookie", "route=junk"), ("x-canary", "always")]);
        assert!(wants_canary(&c, Some(&a), &h, never_drawn));
    }

    #[test]
    fn header_value_and_pattern_only_say_yes() {
        let mut c = canary(0, 100, true);
        let header = c.header.as_mut().unwrap();
        header.value = Some("beta".into());
        let never = |_: u32| 100;
        assert!(wants_canary(
            &c,
            None,
            &headers(&[("x-canary", "beta")]),
            never
        ));
        assert!(!wants_canary(
            &c,
            None,
            &headers(&[("x-canary", "always")]),
            never
        ));
        let header = c.header.as_mut().unwrap();
        header.value = None;
        header.pattern = Some(Pattern::new("^b.ta$", false).unwrap());
        assert!(wants_canary(
            &c,
            None,
            &headers(&[("x-canary", "bota")]),
            never
        ));
        // "never" is not special with a pattern: the cookie and weight decide.
        let h = headers(&[("x-canary", "never"), ("cookie", "canary_user=always")]);
        assert!(wants_canary(&c, None, &h, never));
    }

    #[test]
    fn the_draw_is_one_to_the_total_against_the_weight() {
        let c = canary(25, 1000, true);
        let none = headers(&[]);
        let draw = |d: u32| {
            move |total: u32| {
                assert_eq!(total, 1000, "drawn from 1 to the total");
                d
            }
        };
        assert!(wants_canary(&c, None, &none, draw(1)));
        assert!(wants_canary(&c, None, &none, draw(25)));
        assert!(!wants_canary(&c, None, &none, draw(26)));
        let full = canary(100, 100, true);
        assert!(wants_canary(&full, None, &none, |t| t));
    }
}
