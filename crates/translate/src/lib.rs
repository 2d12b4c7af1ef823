//! Compiles a snapshot of Kubernetes objects into the routing table, plus a report of
//! diagnostics naming each object and field that could not be used. Pure and deterministic:
//! the same objects in any order give the same table and report. Kubernetes types stop here.

mod annotations;
mod backend;
mod class;
mod compile;
mod report;
mod snapshot;
mod tls;

pub use compile::{Compiled, Context, Options, compile, compile_with, unix_now};
pub use report::{Diagnostic, IngressOutcome, Kind, ObjectRef, Report, Severity};
pub use snapshot::{Object, Snapshot};
pub use tls::CertMemory;
