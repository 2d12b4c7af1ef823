//! Picking where a request goes within its route: the cluster (a backend that cannot be
//! served, or one with no ready endpoints, is answered 503 here), then for each attempt an
//! endpoint, by the route's balancing and cookie affinity, never one the request already
//! tried.

use std::net::IpAddr;
use std::time::Instant;

use http::HeaderValue;
use vestibule_model::{Backend, Balance, ClusterId, CookieAffinity};

use super::head::Head;
use super::route::Routed;
use crate::balance::{self, ClusterBalancer, HashRequest, PickInput};
use crate::respond::ProxyError;
use crate::upstream::request::UpstreamRequest;

/// The cluster the request goes to: 503 when its backend cannot be served or has no ready
/// endpoints.
#[inline]
pub(super) fn cluster(routed: &Routed) -> Result<ClusterId, ProxyError> {
    let cluster = match routed.backend() {
        Some(Backend::Cluster(id)) => *id,
        Some(Backend::Unavailable { reason }) => {
            return Err(ProxyError::BackendUnavailable(reason.clone()));
        }
        // A default backend is routed to only when the table has one.
        None => return Err(ProxyError::NoRoute),
    };
    let cluster = routed.runtime.table.cluster(cluster);
    if cluster.endpoints.is_empty() {
        return Err(ProxyError::NoEndpoints(cluster.key.to_string()));
    }
    Ok(cluster.id)
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
        cluster: ClusterId,
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
                .map(str::to_owned);
            (affinity, value)
        });
        Balancing {
            balancer: &routed.runtime.balancers[cluster.0 as usize],
            balance: &policy.balance,
            hash_key,
            affinity,
            rule_path: routed.rule_path(),
            https,
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
        let set_cookie = pick.set_value.as_ref().and_then(|value| {
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
