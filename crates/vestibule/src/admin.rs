//! The admin server: liveness, readiness, Prometheus metrics, the current configuration
//! as JSON (with which certificate serves each TLS host), and the dashboard when it is on.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tracing::{debug, warn};
use vestibule_controller::Publisher;
use vestibule_model::{CertificateInfo, CertificateRef, HostPattern, RouteTable};

/// What the admin endpoints report on.
#[derive(Debug)]
pub(crate) struct AdminState {
    pub publisher: Arc<Publisher>,
    /// Generation the data plane is serving; 0 until the first install.
    pub installed: AtomicU64,
    /// Set when shutdown starts, so load balancers stop sending new traffic.
    pub draining: AtomicBool,
    /// The certificate made at start-up, served when the table names none.
    pub generated_certificate: CertificateInfo,
    /// Everything `/metrics` reports; collectors read their sources at scrape time.
    pub registry: Registry,
    /// What the dashboard reads; `None` when it is off.
    pub dashboard: Option<crate::dashboard::Sources>,
}

impl AdminState {
    pub(crate) fn new(
        publisher: Arc<Publisher>,
        generated_certificate: CertificateInfo,
        registry: Registry,
        dashboard: Option<crate::dashboard::Sources>,
    ) -> Arc<AdminState> {
        Arc::new(AdminState {
            publisher,
            installed: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            generated_certificate,
            registry,
            dashboard,
        })
    }
}

pub(crate) async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(listener = "admin", error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&request, &state)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(listener = "admin", error = %e, "connection ended with an error");
            }
        });
    }
}

fn route(request: &Request<Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    let path = request.uri().path();
    if crate::dashboard::owns(path) {
        return crate::dashboard::route(path, request.uri().query().unwrap_or(""), state);
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readyz(state),
        "/debug/config" => debug_config(state),
        "/debug/explain" => debug_explain(request.uri().query().unwrap_or(""), state),
        "/metrics" => metrics(state),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    let mut body = String::with_capacity(64 << 10);
    if prometheus_client::encoding::text::encode(&mut body, &state.registry).is_err() {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        );
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

fn readyz(state: &AdminState) -> Response<Full<Bytes>> {
    if state.draining.load(Ordering::SeqCst) {
        text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if state.installed.load(Ordering::SeqCst) == 0 {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no configuration installed yet\n",
        )
    } else {
        text(StatusCode::OK, "ready\n")
    }
}

fn debug_config(state: &AdminState) -> Response<Full<Bytes>> {
    let Some(published) = state.publisher.current() else {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "no configuration published yet"}),
        );
    };
    let published_at = jiff::Timestamp::try_from(published.published_at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let body = json!({
        "generation": published.generation,
        "installed_generation": state.installed.load(Ordering::SeqCst),
        "published_at": published_at,
        "compile_time_ms": published.compile_time.as_secs_f64() * 1000.0,
        "objects": published.objects,
        "ingresses": published.report.ingresses,
        "diagnostics": published.report.diagnostics,
        "source_problems": published.problems,
        "table": &*published.table,
        "tls": tls_view(&published.table, &state.generated_certificate),
    });
    json_response(StatusCode::OK, &body)
}

/// `/debug/explain?host=H&path=P` (and `method`, `https=true`, `client_ip`, `header=Name:
/// value` and `cookie=name=value`, repeatable): what the live table does with that request.
fn debug_explain(query: &str, state: &AdminState) -> Response<Full<Bytes>> {
    let Some(published) = state.publisher.current() else {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "no configuration published yet"}),
        );
    };
    let (mut host, mut path, mut method, mut https, mut client) = (None, None, None, false, None);
    let (mut headers, mut cookies) = (Vec::new(), Vec::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "host" => host = Some(value.into_owned()),
            "path" => path = Some(value.into_owned()),
            "method" => method = Some(value.into_owned()),
            "https" => https = value == "true" || value == "1",
            "client_ip" => match value.parse::<std::net::IpAddr>() {
                Ok(ip) => client = Some(ip),
                Err(_) => return bad_request(format!("client_ip {value:?} is not an address")),
            },
            "header" => headers.push(value.into_owned()),
            "cookie" => cookies.push(value.into_owned()),
            other => return bad_request(format!("unknown parameter {other:?}")),
        }
    }
    let (Some(host), Some(path)) = (host, path) else {
        return bad_request("host and path are required: /debug/explain?host=H&path=/P".into());
    };
    let request = match crate::explain::Request::new(&headers, &cookies) {
        Ok(request) => request,
        Err(e) => return bad_request(e),
    };
    let probe = vestibule_model::Probe {
        host: &host,
        target: &path,
        method: method.as_deref().unwrap_or("GET"),
        https,
        client,
        headers: &request.headers,
        cookies: &request.cookies,
    };
    match published.table.explain(&probe) {
        Ok(explained) => match serde_json::to_value(&explained) {
            Ok(mut body) => {
                body["generation"] = json!(published.generation);
                json_response(StatusCode::OK, &body)
            }
            Err(e) => bad_request(format!("encoding the explanation: {e}")),
        },
        Err(e) => bad_request(e),
    }
}

fn bad_request(error: String) -> Response<Full<Bytes>> {
    json_response(StatusCode::BAD_REQUEST, &json!({ "error": error }))
}

/// Per TLS host, the certificate that serves it; the default certificate; the hosts that get
/// the default (a TLS host whose Secret never loaded, and hosts with no TLS section at all);
/// and the soonest expiry among Secrets' certificates.
pub(crate) fn tls_view(table: &RouteTable, generated: &CertificateInfo) -> serde_json::Value {
    let tls = table.tls();
    let default_info = tls.configured_default().map_or(generated, |c| &c.info);
    let info_of = |to: &CertificateRef| match to {
        CertificateRef::Index(i) => tls.certificate(*i).map_or(default_info, |c| &c.info),
        CertificateRef::Default => default_info,
    };
    // The configured default may also be a Secret that hosts name: those hosts are on the
    // default certificate as much as hosts whose own Secret never loaded.
    let default_ref = tls.for_server_name(None);
    let mut hosts = Vec::new();
    let mut on_default = Vec::new();
    for (host, to) in tls.hosts() {
        let is_default = *to == default_ref || *to == CertificateRef::Default;
        if is_default {
            on_default.push(host.to_string());
        }
        hosts.push(json!({
            "host": host.to_string(),
            "default": is_default,
            "certificate": certificate_json(info_of(to)),
        }));
    }
    let without_tls: Vec<String> = table
        .virtual_hosts()
        .iter()
        .filter(|v| !v.tls && v.host != HostPattern::Any)
        .map(|v| v.host.to_string())
        .collect();
    json!({
        "default_certificate": certificate_json(default_info),
        "hosts": hosts,
        "tls_hosts_on_default_certificate": on_default,
        "hosts_without_tls": without_tls,
        "earliest_expiry": tls.earliest_expiry().map(rfc3339),
    })
}

fn certificate_json(info: &CertificateInfo) -> serde_json::Value {
    json!({
        "subject": info.subject,
        "dns_names": info.dns_names,
        "not_before": rfc3339(info.not_before),
        "not_after": rfc3339(info.not_after),
        "source": info.source,
    })
}

pub(crate) fn rfc3339(unix_seconds: i64) -> String {
    jiff::Timestamp::from_second(unix_seconds)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix_seconds.to_string())
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
