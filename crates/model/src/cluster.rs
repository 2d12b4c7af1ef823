//! Clusters (one Service port each) and the endpoints that serve them.

use std::fmt;
use std::net::SocketAddr;

use serde::{Serialize, Serializer};

/// Index of a cluster in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ClusterId(pub u32);

/// What a cluster is: a Service port, named by the Service's `port` number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ClusterKey {
    pub namespace: Box<str>,
    pub service: Box<str>,
    pub port: u16,
    /// Reached through the Service's cluster IP rather than its endpoints
    /// (`service-upstream`): a cluster of its own, beside the endpoints' one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cluster_ip: bool,
}

impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)?;
        if self.cluster_ip {
            f.write_str(" (cluster IP)")?;
        }
        Ok(())
    }
}

/// The protocol spoken to a cluster's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 in clear text.
    #[default]
    Http1,
    /// HTTP/2 in clear text, with prior knowledge (`appProtocol: kubernetes.io/h2c` or
    /// `grpc`).
    H2c,
    /// HTTP/1.1 over TLS (`appProtocol: https` or `kubernetes.io/https`).
    Https,
    /// HTTP/2 over TLS (`backend-protocol: GRPCS`).
    H2Tls,
}

impl UpstreamProtocol {
    pub fn is_tls(self) -> bool {
        matches!(self, UpstreamProtocol::Https | UpstreamProtocol::H2Tls)
    }

    pub fn is_http2(self) -> bool {
        matches!(self, UpstreamProtocol::H2c | UpstreamProtocol::H2Tls)
    }
}

/// Where an endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointAddress {
    Socket(SocketAddr),
    /// A name resolved when connecting: `ExternalName` Services and FQDN EndpointSlices.
    Dns {
        host: Box<str>,
        port: u16,
    },
}

impl fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointAddress::Socket(addr) => write!(f, "{addr}"),
            EndpointAddress::Dns { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Serialize for EndpointAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One ready endpoint of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Endpoint {
    pub address: EndpointAddress,
}

/// A Service port and the ready endpoints behind it, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cluster {
    pub id: ClusterId,
    pub key: ClusterKey,
    pub protocol: UpstreamProtocol,
    pub endpoints: Vec<Endpoint>,
}
