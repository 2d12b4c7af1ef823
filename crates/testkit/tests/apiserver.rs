#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fake API server driven by the real kube client and watcher.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config, ResourceExt};
use serde_json::json;
use vestibule_testkit::apiserver::{ApiServer, RecordedRequest};
use vestibule_testkit::{ingress, ingress_class, svc, tls_secret};

const DEADLINE: Duration = Duration::from_secs(10);

/// A client built the way Vestibule builds one: from the kubeconfig file.
async fn client(server: &ApiServer) -> Client {
    let dir = tempfile::tempdir().unwrap();
    let path = server.write_kubeconfig(dir.path()).unwrap();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    Client::try_from(config).unwrap()
}

async fn started() -> (ApiServer, Client) {
    let server = ApiServer::start().await.unwrap();
    let client = client(&server).await;
    (server, client)
}

fn config_map(ns: &str, name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            namespace: Some(ns.to_owned()),
            name: Some(name.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a watcher led its consumer to believe, followed the way a reflector follows it.
#[derive(Debug, Default)]
struct Seen {
    names: BTreeSet<String>,
    buffer: BTreeSet<String>,
    inits: usize,
}

impl Seen {
    fn has(&self, names: &[&str]) -> bool {
        self.names == names.iter().map(|n| (*n).to_owned()).collect()
    }
}

/// Drives a watcher on its own task, since it only makes progress while polled.
struct Follower {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    fn new<K: kube::Resource + Send + 'static>(
        mut stream: impl Stream<Item = Result<Event<K>, watcher::Error>> + Unpin + Send + 'static,
    ) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task_seen = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let mut seen = task_seen.lock().unwrap();
                match event {
                    Ok(Event::Init) => seen.buffer.clear(),
                    Ok(Event::InitApply(o)) => {
                        seen.buffer.insert(o.name_any());
                    }
                    Ok(Event::InitDone) => {
                        seen.inits += 1;
                        seen.names = std::mem::take(&mut seen.buffer);
                    }
                    Ok(Event::Apply(o)) => {
                        seen.names.insert(o.name_any());
                    }
                    Ok(Event::Delete(o)) => {
                        seen.names.remove(&o.name_any());
                    }
                    Err(_) => {}
                }
            }
        });
        Follower { seen, task }
    }

    async fn until(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        wait_for(what, || done(&self.seen.lock().unwrap())).await;
    }

    fn inits(&self) -> usize {
        self.seen.lock().unwrap().inits
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn list_pages_through_1200_objects() {
    let (server, client) = started().await;
    for i in 0..1200 {
        server.apply(&config_map(
            &format!("ns{}", i % 7),
            &format!("cm{i:04}"),
            &[],
        ));
    }
    let api = Api::<ConfigMap>::all(client);
    let mut names = Vec::new();
    let mut params = ListParams::default().limit(500);
    let mut pages = 0;
    loop {
        let page = api.list(&params).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 500);
        names.extend(
            page.items
                .iter()
                .map(|c| (c.namespace().unwrap(), c.name_any())),
        );
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 1200);
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");

    // A continue token from before a compaction has expired.
    let first = api.list(&ListParams::default().limit(500)).await.unwrap();
    server.apply(&config_map("ns0", "late", &[]));
    server.compact();
    let token = first.metadata.continue_.unwrap();
    let err = api
        .list(&ListParams::default().limit(500).continue_token(&token))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 410 && s.reason == "Expired"));
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let (server, client) = started().await;
    server.apply(&tls_secret("default", "tls", "cert", "key"));
    server.apply(&Secret {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some("opaque".into()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        ..Secret::default()
    });
    for (name, app) in [("a", "web"), ("b", "db"), ("c", "cache")] {
        server.apply(&config_map("default", name, &[("app", app)]));
    }
    server.apply(&config_map("default", "d", &[]));

    let secrets = Api::<Secret>::default_namespaced(client.clone());
    let tls = secrets
        .list(&ListParams::default().fields("type=kubernetes.io/tls"))
        .await
        .unwrap();
    assert_eq!(
        tls.items.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        ["tls"]
    );
    let err = secrets
        .list(&ListParams::default().fields("spec.nope=1"))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 400 && s.reason == "BadRequest"));

    let maps = Api::<ConfigMap>::default_namespaced(client);
    let names = |selector: &'static str| {
        let maps = maps.clone();
        async move {
            maps.list(&ListParams::default().labels(selector))
                .await
                .unwrap()
                .items
                .iter()
                .map(|c| c.name_any())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names("app=web").await, ["a"]);
    assert_eq!(names("app!=web").await, ["b", "c", "d"]);
    assert_eq!(names("app in (db,cache)").await, ["b", "c"]);
    assert_eq!(names("app notin (db,cache),app").await, ["a"]);
    assert_eq!(names("!app").await, ["d"]);
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted() {
    let (server, client) = started().await;
    server.apply(&ingress("default", "a").host("a.test").build());
    let api = Api::<Ingress>::default_namespaced(client);
    let mut events = watcher(api, watcher::Config::default()).boxed();
    let mut next = async || {
        tokio::time::timeout(DEADLINE, events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    assert!(matches!(next().await, Event::Init));
    assert!(matches!(next().await, Event::InitApply(i) if i.name_any() == "a"));
    assert!(matches!(next().await, Event::InitDone));

    server.apply(&ingress("default", "b").host("b.test").build());
    let Event::Apply(added) = next().await else {
        panic!("expected the addition")
    };
    assert_eq!(added.name_any(), "b");
    assert_eq!(added.metadata.generation, Some(1));
    assert!(added.metadata.uid.is_some() && added.metadata.creation_timestamp.is_some());

    server.apply(&ingress("default", "b").host("b2.test").build());
    let Event::Apply(modified) = next().await else {
        panic!("expected the modification")
    };
    assert_eq!(modified.metadata.uid, added.metadata.uid);
    assert_eq!(modified.metadata.generation, Some(2));

    assert!(server.delete::<Ingress>("default", "b"));
    assert!(!server.delete::<Ingress>("default", "b"));
    assert!(matches!(next().await, Event::Delete(i) if i.name_any() == "b"));
}

fn watcher<K>(api: Api<K>, config: watcher::Config) -> impl Stream<Item = watcher::Result<Event<K>>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, config).default_backoff()
}

#[tokio::test]
async fn watcher_resumes_after_dropped_connections_without_relisting() {
    let (server, client) = started().await;
    server.apply(&ingress("default", "a").build());
    let api = Api::<Ingress>::default_namespaced(client);
    let follower = Follower::new(watcher(api, watcher::Config::default()).boxed());
    follower.until("the first list", |f| f.inits == 1).await;
    wait_for("the watch", || server.open_watches() == 1).await;

    server.drop_connections();
    server.apply(&ingress("default", "b").build());
    follower.until("b", |f| f.has(&["a", "b"])).await;
    assert_eq!(follower.inits(), 1, "resumed from its resourceVersion");
    let count = |verb: &str| server.requests().iter().filter(|r| r.verb == verb).count();
    assert_eq!(count("list"), 1);
    assert!(count("watch") >= 2);
}

#[tokio::test]
async fn watcher_relists_after_compaction_and_dropped_connections() {
    let (server, client) = started().await;
    server.apply(&ingress("default", "a").build());
    let api = Api::<Ingress>::default_namespaced(client);
    let config = watcher::Config::default().disable_bookmarks();
    let follower = Follower::new(watcher(api, config).boxed());
    follower.until("the first list", |f| f.inits == 1).await;
    wait_for("the watch", || server.open_watches() == 1).await;

    // A write the watcher doesn't see leaves its resourceVersion behind the compaction.
    server.apply(&config_map("default", "unrelated", &[]));
    server.compact();
    server.drop_connections();
    follower
        .until("a relist", |f| f.inits == 2 && f.has(&["a"]))
        .await;

    server.apply(&ingress("default", "b").build());
    follower
        .until("b after the relist", |f| f.has(&["a", "b"]))
        .await;
    let gone = server
        .requests()
        .into_iter()
        .filter(|r| r.verb == "watch")
        .count();
    assert!(gone >= 2);
}

#[tokio::test]
async fn watcher_recovers_after_stop_and_resume() {
    let (server, client) = started().await;
    server.apply(&ingress("default", "a").build());
    server.apply(&ingress("default", "b").build());
    let api = Api::<Ingress>::default_namespaced(client.clone());
    let follower = Follower::new(watcher(api.clone(), watcher::Config::default()).boxed());
    follower
        .until("the first list", |f| f.has(&["a", "b"]))
        .await;
    wait_for("the watch", || server.open_watches() == 1).await;

    server.stop().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(server.addr()).await.is_err(),
        "a stopped server refuses connections"
    );
    assert!(
        std::net::TcpListener::bind(server.addr()).is_err(),
        "the port stays reserved for resume, so no other test's listener can take it"
    );
    assert!(api.get("a").await.is_err());
    // Changes while the watcher is away are replayed from history when it comes back.
    server.delete::<Ingress>("default", "a");
    server.apply(&ingress("default", "c").build());
    server.resume().await.unwrap();
    follower
        .until("the changes made while stopped", |f| f.has(&["b", "c"]))
        .await;
    assert_eq!(follower.inits(), 1);
    assert_eq!(api.get("c").await.unwrap().name_any(), "c");
}

#[tokio::test]
async fn raw_watch_semantics() {
    let (server, client) = started().await;
    server.apply(&config_map("default", "a", &[("app", "web")]));
    let api = Api::<ConfigMap>::default_namespaced(client);
    let start = server.resource_version().to_string();
    let params = WatchParams::default().labels("app=web").timeout(30);
    let mut stream = api.watch(&params, &start).await.unwrap().boxed();
    let mut next = async || {
        tokio::time::timeout(DEADLINE, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    wait_for("the watch", || server.open_watches() == 1).await;
    // Leaving the selection reads as a deletion, entering it as an addition.
    server.apply(&config_map("default", "a", &[("app", "db")]));
    assert!(matches!(next().await, WatchEvent::Deleted(c) if c.name_any() == "a"));
    server.apply(&config_map("default", "b", &[("app", "db")]));
    server.apply(&config_map("default", "a", &[("app", "web")]));
    assert!(matches!(next().await, WatchEvent::Added(c) if c.name_any() == "a"));

    server.compact();
    let mut old = api.watch(&params, &start).await.unwrap().boxed();
    let event = tokio::time::timeout(DEADLINE, old.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WatchEvent::Error(status) = event else {
        panic!("expected 410, got {event:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(status.message.starts_with("too old resource version"));
    assert!(
        tokio::time::timeout(DEADLINE, old.next())
            .await
            .unwrap()
            .is_none()
    );

    let short = WatchParams::default().timeout(1);
    let mut ends = api.watch(&short, "0").await.unwrap().boxed();
    assert!(matches!(ends.next().await, Some(Ok(WatchEvent::Added(_)))));
    assert!(matches!(ends.next().await, Some(Ok(WatchEvent::Added(_)))));
    assert!(
        tokio::time::timeout(DEADLINE, ends.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn status_writes_change_only_status_and_main_writes_keep_it() {
    let (server, client) = started().await;
    server.apply(
        &ingress("default", "a")
            .host("a.test")
            .prefix("/", svc("s", 80))
            .build(),
    );
    let api = Api::<Ingress>::default_namespaced(client.clone());
    let patched = api
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "spec": {"ingressClassName": "ignored"},
                "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}},
            })),
        )
        .await
        .unwrap();
    let ip = |i: &Ingress| {
        i.status
            .as_ref()?
            .load_balancer
            .as_ref()?
            .ingress
            .as_ref()?[0]
            .ip
            .clone()
    };
    assert_eq!(ip(&patched).as_deref(), Some("10.0.0.1"));
    assert_eq!(patched.spec.as_ref().unwrap().ingress_class_name, None);
    assert_eq!(patched.metadata.generation, Some(1));

    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ingressClassName": "vestibule"}, "status": null})),
        )
        .await
        .unwrap();
    assert_eq!(ip(&patched).as_deref(), Some("10.0.0.1"), "status kept");
    assert_eq!(
        patched.spec.as_ref().unwrap().ingress_class_name.as_deref(),
        Some("vestibule")
    );
    assert_eq!(patched.metadata.generation, Some(2));

    let json_patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "test", "path": "/spec/ingressClassName", "value": "vestibule"},
                    {"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}},
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        json_patched.annotations().get("x").map(String::as_str),
        Some("y")
    );

    let stale = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}})),
        )
        .await
        .unwrap_err();
    assert!(matches!(stale, kube::Error::Api(s) if s.code == 409));

    // Server-side apply creates what is absent.
    let classes = Api::<IngressClass>::all(client);
    let applied = classes
        .patch(
            "vestibule",
            &PatchParams::apply("test"),
            &Patch::Apply(ingress_class("vestibule", "vestibule.dev/ingress-controller").build()),
        )
        .await
        .unwrap();
    assert_eq!(applied.metadata.namespace, None);
    assert_eq!(server.list::<IngressClass>().len(), 1);
    assert_eq!(
        server
            .get::<Ingress>("default", "a")
            .and_then(|i| ip(&i))
            .as_deref(),
        Some("10.0.0.1")
    );
}

#[tokio::test]
async fn lease_update_with_stale_resource_version_conflicts() {
    let (_server, client) = started().await;
    let leases = Api::<Lease>::default_namespaced(client);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("vestibule".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("one".into()),
            ..LeaseSpec::default()
        }),
    };
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let err = leases
        .create(&PostParams::default(), &lease)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"));

    let mut mine = created.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("two".into());
    let updated = leases
        .replace("vestibule", &PostParams::default(), &mine)
        .await
        .unwrap();
    assert_ne!(updated.resource_version(), created.resource_version());

    let err = leases
        .replace("vestibule", &PostParams::default(), &mine)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status
            .message
            .contains("leases.coordination.k8s.io \"vestibule\"")
    );
}

#[tokio::test]
async fn events_k8s_io_events_can_be_created() {
    let (server, client) = started().await;
    let events = Api::<EventV1>::namespaced(client, "default");
    let event = EventV1 {
        metadata: ObjectMeta {
            generate_name: Some("vestibule-".into()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(jiff::Timestamp::now())),
        reason: Some("Synced".into()),
        reporting_controller: Some("vestibule.dev/ingress-controller".into()),
        reporting_instance: Some("test".into()),
        action: Some("Reconcile".into()),
        type_: Some("Normal".into()),
        ..EventV1::default()
    };
    let created = events.create(&PostParams::default(), &event).await.unwrap();
    assert!(created.name_any().starts_with("vestibule-"));
    let stored = server.list::<EventV1>();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].reason.as_deref(), Some("Synced"));
}

#[tokio::test]
async fn requests_are_recorded_with_their_verbs() {
    let (server, client) = started().await;
    let api = Api::<ConfigMap>::default_namespaced(client);
    assert!(api.get_opt("a").await.unwrap().is_none());
    api.create(&PostParams::default(), &config_map("default", "a", &[]))
        .await
        .unwrap();
    api.list(&ListParams::default()).await.unwrap();
    let current = api.get("a").await.unwrap();
    api.replace("a", &PostParams::default(), &current)
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let _stream = api.watch(&WatchParams::default(), "0").await.unwrap();
    wait_for("the watch", || server.open_watches() == 1).await;

    let one = |verb: &str, name: Option<&str>, status: u16| RecordedRequest {
        verb: verb.into(),
        group: String::new(),
        version: "v1".into(),
        resource: "configmaps".into(),
        subresource: None,
        namespace: Some("default".into()),
        name: name.map(str::to_owned),
        status,
    };
    assert_eq!(
        server.requests(),
        [
            one("get", Some("a"), 404),
            one("create", None, 201),
            one("list", None, 200),
            one("get", Some("a"), 200),
            one("update", Some("a"), 200),
            one("patch", Some("a"), 200),
            one("delete", Some("a"), 200),
            one("watch", None, 200),
        ]
    );
    let mut by_verb = BTreeMap::new();
    for r in server.requests() {
        *by_verb.entry(r.verb).or_insert(0) += 1;
    }
    assert_eq!(by_verb.len(), 7);
}
