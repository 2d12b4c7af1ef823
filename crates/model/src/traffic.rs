//! Traffic control that is data only: the controller-wide client blocks (`--block-cidrs`,
//! `--block-user-agents`), an Ingress's request-rate limits (`limit-*`) and a route's canary
//! split (`canary-*`). The proxy keeps the counters and draws the random numbers.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::access::Cidr;
use crate::table::{Backend, RouteOrigin};

/// A regular expression compared and shown by its source. Matched unanchored, as nginx's
/// `map` and `ngx.re.match` do.
#[derive(Clone)]
pub struct Pattern {
    regex: regex::Regex,
}

impl Pattern {
    /// Compiles `source`; `case_insensitive` as nginx's `~*`.
    pub fn new(source: &str, case_insensitive: bool) -> Result<Pattern, String> {
        regex::RegexBuilder::new(source)
            .case_insensitive(case_insensitive)
            // Bounds what one hostile pattern in an annotation can cost to compile.
            .size_limit(1 << 20)
            .build()
            .map(|regex| Pattern { regex })
            .map_err(|e| format!("{source:?} is not a regular expression Vestibule can use: {e}"))
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }

    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One entry of `--block-user-agents`: nginx `map` syntax, so a plain string is an exact,
/// case-insensitive match, `~` starts a case-sensitive regular expression and `~*` a
/// case-insensitive one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRule {
    /// Lower-cased.
    Exact(Box<str>),
    Pattern(Pattern),
}

impl AgentRule {
    pub fn parse(entry: &str) -> Result<AgentRule, String> {
        let entry = entry.trim();
        if let Some(source) = entry.strip_prefix("~*") {
            Pattern::new(source, true).map(AgentRule::Pattern)
        } else if let Some(source) = entry.strip_prefix('~') {
            Pattern::new(source, false).map(AgentRule::Pattern)
        } else if entry.is_empty() {
            Err("an empty user agent".to_owned())
        } else {
            Ok(AgentRule::Exact(entry.to_ascii_lowercase().into()))
        }
    }

    fn matches(&self, agent: &str) -> bool {
        match self {
            AgentRule::Exact(exact) => exact.eq_ignore_ascii_case(agent),
            AgentRule::Pattern(pattern) => pattern.is_match(agent),
        }
    }
}

/// Clients refused on every host, before routing (`--block-cidrs`, `--block-user-agents`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Blocklist {
    pub cidrs: Vec<Cidr>,
    pub agents: Vec<AgentRule>,
}

impl Blocklist {
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty() && self.agents.is_empty()
    }

    /// Whether a request from `client` with this `User-Agent` is refused. A request without
    /// the header is matched as an empty one, as nginx's `$http_user_agent` is.
    pub fn blocks(&self, client: std::net::IpAddr, agent: Option<&[u8]>) -> bool {
        if self.cidrs.iter().any(|c| c.contains(client)) {
            return true;
        }
        if self.agents.is_empty() {
            return false;
        }
        let agent = agent.map_or("", |a| std::str::from_utf8(a).unwrap_or(""));
        self.agents.iter().any(|rule| rule.matches(agent))
    }
}

/// Request-rate limits of one Ingress (`limit-connections`, `limit-rps`, `limit-rpm`),
/// counted per client address. Every path of the Ingress shares the one budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// The Ingress whose paths share the budget: `namespace/name`.
    pub zone: Box<str>,
    /// Requests one client may have in flight at once.
    pub connections: Option<u32>,
    /// Requests per second, and per minute, one client may make on average.
    pub rps: Option<u32>,
    pub rpm: Option<u32>,
    /// Requests above the rate let through back to back: rate × this
    /// (`limit-burst-multiplier`, default 5).
    pub burst_multiplier: u32,
    /// Clients that no limit applies to (`limit-allowlist`).
    pub exempt: Vec<Cidr>,
}

impl RateLimit {
    pub fn exempts(&self, client: std::net::IpAddr) -> bool {
        self.exempt.iter().any(|c| c.contains(client))
    }
}

/// How a canary request is told apart by a header (`canary-by-header` and its companions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanaryHeader {
    /// Lower-cased.
    pub name: Box<str>,
    /// `canary-by-header-value`: this exact value means canary.
    pub value: Option<Box<str>>,
    /// `canary-by-header-pattern`: a value this matches means canary.
    pub pattern: Option<Pattern>,
}

/// A canary Ingress's claim on a route: some of the route's requests go to `backend`
/// instead, chosen per request in ingress-nginx's order (affinity, header, cookie, weight).
/// Everything else about the request is the route's own: rewrite, authentication, timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Canary {
    pub backend: Backend,
    /// The canary Ingress and the path it was compiled from.
    pub origin: RouteOrigin,
    pub header: Option<CanaryHeader>,
    /// `canary-by-cookie`: the cookie whose value `always` or `never` decides.
    pub cookie: Option<Box<str>>,
    /// Canary when a draw of 1 to `weight_total` is at most `weight`.
    pub weight: u32,
    pub weight_total: u32,
    /// `affinity-canary-behavior: sticky` (default): a client whose affinity cookie names a
    /// canary endpoint stays on the canary; `legacy` draws again.
    pub sticky: bool,
}

impl Canary {
    /// What the request's canary header value and canary cookie value decide, in
    /// ingress-nginx's order (header, then cookie): `Some(true)` canary, `Some(false)` main,
    /// `None` when neither decides and the weight does. Affinity is decided before this.
    pub fn decides(&self, header: Option<&str>, cookie: Option<&str>) -> Option<bool> {
        if let (Some(rule), Some(value)) = (&self.header, header) {
            if let Some(expected) = &rule.value {
                if value == &**expected {
                    return Some(true);
                }
            } else if let Some(pattern) = &rule.pattern {
                if pattern.is_match(value) {
                    return Some(true);
                }
            } else if value == "always" {
                return Some(true);
            } else if value == "never" {
                return Some(false);
            }
        }
        match cookie.filter(|_| self.cookie.is_some()) {
            Some("always") => Some(true),
            Some("never") => Some(false),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocklists_match_addresses_and_agents_as_nginx_map_does() {
        let list = Blocklist {
            cidrs: vec![Cidr::parse("203.0.113.0/24").unwrap()],
            agents: ["BadBot/1.0", "~^curl/", "~*scanner"]
                .iter()
                .map(|a| AgentRule::parse(a).unwrap())
                .collect(),
        };
        let ip = |s: &str| s.parse().unwrap();
        let ok = ip("192.0.2.1");
        assert!(list.blocks(ip("203.0.113.9"), None));
        assert!(
            list.blocks(ok, Some(b"badbot/1.0")),
            "exact is case-insensitive"
        );
        assert!(
            !list.blocks(ok, Some(b"BadBot/1.0 extra")),
            "exact is whole"
        );
        assert!(list.blocks(ok, Some(b"curl/8.0")));
        assert!(!list.blocks(ok, Some(b"Curl/8.0")), "~ is case-sensitive");
        assert!(list.blocks(ok, Some(b"a Mass-SCANNER here")), "~* anywhere");
        assert!(!list.blocks(ok, None));
        assert!(!list.blocks(ok, Some(b"Mozilla/5.0")));
        assert!(!Blocklist::default().blocks(ip("203.0.113.9"), Some(b"x")));
        assert!(AgentRule::parse("~(").is_err());
        assert!(AgentRule::parse("  ").is_err());
    }
}
