//! Hostile clients and backends on raw sockets, through `vestibule run`: each defect an
//! attacker found, answered as the client's fault (400, 431) or the backend's (502), never
//! routed past the rules, and the process serving the next request.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use vestibule_testkit::misbehave::{Scripted, Step};
use vestibule_testkit::{Echo, ManifestDir, endpoint_slice, ingress, raw, service, svc};

async fn send(v: &Vestibule, request: &str) -> raw::RawResponse {
    raw::send(v.http, request, Duration::from_secs(10))
        .await
        .unwrap()
}

/// `a.example/` to the echo `web`, written to a new manifest directory.
async fn one_site() -> (Echo, ManifestDir) {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(&dir, vec![site("a")], &[("web", &[&web])]);
    (web, dir)
}

/// `a.example`: Prefix `/a` to the echo `a`, `/` to the echo `root`.
async fn two_services() -> (Echo, Echo, ManifestDir, Vestibule) {
    let a = Echo::start("a").await.unwrap();
    let root = Echo::start("root").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "site")
                .host("a.example")
                .prefix("/a", svc("a", 80))
                .prefix("/", svc("root", 80)),
        ],
        &[("a", &[&a]), ("root", &[&root])],
    );
    let v = Vestibule::start(dir.path(), &[]);
    (a, root, dir, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_never_forwarded() {
    let (_a, root, _dir, v) = two_services().await;
    let r = send(
        &v,
        "GET /x?record=1 HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    // Served as the plain HTTP/1.1 request it also is; the backend never hears of h2c.
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert!(r.header("upgrade").is_none());
    let seen = echoed(&r);
    assert_eq!(seen.name, "root");
    assert!(seen.header("upgrade").is_none(), "{:?}", seen.headers);
    assert!(
        seen.header("http2-settings").is_none(),
        "{:?}",
        seen.headers
    );
    assert_eq!(root.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slashes_are_routed_as_the_backend_reads_them() {
    let (a, root, _dir, v) = two_services().await;
    // Climbing out of /a once %2F (or %5C, or \) is read as a slash: refused.
    for target in [
        "/a/..%2F..%2Fetc/passwd",
        "/a/..%2f..%2fetc/passwd",
        "/a/..%5C..%5Cwin.ini",
        "/..%2Fetc/passwd",
        // `/a//../x`: `/a/x` to RFC 3986, `/x` to a backend that merges slashes first.
        "/a/%2F..%2Fx",
    ] {
        let r = get(&v, "a.example", target, "").await;
        assert_eq!(r.status, 400, "{target}: {}", r.body_text());
    }
    assert_eq!(a.hits() + root.hits(), 0, "nothing reached a backend");
    // Out of /a and back to the root: the root's, with the escapes as they came.
    let r = get(&v, "a.example", "/a/..%2Fsecret", "").await;
    let seen = echoed(&r);
    assert_eq!(seen.name, "root");
    assert_eq!(seen.path, "/a/..%2Fsecret");
    // Into /a through an encoded slash: /a's, escapes kept (GitLab's project paths).
    let r = get(&v, "a.example", "/a%2Fproject/issues", "").await;
    let seen = echoed(&r);
    assert_eq!(seen.name, "a");
    assert_eq!(seen.path, "/a%2Fproject/issues");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_host_is_refused_and_never_forwarded() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            site("a"),
            ingress("default", "any")
                .any_host()
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web])],
    );
    let v = Vestibule::start(dir.path(), &[]);
    for host in [
        "smug example",
        "a.example/x",
        "u@a.example",
        "a.example:80:80",
        "a..example",
    ] {
        let r = send(
            &v,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(r.status, 400, "{host:?}: {}", r.body_text());
    }
    let two = "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n";
    assert_eq!(send(&v, two).await.status, 400);
    let disagree = "GET http://b.example/ HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n";
    assert_eq!(send(&v, disagree).await.status, 400);
    let userinfo =
        "GET http://u@a.example/ HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n";
    assert_eq!(send(&v, userinfo).await.status, 400);
    assert_eq!(web.hits(), 0, "nothing reached the catch-all");
    // A trusted-looking X-Forwarded-Host that is no host is not passed on either.
    let agreeing = "GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-Host: x y\r\n\
         Connection: close\r\n\r\n";
    let r = send(&v, agreeing).await;
    let seen = echoed(&r);
    assert_eq!(seen.header("x-forwarded-host"), Some("a.example"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_the_clients_fault() {
    let (_web, dir) = one_site().await;
    let v = Vestibule::start(dir.path(), &[]);
    let long_extension = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(20_000));
    for body in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "3\r\nhello\r\n0\r\n\r\n",
        "5\nhello\n0\n\n",
        long_extension.as_str(),
    ] {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n{body}"
        );
        let r = send(&v, &request).await;
        assert_eq!(r.status, 400, "{body:?}: {}", r.body_text());
    }
    let metrics = v.metrics().await;
    assert!(
        !metrics.contains("vestibule_upstream_errors_total{"),
        "no upstream error counted: {metrics}"
    );
    // And the next request is served.
    assert_eq!(echoed(&get(&v, "a.example", "/", "").await).name, "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_field_count_limit_is_a_flag() {
    let (_web, dir) = one_site().await;
    let fields: String = (0..150).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\nHost: a.example\r\n{fields}Connection: close\r\n\r\n");
    let v = Vestibule::start(dir.path(), &[]);
    assert_eq!(send(&v, &request).await.status, 431);
    drop(v);
    let v = Vestibule::start(dir.path(), &["--max-request-header-fields", "200"]);
    let r = send(&v, &request).await;
    assert_eq!(echoed(&r).header("x-field-149"), Some("149"));
}

/// A response whose head is about `kib` KiB.
fn response_with_head(kib: usize) -> Vec<u8> {
    let filler: String = (0..kib)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "p".repeat(1000)))
        .collect();
    format!("HTTP/1.1 200 OK\r\n{filler}Content-Length: 2\r\n\r\nok").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_head_limit_holds_whatever_came_before() {
    // One connection: a 10 KiB head, then a 100 KiB one; another: 70 KiB at once.
    let backend = Scripted::start(vec![
        vec![
            Step::Answer(response_with_head(10)),
            Step::Answer(response_with_head(100)),
        ],
        vec![Step::Answer(response_with_head(70))],
    ])
    .await
    .unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(&dir, vec![site("a")], &[]);
    let service = service("default", "web").port("http", 80, 8080).build();
    let slice = endpoint_slice("default", "web-0", "web")
        .port("http", i32::from(backend.addr().port()))
        .ready(&backend.addr().ip().to_string())
        .build();
    dir.write("svc-web.yaml", &[&service, &slice]).unwrap();
    let v = Vestibule::start(dir.path(), &[]);
    assert_eq!(get(&v, "a.example", "/", "").await.status, 200);
    // The pooled connection's next head is past the 64 KiB limit: 502, not passed on.
    assert_eq!(get(&v, "a.example", "/", "").await.status, 502);
    assert_eq!(get(&v, "a.example", "/", "").await.status, 502);
}

/// Request smuggling: framings that two parsers could read differently, each in a request
/// that closes its connection. Each is refused or read one safe way: the request hidden in
/// the body never reaches a backend (`web` would see it if the proxy passed on bytes the
/// backend reads as a second request; `hidden` if the proxy read them as one itself), and
/// the process serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_framing_smuggles_a_request_past_the_proxy() {
    let web = Echo::start("web").await.unwrap();
    let hidden = Echo::start("hidden").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "site")
                .host("a.example")
                .prefix("/", svc("web", 80))
                .prefix("/smuggled", svc("hidden", 80)),
        ],
        &[("web", &[&web]), ("hidden", &[&hidden])],
    );
    let v = Vestibule::start(dir.path(), &[]);
    let smuggled = "GET /smuggled?record=1 HTTP/1.1\r\nHost: a.example\r\n\r\n";
    let cases = [
        // Both framings: chunked wins (RFC 9112 6.3) and the length is never believed.
        format!(
            "POST / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\nContent-Length: 4\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        // Two lengths that disagree.
        format!(
            "POST / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\nContent-Length: 0\r\n\
             Content-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        ),
        // A length that is not a number, or hides a second one.
        format!(
            "POST / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\nContent-Length: +0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\nContent-Length: 0, 40\r\n\r\n{smuggled}"
        ),
        // Transfer codings a parser might not know, or read as chunked.
        format!(
            "POST / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\nTransfer-Encoding: xchunked\r\n\
             Content-Length: 0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\nTransfer-Encoding: chunked, identity\r\n\r\n\
             0\r\n\r\n{smuggled}"
        ),
        // Obsolete line folding, and whitespace before the colon.
        format!(
            "POST / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\nContent-Length: 0\r\n \
             Transfer-Encoding: chunked\r\n\r\n{smuggled}"
        ),
        format!(
            "POST / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\nTransfer-Encoding : chunked\r\n\
             Content-Length: 0\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        // A bare LF ending the head.
        format!(
            "POST / HTTP/1.1\nHost: a.example\nConnection: close\nContent-Length: 0\n\n{smuggled}"
        ),
    ];
    for request in &cases {
        let answer = raw::send(v.http, request, Duration::from_secs(10)).await;
        // Refused, or served once as the one request it is: never two answers' worth.
        if let Ok(response) = &answer {
            assert!(
                response.status == 400 || response.status == 501 || response.status == 200,
                "{request:?}: {}",
                response.status
            );
        }
    }
    assert_eq!(hidden.hits(), 0, "no hidden request was routed");
    let seen = web.last_recorded().map(|r| r.path);
    assert_eq!(
        seen, None,
        "no hidden request reached the first request's backend"
    );
    assert_eq!(echoed(&get(&v, "a.example", "/", "").await).name, "web");
}

/// A flood of connections that start a TLS handshake and stall, or send garbage, does not
/// keep a real client out: its handshake and request are served while they hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_do_not_keep_real_clients_out() {
    use tokio::io::AsyncWriteExt;
    use vestibule_testkit::tls::{Session, client_config, client_hello};

    let (_web, dir) = one_site().await;
    let v = Vestibule::start(dir.path(), &[]);
    let hello = client_hello(Some("a.example"));
    let mut stalled = Vec::new();
    for i in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(v.https).await.unwrap();
        // Half a ClientHello, a whole one and no more, or bytes that are not TLS at all.
        let bytes: &[u8] = match i % 3 {
            0 => &hello[..hello.len() / 2],
            1 => &hello,
            _ => b"\x16\x03\x01\xff\xff garbage",
        };
        let _ = stream.write_all(bytes).await;
        stalled.push(stream);
    }
    let config = client_config(&["h2", "http/1.1"]);
    let mut session = Session::open(v.https, Some("a.example"), &config)
        .await
        .unwrap();
    let reply = session.get("a.example", "/").await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("\"web\""), "{}", reply.body);
    drop(stalled);
    assert_eq!(echoed(&get(&v, "a.example", "/", "").await).name, "web");
}

// WebSocket frame abuse. After the 101, Vestibule copies bytes both ways without reading
// frames, so what a hostile client can do is make the backend close, or close itself: either
// way the tunnel must end (no socket of it left open), and the process serve the next
// WebSocket and request.

/// `ws.example/` to a WebSocket echo (`tungstenite`, which closes on any framing error or a
/// frame over 16 MiB), `a.example/` to the echo `web`.
#[cfg(target_os = "linux")]
async fn ws_world() -> (
    vestibule_testkit::websocket::WsEcho,
    Echo,
    ManifestDir,
    Vestibule,
) {
    let ws = vestibule_testkit::websocket::WsEcho::start("ws")
        .await
        .unwrap();
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            site("a"),
            ingress("default", "ws")
                .host("ws.example")
                .prefix("/", svc("ws", 80)),
        ],
        &[("web", &[&web])],
    );
    let service = service("default", "ws").port("http", 80, 8080).build();
    let slice = endpoint_slice("default", "ws-0", "ws")
        .port("http", i32::from(ws.port()))
        .ready(&ws.addr().ip().to_string())
        .build();
    dir.write("svc-ws.yaml", &[&service, &slice]).unwrap();
    let v = Vestibule::start(dir.path(), &[]);
    (ws, web, dir, v)
}

/// A WebSocket handshake through the proxy, read byte by byte up to the end of the 101's head
/// so that no byte of the tunnel is taken with it.
#[cfg(target_os = "linux")]
async fn upgraded(v: &Vestibule) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(v.http).await.unwrap();
    tcp.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(Duration::from_secs(10), tcp.read_u8())
            .await
            .expect("the 101 in time")
            .unwrap();
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// A masked client frame, FIN set.
#[cfg(target_os = "linux")]
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..126 => out.push(0x80 | u8::try_from(n).unwrap()),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

/// Reads what the tunnel still brings until it ends: the client sees the close.
#[cfg(target_os = "linux")]
async fn tunnel_ends(tcp: &mut tokio::net::TcpStream, what: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        // A reset ends it as well as a close.
        while let Ok(n @ 1..) = tcp.read(&mut buf).await {
            seen.extend_from_slice(&buf[..n]);
        }
    });
    read.await
        .unwrap_or_else(|_| panic!("{what}: the tunnel is still open"));
    seen
}

/// The process's open file descriptors: each tunnel holds two sockets.
#[cfg(target_os = "linux")]
fn open_fds(v: &Vestibule) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", v.pid()))
        .unwrap()
        .count()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frame_abuse_ends_the_tunnel_and_leaks_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (ws, web, _dir, v) = ws_world().await;
    assert_eq!(echoed(&get(&v, "a.example", "/", "").await).name, "web");
    let before = open_fds(&v);

    // Clients that see their tunnel end but never close their own side: the proxy must not
    // wait for them (no timeout would ever end such a tunnel).
    let mut silent = Vec::new();

    // A frame announcing 2^63-1 bytes: the backend refuses it and closes, and so does the
    // tunnel, whether the client stays or has gone.
    let mut endless = vec![0x82, 0x80 | 127];
    endless.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
    endless.extend_from_slice(&[1, 2, 3, 4, 0xde, 0xad]);
    let mut tcp = upgraded(&v).await;
    tcp.write_all(&endless).await.unwrap();
    tunnel_ends(&mut tcp, "2^63 bytes announced").await;
    silent.push(tcp);
    let mut gone = upgraded(&v).await;
    gone.write_all(&endless).await.unwrap();
    drop(gone);

    // Bytes that are no frames at all (reserved bits and opcode, no mask).
    let mut tcp = upgraded(&v).await;
    tcp.write_all(b"\x7f\x7fGET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    tunnel_ends(&mut tcp, "garbage").await;
    silent.push(tcp);
    assert_eq!(
        web.received(),
        1,
        "the bytes after the 101 were never read as a request"
    );

    // 20,000 one-byte frames, written while the echoes are read: every one comes back, in
    // order. Nothing is dropped or reordered by the tunnel, and it holds no more than the
    // sockets do while either side waits.
    const TINY: usize = 20_000;
    let tcp = upgraded(&v).await;
    let (mut read, mut write) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let frames: Vec<u8> = (0..TINY)
            .flat_map(|i| ws_frame(0x2, &[u8::try_from(i % 251).unwrap()]))
            .collect();
        write.write_all(&frames).await.unwrap();
        write
    });
    let echoes = tokio::time::timeout(Duration::from_secs(30), async {
        let mut echoes = Vec::with_capacity(TINY);
        while echoes.len() < TINY {
            let mut head = [0u8; 3];
            read.read_exact(&mut head).await.unwrap();
            assert_eq!(&head[..2], &[0x82, 1], "an unmasked one-byte binary frame");
            echoes.push(head[2]);
        }
        echoes
    })
    .await
    .expect("every tiny frame echoed in time");
    let expected: Vec<u8> = (0..TINY).map(|i| u8::try_from(i % 251).unwrap()).collect();
    assert!(
        echoes == expected,
        "the echoes are the frames sent, in order"
    );
    let write = writer.await.unwrap();
    let mut tcp = read.reunite(write).unwrap();

    // Half-close: the client is done sending. The backend reads the end of its input and
    // closes; the tunnel passes that on, after the last echo.
    tcp.write_all(&ws_frame(0x1, b"last words")).await.unwrap();
    tcp.shutdown().await.unwrap();
    let rest = tunnel_ends(&mut tcp, "half-closed").await;
    assert!(
        rest.windows(10).any(|w| w == b"last words"),
        "the echo before the close: {rest:?}"
    );
    drop(tcp);

    // Every tunnel's two sockets are closed, the silent clients' included.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while open_fds(&v) > before {
        assert!(
            std::time::Instant::now() < deadline,
            "{} descriptors open, {before} before the tunnels",
            open_fds(&v)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ws.upgrades(), 4);
    drop(silent);

    // And the next WebSocket and request are served.
    let mut client = upgraded(&v).await;
    client.write_all(&ws_frame(0x1, b"hello")).await.unwrap();
    let mut answer = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut answer))
        .await
        .expect("the echo in time")
        .unwrap();
    assert_eq!(&answer, b"\x81\x05hello");
    assert_eq!(echoed(&get(&v, "a.example", "/", "").await).name, "web");
}
