//! Compiles a snapshot of Kubernetes objects into the routing table, plus a report of
//! diagnostics naming each object and field that could not be used. Pure and deterministic:
//! the same objects in any order give the same table and report. Kubernetes types stop here.

mod annotations;
mod backend;
pub mod check;
mod class;
mod compile;
mod report;
mod snapshot;
pub mod snippet;
mod tls;

pub use compile::{Compiled, Context, Options, compile, compile_with, unix_now};
pub use report::{Diagnostic, IngressOutcome, Kind, ObjectRef, Report, Severity};
pub use snapshot::{Object, Snapshot};
pub use tls::CertMemory;

/// Value syntax shared by annotations and the command line, so a flag and an annotation
/// setting the same thing read the same values (`30`, `30s`, `1m`; `8k`, `1m`; `error
/// timeout http_502`).
pub mod values {
    use std::time::Duration;

    use vestibule_model::NextUpstream;

    use crate::annotations::syntax;

    /// nginx time: plain seconds, or units `ms s m h d`, combined (`1m30s`).
    pub fn duration(value: &str) -> Option<Duration> {
        syntax::parse_duration(value)
    }

    /// The command line's time: [`duration`], whose numbers may also have a fraction
    /// (`1.5s`), as Go-style flags allow; annotations keep nginx's whole numbers.
    pub fn duration_with_fractions(value: &str) -> Option<Duration> {
        syntax::parse_duration_with(value, true)
    }

    /// nginx size: bytes, or `k`, `m`, `g`; `0` means unlimited.
    pub fn size(value: &str) -> Option<u64> {
        syntax::parse_size(value)
    }

    /// Whether a Secret value is a password hash basic authentication can verify: the
    /// values an `auth-map` Secret holds, which the Kubernetes source keeps.
    pub fn password_hash(value: &[u8]) -> bool {
        crate::annotations::is_password_hash(value)
    }

    pub use crate::annotations::{AuthValues, external_auth, ranges};

    /// `proxy-next-upstream` conditions.
    pub fn next_upstream(value: &str) -> Result<NextUpstream, String> {
        syntax::parse_next_upstream(value)
    }
}
