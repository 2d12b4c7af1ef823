//! Early answers: what Vestibule answers itself once the route is known and before access
//! control, as nginx's rewrite phase does: the host's own redirects (`from-to-www-redirect`,
//! then `app-root`), the route's CORS preflight, its fixed redirect (`permanent-redirect`,
//! `temporal-redirect`) or a snippet's `return`, then the redirect from plain HTTP to HTTPS, which spares ACME
//! HTTP-01 challenges.

use http::{Method, Response, StatusCode};
use vestibule_model::ServerRules;

use super::cors::Owed;
use super::head::Head;
use super::route::Routed;
use crate::body::response::{ProxyBody, full};
use crate::respond::{ProxyError, redirect, redirect_to_https};
use crate::settings::ProxySettings;

type Answer = Option<Result<Response<ProxyBody>, ProxyError>>;

/// The host's own answer, if any, whether or not a route matched. `https`: the request's
/// scheme, as the client or a trusted proxy in front saw it.
#[inline]
pub(super) fn server(server: Option<&ServerRules>, head: &Head<'_>, https: bool) -> Answer {
    let server = server?;
    let scheme = if https { "https" } else { "http" };
    let authority = head.authority.to_str().unwrap_or("");
    if let Some(to) = &server.redirect_host {
        let port = port_of(authority);
        let location = format!("{scheme}://{to}{port}{}", head.target);
        return Some(redirect(StatusCode::PERMANENT_REDIRECT, &location));
    }
    match &server.app_root {
        Some(root) if &*head.path == "/" && !authority.is_empty() => {
            let location = format!("{scheme}://{authority}{root}");
            Some(redirect(StatusCode::FOUND, &location))
        }
        _ => None,
    }
}

/// The route's answer, if any: a CORS preflight (`preflight`: what the request owes to
/// the route's CORS policy, and its method), then the fixed redirect, then HTTPS.
#[inline]
pub(super) fn route(
    routed: &Routed,
    head: &Head<'_>,
    https: bool,
    settings: &ProxySettings,
    preflight: Option<(&Owed, &Method)>,
) -> Answer {
    if let Some(answer) = preflight.and_then(|(cors, method)| cors.preflight(method)) {
        return Some(Ok(answer));
    }
    if let Some(fixed) = &routed.state().redirect {
        let code = StatusCode::from_u16(fixed.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
        return Some(redirect(code, &fixed.location));
    }
    if let Some(fixed) = &routed.state().fixed {
        return Some(Ok(fixed_answer(fixed)));
    }
    if !routed.wants_https || https {
        return None;
    }
    let host = head.host();
    // cert-manager's HTTP-01 solver answers on plain HTTP: redirecting it would stop the
    // certificate that makes HTTPS work from ever being issued. A request with no host has
    // nowhere to be redirected to.
    if host.is_empty() || is_acme_challenge(&head.path) {
        return None;
    }
    let (port, code) = (settings.https_redirect_port, settings.http_redirect_code);
    Some(redirect_to_https(&host, port, head.target, code))
}

/// A snippet's `return CODE [text]`: the status, and the text as a plain body.
fn fixed_answer(fixed: &vestibule_model::Fixed) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(fixed.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // `return 403;` alone: the status's own words, as nginx's page says them.
    let body = match &*fixed.body {
        "" => format!("{status}\n"),
        text => text.to_owned(),
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(http::header::SERVER, crate::respond::SERVER_NAME);
    response
}

/// `:port` when the client's Host names one, else nothing.
fn port_of(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(at)
            if !authority[at..].contains(']')
                && authority.len() > at + 1
                && authority[at + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &authority[at..]
        }
        _ => "",
    }
}

fn is_acme_challenge(path: &str) -> bool {
    path.starts_with("/.well-known/acme-challenge/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acme_challenges_are_recognised_by_their_path() {
        assert!(is_acme_challenge("/.well-known/acme-challenge/token"));
        assert!(!is_acme_challenge("/.well-known/acme-challenge"));
        assert!(!is_acme_challenge("/x/.well-known/acme-challenge/token"));
    }

    #[test]
    fn the_port_of_a_host_is_kept_and_an_ipv6_address_is_not_a_port() {
        assert_eq!(port_of("a.example:8080"), ":8080");
        assert_eq!(port_of("a.example"), "");
        assert_eq!(port_of("[::1]"), "");
        assert_eq!(port_of("[::1]:81"), ":81");
        assert_eq!(port_of("a.example:"), "");
    }
}
