//! Access control, the checks that decide without waiting, in nginx's order: the client's
//! address (allow and deny lists), the client certificate (`client_cert`), then basic
//! authentication (`access`); each decision counted
//! in the route's metrics. The external authentication service, which waits, is asked later
//! (`auth`).

use http::HeaderMap;
use http::header::HeaderValue;

use super::access::{Basic, Pending, basic};
use super::auth::Answer;
use super::client_cert;
use super::route::Routed;
use crate::observe::metrics::{AuthKind, AuthOutcome};

/// What access control let through: the client certificate's fields for the upstream, and
/// a password still to be verified.
pub(super) struct Granted {
    pub(super) certified: Vec<(&'static http::HeaderName, HeaderValue)>,
    pub(super) pending: Option<Pending>,
    /// The user a remembered password let in.
    pub(super) user: Option<String>,
}

/// The checks that decide without waiting, in nginx's order: the client certificate, then
/// basic authentication. Each decision is counted in the route's metrics.
#[inline]
pub(super) fn control(
    routed: &Routed,
    client: std::net::IpAddr,
    certificates: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    headers: &mut HeaderMap,
) -> Result<Granted, Box<Answer>> {
    let state = routed.state();
    if let Some(ranges) = &state.source_ranges
        && !ranges.admits(client)
    {
        return Err(Box::new(Err(crate::respond::ProxyError::Forbidden)));
    }
    let certified = match &state.client_cert {
        Some(guard) => match client_cert::check(guard, certificates) {
            Ok(fields) => {
                routed.count_auth(AuthKind::Certificate, AuthOutcome::Allowed);
                fields
            }
            Err(answer) => {
                routed.count_auth(AuthKind::Certificate, AuthOutcome::Denied);
                return Err(answer);
            }
        },
        None => Vec::new(),
    };
    let (pending, user) = match basic(state.basic_auth.as_ref(), headers) {
        Ok(Basic::Off) => (None, None),
        Ok(Basic::Known(user)) => {
            routed.count_auth(AuthKind::Basic, AuthOutcome::Allowed);
            (None, Some(user))
        }
        Ok(Basic::Pending(pending)) => (Some(pending), None),
        Err(refused) => {
            routed.count_auth(AuthKind::Basic, AuthOutcome::Denied);
            return Err(Box::new(Err(refused)));
        }
    };
    Ok(Granted {
        certified,
        pending,
        user,
    })
}
