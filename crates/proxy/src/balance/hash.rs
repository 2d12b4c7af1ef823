//! Consistent hashing: a stable 64-bit hash, and rendezvous (highest random weight) selection,
//! so that a key keeps its endpoint while the endpoints stay, only the keys of a removed
//! endpoint move, and an added endpoint takes about 1/n of the keys.

/// A hash of `bytes` that never changes between builds, Rust versions, processes or replicas:
/// several proxies must send one key to one endpoint, and persistent affinity cookies outlive
/// the process that set them. FNV-1a is trivially stable but mixes its high bits poorly, so a
/// finaliser (MurmurHash3's) spreads every input bit over the whole result.
pub(crate) fn hash64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut state = OFFSET;
    for &byte in bytes {
        state ^= u64::from(byte);
        state = state.wrapping_mul(PRIME);
    }
    mix(state)
}

/// MurmurHash3's 64-bit finaliser: a bijection in which every input bit flips each output bit
/// with probability about one half.
fn mix(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The rendezvous weight of an endpoint for a key. Both inputs are already `hash64` outputs,
/// so one more mix of their combination is enough, and the endpoint's hash can be computed
/// once per table install rather than once per request.
pub(crate) fn weight(key_hash: u64, endpoint_hash: u64) -> u64 {
    mix(key_hash ^ endpoint_hash)
}

/// The candidate with the highest weight for the key. Ties (one chance in 2^64) are broken by
/// the endpoint's hash rather than its index, so the answer does not depend on the order of
/// the endpoints.
pub(crate) fn highest(
    key_hash: u64,
    candidates: impl Iterator<Item = usize>,
    endpoint_hash: impl Fn(usize) -> u64,
) -> Option<usize> {
    candidates.max_by_key(|&i| {
        let h = endpoint_hash(i);
        (weight(key_hash, h), h)
    })
}

/// `upstream-hash-by-subset`: ranks the candidates by weight for the key, and picks one of the
/// `subset` best at random, so a hot key is spread over a few endpoints while each key still
/// sees the same few. A subset of 0 counts as 1. `random(n)` returns a value in `0..n`.
pub(crate) fn pick_in_subset(
    key_hash: u64,
    candidates: impl Iterator<Item = usize>,
    endpoint_hash: impl Fn(usize) -> u64,
    subset: usize,
    random: &mut dyn FnMut(usize) -> usize,
) -> Option<usize> {
    if subset <= 1 {
        return highest(key_hash, candidates, endpoint_hash);
    }
    let mut ranked: Vec<(u64, u64, usize)> = candidates
        .map(|i| {
            let h = endpoint_hash(i);
            (weight(key_hash, h), h, i)
        })
        .collect();
    let size = subset.min(ranked.len());
    if size == 0 {
        return None;
    }
    // The r-th best for a uniform r in 0..size is a uniform pick among the best `size`, and
    // selecting it is linear where sorting would not be.
    let r = random(size) % size;
    let (_, nth, _) = ranked.select_nth_unstable_by(r, |a, b| b.cmp(a));
    Some(nth.2)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::balance::test_rng::Rng;

    fn addresses(range: std::ops::Range<usize>) -> Vec<String> {
        range
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250))
            .collect()
    }

    fn owner(key: &str, endpoints: &[String]) -> String {
        let hashes: Vec<u64> = endpoints.iter().map(|a| hash64(a.as_bytes())).collect();
        let i = highest(hash64(key.as_bytes()), 0..endpoints.len(), |i| hashes[i]).unwrap();
        endpoints[i].clone()
    }

    #[test]
    fn hash_is_pinned() {
        // Changing these values reshuffles every hashed key and breaks every persistent
        // affinity cookie in the field.
        assert_eq!(hash64(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash64(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(hash64(b"10.0.0.1:8080"), 0xe8c7_2115_6ed5_2b14);
        assert_ne!(hash64(b"a"), hash64(b"b"));
    }

    #[test]
    fn same_key_same_endpoint() {
        let endpoints = addresses(0..10);
        for k in 0..1000 {
            let key = format!("user-{k}");
            let first = owner(&key, &endpoints);
            assert_eq!(owner(&key, &endpoints), first);
            // The order of the endpoints does not matter.
            let reversed: Vec<String> = endpoints.iter().rev().cloned().collect();
            assert_eq!(owner(&key, &reversed), first);
        }
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_keys() {
        let endpoints = addresses(0..10);
        let removed = endpoints[3].clone();
        let remaining: Vec<String> = endpoints
            .iter()
            .filter(|a| **a != removed)
            .cloned()
            .collect();
        let mut moved = 0;
        for k in 0..10_000 {
            let key = format!("key-{k}");
            let before = owner(&key, &endpoints);
            let after = owner(&key, &remaining);
            if before == removed {
                moved += 1;
            } else {
                assert_eq!(before, after, "{key} moved though its endpoint stayed");
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn adding_an_endpoint_moves_about_one_in_n() {
        let endpoints = addresses(0..10);
        let grown = addresses(0..11);
        let added = &grown[10];
        let mut moved = 0;
        for k in 0..10_000 {
            let key = format!("key-{k}");
            let after = owner(&key, &grown);
            if owner(&key, &endpoints) != after {
                assert_eq!(&after, added, "a key moved between old endpoints");
                moved += 1;
            }
        }
        // 1/11 of 10,000 is 909.
        assert!((700..1100).contains(&moved), "{moved} keys moved");
    }

    #[test]
    fn keys_spread_evenly() {
        let endpoints = addresses(0..10);
        let mut counts = std::collections::HashMap::new();
        for k in 0..10_000 {
            *counts
                .entry(owner(&format!("{k}"), &endpoints))
                .or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 10);
        for (endpoint, count) in counts {
            assert!((800..=1200).contains(&count), "{endpoint}: {count}");
        }
    }

    #[test]
    fn subset_picks_among_the_best_few() {
        let endpoints = addresses(0..10);
        let hashes: Vec<u64> = endpoints.iter().map(|a| hash64(a.as_bytes())).collect();
        let mut rng = Rng::new(7);
        let mut random = |n| rng.below(n);
        for k in 0..200 {
            let key = hash64(format!("key-{k}").as_bytes());
            let mut ranked: Vec<usize> = (0..10).collect();
            ranked.sort_by_key(|&i| std::cmp::Reverse(weight(key, hashes[i])));
            let best: HashSet<usize> = ranked[..3].iter().copied().collect();
            let mut seen = HashSet::new();
            for _ in 0..60 {
                let pick = pick_in_subset(key, 0..10, |i| hashes[i], 3, &mut random).unwrap();
                assert!(best.contains(&pick));
                seen.insert(pick);
            }
            assert_eq!(seen, best, "every member of the subset gets picked");
            assert_eq!(
                pick_in_subset(key, 0..10, |i| hashes[i], 1, &mut random),
                Some(ranked[0])
            );
        }
    }

    #[test]
    fn subset_larger_than_candidates() {
        let mut rng = Rng::new(1);
        let mut random = |n| rng.below(n);
        let pick = pick_in_subset(5, [4, 9].into_iter(), |i| i as u64, 5, &mut random);
        assert!(matches!(pick, Some(4 | 9)));
        assert_eq!(
            pick_in_subset(5, std::iter::empty(), |i| i as u64, 5, &mut random),
            None
        );
        assert_eq!(highest(5, std::iter::empty(), |i| i as u64), None);
    }
}
