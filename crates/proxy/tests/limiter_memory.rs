//! The request-rate limiter's memory under a flood of distinct client addresses, counted
//! exactly (dhat): it grows with the clients up to its cap, then not at all, however many
//! more addresses come. Alone in its test binary, so nothing else allocates meanwhile.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use vestibule_model::RateLimit;
use vestibule_proxy::RateLimiter;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const CAP: usize = 10_000;

fn flood(limiter: &Arc<RateLimiter>, clients: std::ops::Range<u128>) {
    for n in clients {
        // Distinct /64s, as an attacker with an IPv6 block would send.
        let client = IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | (n << 64)));
        let _ = limiter.admit(client);
    }
}

#[test]
fn a_flood_of_distinct_addresses_cannot_grow_the_limiter_past_its_cap() {
    let _profiler = dhat::Profiler::builder()
        .testing()
        .trim_backtraces(Some(1))
        .build();
    let limit = Arc::new(RateLimit {
        zone: "default/api".into(),
        connections: Some(10),
        rps: Some(10),
        rpm: Some(100),
        burst_multiplier: 5,
        exempt: Vec::new(),
    });
    let before = dhat::HeapStats::get().curr_bytes;
    let limiter = Arc::new(RateLimiter::new(limit, CAP));
    let heap = || dhat::HeapStats::get().curr_bytes - before;
    flood(&limiter, 0..CAP as u128 * 2);
    let full = heap();
    // Past the cap, each shard's map settles at one more doubling of its buckets (the
    // evictions leave tombstones that a rehash clears), then stays.
    flood(&limiter, CAP as u128 * 2..CAP as u128 * 20);
    let settled = heap();
    flood(&limiter, CAP as u128 * 20..CAP as u128 * 40);
    let flooded = heap();
    let tracked = limiter.tracked();
    println!(
        "limiter memory: {full} bytes when first full, {settled} after {} distinct clients, \
         {flooded} after {} ({:.0} bytes per client tracked)",
        CAP * 20,
        CAP * 40,
        flooded as f64 / tracked as f64
    );
    assert!(tracked <= CAP + 16, "{tracked} clients tracked");
    assert!(tracked >= CAP - 16, "{tracked} clients tracked");
    assert!(
        flooded <= settled + settled / 100,
        "grew from {settled} to {flooded} bytes under the flood"
    );
    assert!(flooded <= CAP * 200, "{flooded} bytes for {CAP} clients");
}
