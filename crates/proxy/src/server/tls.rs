//! TLS termination: the rustls server configuration, the resolver that picks a certificate
//! for each handshake from the installed table, and the self-signed certificate served when
//! nothing else applies.
//!
//! The resolver reads the data plane on every handshake, so a certificate that changes is
//! served to the next handshake without touching connections that are already open.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use vestibule_model::{Certificate, CertificateInfo, CertificateRef, KeyFormat};

use crate::crypto::{TlsError, certified_key, provider};
use crate::dataplane::DataPlane;
use crate::settings::ProxySettings;

/// Where the generated certificate says it came from, in `/debug/config` and logs.
const GENERATED_SOURCE: &str = "(generated at start-up)";

/// A self-signed certificate for when no `--default-ssl-certificate` is configured (or it
/// cannot be used). Clients will not trust it, which is the point: it only answers
/// handshakes for names that have no certificate of their own.
pub fn self_signed_certificate() -> Result<Certificate, TlsError> {
    const NAME: &str = "vestibule.invalid";
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![NAME.to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Vestibule default certificate");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    let certificate = params.self_signed(&key)?;
    Ok(Certificate {
        chain: vec![certificate.der().to_vec()],
        key: key.serialize_der(),
        key_format: KeyFormat::Pkcs8,
        info: CertificateInfo {
            subject: "CN=Vestibule default certificate".to_owned(),
            dns_names: vec![NAME.to_owned()],
            not_before: params.not_before.unix_timestamp(),
            not_after: params.not_after.unix_timestamp(),
            source: GENERATED_SOURCE.to_owned(),
        },
    })
}

/// Picks the certificate for a handshake from the table installed at that moment.
#[derive(Debug)]
struct Resolver {
    dataplane: Arc<DataPlane>,
    /// Served when the table names no usable certificate for the server name.
    fallback: Arc<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let runtime = self.dataplane.load();
        let key = match runtime.table.tls().for_server_name(hello.server_name()) {
            CertificateRef::Index(i) => runtime.keys.get(i as usize).cloned().flatten(),
            CertificateRef::Default => None,
        };
        Some(key.unwrap_or_else(|| self.fallback.clone()))
    }
}

/// The two server configurations of an HTTPS listener, alike but for client certificates:
/// `asking` asks the client for one, for hosts whose routes check them (`auth-tls-*`), and
/// `plain` does not, so browsers are not prompted elsewhere. The handshake picks one by SNI.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub(crate) plain: Arc<ServerConfig>,
    pub(crate) asking: Arc<ServerConfig>,
}

/// The server configuration of an HTTPS listener: TLS 1.3 and 1.2, ALPN `h2` then
/// `http/1.1`, session resumption by both tickets and a session cache, and certificates
/// picked per handshake from what `dataplane` has installed, with `fallback` for names that
/// have none.
pub fn server_config(
    dataplane: Arc<DataPlane>,
    fallback: &Certificate,
    settings: &ProxySettings,
) -> Result<TlsConfig, TlsError> {
    let provider = provider();
    let fallback = certified_key(fallback, &provider)?;
    let resolver = Arc::new(Resolver {
        dataplane,
        fallback,
    });
    let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(TlsError::Ticketer)?;
    let sessions = ServerSessionMemoryCache::new(settings.tls_session_cache_size);
    let verifier = Arc::new(AcceptAnyClient(provider.clone()));
    let build = |asking: bool| -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Versions)?;
        let builder = if asking {
            builder.with_client_cert_verifier(verifier.clone())
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Tickets let resumption work across the worker threads without shared state; the
        // cache covers TLS 1.2 clients that do not use tickets.
        config.ticketer = ticketer.clone();
        config.session_storage = sessions.clone();
        Ok(Arc::new(config))
    };
    Ok(TlsConfig {
        plain: build(false)?,
        asking: build(true)?,
    })
}

/// Asks for a client certificate without requiring one and takes whatever chain comes: the
/// route checks it in HTTP, so that a missing or bad certificate gets nginx's 400 (or the
/// error page) rather than a failed handshake. The handshake's signature is still checked:
/// a client must hold the key of the certificate it sends.
#[derive(Debug)]
struct AcceptAnyClient(Arc<CryptoProvider>);

impl ClientCertVerifier for AcceptAnyClient {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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
