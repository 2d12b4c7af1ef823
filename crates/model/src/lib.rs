//! The compiled routing table and the matching rules of Ingress v1, with no IO and no runtime.
//!
//! Vocabulary (see `ARCHITECTURE.md`): a *virtual host* groups the routes for one host pattern;
//! a *route* is one rule path with its match kind and backend; a *cluster* is one Service port
//! with its ready *endpoints*. The table is built once per configuration by `translate`, then
//! shared read-only by every request.

mod access;
mod cluster;
mod cors;
mod headers;
mod host;
mod path;
mod policy;
mod precedence;
mod router;
mod rules;
mod table;
mod template;
mod tls;
mod traffic;

pub use access::{
    AuthCache, BasicAuth, Cidr, ClientAuth, ExternalAuth, MAX_BCRYPT_COST, MAX_SHA_CRYPT_ROUNDS,
    SourceRanges, VerifyClient, hash_work_over_bound,
};
pub use cluster::{Cluster, ClusterId, ClusterKey, Endpoint, EndpointAddress, UpstreamProtocol};
pub use cors::{AllowedOrigins, Cors, CorsAnswer, OriginPattern};
pub use headers::{HeaderOp, HeaderRules, Replace, ResponseOp, header_name};
pub use host::{HostError, HostPattern, is_valid_authority, request_host};
pub use path::{PathError, PathKind, PathRule, normalize_request_path, routing_path};
pub use policy::{
    AffinityMode, BackendProtocol, Balance, CookieAffinity, HashKey, HashPart, NextUpstream,
    ProxyPolicy, SameSite, UpstreamTls,
};
pub use precedence::Rank;
pub use rules::{Fixed, Redirect, Refusal, Rewrite, RewriteError, ServerRules};
pub use table::{
    Backend, BackendView, Candidate, Conflict, DefaultBackend, Explanation, HostChoice, HostMatch,
    Lookup, Phase, Probe, RequestView, Route, RouteId, RouteOrigin, RoutePolicy, RouteTable,
    Shadowed, TableBuilder, Target, TargetView, Verdict, VirtualHost,
};
pub use template::{Template, Var, escape_component};
pub use tls::{Certificate, CertificateInfo, CertificateRef, KeyFormat, TlsBuilder, TlsHosts};
pub use traffic::{AgentRule, Blocklist, Canary, CanaryHeader, Pattern, RateLimit};
