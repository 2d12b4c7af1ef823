//! Configuration, from where it is kept to what the proxy serves: sources (manifest files,
//! the Kubernetes API), debounce, compile off the async threads, publish of immutable
//! snapshots with a generation number, and what a controller writes back to the cluster.

mod debounce;
pub mod kubernetes;
pub mod manifest;
mod parse;
mod pipeline;
mod publish;

pub use debounce::{Changes, Debounce};
pub use manifest::{ManifestError, ManifestSource};
pub use parse::{ParseError, ParsedFile, parse_manifest};
pub use pipeline::run_pipeline;
pub use publish::{ObjectCounts, Published, Publisher};

/// A problem a source found that is not about one Kubernetes object's content: a file that
/// does not parse, a path that cannot be read, an object defined twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct SourceProblem {
    /// Where: a file path, for the manifest source.
    pub source: String,
    pub message: String,
}

impl std::fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

/// What a source holds at one moment: the objects, and the problems that kept some out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceSnapshot {
    pub snapshot: vestibule_translate::Snapshot,
    pub problems: Vec<SourceProblem>,
}
