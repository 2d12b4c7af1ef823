//! How the proxy treats the requests of a route, from annotations and flags: upstream
//! timeouts, retries, the request body limit, endpoint selection, session affinity, and the
//! protocol and TLS spoken to the upstream. Plain data; the proxy gives it meaning.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// One route's proxying behaviour. Routes of one Ingress share one `Arc` of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyPolicy {
    /// Time to establish a connection to an endpoint (`proxy-connect-timeout`, 5 s).
    pub connect_timeout: Duration,
    /// Longest pause between two writes of the request to the upstream
    /// (`proxy-send-timeout`, 60 s).
    pub send_timeout: Duration,
    /// Longest wait for the response headers, and between two reads of the response body
    /// (`proxy-read-timeout`, 60 s).
    pub read_timeout: Duration,
    /// When a failed attempt is tried again on another endpoint (`proxy-next-upstream`).
    pub next_upstream: NextUpstream,
    /// Attempts in all, the first included (`proxy-next-upstream-tries`, 3; 0 = unlimited,
    /// bounded by the endpoints).
    pub next_upstream_tries: u32,
    /// Time after which no new attempt starts (`proxy-next-upstream-timeout`; none by default).
    pub next_upstream_timeout: Option<Duration>,
    /// Largest request body accepted (`proxy-body-size`, 1m; `None` = unlimited).
    pub body_size_limit: Option<u64>,
    /// How an endpoint is picked (`load-balance`, `upstream-hash-by`).
    pub balance: Balance,
    /// Cookie session affinity (`affinity: cookie` and `session-cookie-*`).
    pub affinity: Option<Arc<CookieAffinity>>,
    /// Protocol to the upstream when an annotation says (`backend-protocol`); `None` uses
    /// the Service port's `appProtocol`.
    pub backend_protocol: Option<BackendProtocol>,
    /// Verification of upstream TLS (`proxy-ssl-*`).
    pub upstream_tls: Option<Arc<UpstreamTls>>,
    /// Write an access log line for these requests (`enable-access-log`, on).
    pub access_log: bool,
    /// Largest upstream HTTP/1.1 response head accepted (64 KiB; `proxy-buffer-size` above
    /// that raises it).
    pub response_head_limit: usize,
}

impl Default for ProxyPolicy {
    fn default() -> Self {
        ProxyPolicy {
            connect_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            next_upstream: NextUpstream::default(),
            next_upstream_tries: 3,
            next_upstream_timeout: None,
            body_size_limit: Some(1 << 20),
            balance: Balance::RoundRobin,
            affinity: None,
            backend_protocol: None,
            upstream_tls: None,
            access_log: true,
            response_head_limit: 64 << 10,
        }
    }
}

/// The cases in which a request is tried again on another endpoint. The default is
/// ingress-nginx's `error timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NextUpstream {
    /// The connection could not be made, or broke before a response began.
    pub error: bool,
    /// Connecting, or waiting for the response headers, timed out.
    pub timeout: bool,
    /// The upstream answered with one of these statuses.
    pub http_500: bool,
    pub http_502: bool,
    pub http_503: bool,
    pub http_504: bool,
    pub http_403: bool,
    pub http_404: bool,
    pub http_429: bool,
    /// Also retry requests with a non-idempotent method (POST, LOCK, PATCH) once they may
    /// have reached the upstream.
    pub non_idempotent: bool,
}

impl Default for NextUpstream {
    fn default() -> Self {
        NextUpstream {
            error: true,
            timeout: true,
            ..NextUpstream::off()
        }
    }
}

impl NextUpstream {
    /// Never try another endpoint (`off`).
    pub const fn off() -> NextUpstream {
        NextUpstream {
            error: false,
            timeout: false,
            http_500: false,
            http_502: false,
            http_503: false,
            http_504: false,
            http_403: false,
            http_404: false,
            http_429: false,
            non_idempotent: false,
        }
    }

    /// Whether an upstream response with this status is tried again elsewhere.
    pub fn on_status(&self, status: u16) -> bool {
        match status {
            500 => self.http_500,
            502 => self.http_502,
            503 => self.http_503,
            504 => self.http_504,
            403 => self.http_403,
            404 => self.http_404,
            429 => self.http_429,
            _ => false,
        }
    }
}

/// Endpoint selection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    RoundRobin,
    /// Least exponentially weighted moving average of response time.
    Ewma,
    /// Consistent hashing of a request value, so the same value goes to the same endpoint
    /// while the endpoints stay the same, and mostly still when they change.
    Hash(HashKey),
}

/// The value hashed by `upstream-hash-by`: nginx variables and literal text, concatenated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HashKey {
    pub parts: Vec<HashPart>,
    /// `upstream-hash-by-subset`: hash to a group of this many endpoints, then pick one of
    /// them at random.
    pub subset_size: Option<u32>,
}

/// One piece of a hash key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashPart {
    Literal(Box<str>),
    /// `$remote_addr`: the client's IP (after trusted-proxy handling).
    RemoteAddr,
    /// `$request_uri`: path and query as the client sent them.
    RequestUri,
    /// `$uri`: the normalised path.
    Uri,
    /// `$host`.
    Host,
    /// `$http_NAME`: a request header, name lower case with `-` (nginx writes `_`).
    Header(Box<str>),
    /// `$cookie_NAME`.
    Cookie(Box<str>),
    /// `$arg_NAME`: a query parameter.
    Arg(Box<str>),
}

/// Session affinity by a cookie naming the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CookieAffinity {
    /// `session-cookie-name`, default `INGRESSCOOKIE`.
    pub name: Box<str>,
    /// `session-cookie-max-age` in seconds; `None` makes a session cookie.
    pub max_age: Option<u64>,
    /// `session-cookie-path`; default the route's path (for Prefix) or `/`.
    pub path: Option<Box<str>>,
    /// `session-cookie-secure`: mark the cookie Secure (also always on HTTPS).
    pub secure: bool,
    /// `session-cookie-samesite`.
    pub same_site: Option<SameSite>,
    /// `affinity-mode`.
    pub mode: AffinityMode,
    /// `session-cookie-change-on-failure`: when the endpoint is gone, pick and set a new one
    /// (on by default here; off keeps sending the stale cookie's clients elsewhere without
    /// rewriting it).
    pub change_on_failure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl Default for CookieAffinity {
    /// `affinity: cookie` with no `session-cookie-*` annotation.
    fn default() -> Self {
        CookieAffinity {
            name: "INGRESSCOOKIE".into(),
            max_age: None,
            path: None,
            secure: false,
            same_site: None,
            mode: AffinityMode::Balanced,
            change_on_failure: true,
        }
    }
}

/// What happens to sticky sessions when endpoints are added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AffinityMode {
    /// Sessions may move so new endpoints get their share.
    #[default]
    Balanced,
    /// A session stays on its endpoint for as long as it exists.
    Persistent,
}

/// The protocol named by `backend-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BackendProtocol {
    Http,
    Https,
    Grpc,
    Grpcs,
    H2c,
}

/// Upstream TLS verification (`proxy-ssl-verify: "on"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct UpstreamTls {
    /// Verify the upstream's certificate against `ca`.
    pub verify: bool,
    /// Trusted CA certificates, DER (`proxy-ssl-secret`'s `ca.crt`).
    #[serde(skip)]
    pub ca: Vec<Vec<u8>>,
    /// Name to send in SNI and verify (`proxy-ssl-name`); default the Service's DNS name.
    pub server_name: Option<Box<str>>,
    /// Send SNI (`proxy-ssl-server-name`).
    pub send_sni: bool,
}

impl Default for UpstreamTls {
    /// ingress-nginx's defaults: `proxy-ssl-verify: off`, `proxy-ssl-server-name: off`.
    fn default() -> Self {
        UpstreamTls {
            verify: false,
            ca: Vec::new(),
            server_name: None,
            send_sni: false,
        }
    }
}
