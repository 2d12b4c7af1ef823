//! The HTTP/2 limits a client connection gets, seen from a real HTTP/2 client on a real
//! socket: the concurrent-stream cap the proxy advertises, and the rapid-reset protection
//! (CVE-2023-44487) that ends a connection opening and cancelling streams in a flood, while
//! other clients keep being served.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use h2::Reason;
use h2::client::{ResponseFuture, SendRequest};
use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vestibule_proxy::ProxySettings;
use vestibule_testkit::misbehave::Hang;
use vestibule_testkit::{Echo, EchoReply, endpoint_slice, ingress, service, svc};
use vestibule_translate::Object;

/// A Service `name` whose one endpoint is `addr` (a misbehaving backend).
fn service_at(name: &str, addr: SocketAddr) -> Vec<Object> {
    vec![
        service("default", name)
            .port("http", 80, 8080)
            .build()
            .into(),
        endpoint_slice("default", name, name)
            .port("http", i32::from(addr.port()))
            .ready(&addr.ip().to_string())
            .build()
            .into(),
    ]
}

/// A client's HTTP/2 (prior knowledge) connection to the proxy, driven by its own task.
struct H2 {
    client: SendRequest<Bytes>,
    ping: h2::PingPong,
    /// Ends when the connection does: with the GOAWAY or I/O error that ended it, if any.
    task: JoinHandle<Result<(), h2::Error>>,
}

impl H2 {
    /// Connects and returns once the proxy's SETTINGS have been applied: they precede its
    /// answer to our first PING.
    async fn connect(addr: SocketAddr) -> H2 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
        let ping = connection.ping_pong().expect("the first ping_pong handle");
        let task = tokio::spawn(connection);
        let mut h2 = H2 { client, ping, task };
        h2.round_trip().await;
        h2
    }

    /// A PING answered: the proxy has read every frame sent before it.
    async fn round_trip(&mut self) {
        self.ping.ping(h2::Ping::opaque()).await.unwrap();
    }

    /// Opens a stream for `request`, request complete (no body), after waiting until the
    /// client may queue one more.
    async fn open(&mut self, request: Request<()>) -> ResponseFuture {
        poll_fn(|cx| self.client.poll_ready(cx)).await.unwrap();
        let (response, _) = self.client.send_request(request, true).unwrap();
        response
    }

    /// A request's status and, from the echo backend's reply, the name of the backend.
    async fn fetch(&mut self, request: Request<()>) -> (u16, String) {
        let response = self.open(request).await.await.unwrap();
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        let name = serde_json::from_slice::<EchoReply>(&bytes)
            .map(|reply| reply.name)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        (status, name)
    }

    /// Whether the client could queue another stream right now.
    async fn could_open(&mut self) -> bool {
        poll_fn(|cx| Poll::Ready(self.client.poll_ready(cx).is_ready())).await
    }
}

/// What a GOAWAY frame said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GoAway {
    last_stream_id: u32,
    reason: Reason,
}

/// A relay for one connection, from a client to `upstream`, that reads the frames coming
/// back as they pass. A client flooding the connection may fail on its own write to the
/// closed socket before it reads the GOAWAY; the relay still sees it.
struct Tap {
    addr: SocketAddr,
    /// Ends when `upstream` closes the connection: with the first GOAWAY it sent, if any.
    goaway: JoinHandle<Option<GoAway>>,
}

impl Tap {
    async fn start(upstream: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let goaway = tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let server = TcpStream::connect(upstream).await.unwrap();
            client.set_nodelay(true).unwrap();
            server.set_nodelay(true).unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let forward = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            let mut seen = None;
            let mut pending: Vec<u8> = Vec::new();
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                // Passed on while the client listens; read to the end regardless.
                let _ = client_write.write_all(&buf[..n]).await;
                pending.extend_from_slice(&buf[..n]);
                // Frames: a 9-byte header (24-bit length, type, flags, stream), then payload.
                while pending.len() >= 9 {
                    let len = usize::from(pending[0]) << 16
                        | usize::from(pending[1]) << 8
                        | usize::from(pending[2]);
                    if pending.len() < 9 + len {
                        break;
                    }
                    let payload = &pending[9..9 + len];
                    if pending[3] == 0x7 && len >= 8 && seen.is_none() {
                        let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                        seen = Some(GoAway {
                            last_stream_id: word(&payload[..4]) & 0x7fff_ffff,
                            reason: Reason::from(word(&payload[4..8])),
                        });
                    }
                    pending.drain(..9 + len);
                }
            }
            forward.abort();
            seen
        });
        Tap { addr, goaway }
    }
}

/// A GET for `host` (as `:authority`) and `path`.
fn get(host: &str, path: &str) -> Request<()> {
    Request::get(format!("http://{host}{path}"))
        .body(())
        .unwrap()
}

/// Waits until `done()` holds, checking every 2 ms, for at most `timeout`.
async fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

#[tokio::test]
async fn the_concurrent_stream_limit_is_advertised_and_holds_back_the_next_stream() {
    let hang = Hang::start().await.unwrap();
    let mut objects = world(
        vec![
            ingress("default", "hang")
                .host("hang.example")
                .prefix("/", svc("hang", 80)),
        ],
        &[],
    );
    objects.extend(service_at("hang", hang.addr()));
    let settings = ProxySettings {
        http2_max_concurrent_streams: 8,
        ..ProxySettings::default()
    };
    let proxy = Proxy::start_with(objects, settings, Duration::from_secs(1)).await;
    let mut h2 = H2::connect(proxy.addr).await;
    assert_eq!(
        h2.client.current_max_send_streams(),
        8,
        "SETTINGS_MAX_CONCURRENT_STREAMS"
    );

    // Eight in flight, all at the backend, which never answers them.
    let mut first: Vec<ResponseFuture> = Vec::new();
    for i in 0..8 {
        first.push(h2.open(get("hang.example", &format!("/first/{i}"))).await);
    }
    assert!(
        eventually(Duration::from_secs(5), || hang.requests() >= 8).await,
        "only {} of the 8 requests reached the backend",
        hang.requests()
    );
    // A ninth is accepted by the client but held back: queued, not sent, so the client
    // cannot queue a tenth.
    let mut ninth = h2.open(get("hang.example", "/ninth")).await;
    assert!(!h2.could_open().await, "the ninth stream is not held back");
    // Whatever the client had sent before this PING, the proxy has read once it answers.
    h2.round_trip().await;
    assert!(futures_util::poll!(&mut ninth).is_pending());
    assert_eq!(
        hang.requests(),
        8,
        "the backend sees exactly the 8 open streams"
    );

    // Cancel the eight (RST_STREAM CANCEL as their handles drop): the ninth goes out, and
    // seven more fit beside it.
    drop(first);
    poll_fn(|cx| h2.client.poll_ready(cx)).await.unwrap();
    let mut second = vec![ninth];
    for i in 0..7 {
        second.push(h2.open(get("hang.example", &format!("/second/{i}"))).await);
    }
    assert!(
        eventually(Duration::from_secs(5), || hang.requests() >= 16).await,
        "after the cancellations only {} requests reached the backend, not 16",
        hang.requests()
    );
    // Eight in flight again: the next is held back once more.
    let _held = h2.open(get("hang.example", "/third")).await;
    assert!(!h2.could_open().await);
    h2.round_trip().await;
    assert_eq!(hang.requests(), 16);
    assert!(!h2.task.is_finished(), "the connection stays open");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_gets_goaway_while_other_clients_are_served() {
    let web = Echo::start("web").await.unwrap();
    let proxy = Proxy::start(world(
        vec![
            ingress("default", "web")
                .host("web.example")
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web])],
    ))
    .await;

    // A well-behaved client on its own connection: one request after another, from before
    // the flood until it is over.
    let mut good = H2::connect(proxy.addr).await;
    assert_eq!(
        good.fetch(get("web.example", "/before")).await,
        (200, "web".into())
    );
    let flooding = Arc::new(AtomicBool::new(true));
    let during = tokio::spawn({
        let flooding = flooding.clone();
        async move {
            let mut answers = Vec::new();
            loop {
                answers.push(good.fetch(get("web.example", "/during")).await);
                if !flooding.load(Ordering::SeqCst) {
                    return (good, answers);
                }
            }
        }
    });

    // The flood, through a tap that sees the frames the proxy sends back: open a stream and
    // reset it at once, as fast as the client goes, until the connection is gone.
    let tap = Tap::start(proxy.addr).await;
    let mut flood = H2::connect(tap.addr).await;
    const BUDGET: usize = 20_000;
    let mut opened = 0;
    while opened < BUDGET {
        if poll_fn(|cx| flood.client.poll_ready(cx)).await.is_err() {
            break;
        }
        let Ok((response, mut stream)) = flood.client.send_request(get("web.example", "/"), true)
        else {
            break;
        };
        stream.send_reset(Reason::CANCEL);
        drop(response);
        opened += 1;
    }
    assert!(
        opened < BUDGET,
        "the connection outlived {opened} reset streams"
    );
    // The proxy sent GOAWAY ENHANCE_YOUR_CALM and closed the connection. The client saw the
    // connection end: by that GOAWAY, or by the closed socket under its next write (then the
    // GOAWAY, still unread, is lost to it: the tap has it).
    let sent = tokio::time::timeout(Duration::from_secs(5), tap.goaway)
        .await
        .expect("the proxy closes the flooding connection")
        .unwrap()
        .expect("the proxy sends GOAWAY before closing");
    assert_eq!(sent.reason, Reason::ENHANCE_YOUR_CALM, "{sent:?}");
    // Streams are odd-numbered: at most a thousand were taken up before the GOAWAY.
    assert!(
        sent.last_stream_id < 2000,
        "{sent:?} after {opened} streams"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), &mut flood.task)
        .await
        .expect("the flooding client's connection ends")
        .unwrap();
    let error = ended.expect_err("the flooding connection ends with an error");
    assert!(
        (error.is_go_away()
            && error.is_remote()
            && error.reason() == Some(Reason::ENHANCE_YOUR_CALM))
            || error.is_io(),
        "{error:?}"
    );

    // The other connection was answered throughout, and still is.
    flooding.store(false, Ordering::SeqCst);
    let (mut good, answers) = during.await.unwrap();
    assert!(
        answers.iter().all(|a| *a == (200, "web".to_owned())),
        "{answers:?}"
    );
    for _ in 0..3 {
        assert_eq!(
            good.fetch(get("web.example", "/after")).await,
            (200, "web".into())
        );
    }
    assert!(
        !good.task.is_finished(),
        "the well-behaved connection stays open"
    );
    // And new connections are accepted.
    let response = proxy
        .h2c(&["web.example"])
        .get(proxy.url_for("web.example", "/new"))
        .send()
        .await
        .unwrap();
    assert_eq!(echo_of(response).await.name, "web");
}
