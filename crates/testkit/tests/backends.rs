//! The echo, gRPC, WebSocket and misbehaving backends, each checked directly (no proxy) with the
//! clients the testkit provides.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use vestibule_testkit::grpc::{EchoClient, EchoRequest, GrpcEcho, chat_channel};
use vestibule_testkit::misbehave::{Flaky, Hang, Refused, ResetMidResponse, Slow, TlsEcho};
use vestibule_testkit::websocket::{WsEcho, WsMessage, ws_connect};
use vestibule_testkit::{EchoReply, certs, tls};

/// One HTTP/1.1 `GET` on a new connection: the status, then the body or the error reading it.
async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<(u16, Result<Bytes, hyper::Error>), hyper::Error> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map(|b| b.to_bytes());
    Ok((status, body))
}

#[tokio::test]
async fn grpc_unary_echoes_fails_as_asked_and_sees_the_authority() {
    let backend = GrpcEcho::start("grpc-a").await.unwrap();
    let mut client = EchoClient::connect_via(backend.addr(), "echo.test")
        .await
        .unwrap();

    let reply = client.unary(EchoRequest::new("hello")).await.unwrap();
    assert_eq!(reply.message, "hello");
    assert_eq!(reply.backend, "grpc-a");
    let seen = backend.last_request().unwrap();
    assert_eq!(seen.authority.as_deref(), Some("echo.test"));
    assert_eq!(seen.path, "/vestibule.test.Echo/Unary");
    assert_eq!(
        seen.headers.get("content-type").unwrap(),
        "application/grpc"
    );

    let status = client
        .unary(EchoRequest {
            fail_with_code: Code::NotFound as i32,
            ..EchoRequest::new("missing")
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("grpc-a"), "{status:?}");
    assert_eq!(backend.calls(), 2);
    assert_eq!(backend.connections(), 1);

    // By URI, too.
    let mut direct = EchoClient::connect(&format!("http://127.0.0.1:{}", backend.port()))
        .await
        .unwrap();
    assert_eq!(
        direct.unary(EchoRequest::new("x")).await.unwrap().message,
        "x"
    );
}

#[tokio::test]
async fn grpc_deadline_sends_grpc_timeout_and_the_backend_gives_up() {
    let backend = GrpcEcho::start("grpc-slow").await.unwrap();
    let mut client = EchoClient::connect_via(backend.addr(), "echo.test")
        .await
        .unwrap();
    let mut request = tonic::Request::new(EchoRequest {
        delay_ms: 5_000,
        ..EchoRequest::new("late")
    });
    request.set_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let status = client.unary(request).await.unwrap_err();
    // Whichever gives up first: tonic's own timer (`Cancelled`) or the backend.
    assert!(
        matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let seen = backend.last_request().unwrap();
    assert_eq!(seen.headers.get("grpc-timeout").unwrap(), "100000u");

    // A delay within the deadline is waited out.
    let mut request = tonic::Request::new(EchoRequest {
        delay_ms: 50,
        ..EchoRequest::new("on time")
    });
    request.set_timeout(Duration::from_secs(5));
    let started = Instant::now();
    assert_eq!(client.unary(request).await.unwrap().message, "on time");
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[tokio::test]
async fn grpc_chat_answers_each_message_as_it_arrives() {
    let backend = GrpcEcho::start("grpc-chat").await.unwrap();
    let mut client = EchoClient::connect_via(backend.addr(), "chat.test")
        .await
        .unwrap();
    let (tx, requests) = chat_channel();
    let mut replies = client.chat(requests).await.unwrap();
    for word in ["one", "two", "three"] {
        tx.send(EchoRequest::new(word)).await.unwrap();
        let reply = replies.message().await.unwrap().unwrap();
        assert_eq!(reply.message, word);
        assert_eq!(reply.backend, "grpc-chat");
    }
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());

    // A failing message ends the stream with its status.
    let (tx, requests) = chat_channel();
    let mut replies = client.chat(requests).await.unwrap();
    tx.send(EchoRequest::new("fine")).await.unwrap();
    assert_eq!(replies.message().await.unwrap().unwrap().message, "fine");
    tx.send(EchoRequest {
        fail_with_code: Code::ResourceExhausted as i32,
        ..EchoRequest::new("too much")
    })
    .await
    .unwrap();
    let status = replies.message().await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(backend.calls(), 2);
}

#[tokio::test]
async fn grpc_over_tls_with_alpn_h2() {
    let cert = certs::cert(&["grpc.test"]);
    let backend = GrpcEcho::start_tls("grpc-tls", &cert).await.unwrap();
    let mut client = EchoClient::connect_tls_via(backend.addr(), "grpc.test", "grpc.test")
        .await
        .unwrap();
    let reply = client.unary(EchoRequest::new("secure")).await.unwrap();
    assert_eq!(reply.backend, "grpc-tls");
    let seen = backend.last_request().unwrap();
    assert_eq!(seen.authority.as_deref(), Some("grpc.test"));

    let connected = tls::connect(
        backend.addr(),
        Some("grpc.test"),
        &tls::client_config(&["h2"]),
    )
    .await
    .unwrap();
    assert_eq!(connected.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(connected.certificate, cert.der);
}

#[tokio::test]
async fn websocket_echoes_text_binary_and_pings() {
    let backend = WsEcho::start("ws").await.unwrap();
    let mut ws = ws_connect(backend.addr(), "chat.test", "/socket?room=1")
        .await
        .unwrap();
    ws.send(WsMessage::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), WsMessage::text("hello"));
    ws.send(WsMessage::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        WsMessage::binary(vec![0u8, 1, 2, 255])
    );
    ws.send(WsMessage::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        WsMessage::Pong(Bytes::from_static(b"p"))
    );
    ws.close(None).await.unwrap();

    assert_eq!(backend.upgrades(), 1);
    assert_eq!(backend.connections(), 1);
    let headers = backend.last_request_headers().unwrap();
    assert_eq!(headers.get("host").unwrap(), "chat.test");
    assert_eq!(
        headers
            .get("upgrade")
            .unwrap()
            .to_str()
            .unwrap()
            .to_lowercase(),
        "websocket"
    );
    assert_eq!(
        backend.last_request_path().as_deref(),
        Some("/socket?room=1")
    );
}

#[tokio::test]
async fn hang_reads_but_never_answers() {
    let backend = Hang::start().await.unwrap();
    let mut stream = TcpStream::connect(backend.addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\nGET /b HTTP/1.1\r\nhost: a\r")
        .await
        .unwrap();
    stream.write_all(b"\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await;
    assert!(read.is_err(), "no answer, no close: {read:?}");
    assert_eq!(backend.connections(), 1);
    assert_eq!(backend.requests(), 2);
}

#[tokio::test]
async fn reset_mid_response_sends_headers_then_fails_the_body() {
    let backend = ResetMidResponse::start().await.unwrap();
    let (status, body) = get(backend.addr(), "reset.test", "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.is_err(), "{body:?}");
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn refused_refuses() {
    let refused = Refused::new().unwrap();
    let error = TcpStream::connect(refused.addr()).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn slow_answers_after_its_delay() {
    let backend = Slow::start(Duration::from_millis(200)).await.unwrap();
    let started = Instant::now();
    let (status, body) = get(backend.addr(), "slow.test", "/").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), Bytes::from_static(b"slow"));
    assert_eq!(backend.requests(), 1);
    assert_eq!(backend.answered(), 1);
}

#[tokio::test]
async fn flaky_drops_its_first_connections_then_echoes() {
    let backend = Flaky::start(2).await.unwrap();
    assert!(get(backend.addr(), "flaky.test", "/").await.is_err());
    assert!(get(backend.addr(), "flaky.test", "/").await.is_err());
    let (status, body) = get(backend.addr(), "flaky.test", "/then").await.unwrap();
    assert_eq!(status, 200);
    let reply: EchoReply = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(reply.path, "/then");
    assert_eq!(reply.host.as_deref(), Some("flaky.test"));
    assert_eq!(backend.failed(), 2);
    assert_eq!(backend.connections(), 3);
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn tls_echo_answers_http1_over_tls() {
    let cert = certs::cert(&["tls.test"]);
    let backend = TlsEcho::start("tls-echo", &cert).await.unwrap();
    let config = tls::client_config(&["h2", "http/1.1"]);
    let mut session = tls::Session::open(backend.addr(), Some("tls.test"), &config)
        .await
        .unwrap();
    assert_eq!(session.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(session.certificate, cert.der);
    let reply = session.get("tls.test", "/secure").await.unwrap();
    assert_eq!(reply.status, 200);
    let echo: EchoReply = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(echo.name, "tls-echo");
    assert_eq!(echo.path, "/secure");
    assert_eq!(echo.host.as_deref(), Some("tls.test"));
    assert_eq!(echo.version, "HTTP/1.1");
    assert_eq!(backend.hits(), 1);
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn the_echo_answers_a_body_of_the_size_asked() {
    let echo = vestibule_testkit::Echo::start("sized").await.unwrap();
    let (status, body) = get(echo.addr(), "sized.test", "/page?bytes=4096")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let body = body.unwrap();
    assert_eq!(body.len(), 4096);
    assert!(body.iter().all(|&b| b == b'x'));
    // Without it, the description as ever.
    let (_, body) = get(echo.addr(), "sized.test", "/page").await.unwrap();
    let reply: EchoReply = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(reply.path, "/page");
}
