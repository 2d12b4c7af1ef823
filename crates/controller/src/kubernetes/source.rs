//! Watches of the kinds the compile reads, each feeding a reflector store, and the loop that
//! turns settled bursts of changes into snapshots. A relist (after a 410 Gone or a broken
//! watch) replaces a store in one swap when the list is complete, so a compile never sees a
//! half-listed kind.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use vestibule_translate::{Options, Snapshot, values};

use crate::{Debounce, SourceSnapshot};

/// `kubectl apply` keeps a full copy of the object here; for Secrets that is the private key
/// again, and for everything it doubles the memory of the store.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The type of a Secret holding a certificate and its key.
const TLS_TYPE: &str = "kubernetes.io/tls";
/// The only keys of a TLS Secret the compile reads.
const TLS_SECRET_KEYS: [&str; 3] = ["tls.crt", "tls.key", "ca.crt"];
/// The keys of any other Secret the compile reads: the CA that `proxy-ssl-secret` names, and
/// the htpasswd file of `auth-secret`.
const OPAQUE_SECRET_KEYS: [&str; 2] = ["ca.crt", "auth"];
/// The Secret types listed and watched: certificates, and the CAs that `proxy-ssl-secret`
/// names, which users create as either (`kubectl create secret generic --from-file=ca.crt`
/// makes an Opaque one). Other types (service account tokens, Helm releases, registry
/// credentials) are never read, as none of them is ever named for TLS.
pub(super) const SECRET_TYPES: [&str; 2] = [TLS_TYPE, "Opaque"];

/// Which objects to watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Objects named by flags, read even when their namespace is not watched.
    pub default_backend_service: Option<(String, String)>,
    pub default_ssl_certificate: Option<(String, String)>,
}

impl Scope {
    pub fn of(options: &Options) -> Scope {
        Scope {
            namespaces: options.watch_namespaces.clone(),
            default_backend_service: options.default_backend_service.clone(),
            default_ssl_certificate: options.default_ssl_certificate.clone(),
        }
    }

    fn covers(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|ns| ns == namespace)
    }
}

/// Counters about the watches, for logs and metrics.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Watch errors (connection failures, API errors); each is retried with back-off.
    pub watch_errors: AtomicU64,
    /// Full relists after the first list: a 410 Gone or a watch that could not resume.
    pub relists: AtomicU64,
    /// Object events that changed what the compile reads.
    pub changes: AtomicU64,
}

/// Read handles on every store.
#[derive(Debug, Clone, Default)]
pub struct Stores {
    ingress_classes: Vec<Store<IngressClass>>,
    ingresses: Vec<Store<Ingress>>,
    services: Vec<Store<Service>>,
    endpoint_slices: Vec<Store<EndpointSlice>>,
    secrets: Vec<Store<Secret>>,
    config_maps: Vec<Store<ConfigMap>>,
}

impl Stores {
    /// Every object the stores hold now, in a stable order (namespace, name).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            ingress_classes: gather(&self.ingress_classes),
            ingresses: gather(&self.ingresses),
            services: gather(&self.services),
            endpoint_slices: gather(&self.endpoint_slices),
            secrets: gather(&self.secrets),
            config_maps: gather(&self.config_maps),
        }
    }

    /// The Ingress as last seen, status included.
    pub fn ingress(&self, namespace: &str, name: &str) -> Option<Arc<Ingress>> {
        let key = ObjectRef::new(name).within(namespace);
        self.ingresses.iter().find_map(|store| store.get(&key))
    }
}

/// Merges the stores of one kind. Scopes never overlap, but should they, one copy is kept.
fn gather<K: Resource<DynamicType = ()> + Clone>(stores: &[Store<K>]) -> Vec<Arc<K>> {
    let mut objects: BTreeMap<(String, String), Arc<K>> = BTreeMap::new();
    for store in stores {
        for object in store.state() {
            let meta = object.meta();
            let key = (
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            );
            objects.entry(key).or_insert(object);
        }
    }
    objects.into_values().collect()
}

/// Objects from the Kubernetes API, followed live.
#[derive(Debug)]
pub struct KubeSource {
    stores: Stores,
    changes: mpsc::UnboundedReceiver<()>,
    unsynced: watch::Receiver<usize>,
    stats: Arc<SourceStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What every watch task shares.
#[derive(Debug, Clone)]
struct Shared {
    changes: mpsc::UnboundedSender<()>,
    unsynced: Arc<watch::Sender<usize>>,
    stats: Arc<SourceStats>,
}

impl KubeSource {
    /// Starts one watch per kind and namespace in `scope` (and one per object named by a
    /// flag outside it). Returns at once; [`KubeSource::synced`] waits for the first lists.
    pub fn start(client: &Client, scope: &Scope) -> KubeSource {
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let (unsynced_tx, unsynced) = watch::channel(0);
        let shared = Shared {
            changes: changes_tx,
            unsynced: Arc::new(unsynced_tx),
            stats: Arc::new(SourceStats::default()),
        };
        let mut source = KubeSource {
            stores: Stores::default(),
            changes,
            unsynced,
            stats: shared.stats.clone(),
            tasks: Vec::new(),
        };
        let all = watcher::Config::default();

        let store = source.watch(Api::all(client.clone()), all.clone(), "all", &shared);
        source.stores.ingress_classes.push(store);
        let namespaces: Vec<Option<&str>> = if scope.namespaces.is_empty() {
            vec![None]
        } else {
            scope
                .namespaces
                .iter()
                .map(|ns| Some(ns.as_str()))
                .collect()
        };
        for namespace in namespaces {
            let scope_name = namespace.unwrap_or("all namespaces");
            let store = source.watch(api(client, namespace), all.clone(), scope_name, &shared);
            source.stores.ingresses.push(store);
            let store = source.watch(api(client, namespace), all.clone(), scope_name, &shared);
            source.stores.services.push(store);
            let store = source.watch(api(client, namespace), all.clone(), scope_name, &shared);
            source.stores.endpoint_slices.push(store);
            // A field selector cannot ask for two types at once; a Secret's type never
            // changes, so no Secret is ever in both watches.
            for kind in SECRET_TYPES {
                let of_kind = watcher::Config::default().fields(&format!("type={kind}"));
                let store = source.watch(api(client, namespace), of_kind, scope_name, &shared);
                source.stores.secrets.push(store);
            }
            let store = source.watch(api(client, namespace), all.clone(), scope_name, &shared);
            source.stores.config_maps.push(store);
        }
        if let Some((ns, name)) = &scope.default_backend_service
            && !scope.covers(ns)
        {
            let what = format!("{ns}/{name} (--default-backend-service)");
            let by_name = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let store = source.watch(Api::namespaced(client.clone(), ns), by_name, &what, &shared);
            source.stores.services.push(store);
            let by_service =
                watcher::Config::default().labels(&format!("kubernetes.io/service-name={name}"));
            let store = source.watch(
                Api::namespaced(client.clone(), ns),
                by_service,
                &what,
                &shared,
            );
            source.stores.endpoint_slices.push(store);
        }
        if let Some((ns, name)) = &scope.default_ssl_certificate
            && !scope.covers(ns)
        {
            let what = format!("{ns}/{name} (--default-ssl-certificate)");
            let by_name = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let store = source.watch(Api::namespaced(client.clone(), ns), by_name, &what, &shared);
            source.stores.secrets.push(store);
        }
        source
    }

    fn watch<K: Watched>(
        &mut self,
        api: Api<K>,
        config: watcher::Config,
        scope: &str,
        shared: &Shared,
    ) -> Store<K> {
        let writer = Writer::<K>::default();
        let store = writer.as_reader();
        shared.unsynced.send_modify(|n| *n += 1);
        let what = format!("{} in {scope}", K::kind(&()));
        self.tasks.push(tokio::spawn(follow(
            api,
            config,
            writer,
            what,
            shared.clone(),
        )));
        store
    }

    pub fn stores(&self) -> Stores {
        self.stores.clone()
    }

    pub fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }

    /// Waits until every watch has listed its objects once.
    pub async fn synced(&mut self) {
        // The sender lives in the watch tasks, which only end when the source is dropped.
        let _ = self.unsynced.wait_for(|n| *n == 0).await;
    }

    pub fn current(&self) -> SourceSnapshot {
        SourceSnapshot {
            snapshot: self.stores.snapshot(),
            problems: Vec::new(),
        }
    }

    /// Sends a new snapshot after each settled burst of changes, until `tx` has no receivers.
    pub async fn follow(mut self, tx: watch::Sender<Arc<SourceSnapshot>>, debounce: Debounce) {
        loop {
            tokio::select! {
                settled = debounce.settle(&mut self.changes) => {
                    if !settled {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
            let span = tracing::info_span!("snapshot", source = "kubernetes");
            let _entered = span.enter();
            let current = self.current();
            debug!(objects = current.snapshot.len(), "snapshot taken");
            tx.send_replace(Arc::new(current));
        }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Watched + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Follows one watch into its store for as long as the source lives. Errors are retried with
/// the watcher's default back-off; the store keeps what it had meanwhile.
async fn follow<K: Watched>(
    api: Api<K>,
    config: watcher::Config,
    mut writer: Writer<K>,
    what: String,
    shared: Shared,
) {
    let store = writer.as_reader();
    let mut synced = false;
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => event.modify(Watched::strip),
            Err(e) => {
                shared.stats.watch_errors.fetch_add(1, Ordering::Relaxed);
                warn!(watch = %what, error = %e, "watch failed; retrying with back-off while the objects already seen stay in use");
                continue;
            }
        };
        let changed = match &event {
            Event::Apply(object) => store
                .get(&ObjectRef::from_obj(object))
                .is_none_or(|old| !old.same_for_compile(object)),
            Event::Delete(_) => true,
            Event::Init => {
                if synced {
                    shared.stats.relists.fetch_add(1, Ordering::Relaxed);
                    info!(watch = %what, "relisting");
                }
                false
            }
            Event::InitApply(_) => false,
            Event::InitDone => true,
        };
        if let Event::Apply(object) | Event::Delete(object) = &event {
            let meta = object.meta();
            tracing::trace!(
                watch = %what,
                namespace = meta.namespace.as_deref().unwrap_or(""),
                name = meta.name.as_deref().unwrap_or(""),
                deleted = matches!(event, Event::Delete(_)),
                changed,
                "object event"
            );
        }
        writer.apply_watcher_event(&event);
        if matches!(event, Event::InitDone) {
            debug!(watch = %what, objects = store.len(), "listed");
            if !synced {
                synced = true;
                shared.unsynced.send_modify(|n| *n = n.saturating_sub(1));
            }
        }
        if changed && synced {
            shared.stats.changes.fetch_add(1, Ordering::Relaxed);
            if shared.changes.send(()).is_err() {
                return;
            }
        }
    }
}

/// A kind the source watches: what to drop from each object to keep memory down, and which
/// changes matter to the compile.
pub(super) trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    fn strip(&mut self) {
        strip_meta(self.meta_mut());
    }

    /// Whether the two versions compile the same, so a change between them (our own status
    /// writes, a resync) needs no compile.
    fn same_for_compile(&self, other: &Self) -> bool;
}

/// What no kind needs of its metadata.
fn strip_meta(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

fn same_meta(
    a: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    b: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    a.annotations == b.annotations
        && a.labels == b.labels
        && a.creation_timestamp == b.creation_timestamp
        && a.deletion_timestamp == b.deletion_timestamp
        && a.uid == b.uid
}

impl Watched for IngressClass {
    fn same_for_compile(&self, other: &Self) -> bool {
        same_meta(&self.metadata, &other.metadata) && self.spec == other.spec
    }
}

impl Watched for Ingress {
    // The status stays: the status writer compares against it.
    fn same_for_compile(&self, other: &Self) -> bool {
        same_meta(&self.metadata, &other.metadata) && self.spec == other.spec
    }
}

impl Watched for Service {
    fn strip(&mut self) {
        strip_meta(self.meta_mut());
        self.status = None;
    }

    fn same_for_compile(&self, other: &Self) -> bool {
        same_meta(&self.metadata, &other.metadata) && self.spec == other.spec
    }
}

impl Watched for EndpointSlice {
    fn same_for_compile(&self, other: &Self) -> bool {
        same_meta(&self.metadata, &other.metadata)
            && self.endpoints == other.endpoints
            && self.ports == other.ports
            && self.address_type == other.address_type
    }
}

impl Watched for ConfigMap {
    fn strip(&mut self) {
        let meta = self.meta_mut();
        strip_meta(meta);
        // Only `auth-proxy-set-headers` reads ConfigMaps, and only their text data.
        meta.annotations = None;
        self.binary_data = None;
    }

    fn same_for_compile(&self, other: &Self) -> bool {
        same_meta(&self.metadata, &other.metadata) && self.data == other.data
    }
}

impl Watched for Secret {
    fn strip(&mut self) {
        let meta = self.meta_mut();
        meta.managed_fields = None;
        meta.annotations = None;
        self.string_data = None;
        // An Opaque Secret may hold anything (an application's passwords): only what the
        // compile reads is kept: its CA, an htpasswd file (`auth`), and the values that are
        // password hashes (an `auth-map`, whose keys are user names).
        let tls = self.type_.as_deref() == Some(TLS_TYPE);
        let keys: &[&str] = if tls {
            &TLS_SECRET_KEYS
        } else {
            &OPAQUE_SECRET_KEYS
        };
        if let Some(data) = &mut self.data {
            data.retain(|key, value| {
                keys.contains(&key.as_str()) || (!tls && values::password_hash(&value.0))
            });
        }
    }

    fn same_for_compile(&self, other: &Self) -> bool {
        same_meta(&self.metadata, &other.metadata)
            && self.type_ == other.type_
            && self.data == other.data
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn secret(type_: &str, keys: &[&str]) -> Secret {
        let data = keys
            .iter()
            .map(|k| ((*k).to_owned(), ByteString(k.as_bytes().to_vec())))
            .collect();
        Secret {
            type_: Some(type_.to_owned()),
            data: Some(data),
            ..Secret::default()
        }
    }

    fn kept(mut secret: Secret) -> Vec<String> {
        secret.strip();
        secret.data.unwrap_or_default().into_keys().collect()
    }

    #[test]
    fn secrets_keep_only_the_keys_the_compile_reads() {
        let all = ["ca.crt", "password", "tls.crt", "tls.key", "token"];
        assert_eq!(
            kept(secret(TLS_TYPE, &all)),
            ["ca.crt", "tls.crt", "tls.key"]
        );
        // An Opaque Secret is read for its CA and its users alone, whatever else it holds.
        assert_eq!(kept(secret("Opaque", &all)), ["ca.crt"]);
        assert!(kept(secret("Opaque", &["password"])).is_empty());
        let mut users = secret("Opaque", &["auth", "token"]);
        let data = users.data.get_or_insert_default();
        data.insert("ann".into(), ByteString(b"$apr1$salt$hash".to_vec()));
        data.insert("bob".into(), ByteString(b"plain".to_vec()));
        assert_eq!(kept(users), ["ann", "auth"]);
    }
}
