//! Request-rate limits per client address (`limit-connections`, `limit-rps`, `limit-rpm`),
//! one set of counters per Ingress, as ingress-nginx keeps one zone per Ingress. The rate is
//! nginx's `limit_req` with `nodelay`: each client's excess over the rate drains at the rate
//! and a request is refused when it would take the excess past the burst; so from cold,
//! rate × multiplier + 1 requests pass back to back. The counters are the one state of the
//! request path that requests write: they sit behind short sharded locks, and memory is
//! bounded by evicting the client seen least recently once a shard is full, so a flood of
//! distinct addresses costs old clients their history, never the process its memory.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use lru::LruCache;
use vestibule_model::RateLimit;

/// Shards of each limiter's client map: requests from different clients rarely wait on the
/// same lock.
const SHARDS: usize = 16;

/// One unit of excess: a request, in thousandths, as nginx counts it.
const REQUEST: u64 = 1000;

/// Which limit refused a request: they answer with different statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `limit-connections`.
    Connections,
    /// `limit-rps` or `limit-rpm`.
    Rate,
}

/// One average rate with its burst.
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// Thousandths of a request that drain per second.
    per_second: u64,
    /// The most excess let through, in thousandths of a request.
    burst: u64,
}

/// A client's excess over each rate, and when it was last updated.
#[derive(Debug, Clone, Copy)]
struct Excess {
    excess: [u64; 2],
    /// Microseconds since the limiter's epoch.
    at: [u64; 2],
}

type Clients = LruCache<IpAddr, Excess, foldhash::fast::RandomState>;

/// The counters of one Ingress's limits, kept across table installs while its limits stay
/// the same.
#[derive(Debug)]
pub struct RateLimiter {
    limit: Arc<RateLimit>,
    rates: smallvec::SmallVec<[Rate; 2]>,
    clients: Box<[Mutex<Clients>]>,
    in_flight: Box<[Mutex<HashMap<IpAddr, u32, foldhash::fast::RandomState>>]>,
    /// Clients one shard tracks at most, for each of the two maps. The maps grow to it as
    /// clients come rather than being allocated whole: most Ingresses see far fewer.
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
    epoch: Instant,
}

/// A request counted in flight for `limit-connections`, until it is dropped.
#[derive(Debug)]
pub struct InFlight {
    limiter: Arc<RateLimiter>,
    client: IpAddr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut shard = self.limiter.in_flight_shard(self.client);
        if let Some(count) = shard.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                shard.remove(&self.client);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The counters stay usable after a panic elsewhere: each update is one assignment.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RateLimiter {
    /// Counters for `limit`, tracking at most about `max_clients` clients.
    pub fn new(limit: Arc<RateLimit>, max_clients: usize) -> RateLimiter {
        let per_shard = max_clients.div_ceil(SHARDS).max(1);
        let hasher = foldhash::fast::RandomState::default();
        let burst = |rate: u32| u64::from(rate) * u64::from(limit.burst_multiplier) * REQUEST;
        let mut rates = smallvec::SmallVec::new();
        if let Some(rps) = limit.rps {
            rates.push(Rate {
                per_second: u64::from(rps) * REQUEST,
                burst: burst(rps),
            });
        }
        if let Some(rpm) = limit.rpm {
            rates.push(Rate {
                per_second: u64::from(rpm) * REQUEST / 60,
                burst: burst(rpm),
            });
        }
        RateLimiter {
            clients: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::unbounded_with_hasher(hasher.clone())))
                .collect(),
            in_flight: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(hasher.clone())))
                .collect(),
            per_shard,
            rates,
            hasher,
            limit,
            epoch: Instant::now(),
        }
    }

    /// The limits these counters are for.
    pub fn limit(&self) -> &Arc<RateLimit> {
        &self.limit
    }

    /// Clients whose rate is being tracked.
    pub fn tracked(&self) -> usize {
        self.clients.iter().map(|s| lock(s).len()).sum()
    }

    fn shard_of(&self, client: IpAddr) -> usize {
        (self.hasher.hash_one(client) as usize) % SHARDS
    }

    fn in_flight_shard(
        &self,
        client: IpAddr,
    ) -> MutexGuard<'_, HashMap<IpAddr, u32, foldhash::fast::RandomState>> {
        lock(&self.in_flight[self.shard_of(client)])
    }

    /// Counts a request from `client` now, in nginx's order: connections, then the rates.
    /// The returned guard, when there is one, holds the request's place in flight.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Option<InFlight>, Refused> {
        let client = client.to_canonical();
        if self.limit.exempts(client) {
            return Ok(None);
        }
        let in_flight = match self.limit.connections {
            Some(max) => Some(self.enter(client, max)?),
            None => None,
        };
        if !self.rates.is_empty() {
            let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
            // The place in flight is given back (dropped) if the rate refuses.
            self.count(client, now)?;
        }
        Ok(in_flight)
    }

    fn enter(self: &Arc<Self>, client: IpAddr, max: u32) -> Result<InFlight, Refused> {
        let mut shard = self.in_flight_shard(client);
        let full = shard.len() >= self.per_shard;
        match shard.get_mut(&client) {
            Some(count) if *count >= max => return Err(Refused::Connections),
            Some(count) => *count += 1,
            // Out of room, as nginx's zone is: refused rather than untracked.
            None if full => return Err(Refused::Connections),
            None => {
                shard.insert(client, 1);
            }
        }
        Ok(InFlight {
            limiter: Arc::clone(self),
            client,
        })
    }

    /// The rates' share of [`RateLimiter::admit`], at `now` microseconds since the epoch: a
    /// refused request changes nothing, as in nginx.
    fn count(&self, client: IpAddr, now: u64) -> Result<(), Refused> {
        let mut shard = lock(&self.clients[self.shard_of(client)]);
        let Some(state) = shard.get_mut(&client) else {
            // A client not seen (or forgotten) starts with no excess.
            if shard.len() >= self.per_shard {
                shard.pop_lru();
            }
            shard.put(
                client,
                Excess {
                    excess: [0; 2],
                    at: [now; 2],
                },
            );
            return Ok(());
        };
        let mut next = *state;
        for (i, rate) in self.rates.iter().enumerate() {
            let elapsed = now.saturating_sub(state.at[i]);
            let drained = u128::from(rate.per_second) * u128::from(elapsed) / 1_000_000;
            let drained = u64::try_from(drained).unwrap_or(u64::MAX);
            let excess = state.excess[i].saturating_sub(drained) + REQUEST;
            if excess > rate.burst {
                return Err(Refused::Rate);
            }
            next.excess[i] = excess;
            next.at[i] = now;
        }
        *state = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vestibule_model::Cidr;

    fn limit(rps: Option<u32>, rpm: Option<u32>, connections: Option<u32>) -> Arc<RateLimit> {
        Arc::new(RateLimit {
            zone: "ns/app".into(),
            connections,
            rps,
            rpm,
            burst_multiplier: 5,
            exempt: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        })
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0xC000_0200 + n))
    }

    /// Requests admitted of `n` back to back at `now`.
    fn burst(limiter: &RateLimiter, client: IpAddr, now: u64, n: usize) -> usize {
        (0..n)
            .filter(|_| limiter.count(client, now).is_ok())
            .count()
    }

    #[test]
    fn a_cold_client_gets_rate_times_multiplier_plus_one_then_the_rate() {
        let limiter = RateLimiter::new(limit(Some(2), None, None), 100);
        let a = ip(1);
        assert_eq!(burst(&limiter, a, 0, 50), 11, "2 × 5 + 1 from cold");
        assert_eq!(limiter.count(a, 0), Err(Refused::Rate));
        // Half a second drains one request at 2 per second.
        assert_eq!(burst(&limiter, a, 500_000, 5), 1);
        // Ten seconds drain everything; a known client's first request counts, as in nginx.
        assert_eq!(burst(&limiter, a, 10_500_000, 50), 10);
        // Another client has its own budget.
        assert_eq!(burst(&limiter, ip(2), 0, 50), 11);
    }

    #[test]
    fn per_minute_and_per_second_both_hold() {
        let limiter = RateLimiter::new(limit(Some(10), Some(6), None), 100);
        let a = ip(1);
        assert_eq!(
            burst(&limiter, a, 0, 100),
            31,
            "6 × 5 + 1: the minute is tighter"
        );
        // Ten seconds drain one request of the per-minute budget.
        assert_eq!(burst(&limiter, a, 10_000_000, 100), 1);
    }

    #[test]
    fn connections_are_counted_while_in_flight_and_exempt_clients_pass() {
        let limiter = Arc::new(RateLimiter::new(limit(None, None, Some(2)), 100));
        let a = ip(1);
        let first = limiter.admit(a).unwrap();
        let second = limiter.admit(a).unwrap();
        assert_eq!(limiter.admit(a).unwrap_err(), Refused::Connections);
        assert!(limiter.admit(ip(2)).is_ok(), "another client");
        drop(first);
        let third = limiter.admit(a).unwrap();
        drop((second, third));
        assert!(lock(&limiter.in_flight[limiter.shard_of(a)]).is_empty());
        let exempt: IpAddr = "10.1.2.3".parse().unwrap();
        let held: Vec<_> = (0..10).map(|_| limiter.admit(exempt).unwrap()).collect();
        assert!(held.iter().all(Option::is_none), "exempt: not even counted");
    }

    #[test]
    fn a_flood_of_distinct_clients_stays_within_the_cap() {
        let cap = 1_000;
        let limiter = Arc::new(RateLimiter::new(limit(Some(1), None, None), cap));
        let steady = ip(0);
        assert_eq!(burst(&limiter, steady, 0, 6), 6);
        for n in 1..200_000u32 {
            let _ = limiter.count(IpAddr::V6(std::net::Ipv6Addr::from(u128::from(n))), 0);
            if n % 97 == 0 {
                // A client that keeps coming is the most recently seen, so it is kept.
                assert_eq!(burst(&limiter, steady, 0, 1), 0);
            }
        }
        let tracked = limiter.tracked();
        assert!(
            tracked <= cap.div_ceil(SHARDS) * SHARDS,
            "{tracked} tracked with a cap of {cap}"
        );
        assert!(tracked >= cap / 2, "{tracked}: the shards are used");
        assert_eq!(
            burst(&limiter, steady, 0, 1),
            0,
            "its excess survived the flood"
        );
    }
}
