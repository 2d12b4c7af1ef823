//! `vestibule explain`: what Vestibule would do with one request, and why, from the table
//! compiled as `run` compiles it (manifests, or the cluster read with list calls); and the
//! request's description shared with the admin server's `/debug/explain`.

use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Context;
use vestibule_controller::ManifestSource;
use vestibule_controller::kubernetes::{self, Scope};
use vestibule_model::{Explanation, Probe, Verdict};
use vestibule_translate::{Options, Snapshot, compile};

use crate::cli::{ExplainArgs, ExplainOutput};

/// Exit status for usage and read errors, as `check` uses it.
const USAGE: u8 = 2;

pub(crate) fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let mut err = std::io::stderr().lock();
    let request = match Request::new(&args.headers, &args.cookie) {
        Ok(request) => request,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(ExitCode::from(USAGE));
        }
    };
    let mut options = match args.compile.options() {
        Ok(options) => options,
        Err(e) => {
            writeln!(err, "error: {e:#}")?;
            return Ok(ExitCode::from(USAGE));
        }
    };
    options.proxy = args.proxy.policy();
    let snapshot = match read(&args, &options, &mut err) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            writeln!(err, "error: {e:#}")?;
            return Ok(ExitCode::from(USAGE));
        }
    };
    let compiled = compile(&snapshot, &options);
    let probe = Probe {
        host: &args.host,
        target: &args.path,
        method: &args.method,
        https: args.https,
        client: args.client_ip,
        headers: &request.headers,
        cookies: &request.cookies,
    };
    let explained = match compiled.table.explain(&probe) {
        Ok(explained) => explained,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(ExitCode::from(USAGE));
        }
    };
    let mut out = std::io::stdout().lock();
    match args.output {
        ExplainOutput::Json => writeln!(out, "{}", serde_json::to_string_pretty(&explained)?)?,
        ExplainOutput::Text => out.write_all(render(&explained).as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The objects to compile: the manifests, or the cluster (list calls only; Secrets too,
/// since whether a host has TLS decides its redirects).
fn read(args: &ExplainArgs, options: &Options, err: &mut impl Write) -> anyhow::Result<Snapshot> {
    if !args.manifests.is_empty() {
        let source = ManifestSource::open(args.manifests.clone())?;
        let current = source.current();
        for problem in &current.problems {
            writeln!(err, "warning: {problem}")?;
        }
        return Ok(current.snapshot);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let client = kubernetes::client(args.kubeconfig.as_deref())
            .await
            .context("connecting to the Kubernetes API (to explain offline, pass --manifests)")?;
        let scope = Scope::of(options);
        Ok(kubernetes::list_once(&client, &scope, true).await?)
    })
}

/// A request's header fields and cookies, as `explain` and `/debug/explain` take them.
#[derive(Debug, Default)]
pub(crate) struct Request {
    pub headers: Vec<(String, String)>,
    pub cookies: Vec<(String, String)>,
}

impl Request {
    /// `headers`: `Name: value`; `cookies`: `name=value`. A `Cookie` header's pairs count
    /// as cookies too.
    pub(crate) fn new(headers: &[String], cookies: &[String]) -> Result<Request, String> {
        let mut request = Request::default();
        for field in headers {
            let (name, value) = field
                .split_once(':')
                .filter(|(name, _)| is_token(name.trim()))
                .ok_or_else(|| format!("header {field:?} is not `Name: value`"))?;
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("cookie") {
                for pair in value.split(';') {
                    request.cookie(pair)?;
                }
            }
            request.headers.push((name.to_owned(), value.to_owned()));
        }
        for pair in cookies {
            request.cookie(pair)?;
        }
        Ok(request)
    }

    fn cookie(&mut self, pair: &str) -> Result<(), String> {
        let pair = pair.trim();
        if pair.is_empty() {
            return Ok(());
        }
        let (name, value) = pair
            .split_once('=')
            .filter(|(name, _)| is_token(name.trim()))
            .ok_or_else(|| format!("cookie {pair:?} is not `name=value`"))?;
        self.cookies
            .push((name.trim().to_owned(), value.trim().to_owned()));
        Ok(())
    }
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The explanation for a terminal.
pub(crate) fn render(e: &Explanation) -> String {
    let mut s = String::new();
    let r = &e.request;
    let scheme = if r.https { "https" } else { "http" };
    let query = r
        .query
        .as_deref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let client = r
        .client
        .map(|c: IpAddr| format!(" from {c}"))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "request   {} {scheme}://{}{}{query}{client}",
        r.method, r.host, r.path
    );
    let entry = e.host.entry.as_deref().unwrap_or("none");
    let regex = if e.host.regex { ", regex mode" } else { "" };
    let how = serde_json::to_value(e.host.how).unwrap_or_default();
    let how = how.as_str().unwrap_or("");
    let _ = writeln!(s, "host      {entry} ({how}{regex}): {}", e.host.reason);
    if !e.rules.is_empty() {
        let _ = writeln!(s, "rules");
        for c in &e.rules {
            let verdict = match c.verdict {
                Verdict::Won => "won",
                Verdict::Lost => "lost",
                Verdict::NoMatch => "no match",
                Verdict::Shadowed => "shadowed",
            };
            let rule = format!("{:?} {}", c.kind, c.path);
            let _ = writeln!(
                s,
                "  {verdict:<9} {rule:<24} {} ({})\n            {}",
                c.ingress, c.field, c.reason
            );
        }
    }
    let _ = writeln!(s, "phases");
    for p in &e.phases {
        let _ = writeln!(s, "  {:<15} {:<9} {}", p.phase, p.decision, p.reason);
    }
    if let Some(backend) = &e.backend {
        let side = match (backend.canary, backend.fallback) {
            (true, _) => " (canary)",
            (_, true) => " (default-backend)",
            _ => "",
        };
        let _ = writeln!(s, "service   {}{side}", backend.service);
        let endpoints = if backend.endpoints.is_empty() {
            "none ready".to_owned()
        } else {
            backend.endpoints.join(", ")
        };
        let _ = writeln!(s, "endpoints {endpoints}");
    }
    if let Some(p) = &e.policy {
        let tries = match p.next_upstream_tries {
            0 => "unlimited tries".to_owned(),
            n => format!("up to {n} tries"),
        };
        let balance = serde_json::to_value(&p.balance).unwrap_or_default();
        let balance = match &balance {
            serde_json::Value::String(name) => name.clone(),
            other => other.to_string(),
        };
        let body = p.body_size_limit.map_or("no body limit".to_owned(), |l| {
            format!("bodies up to {l} bytes")
        });
        let _ = writeln!(
            s,
            "policy    connect {:?}, send {:?}, read {:?}; {tries}; balance {balance}; {body}",
            p.connect_timeout, p.send_timeout, p.read_timeout
        );
    }
    let _ = writeln!(s, "outcome   {}", e.outcome);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_cookies_are_read_as_a_client_sends_them() {
        let request = Request::new(
            &["X-Canary: always".into(), "Cookie: a=1; b = 2".into()],
            &["c=3".into()],
        )
        .unwrap_or_default();
        assert_eq!(request.headers[0], ("X-Canary".into(), "always".into()));
        let cookies: Vec<&str> = request.cookies.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(cookies, ["a", "b", "c"]);
        assert!(Request::new(&["no colon".into()], &[]).is_err());
        assert!(Request::new(&["bad name: x".into()], &[]).is_err());
        assert!(Request::new(&[], &["novalue".into()]).is_err());
    }
}
