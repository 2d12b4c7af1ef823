//! How requests speak TLS to backends: one rustls client per setting (verification and CA,
//! server name, SNI), ALPN and name, made when a table is installed and carried over to the
//! next for the settings it keeps, so that a request only reads it and pooled connections
//! stay in use.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::pki_types::{CertificateDer, ServerName};
use vestibule_model::UpstreamTls;

/// How requests to one backend speak TLS: its settings, ALPN and name, made into a client
/// when a table is installed, so that a request only reads it.
#[derive(Debug)]
pub(crate) struct TlsClient {
    /// Never given to another client: pooled connections are keyed by it, so a connection
    /// made with one setting is never taken for another.
    pub(super) id: u64,
    pub(super) name: ServerName<'static>,
    pub(super) config: Arc<rustls::ClientConfig>,
}

/// Why a backend's TLS client could not be made: each of its requests fails to connect so.
#[derive(Debug, Clone)]
pub(crate) enum TlsClientError {
    Name(Box<str>),
    Config(Arc<str>),
}

pub(crate) type TlsResolved = Result<Arc<TlsClient>, TlsClientError>;

/// The TLS clients of one installed table, by setting, ALPN and name. A table takes over
/// the clients of the one before for the settings it keeps, so their pooled connections
/// stay in use; those no route uses any more go with the old table.
#[derive(Debug, Default)]
pub(crate) struct TlsClients {
    by_setting: HashMap<TlsSetting, TlsResolved>,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TlsSetting {
    /// `None`: TLS without verification, as ingress-nginx does.
    tls: Option<UpstreamTls>,
    h2: bool,
    name: Box<str>,
}

impl TlsClients {
    /// The client for `tls` and ALPN `h2`, to the name `tls` gives or else `name`: this
    /// table's, the one before's, or a new one.
    pub(crate) fn resolve(
        &mut self,
        previous: Option<&TlsClients>,
        tls: Option<&UpstreamTls>,
        h2: bool,
        name: &str,
    ) -> TlsResolved {
        let setting = TlsSetting {
            tls: tls.cloned(),
            h2,
            name: tls
                .and_then(|t| t.server_name.as_deref())
                .unwrap_or(name)
                .into(),
        };
        if let Some(client) = self.by_setting.get(&setting) {
            return client.clone();
        }
        let client = match previous.and_then(|p| p.by_setting.get(&setting)) {
            Some(client) => client.clone(),
            None => tls_client(&setting),
        };
        self.by_setting.insert(setting, client.clone());
        client
    }
}

fn tls_client(setting: &TlsSetting) -> TlsResolved {
    static IDS: AtomicU64 = AtomicU64::new(0);
    let name = ServerName::try_from(setting.name.to_string())
        .map_err(|_| TlsClientError::Name(setting.name.clone()))?;
    let mut config = client_config(setting.tls.as_ref(), setting.h2)
        .map_err(|e| TlsClientError::Config(e.to_string().into()))?;
    // As ingress-nginx: no SNI unless `proxy-ssl-server-name: on`.
    config.enable_sni = setting.tls.as_ref().is_some_and(|t| t.send_sni);
    Ok(Arc::new(TlsClient {
        id: IDS.fetch_add(1, Ordering::Relaxed),
        name,
        config: Arc::new(config),
    }))
}

/// A client configuration: verification against the given CAs when asked, else none (the
/// ingress-nginx default, since in-cluster backends mostly present self-signed certificates).
fn client_config(
    tls: Option<&UpstreamTls>,
    h2: bool,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = crate::crypto::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match tls.filter(|t| t.verify) {
        Some(tls) => {
            let mut roots = rustls::RootCertStore::empty();
            for der in &tls.ca {
                // A CA that does not parse was reported by the compile; it trusts nothing.
                let _ = roots.add(CertificateDer::from(der.clone()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// Accepts any certificate, but still checks the handshake signatures, so the connection is
/// encrypted to whoever holds the key the upstream presented.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::connect::ConnectError;

    fn settings(name: &str) -> UpstreamTls {
        UpstreamTls {
            server_name: Some(name.into()),
            ..UpstreamTls::default()
        }
    }

    fn id(resolved: &TlsResolved) -> u64 {
        resolved.as_ref().unwrap().id
    }

    #[test]
    fn tls_clients_are_shared_carried_over_and_never_confused() {
        let a = settings("a.internal");
        let mut first = TlsClients::default();
        let one = first.resolve(None, Some(&a), false, "svc-1.ns.svc");
        // The same setting, ALPN and name: the same client, wherever in the table.
        let again = first.resolve(None, Some(&a), false, "svc-2.ns.svc");
        assert!(Arc::ptr_eq(one.as_ref().unwrap(), again.as_ref().unwrap()));
        // ALPN, settings or name apart: another client, under another id.
        let others = [
            first.resolve(None, Some(&a), true, "svc-1.ns.svc"),
            first.resolve(None, None, false, "svc-1.ns.svc"),
            first.resolve(None, None, false, "svc-2.ns.svc"),
            first.resolve(None, Some(&settings("b.internal")), false, "svc-1.ns.svc"),
        ];
        let mut ids: Vec<u64> = others.iter().map(id).chain([id(&one)]).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 5);

        // The next table keeps the clients of the settings it keeps, and only those.
        let mut second = TlsClients::default();
        let kept = second.resolve(Some(&first), Some(&a), false, "svc-9.ns.svc");
        assert_eq!(id(&kept), id(&one));
        assert_eq!(second.by_setting.len(), 1);
        // A setting that skipped a table comes back as a new client, under a new id.
        let third = TlsClients::default();
        let mut fourth = TlsClients::default();
        let back = fourth.resolve(Some(&third), None, false, "svc-1.ns.svc");
        assert!(ids.iter().all(|&old| id(&back) > old));
    }

    #[test]
    fn a_name_that_cannot_be_a_tls_name_fails_each_connection_with_it() {
        let mut clients = TlsClients::default();
        let resolved = clients.resolve(None, None, false, "not a name");
        let error = ConnectError::from(&resolved.unwrap_err());
        assert!(
            matches!(&error, ConnectError::ServerName(name) if name == "not a name"),
            "{error}"
        );
    }
}
