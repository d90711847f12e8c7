//! `plumb serve` as a child process, against OpenSSH's sshd on loopback and a git repo made by
//! the test: unauthenticated and wrongly signed webhooks are refused (401) and run nothing,
//! pushes to other branches are ignored, a signed push to the branch converges it, a burst of
//! pushes costs at most two runs, `/status` and `/metrics` say so, oversized bodies get 413,
//! and SIGTERM stops the server cleanly. Every wait is bounded; only loopback is used.

mod support;

use hmac::{Hmac, KeyInit, Mac};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::gitops::{Setup, motd, setup};

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
        let secret_file = s.dir.path().join("webhook-secret");
        std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
        let stdout = s.dir.path().join("serve.stdout");
        let stderr = s.dir.path().join("serve.stderr");
        let child = Command::new(assert_cmd::cargo::cargo_bin("plumb"))
            .arg("serve")
            .arg(s.origin_dir())
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
    let github = |sig: &str| -> Vec<(&'static str, String)> {
        vec![
            ("X-GitHub-Event", "push".into()),
            ("X-GitHub-Delivery", "d-1".into()),
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
                ("X-Gitea-Signature", sig.clone()),
            ],
            _ => vec![
                ("X-Gitlab-Event", "Push Hook".into()),
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
