//! External authentication (`auth-url` and its companions): every request is first put to a
//! service (oauth2-proxy, Authelia, …) that says whether it may go on. A value that cannot
//! be honoured closes the Ingress, as every protecting annotation does.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use vestibule_model::{AuthCache, ExternalAuth, Template};

use super::syntax::{parse_bool, parse_duration};
use super::{BOOLEAN, IngressSettings, Reader};

pub(super) const KEYS: &[&str] = &[
    "auth-url",
    "auth-method",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-response-headers",
    "auth-request-redirect",
    "auth-always-set-cookie",
    "auth-cache-key",
    "auth-cache-duration",
    "auth-keepalive",
    "auth-keepalive-requests",
    "auth-keepalive-timeout",
    "auth-keepalive-share-vars",
    "auth-proxy-set-headers",
    "enable-global-auth",
];

/// The parts of an external authentication as annotations or flags give them.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthValues<'a> {
    pub url: &'a str,
    pub method: Option<&'a str>,
    pub signin: Option<&'a str>,
    pub signin_redirect_param: Option<&'a str>,
    pub response_headers: Option<&'a str>,
    pub request_redirect: Option<&'a str>,
    pub always_set_cookie: bool,
    pub cache_key: Option<&'a str>,
    pub cache_duration: Option<&'a str>,
    /// `auth-proxy-set-headers`, as the ConfigMap's data: field name and value.
    pub proxy_set_headers: &'a [(String, String)],
}

/// Compiles an external authentication; the error names the part that is wrong.
pub fn external_auth(values: AuthValues<'_>) -> Result<ExternalAuth, (&'static str, String)> {
    let (https, host, port, target) = url(values.url).map_err(|e| ("auth-url", e))?;
    let method = values.method.unwrap_or("GET");
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(("auth-method", format!("{method:?} is not an HTTP method")));
    }
    let param = values.signin_redirect_param.unwrap_or("rd");
    if param.is_empty()
        || !param
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err((
            "auth-signin-redirect-param",
            format!("{param:?} is not a query parameter name"),
        ));
    }
    let signin = values
        .signin
        .map(|s| signin_url(s, param))
        .transpose()
        .map_err(|e| ("auth-signin", e))?;
    let mut response_headers = Vec::new();
    for name in values
        .response_headers
        .unwrap_or("")
        .split(',')
        .map(str::trim)
    {
        if name.is_empty() {
            continue;
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err((
                "auth-response-headers",
                format!("{name:?} is not a header name"),
            ));
        }
        response_headers.push(name.to_ascii_lowercase().into());
    }
    let request_redirect = values
        .request_redirect
        .map(Template::parse)
        .transpose()
        .map_err(|e| ("auth-request-redirect", e))?;
    let cache = match values.cache_key {
        None => None,
        Some(key) => {
            let (statuses, seconds) =
                cache_duration(values.cache_duration.unwrap_or("200 202 401 5m"))
                    .map_err(|e| ("auth-cache-duration", e))?;
            Some(AuthCache {
                key: Template::parse(key).map_err(|e| ("auth-cache-key", e))?,
                statuses,
                seconds,
            })
        }
    };
    let mut proxy_set_headers = Vec::new();
    for (name, value) in values.proxy_set_headers {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err((
                "auth-proxy-set-headers",
                format!("{name:?} is not a header name"),
            ));
        }
        let value = Template::parse(value).map_err(|e| {
            (
                "auth-proxy-set-headers",
                format!("the value of {name}: {e}"),
            )
        })?;
        proxy_set_headers.push((name.to_ascii_lowercase().into(), value));
    }
    Ok(ExternalAuth {
        https,
        host: host.into(),
        port,
        target,
        method: method.into(),
        signin,
        response_headers,
        request_redirect,
        always_set_cookie: values.always_set_cookie,
        cache,
        proxy_set_headers,
    })
}

/// nginx's `proxy_cache_valid` argument: status codes (none means 200, 301 and 302), then a
/// time in seconds.
fn cache_duration(value: &str) -> Result<(Vec<u16>, u64), String> {
    let mut words: Vec<&str> = value.split_whitespace().collect();
    let bad = || format!("{value:?} is not status codes followed by a time (\"200 202 401 5m\")");
    let time = words.pop().ok_or_else(bad)?;
    let seconds = parse_duration(time).ok_or_else(bad)?.as_secs();
    let mut statuses = Vec::new();
    for word in words {
        match word.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => statuses.push(code),
            _ => return Err(bad()),
        }
    }
    if statuses.is_empty() {
        statuses = vec![200, 301, 302];
    }
    Ok((statuses, seconds))
}

/// `http(s)://host[:port][/path?query]`: the host literal, the rest a template.
fn url(value: &str) -> Result<(bool, String, u16, Template), String> {
    let bad = || format!("{value:?} is not an http or https URL");
    let (scheme, rest) = value.split_once("://").ok_or_else(bad)?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => return Err(bad()),
    };
    let (authority, target) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let target = if target.starts_with('?') {
        format!("/{target}")
    } else {
        target.to_owned()
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (
            host,
            port.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(bad)?,
        ),
        _ => (authority, if https { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
    if !valid_host {
        return Err(format!(
            "{value:?}: the host must be a name or an address (variables only after it)"
        ));
    }
    // The target goes out in the request line, which could not hold the character: every
    // request would fail.
    if target.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("{value:?}: the path holds a control character"));
    }
    let target = Template::parse(&target)?;
    Ok((https, host.to_ascii_lowercase(), port, target))
}

/// `auth-signin` with the parameter that brings the user back, as ingress-nginx adds it.
fn signin_url(signin: &str, param: &str) -> Result<Template, String> {
    let back = "$pass_access_scheme://$http_host$escaped_request_uri";
    let url = match signin.split_once('?') {
        None => format!("{signin}?{param}={back}"),
        Some((_, query)) if query.split('&').any(|p| p.split('=').next() == Some(param)) => {
            signin.to_owned()
        }
        Some(_) => format!("{signin}&{param}={back}"),
    };
    if !url.starts_with("http://")
        && !url.starts_with("https://")
        && !url.starts_with('/')
        && !url.starts_with('$')
    {
        return Err(format!("{signin:?} is not a URL or a path"));
    }
    // It becomes a `Location`, which could not hold the character: every 401 would fail.
    if signin.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("{signin:?} holds a control character"));
    }
    Template::parse(&url)
}

/// Reads `auth-url` and its companions. Returns the keys that must close the Ingress.
pub(super) fn read(
    reader: &mut Reader<'_>,
    settings: &mut IngressSettings,
    global: Option<&Arc<ExternalAuth>>,
    config_maps: &ConfigMaps<'_>,
    cross_namespace: bool,
) -> Vec<&'static str> {
    let global_on = match reader.get("enable-global-auth") {
        None => true,
        Some(value) => match parse_bool(value) {
            Some(on) => {
                if global.is_none() {
                    reader.info(
                        "enable-global-auth",
                        "no --global-auth-url is set, so there is nothing to turn on or off",
                    );
                }
                on
            }
            None => {
                reader.error(
                    "enable-global-auth",
                    format!("{value:?} is not {BOOLEAN}; this Ingress's paths answer 503"),
                );
                return vec!["enable-global-auth"];
            }
        },
    };
    let Some(url) = reader.get("auth-url") else {
        let companions: Vec<&str> = KEYS[1..KEYS.len() - 1]
            .iter()
            .copied()
            .filter(|k| reader.get(k).is_some())
            .collect();
        for key in companions {
            reader.warning(
                key,
                "it means something only with auth-url, which is not set",
            );
        }
        if global_on {
            settings.policy.external_auth = global.cloned();
        }
        return Vec::new();
    };
    let always = reader
        .read("auth-always-set-cookie", parse_bool, BOOLEAN, false)
        .unwrap_or(false);
    let proxy_set_headers = match reader.get("auth-proxy-set-headers") {
        None => Vec::new(),
        Some(reference) => {
            let namespace = reader.object.namespace.clone();
            match config_map(reference, &namespace, config_maps, cross_namespace) {
                Ok(data) => data,
                Err(e) => {
                    reader.error(
                        "auth-proxy-set-headers",
                        format!("{e}; this Ingress's paths answer 503"),
                    );
                    return vec!["auth-proxy-set-headers"];
                }
            }
        }
    };
    let values = AuthValues {
        url,
        method: reader.get("auth-method"),
        signin: reader.get("auth-signin"),
        signin_redirect_param: reader.get("auth-signin-redirect-param"),
        response_headers: reader.get("auth-response-headers"),
        request_redirect: reader.get("auth-request-redirect"),
        always_set_cookie: always,
        cache_key: reader.get("auth-cache-key"),
        cache_duration: reader.get("auth-cache-duration"),
        proxy_set_headers: &proxy_set_headers,
    };
    if values.cache_key.is_none() && values.cache_duration.is_some() {
        reader.warning(
            "auth-cache-duration",
            "answers are kept only with auth-cache-key, as in ingress-nginx",
        );
    }
    for key in [
        "auth-keepalive",
        "auth-keepalive-requests",
        "auth-keepalive-timeout",
        "auth-keepalive-share-vars",
    ] {
        if reader.get(key).is_some() {
            reader.info(
                key,
                "connections to the auth service are kept alive and pooled as upstream ones are",
            );
        }
    }
    match external_auth(values) {
        Ok(auth) => {
            settings.policy.external_auth = Some(Arc::new(auth));
            Vec::new()
        }
        Err((key, message)) => {
            reader.error(key, format!("{message}; this Ingress's paths answer 503"));
            vec!["auth-url"]
        }
    }
}

/// The ConfigMaps of the compile, by namespace and name.
pub(crate) type ConfigMaps<'s> = std::collections::HashMap<(&'s str, &'s str), &'s ConfigMap>;

/// The data of the ConfigMap `reference` (`namespace/name`, or a name in `namespace`).
pub(super) fn config_map(
    reference: &str,
    namespace: &str,
    config_maps: &ConfigMaps<'_>,
    cross_namespace: bool,
) -> Result<Vec<(String, String)>, String> {
    let (ns, name) = reference.split_once('/').unwrap_or((namespace, reference));
    if ns.is_empty() || name.is_empty() || name.contains('/') {
        return Err(format!("{reference:?} is not name or namespace/name"));
    }
    if ns != namespace && !cross_namespace {
        return Err(format!(
            "ConfigMap {ns}/{name} is in another namespace, which needs \
             --allow-cross-namespace-resources"
        ));
    }
    let Some(found) = config_maps.get(&(ns, name)) else {
        return Err(format!("ConfigMap {ns}/{name} does not exist"));
    };
    Ok(found
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_durations_read_as_proxy_cache_valid() {
        let kept = cache_duration;
        assert_eq!(kept("200 202 401 5m"), Ok((vec![200, 202, 401], 300)));
        assert_eq!(kept("30s"), Ok((vec![200, 301, 302], 30)));
        for bad in ["", "5x", "200 abc 5m", "99 5m"] {
            assert!(cache_duration(bad).is_err(), "{bad}");
        }
    }

    fn auth(url: &str, signin: Option<&str>) -> ExternalAuth {
        external_auth(AuthValues {
            url,
            signin,
            ..AuthValues::default()
        })
        .unwrap_or_else(|e| panic!("{url}: {e:?}"))
    }

    #[test]
    fn urls_split_into_service_and_target() {
        let a = auth("https://Auth.Example/oauth2/auth?x=$host", None);
        assert_eq!((a.https, &*a.host, a.port), (true, "auth.example", 443));
        assert_eq!(a.target.as_str(), "/oauth2/auth?x=$host");
        let a = auth("http://10.0.0.7:4180", None);
        assert_eq!(
            (a.https, &*a.host, a.port, a.target.as_str()),
            (false, "10.0.0.7", 4180, "/")
        );
        for bad in [
            "ftp://x/",
            "http://$host/auth",
            "http://x:0/",
            "auth.example/x",
            "http://x/$nope",
            "http://x/ch\0eck",
            "http://x/check?a=1\r\nX-A: 1",
        ] {
            assert!(
                external_auth(AuthValues {
                    url: bad,
                    ..AuthValues::default()
                })
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_signin_url_gets_the_way_back_as_ingress_nginx_adds_it() {
        let back = "$pass_access_scheme://$http_host$escaped_request_uri";
        let signin = |s: &str| {
            auth("http://a/", Some(s))
                .signin
                .unwrap()
                .as_str()
                .to_owned()
        };
        assert_eq!(
            signin("https://$host/oauth2/start"),
            format!("https://$host/oauth2/start?rd={back}")
        );
        assert_eq!(
            signin("https://s/start?x=1"),
            format!("https://s/start?x=1&rd={back}")
        );
        assert_eq!(
            signin("https://s/start?rd=/home"),
            "https://s/start?rd=/home"
        );
    }

    #[test]
    fn a_signin_url_with_a_control_character_is_refused() {
        for bad in ["https://s/st\0art", "https://s/start\r\nX-A: 1", "/start\t"] {
            let values = AuthValues {
                url: "http://a/",
                signin: Some(bad),
                ..AuthValues::default()
            };
            assert!(
                matches!(external_auth(values), Err(("auth-signin", _))),
                "{bad:?}"
            );
        }
    }
}
