//! Basic authentication (`auth-type: basic`, `auth-secret`, `auth-secret-type`, `auth-realm`):
//! the users of an htpasswd file or map in a Secret. Anything that stops it from being
//! honoured (a missing or foreign Secret, another `auth-type`) closes the Ingress, as the
//! rest of the protecting annotations do. Diagnostics name htpasswd lines, never hashes.

use std::sync::Arc;

use vestibule_model::{BasicAuth, hash_work_over_bound};

use super::{IngressSettings, Reader};
use crate::tls::Secrets;

pub(super) const KEYS: &[&str] = &["auth-type", "auth-secret", "auth-secret-type", "auth-realm"];

/// Hash formats nginx accepts in an htpasswd file, and that Vestibule verifies.
const SCHEMES: &[&str] = &["$apr1$", "$2y$", "$2b$", "$2a$", "{SHA}", "$5$", "$6$"];

/// Whether `value` is a password hash of a supported format: what an `auth-map` Secret's
/// values are. The Kubernetes source keeps such values of Opaque Secrets and drops the rest.
pub(crate) fn is_password_hash(value: &[u8]) -> bool {
    SCHEMES.iter().any(|s| value.starts_with(s.as_bytes()))
}

/// Reads the basic-auth keys. Returns the keys that must close the Ingress, if any.
pub(super) fn read(
    reader: &mut Reader<'_>,
    settings: &mut IngressSettings,
    secrets: &Secrets<'_>,
    cross_namespace: bool,
) -> Vec<&'static str> {
    if !KEYS.iter().any(|k| reader.get(k).is_some()) {
        return Vec::new();
    }
    match reader.get("auth-type") {
        Some("basic") => {}
        Some("digest") => {
            reader.error(
                "auth-type",
                "digest authentication is not supported; this Ingress's paths answer 503 \
                 rather than being served unprotected",
            );
            return vec!["auth-type"];
        }
        Some(other) => {
            reader.error(
                "auth-type",
                format!(
                    "{other:?} is not \"basic\"; this Ingress's paths answer 503 rather than \
                     being served unprotected"
                ),
            );
            return vec!["auth-type"];
        }
        None => {
            reader.error(
                "auth-type",
                "auth-secret or auth-realm without auth-type: this Ingress's paths answer 503 \
                 until auth-type says how they are to be protected",
            );
            return vec!["auth-type"];
        }
    }
    let realm = reader.get("auth-realm").unwrap_or("");
    if realm.contains('"') || !realm.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        reader.error(
            "auth-realm",
            "a realm must be printable text without '\"'; this Ingress's paths answer 503",
        );
        return vec!["auth-realm"];
    }
    let namespace = reader.object.namespace.clone();
    match users(reader, &namespace, secrets, cross_namespace) {
        Some((source, users)) => {
            settings.policy.basic_auth = Some(Arc::new(BasicAuth::new(realm, &source, users)));
            Vec::new()
        }
        None => vec!["auth-secret"],
    }
}

/// The users of the `auth-secret`, with where they came from; `None` (and an error) when
/// they cannot be read.
fn users(
    reader: &mut Reader<'_>,
    namespace: &str,
    secrets: &Secrets<'_>,
    cross_namespace: bool,
) -> Option<(String, Vec<(String, String)>)> {
    let close = "; this Ingress's paths answer 503";
    let Some(value) = reader.get("auth-secret") else {
        reader.error(
            "auth-secret",
            format!("basic authentication needs auth-secret{close}"),
        );
        return None;
    };
    let (ns, name) = match value.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (namespace, value),
    };
    if ns.is_empty() || name.is_empty() || name.contains('/') {
        reader.error(
            "auth-secret",
            format!("{value:?} is not name or namespace/name{close}"),
        );
        return None;
    }
    if ns != namespace && !cross_namespace {
        reader.error(
            "auth-secret",
            format!(
                "Secret {ns}/{name} is in another namespace, which needs \
                 --allow-cross-namespace-resources{close}"
            ),
        );
        return None;
    }
    let Some(data) = secrets
        .get(ns, name)
        .map(|s| s.data.clone().unwrap_or_default())
    else {
        reader.error(
            "auth-secret",
            format!("Secret {ns}/{name} does not exist{close}"),
        );
        return None;
    };
    let source = format!("{ns}/{name}");
    match reader.get("auth-secret-type").unwrap_or("auth-file") {
        "auth-file" => {
            let Some(file) = data.get("auth") else {
                reader.error(
                    "auth-secret",
                    format!("Secret {source} has no key \"auth\" (an htpasswd file){close}"),
                );
                return None;
            };
            let text = String::from_utf8_lossy(&file.0);
            Some((source.clone(), htpasswd(reader, &source, &text)))
        }
        "auth-map" => {
            let mut users = Vec::new();
            for (user, hash) in &data {
                let hash = String::from_utf8_lossy(&hash.0).trim().to_owned();
                if !is_password_hash(hash.as_bytes()) {
                    reader.error(
                        "auth-secret",
                        format!(
                            "Secret {source}: the value of {user:?} is not a supported \
                             password hash ($apr1$, bcrypt, {{SHA}}, $5$ or $6$); that user \
                             cannot sign in"
                        ),
                    );
                } else if let Some(over) = hash_work_over_bound(&hash) {
                    reader.error(
                        "auth-secret",
                        format!(
                            "Secret {source}: the hash of {user:?} asks for too much work \
                             per sign-in: {over}; that user cannot sign in"
                        ),
                    );
                } else {
                    users.push((user.clone(), hash));
                }
            }
            Some((source, users))
        }
        other => {
            reader.error(
                "auth-secret-type",
                format!("{other:?} is not \"auth-file\" or \"auth-map\"{close}"),
            );
            None
        }
    }
}

/// The users of an htpasswd file; each line that cannot be used is an error naming its
/// number, never its content.
fn htpasswd(reader: &mut Reader<'_>, source: &str, text: &str) -> Vec<(String, String)> {
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line
            .split_once(':')
            .filter(|(user, hash)| !user.is_empty() && !hash.is_empty());
        match parsed {
            Some((user, hash)) if is_password_hash(hash.as_bytes()) => {
                match hash_work_over_bound(hash) {
                    None => users.push((user.to_owned(), hash.to_owned())),
                    Some(over) => reader.error(
                        "auth-secret",
                        format!(
                            "Secret {source}, line {} of \"auth\": the hash of {user:?} asks \
                             for too much work per sign-in: {over}; that user cannot sign in",
                            i + 1
                        ),
                    ),
                }
            }
            Some(_) => reader.error(
                "auth-secret",
                format!(
                    "Secret {source}, line {} of \"auth\": the password is not hashed in a \
                     supported format ($apr1$, bcrypt, {{SHA}}, $5$ or $6$); that user cannot \
                     sign in",
                    i + 1
                ),
            ),
            None => reader.error(
                "auth-secret",
                format!(
                    "Secret {source}, line {} of \"auth\" is not user:hash; it is ignored",
                    i + 1
                ),
            ),
        }
    }
    users
}
