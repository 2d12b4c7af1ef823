//! What a route or a host does besides proxying: the redirects it answers itself
//! (`permanent-redirect`, `temporal-redirect`, `app-root`, `from-to-www-redirect`), the path
//! rewrite of `rewrite-target`, and the refusal of a route whose Ingress asks for protection
//! that cannot be given. Plain data and the pure functions that apply it; the proxy calls them.

use std::fmt;

use serde::{Serialize, Serializer};

/// A route that answers every request with a redirect to a fixed URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// 300 to 308.
    pub code: u16,
    /// Sent verbatim: no path or query of the request is added.
    pub location: Box<str>,
}

/// A route that answers every request itself with a status and a short text (a snippet's
/// `return 403;` or `return 200 "ok";`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fixed {
    pub code: u16,
    pub body: Box<str>,
}

/// A route that must not be served: its Ingress asks for something (authentication, an
/// allow list, a rate limit…) that Vestibule cannot honour, so its requests get 503 rather
/// than go through unprotected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The annotation keys that closed it, for the log.
    pub keys: Box<str>,
}

/// What a host answers before any route is looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServerRules {
    /// A request for exactly `/` is redirected (302) here (`app-root`).
    pub app_root: Option<Box<str>>,
    /// Every request is redirected (308) to the same path on this host
    /// (`from-to-www-redirect`: the `www.` name and the bare one point at each other).
    pub redirect_host: Option<Box<str>>,
}

impl ServerRules {
    pub fn is_empty(&self) -> bool {
        self.app_root.is_none() && self.redirect_host.is_none()
    }
}

/// Why a rewrite cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// Also a target with a control character (CR, LF, NUL...), which no request line can
    /// carry.
    #[error("the rewrite target must be a path starting with '/', without control characters")]
    NotAPath,
    #[error("the rewrite target may use $1 to $9 only; {0:?} is not one")]
    Variable(String),
    #[error("the path is not a valid regular expression: {0}")]
    Pattern(String),
}

/// `rewrite-target`: the whole request path is replaced by a target in which `$1`…`$9` stand
/// for the groups of the route's path, read as a case-insensitive regular expression.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pattern: regex::Regex,
    target: Box<str>,
    pieces: Box<[Piece]>,
    /// Sent upstream as `X-Forwarded-Prefix` on requests whose path was rewritten.
    pub prefix: Option<Box<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Box<str>),
    Group(usize),
}

impl Rewrite {
    /// Compiles the rewrite of `path` (the rule path, a regular expression) to `target`.
    pub fn new(path: &str, target: &str, prefix: Option<&str>) -> Result<Rewrite, RewriteError> {
        if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
            return Err(RewriteError::NotAPath);
        }
        let pattern = regex::RegexBuilder::new(path)
            .case_insensitive(true)
            .build()
            .map_err(|e| RewriteError::Pattern(crate::path::regex_error(&e)))?;
        Ok(Rewrite {
            pattern,
            pieces: pieces(target)?,
            target: target.into(),
            prefix: prefix.map(Into::into),
        })
    }

    /// The request target (path and query) after the rewrite, or `None` when the path does
    /// not match the pattern and stays as it is. The query is kept: after the target's own,
    /// if it has one.
    pub fn apply(&self, path: &str, query: Option<&str>) -> Option<String> {
        let captures = self.pattern.captures(path)?;
        let mut out = String::with_capacity(self.target.len() + path.len());
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Group(i) => out.push_str(captures.get(*i).map_or("", |m| m.as_str())),
            }
        }
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(query);
        }
        Some(out)
    }
}

fn pieces(target: &str) -> Result<Box<[Piece]>, RewriteError> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = target.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c != '$' {
            text.push(c);
            continue;
        }
        match chars.peek() {
            Some(&(_, d @ '1'..='9')) => {
                chars.next();
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text).into()));
                }
                pieces.push(Piece::Group(usize::from(d as u8 - b'0')));
            }
            _ => {
                let rest: String = target[at..].chars().take(12).collect();
                return Err(RewriteError::Variable(rest));
            }
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text.into()));
    }
    Ok(pieces.into())
}

impl PartialEq for Rewrite {
    fn eq(&self, other: &Self) -> bool {
        self.pattern.as_str() == other.pattern.as_str()
            && self.target == other.target
            && self.prefix == other.prefix
    }
}

impl Eq for Rewrite {}

impl fmt::Display for Rewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.pattern.as_str(), self.target)
    }
}

impl Serialize for Rewrite {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            pattern: &'a str,
            target: &'a str,
            prefix: Option<&'a str>,
        }
        View {
            pattern: self.pattern.as_str(),
            target: &self.target,
            prefix: self.prefix.as_deref(),
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(path: &str, target: &str) -> Rewrite {
        Rewrite::new(path, target, None).unwrap_or_else(|e| panic!("{path} -> {target}: {e}"))
    }

    #[test]
    fn the_documented_example_rewrites_as_ingress_nginx_does() {
        let r = rewrite("/something(/|$)(.*)", "/$2");
        let cases = [
            ("/something", None, "/"),
            ("/something/", None, "/"),
            ("/something/new", Some("x=1"), "/new?x=1"),
            ("/SOMETHING/new", None, "/new"),
        ];
        for (path, query, want) in cases {
            assert_eq!(r.apply(path, query).as_deref(), Some(want), "{path}");
        }
        assert_eq!(r.apply("/other", None), None);
    }

    #[test]
    fn the_whole_path_is_replaced_and_missing_groups_are_empty() {
        // The trap users meet: a plain prefix with target `/` sends everything below to `/`.
        assert_eq!(
            rewrite("/app", "/").apply("/app/x/y", None).as_deref(),
            Some("/")
        );
        let r = rewrite("/a(/b)?(/c)?", "/x$2$1");
        assert_eq!(r.apply("/a/c", None).as_deref(), Some("/x/c"));
        assert_eq!(r.apply("/a", None).as_deref(), Some("/x"));
    }

    #[test]
    fn the_query_follows_the_targets_own() {
        let r = rewrite("/old/(.*)", "/new?from=old&p=$1");
        assert_eq!(
            r.apply("/old/z", Some("q=1")).as_deref(),
            Some("/new?from=old&p=z&q=1")
        );
        assert_eq!(
            r.apply("/old/z", Some("")).as_deref(),
            Some("/new?from=old&p=z")
        );
    }

    #[test]
    fn targets_and_patterns_that_cannot_be_honoured_are_refused() {
        assert_eq!(
            Rewrite::new("/a", "new", None).err(),
            Some(RewriteError::NotAPath)
        );
        for target in ["/a\r\nX-Injected: 1", "/a\0", "/a\tb"] {
            assert_eq!(
                Rewrite::new("/a", target, None).err(),
                Some(RewriteError::NotAPath),
                "{target:?}"
            );
        }
        assert!(matches!(
            Rewrite::new("/a", "/$host/x", None),
            Err(RewriteError::Variable(v)) if v.starts_with("$host")
        ));
        assert!(matches!(
            Rewrite::new("/a", "/$0", None),
            Err(RewriteError::Variable(_))
        ));
        // Look-around is PCRE-only: refused, never approximated.
        assert!(matches!(
            Rewrite::new("/a(?!b)", "/", None),
            Err(RewriteError::Pattern(_))
        ));
    }
}
