//! Early answers: what Vestibule answers itself once the route is known and before access
//! control, as nginx's rewrite phase does. Today that is the redirect from plain HTTP to
//! HTTPS, which spares ACME HTTP-01 challenges.

use http::Response;

use super::head::Head;
use super::route::Routed;
use crate::body::response::ProxyBody;
use crate::respond::{ProxyError, redirect_to_https};

/// The answer Vestibule gives itself, if any. `https`: the request came over TLS;
/// `https_port` is where redirected clients go.
#[inline]
pub(super) fn answer(
    routed: &Routed,
    head: &Head<'_>,
    https: bool,
    https_port: u16,
) -> Option<Result<Response<ProxyBody>, ProxyError>> {
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
    Some(redirect_to_https(&host, https_port, head.target))
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
}
