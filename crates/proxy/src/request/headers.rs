//! Header rules: the fields a route sets on or removes from the request sent upstream and
//! the response the client gets, their values expanded once per request from the request's
//! own (`$host`, `$request_id` ...); and the upstream's `Location`, `Refresh` and
//! `Set-Cookie` rewritten. An expanded value that is not a valid field value (a client's
//! `$http_*` carrying a byte no field may) is left out, never sent.

use http::header::{HeaderName, HeaderValue, LOCATION, SET_COOKIE};
use http::{HeaderMap, Response};
use vestibule_model::{HeaderOp, HeaderRules};

use super::auth::{Asking, value_of};
use crate::upstream::request::UpstreamRequest;

/// One change, expanded.
#[derive(Debug)]
pub(super) enum Change {
    Set(HeaderName, HeaderValue),
    Add(HeaderName, HeaderValue),
    Remove(HeaderName),
}

/// The response fields one request's rules owe, whoever answers.
#[derive(Debug)]
pub(crate) struct OwedResponse {
    changes: Vec<(Change, bool)>,
}

impl Change {
    fn name(&self) -> &HeaderName {
        match self {
            Change::Set(name, _) | Change::Add(name, _) | Change::Remove(name) => name,
        }
    }

    fn apply(self, headers: &mut HeaderMap) {
        match self {
            Change::Set(name, value) => {
                headers.insert(name, value);
            }
            Change::Add(name, value) => {
                headers.append(name, value);
            }
            Change::Remove(name) => {
                headers.remove(name);
            }
        }
    }
}

impl OwedResponse {
    /// Applies the changes whose status condition the response meets.
    /// A request ends with one response: the changes are moved into it, not copied.
    pub(crate) fn apply<B>(self, response: &mut Response<B>) {
        let status = response.status().as_u16();
        let headers = response.headers_mut();
        for (change, always) in self.changes {
            if always || add_header_status(status) {
                change.apply(headers);
            }
        }
    }
}

/// The statuses nginx's `add_header` (without `always`) applies to.
fn add_header_status(status: u16) -> bool {
    matches!(
        status,
        200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
    )
}

/// One rule expanded for this request; `None` when its name or value cannot be sent.
fn expand(op: &HeaderOp, asking: &Asking<'_>) -> Option<Change> {
    let name = HeaderName::from_bytes(op.name().as_bytes()).ok()?;
    let (value, add) = match op {
        HeaderOp::Remove { .. } => return Some(Change::Remove(name)),
        HeaderOp::Set { value, .. } => (value, false),
        HeaderOp::Add { value, .. } => (value, true),
    };
    let text = value.expand(|var| value_of(var, asking));
    // As nginx's `proxy_set_header X ""` (and `add_header` with an empty value): nothing is
    // sent.
    if text.is_empty() {
        return (!add).then_some(Change::Remove(name));
    }
    let value = HeaderValue::from_str(&text).ok()?;
    Some(match add {
        true => Change::Add(name, value),
        false => Change::Set(name, value),
    })
}

/// The request's changes and the responses' dues under `rules`, expanded from `asking`.
pub(super) fn owed(rules: &HeaderRules, asking: &Asking<'_>) -> (Vec<Change>, OwedResponse) {
    let request = rules
        .request
        .iter()
        .filter_map(|op| expand(op, asking))
        .collect();
    let changes = rules
        .response
        .iter()
        .filter_map(|r| Some((expand(&r.op, asking)?, r.always)))
        .collect();
    (request, OwedResponse { changes })
}

/// Applies the request's changes to the fields sent upstream, in place of Vestibule's own
/// forwarding fields of the same name.
pub(super) fn apply_request(changes: Vec<Change>, request: &mut UpstreamRequest<'_>) {
    for change in changes {
        request.forwarded.forget(change.name());
        change.apply(&mut request.headers);
    }
}

/// Rewrites the upstream's `Location`, `Refresh` and `Set-Cookie` by the route's rules.
pub(super) fn rewrite_upstream(rules: &HeaderRules, headers: &mut HeaderMap) {
    if rules.redirect.is_some() {
        for name in [LOCATION, HeaderName::from_static("refresh")] {
            let rewritten = headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| rules.redirect(v))
                .and_then(|v| HeaderValue::from_str(&v).ok());
            if let Some(value) = rewritten {
                headers.insert(name, value);
            }
        }
    }
    if rules.cookie_domain.is_some() || rules.cookie_path.is_some() {
        let cookies: Vec<HeaderValue> = headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| {
                v.to_str()
                    .ok()
                    .and_then(|text| rules.cookie(text))
                    .and_then(|text| HeaderValue::from_str(&text).ok())
                    .unwrap_or_else(|| v.clone())
            })
            .collect();
        headers.remove(SET_COOKIE);
        for cookie in cookies {
            headers.append(SET_COOKIE, cookie);
        }
    }
}
