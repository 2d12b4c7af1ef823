//! Test-only helpers: Kubernetes object builders that read like the spec, echo backends on real
//! sockets, and manifest directories on disk.

pub mod apiserver;
pub mod certs;
pub mod echo;
pub mod fixtures;
pub mod grpc;
pub mod manifests;
pub mod misbehave;
pub mod proxy_protocol;
pub mod raw;
pub mod rbac;
pub mod scale;
pub mod tls;
pub mod websocket;

pub use echo::{Echo, EchoReply};
pub use fixtures::{endpoint_slice, ingress, ingress_class, service, svc, svc_named, tls_secret};
pub use manifests::ManifestDir;
