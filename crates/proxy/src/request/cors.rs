//! Cross-origin resource sharing: the fields a route's responses carry (every response,
//! Vestibule's own included, as ingress-nginx's `more_set_headers` gives them), and the
//! preflight answered 204 among the early answers, before access control, so a browser's
//! `OPTIONS` never needs credentials.

use std::sync::Arc;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    CONTENT_TYPE, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use vestibule_model::{Cors, CorsAnswer};

use crate::body::response::{ProxyBody, full};

/// A route's CORS fields, made once when its table is installed.
#[derive(Debug)]
pub(crate) struct CorsFields {
    cors: Arc<Cors>,
    methods: HeaderValue,
    headers: HeaderValue,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
}

impl CorsFields {
    /// `None` when a value cannot be a field; the compile lets only token lists through, so
    /// that does not happen.
    pub(crate) fn new(cors: &Arc<Cors>) -> Option<CorsFields> {
        let value = |text: &str| HeaderValue::from_str(text).ok();
        Some(CorsFields {
            cors: Arc::clone(cors),
            methods: value(&cors.methods)?,
            headers: value(&cors.headers)?,
            expose: match &cors.expose {
                Some(expose) => Some(value(expose)?),
                None => None,
            },
            max_age: HeaderValue::from(cors.max_age),
        })
    }
}

/// What the responses of one request owe to CORS: the route's fields, and the answer to
/// the request's `Origin`.
#[derive(Debug)]
pub(crate) struct Owed {
    fields: Arc<CorsFields>,
    answer: CorsAnswer,
    origin: Option<HeaderValue>,
}

/// The request's due under its route's CORS policy.
#[inline]
pub(crate) fn owed(fields: &Arc<CorsFields>, headers: &HeaderMap) -> Owed {
    let origin = headers.get(ORIGIN);
    let answer = fields.cors.answer(origin.and_then(|o| o.to_str().ok()));
    Owed {
        fields: Arc::clone(fields),
        answer,
        origin: (answer == CorsAnswer::Origin)
            .then(|| origin.cloned())
            .flatten(),
    }
}

impl Owed {
    /// Sets the CORS fields on a response, replacing the upstream's own.
    /// The request's one response gets them: the answered origin is moved, not copied.
    pub(crate) fn apply<B>(self, response: &mut Response<B>) {
        let headers = response.headers_mut();
        if self.fields.cors.varies() {
            add_vary_origin(headers);
        }
        let allow_origin = match (self.answer, self.origin) {
            (CorsAnswer::Any, _) => HeaderValue::from_static("*"),
            (CorsAnswer::Origin, Some(origin)) => origin,
            _ => return,
        };
        let fields = &*self.fields;
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if fields.cors.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, fields.methods.clone());
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, fields.headers.clone());
        headers.insert(ACCESS_CONTROL_MAX_AGE, fields.max_age.clone());
        if let Some(expose) = &fields.expose {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }

    /// The preflight's answer: 204 for an `OPTIONS` from an origin the route answers for.
    /// Its CORS fields are set with every response's.
    pub(crate) fn preflight(&self, method: &Method) -> Option<Response<ProxyBody>> {
        if method != Method::OPTIONS || self.answer == CorsAnswer::None {
            return None;
        }
        let mut response = Response::new(full(""));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        // ingress-nginx's exact value, which some clients' tests compare. No
        // `Content-Length: 0`, which nginx adds: a 204 must not have one (RFC 9110 8.6).
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain charset=UTF-8"),
        );
        Some(response)
    }
}

/// Adds `Origin` to `Vary` unless a `Vary` already names it (or is `*`).
fn add_vary_origin(headers: &mut HeaderMap) {
    let named = headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|n| n == "*" || n.eq_ignore_ascii_case("origin"))
        })
    });
    if !named {
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vestibule_model::{AllowedOrigins, OriginPattern};

    fn fields(origins: AllowedOrigins) -> Arc<CorsFields> {
        let cors = Arc::new(Cors {
            origins,
            methods: "GET, POST".into(),
            headers: "Authorization".into(),
            expose: Some("X-Total".into()),
            credentials: true,
            max_age: 600,
        });
        Arc::new(CorsFields::new(&cors).unwrap())
    }

    fn request(origin: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(ORIGIN, HeaderValue::from_static(origin));
        }
        headers
    }

    #[test]
    fn a_listed_origin_is_echoed_and_caches_are_told_it_varies() {
        let list = AllowedOrigins::List(vec![
            OriginPattern::parse("https://app.example.com").unwrap(),
        ]);
        let f = fields(list);
        let mut response = Response::new(());
        response
            .headers_mut()
            .insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        response.headers_mut().insert(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("https://upstream.example"),
        );
        owed(&f, &request(Some("https://app.example.com"))).apply(&mut response);
        let h = response.headers();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(h[ACCESS_CONTROL_EXPOSE_HEADERS], "X-Total");
        let vary: Vec<_> = h.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);

        let mut other = Response::new(());
        owed(&f, &request(Some("https://evil.example"))).apply(&mut other);
        assert!(!other.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(other.headers()[VARY], "Origin");
        let owed_other = owed(&f, &request(Some("https://evil.example")));
        assert!(owed_other.preflight(&Method::OPTIONS).is_none());
    }

    #[test]
    fn any_origin_answers_every_response_and_every_preflight() {
        let f = fields(AllowedOrigins::Any);
        let due = owed(&f, &request(None));
        let preflight = due.preflight(&Method::OPTIONS).unwrap();
        assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
        assert!(due.preflight(&Method::GET).is_none());
        let mut response = Response::new(());
        due.apply(&mut response);
        assert_eq!(response.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!response.headers().contains_key(VARY));
    }
}
