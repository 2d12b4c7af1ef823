//! The value syntax of ingress-nginx annotations, which is mostly nginx's: times with units,
//! sizes with suffixes, `on`/`off`, Go booleans, and variable templates for hashing. Pure
//! parsers; the caller words the diagnostic.

use std::time::Duration;

use vestibule_model::{HashPart, NextUpstream};

/// Booleans as ingress-nginx reads them (Go's `strconv.ParseBool`).
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// nginx's `on` / `off` flags, which ingress-nginx passes through verbatim (so only lower case).
pub(crate) fn parse_on_off(value: &str) -> Option<bool> {
    match value {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

/// A non-negative decimal integer. Stricter than `str::parse`, which would take `+3`.
pub(crate) fn parse_uint<T: std::str::FromStr>(value: &str) -> Option<T> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// An nginx time: a number of seconds (`30`), or numbers with units (`500ms`, `30s`, `2m`,
/// `1h`, `1d`), several of which add up (`1m30s`, `1h 30m`), as `ngx_parse_time` reads them.
pub(crate) fn parse_duration(value: &str) -> Option<Duration> {
    parse_duration_with(value, false)
}

/// [`parse_duration`], and with `fractions` each number may have a fraction too (`1.5s`).
pub(crate) fn parse_duration_with(value: &str, fractions: bool) -> Option<Duration> {
    let mut rest = value.trim_start();
    if rest.len() != value.len() || value.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .bytes()
            .take_while(|&b| b.is_ascii_digit() || fractions && b == b'.')
            .count();
        let number = &rest[..digits];
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let millis_per: u64 = match &rest[..unit] {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60 * 1000,
            "h" => 60 * 60 * 1000,
            "d" => 24 * 60 * 60 * 1000,
            _ => return None,
        };
        let part = match number.split_once('.') {
            None => Duration::from_millis(parse_uint::<u64>(number)?.checked_mul(millis_per)?),
            Some((whole, fraction)) => {
                // Digits on both sides, as `0.5`, never `.5` or `1.`.
                parse_uint::<u64>(whole)?;
                parse_uint::<u64>(fraction)?;
                let seconds = number.parse::<f64>().ok()? * millis_per as f64 / 1000.0;
                Duration::try_from_secs_f64(seconds).ok()?
            }
        };
        total = total.checked_add(part)?;
        let after = &rest[unit..];
        rest = after.trim_start();
        // Parts are separated by spaces or nothing, but a space may not end the value.
        if unit == 0 && !rest.is_empty() || rest.is_empty() && !after.is_empty() {
            return None;
        }
    }
    Some(total)
}

/// A duration as the annotations would write it back, for messages.
pub(crate) fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// An nginx size in bytes: `100`, `8k` / `8K`, `1m` / `1M`, `1g` / `1G`.
pub(crate) fn parse_size(value: &str) -> Option<u64> {
    let (digits, factor) = match value.as_bytes().last()? {
        b'k' | b'K' => (&value[..value.len() - 1], 1 << 10),
        b'm' | b'M' => (&value[..value.len() - 1], 1 << 20),
        b'g' | b'G' => (&value[..value.len() - 1], 1 << 30),
        _ => (value, 1),
    };
    parse_uint::<u64>(digits)?.checked_mul(factor)
}

/// A size as written in annotations, for messages.
pub(crate) fn show_size(bytes: Option<u64>) -> String {
    match bytes {
        None => "0, no limit".to_owned(),
        Some(b) if b != 0 && b % (1 << 30) == 0 => format!("{}g", b >> 30),
        Some(b) if b != 0 && b % (1 << 20) == 0 => format!("{}m", b >> 20),
        Some(b) if b != 0 && b % (1 << 10) == 0 => format!("{}k", b >> 10),
        Some(b) => b.to_string(),
    }
}

/// `proxy-next-upstream`: the conditions, or the reason they cannot be read.
pub(crate) fn parse_next_upstream(value: &str) -> Result<NextUpstream, String> {
    let tokens: Vec<&str> = value.split_whitespace().collect();
    match tokens.as_slice() {
        [] => return Err("is empty".to_owned()),
        ["off"] => return Ok(NextUpstream::off()),
        _ => {}
    }
    let mut out = NextUpstream::off();
    for token in tokens {
        let flag = match token {
            // nginx counts a malformed response header as an error of the upstream.
            "error" | "invalid_header" => &mut out.error,
            "timeout" => &mut out.timeout,
            "http_500" => &mut out.http_500,
            "http_502" => &mut out.http_502,
            "http_503" => &mut out.http_503,
            "http_504" => &mut out.http_504,
            "http_403" => &mut out.http_403,
            "http_404" => &mut out.http_404,
            "http_429" => &mut out.http_429,
            "non_idempotent" => &mut out.non_idempotent,
            "off" => return Err("combines off with other conditions".to_owned()),
            other => {
                return Err(format!(
                    "has the unknown condition {other:?} (known: error, timeout, \
                     invalid_header, http_500, http_502, http_503, http_504, http_403, \
                     http_404, http_429, non_idempotent, off)"
                ));
            }
        };
        *flag = true;
    }
    Ok(out)
}

/// The conditions as `proxy-next-upstream` would write them, for messages.
pub(crate) fn show_next_upstream(n: &NextUpstream) -> String {
    let tokens: Vec<&str> = [
        (n.error, "error"),
        (n.timeout, "timeout"),
        (n.http_500, "http_500"),
        (n.http_502, "http_502"),
        (n.http_503, "http_503"),
        (n.http_504, "http_504"),
        (n.http_403, "http_403"),
        (n.http_404, "http_404"),
        (n.http_429, "http_429"),
        (n.non_idempotent, "non_idempotent"),
    ]
    .into_iter()
    .filter_map(|(on, token)| on.then_some(token))
    .collect();
    if tokens.is_empty() {
        "off".to_owned()
    } else {
        tokens.join(" ")
    }
}

/// `upstream-hash-by`: literal text and nginx variables, or the reason it cannot be read.
pub(crate) fn parse_hash_key(value: &str) -> Result<Vec<HashPart>, String> {
    let mut parts: Vec<HashPart> = Vec::new();
    let mut literal = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let name = if let Some(braced) = rest.strip_prefix('{') {
            let Some(end) = braced.find('}') else {
                return Err("has a ${ without its closing }".to_owned());
            };
            rest = &braced[end + 1..];
            &braced[..end]
        } else {
            let len = rest
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            let name = &rest[..len];
            rest = &rest[len..];
            name
        };
        let variable = variable(name)?;
        if !literal.is_empty() {
            parts.push(HashPart::Literal(std::mem::take(&mut literal).into()));
        }
        parts.push(variable);
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(HashPart::Literal(literal.into()));
    }
    if parts.is_empty() {
        return Err("is empty".to_owned());
    }
    Ok(parts)
}

fn variable(name: &str) -> Result<HashPart, String> {
    let suffix = |prefix: &str| {
        name.strip_prefix(prefix)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    };
    Ok(match name {
        "remote_addr" => HashPart::RemoteAddr,
        "request_uri" => HashPart::RequestUri,
        "uri" => HashPart::Uri,
        "host" => HashPart::Host,
        _ => {
            if let Some(header) = suffix("http_") {
                HashPart::Header(header.replace('_', "-").to_ascii_lowercase().into())
            } else if let Some(cookie) = suffix("cookie_") {
                HashPart::Cookie(cookie.into())
            } else if let Some(arg) = suffix("arg_") {
                HashPart::Arg(arg.into())
            } else if name.is_empty() {
                return Err("has a $ that starts no variable name".to_owned());
            } else {
                return Err(format!(
                    "uses the variable ${name}, which is not one of $remote_addr, \
                     $request_uri, $uri, $host, $http_<header>, $cookie_<name>, $arg_<name>"
                ));
            }
        }
    })
}

/// A cookie name: an HTTP token (RFC 6265 §4.1.1).
pub(crate) fn is_cookie_name(value: &str) -> bool {
    !value.is_empty()
        && value.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'(' | b')'
                        | b'<'
                        | b'>'
                        | b'@'
                        | b','
                        | b';'
                        | b':'
                        | b'\\'
                        | b'"'
                        | b'/'
                        | b'['
                        | b']'
                        | b'?'
                        | b'='
                        | b'{'
                        | b'}'
                )
        })
}

/// A cookie `Path` attribute value: absolute, and nothing that would end the attribute.
pub(crate) fn is_cookie_path(value: &str) -> bool {
    value.starts_with('/') && value.bytes().all(|b| b.is_ascii_graphic() && b != b';')
}

/// A DNS name to send as SNI and verify the upstream certificate against.
pub(crate) fn is_dns_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_like_ingress_nginx() {
        for v in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_bool(v), Some(true), "{v}");
        }
        for v in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_bool(v), Some(false), "{v}");
        }
        for v in ["yes", "on", "", " true", "tRuE"] {
            assert_eq!(parse_bool(v), None, "{v}");
        }
    }

    #[test]
    fn times_like_nginx() {
        let s = Duration::from_secs;
        for (v, want) in [
            ("30", s(30)),
            ("0", s(0)),
            ("500ms", Duration::from_millis(500)),
            ("30s", s(30)),
            ("2m", s(120)),
            ("1h", s(3600)),
            ("1d", s(86400)),
            ("1m30s", s(90)),
            ("1h 30m", s(5400)),
            ("1s500ms", Duration::from_millis(1500)),
            // A last number without a unit is seconds, as in nginx.
            ("1m30", s(90)),
        ] {
            assert_eq!(parse_duration(v), Some(want), "{v}");
        }
        for v in [
            "",
            " 30",
            "30 ",
            "-1",
            "+1",
            "1.5",
            "30x",
            "s",
            "30 s",
            "30 1m",
            "ms",
            "1M",
            "99999999999999999999",
        ] {
            assert_eq!(parse_duration(v), None, "{v}");
        }
    }

    #[test]
    fn times_with_fractions_where_asked() {
        let ms = Duration::from_millis;
        for (v, want) in [
            ("1.5s", ms(1500)),
            ("0.5", ms(500)),
            ("1h0.5m", ms(3_630_000)),
            ("2.25ms", Duration::from_micros(2250)),
            ("1m30s", ms(90_000)),
        ] {
            assert_eq!(parse_duration_with(v, true), Some(want), "{v}");
        }
        for v in ["1..5s", ".5s", "1.s", "1.5.5s", "-1.5s", "1.5x"] {
            assert_eq!(parse_duration_with(v, true), None, "{v}");
        }
        assert_eq!(parse_duration("1.5s"), None);
    }

    #[test]
    fn sizes_like_nginx() {
        for (v, want) in [
            ("0", 0),
            ("100", 100),
            ("8k", 8 << 10),
            ("8K", 8 << 10),
            ("1m", 1 << 20),
            ("1M", 1 << 20),
            ("1g", 1 << 30),
            ("1G", 1 << 30),
        ] {
            assert_eq!(parse_size(v), Some(want), "{v}");
        }
        for v in ["", "k", "-1", "1.5m", "1t", "1mb", " 1m", "99999999999g"] {
            assert_eq!(parse_size(v), None, "{v}");
        }
        assert_eq!(show_size(Some(1 << 20)), "1m");
        assert_eq!(show_size(Some(1000)), "1000");
        assert_eq!(show_size(None), "0, no limit");
    }

    #[test]
    fn hash_keys_mix_literals_and_variables() {
        assert_eq!(
            parse_hash_key("$request_uri"),
            Ok(vec![HashPart::RequestUri])
        );
        assert_eq!(
            parse_hash_key("u:${remote_addr}-$http_X_User_Id/$cookie_sid$arg_page;$uri$host"),
            Ok(vec![
                HashPart::Literal("u:".into()),
                HashPart::RemoteAddr,
                HashPart::Literal("-".into()),
                HashPart::Header("x-user-id".into()),
                HashPart::Literal("/".into()),
                HashPart::Cookie("sid".into()),
                HashPart::Arg("page".into()),
                HashPart::Literal(";".into()),
                HashPart::Uri,
                HashPart::Host,
            ])
        );
        for v in [
            "",
            "$",
            "${remote_addr",
            "$request",
            "$http_",
            "${http_a-b}",
            "$scheme",
        ] {
            assert!(parse_hash_key(v).is_err(), "{v}");
        }
    }

    #[test]
    fn cookie_names_and_dns_names() {
        assert!(is_cookie_name("INGRESSCOOKIE"));
        assert!(is_cookie_name("route_1.x-y"));
        for v in ["", "a b", "a=b", "a;b", "é", "a\"b"] {
            assert!(!is_cookie_name(v), "{v}");
        }
        assert!(is_dns_name("api.internal.svc"));
        for v in ["", "a..b", "-a.b", "a b", "*.x.com", "$host"] {
            assert!(!is_dns_name(v), "{v}");
        }
    }
}
