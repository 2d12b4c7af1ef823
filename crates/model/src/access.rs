//! Who may use a route: the credentials of basic authentication (`auth-type: basic`), and the
//! external authentication service of `auth-url`. Data only; the proxy verifies passwords
//! and asks the service. Password hashes never leave this module: neither `Debug` nor
//! `Serialize` shows them.

use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::{Serialize, Serializer};

use crate::template::Template;

/// How a host treats client certificates (`auth-tls-verify-client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyClient {
    /// A valid certificate is required (400 without one).
    On,
    /// None may be sent; one that is sent must be valid.
    Optional,
    /// Any certificate, or none, is let through; the upstream is told what it was.
    OptionalNoCa,
    /// Not asked for.
    Off,
}

/// Client certificate authentication (`auth-tls-*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientAuth {
    /// `namespace/name` of the Secret whose `ca.crt` verifies the certificates.
    pub source: Box<str>,
    /// The CA certificates (DER).
    #[serde(skip)]
    pub ca: Vec<Vec<u8>>,
    pub verify: VerifyClient,
    /// Longest chain accepted, the client's own certificate included (`auth-tls-verify-depth`, 1).
    pub depth: usize,
    /// `ssl-client-cert` to the upstream (`auth-tls-pass-certificate-to-upstream`).
    pub pass_certificate: bool,
    /// The subject DN must match this regular expression (`auth-tls-match-cn`), else 403.
    pub match_cn: Option<Box<str>>,
    /// Where a refused client is redirected (302) instead of the 400 (`auth-tls-error-page`).
    pub error_page: Option<Box<str>>,
}

/// `auth-url` and its companions: a service asked, for every request, whether it may go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExternalAuth {
    /// The service: `https` or plain HTTP.
    pub https: bool,
    /// Its host name or address, and port.
    pub host: Box<str>,
    pub port: u16,
    /// The path and query asked for, with variables.
    pub target: Template,
    /// `auth-method`: GET unless set.
    pub method: Box<str>,
    /// `auth-signin` with the redirect parameter already added: where a 401 sends the
    /// client instead.
    pub signin: Option<Template>,
    /// `auth-response-headers`, lower case: set on the upstream request from the service's
    /// answer, or removed from it when the answer lacks them.
    pub response_headers: Vec<Box<str>>,
    /// `auth-request-redirect`: `X-Auth-Request-Redirect`; the request target when unset.
    pub request_redirect: Option<Template>,
    /// `auth-always-set-cookie`: the service's `Set-Cookie` on every response, not only
    /// successful ones.
    pub always_set_cookie: bool,
    /// `auth-cache-key` and `auth-cache-duration`: answers kept for a while, per key.
    pub cache: Option<AuthCache>,
    /// `auth-proxy-set-headers`: fields set on the request to the service (name, value with
    /// variables), from a ConfigMap.
    pub proxy_set_headers: Vec<(Box<str>, Template)>,
}

/// Which answers of an authentication service are kept, under which key, for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthCache {
    /// Expanded per request: requests with equal keys share an answer.
    pub key: Template,
    /// The answer statuses kept (`200 202 401` unless set).
    pub statuses: Vec<u16>,
    /// How long, in seconds.
    pub seconds: u64,
}

/// The most work a password hash may ask of each sign-in it checks: bcrypt's cost (2^cost
/// rounds of its key schedule) and SHA-crypt's `rounds=`. The hash sets it, so a Secret with
/// cost 31 or a billion rounds would pin a verifying thread for hours per request, wrong
/// password or not. Apache's `htpasswd -B` makes cost 5 and glibc 5,000 rounds; cost 12
/// (OWASP's floor for bcrypt is 10) and 200,000 rounds leave room for a careful operator and
/// keep one check under a second (debug build here: cost 12 in 554 ms, SHA-256-crypt
/// 200,000 rounds in 799 ms). The compile refuses users past it; the proxy checks it again
/// before it hashes.
pub const MAX_BCRYPT_COST: u64 = 12;
pub const MAX_SHA_CRYPT_ROUNDS: u64 = 200_000;

/// What is over the bound in a hash's work factor, for a diagnostic; `None` when the work
/// is within it, or the hash sets none. Read as the verifiers read it: bcrypt's cost from
/// the two characters after `$2?$`, SHA-crypt's from `rounds=` up to the next `$` (a cost or
/// rounds that is no number fails to verify without hashing).
pub fn hash_work_over_bound(hash: &str) -> Option<String> {
    if hash.starts_with("$2") && hash.as_bytes().get(3) == Some(&b'$') {
        let cost = hash.get(4..6)?.parse::<u64>().ok()?;
        return (cost > MAX_BCRYPT_COST)
            .then(|| format!("bcrypt cost {cost} is over the limit of {MAX_BCRYPT_COST}"));
    }
    let rest = hash
        .strip_prefix("$5$")
        .or_else(|| hash.strip_prefix("$6$"))?;
    let rounds = rest.strip_prefix("rounds=")?.split('$').next()?;
    // The verifier reads a u32 (an optional `+` first) and clamps it; past u64 is past the
    // bound too.
    let digits = rounds.strip_prefix('+').unwrap_or(rounds);
    let over = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits
            .parse::<u64>()
            .is_ok_and(|n| n <= MAX_SHA_CRYPT_ROUNDS);
    over.then(|| format!("SHA-crypt rounds={rounds} is over the limit of {MAX_SHA_CRYPT_ROUNDS}"))
}

/// The users of one `auth-secret`, and the realm the browser is told.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub realm: Box<str>,
    /// `namespace/name` of the Secret, for `/debug/config` and the log.
    pub source: Box<str>,
    /// Changes whenever the users, their hashes or the realm do: a cache of verified
    /// passwords made for one version is never consulted for another.
    pub version: u64,
    users: HashMap<Box<str>, Box<str>>,
}

impl BasicAuth {
    /// `users`: user name and password hash. A user named twice keeps the first hash, as
    /// nginx reads an htpasswd file from the top.
    pub fn new(
        realm: &str,
        source: &str,
        users: impl IntoIterator<Item = (String, String)>,
    ) -> BasicAuth {
        let mut map: HashMap<Box<str>, Box<str>> = HashMap::new();
        for (user, hash) in users {
            map.entry(user.into()).or_insert_with(|| hash.into());
        }
        let mut sorted: Vec<(&Box<str>, &Box<str>)> = map.iter().collect();
        sorted.sort();
        let mut hasher = DefaultHasher::new();
        (realm, source, sorted).hash(&mut hasher);
        BasicAuth {
            realm: realm.into(),
            source: source.into(),
            version: hasher.finish(),
            users: map,
        }
    }

    /// The password hash of `user`, if it is one.
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(|h| &**h)
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("realm", &self.realm)
            .field("source", &self.source)
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl Serialize for BasicAuth {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            realm: &'a str,
            secret: &'a str,
            users: usize,
        }
        View {
            realm: &self.realm,
            secret: &self.source,
            users: self.users.len(),
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_factors_past_the_bound_are_named() {
        let bcrypt = |cost: &str| {
            format!("$2y${cost}$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe")
        };
        assert_eq!(hash_work_over_bound(&bcrypt("05")), None);
        assert_eq!(hash_work_over_bound(&bcrypt("12")), None);
        assert_eq!(
            hash_work_over_bound(&bcrypt("13")).as_deref(),
            Some("bcrypt cost 13 is over the limit of 12")
        );
        assert!(hash_work_over_bound(&bcrypt("31")).is_some());
        assert!(hash_work_over_bound(&bcrypt("31").replace("$2y$", "$2a$")).is_some());
        // No number there: the verifier refuses the hash without hashing.
        assert_eq!(hash_work_over_bound(&bcrypt("xx")), None);
        for scheme in ["$5$", "$6$"] {
            let sha = |rounds: &str| format!("{scheme}rounds={rounds}$saltsalt$abcdef");
            assert_eq!(
                hash_work_over_bound(&format!("{scheme}saltsalt$abcdef")),
                None
            );
            assert_eq!(hash_work_over_bound(&sha("5000")), None);
            assert_eq!(hash_work_over_bound(&sha("200000")), None);
            assert_eq!(
                hash_work_over_bound(&sha("200001")).as_deref(),
                Some("SHA-crypt rounds=200001 is over the limit of 200000")
            );
            assert!(hash_work_over_bound(&sha("999999999")).is_some());
            assert!(hash_work_over_bound(&sha("99999999999999999999999")).is_some());
            assert!(hash_work_over_bound(&sha("+4294967295")).is_some());
            assert_eq!(hash_work_over_bound(&sha("many")), None);
        }
        for cheap in [
            "$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00",
            "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
            "$2",
            "",
        ] {
            assert_eq!(hash_work_over_bound(cheap), None, "{cheap}");
        }
    }

    fn auth(users: &[(&str, &str)]) -> BasicAuth {
        let users = users
            .iter()
            .map(|(u, h)| ((*u).to_owned(), (*h).to_owned()));
        BasicAuth::new("Private", "default/users", users)
    }

    #[test]
    fn hashes_are_looked_up_but_never_shown() {
        let a = auth(&[("ann", "{SHA}secret-hash"), ("ann", "{SHA}second")]);
        assert_eq!(a.hash_of("ann"), Some("{SHA}secret-hash"));
        assert_eq!(a.hash_of("bob"), None);
        let shown = format!("{a:?} {}", serde_json::to_string(&a).unwrap_or_default());
        assert!(!shown.contains("secret-hash"), "{shown}");
    }

    #[test]
    fn the_version_follows_the_content() {
        let a = auth(&[("ann", "h1"), ("bob", "h2")]);
        assert_eq!(a.version, auth(&[("bob", "h2"), ("ann", "h1")]).version);
        assert_ne!(a.version, auth(&[("ann", "h1"), ("bob", "h3")]).version);
    }
}

/// An address range: an address and how many leading bits of it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `2001:db8::/32`, or a single address.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix =
            match prefix {
                None => max,
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                    format!("{text:?} has a prefix length that is not 0 to {max}")
                })?,
            };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        match (self.addr, ip.to_canonical()) {
            (V4(net), V4(ip)) => bits_match(&net.octets(), &ip.octets(), self.prefix),
            (V6(net), V6(ip)) => bits_match(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn bits_match(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let prefix = usize::from(prefix);
    let (whole, rest) = (prefix / 8, prefix % 8);
    if net[..whole] != ip[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        net[whole] & mask == ip[whole] & mask
    }
}

/// Which client addresses may use a route (`whitelist-source-range`,
/// `allowlist-source-range`, `denylist-source-range`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceRanges {
    /// When not empty, only these may.
    pub allow: Vec<Cidr>,
    /// These may not, whatever `allow` says.
    pub deny: Vec<Cidr>,
}

impl SourceRanges {
    /// Whether `client` may use the route: not denied, and allowed when there is an allow
    /// list.
    pub fn admits(&self, client: std::net::IpAddr) -> bool {
        !self.deny.iter().any(|c| c.contains(client))
            && (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(client)))
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;

    #[test]
    fn ranges_hold_the_addresses_they_name() {
        let ranges = SourceRanges {
            allow: vec![
                Cidr::parse("10.0.0.0/8").unwrap(),
                Cidr::parse("2001:db8::/32").unwrap(),
                Cidr::parse("192.0.2.7").unwrap(),
            ],
            deny: vec![Cidr::parse("10.9.0.0/17").unwrap()],
        };
        let admits = |ip: &str| ranges.admits(ip.parse().unwrap());
        assert!(admits("10.1.2.3"));
        assert!(
            admits("::ffff:10.1.2.3"),
            "an IPv4 client on an IPv6 socket"
        );
        assert!(admits("2001:db8:1::1"));
        assert!(admits("192.0.2.7"));
        assert!(!admits("192.0.2.8"));
        assert!(!admits("10.9.127.1"), "denied wins");
        assert!(admits("10.9.128.1"));
        assert!(!admits("2001:db9::1"));
        for bad in ["10.0.0.0/33", "300.1.1.1", "10.0.0.0/x", "::/129", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert!(SourceRanges::default().admits("203.0.113.1".parse().unwrap()));
    }
}
