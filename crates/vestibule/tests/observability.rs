//! What an operator sees of the traffic through `vestibule run`: `/metrics` after a known
//! sequence of requests (parsed, not grepped), one access log line per request, and request
//! IDs kept, generated and echoed.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;
use vestibule_testkit::fixtures::{endpoint_slice, service};
use vestibule_testkit::manifests::Manifest;
use vestibule_testkit::misbehave::{Hang, Refused};
use vestibule_testkit::{Echo, EchoReply, ManifestDir, ingress, raw, svc};

/// One sample of the exposition: name, labels, value.
type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

/// Parses Prometheus/OpenMetrics text: `name{a="b",c="d"} value`, comments skipped.
fn parse_exposition(text: &str) -> Samples {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap();
                let mut labels = BTreeMap::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (key, after) = rest.split_once("=\"").unwrap();
                    let end = after.find('"').unwrap();
                    labels.insert(key.to_owned(), after[..end].to_owned());
                    rest = after[end + 1..].trim_start_matches(',');
                }
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        samples.push((name, labels, value.parse().unwrap()));
    }
    samples
}

/// The value of the one sample of `name` whose labels include all of `want`; 0 when absent.
fn value(samples: &Samples, name: &str, want: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    assert!(found.len() <= 1, "{name} {want:?} is ambiguous: {found:?}");
    found.first().copied().unwrap_or(0.0)
}

async fn scrape(v: &Vestibule) -> (String, Samples) {
    let response = reqwest::get(format!("http://{}/metrics", v.admin))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"));
    let text = response.text().await.unwrap();
    let samples = parse_exposition(&text);
    (text, samples)
}

/// A Service `name` whose endpoints are the given addresses.
fn service_at(dir: &ManifestDir, name: &str, addrs: &[SocketAddr]) {
    let svc = service("default", name).port("http", 80, 8080).build();
    let slices: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            endpoint_slice("default", &format!("{name}-{i}"), name)
                .port("http", i32::from(addr.port()))
                .ready(&addr.ip().to_string())
                .build()
        })
        .collect();
    let mut objects: Vec<&dyn Manifest> = vec![&svc];
    objects.extend(slices.iter().map(|s| s as &dyn Manifest));
    dir.write(&format!("svc-{name}.yaml"), &objects).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_access_log_after_a_known_sequence_of_requests() {
    let web = Echo::start("web").await.unwrap();
    let hang = Hang::start().await.unwrap();
    let dead = Refused::new().unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "web")
                .host("web.example")
                .prefix("/", svc("web", 80)),
            ingress("default", "dead")
                .annotation("nginx.ingress.kubernetes.io/proxy-next-upstream", "off")
                .host("dead.example")
                .prefix("/", svc("dead", 80)),
            ingress("default", "slow")
                .annotation("nginx.ingress.kubernetes.io/proxy-read-timeout", "300ms")
                .host("slow.example")
                .prefix("/", svc("slow", 80)),
            ingress("default", "retry")
                .host("retry.example")
                .prefix("/", svc("retry", 80)),
            ingress("default", "quiet")
                .annotation("nginx.ingress.kubernetes.io/enable-access-log", "false")
                .host("quiet.example")
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web])],
    );
    service_at(&dir, "dead", &[dead.addr()]);
    service_at(&dir, "slow", &[hang.addr()]);
    let refused = Refused::new().unwrap();
    service_at(&dir, "retry", &[refused.addr(), web.addr()]);
    let v = Vestibule::start(dir.path(), &["--access-log", "json"]);
    let client = v.client(&[
        "web.example",
        "dead.example",
        "slow.example",
        "retry.example",
        "quiet.example",
        "nowhere.example",
    ]);

    let mut expected_lines = 0;
    for _ in 0..3 {
        let response = client
            .get(v.url("web.example", "/a"))
            .header("user-agent", "metrics-test/1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        expected_lines += 1;
    }
    let posted = client
        .post(v.url("web.example", "/upload?x=1"))
        .body(vec![b'p'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    posted.bytes().await.unwrap();
    expected_lines += 1;
    let statuses = [
        ("nowhere.example", 404),
        ("dead.example", 502),
        ("slow.example", 504),
    ];
    for (host, status) in statuses {
        let response = client.get(v.url(host, "/")).send().await.unwrap();
        assert_eq!(response.status(), status, "{host}");
        response.bytes().await.unwrap();
        expected_lines += 1;
    }
    // Two requests over a refused and a working endpoint: at least one starts on the refused
    // one and is retried.
    for _ in 0..2 {
        let response = client
            .get(v.url("retry.example", "/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        expected_lines += 1;
    }
    // Not logged, but counted.
    let quiet = client
        .get(v.url("quiet.example", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(quiet.status(), 200);
    quiet.bytes().await.unwrap();

    let lines = v.wait_access_log(expected_lines);
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(records.len(), expected_lines, "{lines:#?}");
    assert!(records.iter().all(|r| r["host"] != "quiet.example"));
    // Both endpoints tried, in order: the refusing one, then the one that answered.
    let both = format!("{}, {}", refused.addr(), web.addr());
    let retried = records
        .iter()
        .filter(|r| r["upstream_status"] == "-, 200")
        .inspect(|r| assert_eq!(r["upstream_addr"], both.as_str(), "{r:#}"))
        .count();
    assert!(retried >= 1, "{records:#?}");

    let (text, samples) = scrape(&v).await;
    let requests = "vestibule_http_requests_total";
    let route = |ingress: &'static str, service: &'static str| {
        [
            ("namespace", "default"),
            ("ingress", ingress),
            ("service", service),
        ]
    };
    let with = |base: [(&'static str, &'static str); 3], method, status| {
        let mut labels = base.to_vec();
        labels.push(("method", method));
        labels.push(("status", status));
        labels
    };
    assert_eq!(
        value(&samples, requests, &with(route("web", "web"), "get", "2xx")),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(
            &samples,
            requests,
            &with(route("web", "web"), "post", "2xx")
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            requests,
            &with(route("quiet", "web"), "get", "2xx")
        ),
        1.0
    );
    let unrouted = [("namespace", ""), ("ingress", ""), ("service", "")];
    assert_eq!(
        value(&samples, requests, &with(unrouted, "get", "4xx")),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            requests,
            &with(route("dead", "dead"), "get", "5xx")
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            requests,
            &with(route("slow", "slow"), "get", "5xx")
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            requests,
            &with(route("retry", "retry"), "get", "2xx")
        ),
        2.0
    );
    // Upstream failures by kind, and the retries the log shows.
    let errors = "vestibule_upstream_errors_total";
    let kind = |base: [(&'static str, &'static str); 3], kind| {
        let mut labels = base.to_vec();
        labels.push(("kind", kind));
        labels
    };
    assert_eq!(
        value(&samples, errors, &kind(route("dead", "dead"), "refused")),
        1.0
    );
    assert_eq!(
        value(&samples, errors, &kind(route("slow", "slow"), "timeout")),
        1.0
    );
    assert_eq!(
        value(&samples, errors, &kind(route("retry", "retry"), "refused")),
        retried as f64
    );
    assert_eq!(
        value(
            &samples,
            "vestibule_upstream_retries_total",
            &route("retry", "retry")
        ),
        retried as f64
    );
    // The duration histogram counts the same requests; bodies are counted both ways.
    assert_eq!(
        value(
            &samples,
            "vestibule_http_request_duration_seconds_count",
            &with(route("web", "web"), "get", "2xx")
        ),
        3.0
    );
    assert_eq!(
        value(
            &samples,
            "vestibule_http_request_bytes_total",
            &route("web", "web")
        ),
        1000.0
    );
    assert!(
        value(
            &samples,
            "vestibule_http_response_bytes_total",
            &route("web", "web")
        ) > 0.0
    );
    // Configuration health.
    assert!(value(&samples, "vestibule_config_generation", &[]) >= 1.0);
    assert_eq!(
        value(&samples, "vestibule_config_ingresses_served", &[]),
        5.0
    );
    assert_eq!(
        value(&samples, "vestibule_config_objects", &[("kind", "ingress")]),
        5.0
    );
    assert!(
        value(
            &samples,
            "vestibule_connections_total",
            &[("listener", "http"), ("protocol", "http1")]
        ) >= 1.0
    );
    // No label value came from the request itself.
    assert!(!text.contains("nowhere.example"), "{text}");
    assert!(!text.contains("/upload"), "{text}");

    // The access log line of the POST, field by field.
    let post = records
        .iter()
        .find(|r| r["method"] == "POST")
        .expect("the POST is logged");
    assert_eq!(post["host"], format!("web.example:{}", v.http.port()));
    assert_eq!(post["path"], "/upload?x=1");
    assert_eq!(post["protocol"], "HTTP/1.1");
    assert_eq!(post["status"], 200);
    assert_eq!(post["bytes_received"], 1000);
    assert!(post["bytes_sent"].as_u64().unwrap() > 0);
    assert!(post["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(post["upstream_addr"], web.addr().to_string());
    assert_eq!(post["upstream_status"], "200");
    assert!(post["upstream_duration_ms"].as_f64().is_some());
    assert_eq!(post["namespace"], "default");
    assert_eq!(post["ingress"], "web");
    assert_eq!(post["service"], "web");
    assert_eq!(post["client_ip"], "127.0.0.1");
    assert_eq!(post["request_id"].as_str().unwrap().len(), 32);
    assert!(post["time"].as_str().unwrap().ends_with('Z'));
    let get = records.iter().find(|r| r["method"] == "GET").unwrap();
    assert_eq!(get["user_agent"], "metrics-test/1");
    let not_found = records.iter().find(|r| r["status"] == 404).unwrap();
    assert_eq!(not_found["ingress"], "");
    assert_eq!(not_found["upstream_addr"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_generated_and_echoed_and_traceparent_passes() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "web")
                .host("web.example")
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web])],
    );
    // No --access-log: the harness's `--log-format json` makes the access log JSON too.
    let v = Vestibule::start(dir.path(), &[]);
    let client = v.client(&["web.example", "nowhere.example"]);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    // Kept.
    let response = client
        .get(v.url("web.example", "/"))
        .header("x-request-id", "client-chosen-1")
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-1");
    let seen: EchoReply = response.json().await.unwrap();
    assert_eq!(seen.header("x-request-id"), Some("client-chosen-1"));
    assert_eq!(seen.header("traceparent"), Some(traceparent));

    // Generated, and the same one everywhere.
    let response = client.get(v.url("web.example", "/")).send().await.unwrap();
    let echoed = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(echoed.len(), 32);
    assert!(echoed.bytes().all(|b| b.is_ascii_hexdigit()));
    let seen: EchoReply = response.json().await.unwrap();
    assert_eq!(seen.header("x-request-id"), Some(echoed.as_str()));

    // On Vestibule's own answers too.
    let response = client
        .get(v.url("nowhere.example", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let own = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(own.len(), 32);

    let lines = v.wait_access_log(3);
    // Each serving thread writes its own lines in order; lines of different threads may
    // interleave, so the IDs are compared as a set.
    let mut ids: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    let mut want = vec!["client-chosen-1".to_owned(), echoed, own];
    want.sort();
    assert_eq!(ids, want);
}

/// A client whose request headers never finish gets 408, which no route's metrics can hold:
/// it is counted by listener, and both listeners' series are there from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeouts_are_counted_by_listener() {
    use tokio::io::AsyncWriteExt;
    let dir = ManifestDir::new().unwrap();
    write_world(&dir, vec![], &[]);
    let v = Vestibule::start(dir.path(), &["--client-header-timeout", "200ms"]);
    let timeouts = "vestibule_client_header_timeouts_total";
    let (_, samples) = scrape(&v).await;
    for listener in ["http", "https"] {
        let series = samples
            .iter()
            .filter(|(n, l, _)| {
                n == timeouts && l.get("listener").map(String::as_str) == Some(listener)
            })
            .count();
        assert_eq!(series, 1, "{listener}");
    }
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(v.http).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a.te")
            .await
            .unwrap();
        let response = raw::read_response(&mut stream, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.status, 408);
    }
    // Counted once the connection has closed, which the client sees first.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, samples) = scrape(&v).await;
        let http = value(&samples, timeouts, &[("listener", "http")]);
        if http == 2.0 {
            assert_eq!(value(&samples, timeouts, &[("listener", "https")]), 0.0);
            break;
        }
        assert!(http < 2.0, "{http}");
        assert!(std::time::Instant::now() < deadline, "408s counted: {http}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_can_be_text_or_off() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "web")
                .host("web.example")
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web])],
    );
    // Text, though `--log-format json` alone would make it JSON.
    let text = Vestibule::start(dir.path(), &["--access-log", "text"]);
    let client = text.client(&["web.example"]);
    let response = client
        .get(text.url("web.example", "/a\"b"))
        .header("user-agent", "evil\"agent")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    let lines = text.wait_access_log(1);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert!(line.starts_with("127.0.0.1 "), "{line}");
    assert!(line.contains(" 200 "), "{line}");
    assert!(line.contains("default/web/web"), "{line}");
    // Quotes from the client are escaped, so fields cannot be forged.
    assert!(line.contains("evil\\x22agent"), "{line}");
    // A pipe on standard output, as in a container, is widened to hold a batch of lines.
    #[cfg(target_os = "linux")]
    assert_eq!(text.stdout_pipe_size(), widened_pipe_size());

    let off = Vestibule::start(dir.path(), &["--access-log", "off"]);
    let client = off.client(&["web.example"]);
    for _ in 0..3 {
        let response = client
            .get(off.url("web.example", "/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    // The metrics saw all three: the requests are done, and nothing was logged.
    let (_, samples) = scrape(&off).await;
    assert_eq!(
        value(
            &samples,
            "vestibule_http_requests_total",
            &[("ingress", "web"), ("method", "get"), ("status", "2xx")]
        ),
        3.0
    );
    assert!(off.access_log().is_empty());
    // With no access log, standard output is left as it was given.
    #[cfg(target_os = "linux")]
    assert_eq!(off.stdout_pipe_size(), default_pipe_size());
}

/// 1 MiB, or the system's limit when lower.
#[cfg(target_os = "linux")]
fn widened_pipe_size() -> usize {
    let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    max.min(1 << 20).max(default_pipe_size())
}

/// What a new pipe holds on this system.
#[cfg(target_os = "linux")]
fn default_pipe_size() -> usize {
    let (read, _write) = rustix::pipe::pipe().unwrap();
    rustix::pipe::fcntl_getpipe_size(&read).unwrap()
}
