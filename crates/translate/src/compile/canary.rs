//! Canary Ingresses: each path of a canary joins the main route with the same host, path and
//! path type as that route's canary, oldest canary first. A canary with no main, or a second
//! canary for a route, is reported and left out; the main serves as before.

use k8s_openapi::api::networking::v1::Ingress;
use vestibule_model::{Canary, HostPattern};

use super::{Compiler, origin, path_rule, regex_rule};
use crate::annotations::CanaryRule;
use crate::report::ObjectRef;

const IGNORED: &str = "this canary path is ignored and the main serves every request";

impl Compiler<'_> {
    /// Attaches a canary Ingress's paths to their mains' routes. Called once every main is
    /// compiled.
    pub(super) fn canary(&mut self, ingress: &Ingress, object: &ObjectRef, rule: &CanaryRule) {
        let Some(spec) = &ingress.spec else {
            self.diags.error(object, "spec", "spec is missing");
            return;
        };
        if spec.default_backend.is_some() {
            self.diags.warning(
                object,
                "spec.defaultBackend",
                "a canary of the default backend is not supported; ignored",
            );
        }
        for (i, host_rule) in spec.rules.iter().flatten().enumerate() {
            let raw_host = host_rule.host.as_deref().unwrap_or("");
            let Ok(host) = HostPattern::parse(raw_host) else {
                self.diags.error(
                    object,
                    format!("spec.rules[{i}].host"),
                    format!("{raw_host:?} is not a host name; {IGNORED}"),
                );
                continue;
            };
            for (j, path) in host_rule.http.iter().flat_map(|h| &h.paths).enumerate() {
                let field = format!("spec.rules[{i}].http.paths[{j}]");
                let parsed = if self.regex_hosts.contains_key(&host) {
                    regex_rule(path)
                } else {
                    path_rule(path)
                };
                let path_rule = match parsed {
                    Ok(r) => r,
                    Err((sub, message)) => {
                        let message = format!("{message}; {IGNORED}");
                        self.diags.error(object, format!("{field}.{sub}"), message);
                        continue;
                    }
                };
                let Some(main) = self.builder.find(&host, &path_rule) else {
                    self.diags.error(
                        object,
                        field.as_str(),
                        format!(
                            "no main Ingress routes {:?} path {} on host {host}: a canary \
                             needs one with the same host, path and path type; ignored",
                            path_rule.kind, path_rule.path
                        ),
                    );
                    continue;
                };
                let main_id = main.id;
                let backend_field = format!("{field}.backend");
                // The canary's own annotations do not apply, service-upstream included.
                let backend = self.backend(&path.backend, object, &backend_field, false);
                let Some(backend) = backend else {
                    continue;
                };
                let canary = Canary {
                    backend,
                    origin: origin(object, &field),
                    header: rule.header.clone(),
                    cookie: rule.cookie.clone(),
                    weight: rule.weight,
                    weight_total: rule.weight_total,
                    sticky: rule.sticky,
                };
                if let Err(existing) = self.builder.canary(main_id, canary) {
                    let by = &existing.origin;
                    self.diags.warning(
                        object,
                        field.as_str(),
                        format!(
                            "this route already has a canary, Ingress {}/{} (older); only one \
                             canary per path, as in ingress-nginx; this one is ignored",
                            by.namespace, by.name
                        ),
                    );
                }
            }
        }
    }
}
