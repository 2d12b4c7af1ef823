//! Runs the real `vestibule` binary: ephemeral ports, JSON logs read from stderr to learn
//! the addresses, readiness awaited on `/readyz`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use vestibule_testkit::fixtures::{IngressBuilder, echo_service, ingress_class};
use vestibule_testkit::manifests::Manifest;
use vestibule_testkit::{Echo, EchoReply, ManifestDir, raw};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_vestibule");

pub(crate) struct Vestibule {
    child: Child,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<Value>>>,
    /// Lines on standard output: the access log.
    stdout: Arc<Mutex<Vec<String>>>,
    /// The reading end of the pipe on the process's standard output, for its size.
    #[cfg(target_os = "linux")]
    stdout_pipe: std::os::fd::OwnedFd,
}

impl Vestibule {
    /// Starts `vestibule run --manifests <dir> <extra...>` and waits until it is ready.
    pub(crate) fn start(manifests: &Path, extra: &[&str]) -> Vestibule {
        let mut command = Command::new(BIN);
        command
            .args([
                "run",
                "--log-format",
                "json",
                "--log-level",
                "info,vestibule=debug",
            ])
            .args(["--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0"])
            .args(["--admin-addr", "127.0.0.1:0"])
            .arg("--manifests")
            .arg(manifests)
            .args(extra);
        Self::spawn(command)
    }

    /// Starts `vestibule run` against the API server behind `kubeconfig`, as the replica
    /// `pod` of namespace `vestibule`, and waits until it is ready.
    pub(crate) fn cluster(kubeconfig: &Path, pod: &str, extra: &[&str]) -> Vestibule {
        Self::spawn(Self::cluster_command(kubeconfig, pod, extra))
    }

    pub(crate) fn cluster_command(kubeconfig: &Path, pod: &str, extra: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args([
                "run",
                "--log-format",
                "json",
                "--log-level",
                "info,vestibule=debug",
            ])
            .args(["--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0"])
            .args(["--admin-addr", "127.0.0.1:0"])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env("POD_NAME", pod)
            .env("POD_NAMESPACE", "vestibule")
            .env_remove("VESTIBULE_MANIFESTS")
            .args(extra);
        command
    }

    pub(crate) fn spawn(command: Command) -> Vestibule {
        let mut vestibule = Self::spawn_unready(command);
        vestibule.wait_ready();
        vestibule
    }

    /// Starts the process and waits for its listeners, not for readiness.
    pub(crate) fn spawn_unready(mut command: Command) -> Vestibule {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .spawn()
            .expect("starting vestibule");
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = child.stdout.take().expect("piped stdout");
        #[cfg(target_os = "linux")]
        let stdout_pipe = std::os::fd::AsFd::as_fd(&stdout)
            .try_clone_to_owned()
            .expect("duplicating the stdout pipe");
        let stdout_lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let out_sink = stdout_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                out_sink.lock().unwrap().push(line);
            }
        });
        let logs: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().unwrap().push(value);
            }
        });
        let mut vestibule = Vestibule {
            child,
            http: "0.0.0.0:0".parse().unwrap(),
            https: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            logs,
            stdout: stdout_lines,
            #[cfg(target_os = "linux")]
            stdout_pipe,
        };
        vestibule.http = vestibule.wait_for_listener("http");
        vestibule.https = vestibule.wait_for_listener("https");
        vestibule.admin = vestibule.wait_for_listener("admin");
        vestibule
    }

    fn wait_for_listener(&mut self, name: &str) -> SocketAddr {
        let found = self.wait_for_log(Duration::from_secs(30), |l| {
            l["message"] == "listening" && l["listener"] == name
        });
        found["address"].as_str().unwrap().parse().unwrap()
    }

    /// Waits for a log line matching `predicate`; panics with the log so far on timeout or
    /// if the process exits.
    pub(crate) fn wait_for_log(
        &mut self,
        timeout: Duration,
        predicate: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.logs.lock().unwrap().iter().find(|l| predicate(l)) {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("vestibule exited with {status}; log: {:#?}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "log line not seen; log: {:#?}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many bytes the pipe on the process's standard output holds.
    #[cfg(target_os = "linux")]
    pub(crate) fn stdout_pipe_size(&self) -> usize {
        rustix::pipe::fcntl_getpipe_size(&self.stdout_pipe).expect("F_GETPIPE_SZ")
    }

    /// The access log lines written so far.
    pub(crate) fn access_log(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until at least `n` access log lines were written.
    pub(crate) fn wait_access_log(&self, n: usize) -> Vec<String> {
        self.wait_access_log_until(&format!("{n} lines"), |lines| lines.len() >= n)
    }

    /// Waits until the access log lines written so far satisfy `done` (the log's writer
    /// flushes every 50 ms).
    pub(crate) fn wait_access_log_until(
        &self,
        what: &str,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.access_log();
            if done(&lines) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "access log: not {what} in time: {lines:#?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub(crate) fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    pub(crate) fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while admin_status(self.admin, "/readyz") != Some(200) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("vestibule exited with {status}; log: {:#?}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "not ready in time; log: {:#?}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "did not exit in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The admin server's `/metrics`, as text.
    pub(crate) async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The admin server's `/debug/config`.
    pub(crate) async fn config(&self) -> Value {
        reqwest::get(format!("http://{}/debug/config", self.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub(crate) fn generation(&self) -> u64 {
        let (_, body) = blocking_get(self.admin, "/debug/config").unwrap_or_default();
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["installed_generation"].as_u64())
            .unwrap_or(0)
    }

    /// Waits until a generation newer than `after` is installed.
    pub(crate) fn wait_generation(&self, after: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.generation();
            if now > after {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "no new configuration within 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.http.port())
    }

    pub(crate) fn client(&self, hosts: &[&str]) -> reqwest::Client {
        hosts
            .iter()
            .fold(reqwest::Client::builder(), |b, h| b.resolve(h, self.http))
            .build()
            .unwrap()
    }

    pub(crate) fn h2c(&self, hosts: &[&str]) -> reqwest::Client {
        hosts
            .iter()
            .fold(reqwest::Client::builder(), |b, h| b.resolve(h, self.http))
            .http2_prior_knowledge()
            .build()
            .unwrap()
    }
}

impl Drop for Vestibule {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny blocking HTTP/1.0 GET for the admin server, usable outside async code: the status
/// and the body.
pub(crate) fn blocking_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

pub(crate) fn admin_status(addr: SocketAddr, path: &str) -> Option<u16> {
    blocking_get(addr, path).map(|(status, _)| status)
}

/// Writes our IngressClass, the given Ingresses (with our class) and echo-backed Services,
/// each kind in its own file.
pub(crate) fn write_world(
    dir: &ManifestDir,
    ingresses: Vec<IngressBuilder>,
    services: &[(&str, &[&Echo])],
) {
    let class = ingress_class("vestibule", "vestibule.dev/ingress-controller").build();
    dir.write("class.yaml", &[&class]).unwrap();
    let ingresses: Vec<_> = ingresses
        .into_iter()
        .map(|i| i.class("vestibule").build())
        .collect();
    let refs: Vec<&dyn Manifest> = ingresses.iter().map(|i| i as &dyn Manifest).collect();
    dir.write("ingresses.yaml", &refs).unwrap();
    for (name, echoes) in services {
        write_service(dir, name, echoes);
    }
}

pub(crate) fn write_service(dir: &ManifestDir, name: &str, echoes: &[&Echo]) {
    let (service, slices) = echo_service("default", name, echoes);
    let mut objects: Vec<&dyn Manifest> = vec![&service];
    objects.extend(slices.iter().map(|s| s as &dyn Manifest));
    dir.write(&format!("svc-{name}.yaml"), &objects).unwrap();
}

// What the annotation tests share: keys, a raw GET, echoed replies, diagnostics.

pub(crate) const A: &str = "nginx.ingress.kubernetes.io/";

/// An Ingress `default/NAME` routing `NAME.example/` to Service `web` port 80.
pub(crate) fn site(name: &str) -> IngressBuilder {
    vestibule_testkit::ingress("default", name)
        .host(&format!("{name}.example"))
        .prefix("/", vestibule_testkit::svc("web", 80))
}

pub(crate) fn key(short: &str) -> String {
    format!("{A}{short}")
}

/// `GET target` to `host` through the plain listener, with extra header lines.
pub(crate) async fn get(v: &Vestibule, host: &str, target: &str, extra: &str) -> raw::RawResponse {
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    raw::send(v.http, &request, Duration::from_secs(10))
        .await
        .unwrap()
}

pub(crate) fn echoed(response: &raw::RawResponse) -> EchoReply {
    assert_eq!(response.status, 200, "{}", response.body_text());
    serde_json::from_slice(&response.body).unwrap()
}

/// Diagnostics of `/debug/config` as `severity namespace/name field: message`.
pub(crate) fn diagnostics(config: &Value) -> Vec<String> {
    config["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{} {}/{} {}: {}",
                d["severity"].as_str().unwrap_or(""),
                d["object"]["namespace"].as_str().unwrap_or(""),
                d["object"]["name"].as_str().unwrap_or(""),
                d["field"].as_str().unwrap_or(""),
                d["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

pub(crate) fn has(diagnostics: &[String], needles: &[&str]) -> bool {
    diagnostics
        .iter()
        .any(|d| needles.iter().all(|n| d.contains(n)))
}
