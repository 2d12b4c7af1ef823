//! Why a request goes where it goes: the lookup of [`RouteTable::lookup`] with every decision
//! named (the host entry and how it matched, each rule of the host and why it won or lost),
//! then what each phase of the request path decides for the route found. For
//! `vestibule explain` and the admin server's `/debug/explain`; requests never call it.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use super::{HostEntry, Route, RouteId, RouteTable, Target, VirtualHost};
use crate::host::{HostPattern, request_host, wildcard_suffix};
use crate::path::{PathKind, PathRule, elements, normalize_request_path, routing_path};
use crate::policy::ProxyPolicy;
use crate::router::Paths;

/// The request to explain, as a client would send it.
#[derive(Debug, Clone, Default)]
pub struct Probe<'a> {
    /// The `Host` (or `:authority`), port allowed.
    pub host: &'a str,
    /// The request target: a path, and a query if any.
    pub target: &'a str,
    pub method: &'a str,
    pub https: bool,
    /// The client's address, after trusted proxies; unknown when `None`.
    pub client: Option<IpAddr>,
    /// Header fields, names in any case.
    pub headers: &'a [(String, String)],
    /// Cookies, `name` and `value`.
    pub cookies: &'a [(String, String)],
}

impl Probe<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        (self.cookies.iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The explanation, serialised as `/debug/explain` and `vestibule explain --output json`
/// give it.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub request: RequestView,
    pub host: HostChoice,
    /// Every rule of the host (and every rule an older one shadows), the winner first.
    pub rules: Vec<Candidate>,
    /// What serves the request: a rule, the default backend, or nothing (404).
    pub target: TargetView,
    /// Each phase's decision, in the order a request meets them.
    pub phases: Vec<Phase>,
    /// Where the request is sent, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendView>,
    /// Timeouts, retries, balancing and limits of the route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Arc<ProxyPolicy>>,
    /// The request's fate in one line.
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    /// As matched: lower case, no port, no trailing dot.
    pub host: String,
    /// Normalised (dot segments removed, unreserved escapes decoded): as sent upstream,
    /// and as matched unless `routed_as` is given.
    pub path: String,
    /// For a path with encoded slashes or backslashes: the path as a backend decoding them
    /// reads it, which is what is matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed_as: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub method: String,
    pub https: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostMatch {
    /// A rule names exactly this host.
    Exact,
    /// This host is a `server-alias` of an exact host.
    Alias,
    /// A `*.` rule covers this host's first label.
    Wildcard,
    /// Rules without a host.
    CatchAll,
    /// No rule covers the host.
    None,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostChoice {
    #[serde(rename = "match")]
    pub how: HostMatch,
    /// The host pattern whose rules are used (`*` for rules without a host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Regex mode: the host's paths are regular expressions, tried in order.
    pub regex: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Won,
    /// Matches, but another rule takes precedence.
    Lost,
    /// Does not match the path.
    NoMatch,
    /// Never served: an older rule holds the same host, path and type.
    Shadowed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// `namespace/name` of the Ingress.
    pub ingress: String,
    pub field: String,
    pub kind: PathKind,
    pub path: String,
    pub verdict: Verdict,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum TargetView {
    Rule {
        ingress: String,
        field: String,
    },
    /// `ingress` is absent for the controller's `--default-backend-service`.
    DefaultBackend {
        #[serde(skip_serializing_if = "Option::is_none")]
        ingress: Option<String>,
    },
    NotFound,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub phase: &'static str,
    /// What it decided: `pass`, `answer`, `redirect`, `refuse`, `depends`, ...
    pub decision: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendView {
    /// `namespace/service:port`.
    pub service: String,
    /// The canary Ingress's Service rather than the route's own.
    pub canary: bool,
    /// The route's `default-backend`, its own Service having no ready endpoints.
    pub fallback: bool,
    pub endpoints: Vec<String>,
}

impl RouteTable {
    /// Explains what would happen to `probe`. A host or target that cannot be read as a
    /// request's is an error naming what is wrong.
    pub fn explain(&self, probe: &Probe<'_>) -> Result<Explanation, String> {
        let host = request_host(probe.host).into_owned();
        if host.bytes().any(|b| b.is_ascii_whitespace() || b == b'/') {
            return Err(format!("{:?} is not a host name", probe.host));
        }
        let (raw_path, query) = match probe.target.split_once('?') {
            Some((path, query)) => (path, Some(query.to_owned())),
            None => (probe.target, None),
        };
        if !raw_path.starts_with('/') {
            return Err(format!(
                "{:?} is not a path (it must start with /)",
                probe.target
            ));
        }
        let path = normalize_request_path(raw_path)
            .map_err(|e| format!("{raw_path:?} is not a request path: {e}"))?
            .into_owned();
        let routed_as = match routing_path(&path) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(read)) => Some(read),
            Err(e) => return Err(format!("the proxy answers 400 to {raw_path:?}: {e}")),
        };
        let request = RequestView {
            host,
            path,
            routed_as,
            query,
            method: probe.method.to_ascii_uppercase(),
            https: probe.https,
            client: probe.client,
        };
        let matched = request.routed_as.as_deref().unwrap_or(&request.path);
        let lookup = self.lookup(&request.host, matched);
        let entry = self.host_entry(&request.host);
        let host_choice = self.host_choice(&request.host, entry);
        let rules = match lookup.vhost {
            Some(vhost) => self.candidates(vhost, entry, matched, lookup.target),
            None => Vec::new(),
        };
        let mut explained = Explanation {
            host: host_choice,
            rules,
            target: target_view(lookup.target),
            phases: Vec::new(),
            backend: None,
            policy: None,
            outcome: String::new(),
            request,
        };
        self.phases(&mut explained, lookup.vhost, lookup.target, probe);
        Ok(explained)
    }

    fn host_choice(&self, host: &str, entry: Option<&HostEntry>) -> HostChoice {
        let Some(entry) = entry else {
            return HostChoice {
                how: HostMatch::None,
                entry: None,
                regex: false,
                reason: format!(
                    "no rule names {host}, no *. rule covers it, and no rule is without a host"
                ),
            };
        };
        let vhost = &self.vhosts[entry.vhost as usize];
        let regex = matches!(entry.paths, Paths::Regex(_));
        let pattern = vhost.host.to_string();
        let (how, reason) = if self.exact_hosts.contains_key(host) {
            if vhost.host == HostPattern::Exact(host.into()) {
                (HostMatch::Exact, format!("a rule names {host} exactly"))
            } else {
                let reason = format!("{host} is a server-alias of {pattern}");
                (HostMatch::Alias, reason)
            }
        } else if wildcard_suffix(host).is_some_and(|s| self.wildcard_hosts.contains_key(s)) {
            let reason = format!(
                "no rule names {host} exactly; {pattern} covers its first label (one label only)"
            );
            (HostMatch::Wildcard, reason)
        } else {
            let reason =
                format!("no rule names {host} and no *. rule covers it: the rules without a host");
            (HostMatch::CatchAll, reason)
        };
        HostChoice {
            how,
            entry: Some(pattern),
            regex,
            reason,
        }
    }

    fn candidates(
        &self,
        vhost: &VirtualHost,
        entry: Option<&HostEntry>,
        path: &str,
        target: Target<'_>,
    ) -> Vec<Candidate> {
        let winner = match target {
            Target::Route(route) => Some(route),
            _ => None,
        };
        // In regex mode rules are tried in the router's order, the first match winning;
        // otherwise each rule is matched on its own and precedence picks.
        let (regex, tried): (bool, Vec<(RouteId, bool)>) = match entry.map(|e| &e.paths) {
            Some(Paths::Regex(paths)) => (true, paths.each_match(path)),
            _ => {
                let ids = vhost.route_ids().iter();
                (
                    false,
                    ids.map(|id| (*id, self.route(*id).rule.matches(path)))
                        .collect(),
                )
            }
        };
        let mut out: Vec<Candidate> = tried
            .iter()
            .enumerate()
            .map(|(order, (id, matched))| {
                let route = self.route(*id);
                let (verdict, reason) = judge(route, *matched, path, winner, regex, order);
                candidate(route, verdict, reason)
            })
            .collect();
        for shadowed in self.shadowed.iter().filter(|s| s.host == vhost.host) {
            let holder = &self.route(shadowed.by).origin;
            out.push(Candidate {
                ingress: format!("{}/{}", shadowed.origin.namespace, shadowed.origin.name),
                field: shadowed.origin.field.to_string(),
                kind: shadowed.rule.kind,
                path: shadowed.rule.path.to_string(),
                verdict: Verdict::Shadowed,
                reason: format!(
                    "never served: Ingress {}/{} ({}) holds the same host, path and type and \
                     is older",
                    holder.namespace, holder.name, holder.field
                ),
            });
        }
        out.sort_by_key(|c| match c.verdict {
            Verdict::Won => 0,
            Verdict::Lost => 1,
            Verdict::NoMatch => 2,
            Verdict::Shadowed => 3,
        });
        out
    }
}

fn candidate(route: &Route, verdict: Verdict, reason: String) -> Candidate {
    Candidate {
        ingress: format!("{}/{}", route.origin.namespace, route.origin.name),
        field: route.origin.field.to_string(),
        kind: route.rule.kind,
        path: route.rule.path.to_string(),
        verdict,
        reason,
    }
}

/// Whether `route` won, and if not why, against the `winner` the table chose.
fn judge(
    route: &Route,
    matched: bool,
    path: &str,
    winner: Option<&Route>,
    regex: bool,
    order: usize,
) -> (Verdict, String) {
    let rule = &route.rule;
    if winner.is_some_and(|w| w.id == route.id) {
        let reason = match (regex, rule.kind) {
            (true, _) => format!(
                "the first rule, in trying order (position {}), that matches",
                order + 1
            ),
            (false, PathKind::Exact) => "the path is exactly the rule's".to_owned(),
            (false, _) if &*rule.path == "/" => {
                "the / prefix matches every path; no longer rule matches".to_owned()
            }
            (false, _) => format!(
                "the longest matching prefix ({} characters)",
                rule.path.len()
            ),
        };
        return (Verdict::Won, reason);
    }
    if !matched {
        return (Verdict::NoMatch, no_match(rule, path));
    }
    let Some(winner) = winner else {
        return (Verdict::NoMatch, "not consulted".to_owned());
    };
    let theirs = format!(
        "{} ({:?} {})",
        ingress_of(winner),
        winner.rule.kind,
        winner.rule.path
    );
    let reason = if regex {
        format!(
            "matches, but is tried later (position {}): in regex mode longer rule paths are \
             tried first, and at equal length the older Ingress's; {theirs} matched first",
            order + 1
        )
    } else if winner.rule.path.len() > rule.path.len() {
        format!("matches, but {theirs} is a longer match")
    } else if winner.rule.kind == PathKind::Exact && rule.kind == PathKind::Prefix {
        format!("matches, but Exact beats Prefix at the same length: {theirs}")
    } else {
        format!("matches, but {theirs} takes precedence")
    };
    (Verdict::Lost, reason)
}

fn no_match(rule: &PathRule, path: &str) -> String {
    match rule.kind {
        PathKind::Exact => format!("Exact: the path is not exactly {}", rule.path),
        PathKind::Prefix if path.starts_with(&*rule.path) => format!(
            "not a prefix element-wise: {} matches {} and {}/..., not {path}",
            rule.path, rule.path, rule.path
        ),
        PathKind::Prefix => {
            let first = elements(&rule.path).next().unwrap_or("");
            format!(
                "the path does not start with the elements of {} ({first}…)",
                rule.path
            )
        }
        PathKind::Regex => format!(
            "the expression {} (case-insensitive, anchored at the start) does not match",
            rule.path
        ),
    }
}

fn ingress_of(route: &Route) -> String {
    format!("{}/{}", route.origin.namespace, route.origin.name)
}

fn target_view(target: Target<'_>) -> TargetView {
    match target {
        Target::Route(route) => TargetView::Rule {
            ingress: ingress_of(route),
            field: route.origin.field.to_string(),
        },
        Target::Default(default) => TargetView::DefaultBackend {
            ingress: (default.origin.as_ref()).map(|o| format!("{}/{}", o.namespace, o.name)),
        },
        Target::NotFound => TargetView::NotFound,
    }
}

mod phases;

#[cfg(test)]
mod tests;
