//! Fail closed: the annotations that protect a route (any `auth-` key not read by another
//! family) that Vestibule cannot honour yet close the Ingress's paths (503) instead of
//! leaving them open.

use std::sync::Arc;

use vestibule_model::Refusal;

use super::{IngressSettings, Reader};

/// Bandwidth limits: not protection, so only a warning when unsupported.
const BANDWIDTH: &[&str] = &["limit-rate", "limit-rate-after"];

pub(super) fn knows(short: &str) -> bool {
    (short.starts_with("auth-")
        && !super::auth::KEYS.contains(&short)
        && !super::external::KEYS.contains(&short)
        && !super::client_tls::KEYS.contains(&short))
        || BANDWIDTH.contains(&short)
}

/// `closing`: keys another family already found it cannot honour.
pub(super) fn read(reader: &mut Reader<'_>, settings: &mut IngressSettings, closing: &[&str]) {
    let mut closing = closing.to_vec();
    let keys: Vec<&str> = reader.values.keys().copied().filter(|k| knows(k)).collect();
    for short in keys {
        if BANDWIDTH.contains(&short) {
            reader.warning(
                short,
                "bandwidth limits are not supported yet; responses are sent at full speed",
            );
        } else {
            reader.error(
                short,
                "this protection is not supported yet; this Ingress's paths answer 503 until it \
                 is, rather than being served unprotected",
            );
            closing.push(short);
        }
    }
    if !closing.is_empty() {
        settings.policy.refused = Some(Arc::new(Refusal {
            keys: closing.join(", ").into(),
        }));
    }
}
