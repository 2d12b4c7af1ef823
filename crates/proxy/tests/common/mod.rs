//! A proxy on a real socket, serving a table compiled from fixture objects.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vestibule_proxy::{
    DataPlane, Listener, ProxySettings, Server, self_signed_certificate, server_config,
};
use vestibule_testkit::fixtures::{IngressBuilder, echo_service, ingress_class};
use vestibule_testkit::{Echo, EchoReply};
use vestibule_testkit::{endpoint_slice, service};
use vestibule_translate::{Object, Options, Snapshot, compile};

pub(crate) struct Proxy {
    pub addr: SocketAddr,
    /// The HTTPS listener, serving the same data plane with a generated fallback certificate.
    pub https: SocketAddr,
    pub dataplane: Arc<DataPlane>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<usize>,
}

impl Proxy {
    pub(crate) async fn start(objects: Vec<Object>) -> Proxy {
        Self::start_with(objects, ProxySettings::default(), Duration::from_secs(30)).await
    }

    pub(crate) async fn start_with(
        objects: Vec<Object>,
        settings: ProxySettings,
        drain: Duration,
    ) -> Proxy {
        let dataplane = DataPlane::new();
        dataplane.install(table(objects));
        let listener = Listener::bind_http("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr();
        let fallback = self_signed_certificate().unwrap();
        let config = server_config(dataplane.clone(), &fallback, &settings).unwrap();
        let tls_listener = Listener::bind_https("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        let https = tls_listener.local_addr();
        let shutdown = CancellationToken::new();
        let server = Server::new(dataplane.clone(), settings);
        tokio::spawn(tls_listener.serve(server.clone(), shutdown.clone(), drain));
        let task = tokio::spawn(listener.serve(server, shutdown.clone(), drain));
        Proxy {
            addr,
            https,
            dataplane,
            shutdown,
            task,
        }
    }

    pub(crate) fn install(&self, objects: Vec<Object>) {
        self.dataplane.install(table(objects));
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL naming `host`, for clients from [`Proxy::http1`] and [`Proxy::h2c`], which
    /// resolve every host to the proxy.
    pub(crate) fn url_for(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.addr.port())
    }

    fn builder(&self, hosts: &[&str]) -> reqwest::ClientBuilder {
        hosts
            .iter()
            .fold(reqwest::Client::builder(), |b, h| b.resolve(h, self.addr))
    }

    /// An HTTP/1.1 client that sends `hosts` to this proxy.
    pub(crate) fn http1(&self, hosts: &[&str]) -> reqwest::Client {
        self.builder(hosts).http1_only().build().unwrap()
    }

    /// An HTTP/2 (prior knowledge, cleartext) client that sends `hosts` to this proxy.
    pub(crate) fn h2c(&self, hosts: &[&str]) -> reqwest::Client {
        self.builder(hosts).http2_prior_knowledge().build().unwrap()
    }
}

pub(crate) fn table(objects: Vec<Object>) -> Arc<vestibule_model::RouteTable> {
    let compiled = compile(&Snapshot::from_objects(objects), &Options::default());
    Arc::new(compiled.table)
}

/// Our IngressClass, the Ingresses (given the class), and Services backed by echo servers.
pub(crate) fn world(ingresses: Vec<IngressBuilder>, services: &[(&str, &[&Echo])]) -> Vec<Object> {
    let mut objects: Vec<Object> = vec![
        ingress_class("vestibule", "vestibule.dev/ingress-controller")
            .build()
            .into(),
    ];
    for i in ingresses {
        objects.push(i.class("vestibule").build().into());
    }
    for (name, echoes) in services {
        let (service, slices) = echo_service("default", name, echoes);
        objects.push(service.into());
        objects.extend(slices.into_iter().map(Object::from));
    }
    objects
}

/// A Service `name` whose endpoints are arbitrary addresses (misbehaving backends), one
/// EndpointSlice per address since each has its own port.
pub(crate) fn service_at(name: &str, addrs: &[SocketAddr]) -> Vec<Object> {
    let mut objects: Vec<Object> = vec![
        service("default", name)
            .port("http", 80, 8080)
            .build()
            .into(),
    ];
    for (i, addr) in addrs.iter().enumerate() {
        objects.push(
            endpoint_slice("default", &format!("{name}-{i}"), name)
                .port("http", i32::from(addr.port()))
                .ready(&addr.ip().to_string())
                .build()
                .into(),
        );
    }
    objects
}

pub(crate) fn http1() -> reqwest::Client {
    reqwest::Client::builder().http1_only().build().unwrap()
}

pub(crate) fn h2c() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

pub(crate) async fn echo_of(response: reqwest::Response) -> EchoReply {
    assert_eq!(
        response.status(),
        200,
        "expected the echo backend to answer"
    );
    response.json().await.unwrap()
}
