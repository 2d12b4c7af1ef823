//! Client certificates (`auth-tls-secret`, `auth-tls-verify-client`, `auth-tls-verify-depth`,
//! `auth-tls-pass-certificate-to-upstream`, `auth-tls-match-cn`, `auth-tls-error-page`):
//! the CA that verifies them and what happens to clients without a good one. Anything that
//! cannot be honoured closes the Ingress.

use std::sync::Arc;

use vestibule_model::{ClientAuth, VerifyClient};

use super::syntax::{parse_bool, parse_uint};
use super::{BOOLEAN, IngressSettings, Reader, trusted_cas};
use crate::tls::Secrets;

pub(super) const KEYS: &[&str] = &[
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-verify-depth",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-match-cn",
    "auth-tls-error-page",
];

/// Reads the `auth-tls-*` keys. Returns the keys that must close the Ingress.
pub(super) fn read(
    reader: &mut Reader<'_>,
    settings: &mut IngressSettings,
    secrets: &Secrets<'_>,
    cross_namespace: bool,
) -> Vec<&'static str> {
    if !KEYS.iter().any(|k| reader.get(k).is_some()) {
        return Vec::new();
    }
    let close = "; this Ingress's paths answer 503";
    let Some(value) = reader.get("auth-tls-secret") else {
        reader.error(
            "auth-tls-secret",
            format!("client certificate settings without auth-tls-secret{close}"),
        );
        return vec!["auth-tls-secret"];
    };
    let namespace = reader.object.namespace.clone();
    let qualified = if value.contains('/') {
        value.to_owned()
    } else {
        format!("{namespace}/{value}")
    };
    if qualified.split('/').next() != Some(namespace.as_str()) && !cross_namespace {
        reader.error(
            "auth-tls-secret",
            format!(
                "Secret {qualified} is in another namespace, which needs \
                 --allow-cross-namespace-resources{close}"
            ),
        );
        return vec!["auth-tls-secret"];
    }
    let ca = match trusted_cas(&qualified, secrets) {
        Ok(ca) => ca,
        Err(e) => {
            reader.error("auth-tls-secret", format!("{e}{close}"));
            return vec!["auth-tls-secret"];
        }
    };
    let verify = match reader.get("auth-tls-verify-client").unwrap_or("on") {
        "on" => VerifyClient::On,
        "optional" => VerifyClient::Optional,
        "optional_no_ca" => VerifyClient::OptionalNoCa,
        "off" => VerifyClient::Off,
        other => {
            reader.error(
                "auth-tls-verify-client",
                format!("{other:?} is not on, optional, optional_no_ca or off{close}"),
            );
            return vec!["auth-tls-verify-client"];
        }
    };
    let depth = reader
        .read(
            "auth-tls-verify-depth",
            |v| parse_uint::<usize>(v).filter(|d| (1..=16).contains(d)),
            "a depth from 1 to 16",
            1,
        )
        .unwrap_or(1);
    let pass_certificate = reader
        .read(
            "auth-tls-pass-certificate-to-upstream",
            parse_bool,
            BOOLEAN,
            false,
        )
        .unwrap_or(false);
    let match_cn = reader.get("auth-tls-match-cn").map(str::to_owned);
    if let Some(pattern) = &match_cn
        && let Err(e) = regex::Regex::new(pattern)
    {
        let e = e.to_string();
        let line = e.lines().last().unwrap_or("");
        reader.error(
            "auth-tls-match-cn",
            format!("not a regular expression Vestibule can match: {line}{close}"),
        );
        return vec!["auth-tls-match-cn"];
    }
    let error_page = reader.get("auth-tls-error-page").map(str::to_owned);
    if let Some(page) = &error_page
        && !(page.starts_with("http://") || page.starts_with("https://") || page.starts_with('/'))
    {
        reader.error(
            "auth-tls-error-page",
            format!("{page:?} is not a URL or a path; the 400 is answered instead"),
        );
    }
    settings.policy.client_auth = Some(Arc::new(ClientAuth {
        source: qualified.into(),
        ca,
        verify,
        depth,
        pass_certificate,
        match_cn: match_cn.map(Into::into),
        error_page: error_page
            .filter(|p| p.starts_with("http://") || p.starts_with("https://") || p.starts_with('/'))
            .map(Into::into),
    }));
    Vec::new()
}
