//! Least-loaded selection as ingress-nginx's `ewma` balancer does it: each endpoint keeps an
//! exponentially weighted moving average of its response time, scaled by the requests it has
//! in flight, and a pick compares two random endpoints ("power of two choices"), which avoids
//! the herd that always choosing the single best one would send to it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The decay time constant: a sample's weight falls by a factor e every 10 s.
const DECAY_NANOS: f64 = 10e9;

/// One endpoint's response-time average and load. Lock-free.
#[derive(Debug, Default)]
pub(crate) struct EwmaStats {
    /// The average in seconds, as `f64` bits. 0 means never measured.
    ewma_bits: AtomicU64,
    /// When the average was last updated, in the caller's monotonic nanoseconds.
    touched_nanos: AtomicU64,
    in_flight: AtomicU32,
}

impl EwmaStats {
    /// Counts a request in flight to the endpoint until the returned guard is finished or
    /// dropped, so a request abandoned half-way (a client gone, a timeout) still leaves.
    pub(crate) fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight { stats: self }
    }

    /// Lower is better. The average decays toward 0 while no response updates it, so a slow
    /// endpoint left idle gets tried again rather than starving forever; a never-measured
    /// endpoint scores 0, so a new endpoint is tried at once.
    pub(crate) fn score(&self, now_nanos: u64) -> f64 {
        let ewma = f64::from_bits(self.ewma_bits.load(Relaxed));
        let elapsed = now_nanos.saturating_sub(self.touched_nanos.load(Relaxed));
        ewma * decay(elapsed) * (f64::from(self.in_flight.load(Relaxed)) + 1.0)
    }

    #[cfg(test)]
    /// The average itself, for metrics and tests.
    pub(crate) fn average(&self) -> Duration {
        Duration::try_from_secs_f64(f64::from_bits(self.ewma_bits.load(Relaxed)))
            .unwrap_or_default()
    }
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    fn observe(&self, now_nanos: u64, rtt: Duration) {
        let sample = rtt.as_secs_f64();
        let elapsed = now_nanos.saturating_sub(self.touched_nanos.load(Relaxed));
        let keep = decay(elapsed);
        // Two concurrent updates may both use the older timestamp; the average only drifts
        // by a little, which a lock on every response would not be worth.
        let _ = self.ewma_bits.fetch_update(Relaxed, Relaxed, |bits| {
            let next = if bits == 0 {
                sample
            } else {
                f64::from_bits(bits) * keep + sample * (1.0 - keep)
            };
            Some(next.to_bits())
        });
        self.touched_nanos.fetch_max(now_nanos, Relaxed);
    }
}

/// The weight left to the old average after `elapsed_nanos`.
fn decay(elapsed_nanos: u64) -> f64 {
    (-(elapsed_nanos as f64) / DECAY_NANOS).exp()
}

/// A request in flight to an endpoint; see [`EwmaStats::start`].
#[must_use = "dropping the guard ends the request at once"]
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    stats: &'a EwmaStats,
}

impl InFlight<'_> {
    /// The endpoint answered at `now_nanos`, `rtt` after the request was sent: the sample
    /// enters the average.
    pub(crate) fn finish(self, now_nanos: u64, rtt: Duration) {
        self.stats.observe(now_nanos, rtt);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Power of two choices among `count` candidates, the `i`-th given by `nth(i)`: two distinct
/// ones at random, the lower score wins (the first on a tie). `random(n)` returns a value in
/// `0..n` and is called with `n >= 1` only.
pub(crate) fn pick_two(
    count: usize,
    nth: impl Fn(usize) -> Option<usize>,
    score: impl Fn(usize) -> f64,
    random: &mut dyn FnMut(usize) -> usize,
) -> Option<usize> {
    match count {
        0 => None,
        1 => nth(0),
        _ => {
            let a = random(count) % count;
            // Drawn from the other count - 1 so the two always differ.
            let mut b = random(count - 1) % (count - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (nth(a)?, nth(b)?);
            Some(if score(b) < score(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_rng::Rng;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn never_measured_scores_zero() {
        let e = EwmaStats::default();
        assert_eq!(e.score(5 * S), 0.0);
        let _busy = e.start();
        assert_eq!(e.score(5 * S), 0.0, "even with requests in flight");
    }

    #[test]
    fn first_sample_is_the_average() {
        let e = EwmaStats::default();
        e.start().finish(S, Duration::from_millis(200));
        assert!(close(e.score(S), 0.2));
        assert_eq!(e.average(), Duration::from_millis(200));
    }

    #[test]
    fn samples_blend_by_elapsed_time() {
        let e = EwmaStats::default();
        e.start().finish(S, Duration::from_millis(100));
        // After one time constant the old average keeps e^-1 of its weight.
        e.start().finish(11 * S, Duration::from_millis(500));
        let keep = (-1.0f64).exp();
        assert!(close(e.score(11 * S), 0.1 * keep + 0.5 * (1.0 - keep)));
        // A sample at the same instant replaces nothing: weight 1 to the old average.
        let before = e.score(11 * S);
        e.start().finish(11 * S, Duration::from_secs(9));
        assert!(close(e.score(11 * S), before));
    }

    #[test]
    fn score_decays_while_idle_and_scales_with_load() {
        let e = EwmaStats::default();
        e.start().finish(0, Duration::from_secs(1));
        assert!(close(e.score(10 * S), (-1.0f64).exp()));
        let one = e.start();
        let two = e.start();
        assert_eq!(e.in_flight(), 2);
        assert!(close(e.score(0), 3.0));
        drop(one);
        two.finish(0, Duration::from_secs(1));
        assert_eq!(e.in_flight(), 0);
        assert!(close(e.score(0), 1.0));
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let e = EwmaStats::default();
        e.start().finish(10 * S, Duration::from_secs(1));
        e.start().finish(5 * S, Duration::from_secs(3));
        assert!(
            close(e.score(5 * S), 1.0),
            "no elapsed time, no weight to the sample"
        );
    }

    #[test]
    fn pick_two_takes_the_lower_of_two_distinct() {
        let scores = [5.0, 1.0, 3.0];
        let mut draws = [2, 0].into_iter();
        let mut random = |_| draws.next().unwrap_or(0);
        // a = 2, b = 0: distinct, 3.0 vs 5.0.
        assert_eq!(pick_two(3, Some, |i| scores[i], &mut random), Some(2));
        let mut draws = [1, 1].into_iter();
        let mut random = |_| draws.next().unwrap_or(0);
        // a = 1, b = 1 is shifted past a to 2: 1.0 vs 3.0.
        assert_eq!(pick_two(3, Some, |i| scores[i], &mut random), Some(1));
        let mut never = |_: usize| -> usize { panic!("no choice to make") };
        assert_eq!(pick_two(1, |_| Some(7), |_| 0.0, &mut never), Some(7));
        assert_eq!(pick_two(0, Some, |_| 0.0, &mut never), None);
    }

    #[test]
    fn the_fast_endpoint_gets_most_picks() {
        let endpoints = [EwmaStats::default(), EwmaStats::default()];
        let mut rng = Rng::new(42);
        let mut now = 0;
        let mut picks = [0u32; 2];
        for _ in 0..2000 {
            now += 10 * MS;
            let mut random = |n| rng.below(n);
            let i = pick_two(2, Some, |i| endpoints[i].score(now), &mut random).unwrap();
            picks[i] += 1;
            let rtt = if i == 0 { 10 } else { 200 };
            endpoints[i].start().finish(now, Duration::from_millis(rtt));
        }
        assert!(picks[0] > 1800, "fast endpoint got {picks:?}");
        assert!(picks[1] > 0, "the unmeasured endpoint was tried");
    }
}
