//! External authentication, the part of access control that waits: the request is put to the
//! route's `auth-url` service as ingress-nginx's `auth_request` does (its method, no body, the
//! client's fields, `X-Original-URL` and the rest), through the same upstream pool, timeouts
//! and TLS as any upstream. A 2xx lets it go on with the fields `auth-response-headers` names;
//! a 401 is passed on (or becomes the `auth-signin` redirect); a 403 is passed on; anything
//! else, or no answer in time, is a 500.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, SET_COOKIE, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use vestibule_model::{ExternalAuth, Var, escape_component};

use super::forwarded::{X_FORWARDED_FOR, X_REAL_IP, X_REQUEST_ID};
use crate::body::response::ProxyBody;
use crate::respond::{ProxyError, redirect};
use crate::server::client::IpText;
use crate::upstream::client::{Outgoing, Target, Timeouts, Upstreams};
use crate::upstream::request::{Forwarded, UpstreamRequest};
use crate::upstream::tls::TlsResolved;

static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static X_SENT_FROM: HeaderName = HeaderName::from_static("x-sent-from");
static X_AUTH_REQUEST_REDIRECT: HeaderName = HeaderName::from_static("x-auth-request-redirect");

/// The client's fields the service does not get: the body's (it gets none) and the scheme,
/// which ingress-nginx clears.
const NOT_ASKED: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "x-forwarded-proto",
    "expect",
];

/// Largest answer body read (and dropped) so that the connection can be used again.
const ANSWER_BODY: usize = 64 << 10;

/// Answers kept per cache key when there are more than this: the set starts again.
const CACHED: usize = 4096;

/// An answer kept for `auth-cache-duration`: its status and the fields the verdict reads.
#[derive(Debug, Clone)]
struct Kept {
    status: StatusCode,
    fields: HeaderMap,
    until: std::time::Instant,
}

/// A route's authentication service, settled at install.
#[derive(Debug)]
pub(crate) struct AuthService {
    /// Answers kept by cache key (`auth-cache-key`), read without locks; replaced whole when
    /// one is added, which happens once per key and duration.
    cache: arc_swap::ArcSwap<std::collections::HashMap<String, Kept>>,
    auth: Arc<ExternalAuth>,
    endpoint: vestibule_model::EndpointAddress,
    protocol: vestibule_model::UpstreamProtocol,
    /// The TLS client, for an `https` service.
    tls: Option<TlsResolved>,
    /// `Host` for the service.
    host: HeaderValue,
    method: Method,
    /// The fields copied from its answer, as names.
    response_fields: Vec<HeaderName>,
}

impl AuthService {
    pub(crate) fn new(
        auth: Arc<ExternalAuth>,
        endpoint: vestibule_model::EndpointAddress,
        tls: Option<TlsResolved>,
    ) -> AuthService {
        let default_port = if auth.https { 443 } else { 80 };
        let host = if auth.port == default_port {
            auth.host.to_string()
        } else if auth.host.contains(':') {
            format!("[{}]:{}", auth.host, auth.port)
        } else {
            format!("{}:{}", auth.host, auth.port)
        };
        // Names and methods were checked in the compile.
        AuthService {
            cache: arc_swap::ArcSwap::from_pointee(std::collections::HashMap::new()),
            host: HeaderValue::try_from(host).unwrap_or(HeaderValue::from_static("localhost")),
            method: Method::from_bytes(auth.method.as_bytes()).unwrap_or(Method::GET),
            response_fields: auth
                .response_headers
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
            protocol: if tls.is_some() {
                vestibule_model::UpstreamProtocol::Https
            } else {
                vestibule_model::UpstreamProtocol::Http1
            },
            auth,
            endpoint,
            tls,
        }
    }
}

/// What a request brings to the question.
pub(super) struct Asking<'a> {
    pub(super) method: &'a Method,
    /// The client's fields, hop-by-hop ones removed.
    pub(super) headers: &'a HeaderMap,
    /// `Host` as the client sent it, and without its port.
    pub(super) authority: &'a HeaderValue,
    pub(super) host: &'a str,
    /// The request target as it came, and its normalised path.
    pub(super) target: &'a str,
    pub(super) path: &'a str,
    pub(super) https: bool,
    pub(super) client_ip: IpAddr,
    pub(super) request_id: &'a HeaderValue,
}

/// The service's answer.
pub(super) struct Verdict {
    pub(super) outcome: Outcome,
    pub(super) cookies: AuthCookies,
}

/// Whether the request may go on.
pub(super) enum Outcome {
    /// It may, with these fields set on (or, `None`, removed from) the upstream request.
    Allowed(Vec<(HeaderName, Option<HeaderValue>)>),
    /// It may not: Vestibule's answer (boxed: the allowed case is the one to keep small).
    Answered(Box<Answer>),
}

/// What Vestibule answers when the request may not go on.
pub(super) type Answer = Result<Response<ProxyBody>, ProxyError>;

/// The service's `Set-Cookie`s, for the response the client gets.
#[derive(Debug)]
pub(crate) struct AuthCookies {
    list: Vec<HeaderValue>,
    /// They go on every response, not only those below 400.
    always: bool,
}

impl AuthCookies {
    pub(super) fn apply(self, response: &mut Response<ProxyBody>) {
        if self.always || response.status().as_u16() < 400 {
            for cookie in self.list {
                response.headers_mut().append(SET_COOKIE, cookie);
            }
        }
    }
}

/// Puts the request to the service.
pub(super) async fn ask(
    service: &AuthService,
    upstreams: &Upstreams,
    timeouts: Timeouts,
    asking: &Asking<'_>,
) -> Verdict {
    let auth = &*service.auth;
    let mut verdict = Verdict {
        outcome: Outcome::Allowed(Vec::new()),
        cookies: AuthCookies {
            list: Vec::new(),
            always: auth.always_set_cookie,
        },
    };
    let key = auth
        .cache
        .as_ref()
        .map(|cache| cache.key.expand(|v| value_of(v, asking)));
    if let Some(key) = &key
        && let Some(kept) = service.cache.load().get(key)
        && kept.until > std::time::Instant::now()
    {
        decide(service, kept.status, &kept.fields, asking, &mut verdict);
        return verdict;
    }
    let failed = |why: String| Outcome::Answered(Box::new(Err(ProxyError::AuthFailed(why.into()))));
    let mut outgoing = match question(service, asking) {
        Ok(request) => Outgoing::new(request),
        Err(why) => {
            verdict.outcome = failed(why);
            return verdict;
        }
    };
    let target = Target {
        endpoint: &service.endpoint,
        protocol: service.protocol,
        tls: service.tls.as_ref(),
    };
    let sent = upstreams
        .send(&target, &mut outgoing, &mut None, None, timeouts, true)
        .await;
    let response = match sent.result {
        Ok(response) => response,
        Err(e) => {
            verdict.outcome = failed(format!("the auth service {}: {e}", service.endpoint));
            return verdict;
        }
    };
    let (parts, body) = response.into_parts();
    // Read to its end, within reason, so that the connection goes back to the pool.
    let drained = http_body_util::Limited::new(body, ANSWER_BODY).collect();
    let _ = tokio::time::timeout(timeouts.read, drained).await;
    if let (Some(key), Some(cache)) = (key, &auth.cache)
        && cache.statuses.contains(&parts.status.as_u16())
    {
        keep(service, key, cache.seconds, parts.status, &parts.headers);
    }
    decide(service, parts.status, &parts.headers, asking, &mut verdict);
    verdict
}

/// Keeps an answer for `seconds`, with the fields a verdict reads of it.
fn keep(service: &AuthService, key: String, seconds: u64, status: StatusCode, headers: &HeaderMap) {
    let mut fields = HeaderMap::new();
    let names = service
        .response_fields
        .iter()
        .chain([&SET_COOKIE, &WWW_AUTHENTICATE]);
    for name in names {
        for value in headers.get_all(name) {
            fields.append(name.clone(), value.clone());
        }
    }
    let kept = Kept {
        status,
        fields,
        until: std::time::Instant::now() + std::time::Duration::from_secs(seconds),
    };
    service.cache.rcu(|cache| {
        let mut cache = if cache.len() >= CACHED {
            std::collections::HashMap::new()
        } else {
            (**cache).clone()
        };
        cache.insert(key.clone(), kept.clone());
        cache
    });
}

/// What an answer (`status`, `headers`) means for the request.
fn decide(
    service: &AuthService,
    status: StatusCode,
    headers: &HeaderMap,
    asking: &Asking<'_>,
    verdict: &mut Verdict,
) {
    let auth = &*service.auth;
    verdict.cookies.list = headers.get_all(SET_COOKIE).iter().cloned().collect();
    verdict.outcome = match status.as_u16() {
        200..=299 => Outcome::Allowed(
            service
                .response_fields
                .iter()
                .map(|name| (name.clone(), headers.get(name).cloned()))
                .collect(),
        ),
        401 => Outcome::Answered(Box::new(match &auth.signin {
            Some(signin) => redirect(StatusCode::FOUND, &signin.expand(|v| value_of(v, asking))),
            None => Err(ProxyError::Unauthorized(
                headers.get(WWW_AUTHENTICATE).cloned(),
            )),
        })),
        403 => Outcome::Answered(Box::new(Err(ProxyError::Forbidden))),
        other => Outcome::Answered(Box::new(Err(ProxyError::AuthFailed(
            format!("the auth service {} answered {other}", service.endpoint).into(),
        )))),
    };
}

/// The request the service gets.
fn question(
    service: &AuthService,
    asking: &Asking<'_>,
) -> Result<UpstreamRequest<'static>, String> {
    let auth = &*service.auth;
    let target = auth.target.expand(|v| value_of(v, asking));
    if !target.starts_with('/') {
        return Err(format!(
            "the auth URL's path {target:?} does not start with '/'"
        ));
    }
    let mut headers = asking.headers.clone();
    for name in NOT_ASKED {
        headers.remove(name);
    }
    // `auth-proxy-set-headers`, after the client's: they replace its copies.
    for (name, value) in &auth.proxy_set_headers {
        let value = value.expand(|v| value_of(v, asking));
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::try_from(value),
        ) {
            headers.insert(name, value);
        }
    }
    let scheme = if asking.https { "https" } else { "http" };
    let authority = asking.authority.to_str().unwrap_or("");
    let original = format!("{scheme}://{authority}{}", asking.target);
    let redirect_to = match &auth.request_redirect {
        Some(template) => template.expand(|v| value_of(v, asking)),
        None => asking.target.to_owned(),
    };
    let address = IpText::new(asking.client_ip);
    let mut forwarded = Forwarded::default();
    let mut push = |name: &'static HeaderName, text: &str| {
        if let Ok(v) = HeaderValue::try_from(text) {
            forwarded.push(name, v);
        }
    };
    push(&X_ORIGINAL_URL, &original);
    push(&X_ORIGINAL_METHOD, asking.method.as_str());
    push(&X_SENT_FROM, "nginx-ingress-controller");
    push(&X_AUTH_REQUEST_REDIRECT, &redirect_to);
    if let Some(address) = address.header_value() {
        forwarded.push(&X_REAL_IP, address.clone());
        forwarded.push(&X_FORWARDED_FOR, address);
    }
    forwarded.push(&X_REQUEST_ID, asking.request_id.clone());
    Ok(UpstreamRequest::side(
        service.method.clone(),
        Cow::Owned(target),
        service.host.clone(),
        headers,
        forwarded,
    ))
}

/// The value of a template variable for this request.
pub(super) fn value_of<'a>(var: &Var, asking: &'a Asking<'_>) -> Cow<'a, str> {
    let query = asking.target.split_once('?').map(|(_, q)| q);
    match var {
        Var::Host => Cow::Borrowed(asking.host),
        Var::HttpHost => Cow::Borrowed(asking.authority.to_str().unwrap_or("")),
        Var::RequestUri => Cow::Borrowed(asking.target),
        Var::EscapedRequestUri => Cow::Owned(escape_component(asking.target)),
        Var::Scheme => Cow::Borrowed(if asking.https { "https" } else { "http" }),
        Var::RemoteAddr => {
            Cow::Owned(String::from_utf8_lossy(IpText::new(asking.client_ip).as_bytes()).into())
        }
        Var::RequestMethod => Cow::Borrowed(asking.method.as_str()),
        Var::Uri => Cow::Borrowed(asking.path),
        Var::Args => Cow::Borrowed(query.unwrap_or("")),
        Var::Http(name) => Cow::Borrowed(
            asking
                .headers
                .get(&**name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        ),
        Var::Arg(name) => Cow::Borrowed(
            query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .find_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (k == &**name).then_some(v)
                })
                .unwrap_or(""),
        ),
        Var::RequestId => Cow::Borrowed(asking.request_id.to_str().unwrap_or("")),
        Var::Cookie(name) => Cow::Borrowed(
            asking
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    (k == &**name).then_some(v)
                })
                .unwrap_or(""),
        ),
    }
}
