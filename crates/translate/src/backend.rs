//! Backends: from an Ingress's service reference to a cluster of ready endpoints, through the
//! Service's ports and the EndpointSlices labelled with its name.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use vestibule_model::{
    Backend, ClusterKey, Endpoint, EndpointAddress, TableBuilder, UpstreamProtocol,
};

use crate::report::{Diagnostics, Kind, ObjectRef, namespace_of};

pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How an Ingress names a Service port.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PortRef<'a> {
    Number(u16),
    Name(&'a str),
}

/// A reference to resolve, and where to report problems with it.
pub(crate) struct ServiceRef<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
    pub(crate) port: PortRef<'a>,
    /// The object holding the reference and the field of its `service` (for an Ingress:
    /// `spec.rules[0].http.paths[0].backend.service`).
    pub(crate) referrer: &'a ObjectRef,
    pub(crate) field: &'a str,
    /// `service-upstream`: the Service's cluster IP and port, not its endpoints.
    pub(crate) cluster_ip: bool,
}

/// Services and EndpointSlices indexed for lookup by namespace and name.
pub(crate) struct Services<'s> {
    services: HashMap<(&'s str, &'s str), &'s Service>,
    slices: HashMap<(&'s str, &'s str), Vec<&'s EndpointSlice>>,
}

impl<'s> Services<'s> {
    pub(crate) fn new(
        services: impl Iterator<Item = &'s Arc<Service>>,
        slices: impl Iterator<Item = &'s Arc<EndpointSlice>>,
    ) -> Self {
        let mut by_name = HashMap::new();
        for service in services {
            let key = (
                namespace_of(&service.metadata),
                service.metadata.name.as_deref().unwrap_or(""),
            );
            by_name.entry(key).or_insert(&**service);
        }
        let mut by_service: HashMap<_, Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            by_service
                .entry((namespace_of(&slice.metadata), service.as_str()))
                .or_default()
                .push(&**slice);
        }
        for list in by_service.values_mut() {
            list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        Services {
            services: by_name,
            slices: by_service,
        }
    }

    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<&'s Service> {
        self.services.get(&(namespace, name)).copied()
    }

    /// The backend for a Service reference: a cluster when the Service and port exist (even
    /// with no ready endpoints), otherwise an unavailable backend and a warning.
    pub(crate) fn resolve(
        &self,
        r: &ServiceRef<'_>,
        builder: &mut TableBuilder,
        diags: &mut Diagnostics,
    ) -> Backend {
        let (ns, name) = (r.namespace, r.name);
        let Some(service) = self.get(ns, name) else {
            return unavailable(r, "name", format!("Service {ns}/{name} not found"), diags);
        };
        let spec = service.spec.as_ref();
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
        let indexed = match r.port {
            PortRef::Number(n) => ports
                .iter()
                .enumerate()
                .find(|(_, p)| p.port == i32::from(n)),
            PortRef::Name(want) => ports
                .iter()
                .enumerate()
                .find(|(_, p)| p.name.as_deref() == Some(want)),
        };
        let port = indexed.map(|(_, p)| p);
        let protocol = |diags: &mut Diagnostics| {
            indexed.map_or(UpstreamProtocol::Http1, |(i, p)| {
                upstream_protocol(service, i, p, diags)
            })
        };
        let external = spec
            .filter(|s| s.type_.as_deref() == Some("ExternalName"))
            .map(|s| s.external_name.as_deref().unwrap_or(""));
        let missing_port = |diags: &mut Diagnostics| {
            let (sub, shown) = match r.port {
                PortRef::Number(n) => ("port.number", n.to_string()),
                PortRef::Name(n) => ("port.name", format!("{n:?}")),
            };
            let reason = format!("Service {ns}/{name} has no port {shown}");
            unavailable(r, sub, reason, diags)
        };
        if let Some(external) = external {
            // ExternalName: proxy to that DNS name, on the referenced port number.
            let number = match (port, r.port) {
                (Some(p), _) => u16::try_from(p.port).ok(),
                (None, PortRef::Number(n)) => Some(n),
                (None, PortRef::Name(_)) => None,
            };
            let Some(number) = number.filter(|n| *n != 0) else {
                return missing_port(diags);
            };
            if external.is_empty() {
                let reason = format!("ExternalName Service {ns}/{name} has no spec.externalName");
                return unavailable(r, "name", reason, diags);
            }
            let key = cluster_key(ns, name, number);
            let address = match external.parse::<IpAddr>() {
                Ok(ip) => EndpointAddress::Socket(SocketAddr::new(ip, number)),
                Err(_) => EndpointAddress::Dns {
                    host: external.trim_end_matches('.').into(),
                    port: number,
                },
            };
            return Backend::Cluster(
                builder.cluster_with(key, || (protocol(diags), vec![Endpoint { address }])),
            );
        }
        let Some(port) = port else {
            return missing_port(diags);
        };
        let Some(number) = u16::try_from(port.port).ok().filter(|n| *n != 0) else {
            return missing_port(diags);
        };
        if r.cluster_ip {
            let ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
            match ip.parse::<IpAddr>() {
                Ok(ip) => {
                    let key = ClusterKey {
                        cluster_ip: true,
                        ..cluster_key(ns, name, number)
                    };
                    let address = EndpointAddress::Socket(SocketAddr::new(ip, number));
                    return Backend::Cluster(
                        builder.cluster_with(key, || (protocol(diags), vec![Endpoint { address }])),
                    );
                }
                Err(_) => diags.warning(
                    r.referrer,
                    r.field,
                    format!(
                        "service-upstream: Service {ns}/{name} has no cluster IP ({ip:?}, a \
                         headless Service); its endpoints are used"
                    ),
                ),
            }
        }
        let slices = self
            .slices
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        Backend::Cluster(builder.cluster_with(cluster_key(ns, name, number), || {
            (protocol(diags), ready_endpoints(slices, port, diags))
        }))
    }
}

/// A backend that cannot be served, with the warning on the referring field (`sub` below the
/// reference's `service` field).
fn unavailable(r: &ServiceRef<'_>, sub: &str, reason: String, diags: &mut Diagnostics) -> Backend {
    diags.warning(
        r.referrer,
        format!("{}.{sub}", r.field),
        format!("{reason}; requests for this backend answer 503"),
    );
    Backend::Unavailable {
        reason: reason.into(),
    }
}

/// The protocol a Service port's `appProtocol` names. Checked once per cluster, when it is
/// made, so a Service used by many Ingresses is reported once.
fn upstream_protocol(
    service: &Service,
    index: usize,
    port: &ServicePort,
    diags: &mut Diagnostics,
) -> UpstreamProtocol {
    let Some(app) = port.app_protocol.as_deref().filter(|a| !a.is_empty()) else {
        return UpstreamProtocol::Http1;
    };
    // IANA service names are case-insensitive, and so are the `kubernetes.io/` ones in
    // practice: nobody means something else by `HTTPS`.
    match app.to_ascii_lowercase().as_str() {
        "http" | "kubernetes.io/ws" => UpstreamProtocol::Http1,
        "kubernetes.io/h2c" | "grpc" => UpstreamProtocol::H2c,
        "https" | "kubernetes.io/https" | "kubernetes.io/wss" => UpstreamProtocol::Https,
        _ => {
            diags.warning(
                &ObjectRef::of(Kind::Service, &service.metadata),
                format!("spec.ports[{index}].appProtocol"),
                format!(
                    "appProtocol {app:?} is not one Vestibule knows (http, https, grpc, \
                     kubernetes.io/h2c, kubernetes.io/https, kubernetes.io/ws, \
                     kubernetes.io/wss); HTTP/1.1 in clear text is used"
                ),
            );
            UpstreamProtocol::Http1
        }
    }
}

fn cluster_key(ns: &str, name: &str, port: u16) -> ClusterKey {
    ClusterKey {
        namespace: ns.into(),
        service: name.into(),
        port,
        cluster_ip: false,
    }
}

/// The ready endpoints of a Service port across its slices. Each slice carries its own port
/// number for the Service port's name, so slices of one Service may use different numbers.
fn ready_endpoints(
    slices: &[&EndpointSlice],
    port: &ServicePort,
    diags: &mut Diagnostics,
) -> Vec<Endpoint> {
    let port_name = port.name.as_deref().unwrap_or("");
    let mut out = Vec::new();
    for slice in slices {
        let object = ObjectRef::of(Kind::EndpointSlice, &slice.metadata);
        let Some((index, slice_port)) = slice
            .ports
            .iter()
            .flatten()
            .enumerate()
            .find(|(_, p)| p.name.as_deref().unwrap_or("") == port_name)
        else {
            continue;
        };
        let Some(number) = slice_port
            .port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            diags.warning(
                &object,
                format!("ports[{index}].port"),
                "port is missing or out of range; this slice's endpoints are not used",
            );
            continue;
        };
        for (i, endpoint) in slice.endpoints.iter().enumerate() {
            let conditions = endpoint.conditions.as_ref();
            // An absent `ready` means ready; terminating endpoints get no new requests.
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            if !ready || terminating {
                continue;
            }
            // The API lets consumers use only the first address: the others are fungible.
            let Some(address) = endpoint.addresses.first() else {
                continue;
            };
            match parse_address(&slice.address_type, address, number) {
                Ok(address) => out.push(Endpoint { address }),
                Err(why) => diags.warning(
                    &object,
                    format!("endpoints[{i}].addresses[0]"),
                    format!("{why}; this endpoint is not used"),
                ),
            }
        }
    }
    out
}

fn parse_address(address_type: &str, address: &str, port: u16) -> Result<EndpointAddress, String> {
    match address_type {
        "IPv4" => address
            .parse::<Ipv4Addr>()
            .map(|ip| EndpointAddress::Socket(SocketAddr::new(IpAddr::V4(ip), port)))
            .map_err(|_| format!("{address:?} is not an IPv4 address")),
        "IPv6" => address
            .parse::<Ipv6Addr>()
            .map(|ip| EndpointAddress::Socket(SocketAddr::new(IpAddr::V6(ip), port)))
            .map_err(|_| format!("{address:?} is not an IPv6 address")),
        "FQDN" if address.is_empty() => Err("the address is empty".to_owned()),
        "FQDN" => Ok(EndpointAddress::Dns {
            host: address.trim_end_matches('.').into(),
            port,
        }),
        other => Err(format!("address type {other:?} is not IPv4, IPv6 or FQDN")),
    }
}
