//! What ingress-nginx did with the annotations Vestibule ignores, accepts without effect or
//! refuses, and what replaces them: the check's knowledge of ingress-nginx's keys, as tables.

use super::Level;

/// An annotation Vestibule does not honour, and what that costs.
pub(super) struct Unsupported {
    pub(super) key: &'static str,
    /// What ingress-nginx does with it, as the end of "ingress-nginx ...".
    pub(super) nginx: &'static str,
    /// How far ignoring it takes the Ingress from ingress-nginx's behaviour.
    pub(super) level: Level,
    pub(super) fix: &'static str,
}

const fn key(
    key: &'static str,
    nginx: &'static str,
    level: Level,
    fix: &'static str,
) -> Unsupported {
    Unsupported {
        key,
        nginx,
        level,
        fix,
    }
}

const NO_TLS_POLICY: &str = "nothing to do: Vestibule's TLS policy is fixed (TLS 1.2 and 1.3, \
                             with rustls's cipher suites)";
const NO_WAF: &str = "put a web application firewall in front of Vestibule, or keep this \
                      Ingress on ingress-nginx; Vestibule has no WAF";
const NO_MIRROR: &str = "mirror in the application or a service mesh; Vestibule does not mirror \
                         requests";
const NO_TRACING: &str = "nothing for traffic; Vestibule passes `traceparent` on but emits no \
                          spans of its own";

/// Annotations ingress-nginx reads (or read) that Vestibule does not honour. Keys that are
/// neither here nor read by Vestibule get [`UNKNOWN`].
const UNSUPPORTED: &[Unsupported] = &[
    key(
        "mirror-target",
        "copies each request to this URL",
        Level::NeedsWork,
        NO_MIRROR,
    ),
    key(
        "mirror-host",
        "sets the Host of mirrored requests",
        Level::NeedsWork,
        NO_MIRROR,
    ),
    key(
        "mirror-request-body",
        "decides whether mirrored requests carry the body",
        Level::NeedsWork,
        NO_MIRROR,
    ),
    key(
        "enable-modsecurity",
        "inspects requests with ModSecurity",
        Level::NeedsWork,
        NO_WAF,
    ),
    key(
        "enable-owasp-core-rules",
        "inspects requests with the OWASP core rule set",
        Level::NeedsWork,
        NO_WAF,
    ),
    key(
        "modsecurity-transaction-id",
        "names ModSecurity transactions",
        Level::NeedsWork,
        NO_WAF,
    ),
    key(
        "enable-opentelemetry",
        "emits OpenTelemetry spans for these requests",
        Level::Differs,
        NO_TRACING,
    ),
    key(
        "opentelemetry-trust-incoming-span",
        "continues the client's trace",
        Level::Differs,
        NO_TRACING,
    ),
    key(
        "opentelemetry-operation-name",
        "names the request's span",
        Level::Differs,
        NO_TRACING,
    ),
    key(
        "enable-rewrite-log",
        "logs rewrites at notice level",
        Level::Differs,
        "nothing: it only changed nginx's error log",
    ),
    key(
        "http2-push-preload",
        "pushes the resources of `Link: preload` headers over HTTP/2",
        Level::Differs,
        "nothing: browsers no longer accept HTTP/2 push",
    ),
    key(
        "ssl-prefer-server-ciphers",
        "prefers the server's cipher order",
        Level::Differs,
        NO_TLS_POLICY,
    ),
    key(
        "ssl-ciphers",
        "sets the TLS ciphers of the host",
        Level::Differs,
        NO_TLS_POLICY,
    ),
    key(
        "proxy-ssl-ciphers",
        "sets the ciphers offered to a TLS upstream",
        Level::Differs,
        NO_TLS_POLICY,
    ),
    key(
        "proxy-ssl-protocols",
        "sets the TLS versions offered to a TLS upstream",
        Level::Differs,
        NO_TLS_POLICY,
    ),
    key(
        "proxy-ssl-verify-depth",
        "limits the upstream certificate chain's length",
        Level::Differs,
        "nothing: Vestibule verifies chains of any length against proxy-ssl-secret's CA",
    ),
    key(
        "preserve-trailing-slash",
        "keeps a trailing slash when redirecting to HTTPS when \"true\"",
        Level::Same,
        "nothing: Vestibule always keeps the path as requested",
    ),
    key(
        "connection-proxy-header",
        "sets the Connection header sent upstream",
        Level::NeedsWork,
        "remove it: Vestibule manages upstream connections itself (keep-alive)",
    ),
    key(
        "satisfy",
        "with \"any\", lets a client in that passes either the allow list or the authentication",
        Level::NeedsWork,
        "split the paths that need one or the other into separate Ingresses: Vestibule requires every check to pass",
    ),
    key(
        "session-cookie-domain",
        "sets the Domain of the affinity cookie",
        Level::NeedsWork,
        "remove it if the cookie need not be shared across sub-domains; Vestibule sets no Domain",
    ),
    key(
        "session-cookie-conditional-samesite-none",
        "leaves SameSite=None out for browsers that mishandle it",
        Level::NeedsWork,
        "set session-cookie-samesite to what every client accepts",
    ),
    key(
        "limit-rate",
        "limits the bandwidth of each response",
        Level::NeedsWork,
        "limit bandwidth in the application or remove it: responses are sent at full speed",
    ),
    key(
        "limit-rate-after",
        "starts the bandwidth limit after this many bytes",
        Level::NeedsWork,
        "as limit-rate",
    ),
    key(
        "use-port-in-redirects",
        "adds the port to nginx's own redirects",
        Level::NeedsWork,
        "nothing unless clients need the port: Vestibule's HTTPS redirect names --https-port-for-redirects when it is not 443",
    ),
    key(
        "relative-redirects",
        "sends nginx's own redirects with a relative Location",
        Level::NeedsWork,
        "nothing unless clients need it: Vestibule's redirects are absolute",
    ),
    key(
        "disable-proxy-intercept-errors",
        "lets upstream error pages through despite custom-http-errors",
        Level::NeedsWork,
        "narrow custom-http-errors to the statuses Vestibule should replace",
    ),
    key(
        "fastcgi-index",
        "serves FastCGI backends",
        Level::NeedsWork,
        "put an HTTP server in front of the FastCGI application",
    ),
    key(
        "fastcgi-params-configmap",
        "passes FastCGI parameters",
        Level::NeedsWork,
        "put an HTTP server in front of the FastCGI application",
    ),
    key(
        "secure-backends",
        "(before 0.21) spoke HTTPS to the upstream",
        Level::NeedsWork,
        "use backend-protocol: HTTPS",
    ),
    key(
        "grpc-backend",
        "(before 0.21) spoke gRPC to the upstream",
        Level::NeedsWork,
        "use backend-protocol: GRPC",
    ),
    key(
        "upstream-max-fails",
        "(before 0.22) marked endpoints down after failures",
        Level::NeedsWork,
        "remove it: Vestibule's passive health checks do this",
    ),
    key(
        "upstream-fail-timeout",
        "(before 0.22) kept failed endpoints down",
        Level::NeedsWork,
        "remove it: Vestibule's passive health checks do this",
    ),
    key(
        "global-rate-limit",
        "(before 1.12) limited requests across replicas with memcached",
        Level::NeedsWork,
        "use limit-rps (per replica) or a rate-limiting service behind auth-url",
    ),
];

/// An annotation neither Vestibule nor this table knows.
pub(super) const UNKNOWN: Unsupported = key(
    "",
    "may have read it (it is not among the annotations Vestibule reads)",
    Level::NeedsWork,
    "check what it did under ingress-nginx; docs/annotations.md lists what Vestibule reads",
);

/// What is known of an annotation Vestibule does not honour; `None` when Vestibule reads it.
pub(super) fn unsupported(short: &str) -> Option<&'static Unsupported> {
    if let Some(known) = UNSUPPORTED.iter().find(|k| k.key == short) {
        return Some(known);
    }
    if short.starts_with("global-rate-limit") {
        return UNSUPPORTED.iter().find(|k| k.key == "global-rate-limit");
    }
    (!crate::annotations::known(short)).then_some(&UNKNOWN)
}

/// nginx's buffering keys, accepted by Vestibule without effect: for each, the value that is
/// Vestibule's own behaviour (streaming) and what ingress-nginx does otherwise.
const NO_OP: &[(&str, Option<&str>, &str)] = &[
    (
        "proxy-buffering",
        Some("off"),
        "buffers the upstream's response before sending it on",
    ),
    (
        "proxy-request-buffering",
        Some("off"),
        "reads the whole request body before it connects upstream (its default, \"on\")",
    ),
    (
        "proxy-http-version",
        Some("1.1"),
        "speaks HTTP/1.0 to the upstream",
    ),
    (
        "proxy-buffer-size",
        None,
        "answers 502 when the upstream's response head is larger than this",
    ),
    (
        "proxy-buffers-number",
        None,
        "sizes its response buffers by it",
    ),
    (
        "proxy-busy-buffers-size",
        None,
        "sizes the buffers it sends from while reading by it",
    ),
    (
        "proxy-max-temp-file-size",
        None,
        "spools large responses to disk up to this size",
    ),
    (
        "client-body-buffer-size",
        None,
        "keeps request bodies up to this size in memory and larger ones on disk",
    ),
];

/// For a buffering key and its value: whether Vestibule does what ingress-nginx does, and
/// what ingress-nginx does.
pub(super) fn no_op(short: &str, value: &str) -> (Level, &'static str) {
    match NO_OP.iter().find(|(k, _, _)| *k == short) {
        Some((_, Some(same), _)) if value.trim().eq_ignore_ascii_case(same) => (
            Level::Same,
            "is what Vestibule does: it streams bodies as they come",
        ),
        Some((_, _, nginx)) => (Level::Differs, nginx),
        None => (Level::Differs, "tunes its buffers by it"),
    }
}

/// A snippet annotation: whether Vestibule ever reads it, and what replaces it.
pub(super) struct SnippetKey {
    pub(super) key: &'static str,
    /// Read by the strict parser of the safe subset (else never read at all).
    pub(super) parsed: bool,
    /// What replaces what it is usually used for, when nothing of it can be applied.
    pub(super) replacement: &'static str,
}

pub(super) const SNIPPETS: &[SnippetKey] = &[
    SnippetKey {
        key: "configuration-snippet",
        parsed: true,
        replacement: "",
    },
    SnippetKey {
        key: "server-snippet",
        parsed: true,
        replacement: "",
    },
    SnippetKey {
        key: "stream-snippet",
        parsed: false,
        replacement: "none: Vestibule proxies HTTP and HTTPS only (ssl-passthrough for TLS \
                      that must reach the backend untouched); keep TCP and UDP services on \
                      their own LoadBalancer Services",
    },
    SnippetKey {
        key: "auth-snippet",
        parsed: false,
        replacement: "auth-proxy-set-headers (a ConfigMap of fields set on the request to the \
                      auth service) for proxy_set_header, the usual content; auth-method and \
                      auth-request-redirect for the rest",
    },
    SnippetKey {
        key: "modsecurity-snippet",
        parsed: false,
        replacement: "none: a web application firewall is out of Vestibule's scope; put one \
                      in front",
    },
];

pub(super) fn snippet(short: &str) -> Option<&'static SnippetKey> {
    SNIPPETS.iter().find(|s| s.key == short)
}

/// How a directive name is matched in [`DIRECTIVES`].
enum Name {
    Is(&'static [&'static str]),
    Starts(&'static str),
    Contains(&'static str),
}

/// What replaces a snippet directive outside the safe subset (ingress-nginx-compat.md §6.12,
/// restricted to what Vestibule has). First match wins.
const DIRECTIVES: &[(Name, &str)] = &[
    (
        Name::Contains("_by_lua"),
        "none: Lua is never run; move the logic into the application or an auth-url service",
    ),
    (
        Name::Is(&["rewrite"]),
        "rewrite-target (with use-regex) for an internal rewrite; for a redirect, permanent-redirect or temporal-redirect on an Ingress of its own with an Exact path",
    ),
    (
        Name::Is(&["location"]),
        "a path of its own: another Ingress with an Exact or Prefix path and its own annotations (to block it, `configuration-snippet: return 403;` there, which the subset maps, or an allow list)",
    ),
    (
        Name::Is(&["if"]),
        "force-ssl-redirect for scheme checks (with --trusted-proxies behind a load balancer), canary-by-header to route on a header, allowlist-source-range or denylist-source-range for addresses",
    ),
    (
        Name::Is(&["set", "map"]),
        "none: header values may use $host, $scheme, $remote_addr, $request_uri, $request_id and $http_NAME directly",
    ),
    (
        Name::Is(&["grpc_set_header"]),
        "proxy_set_header, which the subset maps and which applies to gRPC requests too",
    ),
    (
        Name::Is(&["proxy_set_header", "more_set_input_headers"]),
        "the same directive with values using only $host, $scheme, $remote_addr, $request_uri, $request_id and $http_NAME (then it maps); upstream-vhost for Host",
    ),
    (
        Name::Is(&["more_set_headers", "add_header", "more_clear_headers"]),
        "the same directive without options or wildcards (then it maps), or custom-headers with a ConfigMap",
    ),
    (
        Name::Is(&["expires"]),
        "more_set_headers \"Cache-Control: max-age=N\" (maps), or custom-headers",
    ),
    (
        Name::Is(&["return"]),
        "return CODE [text], or return 301|302|303|307|308 URL without variables (both map); permanent-redirect or temporal-redirect; app-root",
    ),
    (
        Name::Is(&["allow", "deny"]),
        "allowlist-source-range or denylist-source-range",
    ),
    (
        Name::Is(&["satisfy"]),
        "none: allow lists and authentication both apply; split paths that need only one into an Ingress of their own",
    ),
    (
        Name::Is(&["auth_basic", "auth_basic_user_file"]),
        "auth-type: basic with auth-secret",
    ),
    (
        Name::Is(&["auth_request", "auth_request_set"]),
        "auth-url with auth-response-headers",
    ),
    (
        Name::Is(&["limit_req", "limit_req_zone"]),
        "limit-rps or limit-rpm, with limit-burst-multiplier",
    ),
    (
        Name::Is(&["limit_conn", "limit_conn_zone"]),
        "limit-connections",
    ),
    (
        Name::Is(&["limit_rate", "limit_rate_after"]),
        "none: bandwidth limits are not supported",
    ),
    (
        Name::Is(&["proxy_redirect"]),
        "proxy-redirect-from and proxy-redirect-to",
    ),
    (Name::Is(&["proxy_cookie_domain"]), "proxy-cookie-domain"),
    (Name::Is(&["proxy_cookie_path"]), "proxy-cookie-path"),
    (
        Name::Is(&["proxy_read_timeout", "grpc_read_timeout"]),
        "proxy-read-timeout",
    ),
    (
        Name::Is(&["proxy_send_timeout", "grpc_send_timeout"]),
        "proxy-send-timeout",
    ),
    (
        Name::Is(&["proxy_connect_timeout", "grpc_connect_timeout"]),
        "proxy-connect-timeout",
    ),
    (Name::Is(&["client_max_body_size"]), "proxy-body-size"),
    (
        Name::Is(&[
            "proxy_next_upstream",
            "proxy_next_upstream_tries",
            "proxy_next_upstream_timeout",
        ]),
        "proxy-next-upstream, proxy-next-upstream-tries, proxy-next-upstream-timeout",
    ),
    (
        Name::Is(&["proxy_http_version"]),
        "proxy-http-version (accepted; Vestibule speaks HTTP/1.1)",
    ),
    (
        Name::Starts("proxy_buffer"),
        "proxy-buffering and proxy-buffer-size (accepted: Vestibule streams)",
    ),
    (
        Name::Is(&[
            "proxy_request_buffering",
            "client_body_buffer_size",
            "proxy_max_temp_file_size",
        ]),
        "the annotation of the same name (accepted: Vestibule streams)",
    ),
    (
        Name::Starts("proxy_ssl_"),
        "proxy-ssl-verify, proxy-ssl-secret, proxy-ssl-name and proxy-ssl-server-name",
    ),
    (
        Name::Is(&[
            "ssl_verify_client",
            "ssl_client_certificate",
            "ssl_verify_depth",
        ]),
        "auth-tls-secret, auth-tls-verify-client and auth-tls-verify-depth",
    ),
    (
        Name::Is(&["error_page"]),
        "custom-http-errors with default-backend",
    ),
    (Name::Is(&["access_log"]), "enable-access-log"),
    (
        Name::Is(&["proxy_pass", "grpc_pass"]),
        "the path's backend Service, or upstream-vhost and rewrite-target for the Host and path it is sent with",
    ),
    (
        Name::Starts("gzip"),
        "none: Vestibule does not compress; let the application compress",
    ),
    (
        Name::Starts("brotli"),
        "none: Vestibule does not compress; let the application compress",
    ),
    (
        Name::Starts("sub_filter"),
        "none: Vestibule never rewrites bodies; change the application",
    ),
    (
        Name::Starts("modsecurity"),
        "none: a web application firewall is out of Vestibule's scope",
    ),
];

/// What replaces a snippet directive Vestibule does not map.
pub(super) fn replacement(directive: &str) -> &'static str {
    DIRECTIVES
        .iter()
        .find(|(name, _)| match name {
            Name::Is(names) => names.contains(&directive),
            Name::Starts(prefix) => directive.starts_with(prefix),
            Name::Contains(part) => directive.contains(part),
        })
        .map_or(
            "no typed equivalent: change the application, or keep this Ingress on ingress-nginx",
            |(_, replacement)| replacement,
        )
}

/// What to do about an annotation that closes its Ingress (503).
pub(super) fn fail_closed_fix(short: &str) -> &'static str {
    match short {
        "auth-type" => {
            "use auth-type: basic, or auth-url for any other scheme (digest is not supported); or keep this Ingress on ingress-nginx"
        }
        "custom-headers" => {
            "allow each field of the ConfigMap with --global-allowed-response-headers (as ingress-nginx requires), and check that the ConfigMap exists"
        }
        "auth-snippet" => {
            "remove it: auth-proxy-set-headers sets fields on the request to the auth service"
        }
        "configuration-snippet" | "server-snippet" => {
            "express the access control with allowlist-source-range, denylist-source-range or an auth annotation"
        }
        _ if short.starts_with("auth-tls-") => {
            "fix the client CA Secret or the value named: until then no request gets through"
        }
        _ if short.starts_with("limit-") => {
            "fix the value named: a guessed limit could let a flood through or refuse legitimate clients"
        }
        _ if short.ends_with("source-range") => {
            "fix the address list: a list read wrong would let in, or keep out, the wrong clients"
        }
        _ => {
            "fix the value named, or remove the annotation if serving without the protection is really meant; until then keep this Ingress on ingress-nginx"
        }
    }
}
