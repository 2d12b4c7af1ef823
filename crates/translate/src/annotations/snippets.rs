//! `configuration-snippet` and `server-snippet`, read by the strict parser of
//! [`crate::snippet`]: a snippet whose every directive is in the safe subset becomes typed
//! rules (header rules, a fixed answer, an allow or deny list); any other is not applied,
//! and when it holds a protecting directive (`allow`, `deny`, `auth_*` ...) the Ingress is
//! closed rather than served without it. Nothing of a snippet is ever executed.

use std::sync::Arc;

use crate::snippet::{self, Snippet};

use super::{IngressSettings, Reader};

pub(super) const KEYS: &[&str] = &["configuration-snippet", "server-snippet"];

/// Reads the snippets into the policy. Returns the keys that must close the Ingress.
pub(super) fn read(reader: &mut Reader<'_>, settings: &mut IngressSettings) -> Vec<&'static str> {
    let mut closing = Vec::new();
    for key in KEYS {
        let Some(text) = reader.get(key) else {
            continue;
        };
        match snippet::parse(text) {
            Ok(mapped) => {
                if let Err(why) = apply(mapped, settings) {
                    reader.error(key, format!("{why}; nothing of this snippet applies"));
                    if snippet::protects(text) {
                        closing.push(*key);
                    }
                } else {
                    reader.info(
                        key,
                        "every directive is in the safe subset and is applied as a typed rule; \
                         the snippet itself is never executed",
                    );
                }
            }
            Err(e) if snippet::protects(text) => {
                reader.error(
                    key,
                    format!(
                        "{e}; nothing of this snippet applies, and since it holds access \
                         control, this Ingress's paths answer 503 rather than being served \
                         without it"
                    ),
                );
                closing.push(*key);
            }
            Err(e) => reader.warning(
                key,
                format!("{e}; nothing of this snippet applies (snippets are never executed)"),
            ),
        }
    }
    closing
}

/// Adds a mapped snippet's rules to the policy: all of them, or none when one clashes with
/// what the annotations already set.
fn apply(mapped: Snippet, settings: &mut IngressSettings) -> Result<(), String> {
    let policy = &mut settings.policy;
    if mapped.access.is_some() && policy.source_ranges.is_some() {
        return Err(
            "allow and deny beside the *-source-range annotations or flags: set \
                    the list in one place"
                .into(),
        );
    }
    let answers = mapped.redirect.is_some() || mapped.fixed.is_some();
    if answers && (policy.redirect.is_some() || policy.fixed.is_some()) {
        return Err(
            "a return beside permanent-redirect, temporal-redirect or another \
                    snippet's return"
                .into(),
        );
    }
    if !mapped.request.is_empty() || !mapped.response.is_empty() {
        let mut rules = policy.headers.as_deref().cloned().unwrap_or_default();
        rules.request.extend(mapped.request);
        rules.response.extend(mapped.response);
        policy.headers = Some(Arc::new(rules));
    }
    if let Some(access) = mapped.access {
        policy.source_ranges = Some(Arc::new(access));
    }
    if let Some(redirect) = mapped.redirect {
        policy.redirect = Some(Arc::new(redirect));
    }
    if let Some(fixed) = mapped.fixed {
        policy.fixed = Some(Arc::new(fixed));
    }
    Ok(())
}
