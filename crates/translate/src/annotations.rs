//! The `nginx.ingress.kubernetes.io/` annotations: the ones honoured are parsed into typed
//! settings (an invalid value is reported and the default applies); every other one gets a
//! warning, so that migrating users see what is ignored instead of guessing.

mod auth;
pub(crate) mod buffering;
mod canary;
mod client_tls;
mod closed;
mod cors;
mod external;
pub(crate) mod headers;
mod hosts;
mod rate_limit;
mod redirect;
mod rewrite;
mod snippets;
mod source_ranges;
pub(crate) mod syntax;

pub(crate) use auth::is_password_hash;
pub(crate) use canary::CanaryRule;
pub(crate) use external::ConfigMaps;
pub use external::{AuthValues, external_auth};
pub use source_ranges::ranges;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use vestibule_model::{
    AffinityMode, BackendProtocol, Balance, HashKey, HashPart, HostPattern, ProxyPolicy,
    RoutePolicy, SameSite, UpstreamTls,
};

use crate::report::{Diagnostics, ObjectRef};
use crate::tls::Secrets;
use syntax::{
    is_cookie_name, is_cookie_path, is_dns_name, parse_bool, parse_duration, parse_hash_key,
    parse_next_upstream, parse_on_off, parse_size, parse_uint, show_duration, show_next_upstream,
    show_size,
};

pub(crate) const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Keys whose values ingress-nginx pasted into its configuration verbatim, and that no
/// subset maps (`configuration-snippet` and `server-snippet` are read by `snippets`).
const SNIPPETS: &[&str] = &["stream-snippet", "auth-snippet", "modsecurity-snippet"];

/// Keys read into the [`ProxyPolicy`]. Several depend on others (`upstream-hash-by` overrides
/// `load-balance`, `session-cookie-*` need `affinity`), so they are gathered first and read
/// together rather than one at a time in key order.
const PROXY_KEYS: &[&str] = &[
    "proxy-connect-timeout",
    "proxy-send-timeout",
    "proxy-read-timeout",
    "proxy-next-upstream",
    "proxy-next-upstream-tries",
    "proxy-next-upstream-timeout",
    "proxy-body-size",
    "load-balance",
    "upstream-hash-by",
    "upstream-hash-by-subset",
    "upstream-hash-by-subset-size",
    "affinity",
    "affinity-mode",
    "session-cookie-name",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-path",
    "session-cookie-secure",
    "session-cookie-samesite",
    "session-cookie-change-on-failure",
    "backend-protocol",
    "proxy-ssl-verify",
    "proxy-ssl-secret",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
    "enable-access-log",
];

/// Keys that only mean something with `affinity: cookie`.
const AFFINITY_KEYS: &[&str] = &[
    "affinity-mode",
    "session-cookie-name",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-path",
    "session-cookie-secure",
    "session-cookie-samesite",
    "session-cookie-change-on-failure",
];

const UPSTREAM_TLS_KEYS: &[&str] = &[
    "proxy-ssl-verify",
    "proxy-ssl-secret",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
];

const BOOLEAN: &str = "a boolean (\"true\" or \"false\")";
const ON_OFF: &str = "\"on\" or \"off\"";
const TIME: &str = "a time (seconds, or a number with ms, s, m, h or d)";

/// Settings an Ingress's annotations give to its paths and hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IngressSettings {
    pub(crate) policy: RoutePolicy,
    /// `use-regex`: this Ingress's hosts are in regex mode.
    pub(crate) use_regex: bool,
    /// `rewrite-target`, checked; compiled with each path.
    pub(crate) rewrite_target: Option<Box<str>>,
    /// `x-forwarded-prefix`, sent with rewritten requests.
    pub(crate) forwarded_prefix: Option<Box<str>>,
    /// The annotations make the paths impossible to serve as meant (an invalid rewrite
    /// target): they are skipped.
    pub(crate) unservable: bool,
    /// `app-root`.
    pub(crate) app_root: Option<Box<str>>,
    /// `from-to-www-redirect`.
    pub(crate) www_redirect: bool,
    /// `server-alias`.
    pub(crate) aliases: Vec<HostPattern>,
    /// `canary: "true"`: the Ingress is not served on its own but splits its mains' routes.
    pub(crate) is_canary: bool,
    /// How it splits them; `None` when a canary key is wrong and the canary is ignored.
    pub(crate) canary: Option<CanaryRule>,
    /// `service-upstream`: backends through their Services' cluster IPs.
    pub(crate) service_upstream: bool,
    /// `default-backend`: the Service (in the Ingress's namespace) for requests whose own
    /// Service has no ready endpoints.
    pub(crate) default_backend: Option<Box<str>>,
    /// `ssl-passthrough`, with the controller flag that allows it: HTTPS connections for the
    /// Ingress's hosts go untouched to the Service of their `/` path.
    pub(crate) passthrough: bool,
}

impl IngressSettings {
    /// Whether this Ingress puts a host with this rule path in regex mode, as ingress-nginx
    /// does: `use-regex`, or a rewrite target that differs from the path.
    pub(crate) fn wants_regex(&self, path: &str) -> bool {
        self.use_regex || self.rewrite_target.as_deref().is_some_and(|t| t != path)
    }
}

/// What annotations may refer to, and the operator's settings that decide whether they may.
#[derive(Clone, Copy)]
pub(crate) struct Env<'e, 's> {
    pub(crate) secrets: &'e Secrets<'s>,
    pub(crate) config_maps: &'e ConfigMaps<'s>,
    /// `--allow-cross-namespace-resources`.
    pub(crate) cross_namespace: bool,
    /// `--global-allowed-response-headers`.
    pub(crate) allowed_response_headers: &'e [String],
    /// `--default-backend-service` is set: an error backend for `custom-http-errors`.
    pub(crate) error_backend_flag: bool,
    /// `--enable-ssl-passthrough`: `ssl-passthrough` is honoured.
    pub(crate) ssl_passthrough: bool,
}

/// Reads an Ingress's annotations over the controller-wide `defaults`. An Ingress whose
/// annotations change nothing shares the `defaults` allocation, so a table of many plain
/// Ingresses holds one policy.
pub(crate) fn read(
    annotations: Option<&BTreeMap<String, String>>,
    object: &ObjectRef,
    defaults: &RoutePolicy,
    env: &Env<'_, '_>,
    diags: &mut Diagnostics,
) -> IngressSettings {
    let Env {
        secrets,
        config_maps,
        cross_namespace,
        allowed_response_headers,
        error_backend_flag,
        ssl_passthrough,
    } = *env;
    let mut settings = IngressSettings {
        policy: defaults.clone(),
        ..IngressSettings::default()
    };
    // The global authentication is the default; `auth-url` or `enable-global-auth: "false"`
    // replaces it, once read below.
    let global = settings.policy.external_auth.take();
    let values: BTreeMap<&str, &str> = annotations
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| Some((key.strip_prefix(PREFIX)?, value.as_str())))
        .collect();
    if values.is_empty() {
        settings.policy.external_auth = global;
        return settings;
    }
    let mut reader = Reader {
        values,
        object,
        diags,
        error_backend_flag,
        ssl_passthrough,
    };
    if canary::is_canary(&reader) {
        canary::read(&mut reader, &mut settings);
        return settings;
    }
    canary::stray(&mut reader);
    let policy = &mut settings.policy;
    if let Some(on) = reader.read("ssl-redirect", parse_bool, BOOLEAN, policy.ssl_redirect) {
        policy.ssl_redirect = on;
    }
    let default = policy.force_ssl_redirect;
    if let Some(on) = reader.read("force-ssl-redirect", parse_bool, BOOLEAN, default) {
        policy.force_ssl_redirect = on;
    }
    if reader
        .values
        .keys()
        .any(|k| PROXY_KEYS.contains(k) || buffering::KEYS.contains(k))
    {
        let mut proxy = reader.proxy(&defaults.proxy, secrets);
        buffering::read(&mut reader, &mut proxy);
        if proxy != *defaults.proxy {
            settings.policy.proxy = Arc::new(proxy);
        }
    }
    let mut closing = auth::read(&mut reader, &mut settings, secrets, cross_namespace);
    closing.extend(external::read(
        &mut reader,
        &mut settings,
        global.as_ref(),
        config_maps,
        cross_namespace,
    ));
    closing.extend(client_tls::read(
        &mut reader,
        &mut settings,
        secrets,
        cross_namespace,
    ));
    closing.extend(source_ranges::read(&mut reader, &mut settings));
    closing.extend(rate_limit::read(&mut reader, &mut settings));
    // Before the snippets, whose `return` must not meet a redirect annotation unseen.
    redirect::read(&mut reader, &mut settings);
    closing.extend(snippets::read(&mut reader, &mut settings));
    closing.extend(headers::read(
        &mut reader,
        &mut settings,
        config_maps,
        allowed_response_headers,
        cross_namespace,
    ));
    closed::read(&mut reader, &mut settings, &closing);
    cors::read(&mut reader, &mut settings);
    rewrite::read(&mut reader, &mut settings);
    hosts::read(&mut reader, &mut settings);
    let others: Vec<&str> = reader
        .values
        .keys()
        .copied()
        .filter(|k| !known(k))
        .collect();
    for short in others {
        if SNIPPETS.contains(&short) {
            reader.warning(
                short,
                "configuration snippets are never executed; this annotation is ignored",
            );
        } else {
            reader.warning(short, "this annotation is not supported yet and is ignored");
        }
    }
    settings
}

/// Whether a key is read by one of the families above.
pub(crate) fn known(short: &str) -> bool {
    ["ssl-redirect", "force-ssl-redirect"].contains(&short)
        || PROXY_KEYS.contains(&short)
        || buffering::KEYS.contains(&short)
        || auth::KEYS.contains(&short)
        || external::KEYS.contains(&short)
        || client_tls::KEYS.contains(&short)
        || source_ranges::KEYS.contains(&short)
        || rate_limit::KEYS.contains(&short)
        || canary::KEYS.contains(&short)
        || cors::KEYS.contains(&short)
        || headers::KEYS.contains(&short)
        || snippets::KEYS.contains(&short)
        || closed::knows(short)
        || redirect::KEYS.contains(&short)
        || rewrite::KEYS.contains(&short)
        || hosts::KEYS.contains(&short)
}

/// The proxy annotations of one Ingress, and where to report on them.
struct Reader<'a> {
    values: BTreeMap<&'a str, &'a str>,
    object: &'a ObjectRef,
    diags: &'a mut Diagnostics,
    /// `--default-backend-service` is set.
    error_backend_flag: bool,
    /// `--enable-ssl-passthrough`.
    ssl_passthrough: bool,
}

pub(crate) fn field(short: &str) -> String {
    format!("metadata.annotations[{:?}]", format!("{PREFIX}{short}"))
}

impl<'a> Reader<'a> {
    fn get(&self, short: &str) -> Option<&'a str> {
        self.values.get(short).copied()
    }

    fn has(&self, short: &str) -> bool {
        self.values.contains_key(short)
    }

    fn error(&mut self, short: &str, message: impl Into<String>) {
        self.diags.error(self.object, field(short), message);
    }

    fn warning(&mut self, short: &str, message: impl Into<String>) {
        self.diags.warning(self.object, field(short), message);
    }

    fn info(&mut self, short: &str, message: impl Into<String>) {
        self.diags.info(self.object, field(short), message);
    }

    /// The value of `short` read by `parse`, if present and valid; if invalid, an error saying
    /// what was `expected` and that `default` stays.
    fn read<T>(
        &mut self,
        short: &str,
        parse: impl FnOnce(&str) -> Option<T>,
        expected: &str,
        default: impl Display,
    ) -> Option<T> {
        let value = self.get(short)?;
        let parsed = parse(value);
        if parsed.is_none() {
            self.error(
                short,
                format!("{value:?} is not {expected}; the default applies ({default})"),
            );
        }
        parsed
    }

    fn proxy(&mut self, defaults: &ProxyPolicy, secrets: &Secrets<'_>) -> ProxyPolicy {
        let mut p = defaults.clone();
        self.timeouts(&mut p);
        self.retries(&mut p);
        if let Some(limit) = self.read(
            "proxy-body-size",
            parse_size,
            "an nginx size (bytes, or a number with k, m or g)",
            show_size(p.body_size_limit),
        ) {
            p.body_size_limit = (limit != 0).then_some(limit);
        }
        self.balance(&mut p);
        self.affinity(&mut p);
        self.backend_protocol(&mut p);
        self.upstream_tls(&mut p, secrets);
        let default = p.access_log;
        if let Some(on) = self.read("enable-access-log", parse_bool, BOOLEAN, default) {
            p.access_log = on;
        }
        p
    }

    fn timeouts(&mut self, p: &mut ProxyPolicy) {
        for (short, target) in [
            ("proxy-connect-timeout", &mut p.connect_timeout),
            ("proxy-send-timeout", &mut p.send_timeout),
            ("proxy-read-timeout", &mut p.read_timeout),
        ] {
            let default = show_duration(*target);
            let positive = |v: &str| parse_duration(v).filter(|d| !d.is_zero());
            if let Some(d) = self.read(short, positive, &format!("{TIME} above 0"), default) {
                *target = d;
            }
        }
    }

    fn retries(&mut self, p: &mut ProxyPolicy) {
        let short = "proxy-next-upstream";
        if let Some(value) = self.get(short) {
            match parse_next_upstream(value) {
                Ok(n) => p.next_upstream = n,
                Err(why) => self.error(
                    short,
                    format!(
                        "{value:?} {why}; the default applies ({})",
                        show_next_upstream(&p.next_upstream)
                    ),
                ),
            }
        }
        if let Some(tries) = self.read(
            "proxy-next-upstream-tries",
            parse_uint::<u32>,
            "a whole number of attempts (0 or more)",
            p.next_upstream_tries,
        ) {
            p.next_upstream_tries = tries;
        }
        let default = p
            .next_upstream_timeout
            .map_or_else(|| "0, no bound".to_owned(), show_duration);
        if let Some(d) = self.read("proxy-next-upstream-timeout", parse_duration, TIME, default) {
            p.next_upstream_timeout = (!d.is_zero()).then_some(d);
        }
    }

    fn balance(&mut self, p: &mut ProxyPolicy) {
        let default = match &p.balance {
            Balance::RoundRobin => "round_robin",
            Balance::Ewma => "ewma",
            Balance::Hash(_) => "consistent hashing",
        };
        let algorithm = |v: &str| match v {
            "round_robin" => Some(Balance::RoundRobin),
            "ewma" => Some(Balance::Ewma),
            _ => None,
        };
        if let Some(b) = self.read("load-balance", algorithm, "round_robin or ewma", default) {
            p.balance = b;
        }
        let subset = self.read("upstream-hash-by-subset", parse_bool, BOOLEAN, false);
        let subset_size = self.read(
            "upstream-hash-by-subset-size",
            |v| parse_uint::<u32>(v).filter(|n| *n > 0),
            "a whole number above 0",
            3,
        );
        let short = "upstream-hash-by";
        let Some(value) = self.get(short) else {
            for key in ["upstream-hash-by-subset", "upstream-hash-by-subset-size"] {
                if self.has(key) {
                    self.warning(key, "this has no effect without upstream-hash-by");
                }
            }
            return;
        };
        let parts = match parse_hash_key(value) {
            Ok(parts) => parts,
            Err(why) => {
                self.error(
                    short,
                    format!(
                        "{value:?} {why}; this annotation is ignored and the default applies \
                         ({default}, or load-balance)"
                    ),
                );
                return;
            }
        };
        if parts
            .iter()
            .all(|part| matches!(part, HashPart::Literal(_)))
        {
            self.warning(
                short,
                format!(
                    "{value:?} holds no variable, so every request hashes to the same endpoint"
                ),
            );
        }
        let subset = subset == Some(true);
        if !subset && self.has("upstream-hash-by-subset-size") {
            self.warning(
                "upstream-hash-by-subset-size",
                "this has no effect without upstream-hash-by-subset: \"true\"",
            );
        }
        p.balance = Balance::Hash(HashKey {
            parts,
            subset_size: subset.then(|| subset_size.unwrap_or(3)),
        });
    }

    fn affinity(&mut self, p: &mut ProxyPolicy) {
        let enabled = match self.get("affinity") {
            None => false,
            Some("cookie") => true,
            Some(value) => {
                self.error(
                    "affinity",
                    format!(
                        "{value:?} is not a supported affinity (only \"cookie\" is); the \
                         default applies"
                    ),
                );
                false
            }
        };
        if !enabled {
            for &key in AFFINITY_KEYS {
                if self.has(key) {
                    self.warning(key, "this has no effect without affinity: \"cookie\"");
                }
            }
            return;
        }
        let mut a = p.affinity.as_deref().cloned().unwrap_or_default();
        let mode = |v: &str| match v {
            "balanced" => Some(AffinityMode::Balanced),
            "persistent" => Some(AffinityMode::Persistent),
            _ => None,
        };
        let default_mode = match a.mode {
            AffinityMode::Balanced => "balanced",
            AffinityMode::Persistent => "persistent",
        };
        if let Some(m) = self.read(
            "affinity-mode",
            mode,
            "balanced or persistent",
            default_mode,
        ) {
            a.mode = m;
        }
        let name = |v: &str| is_cookie_name(v).then(|| Box::<str>::from(v));
        let expected = "a cookie name (letters, digits and !#$%&'*+-.^_`|~)";
        if let Some(n) = self.read("session-cookie-name", name, expected, a.name.clone()) {
            a.name = n;
        }
        let seconds = |v: &str| parse_uint::<u64>(v).filter(|s| *s > 0);
        let expected = "a whole number of seconds above 0";
        let max_age = self.read(
            "session-cookie-max-age",
            seconds,
            expected,
            "session-cookie-expires if set, else a session cookie",
        );
        let expires = self.read(
            "session-cookie-expires",
            seconds,
            expected,
            "a session cookie",
        );
        if let Some(s) = max_age.or(expires) {
            a.max_age = Some(s);
        }
        let path = |v: &str| is_cookie_path(v).then(|| Box::<str>::from(v));
        let expected = "a path starting with / without spaces or ;";
        let default = a.path.clone().unwrap_or_else(|| "the route's path".into());
        if let Some(path) = self.read("session-cookie-path", path, expected, default) {
            a.path = Some(path);
        }
        if let Some(s) = self.read("session-cookie-secure", parse_bool, BOOLEAN, a.secure) {
            a.secure = s;
        }
        let same_site = |v: &str| match v.to_ascii_lowercase().as_str() {
            "strict" => Some(SameSite::Strict),
            "lax" => Some(SameSite::Lax),
            "none" => Some(SameSite::None),
            _ => None,
        };
        let default = a
            .same_site
            .map_or_else(|| "unset".to_owned(), |s| format!("{s:?}"));
        if let Some(s) = self.read(
            "session-cookie-samesite",
            same_site,
            "Strict, Lax or None",
            default,
        ) {
            a.same_site = Some(s);
        }
        let default = a.change_on_failure;
        let short = "session-cookie-change-on-failure";
        if let Some(c) = self.read(short, parse_bool, BOOLEAN, default) {
            a.change_on_failure = c;
        }
        p.affinity = Some(Arc::new(a));
    }

    fn backend_protocol(&mut self, p: &mut ProxyPolicy) {
        let short = "backend-protocol";
        let Some(value) = self.get(short) else {
            return;
        };
        let default = p.backend_protocol.map_or_else(
            || "the Service port's appProtocol, HTTP/1.1 when it has none".to_owned(),
            |b| format!("{b:?}").to_ascii_uppercase(),
        );
        let protocol = match value.to_ascii_uppercase().as_str() {
            "HTTP" => BackendProtocol::Http,
            "HTTPS" => BackendProtocol::Https,
            "GRPC" => BackendProtocol::Grpc,
            "GRPCS" => BackendProtocol::Grpcs,
            "H2C" => BackendProtocol::H2c,
            "AJP" | "FCGI" => {
                self.error(
                    short,
                    format!(
                        "{value:?} is not supported by Vestibule; the default applies ({default})"
                    ),
                );
                return;
            }
            _ => {
                self.error(
                    short,
                    format!(
                        "{value:?} is not a backend protocol (HTTP, HTTPS, GRPC, GRPCS or H2C); \
                         the default applies ({default})"
                    ),
                );
                return;
            }
        };
        p.backend_protocol = Some(protocol);
    }

    fn upstream_tls(&mut self, p: &mut ProxyPolicy, secrets: &Secrets<'_>) {
        if !UPSTREAM_TLS_KEYS.iter().any(|k| self.has(k)) {
            return;
        }
        let mut tls: UpstreamTls = p.upstream_tls.as_deref().cloned().unwrap_or_default();
        let on_off = |on: bool| if on { "on" } else { "off" };
        if let Some(v) = self.read("proxy-ssl-verify", parse_on_off, ON_OFF, on_off(tls.verify)) {
            tls.verify = v;
        }
        let name = |v: &str| is_dns_name(v).then(|| Box::<str>::from(v.to_ascii_lowercase()));
        let default = tls
            .server_name
            .clone()
            .unwrap_or_else(|| "the Service's DNS name".into());
        if let Some(n) = self.read("proxy-ssl-name", name, "a DNS name", default) {
            tls.server_name = Some(n);
        }
        let default = on_off(tls.send_sni);
        if let Some(v) = self.read("proxy-ssl-server-name", parse_on_off, ON_OFF, default) {
            tls.send_sni = v;
        }
        match self.get("proxy-ssl-secret") {
            Some(value) => match trusted_cas(value, secrets) {
                Ok(ca) => tls.ca = ca,
                Err(why) => {
                    // Failing closed, as ingress-nginx denies the location: a CA that was
                    // meant to be checked must not turn into no check at all.
                    tls.verify = true;
                    tls.ca = Vec::new();
                    self.error(
                        "proxy-ssl-secret",
                        format!(
                            "{why}; upstream certificates are still verified, against an empty \
                             CA list that trusts nothing, so TLS connections to this backend \
                             fail until this is fixed"
                        ),
                    );
                }
            },
            None if tls.verify && tls.ca.is_empty() && self.has("proxy-ssl-verify") => self.error(
                "proxy-ssl-verify",
                "\"on\" needs proxy-ssl-secret naming the CA to verify against; verification \
                 stays on with an empty CA list that trusts nothing, so TLS connections to this \
                 backend fail",
            ),
            None => {}
        }
        p.upstream_tls = Some(Arc::new(tls));
    }
}

/// The CA certificates (DER) in the `ca.crt` of the Secret `namespace/name`.
fn trusted_cas(value: &str, secrets: &Secrets<'_>) -> Result<Vec<Vec<u8>>, String> {
    let Some((ns, name)) = value
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
    else {
        return Err(format!("{value:?} is not namespace/name"));
    };
    let Some(secret) = secrets.get(ns, name) else {
        return Err(format!("Secret {ns}/{name} does not exist"));
    };
    let Some(pem) = secret
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .map(|b| b.0.as_slice())
        .filter(|b| !b.is_empty())
    else {
        return Err(format!("Secret {ns}/{name} has no ca.crt"));
    };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the ca.crt of Secret {ns}/{name} is not PEM: {e}"))?;
    if certificates.is_empty() {
        return Err(format!(
            "the ca.crt of Secret {ns}/{name} holds no certificate"
        ));
    }
    for (i, certificate) in certificates.iter().enumerate() {
        // rustls would refuse it only when connecting; finding out here names the Secret.
        if let Err(e) = x509_parser::parse_x509_certificate(certificate) {
            return Err(format!(
                "certificate {} in the ca.crt of Secret {ns}/{name} cannot be read: {e}",
                i + 1
            ));
        }
    }
    Ok(certificates.into_iter().map(|c| c.to_vec()).collect())
}
