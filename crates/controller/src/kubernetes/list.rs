//! One read of the cluster, list calls only (no watch, no write): what `vestibule check` and
//! `vestibule explain` compile. Each object is stripped as the watches strip it.

use std::sync::Arc;

use kube::api::ListParams;
use kube::{Api, Client, Resource};
use vestibule_translate::Snapshot;

use super::source::{SECRET_TYPES, Scope, Watched};

/// A list the API server refused or that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("listing {kind} in {scope}: {source}")]
pub struct ListError {
    pub kind: String,
    pub scope: String,
    #[source]
    pub source: kube::Error,
}

impl ListError {
    /// The API server answered 403: the credentials may not list this kind.
    pub fn is_forbidden(&self) -> bool {
        matches!(&self.source, kube::Error::Api(status) if status.code == 403)
    }
}

/// Every object of the kinds the compile reads, in `scope`'s namespaces, listed once.
/// Secrets only when `secrets` (TLS and Opaque ones, as the watches read); ConfigMaps always.
pub async fn list_once(
    client: &Client,
    scope: &Scope,
    secrets: bool,
) -> Result<Snapshot, ListError> {
    let namespaces: Vec<Option<&str>> = if scope.namespaces.is_empty() {
        vec![None]
    } else {
        scope
            .namespaces
            .iter()
            .map(|ns| Some(ns.as_str()))
            .collect()
    };
    let mut snapshot = Snapshot {
        ingress_classes: list(Api::all(client.clone()), "all namespaces", None).await?,
        ..Snapshot::default()
    };
    for namespace in namespaces {
        let at = namespace.unwrap_or("all namespaces");
        snapshot
            .ingresses
            .extend(list(api(client, namespace), at, None).await?);
        snapshot
            .services
            .extend(list(api(client, namespace), at, None).await?);
        snapshot
            .endpoint_slices
            .extend(list(api(client, namespace), at, None).await?);
        snapshot
            .config_maps
            .extend(list(api(client, namespace), at, None).await?);
        if secrets {
            for kind in SECRET_TYPES {
                let of_kind = format!("type={kind}");
                snapshot
                    .secrets
                    .extend(list(api(client, namespace), at, Some(&of_kind)).await?);
            }
        }
    }
    Ok(snapshot)
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn list<K: Watched>(
    api: Api<K>,
    scope: &str,
    fields: Option<&str>,
) -> Result<Vec<Arc<K>>, ListError> {
    let mut params = ListParams::default();
    if let Some(fields) = fields {
        params = params.fields(fields);
    }
    let listed = api.list(&params).await.map_err(|source| ListError {
        kind: K::kind(&()).into_owned(),
        scope: scope.to_owned(),
        source,
    })?;
    Ok(listed
        .items
        .into_iter()
        .map(|mut object| {
            object.strip();
            Arc::new(object)
        })
        .collect())
}
