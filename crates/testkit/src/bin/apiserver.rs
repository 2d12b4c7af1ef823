//! `vestibule-test-apiserver`: the fake Kubernetes API server as a process, for running the
//! real Vestibule binary by hand and for benchmarks.
//!
//! Usage: `vestibule-test-apiserver [--addr 127.0.0.1:PORT] [--kubeconfig PATH]
//! [--ingresses N] [--secrets M] [--backend IP:PORT]`. Prints `listening on http://ADDR` once
//! ready. Each stdin line `touch N` adds a rule for a new host to Ingress N and prints
//! `applied rv=R host=HOST`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use k8s_openapi::api::networking::v1::Ingress;
use vestibule_testkit::apiserver::ApiServer;
use vestibule_testkit::certs;
use vestibule_testkit::fixtures::{
    endpoint_slice, ingress, ingress_class, service, svc, tls_secret,
};

const NAMESPACES: usize = 10;

#[derive(Debug)]
struct Args {
    addr: SocketAddr,
    kubeconfig: Option<PathBuf>,
    ingresses: usize,
    secrets: usize,
    backend: SocketAddr,
}

fn usage(problem: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "{problem}\nusage: vestibule-test-apiserver [--addr 127.0.0.1:PORT] [--kubeconfig PATH] \
             [--ingresses N] [--secrets M] [--backend IP:PORT]"
        ),
    )
}

fn parse_args() -> std::io::Result<Args> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        kubeconfig: None,
        ingresses: 0,
        secrets: 0,
        backend: SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| usage(&format!("{flag} needs a value")))?;
        let bad = |_| usage(&format!("bad value for {flag}: {value:?}"));
        match flag.as_str() {
            "--addr" => {
                args.addr = value
                    .parse()
                    .map_err(|e: std::net::AddrParseError| bad(e.to_string()))?
            }
            "--kubeconfig" => args.kubeconfig = Some(PathBuf::from(&value)),
            "--ingresses" => {
                args.ingresses = value
                    .parse()
                    .map_err(|e: std::num::ParseIntError| bad(e.to_string()))?
            }
            "--secrets" => {
                args.secrets = value
                    .parse()
                    .map_err(|e: std::num::ParseIntError| bad(e.to_string()))?
            }
            "--backend" => {
                args.backend = value
                    .parse()
                    .map_err(|e: std::net::AddrParseError| bad(e.to_string()))?
            }
            other => return Err(usage(&format!("unknown flag {other}"))),
        }
    }
    Ok(args)
}

fn namespace(i: usize) -> String {
    format!("scale-{}", i % NAMESPACES)
}

/// The scale world: an IngressClass, and per Ingress a Service and a ready EndpointSlice on
/// the backend; the first `secrets` Ingresses terminate TLS with one shared wildcard cert.
fn load(server: &ApiServer, args: &Args) {
    server.apply(&ingress_class("vestibule", "vestibule.dev/ingress-controller").build());
    let cert = (args.secrets > 0).then(|| certs::cert(&["*.scale.test"]));
    let backend_ip = args.backend.ip().to_string();
    let backend_port = i32::from(args.backend.port());
    for i in 0..args.ingresses {
        let ns = namespace(i);
        let host = format!("h{i}.scale.test");
        let service_name = format!("s{i}");
        let mut builder = ingress(&ns, &format!("i{i}"))
            .class("vestibule")
            .host(&host)
            .prefix("/", svc(&service_name, 80));
        if let Some(cert) = cert.as_ref().filter(|_| i < args.secrets) {
            let secret = format!("tls{i}");
            server.apply(&tls_secret(&ns, &secret, &cert.cert_pem, &cert.key_pem));
            builder = builder.tls(&[&host], &secret);
        }
        server.apply(&builder.build());
        server.apply(
            &service(&ns, &service_name)
                .port("http", 80, backend_port)
                .build(),
        );
        server.apply(
            &endpoint_slice(&ns, &format!("{service_name}-0"), &service_name)
                .port("http", backend_port)
                .ready(&backend_ip)
                .build(),
        );
    }
}

/// Adds a rule for the new host `t{counter}.h{i}.scale.test` to Ingress `i`, so a client can
/// tell when the change is served (404 before, 200 after). Returns the new RV and the host,
/// or None when the Ingress doesn't exist.
fn touch(server: &ApiServer, i: usize, counter: u64) -> Option<(u64, String)> {
    let mut ingress: Ingress = server.get(&namespace(i), &format!("i{i}"))?;
    let rules = ingress.spec.as_mut()?.rules.as_mut()?;
    let mut rule = rules.first()?.clone();
    let host = format!("t{counter}.h{i}.scale.test");
    rule.host = Some(host.clone());
    rules.push(rule);
    server.apply(&ingress);
    Some((server.resource_version(), host))
}

fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = parse_args()?;
    let server = ApiServer::bind(args.addr).await?;
    load(&server, &args);
    if let Some(path) = &args.kubeconfig {
        std::fs::write(path, server.kubeconfig())?;
    }
    say(&format!("listening on {}", server.url()))?;

    // Stdin is read on a plain thread: the tokio build here has no async stdin.
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut counter = 0u64;
    while let Some(line) = lines.recv().await {
        let Some(n) = line
            .trim()
            .strip_prefix("touch ")
            .and_then(|n| n.trim().parse::<usize>().ok())
        else {
            continue;
        };
        counter += 1;
        match touch(&server, n, counter) {
            Some((rv, host)) => say(&format!("applied rv={rv} host={host}"))?,
            None => say(&format!("no ingress {n}"))?,
        }
    }
    // Stdin closed: keep serving until killed.
    std::future::pending::<()>().await;
    Ok(())
}
