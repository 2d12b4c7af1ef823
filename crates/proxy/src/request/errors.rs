//! Error backends (`custom-http-errors`, `--custom-http-errors`): a response with a listed
//! status, the upstream's or Vestibule's own, is replaced by what the route's error backend
//! (its `default-backend`, or `--default-backend-service`) answers to the same request for
//! `/`, told what happened in the `X-Code` family of fields, as ingress-nginx's error pages
//! are. When the error backend cannot be reached, the original answer stands.

use std::borrow::Cow;
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Response};
use vestibule_model::{Backend, Balance};

use super::auth::Asking;
use super::forwarded::X_REQUEST_ID;
use super::route::Routed;
use crate::balance::{self, PickInput};
use crate::dataplane::{ErrorBackend, RouteAt};
use crate::upstream::client::{Outgoing, Target, Timeouts, Upstreams};
use crate::upstream::request::{Forwarded, UpstreamRequest};
use crate::upstream::response::ResponseBody;

/// What the error backend answers for this request, which got `status`; `None` when it has
/// no endpoint or does not answer.
pub(super) async fn ask(
    upstreams: &Upstreams,
    routed: &Routed,
    backend: &ErrorBackend,
    asking: &Asking<'_>,
    status: u16,
    timeouts: Timeouts,
) -> Option<Response<ResponseBody>> {
    let runtime = &routed.runtime;
    let endpoints = &runtime.table.cluster(backend.cluster).endpoints;
    let balancer = runtime.balancers.get(backend.cluster.0 as usize)?;
    let input = PickInput {
        hash_key: None,
        now_nanos: balance::nanos_at(Instant::now()),
        excluded: &[],
    };
    let mut rng = |n: usize| fastrand::usize(..n.max(1));
    let index = balancer.pick(&Balance::RoundRobin, &input, &mut rng)?;
    let mut headers = asking.headers.clone();
    fallback_fields(routed, asking.target, status, &mut headers);
    let mut forwarded = Forwarded::default();
    forwarded.push(&X_REQUEST_ID, asking.request_id.clone());
    // ingress-nginx rewrites the path to `/`; the original is in X-Original-URI.
    let (method, host) = (asking.method.clone(), asking.authority.clone());
    let request = UpstreamRequest::side(method, Cow::Borrowed("/"), host, headers, forwarded);
    let target = Target {
        endpoint: &endpoints.get(index)?.address,
        protocol: backend.upstream.protocol,
        tls: backend.upstream.tls.as_ref(),
    };
    let mut outgoing = Outgoing::new(request);
    let sent = upstreams
        .send(&target, &mut outgoing, &mut None, None, timeouts, true)
        .await;
    sent.result.ok()
}

/// The `Accept` of the request, as `X-Format` carries it.
fn format_of(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(http::header::ACCEPT)
        .cloned()
        .unwrap_or(HeaderValue::from_static("text/html"))
}

/// The fields ingress-nginx gives a request it sends to an error or default backend in place
/// of the route's Service: what happened (`X-Code`) and to which request and route.
pub(super) fn fallback_fields(routed: &Routed, target: &str, code: u16, headers: &mut HeaderMap) {
    let table = &routed.runtime.table;
    let RouteAt::Route(id) = routed.at else {
        return;
    };
    let route = table.route(id);
    let service = match &route.backend {
        Backend::Cluster(id) => Some(&table.cluster(*id).key),
        Backend::Unavailable { .. } => None,
    };
    let format = format_of(headers);
    let text = |t: &str| HeaderValue::from_str(t).ok();
    let port = service.map(|k| k.port.to_string());
    let fields = [
        ("x-code", Some(HeaderValue::from(code))),
        ("x-format", Some(format)),
        ("x-original-uri", text(target)),
        ("x-namespace", text(&route.origin.namespace)),
        ("x-ingress-name", text(&route.origin.name)),
        ("x-service-name", service.and_then(|k| text(&k.service))),
        ("x-service-port", port.as_deref().and_then(text)),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            headers.insert(name, value);
        }
    }
}
