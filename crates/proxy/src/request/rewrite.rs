//! Rewriting the request for the upstream: the target it gets (the normalised path, with the
//! query, or what the route's `rewrite-target` makes of them), its `Host` (the client's, or
//! the route's `upstream-vhost`), the client's fields without the hop-by-hop ones and with the fields this
//! hop sets, and the body as it goes up, held to the route's size limit and send timeout.

use std::sync::Arc;

use http::HeaderValue;
use http::Uri;
use http::header::{CONTENT_TYPE, EXPECT};
use http::request::Parts;
use http_body_util::Either;
use hyper::body::Incoming;
use std::borrow::Cow;

use super::forwarded::{Hop, X_FORWARDED_PREFIX, forwarded};
use super::head::Head;
use crate::body::request::{Limited, Progress, UpstreamBody};
use crate::dataplane::RouteState;
use crate::fields::remove_hop_by_hop;
use crate::upstream::client::Outgoing;
use crate::upstream::request::{BodyFraming, Upgrade, UpstreamRequest};

/// The request as it is to go upstream.
#[derive(Debug)]
pub(super) struct Rewritten<'u> {
    /// Made once, and kept in place by every attempt, which only borrows it.
    pub(super) outgoing: Outgoing<'u>,
    /// The client's body, for the attempt that sends it; `None` when there is none to send.
    pub(super) body: Option<UpstreamBody>,
    /// How far the body has got, when there is one.
    pub(super) progress: Option<Arc<Progress>>,
    /// Every attempt can send the request alike: it has no body, or its bytes go through a
    /// tunnel rather than as a body.
    pub(super) replayable: bool,
}

/// Rewrites the request (`parts`, whose target `head` has read from `uri`) for the upstream.
#[inline]
pub(super) fn rewrite<'u>(
    parts: Parts,
    body: Incoming,
    head: &Head<'u>,
    uri: &'u Uri,
    route: &RouteState,
    hop: &Hop<'_>,
    upgrade: Option<Upgrade>,
) -> Rewritten<'u> {
    let policy = &*route.proxy;
    // A tunnel's bytes flow through the upgraded connection, never as a body; a request
    // without a body sends none, on every attempt alike.
    let replayable = upgrade.is_some() || body_is_empty(head.content_length, &body);
    let framing = if replayable {
        BodyFraming::None
    } else if head.content_length.is_some() {
        BodyFraming::Length
    } else {
        BodyFraming::Chunked
    };
    let progress = (!replayable).then(Progress::new);
    let body = progress.as_ref().map(|progress| {
        Either::Left(Limited::new(
            body,
            policy.body_size_limit,
            policy.send_timeout,
            progress.clone(),
        ))
    });
    Rewritten {
        outgoing: Outgoing::new(upstream_request(
            parts, head, uri, route, hop, upgrade, framing,
        )),
        body,
        progress,
        replayable,
    }
}

/// The request's head as the upstream gets it.
#[inline]
fn upstream_request<'u>(
    mut parts: Parts,
    head: &Head<'u>,
    uri: &'u Uri,
    route: &RouteState,
    hop: &Hop<'_>,
    upgrade: Option<Upgrade>,
    framing: BodyFraming,
) -> UpstreamRequest<'u> {
    remove_hop_by_hop(&mut parts.headers);
    // The client's `100-continue` was answered here, when its body was first read; the
    // upstream gets the body without being asked.
    parts.headers.remove(EXPECT);
    // Only Vestibule says what a client certificate was.
    for name in super::client_cert::FIELDS {
        parts.headers.remove(name);
    }
    let grpc = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut forwarded = forwarded(&parts.headers, hop);
    let mut target = None;
    if let Some(rewrite) = &route.rewrite
        && let Some(rewritten) = rewrite.apply(&head.path, uri.query())
    {
        target = Some(Cow::Owned(rewritten));
        // Checked in the compile as visible ASCII, so always a valid header value.
        let prefix = rewrite.prefix.as_deref().map(HeaderValue::from_str);
        if let Some(Ok(prefix)) = prefix {
            forwarded.push(&X_FORWARDED_PREFIX, prefix);
        }
    }
    UpstreamRequest {
        method: parts.method,
        target: target.unwrap_or_else(|| head.upstream_target(uri)),
        host: route
            .upstream_host
            .clone()
            .unwrap_or_else(|| head.authority.clone()),
        headers: parts.headers,
        forwarded,
        upgrade,
        grpc,
        body: framing,
        header_bytes: head.header_bytes,
        response_head_limit: route.proxy.response_head_limit,
    }
}

/// Whether the request has no body at all, so it can be sent again without keeping a copy.
#[inline]
fn body_is_empty(content_length: Option<u64>, body: &Incoming) -> bool {
    use http_body::Body as _;
    body.is_end_stream() || content_length == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Method, Request, Version};

    use crate::server::client::ClientSide;
    use crate::settings::ProxySettings;
    use crate::upstream::request::Forwarded;

    fn state(rewrite: Option<vestibule_model::Rewrite>, host: Option<&'static str>) -> RouteState {
        RouteState {
            rewrite: rewrite.map(Arc::new),
            upstream_host: host.map(HeaderValue::from_static),
            ..RouteState::bare(Arc::default())
        }
    }

    /// What the upstream gets for a request for `target` to `shop.example:8080`.
    fn sent(
        target: &str,
        headers: &[(&str, &str)],
        route: &RouteState,
    ) -> (String, HeaderValue, Forwarded) {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(target)
            .header("host", "shop.example:8080");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        let uri = std::mem::take(&mut parts.uri);
        let settings = ProxySettings::default();
        let head = Head::read(&uri, &parts.headers, Version::HTTP_11, &settings).unwrap();
        let client = ClientSide::new([192, 0, 2, 7].into(), 80, false);
        let id = HeaderValue::from_static("id-1");
        let hop = Hop {
            client: &client,
            host: &head.authority,
            trusted: false,
            client_ip: client.peer,
            request_id: &id,
        };
        let sent = upstream_request(parts, &head, &uri, route, &hop, None, BodyFraming::Chunked);
        (sent.target.to_string(), sent.host, sent.forwarded)
    }

    #[test]
    fn a_rewrite_replaces_the_path_keeps_the_query_and_names_the_prefix() {
        let rewrite =
            vestibule_model::Rewrite::new("/shop(/|$)(.*)", "/$2", Some("/shop")).unwrap();
        let route = state(Some(rewrite), Some("internal.svc"));
        let (target, host, forwarded) = sent("/SHOP/cart/./x?id=3", &[], &route);
        assert_eq!(target, "/cart/x?id=3");
        assert_eq!(host, "internal.svc");
        let mut headers = http::HeaderMap::new();
        forwarded.apply(&mut headers);
        assert_eq!(headers["x-forwarded-prefix"], "/shop");
        assert_eq!(headers["x-forwarded-host"], "shop.example:8080");
        // A path the pattern does not match goes as it came, without the prefix field.
        let (target, _, forwarded) =
            sent("/other?id=3", &[("x-forwarded-prefix", "/client")], &route);
        assert_eq!(target, "/other?id=3");
        assert!(!forwarded.replaces(&X_FORWARDED_PREFIX));
    }

    #[test]
    fn the_upstream_gets_the_normalised_target_and_no_connection_fields() {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/a/./b?x=1")
            .header("host", "shop.example:8080")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .header("expect", "100-continue")
            .header("content-type", "application/grpc+proto")
            .header("x-kept", "2")
            .body(())
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        let uri = std::mem::take(&mut parts.uri);
        let head = Head::read(
            &uri,
            &parts.headers,
            Version::HTTP_11,
            &ProxySettings::default(),
        )
        .unwrap();
        let client = ClientSide::new([192, 0, 2, 7].into(), 80, false);
        let id = HeaderValue::from_static("id-1");
        let hop = Hop {
            client: &client,
            host: &head.authority,
            trusted: false,
            client_ip: client.peer,
            request_id: &id,
        };
        let route = state(None, None);
        let sent = upstream_request(parts, &head, &uri, &route, &hop, None, BodyFraming::Chunked);
        assert_eq!(sent.method, Method::POST);
        assert_eq!(sent.target, "/a/b?x=1");
        assert_eq!(sent.host, "shop.example:8080");
        let names: Vec<&str> = sent.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host", "content-type", "x-kept"]);
        assert!(sent.grpc);
        assert!(
            sent.forwarded
                .replaces(&http::header::HeaderName::from_static("x-request-id"))
        );
    }
}
