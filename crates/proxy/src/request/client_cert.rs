//! Client certificates, the access-control check of `auth-tls-*`: the handshake of a host
//! that checks them asked for a certificate and took any (`server::tls`); here the chain is
//! verified against the route's CA, so that a missing or bad certificate gets nginx's 400 (or
//! the error page) and a subject that does not match gets 403, and the upstream is told the
//! outcome in `ssl-client-verify`, `ssl-client-subject-dn`, `ssl-client-issuer-dn` and, when
//! asked, `ssl-client-cert`.

use std::sync::Arc;

use http::StatusCode;
use http::header::{HeaderName, HeaderValue};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use vestibule_model::{ClientAuth, VerifyClient, escape_component};

use super::auth::Answer;
use crate::crypto::provider;
use crate::respond::{ProxyError, redirect};

pub(super) static SSL_CLIENT_VERIFY: HeaderName = HeaderName::from_static("ssl-client-verify");
pub(super) static SSL_CLIENT_SUBJECT_DN: HeaderName =
    HeaderName::from_static("ssl-client-subject-dn");
pub(super) static SSL_CLIENT_ISSUER_DN: HeaderName =
    HeaderName::from_static("ssl-client-issuer-dn");
pub(super) static SSL_CLIENT_CERT: HeaderName = HeaderName::from_static("ssl-client-cert");

/// The fields only Vestibule may set: a client's own copies never reach the upstream.
pub(super) const FIELDS: [&HeaderName; 4] = [
    &SSL_CLIENT_VERIFY,
    &SSL_CLIENT_SUBJECT_DN,
    &SSL_CLIENT_ISSUER_DN,
    &SSL_CLIENT_CERT,
];

/// A route's client certificate check, settled at install.
pub(crate) struct ClientCertGuard {
    auth: Arc<ClientAuth>,
    /// `None` when the CA could not be used (checked in the compile, so not expected): every
    /// certificate then fails.
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    match_cn: Option<regex::Regex>,
}

impl std::fmt::Debug for ClientCertGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertGuard")
            .field("source", &self.auth.source)
            .finish_non_exhaustive()
    }
}

impl ClientCertGuard {
    pub(crate) fn new(auth: Arc<ClientAuth>) -> ClientCertGuard {
        let mut roots = RootCertStore::empty();
        for der in &auth.ca {
            let _ = roots.add(CertificateDer::from(der.clone()));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .ok();
        let match_cn = auth
            .match_cn
            .as_deref()
            .and_then(|p| regex::Regex::new(p).ok());
        ClientCertGuard {
            auth,
            verifier,
            match_cn,
        }
    }
}

/// What the check found of the client's certificate.
enum Found<'c> {
    None,
    Success(&'c CertificateDer<'static>),
    Failed(String, &'c CertificateDer<'static>),
}

/// The check: `Ok` with the fields for the upstream, or Vestibule's answer.
pub(super) fn check(
    guard: &ClientCertGuard,
    chain: Option<&[CertificateDer<'static>]>,
) -> Result<Vec<(&'static HeaderName, HeaderValue)>, Box<Answer>> {
    let auth = &*guard.auth;
    let found = match chain {
        None | Some([]) => Found::None,
        Some(_) if auth.verify == VerifyClient::Off => Found::None,
        Some(chain) => verify(guard, chain),
    };
    let refuse = |message: &'static str| -> Box<Answer> {
        Box::new(match &auth.error_page {
            Some(page) => redirect(StatusCode::FOUND, page),
            None => Err(ProxyError::BadRequest(message)),
        })
    };
    match (&found, auth.verify) {
        (Found::None, VerifyClient::On) => {
            return Err(refuse("no required SSL certificate was sent"));
        }
        (Found::Failed(..), VerifyClient::On | VerifyClient::Optional) => {
            return Err(refuse("the SSL certificate error"));
        }
        _ => {}
    }
    let mut fields = Vec::with_capacity(4);
    let mut push = |name: &'static HeaderName, text: &str| {
        if let Ok(value) = HeaderValue::try_from(text) {
            fields.push((name, value));
        }
    };
    let leaf = match &found {
        Found::None => {
            push(&SSL_CLIENT_VERIFY, "NONE");
            return Ok(fields);
        }
        Found::Success(leaf) => {
            push(&SSL_CLIENT_VERIFY, "SUCCESS");
            leaf
        }
        Found::Failed(reason, leaf) => {
            push(&SSL_CLIENT_VERIFY, &format!("FAILED:{reason}"));
            leaf
        }
    };
    let (subject, issuer) = names(leaf);
    if let (Some(pattern), Found::Success(_)) = (&guard.match_cn, &found)
        && !pattern.is_match(&subject)
    {
        return Err(Box::new(Err(ProxyError::Forbidden)));
    }
    push(&SSL_CLIENT_SUBJECT_DN, &subject);
    push(&SSL_CLIENT_ISSUER_DN, &issuer);
    if auth.pass_certificate {
        push(&SSL_CLIENT_CERT, &escape_component(&pem(leaf)));
    }
    Ok(fields)
}

fn verify<'c>(guard: &ClientCertGuard, chain: &'c [CertificateDer<'static>]) -> Found<'c> {
    let leaf = &chain[0];
    let Some(verifier) = &guard.verifier else {
        return Found::Failed("no usable CA".to_owned(), leaf);
    };
    if chain.len() > guard.auth.depth {
        return Found::Failed("certificate chain too long".to_owned(), leaf);
    }
    match verifier.verify_client_cert(leaf, &chain[1..], UnixTime::now()) {
        Ok(_) => Found::Success(leaf),
        Err(e) => Found::Failed(e.to_string(), leaf),
    }
}

/// Subject and issuer DNs as nginx writes them (RFC 2253: most specific first, no spaces).
fn names(der: &CertificateDer<'_>) -> (String, String) {
    let rfc2253 = |name: String| {
        let mut parts: Vec<&str> = name.split(", ").collect();
        parts.reverse();
        parts.join(",")
    };
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, certificate)) => (
            rfc2253(certificate.subject().to_string()),
            rfc2253(certificate.issuer().to_string()),
        ),
        Err(_) => (String::new(), String::new()),
    }
}

fn pem(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or(""));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
