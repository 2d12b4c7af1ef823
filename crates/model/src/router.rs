//! The per-virtual-host path matcher: one hash map from path to the Exact and Prefix rules
//! for that path. A lookup probes the whole request path once (Exact, and the longest Prefix
//! candidate), then shorter prefixes, starting no deeper than the deepest rule. Cost depends
//! on the request's depth, not on how many rules or hosts the table holds. Keys up to 24 bytes
//! are stored inline, so a probe does not chase a pointer to compare them.

use compact_str::CompactString;
use hashbrown::HashMap;

use crate::path::{PathKind, PathRule, elements};

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
            PathKind::Exact => {
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
