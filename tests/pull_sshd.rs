//! `plumb pull` against OpenSSH's sshd on loopback, from a git repo made by the test: the
//! first pull converges, a second one contacts no host, a new commit is converged, a broken
//! commit is refused and not recorded, `--always` converges anyway, and the history and the
//! systemd units say what they should.

mod support;

use assert_cmd::Command;
use std::time::Duration;
use support::gitops::{Setup, motd, setup};

impl Setup {
    fn pull(&self, extra: &[&str]) -> (i32, String, String) {
        let out = Command::cargo_bin("plumb")
            .unwrap()
            .arg("pull")
            .arg(self.origin_dir())
            .args(["--branch", &self.branch, "--state-dir"])
            .arg(self.state())
            .args(extra)
            .env_remove("PLUMB_AGE_IDENTITY")
            .env_remove("PLUMB_INVENTORY")
            .env_remove("PLUMB_STATE_DIR")
            .env("NO_COLOR", "1")
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn pull_converges_new_commits_only_and_records_what_it_applied() {
    let s = setup();
    let first = s.origin.head().unwrap().target().unwrap().to_string();

    let (code, out, err) = s.pull(&[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert_eq!(
        std::fs::read_to_string(s.root().join("etc/motd")).unwrap(),
        "v1\n"
    );
    assert_eq!(
        std::fs::read_to_string(s.state().join("last-applied")).unwrap(),
        format!("{first}\n")
    );
    // The host records the commit it was converged to.
    let state = std::fs::read_to_string(s.root().join("state/state")).unwrap();
    assert!(state.contains(&first), "{state}");

    // Nothing new: no host is contacted.
    let logins = s.logins();
    let (code, _, err) = s.pull(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("already applied"), "{err}");
    assert_eq!(s.logins(), logins, "a pull with nothing new logged in");

    // --always converges anyway (nothing to change).
    let (code, out, err) = s.pull(&["--always"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(s.logins() > logins);

    // A new commit is converged.
    let second = s.commit(&[("manifests/motd.yaml", &motd(&s.root(), "v2"))], "second");
    let (code, out, err) = s.pull(&[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert_eq!(
        std::fs::read_to_string(s.root().join("etc/motd")).unwrap(),
        "v2\n"
    );
    assert_eq!(
        std::fs::read_to_string(s.state().join("last-applied")).unwrap(),
        format!("{second}\n")
    );

    // A broken commit: nothing contacted, not recorded, and the next pull tries it again.
    let logins = s.logins();
    s.commit(
        &[(
            "manifests/bad.yaml",
            "kind: File\nhosts: all\npath: relative/x\ncontent: x\n",
        )],
        "broken",
    );
    let (code, _, err) = s.pull(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("manifests/bad.yaml:3"), "{err}");
    assert!(err.contains("not recorded as applied"), "{err}");
    assert_eq!(s.logins(), logins);
    assert_eq!(
        std::fs::read_to_string(s.state().join("last-applied")).unwrap(),
        format!("{second}\n")
    );
    assert_eq!(s.pull(&[]).0, 1);

    // Every run is in the history, newest last.
    let history = std::fs::read_to_string(s.state().join("runs.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let codes: Vec<i64> = lines
        .iter()
        .map(|l| l["exit_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [2, 0, 2, 1, 1], "{history}");
    assert_eq!(lines[2]["commit"], second.as_str());
    assert_eq!(lines[2]["summary"], "second");
    assert_eq!(lines[2]["changed"], 1);
}

#[test]
fn pull_prints_systemd_units_that_run_itself() {
    let s = setup();
    let (code, out, err) = s.pull(&["--print-systemd", "15min", "--always"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("[Timer]\nOnBootSec=2min\nOnUnitActiveSec=15min"),
        "{out}"
    );
    assert!(out.contains("SuccessExitStatus=2"), "{out}");
    let exec = out.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(exec.contains(" pull "), "{exec}");
    assert!(
        exec.contains(&s.origin_dir().display().to_string()),
        "{exec}"
    );
    assert!(
        exec.contains("--state-dir") && exec.contains("--always"),
        "{exec}"
    );
    // Nothing was fetched or run.
    assert!(!s.state().join("checkout").exists());

    // The units pass systemd's own checks, sandboxed, with the state folder writable. The
    // sandbox needs the folder to exist (outside /var/lib systemd does not make it).
    std::fs::create_dir_all(s.state()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for part in out.split("# /etc/systemd/system/").skip(1) {
        let (name, body) = part.split_once('\n').unwrap();
        let path = dir.path().join(name.trim());
        std::fs::write(&path, body).unwrap();
        files.push(path);
    }
    assert_eq!(files.len(), 2, "{out}");
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .expect("systemd-analyze (Debian's systemd)");
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{stderr}\n{out}");
    assert!(
        !stderr.lines().any(|l| l.contains("plumb-pull")),
        "systemd-analyze verify warns about the units:\n{stderr}"
    );
    for line in [
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
    }
    let writable = format!("ReadWritePaths={}", s.state().display());
    assert!(out.lines().any(|l| l == writable), "{out}");
    // systemd's exposure score of the service (0 best, 10 worst): well sandboxed.
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", "--threshold=35"])
        .arg(&files[0])
        .output()
        .unwrap();
    assert!(
        security.status.success(),
        "exposure above 3.5:\n{}{}",
        String::from_utf8_lossy(&security.stdout),
        String::from_utf8_lossy(&security.stderr)
    );
    // With --local the VM converges itself as root: the sandbox stays out of its way.
    let (code, local, err) = s.pull(&["--print-systemd", "5min", "--local"]);
    assert_eq!(code, 0, "{err}");
    assert!(!local.contains("ProtectSystem="), "{local}");
    let exec = local.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(exec.ends_with(" --local"), "{exec}");
}

#[test]
fn a_second_pull_waits_for_the_first_then_fails_clearly() {
    let s = setup();
    std::fs::create_dir_all(s.state()).unwrap();
    // Hold the controller lock as a running pull would.
    let holder = std::process::Command::new("flock")
        .arg(s.state().join("pull.lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, err) = s.pull(&["--lock-timeout", "1"]);
    let mut holder = holder;
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another plumb pull"), "{err}");
    assert!(!s.root().join("etc/motd").exists());
}

/// A loopback HTTP listener that takes `n` POSTs, answers 200 and hands back their bodies.
fn notification_listener(n: usize) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/notify", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((mut s, _)) = l.accept() else { return };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let body = loop {
                let Ok(k) = s.read(&mut buf) else { return };
                if k == 0 {
                    return;
                }
                raw.extend_from_slice(&buf[..k]);
                let text = String::from_utf8_lossy(&raw).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break body.to_string();
                    }
                }
            };
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let _ = tx.send(body);
        }
    });
    (url, rx)
}

#[test]
fn pull_notifies_a_failed_run_and_the_recovery() {
    let s = setup();
    let (url, got) = notification_listener(3);
    let notify = ["--notify-url", url.as_str()];
    let (code, out, err) = s.pull(&notify);
    assert_eq!(code, 2, "{out}\n{err}");
    // A success after no failure: nothing sent.
    assert!(got.recv_timeout(Duration::from_millis(300)).is_err());

    // A commit that declares nothing: the run fails, and says so.
    let mut idx = s.origin.index().unwrap();
    idx.remove_path(std::path::Path::new("manifests/motd.yaml"))
        .unwrap();
    idx.write().unwrap();
    let tree = s.origin.find_tree(idx.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
    let parent = s.origin.head().unwrap().peel_to_commit().unwrap();
    let broken = s
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
    let (code, _, err) = s.pull(&notify);
    assert_eq!(code, 1, "{err}");
    let body = got.recv_timeout(Duration::from_secs(30)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"], "failed", "{v:#}");
    assert_eq!(v["commit"], broken.as_str(), "{v:#}");
    assert_eq!(v["trigger"], "pull", "{v:#}");
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("FAILED"), "{text}");
    assert!(text.contains("remove everything"), "{text}");

    // A good commit again: the recovery is told.
    let good = s.commit(&[("manifests/motd.yaml", &motd(&s.root(), "v3"))], "back");
    let (code, _, err) = s.pull(&notify);
    assert_eq!(code, 2, "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&got.recv_timeout(Duration::from_secs(30)).unwrap()).unwrap();
    assert_eq!(v["event"], "recovered", "{v:#}");
    assert_eq!(v["commit"], good.as_str());
    assert_eq!(v["changed_hosts"], serde_json::json!(["h0"]));

    // A URL plumb cannot POST to is refused before anything runs.
    let (code, _, err) = s.pull(&["--notify-url", "https://chat.example.invalid/hook"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("only http://"), "{err}");
}

/// Commits `text` as the motd with git itself, signed (gpg.format=ssh) by `key`.
fn signed_commit(s: &Setup, key: &std::path::Path, text: &str, message: &str) -> String {
    std::fs::write(
        s.origin_dir().join("manifests/motd.yaml"),
        motd(&s.root(), text),
    )
    .unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(s.origin_dir())
            .args([
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={}", key.display()),
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.invalid",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", s.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["add", "manifests/motd.yaml"]);
    git(&["commit", "-q", "-S", "-m", message]);
    git(&["rev-parse", "HEAD"])
}

fn keygen(path: &std::path::Path) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn pull_requires_commits_signed_by_an_allowed_key() {
    let s = setup();
    let signer = s.dir.path().join("signer");
    let other = s.dir.path().join("other");
    let signer_pub = keygen(&signer);
    keygen(&other);
    let allowed = s.dir.path().join("allowed_signers");
    std::fs::write(
        &allowed,
        format!("ops@example.invalid namespaces=\"git\" {signer_pub}\n"),
    )
    .unwrap();
    let allowed_arg = allowed.display().to_string();
    let require = [
        "--require-signed",
        "--allowed-signers",
        allowed_arg.as_str(),
    ];

    // The setup's first commit is not signed: refused, nothing contacted, nothing recorded
    // as applied.
    let (code, _, err) = s.pull(&require);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not signed"), "{err}");
    assert_eq!(s.logins(), 0, "an unsigned commit reached a host");
    assert!(!s.root().join("etc/motd").exists());
    assert!(!s.state().join("last-applied").exists());

    // Signed by the allowed key: converged, and the signer named.
    let good = signed_commit(&s, &signer, "v-signed", "signed");
    let (code, _, err) = s.pull(&require);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is signed by ops@example.invalid"), "{err}");
    assert_eq!(
        std::fs::read_to_string(s.root().join("etc/motd")).unwrap(),
        "v-signed\n"
    );
    assert_eq!(
        std::fs::read_to_string(s.state().join("last-applied")).unwrap(),
        format!("{good}\n")
    );

    // Signed by another key: refused, the host untouched, the refusal in the history.
    let logins = s.logins();
    let bad = signed_commit(&s, &other, "v-other", "signed by someone else");
    let (code, _, err) = s.pull(&require);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not allow"), "{err}");
    assert_eq!(s.logins(), logins, "a refused commit reached a host");
    assert_eq!(
        std::fs::read_to_string(s.root().join("etc/motd")).unwrap(),
        "v-signed\n"
    );
    let history = std::fs::read_to_string(s.state().join("runs.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(history.lines().last().unwrap()).unwrap();
    assert_eq!(last["commit"], bad.as_str());
    assert!(
        last["error"].as_str().unwrap().contains("does not allow"),
        "{last}"
    );
}

/// Whether a process whose command line contains `needle` runs (procps' pgrep).
fn running(needle: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", needle])
        .output()
        .expect("pgrep (Debian's procps)")
        .status
        .success()
}

#[test]
fn the_run_watchdog_stops_a_hung_apply_on_the_host_and_rolls_back() {
    let s = setup();
    assert_eq!(s.pull(&[]).0, 2);
    let good = s.origin.head().unwrap().target().unwrap().to_string();

    // A commit whose step hangs on the host: the motd changes, then a step sleeps far longer
    // than the run may take, and would leave a mark if it ever finished.
    let late = s.root().join("late-mark");
    let marker = "sleep 3617.25";
    s.commit(
        &[
            ("manifests/motd.yaml", &motd(&s.root(), "v-hung")),
            (
                "manifests/hang.yaml",
                &format!(
                    "kind: Command\nname: hang\nhosts: all\nrun: \"{marker}; touch {late}\"\ncreates: {late}\ntimeout: 7200\n",
                    late = late.display()
                ),
            ),
        ],
        "hangs",
    );
    let (code, out, err) = s.pull(&["--run-timeout", "8"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("exceeded its time limit"), "{err}");
    assert!(err.contains("failed its gates"), "{err}");
    // The rollback ran right after, so the host lock was free: the stopped apply let it go.
    assert!(
        err.contains(&format!("rolled back to {}", &good[..12])),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(s.root().join("etc/motd")).unwrap(),
        "v1\n"
    );
    // The hung step was stopped on the host (bounded wait: the host's watchdog TERMs the
    // apply's whole session when the connection goes), and never finished.
    let t0 = std::time::Instant::now();
    while running(marker) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the hung step still runs on the host"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!late.exists());
    // No temp file of the stopped apply is left next to the motd.
    let left: Vec<String> = std::fs::read_dir(s.root().join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["motd"], "{left:?}");
    // The history says why.
    let history = std::fs::read_to_string(s.state().join("runs.jsonl")).unwrap();
    let runs: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(runs.len(), 3, "{history}");
    assert_eq!(runs[1]["marked_bad"], true, "{history}");
    assert!(
        runs[1]["error"].as_str().unwrap().contains("--run-timeout"),
        "{history}"
    );
    assert_eq!(runs[2]["rollback_of"], runs[1]["commit"], "{history}");
    assert_eq!(runs[2]["trigger"], "rollback", "{history}");
}

#[test]
fn a_first_commit_that_fails_has_nothing_to_roll_back_to_and_is_held_back() {
    let s = setup();
    let bad = s.commit(
        &[(
            "manifests/check.yaml",
            &support::gitops::failing_check(&s.root(), "h0", "rejected"),
        )],
        "first run fails",
    );
    let (code, out, err) = s.pull(&[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("nothing to roll back to"), "{err}");
    assert!(!s.state().join("last-applied").exists());
    // Held back by the next timer run: no host contacted, no run recorded.
    let logins = s.logins();
    let (code, _, err) = s.pull(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("held back"), "{err}");
    assert_eq!(s.logins(), logins);
    // plumb history says why.
    let out = Command::cargo_bin("plumb")
        .unwrap()
        .args(["history", "--state-dir"])
        .arg(s.state())
        .env_remove("PLUMB_STATE_DIR")
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("HELD BACK"), "{list}");
    assert!(
        list.contains(&format!("{} first run fails", &bad[..12])),
        "{list}"
    );
    assert!(list.contains("nothing to roll back to"), "{list}");
    // A newer commit arrives: applied, and recorded as the last good one.
    let fixed = s.commit_removing(
        &[("manifests/motd.yaml", &motd(&s.root(), "v2"))],
        &["manifests/check.yaml"],
        "fixed",
    );
    let (code, out, err) = s.pull(&[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert_eq!(
        std::fs::read_to_string(s.state().join("last-applied")).unwrap(),
        format!("{fixed}\n")
    );
}
