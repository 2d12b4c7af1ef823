//! Passive health: an endpoint that fails to accept connections twice in a row is left out
//! for a while, longer each time it happens again, and comes back by itself; no probes are
//! sent. When every endpoint is out, they are tried anyway: refusing outright would be worse
//! than a connection attempt that may succeed.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// Consecutive connection failures that eject an endpoint.
const FAILURES_TO_EJECT: u32 = 2;
/// The first ejection's length; each further ejection without a success in between doubles it.
const FIRST_BACKOFF_NANOS: u64 = 5_000_000_000;
const MAX_BACKOFF_NANOS: u64 = 60_000_000_000;

/// One endpoint's passive health. Lock-free; relaxed atomics suffice because each field is
/// a heuristic on its own and a race only shifts an ejection by a request or so.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Connection failures since the last success or ejection.
    failures: AtomicU32,
    /// Ejections since the last success, which set the next back-off.
    ejections: AtomicU32,
    /// Until when (in the caller's monotonic nanoseconds) the endpoint is left out.
    ejected_until: AtomicU64,
}

impl Health {
    /// Whether the endpoint may be picked at `now_nanos`.
    pub(crate) fn available(&self, now_nanos: u64) -> bool {
        now_nanos >= self.ejected_until.load(Relaxed)
    }

    /// A connection (or request) to the endpoint succeeded: it is healthy again, with its
    /// back-off back to the start.
    pub(crate) fn record_success(&self) {
        // Loads before stores: nearly every request ends here, and an unconditional store
        // would bounce the cache line between the cores serving this endpoint.
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        if self.ejections.load(Relaxed) != 0 {
            self.ejections.store(0, Relaxed);
        }
        if self.ejected_until.load(Relaxed) != 0 {
            self.ejected_until.store(0, Relaxed);
        }
    }

    /// A connection to the endpoint failed at `now_nanos`. Returns true when this failure
    /// ejected it, for the caller to log once per ejection.
    pub(crate) fn record_failure(&self, now_nanos: u64) -> bool {
        // Failures while ejected come from the all-ejected fallback or from attempts begun
        // before the ejection; they must not stack up another ejection the moment it ends.
        if !self.available(now_nanos) {
            return false;
        }
        let failures = self.failures.fetch_add(1, Relaxed).saturating_add(1);
        if failures < FAILURES_TO_EJECT {
            return false;
        }
        // Of concurrent failures, only the one that resets the count ejects.
        if self
            .failures
            .compare_exchange(failures, 0, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        let ejections = self
            .ejections
            .fetch_update(Relaxed, Relaxed, |e| Some(e.saturating_add(1)))
            .unwrap_or_else(|e| e);
        let backoff = FIRST_BACKOFF_NANOS
            .saturating_mul(1 << ejections.min(8))
            .min(MAX_BACKOFF_NANOS);
        self.ejected_until
            .store(now_nanos.saturating_add(backoff), Relaxed);
        true
    }
}

/// The endpoints (indexes `0..len`) a request may try next: the available ones it has not
/// tried yet; or, when there are none, the untried ones that are ejected.
pub(crate) struct Eligible<'a, A> {
    len: usize,
    excluded: &'a [usize],
    available: A,
    /// No untried endpoint is available, so ejection is ignored.
    fallback: bool,
}

impl<'a, A: Fn(usize) -> bool> Eligible<'a, A> {
    /// `excluded` holds the endpoints this request already tried; `available` tells whether
    /// an endpoint is not ejected.
    pub(crate) fn new(len: usize, excluded: &'a [usize], available: A) -> Self {
        let fallback = !(0..len).any(|i| !excluded.contains(&i) && available(i));
        Eligible {
            len,
            excluded,
            available,
            fallback,
        }
    }

    pub(crate) fn contains(&self, i: usize) -> bool {
        i < self.len && !self.excluded.contains(&i) && (self.fallback || (self.available)(i))
    }

    /// In index order. Recomputed on each call rather than collected, so a pick allocates
    /// nothing.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len).filter(|&i| self.contains(i))
    }

    pub(crate) fn count(&self) -> usize {
        self.iter().count()
    }

    pub(crate) fn nth(&self, n: usize) -> Option<usize> {
        self.iter().nth(n)
    }

    #[cfg(test)]
    /// Whether every untried endpoint is ejected, so ejected ones are offered.
    pub(crate) fn is_fallback(&self) -> bool {
        self.fallback
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn two_consecutive_failures_eject() {
        let h = Health::default();
        assert!(h.available(0));
        assert!(!h.record_failure(10 * S));
        assert!(h.available(10 * S));
        assert!(h.record_failure(10 * S));
        assert!(!h.available(10 * S));
        assert!(!h.available(15 * S - 1));
        assert!(h.available(15 * S), "back after 5 s on its own");
    }

    #[test]
    fn a_success_between_failures_keeps_it_in() {
        let h = Health::default();
        assert!(!h.record_failure(S));
        h.record_success();
        assert!(!h.record_failure(S));
        assert!(h.available(S));
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let h = Health::default();
        let mut now = 100 * S;
        let mut lengths = Vec::new();
        for _ in 0..7 {
            assert!(!h.record_failure(now));
            assert!(h.record_failure(now));
            let start = now;
            while !h.available(now) {
                now += S;
            }
            lengths.push((now - start) / S);
        }
        assert_eq!(lengths, [5, 10, 20, 40, 60, 60, 60]);
    }

    #[test]
    fn success_resets_the_backoff() {
        let h = Health::default();
        h.record_failure(0);
        assert!(h.record_failure(0));
        h.record_failure(5 * S);
        assert!(h.record_failure(5 * S));
        assert!(!h.available(14 * S), "second ejection lasts 10 s");
        h.record_success();
        assert!(h.available(14 * S), "a success brings it back at once");
        h.record_failure(20 * S);
        assert!(h.record_failure(20 * S));
        assert!(h.available(25 * S), "back to 5 s");
    }

    #[test]
    fn failures_while_ejected_do_not_count() {
        let h = Health::default();
        h.record_failure(0);
        assert!(h.record_failure(0));
        for _ in 0..5 {
            assert!(!h.record_failure(S));
        }
        assert!(h.available(5 * S));
        assert!(
            !h.record_failure(5 * S),
            "one failure after return is not enough"
        );
        assert!(h.available(5 * S));
    }

    #[test]
    fn eligible_drops_tried_and_ejected() {
        let ejected = [false, true, false, false];
        let e = Eligible::new(4, &[2], |i| !ejected[i]);
        assert_eq!(e.iter().collect::<Vec<_>>(), [0, 3]);
        assert_eq!(e.count(), 2);
        assert_eq!(e.nth(1), Some(3));
        assert_eq!(e.nth(2), None);
        assert!(!e.is_fallback());
        assert!(!e.contains(4));
    }

    #[test]
    fn eligible_falls_back_to_untried_ejected() {
        let ejected = [true, true, false];
        let e = Eligible::new(3, &[2], |i| !ejected[i]);
        assert!(e.is_fallback());
        assert_eq!(e.iter().collect::<Vec<_>>(), [0, 1]);

        let all = Eligible::new(3, &[], |_| false);
        assert_eq!(all.iter().collect::<Vec<_>>(), [0, 1, 2]);

        let exhausted = Eligible::new(3, &[0, 1, 2], |_| true);
        assert_eq!(exhausted.count(), 0);
        assert_eq!(Eligible::new(0, &[], |_| true).count(), 0);
    }
}
