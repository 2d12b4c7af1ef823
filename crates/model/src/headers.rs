//! Header rules of a route: fields set on, or removed from, the request sent upstream and the
//! response sent to the client (`custom-headers`, `--add-headers`, `--proxy-set-headers`,
//! `--hide-headers`, and the directives of a snippet that map to them), and the rewriting of
//! the upstream's `Location`, `Refresh` and `Set-Cookie` (`proxy-redirect-*`,
//! `proxy-cookie-*`). Names are checked tokens and values templates over a small set of
//! variables, so nothing a rule holds can put CR, LF or NUL on the wire.

use serde::Serialize;

use crate::template::{Template, Var};

/// One change to a header block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderOp {
    /// Replace every field of this name with this value.
    Set { name: Box<str>, value: Template },
    /// Add a field, keeping those of the same name (nginx's `add_header`).
    Add { name: Box<str>, value: Template },
    /// Remove every field of this name.
    Remove { name: Box<str> },
}

impl HeaderOp {
    /// A `Set` after checking the name and the value (its variables among
    /// [`HeaderOp::VARIABLES`], its text free of control characters).
    pub fn set(name: &str, value: &str) -> Result<HeaderOp, String> {
        let name = header_name(name)?;
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(format!("the value of {name} holds a control character"));
        }
        let value = Template::parse(value.trim())?;
        if let Some(var) = value.vars().find(|v| !allowed(v)) {
            return Err(format!(
                "{var:?} is not one of the variables a header value may use ({})",
                HeaderOp::VARIABLES
            ));
        }
        Ok(HeaderOp::Set { name, value })
    }

    /// An `Add`, checked as [`HeaderOp::set`] checks.
    pub fn add(name: &str, value: &str) -> Result<HeaderOp, String> {
        match HeaderOp::set(name, value)? {
            HeaderOp::Set { name, value } => Ok(HeaderOp::Add { name, value }),
            other => Ok(other),
        }
    }

    pub fn remove(name: &str) -> Result<HeaderOp, String> {
        header_name(name).map(|name| HeaderOp::Remove { name })
    }

    pub fn name(&self) -> &str {
        match self {
            HeaderOp::Set { name, .. } | HeaderOp::Add { name, .. } | HeaderOp::Remove { name } => {
                name
            }
        }
    }

    /// For messages.
    pub const VARIABLES: &str =
        "$host, $scheme, $remote_addr, $request_uri, $request_id, $http_NAME";
}

fn allowed(var: &Var) -> bool {
    matches!(
        var,
        Var::Host | Var::Scheme | Var::RemoteAddr | Var::RequestUri | Var::RequestId | Var::Http(_)
    )
}

/// A field name: one or more token characters, lower-cased.
pub fn header_name(name: &str) -> Result<Box<str>, String> {
    let name = name.trim();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("{name:?} is not a header name"));
    }
    Ok(name.to_ascii_lowercase().into())
}

/// A change to the response's fields; `always: false` applies only to the statuses nginx's
/// `add_header` does (200, 201, 204, 206, 301, 302, 303, 304, 307, 308).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResponseOp {
    pub op: HeaderOp,
    pub always: bool,
}

impl ResponseOp {
    pub fn applies_to(&self, status: u16) -> bool {
        self.always
            || matches!(
                status,
                200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
            )
    }
}

/// A prefix of a value replaced by another (`proxy-redirect-from`/`-to`, `proxy-cookie-path`),
/// or a cookie domain replaced (`proxy-cookie-domain`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replace {
    pub from: Box<str>,
    pub to: Box<str>,
}

/// A route's header rules, in the order they apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderRules {
    /// On the request sent upstream, after Vestibule's own forwarding fields (so a rule may
    /// replace them).
    pub request: Vec<HeaderOp>,
    /// On every response the client gets.
    pub response: Vec<ResponseOp>,
    /// The upstream's `Location` and `Refresh` starting with `from`: that prefix becomes `to`.
    pub redirect: Option<Replace>,
    /// A `Set-Cookie` whose `Domain` is `from` (case-insensitive, a leading dot ignored) gets
    /// `to` instead.
    pub cookie_domain: Option<Replace>,
    /// A `Set-Cookie` whose `Path` starts with `from` has that prefix replaced by `to`.
    pub cookie_path: Option<Replace>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        *self == HeaderRules::default()
    }

    /// The rewritten `Location` or `Refresh` value, when the rule applies to it.
    pub fn redirect(&self, value: &str) -> Option<String> {
        let rule = self.redirect.as_ref()?;
        // `Refresh: 5; url=…` carries its URL after the delay.
        if let Some(at) = find_ignore_case(value, "url=") {
            let url = &value[at + 4..];
            let rest = url.strip_prefix(&*rule.from)?;
            return Some(format!("{}{}{rest}", &value[..at + 4], rule.to));
        }
        let rest = value.strip_prefix(&*rule.from)?;
        Some(format!("{}{rest}", rule.to))
    }

    /// The rewritten `Set-Cookie` value, when a cookie rule applies to it.
    pub fn cookie(&self, value: &str) -> Option<String> {
        if self.cookie_domain.is_none() && self.cookie_path.is_none() {
            return None;
        }
        let mut changed = false;
        let parts: Vec<String> = value
            .split(';')
            .enumerate()
            .map(|(i, part)| {
                let Some((key, val)) = part.split_once('=').filter(|_| i > 0) else {
                    return part.to_owned();
                };
                let key_trim = key.trim();
                let val_trim = val.trim();
                if let Some(rule) = &self.cookie_domain
                    && key_trim.eq_ignore_ascii_case("domain")
                    && val_trim
                        .trim_start_matches('.')
                        .eq_ignore_ascii_case(rule.from.trim_start_matches('.'))
                {
                    changed = true;
                    return format!("{key}={}", rule.to);
                }
                if let Some(rule) = &self.cookie_path
                    && key_trim.eq_ignore_ascii_case("path")
                    && let Some(rest) = val_trim.strip_prefix(&*rule.from)
                {
                    changed = true;
                    return format!("{key}={}{rest}", rule.to);
                }
                part.to_owned()
            })
            .collect();
        changed.then(|| parts.join(";"))
    }
}

fn find_ignore_case(text: &str, needle: &str) -> Option<usize> {
    text.as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_checked() {
        assert!(HeaderOp::set("X-Frame-Options", "DENY").is_ok());
        assert!(HeaderOp::set("X-Id", "$request_id via $host").is_ok());
        assert!(HeaderOp::set("Bad Name", "x").is_err());
        assert!(HeaderOp::set("X", "a\r\nInjected: 1").is_err());
        assert!(HeaderOp::set("X", "a\0").is_err());
        assert!(
            HeaderOp::set("X", "$cookie_session").is_err(),
            "not in the set"
        );
        assert!(HeaderOp::set("X", "$nope").is_err());
        assert_eq!(HeaderOp::remove("Server").unwrap().name(), "server");
        assert!(HeaderOp::remove("").is_err());
    }

    #[test]
    fn locations_and_cookies_are_rewritten_by_prefix() {
        let rules = HeaderRules {
            redirect: Some(Replace {
                from: "http://internal:8080/".into(),
                to: "https://shop.example/".into(),
            }),
            cookie_domain: Some(Replace {
                from: "internal.local".into(),
                to: "shop.example".into(),
            }),
            cookie_path: Some(Replace {
                from: "/app/".into(),
                to: "/".into(),
            }),
            ..HeaderRules::default()
        };
        assert_eq!(
            rules.redirect("http://internal:8080/login?x=1").as_deref(),
            Some("https://shop.example/login?x=1")
        );
        assert_eq!(
            rules.redirect("5; url=http://internal:8080/a").as_deref(),
            Some("5; url=https://shop.example/a")
        );
        assert_eq!(rules.redirect("https://elsewhere/"), None);
        assert_eq!(
            rules
                .cookie("id=1; Domain=.Internal.local; Path=/app/x; HttpOnly")
                .as_deref(),
            Some("id=1; Domain=shop.example; Path=/x; HttpOnly")
        );
        assert_eq!(rules.cookie("id=1; Domain=other; Path=/b"), None);
        assert_eq!(HeaderRules::default().cookie("id=1; Path=/app/"), None);
    }

    #[test]
    fn add_header_applies_to_success_and_redirects_unless_always() {
        let op = ResponseOp {
            op: HeaderOp::remove("x").unwrap(),
            always: false,
        };
        assert!(op.applies_to(200) && op.applies_to(304));
        assert!(!op.applies_to(404) && !op.applies_to(503));
        assert!(ResponseOp { always: true, ..op }.applies_to(503));
    }
}
