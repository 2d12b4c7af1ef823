//! `upstream-vhost` (the `Host` the upstream gets) and `server-alias` (more names for the
//! Ingress's host).

use std::sync::Arc;

use vestibule_model::HostPattern;

use super::syntax::is_dns_name;
use super::{IngressSettings, Reader};

pub(super) const KEYS: &[&str] = &["upstream-vhost", "server-alias"];

pub(super) fn read(reader: &mut Reader<'_>, settings: &mut IngressSettings) {
    if let Some(vhost) = reader.get("upstream-vhost") {
        if is_host_and_port(vhost) {
            settings.policy.upstream_host = Some(Arc::from(vhost));
        } else {
            reader.error(
                "upstream-vhost",
                format!(
                    "{vhost:?} is not a host name with an optional port (nginx variables are \
                     not expanded); the client's Host is sent"
                ),
            );
        }
    }
    let Some(aliases) = reader.get("server-alias") else {
        return;
    };
    for alias in aliases.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        if alias.starts_with('~') {
            reader.error(
                "server-alias",
                format!("{alias:?} is a regular expression; server aliases must be names"),
            );
            continue;
        }
        match HostPattern::parse(alias) {
            Ok(HostPattern::Any) | Err(_) => reader.error(
                "server-alias",
                format!("{alias:?} is not a host name or a *. wildcard; it is ignored"),
            ),
            Ok(host) => settings.aliases.push(host),
        }
    }
}

fn is_host_and_port(value: &str) -> bool {
    let (host, port) = match value.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (value, None),
    };
    is_dns_name(host) && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}
