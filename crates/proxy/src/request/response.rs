//! Response rules: the upstream's response made ready for the client (the upstream
//! connection's own fields gone, its redirects and cookies rewritten by the route's rules, a
//! tunnel opened for a 101, `Server` when the upstream sent none, a new affinity cookie), then the fields every response gets, Vestibule's own
//! included: `X-Request-ID`, and HSTS on HTTPS responses of hosts with TLS.

use std::time::Duration;

use http::header::{HeaderValue, SERVER, SET_COOKIE, STRICT_TRANSPORT_SECURITY, UPGRADE};
use http::{Response, StatusCode};

use vestibule_model::HeaderRules;

use super::forwarded::X_REQUEST_ID;
use super::headers;
use super::tunnel::{self, Tunnel};
use crate::body::response::ProxyBody;
use crate::body::timed::Timed;
use crate::fields::remove_hop_by_hop;
use crate::respond::SERVER_NAME;
use crate::upstream::response::ResponseBody;

/// The upstream's response as the client gets it, its body held to the read timeout.
#[inline]
pub(super) fn upstream(
    response: Response<ResponseBody>,
    tunnel: Option<Tunnel>,
    read_timeout: Duration,
    set_cookie: Option<HeaderValue>,
    rules: Option<&HeaderRules>,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    let upgrade_header = switching
        .then(|| parts.headers.get(UPGRADE).cloned())
        .flatten();
    // `upstream::h1` leaves the connection's fields out as it reads them.
    if !matches!(body, ResponseBody::Direct(_)) {
        remove_hop_by_hop(&mut parts.headers);
    }
    if let Some(rules) = rules {
        headers::rewrite_upstream(rules, &mut parts.headers);
    }
    if let (true, Some(tunnel)) = (switching, tunnel) {
        tunnel::open(tunnel, &mut parts, upgrade_header);
    }
    if !parts.headers.contains_key(SERVER) {
        parts.headers.insert(SERVER, SERVER_NAME);
    }
    if let Some(cookie) = set_cookie {
        parts.headers.append(SET_COOKIE, cookie);
    }
    Response::from_parts(parts, ProxyBody::upstream(Timed::new(body, read_timeout)))
}

/// The fields every response gets, whoever answered: the request's ID, so a client can
/// quote it; and, when `hsts` holds, the HSTS policy (browsers take it from any HTTPS
/// response of the host), unless the backend set its own.
#[inline]
pub(super) fn every(
    response: &mut Response<ProxyBody>,
    request_id: HeaderValue,
    hsts: Option<&HeaderValue>,
) {
    let headers = response.headers_mut();
    headers.insert(&X_REQUEST_ID, request_id);
    if let Some(value) = hsts {
        headers
            .entry(STRICT_TRANSPORT_SECURITY)
            .or_insert_with(|| value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::response::full;

    #[test]
    fn every_response_carries_its_request_id_and_hsts_when_owed() {
        let policy = HeaderValue::from_static("max-age=60");
        let mut ours = Response::new(full("x"));
        every(&mut ours, HeaderValue::from_static("id-1"), Some(&policy));
        assert_eq!(ours.headers()["x-request-id"], "id-1");
        assert_eq!(ours.headers()[STRICT_TRANSPORT_SECURITY], "max-age=60");
        let mut backends = Response::new(full("x"));
        backends.headers_mut().insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=5"),
        );
        every(
            &mut backends,
            HeaderValue::from_static("id-2"),
            Some(&policy),
        );
        assert_eq!(backends.headers()[STRICT_TRANSPORT_SECURITY], "max-age=5");
        let mut plain = Response::new(full("x"));
        every(&mut plain, HeaderValue::from_static("id-3"), None);
        assert!(!plain.headers().contains_key(STRICT_TRANSPORT_SECURITY));
    }
}
