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
