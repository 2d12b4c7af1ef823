//! The command line: subcommands and flags, each flag also read from `VESTIBULE_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use vestibule_translate::Options;

#[derive(Debug, Parser)]
#[command(name = "vestibule", version, about = "A Kubernetes Ingress controller", long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve traffic, following configuration from manifest files or the Kubernetes API.
    Run(Box<RunArgs>),
    /// Compile manifests offline and print every diagnostic; exit 1 if any object is invalid.
    Validate(Box<ValidateArgs>),
    /// Migration report: which Ingresses of an ingress-nginx installation Vestibule serves the
    /// same, which differ and how, and which need work; exit 1 if any needs work or is
    /// refused, 2 for usage or read errors.
    Check(Box<CheckArgs>),
    /// What Vestibule would do with one request, and why: the host and path rule chosen over
    /// every other candidate, then each phase's decision.
    Explain(Box<ExplainArgs>),
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Manifest file or directory to read objects from instead of the Kubernetes API
    /// (repeatable; directories are read recursively; .yaml, .yml, .json).
    #[arg(
        long = "manifests",
        value_name = "PATH",
        env = "VESTIBULE_MANIFESTS",
        value_delimiter = ','
    )]
    pub manifests: Vec<PathBuf>,

    /// Address of the plain HTTP listener.
    #[arg(
        long,
        value_name = "ADDR",
        env = "VESTIBULE_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub http_addr: SocketAddr,

    /// Address of the HTTPS listener.
    #[arg(
        long,
        value_name = "ADDR",
        env = "VESTIBULE_HTTPS_ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub https_addr: SocketAddr,

    /// Port that plain-HTTP requests for TLS hosts are redirected to (left out of the URL
    /// when 443). Set it to the HTTPS port clients reach, which behind a load balancer or
    /// port mapping is not --https-addr's.
    #[arg(
        long,
        value_name = "PORT",
        env = "VESTIBULE_HTTPS_PORT_FOR_REDIRECTS",
        default_value_t = 443
    )]
    pub https_port_for_redirects: u16,

    /// Status of the redirect from HTTP to HTTPS: 301, 302, 307 or 308.
    #[arg(
        long,
        value_name = "CODE",
        env = "VESTIBULE_HTTP_REDIRECT_CODE",
        default_value_t = 308,
        value_parser = parse_redirect_code
    )]
    pub http_redirect_code: u16,

    /// Client addresses refused (403) on every host, before routing (CIDR ranges, comma
    /// separated; ingress-nginx's block-cidrs).
    #[arg(long, value_name = "CIDRS", env = "VESTIBULE_BLOCK_CIDRS", value_delimiter = ',', value_parser = parse_cidr)]
    pub block_cidrs: Vec<vestibule_model::Cidr>,

    /// User agents refused (403) on every host, comma separated (ingress-nginx's
    /// block-user-agents): a plain entry matches the whole User-Agent, case-insensitively;
    /// `~REGEX` is a case-sensitive regular expression, `~*REGEX` a case-insensitive one.
    #[arg(long, value_name = "AGENTS", env = "VESTIBULE_BLOCK_USER_AGENTS", value_delimiter = ',', value_parser = parse_agent)]
    pub block_user_agents: Vec<vestibule_model::AgentRule>,

    /// Status of a request refused by limit-rps or limit-rpm (ingress-nginx's
    /// limit-req-status-code; 429 is the usual alternative).
    #[arg(long, value_name = "CODE", env = "VESTIBULE_LIMIT_REQ_STATUS_CODE", default_value_t = 503, value_parser = parse_error_code)]
    pub limit_req_status_code: u16,

    /// Status of a request refused by limit-connections (limit-conn-status-code).
    #[arg(long, value_name = "CODE", env = "VESTIBULE_LIMIT_CONN_STATUS_CODE", default_value_t = 503, value_parser = parse_error_code)]
    pub limit_conn_status_code: u16,

    /// Clients each rate-limited Ingress keeps counters for; past it, the client seen least
    /// recently is forgotten (about 130 bytes each).
    #[arg(
        long,
        value_name = "N",
        env = "VESTIBULE_LIMIT_MAX_CLIENTS",
        default_value_t = 100_000
    )]
    pub limit_max_clients: usize,

    /// Send Strict-Transport-Security on HTTPS responses of hosts with TLS.
    #[arg(long, value_name = "BOOL", env = "VESTIBULE_HSTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub hsts: bool,

    /// HSTS max-age, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "VESTIBULE_HSTS_MAX_AGE",
        default_value_t = 31_536_000
    )]
    pub hsts_max_age: u64,

    /// Add includeSubDomains to HSTS.
    #[arg(long, value_name = "BOOL", env = "VESTIBULE_HSTS_INCLUDE_SUBDOMAINS", default_value_t = true, action = clap::ArgAction::Set)]
    pub hsts_include_subdomains: bool,

    /// Add preload to HSTS.
    #[arg(long, value_name = "BOOL", env = "VESTIBULE_HSTS_PRELOAD", default_value_t = false, action = clap::ArgAction::Set)]
    pub hsts_preload: bool,

    /// Address of the admin server: /healthz, /readyz, /debug/config.
    #[arg(
        long,
        value_name = "ADDR",
        env = "VESTIBULE_ADMIN_ADDR",
        default_value = "0.0.0.0:10254"
    )]
    pub admin_addr: SocketAddr,

    /// Serve the read-only dashboard at /dashboard/ and its JSON API at /api/v1/ on the
    /// admin address. It shows hosts, Services, endpoints and certificates: keep the admin
    /// address off public networks.
    #[arg(long, env = "VESTIBULE_DASHBOARD")]
    pub dashboard: bool,

    #[command(flatten)]
    pub compile: CompileArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub proxy: ProxyArgs,

    /// Access log: one line per request on standard output, readable text or JSON, or off
    /// [default: the --log-format's format]
    #[arg(long, value_enum, env = "VESTIBULE_ACCESS_LOG")]
    pub access_log: Option<AccessLogArg>,

    /// Record request metrics for /metrics (configuration metrics are always there).
    #[arg(long, value_name = "BOOL", env = "VESTIBULE_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics: bool,

    /// Label request metrics with the virtual host too (one series set per host: mind the
    /// cardinality).
    #[arg(long, value_name = "BOOL", env = "VESTIBULE_METRICS_PER_HOST", default_value_t = false, action = clap::ArgAction::Set)]
    pub metrics_per_host: bool,

    /// Log line format.
    #[arg(long, value_enum, env = "VESTIBULE_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter, as `info` or `info,vestibule_proxy=debug` (RUST_LOG syntax).
    #[arg(
        long,
        value_name = "FILTER",
        env = "VESTIBULE_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,

    /// Proxy worker threads; 0 means one per CPU, 1 a single-threaded runtime.
    #[arg(
        long,
        value_name = "N",
        env = "VESTIBULE_WORKER_THREADS",
        default_value_t = 0
    )]
    pub worker_threads: usize,

    /// On SIGTERM or SIGINT, how long in-flight requests may take to finish before exit
    /// (`30s`, `500ms`, `2m`, or plain seconds).
    #[arg(long, value_name = "DURATION", env = "VESTIBULE_SHUTDOWN_GRACE_PERIOD", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace_period: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Manifest files or directories.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    #[command(flatten)]
    pub compile: CompileArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Files or directories to read (`kubectl get ... -o yaml` or `-o json` dumps, Lists,
    /// manifests); without any, the cluster is read (list calls only).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// kubeconfig file to reach the API server with; without it, the in-cluster service
    /// account, else KUBECONFIG or ~/.kube/config.
    #[arg(long, value_name = "PATH", env = "VESTIBULE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// The IngressClass controller of the installation being checked.
    #[arg(long, value_name = "NAME", default_value = "k8s.io/ingress-nginx")]
    pub controller_class: String,

    /// Its legacy kubernetes.io/ingress.class annotation value, and the name of its
    /// IngressClass when the input holds none (a `kubectl get ingress` dump).
    #[arg(long, value_name = "NAME", default_value = "nginx")]
    pub ingress_class: String,

    /// Also check Ingresses that name no class (ingress-nginx's --watch-ingress-without-class).
    #[arg(long)]
    pub watch_ingress_without_class: bool,

    /// Only check this namespace (repeatable or comma separated; default: all), as `run`'s
    /// flag of the same name.
    #[arg(long = "watch-namespace", value_name = "NS", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,

    /// ingress-nginx's ConfigMap: its keys are checked and mapped to Vestibule's flags.
    #[arg(long, value_name = "NS/NAME", value_parser = parse_namespaced)]
    pub nginx_configmap: Option<(String, String)>,

    /// Read Secrets too, to check TLS pairs and authentication files (never printed);
    /// without it, Secrets are not listed, and those in files are dropped unread.
    #[arg(long)]
    pub read_secrets: bool,

    /// Check as if Vestibule ran with --enable-ssl-passthrough.
    #[arg(long)]
    pub enable_ssl_passthrough: bool,

    /// table (colour on a terminal), markdown, or json (versioned schema).
    #[arg(long, value_enum, default_value = "table")]
    pub output: CheckOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CheckOutput {
    Table,
    Markdown,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// The request's host (as in its Host header or URL).
    #[arg(value_name = "HOST")]
    pub host: String,

    /// The request target: a path, with a query if any.
    #[arg(value_name = "PATH")]
    pub path: String,

    /// A request header field, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// The request method.
    #[arg(long, value_name = "METHOD", default_value = "GET")]
    pub method: String,

    /// A cookie, `name=value` (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub cookie: Vec<String>,

    /// The client's address, for allow and deny lists.
    #[arg(long, value_name = "IP")]
    pub client_ip: Option<std::net::IpAddr>,

    /// The request arrives over HTTPS.
    #[arg(long)]
    pub https: bool,

    /// Manifest files or directories to compile; without any, the cluster is read (list
    /// calls only).
    #[arg(long = "manifests", value_name = "PATH", value_delimiter = ',')]
    pub manifests: Vec<PathBuf>,

    /// kubeconfig file to reach the API server with.
    #[arg(long, value_name = "PATH", env = "VESTIBULE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// text, or json.
    #[arg(long, value_enum, default_value = "text")]
    pub output: ExplainOutput,

    #[command(flatten)]
    pub compile: CompileArgs,

    #[command(flatten)]
    pub proxy: ProxyArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExplainOutput {
    Text,
    Json,
}

/// Controller-wide proxying defaults (annotations of the same name override them per
/// Ingress) and limits, with ingress-nginx's defaults.
#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    /// Time to connect to an endpoint (annotation proxy-connect-timeout).
    #[arg(long, value_name = "DURATION", env = "VESTIBULE_PROXY_CONNECT_TIMEOUT", default_value = "5s", value_parser = nginx_duration)]
    pub proxy_connect_timeout: Duration,

    /// Longest pause between two writes of a request body to the upstream
    /// (proxy-send-timeout).
    #[arg(long, value_name = "DURATION", env = "VESTIBULE_PROXY_SEND_TIMEOUT", default_value = "60s", value_parser = nginx_duration)]
    pub proxy_send_timeout: Duration,

    /// Longest wait for response headers, and between two reads of the response body
    /// (proxy-read-timeout); 504 when exceeded before the headers.
    #[arg(long, value_name = "DURATION", env = "VESTIBULE_PROXY_READ_TIMEOUT", default_value = "60s", value_parser = nginx_duration)]
    pub proxy_read_timeout: Duration,

    /// When to try another endpoint (proxy-next-upstream): error, timeout, http_500,
    /// http_502, http_503, http_504, http_403, http_404, http_429, non_idempotent, or off.
    #[arg(long, value_name = "CONDITIONS", env = "VESTIBULE_PROXY_NEXT_UPSTREAM", default_value = "error timeout", value_parser = next_upstream)]
    pub proxy_next_upstream: vestibule_model::NextUpstream,

    /// Attempts in all, the first included (proxy-next-upstream-tries); 0 = no limit.
    #[arg(
        long,
        value_name = "N",
        env = "VESTIBULE_PROXY_NEXT_UPSTREAM_TRIES",
        default_value_t = 3
    )]
    pub proxy_next_upstream_tries: u32,

    /// No new attempt starts after this long (proxy-next-upstream-timeout); 0 = no limit.
    #[arg(long, value_name = "DURATION", env = "VESTIBULE_PROXY_NEXT_UPSTREAM_TIMEOUT", default_value = "0", value_parser = nginx_duration_or_zero)]
    pub proxy_next_upstream_timeout: Duration,

    /// Largest request body (proxy-body-size): 413 beyond it; 0 = unlimited.
    #[arg(long, value_name = "SIZE", env = "VESTIBULE_PROXY_BODY_SIZE", default_value = "1m", value_parser = nginx_size)]
    pub proxy_body_size: u64,

    /// Endpoint selection (load-balance).
    #[arg(
        long,
        value_enum,
        env = "VESTIBULE_LOAD_BALANCE",
        default_value = "round-robin"
    )]
    pub load_balance: LoadBalance,

    /// Longest request target (path and query) accepted; longer gets 414.
    #[arg(
        long,
        value_name = "BYTES",
        env = "VESTIBULE_MAX_URI_BYTES",
        default_value_t = 8192
    )]
    pub max_uri_bytes: usize,

    /// Largest request header block accepted; larger gets 431.
    #[arg(
        long,
        value_name = "BYTES",
        env = "VESTIBULE_MAX_REQUEST_HEADER_BYTES",
        default_value_t = 32768
    )]
    pub max_request_header_bytes: usize,

    /// Most header fields in an HTTP/1.1 request; more gets 431. Up to 100 they are parsed
    /// in place; a larger limit costs every request an allocation of room for that many.
    #[arg(
        long,
        value_name = "N",
        env = "VESTIBULE_MAX_REQUEST_HEADER_FIELDS",
        default_value_t = 100,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub max_request_header_fields: u16,

    /// Time a client has to send a request's headers.
    #[arg(long, value_name = "DURATION", env = "VESTIBULE_CLIENT_HEADER_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub client_header_timeout: Duration,

    /// A client connection with no request in flight for this long is closed.
    #[arg(long, value_name = "DURATION", env = "VESTIBULE_CLIENT_KEEPALIVE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub client_keepalive_timeout: Duration,

    /// Longest a response may wait on a client that reads none of it (nginx's send_timeout);
    /// past it the connection is closed.
    #[arg(long, value_name = "DURATION", env = "VESTIBULE_CLIENT_SEND_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub client_send_timeout: Duration,

    /// HTTP/2 streams one client connection may have open at once.
    #[arg(
        long,
        value_name = "N",
        env = "VESTIBULE_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = 128
    )]
    pub http2_max_concurrent_streams: u32,

    /// Idle keep-alive connections to upstreams are closed after this long.
    #[arg(long, value_name = "DURATION", env = "VESTIBULE_UPSTREAM_KEEPALIVE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub upstream_keepalive_timeout: Duration,

    /// Idle keep-alive connections kept per endpoint.
    #[arg(
        long,
        value_name = "N",
        env = "VESTIBULE_UPSTREAM_KEEPALIVE_CONNECTIONS",
        default_value_t = 320
    )]
    pub upstream_keepalive_connections: usize,

    /// Proxies (CIDRs or addresses, comma list) whose X-Forwarded-For and X-Real-IP are
    /// believed; from anyone else those headers are replaced.
    #[arg(long, value_name = "CIDRS", env = "VESTIBULE_TRUSTED_PROXIES", value_delimiter = ',', value_parser = trusted_proxy)]
    pub trusted_proxies: Vec<String>,

    /// Every connection starts with a PROXY protocol v1 or v2 header from the load balancer
    /// in front; its source address is the client's. Connections without one are closed.
    #[arg(long, env = "VESTIBULE_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,
}

fn trusted_proxy(value: &str) -> Result<String, String> {
    vestibule_proxy::TrustedProxies::parse([value]).map_err(|e| e.to_string())?;
    Ok(value.trim().to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LoadBalance {
    RoundRobin,
    Ewma,
}

impl ProxyArgs {
    /// The policy Ingresses start from before their annotations.
    pub(crate) fn policy(&self) -> vestibule_model::ProxyPolicy {
        vestibule_model::ProxyPolicy {
            connect_timeout: self.proxy_connect_timeout,
            send_timeout: self.proxy_send_timeout,
            read_timeout: self.proxy_read_timeout,
            next_upstream: self.proxy_next_upstream,
            next_upstream_tries: self.proxy_next_upstream_tries,
            next_upstream_timeout: (!self.proxy_next_upstream_timeout.is_zero())
                .then_some(self.proxy_next_upstream_timeout),
            body_size_limit: (self.proxy_body_size != 0).then_some(self.proxy_body_size),
            balance: match self.load_balance {
                LoadBalance::RoundRobin => vestibule_model::Balance::RoundRobin,
                LoadBalance::Ewma => vestibule_model::Balance::Ewma,
            },
            ..vestibule_model::ProxyPolicy::default()
        }
    }
}

/// A duration that must not be zero (a timeout of nothing would fail every request).
fn nginx_duration(value: &str) -> Result<Duration, String> {
    match parse_duration(value)? {
        d if d.is_zero() => Err(format!("{value:?}: must be more than 0")),
        d => Ok(d),
    }
}

fn nginx_duration_or_zero(value: &str) -> Result<Duration, String> {
    parse_duration(value)
}

fn nginx_size(value: &str) -> Result<u64, String> {
    vestibule_translate::values::size(value)
        .ok_or_else(|| format!("{value:?} is not a size such as 1m, 512k or 0"))
}

fn next_upstream(value: &str) -> Result<vestibule_model::NextUpstream, String> {
    vestibule_translate::values::next_upstream(value)
}

/// Flags for running against the Kubernetes API (without `--manifests`).
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// kubeconfig file to reach the API server with; without it, the in-cluster service
    /// account, else KUBECONFIG or ~/.kube/config.
    #[arg(long, value_name = "PATH", env = "VESTIBULE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Service whose load-balancer addresses (else cluster IP) are written to the status of
    /// the Ingresses served.
    #[arg(long, value_name = "NS/NAME", env = "VESTIBULE_PUBLISH_SERVICE", value_parser = parse_namespaced, conflicts_with = "publish_status_address")]
    pub publish_service: Option<(String, String)>,

    /// IPs or host names to write to the status of the Ingresses served (comma list).
    #[arg(
        long,
        value_name = "ADDRS",
        env = "VESTIBULE_PUBLISH_STATUS_ADDRESS",
        value_delimiter = ','
    )]
    pub publish_status_address: Vec<String>,

    /// Write Ingress status (needs --publish-service or --publish-status-address).
    #[arg(long, value_name = "BOOL", env = "VESTIBULE_UPDATE_STATUS", default_value_t = true, action = clap::ArgAction::Set)]
    pub update_status: bool,

    /// Name of the Lease used to elect the replica that writes status and Events.
    #[arg(
        long,
        value_name = "NAME",
        env = "VESTIBULE_ELECTION_ID",
        default_value = "vestibule-leader"
    )]
    pub election_id: String,

    /// How long other replicas wait after the leader's last renewal before taking over.
    #[arg(long, value_name = "DURATION", env = "VESTIBULE_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub election_lease_duration: Duration,

    /// How long the leader keeps leading while it cannot renew; less than the lease duration.
    #[arg(long, value_name = "DURATION", env = "VESTIBULE_ELECTION_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub election_renew_deadline: Duration,

    /// How often replicas try to acquire or renew the lease; less than the renew deadline.
    #[arg(long, value_name = "DURATION", env = "VESTIBULE_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub election_retry_period: Duration,
}

impl ClusterArgs {
    /// Checks what clap cannot: the election timings' order.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.election_renew_deadline >= self.election_lease_duration {
            return Err(format!(
                "--election-renew-deadline ({:?}) must be shorter than --election-lease-duration ({:?}), or two replicas could lead at once",
                self.election_renew_deadline, self.election_lease_duration
            ));
        }
        if self.election_retry_period >= self.election_renew_deadline {
            return Err(format!(
                "--election-retry-period ({:?}) must be shorter than --election-renew-deadline ({:?})",
                self.election_retry_period, self.election_renew_deadline
            ));
        }
        Ok(())
    }

    /// Where status addresses come from, if status is written at all.
    pub(crate) fn status_addresses(
        &self,
    ) -> Option<vestibule_controller::kubernetes::StatusAddresses> {
        use vestibule_controller::kubernetes::StatusAddresses;
        if !self.update_status {
            return None;
        }
        if let Some((namespace, name)) = &self.publish_service {
            return Some(StatusAddresses::Service {
                namespace: namespace.clone(),
                name: name.clone(),
            });
        }
        let fixed: Vec<String> = self
            .publish_status_address
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        (!fixed.is_empty()).then_some(StatusAddresses::Fixed(fixed))
    }
}

/// Flags that change what is compiled; shared by `run` and `validate` so that validating
/// with the same flags gives the same answer as serving.
#[derive(Debug, Args)]
pub(crate) struct CompileArgs {
    /// IngressClasses whose spec.controller equals this are served.
    #[arg(
        long,
        value_name = "NAME",
        env = "VESTIBULE_CONTROLLER_CLASS",
        default_value = "vestibule.dev/ingress-controller"
    )]
    pub controller_class: String,

    /// Value of the legacy kubernetes.io/ingress.class annotation that selects this controller.
    #[arg(
        long,
        value_name = "NAME",
        env = "VESTIBULE_INGRESS_CLASS",
        default_value = "vestibule"
    )]
    pub ingress_class: String,

    /// Also serve Ingresses that name no class.
    #[arg(long, env = "VESTIBULE_WATCH_INGRESS_WITHOUT_CLASS")]
    pub watch_ingress_without_class: bool,

    /// Only read objects in this namespace (repeatable; default: all).
    #[arg(
        long = "watch-namespace",
        value_name = "NS",
        env = "VESTIBULE_WATCH_NAMESPACE",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,

    /// Service that answers requests matching no rule when no Ingress sets a default backend.
    #[arg(long, value_name = "NS/NAME", env = "VESTIBULE_DEFAULT_BACKEND_SERVICE", value_parser = parse_namespaced)]
    pub default_backend_service: Option<(String, String)>,

    /// ConfigMap whose data (field: value, variables such as $host allowed) is set on every
    /// request sent upstream (ingress-nginx's proxy-set-headers).
    #[arg(long, value_name = "NS/NAME", env = "VESTIBULE_PROXY_SET_HEADERS", value_parser = parse_namespaced)]
    pub proxy_set_headers: Option<(String, String)>,

    /// ConfigMap whose data (field: value) is set on every response (ingress-nginx's
    /// add-headers).
    #[arg(long, value_name = "NS/NAME", env = "VESTIBULE_ADD_HEADERS", value_parser = parse_namespaced)]
    pub add_headers: Option<(String, String)>,

    /// Response fields removed from every response, comma separated (ingress-nginx's
    /// hide-headers).
    #[arg(long, value_name = "NAMES", env = "VESTIBULE_HIDE_HEADERS", value_delimiter = ',', value_parser = parse_header_name)]
    pub hide_headers: Vec<String>,

    /// Response fields the custom-headers annotation may set, comma separated (ingress-nginx's
    /// global-allowed-response-headers); custom-headers naming any other closes its Ingress.
    #[arg(long, value_name = "NAMES", env = "VESTIBULE_GLOBAL_ALLOWED_RESPONSE_HEADERS", value_delimiter = ',', value_parser = parse_header_name)]
    pub global_allowed_response_headers: Vec<String>,

    /// Statuses (comma separated, 400 to 599) whose responses every Ingress replaces by
    /// --default-backend-service's answer, unless its custom-http-errors says otherwise.
    #[arg(long, value_name = "CODES", env = "VESTIBULE_CUSTOM_HTTP_ERRORS", value_delimiter = ',', value_parser = parse_error_code)]
    pub custom_http_errors: Vec<u16>,

    /// Honour the ssl-passthrough annotation: HTTPS connections for such a host are not
    /// terminated but spliced, untouched, to the Service of its `/` path (chosen by the
    /// ClientHello's server name).
    #[arg(long, env = "VESTIBULE_ENABLE_SSL_PASSTHROUGH")]
    pub enable_ssl_passthrough: bool,

    /// TLS Secret served to handshakes whose server name has no certificate of its own (and
    /// to clients that send none); without it, a self-signed certificate made at start-up.
    #[arg(long, value_name = "NS/NAME", env = "VESTIBULE_DEFAULT_SSL_CERTIFICATE", value_parser = parse_namespaced)]
    pub default_ssl_certificate: Option<(String, String)>,

    /// Redirect plain HTTP to HTTPS on hosts with TLS, unless an Ingress's ssl-redirect
    /// annotation says otherwise (ingress-nginx's ssl-redirect).
    #[arg(long, value_name = "BOOL", env = "VESTIBULE_SSL_REDIRECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub ssl_redirect: bool,

    /// Redirect plain HTTP to HTTPS on every host, TLS or not, unless an Ingress's
    /// force-ssl-redirect annotation says otherwise (TLS terminated in front).
    #[arg(long, value_name = "BOOL", env = "VESTIBULE_FORCE_SSL_REDIRECT", default_value_t = false, action = clap::ArgAction::Set)]
    pub force_ssl_redirect: bool,

    /// Let annotations name Secrets in other namespaces than their Ingress's (auth-secret),
    /// as ingress-nginx's allow-cross-namespace-resources.
    #[arg(long, value_name = "BOOL", env = "VESTIBULE_ALLOW_CROSS_NAMESPACE_RESOURCES", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_cross_namespace_resources: bool,

    /// External authentication for every Ingress without an auth-url of its own and without
    /// enable-global-auth: "false" (ingress-nginx's global-auth-url); nginx variables such as
    /// $host and $request_uri are allowed after the host.
    #[arg(long, value_name = "URL", env = "VESTIBULE_GLOBAL_AUTH_URL")]
    pub global_auth_url: Option<String>,

    /// Method of the global authentication's request.
    #[arg(long, value_name = "METHOD", env = "VESTIBULE_GLOBAL_AUTH_METHOD")]
    pub global_auth_method: Option<String>,

    /// Where the global authentication's 401 sends the client (the way back is added as rd=).
    #[arg(long, value_name = "URL", env = "VESTIBULE_GLOBAL_AUTH_SIGNIN")]
    pub global_auth_signin: Option<String>,

    /// Name of the query parameter that carries the way back to the sign-in page.
    #[arg(
        long,
        value_name = "NAME",
        env = "VESTIBULE_GLOBAL_AUTH_SIGNIN_REDIRECT_PARAM"
    )]
    pub global_auth_signin_redirect_param: Option<String>,

    /// Fields of the global authentication's answer set on the upstream request, comma separated.
    #[arg(
        long,
        value_name = "NAMES",
        env = "VESTIBULE_GLOBAL_AUTH_RESPONSE_HEADERS"
    )]
    pub global_auth_response_headers: Option<String>,

    /// X-Auth-Request-Redirect of the global authentication's request.
    #[arg(
        long,
        value_name = "VALUE",
        env = "VESTIBULE_GLOBAL_AUTH_REQUEST_REDIRECT"
    )]
    pub global_auth_request_redirect: Option<String>,

    /// The global authentication's Set-Cookie on every response, not only those below 400.
    #[arg(long, value_name = "BOOL", env = "VESTIBULE_GLOBAL_AUTH_ALWAYS_SET_COOKIE", default_value_t = false, action = clap::ArgAction::Set)]
    pub global_auth_always_set_cookie: bool,

    /// Key under which the global authentication's answers are kept (nginx variables).
    #[arg(long, value_name = "TEMPLATE", env = "VESTIBULE_GLOBAL_AUTH_CACHE_KEY")]
    pub global_auth_cache_key: Option<String>,

    /// Which of its answers are kept, for how long ("200 202 401 5m").
    #[arg(
        long,
        value_name = "CODES TIME",
        env = "VESTIBULE_GLOBAL_AUTH_CACHE_DURATION"
    )]
    pub global_auth_cache_duration: Option<String>,

    /// Client addresses (CIDR ranges, comma separated) every Ingress allows, unless its own
    /// allowlist-source-range says otherwise (ingress-nginx's whitelist-source-range key).
    #[arg(long, value_name = "CIDRS", env = "VESTIBULE_ALLOWLIST_SOURCE_RANGE")]
    pub allowlist_source_range: Option<String>,

    /// Client addresses (CIDR ranges, comma separated) every Ingress refuses, unless its own
    /// denylist-source-range says otherwise.
    #[arg(long, value_name = "CIDRS", env = "VESTIBULE_DENYLIST_SOURCE_RANGE")]
    pub denylist_source_range: Option<String>,

    /// Path prefixes that the global authentication spares, comma separated.
    #[arg(
        long,
        value_name = "PATHS",
        env = "VESTIBULE_NO_AUTH_LOCATIONS",
        default_value = "/.well-known/acme-challenge",
        value_delimiter = ','
    )]
    pub no_auth_locations: Vec<String>,
}

impl CompileArgs {
    /// The global authentication, when `--global-auth-url` is set.
    fn global_auth(&self) -> anyhow::Result<Option<Arc<vestibule_model::ExternalAuth>>> {
        let Some(url) = &self.global_auth_url else {
            return Ok(None);
        };
        let values = vestibule_translate::values::AuthValues {
            url,
            method: self.global_auth_method.as_deref(),
            signin: self.global_auth_signin.as_deref(),
            signin_redirect_param: self.global_auth_signin_redirect_param.as_deref(),
            response_headers: self.global_auth_response_headers.as_deref(),
            request_redirect: self.global_auth_request_redirect.as_deref(),
            always_set_cookie: self.global_auth_always_set_cookie,
            cache_key: self.global_auth_cache_key.as_deref(),
            cache_duration: self.global_auth_cache_duration.as_deref(),
            proxy_set_headers: &[],
        };
        match vestibule_translate::values::external_auth(values) {
            Ok(auth) => Ok(Some(Arc::new(auth))),
            Err((key, message)) => anyhow::bail!("--global-{key}: {message}"),
        }
    }

    /// The controller-wide allow and deny lists, when either is set.
    fn source_ranges(&self) -> anyhow::Result<Option<Arc<vestibule_model::SourceRanges>>> {
        let read = |flag: &str, value: &Option<String>| match value {
            None => Ok(Vec::new()),
            Some(v) => {
                vestibule_translate::values::ranges(v).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
            }
        };
        let ranges = vestibule_model::SourceRanges {
            allow: read("allowlist-source-range", &self.allowlist_source_range)?,
            deny: read("denylist-source-range", &self.denylist_source_range)?,
        };
        Ok((!ranges.allow.is_empty() || !ranges.deny.is_empty()).then(|| Arc::new(ranges)))
    }

    pub(crate) fn options(&self) -> anyhow::Result<Options> {
        Ok(Options {
            controller_class: self.controller_class.clone(),
            ingress_class: self.ingress_class.clone(),
            watch_ingress_without_class: self.watch_ingress_without_class,
            default_backend_service: self.default_backend_service.clone(),
            watch_namespaces: self.watch_namespaces.clone(),
            default_ssl_certificate: self.default_ssl_certificate.clone(),
            proxy_set_headers: self.proxy_set_headers.clone(),
            add_headers: self.add_headers.clone(),
            hide_headers: self.hide_headers.clone(),
            global_allowed_response_headers: self.global_allowed_response_headers.clone(),
            custom_http_errors: self.custom_http_errors.clone(),
            enable_ssl_passthrough: self.enable_ssl_passthrough,
            proxy: vestibule_model::ProxyPolicy::default(),
            ssl_redirect: self.ssl_redirect,
            force_ssl_redirect: self.force_ssl_redirect,
            allow_cross_namespace_resources: self.allow_cross_namespace_resources,
            global_auth: self.global_auth()?,
            source_ranges: self.source_ranges()?,
            no_auth_locations: self
                .no_auth_locations
                .iter()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
        })
    }
}

impl RunArgs {
    /// The access log's format, `None` for no access log. `--log-format json` alone makes
    /// every log JSON, which is what a log pipeline wants, while `--access-log` still decides
    /// on its own.
    pub(crate) fn access_log(&self) -> Option<vestibule_proxy::AccessLogFormat> {
        use vestibule_proxy::AccessLogFormat;
        match (self.access_log, self.log_format) {
            (Some(AccessLogArg::Off), _) => None,
            (Some(AccessLogArg::Text), _) | (None, LogFormat::Text) => Some(AccessLogFormat::Text),
            (Some(AccessLogArg::Json), _) | (None, LogFormat::Json) => Some(AccessLogFormat::Json),
        }
    }

    /// The data plane's settings from the flags.
    pub(crate) fn proxy_settings(&self) -> vestibule_proxy::ProxySettings {
        vestibule_proxy::ProxySettings {
            upstream: vestibule_proxy::UpstreamSettings {
                idle_timeout: self.proxy.upstream_keepalive_timeout,
                max_idle_per_endpoint: self.proxy.upstream_keepalive_connections,
            },
            client_header_timeout: self.proxy.client_header_timeout,
            client_keepalive_timeout: self.proxy.client_keepalive_timeout,
            client_send_timeout: self.proxy.client_send_timeout,
            http2_max_concurrent_streams: self.proxy.http2_max_concurrent_streams,
            max_uri_bytes: self.proxy.max_uri_bytes,
            max_request_header_bytes: self.proxy.max_request_header_bytes,
            max_request_header_fields: usize::from(self.proxy.max_request_header_fields),
            // Each entry was checked when the flag was parsed.
            trusted_proxies: vestibule_proxy::TrustedProxies::parse(&self.proxy.trusted_proxies)
                .unwrap_or_default(),
            proxy_protocol: self.proxy.proxy_protocol,
            https_redirect_port: self.https_port_for_redirects,
            http_redirect_code: http::StatusCode::from_u16(self.http_redirect_code)
                .unwrap_or(http::StatusCode::PERMANENT_REDIRECT),
            blocked: vestibule_model::Blocklist {
                cidrs: self.block_cidrs.clone(),
                agents: self.block_user_agents.clone(),
            },
            // Both were checked to be 400 to 599 when the flags were parsed.
            limit_req_status: http::StatusCode::from_u16(self.limit_req_status_code)
                .unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE),
            limit_conn_status: http::StatusCode::from_u16(self.limit_conn_status_code)
                .unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE),
            hsts: self.hsts.then(|| {
                vestibule_proxy::hsts_header(
                    self.hsts_max_age,
                    self.hsts_include_subdomains,
                    self.hsts_preload,
                )
            }),
            ..Default::default()
        }
    }
}

fn parse_cidr(value: &str) -> Result<vestibule_model::Cidr, String> {
    vestibule_model::Cidr::parse(value)
}

fn parse_agent(value: &str) -> Result<vestibule_model::AgentRule, String> {
    vestibule_model::AgentRule::parse(value)
}

/// A status nginx's `limit_req_status` accepts: 400 to 599.
fn parse_error_code(value: &str) -> Result<u16, String> {
    match value.trim().parse::<u16>() {
        Ok(code @ 400..=599) => Ok(code),
        _ => Err(format!("{value:?} is not a status from 400 to 599")),
    }
}

fn parse_redirect_code(value: &str) -> Result<u16, String> {
    match value.trim().parse::<u16>() {
        Ok(code @ (301 | 302 | 307 | 308)) => Ok(code),
        _ => Err(format!("{value:?} is not 301, 302, 307 or 308")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AccessLogArg {
    Text,
    Json,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

fn parse_header_name(value: &str) -> Result<String, String> {
    vestibule_model::header_name(value).map(String::from)
}

fn parse_namespaced(value: &str) -> Result<(String, String), String> {
    match value.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{value:?} is not NAMESPACE/NAME")),
    }
}

/// A duration on the command line, one syntax for every flag: the annotations' (nginx's:
/// plain seconds, or numbers with units `ms`, `s`, `m`, `h`, `d`, combined as in `1m30s`),
/// whose numbers may also have a fraction (`1.5s`).
pub(crate) fn parse_duration(value: &str) -> Result<Duration, String> {
    vestibule_translate::values::duration_with_fractions(value.trim())
        .ok_or_else(|| format!("{value:?} is not a duration such as 60, 30s, 1.5s, 500ms or 1m30s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1h0.5m"), Ok(Duration::from_secs(3630)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
        for bad in ["10 parsecs", "", "s", "5x", "1..5s", "-1s", "ms"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        // Every flag takes the same syntax, whatever it times.
        assert_eq!(nginx_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(nginx_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(nginx_duration("0").is_err());
        assert!(nginx_duration("0s").is_err());
        assert_eq!(nginx_duration_or_zero("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn namespaced_names() {
        assert_eq!(
            parse_namespaced("kube-system/default-http"),
            Ok(("kube-system".into(), "default-http".into()))
        );
        for bad in ["x", "/x", "x/", "a/b/c"] {
            assert!(parse_namespaced(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_access_log_follows_the_log_format_unless_set() {
        let access_log = |flags: &[&str]| {
            let cli =
                Cli::try_parse_from(["vestibule", "run", "--manifests", "m"].iter().chain(flags))
                    .unwrap();
            let Command::Run(args) = cli.command else {
                panic!("not run");
            };
            args.access_log()
        };
        use vestibule_proxy::AccessLogFormat::{Json, Text};
        assert_eq!(access_log(&[]), Some(Text));
        assert_eq!(access_log(&["--log-format", "json"]), Some(Json));
        assert_eq!(
            access_log(&["--log-format", "json", "--access-log", "text"]),
            Some(Text)
        );
        assert_eq!(
            access_log(&["--log-format", "json", "--access-log", "off"]),
            None
        );
        assert_eq!(access_log(&["--access-log", "json"]), Some(Json));
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
