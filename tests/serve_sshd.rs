//! `plumb serve` as a child process, against OpenSSH's sshd on loopback and a git repo made by
//! the test: unauthenticated and wrongly signed webhooks are refused (401) and run nothing,
//! pushes to other branches are ignored, a signed push to the branch converges it, a burst of
//! pushes costs at most two runs, `/status` and `/metrics` say so, oversized bodies get 413,
//! and SIGTERM stops the server cleanly. Issue 8: idle connections (a slowloris, against a tight
//! open-file limit) neither stop `/healthz` nor a signed push and are closed after the header
//! deadline, a slow body gets 408, replayed deliveries run nothing, a secret file others can
//! read is refused, and a pushed commit that declares nothing is refused without touching the
//! host. Issue 13: a bare repo's `post-receive` hook sends GitHub-style signed form-encoded
//! deliveries; a push that breaks a host is rolled back to the last good commit, marked bad and
//! held back (by the interval, a redelivery, `plumb pull` and a force-push back to it), shown
//! as a failure on the page, in `/metrics`, in `plumb history` and in a notification, and a
//! later good push applies; the status page opened in headless Chromium holds the commit, every
//! host and every certificate. Every wait is bounded; only loopback is used.

mod support;

use hmac::{Hmac, KeyInit, Mac};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::gitops::{Setup, failing_check, motd, setup, setup_hosts};

const SECRET: &str = "s3cret-for-the-serve-test";

/// The `plumb serve` child: SIGTERM then SIGKILL on drop, so it never outlives the test.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        support::sshd::stop_child(&mut self.child);
    }
}

impl Server {
    fn start(s: &Setup, extra: &[&str]) -> Server {
        Server::start_with(s, extra, None)
    }

    /// Starts the server following `source` (a bare repo pushed to) instead of the origin.
    fn start_from(s: &Setup, source: &std::path::Path, extra: &[&str]) -> Server {
        Server::spawn(s, source, extra, None)
    }

    /// Starts the server; with `fd_limit`, its open-file limit (soft and hard) is set so, as a
    /// service manager would (systemd's default soft limit is 1024).
    fn start_with(s: &Setup, extra: &[&str], fd_limit: Option<u64>) -> Server {
        Server::spawn(s, &s.origin_dir(), extra, fd_limit)
    }

    fn spawn(s: &Setup, source: &std::path::Path, extra: &[&str], fd_limit: Option<u64>) -> Server {
        let secret_file = s.dir.path().join("webhook-secret");
        std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
        set_mode(&secret_file, 0o600);
        let stdout = s.dir.path().join("serve.stdout");
        let stderr = s.dir.path().join("serve.stderr");
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("plumb"));
        if let Some(limit) = fd_limit {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit as libc::rlim_t,
                        rlim_max: limit as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .arg("serve")
            .arg(source)
            .args(["--branch", &s.branch, "--state-dir"])
            .arg(s.state())
            .args(["--listen", "127.0.0.1:0", "--webhook-secret-file"])
            .arg(&secret_file)
            .args(extra)
            .env_remove("PLUMB_AGE_IDENTITY")
            .env_remove("PLUMB_INVENTORY")
            .env_remove("PLUMB_STATE_DIR")
            .env_remove("PLUMB_WEBHOOK_SECRET")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            stderr,
        };
        let t0 = Instant::now();
        loop {
            let log = server.log();
            if let Some(rest) = log.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap();
                server.addr = addr.parse().unwrap();
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("plumb serve exited with {status}:\n{log}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "plumb serve did not start listening:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn get(&self, path: &str) -> (u16, String) {
        http(self.addr, "GET", path, &[], b"")
    }

    fn post(&self, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        http(self.addr, "POST", "/hooks", headers, body)
    }

    fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls /status until `done` holds (bounded).
    fn wait_status(
        &self,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            let st = self.status();
            if done(&st) {
                return st;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "timed out waiting for {what}; last status:\n{st:#}\nserver log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A minimal HTTP/1.1 client: one request per connection, bounded by timeouts.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) and close before reading a large body: a failed write is
    // fine, the response is what counts.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response from {addr}{path}: {text:?}"));
    (code, body.to_string())
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

fn push_body(branch: &str, commit: &str) -> Vec<u8> {
    serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0000000000000000000000000000000000000001",
        "after": commit,
        "repository": { "full_name": "example/cluster" },
    })
    .to_string()
    .into_bytes()
}

fn runs_total(st: &serde_json::Value) -> u64 {
    st["runs_total"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0)
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn serve_converges_signed_pushes_to_its_branch_only() {
    let s = setup();
    let first = s.origin.head().unwrap().target().unwrap().to_string();
    let server = Server::start(&s, &[]);

    assert_eq!(server.get("/healthz"), (200, "ok\n".to_string()));
    let st = server.status();
    assert_eq!(st["state"], "idle", "{st:#}");
    assert!(st["last_run"].is_null(), "{st:#}");

    // Unsigned, wrongly signed, signed with another secret, wrong GitLab token: 401.
    let body = push_body(&s.branch, &first);
    // Each delivery its own id, as GitHub gives them (a repeated id is a replay).
    let deliveries = std::cell::Cell::new(0);
    let github = |sig: &str| -> Vec<(&'static str, String)> {
        deliveries.set(deliveries.get() + 1);
        vec![
            ("X-GitHub-Event", "push".into()),
            ("X-GitHub-Delivery", format!("d-{}", deliveries.get())),
            ("Content-Type", "application/json".into()),
            ("X-Hub-Signature-256", sig.to_string()),
        ]
    };
    let send = |h: Vec<(&'static str, String)>, body: &[u8]| {
        let refs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        server.post(&refs, body)
    };
    let (code, text) = send(
        vec![
            ("X-GitHub-Event", "push".into()),
            ("Content-Type", "application/json".into()),
        ],
        &body,
    );
    assert_eq!(code, 401, "{text}");
    let (code, _) = send(github("sha256=00"), &body);
    assert_eq!(code, 401);
    let other_secret = format!("sha256={}", hmac_hex("not-the-secret", &body));
    let (code, _) = send(github(&other_secret), &body);
    assert_eq!(code, 401);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (code, _) = send(
        github(&format!("sha256={}", hmac_hex(SECRET, &body))),
        &tampered,
    );
    assert_eq!(code, 401);
    let (code, _) = send(
        vec![
            ("X-Gitlab-Event", "Push Hook".into()),
            ("X-Gitlab-Token", "wrong".into()),
        ],
        &body,
    );
    assert_eq!(code, 401);

    // A signed push to another branch is ignored; a GitHub ping is answered.
    let other = push_body("some-other-branch", &first);
    let (code, text) = send(
        github(&format!("sha256={}", hmac_hex(SECRET, &other))),
        &other,
    );
    assert_eq!(code, 202, "{text}");
    assert!(text.starts_with("ignored"), "{text}");
    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let mut h = github(&format!("sha256={}", hmac_hex(SECRET, ping)));
    h[0].1 = "ping".into();
    let (code, text) = send(h, ping);
    assert_eq!((code, text.as_str()), (200, "pong\n"));

    // Too large: 413, before any signature check.
    let big = vec![b'x'; (1 << 20) + 1];
    let (code, _) = send(github("sha256=00"), &big);
    assert_eq!(code, 413);

    // None of that ran anything.
    std::thread::sleep(Duration::from_millis(500));
    let st = server.status();
    assert!(st["last_run"].is_null(), "{st:#}");
    assert_eq!(runs_total(&st), 0, "{st:#}");
    assert!(!s.root().join("etc/motd").exists());
    assert_eq!(s.logins(), 0, "a refused webhook reached a host");

    // A signed push to the branch converges it.
    let (code, text) = send(
        github(&format!("sha256={}", hmac_hex(SECRET, &body))),
        &body,
    );
    assert_eq!(code, 202, "{text}");
    assert!(text.starts_with("accepted"), "{text}");
    let st = server.wait_status("the first run", |st| {
        st["state"] == "idle" && st["last_run"]["commit"] == first.as_str()
    });
    assert_eq!(st["last_run"]["result"], "changed", "{st:#}");
    assert_eq!(st["last_run"]["exit_code"], 2, "{st:#}");
    assert_eq!(st["last_run"]["trigger"], "webhook", "{st:#}");
    assert_eq!(st["last_run"]["changed_hosts"], serde_json::json!(["h0"]));
    assert_eq!(st["last_run"]["failed_hosts"], serde_json::json!([]));
    assert_eq!(st["queued"], false);
    assert_eq!(
        std::fs::read_to_string(s.root().join("etc/motd")).unwrap(),
        "v1\n"
    );
    assert_eq!(
        std::fs::read_to_string(s.state().join("last-applied")).unwrap(),
        format!("{first}\n")
    );

    // A burst of pushes for a new commit, from all three forges: at most two runs.
    let second = s.commit(&[("manifests/motd.yaml", &motd(&s.root(), "v2"))], "second");
    let body = push_body(&s.branch, &second);
    let sig = hmac_hex(SECRET, &body);
    for i in 0..6 {
        let h = match i % 3 {
            0 => github(&format!("sha256={sig}")),
            1 => vec![
                ("X-Gitea-Event", "push".into()),
                ("X-Gitea-Delivery", format!("gitea-{i}")),
                ("X-Gitea-Signature", sig.clone()),
            ],
            _ => vec![
                ("X-Gitlab-Event", "Push Hook".into()),
                ("X-Gitlab-Event-UUID", format!("gitlab-{i}")),
                ("X-Gitlab-Token", SECRET.into()),
            ],
        };
        let (code, text) = send(h, &body);
        assert_eq!(code, 202, "{text}");
        assert!(text.starts_with("accepted"), "{text}");
    }
    let st = server.wait_status("the burst's runs", |st| {
        st["state"] == "idle"
            && st["queued"] == false
            && st["last_run"]["commit"] == second.as_str()
    });
    let burst_runs = runs_total(&st) - 1;
    assert!(
        (1..=2).contains(&burst_runs),
        "6 pushes made {burst_runs} runs: {st:#}"
    );
    assert_eq!(st["runs_total"]["changed"], 2, "{st:#}");
    assert_eq!(
        std::fs::read_to_string(s.root().join("etc/motd")).unwrap(),
        "v2\n"
    );
    // Every converge is in the controller's history, as with `plumb pull`.
    let history = std::fs::read_to_string(s.state().join("runs.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 2, "{history}");

    // The metrics count all of it.
    let (code, m) = server.get("/metrics");
    assert_eq!(code, 200, "{m}");
    assert_eq!(
        metric(&m, "plumb_webhooks_total{outcome=\"unauthorized\"}"),
        5.0
    );
    assert_eq!(metric(&m, "plumb_webhooks_total{outcome=\"ignored\"}"), 1.0);
    assert_eq!(metric(&m, "plumb_webhooks_total{outcome=\"ping\"}"), 1.0);
    assert_eq!(
        metric(&m, "plumb_webhooks_total{outcome=\"too_large\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "plumb_webhooks_total{outcome=\"accepted\"}"),
        7.0
    );
    assert_eq!(metric(&m, "plumb_runs_total{result=\"changed\"}"), 2.0);
    assert_eq!(metric(&m, "plumb_run_in_progress"), 0.0);
    assert!(metric(&m, "plumb_last_run_timestamp_seconds") > 1.0e9);
    assert!(metric(&m, "plumb_last_run_duration_seconds") > 0.0);

    // The secret never reaches the log; SIGTERM stops the server cleanly.
    let mut server = server;
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(server.child.id() as i32, libc::SIGTERM);
    }
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "plumb serve did not stop on SIGTERM:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = server.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("plumb serve: stopped"), "{log}");
    assert!(log.contains("not authenticated"), "{log}");
    assert!(!log.contains(SECRET), "the secret was logged:\n{log}");
}

#[test]
fn serve_refuses_to_start_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::cargo_bin("plumb")
        .unwrap()
        .args(["serve", "file:///nonexistent", "--listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env_remove("PLUMB_WEBHOOK_SECRET")
        .env_remove("PLUMB_STATE_DIR")
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no webhook secret"), "{err}");
    assert!(!err.contains("listening"), "{err}");
}

/// Opens `n` TCP connections to `addr` from `from` (another loopback address, so the test's own
/// requests come from elsewhere, as a forge's would) and sends nothing on them.
fn idle_connections(addr: SocketAddr, from: &str, n: usize) -> Vec<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
            let stream = tokio::time::timeout(Duration::from_secs(10), sock.connect(addr))
                .await
                .expect("connect timed out")
                .unwrap();
            let std = stream.into_std().unwrap();
            std.set_nonblocking(false).unwrap();
            out.push(std);
        }
        out
    })
}

/// A signed GitHub push of `commit` with the delivery id `id`.
fn github_push(s: &Setup, commit: &str, id: &str) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let body = push_body(&s.branch, commit);
    let sig = format!("sha256={}", hmac_hex(SECRET, &body));
    let headers = vec![
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", id),
        ("Content-Type", "application/json"),
        ("X-Hub-Signature-256", sig.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    (body, headers)
}

fn post(server: &Server, headers: &[(&'static str, String)], body: &[u8]) -> (u16, String) {
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    server.post(&refs, body)
}

#[test]
fn serve_answers_health_checks_and_pushes_while_idle_connections_pile_up() {
    let s = setup();
    let first = s.origin.head().unwrap().target().unwrap().to_string();
    // 512 open files, as a tight service limit: more idle connections than that starved
    // accept() before, so /healthz and pushes were never answered.
    let server = Server::start_with(
        &s,
        &["--header-timeout", "2", "--body-timeout", "2"],
        Some(512),
    );
    let attack = idle_connections(server.addr, "127.0.0.2", 600);

    // Answered at once, from another address.
    let t0 = Instant::now();
    assert_eq!(server.get("/healthz"), (200, "ok\n".to_string()));
    let (body, headers) = github_push(&s, &first, "slowloris-1");
    let (code, text) = post(&server, &headers, &body);
    assert_eq!(code, 202, "{text}");
    assert!(text.starts_with("accepted"), "{text}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "answered only after {:?}",
        t0.elapsed()
    );
    let st = server.wait_status("the run", |st| {
        st["state"] == "idle" && st["last_run"]["commit"] == first.as_str()
    });
    assert_eq!(st["last_run"]["result"], "changed", "{st:#}");

    // The idle connections the server took are closed after the header deadline (2 s), and
    // those past the per-address cap were closed at once.
    let t0 = Instant::now();
    let mut closed = 0;
    for mut c in attack {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        match c.read_to_end(&mut buf) {
            Ok(_) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            Err(e) => panic!("an idle connection stayed open: {e}"),
        }
    }
    assert_eq!(closed, 600);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "idle connections closed after {:?}",
        t0.elapsed()
    );

    // A body that never comes: 408 after the body deadline, and nothing runs.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t0 = Instant::now();
    slow.write_all(
        b"POST /hooks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX-GitHub-Event: push\r\n\r\n{\"ref\"",
    )
    .unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    let (code, m) = server.get("/metrics");
    assert_eq!(code, 200);
    assert_eq!(metric(&m, "plumb_webhooks_total{outcome=\"timeout\"}"), 1.0);
    assert_eq!(metric(&m, "plumb_runs_total{result=\"changed\"}"), 1.0);
    assert!(
        server.log().contains("connections refused"),
        "{}",
        server.log()
    );
}

#[test]
fn serve_ignores_replayed_deliveries() {
    let s = setup();
    let first = s.origin.head().unwrap().target().unwrap().to_string();
    let server = Server::start(&s, &[]);
    let (body, headers) = github_push(&s, &first, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    let (code, text) = post(&server, &headers, &body);
    assert_eq!(code, 202, "{text}");
    server.wait_status("the run", |st| {
        st["state"] == "idle" && st["last_run"]["commit"] == first.as_str()
    });
    let logins = s.logins();

    // The same request again, and again: answered, nothing run.
    for _ in 0..3 {
        let (code, text) = post(&server, &headers, &body);
        assert_eq!(code, 200, "{text}");
        assert_eq!(
            text,
            "duplicate: delivery 72d3162e-cc78-11e3-81ab-4c9367dc0958 was received already; nothing run\n"
        );
    }
    // GitLab's retries keep their Idempotency-Key; a request without any id is known by its
    // body.
    let gitlab = vec![
        ("X-Gitlab-Event", "Push Hook".to_string()),
        ("Idempotency-Key", "k-1".to_string()),
        ("X-Gitlab-Token", SECRET.to_string()),
    ];
    let anon = push_body(&s.branch, "0123456789012345678901234567890123456789");
    let anon_headers = vec![
        ("X-Gitea-Event", "push".to_string()),
        ("X-Gitea-Signature", hmac_hex(SECRET, &anon)),
    ];
    for (h, b) in [(&gitlab, &body), (&anon_headers, &anon)] {
        let before = runs_total(&server.status());
        let (code, text) = post(&server, h, b);
        assert_eq!(code, 202, "{text}");
        // Wait for this delivery's own run to have happened, not merely for an idle state
        // (the run may not have started yet).
        let st = server.wait_status("the run", |st| {
            st["state"] == "idle" && st["queued"] == false && runs_total(st) > before
        });
        let runs = runs_total(&st);
        let (code, text) = post(&server, h, b);
        assert_eq!(code, 200, "{text}");
        assert!(text.starts_with("duplicate"), "{text}");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(runs_total(&server.status()), runs, "a replay ran");
    }
    // A refused request does not mark its id as seen: the signed one with that id still runs.
    let (body2, mut headers2) = github_push(&s, &first, "fresh-id");
    headers2[3].1 = "sha256=00".into();
    let (code, _) = post(&server, &headers2, &body2);
    assert_eq!(code, 401);
    let (_, headers2) = github_push(&s, &first, "fresh-id");
    let (code, text) = post(&server, &headers2, &body2);
    assert_eq!(code, 202, "{text}");

    let (code, m) = server.get("/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        metric(&m, "plumb_webhooks_total{outcome=\"duplicate\"}"),
        5.0
    );
    assert_eq!(
        metric(&m, "plumb_webhooks_total{outcome=\"accepted\"}"),
        4.0
    );
    assert!(s.logins() >= logins);
}

#[test]
fn serve_refuses_a_secret_file_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    for mode in [0o644, 0o640] {
        set_mode(&secret, mode);
        let out = assert_cmd::Command::cargo_bin("plumb")
            .unwrap()
            .args(["serve", "file:///nonexistent", "--listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--webhook-secret-file")
            .arg(&secret)
            .env_remove("PLUMB_WEBHOOK_SECRET")
            .env_remove("PLUMB_STATE_DIR")
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("has mode {mode:04o}")), "{err}");
        assert!(
            err.contains(&format!("chmod 600 {}", secret.display())),
            "{err}"
        );
        assert!(!err.contains("listening"), "{err}");
        assert!(!err.contains(SECRET), "{err}");
    }
}

#[test]
fn serve_refuses_a_pushed_commit_that_declares_nothing() {
    let s = setup();
    let first = s.origin.head().unwrap().target().unwrap().to_string();
    let server = Server::start(&s, &[]);
    let (body, headers) = github_push(&s, &first, "first");
    assert_eq!(post(&server, &headers, &body).0, 202);
    server.wait_status("the first run", |st| {
        st["state"] == "idle" && st["last_run"]["commit"] == first.as_str()
    });
    assert!(s.root().join("etc/motd").exists());
    let logins = s.logins();

    // A commit that removes every manifest: refused, the host not contacted, nothing pruned.
    let mut idx = s.origin.index().unwrap();
    idx.remove_path(std::path::Path::new("manifests/motd.yaml"))
        .unwrap();
    idx.write().unwrap();
    let tree = s.origin.find_tree(idx.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
    let parent = s.origin.head().unwrap().peel_to_commit().unwrap();
    let empty = s
        .origin
        .commit(
            Some("HEAD"),
            &sig,
            &sig,
            "remove everything",
            &tree,
            &[&parent],
        )
        .unwrap()
        .to_string();
    let (body, headers) = github_push(&s, &empty, "empty");
    assert_eq!(post(&server, &headers, &body).0, 202);
    let st = server.wait_status("the refused run", |st| {
        st["state"] == "idle" && st["last_run"]["commit"] == empty.as_str()
    });
    assert_eq!(st["last_run"]["result"], "failed", "{st:#}");
    assert_eq!(st["last_run"]["converged"], false, "{st:#}");
    assert!(
        st["last_run"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("is not a valid cluster repo"),
        "{st:#}"
    );
    assert!(s.root().join("etc/motd").exists(), "the host was pruned");
    assert_eq!(s.logins(), logins, "the host was contacted");
    assert!(
        server.log().contains("the repo declares nothing"),
        "{}",
        server.log()
    );
}

/// `payload=<JSON>` as GitHub form-encodes it (its default content type).
fn form_encode(json: &[u8]) -> Vec<u8> {
    let mut out = b"payload=".to_vec();
    for &b in json {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
        }
    }
    out
}

/// The head (status line and headers, lower-cased names) and body of a GET.
fn get_full(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

fn plumb_history(s: &Setup, args: &[&str]) -> (i32, String) {
    let out = assert_cmd::Command::cargo_bin("plumb")
        .unwrap()
        .arg("history")
        .args(args)
        .arg("--state-dir")
        .arg(s.state())
        .env_remove("PLUMB_STATE_DIR")
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn serve_converges_a_form_encoded_github_delivery_and_shows_it_on_the_page_and_in_history() {
    let s = setup();
    // A commit whose message carries markup: the page and the history must show it inert.
    let commit = s.commit(
        &[("manifests/motd.yaml", &motd(&s.root(), "v-form"))],
        "motd <script>alert(1)</script>",
    );
    let server = Server::start(&s, &["--webhook-rate-limit", "5"]);

    // GitHub's defaults: form-encoded, signed over the raw body as sent.
    let body = form_encode(&push_body(&s.branch, &commit));
    let sig = format!("sha256={}", hmac_hex(SECRET, &body));
    let headers = [
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "form-1"),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("X-Hub-Signature-256", sig.as_str()),
    ];
    // The signature of the JSON inside is not GitHub's signature of a form body: refused.
    let json_sig = format!(
        "sha256={}",
        hmac_hex(SECRET, &push_body(&s.branch, &commit))
    );
    let (code, _) = server.post(
        &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "form-0"),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Hub-Signature-256", json_sig.as_str()),
        ],
        &body,
    );
    assert_eq!(code, 401);
    let (code, text) = server.post(&headers, &body);
    assert_eq!(code, 202, "{text}");
    assert!(text.starts_with("accepted"), "{text}");
    let st = server.wait_status("the form delivery's run", |st| {
        st["state"] == "idle" && st["last_run"]["commit"] == commit.as_str()
    });
    assert_eq!(st["last_run"]["result"], "changed", "{st:#}");
    assert_eq!(
        std::fs::read_to_string(s.root().join("etc/motd")).unwrap(),
        "v-form\n"
    );

    // A GitLab signing-token delivery an hour old: refused, however well signed.
    let gl_body = push_body(&s.branch, &commit);
    let old = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600)
        .to_string();
    let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(format!("msg-1.{old}.").as_bytes());
    m.update(&gl_body);
    use base64::Engine as _;
    let gl_sig = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    );
    let (code, _) = server.post(
        &[
            ("X-Gitlab-Event", "Push Hook"),
            ("webhook-id", "msg-1"),
            ("webhook-timestamp", old.as_str()),
            ("webhook-signature", gl_sig.as_str()),
        ],
        &gl_body,
    );
    assert_eq!(code, 401);
    assert!(
        server.log().contains("away from this server's clock"),
        "{}",
        server.log()
    );

    // The status page: the commit, the host, every hostile string escaped, a strict policy.
    let (head, page) = get_full(server.addr, "/");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'none'; style-src 'sha256-"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(page.contains(&commit), "{page}");
    assert!(
        page.contains("<td>h0</td><td class=\"changed\">changed</td>"),
        "{page}"
    );
    assert!(
        page.contains("motd &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script"), "{page}");
    assert_eq!(get_full(server.addr, "/status.html").1, page);
    // One run's page, linked from the list; an unknown or malformed id is 404.
    let link = page
        .split("<a href=\"/runs/")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no run link in {page}"))
        .to_string();
    let (head, run_page) = get_full(server.addr, &format!("/runs/{link}"));
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(run_page.contains(&commit), "{run_page}");
    assert!(
        run_page.contains("<td>h0</td><td class=\"changed\">changed</td>"),
        "{run_page}"
    );
    assert!(!run_page.contains("<script"), "{run_page}");
    assert!(
        get_full(server.addr, "/runs/20000101T000000Z-000000")
            .0
            .starts_with("http/1.1 404")
    );
    assert!(
        get_full(server.addr, "/runs/..%2F..%2Fetc%2Fpasswd")
            .0
            .starts_with("http/1.1 404")
    );
    // /status stays JSON.
    let (head, _) = get_full(server.addr, "/status");
    assert!(head.contains("content-type: application/json"), "{head}");

    // The history: the run, its trigger and host; one run shown host by host.
    let (code, list) = plumb_history(&s, &[]);
    assert_eq!(code, 0, "{list}");
    let line = list
        .lines()
        .find(|l| l.contains(&commit[..12]))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains(" webhook "), "{line}");
    assert!(line.contains(" changed "), "{line}");
    assert!(line.contains(" h0 "), "{line}");
    let id = line.split_whitespace().next().unwrap().to_string();
    let (code, shown) = plumb_history(&s, &["show", &id]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("trigger  webhook"), "{shown}");
    assert!(shown.contains("\nh0 changed\n"), "{shown}");
    assert!(shown.contains("/etc/motd"), "{shown}");
    let (code, json) = plumb_history(&s, &[&id, "--output", "json"]);
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["run"]["commit"], commit.as_str());
    assert_eq!(v["report"]["hosts"][0]["host"], "h0");
    let (code, _) = plumb_history(&s, &["no-such-run"]);
    assert_eq!(code, 1);

    // A burst over the rate limit (5 a minute from one address): 429 before anything else.
    let mut limited = 0;
    for i in 0..8 {
        let (code, _) = server.post(&[("X-GitHub-Delivery", &format!("burst-{i}"))], b"{}");
        if code == 429 {
            limited += 1;
        } else {
            assert_eq!(code, 401);
        }
    }
    assert!(limited >= 3, "{limited} of 8 limited");
    let (code, m) = server.get("/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        metric(&m, "plumb_webhooks_total{outcome=\"rate_limited\"}"),
        limited as f64
    );
}

#[test]
fn serve_converges_gitea_form_and_gitlab_signing_token_deliveries() {
    let s = setup();
    let first = s.origin.head().unwrap().target().unwrap().to_string();
    let server = Server::start(&s, &[]);

    // Forgejo, form-encoded: the signature covers the JSON inside `payload=`.
    let json = push_body(&s.branch, &first);
    let body = form_encode(&json);
    let sig = hmac_hex(SECRET, &json);
    let (code, text) = server.post(
        &[
            ("X-Forgejo-Event", "push"),
            ("X-Forgejo-Delivery", "fj-1"),
            ("X-Forgejo-Signature", sig.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &body,
    );
    assert_eq!(code, 202, "{text}");
    assert!(text.starts_with("accepted"), "{text}");
    server.wait_status("the Forgejo run", |st| {
        st["state"] == "idle" && st["last_run"]["commit"] == first.as_str()
    });
    assert_eq!(
        std::fs::read_to_string(s.root().join("etc/motd")).unwrap(),
        "v1\n"
    );

    // GitLab with a signing token, now: accepted; the same webhook-id again: a duplicate.
    let second = s.commit(&[("manifests/motd.yaml", &motd(&s.root(), "v-gl"))], "gl");
    let gl_body = push_body(&s.branch, &second);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(format!("msg-2.{now}.").as_bytes());
    m.update(&gl_body);
    use base64::Engine as _;
    let gl_sig = format!(
        "v1,bm90IHRoaXMgb25l v1,{}",
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    );
    let headers = [
        ("X-Gitlab-Event", "Push Hook"),
        ("webhook-id", "msg-2"),
        ("webhook-timestamp", now.as_str()),
        ("webhook-signature", gl_sig.as_str()),
    ];
    let (code, text) = server.post(&headers, &gl_body);
    assert_eq!(code, 202, "{text}");
    server.wait_status("the GitLab run", |st| {
        st["state"] == "idle" && st["last_run"]["commit"] == second.as_str()
    });
    assert_eq!(
        std::fs::read_to_string(s.root().join("etc/motd")).unwrap(),
        "v-gl\n"
    );
    let (code, text) = server.post(&headers, &gl_body);
    assert_eq!(code, 200, "{text}");
    assert!(text.starts_with("duplicate"), "{text}");

    // A tag push and a branch deletion, signed right: ignored, nothing run.
    let runs = runs_total(&server.status());
    for json in [
        serde_json::json!({"ref": "refs/tags/v1", "after": second, "created": true}),
        serde_json::json!({"ref": format!("refs/heads/{}", s.branch), "after": "0000000000000000000000000000000000000000", "deleted": true}),
    ] {
        let body = form_encode(json.to_string().as_bytes());
        let sig = format!("sha256={}", hmac_hex(SECRET, &body));
        let (code, text) = server.post(
            &[
                ("X-GitHub-Event", "push"),
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-Hub-Signature-256", sig.as_str()),
            ],
            &body,
        );
        assert_eq!(code, 202, "{text}");
        assert!(text.starts_with("ignored"), "{text}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(runs_total(&server.status()), runs, "an ignored push ran");
}

/// Installs the repo's `post-receive` hook (examples/hooks/post-receive, the one the README
/// points to) in `bare`, configured as its doc says, to send each push to `addr` as GitHub does
/// by default: form-encoded (`payload=`), signed over the raw body with the secret in
/// `secret_file`, a fresh delivery id each time. It prints plumb's answer, which `git push`
/// shows as `remote:`.
fn install_post_receive_hook(
    bare: &std::path::Path,
    addr: SocketAddr,
    secret_file: &std::path::Path,
) {
    let hook = bare.join("hooks/post-receive");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hooks/post-receive"),
        &hook,
    )
    .unwrap();
    set_mode(&hook, 0o755);
    let url = format!("http://{addr}/hooks");
    let secret = secret_file.display().to_string();
    for (key, value) in [
        ("plumb.url", url.as_str()),
        ("plumb.secretFile", secret.as_str()),
    ] {
        let out = Command::new("git")
            .arg("-C")
            .arg(bare)
            .args(["config", key, value])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A notification command that appends each event and summary to `log`.
fn notify_script(s: &Setup, log: &std::path::Path) -> PathBuf {
    let script = s.dir.path().join("notify.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{{ printf '%s ' \"$PLUMB_NOTIFY_EVENT\"; cat; echo; }} >> '{}'\n",
            log.display()
        ),
    )
    .unwrap();
    set_mode(&script, 0o755);
    script
}

/// Reads `/metrics` as Prometheus' text format strictly: every line a comment (`# HELP` or
/// `# TYPE` of a known type) or `name{labels} value` with a metric name, well-formed labels
/// and a float; every sample's family declared by a `# TYPE` before it. Returns the samples.
fn parse_prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut types = std::collections::BTreeMap::new();
    let mut samples = std::collections::BTreeMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.splitn(3, ' ');
            let (kw, name, what) = (w.next(), w.next(), w.next());
            assert!(name.is_some_and(name_ok), "bad comment line: {line}");
            match kw {
                Some("HELP") => assert!(what.is_some_and(|h| !h.is_empty()), "{line}"),
                Some("TYPE") => {
                    let t = what.unwrap_or_default();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line}"
                    );
                    types.insert(name.unwrap_or_default().to_string(), t.to_string());
                }
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        assert!(!line.trim().is_empty(), "blank line in the exposition");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                for pair in labels.split(',') {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                    assert!(name_ok(k), "bad label name: {line}");
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "{line}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(name_ok(name), "bad metric name: {line}");
        assert!(types.contains_key(name), "{name} has no # TYPE before it");
        assert!(
            samples.insert(series.to_string(), v).is_none(),
            "duplicate {series}"
        );
    }
    samples
}

fn motd_of(s: &Setup) -> String {
    std::fs::read_to_string(s.root().join("etc/motd")).unwrap_or_default()
}

fn history_lines(s: &Setup) -> usize {
    std::fs::read_to_string(s.state().join("runs.jsonl"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// `plumb pull` as the timer runs it, on the server's state folder and source.
fn timer_pull(s: &Setup, source: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let out = assert_cmd::Command::cargo_bin("plumb")
        .unwrap()
        .arg("pull")
        .arg(source)
        .args(["--branch", &s.branch, "--state-dir"])
        .arg(s.state())
        .args(extra)
        .env_remove("PLUMB_STATE_DIR")
        .env_remove("PLUMB_INVENTORY")
        .env_remove("PLUMB_AGE_IDENTITY")
        .env("NO_COLOR", "1")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_push_that_breaks_a_host_is_rolled_back_held_back_and_a_later_good_push_applies() {
    let s = setup();
    let bare = s.bare();
    let notified = s.dir.path().join("notified.log");
    let script = notify_script(&s, &notified);
    let script_arg = script.display().to_string();
    let server = Server::start_from(&s, &bare, &["--notify-command", &script_arg]);
    install_post_receive_hook(&bare, server.addr, &s.dir.path().join("webhook-secret"));

    // A good push, through the hook: applied.
    let good = s.commit(
        &[("manifests/motd.yaml", &motd(&s.root(), "v-good"))],
        "good",
    );
    let out = s.push(None, false);
    assert!(
        out.contains("plumb: 202 accepted"),
        "the hook did not deliver: {out}"
    );
    let st = server.wait_status("the good push's run", |st| {
        st["state"] == "idle" && st["last_run"]["commit"] == good.as_str()
    });
    assert_eq!(st["last_run"]["result"], "changed", "{st:#}");
    assert_eq!(motd_of(&s), "v-good\n");

    // A push that breaks h0: the motd changes, and a check on the host rejects it (a step
    // that fails at apply time). Rolled back to the good commit, marked bad, a failure.
    let bad = s.commit(
        &[
            ("manifests/motd.yaml", &motd(&s.root(), "v-broken")),
            (
                "manifests/check.yaml",
                &failing_check(&s.root(), "h0", "motd rejected by the check"),
            ),
        ],
        "breaks h0",
    );
    let out = s.push(None, false);
    assert!(out.contains("plumb: 202 accepted"), "{out}");
    let st = server.wait_status("the bad push's run and its rollback", |st| {
        st["state"] == "idle" && st["last_run"]["commit"] == bad.as_str()
    });
    let last = &st["last_run"];
    assert_eq!(last["result"], "failed", "{st:#}");
    assert_eq!(last["exit_code"], 1, "{st:#}");
    assert_eq!(last["rolled_back_to"], good.as_str(), "{st:#}");
    assert!(last.get("rollback_failed").is_none(), "{st:#}");
    let error = last["error"].as_str().unwrap_or_default();
    for want in ["failed its gates", "host h0", "config-check", "rolled back"] {
        assert!(error.contains(want), "{want} not in {error}");
    }
    assert_eq!(
        motd_of(&s),
        "v-good\n",
        "the rollback did not restore the motd"
    );
    let bad_marks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.state().join("bad-commits.json")).unwrap())
            .unwrap();
    assert_eq!(bad_marks[0]["commit"], bad.as_str());
    assert_eq!(bad_marks[0]["rolled_back_to"], good.as_str());
    assert_eq!(
        std::fs::read_to_string(s.state().join("last-applied"))
            .unwrap()
            .trim(),
        good
    );

    // /metrics: valid Prometheus text, one rollback, the failed run counted as failed.
    let (code, text) = server.get("/metrics");
    assert_eq!(code, 200);
    let m = parse_prometheus(&text);
    assert_eq!(m["plumb_rollbacks_total"], 1.0, "{text}");
    assert_eq!(m["plumb_runs_total{result=\"failed\"}"], 1.0, "{text}");
    assert_eq!(m["plumb_runs_total{result=\"changed\"}"], 1.0, "{text}");
    assert_eq!(m["plumb_last_run_exit_code"], 1.0, "{text}");

    // The notification: a rollback, which is a failure.
    let t0 = Instant::now();
    let note = loop {
        let n = std::fs::read_to_string(&notified).unwrap_or_default();
        if n.contains("rolled_back ") {
            break n;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no rollback notification: {n:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let line = note
        .lines()
        .find(|l| l.starts_with("rolled_back "))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line["rolled_back ".len()..]).unwrap();
    assert_eq!(v["event"], "rolled_back");
    assert_eq!(v["result"], "failed");
    assert_eq!(v["rolled_back_to"], good.as_str());
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("FAILED, rolled back to"),
        "{v}"
    );

    // The page: the failure, the rollback, the commit held back and why.
    let (_, page) = get_full(server.addr, "/");
    assert!(
        page.contains("The last run FAILED and was rolled back"),
        "{page}"
    );
    assert!(page.contains("<h2>Held back</h2>"), "{page}");
    assert!(page.contains(&bad[..12]), "{page}");
    assert!(page.contains("motd rejected by the check"), "{page}");
    assert!(
        page.contains(&format!(
            "(marked bad; rolled back to <code>{}</code>)",
            &good[..12]
        )),
        "{page}"
    );
    assert!(page.contains("class=\"rolled_back\">rolled_back"), "{page}");

    // The history: the failed run and the rollback run, and why the commit is held back.
    let (code, list) = plumb_history(&s, &[]);
    assert_eq!(code, 0, "{list}");
    let failed = list
        .lines()
        .find(|l| l.contains(&bad[..12]) && l.contains(" failed "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(failed.contains(" webhook "), "{failed}");
    assert!(
        list.lines().any(|l| l.contains(&good[..12])
            && l.contains(" rollback ")
            && l.contains(" rolled_back ")),
        "{list}"
    );
    assert!(list.contains("HELD BACK"), "{list}");
    assert!(list.contains("motd rejected by the check"), "{list}");
    let id = failed.split_whitespace().next().unwrap();
    let (code, shown) = plumb_history(&s, &["show", id]);
    assert_eq!(code, 1, "{shown}");
    assert!(
        shown.contains("gates    FAILED: commit marked bad; rolled back to"),
        "{shown}"
    );
    assert!(shown.contains("config-check"), "{shown}");

    // Held back: the timer's pull, a redelivery, and the interval's drift repair (which
    // converges the good commit instead) never apply it again.
    let lines = history_lines(&s);
    let (code, out) = timer_pull(&s, &bare, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("held back"), "{out}");
    assert_eq!(history_lines(&s), lines, "a held-back pull recorded a run");
    assert_eq!(motd_of(&s), "v-good\n");
    let body = form_encode(&push_body(&s.branch, &bad));
    let sig = format!("sha256={}", hmac_hex(SECRET, &body));
    let (code, _) = server.post(
        &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "redelivery-1"),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Hub-Signature-256", sig.as_str()),
        ],
        &body,
    );
    assert_eq!(code, 202);
    let st = server.wait_status("the redelivery", |st| {
        st["state"] == "idle" && st["last_run"]["result"] == "held"
    });
    assert_eq!(st["last_run"]["held"], bad.as_str(), "{st:#}");
    assert_eq!(motd_of(&s), "v-good\n");
    let (code, out) = timer_pull(&s, &bare, &["--always"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("converging the last good commit"), "{out}");
    assert_eq!(motd_of(&s), "v-good\n");

    // A later good push applies, and is a recovery.
    let fixed = s.commit_removing(
        &[("manifests/motd.yaml", &motd(&s.root(), "v-fixed"))],
        &["manifests/check.yaml"],
        "fix",
    );
    let out = s.push(None, false);
    assert!(out.contains("plumb: 202 accepted"), "{out}");
    let st = server.wait_status("the fixed push's run", |st| {
        st["state"] == "idle" && st["last_run"]["commit"] == fixed.as_str()
    });
    assert_eq!(st["last_run"]["result"], "changed", "{st:#}");
    assert_eq!(motd_of(&s), "v-fixed\n");

    // A force-push back to the bad commit: still held back, nothing touched.
    let out = s.push(Some(&bad), true);
    assert!(out.contains("plumb: 202 accepted"), "{out}");
    let st = server.wait_status("the force-push's run", |st| {
        st["state"] == "idle" && st["last_run"]["held"] == bad.as_str()
    });
    assert_eq!(st["last_run"]["result"], "held", "{st:#}");
    assert_eq!(motd_of(&s), "v-fixed\n");
    let (code, text) = server.get("/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        parse_prometheus(&text)["plumb_rollbacks_total"],
        1.0,
        "{text}"
    );

    // On purpose: --retry-bad runs it again; it fails again and goes back to the fixed commit.
    drop(server);
    let (code, out) = timer_pull(&s, &bare, &["--retry-bad"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("failed its gates"), "{out}");
    assert!(
        out.contains(&format!("rolled back to {}", &fixed[..12])),
        "{out}"
    );
    assert_eq!(motd_of(&s), "v-fixed\n");
}

/// Runs `cmd` to its end or kills it after `limit`; its exit status and stdout.
fn run_bounded(mut cmd: Command, limit: Duration) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let ok = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.success();
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {limit:?}:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        ok,
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default(),
    )
}

/// Debian's `chromium` (the test command installs it).
fn chromium() -> PathBuf {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "chromium is missing: install Debian's package `chromium` (apt-get install -y chromium)"
    );
}

/// Headless Chromium on `url`, with a profile of its own; the extra arguments say what to do.
fn headless(profile: &std::path::Path, url: &str, what: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        // The test may run as root, where Chromium's own sandbox cannot start.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1280,1500",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(what)
    .arg(url)
    .env("HOME", profile);
    run_bounded(cmd, Duration::from_secs(120))
}

#[test]
fn the_status_page_in_headless_chromium_holds_the_commit_every_host_certificate_and_rollback() {
    let s = setup_hosts(2);
    // A private CA (its key an age secret of the repo) and a certificate on each host, next to
    // each host's motd.
    let id = age::x25519::Identity::generate();
    let identity = s.dir.path().join("age-key.txt");
    {
        use age::secrecy::ExposeSecret as _;
        std::fs::write(&identity, format!("{}\n", id.to_string().expose_secret())).unwrap();
    }
    std::fs::create_dir_all(s.origin_dir().join("secrets")).unwrap();
    std::fs::write(
        s.origin_dir().join("secrets/recipients.txt"),
        format!("{}\n", id.to_public()),
    )
    .unwrap();
    let mut docs = vec![
        "kind: CertificateAuthority\nname: fleet-ca\ncommon_name: fleet CA\ncertificate: pki/fleet-ca.crt\nkey: { secret: fleet-ca-key }\n".to_string(),
    ];
    for i in 0..2 {
        let r = s.root_of(i);
        docs.push(format!(
            "kind: Certificate\nname: tls-h{i}\nhosts: host:h{i}\nca: fleet-ca\ncert_path: {r}/tls/server.crt\nkey_path: {r}/tls/server.key\nvalidity: 90d\nrenew_before: 30d\n",
            r = r.display()
        ));
        docs.push(format!(
            "kind: File\nname: motd-h{i}\nhosts: host:h{i}\npath: {r}/etc/issue\ncontent: \"h{i}\\n\"\n",
            r = r.display()
        ));
    }
    std::fs::create_dir_all(s.origin_dir().join("manifests")).unwrap();
    std::fs::write(
        s.origin_dir().join("manifests/fleet.yaml"),
        docs.join("---\n"),
    )
    .unwrap();
    let out = assert_cmd::Command::cargo_bin("plumb")
        .unwrap()
        .args(["certs", "init-ca", "fleet-ca", "--repo"])
        .arg(s.origin_dir())
        .env("PLUMB_AGE_IDENTITY", &identity)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let commit = s.commit_all("a CA, a certificate and an issue file per host");

    let bare = s.bare();
    let identity_arg = identity.display().to_string();
    let server = Server::start_from(&s, &bare, &["--age-identity", &identity_arg]);
    install_post_receive_hook(&bare, server.addr, &s.dir.path().join("webhook-secret"));
    // An empty commit pushed: the hook delivers, the run converges everything.
    let head = s.commit(&[], "pushed through the hook");
    let out = s.push(None, false);
    assert!(out.contains("plumb: 202 accepted"), "{out}");
    let st = server.wait_status("the run", |st| {
        st["state"] == "idle" && st["last_run"]["commit"] == head.as_str()
    });
    assert_eq!(st["last_run"]["result"], "changed", "{st:#}");
    assert_ne!(commit, head);
    let certs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.state().join("certs.json")).unwrap())
            .unwrap();
    assert_eq!(
        certs["certificates"].as_array().unwrap().len(),
        2,
        "{certs:#}"
    );

    // Then a push that breaks h1: rolled back to the good commit, held back.
    let bad = s.commit(
        &[(
            "manifests/check.yaml",
            &failing_check(&s.root_of(1), "h1", "issue file rejected by the check"),
        )],
        "check the issue file on h1",
    );
    let out = s.push(None, false);
    assert!(out.contains("plumb: 202 accepted"), "{out}");
    let st = server.wait_status("the bad push's run", |st| {
        st["state"] == "idle" && st["last_run"]["commit"] == bad.as_str()
    });
    assert_eq!(st["last_run"]["rolled_back_to"], head.as_str(), "{st:#}");

    // The DOM as Chromium builds it (no JavaScript on the page, so it is the HTML as served):
    // the applied commit, every host, every certificate with its days left, the failure and
    // the commit held back.
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", server.addr);
    let (ok, dom, err) = headless(profile.path(), &url, &["--dump-dom"]);
    assert!(ok, "{err}");
    assert!(
        dom.contains(&format!("Applied commit: <code>{head}</code>")),
        "{dom}"
    );
    assert!(
        dom.contains("The last run FAILED and was rolled back"),
        "{dom}"
    );
    assert!(dom.contains("<h2>Held back</h2>"), "{dom}");
    assert!(dom.contains(&bad[..12]), "{dom}");
    assert!(dom.contains("issue file rejected by the check"), "{dom}");
    for h in s.hosts() {
        assert!(dom.contains(&format!("<td>{h}</td>")), "{h} not in\n{dom}");
    }
    assert!(dom.contains("<h2>Certificates</h2>"), "{dom}");
    for i in 0..2 {
        let path = format!("{}/tls/server.crt", s.root_of(i).display());
        let row = dom
            .lines()
            .find(|l| l.contains(&path))
            .unwrap_or_else(|| panic!("{path} not in\n{dom}"));
        // Issued for 90 days a moment ago: 89 or 90 whole days left, standing ok.
        assert!(
            row.contains("<td>89</td>") || row.contains("<td>90</td>"),
            "{row}"
        );
        assert!(row.contains("class=\"ok\">ok<"), "{row}");
    }

    // A screenshot: a PNG of the page as a browser shows it (kept where
    // PLUMB_STATUS_SCREENSHOT says, for the README).
    let png = profile.path().join("status.png");
    let (ok, _, err) = headless(
        profile.path(),
        &url,
        &[&format!("--screenshot={}", png.display())],
    );
    assert!(ok, "{err}");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot: {e}\n{err}"));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // The IHDR chunk: width and height as asked.
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 1500));
    if let Some(keep) = std::env::var_os("PLUMB_STATUS_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }

    // /metrics parses as Prometheus text and says what ran.
    let (code, text) = server.get("/metrics");
    assert_eq!(code, 200);
    let m = parse_prometheus(&text);
    assert_eq!(m["plumb_runs_total{result=\"changed\"}"], 1.0, "{text}");
    assert_eq!(m["plumb_runs_total{result=\"failed\"}"], 1.0, "{text}");
    assert_eq!(m["plumb_rollbacks_total"], 1.0, "{text}");
    assert_eq!(m["plumb_run_in_progress"], 0.0, "{text}");
}

#[test]
fn a_status_token_guards_the_page_status_runs_and_metrics_but_not_hooks_or_healthz() {
    let s = setup();
    let token_file = s.dir.path().join("status-token");
    std::fs::write(&token_file, "t0ken-for-the-page\n").unwrap();
    set_mode(&token_file, 0o644);
    // A token others can read is refused, as the webhook secret is.
    let out = assert_cmd::Command::cargo_bin("plumb")
        .unwrap()
        .arg("serve")
        .arg(s.origin_dir())
        .args(["--state-dir"])
        .arg(s.state())
        .args(["--listen", "127.0.0.1:0", "--status-token-file"])
        .arg(&token_file)
        .env("PLUMB_WEBHOOK_SECRET", SECRET)
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    set_mode(&token_file, 0o600);
    let token_arg = token_file.display().to_string();
    let server = Server::start(&s, &["--status-token-file", &token_arg]);
    for path in [
        "/",
        "/status.html",
        "/status",
        "/metrics",
        "/runs/20261203T093932Z-00abcd",
    ] {
        let (code, body) = server.get(path);
        assert_eq!(code, 401, "{path}: {body}");
        let (code, _) = http(
            server.addr,
            "GET",
            path,
            &[("Authorization", "Bearer wrong")],
            b"",
        );
        assert_eq!(code, 401, "{path}");
    }
    let (head, _) = get_full(server.addr, "/metrics");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let auth = [("Authorization", "Bearer t0ken-for-the-page")];
    for path in ["/", "/status", "/metrics"] {
        let (code, body) = http(server.addr, "GET", path, &auth, b"");
        assert_eq!(code, 200, "{path}: {body}");
    }
    assert_eq!(server.get("/healthz").0, 200);
    // A signed push needs no token: its signature authenticates it.
    let first = s.origin.head().unwrap().target().unwrap().to_string();
    let body = push_body(&s.branch, &first);
    let sig = format!("sha256={}", hmac_hex(SECRET, &body));
    let (code, text) = server.post(
        &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "token-1"),
            ("Content-Type", "application/json"),
            ("X-Hub-Signature-256", sig.as_str()),
        ],
        &body,
    );
    assert_eq!(code, 202, "{text}");
}
