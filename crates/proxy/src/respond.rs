//! Every response the proxy makes itself, in one place: failures, classified where they
//! happen and turned into a status, a short body (plain text, or JSON when the client asks
//! for it) and `Server: vestibule`; and the redirect from HTTP to HTTPS. Bodies never carry
//! internal addresses or errors; those go to the log.

use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue, LOCATION, SERVER};
use http::{HeaderMap, Response, StatusCode};

use crate::body::response::{ProxyBody, full};
use crate::upstream::error::BoxError;

pub(crate) const SERVER_NAME: HeaderValue = HeaderValue::from_static("vestibule");

/// Why Vestibule answered a request itself instead of forwarding the upstream's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("no route for this host and path")]
    NoRoute,
    #[error("backend unavailable: {0}")]
    BackendUnavailable(Box<str>),
    #[error("no ready endpoints in {0}")]
    NoEndpoints(String),
    #[error("connecting to {endpoint}: {source}")]
    UpstreamConnect { endpoint: String, source: BoxError },
    #[error("{endpoint} did not answer in time")]
    UpstreamTimeout { endpoint: String },
    #[error("{endpoint}: {source}")]
    UpstreamFailed { endpoint: String, source: BoxError },
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(u64),
    #[error("the request target is too long")]
    UriTooLong,
    #[error("the request headers are too large")]
    HeadersTooLarge,
    /// The route wants a user and password, and the request has none that are right; the
    /// value is the `WWW-Authenticate` challenge.
    #[error("authentication required")]
    Unauthorized(Option<HeaderValue>),
    /// The authentication service said no (403).
    #[error("the authentication service refused the request")]
    Forbidden,
    /// The authentication service could not be asked, or answered other than 2xx, 401 or
    /// 403: a 500, as nginx's `auth_request` gives.
    #[error("authentication failed: {0}")]
    AuthFailed(Box<str>),
    /// The route's Ingress asks for protection Vestibule cannot give (fail closed).
    #[error("refused: the Ingress asks for {0}, which is not supported")]
    Refused(Box<str>),
    /// A request-rate limit refused it; the status is the operator's
    /// (`--limit-req-status-code`, `--limit-conn-status-code`).
    #[error("the client is over the route's request limit")]
    Limited(StatusCode),
    /// An HTTP/1 request head not complete within the client header timeout.
    #[error("the request headers did not arrive within the client header timeout")]
    RequestTimeout,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::AuthFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::BackendUnavailable(_)
            | ProxyError::NoEndpoints(_)
            | ProxyError::Refused(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamConnect { .. } | ProxyError::UpstreamFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Limited(status) => *status,
        }
    }

    /// What the client is told: fixed sentences only.
    fn public_message(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(why) => why,
            ProxyError::NoRoute => "no route for this host and path",
            ProxyError::Unauthorized(_) => "authentication required",
            ProxyError::Forbidden => "access to this route is denied",
            ProxyError::AuthFailed(_) => "authentication could not be checked",
            ProxyError::BackendUnavailable(_) => "the backend for this route is not available",
            ProxyError::NoEndpoints(_) => "the backend has no ready endpoints",
            ProxyError::Refused(_) => "this route is closed until its protection is available",
            ProxyError::UpstreamConnect { .. } => "the backend could not be reached",
            ProxyError::UpstreamFailed { .. } => "the backend failed to answer",
            ProxyError::UpstreamTimeout { .. } => "the backend did not answer in time",
            ProxyError::PayloadTooLarge(_) => "the request body is too large",
            ProxyError::UriTooLong => "the request target is too long",
            ProxyError::HeadersTooLarge => "the request headers are too large",
            ProxyError::RequestTimeout => "the request headers did not arrive in time",
            ProxyError::Limited(_) => "too many requests; try again later",
        }
    }

    /// The gRPC status for a gRPC request Vestibule fails itself, after the gRPC spec's
    /// HTTP-to-gRPC mapping, with Vestibule's own timeouts as DEADLINE_EXCEEDED.
    fn grpc_status(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "12",
            ProxyError::Unauthorized(_) => "16",
            ProxyError::Forbidden => "7",
            ProxyError::AuthFailed(_) => "13",
            ProxyError::UpstreamTimeout { .. } | ProxyError::RequestTimeout => "4",
            ProxyError::PayloadTooLarge(_)
            | ProxyError::HeadersTooLarge
            | ProxyError::Limited(_) => "8",
            ProxyError::BadRequest(_) | ProxyError::UriTooLong => "13",
            ProxyError::BackendUnavailable(_)
            | ProxyError::NoEndpoints(_)
            | ProxyError::Refused(_)
            | ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamFailed { .. } => "14",
        }
    }
}

/// The body format of error responses, decided from the request before it is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Text,
    Json,
    /// A gRPC client: a Trailers-Only response with `grpc-status`, which gRPC libraries
    /// understand where an HTTP error status would only say "unknown".
    Grpc,
}

impl Style {
    pub(crate) fn of(request_headers: &HeaderMap) -> Style {
        if request_headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
        {
            return Style::Grpc;
        }
        let json = request_headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/json"));
        if json { Style::Json } else { Style::Text }
    }
}

/// The response for an error.
pub(crate) fn error_response(error: &ProxyError, style: Style) -> Response<ProxyBody> {
    let mut response = error_body(error, style);
    if let ProxyError::Unauthorized(Some(challenge)) = error {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, challenge.clone());
    }
    response
}

fn error_body(error: &ProxyError, style: Style) -> Response<ProxyBody> {
    let status = error.status();
    if style == Style::Grpc {
        let mut response = Response::new(full(""));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from_static(error.grpc_status()));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static(error.public_message()),
        );
        headers.insert(SERVER, SERVER_NAME);
        return response;
    }
    let reason = status.canonical_reason().unwrap_or("");
    let message = error.public_message();
    let (content_type, body) = if style == Style::Json {
        let body = serde_json::json!({
            "status": status.as_u16(),
            "error": reason,
            "message": message,
        });
        ("application/json", format!("{body}\n"))
    } else {
        (TEXT, text_body(error))
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(SERVER, SERVER_NAME);
    response
}

const TEXT: &str = "text/plain; charset=utf-8";

/// `404 Not Found: no route for this host and path`.
fn text_body(error: &ProxyError) -> String {
    let status = error.status();
    let reason = status.canonical_reason().unwrap_or("");
    format!("{} {reason}: {}\n", status.as_u16(), error.public_message())
}

/// The 408 for a client that did not finish a request head within the client header
/// timeout, as bytes for the connection: there is no request to answer through hyper. The
/// connection closes after it.
pub(crate) fn request_timeout() -> Vec<u8> {
    let error = ProxyError::RequestTimeout;
    let status = error.status();
    let body = text_body(&error);
    format!(
        "HTTP/1.1 {} {}\r\nServer: vestibule\r\nContent-Type: {TEXT}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into_bytes()
}

/// A 308 to the same host and request target on HTTPS (308 rather than 301 so that the
/// method and body are kept). `host` has no port; `target` is the path and query exactly as
/// the client sent them.
pub(crate) fn redirect_to_https(
    host: &str,
    port: u16,
    target: &str,
    code: StatusCode,
) -> Result<Response<ProxyBody>, ProxyError> {
    let location = if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    };
    redirect(code, &location)
}

/// A redirect Vestibule answers itself, with a one-line body naming the status.
pub(crate) fn redirect(
    code: StatusCode,
    location: &str,
) -> Result<Response<ProxyBody>, ProxyError> {
    let location = HeaderValue::try_from(location)
        .map_err(|_| ProxyError::BadRequest("the request target is not valid"))?;
    let body = match code {
        StatusCode::MOVED_PERMANENTLY => "301 Moved Permanently\n",
        StatusCode::FOUND => "302 Found\n",
        StatusCode::TEMPORARY_REDIRECT => "307 Temporary Redirect\n",
        StatusCode::PERMANENT_REDIRECT => "308 Permanent Redirect\n",
        _ => "Redirect\n",
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(LOCATION, location);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(TEXT));
    headers.insert(SERVER, SERVER_NAME);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn all() -> Vec<(ProxyError, u16)> {
        let source = || -> BoxError { "boom at 10.0.0.1:8080".into() };
        vec![
            (ProxyError::BadRequest("the path is not valid"), 400),
            (ProxyError::NoRoute, 404),
            (
                ProxyError::Unauthorized(Some(HeaderValue::from_static("Basic realm=\"x\""))),
                401,
            ),
            (ProxyError::Forbidden, 403),
            (ProxyError::AuthFailed("auth.example: refused".into()), 500),
            (ProxyError::Refused("auth-url".into()), 503),
            (ProxyError::RequestTimeout, 408),
            (ProxyError::Limited(StatusCode::TOO_MANY_REQUESTS), 429),
            (
                ProxyError::BackendUnavailable("Service a/b not found".into()),
                503,
            ),
            (ProxyError::NoEndpoints("a/b:80".into()), 503),
            (
                ProxyError::UpstreamConnect {
                    endpoint: "10.0.0.1:8080".into(),
                    source: source(),
                },
                502,
            ),
            (
                ProxyError::UpstreamFailed {
                    endpoint: "10.0.0.1:8080".into(),
                    source: source(),
                },
                502,
            ),
            (
                ProxyError::UpstreamTimeout {
                    endpoint: "10.0.0.1:8080".into(),
                },
                504,
            ),
        ]
    }

    #[test]
    fn the_request_timeout_is_the_408_error_as_whole_http() {
        let answer = String::from_utf8(request_timeout()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            head,
            format!(
                "HTTP/1.1 408 Request Timeout\r\nServer: vestibule\r\n\
                 Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
                 Connection: close",
                body.len()
            )
        );
        assert_eq!(body, text_body(&ProxyError::RequestTimeout));
    }

    async fn body_of(response: Response<ProxyBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn each_error_has_its_status_a_short_body_and_no_internal_detail() {
        for (error, status) in all() {
            let response = error_response(&error, Style::Text);
            assert_eq!(response.status().as_u16(), status, "{error}");
            assert_eq!(response.headers()[SERVER], "vestibule");
            assert_eq!(
                response.headers()[CONTENT_TYPE],
                "text/plain; charset=utf-8"
            );
            let body = body_of(response).await;
            assert!(body.starts_with(&format!("{status} ")), "{body}");
            assert!(
                !body.contains("10.0.0.1") && !body.contains("boom"),
                "{body}"
            );
            assert!(body.len() < 100, "{body}");
        }
    }

    #[tokio::test]
    async fn json_when_the_client_accepts_it() {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json, */*"));
        let response = error_response(&ProxyError::NoRoute, Style::of(&headers));
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_str(&body_of(response).await).unwrap();
        assert_eq!(body["status"], 404);
        assert_eq!(body["error"], "Not Found");
    }
}
