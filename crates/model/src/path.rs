//! URL paths: the normal form requests are matched (and forwarded) in, and rule paths.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

use crate::precedence::Rank;

/// How a rule path is compared with a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PathKind {
    /// The whole request path equals the rule path, case-sensitively.
    Exact,
    /// The rule path's `/`-separated elements are a prefix of the request path's elements.
    /// `ImplementationSpecific` compiles to this kind.
    Prefix,
    /// The rule path is a case-insensitive regular expression anchored at the start of the
    /// request path: every path of a host in ingress-nginx's regex mode (`use-regex`,
    /// `rewrite-target`), whatever its declared type.
    Regex,
}

/// Why a request path or a rule path cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path has a '%' that is not followed by two hex digits")]
    BadPercentEncoding,
    #[error("path must not contain {0:?}")]
    Forbidden(&'static str),
    #[error(
        "path is not a regular expression Vestibule can match (Rust regex syntax, without look-around or back-references): {0}"
    )]
    Regex(String),
    #[error(
        "path climbs above the root, or reads as different paths to different backends, once \
         its encoded slashes are read as slashes"
    )]
    AboveRoot,
}

/// One rule's path, in normal form, with its match kind.
///
/// A Prefix rule's path is stored without empty elements or a trailing slash (`/aaa/bbb/` and
/// `/aaa/bbb` match the same requests, so they are the same rule); `/` stays `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PathRule {
    pub kind: PathKind,
    pub path: Box<str>,
}

impl PathRule {
    /// Validates a rule path as the Kubernetes API server does for `Exact` and `Prefix`, and
    /// brings it to the form requests are compared in.
    pub fn new(kind: PathKind, path: &str) -> Result<PathRule, PathError> {
        if kind == PathKind::Regex {
            return PathRule::regex(path);
        }
        if !path.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        // The API server refuses these in Exact and Prefix paths; refusing them here keeps the
        // manifest source as strict as a cluster.
        for seq in ["//", "/./", "/../", "%2f", "%2F"] {
            if path.contains(seq) {
                return Err(PathError::Forbidden(seq));
            }
        }
        for suffix in ["/..", "/."] {
            if path.ends_with(suffix) {
                return Err(PathError::Forbidden(suffix));
            }
        }
        let decoded = decode_unreserved(path)?;
        let path: Box<str> = match kind {
            PathKind::Exact | PathKind::Regex => decoded.into(),
            PathKind::Prefix => {
                let elements: Vec<&str> = elements(&decoded).collect();
                format!("/{}", elements.join("/")).into()
            }
        };
        Ok(PathRule { kind, path })
    }

    /// An `ImplementationSpecific` path, matched as a Prefix. The API server only checks that
    /// such a path is absolute, so instead of refusing odd sequences it is normalised the way
    /// request paths are (dot segments removed, unreserved escapes decoded).
    pub fn implementation_specific(path: &str) -> Result<PathRule, PathError> {
        let normal = normalize_request_path(path)?;
        let elements: Vec<&str> = elements(&normal).collect();
        Ok(PathRule {
            kind: PathKind::Prefix,
            path: format!("/{}", elements.join("/")).into(),
        })
    }

    /// A path of a host in regex mode: kept as written, matched as `(?i)^<path>`.
    pub fn regex(path: &str) -> Result<PathRule, PathError> {
        if !path.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        regex_of(path).map_err(|e| PathError::Regex(regex_error(&e)))?;
        Ok(PathRule {
            kind: PathKind::Regex,
            path: path.into(),
        })
    }

    pub fn rank(&self) -> Rank {
        Rank::new(self.kind, self.path.len())
    }

    /// True when a normalised request path matches this rule. The router answers the same
    /// question for all rules at once; this one-rule form is the specification it is tested
    /// against.
    pub fn matches(&self, request_path: &str) -> bool {
        match self.kind {
            PathKind::Exact => *self.path == *request_path,
            PathKind::Prefix => {
                let mut request = elements(request_path);
                elements(&self.path).all(|rule| request.next() == Some(rule))
            }
            PathKind::Regex => regex_of(&self.path).is_ok_and(|r| r.is_match(request_path)),
        }
    }
}

impl fmt::Display for PathRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}", self.kind, self.path)
    }
}

/// How a regex-mode rule path matches: as nginx's `location ~* "^<path>"`.
pub(crate) fn regex_of(path: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&regex_source(path))
        .case_insensitive(true)
        .build()
}

/// A regex error on one line: the parser's own spans the pattern over several, with a caret
/// line, which a diagnostic or an Event cannot show.
pub(crate) fn regex_error(error: &regex::Error) -> String {
    let text = error.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    last.trim().trim_start_matches("error: ").to_owned()
}

/// The regex source of a regex-mode rule path; case is set by the builder.
pub(crate) fn regex_source(path: &str) -> String {
    format!("^{path}")
}

/// The non-empty `/`-separated elements of a path.
pub(crate) fn elements(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|e| !e.is_empty())
}

/// Brings a request path to the form it is matched and forwarded in: percent-encoded
/// unreserved characters decoded (`%7E` → `~`, `%2E` → `.`), then dot segments removed
/// (`/a/./b`, `/a/x/../b` → `/a/b`). Reserved escapes such as `%2F` stay encoded, so an
/// encoded slash never becomes a path separator. Borrows when nothing changes.
///
/// Decoding comes first so that `%2E%2E` cannot smuggle a `..` past dot-segment removal.
pub fn normalize_request_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(raw)?;
    if !has_dot_segment(&decoded) {
        return Ok(decoded);
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// The path a request is routed on, from its [normalised](normalize_request_path) path.
/// Most paths route as they are. Two kinds route as the backends that read them loosely
/// would: empty segments are merged (`//x` routes as `/x`, as nginx's `merge_slashes` and
/// Go's `path.Clean` read it, so an Exact `/x` cannot be passed by with `//x`), and an encoded
/// slash or backslash (`%2F`, `%5C`) or a backslash is made a `/` before dot segments are
/// removed, so `/a/..%2Fb` routes as `/b`. [`PathError::AboveRoot`] when that reading climbs
/// above the root (`/a/..%2F..%2Fetc`), as nginx refuses it, or when backends would read it
/// differently. The path sent upstream keeps its escapes and slashes either way.
pub fn routing_path(normalised: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = normalised.as_bytes();
    let encoded = |i: usize| {
        bytes[i] == b'%'
            && bytes.get(i + 1) == Some(&b'2')
            && matches!(bytes.get(i + 2), Some(b'f' | b'F'))
            || bytes[i] == b'%'
                && bytes.get(i + 1) == Some(&b'5')
                && matches!(bytes.get(i + 2), Some(b'c' | b'C'))
    };
    // Most paths have none of these; one pass over them decides.
    let escapes = bytes.iter().any(|&b| b == b'%' || b == b'\\')
        && (0..bytes.len()).any(|i| bytes[i] == b'\\' || encoded(i));
    if !escapes && !normalised.contains("//") {
        return Ok(Cow::Borrowed(normalised));
    }
    let mut read = String::with_capacity(normalised.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            read.push('/');
            i += 1;
        } else if encoded(i) {
            read.push('/');
            i += 3;
        } else {
            let end = (i + 1..bytes.len())
                .find(|&j| bytes[j] == b'\\' || bytes[j] == b'%')
                .unwrap_or(bytes.len());
            read.push_str(&normalised[i..end]);
            i = end;
        }
    }
    // Backends resolve `..` either over empty segments, as RFC 3986 does, or after merging
    // slashes, as nginx and Go's `path.Clean` do. Both readings must stay under the root and
    // name the same elements, or which backend reads what cannot be known: refused.
    let merged = resolve(&read, true).ok_or(PathError::AboveRoot)?;
    let kept = resolve(&read, false).ok_or(PathError::AboveRoot)?;
    if !merged
        .iter()
        .copied()
        .eq(kept.iter().copied().filter(|s| !s.is_empty()))
    {
        return Err(PathError::AboveRoot);
    }
    let mut routed = String::with_capacity(read.len());
    for segment in &merged {
        routed.push('/');
        routed.push_str(segment);
    }
    let directory = read.ends_with('/') || read.ends_with("/.") || read.ends_with("/..");
    if routed.is_empty() || directory {
        routed.push('/');
    }
    Ok(Cow::Owned(routed))
}

/// The segments of an absolute path once dot segments are resolved, empty ones dropped first
/// when `merge`; `None` when a `..` climbs above the root.
fn resolve(path: &str, merge: bool) -> Option<Vec<&str>> {
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/').skip(1) {
        match segment {
            ".." => {
                out.pop()?;
            }
            "." => {}
            "" if merge => {}
            segment => out.push(segment),
        }
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn decode_unreserved(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    let Some(first) = bytes.iter().position(|&b| b == b'%') else {
        return Ok(Cow::Borrowed(raw));
    };
    let mut out = String::with_capacity(raw.len());
    out.push_str(&raw[..first]);
    let mut i = first;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            // Copy the run up to the next escape in one go; it is valid UTF-8 because `raw` is
            // and '%' is ASCII.
            let end = bytes[i..]
                .iter()
                .position(|&b| b == b'%')
                .map_or(bytes.len(), |p| i + p);
            out.push_str(&raw[i..end]);
            i = end;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadPercentEncoding);
        };
        let decoded = hi << 4 | lo;
        if is_unreserved(decoded) {
            out.push(char::from(decoded));
        } else {
            out.push_str(&raw[i..i + 3]);
        }
        i += 3;
    }
    Ok(Cow::Owned(out))
}

fn has_dot_segment(path: &str) -> bool {
    // Every dot segment starts with "/."; most paths have none, and this scan is cheap.
    path.contains("/.") && path.split('/').any(|s| s == "." || s == "..")
}

/// RFC 3986 section 5.2.4 on an absolute path; `..` above the root stays at the root.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut segments = path[1..].split('/').peekable();
    let mut trailing_slash = false;
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." => trailing_slash = last,
            ".." => {
                out.pop();
                trailing_slash = last;
            }
            _ => {
                out.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(path.len());
    for segment in &out {
        result.push('/');
        result.push_str(segment);
    }
    if trailing_slash || result.is_empty() {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_slashes_route_as_a_decoding_backend_reads_them() {
        let cases = [
            ("/a/b", Ok("/a/b")),
            ("/a%2Fb", Ok("/a/b")),
            ("/a/..%2Fb", Ok("/b")),
            ("/a/..%2fsecret/x", Ok("/secret/x")),
            ("/a/..%5Cb", Ok("/b")),
            ("/a\\..\\b", Ok("/b")),
            ("/group%2Fproject/issues", Ok("/group/project/issues")),
            ("/a/..%2F..%2Fetc/passwd", Err(PathError::AboveRoot)),
            // `/public//../admin`: `/public/admin` to RFC 3986, `/admin` to Go's Clean.
            ("/public/%2F..%2Fadmin", Err(PathError::AboveRoot)),
            ("/a\\\\..\\\\admin", Err(PathError::AboveRoot)),
            ("/a%2F%2Fb", Ok("/a/b")),
            ("//x", Ok("/x")),
            ("/a//b/", Ok("/a/b/")),
            ("/..%2Fetc", Err(PathError::AboveRoot)),
            ("/%5C..%5C..%5Cwin.ini", Err(PathError::AboveRoot)),
            ("/a%252Fb", Ok("/a%252Fb")),
        ];
        for (path, expected) in cases {
            let got = routing_path(path).map(|p| p.into_owned());
            assert_eq!(got, expected.map(str::to_owned), "{path}");
        }
        assert!(matches!(routing_path("/plain/path"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn request_paths_are_normalised() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/x/../b", "/a/b"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/..", "/"),
            ("/../../a", "/a"),
            ("/a/.", "/a/"),
            ("/.", "/"),
            ("/a//b", "/a//b"),
            ("/a/.../b", "/a/.../b"),
            ("/a/..b/c", "/a/..b/c"),
            ("/%7Euser", "/~user"),
            ("/caf%65", "/cafe"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a%2fb", "/a%2fb"),
            ("/a%20b", "/a%20b"),
            ("/%2E%2E/admin", "/admin"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E/b", "/a/b"),
            ("/%41%42", "/AB"),
            ("/%25", "/%25"),
            ("/é", "/é"),
        ];
        for (raw, want) in cases {
            assert_eq!(
                normalize_request_path(raw).as_deref(),
                Ok(want),
                "normalize({raw:?})"
            );
        }
    }

    #[test]
    fn bad_request_paths_are_refused() {
        assert_eq!(normalize_request_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_request_path(""), Err(PathError::NotAbsolute));
        for raw in ["/%", "/%4", "/%zz", "/a%2", "/%g0"] {
            assert_eq!(
                normalize_request_path(raw),
                Err(PathError::BadPercentEncoding),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn unchanged_paths_are_borrowed() {
        assert!(matches!(
            normalize_request_path("/a/b/c"),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn rule_paths_are_validated_like_the_api_server() {
        assert_eq!(
            PathRule::new(PathKind::Prefix, "foo"),
            Err(PathError::NotAbsolute)
        );
        for (path, seq) in [
            ("/a//b", "//"),
            ("/a/./b", "/./"),
            ("/a/../b", "/../"),
            ("/a%2Fb", "%2F"),
            ("/a%2fb", "%2f"),
            ("/a/..", "/.."),
            ("/a/.", "/."),
        ] {
            assert_eq!(
                PathRule::new(PathKind::Exact, path),
                Err(PathError::Forbidden(seq)),
                "{path}"
            );
        }
    }

    #[test]
    fn prefix_rules_drop_the_trailing_slash_exact_rules_keep_it() {
        let prefix = PathRule::new(PathKind::Prefix, "/foo/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&*prefix.path, "/foo");
        let root = PathRule::new(PathKind::Prefix, "/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&*root.path, "/");
        let exact = PathRule::new(PathKind::Exact, "/foo/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&*exact.path, "/foo/");
    }

    #[test]
    fn implementation_specific_is_a_normalised_prefix() {
        let cases = [
            ("/", "/"),
            ("/foo/", "/foo"),
            ("/a//b", "/a/b"),
            ("/a/./b/../c", "/a/c"),
            ("/%7Eu", "/~u"),
        ];
        for (path, want) in cases {
            let rule = PathRule::implementation_specific(path).unwrap();
            assert_eq!((rule.kind, &*rule.path), (PathKind::Prefix, want), "{path}");
        }
        assert_eq!(
            PathRule::implementation_specific("foo"),
            Err(PathError::NotAbsolute)
        );
    }

    fn rule(kind: PathKind, path: &str) -> PathRule {
        PathRule::new(kind, path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The table of "Examples" from the Ingress v1 documentation, plus the doc's own cases.
    #[test]
    fn single_rule_matching_table() {
        use PathKind::{Exact, Prefix};
        let cases: &[(PathKind, &str, &str, bool)] = &[
            (Prefix, "/", "/", true),
            (Prefix, "/", "/anything/at/all", true),
            (Exact, "/foo", "/foo", true),
            (Exact, "/foo", "/bar", false),
            (Exact, "/foo", "/foo/", false),
            (Exact, "/foo/", "/foo", false),
            (Exact, "/foo", "/Foo", false),
            (Prefix, "/foo", "/foo", true),
            (Prefix, "/foo", "/foo/", true),
            (Prefix, "/foo/", "/foo", true),
            (Prefix, "/foo/", "/foo/", true),
            (Prefix, "/aaa/bb", "/aaa/bbb", false),
            (Prefix, "/aaa/bbb", "/aaa/bbb", true),
            (Prefix, "/aaa/bbb/", "/aaa/bbb", true),
            (Prefix, "/aaa/bbb", "/aaa/bbb/", true),
            (Prefix, "/aaa/bbb", "/aaa/bbb/ccc", true),
            (Prefix, "/aaa/bbb", "/aaa/bbbxyz", false),
            (Prefix, "/aaa/bbb", "/aaa/bb", false),
            (Prefix, "/aaa/bbb", "/AAA/bbb", false),
            (Prefix, "/aaa", "/aaa%2Fbbb", false),
        ];
        for &(kind, path, request, want) in cases {
            assert_eq!(
                rule(kind, path).matches(request),
                want,
                "{kind:?} {path} vs {request}"
            );
        }
    }
}
