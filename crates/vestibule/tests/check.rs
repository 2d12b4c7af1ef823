//! `vestibule check`: the migration report through the real binary, from files and from an
//! API server: each verdict, the ConfigMap's keys, the three output formats, the exit codes,
//! and Secrets that never reach the output.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use base64::Engine as _;
use common::BIN;
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::Value;
use vestibule_testkit::apiserver::ApiServer;
use vestibule_testkit::fixtures::IngressBuilder;
use vestibule_testkit::{
    ManifestDir, endpoint_slice, ingress, ingress_class, service, svc, tls_secret,
};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn vestibule_check(args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .arg("check")
        .args(args)
        .env_remove("VESTIBULE_KUBECONFIG")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn nginx(name: &str) -> IngressBuilder {
    ingress("shop", name).class("nginx")
}

const NGINX: &str = "k8s.io/ingress-nginx";

/// The class `nginx` and the Services `web` and `api` with endpoints, then `ingresses`.
fn cluster(dir: &ManifestDir, ingresses: &[Ingress]) {
    let class = ingress_class("nginx", NGINX).build();
    let web = service("shop", "web").port("http", 80, 8080).build();
    let api = service("shop", "api").port("http", 80, 8080).build();
    let slice = endpoint_slice("shop", "web-1", "web")
        .port("http", 8080)
        .ready("10.0.0.1")
        .build();
    dir.write("base.yaml", &[&class, &web, &api, &slice])
        .unwrap();
    let objects: Vec<&dyn vestibule_testkit::manifests::Manifest> = ingresses
        .iter()
        .map(|i| i as &dyn vestibule_testkit::manifests::Manifest)
        .collect();
    dir.write("ingresses.yaml", &objects).unwrap();
}

fn path(dir: &ManifestDir) -> &str {
    dir.path().to_str().unwrap()
}

/// The verdict and the finding codes of one Ingress in a JSON report.
fn verdict_of(report: &Value, name: &str) -> (String, Vec<String>) {
    let ingress = report["ingresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {report:#}"));
    let codes = ingress["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_owned())
        .collect();
    (ingress["verdict"].as_str().unwrap().to_owned(), codes)
}

#[test]
fn a_plain_ingress_is_the_same_and_the_table_has_no_colour_off_a_terminal() {
    let dir = ManifestDir::new().unwrap();
    cluster(
        &dir,
        &[nginx("web")
            .host("shop.example")
            .prefix("/", svc("web", 80))
            .build()],
    );
    let run = vestibule_check(&[path(&dir)]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains('\x1b'), "{:?}", run.stdout);
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("shop/web"))
        .unwrap();
    assert!(row.contains("same"), "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "1 Ingress of class nginx (k8s.io/ingress-nginx): 1 same, 0 differ, 0 need work, 0 refused"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn differences_are_each_named_and_the_exit_status_stays_zero() {
    let dir = ManifestDir::new().unwrap();
    cluster(
        &dir,
        &[
            nginx("api")
                .created(1)
                .annotation("nginx.ingress.kubernetes.io/enable-cors", "true")
                .annotation(
                    "nginx.ingress.kubernetes.io/cors-allow-origin",
                    "https://app.shop.example",
                )
                .annotation("nginx.ingress.kubernetes.io/proxy-buffering", "on")
                .host("api.shop.example")
                .exact("/v1", svc("api", 80))
                .build(),
            nginx("legacy")
                .created(2)
                .annotation("nginx.ingress.kubernetes.io/rewrite-target", "/$2")
                .host("api.shop.example")
                .implementation_specific("/legacy(/|$)(.*)", svc("api", 80))
                .build(),
            nginx("docs")
                .host("docs.shop.example")
                .prefix("/guide/", svc("web", 80))
                .build(),
        ],
    );
    let run = vestibule_check(&[path(&dir), "--output", "json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report = json(&run);
    let (verdict, codes) = verdict_of(&report, "api");
    assert_eq!(verdict, "differs");
    for code in ["regex-host", "cors-origins", "no-op"] {
        assert!(codes.contains(&code.to_owned()), "{code} in {codes:?}");
    }
    let (verdict, codes) = verdict_of(&report, "docs");
    assert_eq!(verdict, "differs");
    assert_eq!(codes, ["trailing-slash-redirect"]);
    // The table names the Ingress that switched the host, and nginx's redirect.
    let table = vestibule_check(&[path(&dir)]);
    assert!(
        table.stdout.contains("because Ingress shop/legacy"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("301 to /guide/"), "{}", table.stdout);
}

#[test]
fn needing_work_spells_out_the_consequence_and_exits_one() {
    let dir = ManifestDir::new().unwrap();
    cluster(
        &dir,
        &[nginx("admin")
            .annotation("nginx.ingress.kubernetes.io/auth-type", "digest")
            .annotation(
                "nginx.ingress.kubernetes.io/mirror-target",
                "https://audit.example$request_uri",
            )
            .host("admin.shop.example")
            .prefix("/", svc("web", 80))
            .build()],
    );
    let run = vestibule_check(&[path(&dir)]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("shop/admin: needs work"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("[fail-closed]"), "{}", run.stdout);
    assert!(run.stdout.contains("paths answer 503"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("ignored: ingress-nginx copies each request to this URL"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("fix: use auth-type: basic"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_snippet_outside_the_safe_subset_is_refused_with_its_directive_and_replacement() {
    let dir = ManifestDir::new().unwrap();
    cluster(
        &dir,
        &[nginx("blog")
            .annotation(
                "nginx.ingress.kubernetes.io/configuration-snippet",
                "more_set_headers \"X-Frame-Options: DENY\";\nrewrite ^/old/(.*)$ /new/$1 permanent;\n",
            )
            .host("blog.shop.example")
            .prefix("/", svc("web", 80))
            .build()],
    );
    let run = vestibule_check(&[path(&dir), "--output", "json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let report = json(&run);
    let blog = &report["ingresses"][0];
    assert_eq!(blog["verdict"], "refused");
    let finding = &blog["findings"][0];
    assert_eq!(finding["code"], "snippet");
    assert_eq!(finding["snippet"]["covered"], false);
    assert_eq!(finding["snippet"]["line"], 2);
    assert_eq!(finding["snippet"]["directive"], "rewrite");
    assert!(
        finding["fix"].as_str().unwrap().contains("rewrite-target"),
        "{finding:#}"
    );
    assert_eq!(report["summary"]["refused"], 1);
}

#[test]
fn a_snippet_the_safe_subset_covers_is_applied_as_typed_rules() {
    let dir = ManifestDir::new().unwrap();
    cluster(
        &dir,
        &[nginx("static")
            .annotation(
                "nginx.ingress.kubernetes.io/configuration-snippet",
                "more_set_headers \"X-Frame-Options: DENY\";\nproxy_hide_header X-Powered-By;",
            )
            .host("static.shop.example")
            .prefix("/", svc("web", 80))
            .build()],
    );
    let run = vestibule_check(&[path(&dir), "--output", "json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report = json(&run);
    let finding = &report["ingresses"][0]["findings"][0];
    assert_eq!(report["ingresses"][0]["verdict"], "differs");
    assert_eq!(finding["code"], "snippet-applied");
    assert_eq!(finding["snippet"]["covered"], true);
    assert!(
        finding["message"]
            .as_str()
            .unwrap()
            .contains("applied as typed rules (2 directives)"),
        "{finding:#}"
    );
}

const CONFIG_MAP: &str = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: ingress-nginx-controller, namespace: ingress-nginx}
data:
  use-forwarded-headers: \"true\"
  proxy-real-ip-cidr: 10.0.0.0/8
  ssl-redirect: \"false\"
  proxy-body-size: 16m
  hsts: \"true\"
  log-format-upstream: $remote_addr $request
  allow-snippet-annotations: \"true\"
";

#[test]
fn configmap_keys_are_mapped_to_flags_or_to_why_not() {
    let dir = ManifestDir::new().unwrap();
    cluster(
        &dir,
        &[nginx("web")
            .host("shop.example")
            .prefix("/", svc("web", 80))
            .build()],
    );
    dir.write_raw("nginx-configmap.yaml", CONFIG_MAP).unwrap();
    let configmap = [
        "--nginx-configmap",
        "ingress-nginx/ingress-nginx-controller",
    ];
    let run = vestibule_check(&[&[path(&dir), "--output", "json"][..], &configmap[..]].concat());
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report = json(&run);
    let keys: Vec<&Value> = report["configmap"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let key = |name: &str| *keys.iter().find(|k| k["key"] == name).unwrap();
    assert_eq!(
        key("use-forwarded-headers")["flag"],
        "--trusted-proxies 10.0.0.0/8"
    );
    assert_eq!(key("ssl-redirect")["flag"], "--ssl-redirect false");
    assert_eq!(key("ssl-redirect")["status"], "flag");
    assert_eq!(key("proxy-body-size")["flag"], "--proxy-body-size 16m");
    assert_eq!(key("hsts")["status"], "default");
    assert_eq!(key("log-format-upstream")["status"], "no-equivalent");
    assert!(
        key("log-format-upstream")["note"]
            .as_str()
            .unwrap()
            .contains("fixed schemas")
    );
    assert_eq!(key("allow-snippet-annotations")["status"], "not-needed");
    // The Ingresses are checked as served with the flags the ConfigMap maps to.
    let notes = report["cluster"].to_string();
    assert!(notes.contains("--ssl-redirect false"), "{notes}");

    let table = vestibule_check(&[&[path(&dir)][..], &configmap[..]].concat());
    // Lines are wrapped: compare words.
    let words = table
        .stdout
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        words.contains("Vestibule: --trusted-proxies 10.0.0.0/8"),
        "{}",
        table.stdout
    );
    let markdown =
        vestibule_check(&[&[path(&dir), "--output", "markdown"][..], &configmap[..]].concat());
    assert!(
        markdown
            .stdout
            .contains("| `use-forwarded-headers` | `true` | flag |"),
        "{}",
        markdown.stdout
    );
}

#[test]
fn a_configmap_that_is_not_in_the_input_is_a_read_error() {
    let dir = ManifestDir::new().unwrap();
    cluster(&dir, &[]);
    let run = vestibule_check(&[path(&dir), "--nginx-configmap", "ingress-nginx/missing"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(
            "ConfigMap ingress-nginx/missing (--nginx-configmap) is not in the files read"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn json_output_carries_its_schema_and_every_verdict() {
    let dir = ManifestDir::new().unwrap();
    cluster(
        &dir,
        &[
            nginx("same")
                .host("a.example")
                .prefix("/", svc("web", 80))
                .build(),
            nginx("work")
                .annotation("nginx.ingress.kubernetes.io/proxy-read-timeout", "soon")
                .host("b.example")
                .prefix("/", svc("web", 80))
                .build(),
            ingress("shop", "theirs")
                .class("traefik")
                .host("c.example")
                .prefix("/", svc("web", 80))
                .build(),
        ],
    );
    let run = vestibule_check(&[path(&dir), "--output", "json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let report = json(&run);
    assert_eq!(report["schema"], "vestibule.dev/check/v1");
    assert_eq!(report["input"]["source"]["kind"], "files");
    assert_eq!(report["input"]["ingress_class"], "nginx");
    assert_eq!(report["summary"]["ingresses"], 2);
    assert_eq!(report["summary"]["needs_work"], 1);
    assert_eq!(report["summary"]["skipped"], 1);
    assert_eq!(report["skipped"][0]["name"], "theirs");
    // Worst first.
    assert_eq!(report["ingresses"][0]["name"], "work");
    assert_eq!(
        report["ingresses"][0]["findings"][0]["code"],
        "invalid-value"
    );
    assert_eq!(report["ingresses"][1]["verdict"], "same");
}

#[test]
fn markdown_output_is_a_table_per_ingress() {
    let dir = ManifestDir::new().unwrap();
    cluster(
        &dir,
        &[
            nginx("same")
                .host("a.example")
                .prefix("/", svc("web", 80))
                .build(),
            nginx("docs")
                .host("b.example")
                .prefix("/guide/", svc("web", 80))
                .build(),
        ],
    );
    let run = vestibule_check(&[path(&dir), "--output", "markdown"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let md = &run.stdout;
    assert!(md.starts_with("# Vestibule migration check\n"), "{md}");
    assert!(
        md.contains("| Ingress | Verdict | Findings |\n|---|---|---|\n"),
        "{md}"
    );
    assert!(
        md.contains("| `shop/docs` | **differs** | 1 finding |"),
        "{md}"
    );
    assert!(md.contains("## `shop/docs`: differs"), "{md}");
    assert!(
        md.contains("| differs | `trailing-slash-redirect` | `spec.rules[0].http.paths[0]` |"),
        "{md}"
    );
    assert!(!md.contains('\x1b'));
}

#[test]
fn unreadable_input_exits_two_and_names_the_path() {
    let dir = ManifestDir::new().unwrap();
    dir.write_raw("broken.yaml", "kind: [unclosed\n").unwrap();
    let run = vestibule_check(&[path(&dir)]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("broken.yaml"), "{}", run.stderr);
    assert_eq!(run.stdout, "");

    let missing = dir.file("nowhere.json");
    let run = vestibule_check(&[missing.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("nowhere.json"), "{}", run.stderr);

    // A usage error is clap's, with the same status.
    let run = vestibule_check(&["--output", "yaml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn objects_of_kinds_it_does_not_read_are_skipped() {
    let dir = ManifestDir::new().unwrap();
    cluster(
        &dir,
        &[nginx("web")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build()],
    );
    dir.write_raw(
        "deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec: {}\n",
    )
    .unwrap();
    let run = vestibule_check(&[path(&dir)]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("1 same"), "{}", run.stdout);
}

#[test]
fn an_object_defined_in_two_files_is_a_note_about_the_input() {
    let dir = ManifestDir::new().unwrap();
    let web = nginx("web")
        .host("a.example")
        .prefix("/", svc("web", 80))
        .build();
    cluster(&dir, std::slice::from_ref(&web));
    dir.write("copy.yaml", &[&web]).unwrap();
    let run = vestibule_check(&[path(&dir), "--output", "json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report = json(&run);
    assert_eq!(report["summary"]["same"], 1);
    let note = &report["cluster"][0];
    assert_eq!(note["severity"], "warning");
    assert!(
        note["message"]
            .as_str()
            .unwrap()
            .contains("is also defined in"),
        "{report:#}"
    );
}

#[test]
fn a_kubectl_list_dump_without_ingress_classes_is_checked_as_nginx_s() {
    let dir = ManifestDir::new().unwrap();
    let dump = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": "web", "namespace": "shop", "uid": "1",
                    "creationTimestamp": "2025-01-01T00:00:00Z"},
                "spec": {"ingressClassName": "nginx", "rules": [{"host": "a.example",
                    "http": {"paths": [{"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
                "status": {"loadBalancer": {}}
            },
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": "old", "namespace": "shop",
                    "annotations": {"kubernetes.io/ingress.class": "nginx"}},
                "spec": {"rules": [{"host": "b.example",
                    "http": {"paths": [{"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
            }
        ]
    });
    dir.write_raw("ingresses.json", &dump.to_string()).unwrap();
    let run = vestibule_check(&[
        dir.file("ingresses.json").to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report = json(&run);
    assert_eq!(report["summary"]["ingresses"], 2, "{report:#}");
    // Without Services in the dump, the backends are not checked rather than missing.
    let (verdict, codes) = verdict_of(&report, "web");
    assert_eq!(
        (verdict.as_str(), codes),
        ("same", vec!["service-not-checked".to_owned()])
    );
    assert!(
        report["cluster"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no IngressClass in the input"),
        "{report:#}"
    );
}

#[test]
fn secrets_never_reach_the_output() {
    const MARK: &str = "VESTIBULE-FAKE-KEY-DO-NOT-LEAK";
    let body = base64::engine::general_purpose::STANDARD.encode(MARK);
    let key_pem = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
    let hash = "$apr1$VESTIBULEFAKEHASH$abcdefghij";
    let dir = ManifestDir::new().unwrap();
    cluster(
        &dir,
        &[
            nginx("tls")
                .host("a.example")
                .prefix("/", svc("web", 80))
                .tls(&["a.example"], "a-tls")
                .build(),
            nginx("basic")
                .annotation("nginx.ingress.kubernetes.io/auth-type", "basic")
                .annotation("nginx.ingress.kubernetes.io/auth-secret", "users")
                .host("b.example")
                .prefix("/", svc("web", 80))
                .build(),
        ],
    );
    let tls = tls_secret("shop", "a-tls", "not a certificate", &key_pem);
    let mut users = tls_secret("shop", "users", "", "");
    users.type_ = Some("Opaque".to_owned());
    users.data = Some(
        [(
            "auth".to_owned(),
            k8s_openapi::ByteString(format!("ann:{hash}\nbob:plaintext-{MARK}\n").into_bytes()),
        )]
        .into(),
    );
    dir.write("secrets.yaml", &[&tls, &users]).unwrap();
    let written = std::fs::read_to_string(dir.file("secrets.yaml")).unwrap();
    let forbidden = [
        MARK.to_owned(),
        body,
        base64::engine::general_purpose::STANDARD.encode(&key_pem),
        hash.to_owned(),
    ];
    assert!(key_pem.contains(&forbidden[1]), "the fixture holds the key");
    assert!(
        written.contains(&forbidden[2]),
        "the dump holds the key, base64: {written}"
    );
    for output in ["table", "markdown", "json"] {
        for read_secrets in [true, false] {
            let mut args = vec![path(&dir), "--output", output];
            if read_secrets {
                args.push("--read-secrets");
            }
            let run = vestibule_check(&args);
            assert!(matches!(run.code, 0 | 1), "{}{}", run.stdout, run.stderr);
            for secret in &forbidden {
                assert!(
                    !run.stdout.contains(secret.as_str()) && !run.stderr.contains(secret.as_str()),
                    "{secret} in {output} output: {}{}",
                    run.stdout,
                    run.stderr
                );
            }
        }
    }
}

/// The in-process API server, with the class `nginx`, the Service `web` and one Ingress of
/// each verdict worth checking.
async fn api_server() -> (ApiServer, tempfile::TempDir, String) {
    let api = ApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path()).unwrap();
    api.apply(&ingress_class("nginx", NGINX).build());
    api.apply(&service("shop", "web").port("http", 80, 8080).build());
    api.apply(
        &nginx("web")
            .host("a.example")
            .prefix("/", svc("web", 80))
            .build(),
    );
    api.apply(
        &nginx("admin")
            .annotation("nginx.ingress.kubernetes.io/auth-type", "digest")
            .host("b.example")
            .prefix("/", svc("web", 80))
            .build(),
    );
    (api, dir, kubeconfig.to_str().unwrap().to_owned())
}

async fn check_async(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vestibule_check(&args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_is_read_with_list_calls_only() {
    let (api, _dir, kubeconfig) = api_server().await;
    let args = ["--kubeconfig", &kubeconfig, "--output", "json"];
    let run = check_async(args.iter().map(|a| (*a).to_owned()).collect()).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let report = json(&run);
    assert_eq!(report["input"]["source"]["kind"], "cluster");
    assert_eq!(verdict_of(&report, "web").0, "same");
    assert_eq!(verdict_of(&report, "admin").0, "needs-work");
    // Discovery aside, every request was a list.
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .filter(|r| !r.group.is_empty() || !r.version.is_empty())
            .all(|r| r.verb == "list"),
        "{requests:#?}"
    );
    assert!(
        !requests.iter().any(|r| r.resource == "secrets"),
        "Secrets listed without --read-secrets: {requests:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_the_api_server_refuses_exits_two_naming_the_kind() {
    let (api, _dir, kubeconfig) = api_server().await;
    api.forbid::<Ingress>();
    let args = ["--kubeconfig", &kubeconfig];
    let run = check_async(args.iter().map(|a| (*a).to_owned()).collect()).await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(
            "the API server refused to list Ingress objects in all namespaces (403 Forbidden)"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
}
