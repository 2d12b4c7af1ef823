//! Settings of the data plane that are fixed for the process's life: client limits and
//! timeouts, TLS session cache, redirects and HSTS, trusted proxies, upstream pool limits,
//! blocked clients and the statuses of rate limits.

use std::time::Duration;

use http::HeaderValue;

use crate::server::client_ip::TrustedProxies;
use crate::upstream::pool::UpstreamSettings;

/// Settings of the data plane that are fixed for the process's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    pub upstream: UpstreamSettings,
    /// Time a client has to send a request's headers.
    pub client_header_timeout: Duration,
    /// A client connection with no request in flight for this long is closed.
    pub client_keepalive_timeout: Duration,
    /// HTTP/2 streams one client connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// Time a client has to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// TLS sessions kept for resumption by session ID.
    pub tls_session_cache_size: usize,
    /// The port that HTTP→HTTPS redirects send clients to; left out of the URL when 443.
    pub https_redirect_port: u16,
    /// Status of the redirect from HTTP to HTTPS (`--http-redirect-code`: 301, 302, 307 or
    /// 308).
    pub http_redirect_code: http::StatusCode,
    /// `Strict-Transport-Security` for HTTPS responses of hosts with TLS; `None` turns it off.
    pub hsts: Option<HeaderValue>,
    /// Longest request target (path and query) accepted; longer gets 414.
    pub max_uri_bytes: usize,
    /// Longest a response write may wait on a client that reads nothing; past it the
    /// connection is closed (nginx's `send_timeout`).
    pub client_send_timeout: Duration,
    /// Largest request header block accepted; larger gets 431.
    pub max_request_header_bytes: usize,
    /// Most header fields in an HTTP/1.1 request; more gets 431 (HTTP/2 is held to the
    /// block's size alone).
    pub max_request_header_fields: usize,
    /// Peers whose `X-Forwarded-For` and `X-Real-IP` are believed; others' are replaced.
    pub trusted_proxies: TrustedProxies,
    /// Every connection starts with a PROXY protocol header (v1 or v2), whose source address
    /// is the client's; connections without one are closed.
    pub proxy_protocol: bool,
    /// Clients refused on every host, before routing (`--block-cidrs`,
    /// `--block-user-agents`): 403.
    pub blocked: vestibule_model::Blocklist,
    /// The status of a request refused by `limit-rps` or `limit-rpm`
    /// (`--limit-req-status-code`).
    pub limit_req_status: http::StatusCode,
    /// The status of a request refused by `limit-connections` (`--limit-conn-status-code`).
    pub limit_conn_status: http::StatusCode,
}

/// The `Strict-Transport-Security` value for a policy.
pub fn hsts_header(max_age: u64, include_subdomains: bool, preload: bool) -> HeaderValue {
    let mut value = format!("max-age={max_age}");
    if include_subdomains {
        value.push_str("; includeSubDomains");
    }
    if preload {
        value.push_str("; preload");
    }
    // Digits, letters, `=`, `;` and spaces only: always a valid header value.
    HeaderValue::try_from(value).unwrap_or(HeaderValue::from_static("max-age=0"))
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            upstream: UpstreamSettings::default(),
            client_header_timeout: Duration::from_secs(60),
            client_keepalive_timeout: Duration::from_secs(75),
            http2_max_concurrent_streams: 128,
            tls_handshake_timeout: Duration::from_secs(10),
            tls_session_cache_size: 20_000,
            https_redirect_port: 443,
            http_redirect_code: http::StatusCode::PERMANENT_REDIRECT,
            // ingress-nginx's default: a year, subdomains included, no preload.
            hsts: Some(hsts_header(31_536_000, true, false)),
            max_uri_bytes: 8 << 10,
            max_request_header_bytes: 32 << 10,
            client_send_timeout: Duration::from_secs(60),
            max_request_header_fields: 100,
            trusted_proxies: TrustedProxies::default(),
            proxy_protocol: false,
            blocked: vestibule_model::Blocklist::default(),
            // ingress-nginx's defaults for both.
            limit_req_status: http::StatusCode::SERVICE_UNAVAILABLE,
            limit_conn_status: http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}
