//! Making a connection to an endpoint: TCP within the connect timeout, then the TLS
//! handshake within the same timeout when the backend speaks TLS. A failure here means
//! nothing of the request left Vestibule.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use vestibule_model::EndpointAddress;

use super::tls::{TlsClient, TlsClientError};

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connection refused")]
    Refused,
    #[error("connecting timed out after {0:?}")]
    TimedOut(Duration),
    #[error("{0}")]
    Io(io::Error),
    #[error("TLS: {0}")]
    Tls(io::Error),
    #[error("HTTP handshake: {0}")]
    Handshake(hyper::Error),
    #[error("the upstream TLS name {0:?} is not valid")]
    ServerName(String),
}

/// A backend whose TLS client could not be made: each of its requests fails to connect so.
impl From<&TlsClientError> for ConnectError {
    fn from(error: &TlsClientError) -> ConnectError {
        match error {
            TlsClientError::Name(name) => ConnectError::ServerName(name.to_string()),
            TlsClientError::Config(why) => ConnectError::Tls(io::Error::other(why.to_string())),
        }
    }
}

impl ConnectError {
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, ConnectError::TimedOut(_))
    }
}

pub(crate) async fn connect(
    endpoint: &EndpointAddress,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let attempt = async {
        match endpoint {
            EndpointAddress::Socket(addr) => TcpStream::connect(*addr).await,
            EndpointAddress::Dns { host, port } => TcpStream::connect((host.as_ref(), *port)).await,
        }
    };
    let stream = match tokio::time::timeout(timeout, attempt).await {
        Err(_) => return Err(ConnectError::TimedOut(timeout)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::Refused);
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
            return Err(ConnectError::TimedOut(timeout));
        }
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

pub(super) async fn tls_connect(
    stream: TcpStream,
    client: &TlsClient,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
    let connector = TlsConnector::from(client.config.clone());
    let handshake = connector.connect(client.name.clone(), stream);
    match tokio::time::timeout(timeout, handshake).await {
        Err(_) => Err(ConnectError::TimedOut(timeout)),
        Ok(Err(e)) => Err(ConnectError::Tls(e)),
        Ok(Ok(stream)) => Ok(stream),
    }
}
