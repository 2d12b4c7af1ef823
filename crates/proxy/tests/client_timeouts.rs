//! Client-side timeouts: idle keep-alive connections are closed, busy ones are not, and a
//! client that never finishes its headers is cut off.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vestibule_proxy::ProxySettings;
use vestibule_testkit::misbehave::Slow;
use vestibule_testkit::{Echo, ingress, raw, svc};

/// Reads until the peer closes; returns everything read and when the close came.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Instant) {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (all, Instant::now()),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection was not closed within {limit:?}"),
        }
    }
}

/// A proxy with `settings` in front of an echo backend for `a.test`.
async fn echo_proxy(settings: ProxySettings) -> (Echo, Proxy) {
    let echo = Echo::start("a").await.unwrap();
    let objects = world(
        vec![
            ingress("default", "a")
                .host("a.test")
                .prefix("/", svc("a", 80)),
        ],
        &[("a", &[&echo])],
    );
    let proxy = Proxy::start_with(objects, settings, Duration::from_secs(5)).await;
    (echo, proxy)
}

/// Sends `GET /` for `a.test` on `stream` and expects the echo's 200, read whole.
async fn get_ok(stream: &mut TcpStream) {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let response = raw::read_response(stream, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{response:?}");
}

fn settings(keepalive: Duration, header: Duration) -> ProxySettings {
    ProxySettings {
        client_keepalive_timeout: keepalive,
        client_header_timeout: header,
        ..ProxySettings::default()
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (_echo, proxy) = echo_proxy(settings(
        Duration::from_millis(300),
        Duration::from_secs(30),
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let answered = Instant::now();
    let (bytes, closed) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let idle = closed - answered;
    assert!(
        idle >= Duration::from_millis(250) && idle < Duration::from_secs(3),
        "{idle:?}"
    );
}

#[tokio::test]
async fn a_request_in_flight_keeps_its_connection_past_the_idle_timeout() {
    let slow = Slow::start(Duration::from_millis(900)).await.unwrap();
    let mut objects = world(
        vec![
            ingress("default", "s")
                .host("s.test")
                .prefix("/", svc("slow", 80)),
        ],
        &[],
    );
    objects.push(
        vestibule_testkit::service("default", "slow")
            .port("http", 80, 8080)
            .build()
            .into(),
    );
    objects.push(
        vestibule_testkit::endpoint_slice("default", "slow-1", "slow")
            .port("http", i32::from(slow.addr().port()))
            .ready("127.0.0.1")
            .build()
            .into(),
    );
    let proxy = Proxy::start_with(
        objects,
        settings(Duration::from_millis(200), Duration::from_secs(30)),
        Duration::from_secs(5),
    )
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: s.test\r\n\r\n")
        .await
        .unwrap();
    let (bytes, _) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("slow"), "{text}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let proxy = Proxy::start_with(
        world(vec![], &[]),
        settings(Duration::from_secs(30), Duration::from_millis(300)),
        Duration::from_secs(5),
    )
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: ")
        .await
        .unwrap();
    let (bytes, closed) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    let took = closed - started;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let response = raw::parse(&bytes).unwrap();
    assert_eq!(response.status, 408, "{response:?}");
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.header("server"), Some("vestibule"));
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str())
    );
    assert_eq!(
        response.body_text(),
        "408 Request Timeout: the request headers did not arrive in time\n"
    );
}

#[tokio::test]
async fn a_trickled_head_is_timed_from_its_first_byte_after_a_keep_alive_request() {
    let (_echo, proxy) = echo_proxy(settings(
        Duration::from_secs(30),
        Duration::from_millis(400),
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    get_ok(&mut stream).await;
    let mut buf = [0u8; 4096];
    // Idle first, longer than the header timeout: that is the keep-alive's to judge.
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Then a byte every 50 ms, well within the timeout each, never finishing the head; the
    // pauses are spent reading, so the answer is taken as soon as it comes.
    let started = Instant::now();
    let mut answer = Vec::new();
    for byte in b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: 1234567890".iter() {
        stream.write_all(&[*byte]).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => {}
        }
    }
    let (rest, closed) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    let bytes = [answer, rest].concat();
    let took = closed - started;
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(raw::parse(&bytes).unwrap().status, 408);
}

#[tokio::test]
async fn the_header_timeout_does_not_cut_an_idle_keep_alive_connection() {
    let (_echo, proxy) = echo_proxy(settings(
        Duration::from_secs(30),
        Duration::from_millis(200),
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // Idle three times the header timeout between requests, on the same connection.
    for _ in 0..2 {
        get_ok(&mut stream).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    get_ok(&mut stream).await;
}

/// An HTTP/2 client that goes silent after its SETTINGS never acknowledges the GOAWAY and
/// PING of the idle close: the connection is closed anyway, a grace after the idle timeout.
#[tokio::test]
async fn a_silent_http2_client_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(500);
    let (_echo, proxy) = echo_proxy(settings(idle, Duration::from_secs(5))).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    hello.extend_from_slice(&[0, 0, 0, 4, 1, 0, 0, 0, 0]);
    stream.write_all(&hello).await.unwrap();
    // Never answering what the proxy sends (its SETTINGS, then GOAWAY and PING).
    let (_, closed) = read_to_close(&mut stream, Duration::from_secs(10)).await;
    assert!(closed - started >= idle, "closed only once idle");
}

/// A client that asks for a large response and reads none of it is cut off after the send
/// timeout, releasing the upstream connection behind it; one that reads, however slowly, is
/// not.
#[tokio::test]
async fn a_client_that_reads_nothing_is_cut_off_after_the_send_timeout() {
    let send_timeout = Duration::from_millis(500);
    let (_echo, proxy) = echo_proxy(ProxySettings {
        client_send_timeout: send_timeout,
        ..ProxySettings::default()
    })
    .await;
    let request = b"GET /?bytes=8000000 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(proxy.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    // Reading nothing for well past the send timeout: what a stalled client does.
    tokio::time::sleep(send_timeout * 4).await;
    let (received, _) = read_to_close(&mut stream, Duration::from_secs(10)).await;
    assert!(
        received.len() < 8_000_000,
        "cut off before the body was sent: {} bytes",
        received.len()
    );

    // A reader that keeps up is never cut, however long the body.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let (received, _) = read_to_close(&mut stream, Duration::from_secs(10)).await;
    assert!(received.len() > 8_000_000, "{} bytes", received.len());
}
