//! Test certificates made with rcgen: valid, expired, with a key that belongs to another
//! certificate, and with the three private key encodings Secrets carry.

use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256};

/// A certificate and its key, as PEM (what a TLS Secret holds) and as DER.
#[derive(Debug, Clone)]
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate's DER, to compare with what a server presented.
    pub der: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEncoding {
    /// ECDSA P-256 in `PRIVATE KEY`.
    Pkcs8,
    /// RSA in `RSA PRIVATE KEY`.
    Pkcs1,
    /// ECDSA P-256 in `EC PRIVATE KEY`.
    Sec1,
}

/// Validity relative to now, in days.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub from_days: i64,
    pub until_days: i64,
}

impl Default for Validity {
    fn default() -> Self {
        Validity {
            from_days: -1,
            until_days: 365,
        }
    }
}

/// A valid certificate for `names` with a PKCS#8 ECDSA key.
pub fn cert(names: &[&str]) -> TestCert {
    cert_with(names, KeyEncoding::Pkcs8, Validity::default())
}

/// A certificate that expired yesterday.
pub fn expired(names: &[&str]) -> TestCert {
    cert_with(
        names,
        KeyEncoding::Pkcs8,
        Validity {
            from_days: -30,
            until_days: -1,
        },
    )
}

/// A valid certificate for `names` that expires `seconds` from now, to watch expiry happen.
pub fn expiring_in(names: &[&str], seconds: i64) -> TestCert {
    let now = time::OffsetDateTime::now_utc();
    build(
        names,
        KeyEncoding::Pkcs8,
        now - time::Duration::days(1),
        now + time::Duration::seconds(seconds),
    )
}

/// A certificate for `names` paired with the key of another certificate.
pub fn mismatched(names: &[&str]) -> TestCert {
    let mut one = cert(names);
    one.key_pem = cert(names).key_pem;
    one
}

pub fn cert_with(names: &[&str], encoding: KeyEncoding, validity: Validity) -> TestCert {
    let today = time::OffsetDateTime::now_utc();
    build(
        names,
        encoding,
        today + time::Duration::days(validity.from_days),
        today + time::Duration::days(validity.until_days),
    )
}

fn build(
    names: &[&str],
    encoding: KeyEncoding,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> TestCert {
    let algorithm = match encoding {
        KeyEncoding::Pkcs1 => &PKCS_RSA_SHA256,
        KeyEncoding::Pkcs8 | KeyEncoding::Sec1 => &PKCS_ECDSA_P256_SHA256,
    };
    let key = KeyPair::generate_for(algorithm).unwrap_or_else(|e| panic!("key generation: {e}"));
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("certificate names {names:?}: {e}"));
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("test"));
    params.not_before = not_before;
    params.not_after = not_after;
    let certificate = params
        .self_signed(&key)
        .unwrap_or_else(|e| panic!("self-signing: {e}"));
    let pkcs8 = key.serialize_der();
    let key_pem = match encoding {
        KeyEncoding::Pkcs8 => key.serialize_pem(),
        KeyEncoding::Pkcs1 => pem("RSA PRIVATE KEY", &inner_private_key(&pkcs8)),
        KeyEncoding::Sec1 => pem(
            "EC PRIVATE KEY",
            &sec1_with_curve(&inner_private_key(&pkcs8)),
        ),
    };
    TestCert {
        cert_pem: certificate.pem(),
        key_pem,
        der: certificate.der().to_vec(),
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn base64(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads one DER TLV at `at`: (tag, content start, content end).
fn tlv(der: &[u8], at: usize) -> (u8, usize, usize) {
    let tag = der[at];
    let first = der[at + 1];
    let (len, header) = if first & 0x80 == 0 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        let len = der[at + 2..at + 2 + n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (len, 2 + n)
    };
    (tag, at + header, at + header + len)
}

/// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo`: for RSA that is the PKCS#1
/// `RSAPrivateKey`, for EC the SEC1 `ECPrivateKey`.
fn inner_private_key(pkcs8: &[u8]) -> Vec<u8> {
    let (_, body, _) = tlv(pkcs8, 0);
    let (_, _, after_version) = tlv(pkcs8, body);
    let (_, _, after_algorithm) = tlv(pkcs8, after_version);
    let (tag, start, end) = tlv(pkcs8, after_algorithm);
    assert_eq!(tag, 0x04, "privateKey is an OCTET STRING");
    pkcs8[start..end].to_vec()
}

/// Adds the `[0] parameters` field naming P-256 to an `ECPrivateKey`, as `openssl ec` writes
/// it: inside PKCS#8 the curve is in the algorithm identifier instead.
fn sec1_with_curve(ec: &[u8]) -> Vec<u8> {
    const P256: &[u8] = &[
        0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let (_, body, end) = tlv(ec, 0);
    let (_, _, after_version) = tlv(ec, body);
    let (_, _, after_key) = tlv(ec, after_version);
    let mut content = ec[body..after_key].to_vec();
    content.extend_from_slice(P256);
    content.extend_from_slice(&ec[after_key..end]);
    let mut out = vec![0x30];
    if content.len() < 128 {
        out.push(u8::try_from(content.len()).unwrap_or(0));
    } else {
        out.push(0x81);
        out.push(u8::try_from(content.len()).unwrap_or(0));
    }
    out.extend_from_slice(&content);
    out
}

/// A certificate authority for client certificates: its certificate (what an
/// `auth-tls-secret` holds in `ca.crt`) and what it needs to issue more.
pub struct TestCa {
    pub cert_pem: String,
    /// The CA certificate's DER, for a chain a client presents.
    pub der: Vec<u8>,
    params: CertificateParams,
    key: KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A new CA whose subject is `CN=<name>`.
pub fn ca(name: &str) -> TestCa {
    let (params, key) = ca_params(name);
    let certificate = params
        .self_signed(&key)
        .unwrap_or_else(|e| panic!("self-signing the CA: {e}"));
    TestCa {
        cert_pem: certificate.pem(),
        der: certificate.der().to_vec(),
        params,
        key,
    }
}

fn ca_params(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .unwrap_or_else(|e| panic!("key generation: {e}"));
    let mut params = CertificateParams::new(Vec::<String>::new())
        .unwrap_or_else(|e| panic!("CA parameters: {e}"));
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    (params, key)
}

impl TestCa {
    /// An intermediate CA whose subject is `CN=<name>`, signed by this one.
    pub fn intermediate(&self, name: &str) -> TestCa {
        let (params, key) = ca_params(name);
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let certificate = params
            .signed_by(&key, &issuer)
            .unwrap_or_else(|e| panic!("signing the intermediate: {e}"));
        TestCa {
            cert_pem: certificate.pem(),
            der: certificate.der().to_vec(),
            params,
            key,
        }
    }

    /// A client certificate for `CN=<common_name>, O=<organization>`, signed by this CA.
    pub fn client(&self, common_name: &str, organization: &str) -> TestCert {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .unwrap_or_else(|e| panic!("key generation: {e}"));
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("client parameters: {e}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, organization);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let certificate = params
            .signed_by(&key, &issuer)
            .unwrap_or_else(|e| panic!("signing the client certificate: {e}"));
        TestCert {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            der: certificate.der().to_vec(),
        }
    }
}
