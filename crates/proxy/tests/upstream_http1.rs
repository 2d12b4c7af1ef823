//! HTTP/1.1 responses as upstreams really send them, read by the request's own task: every
//! framing (length, chunks with extensions and trailers, until close, none), interim
//! responses, broken and hostile responses, and keep-alive connections that the upstream
//! closes or that sit idle. The backend writes scripted bytes over a real socket.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vestibule_proxy::{ProxySettings, UpstreamSettings};
use vestibule_testkit::misbehave::{Scripted, Step};
use vestibule_testkit::{ingress, ingress_class, svc};
use vestibule_translate::Object;

/// `up.example` routed to the scripted backend.
fn objects(backend: &Scripted) -> Vec<Object> {
    let mut objects: Vec<Object> = vec![
        ingress_class("vestibule", "vestibule.dev/ingress-controller")
            .build()
            .into(),
        ingress("default", "up")
            .class("vestibule")
            .host("up.example")
            .prefix("/", svc("up", 80))
            .build()
            .into(),
    ];
    objects.extend(service_at("up", &[backend.addr()]));
    objects
}

async fn start(scripts: Vec<Vec<Step>>) -> (Scripted, Proxy) {
    start_with(scripts, ProxySettings::default()).await
}

async fn start_with(scripts: Vec<Vec<Step>>, settings: ProxySettings) -> (Scripted, Proxy) {
    let backend = Scripted::start(scripts).await.unwrap();
    let proxy = Proxy::start_with(objects(&backend), settings, Duration::from_secs(30)).await;
    (backend, proxy)
}

/// Status and body text of one request through `client`.
async fn fetch(
    client: &reqwest::Client,
    proxy: &Proxy,
    method: reqwest::Method,
) -> (u16, reqwest::Result<String>) {
    let response = client
        .request(method, proxy.url_for("up.example", "/"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await)
}

/// `GET http://up.example/` over a new HTTP/2 connection (which carries trailers, unlike
/// the HTTP/1.1 client): the response head, body and trailers.
async fn h2_get(proxy: &Proxy) -> (http::response::Parts, Bytes, Option<http::HeaderMap>) {
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("http://up.example/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (head, body) = sender.send_request(request).await.unwrap().into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (head, collected.to_bytes(), trailers)
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

fn answer(bytes: &[u8]) -> Step {
    Step::Answer(bytes.to_vec())
}

fn ok() -> Step {
    answer(OK)
}

#[tokio::test]
async fn chunked_bodies_arrive_whole_with_extensions_dropped_and_trailers_kept() {
    let chunked: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\ngrpc-status: 0\r\nx-sum: 11\r\n\r\n";
    let (backend, proxy) = start(vec![vec![answer(chunked), answer(chunked)]]).await;
    let (status, body) = fetch(&proxy.http1(&["up.example"]), &proxy, reqwest::Method::GET).await;
    assert_eq!((status, body.unwrap().as_str()), (200, "hello world"));

    // HTTP/2 carries the trailers on to the client.
    let (head, body, trailers) = h2_get(&proxy).await;
    assert_eq!(head.status, 200);
    let trailers = trailers.expect("trailers");
    assert_eq!(body, "hello world");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-sum"], "11");
    assert_eq!(backend.connections(), 1, "one connection carried both");
}

#[tokio::test]
async fn a_body_delimited_by_close_arrives_whole_and_the_connection_is_not_reused() {
    let unframed: &[u8] = b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it";
    let (backend, proxy) = start(vec![
        vec![Step::AnswerAndClose(unframed.to_vec())],
        vec![ok()],
    ])
    .await;
    let client = proxy.http1(&["up.example"]);
    let (status, body) = fetch(&client, &proxy, reqwest::Method::GET).await;
    assert_eq!((status, body.unwrap().as_str()), (200, "all of it"));
    let (status, body) = fetch(&client, &proxy, reqwest::Method::GET).await;
    assert_eq!((status, body.unwrap().as_str()), (200, "ok"));
    assert_eq!(backend.connections(), 2);
}

#[tokio::test]
async fn a_connection_option_naming_content_length_leaves_the_length_in_place() {
    // A Connection option strips the field it names, but never the length the body was read
    // by: the client gets the body as the backend framed it, not re-framed in chunks.
    let listed: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close, content-length, x-hop\r\n\
        x-hop: 1\r\n\r\nabc";
    let (_backend, proxy) = start(vec![vec![answer(listed)]]).await;
    let response = proxy
        .http1(&["up.example"])
        .get(proxy.url_for("up.example", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "3");
    assert!(response.headers().get("transfer-encoding").is_none());
    assert!(
        response.headers().get("x-hop").is_none(),
        "the other option is removed"
    );
    assert_eq!(response.text().await.unwrap(), "abc");
}

#[tokio::test]
async fn interim_responses_are_passed_over_for_the_final_one() {
    let hinted: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
        HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
        HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone";
    let (_backend, proxy) = start(vec![vec![answer(hinted)]]).await;
    let (status, body) = fetch(&proxy.http1(&["up.example"]), &proxy, reqwest::Method::GET).await;
    assert_eq!((status, body.unwrap().as_str()), (201, "done"));
}

#[tokio::test]
async fn responses_without_a_body_leave_the_connection_for_the_next_request() {
    let head: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n";
    let no_content: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
    let not_modified: &[u8] = b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n";
    let (backend, proxy) = start(vec![vec![
        answer(head),
        answer(no_content),
        answer(not_modified),
        ok(),
    ]])
    .await;
    let client = proxy.http1(&["up.example"]);
    let response = client
        .head(proxy.url_for("up.example", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "1000");
    for expected in [204, 304] {
        let (status, body) = fetch(&client, &proxy, reqwest::Method::GET).await;
        assert_eq!((status, body.unwrap().as_str()), (expected, ""));
    }
    let (status, body) = fetch(&client, &proxy, reqwest::Method::GET).await;
    assert_eq!((status, body.unwrap().as_str()), (200, "ok"));
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn the_request_head_names_the_host_and_gives_bodiless_posts_a_length() {
    let (backend, proxy) = start(vec![vec![ok(), ok()]]).await;
    let client = proxy.http1(&["up.example"]);
    assert_eq!(fetch(&client, &proxy, reqwest::Method::GET).await.0, 200);
    assert_eq!(fetch(&client, &proxy, reqwest::Method::POST).await.0, 200);
    let heads = backend.heads();
    let lines = |i: usize| heads[i].lines().map(str::to_owned).collect::<Vec<_>>();
    let get = lines(0);
    assert_eq!(get[0], "GET / HTTP/1.1");
    assert_eq!(get[1], format!("host: up.example:{}", proxy.addr.port()));
    assert!(
        get.iter()
            .any(|l| l.starts_with("x-forwarded-for: 127.0.0.1"))
    );
    assert!(!get.iter().any(|l| l.starts_with("content-length")));
    let post = lines(1);
    assert_eq!(post[0], "POST / HTTP/1.1");
    assert!(post.iter().any(|l| l == "content-length: 0"));
}

#[tokio::test]
async fn broken_responses_get_502_and_never_reach_the_client() {
    let big = {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        while head.len() < 70 * 1024 {
            head.extend_from_slice(b"x-filler: 0123456789012345678901234567890123456789\r\n");
        }
        head.extend_from_slice(b"content-length: 2\r\n\r\nok");
        head
    };
    let broken: [&[u8]; 6] = [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\nok",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-len",
        &big,
    ];
    for reply in broken {
        let (_backend, proxy) = start(vec![vec![Step::AnswerAndClose(reply.to_vec())]]).await;
        let (status, _) = fetch(&proxy.http1(&["up.example"]), &proxy, reqwest::Method::GET).await;
        let shown = String::from_utf8_lossy(&reply[..reply.len().min(40)]).into_owned();
        assert_eq!(status, 502, "for {shown:?}");
    }
}

#[tokio::test]
async fn a_body_cut_short_fails_for_the_client_instead_of_looking_complete() {
    let short: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf";
    let chunk_short: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel";
    let bad_chunk: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n";
    for reply in [short, chunk_short, bad_chunk] {
        let (_backend, proxy) = start(vec![vec![Step::AnswerAndClose(reply.to_vec())]]).await;
        // The head may or may not have reached the client before the failure; either way
        // the client must not see a complete response.
        let sent = proxy
            .http1(&["up.example"])
            .get(proxy.url_for("up.example", "/"))
            .send()
            .await;
        if let Ok(response) = sent {
            assert_eq!(response.status(), 200);
            let body = response.bytes().await;
            assert!(body.is_err(), "{:?}", String::from_utf8_lossy(reply));
        }
    }
}

#[tokio::test]
async fn bytes_after_a_response_keep_its_connection_out_of_the_pool() {
    let extra: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
    let (backend, proxy) = start(vec![vec![answer(extra)], vec![ok()]]).await;
    let client = proxy.http1(&["up.example"]);
    for _ in 0..2 {
        let (status, body) = fetch(&client, &proxy, reqwest::Method::GET).await;
        assert_eq!((status, body.unwrap().as_str()), (200, "ok"));
    }
    assert_eq!(backend.connections(), 2);
}

/// A keep-alive connection the upstream closes as the next request arrives: a GET goes again
/// on a new connection, a POST (even without a body) is not repeated and gets 502.
#[tokio::test]
async fn a_pooled_connection_closed_under_a_request_is_retried_only_when_repeatable() {
    let (backend, proxy) = start(vec![
        vec![ok(), Step::Close],
        vec![ok(), Step::Close],
        vec![ok()],
    ])
    .await;
    let client = proxy.http1(&["up.example"]);
    assert_eq!(fetch(&client, &proxy, reqwest::Method::GET).await.0, 200);
    let (status, body) = fetch(&client, &proxy, reqwest::Method::GET).await;
    assert_eq!((status, body.unwrap().as_str()), (200, "ok"));
    assert_eq!(backend.connections(), 2);
    assert_eq!(fetch(&client, &proxy, reqwest::Method::POST).await.0, 502);
    assert_eq!(backend.requests(), 4);
    assert_eq!(backend.connections(), 2, "the POST was not sent again");
    assert_eq!(fetch(&client, &proxy, reqwest::Method::GET).await.0, 200);
}

/// An upstream that closes its idle keep-alive connection is noticed before the connection
/// is used again.
#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_used() {
    let (backend, proxy) = start(vec![vec![Step::AnswerAndClose(OK.to_vec())], vec![ok()]]).await;
    let client = proxy.http1(&["up.example"]);
    assert_eq!(fetch(&client, &proxy, reqwest::Method::GET).await.0, 200);
    // A POST cannot be sent again, so it only succeeds if the closed connection is passed
    // over.
    let (status, body) = fetch(&client, &proxy, reqwest::Method::POST).await;
    assert_eq!(
        (status, body.unwrap().as_str()),
        (200, "ok"),
        "the POST went on the closed connection"
    );
    assert_eq!(backend.connections(), 2);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let settings = ProxySettings {
        upstream: UpstreamSettings {
            idle_timeout: Duration::from_millis(200),
            ..UpstreamSettings::default()
        },
        ..ProxySettings::default()
    };
    let (backend, proxy) = start_with(vec![vec![ok()]], settings).await;
    assert_eq!(
        fetch(&proxy.http1(&["up.example"]), &proxy, reqwest::Method::GET)
            .await
            .0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend.closed_by_peer() == 0 {
        assert!(Instant::now() < deadline, "the idle connection stayed open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn request_bodies_go_up_framed_by_their_length_or_in_chunks() {
    let web = vestibule_testkit::Echo::start("web").await.unwrap();
    let proxy = Proxy::start(world(
        vec![
            ingress("default", "a")
                .host("a.example")
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web])],
    ))
    .await;
    let client = proxy.http1(&["a.example"]);
    let url = proxy.url_for("a.example", "/upload");

    let sized = client
        .post(&url)
        .body(vec![b'x'; 300_000])
        .send()
        .await
        .unwrap();
    let sized = echo_of(sized).await;
    assert_eq!(sized.body_len, 300_000);
    assert_eq!(sized.header("content-length"), Some("300000"));
    assert_eq!(sized.header("transfer-encoding"), None);

    // No length known up front: the client sends chunks, and so does Vestibule.
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let pieces = (0..50u8).map(|i| {
        Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(vec![
            b'a' + i % 26;
            1000
        ])))
    });
    let request = http::Request::put("/upload")
        .header("host", "a.example")
        .body(http_body_util::StreamBody::new(futures_util::stream::iter(
            pieces,
        )))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let streamed: vestibule_testkit::EchoReply = serde_json::from_slice(&body).unwrap();
    assert_eq!(streamed.method, "PUT");
    assert_eq!(streamed.body_len, 50_000);
    assert_eq!(streamed.header("transfer-encoding"), Some("chunked"));
    assert_eq!(streamed.header("content-length"), None);

    // HTTP/2 with a length.
    let h2 = proxy.h2c(&["a.example"]);
    let response = h2.post(&url).body(vec![b'y'; 70_000]).send().await.unwrap();
    let reply = echo_of(response).await;
    assert_eq!(reply.body_len, 70_000);
    assert_eq!(reply.header("content-length"), Some("70000"));
    assert_eq!(reply.header("transfer-encoding"), None);
    assert_eq!(reply.version, "HTTP/1.1");
    assert_eq!(
        web.connections(),
        1,
        "one upstream connection carried all three"
    );
}

/// An upstream that answers before it has read the body (a 413 of its own, a redirect): the
/// client gets that answer, not a 502 for the body it could not finish sending.
#[tokio::test]
async fn an_answer_before_the_body_is_all_sent_reaches_the_client() {
    let refusal: &[u8] =
        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo big!";
    let (backend, proxy) = start(vec![vec![Step::AnswerAndClose(refusal.to_vec())]]).await;
    // The client promises 900 kB (under the 1 MiB limit), sends 64 KiB, and waits.
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nhost: up.example\r\ncontent-length: 900000\r\n\r\n";
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(&[b'z'; 64 << 10]).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !answer.windows(8).any(|w| w == b"too big!") {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer while the body is still owed");
    assert!(
        answer.starts_with(b"HTTP/1.1 413 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(backend.requests(), 1);
}

/// A TLS upstream (TLS 1.3, whose server sends session tickets after the handshake) keeps
/// one connection for a run of requests, uploads included.
#[tokio::test]
async fn a_tls_upstream_connection_carries_request_after_request() {
    let cert = vestibule_testkit::certs::cert(&["tls.internal"]);
    let secure = vestibule_testkit::misbehave::TlsEcho::start("secure", &cert)
        .await
        .unwrap();
    let mut objects: Vec<Object> = vec![
        ingress_class("vestibule", "vestibule.dev/ingress-controller")
            .build()
            .into(),
        ingress("default", "secure")
            .class("vestibule")
            .annotation("nginx.ingress.kubernetes.io/backend-protocol", "HTTPS")
            .host("secure.example")
            .prefix("/", svc("secure", 80))
            .build()
            .into(),
    ];
    objects.extend(service_at("secure", &[secure.addr()]));
    let proxy = Proxy::start(objects).await;
    let client = proxy.http1(&["secure.example"]);
    let url = proxy.url_for("secure.example", "/tls");
    for round in 0..5 {
        let reply = echo_of(client.get(&url).send().await.unwrap()).await;
        assert_eq!(reply.name, "secure", "round {round}");
        let upload = client
            .post(&url)
            .body(vec![b'u'; 40_000])
            .send()
            .await
            .unwrap();
        assert_eq!(echo_of(upload).await.body_len, 40_000, "round {round}");
    }
    assert_eq!(secure.hits(), 10);
    assert_eq!(secure.connections(), 1);
}

/// A response written a byte at a time is read the same as one written at once: the head,
/// chunk-size lines, the CRLF after each chunk and the trailers all arrive split.
#[tokio::test]
async fn a_response_split_at_every_byte_reads_the_same() {
    let chunked: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-a: b\r\n\r\n\
        5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-sum: 11\r\n\r\n";
    let sized: &[u8] =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst";
    let (backend, proxy) = start(vec![vec![
        Step::Trickle(chunked.to_vec()),
        Step::Trickle(sized.to_vec()),
        Step::Trickle(chunked.to_vec()),
    ]])
    .await;
    let client = proxy.http1(&["up.example"]);
    let (status, body) = fetch(&client, &proxy, reqwest::Method::GET).await;
    assert_eq!((status, body.unwrap().as_str()), (200, "hello world"));
    let (status, body) = fetch(&client, &proxy, reqwest::Method::GET).await;
    assert_eq!((status, body.unwrap().as_str()), (200, "first"));

    let (head, body, trailers) = h2_get(&proxy).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["x-a"], "b");
    let trailers = trailers.expect("trailers");
    assert_eq!(body, "hello world");
    assert_eq!(trailers["x-sum"], "11");
    assert_eq!(backend.connections(), 1);
}

/// A target with bytes past ASCII, which the client side accepts, reaches the backend as
/// it came.
#[tokio::test]
async fn a_target_with_utf8_bytes_goes_up_as_it_came() {
    let (backend, proxy) = start(vec![vec![ok()]]).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(b"GET /caf\xc3\xa9?q=\xc3\xa9 HTTP/1.1\r\nhost: up.example\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(backend.heads()[0].starts_with("GET /caf\u{e9}?q=\u{e9} HTTP/1.1\r\n"));
}
