//! An in-process fake Kubernetes API server for tests: the real list, watch and write protocol
//! over plain HTTP/1.1 on `127.0.0.1`, objects kept as JSON, plus fault injection (dropped
//! connections, compacted history, a stopped listener) and a record of every request.
//!
//! Build a kube client from it through [`ApiServer::write_kubeconfig`], or directly with
//! `kube::Config::new(server.url().parse()?)`.

mod http;
mod patch;
mod select;
mod store;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use store::{ResourceDef, Store, meta_str};

/// One request as the server saw it, after routing.
///
/// Paths outside the resource API (`/version`, discovery) are recorded with the method as
/// `verb`, the path as `resource` and empty group and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The RBAC verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    /// The plural, e.g. `ingresses`.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
}

/// State shared by the handle, the accept loop, connections and watch streams.
struct Shared {
    addr: SocketAddr,
    store: Mutex<Store>,
    /// The RV of the latest write: watch streams wait on it.
    changes: watch::Sender<u64>,
    /// Bumped to close every open connection.
    drops: watch::Sender<u64>,
    requests: Mutex<Vec<RecordedRequest>>,
    open_watches: AtomicUsize,
    accept: Mutex<Option<JoinHandle<()>>>,
    /// While stopped, a bound socket that does not listen: connections are refused, and no
    /// other socket (another test's listener, an outgoing connection's ephemeral port) can
    /// take the port before `resume`.
    held: Mutex<Option<TcpSocket>>,
    /// `(group, plural)` of the resources every request on which is answered 403, as an
    /// API server answers credentials that RBAC gives no verb on them.
    forbidden: Mutex<HashSet<(String, String)>>,
}

impl Shared {
    fn record(&self, request: RecordedRequest) {
        lock(&self.requests).push(request);
    }

    fn drop_connections(&self) {
        self.drops.send_modify(|epoch| *epoch += 1);
    }

    fn take_accept(&self) -> Option<JoinHandle<()>> {
        lock(&self.accept).take()
    }
}

/// A panicking test thread must not turn every later call into a second panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Stops the server when the last handle goes away.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(task) = self.0.take_accept() {
            task.abort();
        }
        self.0.drop_connections();
    }
}

/// A running fake API server. Clones share it; it stops when the last clone is dropped.
#[derive(Clone)]
pub struct ApiServer {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.shared.addr)
            .field("resource_version", &self.resource_version())
            .field("open_watches", &self.open_watches())
            .finish()
    }
}

/// Binds with `SO_REUSEADDR`, so `resume` gets the same port back while old connections linger
/// in TIME_WAIT, and `SO_REUSEPORT`, so it can share the port with the socket that held it.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Binds beside the listener without listening. `SO_REUSEPORT` lets it share the port with
/// our own listeners only; without `SO_REUSEADDR`, a socket that asks for `SO_REUSEADDR` alone
/// (as std's listeners do) cannot bind next to it.
fn hold(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Subscribed before spawning, so a drop requested after this accept closes it too.
        let mut drops = shared.drops.subscribe();
        let conn_shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| http::handle(conn_shared.clone(), request));
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = drops.changed() => {}
            }
        });
    }
}

impl ApiServer {
    /// Starts on `127.0.0.1` and an ephemeral port.
    pub async fn start() -> std::io::Result<ApiServer> {
        Self::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts on a given address (port 0 for an ephemeral one).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<ApiServer> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            addr,
            store: Mutex::new(Store::new()),
            changes: watch::Sender::new(0),
            drops: watch::Sender::new(0),
            requests: Mutex::new(Vec::new()),
            open_watches: AtomicUsize::new(0),
            accept: Mutex::new(None),
            held: Mutex::new(None),
            forbidden: Mutex::new(HashSet::new()),
        });
        *lock(&shared.accept) = Some(tokio::spawn(accept_loop(shared.clone(), listener)));
        Ok(ApiServer {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Writes `dir/kubeconfig` pointing at [`url`](Self::url), namespace `default`, no
    /// credentials, and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        std::fs::write(&path, self.kubeconfig())?;
        Ok(path)
    }

    /// The kubeconfig YAML that [`write_kubeconfig`](Self::write_kubeconfig) writes.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: vestibule-test\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: vestibule-test\n  user: {{}}\n\
             contexts:\n\
             - name: vestibule-test\n  context:\n    cluster: vestibule-test\n    user: vestibule-test\n    namespace: default\n\
             current-context: vestibule-test\n",
            url = self.url()
        )
    }

    /// The RV of the latest write.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).rv()
    }

    fn resource_of<K: k8s_openapi::Resource>(store: &Store) -> Option<usize> {
        store.find(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT)
    }

    /// Creates or replaces the whole object, status included, as a controller's write would
    /// land: fills uid (kept on replace), creationTimestamp (unless set), generation and
    /// resourceVersion, and tells watchers ADDED or MODIFIED.
    pub fn apply<K: k8s_openapi::Resource + serde::Serialize>(&self, object: &K) {
        let Ok(mut value) = serde_json::to_value(object) else {
            return;
        };
        let stored = {
            let mut store = lock(&self.shared.store);
            let resource = store.find_or_add(ResourceDef {
                group: K::GROUP.to_owned(),
                version: K::VERSION.to_owned(),
                plural: K::URL_PATH_SEGMENT.to_owned(),
                kind: K::KIND.to_owned(),
                namespaced: std::any::type_name::<K::Scope>().ends_with("NamespaceResourceScope"),
                status: false,
            });
            let namespaced = store.def(resource).is_some_and(|d| d.namespaced);
            let namespace = if namespaced {
                meta_str(&value, "namespace")
                    .unwrap_or("default")
                    .to_owned()
            } else {
                String::new()
            };
            if namespaced {
                store::set_meta(&mut value, "namespace", Value::String(namespace.clone()));
            }
            let name = match meta_str(&value, "name") {
                Some(name) => name.to_owned(),
                None => {
                    let name = store::generated_name(
                        meta_str(&value, "generateName").unwrap_or("generated-"),
                    );
                    store::set_meta(&mut value, "name", Value::String(name.clone()));
                    name
                }
            };
            let key = (namespace, name);
            match store.get(resource, &key) {
                Some(current) => store::prepare_update(&current, &mut value, true),
                None => store::prepare_create(&mut value),
            }
            store.put(resource, key, value)
        };
        let rv = meta_str(&stored, "resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        self.shared.changes.send_replace(rv);
    }

    /// Deletes an object (namespace `""` for cluster-scoped ones) and tells watchers DELETED.
    /// Returns whether it existed.
    pub fn delete<K: k8s_openapi::Resource>(&self, namespace: &str, name: &str) -> bool {
        let removed = {
            let mut store = lock(&self.shared.store);
            Self::resource_of::<K>(&store)
                .and_then(|r| store.remove(r, &(namespace.to_owned(), name.to_owned())))
        };
        match removed {
            Some(object) => {
                let rv = meta_str(&object, "resourceVersion")
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or(0);
                self.shared.changes.send_replace(rv);
                true
            }
            None => false,
        }
    }

    pub fn get<K: k8s_openapi::Resource + serde::de::DeserializeOwned>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<K> {
        let object = {
            let store = lock(&self.shared.store);
            let resource = Self::resource_of::<K>(&store)?;
            store.get(resource, &(namespace.to_owned(), name.to_owned()))?
        };
        serde_json::from_value(Value::clone(&object)).ok()
    }

    /// Every stored object of the kind, in namespace/name order.
    pub fn list<K: k8s_openapi::Resource + serde::de::DeserializeOwned>(&self) -> Vec<K> {
        let objects = {
            let store = lock(&self.shared.store);
            let Some(resource) = Self::resource_of::<K>(&store) else {
                return Vec::new();
            };
            store.page(resource, None, usize::MAX, |_| true).0
        };
        objects
            .into_iter()
            .filter_map(|(_, o)| serde_json::from_value(Value::clone(&o)).ok())
            .collect()
    }

    /// Closes every open connection now, ending watch streams mid-flight; new connections are
    /// still accepted.
    pub fn drop_connections(&self) {
        self.shared.drop_connections();
    }

    /// Forgets all history: watches from an older RV, and continue tokens from before, get
    /// 410 Gone. With [`drop_connections`](Self::drop_connections), an API server restart.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// Stops listening and drops every connection: the address refuses connections until
    /// [`resume`](Self::resume), and the port stays reserved for it.
    pub async fn stop(&self) -> std::io::Result<()> {
        {
            let mut held = lock(&self.shared.held);
            if held.is_none() {
                *held = Some(hold(self.shared.addr)?);
            }
        }
        if let Some(task) = self.shared.take_accept() {
            task.abort();
            // Awaiting the aborted task is what guarantees the listener is closed.
            let _ = task.await;
        }
        self.shared.drop_connections();
        Ok(())
    }

    /// Listens again on the same port, with the same state.
    pub async fn resume(&self) -> std::io::Result<()> {
        let mut accept = lock(&self.shared.accept);
        if accept.is_some() {
            return Ok(());
        }
        let listener = bind(self.shared.addr)?;
        *accept = Some(tokio::spawn(accept_loop(self.shared.clone(), listener)));
        lock(&self.shared.held).take();
        Ok(())
    }

    /// From now on, every request on the kind `K` (list, watch, get and writes alike) is
    /// answered `403 Forbidden`, with the `Status` a real API server sends when RBAC grants the
    /// credentials nothing on it.
    pub fn forbid<K: k8s_openapi::Resource>(&self) {
        lock(&self.shared.forbidden).insert((K::GROUP.to_owned(), K::URL_PATH_SEGMENT.to_owned()));
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Watch streams currently open. A stream counts from the moment its response is made, and
    /// every write after that reaches it.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }
}
