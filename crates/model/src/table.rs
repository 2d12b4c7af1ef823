//! The routing table: virtual hosts found by hash, routes found by the path router, and the
//! clusters they point at. Built once per configuration, then only read.

use compact_str::CompactString;
use hashbrown::HashMap;
use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};

use std::sync::Arc;

use crate::access::{BasicAuth, ClientAuth, ExternalAuth, SourceRanges, VerifyClient};
use crate::cluster::{Cluster, ClusterId, ClusterKey, Endpoint, UpstreamProtocol};
use crate::cors::Cors;
use crate::host::{HostPattern, wildcard_suffix};
use crate::path::{PathKind, PathRule};
use crate::policy::ProxyPolicy;
pub use crate::router::RouteId;
use crate::router::{PathRouter, Paths, RegexPaths};
use crate::rules::{Fixed, Redirect, Refusal, Rewrite, ServerRules};
use crate::tls::{TlsBuilder, TlsHosts};
use crate::traffic::{Canary, RateLimit};

/// Where a request that matched goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Cluster(ClusterId),
    /// The route exists but its backend cannot be served (missing Service or port, an
    /// unsupported backend kind): requests get 503 and the reason is in the diagnostics.
    Unavailable {
        reason: Box<str>,
    },
}

/// The object and field a route (or the default backend) was compiled from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RouteOrigin {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub field: Box<str>,
}

/// Per-route behaviour that comes from the Ingress that defined the route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoutePolicy {
    /// Plain-HTTP requests are redirected to HTTPS when the host has TLS
    /// (`nginx.ingress.kubernetes.io/ssl-redirect`, default on).
    pub ssl_redirect: bool,
    /// Plain-HTTP requests are redirected to HTTPS even without TLS for the host
    /// (`nginx.ingress.kubernetes.io/force-ssl-redirect`, default off).
    pub force_ssl_redirect: bool,
    /// Timeouts, retries, limits, balancing and upstream protocol.
    pub proxy: Arc<ProxyPolicy>,
    /// Requests are refused (503): the Ingress asks for protection that cannot be given.
    pub refused: Option<Arc<Refusal>>,
    /// Requests are answered with this redirect (`permanent-redirect`, `temporal-redirect`).
    pub redirect: Option<Arc<Redirect>>,
    /// Requests are answered with this status and text (a snippet's `return`).
    pub fixed: Option<Arc<Fixed>>,
    /// The path sent upstream (`rewrite-target`).
    pub rewrite: Option<Arc<Rewrite>>,
    /// The `Host` sent upstream (`upstream-vhost`); the client's otherwise.
    pub upstream_host: Option<Arc<str>>,
    /// Requests must carry a user and password of these (`auth-type: basic`).
    pub basic_auth: Option<Arc<BasicAuth>>,
    /// Every request is first put to this service (`auth-url`, or `--global-auth-url`).
    pub external_auth: Option<Arc<ExternalAuth>>,
    /// Client certificates are asked for and checked (`auth-tls-*`).
    pub client_auth: Option<Arc<ClientAuth>>,
    /// Which client addresses may use the route (`*-source-range`).
    pub source_ranges: Option<Arc<SourceRanges>>,
    /// Request-rate limits per client, shared by every path of the Ingress (`limit-*`).
    pub rate_limit: Option<Arc<RateLimit>>,
    /// Cross-origin resource sharing (`enable-cors`, `cors-*`).
    pub cors: Option<Arc<Cors>>,
    /// Where requests go when the route's Service has no ready endpoints
    /// (`default-backend`).
    pub fallback: Option<Backend>,
    /// Responses with these statuses are replaced by the error backend's answer
    /// (`custom-http-errors`).
    pub custom_errors: Option<Arc<[u16]>>,
    /// Fields set on or removed from requests and responses, and the upstream's redirects
    /// and cookies rewritten.
    pub headers: Option<Arc<crate::headers::HeaderRules>>,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        RoutePolicy {
            ssl_redirect: true,
            force_ssl_redirect: false,
            proxy: Arc::default(),
            refused: None,
            redirect: None,
            fixed: None,
            rewrite: None,
            upstream_host: None,
            basic_auth: None,
            external_auth: None,
            client_auth: None,
            source_ranges: None,
            rate_limit: None,
            cors: None,
            fallback: None,
            custom_errors: None,
            headers: None,
        }
    }
}

/// One rule path of one virtual host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub id: RouteId,
    pub host: HostPattern,
    pub rule: PathRule,
    pub backend: Backend,
    pub origin: RouteOrigin,
    pub policy: RoutePolicy,
    /// A canary Ingress that takes some of the route's requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<Arc<Canary>>,
}

impl Route {
    /// Whether a plain-HTTP request matched to this route is redirected to HTTPS.
    pub fn redirects_http(&self, vhost: &VirtualHost) -> bool {
        self.policy.force_ssl_redirect || (vhost.tls && self.policy.ssl_redirect)
    }
}

/// The routes of one host pattern, across every Ingress that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualHost {
    pub host: HostPattern,
    /// The host has a TLS section of its own: HTTPS responses get HSTS, and plain-HTTP
    /// requests are redirected unless the matched route opts out.
    pub tls: bool,
    /// What the host answers before its routes are looked at, when anything.
    pub server: Option<Arc<ServerRules>>,
    /// Other names that reach this host's routes (`server-alias`).
    pub aliases: Vec<HostPattern>,
    /// Some route of the host checks client certificates: its TLS handshakes ask for one.
    pub asks_client_certificate: bool,
    /// HTTPS connections for this host are not terminated but spliced, untouched, to the
    /// backend of this route (the host's `/` path): `ssl-passthrough`.
    pub passthrough: Option<RouteId>,
    routes: Vec<RouteId>,
}

/// What a request needs of a virtual host, stored inline in the host maps; the rest of the
/// virtual host stays out of the way in [`RouteTable::vhosts`]. Smaller map entries mean
/// fewer cache lines touched per request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostEntry {
    paths: Paths,
    vhost: u32,
}

impl VirtualHost {
    pub fn route_ids(&self) -> &[RouteId] {
        &self.routes
    }
}

/// The backend for requests that match no rule, and where it was configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefaultBackend {
    pub backend: Backend,
    /// `None` when it comes from the controller's own flag rather than an Ingress.
    pub origin: Option<RouteOrigin>,
    /// How its requests are treated: by the annotations of the Ingress that sets it, as for
    /// that Ingress's rules; `None` for the flag's, proxied with the controller-wide defaults.
    pub policy: Option<Arc<RoutePolicy>>,
}

/// The result of matching one request: the virtual host chosen by the host (if any), and
/// where the request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup<'t> {
    pub vhost: Option<&'t VirtualHost>,
    pub target: Target<'t>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'t> {
    Route(&'t Route),
    /// No rule matched; the default backend serves the request.
    Default(&'t DefaultBackend),
    /// No rule matched and there is no default backend.
    NotFound,
}

/// The compiled routing table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    // Path routers live in the host maps themselves rather than behind an index, which saves
    // a dependent memory access (often a cache miss) on every request.
    exact_hosts: HashMap<CompactString, HostEntry>,
    wildcard_hosts: HashMap<CompactString, HostEntry>,
    catch_all: Option<HostEntry>,
    /// In the order they were added.
    vhosts: Vec<VirtualHost>,
    routes: Vec<Route>,
    clusters: Vec<Cluster>,
    default_backend: Option<DefaultBackend>,
    tls: TlsHosts,
    /// Some host is passed through: handshakes must keep their ClientHello's bytes.
    passthrough: bool,
    /// Rules refused because an older one holds the same host, path and kind.
    shadowed: Vec<Shadowed>,
}

/// A rule that is not served because an older rule holds the same host, path and kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shadowed {
    pub host: HostPattern,
    pub rule: PathRule,
    pub origin: RouteOrigin,
    /// The route that holds it.
    pub by: RouteId,
}

impl RouteTable {
    /// Matches a request: `host` as normalised by [`crate::request_host`], `path` as normalised
    /// by [`crate::normalize_request_path`]. The virtual host is chosen first (exact, then
    /// one-label wildcard, then catch-all); the path is matched only within it.
    pub fn lookup(&self, host: &str, path: &str) -> Lookup<'_> {
        let entry = self.host_entry(host);
        let route = entry.and_then(|e| e.paths.lookup(path));
        let target = match (route, &self.default_backend) {
            (Some(id), _) => Target::Route(&self.routes[id.0 as usize]),
            (None, Some(default)) => Target::Default(default),
            (None, None) => Target::NotFound,
        };
        Lookup {
            vhost: entry.map(|e| &self.vhosts[e.vhost as usize]),
            target,
        }
    }

    /// The virtual host that serves a normalised request host.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        self.host_entry(host)
            .map(|entry| &self.vhosts[entry.vhost as usize])
    }

    fn host_entry(&self, host: &str) -> Option<&HostEntry> {
        self.exact_hosts
            .get(host)
            .or_else(|| wildcard_suffix(host).and_then(|suffix| self.wildcard_hosts.get(suffix)))
            .or(self.catch_all.as_ref())
    }

    /// Whether a TLS handshake for `server_name` asks the client for a certificate.
    pub fn asks_client_certificate(&self, server_name: Option<&str>) -> bool {
        server_name.is_some_and(|name| {
            let host = crate::host::request_host(name);
            self.virtual_host(&host)
                .is_some_and(|v| v.asks_client_certificate)
        })
    }

    /// Whether any host's HTTPS connections are passed through rather than terminated.
    pub fn has_passthrough(&self) -> bool {
        self.passthrough
    }

    /// The route whose backend receives, untouched, a TLS connection for `server_name`,
    /// when that host is passed through. Without a server name nothing is.
    pub fn passthrough(&self, server_name: Option<&str>) -> Option<&Route> {
        if !self.passthrough {
            return None;
        }
        let host = crate::host::request_host(server_name?);
        let id = self.virtual_host(&host)?.passthrough?;
        Some(self.route(id))
    }

    /// Every virtual host, in the order they were added.
    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.vhosts
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn route(&self, id: RouteId) -> &Route {
        &self.routes[id.0 as usize]
    }

    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    pub fn cluster(&self, id: ClusterId) -> &Cluster {
        &self.clusters[id.0 as usize]
    }

    pub fn default_backend(&self) -> Option<&DefaultBackend> {
        self.default_backend.as_ref()
    }

    /// Certificates by server name.
    pub fn tls(&self) -> &TlsHosts {
        &self.tls
    }

    /// Rules not served because an older rule holds the same host, path and kind.
    pub fn shadowed(&self) -> &[Shadowed] {
        &self.shadowed
    }
}

impl Serialize for RouteTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct VhostView<'a> {
            host: String,
            tls: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            server: Option<&'a ServerRules>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            aliases: Vec<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            passthrough: Option<&'a RouteOrigin>,
            routes: Vec<&'a Route>,
        }
        let vhosts: Vec<VhostView<'_>> = self
            .vhosts
            .iter()
            .map(|v| VhostView {
                host: v.host.to_string(),
                tls: v.tls,
                server: v.server.as_deref(),
                aliases: v.aliases.iter().map(ToString::to_string).collect(),
                passthrough: v.passthrough.map(|id| &self.route(id).origin),
                routes: v.routes.iter().map(|id| self.route(*id)).collect(),
            })
            .collect();
        let mut s = serializer.serialize_struct("RouteTable", 3)?;
        s.serialize_field("virtual_hosts", &vhosts)?;
        s.serialize_field("clusters", &self.clusters)?;
        s.serialize_field("default_backend", &self.default_backend)?;
        s.end()
    }
}

/// A rule that another route already holds: same host, same path, same kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub existing: RouteOrigin,
}

/// Builds a [`RouteTable`]. Routes added first win conflicts, so callers add them in
/// precedence order (oldest object first).
#[derive(Debug, Default)]
pub struct TableBuilder {
    table: RouteTable,
    routers: Vec<RouterBuilder>,
    /// Alias name → the host whose entry it shares.
    aliases: HashMap<HostPattern, usize>,
    vhost_index: HashMap<HostPattern, usize>,
    tls: TlsBuilder,
    cluster_index: HashMap<ClusterKey, ClusterId>,
}

impl TableBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cluster for `key`, creating it with `make` (protocol and endpoints) the first time.
    pub fn cluster_with(
        &mut self,
        key: ClusterKey,
        make: impl FnOnce() -> (UpstreamProtocol, Vec<Endpoint>),
    ) -> ClusterId {
        if let Some(id) = self.cluster_index.get(&key) {
            return *id;
        }
        let (protocol, mut endpoints) = make();
        endpoints.sort();
        endpoints.dedup();
        let id = ClusterId(index_u32(self.table.clusters.len()));
        self.table.clusters.push(Cluster {
            id,
            key: key.clone(),
            protocol,
            endpoints,
        });
        self.cluster_index.insert(key, id);
        id
    }

    pub fn route(
        &mut self,
        host: HostPattern,
        rule: PathRule,
        backend: Backend,
        origin: RouteOrigin,
    ) -> Result<RouteId, Conflict> {
        self.route_with(host, rule, backend, origin, RoutePolicy::default())
    }

    pub fn route_with(
        &mut self,
        host: HostPattern,
        rule: PathRule,
        backend: Backend,
        origin: RouteOrigin,
        policy: RoutePolicy,
    ) -> Result<RouteId, Conflict> {
        let vhost_at = self.vhost_at(&host);
        let table = &mut self.table;
        let id = RouteId(index_u32(table.routes.len()));
        if let Err(existing) = self.routers[vhost_at].insert(&rule, id) {
            let conflict = Conflict {
                existing: table.routes[existing.0 as usize].origin.clone(),
            };
            table.shadowed.push(Shadowed {
                host,
                rule,
                origin,
                by: existing,
            });
            return Err(conflict);
        }
        table.vhosts[vhost_at].routes.push(id);
        table.routes.push(Route {
            id,
            host,
            rule,
            backend,
            origin,
            policy,
            canary: None,
        });
        Ok(id)
    }

    /// A route added earlier.
    pub fn route_at(&self, id: RouteId) -> &Route {
        &self.table.routes[id.0 as usize]
    }

    /// The route `host` has for exactly `rule` (same path and kind), if any.
    pub fn find(&self, host: &HostPattern, rule: &PathRule) -> Option<&Route> {
        let at = *self.vhost_index.get(host)?;
        self.table.vhosts[at]
            .routes
            .iter()
            .map(|id| &self.table.routes[id.0 as usize])
            .find(|route| route.rule == *rule)
    }

    /// Gives route `id` its canary, unless it has one already: then the one that stays is
    /// returned.
    pub fn canary(&mut self, id: RouteId, canary: Canary) -> Result<(), Arc<Canary>> {
        let route = &mut self.table.routes[id.0 as usize];
        match &route.canary {
            Some(existing) => Err(Arc::clone(existing)),
            None => {
                route.canary = Some(Arc::new(canary));
                Ok(())
            }
        }
    }

    /// The index of `host`'s virtual host, made empty the first time.
    fn vhost_at(&mut self, host: &HostPattern) -> usize {
        let table = &mut self.table;
        let routers = &mut self.routers;
        *self.vhost_index.entry(host.clone()).or_insert_with(|| {
            table.vhosts.push(VirtualHost {
                host: host.clone(),
                tls: false,
                server: None,
                aliases: Vec::new(),
                asks_client_certificate: false,
                passthrough: None,
                routes: Vec::new(),
            });
            routers.push(RouterBuilder::default());
            routers.len() - 1
        })
    }

    /// Sets what `host` answers before its routes; the host exists from here on even with no
    /// route (a `www.` name that only redirects).
    pub fn server_rules(&mut self, host: &HostPattern, rules: ServerRules) {
        let at = self.vhost_at(host);
        self.table.vhosts[at].server = (!rules.is_empty()).then(|| Arc::new(rules));
    }

    /// Whether a host has routes or server rules of its own.
    pub fn has_host(&self, host: &HostPattern) -> bool {
        self.vhost_index.contains_key(host)
    }

    /// Passes `host`'s HTTPS connections through to route `id`'s backend, unless another
    /// route holds the host's passthrough already: then that route is returned.
    pub fn passthrough(&mut self, host: &HostPattern, id: RouteId) -> Result<(), RouteId> {
        let at = self.vhost_at(host);
        let vhost = &mut self.table.vhosts[at];
        match vhost.passthrough {
            Some(existing) if existing != id => Err(existing),
            _ => {
                vhost.passthrough = Some(id);
                self.table.passthrough = true;
                Ok(())
            }
        }
    }

    /// Makes `alias` reach `host`'s routes. Refused (false) when `alias` is a host of its own
    /// or another host's alias already, or `host` does not exist.
    pub fn alias(&mut self, alias: HostPattern, host: &HostPattern) -> bool {
        let Some(&at) = self.vhost_index.get(host) else {
            return false;
        };
        if self.vhost_index.contains_key(&alias) || self.aliases.contains_key(&alias) {
            return false;
        }
        self.table.vhosts[at].aliases.push(alias.clone());
        self.aliases.insert(alias, at);
        true
    }

    /// Sets the default backend unless one is set already; returns the one that stays.
    pub fn default_backend(&mut self, default: DefaultBackend) -> Result<(), DefaultBackend> {
        match &self.table.default_backend {
            Some(existing) => Err(existing.clone()),
            None => {
                self.table.default_backend = Some(default);
                Ok(())
            }
        }
    }

    /// The certificates being bound to host names.
    pub fn tls(&mut self) -> &mut TlsBuilder {
        &mut self.tls
    }

    pub fn build(self) -> RouteTable {
        let mut table = self.table;
        table.tls = self.tls.build();
        for vhost in &mut table.vhosts {
            vhost.tls = table.tls.has_tls(&vhost.host);
            vhost.asks_client_certificate = vhost.routes.iter().any(|id| {
                table.routes[id.0 as usize]
                    .policy
                    .client_auth
                    .as_ref()
                    .is_some_and(|c| c.verify != VerifyClient::Off)
            });
        }
        let entries: Vec<HostEntry> = self
            .routers
            .into_iter()
            .enumerate()
            .map(|(at, router)| HostEntry {
                paths: router.build(&table.routes),
                vhost: index_u32(at),
            })
            .collect();
        for (alias, at) in &self.aliases {
            table.place(alias, entries[*at].clone());
        }
        for (at, entry) in entries.into_iter().enumerate() {
            let host = table.vhosts[at].host.clone();
            table.place(&host, entry);
        }
        table
    }
}

impl RouteTable {
    fn place(&mut self, host: &HostPattern, entry: HostEntry) {
        match host {
            HostPattern::Exact(name) => {
                self.exact_hosts.insert(CompactString::new(name), entry);
            }
            HostPattern::Wildcard(suffix) => {
                self.wildcard_hosts
                    .insert(CompactString::new(suffix), entry);
            }
            HostPattern::Any => self.catch_all = Some(entry),
        }
    }
}

/// The rules of one host as they are added: plain ones into the path router; regex ones
/// compiled, with the rest, when the table is built.
#[derive(Debug, Default)]
struct RouterBuilder {
    plain: PathRouter,
    regex: HashMap<Box<str>, RouteId>,
    /// Every route of the host in the order added, for a host that turns out to have regex
    /// rules.
    order: Vec<RouteId>,
}

impl RouterBuilder {
    fn insert(&mut self, rule: &PathRule, id: RouteId) -> Result<(), RouteId> {
        if rule.kind == PathKind::Regex {
            if let Some(existing) = self.regex.get(&rule.path) {
                return Err(*existing);
            }
            self.regex.insert(rule.path.clone(), id);
        } else {
            self.plain.insert(rule, id)?;
        }
        self.order.push(id);
        Ok(())
    }

    fn build(self, routes: &[Route]) -> Paths {
        if self.regex.is_empty() {
            return Paths::Plain(self.plain);
        }
        let rules = self
            .order
            .into_iter()
            .map(|id| (routes[id.0 as usize].rule.clone(), id))
            .collect();
        Paths::Regex(Box::new(RegexPaths::new(rules)))
    }
}

fn index_u32(len: usize) -> u32 {
    // A table with four billion routes would not fit in memory long before this matters.
    u32::try_from(len).unwrap_or(u32::MAX)
}

mod explain;
pub use explain::{
    BackendView, Candidate, Explanation, HostChoice, HostMatch, Phase, Probe, RequestView,
    TargetView, Verdict,
};

#[cfg(test)]
mod tests;
