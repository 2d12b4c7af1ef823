//! Path precedence as a total order, so "which rule wins" is one comparison and not a chain of ifs.

use crate::path::PathKind;

/// How strongly a rule matched a request path. Larger wins.
///
/// Ingress v1: the longest matching rule path wins; at equal length `Exact` beats `Prefix`.
/// The length is that of the normalised rule path (a Prefix rule's trailing slash does not
/// count, because it does not change what the rule matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    // Field order is the comparison order.
    len: usize,
    kind: KindRank,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum KindRank {
    Regex,
    Prefix,
    Exact,
}

impl Rank {
    pub fn new(kind: PathKind, normalized_len: usize) -> Self {
        let kind = match kind {
            PathKind::Exact => KindRank::Exact,
            PathKind::Prefix => KindRank::Prefix,
            PathKind::Regex => KindRank::Regex,
        };
        Rank {
            len: normalized_len,
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longer_path_beats_shorter_whatever_the_kind() {
        assert!(Rank::new(PathKind::Prefix, 8) > Rank::new(PathKind::Exact, 4));
        assert!(Rank::new(PathKind::Exact, 8) > Rank::new(PathKind::Prefix, 4));
    }

    #[test]
    fn exact_beats_prefix_of_equal_length() {
        assert!(Rank::new(PathKind::Exact, 4) > Rank::new(PathKind::Prefix, 4));
        assert_eq!(
            [
                Rank::new(PathKind::Exact, 4),
                Rank::new(PathKind::Prefix, 4),
                Rank::new(PathKind::Prefix, 1)
            ]
            .into_iter()
            .max(),
            Some(Rank::new(PathKind::Exact, 4))
        );
    }
}
