//! Builders for the Kubernetes objects Vestibule reads, so tests read like the spec:
//! `ingress("ns", "a").host("x.com").prefix("/", svc("b", 80))`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass, IngressClassSpec,
    IngressRule, IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: namespace.map(str::to_owned),
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

/// `2026-01-01T00:00:00Z` plus `seconds`: creation times for precedence tests.
pub fn created_at(seconds: i64) -> Time {
    let base = jiff::Timestamp::from_second(1_767_225_600).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    Time(
        base.checked_add(jiff::SignedDuration::from_secs(seconds))
            .unwrap_or(base),
    )
}

/// A backend service reference by port number.
pub fn svc(name: &str, port: i32) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: name.to_owned(),
            port: Some(ServiceBackendPort {
                number: Some(port),
                name: None,
            }),
        }),
        resource: None,
    }
}

/// A backend service reference by port name.
pub fn svc_named(name: &str, port: &str) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: name.to_owned(),
            port: Some(ServiceBackendPort {
                number: None,
                name: Some(port.to_owned()),
            }),
        }),
        resource: None,
    }
}

pub fn ingress(namespace: &str, name: &str) -> IngressBuilder {
    IngressBuilder {
        ingress: Ingress {
            metadata: meta(Some(namespace), name),
            spec: Some(IngressSpec::default()),
            status: None,
        },
    }
}

#[derive(Debug, Clone)]
pub struct IngressBuilder {
    ingress: Ingress,
}

impl IngressBuilder {
    fn spec(&mut self) -> &mut IngressSpec {
        self.ingress.spec.get_or_insert_with(IngressSpec::default)
    }

    fn current_rule(&mut self) -> &mut IngressRule {
        let rules = self.spec().rules.get_or_insert_with(Vec::new);
        if rules.is_empty() {
            rules.push(IngressRule::default());
        }
        let last = rules.len() - 1;
        &mut rules[last]
    }

    /// `spec.ingressClassName`.
    pub fn class(mut self, class: &str) -> Self {
        self.spec().ingress_class_name = Some(class.to_owned());
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.ingress
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Creation time, in seconds after a fixed base: larger is newer.
    pub fn created(mut self, seconds: i64) -> Self {
        self.ingress.metadata.creation_timestamp = Some(created_at(seconds));
        self
    }

    /// Starts a new rule for `host`; following path calls add to it.
    pub fn host(mut self, host: &str) -> Self {
        self.spec()
            .rules
            .get_or_insert_with(Vec::new)
            .push(IngressRule {
                host: Some(host.to_owned()),
                http: None,
            });
        self
    }

    /// Starts a new rule without a host (the catch-all virtual host).
    pub fn any_host(mut self) -> Self {
        self.spec()
            .rules
            .get_or_insert_with(Vec::new)
            .push(IngressRule::default());
        self
    }

    /// Adds a path with any `pathType` string (including invalid ones) to the current rule.
    pub fn path(mut self, path_type: &str, path: &str, backend: IngressBackend) -> Self {
        let rule = self.current_rule();
        rule.http
            .get_or_insert_with(HTTPIngressRuleValue::default)
            .paths
            .push(HTTPIngressPath {
                backend,
                path: Some(path.to_owned()),
                path_type: path_type.to_owned(),
            });
        self
    }

    pub fn prefix(self, path: &str, backend: IngressBackend) -> Self {
        self.path("Prefix", path, backend)
    }

    pub fn exact(self, path: &str, backend: IngressBackend) -> Self {
        self.path("Exact", path, backend)
    }

    pub fn implementation_specific(self, path: &str, backend: IngressBackend) -> Self {
        self.path("ImplementationSpecific", path, backend)
    }

    pub fn default_backend(mut self, backend: IngressBackend) -> Self {
        self.spec().default_backend = Some(backend);
        self
    }

    pub fn tls(mut self, hosts: &[&str], secret: &str) -> Self {
        self.spec()
            .tls
            .get_or_insert_with(Vec::new)
            .push(IngressTLS {
                hosts: Some(hosts.iter().map(|h| (*h).to_owned()).collect()),
                secret_name: Some(secret.to_owned()),
            });
        self
    }

    pub fn build(self) -> Ingress {
        self.ingress
    }
}

impl From<IngressBuilder> for Ingress {
    fn from(b: IngressBuilder) -> Ingress {
        b.ingress
    }
}

pub fn ingress_class(name: &str, controller: &str) -> IngressClassBuilder {
    IngressClassBuilder {
        class: IngressClass {
            metadata: meta(None, name),
            spec: Some(IngressClassSpec {
                controller: Some(controller.to_owned()),
                parameters: None,
            }),
        },
    }
}

#[derive(Debug, Clone)]
pub struct IngressClassBuilder {
    class: IngressClass,
}

impl IngressClassBuilder {
    /// Marks it `ingressclass.kubernetes.io/is-default-class: "true"`.
    pub fn default_class(mut self) -> Self {
        self.class
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
                "ingressclass.kubernetes.io/is-default-class".to_owned(),
                "true".to_owned(),
            );
        self
    }

    pub fn build(self) -> IngressClass {
        self.class
    }
}

impl From<IngressClassBuilder> for IngressClass {
    fn from(b: IngressClassBuilder) -> IngressClass {
        b.class
    }
}

pub fn service(namespace: &str, name: &str) -> ServiceBuilder {
    ServiceBuilder {
        service: Service {
            metadata: meta(Some(namespace), name),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_owned()),
                ..ServiceSpec::default()
            }),
            status: None,
        },
    }
}

#[derive(Debug, Clone)]
pub struct ServiceBuilder {
    service: Service,
}

impl ServiceBuilder {
    fn spec(&mut self) -> &mut ServiceSpec {
        self.service.spec.get_or_insert_with(ServiceSpec::default)
    }

    /// A port; `name` may be empty for a Service's single unnamed port.
    pub fn port(mut self, name: &str, port: i32, target: i32) -> Self {
        self.spec()
            .ports
            .get_or_insert_with(Vec::new)
            .push(ServicePort {
                name: (!name.is_empty()).then(|| name.to_owned()),
                port,
                target_port: Some(IntOrString::Int(target)),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            });
        self
    }

    pub fn app_protocol(mut self, protocol: &str) -> Self {
        if let Some(last) = self.spec().ports.as_mut().and_then(|p| p.last_mut()) {
            last.app_protocol = Some(protocol.to_owned());
        }
        self
    }

    pub fn external_name(mut self, host: &str) -> Self {
        let spec = self.spec();
        spec.type_ = Some("ExternalName".to_owned());
        spec.external_name = Some(host.to_owned());
        self
    }

    pub fn build(self) -> Service {
        self.service
    }
}

impl From<ServiceBuilder> for Service {
    fn from(b: ServiceBuilder) -> Service {
        b.service
    }
}

/// An EndpointSlice for `service`, labelled `kubernetes.io/service-name`.
pub fn endpoint_slice(namespace: &str, name: &str, service: &str) -> EndpointSliceBuilder {
    let mut metadata = meta(Some(namespace), name);
    metadata.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_owned(),
        service.to_owned(),
    )]));
    EndpointSliceBuilder {
        slice: EndpointSlice {
            address_type: "IPv4".to_owned(),
            endpoints: Vec::new(),
            metadata,
            ports: None,
        },
    }
}

#[derive(Debug, Clone)]
pub struct EndpointSliceBuilder {
    slice: EndpointSlice,
}

impl EndpointSliceBuilder {
    pub fn address_type(mut self, address_type: &str) -> Self {
        self.slice.address_type = address_type.to_owned();
        self
    }

    /// A port; `name` must equal the Service port's name (empty for an unnamed port).
    pub fn port(mut self, name: &str, port: i32) -> Self {
        self.slice
            .ports
            .get_or_insert_with(Vec::new)
            .push(EndpointPort {
                name: Some(name.to_owned()),
                port: Some(port),
                protocol: Some("TCP".to_owned()),
                app_protocol: None,
            });
        self
    }

    fn endpoint(mut self, address: &str, conditions: Option<EndpointConditions>) -> Self {
        self.slice.endpoints.push(Endpoint {
            addresses: vec![address.to_owned()],
            conditions,
            ..Endpoint::default()
        });
        self
    }

    pub fn ready(self, address: &str) -> Self {
        self.endpoint(
            address,
            Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
        )
    }

    /// An endpoint without conditions: the API says an absent `ready` means ready.
    pub fn unconditioned(self, address: &str) -> Self {
        self.endpoint(address, None)
    }

    pub fn not_ready(self, address: &str) -> Self {
        self.endpoint(
            address,
            Some(EndpointConditions {
                ready: Some(false),
                serving: Some(false),
                terminating: Some(false),
            }),
        )
    }

    /// Terminating but still serving, as during a graceful pod shutdown.
    pub fn terminating(self, address: &str) -> Self {
        self.endpoint(
            address,
            Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(true),
            }),
        )
    }

    pub fn build(self) -> EndpointSlice {
        self.slice
    }
}

impl From<EndpointSliceBuilder> for EndpointSlice {
    fn from(b: EndpointSliceBuilder) -> EndpointSlice {
        b.slice
    }
}

/// A `kubernetes.io/tls` Secret.
pub fn tls_secret(namespace: &str, name: &str, cert_pem: &str, key_pem: &str) -> Secret {
    Secret {
        metadata: meta(Some(namespace), name),
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_owned(),
                ByteString(cert_pem.as_bytes().to_vec()),
            ),
            (
                "tls.key".to_owned(),
                ByteString(key_pem.as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    }
}

/// An Opaque Secret holding a CA bundle in `ca.crt`, as `proxy-ssl-secret` names (what
/// `kubectl create secret generic NAME --from-file=ca.crt` makes).
pub fn ca_secret(namespace: &str, name: &str, ca_pem: &str) -> Secret {
    Secret {
        metadata: meta(Some(namespace), name),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            "ca.crt".to_owned(),
            ByteString(ca_pem.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// A Service `name` (port `http` 80) whose endpoints are the given echo backends, one
/// EndpointSlice per backend since each listens on its own port.
pub fn echo_service(
    namespace: &str,
    name: &str,
    echoes: &[&crate::Echo],
) -> (Service, Vec<EndpointSlice>) {
    let service = service(namespace, name).port("http", 80, 8080).build();
    let slices = echoes
        .iter()
        .enumerate()
        .map(|(i, echo)| {
            endpoint_slice(namespace, &format!("{name}-{i}"), name)
                .port("http", i32::from(echo.port()))
                .ready(&echo.addr().ip().to_string())
                .build()
        })
        .collect();
    (service, slices)
}
