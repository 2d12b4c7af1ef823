//! The read-only dashboard on the admin server (`--dashboard`): a page of plain HTML, CSS
//! and JavaScript compiled into the binary, and the JSON API it reads. Off by default; when
//! off, its paths answer 404 and nothing of it runs. The page fetches nothing from outside
//! the admin server, and a strict Content-Security-Policy keeps it that way.

mod api;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;
use vestibule_proxy::{DataPlane, Metrics};

use crate::admin::{AdminState, json_response};

/// What the dashboard reads besides the published configuration.
#[derive(Debug)]
pub(crate) struct Sources {
    pub dataplane: Arc<DataPlane>,
    pub metrics: Option<Arc<Metrics>>,
}

/// Scripts, styles, images and requests only from the admin server itself; no framing, no
/// plugins, no inline code (the page has none), no form posts.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/dashboard/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("dashboard/assets/index.html"),
    },
    Asset {
        path: "/dashboard/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("dashboard/assets/app.js"),
    },
    Asset {
        path: "/dashboard/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("dashboard/assets/app.css"),
    },
    Asset {
        path: "/dashboard/icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("dashboard/assets/icon.svg"),
    },
];

/// Whether `path` is the dashboard's: the page, its files, or its API.
pub(crate) fn owns(path: &str) -> bool {
    path == "/dashboard" || path.starts_with("/dashboard/") || path.starts_with("/api/v1/")
}

/// Answers a dashboard path: 404 for all of them when the dashboard is off.
pub(crate) fn route(path: &str, query: &str, state: &AdminState) -> Response<Full<Bytes>> {
    let Some(sources) = &state.dashboard else {
        return guarded(json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "the dashboard is off: start vestibule run with --dashboard"}),
        ));
    };
    if path == "/dashboard" {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
        response.headers_mut().insert(
            http::header::LOCATION,
            HeaderValue::from_static("/dashboard/"),
        );
        return guarded(response);
    }
    if let Some(asset) = ASSETS.iter().find(|a| a.path == path) {
        let mut response = Response::new(Full::new(Bytes::from_static(asset.body.as_bytes())));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        return guarded(response);
    }
    guarded(answer(path, query, state, sources))
}

fn answer(path: &str, query: &str, state: &AdminState, sources: &Sources) -> Response<Full<Bytes>> {
    let Some(endpoint) = path.strip_prefix("/api/v1/") else {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
    };
    let Some(published) = state.publisher.current() else {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "no configuration published yet"}),
        );
    };
    let query = match api::Query::parse(query) {
        Ok(query) => query,
        Err(e) => return json_response(StatusCode::BAD_REQUEST, &json!({ "error": e })),
    };
    let body = match endpoint {
        "overview" => api::overview(state, sources, &published),
        "routes" => api::routes(&published, &query),
        "services" => api::services(sources, &published, &query),
        "certificates" => api::certificates(state, &published),
        "diagnostics" => api::diagnostics(&published, &query),
        "traffic" => api::traffic(sources, &query),
        _ => {
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": format!("no API endpoint {endpoint:?}: overview, routes, \
                                          services, certificates, diagnostics, traffic")}),
            );
        }
    };
    json_response(StatusCode::OK, &body)
}

/// Headers every dashboard answer carries: the policy, no sniffing, no caching (the data
/// is live), no referrer.
fn guarded(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
