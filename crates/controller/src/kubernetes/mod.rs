//! The Kubernetes source and the writes a controller makes back: watchers with reflector
//! stores (and a one-shot list for the offline commands), leader election on a Lease, Ingress status, and Events for diagnostics.

mod election;
mod events;
mod list;
mod source;
mod status;

use std::path::Path;

pub use election::{Election, ElectionSettings};
pub use events::EventWriter;
pub use list::{ListError, list_once};
pub use source::{KubeSource, Scope, SourceStats, Stores};
pub use status::{StatusAddresses, StatusWriter};

/// Errors from setting up the connection to the API server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("finding the API server (no in-cluster service account and no usable KUBECONFIG): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("creating the API client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from `kubeconfig` when given; else the in-cluster service account, else
/// `KUBECONFIG` or `~/.kube/config`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let error = |source| ClientError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(error)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(error)?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// The namespace this controller runs in: `POD_NAMESPACE`, else the service account's
/// namespace file, else `default`.
pub fn own_namespace() -> String {
    const SERVICE_ACCOUNT_NAMESPACE: &str =
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty())
        .or_else(|| {
            std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                .ok()
                .map(|ns| ns.trim().to_owned())
                .filter(|ns| !ns.is_empty())
        })
        .unwrap_or_else(|| "default".to_owned())
}

/// This replica's name in leader election and Events: `POD_NAME`, else the host name.
pub fn own_identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
        })
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| format!("vestibule-{}", std::process::id()))
}
