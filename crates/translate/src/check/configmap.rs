//! ingress-nginx's controller ConfigMap, key by key: what each key in use did, and the
//! Vestibule flag that carries it over, or why nothing does. The keys are one table
//! ([`KEYS`]); the forwarded-headers family, whose keys only mean something together, is read
//! by [`forwarded`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Serialize;

use crate::annotations::syntax::parse_bool;
use crate::report::namespace_of;

/// The ConfigMap, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigMapCheck {
    pub namespace: String,
    pub name: String,
    /// One per key of its `data`, in key order.
    pub keys: Vec<ConfigKey>,
}

/// One key of the ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigKey {
    pub key: String,
    pub value: String,
    pub status: KeyStatus,
    /// What ingress-nginx does with it.
    pub meaning: String,
    /// The Vestibule flag (with the value carried over) that does the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    /// Why nothing is needed, why there is no equivalent, or what to know about the flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyStatus {
    /// Set this flag on `vestibule run`.
    Flag,
    /// The value is ingress-nginx's default, which is Vestibule's too: nothing to carry over.
    Default,
    /// Vestibule needs nothing for it (it does this anyway, or the concern is nginx's own).
    NotNeeded,
    /// Vestibule has nothing that does it.
    NoEquivalent,
    /// A key this check does not know.
    Unknown,
}

/// How a value becomes a flag's.
#[derive(Clone, Copy)]
enum Value {
    /// As it is: ingress-nginx's and Vestibule's syntaxes agree (times, sizes, lists, booleans).
    Same,
    /// A switch: the flag alone when the value is true.
    Switch,
    /// `round_robin` / `ewma`.
    LoadBalance,
    /// `"4 8k"`: four buffers of 8k, one of which must hold the request line or any field.
    HeaderBuffers,
    /// nginx's error log levels to Vestibule's.
    LogLevel,
    /// `true`: retry non-idempotent requests too.
    RetryNonIdempotent,
    /// `true`: no access log.
    NoAccessLog,
}

enum Map {
    /// `--flag` of Vestibule, and how the value converts.
    Flag(&'static str, Value),
    NotNeeded(&'static str),
    None(&'static str),
}

struct Entry {
    key: &'static str,
    meaning: &'static str,
    /// ingress-nginx's default, when Vestibule's is the same.
    default: Option<&'static str>,
    map: Map,
}

const fn flag(
    key: &'static str,
    meaning: &'static str,
    default: Option<&'static str>,
    flag: &'static str,
) -> Entry {
    Entry {
        key,
        meaning,
        default,
        map: Map::Flag(flag, Value::Same),
    }
}

const fn not_needed(key: &'static str, meaning: &'static str, why: &'static str) -> Entry {
    Entry {
        key,
        meaning,
        default: None,
        map: Map::NotNeeded(why),
    }
}

const fn none(key: &'static str, meaning: &'static str, why: &'static str) -> Entry {
    Entry {
        key,
        meaning,
        default: None,
        map: Map::None(why),
    }
}

const fn convert(
    key: &'static str,
    meaning: &'static str,
    default: Option<&'static str>,
    flag: &'static str,
    value: Value,
) -> Entry {
    Entry {
        key,
        meaning,
        default,
        map: Map::Flag(flag, value),
    }
}

const SNIPPET: &str = "Vestibule never executes configuration text";
const TLS_POLICY: &str = "Vestibule's TLS policy is fixed: TLS 1.2 and 1.3 with rustls's cipher suites, session resumption on";
const NO_COMPRESSION: &str = "Vestibule does not compress responses; let the application compress";
const NO_TRACING: &str = "Vestibule emits no trace spans; `traceparent` and `tracestate` are passed to the backend untouched";
const NO_WAF: &str = "a web application firewall is out of Vestibule's scope; put one in front";
const LOG_FORMAT: &str = "Vestibule's access log has fixed schemas, `--access-log text` or `--access-log json` (docs/observability.md lists the fields)";
const NGINX_INTERNAL: &str = "an nginx internal with no counterpart to set";
const STREAMING: &str = "Vestibule streams bodies without buffering them to disk";
const BUFFER_KEYS: &str = "sizes nginx's buffers";

/// ingress-nginx's ConfigMap keys (docs/user-guide/nginx-configuration/configmap.md at
/// v1.15.1), except the forwarded-headers family.
const KEYS: &[Entry] = &[
    flag(
        "add-headers",
        "sets the fields of a ConfigMap on every response",
        None,
        "--add-headers",
    ),
    flag(
        "proxy-set-headers",
        "sets the fields of a ConfigMap on every request sent upstream",
        None,
        "--proxy-set-headers",
    ),
    flag(
        "hide-headers",
        "removes these fields from every upstream response",
        None,
        "--hide-headers",
    ),
    flag(
        "global-allowed-response-headers",
        "lists the fields custom-headers may set",
        None,
        "--global-allowed-response-headers",
    ),
    flag(
        "allow-cross-namespace-resources",
        "lets annotations name Secrets and ConfigMaps of other namespaces",
        Some("false"),
        "--allow-cross-namespace-resources",
    ),
    not_needed(
        "allow-snippet-annotations",
        "lets Ingresses carry snippet annotations",
        "snippets are never executed; the safe subset of configuration-snippet and server-snippet is mapped to typed rules whatever this says",
    ),
    not_needed(
        "annotations-risk-level",
        "refuses annotations above a risk level",
        "no annotation value is ever pasted into configuration",
    ),
    not_needed(
        "annotation-value-word-blocklist",
        "refuses annotation values holding these words",
        "no annotation value is ever pasted into configuration",
    ),
    none(
        "access-log-path",
        "writes the access log to this file",
        "the access log goes to standard output (`--access-log`), Vestibule's own log to standard error",
    ),
    none(
        "error-log-path",
        "writes the error log to this file",
        "Vestibule's log goes to standard error",
    ),
    convert(
        "error-log-level",
        "sets the error log's level",
        Some("notice"),
        "--log-level",
        Value::LogLevel,
    ),
    convert(
        "disable-access-log",
        "turns the access log off",
        Some("false"),
        "--access-log",
        Value::NoAccessLog,
    ),
    none(
        "access-log-params",
        "adds parameters (buffer, flush) to access_log",
        "the access log is written in batches by a thread of its own",
    ),
    none(
        "enable-access-log-for-default-backend",
        "logs requests answered by the default backend",
        "requests that match no rule are logged as any other",
    ),
    none(
        "skip-access-log-urls",
        "leaves these paths out of the access log",
        "use enable-access-log: \"false\" on the Ingress that serves them",
    ),
    none(
        "log-format-upstream",
        "sets the access log line's format",
        LOG_FORMAT,
    ),
    none(
        "log-format-escape-json",
        "escapes access log values for JSON",
        LOG_FORMAT,
    ),
    none(
        "log-format-escape-none",
        "leaves access log values unescaped",
        LOG_FORMAT,
    ),
    none(
        "log-format-stream",
        "sets the TCP/UDP access log line's format",
        "Vestibule proxies no TCP or UDP streams",
    ),
    none(
        "enable-modsecurity",
        "inspects requests with ModSecurity",
        NO_WAF,
    ),
    none(
        "enable-owasp-modsecurity-crs",
        "inspects requests with the OWASP core rule set",
        NO_WAF,
    ),
    none("modsecurity-snippet", "configures ModSecurity", NO_WAF),
    not_needed(
        "client-header-buffer-size",
        BUFFER_KEYS,
        "request heads are limited by --max-request-header-bytes and --max-uri-bytes as a whole",
    ),
    flag(
        "client-header-timeout",
        "gives a client this long to send a request's head (408)",
        Some("60"),
        "--client-header-timeout",
    ),
    not_needed("client-body-buffer-size", BUFFER_KEYS, STREAMING),
    none(
        "client-body-timeout",
        "limits the pause between two reads of a request body",
        "Vestibule has no separate client body timeout",
    ),
    flag(
        "http2-max-concurrent-streams",
        "limits the streams of one HTTP/2 connection",
        Some("128"),
        "--http2-max-concurrent-streams",
    ),
    flag(
        "hsts",
        "sends Strict-Transport-Security on HTTPS responses",
        Some("true"),
        "--hsts",
    ),
    flag(
        "hsts-include-subdomains",
        "adds includeSubDomains to HSTS",
        Some("true"),
        "--hsts-include-subdomains",
    ),
    flag(
        "hsts-max-age",
        "sets HSTS's max-age",
        Some("31536000"),
        "--hsts-max-age",
    ),
    flag(
        "hsts-preload",
        "adds preload to HSTS",
        Some("false"),
        "--hsts-preload",
    ),
    flag(
        "keep-alive",
        "closes an idle client connection after this many seconds",
        Some("75"),
        "--client-keepalive-timeout",
    ),
    none(
        "keep-alive-requests",
        "closes a client connection after this many requests",
        "client connections stay open for any number of requests until idle (--client-keepalive-timeout)",
    ),
    convert(
        "large-client-header-buffers",
        "sizes the buffers of a request's head: the request line or any one field must fit in one",
        Some("4 8k"),
        "--max-request-header-bytes",
        Value::HeaderBuffers,
    ),
    none(
        "enable-underscores-in-headers",
        "accepts request fields with _ in their names",
        "not a Vestibule setting; check clients that send such fields",
    ),
    convert(
        "load-balance",
        "chooses the endpoint-balancing algorithm",
        Some("round_robin"),
        "--load-balance",
        Value::LoadBalance,
    ),
    flag(
        "upstream-keepalive-connections",
        "keeps this many idle connections to upstreams",
        Some("320"),
        "--upstream-keepalive-connections",
    ),
    flag(
        "upstream-keepalive-timeout",
        "closes idle upstream connections after this many seconds",
        Some("60"),
        "--upstream-keepalive-timeout",
    ),
    none(
        "upstream-keepalive-requests",
        "closes an upstream connection after this many requests",
        "upstream connections are reused until idle or closed by the upstream",
    ),
    none(
        "upstream-keepalive-time",
        "closes an upstream connection after this long",
        "upstream connections are reused until idle or closed by the upstream",
    ),
    convert(
        "use-proxy-protocol",
        "expects the PROXY protocol from the load balancer",
        Some("false"),
        "--proxy-protocol",
        Value::Switch,
    ),
    none(
        "proxy-protocol-header-timeout",
        "waits this long for the PROXY header",
        "the PROXY header must come within the client header timeout",
    ),
    flag(
        "proxy-body-size",
        "limits request bodies (413 above)",
        Some("1m"),
        "--proxy-body-size",
    ),
    flag(
        "proxy-connect-timeout",
        "limits connecting to an endpoint",
        Some("5"),
        "--proxy-connect-timeout",
    ),
    flag(
        "proxy-read-timeout",
        "limits the wait for the upstream's response and between two reads",
        Some("60"),
        "--proxy-read-timeout",
    ),
    flag(
        "proxy-send-timeout",
        "limits the pause between two writes to the upstream",
        Some("60"),
        "--proxy-send-timeout",
    ),
    flag(
        "proxy-next-upstream",
        "tries another endpoint on these failures",
        Some("error timeout"),
        "--proxy-next-upstream",
    ),
    flag(
        "proxy-next-upstream-tries",
        "limits the attempts",
        Some("3"),
        "--proxy-next-upstream-tries",
    ),
    flag(
        "proxy-next-upstream-timeout",
        "starts no new attempt after this long",
        Some("0"),
        "--proxy-next-upstream-timeout",
    ),
    convert(
        "retry-non-idempotent",
        "retries POST, PATCH and LOCK requests too",
        Some("false"),
        "--proxy-next-upstream",
        Value::RetryNonIdempotent,
    ),
    not_needed("proxy-buffering", "buffers upstream responses", STREAMING),
    not_needed(
        "proxy-buffer-size",
        "sizes the buffer of the upstream's response head",
        "Vestibule accepts response heads up to 64 KiB (the proxy-buffer-size annotation raises it per Ingress)",
    ),
    not_needed("proxy-buffers-number", BUFFER_KEYS, STREAMING),
    not_needed("proxy-busy-buffers-size", BUFFER_KEYS, STREAMING),
    not_needed(
        "proxy-request-buffering",
        "reads whole request bodies before connecting upstream",
        STREAMING,
    ),
    not_needed(
        "proxy-max-temp-file-size",
        "spools large responses to disk",
        STREAMING,
    ),
    none(
        "proxy-cookie-path",
        "rewrites the Path of upstream cookies everywhere",
        "set the proxy-cookie-path annotation on the Ingresses that need it",
    ),
    none(
        "proxy-cookie-domain",
        "rewrites the Domain of upstream cookies everywhere",
        "set the proxy-cookie-domain annotation on the Ingresses that need it",
    ),
    none(
        "proxy-redirect-from",
        "rewrites upstream redirects everywhere",
        "set the proxy-redirect-from annotation on the Ingresses that need it",
    ),
    flag(
        "ssl-redirect",
        "redirects plain HTTP to HTTPS on hosts with TLS",
        Some("true"),
        "--ssl-redirect",
    ),
    flag(
        "force-ssl-redirect",
        "redirects plain HTTP to HTTPS on every host",
        Some("false"),
        "--force-ssl-redirect",
    ),
    flag(
        "http-redirect-code",
        "sets the status of the HTTPS redirect",
        Some("308"),
        "--http-redirect-code",
    ),
    none(
        "no-tls-redirect-locations",
        "spares these paths the HTTPS redirect",
        "Vestibule spares ACME HTTP-01 challenges (/.well-known/acme-challenge) only",
    ),
    flag(
        "custom-http-errors",
        "sends these statuses to the default backend",
        None,
        "--custom-http-errors",
    ),
    flag(
        "whitelist-source-range",
        "allows only these client addresses everywhere (403)",
        None,
        "--allowlist-source-range",
    ),
    flag(
        "denylist-source-range",
        "refuses these client addresses everywhere (403)",
        None,
        "--denylist-source-range",
    ),
    flag(
        "block-cidrs",
        "refuses these client addresses before anything else (403)",
        None,
        "--block-cidrs",
    ),
    flag(
        "block-user-agents",
        "refuses these user agents (403)",
        None,
        "--block-user-agents",
    ),
    none(
        "block-referers",
        "refuses these referers (403)",
        "Vestibule does not filter on Referer",
    ),
    flag(
        "limit-req-status-code",
        "sets the status of requests over limit-rps or limit-rpm",
        Some("503"),
        "--limit-req-status-code",
    ),
    flag(
        "limit-conn-status-code",
        "sets the status of requests over limit-connections",
        Some("503"),
        "--limit-conn-status-code",
    ),
    none(
        "limit-rate",
        "limits every response's bandwidth",
        "Vestibule has no bandwidth limits",
    ),
    none(
        "limit-rate-after",
        "starts the bandwidth limit after this many bytes",
        "Vestibule has no bandwidth limits",
    ),
    none(
        "limit-conn-zone-variable",
        "keys limit-connections by this variable",
        "limits are kept per client address",
    ),
    flag(
        "global-auth-url",
        "asks this service before every request of Ingresses without auth-url",
        None,
        "--global-auth-url",
    ),
    flag(
        "global-auth-method",
        "sets the method of global-auth-url's request",
        None,
        "--global-auth-method",
    ),
    flag(
        "global-auth-signin",
        "sends clients without credentials to this sign-in page",
        None,
        "--global-auth-signin",
    ),
    flag(
        "global-auth-signin-redirect-param",
        "names the way-back parameter of the sign-in URL",
        Some("rd"),
        "--global-auth-signin-redirect-param",
    ),
    flag(
        "global-auth-response-headers",
        "copies these fields of the auth answer upstream",
        None,
        "--global-auth-response-headers",
    ),
    flag(
        "global-auth-request-redirect",
        "sets X-Auth-Request-Redirect",
        None,
        "--global-auth-request-redirect",
    ),
    flag(
        "global-auth-always-set-cookie",
        "passes the auth service's cookies on every response",
        Some("false"),
        "--global-auth-always-set-cookie",
    ),
    flag(
        "global-auth-cache-key",
        "caches global authentication answers by this key",
        None,
        "--global-auth-cache-key",
    ),
    flag(
        "global-auth-cache-duration",
        "sets which answers are cached, and how long",
        Some("200 202 401 5m"),
        "--global-auth-cache-duration",
    ),
    none(
        "global-auth-snippet",
        "adds configuration to the global auth request",
        SNIPPET,
    ),
    flag(
        "no-auth-locations",
        "spares these paths global authentication",
        Some("/.well-known/acme-challenge"),
        "--no-auth-locations",
    ),
    none(
        "main-snippet",
        "adds configuration to nginx's main block",
        SNIPPET,
    ),
    none(
        "http-snippet",
        "adds configuration to nginx's http block",
        SNIPPET,
    ),
    none(
        "server-snippet",
        "adds configuration to every server",
        SNIPPET,
    ),
    none(
        "location-snippet",
        "adds configuration to every location",
        SNIPPET,
    ),
    none("stream-snippet", "adds TCP/UDP configuration", SNIPPET),
    Entry {
        key: "ssl-protocols",
        meaning: "sets the TLS versions",
        default: Some("TLSv1.2 TLSv1.3"),
        map: Map::None(TLS_POLICY),
    },
    none("ssl-ciphers", "sets the TLS cipher suites", TLS_POLICY),
    none("ssl-ecdh-curve", "sets the key exchange curves", TLS_POLICY),
    none("ssl-dh-param", "sets Diffie-Hellman parameters", TLS_POLICY),
    none("ssl-early-data", "accepts TLS 1.3 early data", TLS_POLICY),
    none("ssl-session-cache", "caches TLS sessions", TLS_POLICY),
    none(
        "ssl-session-cache-size",
        "sizes the TLS session cache",
        TLS_POLICY,
    ),
    none(
        "ssl-session-tickets",
        "issues TLS session tickets",
        TLS_POLICY,
    ),
    none(
        "ssl-session-ticket-key",
        "sets the session ticket key",
        TLS_POLICY,
    ),
    none(
        "ssl-session-timeout",
        "keeps TLS sessions this long",
        TLS_POLICY,
    ),
    none("ssl-buffer-size", "sizes TLS records", TLS_POLICY),
    none(
        "ssl-reject-handshake",
        "refuses handshakes for unknown names",
        "handshakes for unknown names get the default certificate",
    ),
    none(
        "enable-ocsp",
        "staples OCSP answers",
        "Vestibule does not staple OCSP answers",
    ),
    Entry {
        key: "use-http2",
        meaning: "offers HTTP/2",
        default: Some("true"),
        map: Map::None("Vestibule always offers HTTP/2 over TLS by ALPN"),
    },
    none("use-gzip", "compresses responses with gzip", NO_COMPRESSION),
    none("gzip-level", "sets gzip's level", NO_COMPRESSION),
    none(
        "gzip-min-length",
        "compresses responses above this length",
        NO_COMPRESSION,
    ),
    none(
        "gzip-types",
        "compresses these content types",
        NO_COMPRESSION,
    ),
    none(
        "gzip-disable",
        "does not compress for these user agents",
        NO_COMPRESSION,
    ),
    none(
        "enable-brotli",
        "compresses responses with brotli",
        NO_COMPRESSION,
    ),
    none("brotli-level", "sets brotli's level", NO_COMPRESSION),
    none(
        "brotli-min-length",
        "compresses responses above this length",
        NO_COMPRESSION,
    ),
    none(
        "brotli-types",
        "compresses these content types",
        NO_COMPRESSION,
    ),
    none(
        "enable-opentelemetry",
        "emits OpenTelemetry spans",
        NO_TRACING,
    ),
    none(
        "use-geoip",
        "looks clients up in GeoIP databases",
        "Vestibule has no GeoIP lookup",
    ),
    none(
        "use-geoip2",
        "looks clients up in GeoIP2 databases",
        "Vestibule has no GeoIP lookup",
    ),
    convert(
        "worker-processes",
        "runs this many nginx workers",
        Some("auto"),
        "--worker-threads",
        Value::Same,
    ),
    flag(
        "worker-shutdown-timeout",
        "lets requests finish this long on shutdown",
        None,
        "--shutdown-grace-period",
    ),
    none(
        "max-worker-connections",
        "limits each worker's connections",
        "Vestibule does not cap connections; the load balancer or the pod's limits do",
    ),
    not_needed(
        "server-tokens",
        "shows nginx's version in Server",
        "Vestibule's own answers say `Server: vestibule`, without a version; a backend's own Server is passed on (--hide-headers Server removes it)",
    ),
    Entry {
        key: "generate-request-id",
        meaning: "makes an X-Request-ID when the client sent none",
        default: Some("true"),
        map: Map::None("Vestibule always makes one"),
    },
    none(
        "proxy-add-original-uri-header",
        "sends X-Original-Uri upstream",
        "Vestibule does not send X-Original-Uri (error backends get X-Original-URI)",
    ),
    none(
        "service-upstream",
        "sends every Ingress's requests to Services' cluster IPs",
        "set the service-upstream annotation on each Ingress that needs it",
    ),
    not_needed(
        "strict-validate-path-type",
        "refuses Exact and Prefix paths with characters outside a safe set",
        "Vestibule checks Exact and Prefix paths as the API server does, always",
    ),
    none(
        "relative-redirects",
        "sends nginx's own redirects with a relative Location",
        "Vestibule's redirects are absolute",
    ),
    none(
        "default-type",
        "sets the Content-Type of nginx's own answers",
        "Vestibule's own answers are text/plain",
    ),
    none(
        "enable-syslog",
        "sends the logs to syslog",
        "logs go to standard output and standard error",
    ),
    none(
        "proxy-stream-timeout",
        "limits idle TCP/UDP streams",
        "Vestibule proxies no TCP or UDP streams",
    ),
    not_needed(
        "proxy-ssl-location-only",
        "configures upstream TLS per location only",
        "upstream TLS is per route already",
    ),
    not_needed("grpc-buffer-size-kb", BUFFER_KEYS, STREAMING),
];

/// Keys of nginx internals, each a name or a prefix ending in `-`.
const INTERNAL: &[&str] = &[
    "reuse-port",
    "enable-multi-accept",
    "map-hash-",
    "server-name-hash-",
    "proxy-headers-hash-",
    "variables-hash-",
    "worker-cpu-affinity",
    "max-worker-open-files",
    "enable-aio-write",
    "lua-shared-dicts",
    "enable-serial-reloads",
    "nginx-status-",
    "debug-connections",
    "bind-address",
    "disable-ipv6",
    "disable-ipv6-dns",
    "http2-max-field-size",
    "http2-max-header-size",
    "http2-max-requests",
    "ignore-invalid-headers",
];

/// Prefixes of families that share one answer.
const FAMILIES: &[(&str, &str, &str)] = &[
    ("otel-", "configures OpenTelemetry", NO_TRACING),
    ("otlp-", "configures OpenTelemetry", NO_TRACING),
    ("opentelemetry-", "configures OpenTelemetry", NO_TRACING),
    ("jaeger-", "configures Jaeger tracing", NO_TRACING),
    (
        "geoip2-",
        "configures GeoIP2",
        "Vestibule has no GeoIP lookup",
    ),
    (
        "syslog-",
        "configures syslog",
        "logs go to standard output and standard error",
    ),
    (
        "proxy-stream-",
        "configures TCP/UDP streams",
        "Vestibule proxies no TCP or UDP streams",
    ),
];

pub(super) fn check(config_map: &ConfigMap) -> ConfigMapCheck {
    let data: BTreeMap<&str, &str> = config_map
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let keys = data
        .iter()
        .map(|(key, value)| forwarded(key, value, &data).unwrap_or_else(|| lookup(key, value)))
        .collect();
    ConfigMapCheck {
        namespace: namespace_of(&config_map.metadata).to_owned(),
        name: config_map.metadata.name.clone().unwrap_or_default(),
        keys,
    }
}

fn row(key: &str, value: &str, status: KeyStatus, meaning: &str) -> ConfigKey {
    ConfigKey {
        key: key.to_owned(),
        value: value.to_owned(),
        status,
        meaning: meaning.to_owned(),
        flag: None,
        note: None,
    }
}

fn lookup(key: &str, value: &str) -> ConfigKey {
    let Some(entry) = KEYS.iter().find(|e| e.key == key) else {
        if INTERNAL
            .iter()
            .any(|i| key == *i || (i.ends_with('-') && key.starts_with(i)))
        {
            let mut r = row(key, value, KeyStatus::NotNeeded, "tunes nginx itself");
            r.note = Some(NGINX_INTERNAL.to_owned());
            return r;
        }
        if let Some((_, meaning, why)) = FAMILIES.iter().find(|(p, _, _)| key.starts_with(p)) {
            let mut r = row(key, value, KeyStatus::NoEquivalent, meaning);
            r.note = Some((*why).to_owned());
            return r;
        }
        let mut r = row(
            key,
            value,
            KeyStatus::Unknown,
            "may read it; this check does not know it",
        );
        r.note = Some("compare with docs/configuration.md (`vestibule run --help`)".to_owned());
        return r;
    };
    let is_default = entry
        .default
        .is_some_and(|d| d.eq_ignore_ascii_case(value.trim()));
    let mut r = row(key, value, KeyStatus::NoEquivalent, entry.meaning);
    match &entry.map {
        Map::NotNeeded(why) => {
            r.status = KeyStatus::NotNeeded;
            r.note = Some((*why).to_owned());
        }
        Map::None(why) if is_default => {
            r.status = KeyStatus::Default;
            r.note = Some((*why).to_owned());
        }
        Map::None(why) => r.note = Some((*why).to_owned()),
        Map::Flag(flag, convert) => match carry(flag, *convert, value) {
            Ok(flag) => {
                r.status = if is_default {
                    KeyStatus::Default
                } else {
                    KeyStatus::Flag
                };
                r.flag = Some(flag);
            }
            Err(why) => r.note = Some(why),
        },
    }
    if r.status == KeyStatus::Default && r.note.is_none() {
        r.note = Some("ingress-nginx's default, and Vestibule's: nothing to carry over".to_owned());
    }
    if key == "custom-http-errors" {
        r.note = Some("with --default-backend-service as the error backend".to_owned());
    }
    r
}

/// The flag, with the value converted; or why the value has no equivalent.
fn carry(flag: &str, convert: Value, value: &str) -> Result<String, String> {
    let value = value.trim();
    let quoted = |v: &str| {
        if v.is_empty() || v.contains(char::is_whitespace) {
            format!("{flag} {v:?}")
        } else {
            format!("{flag} {v}")
        }
    };
    match convert {
        Value::Same => Ok(quoted(value)),
        Value::Switch => Ok(match parse_bool(value) {
            Some(true) => flag.to_owned(),
            _ => format!("(no {flag})"),
        }),
        Value::LoadBalance => match value {
            "round_robin" => Ok(format!("{flag} round-robin")),
            "ewma" => Ok(format!("{flag} ewma")),
            other => Err(format!(
                "{other:?} has no equivalent: Vestibule balances by round-robin or ewma"
            )),
        },
        Value::HeaderBuffers => {
            let mut parts = value.split_whitespace();
            let count = parts.next().and_then(|n| n.parse::<u64>().ok());
            let size = parts.next().and_then(crate::values::size);
            match (count, size) {
                (Some(count), Some(size)) => Ok(format!(
                    "{flag} {} --max-uri-bytes {size}",
                    count.saturating_mul(size)
                )),
                _ => Err(format!("{value:?} is not \"COUNT SIZE\"")),
            }
        }
        Value::LogLevel => match value {
            "debug" => Ok(format!("{flag} debug")),
            "info" | "notice" => Ok(format!("{flag} info")),
            "warn" => Ok(format!("{flag} warn")),
            "error" | "crit" | "alert" | "emerg" => Ok(format!("{flag} error")),
            other => Err(format!("{other:?} is not an nginx log level")),
        },
        Value::RetryNonIdempotent => Ok(match parse_bool(value) {
            Some(true) => format!("{flag} \"error timeout non_idempotent\""),
            _ => format!("(no non_idempotent in {flag})"),
        }),
        Value::NoAccessLog => Ok(match parse_bool(value) {
            Some(true) => format!("{flag} off"),
            _ => format!("(no {flag} off)"),
        }),
    }
}

/// `use-forwarded-headers`, `enable-real-ip`, `proxy-real-ip-cidr`, `forwarded-for-header`
/// and `compute-full-forwarded-for`: which peers' forwarding fields are believed, which
/// Vestibule says with `--trusted-proxies` alone.
fn forwarded(key: &str, value: &str, data: &BTreeMap<&str, &str>) -> Option<ConfigKey> {
    let on = |k: &str| data.get(k).and_then(|v| parse_bool(v.trim())) == Some(true);
    let trusting = on("use-forwarded-headers") || on("enable-real-ip");
    let cidrs = data
        .get("proxy-real-ip-cidr")
        .map_or("0.0.0.0/0", |v| v.trim());
    let everyone = cidrs
        .split(',')
        .any(|c| matches!(c.trim(), "0.0.0.0/0" | "::/0"));
    let trusted = |r: &mut ConfigKey| {
        r.status = KeyStatus::Flag;
        r.flag = Some(format!("--trusted-proxies {}", cidrs.replace(' ', "")));
        r.note = Some(if everyone {
            "ingress-nginx believed these fields from every client (proxy-real-ip-cidr 0.0.0.0/0, \
             its default); give --trusted-proxies your load balancer's addresses instead"
                .to_owned()
        } else {
            "X-Forwarded-For, X-Real-IP and X-Forwarded-Proto from these peers are believed; \
             X-Forwarded-Host and X-Forwarded-Port are not"
                .to_owned()
        });
    };
    let mut r = row(key, value, KeyStatus::Default, "");
    match key {
        "use-forwarded-headers" | "enable-real-ip" => {
            r.meaning = if key == "use-forwarded-headers" {
                "believes X-Forwarded-* fields from the peers in proxy-real-ip-cidr".to_owned()
            } else {
                "takes the client address from forwarded-for-header of the peers in proxy-real-ip-cidr".to_owned()
            };
            if on(key) {
                trusted(&mut r);
            } else {
                r.note = Some(
                    "ingress-nginx's default, and Vestibule's without --trusted-proxies".to_owned(),
                );
            }
        }
        "proxy-real-ip-cidr" => {
            r.meaning = "lists the peers whose forwarding fields are believed".to_owned();
            if trusting {
                trusted(&mut r);
            } else {
                r.status = KeyStatus::NotNeeded;
                r.note = Some("no effect without use-forwarded-headers or enable-real-ip, in ingress-nginx too".to_owned());
            }
        }
        "forwarded-for-header" => {
            r.meaning = "names the field the client address is read from".to_owned();
            if !value.trim().eq_ignore_ascii_case("X-Forwarded-For") {
                r.status = KeyStatus::NoEquivalent;
                r.note = Some(
                    "Vestibule reads the client address from X-Forwarded-For of trusted peers \
                     only: have the load balancer send it, or use --proxy-protocol"
                        .to_owned(),
                );
            }
        }
        "compute-full-forwarded-for" => {
            r.meaning = "appends the peer to X-Forwarded-For instead of replacing it".to_owned();
            r.status = KeyStatus::NotNeeded;
            r.note = Some(
                "Vestibule appends to the X-Forwarded-For of trusted peers and replaces any \
                 other's"
                    .to_owned(),
            );
        }
        _ => return None,
    }
    Some(r)
}

/// The keys whose flags change what the compile makes of the Ingresses, set on `options` as
/// the flags would set them, so that the Ingresses are checked as Vestibule will serve them
/// with the ConfigMap carried over. Returns the flags set.
pub(super) fn apply(config_map: &ConfigMap, options: &mut crate::Options) -> Vec<String> {
    let mut set = Vec::new();
    for (key, value) in config_map.data.iter().flatten() {
        let target = match key.as_str() {
            "ssl-redirect" => &mut options.ssl_redirect,
            "force-ssl-redirect" => &mut options.force_ssl_redirect,
            "allow-cross-namespace-resources" => &mut options.allow_cross_namespace_resources,
            _ => continue,
        };
        if let Some(on) = parse_bool(value.trim()) {
            *target = on;
            set.push(format!("--{key} {on}"));
        }
    }
    set
}
