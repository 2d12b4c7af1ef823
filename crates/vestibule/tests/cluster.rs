//! `vestibule run` against an API server: the in-process test server from testkit speaks the
//! real list/watch protocol, the real binary talks to it through a kubeconfig, and traffic
//! goes through the real proxy to echo backends.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Secret, Service, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use vestibule_testkit::apiserver::{ApiServer, RecordedRequest};
use vestibule_testkit::certs;
use vestibule_testkit::fixtures::{IngressBuilder, ca_secret, echo_service, ingress_class};
use vestibule_testkit::misbehave::TlsEcho;
use vestibule_testkit::{Echo, EchoReply, endpoint_slice, ingress, service, svc};

/// How long a change may take from the API server to the proxy. Generous for slow CI
/// machines; the typical figure is well under a second.
const SERVED_WITHIN: Duration = Duration::from_secs(10);

struct World {
    api: ApiServer,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let api = ApiServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path()).unwrap();
        api.apply(&ingress_class("vestibule", "vestibule.dev/ingress-controller").build());
        World {
            api,
            kubeconfig,
            _dir: dir,
        }
    }

    fn service(&self, name: &str, echoes: &[&Echo]) {
        let (service, slices) = echo_service("default", name, echoes);
        self.api.apply(&service);
        for slice in &slices {
            self.api.apply(slice);
        }
    }

    fn ours(&self, ingress: IngressBuilder) {
        self.api.apply(&ingress.class("vestibule").build());
    }

    fn vestibule(&self, pod: &str, extra: &[&str]) -> Vestibule {
        Vestibule::cluster(&self.kubeconfig, pod, extra)
    }

    fn status_of(&self, name: &str) -> Vec<String> {
        self.api
            .get::<Ingress>("default", name)
            .and_then(|i| i.status)
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.ip.or(i.hostname).unwrap_or_default())
            .collect()
    }

    fn requests(&self, predicate: impl Fn(&RecordedRequest) -> bool) -> Vec<RecordedRequest> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| predicate(r))
            .collect()
    }

    fn status_writes(&self, name: &str) -> usize {
        self.requests(|r| {
            r.resource == "ingresses"
                && r.subresource.as_deref() == Some("status")
                && r.name.as_deref() == Some(name)
                && matches!(r.verb.as_str(), "patch" | "update")
        })
        .len()
    }
}

/// Polls `check` until it yields a value; fails after `timeout`, saying what was awaited.
async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The echo backend's name, or the status when something else answered.
async fn answer(client: &reqwest::Client, url: &str) -> Result<String, u16> {
    let response = client.get(url).send().await.map_err(|_| 0u16)?;
    if response.status() != 200 {
        return Err(response.status().as_u16());
    }
    response
        .json::<EchoReply>()
        .await
        .map(|r| r.name)
        .map_err(|_| 0)
}

async fn until_answer(client: &reqwest::Client, url: &str, expected: Result<&str, u16>) {
    until(
        &format!("{url} answered by {expected:?}"),
        SERVED_WITHIN,
        || async {
            let got = answer(client, url).await;
            (got.as_deref().map_err(|e| *e) == expected).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_created_updated_and_deleted_through_the_api_are_served() {
    let world = World::start().await;
    let (a, b) = (
        Echo::start("a").await.unwrap(),
        Echo::start("b").await.unwrap(),
    );
    world.service("a", &[&a]);
    world.service("b", &[&b]);
    world.ours(
        ingress("default", "web")
            .host("web.test")
            .prefix("/", svc("a", 80)),
    );
    let v = world.vestibule("vestibule-0", &[]);
    let client = v.client(&["web.test", "new.test"]);
    assert_eq!(
        answer(&client, &v.url("web.test", "/")).await,
        Ok("a".into())
    );

    // Updated: the rule now points at b.
    world.ours(
        ingress("default", "web")
            .host("web.test")
            .prefix("/", svc("b", 80)),
    );
    until_answer(&client, &v.url("web.test", "/"), Ok("b")).await;

    // Created: a second Ingress.
    assert_eq!(answer(&client, &v.url("new.test", "/")).await, Err(404));
    world.ours(
        ingress("default", "new")
            .host("new.test")
            .prefix("/", svc("a", 80)),
    );
    until_answer(&client, &v.url("new.test", "/"), Ok("a")).await;

    // Deleted: the first one.
    assert!(world.api.delete::<Ingress>("default", "web"));
    until_answer(&client, &v.url("web.test", "/"), Err(404)).await;
    assert_eq!(
        answer(&client, &v.url("new.test", "/")).await,
        Ok("a".into())
    );

    // A Service deleted takes its endpoints out of service: 503, not a stale address.
    assert!(world.api.delete::<Service>("default", "a"));
    until_answer(&client, &v.url("new.test", "/"), Err(503)).await;
}

/// `kubectl create secret generic upstream-ca --from-file=ca.crt` makes an Opaque Secret: in a
/// cluster, as with files, it verifies an HTTPS backend, and a change to it is followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_in_an_opaque_secret_verifies_an_https_backend_and_is_followed() {
    let world = World::start().await;
    let cert = certs::cert(&["tls.internal"]);
    let stranger = certs::cert(&["tls.internal"]);
    let secure = TlsEcho::start("secure", &cert).await.unwrap();
    world.api.apply(
        &service("default", "secure")
            .port("https", 443, 8443)
            .build(),
    );
    world.api.apply(
        &endpoint_slice("default", "secure-0", "secure")
            .port("https", i32::from(secure.port()))
            .ready(&secure.addr().ip().to_string())
            .build(),
    );
    // Holding more than its CA, as such Secrets often do: only `ca.crt` is read.
    let mut ca = ca_secret("default", "upstream-ca", &cert.cert_pem);
    ca.data
        .get_or_insert_default()
        .insert("password".into(), ByteString(b"not for Vestibule".to_vec()));
    world.api.apply(&ca);
    world.ours(
        ingress("default", "verified")
            .annotation("nginx.ingress.kubernetes.io/backend-protocol", "HTTPS")
            .annotation("nginx.ingress.kubernetes.io/proxy-ssl-verify", "on")
            .annotation(
                "nginx.ingress.kubernetes.io/proxy-ssl-secret",
                "default/upstream-ca",
            )
            .annotation("nginx.ingress.kubernetes.io/proxy-ssl-name", "tls.internal")
            .host("secure.test")
            .prefix("/", svc("secure", 443)),
    );
    let v = world.vestibule("vestibule-0", &[]);
    let client = v.client(&["secure.test"]);
    let url = v.url("secure.test", "/");
    assert_eq!(answer(&client, &url).await, Ok("secure".into()));

    // The CA is replaced by one that did not sign the backend's certificate: refused.
    world
        .api
        .apply(&ca_secret("default", "upstream-ca", &stranger.cert_pem));
    until_answer(&client, &url, Err(502)).await;
    // And put back.
    world
        .api
        .apply(&ca_secret("default", "upstream-ca", &cert.cert_pem));
    until_answer(&client, &url, Ok("secure")).await;

    // Deleted: verification fails closed, against no CA at all.
    assert!(world.api.delete::<Secret>("default", "upstream-ca"));
    until_answer(&client, &url, Err(502)).await;
}

/// A single HTTP/1.1 keep-alive connection: a request fails if the proxy closed it.
struct KeepAlive(hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>);

impl KeepAlive {
    async fn open(addr: std::net::SocketAddr) -> KeepAlive {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let (send, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        KeepAlive(send)
    }

    async fn get(&mut self, host: &str, path: &str) -> String {
        use http_body_util::BodyExt;
        let request = hyper::Request::get(path)
            .header("host", host)
            .body(http_body_util::Empty::new())
            .unwrap();
        self.0.ready().await.expect("the connection stays open");
        let response = self
            .0
            .send_request(request)
            .await
            .expect("the connection stays open");
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<EchoReply>(&body).unwrap().name
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_keep_client_and_upstream_connections() {
    let world = World::start().await;
    let (a, b) = (
        Echo::start("a").await.unwrap(),
        Echo::start("b").await.unwrap(),
    );
    world.service("a", &[&a]);
    world.service("b", &[&b]);
    world.ours(
        ingress("default", "web")
            .host("web.test")
            .prefix("/", svc("a", 80)),
    );
    world.ours(
        ingress("default", "other")
            .host("other.test")
            .prefix("/", svc("b", 80)),
    );
    let v = world.vestibule("vestibule-0", &[]);
    let mut client = KeepAlive::open(v.http).await;
    for _ in 0..3 {
        assert_eq!(client.get("web.test", "/").await, "a");
    }
    assert_eq!(a.connections(), 1);

    // Service b scales out and in: twenty configurations, none of them about a.
    let extra: Vec<Echo> = {
        let mut extra = Vec::new();
        for i in 0..4 {
            extra.push(Echo::start(&format!("b{i}")).await.unwrap());
        }
        extra
    };
    for round in 0..10 {
        let generation = v.generation();
        let mut pods: Vec<&Echo> = vec![&b];
        pods.extend(extra.iter().take(round % 4 + 1));
        let (_, slices) = echo_service("default", "b", &pods);
        for slice in &slices {
            world.api.apply(slice);
        }
        v.wait_generation(generation);
        let generation = v.generation();
        for slice in &slices[1..] {
            let name = slice.metadata.name.as_deref().unwrap();
            world.api.delete::<EndpointSlice>("default", name);
        }
        v.wait_generation(generation);
        assert_eq!(client.get("web.test", "/").await, "a");
    }
    // The same client connection throughout, and the same upstream connection to a.
    assert_eq!(a.connections(), 1);
    assert_eq!(a.hits(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingresses_of_another_class_are_never_served_and_their_status_never_written() {
    let world = World::start().await;
    let a = Echo::start("a").await.unwrap();
    world.service("a", &[&a]);
    world
        .api
        .apply(&ingress_class("nginx", "k8s.io/ingress-nginx").build());
    world.ours(
        ingress("default", "ours")
            .host("ours.test")
            .prefix("/", svc("a", 80)),
    );
    // Invalid, too: still none of our business, so no Event either.
    world.api.apply(
        &ingress("default", "theirs")
            .class("nginx")
            .host("theirs.test")
            .prefix("/", svc("a", 80))
            .prefix("no-leading-slash", svc("a", 80))
            .build(),
    );
    // No class at all: not ours either, without --watch-ingress-without-class.
    world.api.apply(
        &ingress("default", "classless")
            .host("classless.test")
            .prefix("/", svc("a", 80))
            .build(),
    );
    let v = world.vestibule("vestibule-0", &["--publish-status-address", "192.0.2.10"]);
    let client = v.client(&["ours.test", "theirs.test", "classless.test"]);

    until("status of ours", SERVED_WITHIN, || async {
        (world.status_of("ours") == ["192.0.2.10"]).then_some(())
    })
    .await;
    assert_eq!(
        answer(&client, &v.url("ours.test", "/")).await,
        Ok("a".into())
    );
    assert_eq!(answer(&client, &v.url("theirs.test", "/")).await, Err(404));
    assert_eq!(
        answer(&client, &v.url("classless.test", "/")).await,
        Err(404)
    );
    assert!(world.status_of("theirs").is_empty());
    assert!(world.status_of("classless").is_empty());
    assert_eq!(world.status_writes("theirs"), 0);
    assert_eq!(world.status_writes("classless"), 0);
    assert_eq!(world.status_writes("ours"), 1);
    assert!(world.api.list::<Event>().is_empty());

    // Handed over to the other class: no longer served, and its status left as it is (the
    // other controller owns it now).
    let mut handed_over = world.api.get::<Ingress>("default", "ours").unwrap();
    handed_over.spec.as_mut().unwrap().ingress_class_name = Some("nginx".into());
    world.api.apply(&handed_over);
    until_answer(&client, &v.url("ours.test", "/"), Err(404)).await;
    // A later configuration proves the status writer has seen the hand-over.
    world.ours(
        ingress("default", "later")
            .host("later.test")
            .prefix("/", svc("a", 80)),
    );
    until("status of later", SERVED_WITHIN, || async {
        (world.status_of("later") == ["192.0.2.10"]).then_some(())
    })
    .await;
    assert_eq!(world.status_writes("ours"), 1);
    assert_eq!(world.status_of("ours"), ["192.0.2.10"]);
    assert_eq!(world.status_writes("theirs"), 0);
}

/// Sends `n` requests and returns which backends answered, in order.
async fn spread(client: &reqwest::Client, url: &str, n: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        names.push(answer(client, url).await.expect("a backend answers"));
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_endpoints_1_to_10_to_2_changes_the_spread() {
    let world = World::start().await;
    let mut echoes = Vec::new();
    for i in 0..10 {
        echoes.push(Echo::start(&format!("pod-{i}")).await.unwrap());
    }
    let slices: Vec<EndpointSlice> = {
        let all: Vec<&Echo> = echoes.iter().collect();
        let (service, slices) = echo_service("default", "pool", &all);
        world.api.apply(&service);
        slices
    };
    world.api.apply(&slices[0]);
    world.ours(
        ingress("default", "pool")
            .host("pool.test")
            .prefix("/", svc("pool", 80)),
    );
    let v = world.vestibule("vestibule-0", &[]);
    let client = v.client(&["pool.test"]);
    let url = v.url("pool.test", "/");

    let one = spread(&client, &url, 20).await;
    assert!(one.iter().all(|n| n == "pod-0"), "{one:?}");

    for slice in &slices[1..] {
        world.api.apply(slice);
    }
    // Round robin over ten endpoints: every one of them in each window of ten requests.
    until("traffic over all ten endpoints", SERVED_WITHIN, || async {
        let mut seen = spread(&client, &url, 10).await;
        seen.sort();
        seen.dedup();
        (seen.len() == 10).then_some(())
    })
    .await;
    let ten = spread(&client, &url, 100).await;
    for echo in &echoes {
        let hits = ten.iter().filter(|n| *n == echo.name()).count();
        assert_eq!(hits, 10, "{}: {ten:?}", echo.name());
    }

    for slice in &slices[2..] {
        let name = slice.metadata.name.as_deref().unwrap();
        assert!(world.api.delete::<EndpointSlice>("default", name));
    }
    until(
        "traffic over the two endpoints left",
        SERVED_WITHIN,
        || async {
            let seen = spread(&client, &url, 10).await;
            seen.iter()
                .all(|n| n == "pod-0" || n == "pod-1")
                .then_some(())
        },
    )
    .await;
    let two = spread(&client, &url, 100).await;
    assert_eq!(two.iter().filter(|n| *n == "pod-0").count(), 50, "{two:?}");
    assert_eq!(two.iter().filter(|n| *n == "pod-1").count(), 50, "{two:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_outages_keep_the_last_table_and_recover() {
    let world = World::start().await;
    let (a, b) = (
        Echo::start("a").await.unwrap(),
        Echo::start("b").await.unwrap(),
    );
    world.service("a", &[&a]);
    world.service("b", &[&b]);
    world.ours(
        ingress("default", "web")
            .host("web.test")
            .prefix("/", svc("a", 80)),
    );
    world.ours(
        ingress("default", "gone")
            .host("gone.test")
            .prefix("/", svc("a", 80)),
    );
    let v = world.vestibule("vestibule-0", &[]);
    let client = v.client(&["web.test", "gone.test", "late.test"]);
    let web = v.url("web.test", "/");

    // Connections dropped: the watches resume where they were.
    world.api.drop_connections();
    assert_eq!(answer(&client, &web).await, Ok("a".into()));
    world.ours(
        ingress("default", "web")
            .host("web.test")
            .prefix("/", svc("b", 80)),
    );
    until_answer(&client, &web, Ok("b")).await;

    // Unreachable: traffic goes on with the last table.
    world.api.stop().await.unwrap();
    for _ in 0..20 {
        assert_eq!(answer(&client, &web).await, Ok("b".into()));
    }
    // Back with a new history (as after an etcd restore): resuming the watches gets 410
    // Gone, so the controller relists; what changed meanwhile (a deletion among it, which
    // no watch event reports) is picked up.
    world.ours(
        ingress("default", "web")
            .host("web.test")
            .prefix("/", svc("a", 80)),
    );
    world.ours(
        ingress("default", "late")
            .host("late.test")
            .prefix("/", svc("b", 80)),
    );
    assert!(world.api.delete::<Ingress>("default", "gone"));
    world.api.compact();
    world.api.resume().await.unwrap();
    let recovery = Duration::from_secs(45);
    until("the new history served", recovery, || async {
        let web = answer(&client, &v.url("web.test", "/")).await;
        let late = answer(&client, &v.url("late.test", "/")).await;
        let gone = answer(&client, &v.url("gone.test", "/")).await;
        (web == Ok("a".into()) && late == Ok("b".into()) && gone == Err(404)).then_some(())
    })
    .await;
    assert!(
        v.logs().iter().any(|l| l["message"] == "relisting"),
        "{:#?}",
        v.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_lists() {
    let world = World::start().await;
    let a = Echo::start("a").await.unwrap();
    world.service("a", &[&a]);
    world.ours(
        ingress("default", "web")
            .host("web.test")
            .prefix("/", svc("a", 80)),
    );
    world.api.stop().await.unwrap();
    let mut v = Vestibule::spawn_unready(Vestibule::cluster_command(
        &world.kubeconfig,
        "vestibule-0",
        &[],
    ));
    // Alive but not ready while nothing can be listed.
    until("/healthz answering", SERVED_WITHIN, || async {
        (admin_status(v.admin, "/healthz") == Some(200)).then_some(())
    })
    .await;
    assert_eq!(admin_status(v.admin, "/readyz"), Some(503));
    world.api.resume().await.unwrap();
    v.wait_ready();
    let client = v.client(&["web.test"]);
    assert_eq!(
        answer(&client, &v.url("web.test", "/")).await,
        Ok("a".into())
    );
}

const FAST_ELECTION: [&str; 6] = [
    "--election-lease-duration",
    "4s",
    "--election-renew-deadline",
    "3s",
    "--election-retry-period",
    "250ms",
];

fn replica(world: &World, pod: &str, address: &str) -> Vestibule {
    let mut args = vec!["--publish-status-address", address];
    args.extend(FAST_ELECTION);
    world.vestibule(pod, &args)
}

fn lease_holder(world: &World) -> Option<String> {
    world
        .api
        .get::<Lease>("vestibule", "vestibule-leader")
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Starts two replicas with different status addresses; returns them with the leader
/// first, once the leader has written status.
async fn two_replicas(world: &World) -> (Vestibule, Vestibule, &'static str, &'static str) {
    // (leader, follower, leader's address, follower's address); the follower's pod name is
    // its address's last octet: vestibule-1 or vestibule-2.
    let a = Echo::start("a").await.unwrap();
    world.service("a", &[&a]);
    world.ours(
        ingress("default", "web")
            .host("web.test")
            .prefix("/", svc("a", 80)),
    );
    let first = replica(world, "vestibule-1", "192.0.2.1");
    let second = replica(world, "vestibule-2", "192.0.2.2");
    let written = until("status written by the leader", SERVED_WITHIN, || async {
        world.status_of("web").into_iter().next()
    })
    .await;
    let holder = lease_holder(world).unwrap();
    if written == "192.0.2.1" {
        assert_eq!(holder, "vestibule-1");
        (first, second, "192.0.2.1", "192.0.2.2")
    } else {
        assert_eq!(holder, "vestibule-2");
        (second, first, "192.0.2.2", "192.0.2.1")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_leader_writes_status_and_the_other_takes_over_on_stop() {
    let world = World::start().await;
    let (mut leader, follower, leader_address, follower_address) = two_replicas(&world).await;

    // Several renewals later, still one writer: the follower never wrote its address.
    let renewed = |l: Option<Lease>| l.and_then(|l| l.spec).and_then(|s| s.renew_time);
    let first_renewal = renewed(world.api.get::<Lease>("vestibule", "vestibule-leader"));
    until("three renewals", SERVED_WITHIN, || async {
        let now = renewed(world.api.get::<Lease>("vestibule", "vestibule-leader"));
        let elapsed = match (&first_renewal, &now) {
            (Some(a), Some(b)) => b.0.duration_since(a.0).as_secs_f64(),
            _ => 0.0,
        };
        (elapsed >= 0.75).then_some(())
    })
    .await;
    assert_eq!(world.status_of("web"), [leader_address]);
    assert_eq!(world.status_writes("web"), 1);

    // The leader stops: it hands the lease over, and the other takes over well within the
    // lease duration.
    leader.signal("TERM");
    let stopped = Instant::now();
    assert!(leader.wait_exit(Duration::from_secs(40)).success());
    until("the follower's status", Duration::from_secs(4), || async {
        (world.status_of("web") == [follower_address]).then_some(())
    })
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "{:?}",
        stopped.elapsed()
    );
    let follower_pod = format!(
        "vestibule-{}",
        &follower_address[follower_address.len() - 1..]
    );
    assert_eq!(lease_holder(&world), Some(follower_pod));
    drop(follower);
    assert_eq!(world.status_writes("web"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_once_its_lease_expires() {
    let world = World::start().await;
    let (leader, _follower, _, follower_address) = two_replicas(&world).await;
    leader.signal("KILL");
    let killed = Instant::now();
    until("the follower's status", Duration::from_secs(10), || async {
        (world.status_of("web") == [follower_address]).then_some(())
    })
    .await;
    // Lease duration 4 s, counted from the last renewal the follower saw (at most one retry
    // period before the kill), plus one retry period to notice.
    let took = killed.elapsed();
    assert!(took < Duration::from_millis(4800), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_ingress_gets_one_event_per_problem() {
    let world = World::start().await;
    let a = Echo::start("a").await.unwrap();
    world.service("a", &[&a]);
    world.ours(
        ingress("default", "broken")
            .host("broken.test")
            .prefix("no-leading-slash", svc("a", 80)),
    );
    world.ours(
        ingress("default", "fine")
            .host("fine.test")
            .prefix("/", svc("a", 80)),
    );
    let v = world.vestibule("vestibule-0", &[]);
    let events_about = |name: &str| -> Vec<Event> {
        world
            .api
            .list::<Event>()
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    };
    let events = until("an Event on the broken Ingress", SERVED_WITHIN, || async {
        let events = events_about("broken");
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.reason.as_deref(), Some("InvalidConfiguration"));
    let note = event.note.as_deref().unwrap_or_default();
    assert!(
        note.starts_with("spec.rules[0].http.paths[0].path"),
        "{note}"
    );
    let regarding = event.regarding.as_ref().unwrap();
    assert_eq!(regarding.kind.as_deref(), Some("Ingress"));
    assert_eq!(regarding.namespace.as_deref(), Some("default"));
    assert!(regarding.uid.is_some());
    assert!(events_about("fine").is_empty());

    // Another configuration with the same problem records nothing new.
    let generation = v.generation();
    world.ours(
        ingress("default", "more")
            .host("more.test")
            .prefix("/", svc("a", 80)),
    );
    v.wait_generation(generation);
    let client = v.client(&["more.test"]);
    until_answer(&client, &v.url("more.test", "/"), Ok("a")).await;
    let creates = world.requests(|r| r.resource == "events" && r.verb == "create");
    assert_eq!(creates.len(), 1, "{creates:#?}");
    assert_eq!(events_about("broken").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_service_addresses_are_followed_and_rbac_covers_every_call() {
    let world = World::start().await;
    let a = Echo::start("a").await.unwrap();
    world.service("a", &[&a]);
    let mut published = vestibule_testkit::fixtures::service("vestibule", "vestibule")
        .port("http", 80, 8080)
        .build();
    let balancer = |ip: &str| ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some(ip.to_owned()),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    };
    published.status = Some(balancer("203.0.113.7"));
    world.api.apply(&published);
    world.ours(
        ingress("default", "web")
            .host("web.test")
            .prefix("/", svc("a", 80)),
    );
    world.ours(
        ingress("default", "broken")
            .host("broken.test")
            .prefix("no-leading-slash", svc("a", 80)),
    );
    let v = world.vestibule(
        "vestibule-0",
        &[
            "--publish-service",
            "vestibule/vestibule",
            "--watch-namespace",
            "default",
            "--default-ssl-certificate",
            "certs/default-tls",
            "--default-backend-service",
            "vestibule/fallback",
        ],
    );
    until("the load balancer's address", SERVED_WITHIN, || async {
        (world.status_of("web") == ["203.0.113.7"]).then_some(())
    })
    .await;
    // The load balancer moves: status follows.
    published.status = Some(balancer("203.0.113.8"));
    world.api.apply(&published);
    until("the new address", SERVED_WITHIN, || async {
        (world.status_of("web") == ["203.0.113.8"]).then_some(())
    })
    .await;
    until("an Event", SERVED_WITHIN, || async {
        (!world.api.list::<Event>().is_empty()).then_some(())
    })
    .await;
    v.signal("TERM");

    // Every call the controller made is one the shipped RBAC allows to its ServiceAccount.
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let rbac = vestibule_testkit::rbac::Rbac::load(&deploy).unwrap();
    let calls = world.api.requests();
    for kind in [
        "ingresses",
        "services",
        "endpointslices",
        "secrets",
        "ingressclasses",
    ] {
        assert!(
            calls
                .iter()
                .any(|r| r.resource == kind && r.verb == "watch"),
            "no watch of {kind}"
        );
    }
    assert!(calls.iter().any(|r| r.resource == "leases"));
    assert!(
        calls
            .iter()
            .any(|r| r.subresource.as_deref() == Some("status"))
    );
    assert!(calls.iter().any(|r| r.resource == "events"));
    for call in &calls {
        assert!(
            rbac.allows(
                "vestibule",
                "vestibule",
                &call.verb,
                &call.group,
                &call.resource,
                call.subresource.as_deref(),
                call.namespace.as_deref(),
            ),
            "the RBAC in deploy/ does not allow {call:?}"
        );
    }
}
