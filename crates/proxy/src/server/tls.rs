//! TLS termination: the rustls server configuration, the resolver that picks a certificate
//! for each handshake from the installed table, and the self-signed certificate served when
//! nothing else applies.
//!
//! The resolver reads the data plane on every handshake, so a certificate that changes is
//! served to the next handshake without touching connections that are already open.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
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

/// The server configuration of an HTTPS listener: TLS 1.3 and 1.2, ALPN `h2` then
/// `http/1.1`, session resumption by both tickets and a session cache, and certificates
/// picked per handshake from what `dataplane` has installed, with `fallback` for names that
/// have none.
pub fn server_config(
    dataplane: Arc<DataPlane>,
    fallback: &Certificate,
    settings: &ProxySettings,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let fallback = certified_key(fallback, &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Versions)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver {
            dataplane,
            fallback,
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Tickets let resumption work across the worker threads without shared state; the
    // cache covers TLS 1.2 clients that do not use tickets.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(TlsError::Ticketer)?;
    config.session_storage = ServerSessionMemoryCache::new(settings.tls_session_cache_size);
    Ok(Arc::new(config))
}
