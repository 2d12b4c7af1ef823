//! Cross-origin resource sharing (`enable-cors` and the `cors-*` annotations): which origins
//! a route answers for, and what it tells them. Origins are matched whole, scheme, host and
//! port, where ingress-nginx anchors its pattern at the end only (so it also lets in
//! `https://evil-app.example.com` for `https://app.example.com`): a deliberate difference.

use serde::Serialize;

/// One allowed origin: `https://app.example.com`, `http://localhost:3000`, or
/// `https://*.example.com`, whose `*` stands for exactly one DNS label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OriginPattern {
    /// `http` or `https`, lower case.
    pub scheme: Box<str>,
    /// The first label is any one label.
    pub wildcard: bool,
    /// Lower case, without the `*.` of a wildcard.
    pub host: Box<str>,
    pub port: Option<u16>,
}

impl OriginPattern {
    /// Reads one entry of `cors-allow-origin`.
    pub fn parse(text: &str) -> Result<OriginPattern, String> {
        let text = text.trim();
        let invalid = || format!("{text:?} is not an origin (scheme://host[:port], http or https)");
        let (scheme, rest) = text.split_once("://").ok_or_else(invalid)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(invalid());
        }
        let (wildcard, rest) = match rest.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                let port = port.parse::<u16>().map_err(|_| invalid())?;
                (host, Some(port))
            }
            None => (rest, None),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if host.is_empty() || !host.split('.').all(label_ok) {
            return Err(invalid());
        }
        Ok(OriginPattern {
            scheme: scheme.into(),
            wildcard,
            host: host.to_ascii_lowercase().into(),
            port,
        })
    }

    /// Whether a request's `Origin` is this one, whole and case-insensitively.
    pub fn matches(&self, origin: &str) -> bool {
        let Some(rest) =
            strip_prefix_ignore_case(origin, &self.scheme).and_then(|r| r.strip_prefix("://"))
        else {
            return false;
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => match port.parse::<u16>() {
                Ok(port) => (host, Some(port)),
                Err(_) => return false,
            },
            None => (rest, None),
        };
        if port != self.port {
            return false;
        }
        if !self.wildcard {
            return host.eq_ignore_ascii_case(&self.host);
        }
        // One label, then `.` and the pattern's host.
        match host.split_once('.') {
            Some((label, tail)) => {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && tail.eq_ignore_ascii_case(&self.host)
            }
            None => false,
        }
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Which origins a route answers for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowedOrigins {
    /// `*`: every response says `Access-Control-Allow-Origin: *`.
    Any,
    /// Only these: a match is answered with its own `Origin`.
    List(Vec<OriginPattern>),
}

/// A route's CORS policy. The values are checked lists, sent as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cors {
    pub origins: AllowedOrigins,
    /// `cors-allow-methods`.
    pub methods: Box<str>,
    /// `cors-allow-headers`.
    pub headers: Box<str>,
    /// `cors-expose-headers`, when set.
    pub expose: Option<Box<str>>,
    /// `cors-allow-credentials`.
    pub credentials: bool,
    /// `cors-max-age`, seconds.
    pub max_age: u64,
}

/// What a route's CORS policy says to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorsAnswer {
    /// Not a CORS request the route answers for: no CORS fields.
    None,
    /// `Access-Control-Allow-Origin: *`.
    Any,
    /// `Access-Control-Allow-Origin:` the request's own `Origin`.
    Origin,
}

impl Cors {
    /// The answer for a request with this `Origin` (if any).
    pub fn answer(&self, origin: Option<&str>) -> CorsAnswer {
        match (&self.origins, origin) {
            (AllowedOrigins::Any, _) => CorsAnswer::Any,
            (AllowedOrigins::List(list), Some(origin))
                if list.iter().any(|p| p.matches(origin)) =>
            {
                CorsAnswer::Origin
            }
            (AllowedOrigins::List(_), _) => CorsAnswer::None,
        }
    }

    /// Whether the answer depends on the request's `Origin`: caches must then key on it
    /// (`Vary: Origin`).
    pub fn varies(&self) -> bool {
        matches!(self.origins, AllowedOrigins::List(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str]) -> Cors {
        Cors {
            origins: AllowedOrigins::List(
                origins
                    .iter()
                    .map(|o| OriginPattern::parse(o).unwrap())
                    .collect(),
            ),
            methods: "GET".into(),
            headers: "X".into(),
            expose: None,
            credentials: true,
            max_age: 5,
        }
    }

    #[test]
    fn origins_match_whole_with_one_label_wildcards() {
        let c = cors(&[
            "https://app.example.com",
            "https://*.tenant.example",
            "http://localhost:3000",
        ]);
        let answer = |o: &str| c.answer(Some(o));
        assert_eq!(answer("https://app.example.com"), CorsAnswer::Origin);
        assert_eq!(answer("HTTPS://App.Example.COM"), CorsAnswer::Origin);
        assert_eq!(answer("https://evil-app.example.com"), CorsAnswer::None);
        assert_eq!(answer("https://app.example.com.evil"), CorsAnswer::None);
        assert_eq!(answer("http://app.example.com"), CorsAnswer::None);
        assert_eq!(answer("https://app.example.com:8443"), CorsAnswer::None);
        assert_eq!(answer("https://a-1.tenant.example"), CorsAnswer::Origin);
        assert_eq!(answer("https://a.b.tenant.example"), CorsAnswer::None);
        assert_eq!(answer("https://.tenant.example"), CorsAnswer::None);
        assert_eq!(answer("https://tenant.example"), CorsAnswer::None);
        assert_eq!(answer("http://localhost:3000"), CorsAnswer::Origin);
        assert_eq!(answer("http://localhost"), CorsAnswer::None);
        assert_eq!(answer("null"), CorsAnswer::None);
        assert_eq!(c.answer(None), CorsAnswer::None);
        assert!(c.varies());
        let any = Cors {
            origins: AllowedOrigins::Any,
            ..c
        };
        assert_eq!(any.answer(None), CorsAnswer::Any);
        assert!(!any.varies());
    }

    #[test]
    fn entries_that_are_not_origins_are_refused() {
        for bad in [
            "app.example.com",
            "ftp://a.example",
            "https://",
            "https://a..b",
            "https://a.example:port",
            "https://a.example/path",
            "https://*.",
            "https://a_b.example",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
