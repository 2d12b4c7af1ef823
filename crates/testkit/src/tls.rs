//! A TLS client for tests: connects with or without SNI, offers the ALPN protocols (and TLS
//! versions) asked for, accepts whatever certificate the server presents and reports which
//! one it was, and speaks HTTP/1.1 or HTTP/2 (as ALPN decided) over the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, IpAddr, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Accepts any certificate: tests check which one was presented, not whether it chains to a
/// root.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration offering `alpn` (e.g. `["h2", "http/1.1"]`) and TLS 1.3 and 1.2.
/// Reuse one to get session resumption between connections.
pub fn client_config(alpn: &[&str]) -> Arc<ClientConfig> {
    client_config_with(alpn, &[&rustls::version::TLS13, &rustls::version::TLS12])
}

/// A client configuration offering `alpn` and only the TLS `versions` given.
pub fn client_config_with(
    alpn: &[&str],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap_or_else(|e| panic!("TLS versions: {e}"))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// A client configuration offering `alpn` that presents `cert` when the server asks for a
/// client certificate.
pub fn client_config_with_certificate(
    alpn: &[&str],
    cert: &crate::certs::TestCert,
) -> Arc<ClientConfig> {
    client_config_with_chain(alpn, cert, &[])
}

/// The same, presenting `intermediates` (DER) after the certificate.
pub fn client_config_with_chain(
    alpn: &[&str],
    cert: &crate::certs::TestCert,
    intermediates: &[Vec<u8>],
) -> Arc<ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = std::iter::once(&cert.der)
        .chain(intermediates)
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .unwrap_or_else(|e| panic!("client key: {e}"));
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap_or_else(|e| panic!("TLS versions: {e}"))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_client_auth_cert(chain, key)
        .unwrap_or_else(|e| panic!("client certificate: {e}"));
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// A finished handshake.
#[derive(Debug)]
pub struct Connected {
    pub stream: TlsStream<TcpStream>,
    /// DER of the certificate the server presented.
    pub certificate: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
    pub resumed: bool,
    pub version: Option<rustls::ProtocolVersion>,
}

/// Connects and completes a handshake. `server_name: None` sends no SNI, as a client that
/// connects by IP address does.
pub async fn connect(
    addr: SocketAddr,
    server_name: Option<&str>,
    config: &Arc<ClientConfig>,
) -> std::io::Result<Connected> {
    let name = match server_name {
        Some(name) => ServerName::try_from(name.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        None => ServerName::IpAddress(IpAddr::from(addr.ip())),
    };
    let tcp = TcpStream::connect(addr).await?;
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(config.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))??;
    let connection = stream.get_ref().1;
    let certificate = connection
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
    let resumed = connection.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let version = connection.protocol_version();
    Ok(Connected {
        stream,
        certificate,
        alpn,
        resumed,
        version,
    })
}

/// A response read in full.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// An HTTP connection over TLS: HTTP/2 when ALPN chose `h2`, else HTTP/1.1. Requests can be
/// sent on it one after another, so tests can keep a connection open across a change.
pub struct Session {
    sender: Sender,
    pub certificate: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
    pub resumed: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("alpn", &self.alpn)
            .field("resumed", &self.resumed)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connects, completes the handshake and the HTTP connection preface.
    pub async fn open(
        addr: SocketAddr,
        server_name: Option<&str>,
        config: &Arc<ClientConfig>,
    ) -> std::io::Result<Session> {
        let connected = connect(addr, server_name, config).await?;
        let io = TokioIo::new(connected.stream);
        let sender = if connected.alpn.as_deref() == Some(b"h2") {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(std::io::Error::other)?;
            tokio::spawn(connection);
            Sender::Http2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(connection);
            Sender::Http1(sender)
        };
        Ok(Session {
            sender,
            certificate: connected.certificate,
            alpn: connected.alpn,
            resumed: connected.resumed,
        })
    }

    pub fn is_http2(&self) -> bool {
        matches!(self.sender, Sender::Http2(_))
    }

    /// `GET` of `path` for `host`: in `:authority` on HTTP/2, in `Host` on HTTP/1.1.
    pub async fn get(&mut self, host: &str, path: &str) -> std::io::Result<Reply> {
        let response = match &mut self.sender {
            Sender::Http2(sender) => {
                let request = http::Request::get(format!("https://{host}{path}"))
                    .body(Empty::new())
                    .map_err(std::io::Error::other)?;
                sender.send_request(request).await
            }
            Sender::Http1(sender) => {
                let request = http::Request::get(path)
                    .header(http::header::HOST, host)
                    .body(Empty::new())
                    .map_err(std::io::Error::other)?;
                sender.send_request(request).await
            }
        }
        .map_err(std::io::Error::other)?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// One `GET` on a new connection: open, send, read the response.
pub async fn fetch(
    addr: SocketAddr,
    server_name: Option<&str>,
    config: &Arc<ClientConfig>,
    host: &str,
    path: &str,
) -> std::io::Result<Reply> {
    Session::open(addr, server_name, config)
        .await?
        .get(host, path)
        .await
}

/// The bytes a client's first flight (its ClientHello) is sent in, as a real rustls client
/// makes them, for tests that speak TLS's start by hand. `server_name: None` sends no SNI.
pub fn client_hello(server_name: Option<&str>) -> Vec<u8> {
    let name = match server_name {
        Some(name) => ServerName::try_from(name.to_owned())
            .unwrap_or_else(|e| panic!("server name {name:?}: {e}")),
        None => ServerName::IpAddress(IpAddr::from(std::net::Ipv4Addr::LOCALHOST)),
    };
    let mut connection = rustls::ClientConnection::new(client_config(&["http/1.1"]), name)
        .unwrap_or_else(|e| panic!("client connection: {e}"));
    let mut hello = Vec::new();
    while connection.wants_write() {
        if let Err(e) = connection.write_tls(&mut hello) {
            panic!("ClientHello: {e}");
        }
    }
    hello
}
