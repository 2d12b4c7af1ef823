//! Cookie session affinity. A cookie value never shows an endpoint's address. In persistent
//! mode it is a token derived from the address, so a session stays on its endpoint for as
//! long as that exists. In balanced mode it is a random session key that rendezvous hashing
//! maps onto the current endpoints, so an added endpoint takes its share of the sessions, and
//! a removed one moves only its own.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use http::header::{COOKIE, InvalidHeaderValue};
use http::{HeaderMap, HeaderValue};
use vestibule_model::{AffinityMode, CookieAffinity, SameSite};

use super::hash::{hash64, highest};
use super::health::Eligible;

/// The value of the cookie `name` in the request's `Cookie` headers (the first one if several
/// carry it), without surrounding double quotes. Pairs that are not `name=value` or not UTF-8
/// are skipped rather than failing the whole header.
pub(crate) fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|header| header.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| std::str::from_utf8(pair).ok()?.split_once('='))
        .find(|(n, _)| trim(n) == name)
        .map(|(_, v)| unquote(trim(v)))
}

fn trim(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// The persistent-mode token of an endpoint address (its `Display` form). Domain-separated
/// from the hash used for balancing, so the cookie tells nothing about where keys land. It
/// hides the address from a casual look only: without a secret shared by every replica, an
/// attacker can still hash candidate addresses and compare. Changing it breaks every
/// persistent session in the field.
pub(crate) fn endpoint_token(address: &str) -> u64 {
    let mut input = Vec::with_capacity(PERSISTENT_DOMAIN.len() + address.len());
    input.extend_from_slice(PERSISTENT_DOMAIN);
    input.extend_from_slice(address.as_bytes());
    hash64(&input)
}

const PERSISTENT_DOMAIN: &[u8] = b"vestibule affinity\0";

/// A cookie value: 16 lower-case hex digits.
pub(crate) fn encode(value: u64) -> String {
    format!("{value:016x}")
}

/// The value of a cookie we set, or `None` for anything else (a client's own, a truncated
/// one), which then counts as no cookie.
pub(crate) fn decode(value: &str) -> Option<u64> {
    // `from_str_radix` alone would accept a sign and fewer digits.
    if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(value, 16).ok()
}

/// The mark of a value set by a route's canary side: the route remembers which side a
/// session is on, as ingress-nginx's cookie names its backend. Not a hex digit, so no value
/// of the main's is ever read as marked.
const CANARY_MARK: &str = "c.";

/// A canary side's value: `value` marked.
pub(crate) fn marked(value: &str) -> String {
    let mut marked = String::with_capacity(value.len() + CANARY_MARK.len());
    marked.push_str(CANARY_MARK);
    marked.push_str(value);
    marked
}

/// The value without a canary mark, for the cluster's own lookup.
pub(crate) fn unmarked(value: &str) -> &str {
    value.strip_prefix(CANARY_MARK).unwrap_or(value)
}

/// Which side set a cookie value: `Some(true)` the canary, `Some(false)` the main, `None`
/// for a value not ours.
pub(crate) fn side(value: &str) -> Option<bool> {
    let canary = value.starts_with(CANARY_MARK);
    decode(unmarked(value)).map(|_| canary)
}

/// A new balanced-mode session key, from 64 bits of `random(1 << 16)` draws. The endpoint is
/// then the one [`balanced_endpoint`] maps it to: a random key cannot be aimed at an endpoint.
pub(crate) fn new_session_key(random: &mut dyn FnMut(usize) -> usize) -> u64 {
    (0..4).fold(0, |key, _| (key << 16) | (random(1 << 16) as u64 & 0xffff))
}

/// The candidate a balanced-mode session key maps to: the highest rendezvous weight.
pub(crate) fn balanced_endpoint(
    key: u64,
    candidates: impl Iterator<Item = usize>,
    endpoint_hash: impl Fn(usize) -> u64,
) -> Option<usize> {
    highest(hash64(&key.to_be_bytes()), candidates, endpoint_hash)
}

/// The eligible endpoint a cookie value names, if any. `token(i)` is endpoint `i`'s
/// [`endpoint_token`], `endpoint_hash(i)` its balancing hash. In balanced mode a valid value
/// always maps somewhere while anything is eligible: to its usual endpoint, or, while that one
/// is ejected or already tried, to the next in the key's rendezvous order.
pub(crate) fn lookup<A: Fn(usize) -> bool>(
    mode: AffinityMode,
    value: &str,
    eligible: &Eligible<'_, A>,
    token: impl Fn(usize) -> u64,
    endpoint_hash: impl Fn(usize) -> u64,
) -> Option<usize> {
    let value = decode(value)?;
    match mode {
        AffinityMode::Persistent => eligible.iter().find(|&i| token(i) == value),
        AffinityMode::Balanced => balanced_endpoint(value, eligible.iter(), endpoint_hash),
    }
}

/// The latest instant `httpdate` formats (9999-12-31T23:59:59Z); it panics beyond.
const LAST_HTTP_DATE: u64 = 253_402_300_799;

/// The `Set-Cookie` value for `value`. `default_path` applies when the affinity sets none;
/// `https` tells whether the request came over TLS; `now_unix_secs` dates `Expires`, which
/// goes with `Max-Age` for clients that only know the former.
pub(crate) fn set_cookie(
    affinity: &CookieAffinity,
    value: &str,
    default_path: &str,
    https: bool,
    now_unix_secs: u64,
) -> Result<HeaderValue, InvalidHeaderValue> {
    let path = affinity.path.as_deref().unwrap_or(default_path);
    let mut cookie = format!("{}={value}; Path={path}", affinity.name);
    if let Some(max_age) = affinity.max_age {
        let expires = now_unix_secs.saturating_add(max_age).min(LAST_HTTP_DATE);
        let expires = UNIX_EPOCH + Duration::from_secs(expires);
        let _ = write!(
            cookie,
            "; Expires={}; Max-Age={max_age}",
            httpdate::fmt_http_date(expires)
        );
    }
    // Browsers reject SameSite=None without Secure.
    if affinity.secure || https || affinity.same_site == Some(SameSite::None) {
        cookie.push_str("; Secure");
    }
    cookie.push_str("; HttpOnly");
    if let Some(same_site) = affinity.same_site {
        cookie.push_str(match same_site {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        });
    }
    HeaderValue::from_str(&cookie)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::balance::hash::hash64;
    use crate::balance::test_rng::Rng;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn finds_the_cookie_among_pairs_and_headers() {
        let h = headers(&["a=1; b=2", "junk; route=abc ;c=3", "route=second"]);
        assert_eq!(cookie_value(&h, "a"), Some("1"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(
            cookie_value(&h, "route"),
            Some("abc"),
            "the first occurrence"
        );
        assert_eq!(cookie_value(&h, "c"), Some("3"));
        assert_eq!(cookie_value(&h, "junk"), None, "no `=`: malformed");
        assert_eq!(cookie_value(&h, "d"), None);
        assert_eq!(cookie_value(&h, "ROUTE"), None, "names are case-sensitive");
        assert_eq!(cookie_value(&HeaderMap::new(), "a"), None);
    }

    #[test]
    fn cookie_edge_cases() {
        let h = headers(&["q=\"quoted\"; empty=; eq=a=b;;  spaced = v "]);
        assert_eq!(cookie_value(&h, "q"), Some("quoted"));
        assert_eq!(cookie_value(&h, "empty"), Some(""));
        assert_eq!(cookie_value(&h, "eq"), Some("a=b"));
        assert_eq!(cookie_value(&h, "spaced"), Some("v"));
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"bad=\xff; good=1").unwrap(),
        );
        assert_eq!(
            cookie_value(&h, "good"),
            Some("1"),
            "a non-UTF-8 pair is skipped"
        );
        assert_eq!(cookie_value(&h, "bad"), None);
    }

    #[test]
    fn canary_marks_are_never_read_into_a_mains_value() {
        for value in [0xc0ff_ee00_0000_0001_u64, 0x0123_4567_89ab_cdef] {
            let plain = encode(value);
            assert_eq!(
                unmarked(&plain),
                plain,
                "a value starting with c stays whole"
            );
            assert_eq!(side(&plain), Some(false));
            let marked = marked(&plain);
            assert_eq!(side(&marked), Some(true));
            assert_eq!(decode(unmarked(&marked)), Some(value));
        }
        assert_eq!(side("c.nothex"), None);
        assert_eq!(side("junk"), None);
    }

    #[test]
    fn values_round_trip_and_reject_foreign_ones() {
        for v in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
            let s = encode(v);
            assert_eq!(s.len(), 16);
            assert_eq!(decode(&s), Some(v));
        }
        assert_eq!(decode("0123456789ABCDEF"), Some(0x0123_4567_89ab_cdef));
        for bad in [
            "",
            "abc",
            "+123456789abcdef",
            "0123456789abcdeg",
            "0123456789abcdef0",
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn tokens_hide_addresses_and_are_pinned() {
        let token = encode(endpoint_token("10.0.0.1:8080"));
        assert!(!token.contains("10.0.0.1") && !token.contains("0a000001"));
        assert_ne!(
            endpoint_token("10.0.0.1:8080"),
            endpoint_token("10.0.0.2:8080")
        );
        assert_ne!(endpoint_token("10.0.0.1:8080"), hash64(b"10.0.0.1:8080"));
        // Changing this breaks the persistent sessions of every client.
        assert_eq!(token, "1a05f68ef3be0a75");
    }

    struct Cluster {
        addresses: Vec<String>,
    }

    impl Cluster {
        fn new(range: std::ops::Range<usize>) -> Cluster {
            Cluster {
                addresses: range.map(|i| format!("10.1.0.{i}:80")).collect(),
            }
        }

        fn lookup(&self, mode: AffinityMode, value: &str, excluded: &[usize]) -> Option<&str> {
            let eligible = Eligible::new(self.addresses.len(), excluded, |_| true);
            let i = lookup(
                mode,
                value,
                &eligible,
                |i| endpoint_token(&self.addresses[i]),
                |i| hash64(self.addresses[i].as_bytes()),
            )?;
            Some(&self.addresses[i])
        }

        fn new_session(&self, random: &mut dyn FnMut(usize) -> usize) -> (String, &str) {
            let key = new_session_key(random);
            let i = balanced_endpoint(key, 0..self.addresses.len(), |i| {
                hash64(self.addresses[i].as_bytes())
            })
            .unwrap();
            (encode(key), &self.addresses[i])
        }
    }

    #[test]
    fn persistent_sessions_stay_while_their_endpoint_exists() {
        let small = Cluster::new(0..3);
        let big = Cluster::new(0..20);
        for address in &small.addresses {
            let value = encode(endpoint_token(address));
            assert_eq!(
                small.lookup(AffinityMode::Persistent, &value, &[]),
                Some(&**address)
            );
            assert_eq!(
                big.lookup(AffinityMode::Persistent, &value, &[]),
                Some(&**address)
            );
        }
        let gone = encode(endpoint_token("10.9.9.9:80"));
        assert_eq!(small.lookup(AffinityMode::Persistent, &gone, &[]), None);
        let first = encode(endpoint_token(&small.addresses[0]));
        assert_eq!(
            small.lookup(AffinityMode::Persistent, &first, &[0]),
            None,
            "tried"
        );
        assert_eq!(
            small.lookup(AffinityMode::Persistent, "nonsense", &[]),
            None
        );
    }

    #[test]
    fn balanced_sessions_rebalance_and_survive_removals() {
        let mut rng = Rng::new(3);
        let mut random = |n| rng.below(n);
        let before = Cluster::new(0..5);
        let grown = Cluster::new(0..6);
        let shrunk = Cluster {
            addresses: before.addresses[1..].to_vec(),
        };
        let sessions: Vec<(String, String)> = (0..3000)
            .map(|_| {
                let (value, endpoint) = before.new_session(&mut random);
                (value, endpoint.to_owned())
            })
            .collect();
        let mut moved_to_new = 0;
        for (value, endpoint) in &sessions {
            assert_eq!(
                before.lookup(AffinityMode::Balanced, value, &[]),
                Some(&**endpoint)
            );
            let now = grown.lookup(AffinityMode::Balanced, value, &[]).unwrap();
            if now != endpoint {
                assert_eq!(now, grown.addresses[5]);
                moved_to_new += 1;
            }
            let after = shrunk.lookup(AffinityMode::Balanced, value, &[]).unwrap();
            if *endpoint != before.addresses[0] {
                assert_eq!(after, endpoint, "only the removed endpoint's sessions move");
            }
        }
        // About 1/6 of 3000.
        assert!((350..650).contains(&moved_to_new), "{moved_to_new}");
    }

    #[test]
    fn new_sessions_spread_over_endpoints() {
        let mut rng = Rng::new(9);
        let mut random = |n| rng.below(n);
        let cluster = Cluster::new(0..4);
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for _ in 0..4000 {
            *counts
                .entry(cluster.new_session(&mut random).1)
                .or_default() += 1;
        }
        assert_eq!(counts.len(), 4);
        assert!(
            counts.values().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn balanced_session_moves_off_a_tried_endpoint_temporarily() {
        let mut rng = Rng::new(5);
        let cluster = Cluster::new(0..4);
        let (value, endpoint) = cluster.new_session(&mut |n| rng.below(n));
        let i = cluster
            .addresses
            .iter()
            .position(|a| a == endpoint)
            .unwrap();
        let elsewhere = cluster
            .lookup(AffinityMode::Balanced, &value, &[i])
            .unwrap();
        assert_ne!(elsewhere, endpoint);
        assert_eq!(
            cluster.lookup(AffinityMode::Balanced, &value, &[]),
            Some(endpoint)
        );
    }

    fn affinity() -> CookieAffinity {
        CookieAffinity {
            name: "INGRESSCOOKIE".into(),
            max_age: None,
            path: None,
            secure: false,
            same_site: None,
            mode: AffinityMode::Balanced,
            change_on_failure: true,
        }
    }

    fn set(affinity: &CookieAffinity, https: bool) -> String {
        set_cookie(affinity, "00000000000000ff", "/app", https, 1_700_000_000)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn session_cookie() {
        assert_eq!(
            set(&affinity(), false),
            "INGRESSCOOKIE=00000000000000ff; Path=/app; HttpOnly"
        );
        assert_eq!(
            set(&affinity(), true),
            "INGRESSCOOKIE=00000000000000ff; Path=/app; Secure; HttpOnly"
        );
    }

    #[test]
    fn persistent_cookie_with_every_attribute() {
        let a = CookieAffinity {
            name: "route".into(),
            max_age: Some(3600),
            path: Some("/shop".into()),
            secure: true,
            same_site: Some(SameSite::Strict),
            ..affinity()
        };
        assert_eq!(
            set(&a, false),
            "route=00000000000000ff; Path=/shop; Expires=Tue, 14 Nov 2023 23:13:20 GMT; \
             Max-Age=3600; Secure; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn same_site_none_implies_secure() {
        let a = CookieAffinity {
            same_site: Some(SameSite::None),
            ..affinity()
        };
        assert_eq!(
            set(&a, false),
            "INGRESSCOOKIE=00000000000000ff; Path=/app; Secure; HttpOnly; SameSite=None"
        );
        let lax = CookieAffinity {
            same_site: Some(SameSite::Lax),
            ..affinity()
        };
        assert!(set(&lax, false).ends_with("; HttpOnly; SameSite=Lax"));
    }

    #[test]
    fn huge_max_age_does_not_overflow() {
        let a = CookieAffinity {
            max_age: Some(u64::MAX),
            ..affinity()
        };
        let cookie = set(&a, false);
        assert!(
            cookie.contains("Expires=Fri, 31 Dec 9999 23:59:59 GMT"),
            "{cookie}"
        );
        assert!(cookie.contains(&format!("Max-Age={}", u64::MAX)));
    }

    #[test]
    fn invalid_name_is_an_error_not_a_panic() {
        let a = CookieAffinity {
            name: "bad\nname".into(),
            ..affinity()
        };
        assert!(set_cookie(&a, "x", "/", false, 0).is_err());
    }
}
