//! Upstream protocols and connection semantics end to end over real sockets with real
//! clients: gRPC (h2c and TLS) with streaming, trailers and deadlines, gRPC errors Vestibule
//! makes itself, h2c and HTTPS upstreams with and without verification, WebSocket over
//! HTTP/1.1 and over HTTP/2 extended CONNECT, `Expect: 100-continue`, and message framing.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use vestibule_testkit::certs::cert;
use vestibule_testkit::fixtures::IngressBuilder;
use vestibule_testkit::grpc::tonic::{self, Code};
use vestibule_testkit::grpc::{EchoClient, EchoRequest, GrpcEcho, chat_channel};
use vestibule_testkit::misbehave::{Refused, TlsEcho};
use vestibule_testkit::websocket::{WsEcho, WsMessage, ws_connect};
use vestibule_testkit::{Echo, EchoReply, endpoint_slice, ingress, raw, service, svc};
use vestibule_translate::Object;

const BACKEND_PROTOCOL: &str = "nginx.ingress.kubernetes.io/backend-protocol";
const SSL_VERIFY: &str = "nginx.ingress.kubernetes.io/proxy-ssl-verify";
const SSL_SECRET: &str = "nginx.ingress.kubernetes.io/proxy-ssl-secret";
const SSL_NAME: &str = "nginx.ingress.kubernetes.io/proxy-ssl-name";
const BODY_SIZE: &str = "nginx.ingress.kubernetes.io/proxy-body-size";
const READ_TIMEOUT: &str = "nginx.ingress.kubernetes.io/proxy-read-timeout";

/// Long enough for anything on loopback; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(5);

/// A backend Service in `default`: port 80 named `http`, with `app_protocol` when given.
struct Backend<'a> {
    name: &'a str,
    /// Endpoint port on 127.0.0.1; `None` for a Service without endpoints.
    port: Option<u16>,
    app_protocol: Option<&'a str>,
}

fn backend(name: &str, port: u16) -> Backend<'_> {
    Backend {
        name,
        port: Some(port),
        app_protocol: None,
    }
}

fn backend_with<'a>(name: &'a str, port: u16, app_protocol: &'a str) -> Backend<'a> {
    Backend {
        name,
        port: Some(port),
        app_protocol: Some(app_protocol),
    }
}

/// Our IngressClass, the Ingresses, and the backend Services with their EndpointSlices.
fn site(ingresses: Vec<IngressBuilder>, backends: &[Backend<'_>]) -> Vec<Object> {
    let mut objects = world(ingresses, &[]);
    for b in backends {
        let mut svc = service("default", b.name).port("http", 80, 8080);
        if let Some(protocol) = b.app_protocol {
            svc = svc.app_protocol(protocol);
        }
        objects.push(svc.build().into());
        if let Some(port) = b.port {
            objects.push(
                endpoint_slice("default", &format!("{}-0", b.name), b.name)
                    .port("http", i32::from(port))
                    .ready("127.0.0.1")
                    .build()
                    .into(),
            );
        }
    }
    objects
}

/// An Opaque Secret with `ca.crt`, as `proxy-ssl-secret` names.
fn ca_secret(name: &str, ca_pem: &str) -> Object {
    vestibule_testkit::fixtures::ca_secret("default", name, ca_pem).into()
}

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
}

// ---------------------------------------------------------------------------------------
// gRPC
// ---------------------------------------------------------------------------------------

/// Interleaves sending and receiving on one `Chat` call: each reply is read before the next
/// message is sent, so the stream must flow both ways through the proxy while open.
async fn interleaved_chat(client: &mut EchoClient, backend: &str, count: usize) {
    let (tx, requests) = chat_channel();
    let mut replies = within("the Chat response headers", client.chat(requests))
        .await
        .unwrap();
    for i in 0..count {
        tx.send(EchoRequest::new(format!("message {i}")))
            .await
            .unwrap();
        let reply = within("a Chat reply", replies.message())
            .await
            .unwrap()
            .expect("a reply before the end of the stream");
        assert_eq!(reply.message, format!("message {i}"));
        assert_eq!(reply.backend, backend);
    }
    // Ending our half ends the call with the trailers' OK status.
    drop(tx);
    let end = within("the end of the Chat stream", replies.message()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
}

/// The backend's failure status reaches the client in the trailers: in a Trailers-Only
/// response for a unary call, and after messages on a stream.
async fn backend_failures_reach_the_client(client: &mut EchoClient, backend: &str) {
    let status = client
        .unary(EchoRequest {
            message: "missing".to_owned(),
            fail_with_code: 5,
            delay_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), format!("{backend} failed as asked"));

    let (tx, requests) = chat_channel();
    let mut replies = client.chat(requests).await.unwrap();
    tx.send(EchoRequest::new("first")).await.unwrap();
    let first = within("the first reply", replies.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.message, "first");
    tx.send(EchoRequest {
        message: "then fail".to_owned(),
        fail_with_code: 7,
        delay_ms: 0,
    })
    .await
    .unwrap();
    let status = within("the failing trailers", replies.message())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), format!("{backend} failed as asked"));
}

#[tokio::test]
async fn grpc_unary_streaming_and_trailers_by_app_protocol_and_by_annotation() {
    let by_app = GrpcEcho::start("by-app").await.unwrap();
    let by_annotation = GrpcEcho::start("by-annotation").await.unwrap();
    let proxy = Proxy::start(site(
        vec![
            ingress("default", "app")
                .host("app.grpc.example")
                .prefix("/", svc("by-app", 80)),
            ingress("default", "annotated")
                .annotation(BACKEND_PROTOCOL, "GRPC")
                .host("annotated.grpc.example")
                .prefix("/", svc("by-annotation", 80)),
        ],
        &[
            backend_with("by-app", by_app.port(), "grpc"),
            backend("by-annotation", by_annotation.port()),
        ],
    ))
    .await;
    for (host, backend) in [
        ("app.grpc.example", &by_app),
        ("annotated.grpc.example", &by_annotation),
    ] {
        let mut client = EchoClient::connect_via(proxy.addr, host).await.unwrap();
        let mut request = tonic::Request::new(EchoRequest::new("hello"));
        request
            .metadata_mut()
            .insert("x-trace", "abc".parse().unwrap());
        let reply = client.unary(request).await.unwrap();
        assert_eq!(reply.message, "hello", "{host}");
        assert_eq!(reply.backend, backend.name(), "{host}");
        let seen = backend.last_request().unwrap();
        assert_eq!(seen.authority.as_deref(), Some(host));
        assert_eq!(seen.path, "/vestibule.test.Echo/Unary");
        assert_eq!(seen.headers["x-trace"], "abc");
        assert_eq!(seen.headers["te"], "trailers");
        assert_eq!(seen.headers["content-type"], "application/grpc");

        interleaved_chat(&mut client, backend.name(), 8).await;
        backend_failures_reach_the_client(&mut client, backend.name()).await;
        // All of it over one upstream HTTP/2 connection.
        assert_eq!(backend.connections(), 1, "{host}");
    }
}

#[tokio::test]
async fn a_grpc_deadline_reaches_the_backend_and_ends_the_call() {
    let slow = GrpcEcho::start("slow").await.unwrap();
    let proxy = Proxy::start(site(
        vec![
            ingress("default", "g")
                .host("g.example")
                .prefix("/", svc("slow", 80)),
        ],
        &[backend_with("slow", slow.port(), "grpc")],
    ))
    .await;
    let mut client = EchoClient::connect_via(proxy.addr, "g.example")
        .await
        .unwrap();
    let mut request = tonic::Request::new(EchoRequest {
        message: "too slow".to_owned(),
        fail_with_code: 0,
        delay_ms: 10_000,
    });
    request.set_timeout(Duration::from_millis(200));
    let started = tokio::time::Instant::now();
    let status = within("the deadline", client.unary(request))
        .await
        .unwrap_err();
    // tonic's own timer and the backend's DEADLINE_EXCEEDED race; either ends the call.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let seen = slow.last_request().unwrap();
    let timeout = seen
        .headers
        .get("grpc-timeout")
        .expect("grpc-timeout forwarded");
    assert!(!timeout.is_empty());
}

#[tokio::test]
async fn grpc_requests_vestibule_fails_itself_get_grpc_status_codes() {
    let slow = GrpcEcho::start("slow").await.unwrap();
    let refused = Refused::new().unwrap();
    let refused = refused.addr();
    let proxy = Proxy::start(site(
        vec![
            ingress("default", "empty")
                .host("empty.example")
                .prefix("/", svc("empty", 80)),
            ingress("default", "refused")
                .host("refused.example")
                .prefix("/", svc("refused", 80)),
            ingress("default", "slow")
                .annotation(READ_TIMEOUT, "300ms")
                .host("slow.example")
                .prefix("/", svc("slow", 80)),
        ],
        &[
            Backend {
                name: "empty",
                port: None,
                app_protocol: Some("grpc"),
            },
            backend_with("refused", refused.port(), "grpc"),
            backend_with("slow", slow.port(), "grpc"),
        ],
    ))
    .await;
    for (host, code, message) in [
        (
            "empty.example",
            Code::Unavailable,
            "the backend has no ready endpoints",
        ),
        (
            "refused.example",
            Code::Unavailable,
            "the backend could not be reached",
        ),
        (
            "unknown.example",
            Code::Unimplemented,
            "no route for this host and path",
        ),
    ] {
        let mut client = EchoClient::connect_via(proxy.addr, host).await.unwrap();
        let status = client.unary(EchoRequest::new("x")).await.unwrap_err();
        assert_eq!(status.code(), code, "{host}: {status:?}");
        assert_eq!(status.message(), message, "{host}");
        // Streaming calls get the same answer.
        let status = client
            .chat(futures_util::stream::iter([EchoRequest::new("y")]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{host} (stream): {status:?}");
    }
    // Vestibule's own read timeout, with no deadline from the client.
    let mut client = EchoClient::connect_via(proxy.addr, "slow.example")
        .await
        .unwrap();
    let status = within(
        "the proxy's read timeout",
        client.unary(EchoRequest {
            message: "slow".to_owned(),
            fail_with_code: 0,
            delay_ms: 5_000,
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "the backend did not answer in time");
}

#[tokio::test]
async fn grpc_over_tls_to_the_backend_verified_or_not() {
    let cert = cert(&["grpc.internal"]);
    let other = vestibule_testkit::certs::cert(&["grpc.internal"]);
    let secure = GrpcEcho::start_tls("secure", &cert).await.unwrap();
    let mut objects = site(
        vec![
            ingress("default", "plain")
                .annotation(BACKEND_PROTOCOL, "GRPCS")
                .host("s.example")
                .prefix("/", svc("secure", 80)),
            ingress("default", "verified")
                .annotation(BACKEND_PROTOCOL, "grpcs")
                .annotation(SSL_VERIFY, "on")
                .annotation(SSL_SECRET, "default/grpc-ca")
                .annotation(SSL_NAME, "grpc.internal")
                .host("verified.example")
                .prefix("/", svc("secure", 80)),
            ingress("default", "wrong-ca")
                .annotation(BACKEND_PROTOCOL, "GRPCS")
                .annotation(SSL_VERIFY, "on")
                .annotation(SSL_SECRET, "default/other-ca")
                .annotation(SSL_NAME, "grpc.internal")
                .host("wrong.example")
                .prefix("/", svc("secure", 80)),
        ],
        &[backend("secure", secure.port())],
    );
    objects.push(ca_secret("grpc-ca", &cert.cert_pem));
    objects.push(ca_secret("other-ca", &other.cert_pem));
    let proxy = Proxy::start(objects).await;
    for host in ["s.example", "verified.example"] {
        let mut client = EchoClient::connect_via(proxy.addr, host).await.unwrap();
        let reply = client.unary(EchoRequest::new("over tls")).await.unwrap();
        assert_eq!(reply.message, "over tls");
        assert_eq!(reply.backend, "secure");
        interleaved_chat(&mut client, "secure", 3).await;
        backend_failures_reach_the_client(&mut client, "secure").await;
    }
    let mut client = EchoClient::connect_via(proxy.addr, "wrong.example")
        .await
        .unwrap();
    let status = client.unary(EchoRequest::new("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

// ---------------------------------------------------------------------------------------
// h2c and HTTPS upstreams
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_h2c_upstream_by_app_protocol_or_annotation_gets_http2() {
    let h2 = Echo::start("h2").await.unwrap();
    let h1 = Echo::start("h1").await.unwrap();
    let proxy = Proxy::start(site(
        vec![
            ingress("default", "h2")
                .host("h2.example")
                .prefix("/", svc("h2", 80)),
            ingress("default", "h2-annotated")
                .annotation(BACKEND_PROTOCOL, "H2C")
                .host("annotated.example")
                .prefix("/", svc("h1", 80)),
            ingress("default", "h1")
                .host("h1.example")
                .prefix("/", svc("h1", 80)),
        ],
        &[
            backend_with("h2", h2.port(), "kubernetes.io/h2c"),
            backend("h1", h1.port()),
        ],
    ))
    .await;
    let hosts = ["h2.example", "annotated.example", "h1.example"];
    for (client, label) in [(proxy.http1(&hosts), "http1"), (proxy.h2c(&hosts), "h2c")] {
        for (host, version, name) in [
            ("h2.example", "HTTP/2.0", "h2"),
            ("annotated.example", "HTTP/2.0", "h1"),
            ("h1.example", "HTTP/1.1", "h1"),
        ] {
            let response = client
                .post(proxy.url_for(host, "/v?q=1"))
                .body("twelve bytes")
                .send()
                .await
                .unwrap();
            let seen = echo_of(response).await;
            assert_eq!(seen.version, version, "{label} {host}");
            assert_eq!(seen.name, name, "{label} {host}");
            assert_eq!(seen.path, "/v");
            assert_eq!(seen.query.as_deref(), Some("q=1"));
            assert_eq!(seen.body_len, 12);
            // The host reaches an HTTP/2 upstream as :authority.
            let authority = format!("{host}:{}", proxy.addr.port());
            assert_eq!(seen.host.as_deref(), Some(authority.as_str()), "{label}");
            assert_eq!(seen.header("x-forwarded-host"), Some(authority.as_str()));
        }
    }
}

#[tokio::test]
async fn an_https_upstream_is_unverified_by_default_and_verified_when_asked() {
    let cert = cert(&["tls.internal"]);
    let stranger = vestibule_testkit::certs::cert(&["tls.internal"]);
    let secure = TlsEcho::start("secure", &cert).await.unwrap();
    let verified = |name: &str, host: &str, secret: &str, ssl_name: &str| {
        ingress("default", name)
            .annotation(BACKEND_PROTOCOL, "HTTPS")
            .annotation(SSL_VERIFY, "on")
            .annotation(SSL_SECRET, secret)
            .annotation(SSL_NAME, ssl_name)
            .host(host)
            .prefix("/", svc("secure", 80))
    };
    // The table, with the CA that `right-ca` holds.
    let objects = |right_ca: &str| {
        let mut objects = site(
            vec![
                ingress("default", "unverified")
                    .annotation(BACKEND_PROTOCOL, "HTTPS")
                    .host("unverified.example")
                    .prefix("/", svc("secure", 80)),
                ingress("default", "by-app-protocol")
                    .host("app.example")
                    .prefix("/", svc("secure-app", 80)),
                verified("right", "right.example", "default/right-ca", "tls.internal"),
                verified(
                    "wrong-ca",
                    "wrong-ca.example",
                    "default/wrong-ca",
                    "tls.internal",
                ),
                verified(
                    "wrong-name",
                    "wrong-name.example",
                    "default/right-ca",
                    "other.internal",
                ),
            ],
            &[
                backend("secure", secure.port()),
                backend_with("secure-app", secure.port(), "kubernetes.io/https"),
            ],
        );
        objects.push(ca_secret("right-ca", right_ca));
        objects.push(ca_secret("wrong-ca", &stranger.cert_pem));
        objects
    };
    let proxy = Proxy::start(objects(&cert.cert_pem)).await;
    let hosts = [
        "unverified.example",
        "app.example",
        "right.example",
        "wrong-ca.example",
        "wrong-name.example",
    ];
    let client = proxy.http1(&hosts);
    for host in ["unverified.example", "app.example", "right.example"] {
        let response = client
            .get(proxy.url_for(host, "/secure"))
            .send()
            .await
            .unwrap();
        let seen = echo_of(response).await;
        assert_eq!(seen.name, "secure", "{host}");
        assert_eq!(seen.version, "HTTP/1.1", "{host}");
        assert_eq!(seen.path, "/secure");
    }
    let answered = secure.hits();
    for host in ["wrong-ca.example", "wrong-name.example"] {
        let response = client
            .get(proxy.url_for(host, "/secure"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 502, "{host}");
        assert_eq!(response.headers()["server"], "vestibule");
    }
    assert_eq!(
        secure.hits(),
        answered,
        "nothing reached the unverified backend"
    );

    // TLS connections are pooled per setting: more requests, on the same table and on a new
    // one that keeps the settings, go over the connections already made.
    let made = secure.connections();
    let status = |host: &'static str| {
        let request = client.get(proxy.url_for(host, "/secure")).send();
        async move { request.await.unwrap().status().as_u16() }
    };
    for round in 0..2 {
        if round == 1 {
            proxy.install(objects(&cert.cert_pem));
        }
        for host in ["unverified.example", "app.example", "right.example"] {
            assert_eq!(status(host).await, 200, "{host}, round {round}");
        }
    }
    assert_eq!(secure.connections(), made);
    // A new CA: a connection verified against the old one is not taken for it.
    proxy.install(objects(&stranger.cert_pem));
    assert_eq!(status("right.example").await, 502);
    assert_eq!(status("unverified.example").await, 200);
}

/// A default backend is proxied as its Ingress's annotations say (as ingress-nginx does for
/// an Ingress with a backend and no rules): here, to a backend that speaks only TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_backend_is_proxied_as_its_ingress_annotations_say() {
    let secure = TlsEcho::start("secure", &cert(&["tls.internal"]))
        .await
        .unwrap();
    let proxy = Proxy::start(site(
        vec![
            ingress("default", "catch-all")
                .annotation(BACKEND_PROTOCOL, "HTTPS")
                .default_backend(svc("secure", 80)),
        ],
        &[backend("secure", secure.port())],
    ))
    .await;
    let client = proxy.http1(&["anything.example"]);
    let response = client
        .get(proxy.url_for("anything.example", "/any/path?q=1"))
        .send()
        .await
        .unwrap();
    let seen = echo_of(response).await;
    assert_eq!(seen.name, "secure");
    assert_eq!(seen.path, "/any/path");
    assert_eq!(seen.query.as_deref(), Some("q=1"));
}

// ---------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------

/// Sends `message` and expects it back unchanged.
async fn echoes<S>(ws: &mut WebSocketStream<S>, message: WsMessage)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within("sending on the WebSocket", ws.send(message.clone()))
        .await
        .unwrap();
    let back = within("the WebSocket echo", ws.next())
        .await
        .expect("the WebSocket stays open")
        .unwrap();
    assert_eq!(back, message);
}

fn ws_site(ws: &WsEcho, extra: usize) -> Vec<Object> {
    let mut ingresses = vec![
        ingress("default", "ws")
            .host("ws.example")
            .prefix("/", svc("ws", 80)),
    ];
    for i in 0..extra {
        ingresses.push(
            ingress("default", &format!("extra-{i}"))
                .host(&format!("extra-{i}.example"))
                .prefix("/", svc("ws", 80)),
        );
    }
    site(ingresses, &[backend("ws", ws.port())])
}

#[tokio::test]
async fn websocket_over_http11_survives_a_hundred_table_changes() {
    let ws_echo = WsEcho::start("ws").await.unwrap();
    let proxy = Proxy::start(ws_site(&ws_echo, 0)).await;
    let mut ws = within(
        "the WebSocket handshake",
        ws_connect(proxy.addr, "ws.example", "/chat/room?id=7"),
    )
    .await
    .unwrap();
    assert_eq!(
        ws_echo.last_request_path().as_deref(),
        Some("/chat/room?id=7")
    );
    let headers = ws_echo.last_request_headers().unwrap();
    assert_eq!(headers["host"], "ws.example");
    assert_eq!(headers["upgrade"], "websocket");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert!(!headers.contains_key("via"));

    echoes(&mut ws, WsMessage::text("hello through the proxy")).await;
    echoes(&mut ws, WsMessage::binary(vec![0u8, 1, 2, 254, 255])).await;
    echoes(&mut ws, WsMessage::binary(vec![7u8; 100_000])).await;

    for i in 1..=100 {
        proxy.install(ws_site(&ws_echo, i));
        if i % 10 == 0 {
            echoes(&mut ws, WsMessage::text(format!("after {i} installs"))).await;
        }
    }
    // The same tunnel all along, and new ones still open on the last table.
    assert_eq!(ws_echo.upgrades(), 1);
    assert_eq!(ws_echo.connections(), 1);
    let mut second = ws_connect(proxy.addr, "extra-99.example", "/")
        .await
        .unwrap();
    echoes(&mut second, WsMessage::text("second")).await;
    echoes(&mut ws, WsMessage::text("first, still")).await;
    within("closing", ws.close(None)).await.unwrap();
}

#[tokio::test]
async fn websocket_over_http2_extended_connect() {
    let ws_echo = WsEcho::start("ws").await.unwrap();
    let proxy = Proxy::start(ws_site(&ws_echo, 0)).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    // Driven here so that what the client made of the server's SETTINGS can be read. hyper
    // runs the HTTP/2 connection itself in a task of its own; this task sees the settings the
    // next time it sends a request.
    let (enabled_tx, enabled) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut connection = connection;
        std::future::poll_fn(|cx| {
            let polled = std::pin::Pin::new(&mut connection).poll(cx);
            enabled_tx.send_if_modified(|on| {
                let now = connection.is_extended_connect_protocol_enabled();
                std::mem::replace(on, now) != now
            });
            polled
        })
        .await
    });
    let first = Request::get("http://nowhere.example/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = within("a first response", sender.send_request(first))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // The server's SETTINGS precede its first response, so they are applied before the
    // CONNECT is sent (hyper's client sends it regardless; the server would refuse it).
    let mut connect = Request::builder()
        .method(Method::CONNECT)
        .uri("http://ws.example/live?feed=2")
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    connect
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = within("the CONNECT response", sender.send_request(connect))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        *enabled.borrow(),
        "the proxy advertised SETTINGS_ENABLE_CONNECT_PROTOCOL"
    );
    assert!(!response.headers().contains_key("sec-websocket-accept"));
    let upgraded = within("the upgrade", hyper::upgrade::on(response))
        .await
        .unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    echoes(&mut ws, WsMessage::text("over h2")).await;
    echoes(&mut ws, WsMessage::binary(vec![9u8, 8, 7])).await;
    echoes(&mut ws, WsMessage::binary(vec![3u8; 70_000])).await;

    // The backend got an HTTP/1.1 upgrade for the same host and path.
    assert_eq!(ws_echo.last_request_path().as_deref(), Some("/live?feed=2"));
    let headers = ws_echo.last_request_headers().unwrap();
    assert_eq!(headers["host"], "ws.example");
    assert_eq!(headers["upgrade"], "websocket");
    assert_eq!(headers["sec-websocket-version"], "13");
    assert!(headers.contains_key("sec-websocket-key"));

    // Other streams on the connection still work while the tunnel is open.
    let other = Request::get("http://nowhere.example/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(other).await.unwrap();
    assert_eq!(response.status(), 404);
    echoes(&mut ws, WsMessage::text("still open")).await;
    within("closing", ws.close(None)).await.unwrap();
}

/// A proxy whose client header timeout is short: 200 ms.
async fn impatient_proxy(objects: Vec<Object>) -> Proxy {
    let settings = vestibule_proxy::ProxySettings {
        client_header_timeout: Duration::from_millis(200),
        ..vestibule_proxy::ProxySettings::default()
    };
    Proxy::start_with(objects, settings, Duration::from_secs(5)).await
}

#[tokio::test]
async fn the_header_timeout_leaves_websockets_and_http2_alone() {
    let ws_echo = WsEcho::start("ws").await.unwrap();
    let echo = Echo::start("plain").await.unwrap();
    let proxy = impatient_proxy(site(
        vec![
            ingress("default", "ws")
                .host("ws.example")
                .prefix("/", svc("ws", 80)),
            ingress("default", "plain")
                .host("plain.example")
                .prefix("/", svc("plain", 80)),
        ],
        &[backend("ws", ws_echo.port()), backend("plain", echo.port())],
    ))
    .await;
    // A tunnel carries no request heads, however long it stays quiet.
    let mut ws = within(
        "the WebSocket handshake",
        ws_connect(proxy.addr, "ws.example", "/"),
    )
    .await
    .unwrap();
    for i in 0..3 {
        echoes(&mut ws, WsMessage::text(format!("message {i}"))).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Nor does HTTP/2 between its requests (prior knowledge, on the same connection).
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let driver = tokio::spawn(connection);
    for _ in 0..3 {
        let request = Request::get("http://plain.example/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = within("an HTTP/2 response", sender.send_request(request))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!driver.is_finished(), "the HTTP/2 connection was closed");
    within("closing", ws.close(None)).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Expect: 100-continue
// ---------------------------------------------------------------------------------------

/// Reads one response head (through the blank line); the bytes after it are left unread only
/// if they arrived in a later read, so callers read heads that come alone.
async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = within("a response head", stream.read(&mut buf))
            .await
            .unwrap();
        assert!(n > 0, "closed before a response head: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(seen[..end].to_vec()).unwrap();
            return (head, seen[end + 4..].to_vec());
        }
    }
}

#[tokio::test]
async fn expect_100_continue_is_answered_and_refused_over_the_limit() {
    let web = Echo::start("web").await.unwrap();
    let proxy = Proxy::start(site(
        vec![
            ingress("default", "web")
                .annotation(BODY_SIZE, "1k")
                .host("web.example")
                .prefix("/", svc("web", 80)),
        ],
        &[backend("web", web.port())],
    ))
    .await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: web.example\r\nContent-Length: 11\r\n\
              Expect: 100-continue\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, rest) = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 100 Continue"), "{head}");
    assert!(rest.is_empty(), "nothing after the 100 before the body");
    stream.write_all(b"hello world").await.unwrap();
    let mut response = Vec::new();
    within("the final response", stream.read_to_end(&mut response))
        .await
        .unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen: EchoReply = serde_json::from_str(body).unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body_len, 11);

    // Over the limit: refused from the headers alone, with no 100 Continue first.
    let hits = web.received();
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: web.example\r\nContent-Length: 4096\r\n\
              Expect: 100-continue\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, _) = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(web.received(), hits, "the backend saw nothing");
}

// ---------------------------------------------------------------------------------------
// Framing and hop-by-hop headers
// ---------------------------------------------------------------------------------------

/// A keep-alive HTTP/1.1 backend written byte by byte, for responses that a server library
/// would tidy: `/204`, `/304` (with the `Content-Length` the full representation would have)
/// and `/hop` (hop-by-hop headers of its own). It records the request heads it gets.
struct Framing {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Framing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Framing {
    async fn start() -> Framing {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(Self::serve(stream, seen.clone()));
            }
        });
        Framing { addr, heads, task }
    }

    async fn serve(mut stream: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let end = loop {
                if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end;
                }
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
            };
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..end + 4);
            let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
            heads.lock().unwrap().push(head);
            let response: &[u8] = match path.as_str() {
                "/204" => b"HTTP/1.1 204 No Content\r\nx-kind: no-content\r\n\r\n",
                "/304" => {
                    b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\
                      x-kind: not-modified\r\n\r\n"
                }
                _ => {
                    b"HTTP/1.1 200 OK\r\nConnection: x-bar\r\nx-bar: secret\r\n\
                      Keep-Alive: timeout=5, max=100\r\nProxy-Connection: keep-alive\r\n\
                      x-kept: yes\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
                }
            };
            if stream.write_all(response).await.is_err() {
                return;
            }
        }
    }
}

#[tokio::test]
async fn head_204_and_304_carry_no_body() {
    let web = Echo::start("web").await.unwrap();
    let framing = Framing::start().await;
    let proxy = Proxy::start(site(
        vec![
            ingress("default", "web")
                .host("web.example")
                .prefix("/", svc("web", 80)),
            ingress("default", "framing")
                .host("framing.example")
                .prefix("/", svc("framing", 80)),
        ],
        &[
            backend("web", web.port()),
            backend("framing", framing.addr.port()),
        ],
    ))
    .await;

    // HEAD on HTTP/1.1: the GET's headers, no body, and the connection stays usable.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let request = "HEAD /page HTTP/1.1\r\nHost: web.example\r\n\r\n\
                   GET /after HTTP/1.1\r\nHost: web.example\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    within("two responses", stream.read_to_end(&mut bytes))
        .await
        .unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    // What follows the HEAD response's head is the next response, not a body.
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    let (_, body) = rest.split_once("\r\n\r\n").unwrap();
    let seen: EchoReply = serde_json::from_str(body).unwrap();
    assert_eq!(seen.path, "/after");
    assert_eq!(web.hits(), 2);
    // HEAD on HTTP/2: the headers, and a stream that ends with them.
    let response = proxy
        .h2c(&["web.example"])
        .head(proxy.url_for("web.example", "/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(
        within("the HEAD body", response.bytes())
            .await
            .unwrap()
            .is_empty()
    );

    // 204 and 304 over HTTP/1.1 (raw, then reusing a keep-alive connection) and h2c.
    for (path, status, kind) in [("/204", 204, "no-content"), ("/304", 304, "not-modified")] {
        let response = within(
            "a bodiless response",
            raw::get(proxy.addr, "framing.example", path),
        )
        .await
        .unwrap();
        assert_eq!(response.status, status);
        assert_eq!(response.header("x-kind"), Some(kind));
        assert!(
            response.body.is_empty(),
            "{path}: {:?}",
            response.body_text()
        );
        assert_eq!(response.header("transfer-encoding"), None, "{path}");
    }
    let hosts = ["framing.example"];
    for (client, label) in [(proxy.http1(&hosts), "http1"), (proxy.h2c(&hosts), "h2c")] {
        for _ in 0..2 {
            for (path, status) in [("/204", 204), ("/304", 304), ("/hop", 200)] {
                let response = within(
                    "a response",
                    client.get(proxy.url_for("framing.example", path)).send(),
                )
                .await
                .unwrap();
                assert_eq!(response.status(), status, "{label} {path}");
                let body = within("the body", response.bytes()).await.unwrap();
                let want: &[u8] = if status == 200 { b"ok" } else { b"" };
                assert_eq!(&body[..], want, "{label} {path}");
            }
        }
    }
    let requests_304 = framing
        .heads
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.starts_with("GET /304"))
        .count();
    assert_eq!(requests_304, 5);
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways_and_no_via_is_added() {
    let web = Echo::start("web").await.unwrap();
    let framing = Framing::start().await;
    let proxy = Proxy::start(site(
        vec![
            ingress("default", "web")
                .host("web.example")
                .prefix("/", svc("web", 80)),
            ingress("default", "framing")
                .host("framing.example")
                .prefix("/", svc("framing", 80)),
        ],
        &[
            backend("web", web.port()),
            backend("framing", framing.addr.port()),
        ],
    ))
    .await;

    // Client to upstream, on HTTP/1.1.
    let request = "GET /in HTTP/1.1\r\nHost: web.example\r\nConnection: close, x-foo\r\n\
                   x-foo: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
                   x-kept: yes\r\n\r\n";
    let response = raw::send(proxy.addr, request, PATIENCE).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert_eq!(response.header("via"), None);
    let seen: EchoReply = serde_json::from_slice(&response.body).unwrap();
    for name in ["x-foo", "keep-alive", "proxy-connection", "via"] {
        assert_eq!(seen.header(name), None, "{name} reached the upstream");
    }
    if let Some(connection) = seen.header("connection") {
        assert!(!connection.contains("x-foo"), "{connection}");
    }
    assert_eq!(seen.header("x-kept"), Some("yes"));

    // Upstream to client, on HTTP/1.1 and h2c.
    let response = raw::get(proxy.addr, "framing.example", "/hop")
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body_text(), "ok");
    for name in ["x-bar", "keep-alive", "proxy-connection", "via"] {
        assert_eq!(response.header(name), None, "{name} reached the client");
    }
    if let Some(connection) = response.header("connection") {
        assert!(!connection.contains("x-bar"), "{connection}");
    }
    assert_eq!(response.header("x-kept"), Some("yes"));
    let hosts = ["framing.example", "web.example"];
    let h2c = proxy.h2c(&hosts);
    let response = h2c
        .get(proxy.url_for("framing.example", "/hop"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for name in [
        "x-bar",
        "keep-alive",
        "proxy-connection",
        "connection",
        "via",
    ] {
        assert!(!response.headers().contains_key(name), "{name} over h2c");
    }
    assert_eq!(response.headers()["x-kept"], "yes");
    // And a request over h2c gets no Via upstream either.
    let seen = echo_of(
        h2c.get(proxy.url_for("web.example", "/in"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen.header("via"), None);
    let heads = framing.heads.lock().unwrap();
    assert!(
        heads
            .iter()
            .all(|h| !h.to_ascii_lowercase().contains("\r\nvia:")),
        "{heads:?}"
    );
}
