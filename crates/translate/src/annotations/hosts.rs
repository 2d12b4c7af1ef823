//! `upstream-vhost` (the `Host` the upstream gets), `server-alias` (more names for the
//! Ingress's host), `service-upstream` (its Services reached by cluster IP) and
//! `default-backend` (where its requests go when their Service has no ready endpoints),
//! `custom-http-errors` (which upstream statuses that backend answers instead) and
//! `ssl-passthrough` (its hosts' HTTPS connections spliced, untouched, to a Service).

use std::sync::Arc;

use vestibule_model::HostPattern;

use super::syntax::{is_dns_name, parse_bool};
use super::{IngressSettings, Reader};

pub(super) const KEYS: &[&str] = &[
    "upstream-vhost",
    "server-alias",
    "service-upstream",
    "default-backend",
    "custom-http-errors",
    "ssl-passthrough",
];

/// `404,503`: statuses from 400 to 599.
pub(crate) fn codes(value: &str) -> Result<Vec<u16>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<u16>()
                .ok()
                .filter(|c| (400..=599).contains(c))
                .ok_or_else(|| format!("{c:?} is not a status from 400 to 599"))
        })
        .collect()
}

pub(super) fn read(reader: &mut Reader<'_>, settings: &mut IngressSettings) {
    if reader.read("ssl-passthrough", parse_bool, super::BOOLEAN, false) == Some(true) {
        if reader.ssl_passthrough {
            settings.passthrough = true;
        } else {
            reader.warning(
                "ssl-passthrough",
                "passthrough needs the controller flag --enable-ssl-passthrough; without it \
                 HTTPS for this Ingress's hosts is terminated here as usual",
            );
        }
    }
    if let Some(name) = reader.get("default-backend").map(str::trim) {
        if is_dns_name(name) && !name.contains('.') {
            settings.default_backend = Some(name.into());
        } else {
            let message = format!("{name:?} is not a Service name; ignored");
            reader.error("default-backend", message);
        }
    }
    if let Some(value) = reader.get("custom-http-errors") {
        match codes(value) {
            Ok(codes) if !codes.is_empty() => {
                settings.policy.custom_errors = Some(codes.into());
                if settings.default_backend.is_none() && !reader.error_backend_flag {
                    reader.warning(
                        "custom-http-errors",
                        "there is no error backend (default-backend, or \
                         --default-backend-service): these statuses reach the client as they are",
                    );
                }
            }
            Ok(_) => settings.policy.custom_errors = None,
            Err(e) => reader.error("custom-http-errors", format!("{e}; ignored")),
        }
    }
    let default = settings.service_upstream;
    if let Some(on) = reader.read("service-upstream", parse_bool, super::BOOLEAN, default) {
        settings.service_upstream = on;
    }
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
