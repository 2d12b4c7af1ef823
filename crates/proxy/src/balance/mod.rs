//! Endpoint selection: round robin, least EWMA or consistent hashing, with passive health and
//! cookie affinity on top. The cores are pure (time and randomness come in as arguments), so
//! every behaviour is tested without sockets or clocks; the shared state is atomics, so picks
//! take no lock.
// The request path wires `ClusterBalancer`, affinity and health in next; until then only
// the tests use most of this module.

pub(crate) mod affinity;
pub(crate) mod ewma;
pub(crate) mod hash;
pub(crate) mod health;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::HeaderMap;
use vestibule_model::{
    AffinityMode, Balance, CookieAffinity, Endpoint, EndpointAddress, HashKey, HashPart,
};

use self::ewma::{EwmaStats, pick_two};
use self::hash::{hash64, highest, pick_in_subset};
use self::health::{Eligible, Health};

/// Round robin over a cluster's endpoints. Lock-free: one atomic add per pick.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub(crate) fn starting_at(start: usize) -> RoundRobin {
        RoundRobin {
            next: AtomicUsize::new(start),
        }
    }

    /// Where the next pick would start, to carry the rotation over to a new table.
    pub(crate) fn position(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }

    /// The index of the endpoint to use among `len`, or `None` when there are none.
    pub(crate) fn pick(&self, len: usize) -> Option<usize> {
        if len == 0 {
            return None;
        }
        Some(self.next.fetch_add(1, Ordering::Relaxed) % len)
    }
}

/// What a cluster's endpoints have learnt, shared by every table that has the endpoint, so
/// installing a new table keeps response times and ejections, and requests still finishing on
/// the old table update the same counters.
#[derive(Debug, Default)]
pub(crate) struct EndpointStats {
    pub(crate) ewma: EwmaStats,
    pub(crate) health: Health,
}

#[derive(Debug)]
struct Member {
    address: EndpointAddress,
    /// The address as text (`10.0.0.6:8080`), for access log lines.
    text: Box<str>,
    /// `hash64` of the address, for rendezvous hashing.
    hash: u64,
    /// The persistent affinity token of the address.
    token: u64,
    stats: Arc<EndpointStats>,
}

/// A cluster's balancing state in one installed table: the round-robin rotation and the
/// endpoints' stats, in the cluster's endpoint order.
#[derive(Debug)]
pub(crate) struct ClusterBalancer {
    rotation: RoundRobin,
    members: Vec<Member>,
}

/// One request's side of a pick.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PickInput<'a> {
    /// The bytes of the request's hash key ([`hash_key`]), read for `Balance::Hash` only;
    /// `None` there counts as an empty key.
    pub(crate) hash_key: Option<&'a [u8]>,
    /// [`now_nanos`] when the pick is made.
    pub(crate) now_nanos: u64,
    /// The endpoints this request already tried.
    pub(crate) excluded: &'a [usize],
}

/// The monotonic clock of every `now_nanos` in this module: nanoseconds since its first
/// call in the process. Read on the request path only; the cores take the time as an
/// argument so tests control it.
pub(crate) fn now_nanos() -> u64 {
    nanos_at(Instant::now())
}

/// [`now_nanos`] for a time already read, so one reading serves several purposes.
pub(crate) fn nanos_at(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let elapsed = at.saturating_duration_since(*EPOCH.get_or_init(|| at));
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

/// The endpoint for a request with cookie affinity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StickyPick {
    pub(crate) index: usize,
    /// A new cookie value to send in `Set-Cookie` ([`affinity::set_cookie`]), when the
    /// request had no usable one.
    pub(crate) set_value: Option<String>,
}

impl ClusterBalancer {
    /// The balancer for `endpoints`, carrying over from `previous` (the same cluster in the
    /// table being replaced) the rotation and the stats of every endpoint whose address stays.
    /// `start` is the rotation's start when there is no previous one: a random one keeps the
    /// proxies of a fleet from all starting on the same endpoint.
    pub(crate) fn new(
        endpoints: &[Endpoint],
        previous: Option<&ClusterBalancer>,
        start: usize,
    ) -> ClusterBalancer {
        let carried: HashMap<&EndpointAddress, &Arc<EndpointStats>> = previous
            .map(|p| p.members.iter().map(|m| (&m.address, &m.stats)).collect())
            .unwrap_or_default();
        let members = endpoints
            .iter()
            .map(|e| {
                let text = e.address.to_string();
                Member {
                    hash: hash64(text.as_bytes()),
                    token: affinity::endpoint_token(&text),
                    stats: carried
                        .get(&e.address)
                        .map_or_else(Default::default, |s| Arc::clone(s)),
                    address: e.address.clone(),
                    text: text.into(),
                }
            })
            .collect();
        ClusterBalancer {
            rotation: RoundRobin::starting_at(previous.map_or(start, ClusterBalancer::position)),
            members,
        }
    }

    /// Where the rotation stands, to carry it over to a new table.
    pub(crate) fn position(&self) -> usize {
        self.rotation.position()
    }
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Endpoint `i`'s stats, for the request path to record in-flight requests, response
    /// times and connection outcomes. `i` must be below `len()`, as every pick is. The `Arc`
    /// may be cloned to keep the stats beyond the table.
    pub(crate) fn stats(&self, i: usize) -> &Arc<EndpointStats> {
        &self.members[i].stats
    }

    /// Each endpoint's address as text and its stats, in the cluster's order.
    pub(crate) fn members(&self) -> impl Iterator<Item = (&str, &EndpointStats)> {
        self.members.iter().map(|m| (&*m.text, &*m.stats))
    }

    /// Endpoint `i`'s address as text, formatted once per table rather than per log line.
    /// `i` must be below `len()`.
    pub(crate) fn address_text(&self, i: usize) -> &str {
        &self.members[i].text
    }

    /// Endpoint `i`'s address, as the cluster listed it. `i` must be below `len()`.
    pub(crate) fn address(&self, i: usize) -> &EndpointAddress {
        &self.members[i].address
    }

    fn eligible<'a>(
        &'a self,
        now_nanos: u64,
        excluded: &'a [usize],
    ) -> Eligible<'a, impl Fn(usize) -> bool + 'a> {
        Eligible::new(self.members.len(), excluded, move |i| {
            self.members
                .get(i)
                .is_some_and(|m| m.stats.health.available(now_nanos))
        })
    }

    fn hash_of(&self, i: usize) -> u64 {
        self.members.get(i).map_or(0, |m| m.hash)
    }

    fn token_of(&self, i: usize) -> u64 {
        self.members.get(i).map_or(0, |m| m.token)
    }

    /// The endpoint for a request, or `None` when the cluster has none left to try. Ejected
    /// endpoints and the ones in `input.excluded` are passed over, unless every untried
    /// endpoint is ejected: then those are tried anyway. `random(n)` returns a uniform value
    /// in `0..n`; it is only called with `n >= 1`.
    pub(crate) fn pick(
        &self,
        balance: &Balance,
        input: &PickInput<'_>,
        random: &mut dyn FnMut(usize) -> usize,
    ) -> Option<usize> {
        let now = input.now_nanos;
        let eligible = self.eligible(now, input.excluded);
        match balance {
            Balance::RoundRobin => self.round_robin(&eligible),
            Balance::Ewma => pick_two(
                eligible.count(),
                |n| eligible.nth(n),
                |i| {
                    self.members
                        .get(i)
                        .map_or(f64::INFINITY, |m| m.stats.ewma.score(now))
                },
                random,
            ),
            Balance::Hash(key) => {
                let key_hash = hash64(input.hash_key.unwrap_or_default());
                let hash_of = |i| self.hash_of(i);
                match key.subset_size {
                    Some(size) => pick_in_subset(
                        key_hash,
                        eligible.iter(),
                        hash_of,
                        usize::try_from(size).unwrap_or(usize::MAX),
                        random,
                    ),
                    None => highest(key_hash, eligible.iter(), hash_of),
                }
            }
        }
    }

    /// Round robin that steps over ineligible endpoints: at most one turn of the rotation.
    fn round_robin<A: Fn(usize) -> bool>(&self, eligible: &Eligible<'_, A>) -> Option<usize> {
        eligible.iter().next()?;
        let len = self.members.len();
        (0..len)
            .filter_map(|_| self.rotation.pick(len))
            .find(|&i| eligible.contains(i))
    }

    /// The endpoint for a request under cookie affinity, given the value of its affinity
    /// cookie if it sent one ([`affinity::cookie_value`]).
    ///
    /// A cookie naming an eligible endpoint wins. Otherwise, in balanced mode, a new session
    /// key picks the endpoint and is to be set; a valid balanced cookie always names one while
    /// anything is eligible, moving temporarily when its endpoint is ejected or already tried.
    /// In persistent mode `balance` picks a new endpoint, whose token is to be set, except
    /// that a valid cookie naming an endpoint gone or unusable is only replaced with
    /// `change_on_failure`.
    pub(crate) fn pick_sticky(
        &self,
        affinity: &CookieAffinity,
        balance: &Balance,
        cookie: Option<&str>,
        input: &PickInput<'_>,
        random: &mut dyn FnMut(usize) -> usize,
    ) -> Option<StickyPick> {
        let eligible = self.eligible(input.now_nanos, input.excluded);
        if let Some(value) = cookie {
            let found = affinity::lookup(
                affinity.mode,
                value,
                &eligible,
                |i| self.token_of(i),
                |i| self.hash_of(i),
            );
            if let Some(index) = found {
                return Some(StickyPick {
                    index,
                    set_value: None,
                });
            }
        }
        match affinity.mode {
            AffinityMode::Balanced => {
                let key = affinity::new_session_key(random);
                let index = affinity::balanced_endpoint(key, eligible.iter(), |i| self.hash_of(i))?;
                Some(StickyPick {
                    index,
                    set_value: Some(affinity::encode(key)),
                })
            }
            AffinityMode::Persistent => {
                let index = self.pick(balance, input, random)?;
                let stale = cookie.and_then(affinity::decode).is_some();
                let set_value = (!stale || affinity.change_on_failure)
                    .then(|| affinity::encode(self.token_of(index)));
                Some(StickyPick { index, set_value })
            }
        }
    }
}

/// What a hash key may be made of, from one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HashRequest<'a> {
    /// The client's address, after trusted-proxy handling (`$remote_addr`).
    pub(crate) remote_addr: IpAddr,
    /// Path and query as the client sent them (`$request_uri`).
    pub(crate) request_uri: &'a str,
    /// The normalised path (`$uri`).
    pub(crate) uri: &'a str,
    pub(crate) host: &'a str,
    pub(crate) headers: &'a HeaderMap,
}

/// The bytes `upstream-hash-by` hashes for a request: its parts concatenated, a missing
/// header, cookie or argument counting as empty, as nginx variables do.
pub(crate) fn hash_key(key: &HashKey, request: &HashRequest<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    for part in &key.parts {
        match part {
            HashPart::Literal(text) => out.extend_from_slice(text.as_bytes()),
            HashPart::RemoteAddr => {
                out.extend_from_slice(request.remote_addr.to_string().as_bytes())
            }
            HashPart::RequestUri => out.extend_from_slice(request.request_uri.as_bytes()),
            HashPart::Uri => out.extend_from_slice(request.uri.as_bytes()),
            HashPart::Host => out.extend_from_slice(request.host.as_bytes()),
            HashPart::Header(name) => {
                // nginx joins a repeated header with ", ", and cookies with "; ".
                let separator: &[u8] = if name.eq_ignore_ascii_case("cookie") {
                    b"; "
                } else {
                    b", "
                };
                for (n, value) in request.headers.get_all(&**name).iter().enumerate() {
                    if n > 0 {
                        out.extend_from_slice(separator);
                    }
                    out.extend_from_slice(value.as_bytes());
                }
            }
            HashPart::Cookie(name) => {
                if let Some(value) = affinity::cookie_value(request.headers, name) {
                    out.extend_from_slice(value.as_bytes());
                }
            }
            HashPart::Arg(name) => {
                if let Some(value) = query_arg(request.request_uri, name) {
                    out.extend_from_slice(value.as_bytes());
                }
            }
        }
    }
    out
}

/// The first value of query argument `name`, undecoded. Names compare without regard to
/// ASCII case, as nginx's `$arg_` does.
fn query_arg<'u>(request_uri: &'u str, name: &str) -> Option<&'u str> {
    let (_, query) = request_uri.split_once('?')?;
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

#[cfg(test)]
pub(crate) mod test_rng {
    /// SplitMix64: a seeded generator, so tests that need randomness repeat exactly.
    #[derive(Debug)]
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Rng {
            Rng(seed)
        }

        pub(crate) fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform enough in `0..n` for tests.
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_in_turn() {
        let rr = RoundRobin::starting_at(7);
        let mut counts = [0; 4];
        for _ in 0..400 {
            counts[rr.pick(4).unwrap()] += 1;
        }
        assert_eq!(counts, [100; 4]);
    }

    #[test]
    fn consecutive_picks_differ() {
        let rr = RoundRobin::starting_at(0);
        let picks: Vec<_> = (0..6).map(|_| rr.pick(3).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn no_endpoints_no_pick() {
        assert_eq!(RoundRobin::starting_at(0).pick(0), None);
    }

    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use http::HeaderValue;
    use vestibule_model::SameSite;

    use super::test_rng::Rng;

    const S: u64 = 1_000_000_000;

    fn endpoints(octets: &[u8]) -> Vec<Endpoint> {
        octets
            .iter()
            .map(|&o| Endpoint {
                address: EndpointAddress::Socket(SocketAddr::from(([10, 0, 0, o], 8080))),
            })
            .collect()
    }

    fn octet(b: &ClusterBalancer, i: usize) -> u8 {
        match b.address(i) {
            EndpointAddress::Socket(SocketAddr::V4(a)) => a.ip().octets()[3],
            other => panic!("{other}"),
        }
    }

    /// Picks with a fixed clock and a seeded generator.
    fn pick(
        b: &ClusterBalancer,
        balance: &Balance,
        key: &[u8],
        now: u64,
        excluded: &[usize],
    ) -> Option<usize> {
        let mut rng = Rng::new(u64::from(key.first().copied().unwrap_or(0)) + now);
        let mut random = |n| rng.below(n);
        let input = PickInput {
            hash_key: Some(key),
            now_nanos: now,
            excluded,
        };
        b.pick(balance, &input, &mut random)
    }

    fn eject(b: &ClusterBalancer, i: usize, now: u64) {
        b.stats(i).health.record_failure(now);
        assert!(b.stats(i).health.record_failure(now));
    }

    fn hash_balance(subset: Option<u32>) -> Balance {
        Balance::Hash(HashKey {
            parts: vec![HashPart::Uri],
            subset_size: subset,
        })
    }

    #[test]
    fn the_clock_never_goes_back() {
        let a = now_nanos();
        let b = now_nanos();
        assert!(b >= a);
    }

    #[test]
    fn install_carries_stats_and_rotation_by_address() {
        let old = ClusterBalancer::new(&endpoints(&[1, 2, 3]), None, 10);
        assert_eq!(old.position(), 10);
        old.stats(1)
            .ewma
            .start()
            .finish(S, Duration::from_millis(30));
        eject(&old, 2, S);
        old.rotation.pick(3);

        let new = ClusterBalancer::new(&endpoints(&[3, 4, 2]), Some(&old), 99);
        assert_eq!(new.len(), 3);
        assert_eq!(new.position(), 11, "the rotation continues");
        assert!(
            Arc::ptr_eq(new.stats(0), old.stats(2)),
            "10.0.0.3 keeps its ejection"
        );
        assert!(!new.stats(0).health.available(2 * S));
        assert!(
            Arc::ptr_eq(new.stats(2), old.stats(1)),
            "10.0.0.2 keeps its average"
        );
        assert_eq!(new.stats(2).ewma.average(), Duration::from_millis(30));
        assert_eq!(
            new.stats(1).ewma.average(),
            Duration::ZERO,
            "10.0.0.4 is new"
        );
        assert!(new.stats(1).health.available(2 * S));
        // A request still finishing on the old table counts for the new one.
        let in_flight = old.stats(1).ewma.start();
        assert_eq!(new.stats(2).ewma.in_flight(), 1);
        drop(in_flight);
    }

    #[test]
    fn empty_cluster_picks_nothing() {
        let b = ClusterBalancer::new(&[], None, 0);
        assert!(b.is_empty());
        for balance in [
            Balance::RoundRobin,
            Balance::Ewma,
            hash_balance(None),
            hash_balance(Some(3)),
        ] {
            assert_eq!(pick(&b, &balance, b"k", 0, &[]), None);
        }
    }

    #[test]
    fn round_robin_steps_over_ejected_and_tried() {
        let b = ClusterBalancer::new(&endpoints(&[1, 2, 3, 4]), None, 0);
        eject(&b, 1, 0);
        let picks: Vec<_> = (0..6)
            .map(|_| pick(&b, &Balance::RoundRobin, b"", S, &[2]))
            .collect();
        assert_eq!(picks, [0, 3, 0, 3, 0, 3].map(Some));
        // Once the ejection ends, 10.0.0.2 is back in the rotation.
        let picks: Vec<_> = (0..4)
            .map(|_| pick(&b, &Balance::RoundRobin, b"", 6 * S, &[]))
            .collect();
        assert!(picks.contains(&Some(1)), "{picks:?}");
    }

    #[test]
    fn every_mode_falls_back_to_ejected_endpoints() {
        let b = ClusterBalancer::new(&endpoints(&[1, 2, 3]), None, 0);
        for i in 0..3 {
            eject(&b, i, 0);
        }
        for balance in [
            Balance::RoundRobin,
            Balance::Ewma,
            hash_balance(None),
            hash_balance(Some(2)),
        ] {
            for _ in 0..10 {
                let i = pick(&b, &balance, b"/x", S, &[1]).unwrap();
                assert_ne!(i, 1, "{balance:?} retried an endpoint");
            }
            assert_eq!(
                pick(&b, &balance, b"/x", S, &[0, 1, 2]),
                None,
                "{balance:?}"
            );
        }
        // One healthy endpoint beats every ejected one.
        b.stats(2).health.record_success();
        for balance in [
            Balance::RoundRobin,
            Balance::Ewma,
            hash_balance(None),
            hash_balance(Some(2)),
        ] {
            assert_eq!(pick(&b, &balance, b"/x", S, &[]), Some(2), "{balance:?}");
        }
    }

    #[test]
    fn ewma_prefers_the_fast_endpoint_and_respects_health() {
        let b = ClusterBalancer::new(&endpoints(&[1, 2, 3]), None, 0);
        let mut rng = Rng::new(11);
        let mut counts = [0; 3];
        for step in 0..3000u64 {
            let now = S + step * 1_000_000;
            let mut random = |n| rng.below(n);
            let input = PickInput {
                hash_key: None,
                now_nanos: now,
                excluded: &[],
            };
            let i = b.pick(&Balance::Ewma, &input, &mut random).unwrap();
            counts[i] += 1;
            let rtt = [5, 100, 300][i];
            b.stats(i)
                .ewma
                .start()
                .finish(now, Duration::from_millis(rtt));
        }
        // Power of two choices: the fastest wins every pair it is in (two in three), the
        // middle one the rest, the slowest almost never.
        assert!(counts[0] > 1800 && counts[2] < 50, "{counts:?}");
        eject(&b, 0, 5 * S);
        assert_ne!(pick(&b, &Balance::Ewma, b"", 5 * S, &[]), Some(0));
    }

    #[test]
    fn hash_is_consistent_and_moves_only_when_it_must() {
        let b = ClusterBalancer::new(&endpoints(&[1, 2, 3, 4, 5]), None, 0);
        let balance = hash_balance(None);
        let mut owners = Vec::new();
        for k in 0..500 {
            let key = format!("/user/{k}");
            let owner = pick(&b, &balance, key.as_bytes(), 0, &[]).unwrap();
            assert_eq!(pick(&b, &balance, key.as_bytes(), 7, &[]), Some(owner));
            owners.push(owner);
        }
        eject(&b, 2, 0);
        for (k, &owner) in owners.iter().enumerate() {
            let key = format!("/user/{k}");
            let now = pick(&b, &balance, key.as_bytes(), S, &[]).unwrap();
            if owner == 2 {
                assert_ne!(now, 2);
            } else {
                assert_eq!(now, owner, "only the ejected endpoint's keys move");
            }
        }
        // The same key over a rebuilt table, in another order, lands on the same address.
        let reordered = ClusterBalancer::new(&endpoints(&[5, 4, 3, 2, 1]), None, 0);
        for (k, &owner) in owners.iter().enumerate() {
            let key = format!("/user/{k}");
            let i = pick(&reordered, &balance, key.as_bytes(), 0, &[]).unwrap();
            assert_eq!(octet(&reordered, i), octet(&b, owner));
        }
    }

    #[test]
    fn hash_subset_spreads_a_key_over_a_few() {
        let b = ClusterBalancer::new(&endpoints(&[1, 2, 3, 4, 5, 6, 7, 8]), None, 0);
        let balance = hash_balance(Some(3));
        let mut rng = Rng::new(2);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let mut random = |n| rng.below(n);
            let input = PickInput {
                hash_key: Some(b"/hot"),
                now_nanos: 0,
                excluded: &[],
            };
            seen.insert(b.pick(&balance, &input, &mut random).unwrap());
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
    }

    fn sticky(
        b: &ClusterBalancer,
        affinity: &CookieAffinity,
        cookie: Option<&str>,
        excluded: &[usize],
        seed: u64,
    ) -> Option<StickyPick> {
        let mut rng = Rng::new(seed);
        let mut random = |n| rng.below(n);
        let input = PickInput {
            hash_key: None,
            now_nanos: S,
            excluded,
        };
        b.pick_sticky(affinity, &Balance::RoundRobin, cookie, &input, &mut random)
    }

    fn cookie_affinity(mode: AffinityMode, change_on_failure: bool) -> CookieAffinity {
        CookieAffinity {
            name: "route".into(),
            max_age: None,
            path: None,
            secure: false,
            same_site: Some(SameSite::Lax),
            mode,
            change_on_failure,
        }
    }

    #[test]
    fn persistent_affinity() {
        let b = ClusterBalancer::new(&endpoints(&[1, 2, 3]), None, 0);
        let a = cookie_affinity(AffinityMode::Persistent, true);
        let first = sticky(&b, &a, None, &[], 1).unwrap();
        let value = first.set_value.clone().unwrap();
        assert!(!value.contains("10.0.0"));
        for seed in 0..10 {
            assert_eq!(
                sticky(&b, &a, Some(&value), &[], seed),
                Some(StickyPick {
                    index: first.index,
                    set_value: None
                })
            );
        }
        // Another table with more endpoints: the session stays.
        let grown = ClusterBalancer::new(&endpoints(&[9, 1, 2, 3, 4]), Some(&b), 0);
        let again = sticky(&grown, &a, Some(&value), &[], 3).unwrap();
        assert_eq!(octet(&grown, again.index), octet(&b, first.index));
        assert_eq!(again.set_value, None);
        // Its endpoint tried and failed: another, and the cookie follows.
        let moved = sticky(&b, &a, Some(&value), &[first.index], 1).unwrap();
        assert_ne!(moved.index, first.index);
        assert_eq!(
            moved.set_value,
            Some(affinity::encode(b.token_of(moved.index)))
        );
        // Without change-on-failure the cookie stays as it is.
        let keep = cookie_affinity(AffinityMode::Persistent, false);
        let moved = sticky(&b, &keep, Some(&value), &[first.index], 1).unwrap();
        assert_ne!(moved.index, first.index);
        assert_eq!(moved.set_value, None);
        // A cookie that is not ours is replaced either way.
        let fresh = sticky(&b, &keep, Some("garbage"), &[], 1).unwrap();
        assert!(fresh.set_value.is_some());
    }

    #[test]
    fn balanced_affinity() {
        let b = ClusterBalancer::new(&endpoints(&[1, 2, 3, 4]), None, 0);
        let a = cookie_affinity(AffinityMode::Balanced, true);
        let mut seen = std::collections::HashSet::new();
        for seed in 0..40 {
            let new = sticky(&b, &a, None, &[], seed).unwrap();
            let value = new.set_value.unwrap();
            assert_eq!(value.len(), 16);
            seen.insert(new.index);
            assert_eq!(
                sticky(&b, &a, Some(&value), &[], seed + 100),
                Some(StickyPick {
                    index: new.index,
                    set_value: None
                }),
                "the key maps back to where it was sent"
            );
            let retry = sticky(&b, &a, Some(&value), &[new.index], seed).unwrap();
            assert_ne!(retry.index, new.index);
            assert_eq!(retry.set_value, None, "the key keeps naming its endpoint");
        }
        assert_eq!(seen.len(), 4, "new sessions spread");
        assert_eq!(sticky(&b, &a, None, &[0, 1, 2, 3], 0), None);
    }

    fn request<'a>(headers: &'a HeaderMap, request_uri: &'a str) -> HashRequest<'a> {
        HashRequest {
            remote_addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            request_uri,
            uri: "/a/b",
            host: "shop.example",
            headers,
        }
    }

    fn key_of(parts: Vec<HashPart>, request: &HashRequest<'_>) -> String {
        let key = HashKey {
            parts,
            subset_size: None,
        };
        String::from_utf8(hash_key(&key, request)).unwrap()
    }

    #[test]
    fn hash_key_parts() {
        let mut headers = HeaderMap::new();
        headers.append("x-tenant", HeaderValue::from_static("a"));
        headers.append("x-tenant", HeaderValue::from_static("b"));
        headers.append("cookie", HeaderValue::from_static("sid=42; x=1"));
        headers.append("cookie", HeaderValue::from_static("y=2"));
        let r = request(&headers, "/a//b?User=7&user=8&flag&e=&enc=%41");
        let parts = vec![
            HashPart::Literal("<".into()),
            HashPart::RemoteAddr,
            HashPart::Literal("|".into()),
            HashPart::RequestUri,
            HashPart::Literal("|".into()),
            HashPart::Uri,
            HashPart::Literal("|".into()),
            HashPart::Host,
            HashPart::Literal(">".into()),
        ];
        assert_eq!(
            key_of(parts, &r),
            "<192.0.2.7|/a//b?User=7&user=8&flag&e=&enc=%41|/a/b|shop.example>"
        );
        assert_eq!(
            key_of(vec![HashPart::Header("x-tenant".into())], &r),
            "a, b"
        );
        assert_eq!(
            key_of(vec![HashPart::Header("cookie".into())], &r),
            "sid=42; x=1; y=2"
        );
        assert_eq!(key_of(vec![HashPart::Header("x-missing".into())], &r), "");
        assert_eq!(key_of(vec![HashPart::Cookie("sid".into())], &r), "42");
        assert_eq!(key_of(vec![HashPart::Cookie("y".into())], &r), "2");
        assert_eq!(key_of(vec![HashPart::Cookie("nope".into())], &r), "");
        assert_eq!(
            key_of(vec![HashPart::Arg("user".into())], &r),
            "7",
            "first, any case"
        );
        assert_eq!(key_of(vec![HashPart::Arg("flag".into())], &r), "");
        assert_eq!(
            key_of(vec![HashPart::Arg("enc".into())], &r),
            "%41",
            "not decoded"
        );
        assert_eq!(key_of(vec![HashPart::Arg("missing".into())], &r), "");
        assert_eq!(
            key_of(vec![HashPart::Arg("a".into())], &request(&headers, "/a")),
            ""
        );
        assert_eq!(key_of(vec![HashPart::Header("bad name".into())], &r), "");
        assert_eq!(key_of(vec![], &r), "");
    }
}
