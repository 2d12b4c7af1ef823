//! The per-virtual-host path matcher: one hash map from path to the Exact and Prefix rules
//! for that path. A lookup probes the whole request path once (Exact, and the longest Prefix
//! candidate), then shorter prefixes, starting no deeper than the deepest rule. Cost depends
//! on the request's depth, not on how many rules or hosts the table holds. Keys up to 24 bytes
//! are stored inline, so a probe does not chase a pointer to compare them.
//!
//! A host in regex mode has a [`RegexPaths`] instead: every rule path compiled into one
//! regex set, so a request is matched against all of them in one pass.

use compact_str::CompactString;
use hashbrown::HashMap;

use crate::path::{PathKind, PathRule, elements, regex_source};

/// Index of a route in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct RouteId(pub u32);

/// The rules of one path string.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Slot {
    exact: Option<RouteId>,
    prefix: Option<RouteId>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PathRouter {
    /// Exact rules under their path; Prefix rules under their normalised path (`/`, `/aaa`,
    /// `/aaa/bbb`).
    paths: HashMap<CompactString, Slot>,
    has_exact: bool,
    has_prefix: bool,
    /// Elements in the deepest Prefix rule: longer request prefixes cannot match.
    max_depth: usize,
}

impl PathRouter {
    /// Adds a rule. When the same rule is already present, returns the route that holds it
    /// and changes nothing: the first one added wins, so callers add in precedence order.
    pub(crate) fn insert(&mut self, rule: &PathRule, route: RouteId) -> Result<(), RouteId> {
        let slot = self
            .paths
            .entry(CompactString::new(&rule.path))
            .or_default();
        let held = match rule.kind {
            // A regex rule never reaches a plain router: the table builder keeps them apart.
            PathKind::Exact | PathKind::Regex => {
                self.has_exact = true;
                &mut slot.exact
            }
            PathKind::Prefix => {
                self.has_prefix = true;
                self.max_depth = self.max_depth.max(elements(&rule.path).count());
                &mut slot.prefix
            }
        };
        match held {
            Some(existing) => Err(*existing),
            None => {
                *held = Some(route);
                Ok(())
            }
        }
    }

    /// The winning route for a normalised request path, if any rule matches.
    ///
    /// Precedence is the [`crate::Rank`] order: longest rule path first, Exact over Prefix at
    /// equal length. An Exact match always ranks highest, since no Prefix rule that matches a
    /// path is longer than the path itself; so Exact is tried first, then prefixes from the
    /// longest down.
    pub(crate) fn lookup(&self, path: &str) -> Option<RouteId> {
        // The whole path, probed once: its Exact rule, and its Prefix rule for the common case
        // where the path is its own longest prefix candidate.
        let probed_whole = self.has_exact || self.max_depth > 0;
        let whole = if probed_whole {
            self.paths.get(path).copied()
        } else {
            None
        };
        if let Some(id) = whole.and_then(|s| s.exact) {
            return Some(id);
        }
        if !self.has_prefix {
            return None;
        }
        // Prefix rules compare elements, so empty elements (`//`) do not count; such paths
        // are rare and take the slower road through a copy.
        let merged;
        let candidates = if path.contains("//") {
            merged = format!("/{}", elements(path).collect::<Vec<_>>().join("/"));
            merged.as_str()
        } else {
            path
        };
        let candidates = candidates.strip_suffix('/').unwrap_or(candidates);
        let mut end = end_of_element(candidates, self.max_depth);
        loop {
            let candidate = if end == 0 { "/" } else { &candidates[..end] };
            // Equal length means `candidate` is `path` itself (it is `path` with characters
            // removed, never added).
            let slot = if probed_whole && candidate.len() == path.len() {
                whole
            } else {
                self.paths.get(candidate).copied()
            };
            if let Some(id) = slot.and_then(|s| s.prefix) {
                return Some(id);
            }
            if end == 0 {
                return None;
            }
            end = candidates.as_bytes()[..end]
                .iter()
                .rposition(|&b| b == b'/')
                .unwrap_or(0);
        }
    }
}

/// The rules of a host in regex mode, tried longest rule path first (older first at equal
/// length), the first that matches winning, as nginx tries its regex locations in order.
#[derive(Debug, Clone)]
pub(crate) struct RegexPaths {
    matcher: Matcher,
    /// Route of each pattern, in the order they are tried.
    routes: Vec<RouteId>,
    /// The rule paths, for equality and display.
    paths: Vec<Box<str>>,
}

/// How the patterns are tried: together in one set, or, only if they are too large for one
/// set, each in turn (the same answer, more slowly).
#[derive(Debug, Clone)]
enum Matcher {
    Set(regex::RegexSet),
    Each(Vec<regex::Regex>),
}

impl PartialEq for RegexPaths {
    fn eq(&self, other: &Self) -> bool {
        self.paths == other.paths && self.routes == other.routes
    }
}

impl Eq for RegexPaths {}

impl RegexPaths {
    /// Compiles `rules` (rule path, route, in the order they were added). Plain rules among
    /// them are matched literally, never widened: Exact as the whole path, Prefix by elements.
    pub(crate) fn new(rules: Vec<(PathRule, RouteId)>) -> RegexPaths {
        Self::build(rules, true)
    }

    fn build(mut rules: Vec<(PathRule, RouteId)>, as_set: bool) -> RegexPaths {
        // Stable: at equal length the older rule stays first.
        rules.sort_by_key(|(rule, _)| std::cmp::Reverse(rule.path.len()));
        let sources: Vec<String> = rules
            .iter()
            .map(|(rule, _)| match rule.kind {
                PathKind::Regex => format!("(?i:{})", regex_source(&rule.path)),
                PathKind::Exact => format!("^{}$", regex::escape(&rule.path)),
                PathKind::Prefix if &*rule.path == "/" => "^/".to_owned(),
                PathKind::Prefix => format!("^{}(/|$)", regex::escape(&rule.path)),
            })
            .collect();
        let set = as_set
            .then(|| {
                regex::RegexSetBuilder::new(&sources)
                    .size_limit(256 << 20)
                    .dfa_size_limit(64 << 20)
                    .build()
                    .ok()
            })
            .flatten();
        let matcher = match set {
            Some(set) => Matcher::Set(set),
            // Patterns were validated when their rules were made; one that still fails
            // matches nothing.
            None => Matcher::Each(
                sources
                    .iter()
                    .map(|s| regex::Regex::new(s).unwrap_or_else(|_| never()))
                    .collect(),
            ),
        };
        RegexPaths {
            matcher,
            routes: rules.iter().map(|(_, id)| *id).collect(),
            paths: rules.into_iter().map(|(rule, _)| rule.path).collect(),
        }
    }

    /// Every rule's route in trying order, each with whether it matches the normalised
    /// request path: for explaining, not for requests.
    pub(crate) fn each_match(&self, path: &str) -> Vec<(RouteId, bool)> {
        let hits: Vec<bool> = match &self.matcher {
            Matcher::Set(set) => {
                let matched = set.matches(path);
                (0..self.routes.len()).map(|i| matched.matched(i)).collect()
            }
            Matcher::Each(each) => each.iter().map(|r| r.is_match(path)).collect(),
        };
        self.routes.iter().copied().zip(hits).collect()
    }

    /// The first rule, in trying order, that matches the normalised request path.
    pub(crate) fn lookup(&self, path: &str) -> Option<RouteId> {
        let first = match &self.matcher {
            Matcher::Set(set) => set.matches(path).iter().next(),
            Matcher::Each(each) => each.iter().position(|r| r.is_match(path)),
        };
        first.map(|at| self.routes[at])
    }
}

fn never() -> regex::Regex {
    // An empty class matches nothing; it always compiles.
    regex::Regex::new("[^\\s\\S]").unwrap_or_else(|_| unreachable!("a fixed pattern"))
}

/// The path matcher of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Paths {
    Plain(PathRouter),
    /// Boxed so that plain hosts' map entries stay as small as before: every lookup of every
    /// host touches them.
    Regex(Box<RegexPaths>),
}

impl Paths {
    #[inline]
    pub(crate) fn lookup(&self, path: &str) -> Option<RouteId> {
        match self {
            Paths::Plain(router) => router.lookup(path),
            Paths::Regex(regex) => regex.lookup(path),
        }
    }
}

/// Byte offset where the `depth`-th element of `path` ends (the whole path if it has fewer).
/// `path` starts with `/` (or is empty) and has no empty elements.
fn end_of_element(path: &str, depth: usize) -> usize {
    let bytes = path.as_bytes();
    let mut seen = 0;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        if b == b'/' {
            seen += 1;
            if seen == depth {
                return i;
            }
        }
    }
    if depth == 0 { 0 } else { bytes.len() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex_paths(rules: &[(PathKind, &str)]) -> RegexPaths {
        regex_paths_as(rules, true)
    }

    fn regex_paths_as(rules: &[(PathKind, &str)], as_set: bool) -> RegexPaths {
        RegexPaths::build(
            rules
                .iter()
                .enumerate()
                .map(|(i, (kind, path))| {
                    let rule = match kind {
                        PathKind::Regex => PathRule::regex(path),
                        kind => PathRule::new(*kind, path),
                    };
                    (
                        rule.unwrap_or_else(|e| panic!("{path}: {e}")),
                        RouteId(i as u32),
                    )
                })
                .collect(),
            as_set,
        )
    }

    #[test]
    fn regex_rules_are_tried_longest_first_and_the_first_match_wins() {
        use PathKind::Regex;
        let rules = [
            (Regex, "/"),
            (Regex, "/api"),
            (Regex, "/api/v[0-9]+"),
            (Regex, "/something(/|$)(.*)"),
            (Regex, "/b"),
        ];
        let paths = regex_paths(&rules);
        assert!(matches!(paths.matcher, Matcher::Set(_)));
        let cases = [
            ("/api/v2/x", Some(2)),
            ("/API/V2", Some(2)),
            ("/apix", Some(1)),
            ("/API", Some(1)),
            ("/something/new", Some(3)),
            ("/somethingelse", Some(0)),
            ("/b/c", Some(4)),
            ("/c", Some(0)),
        ];
        for (path, want) in cases {
            assert_eq!(paths.lookup(path), want.map(RouteId), "{path}");
        }
        let fallback = regex_paths_as(&rules, false);
        assert!(matches!(fallback.matcher, Matcher::Each(_)));
        for (path, want) in cases {
            assert_eq!(
                fallback.lookup(path),
                want.map(RouteId),
                "{path} without the set"
            );
        }
    }

    #[test]
    fn at_equal_length_the_older_rule_wins_and_plain_rules_are_not_widened() {
        let paths = regex_paths(&[
            (PathKind::Regex, "/a.c"),
            (PathKind::Regex, "/abc"),
            (PathKind::Exact, "/x.y"),
            (PathKind::Prefix, "/p"),
        ]);
        assert_eq!(paths.lookup("/abc"), Some(RouteId(0)));
        assert_eq!(paths.lookup("/x.y"), Some(RouteId(2)));
        assert_eq!(paths.lookup("/xzy"), None, "an Exact path's dot is a dot");
        assert_eq!(paths.lookup("/X.Y"), None, "an Exact path keeps its case");
        assert_eq!(paths.lookup("/p/q"), Some(RouteId(3)));
        assert_eq!(paths.lookup("/pq"), None);
    }

    #[test]
    fn element_ends() {
        assert_eq!(end_of_element("/a/bb/c", 0), 0);
        assert_eq!(end_of_element("/a/bb/c", 1), 2);
        assert_eq!(end_of_element("/a/bb/c", 2), 5);
        assert_eq!(end_of_element("/a/bb/c", 3), 7);
        assert_eq!(end_of_element("/a/bb/c", 9), 7);
        assert_eq!(end_of_element("", 2), 0);
    }
}
