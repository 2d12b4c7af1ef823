//! Endpoint selection. Round robin for now; the selection core is pure so it can be tested
//! without sockets.

use std::sync::atomic::{AtomicUsize, Ordering};

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
}
