//! The request path. [`Shared::handle`] reads as the phases a request meets, in the order
//! ingress-nginx's users expect: read the head, route, early answers, (access control),
//! rewrite, pick, send with retries, response rules, record. Each phase is a plain function
//! over the route compiled when the table was installed, in a module of its own; a phase
//! returns what it decided, and the request's one record is filled in from those results
//! here, then handed to observability when the response is done.

pub(crate) mod access;
pub(crate) mod auth;
pub(crate) mod client_cert;
mod control;
pub(crate) mod cors;
mod early;
pub(crate) mod errors;
mod forwarded;
mod head;
pub(crate) mod headers;
pub(crate) mod limit;
mod pick;
mod response;
mod retry;
mod rewrite;
mod route;
mod send;
mod tunnel;

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use tracing::{debug, warn};

use self::forwarded::Hop;
use self::head::Head;
use self::route::Routing;
use crate::body::response::ProxyBody;
use crate::dataplane::DataPlane;
use crate::observe::Observability;
use crate::observe::metrics::{AuthKind, AuthOutcome};
use crate::observe::record::Record;
use crate::respond::{ProxyError, Style, error_response};
use crate::server::client::ClientSide;
use crate::settings::ProxySettings;
use crate::upstream::client::{Timeouts, Upstreams};

/// What the phases that wait need of the request's own.
struct Sending<'a> {
    client: &'a ClientSide,
    request_id: &'a HeaderValue,
    record: &'a mut Record,
    /// The authentication service's cookies, for whatever response the client gets.
    cookies: &'a mut Option<auth::AuthCookies>,
}

/// The request's own values, as templates (`auth-url`, header rules) read them.
fn asking<'a>(
    ready: &'a Ready<'_>,
    host: &'a str,
    request_id: &'a HeaderValue,
) -> auth::Asking<'a> {
    let request = ready.rewritten.outgoing.request();
    auth::Asking {
        method: &request.method,
        headers: &request.headers,
        authority: &ready.head.authority,
        host,
        target: ready.head.target,
        path: &ready.head.path,
        https: ready.https,
        client_ip: ready.client_ip,
        request_id,
    }
}

/// Where the phases that decide without waiting leave a request.
// Boxing the large variant would cost an allocation on every proxied request to save stack
// on the rare answered one; the value lives only between `prepare` and its caller's match.
#[expect(
    clippy::large_enum_variant,
    reason = "the large variant is the hot path"
)]
enum Prepared<'u> {
    /// Vestibule answers it itself (a redirect).
    Answered(Response<ProxyBody>),
    /// It goes upstream.
    Send(Ready<'u>),
}

/// A request ready to be sent: what the phases before sending decided.
struct Ready<'u> {
    head: Head<'u>,
    routed: route::Routed,
    rewritten: rewrite::Rewritten<'u>,
    tunnel: Option<tunnel::Tunnel>,
    chosen: pick::Chosen,
    client_ip: std::net::IpAddr,
    /// A password to verify before anything is sent.
    pending: Option<access::Pending>,
    /// The request's scheme as the client used it.
    https: bool,
}

/// What every request reads: the installed configuration, the upstream pool (one for every
/// listener, so the HTTP and HTTPS listeners share keep-alive connections), the settings,
/// and where to report.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dataplane: Arc<DataPlane>,
    pub(crate) upstreams: Upstreams,
    pub(crate) settings: ProxySettings,
    pub(crate) observe: Observability,
}

impl Shared {
    /// Answers one request: the upstream's response, or Vestibule's own answer. Every phase
    /// up to the pick decides without waiting (`prepare`); then the request is sent, with
    /// retries, and the response made ready for the client.
    pub(crate) async fn handle(
        &self,
        client: &ClientSide,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let style = Style::of(request.headers());
        let request_id = forwarded::request_id(request.headers());
        let mut record = Record::start(&self.observe, client, &request, &request_id);
        let (mut parts, body) = request.into_parts();
        let uri = std::mem::take(&mut parts.uri);
        let mut cookies = None;
        let answered = match self.prepare(client, &uri, parts, body, &request_id, &mut record) {
            Ok(Prepared::Answered(response)) => Ok(response),
            Ok(Prepared::Send(ready)) => {
                let sending = Sending {
                    client,
                    request_id: &request_id,
                    record: &mut record,
                    cookies: &mut cookies,
                };
                self.forward(ready, sending).await
            }
            Err(error) => Err(error),
        };
        let mut response = answered.unwrap_or_else(|error| {
            if error.status().is_server_error() {
                warn!(status = error.status().as_u16(), error = %error, "request failed");
            } else {
                debug!(status = error.status().as_u16(), error = %error, "request refused");
            }
            error_response(&error, style)
        });
        if let Some(cookies) = cookies {
            cookies.apply(&mut response);
        }
        if let Some(owed) = record.headers.take() {
            owed.apply(&mut response);
        }
        if let Some(cors) = record.cors.take() {
            cors.apply(&mut response);
        }
        let hsts = self.settings.hsts.as_ref().filter(|_| record.hsts);
        response::every(&mut response, request_id, hsts);
        // Record: handed to observability, counted and logged once the body is done.
        let unrouted = self.dataplane.unrouted_stats();
        record.finish(&self.observe, unrouted, &mut response);
        response
    }

    /// The phases that wait: access control's (a password not verified before, the
    /// authentication service), then send with retries, then the response rules.
    async fn forward(
        &self,
        mut ready: Ready<'_>,
        sending: Sending<'_>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if let Some(pending) = ready.pending.take() {
            let verified = pending.verify().await;
            let outcome = match verified {
                Ok(_) => AuthOutcome::Allowed,
                Err(_) => AuthOutcome::Denied,
            };
            ready.routed.count_auth(AuthKind::Basic, outcome);
            sending.record.user(&verified?);
        }
        if let Some(service) = ready.routed.state().external_auth.clone() {
            let verdict = self.ask(&service, &ready, sending.request_id).await;
            *sending.cookies = Some(verdict.cookies);
            let fields = match verdict.outcome {
                auth::Outcome::Allowed(fields) => fields,
                // Vestibule's own answer: the 401, 403 or 500, or the sign-in redirect.
                auth::Outcome::Answered(answer) => return *answer,
            };
            // The user the service names (`X-Auth-Request-User` and the like), for the log.
            let named = fields.iter().find_map(|(name, value)| {
                let value = value.as_ref()?.to_str().ok()?;
                name.as_str().contains("user").then_some(value)
            });
            if let Some(user) = named {
                sending.record.user(user);
            }
            let headers = &mut ready.rewritten.outgoing.request_mut().headers;
            for (name, value) in fields {
                match value {
                    Some(value) => headers.insert(name, value),
                    None => headers.remove(name),
                };
            }
        }
        if ready.chosen.fallback {
            let headers = &mut ready.rewritten.outgoing.request_mut().headers;
            errors::fallback_fields(&ready.routed, ready.head.target, 503, headers);
        }
        // The route's header rules, expanded once from the request as it is now.
        if let Some(rules) = ready.routed.state().headers.clone() {
            let host = ready.head.host();
            let values = asking(&ready, &host, sending.request_id);
            let (request, response) = headers::owed(&rules, &values);
            sending.record.headers = Some(response);
            headers::apply_request(request, ready.rewritten.outgoing.request_mut());
        }
        // Send with retries.
        let balancing = pick::Balancing::new(
            &ready.routed,
            ready.chosen,
            &ready.head,
            ready.rewritten.outgoing.request(),
            ready.client_ip,
            sending.client.https,
        );
        let (routed, rewritten) = (&ready.routed, &mut ready.rewritten);
        let sent =
            send::with_retries(&self.upstreams, routed, ready.chosen, rewritten, balancing).await;
        sending
            .record
            .sent(sent.attempts, ready.rewritten.progress.clone());
        let mut result = sent.result;
        if let Some(errors) = &ready.routed.state().custom_errors {
            // Boxed: the error backend's request is rare, and its state would otherwise
            // grow every request's future.
            let intercepting = self.intercept(&ready, errors, result, sending.request_id);
            result = Box::pin(intercepting).await;
        }
        // Response rules.
        let read_timeout = ready.routed.state().proxy.read_timeout;
        let (tunnel, cookie) = (ready.tunnel, sent.set_cookie);
        let rules = ready.routed.state().headers.as_deref();
        result.map(|upstream| response::upstream(upstream, tunnel, read_timeout, cookie, rules))
    }

    /// `custom-http-errors`: a response with a listed status, the upstream's or ours, is
    /// replaced by the error backend's answer, when it gives one.
    async fn intercept(
        &self,
        ready: &Ready<'_>,
        errors: &crate::dataplane::ErrorBackend,
        result: Result<Response<crate::upstream::response::ResponseBody>, ProxyError>,
        request_id: &HeaderValue,
    ) -> Result<Response<crate::upstream::response::ResponseBody>, ProxyError> {
        let status = match &result {
            Ok(response) => response.status(),
            Err(error) => error.status(),
        };
        if !errors.takes(status.as_u16()) {
            return result;
        }
        let host = ready.head.host();
        let asking = asking(ready, &host, request_id);
        let timeouts = Timeouts::of(&ready.routed.state().proxy);
        let routed = &ready.routed;
        let answer = errors::ask(
            &self.upstreams,
            routed,
            errors,
            &asking,
            status.as_u16(),
            timeouts,
        );
        answer.await.map_or(result, Ok)
    }

    /// Puts the request to the route's authentication service.
    async fn ask(
        &self,
        service: &auth::AuthService,
        ready: &Ready<'_>,
        request_id: &HeaderValue,
    ) -> auth::Verdict {
        let host = ready.head.host();
        let asking = asking(ready, &host, request_id);
        let timeouts = Timeouts::of(&ready.routed.state().proxy);
        let started = std::time::Instant::now();
        let verdict = auth::ask(service, &self.upstreams, timeouts, &asking).await;
        let outcome = match &verdict.outcome {
            auth::Outcome::Allowed(_) => AuthOutcome::Allowed,
            auth::Outcome::Answered(answer) => match &**answer {
                Err(ProxyError::AuthFailed(_)) => AuthOutcome::Error,
                _ => AuthOutcome::Denied,
            },
        };
        ready.routed.count_auth(AuthKind::External, outcome);
        if let Some(stats) = &ready.routed.state().stats {
            stats.auth_service(started.elapsed());
        }
        verdict
    }

    /// The phases that decide without waiting, in order: read the head, route, early
    /// answers, access control, rewrite, pick. The first to answer ends the request.
    fn prepare<'u>(
        &self,
        client: &ClientSide,
        uri: &'u Uri,
        mut parts: Parts,
        body: Incoming,
        request_id: &HeaderValue,
        record: &mut Record,
    ) -> Result<Prepared<'u>, ProxyError> {
        // Read the head.
        let head = Head::read(uri, &parts.headers, parts.version, &self.settings)?;
        let trusted = &self.settings.trusted_proxies;
        let (client_ip, trusted) = head::client_address(client, &parts.headers, trusted);
        record.client(client_ip);
        head::check_blocked(&self.settings.blocked, client_ip, &parts.headers)?;
        // The scheme as the client used it: a trusted proxy in front may have taken its TLS.
        let https = head::forwarded_https(client.https, &parts.headers, trusted);

        // Route.
        let routing = self.route(&head, &parts.headers, client.https, record);

        // Early answers: the host's own, then the route's.
        if let Some(answer) = early::server(routing.server(), &head, https) {
            return answer.map(Prepared::Answered);
        }
        let Routing::Found(routed) = routing else {
            return Err(ProxyError::NoRoute);
        };
        let preflight = record.cors.as_ref().map(|cors| (cors, &parts.method));
        if let Some(answer) = early::route(&routed, &head, https, &self.settings, preflight) {
            return answer.map(Prepared::Answered);
        }

        // Access control, then the route's limit on the body.
        let granted = match self.access(&routed, client_ip, client, &mut parts.headers, record) {
            Ok(granted) => granted,
            Err(answer) => return (*answer).map(Prepared::Answered),
        };
        routed.check_length(head.content_length)?;

        // Rewrite.
        let tunnel = tunnel::requested(&mut parts);
        let hop = Hop {
            client,
            host: &head.authority,
            trusted,
            client_ip,
            request_id,
        };
        let upgrade = tunnel.as_ref().map(|t| t.upgrade.clone());
        let mut rewritten =
            rewrite::rewrite(parts, body, &head, uri, routed.state(), &hop, upgrade);
        if !granted.certified.is_empty() {
            let forwarded = &mut rewritten.outgoing.request_mut().forwarded;
            for (name, value) in granted.certified {
                forwarded.push(name, value);
            }
        }

        // Pick: the cluster here, an endpoint per attempt as the request is sent.
        let chosen = pick::cluster(&routed, &rewritten.outgoing.request().headers)?;
        record.cluster(chosen.cluster);
        if chosen.canary {
            record.canary(routed.canary_stats());
        }
        Ok(Prepared::Send(Ready {
            head,
            routed,
            rewritten,
            tunnel,
            chosen,
            client_ip,
            pending: granted.pending,
            https,
        }))
    }

    /// The access control phase: fail closed, the request-rate limits, then the address
    /// lists, client certificates and basic authentication (`control`).
    fn access(
        &self,
        routed: &route::Routed,
        client_ip: std::net::IpAddr,
        client: &ClientSide,
        headers: &mut http::HeaderMap,
        record: &mut Record,
    ) -> Result<control::Granted, Box<auth::Answer>> {
        let refuse = |error| Box::new(Err(error));
        routed.check_access().map_err(refuse)?;
        record.hold(routed.limit(client_ip, &self.settings).map_err(refuse)?);
        let certificates = client.certificates.as_deref();
        let granted = control::control(routed, client_ip, certificates, headers)?;
        if let Some(user) = &granted.user {
            record.user(user);
        }
        Ok(granted)
    }

    /// The route phase, and what the record keeps of it.
    fn route(
        &self,
        head: &Head<'_>,
        headers: &http::HeaderMap,
        https: bool,
        record: &mut Record,
    ) -> Routing {
        let routing = route::route(&self.dataplane, https, &head.host(), head.routing_path());
        match &routing {
            Routing::Found(routed) => {
                let state = routed.state();
                record.hsts = routed.hsts;
                record.cors = state.cors.as_ref().map(|c| cors::owed(c, headers));
                record.routed(
                    &routed.runtime,
                    routed.at,
                    state.stats.clone(),
                    state.proxy.access_log,
                );
            }
            Routing::NotFound { hsts, .. } => record.hsts = *hsts,
        }
        routing
    }
}
