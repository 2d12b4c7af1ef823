//! Key material for TLS, shared by both sides of the proxy: the process's crypto provider,
//! and signing keys made from the table's certificates.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::sign::CertifiedKey;
use vestibule_model::{Certificate, KeyFormat};

/// Why TLS could not be set up, naming the certificate at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the TLS provider refused the protocol versions: {0}")]
    Versions(rustls::Error),
    #[error("creating the session ticket key: {0}")]
    Ticketer(rustls::Error),
    #[error("the certificate from {source_name} cannot be used: {error}")]
    Certificate {
        source_name: String,
        error: rustls::Error,
    },
    #[error("generating the self-signed default certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The process's crypto provider: the one installed at start-up, or aws-lc-rs when none was
/// (tests that build a data plane directly).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// A signing key for a certificate whose chain and key were checked when it was compiled.
pub(crate) fn certified_key(
    certificate: &Certificate,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificate
        .chain
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    let key = certificate.key.clone();
    let key = match certificate.key_format {
        KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(key)),
        KeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(key)),
        KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
    };
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|error| TlsError::Certificate {
            source_name: certificate.info.source.clone(),
            error,
        })
}
