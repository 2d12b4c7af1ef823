//! Host names: normalising what a request carries, and parsing the hosts that rules name.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

/// The host part of a rule: which requests its virtual host serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "host", rename_all = "lowercase")]
pub enum HostPattern {
    /// `foo.com`: that name only.
    Exact(Box<str>),
    /// `*.foo.com`, stored as `foo.com`: exactly one more label in front.
    Wildcard(Box<str>),
    /// A rule without `host`: the catch-all virtual host.
    Any,
}

/// Why a rule's `host` is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host is {0} characters long, the limit is 253")]
    TooLong(usize),
    #[error("host must not contain a port")]
    HasPort,
    #[error("host must be a DNS name, not an IP address")]
    IpAddress,
    #[error("a wildcard is only allowed as the whole first label (\"*.foo.com\")")]
    BadWildcard,
    #[error(
        "label {0:?} is not a DNS label (letters, digits and '-', 1 to 63 characters, \
         starting and ending with a letter or digit)"
    )]
    BadLabel(String),
}

impl HostPattern {
    /// Parses a rule's `host` as Kubernetes validates it (a DNS-1123 subdomain, optionally
    /// behind `*.`). Upper case is accepted and folded; the caller can compare the result with
    /// the input to warn about it.
    pub fn parse(host: &str) -> Result<HostPattern, HostError> {
        if host.is_empty() {
            return Ok(HostPattern::Any);
        }
        if host.len() > 253 {
            return Err(HostError::TooLong(host.len()));
        }
        if host.contains(':') {
            // Either a port or an IPv6 literal; both are rejected by the API server.
            return Err(if host.parse::<std::net::Ipv6Addr>().is_ok() {
                HostError::IpAddress
            } else {
                HostError::HasPort
            });
        }
        if host.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err(HostError::IpAddress);
        }
        let lower = host.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if name.contains('*') {
            return Err(HostError::BadWildcard);
        }
        for label in name.split('.') {
            if !is_dns_label(label) {
                return Err(HostError::BadLabel(label.to_owned()));
            }
        }
        Ok(if wildcard {
            HostPattern::Wildcard(name.into())
        } else {
            HostPattern::Exact(name.into())
        })
    }

    /// True when a (normalised) request host belongs to this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => **name == *host,
            HostPattern::Wildcard(suffix) => wildcard_suffix(host) == Some(&**suffix),
            HostPattern::Any => true,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// The part of a host a one-label wildcard is keyed on: `bar.foo.com` → `foo.com`.
/// `None` when there is nothing left after the first label.
pub(crate) fn wildcard_suffix(host: &str) -> Option<&str> {
    let dot = host.bytes().position(|b| b == b'.')?;
    let rest = &host[dot + 1..];
    (dot > 0 && !rest.is_empty()).then_some(rest)
}

/// Normalises the `Host` header or `:authority` of a request for lookup: drops the port and
/// a trailing dot, folds ASCII case. Allocates only when case folding is needed.
pub fn request_host(raw: &str) -> Cow<'_, str> {
    let without_port = if raw.starts_with('[') {
        // IPv6 literal: `[::1]:8080` → `[::1]`.
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        match raw.bytes().rposition(|b| b == b':') {
            Some(colon) if raw.as_bytes()[colon + 1..].iter().all(u8::is_ascii_digit) => {
                &raw[..colon]
            }
            _ => raw,
        }
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// Whether a `Host` field or a request target's authority is a host with an optional port, as
/// RFC 9112 §3.2 requires: a name of RFC 3986's reg-name characters (no two dots in a row, as
/// nginx also refuses), or an IPv6 literal in brackets, then at most one `:` and digits. No
/// space, `/`, `@` (user information), second port or control byte. Empty is valid: a request
/// for no host.
pub fn is_valid_authority(raw: &[u8]) -> bool {
    let (host, port) = match raw.first() {
        Some(b'[') => match raw.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = &raw[1..end];
                let ok = !literal.is_empty()
                    && (literal.iter()).all(|b| b.is_ascii_hexdigit() || b":.".contains(b));
                if !ok {
                    return false;
                }
                match &raw[end + 1..] {
                    [] => (&raw[..0], None),
                    [b':', port @ ..] => (&raw[..0], Some(port)),
                    _ => return false,
                }
            }
            None => return false,
        },
        _ => match raw.iter().position(|&b| b == b':') {
            Some(colon) => (&raw[..colon], Some(&raw[colon + 1..])),
            None => (raw, None),
        },
    };
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    let name_ok = host
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b))
        && !host.windows(2).any(|w| w == b"..");
    port_ok && name_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_are_a_host_and_an_optional_port() {
        for good in [
            "a.example",
            "A.Example:8080",
            "a.example:",
            "10.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "under_score.example",
            "",
        ] {
            assert!(is_valid_authority(good.as_bytes()), "{good}");
        }
        for bad in [
            "smug example",
            "a.example/x",
            "u@a.example",
            "a.example:80:80",
            "a.example:http",
            "a.example:123456",
            "a..example",
            "[::1",
            "[::1]x",
            "[zz::1]",
            "a.example\\x",
            "a\texample",
        ] {
            assert!(!is_valid_authority(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn request_host_drops_port_trailing_dot_and_case() {
        let cases = [
            ("foo.com", "foo.com"),
            ("foo.com:8080", "foo.com"),
            ("FOO.com", "foo.com"),
            ("Foo.Com.:443", "foo.com"),
            ("foo.com.", "foo.com"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("10.0.0.1:80", "10.0.0.1"),
            ("", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(request_host(raw), want, "request_host({raw:?})");
        }
    }

    #[test]
    fn request_host_borrows_when_already_normal() {
        assert!(matches!(request_host("foo.com:80"), Cow::Borrowed(_)));
    }

    #[test]
    fn parse_rule_hosts() {
        let ok = [
            ("foo.com", HostPattern::Exact("foo.com".into())),
            ("*.foo.com", HostPattern::Wildcard("foo.com".into())),
            ("Foo.COM", HostPattern::Exact("foo.com".into())),
            ("a-b.c1", HostPattern::Exact("a-b.c1".into())),
            ("localhost", HostPattern::Exact("localhost".into())),
            ("", HostPattern::Any),
        ];
        for (host, want) in ok {
            assert_eq!(HostPattern::parse(host), Ok(want), "parse({host:?})");
        }
        let bad = [
            ("foo.com:80", HostError::HasPort),
            ("10.1.2.3", HostError::IpAddress),
            ("::1", HostError::IpAddress),
            ("*.*.foo.com", HostError::BadWildcard),
            ("foo.*.com", HostError::BadWildcard),
            ("*foo.com", HostError::BadWildcard),
            ("-foo.com", HostError::BadLabel("-foo".into())),
            ("foo..com", HostError::BadLabel(String::new())),
            ("foo_bar.com", HostError::BadLabel("foo_bar".into())),
            ("*", HostError::BadWildcard),
        ];
        for (host, want) in bad {
            assert_eq!(HostPattern::parse(host), Err(want), "parse({host:?})");
        }
        assert_eq!(
            HostPattern::parse(&"a".repeat(254)),
            Err(HostError::TooLong(254))
        );
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let pattern = HostPattern::Wildcard("foo.com".into());
        assert!(pattern.matches("bar.foo.com"));
        assert!(!pattern.matches("baz.bar.foo.com"));
        assert!(!pattern.matches("foo.com"));
        assert!(!pattern.matches(".foo.com"));
        assert!(!pattern.matches("barfoo.com"));
    }
}
