//! What clients see when backends are slow, broken, overloaded or replaced, over real sockets
//! and real clients: balancing (round robin, EWMA, consistent hashing, cookie affinity),
//! retries, timeouts, broken responses, passive health, rolling updates under load, size
//! limits, and who the client is (trusted proxies, PROXY protocol).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vestibule_proxy::{ProxySettings, TrustedProxies};
use vestibule_testkit::fixtures::IngressBuilder;
use vestibule_testkit::misbehave::{Flaky, Hang, Refused, ResetMidResponse, Slow};
use vestibule_testkit::raw::RawResponse;
use vestibule_testkit::{Echo, EchoReply, ingress, proxy_protocol, svc};

// ---------------------------------------------------------------------------------------------
// Helpers

/// An Ingress for `host` whose every path goes to `service`, with `nginx.ingress.kubernetes.io/`
/// annotations given by their short names.
fn route(host: &str, service: &str, annotations: &[(&str, &str)]) -> IngressBuilder {
    annotations.iter().fold(
        ingress("default", &host.replace('.', "-"))
            .host(host)
            .prefix("/", svc(service, 80)),
        |ingress, (key, value)| {
            ingress.annotation(&format!("nginx.ingress.kubernetes.io/{key}"), value)
        },
    )
}

async fn echoes(prefix: &str, n: usize) -> Vec<Echo> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(Echo::start(&format!("{prefix}{i}")).await.unwrap());
    }
    out
}

/// The name of the echo backend that answered a GET.
async fn answered_by(client: &reqwest::Client, url: &str) -> String {
    echo_of(client.get(url).send().await.unwrap()).await.name
}

/// The `Set-Cookie` value of a response for cookie `name`, if any.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The value part of a `Set-Cookie` header: `name=value; ...` → `value`.
fn cookie_value(set_cookie: &str) -> &str {
    let pair = set_cookie.split(';').next().unwrap();
    pair.split_once('=').unwrap().1
}

/// Writes `bytes` on a new connection and reads until the server closes, within 10 s.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<RawResponse> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(bytes).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in time"))??;
    parse_response(&buf)
}

/// A response with a `Content-Length` body (echo replies and Vestibule's own).
fn parse_response(buf: &[u8]) -> std::io::Result<RawResponse> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(RawResponse {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    })
}

fn echo_reply(response: &RawResponse) -> EchoReply {
    assert_eq!(response.status, 200, "{}", response.body_text());
    serde_json::from_slice(&response.body).unwrap()
}

/// Polls `done` every 2 ms, failing the test after 5 s.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn settings_trusting(entries: &[&str]) -> ProxySettings {
    ProxySettings {
        trusted_proxies: TrustedProxies::parse(entries).unwrap(),
        ..ProxySettings::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Balancing

#[tokio::test]
async fn round_robin_spreads_exactly_evenly_sequential_and_concurrent() {
    let backends = echoes("rr", 3).await;
    let refs: Vec<&Echo> = backends.iter().collect();
    let proxy = Proxy::start(world(
        vec![route("rr.example", "web", &[])],
        &[("web", &refs)],
    ))
    .await;
    let url = proxy.url_for("rr.example", "/");
    let http1 = proxy.http1(&["rr.example"]);
    for _ in 0..30 {
        assert_eq!(http1.get(&url).send().await.unwrap().status(), 200);
    }
    let hits: Vec<usize> = backends.iter().map(Echo::hits).collect();
    assert_eq!(hits, [10, 10, 10]);
    // 60 requests at once on one HTTP/2 connection: the rotation is shared, not per stream.
    let h2 = proxy.h2c(&["rr.example"]);
    let all = futures_util::future::join_all((0..60).map(|_| h2.get(&url).send())).await;
    for response in all {
        assert_eq!(response.unwrap().status(), 200);
    }
    let hits: Vec<usize> = backends.iter().map(Echo::hits).collect();
    assert_eq!(hits, [30, 30, 30]);
}

#[tokio::test]
async fn ewma_sends_most_traffic_to_the_fast_endpoint() {
    let fast = Echo::start("fast").await.unwrap();
    let slow = Slow::start(Duration::from_millis(50)).await.unwrap();
    let mut objects = world(
        vec![route("ewma.example", "mixed", &[("load-balance", "ewma")])],
        &[],
    );
    objects.extend(service_at("mixed", &[fast.addr(), slow.addr()]));
    let proxy = Proxy::start(objects).await;
    let client = proxy.http1(&["ewma.example"]);
    let url = proxy.url_for("ewma.example", "/");
    for _ in 0..100 {
        assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    }
    assert_eq!(fast.hits() + slow.answered(), 100);
    assert!(
        fast.hits() >= 80,
        "fast {} slow {}: EWMA should favour the fast endpoint",
        fast.hits(),
        slow.answered()
    );
    assert!(slow.requests() >= 1, "the unmeasured endpoint was tried");
}

/// Four echo backends behind one Service per host, each host balanced by its
/// `upstream-hash-by` key. The backends are returned so that they live as long as the proxy.
async fn hashed(prefix: &str, hosts: &[(&str, &str)]) -> (Vec<Echo>, Proxy) {
    let backends = echoes(prefix, 4).await;
    let refs: Vec<&Echo> = backends.iter().collect();
    let services: Vec<String> = (0..hosts.len()).map(|i| format!("web{i}")).collect();
    let routes = hosts
        .iter()
        .zip(&services)
        .map(|((host, key), service)| route(host, service, &[("upstream-hash-by", key)]))
        .collect();
    let backing: Vec<(&str, &[&Echo])> = services
        .iter()
        .map(|service| (service.as_str(), refs.as_slice()))
        .collect();
    let proxy = Proxy::start(world(routes, &backing)).await;
    (backends, proxy)
}

/// Which backend answered each hash key.
#[derive(Default)]
struct Owners(HashMap<String, String>);

impl Owners {
    /// Notes that `name` answered for `key`, which must be where `key` went before.
    fn answered(&mut self, key: &str, name: String) {
        let first = self.0.entry(key.to_owned()).or_insert_with(|| name.clone());
        assert_eq!(*first, name, "{key} moved");
    }

    /// The keys went to at least `backends` different backends.
    fn assert_spread_over(&self, backends: usize) {
        let used: BTreeSet<&String> = self.0.values().collect();
        assert!(
            used.len() >= backends,
            "{} keys landed on {used:?}",
            self.0.len()
        );
    }
}

#[tokio::test]
async fn hashing_by_request_uri_keeps_each_uri_on_one_backend_and_spreads_uris() {
    let (_backends, proxy) = hashed("h", &[("hash.example", "$request_uri")]).await;
    let client = proxy.http1(&["hash.example"]);
    let mut owners = Owners::default();
    // The query is part of `$request_uri`.
    for _ in 0..3 {
        for k in 0..40 {
            let uri = format!("/item?id={k}");
            let name = answered_by(&client, &proxy.url_for("hash.example", &uri)).await;
            owners.answered(&uri, name);
        }
    }
    owners.assert_spread_over(3);
}

#[tokio::test]
async fn hashing_by_header_and_by_cookie() {
    let (_backends, proxy) = hashed(
        "u",
        &[
            ("user.example", "$http_x_user"),
            ("cart.example", "$cookie_cart"),
        ],
    )
    .await;
    let client = proxy.http1(&["user.example", "cart.example"]);
    let (mut by_user, mut by_cart) = (Owners::default(), Owners::default());
    for _ in 0..3 {
        for k in 0..30 {
            let user = format!("user-{k}");
            let response = client
                .get(proxy.url_for("user.example", &format!("/any/{}", fastrand::u32(..))))
                .header("x-user", &user)
                .send()
                .await
                .unwrap();
            by_user.answered(&user, echo_of(response).await.name);
            let response = client
                .get(proxy.url_for("cart.example", "/"))
                .header("cookie", format!("other=1; cart=c{k}; x=y"))
                .send()
                .await
                .unwrap();
            by_cart.answered(&format!("cart {k}"), echo_of(response).await.name);
        }
    }
    by_user.assert_spread_over(3);
    by_cart.assert_spread_over(3);
}

#[tokio::test]
async fn hashing_by_the_request_id_header_uses_the_clients_own() {
    let (_backends, proxy) = hashed("r", &[("rid.example", "$http_x_request_id")]).await;
    let client = proxy.http1(&["rid.example"]);
    let url = proxy.url_for("rid.example", "/");
    // Without a header of its own, every request hashes the same empty value, as with
    // nginx's `$http_x_request_id`: the ID made up for each request is not the client's.
    let mut without = BTreeSet::new();
    for _ in 0..20 {
        without.insert(answered_by(&client, &url).await);
    }
    assert_eq!(without.len(), 1, "{without:?}");
    // With one, each ID keeps to its backend, and the IDs spread.
    let mut owners = Owners::default();
    for _ in 0..2 {
        for k in 0..30 {
            let id = format!("req-{k}");
            let response = client
                .get(&url)
                .header("x-request-id", &id)
                .send()
                .await
                .unwrap();
            owners.answered(&id, echo_of(response).await.name);
        }
    }
    owners.assert_spread_over(3);
}

#[tokio::test]
async fn cookie_affinity_sets_a_session_cookie_and_keeps_the_session_on_its_backend() {
    let backends = echoes("s", 3).await;
    let refs: Vec<&Echo> = backends.iter().collect();
    let proxy = Proxy::start(world(
        vec![route("sticky.example", "web", &[("affinity", "cookie")])],
        &[("web", &refs)],
    ))
    .await;
    let client = proxy.http1(&["sticky.example"]);
    let url = proxy.url_for("sticky.example", "/");
    let first = client.get(&url).send().await.unwrap();
    let cookie =
        set_cookie(&first, "INGRESSCOOKIE").expect("a session cookie on the first response");
    let value = cookie_value(&cookie).to_owned();
    assert_eq!(cookie, format!("INGRESSCOOKIE={value}; Path=/; HttpOnly"));
    assert_eq!(value.len(), 16, "{value}");
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()), "{value}");
    let home = echo_of(first).await.name;
    for _ in 0..20 {
        let response = client
            .get(&url)
            .header("cookie", format!("INGRESSCOOKIE={value}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            set_cookie(&response, "INGRESSCOOKIE"),
            None,
            "a valid cookie is kept"
        );
        assert_eq!(echo_of(response).await.name, home);
    }
    // Without the cookie every request is a new session: they spread.
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let response = client.get(&url).send().await.unwrap();
        assert!(set_cookie(&response, "INGRESSCOOKIE").is_some());
        seen.insert(echo_of(response).await.name);
    }
    assert!(seen.len() >= 2, "new sessions all went to {seen:?}");
    // A cookie Vestibule did not set is replaced.
    let response = client
        .get(&url)
        .header("cookie", "INGRESSCOOKIE=not-ours")
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&response, "INGRESSCOOKIE").is_some());
}

#[tokio::test]
async fn session_cookie_attributes_follow_the_annotations() {
    let echo = Echo::start("web").await.unwrap();
    let proxy = Proxy::start(world(
        vec![
            route(
                "strict.example",
                "web",
                &[
                    ("affinity", "cookie"),
                    ("session-cookie-name", "route"),
                    ("session-cookie-max-age", "3600"),
                    ("session-cookie-path", "/shop"),
                    ("session-cookie-secure", "true"),
                    ("session-cookie-samesite", "Strict"),
                ],
            ),
            route(
                "none.example",
                "web",
                &[
                    ("affinity", "cookie"),
                    ("session-cookie-samesite", "None"),
                    ("session-cookie-expires", "60"),
                ],
            ),
        ],
        &[("web", &[&echo])],
    ))
    .await;
    let client = proxy.http1(&["strict.example", "none.example"]);
    let response = client
        .get(proxy.url_for("strict.example", "/shop/cart"))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&response, "route").unwrap();
    let value = cookie_value(&cookie);
    let attributes: Vec<&str> = cookie.split("; ").collect();
    assert_eq!(attributes.len(), 7, "{cookie}");
    assert_eq!(attributes[0], format!("route={value}"));
    assert_eq!(attributes[1], "Path=/shop");
    let expires = attributes[2].strip_prefix("Expires=").unwrap();
    let expires = httpdate::parse_http_date(expires).unwrap();
    let expected = SystemTime::now() + Duration::from_secs(3600);
    let off = expected
        .duration_since(expires)
        .unwrap_or_else(|e| e.duration());
    assert!(
        off < Duration::from_secs(60),
        "Expires is {off:?} off now + 1 h"
    );
    assert_eq!(
        &attributes[3..],
        ["Max-Age=3600", "Secure", "HttpOnly", "SameSite=Strict"]
    );
    // SameSite=None needs Secure, or browsers drop the cookie; expires alone sets Max-Age.
    let response = client
        .get(proxy.url_for("none.example", "/"))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&response, "INGRESSCOOKIE").unwrap();
    let attributes: Vec<&str> = cookie.split("; ").collect();
    assert_eq!(attributes[1], "Path=/");
    assert!(attributes[2].starts_with("Expires="), "{cookie}");
    assert_eq!(
        &attributes[3..],
        ["Max-Age=60", "Secure", "HttpOnly", "SameSite=None"]
    );
}

/// docs/annotations.md: `session-cookie-path` defaults to the route's path, as in
/// ingress-nginx (the Lua balancer uses `$location_path`), so the cookie is only sent back to
/// the route whose sessions it keeps.
#[tokio::test]
async fn session_cookie_path_defaults_to_the_route_path() {
    let echo = Echo::start("web").await.unwrap();
    let proxy = Proxy::start(world(
        vec![
            ingress("default", "app")
                .annotation("nginx.ingress.kubernetes.io/affinity", "cookie")
                .host("paths.example")
                .prefix("/app", svc("web", 80)),
        ],
        &[("web", &[&echo])],
    ))
    .await;
    let response = proxy
        .http1(&["paths.example"])
        .get(proxy.url_for("paths.example", "/app/page"))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&response, "INGRESSCOOKIE").unwrap();
    assert_eq!(
        cookie,
        format!(
            "INGRESSCOOKIE={}; Path=/app; HttpOnly",
            cookie_value(&cookie)
        )
    );
}

/// Twenty sessions started on two endpoints, then two endpoints added: returns, per session,
/// where it was and where it is now.
async fn sessions_across_growth(mode: &str) -> Vec<(String, String)> {
    let backends = echoes(&format!("{mode}-"), 4).await;
    let (before, after): (Vec<&Echo>, Vec<&Echo>) =
        (backends[..2].iter().collect(), backends.iter().collect());
    let ingresses = || {
        vec![route(
            "grow.example",
            "web",
            &[("affinity", "cookie"), ("affinity-mode", mode)],
        )]
    };
    let proxy = Proxy::start(world(ingresses(), &[("web", &before)])).await;
    let client = proxy.http1(&["grow.example"]);
    let url = proxy.url_for("grow.example", "/");
    let mut sessions = Vec::new();
    for _ in 0..20 {
        let response = client.get(&url).send().await.unwrap();
        let cookie = set_cookie(&response, "INGRESSCOOKIE").unwrap();
        let value = cookie_value(&cookie).to_owned();
        sessions.push((value, echo_of(response).await.name));
    }
    proxy.install(world(ingresses(), &[("web", &after)]));
    let mut moves = Vec::new();
    for (value, was) in sessions {
        let response = client
            .get(&url)
            .header("cookie", format!("INGRESSCOOKIE={value}"))
            .send()
            .await
            .unwrap();
        let now = echo_of(response).await.name;
        moves.push((was, now));
    }
    moves
}

#[tokio::test]
async fn persistent_affinity_keeps_every_session_when_endpoints_are_added() {
    let moves = sessions_across_growth("persistent").await;
    let started: BTreeMap<&str, usize> = moves.iter().fold(BTreeMap::new(), |mut m, (was, _)| {
        *m.entry(was.as_str()).or_default() += 1;
        m
    });
    // New persistent sessions are placed by round robin.
    assert_eq!(
        started.into_iter().collect::<Vec<_>>(),
        [("persistent-0", 10), ("persistent-1", 10)]
    );
    for (was, now) in &moves {
        assert_eq!(was, now, "a persistent session moved");
    }
}

#[tokio::test]
async fn balanced_affinity_moves_some_sessions_to_new_endpoints_only() {
    let moves = sessions_across_growth("balanced").await;
    let moved: Vec<&(String, String)> = moves.iter().filter(|(was, now)| was != now).collect();
    for (was, now) in &moved {
        assert!(
            now == "balanced-2" || now == "balanced-3",
            "{was} → {now}: a session moved between endpoints that both stayed"
        );
    }
    // Each of the 20 moves with probability 1/2: none moving is a one-in-a-million event.
    assert!(
        !moved.is_empty(),
        "no session rebalanced onto the new endpoints"
    );
}

// ---------------------------------------------------------------------------------------------
// Retries

#[tokio::test]
async fn a_refused_endpoint_is_skipped_for_every_method() {
    let echo = Echo::start("alive").await.unwrap();
    let refused = Refused::new().unwrap();
    let mut objects = world(vec![route("retry.example", "half", &[])], &[]);
    objects.extend(service_at("half", &[refused.addr(), echo.addr()]));
    let proxy = Proxy::start(objects).await;
    let client = proxy.http1(&["retry.example"]);
    let url = proxy.url_for("retry.example", "/");
    for _ in 0..50 {
        assert_eq!(answered_by(&client, &url).await, "alive");
    }
    // Nothing was sent to a refused endpoint, so a POST with a body goes elsewhere too.
    for _ in 0..10 {
        let response = client.post(&url).body("a body").send().await.unwrap();
        assert_eq!(echo_of(response).await.body_len, 6);
    }
    assert_eq!(echo.hits(), 60);
}

#[tokio::test]
async fn a_post_whose_body_was_sent_is_not_retried_but_a_get_is() {
    let once = Flaky::start(1).await.unwrap();
    let always = Flaky::start(usize::MAX).await.unwrap();
    let always_too = Flaky::start(usize::MAX).await.unwrap();
    let echo = Echo::start("echo").await.unwrap();
    let echo_too = Echo::start("echo-too").await.unwrap();
    let mut objects = world(
        vec![
            route("single.example", "single", &[]),
            route("pair.example", "pair", &[]),
            route("gets.example", "gets", &[]),
        ],
        &[],
    );
    objects.extend(service_at("single", &[once.addr()]));
    objects.extend(service_at("pair", &[always.addr(), echo.addr()]));
    objects.extend(service_at("gets", &[always_too.addr(), echo_too.addr()]));
    let proxy = Proxy::start(objects).await;
    let client = proxy.http1(&["single.example", "pair.example", "gets.example"]);

    // The one endpoint closes the connection after the request: 502, not tried again.
    let url = proxy.url_for("single.example", "/");
    let response = client.post(&url).body("order #1").send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(once.failed(), 1);
    let response = client.post(&url).body("order #2").send().await.unwrap();
    assert_eq!(echo_of(response).await.name, "flaky");

    // With another endpoint available, a POST that reached the broken one still fails: a
    // retry could place the order twice. Round robin: exactly every other one.
    let url = proxy.url_for("pair.example", "/");
    let mut statuses = BTreeMap::new();
    for i in 0..10 {
        let response = client
            .post(&url)
            .body(format!("order #{i}"))
            .send()
            .await
            .unwrap();
        *statuses.entry(response.status().as_u16()).or_insert(0) += 1;
    }
    assert_eq!(
        statuses.into_iter().collect::<Vec<_>>(),
        [(200, 5), (502, 5)]
    );
    assert_eq!(always.failed(), 5);
    assert_eq!(echo.hits(), 5);

    // GET, HEAD, PUT, DELETE and OPTIONS without a body are tried again on the other endpoint.
    let url = proxy.url_for("gets.example", "/");
    for method in ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"] {
        for _ in 0..2 {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let response = client.request(method.clone(), &url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{method}");
        }
    }
    // Retries move the rotation on too, so the broken endpoint gets at least its turn; every
    // attempt it broke was answered by the echo.
    assert!(always_too.failed() >= 5, "{}", always_too.failed());
    assert_eq!(echo_too.hits(), 10);
}

#[tokio::test]
async fn a_get_broken_once_is_retried_on_another_endpoint() {
    let flaky = Flaky::start(1).await.unwrap();
    let echo = Echo::start("echo").await.unwrap();
    let mut objects = world(vec![route("once.example", "mixed", &[])], &[]);
    objects.extend(service_at("mixed", &[flaky.addr(), echo.addr()]));
    let proxy = Proxy::start(objects).await;
    let client = proxy.http1(&["once.example"]);
    let url = proxy.url_for("once.example", "/");
    // Round robin: one of the two reaches the flaky endpoint first.
    for _ in 0..2 {
        assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    }
    assert_eq!(flaky.failed(), 1);
    // The retry moves the rotation on too, so the second request may go to the flaky endpoint
    // again, which now answers.
    assert_eq!(echo.hits() + flaky.hits(), 2);
    assert!(
        echo.hits() >= 1,
        "the broken attempt was answered by the echo"
    );
}

#[tokio::test]
async fn without_retries_the_client_gets_the_failure() {
    let echo = Echo::start("echo").await.unwrap();
    let broken: Vec<Flaky> =
        futures_util::future::join_all((0..2).map(|_| Flaky::start(usize::MAX)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let refused = [Refused::new().unwrap(), Refused::new().unwrap()];
    let annotations: [(&str, &[(&str, &str)]); 2] = [
        ("off", &[("proxy-next-upstream", "off")]),
        ("tries", &[("proxy-next-upstream-tries", "1")]),
    ];
    let mut ingresses = Vec::new();
    let mut objects = Vec::new();
    for (i, (name, annotations)) in annotations.iter().enumerate() {
        ingresses.push(route(
            &format!("{name}-refused.example"),
            &format!("{name}-refused"),
            annotations,
        ));
        ingresses.push(route(
            &format!("{name}-broken.example"),
            &format!("{name}-broken"),
            annotations,
        ));
        objects.extend(service_at(
            &format!("{name}-refused"),
            &[refused[i].addr(), echo.addr()],
        ));
        objects.extend(service_at(
            &format!("{name}-broken"),
            &[broken[i].addr(), echo.addr()],
        ));
    }
    let mut all = world(ingresses, &[]);
    all.extend(objects);
    let proxy = Proxy::start(all).await;
    let hosts = [
        "off-refused.example",
        "off-broken.example",
        "tries-refused.example",
        "tries-broken.example",
    ];
    let client = proxy.http1(&hosts);
    for (host, flaky) in [
        (hosts[0], None),
        (hosts[1], Some(&broken[0])),
        (hosts[2], None),
        (hosts[3], Some(&broken[1])),
    ] {
        let url = proxy.url_for(host, "/");
        // Two refusals in a row eject an endpoint, so only two requests there; a request
        // that breaks after connecting does not count against the endpoint.
        let n = if flaky.is_some() { 10 } else { 2 };
        let mut failed = 0;
        for _ in 0..n {
            match client.get(&url).send().await.unwrap().status().as_u16() {
                200 => {}
                502 => failed += 1,
                other => panic!("{host}: {other}"),
            }
        }
        assert_eq!(
            failed,
            n / 2,
            "{host}: round robin puts every other request on the broken endpoint"
        );
        if let Some(flaky) = flaky {
            assert_eq!(flaky.failed(), 5, "{host}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Timeouts

#[tokio::test]
async fn a_hanging_endpoint_gets_504_after_the_read_timeout() {
    let hang = Hang::start().await.unwrap();
    let mut objects = world(
        vec![route(
            "hang.example",
            "hang",
            &[("proxy-read-timeout", "1")],
        )],
        &[],
    );
    objects.extend(service_at("hang", &[hang.addr()]));
    let proxy = Proxy::start(objects).await;
    let started = Instant::now();
    let response = proxy
        .http1(&["hang.example"])
        .get(proxy.url_for("hang.example", "/"))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 504);
    assert_eq!(response.headers()["server"], "vestibule");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&elapsed),
        "504 after {elapsed:?}"
    );
    assert_eq!(hang.requests(), 1, "the request reached the endpoint once");
}

#[tokio::test]
async fn attempts_stop_at_the_tries_and_the_next_upstream_timeout() {
    let hangs: Vec<Hang> = futures_util::future::join_all((0..8).map(|_| Hang::start()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let addrs: Vec<SocketAddr> = hangs.iter().map(Hang::addr).collect();
    let mut objects = world(
        vec![
            route("tries.example", "tries", &[("proxy-read-timeout", "200ms")]),
            route(
                "bounded.example",
                "bounded",
                &[
                    ("proxy-read-timeout", "300ms"),
                    ("proxy-next-upstream-tries", "0"),
                    ("proxy-next-upstream-timeout", "500ms"),
                ],
            ),
        ],
        &[],
    );
    objects.extend(service_at("tries", &addrs[..4]));
    objects.extend(service_at("bounded", &addrs[4..]));
    let proxy = Proxy::start(objects).await;
    let client = proxy.http1(&["tries.example", "bounded.example"]);
    let attempts =
        |range: std::ops::Range<usize>| -> usize { hangs[range].iter().map(Hang::requests).sum() };
    // Three attempts by default, each timing out, on three of the four endpoints.
    let started = Instant::now();
    let response = client
        .get(proxy.url_for("tries.example", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(attempts(0..4), 3);
    assert!(started.elapsed() >= Duration::from_millis(600));
    // No limit on the tries, but no attempt starts after 500 ms: the second one (at 300 ms)
    // does, a third (at 600 ms) does not.
    let started = Instant::now();
    let response = client
        .get(proxy.url_for("bounded.example", "/"))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 504);
    assert_eq!(attempts(4..8), 2, "after {elapsed:?}");
    assert!(elapsed < Duration::from_millis(900), "{elapsed:?}");
}

/// docs/annotations.md: `proxy-read-timeout` bounds "the wait for the response headers and the
/// pause between two reads of the response body; neither bounds a whole slow transfer that
/// keeps moving". An upload that takes longer than the read timeout but never pauses for long
/// must go through (nginx starts `proxy_read_timeout` once the request is sent).
#[tokio::test]
async fn a_slow_upload_that_keeps_moving_is_not_cut_by_the_read_timeout() {
    let echo = Echo::start("echo").await.unwrap();
    let proxy = Proxy::start(world(
        vec![route(
            "upload.example",
            "web",
            &[("proxy-read-timeout", "1"), ("proxy-send-timeout", "1")],
        )],
        &[("web", &[&echo])],
    ))
    .await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // Whatever comes back, read while the upload goes on.
    let response = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf).await;
        buf
    });
    let upload = async {
        writer
            .write_all(
                b"POST /upload HTTP/1.1\r\nHost: upload.example\r\n\
                  Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            )
            .await?;
        // 1.8 s in all, a chunk every 150 ms.
        for _ in 0..12 {
            writer.write_all(b"400\r\n").await?;
            writer.write_all(&[b'u'; 1024]).await?;
            writer.write_all(b"\r\n").await?;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        writer.write_all(b"0\r\n\r\n").await
    };
    let started = Instant::now();
    let sent = upload.await;
    let buf = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .unwrap()
        .unwrap();
    let response = parse_response(&buf).unwrap();
    assert_eq!(
        response.status,
        200,
        "after {:?} (upload: {sent:?}): {}",
        started.elapsed(),
        response.body_text()
    );
    assert_eq!(echo_reply(&response).body_len, 12 * 1024);
}

/// docs/annotations.md: `proxy-send-timeout` bounds "the pause between two writes of the
/// request to the upstream". An upstream that accepts the connection and then stops reading
/// the body must not hold the request (and the client) forever.
#[tokio::test]
async fn an_upstream_that_stops_reading_the_body_is_given_up_after_the_send_timeout() {
    // Accepts, and never reads: the body fills the socket buffers, then nothing moves.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let deaf = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut objects = world(
        vec![route(
            "deaf.example",
            "deaf",
            &[
                ("proxy-body-size", "0"),
                ("proxy-send-timeout", "1"),
                ("proxy-read-timeout", "1"),
            ],
        )],
        &[],
    );
    objects.extend(service_at("deaf", &[deaf]));
    let proxy = Proxy::start(objects).await;
    let total: usize = 64 << 20;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let upload = tokio::spawn(async move {
        let head = format!(
            "PUT / HTTP/1.1\r\nHost: deaf.example\r\nContent-Length: {total}\r\n\
             Connection: close\r\n\r\n"
        );
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b'd'; 64 * 1024];
        for _ in 0..total / chunk.len() {
            writer.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(writer)
    });
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(6), reader.read_to_end(&mut buf)).await;
    upload.abort();
    held.abort();
    assert!(
        read.is_ok(),
        "no answer {:?} after the upstream stopped reading",
        started.elapsed()
    );
    let response = parse_response(&buf).unwrap();
    assert!(
        response.status == 504 || response.status == 502,
        "{}",
        response.body_text()
    );
}

/// A listening socket whose accept queue is full, so that Linux drops further SYNs and a
/// connection attempt gets no answer at all (as a blackholed address would), on any network.
struct Unanswered {
    addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _queued: Vec<TcpStream>,
}

async fn unanswered() -> Unanswered {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(e)) => panic!("connecting to the full listener: {e}"),
            Err(_) => {
                return Unanswered {
                    addr,
                    _listener: listener,
                    _queued: queued,
                };
            }
        }
    }
    panic!("the accept queue never filled up");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_unanswered_connect_times_out_with_504_or_is_retried() {
    let nobody = unanswered().await;
    let echo = Echo::start("echo").await.unwrap();
    let mut objects = world(
        vec![
            route(
                "lost.example",
                "lost",
                &[("proxy-connect-timeout", "300ms")],
            ),
            route(
                "lost-or-ok.example",
                "half",
                &[("proxy-connect-timeout", "300ms")],
            ),
        ],
        &[],
    );
    objects.extend(service_at("lost", &[nobody.addr]));
    objects.extend(service_at("half", &[nobody.addr, echo.addr()]));
    let proxy = Proxy::start(objects).await;
    let client = proxy.http1(&["lost.example", "lost-or-ok.example"]);
    let started = Instant::now();
    let response = client
        .get(proxy.url_for("lost.example", "/"))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(
        (Duration::from_millis(250)..Duration::from_secs(2)).contains(&elapsed),
        "504 after {elapsed:?}"
    );
    // Nothing was sent: the request goes to the other endpoint instead.
    for _ in 0..2 {
        let response = client
            .post(proxy.url_for("lost-or-ok.example", "/"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(echo_of(response).await.name, "echo");
    }
}

// ---------------------------------------------------------------------------------------------
// Broken responses

#[tokio::test]
async fn a_reset_mid_response_is_a_body_error_for_http1_and_a_stream_error_for_h2() {
    let reset = ResetMidResponse::start().await.unwrap();
    let echo = Echo::start("healthy").await.unwrap();
    let mut objects = world(
        vec![
            route("reset.example", "reset", &[]),
            route("ok.example", "ok", &[]),
        ],
        &[("ok", &[&echo])],
    );
    objects.extend(service_at("reset", &[reset.addr()]));
    let proxy = Proxy::start(objects).await;

    // HTTP/1.1: the head arrived, the body fails instead of hanging.
    let client = proxy.http1(&["reset.example"]);
    let response = client
        .get(proxy.url_for("reset.example", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        ResetMidResponse::PROMISED.to_string().as_str()
    );
    let body = tokio::time::timeout(Duration::from_secs(5), response.bytes())
        .await
        .expect("the body should fail, not hang");
    assert!(body.is_err(), "a truncated body was accepted as complete");

    // HTTP/2: one connection; the broken stream fails, a stream open at the same time and
    // the next ones are served.
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let get = |host: &str, path: &str| {
        let mut sender = sender.clone();
        let request = http::Request::get(format!("http://{host}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        async move {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            Ok::<_, hyper::Error>((status, body))
        }
    };
    let (broken, concurrent) = tokio::join!(
        get("reset.example", "/"),
        get("ok.example", "/?delay_ms=300")
    );
    let (status, body) = broken.unwrap();
    assert_eq!(status, 200);
    assert!(body.is_err(), "the reset stream's body should fail");
    let (status, body) = concurrent.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<EchoReply>(&body.unwrap())
            .unwrap()
            .name,
        "healthy"
    );
    for _ in 0..3 {
        let (status, body) = get("ok.example", "/after").await.unwrap();
        assert_eq!(status, 200);
        assert!(body.is_ok());
    }
    assert!(!sender.is_closed());
    assert_eq!(reset.requests(), 2);
}

#[tokio::test]
async fn a_502_keeps_the_http1_connection_for_the_next_request() {
    let flaky = Flaky::start(2).await.unwrap();
    let echo = Echo::start("healthy").await.unwrap();
    let mut objects = world(
        vec![
            route("closes.example", "closes", &[]),
            route("ok.example", "ok", &[]),
        ],
        &[("ok", &[&echo])],
    );
    objects.extend(service_at("closes", &[flaky.addr()]));
    let proxy = Proxy::start(objects).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let request = |method: &str, host: &str, body: &'static str| {
        http::Request::builder()
            .method(method)
            .uri("/")
            .header("host", host)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    for (method, body) in [("POST", "an order"), ("GET", "")] {
        let response = sender
            .send_request(request(method, "closes.example", body))
            .await
            .unwrap();
        assert_eq!(response.status(), 502, "{method}");
        response.into_body().collect().await.unwrap();
        sender
            .ready()
            .await
            .expect("the connection stays open after a 502");
        let response = sender
            .send_request(request("GET", "ok.example", ""))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            serde_json::from_slice::<EchoReply>(&body).unwrap().name,
            "healthy"
        );
    }
    assert_eq!(flaky.failed(), 2);
    assert!(!connection.is_finished());
}

// ---------------------------------------------------------------------------------------------
// Passive health

#[tokio::test]
async fn two_refusals_eject_an_endpoint_without_waiting_for_anything() {
    let echo = Echo::start("echo").await.unwrap();
    let mut objects = world(
        vec![route(
            "health.example",
            "half",
            &[("proxy-next-upstream", "off")],
        )],
        &[],
    );
    let refused = Refused::new().unwrap();
    objects.extend(service_at("half", &[refused.addr(), echo.addr()]));
    let proxy = Proxy::start(objects).await;
    let client = proxy.http1(&["health.example"]);
    let url = proxy.url_for("health.example", "/");
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..24 {
        statuses.push(client.get(&url).send().await.unwrap().status().as_u16());
    }
    // Round robin alternates: the refused endpoint's turns are two of the first four, and
    // with retries off each is a 502. Then it is out, and every request reaches the echo.
    assert_eq!(
        statuses.iter().filter(|&&s| s == 502).count(),
        2,
        "{statuses:?}"
    );
    assert!(statuses[4..].iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(echo.hits(), 22);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn an_ejected_endpoint_is_still_tried_when_it_is_the_only_one() {
    let refused = Refused::new().unwrap();
    let addr = refused.addr();
    let mut objects = world(
        vec![route(
            "lonely.example",
            "lonely",
            &[("proxy-next-upstream", "off")],
        )],
        &[],
    );
    objects.extend(service_at("lonely", &[addr]));
    let proxy = Proxy::start(objects).await;
    let client = proxy.http1(&["lonely.example"]);
    let url = proxy.url_for("lonely.example", "/");
    // Two refusals eject it; being the only one, it is still tried: 502, never 503.
    for _ in 0..4 {
        assert_eq!(client.get(&url).send().await.unwrap().status(), 502);
    }
    // It comes back on the same address: served at once, without waiting out the back-off.
    let echo = Echo::bind("back", addr).await.unwrap();
    assert_eq!(answered_by(&client, &url).await, "back");
    assert_eq!(echo.hits(), 1);
}

// ---------------------------------------------------------------------------------------------
// Rolling update

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoints_replaced_one_by_one_under_load_fail_no_request() {
    let mut live: Vec<Echo> = echoes("v0-", 3).await;
    let objects = |live: &[Echo]| {
        let refs: Vec<&Echo> = live.iter().collect();
        world(vec![route("roll.example", "web", &[])], &[("web", &refs)])
    };
    let proxy = Proxy::start(objects(&live)).await;
    let client = proxy.http1(&["roll.example"]);
    let url = proxy.url_for("roll.example", "/");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, stop, ok, failures) = (
                client.clone(),
                url.clone(),
                stop.clone(),
                ok.clone(),
                failures.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => r
                            .json::<EchoReply>()
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    };
                    match outcome {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failures.lock().unwrap().push(e);
                            0
                        }
                    };
                }
            })
        })
        .collect();

    let mut new_hits = BTreeMap::new();
    for generation in 1..=3 {
        for i in 0..3 {
            let name = format!("v{generation}-{i}");
            live.push(Echo::start(&name).await.unwrap());
            proxy.install(objects(&live));
            let newest = live.last().unwrap();
            wait_until(&format!("{name} serving"), || newest.hits() >= 5).await;
            let old = live.remove(0);
            proxy.install(objects(&live));
            // Requests that picked the old endpoint on the previous table may still connect
            // after it is gone: they are refused and go elsewhere.
            drop(old);
            let before = ok.load(Ordering::Relaxed);
            wait_until("traffic after the removal", || {
                ok.load(Ordering::Relaxed) >= before + 20
            })
            .await;
        }
        for echo in &live {
            new_hits.insert(echo.name().to_owned(), echo.hits());
        }
    }
    let before = ok.load(Ordering::Relaxed);
    wait_until("more traffic on the last table", || {
        ok.load(Ordering::Relaxed) >= (before + 100).max(400)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let done = ok.load(Ordering::Relaxed);
    assert!(done >= 400, "only {done} requests");
    assert_eq!(new_hits.len(), 9);
    for (name, hits) in &new_hits {
        assert!(*hits > 0, "{name} got no traffic");
    }
    let names: Vec<&str> = live.iter().map(Echo::name).collect();
    assert_eq!(names, ["v3-0", "v3-1", "v3-2"]);
}

// ---------------------------------------------------------------------------------------------
// Limits

#[tokio::test]
async fn a_content_length_over_the_limit_gets_413_without_touching_the_upstream() {
    let echo = Echo::start("echo").await.unwrap();
    let proxy = Proxy::start(world(
        vec![
            route("default.example", "web", &[]),
            route("small.example", "web", &[("proxy-body-size", "8k")]),
        ],
        &[("web", &[&echo])],
    ))
    .await;
    for (host, length) in [
        ("default.example", (1 << 20) + 1),
        ("small.example", 8 * 1024 + 1),
    ] {
        // The head alone: Vestibule must answer without waiting for the body.
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n\
             Connection: close\r\n\r\n"
        );
        let response = exchange(proxy.addr, head.as_bytes()).await.unwrap();
        assert_eq!(response.status, 413, "{host}");
        assert_eq!(response.header("server"), Some("vestibule"));
        assert!(
            response.body_text().starts_with("413"),
            "{}",
            response.body_text()
        );
    }
    // HTTP/2, where the length is announced the same way.
    let h2 = proxy.h2c(&["small.example"]);
    let response = h2
        .post(proxy.url_for("small.example", "/"))
        .body(vec![b'x'; 8 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(echo.received(), 0, "the upstream was not contacted");
    // At the limit: accepted.
    let client = proxy.http1(&["default.example", "small.example"]);
    for (host, length) in [("default.example", 1 << 20), ("small.example", 8 * 1024)] {
        let response = client
            .post(proxy.url_for(host, "/"))
            .body(vec![b'x'; length])
            .send()
            .await
            .unwrap();
        assert_eq!(echo_of(response).await.body_len, length, "{host}");
    }
}

fn chunked(total: usize, chunk: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        body.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        body.extend(std::iter::repeat_n(b'x', n));
        body.extend_from_slice(b"\r\n");
        left -= n;
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// A backend that never answers and records, per connection, every byte it received until
/// the peer closed.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let _ = stream.read_to_end(&mut buf).await;
                    record.lock().unwrap().push(buf);
                });
            }
        });
        Recorder { addr, seen, task }
    }

    fn closed(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_413() {
    let echo = Echo::start("echo").await.unwrap();
    let recorder = Recorder::start().await;
    let mut objects = world(
        vec![
            route("small.example", "web", &[("proxy-body-size", "8k")]),
            route("record.example", "record", &[("proxy-body-size", "8k")]),
        ],
        &[("web", &[&echo])],
    );
    objects.extend(service_at("record", &[recorder.addr]));
    let proxy = Proxy::start(objects).await;
    let head = |host: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n"
        )
        .into_bytes()
    };
    // Under the limit, a chunked body streams through.
    let mut request = head("small.example");
    request.extend(chunked(6 * 1024, 1024));
    let response = exchange(proxy.addr, &request).await.unwrap();
    assert_eq!(echo_reply(&response).body_len, 6 * 1024);

    // Over it, sent whole: the size was unknown up front, so the upstream got the head and
    // the start of the body, but the client gets 413, as no response had started.
    let mut request = head("record.example");
    request.extend(chunked(16 * 1024, 1024));
    let response = exchange(proxy.addr, &request).await.unwrap();
    assert_eq!(response.status, 413, "{}", response.body_text());
    assert_eq!(response.header("server"), Some("vestibule"));

    // A client that sends just past the limit and then waits gets its 413 as well.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(&head("record.example")).await.unwrap();
    let partial = chunked(9 * 1024, 1024);
    stream
        .write_all(&partial[..partial.len() - b"0\r\n\r\n".len()])
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("413 without waiting for the rest of the body")
        .unwrap();
    assert_eq!(parse_response(&buf).unwrap().status, 413);

    // The upstream connections were closed mid-body: never a complete request, and never
    // more of the body than the limit.
    wait_until("the upstream connections closed", || {
        recorder.closed().len() == 2
    })
    .await;
    for received in recorder.closed() {
        let text = String::from_utf8_lossy(&received).to_ascii_lowercase();
        assert!(text.starts_with("post / http/1.1\r\n"), "{text}");
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert!(
            !text.ends_with("0\r\n\r\n"),
            "a complete request was forwarded"
        );
        let head_end = text.find("\r\n\r\n").unwrap() + 4;
        assert!(
            received.len() - head_end <= 8 * 1024 + 256,
            "{} body bytes forwarded",
            received.len() - head_end
        );
    }
}

#[tokio::test]
async fn body_size_zero_means_unlimited() {
    let echo = Echo::start("echo").await.unwrap();
    let proxy = Proxy::start(world(
        vec![route("big.example", "web", &[("proxy-body-size", "0")])],
        &[("web", &[&echo])],
    ))
    .await;
    let response = proxy
        .http1(&["big.example"])
        .post(proxy.url_for("big.example", "/"))
        .body(vec![b'x'; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(echo_of(response).await.body_len, 2 << 20);
    let mut request = b"PUT / HTTP/1.1\r\nHost: big.example\r\nTransfer-Encoding: chunked\r\n\
                        Connection: close\r\n\r\n"
        .to_vec();
    request.extend(chunked(3 << 20, 64 * 1024));
    let response = exchange(proxy.addr, &request).await.unwrap();
    assert_eq!(echo_reply(&response).body_len, 3 << 20);
}

#[tokio::test]
async fn a_long_target_gets_414_and_large_headers_431_without_touching_the_upstream() {
    let echo = Echo::start("echo").await.unwrap();
    let proxy = Proxy::start(world(
        vec![route("limits.example", "web", &[])],
        &[("web", &[&echo])],
    ))
    .await;
    let long_path = format!("/{}", "a".repeat(9 * 1024));
    let request =
        format!("GET {long_path} HTTP/1.1\r\nHost: limits.example\r\nConnection: close\r\n\r\n");
    let response = exchange(proxy.addr, request.as_bytes()).await.unwrap();
    assert_eq!(response.status, 414);
    let padding: String = (0..40)
        .map(|i| format!("x-pad-{i:02}: {}\r\n", "p".repeat(1024)))
        .collect();
    let request =
        format!("GET / HTTP/1.1\r\nHost: limits.example\r\n{padding}Connection: close\r\n\r\n");
    let response = exchange(proxy.addr, request.as_bytes()).await.unwrap();
    assert_eq!(response.status, 431);
    // Also over HTTP/2, where the head is HPACK-compressed.
    let h2 = proxy.h2c(&["limits.example"]);
    let response = h2
        .get(proxy.url_for("limits.example", &long_path))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 414);
    let mut request = h2.get(proxy.url_for("limits.example", "/"));
    for i in 0..40 {
        request = request.header(format!("x-pad-{i:02}"), "p".repeat(1024));
    }
    assert_eq!(request.send().await.unwrap().status(), 431);
    assert_eq!(echo.received(), 0);
    // Just under both limits: served.
    let path = format!("/{}", "a".repeat(8 * 1024 - 1));
    let padding: String = (0..30)
        .map(|i| format!("x-pad-{i:02}: {}\r\n", "p".repeat(1024)))
        .collect();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: limits.example\r\n{padding}Connection: close\r\n\r\n"
    );
    let response = exchange(proxy.addr, request.as_bytes()).await.unwrap();
    assert_eq!(echo_reply(&response).path, path);
}

// ---------------------------------------------------------------------------------------------
// Client IP

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
    let echo = Echo::start("echo").await.unwrap();
    let proxy = Proxy::start(world(
        vec![route("ip.example", "web", &[])],
        &[("web", &[&echo])],
    ))
    .await;
    for client in [proxy.http1(&["ip.example"]), proxy.h2c(&["ip.example"])] {
        let response = client
            .get(proxy.url_for("ip.example", "/"))
            .header("x-forwarded-for", "1.2.3.4")
            .header("x-real-ip", "5.6.7.8")
            .send()
            .await
            .unwrap();
        let seen = echo_of(response).await;
        assert_eq!(seen.headers["x-forwarded-for"], ["127.0.0.1"]);
        assert_eq!(seen.headers["x-real-ip"], ["127.0.0.1"]);
    }
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_peer_are_believed() {
    let echo = Echo::start("echo").await.unwrap();
    let proxy = Proxy::start_with(
        world(vec![route("ip.example", "web", &[])], &[("web", &[&echo])]),
        settings_trusting(&["127.0.0.1/32"]),
        Duration::from_secs(5),
    )
    .await;
    let client = proxy.http1(&["ip.example"]);
    let url = proxy.url_for("ip.example", "/");
    let seen = echo_of(
        client
            .get(&url)
            .header("x-forwarded-for", "1.2.3.4")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen.header("x-forwarded-for"), Some("1.2.3.4, 127.0.0.1"));
    assert_eq!(seen.header("x-real-ip"), Some("1.2.3.4"));
    // Recursive: trusted addresses in the chain are skipped, right to left.
    let seen = echo_of(
        client
            .get(&url)
            .header("x-forwarded-for", "9.9.9.9, 1.2.3.4, 127.0.0.1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen.header("x-real-ip"), Some("1.2.3.4"));
    // Without X-Forwarded-For, the trusted peer's X-Real-IP.
    let seen = echo_of(
        client
            .get(&url)
            .header("x-real-ip", "5.6.7.8")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen.header("x-real-ip"), Some("5.6.7.8"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test]
async fn hashing_by_remote_addr_uses_the_real_client() {
    let backends = echoes("ra", 4).await;
    let refs: Vec<&Echo> = backends.iter().collect();
    let objects = || {
        world(
            vec![route(
                "ra.example",
                "web",
                &[("upstream-hash-by", "$remote_addr")],
            )],
            &[("web", &refs)],
        )
    };
    let trusting = Proxy::start_with(
        objects(),
        settings_trusting(&["127.0.0.1"]),
        Duration::from_secs(5),
    )
    .await;
    let untrusting = Proxy::start(objects()).await;
    for (proxy, trusted) in [(&trusting, true), (&untrusting, false)] {
        let client = proxy.http1(&["ra.example"]);
        let mut owner: HashMap<String, String> = HashMap::new();
        for _ in 0..2 {
            for k in 0..30 {
                let ip = format!("198.51.100.{k}");
                let response = client
                    .get(proxy.url_for("ra.example", "/"))
                    .header("x-forwarded-for", &ip)
                    .send()
                    .await
                    .unwrap();
                let name = echo_of(response).await.name;
                assert_eq!(
                    *owner.entry(ip.clone()).or_insert(name.clone()),
                    name,
                    "{ip}"
                );
            }
        }
        let used: BTreeSet<&String> = owner.values().collect();
        if trusted {
            assert!(used.len() >= 3, "30 clients landed on {used:?}");
        } else {
            assert_eq!(
                used.len(),
                1,
                "an untrusted claim moved the client: {used:?}"
            );
        }
    }
}

#[tokio::test]
async fn proxy_protocol_gives_the_client_address_and_is_required() {
    let echo = Echo::start("echo").await.unwrap();
    let settings = ProxySettings {
        proxy_protocol: true,
        ..ProxySettings::default()
    };
    let proxy = Proxy::start_with(
        world(vec![route("pp.example", "web", &[])], &[("web", &[&echo])]),
        settings,
        Duration::from_secs(5),
    )
    .await;
    let request = b"GET / HTTP/1.1\r\nHost: pp.example\r\nX-Forwarded-For: 1.2.3.4\r\n\
                    Connection: close\r\n\r\n";
    let v4: SocketAddr = "203.0.113.9:41000".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::7]:41000".parse().unwrap();
    let cases = [
        ("v1", proxy_protocol::v1(v4, proxy.addr), "203.0.113.9"),
        ("v1 IPv6", proxy_protocol::v1(v6, proxy.addr), "2001:db8::7"),
        ("v2", proxy_protocol::v2(v4, proxy.addr, &[]), "203.0.113.9"),
        (
            "v2 IPv6 with TLVs",
            proxy_protocol::v2(v6, proxy.addr, &[(0x01, b"h2"), (0x05, b"id-1")]),
            "2001:db8::7",
        ),
    ];
    for (label, header, client) in cases {
        let mut bytes = header;
        bytes.extend_from_slice(request);
        let seen = echo_reply(&exchange(proxy.addr, &bytes).await.unwrap());
        assert_eq!(seen.header("x-real-ip"), Some(client), "{label}");
        assert_eq!(seen.header("x-forwarded-for"), Some(client), "{label}");
    }
    assert_eq!(echo.hits(), 4);
    // Straight HTTP, without the header: closed without a response.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("closed at once");
    match read {
        Ok(n) => assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert_eq!(echo.received(), 4);
}
