//! `use-regex`, `rewrite-target` and `x-forwarded-prefix`: which paths are regular
//! expressions, and what path the upstream gets. The rewrite of each path is compiled with
//! the path itself, in the compile.

use vestibule_model::{Rewrite, RewriteError};

use super::syntax::parse_bool;
use super::{BOOLEAN, IngressSettings, Reader};

pub(super) const KEYS: &[&str] = &["use-regex", "rewrite-target", "x-forwarded-prefix"];

pub(super) fn read(reader: &mut Reader<'_>, settings: &mut IngressSettings) {
    if let Some(on) = reader.read("use-regex", parse_bool, BOOLEAN, false) {
        settings.use_regex = on;
    }
    if let Some(prefix) = reader.get("x-forwarded-prefix") {
        if prefix.bytes().all(|b| b.is_ascii_graphic()) && !prefix.is_empty() {
            settings.forwarded_prefix = Some(prefix.into());
        } else {
            reader.error(
                "x-forwarded-prefix",
                format!("{prefix:?} cannot be sent as a header value; it is ignored"),
            );
        }
    }
    let Some(target) = reader.get("rewrite-target") else {
        if settings.forwarded_prefix.is_some() {
            reader.warning(
                "x-forwarded-prefix",
                "it is sent only with a rewrite, and this Ingress has no rewrite-target",
            );
        }
        return;
    };
    // The target is checked once here; each path compiles its own pattern with it.
    match Rewrite::new("/", target, None) {
        Ok(_) => settings.rewrite_target = Some(target.into()),
        Err(e @ (RewriteError::NotAPath | RewriteError::Variable(_))) => {
            reader.error(
                "rewrite-target",
                format!(
                    "{e}; this Ingress's paths are not served, since forwarding them \
                     unrewritten would send the backend paths it does not expect"
                ),
            );
            settings.unservable = true;
        }
        Err(RewriteError::Pattern(_)) => {}
    }
}
