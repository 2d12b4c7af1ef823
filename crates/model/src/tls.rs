//! TLS certificates by server name, as data: which certificate a handshake for a name gets
//! (exact name, then one-label wildcard, then the default), with what operators need to see
//! of each certificate. The proxy turns these bytes into signing keys; this crate holds no
//! cryptography.

use std::fmt;
use std::sync::Arc;

use compact_str::CompactString;
use hashbrown::HashMap;
use serde::Serialize;

use crate::host::{HostPattern, wildcard_suffix};

/// How a private key's DER bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum KeyFormat {
    /// `RSA PRIVATE KEY`.
    Pkcs1,
    /// `EC PRIVATE KEY`.
    Sec1,
    /// `PRIVATE KEY`.
    Pkcs8,
}

/// What operators see of a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateInfo {
    pub subject: String,
    /// DNS names from the subject alternative names.
    pub dns_names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// `namespace/name` of the Secret it came from.
    pub source: String,
}

impl CertificateInfo {
    /// True when one of the certificate's DNS names covers `host` (a rule or TLS host; a
    /// `*.` name covers exactly one label, and a wildcard host only by the same wildcard).
    pub fn covers(&self, host: &HostPattern) -> bool {
        self.dns_names.iter().any(|name| {
            let name = name.to_ascii_lowercase();
            match (host, name.strip_prefix("*.")) {
                (HostPattern::Exact(h), None) => name == **h,
                (HostPattern::Exact(h), Some(suffix)) => wildcard_suffix(h) == Some(suffix),
                (HostPattern::Wildcard(s), Some(suffix)) => **s == *suffix,
                _ => false,
            }
        })
    }
}

/// A certificate chain and its private key.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    /// DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    pub key: Vec<u8>,
    pub key_format: KeyFormat,
    pub info: CertificateInfo,
}

impl fmt::Debug for Certificate {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("info", &self.info)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Which certificate serves a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateRef {
    /// Index into [`TlsHosts::certificates`].
    Index(u32),
    /// The default certificate (from `--default-ssl-certificate`, or generated).
    Default,
}

/// Certificates by server name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsHosts {
    certificates: Vec<Arc<Certificate>>,
    exact: HashMap<CompactString, CertificateRef>,
    wildcard: HashMap<CompactString, CertificateRef>,
    /// Host patterns in the order they were bound, for listings.
    hosts: Vec<(HostPattern, CertificateRef)>,
    /// From `--default-ssl-certificate`; `None` means the proxy's generated one.
    default: Option<u32>,
}

impl TlsHosts {
    /// The certificate for a handshake's server name (SNI): exact name, then one-label
    /// wildcard, then the default. No server name (a client connecting by IP address) gets
    /// the default.
    pub fn for_server_name(&self, server_name: Option<&str>) -> CertificateRef {
        let Some(name) = server_name else {
            return self.default_ref();
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        match self
            .exact
            .get(name)
            .or_else(|| wildcard_suffix(name).and_then(|s| self.wildcard.get(s)))
        {
            Some(&CertificateRef::Index(i)) => CertificateRef::Index(i),
            // A TLS host without a usable certificate of its own gets the configured default,
            // like a name no Ingress lists.
            Some(CertificateRef::Default) | None => self.default_ref(),
        }
    }

    fn default_ref(&self) -> CertificateRef {
        self.default
            .map_or(CertificateRef::Default, CertificateRef::Index)
    }

    /// True when `host` has a TLS section of its own (not only the default certificate).
    pub fn has_tls(&self, host: &HostPattern) -> bool {
        match host {
            HostPattern::Exact(name) => {
                self.exact.contains_key(&**name)
                    || wildcard_suffix(name).is_some_and(|s| self.wildcard.contains_key(s))
            }
            HostPattern::Wildcard(suffix) => self.wildcard.contains_key(&**suffix),
            HostPattern::Any => false,
        }
    }

    pub fn certificates(&self) -> &[Arc<Certificate>] {
        &self.certificates
    }

    pub fn certificate(&self, index: u32) -> Option<&Arc<Certificate>> {
        self.certificates.get(index as usize)
    }

    /// The certificate from `--default-ssl-certificate`, when one is configured and usable.
    pub fn configured_default(&self) -> Option<&Arc<Certificate>> {
        self.default.and_then(|i| self.certificate(i))
    }

    /// Host patterns with a TLS section, and what serves them.
    pub fn hosts(&self) -> &[(HostPattern, CertificateRef)] {
        &self.hosts
    }

    /// The soonest `not_after` among the certificates in use (Unix seconds).
    pub fn earliest_expiry(&self) -> Option<i64> {
        self.next_expiry(i64::MIN)
    }

    /// The soonest `not_after` still to come at `now` (Unix seconds): when what is served
    /// next changes by the clock alone.
    pub fn next_expiry(&self, now: i64) -> Option<i64> {
        self.certificates
            .iter()
            .map(|c| c.info.not_after)
            .filter(|&at| at >= now)
            .min()
    }
}

/// Builds a [`TlsHosts`]. Hosts bound first win, so callers bind in precedence order.
#[derive(Debug, Default)]
pub struct TlsBuilder {
    tls: TlsHosts,
}

impl TlsBuilder {
    /// Adds a certificate, or finds it if the same one (same `Arc`, or equal) is there.
    pub fn certificate(&mut self, certificate: &Arc<Certificate>) -> u32 {
        let found = self
            .tls
            .certificates
            .iter()
            .position(|c| Arc::ptr_eq(c, certificate) || **c == **certificate);
        let index = found.unwrap_or_else(|| {
            self.tls.certificates.push(certificate.clone());
            self.tls.certificates.len() - 1
        });
        u32::try_from(index).unwrap_or(u32::MAX)
    }

    /// Binds a host pattern to a certificate. If it is bound already, returns what it is bound
    /// to and changes nothing. The catch-all pattern cannot be bound (it has no name).
    pub fn bind(&mut self, host: &HostPattern, to: CertificateRef) -> Result<(), CertificateRef> {
        let map = match host {
            HostPattern::Exact(name) => (&mut self.tls.exact, name),
            HostPattern::Wildcard(suffix) => (&mut self.tls.wildcard, suffix),
            HostPattern::Any => return Ok(()),
        };
        let key = CompactString::new(&**map.1);
        if let Some(existing) = map.0.get(&key) {
            return Err(*existing);
        }
        map.0.insert(key, to);
        self.tls.hosts.push((host.clone(), to));
        Ok(())
    }

    /// What an exact or wildcard host is bound to so far, if anything.
    pub fn bound(&self, host: &HostPattern) -> Option<CertificateRef> {
        let (map, key) = match host {
            HostPattern::Exact(name) => (&self.tls.exact, name),
            HostPattern::Wildcard(suffix) => (&self.tls.wildcard, suffix),
            HostPattern::Any => return None,
        };
        map.get(&**key).copied()
    }

    /// A certificate added so far.
    pub fn certificate_at(&self, index: u32) -> Option<&Arc<Certificate>> {
        self.tls.certificate(index)
    }

    pub fn set_default(&mut self, certificate: &Arc<Certificate>) {
        let index = self.certificate(certificate);
        self.tls.default = Some(index);
    }

    /// The finished set. Certificates that no host is bound to and that are not the default
    /// (a Secret whose only host an older Ingress holds) are dropped: nothing serves them, so
    /// they must not count for expiry or cost a signing key.
    pub fn build(self) -> TlsHosts {
        let mut tls = self.tls;
        let mut used = vec![false; tls.certificates.len()];
        let references = tls.hosts.iter().map(|(_, to)| *to);
        for to in references.chain(tls.default.map(CertificateRef::Index)) {
            if let CertificateRef::Index(i) = to
                && let Some(slot) = used.get_mut(i as usize)
            {
                *slot = true;
            }
        }
        if used.iter().all(|u| *u) {
            return tls;
        }
        let mut renumbered = vec![u32::MAX; used.len()];
        let mut kept = Vec::new();
        for (i, certificate) in tls.certificates.into_iter().enumerate() {
            if used[i] {
                renumbered[i] = u32::try_from(kept.len()).unwrap_or(u32::MAX);
                kept.push(certificate);
            }
        }
        tls.certificates = kept;
        let renumber = |to: &mut CertificateRef| {
            if let CertificateRef::Index(i) = to {
                *i = renumbered[*i as usize];
            }
        };
        tls.exact.values_mut().for_each(renumber);
        tls.wildcard.values_mut().for_each(renumber);
        tls.hosts.iter_mut().for_each(|(_, to)| renumber(to));
        tls.default = tls.default.map(|i| renumbered[i as usize]);
        tls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> Arc<Certificate> {
        Arc::new(Certificate {
            chain: vec![names.join(",").into_bytes()],
            key: vec![1],
            key_format: KeyFormat::Pkcs8,
            info: CertificateInfo {
                subject: "CN=test".into(),
                dns_names: names.iter().map(|n| (*n).to_owned()).collect(),
                not_before: 0,
                not_after: 100,
                source: "ns/s".into(),
            },
        })
    }

    fn host(h: &str) -> HostPattern {
        HostPattern::parse(h).unwrap()
    }

    #[test]
    fn server_names_pick_exact_then_wildcard_then_default() {
        let mut b = TlsBuilder::default();
        let a = b.certificate(&cert(&["a.example"]));
        let w = b.certificate(&cert(&["*.w.example"]));
        b.bind(&host("a.example"), CertificateRef::Index(a))
            .unwrap();
        b.bind(&host("*.w.example"), CertificateRef::Index(w))
            .unwrap();
        b.bind(&host("x.w.example"), CertificateRef::Default)
            .unwrap();
        let tls = b.build();
        let cases = [
            (Some("a.example"), CertificateRef::Index(a)),
            (Some("A.Example."), CertificateRef::Index(a)),
            (Some("b.w.example"), CertificateRef::Index(w)),
            (Some("x.w.example"), CertificateRef::Default),
            (Some("c.b.w.example"), CertificateRef::Default),
            (Some("w.example"), CertificateRef::Default),
            (Some("other.example"), CertificateRef::Default),
            (None, CertificateRef::Default),
        ];
        for (name, want) in cases {
            assert_eq!(tls.for_server_name(name), want, "{name:?}");
        }
        assert!(tls.has_tls(&host("a.example")));
        assert!(tls.has_tls(&host("q.w.example")));
        assert!(tls.has_tls(&host("*.w.example")));
        assert!(!tls.has_tls(&host("b.example")));
    }

    #[test]
    fn the_next_expiry_is_the_soonest_still_to_come() {
        let expiring = |names: &[&str], not_after: i64| {
            let mut c = (*cert(names)).clone();
            c.info.not_after = not_after;
            Arc::new(c)
        };
        let mut b = TlsBuilder::default();
        for (name, at) in [("a.example", 300), ("b.example", 100), ("c.example", 200)] {
            let i = b.certificate(&expiring(&[name], at));
            b.bind(&host(name), CertificateRef::Index(i)).unwrap();
        }
        let tls = b.build();
        assert_eq!(tls.earliest_expiry(), Some(100));
        assert_eq!(tls.next_expiry(50), Some(100));
        assert_eq!(tls.next_expiry(100), Some(100));
        assert_eq!(tls.next_expiry(101), Some(200));
        assert_eq!(tls.next_expiry(301), None);
        assert_eq!(TlsBuilder::default().build().next_expiry(0), None);
    }

    #[test]
    fn a_configured_default_is_an_index() {
        let mut b = TlsBuilder::default();
        let d = cert(&["default.example"]);
        b.set_default(&d);
        let tls = b.build();
        assert_eq!(tls.for_server_name(None), CertificateRef::Index(0));
        assert_eq!(tls.configured_default(), Some(&d));
    }

    #[test]
    fn a_tls_host_without_a_certificate_of_its_own_gets_the_configured_default() {
        let mut b = TlsBuilder::default();
        b.set_default(&cert(&["default.example"]));
        b.bind(&host("broken.example"), CertificateRef::Default)
            .unwrap();
        b.bind(&host("*.broken.example"), CertificateRef::Default)
            .unwrap();
        let tls = b.build();
        for name in ["broken.example", "a.broken.example", "other.example"] {
            assert_eq!(
                tls.for_server_name(Some(name)),
                CertificateRef::Index(0),
                "{name}"
            );
        }
    }

    #[test]
    fn first_binding_wins_and_equal_certificates_are_shared() {
        let mut b = TlsBuilder::default();
        let one = b.certificate(&cert(&["a.example"]));
        let again = b.certificate(&cert(&["a.example"]));
        assert_eq!(one, again);
        b.bind(&host("a.example"), CertificateRef::Index(one))
            .unwrap();
        assert_eq!(
            b.bind(&host("a.example"), CertificateRef::Default),
            Err(CertificateRef::Index(one))
        );
    }

    #[test]
    fn certificates_no_host_uses_are_dropped_and_the_rest_renumbered() {
        let mut b = TlsBuilder::default();
        let unused = b.certificate(&cert(&["lost.example"]));
        let a = b.certificate(&cert(&["a.example"]));
        let d = cert(&["default.example"]);
        b.set_default(&d);
        b.bind(&host("a.example"), CertificateRef::Index(a))
            .unwrap();
        assert_eq!((unused, a), (0, 1));
        let tls = b.build();
        assert_eq!(tls.certificates().len(), 2);
        let CertificateRef::Index(i) = tls.for_server_name(Some("a.example")) else {
            panic!("a.example lost its certificate");
        };
        assert_eq!(tls.certificate(i).unwrap().info.dns_names, ["a.example"]);
        assert_eq!(tls.configured_default(), Some(&d));
        assert_eq!(tls.hosts(), [(host("a.example"), CertificateRef::Index(i))]);
        assert!(
            tls.certificates()
                .iter()
                .all(|c| c.info.dns_names != ["lost.example"])
        );
    }

    #[test]
    fn coverage_by_dns_names() {
        let c = cert(&["a.example", "*.w.example"]).info.clone();
        assert!(c.covers(&host("a.example")));
        assert!(c.covers(&host("x.w.example")));
        assert!(c.covers(&host("*.w.example")));
        assert!(!c.covers(&host("w.example")));
        assert!(!c.covers(&host("y.x.w.example")));
        assert!(!c.covers(&host("b.example")));
        assert!(!c.covers(&HostPattern::Any));
    }
}
