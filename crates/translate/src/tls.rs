//! TLS Secrets: from `kubernetes.io/tls` Secrets to certificates, each problem named, and the
//! last good certificate of every Secret remembered between compiles so that a Secret that
//! goes bad (or away) keeps serving what it served before.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use vestibule_model::{Certificate, CertificateInfo, KeyFormat};
use x509_parser::extensions::GeneralName;

use crate::report::namespace_of;

/// The last good certificate of each Secret, carried from one compile to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertMemory {
    by_secret: BTreeMap<(String, String), Remembered>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Remembered {
    /// The Secret's bytes it was parsed from, so unchanged Secrets are not parsed again.
    crt: Vec<u8>,
    key: Vec<u8>,
    certificate: Arc<Certificate>,
}

impl CertMemory {
    pub fn len(&self) -> usize {
        self.by_secret.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_secret.is_empty()
    }
}

/// Why a Secret's certificate cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretProblem {
    Missing,
    WrongType(String),
    Unreadable(String),
    KeyMismatch,
    Expired(i64),
}

impl SecretProblem {
    /// A missing Secret is a dangling reference that may resolve (cert-manager has not issued
    /// it yet); the others are broken content.
    pub(crate) fn is_error(&self) -> bool {
        !matches!(self, SecretProblem::Missing)
    }
}

impl fmt::Display for SecretProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretProblem::Missing => f.write_str("does not exist"),
            SecretProblem::WrongType(t) => write!(f, "has type {t:?}, not kubernetes.io/tls"),
            SecretProblem::Unreadable(why) => write!(f, "cannot be used: {why}"),
            SecretProblem::KeyMismatch => {
                f.write_str("has a tls.key that does not belong to the certificate in tls.crt")
            }
            SecretProblem::Expired(at) => {
                write!(f, "holds a certificate that expired at {}", timestamp(*at))
            }
        }
    }
}

pub(crate) fn timestamp(unix: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// What loading a Secret gave: a certificate to use (fresh, or the last good one), and the
/// problem with the current content if there is one.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) certificate: Option<Arc<Certificate>>,
    pub(crate) problem: Option<SecretProblem>,
}

impl Loaded {
    /// How the hosts are served despite the problem, for diagnostics.
    pub(crate) fn fallback(&self, default: &str) -> String {
        match &self.certificate {
            Some(c) => format!(
                "its last good certificate (valid until {}) stays in use",
                timestamp(c.info.not_after)
            ),
            None => format!("{default} is used instead"),
        }
    }
}

/// Secrets of one compile, loaded at most once each.
pub(crate) struct Secrets<'s> {
    by_name: HashMap<(&'s str, &'s str), &'s Secret>,
    now: i64,
    memory: &'s CertMemory,
    next: CertMemory,
    loaded: HashMap<(String, String), Loaded>,
    provider: CryptoProvider,
}

impl<'s> Secrets<'s> {
    pub(crate) fn new(
        secrets: impl Iterator<Item = &'s Arc<Secret>>,
        memory: &'s CertMemory,
        now: i64,
    ) -> Self {
        let mut by_name = HashMap::new();
        for secret in secrets {
            let key = (
                namespace_of(&secret.metadata),
                secret.metadata.name.as_deref().unwrap_or(""),
            );
            by_name.entry(key).or_insert(&**secret);
        }
        Secrets {
            by_name,
            now,
            memory,
            next: CertMemory::default(),
            loaded: HashMap::new(),
            provider: rustls::crypto::aws_lc_rs::default_provider(),
        }
    }

    /// A Secret as it is, for the keys other than a TLS pair (`ca.crt` of `proxy-ssl-secret`).
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<&'s Secret> {
        self.by_name.get(&(namespace, name)).copied()
    }

    pub(crate) fn load(&mut self, namespace: &str, name: &str) -> Loaded {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(loaded) = self.loaded.get(&key) {
            return loaded.clone();
        }
        let remembered = self.memory.by_secret.get(&key);
        let result = match self.by_name.get(&(namespace, name)) {
            None => Err(SecretProblem::Missing),
            Some(secret) => self.read(secret, remembered),
        };
        let loaded = match result {
            Ok(remember) => {
                let certificate = remember.certificate.clone();
                self.next.by_secret.insert(key.clone(), remember);
                Loaded {
                    certificate: Some(certificate),
                    problem: None,
                }
            }
            Err(problem) => {
                // The last good certificate, unless it has expired meanwhile.
                let last_good = remembered.filter(|r| r.certificate.info.not_after >= self.now);
                if let Some(r) = last_good {
                    self.next.by_secret.insert(key.clone(), r.clone());
                }
                Loaded {
                    certificate: last_good.map(|r| r.certificate.clone()),
                    problem: Some(problem),
                }
            }
        };
        self.loaded.insert(key, loaded.clone());
        loaded
    }

    fn read(
        &self,
        secret: &Secret,
        remembered: Option<&Remembered>,
    ) -> Result<Remembered, SecretProblem> {
        let kind = secret.type_.as_deref().unwrap_or("Opaque");
        if kind != "kubernetes.io/tls" {
            return Err(SecretProblem::WrongType(kind.to_owned()));
        }
        let field = |name: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(name))
                .map(|b| b.0.as_slice())
                .filter(|b| !b.is_empty())
                .ok_or_else(|| SecretProblem::Unreadable(format!("{name} is missing or empty")))
        };
        let (crt, key) = (field("tls.crt")?, field("tls.key")?);
        let certificate = match remembered {
            // Unchanged since last time: no need to parse and check it again, except expiry.
            Some(r) if r.crt == crt && r.key == key => r.certificate.clone(),
            _ => {
                let source = format!(
                    "{}/{}",
                    namespace_of(&secret.metadata),
                    secret.metadata.name.as_deref().unwrap_or("")
                );
                Arc::new(parse(crt, key, source, &self.provider)?)
            }
        };
        if certificate.info.not_after < self.now {
            return Err(SecretProblem::Expired(certificate.info.not_after));
        }
        Ok(Remembered {
            crt: crt.to_vec(),
            key: key.to_vec(),
            certificate,
        })
    }

    /// The memory for the next compile: every Secret loaded in this one that had (or still
    /// has) a good certificate.
    pub(crate) fn finish(self) -> CertMemory {
        self.next
    }
}

/// Parses a PEM chain and key, reads the leaf's names and validity, and checks that the key
/// belongs to the leaf.
fn parse(
    crt: &[u8],
    key: &[u8],
    source: String,
    provider: &CryptoProvider,
) -> Result<Certificate, SecretProblem> {
    let unreadable = SecretProblem::Unreadable;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable(format!("tls.crt is not PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(unreadable("tls.crt holds no certificate".to_owned()));
    };
    let private_key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| unreadable(format!("tls.key is not a PEM private key: {e}")))?;
    let key_format = match &private_key {
        PrivateKeyDer::Pkcs1(_) => KeyFormat::Pkcs1,
        PrivateKeyDer::Sec1(_) => KeyFormat::Sec1,
        _ => KeyFormat::Pkcs8,
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| unreadable(format!("the first certificate in tls.crt: {e}")))?;
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                dns_names.push((*dns).to_owned());
            }
        }
    }
    let info = CertificateInfo {
        subject: parsed.subject().to_string(),
        dns_names,
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
        source,
    };
    let key_bytes = private_key.secret_der().to_vec();
    match rustls::sign::CertifiedKey::from_der(chain.clone(), private_key, provider) {
        Ok(_) => {}
        Err(rustls::Error::InconsistentKeys(_)) => return Err(SecretProblem::KeyMismatch),
        Err(e) => return Err(unreadable(format!("tls.key: {e}"))),
    }
    Ok(Certificate {
        chain: chain.iter().map(|c| c.to_vec()).collect(),
        key: key_bytes,
        key_format,
        info,
    })
}
