//! Connections to endpoints: pooled keep-alive HTTP/1.1, behind this module's small interface
//! so the pool can be replaced without touching the request path.

use std::error::Error as StdError;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use vestibule_model::EndpointAddress;

use crate::respond::ProxyError;

/// Timeouts and pool limits towards upstreams. Defaults are ingress-nginx's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// Time from sending a request to the upstream's response headers.
    pub response_timeout: Duration,
    /// Idle keep-alive connections are closed after this long.
    pub idle_timeout: Duration,
    /// Idle keep-alive connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_idle_per_endpoint: 320,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Upstreams {
    client: Client<HttpConnector, Incoming>,
    response_timeout: Duration,
}

impl Upstreams {
    pub(crate) fn new(settings: &UpstreamSettings) -> Upstreams {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.idle_timeout)
            .pool_max_idle_per_host(settings.max_idle_per_endpoint)
            .build(connector);
        Upstreams {
            client,
            response_timeout: settings.response_timeout,
        }
    }

    /// Sends a request whose URI already names the endpoint, and waits for the response
    /// headers. Failures come back classified for the error responder.
    pub(crate) async fn send(
        &self,
        endpoint: &EndpointAddress,
        request: Request<Incoming>,
    ) -> Result<Response<Incoming>, ProxyError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(classify(endpoint, e)),
            Err(_) => Err(ProxyError::UpstreamTimeout {
                endpoint: endpoint.to_string(),
            }),
        }
    }
}

fn classify(endpoint: &EndpointAddress, error: hyper_util::client::legacy::Error) -> ProxyError {
    let endpoint = endpoint.to_string();
    let timed_out = {
        let mut source: Option<&(dyn StdError + 'static)> = error.source();
        let mut found = false;
        while let Some(e) = source {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                found = true;
                break;
            }
            source = e.source();
        }
        found
    };
    if timed_out {
        ProxyError::UpstreamTimeout { endpoint }
    } else if error.is_connect() {
        ProxyError::UpstreamConnect {
            endpoint,
            source: Box::new(error),
        }
    } else {
        ProxyError::UpstreamFailed {
            endpoint,
            source: Box::new(error),
        }
    }
}
