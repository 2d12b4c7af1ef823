//! The request path, as plain phase functions over the installed table: find the host and
//! path, pick an endpoint, rewrite the request for the upstream, send it, tidy the response.

use http::header::{HOST, HeaderValue, SERVER, STRICT_TRANSPORT_SECURITY};
use http::request::Parts;
use http::{Request, Response, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use tracing::{debug, warn};
use vestibule_model::{Backend, EndpointAddress, Target, normalize_request_path, request_host};

use crate::ProxySettings;
use crate::body::ProxyBody;
use crate::dataplane::DataPlane;
use crate::headers::{ClientSide, add_forwarded, remove_hop_by_hop};
use crate::respond::{ProxyError, SERVER_NAME, Style, error_response, redirect_to_https};
use crate::upstream::Upstreams;

/// Answers one request: the upstream's response, Vestibule's redirect to HTTPS, or its own
/// response for a failure.
pub(crate) async fn handle(
    dataplane: &DataPlane,
    upstreams: &Upstreams,
    settings: &ProxySettings,
    client: ClientSide,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let style = Style::of(request.headers());
    let (parts, body) = request.into_parts();
    let mut hsts = false;
    let mut response = match forward(
        dataplane, upstreams, settings, client, parts, body, &mut hsts,
    )
    .await
    {
        Ok(response) => response,
        Err(error) => {
            if error.status().is_server_error() {
                warn!(status = error.status().as_u16(), error = %error, "request failed");
            } else {
                debug!(status = error.status().as_u16(), error = %error, "request refused");
            }
            error_response(&error, style)
        }
    };
    // On every response of a TLS host, Vestibule's own included, as browsers only take the
    // policy from HTTPS responses and any of them will do. A backend's own policy is kept.
    if hsts && let Some(value) = &settings.hsts {
        response
            .headers_mut()
            .entry(STRICT_TRANSPORT_SECURITY)
            .or_insert_with(|| value.clone());
    }
    response
}

/// Where a request goes after the table is consulted.
enum Step {
    Forward(EndpointAddress),
    /// Plain HTTP for a host that wants HTTPS.
    Redirect,
}

async fn forward(
    dataplane: &DataPlane,
    upstreams: &Upstreams,
    settings: &ProxySettings,
    client: ClientSide,
    mut parts: Parts,
    body: Incoming,
    hsts: &mut bool,
) -> Result<Response<ProxyBody>, ProxyError> {
    let host_value = request_authority(&parts)?;
    let host_str = host_value
        .to_str()
        .map_err(|_| ProxyError::BadRequest("the host is not valid"))?;
    let host = request_host(host_str);
    let path = normalize_request_path(parts.uri.path())
        .map_err(|_| ProxyError::BadRequest("the request path is not valid"))?;
    let endpoint = match route(dataplane, client, &host, &path, hsts)? {
        Step::Forward(endpoint) => endpoint,
        Step::Redirect => {
            let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            return redirect_to_https(&host, settings.https_redirect_port, target);
        }
    };
    let uri = upstream_uri(&endpoint, &path, parts.uri.query())
        .ok_or(ProxyError::BadRequest("the request target is not valid"))?;

    remove_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, &client, &host_value);
    // HTTP/2 carries the host in `:authority`, and an absolute-form HTTP/1.1 target overrides
    // `Host`: either way the upstream gets it as `Host`.
    parts.headers.insert(HOST, host_value);
    parts.uri = uri;
    parts.version = Version::HTTP_11;

    let request = Request::from_parts(parts, body);
    let response = upstreams.send(&endpoint, request).await?;
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(SERVER) {
        parts.headers.insert(SERVER, SERVER_NAME);
    }
    Ok(Response::from_parts(parts, Either::Left(body)))
}

/// The host the request is for: `:authority` for HTTP/2, the target's authority for an
/// absolute-form HTTP/1.1 request (RFC 9112 says to ignore `Host` then), else `Host`.
///
/// An HTTP/2 request whose `Host` names another host than its `:authority` is refused, as
/// RFC 9113 section 8.3.1 recommends: routing by one and forwarding the other is how cache
/// poisoning and routing confusion start. HTTP/1.1 without `Host` is refused (RFC 9112);
/// HTTP/1.0 without it gets the catch-all virtual host.
fn request_authority(parts: &Parts) -> Result<HeaderValue, ProxyError> {
    let header = parts.headers.get(HOST);
    match (parts.uri.authority(), header) {
        (Some(authority), Some(header)) if parts.version == Version::HTTP_2 => {
            let same = header
                .to_str()
                .is_ok_and(|h| request_host(h) == request_host(authority.as_str()));
            if !same {
                return Err(ProxyError::BadRequest(
                    "the Host header and :authority name different hosts",
                ));
            }
            HeaderValue::from_str(authority.as_str())
                .map_err(|_| ProxyError::BadRequest("the host is not valid"))
        }
        (Some(authority), _) => HeaderValue::from_str(authority.as_str())
            .map_err(|_| ProxyError::BadRequest("the host is not valid")),
        (None, Some(header)) => Ok(header.clone()),
        (None, None) if parts.version == Version::HTTP_10 => Ok(HeaderValue::from_static("")),
        (None, None) => Err(ProxyError::BadRequest("the request has no Host header")),
    }
}

/// Looks the request up in the installed table and decides: redirect, or forward to an
/// endpoint. The table is held only for this synchronous step, never across an await.
/// Sets `hsts` when the response is to carry `Strict-Transport-Security`.
fn route(
    dataplane: &DataPlane,
    client: ClientSide,
    host: &str,
    path: &str,
    hsts: &mut bool,
) -> Result<Step, ProxyError> {
    let runtime = dataplane.load();
    let lookup = runtime.table.lookup(host, path);
    *hsts = client.https && lookup.vhost.is_some_and(|v| v.tls);
    let backend = match lookup.target {
        Target::Route(route) => {
            let wants_https = lookup.vhost.is_some_and(|v| route.redirects_http(v));
            // cert-manager's HTTP-01 solver answers on plain HTTP: redirecting it would stop
            // the certificate that makes HTTPS work from ever being issued.
            if wants_https && !client.https && !host.is_empty() && !is_acme_challenge(path) {
                return Ok(Step::Redirect);
            }
            &route.backend
        }
        Target::Default(default) => &default.backend,
        Target::NotFound => return Err(ProxyError::NoRoute),
    };
    let id = match backend {
        Backend::Cluster(id) => *id,
        Backend::Unavailable { reason } => {
            return Err(ProxyError::BackendUnavailable(reason.clone()));
        }
    };
    let cluster = runtime.table.cluster(id);
    let index = runtime.balancers[id.0 as usize]
        .pick(cluster.endpoints.len())
        .ok_or_else(|| ProxyError::NoEndpoints(cluster.key.to_string()))?;
    Ok(Step::Forward(cluster.endpoints[index].address.clone()))
}

fn is_acme_challenge(path: &str) -> bool {
    path.starts_with("/.well-known/acme-challenge/")
}

fn upstream_uri(endpoint: &EndpointAddress, path: &str, query: Option<&str>) -> Option<Uri> {
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    Uri::builder()
        .scheme("http")
        .authority(endpoint.to_string())
        .path_and_query(path_and_query)
        .build()
        .ok()
}
