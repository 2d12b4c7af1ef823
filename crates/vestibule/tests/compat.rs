//! ingress-nginx annotations through `vestibule run`, as a migrating user meets them: fail
//! closed on protection Vestibule cannot give, rewrites and regex paths (the host flip
//! included), redirects, the forwarded scheme, upstream host and aliases, and the buffering
//! keys.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vestibule_testkit::{Echo, EchoReply, ManifestDir, endpoint_slice, ingress, service, svc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protection_that_cannot_be_given_closes_the_ingress_instead_of_serving_it_open() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "guarded")
                .host("shop.example")
                .prefix("/admin", svc("web", 80))
                .annotation(&key("auth-tls-secret"), "default/client-ca")
                .annotation(&key("auth-snippet"), "return 200;"),
            ingress("default", "open")
                .host("shop.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("limit-rate"), "100"),
        ],
        &[("web", &[&web])],
    );
    let mut v = Vestibule::start(dir.path(), &[]);
    let closed = get(&v, "shop.example", "/admin/users", "").await;
    assert_eq!(closed.status, 503);
    let grpc = get(
        &v,
        "shop.example",
        "/admin/Svc/Call",
        "Content-Type: application/grpc\r\nTE: trailers\r\n",
    )
    .await;
    assert_eq!(grpc.header("grpc-status"), Some("14"));
    // The rest of the host, and a bandwidth limit (not protection), are served.
    assert_eq!(echoed(&get(&v, "shop.example", "/", "").await).name, "web");
    assert_eq!(
        web.hits(),
        1,
        "nothing reached the backend through the closed paths"
    );

    let found = diagnostics(&v.config().await);
    for short in ["auth-tls-secret", "auth-snippet"] {
        assert!(
            has(&found, &["error default/guarded", short, "503"]),
            "{short}: {found:#?}"
        );
    }
    assert!(
        has(&found, &["warning default/open", "limit-rate"]),
        "{found:#?}"
    );
    // And the log says so, once, as a warning naming the key.
    v.wait_for_log(Duration::from_secs(5), |line| {
        line["level"] == "WARN"
            && line["field"]
                .as_str()
                .is_some_and(|f| f.contains("auth-tls-secret"))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_and_regex_paths_behave_as_in_ingress_nginx_and_flip_the_whole_host() {
    let web = Echo::start("web").await.unwrap();
    let api = Echo::start("api").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            // The older Ingress: plain Exact and Prefix paths.
            ingress("default", "plain")
                .created(1)
                .host("shop.example")
                .exact("/api", svc("api", 80))
                .prefix("/", svc("web", 80)),
            ingress("default", "rewriting")
                .created(2)
                .host("shop.example")
                .implementation_specific("/something(/|$)(.*)", svc("web", 80))
                .annotation(&key("rewrite-target"), "/$2")
                .annotation(&key("x-forwarded-prefix"), "/something"),
            ingress("default", "pcre")
                .created(3)
                .host("other.example")
                .implementation_specific("/a(?!b)", svc("web", 80))
                .implementation_specific("/ok", svc("api", 80))
                .annotation(&key("use-regex"), "true"),
        ],
        &[("web", &[&web]), ("api", &[&api])],
    );
    let v = Vestibule::start(dir.path(), &[]);

    // The documented example.
    for (target, path, query) in [
        ("/something", "/", None),
        ("/something/", "/", None),
        ("/something/new?x=1", "/new", Some("x=1")),
        ("/SOMETHING/new", "/new", None),
    ] {
        let reply = echoed(&get(&v, "shop.example", target, "").await);
        assert_eq!(
            (reply.path.as_str(), reply.query.as_deref()),
            (path, query),
            "{target}"
        );
        assert_eq!(
            reply.header("x-forwarded-prefix"),
            Some("/something"),
            "{target}"
        );
    }
    // The older Ingress's Exact /api now matches case-insensitively and as a prefix, as
    // ingress-nginx's regex mode makes it; no rewrite, so no prefix field.
    for target in ["/api", "/API", "/api/v1"] {
        let reply = echoed(&get(&v, "shop.example", target, "").await);
        assert_eq!(reply.name, "api", "{target}");
        assert_eq!(reply.path, target, "the path is not rewritten");
        assert_eq!(reply.header("x-forwarded-prefix"), None);
    }
    assert_eq!(
        echoed(&get(&v, "shop.example", "/other", "").await).name,
        "web"
    );

    // PCRE-only syntax skips that path alone.
    assert_eq!(
        echoed(&get(&v, "other.example", "/OK", "").await).name,
        "api"
    );
    assert_eq!(get(&v, "other.example", "/ac", "").await.status, 404);

    let found = diagnostics(&v.config().await);
    assert!(
        has(
            &found,
            &["warning default/plain", "regex mode", "default/rewriting"]
        ),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            &["error default/pcre", "paths[0].path", "look-around"]
        ),
        "{found:#?}"
    );
    assert!(!has(&found, &["warning default/rewriting"]), "{found:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_answer_before_anything_else_with_their_codes() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "moved")
                .host("old.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("permanent-redirect"), "https://new.example/landing")
                .annotation(&key("permanent-redirect-code"), "308")
                // Redirects come before access control: a closed route still redirects.
                .annotation(&key("auth-type"), "digest"),
            ingress("default", "both")
                .host("tmp.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("permanent-redirect"), "https://a.example/")
                .annotation(&key("temporal-redirect"), "https://b.example/")
                .annotation(&key("temporal-redirect-code"), "999"),
            ingress("default", "app")
                .host("example.com")
                .prefix("/shop", svc("web", 80))
                // The same host again after another: still one host of this Ingress.
                .host("b.example.com")
                .prefix("/b", svc("web", 80))
                .host("example.com")
                .prefix("/more", svc("web", 80))
                .annotation(&key("app-root"), "/shop")
                .annotation(&key("from-to-www-redirect"), "true"),
            ingress("default", "bad")
                .host("bad.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("app-root"), "https://elsewhere.example/")
                .annotation(&key("permanent-redirect"), "/relative/$1"),
        ],
        &[("web", &[&web])],
    );
    let v = Vestibule::start(dir.path(), &[]);
    let moved = get(&v, "old.example", "/any/path?q=1", "").await;
    assert_eq!(moved.status, 308);
    assert_eq!(
        moved.header("location"),
        Some("https://new.example/landing")
    );
    let both = get(&v, "tmp.example", "/", "").await;
    assert_eq!(
        both.status, 302,
        "temporal wins; an invalid code leaves the default"
    );
    assert_eq!(both.header("location"), Some("https://b.example/"));

    let root = get(&v, "example.com", "/?drop=me", "").await;
    assert_eq!(root.status, 302);
    assert_eq!(root.header("location"), Some("http://example.com/shop"));
    assert_eq!(
        echoed(&get(&v, "example.com", "/shop/x", "").await).path,
        "/shop/x"
    );
    let www = get(&v, "www.example.com", "/shop/x?y=1", "").await;
    assert_eq!(www.status, 308);
    assert_eq!(
        www.header("location"),
        Some("http://example.com/shop/x?y=1")
    );

    // Invalid values: reported, and the rest of the Ingress served.
    assert_eq!(echoed(&get(&v, "bad.example", "/", "").await).name, "web");
    let found = diagnostics(&v.config().await);
    for short in ["app-root", "permanent-redirect"] {
        assert!(has(&found, &["error default/bad", short]), "{found:#?}");
    }
    assert!(
        has(&found, &["error default/both", "temporal-redirect-code"]),
        "{found:#?}"
    );
    assert!(!has(&found, &["default/app"]), "{found:#?}");
    assert_eq!(web.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_https_is_the_scheme_so_forced_redirects_do_not_loop() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "forced")
                .host("shop.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("force-ssl-redirect"), "true")
                .annotation(&key("app-root"), "/app"),
        ],
        &[("web", &[&web])],
    );
    let behind = Vestibule::start(
        dir.path(),
        &[
            "--trusted-proxies",
            "127.0.0.1/32",
            "--http-redirect-code",
            "301",
        ],
    );
    let from_lb = "X-Forwarded-Proto: https\r\n";
    let reply = echoed(&get(&behind, "shop.example", "/cart", from_lb).await);
    assert_eq!(reply.header("x-forwarded-proto"), Some("https"));
    let root = get(&behind, "shop.example", "/", from_lb).await;
    assert_eq!(root.header("location"), Some("https://shop.example/app"));
    let plain = get(
        &behind,
        "shop.example",
        "/cart",
        "X-Forwarded-Proto: http\r\n",
    )
    .await;
    assert_eq!(plain.status, 301, "--http-redirect-code");
    assert_eq!(plain.header("location"), Some("https://shop.example/cart"));

    // From a peer that is not trusted, the header is a claim: still redirected.
    let exposed = Vestibule::start(dir.path(), &[]);
    let claimed = get(&exposed, "shop.example", "/cart", from_lb).await;
    assert_eq!(claimed.status, 308);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssl_redirect_flags_set_the_default_the_annotations_override() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "site")
                .host("shop.example")
                .prefix("/", svc("web", 80)),
            ingress("default", "exempt")
                .host("open.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("force-ssl-redirect"), "false"),
        ],
        &[("web", &[&web])],
    );
    let v = Vestibule::start(dir.path(), &["--force-ssl-redirect", "true"]);
    assert_eq!(get(&v, "shop.example", "/", "").await.status, 308);
    assert_eq!(echoed(&get(&v, "open.example", "/", "").await).name, "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_vhost_and_server_aliases_change_the_host_as_in_ingress_nginx() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "site")
                .created(1)
                .host("shop.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("upstream-vhost"), "internal.shop.svc:8080")
                .annotation(
                    &key("server-alias"),
                    "store.example, *.shops.example, other.example, ~^re.*$",
                ),
            ingress("default", "other")
                .created(2)
                .host("other.example")
                .prefix("/", svc("web", 80)),
        ],
        &[("web", &[&web])],
    );
    let v = Vestibule::start(dir.path(), &[]);
    for host in ["shop.example", "store.example", "eu.shops.example"] {
        let reply = echoed(&get(&v, host, "/x", "").await);
        assert_eq!(
            reply.host.as_deref(),
            Some("internal.shop.svc:8080"),
            "{host}"
        );
        assert_eq!(reply.header("x-forwarded-host"), Some(host), "{host}");
    }
    // The alias that is another Ingress's host stays that Ingress's.
    let other = echoed(&get(&v, "other.example", "/", "").await);
    assert_eq!(other.host.as_deref(), Some("other.example"));
    let found = diagnostics(&v.config().await);
    assert!(
        has(
            &found,
            &["warning default/site", "other.example is an Ingress host"]
        ),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            &["error default/site", "server-alias", "regular expression"]
        ),
        "{found:#?}"
    );
}

/// An upstream whose every response carries a header of `size` bytes.
async fn large_head_upstream(size: usize) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nX-Large: {}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    "a".repeat(size)
                );
                let _ = stream.write_all(head.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_buffer_size_raises_the_response_head_limit_and_buffering_keys_are_noted() {
    let upstream = large_head_upstream(100 << 10).await;
    let dir = ManifestDir::new().unwrap();
    let large = |name: &str, host: &str| {
        ingress("default", name)
            .host(host)
            .prefix("/", svc("large", 80))
    };
    write_world(
        &dir,
        vec![
            large("roomy", "roomy.example")
                .annotation(&key("proxy-buffer-size"), "128k")
                .annotation(&key("proxy-buffering"), "on"),
            large("tight", "tight.example"),
        ],
        &[],
    );
    let svc_manifest = service("default", "large").port("http", 80, 8080).build();
    let slice = endpoint_slice("default", "large-0", "large")
        .port("http", i32::from(upstream.port()))
        .ready(&upstream.ip().to_string())
        .build();
    dir.write("svc-large.yaml", &[&svc_manifest, &slice])
        .unwrap();
    let v = Vestibule::start(dir.path(), &[]);
    let roomy = get(&v, "roomy.example", "/", "").await;
    assert_eq!(roomy.status, 200);
    assert_eq!(roomy.header("x-large").map(str::len), Some(100 << 10));
    assert_eq!(get(&v, "tight.example", "/", "").await.status, 502);
    let found = diagnostics(&v.config().await);
    assert!(
        has(&found, &["info default/roomy", "proxy-buffering"]),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            &["info default/roomy", "proxy-buffer-size", "131072"]
        ),
        "{found:#?}"
    );
}

/// Waits until an access log line for `host` names `user`.
fn logged_user(v: &Vestibule, host: &str, user: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let lines = v.access_log();
        let found = lines.iter().any(|line| {
            serde_json::from_str::<Value>(line)
                .is_ok_and(|l| l["host"] == host && l["user"] == user)
        });
        if found {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access log line for {host} names {user}: {lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Hashes of "password", in each format nginx reads from an htpasswd file.
const APR1: &str = "$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00";
const BCRYPT: &str = "$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe";
const SHA: &str = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=";
const SHA512: &str = "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/";
/// Right for "password" too, but 300,000 rounds: more work per check than the bound allows.
const SHA512_COSTLY: &str = "$6$rounds=300000$saltsalt$i/m8UNjPw5pWacNGGwybfBY9csBfDMvEDbEdNsGnXIulYjGdx9OMxyp0i4vy4vr8KL5U4bwtr/2NOYMAk.zNS/";

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {encoded}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_lets_in_the_users_of_the_secret_and_no_one_else() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    let protected = |name: &str, host: &str, secret: &str| {
        ingress("default", name)
            .host(host)
            .prefix("/", svc("web", 80))
            .annotation(&key("auth-type"), "basic")
            .annotation(&key("auth-secret"), secret)
            .annotation(&key("auth-realm"), "Staff only")
    };
    write_world(
        &dir,
        vec![
            protected("staff", "staff.example", "users"),
            protected("mapped", "map.example", "user-map")
                .annotation(&key("auth-secret-type"), "auth-map"),
            protected("foreign", "foreign.example", "other/users"),
            protected("missing", "missing.example", "nobody"),
        ],
        &[("web", &[&web])],
    );
    let secrets = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: users, namespace: default}}\ntype: Opaque\n\
         stringData:\n  auth: |\n    ann:{APR1}\n    bob:{BCRYPT}\n    # a comment\n    cid:{SHA}\n    \
         not a user line\n    eve:plaintext\n    dan:{SHA512}\n    gus:{SHA512_COSTLY}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: user-map, namespace: default}}\ntype: Opaque\n\
         stringData:\n  zed: \"{SHA}\"\n  yan: \"$2y$31$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe\"\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: users, namespace: other}}\ntype: Opaque\n\
         stringData:\n  auth: \"ann:{APR1}\"\n"
    );
    dir.write_raw("secrets.yaml", &secrets).unwrap();
    let v = Vestibule::start(dir.path(), &[]);

    let denied = get(&v, "staff.example", "/", "").await;
    assert_eq!(denied.status, 401);
    assert_eq!(
        denied.header("www-authenticate"),
        Some("Basic realm=\"Staff only\"")
    );
    for user in ["ann", "bob", "cid", "dan"] {
        // Twice: the second time from what was remembered.
        for _ in 0..2 {
            let reply = echoed(&get(&v, "staff.example", "/", &basic(user, "password")).await);
            assert_eq!(
                reply.header("authorization"),
                None,
                "{user}: credentials stay here"
            );
        }
    }
    for (user, password) in [
        ("ann", "wrong"),
        ("eve", "plaintext"),
        ("nobody", "password"),
        // The right password, behind a hash too slow to check: refused, not hashed.
        ("gus", "password"),
    ] {
        let refused = get(&v, "staff.example", "/", &basic(user, password)).await;
        assert_eq!(refused.status, 401, "{user}");
    }
    let garbage = get(&v, "staff.example", "/", "Authorization: Basic %%%\r\n").await;
    assert_eq!(garbage.status, 401);
    assert_eq!(
        echoed(&get(&v, "map.example", "/", &basic("zed", "password")).await).name,
        "web"
    );
    // Cost 31 would pin a thread for days per attempt; the map's other user still signs in.
    let yan = basic("yan", "password");
    let slow =
        tokio::time::timeout(Duration::from_secs(5), get(&v, "map.example", "/", &yan)).await;
    assert_eq!(slow.expect("answered without hashing").status, 401);
    // A Secret of another namespace, or none: closed.
    let ann = basic("ann", "password");
    assert_eq!(get(&v, "foreign.example", "/", &ann).await.status, 503);
    assert_eq!(get(&v, "missing.example", "/", &ann).await.status, 503);

    let found = diagnostics(&v.config().await);
    assert!(
        has(&found, &["error default/staff", "line 5", "not user:hash"]),
        "{found:#?}"
    );
    assert!(
        has(&found, &["error default/staff", "line 6", "not hashed"]),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            &[
                "error default/staff",
                "Secret default/users, line 8",
                "\"gus\"",
                "rounds=300000 is over the limit of 200000",
                "cannot sign in"
            ]
        ),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            &[
                "error default/mapped",
                "Secret default/user-map",
                "\"yan\"",
                "bcrypt cost 31 is over the limit of 12"
            ]
        ),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            &["error default/foreign", "--allow-cross-namespace-resources"]
        ),
        "{found:#?}"
    );
    let shown = format!("{found:?} {}", v.config().await);
    assert!(
        !shown.contains("plaintext") && !shown.contains("lZL6V") && !shown.contains("i/m8UNj"),
        "no password or hash shown"
    );

    // The access log names the user, as nginx's $remote_user does.
    logged_user(&v, "staff.example", "ann");

    let open = Vestibule::start(dir.path(), &["--allow-cross-namespace-resources", "true"]);
    assert_eq!(
        echoed(&get(&open, "foreign.example", "/", &ann).await).name,
        "web"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_service_decides_as_ingress_nginx_asks_it() {
    let web = Echo::start("web").await.unwrap();
    let service = Echo::start("auth").await.unwrap();
    let auth_url = |query: &str| format!("http://{}/check?record=1&{query}", service.addr());
    let dir = ManifestDir::new().unwrap();
    let guarded = |name: &str, host: &str, query: &str| {
        ingress("default", name)
            .host(host)
            .prefix("/", svc("web", 80))
            .annotation(&key("auth-url"), &auth_url(query))
    };
    write_world(
        &dir,
        vec![
            guarded(
                "ok",
                "ok.example",
                "header=x-auth-request-user:ann&header=set-cookie:_oauth=abc",
            )
            .annotation(
                &key("auth-response-headers"),
                "X-Auth-Request-User, X-Auth-Request-Email",
            ),
            guarded("login", "login.example", "status=401")
                .annotation(&key("auth-signin"), "https://sso.example/oauth2/start"),
            guarded(
                "challenge",
                "challenge.example",
                "status=401&header=www-authenticate:Bearer",
            )
            .annotation(&key("auth-method"), "POST"),
            guarded("forbidden", "forbidden.example", "status=403"),
            guarded("broken", "broken.example", "status=502"),
            guarded("slow", "slow.example", "delay_ms=5000")
                .annotation(&key("proxy-read-timeout"), "1"),
            ingress("default", "gone")
                .host("gone.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("auth-url"), "http://127.0.0.1:1/check"),
            ingress("default", "bad")
                .host("bad.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("auth-url"), "http://$host/check"),
        ],
        &[("web", &[&web])],
    );
    let v = Vestibule::start(dir.path(), &[]);

    let spoofed = "X-Auth-Request-Email: mallory@example\r\nCookie: a=1\r\n";
    let response = get(&v, "ok.example", "/app?q=1", spoofed).await;
    assert_eq!(response.header("set-cookie"), Some("_oauth=abc"));
    let reply = echoed(&response);
    assert_eq!(reply.header("x-auth-request-user"), Some("ann"));
    assert_eq!(
        reply.header("x-auth-request-email"),
        None,
        "a listed field the answer lacks goes"
    );
    let asked = service.last_recorded().unwrap();
    assert_eq!(asked.method, "GET");
    assert_eq!(asked.path, "/check");
    assert_eq!(
        asked.header("x-original-url"),
        Some("http://ok.example/app?q=1")
    );
    assert_eq!(asked.header("x-original-method"), Some("GET"));
    assert_eq!(
        asked.header("x-sent-from"),
        Some("nginx-ingress-controller")
    );
    assert_eq!(asked.header("x-auth-request-redirect"), Some("/app?q=1"));
    assert_eq!(
        asked.header("cookie"),
        Some("a=1"),
        "the client's fields go along"
    );
    assert_eq!(
        asked.host.as_deref(),
        Some(service.addr().to_string().as_str())
    );

    let login = get(&v, "login.example", "/app?x=1", "").await;
    assert_eq!(login.status, 302);
    assert_eq!(
        login.header("location"),
        Some("https://sso.example/oauth2/start?rd=http://login.example%2Fapp%3Fx%3D1")
    );
    let challenge = get(&v, "challenge.example", "/", "").await;
    assert_eq!(challenge.status, 401);
    assert_eq!(challenge.header("www-authenticate"), Some("Bearer"));
    assert_eq!(service.last_recorded().unwrap().method, "POST");
    assert_eq!(get(&v, "forbidden.example", "/", "").await.status, 403);
    for host in ["broken.example", "slow.example", "gone.example"] {
        assert_eq!(get(&v, host, "/", "").await.status, 500, "{host}");
    }
    assert_eq!(get(&v, "bad.example", "/", "").await.status, 503);
    assert_eq!(
        web.hits(),
        1,
        "only the allowed request reached the backend"
    );
    let found = diagnostics(&v.config().await);
    assert!(
        has(&found, &["error default/bad", "auth-url", "503"]),
        "{found:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_auth_covers_every_ingress_but_those_that_opt_out_and_acme() {
    let web = Echo::start("web").await.unwrap();
    let service = Echo::start("auth").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            ingress("default", "plain")
                .host("plain.example")
                .prefix("/", svc("web", 80))
                .exact("/.well-known/acme-challenge/token", svc("web", 80)),
            ingress("default", "opted-out")
                .host("open.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("enable-global-auth"), "false"),
        ],
        &[("web", &[&web])],
    );
    let url = format!("http://{}/check?status=403", service.addr());
    let v = Vestibule::start(dir.path(), &["--global-auth-url", &url]);
    assert_eq!(get(&v, "plain.example", "/", "").await.status, 403);
    let acme = get(&v, "plain.example", "/.well-known/acme-challenge/token", "").await;
    assert_eq!(echoed(&acme).name, "web");
    assert_eq!(echoed(&get(&v, "open.example", "/", "").await).name, "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_checked_per_host_in_http_as_nginx_does() {
    use vestibule_testkit::certs::{ca, cert};
    use vestibule_testkit::tls::{client_config, client_config_with_certificate, fetch};
    use vestibule_testkit::{fixtures::ca_secret, tls_secret};

    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    let hosts = [
        "mtls.example",
        "optional.example",
        "paged.example",
        "plain.example",
    ];
    let site = |name: &str, host: &str| {
        ingress("default", name)
            .host(host)
            .prefix("/", svc("web", 80))
            .tls(&[host], "site-tls")
    };
    write_world(
        &dir,
        vec![
            site("mtls", "mtls.example")
                .annotation(&key("auth-tls-secret"), "default/client-ca")
                .annotation(&key("auth-tls-pass-certificate-to-upstream"), "true")
                .annotation(&key("auth-tls-match-cn"), "CN=(ann|eve)"),
            site("optional", "optional.example")
                .annotation(&key("auth-tls-secret"), "client-ca")
                .annotation(&key("auth-tls-verify-client"), "optional"),
            site("paged", "paged.example")
                .annotation(&key("auth-tls-secret"), "default/client-ca")
                .annotation(
                    &key("auth-tls-error-page"),
                    "https://help.example/certificates",
                ),
            site("deep", "deep.example")
                .annotation(&key("auth-tls-secret"), "default/client-ca")
                .annotation(&key("auth-tls-verify-depth"), "2"),
            site("plain", "plain.example"),
        ],
        &[("web", &[&web])],
    );
    let authority = ca("Test CA");
    let server = cert(&hosts);
    let secret = tls_secret("default", "site-tls", &server.cert_pem, &server.key_pem);
    let client_ca = ca_secret("default", "client-ca", &authority.cert_pem);
    dir.write("secrets.yaml", &[&secret, &client_ca]).unwrap();
    let v = Vestibule::start(dir.path(), &[]);

    let with = |cert: &vestibule_testkit::certs::TestCert| {
        client_config_with_certificate(&["http/1.1"], cert)
    };
    let ann = with(&authority.client("ann", "Staff"));
    let bob = with(&authority.client("bob", "Staff"));
    let stranger = with(&ca("Other CA").client("ann", "Staff"));
    let none = client_config(&["http/1.1"]);
    let https = |config, host: &'static str| {
        let config = std::sync::Arc::clone(config);
        let addr = v.https;
        async move { fetch(addr, Some(host), &config, host, "/").await.unwrap() }
    };

    let reply = https(&ann, "mtls.example").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen: EchoReply = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(seen.header("ssl-client-verify"), Some("SUCCESS"));
    // RFC 2253: the last component of the certificate's name first (rcgen encodes CN first).
    assert_eq!(seen.header("ssl-client-subject-dn"), Some("O=Staff,CN=ann"));
    assert_eq!(seen.header("ssl-client-issuer-dn"), Some("CN=Test CA"));
    let pem = seen.header("ssl-client-cert").unwrap_or("");
    assert!(pem.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{pem}");
    assert_eq!(https(&none, "mtls.example").await.status, 400);
    assert_eq!(https(&stranger, "mtls.example").await.status, 400);
    assert_eq!(
        https(&bob, "mtls.example").await.status,
        403,
        "auth-tls-match-cn"
    );

    // A certificate from an intermediate: a chain of two, past the default depth of 1.
    let sub = authority.intermediate("Sub CA");
    let deep = vestibule_testkit::tls::client_config_with_chain(
        &["http/1.1"],
        &sub.client("ann", "Staff"),
        std::slice::from_ref(&sub.der),
    );
    assert_eq!(
        https(&deep, "mtls.example").await.status,
        400,
        "too deep for depth 1"
    );
    assert_eq!(
        https(&deep, "deep.example").await.status,
        200,
        "depth 2 allows it"
    );

    let optional = https(&none, "optional.example").await;
    let seen: EchoReply = serde_json::from_str(&optional.body).unwrap();
    assert_eq!(seen.header("ssl-client-verify"), Some("NONE"));
    assert_eq!(https(&stranger, "optional.example").await.status, 400);
    let paged = https(&none, "paged.example").await;
    assert_eq!(paged.status, 302);
    assert_eq!(
        paged.headers.get("location").and_then(|l| l.to_str().ok()),
        Some("https://help.example/certificates")
    );

    // A host without client certificates: a client's own claims never reach the upstream.
    let reply = https(&ann, "plain.example").await;
    let seen: EchoReply = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(seen.header("ssl-client-verify"), None);
    let spoofed = get(
        &v,
        "plain.example",
        "/",
        "ssl-client-verify: SUCCESS\r\nssl-client-subject-dn: CN=ann\r\n",
    )
    .await;
    assert_eq!(
        spoofed.status, 308,
        "plain HTTP to a TLS host is redirected first"
    );
    let found = diagnostics(&v.config().await);
    assert!(!has(&found, &["error"]), "{found:#?}");
}

/// An "auth service" that answers every request with `reply` (garbage, or nothing before
/// closing).
async fn broken_service(reply: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(reply).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_answers_are_kept_per_key_and_broken_services_are_500() {
    let web = Echo::start("web").await.unwrap();
    let service = Echo::start("auth").await.unwrap();
    let garbage = broken_service(b"this is not HTTP\r\n\r\n").await;
    let silent = broken_service(b"").await;
    let dir = ManifestDir::new().unwrap();
    let site = |name: &str, url: String| {
        ingress("default", name)
            .host(&format!("{name}.example"))
            .prefix("/", svc("web", 80))
            .annotation(&key("auth-url"), &url)
    };
    write_world(
        &dir,
        vec![
            site(
                "cached",
                format!("http://{}/check?status=200", service.addr()),
            )
            .annotation(&key("auth-cache-key"), "$http_authorization")
            .annotation(&key("auth-cache-duration"), "200 1m"),
            site("garbage", format!("http://{garbage}/check")),
            site("silent", format!("http://{silent}/check")),
        ],
        &[("web", &[&web])],
    );
    let v = Vestibule::start(dir.path(), &[]);
    let ann = "Authorization: Bearer ann\r\n";
    for _ in 0..3 {
        assert_eq!(
            echoed(&get(&v, "cached.example", "/", ann).await).name,
            "web"
        );
    }
    assert_eq!(service.hits(), 1, "one question for one key");
    let bob = "Authorization: Bearer bob\r\n";
    assert_eq!(
        echoed(&get(&v, "cached.example", "/", bob).await).name,
        "web"
    );
    assert_eq!(service.hits(), 2, "another key is asked again");
    for host in ["garbage.example", "silent.example"] {
        assert_eq!(get(&v, host, "/", "").await.status, 500, "{host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_proxy_set_headers_come_from_a_config_map() {
    let web = Echo::start("web").await.unwrap();
    let service = Echo::start("auth").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    let url = format!("http://{}/check?record=1", service.addr());
    write_world(
        &dir,
        vec![
            ingress("default", "fields")
                .host("fields.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("auth-url"), &url)
                .annotation(&key("auth-proxy-set-headers"), "auth-fields"),
            ingress("default", "nomap")
                .host("nomap.example")
                .prefix("/", svc("web", 80))
                .annotation(&key("auth-url"), &url)
                .annotation(&key("auth-proxy-set-headers"), "default/missing"),
        ],
        &[("web", &[&web])],
    );
    dir.write_raw(
        "fields.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: auth-fields, namespace: default}\n\
         data:\n  X-Tenant: acme\n  X-Asked-For: \"$host$request_uri\"\n",
    )
    .unwrap();
    let v = Vestibule::start(dir.path(), &[]);
    let spoof = "X-Tenant: evil\r\n";
    assert_eq!(
        echoed(&get(&v, "fields.example", "/a?b=1", spoof).await).name,
        "web"
    );
    let asked = service.last_recorded().unwrap();
    assert_eq!(asked.header("x-tenant"), Some("acme"));
    assert_eq!(asked.header("x-asked-for"), Some("fields.example/a?b=1"));
    assert_eq!(get(&v, "nomap.example", "/", "").await.status, 503);
    let found = diagnostics(&v.config().await);
    assert!(
        has(
            &found,
            &[
                "error default/nomap",
                "auth-proxy-set-headers",
                "does not exist"
            ]
        ),
        "{found:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_deny_lists_judge_the_client_behind_trusted_proxies() {
    let web = Echo::start("web").await.unwrap();
    let dir = ManifestDir::new().unwrap();
    write_world(
        &dir,
        vec![
            site("office")
                .annotation(&key("whitelist-source-range"), "192.0.2.0/24")
                .annotation(&key("allowlist-source-range"), "10.0.0.0/8, 2001:db8::/32"),
            site("denied").annotation(&key("denylist-source-range"), "10.9.0.0/16"),
            site("typo").annotation(&key("allowlist-source-range"), "10.0.0/8x"),
            site("open"),
        ],
        &[("web", &[&web])],
    );
    let flags = [
        "--trusted-proxies",
        "127.0.0.1/32",
        "--denylist-source-range",
        "10.66.0.0/16",
    ];
    let v = Vestibule::start(dir.path(), &flags);
    let from = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    let status = |host: &'static str, ip: &'static str| {
        let v = &v;
        async move { get(v, host, "/", &from(ip)).await.status }
    };
    assert_eq!(status("office.example", "10.1.2.3").await, 200);
    assert_eq!(status("office.example", "2001:db8::7").await, 200);
    assert_eq!(
        status("office.example", "192.0.2.1").await,
        403,
        "allowlist wins"
    );
    assert_eq!(status("denied.example", "10.9.1.1").await, 403);
    assert_eq!(status("denied.example", "10.1.1.1").await, 200);
    assert_eq!(
        status("open.example", "10.66.1.1").await,
        403,
        "--denylist-source-range"
    );
    assert_eq!(status("open.example", "10.67.1.1").await, 200);
    assert_eq!(status("typo.example", "10.1.2.3").await, 503);
    let found = diagnostics(&v.config().await);
    assert!(
        has(
            &found,
            &["error default/typo", "allowlist-source-range", "503"]
        ),
        "{found:#?}"
    );
}
