//! A lab VM that converges itself: `plumb pull --local` run by the systemd service and timer
//! that `plumb pull --print-systemd` prints, installed with the README's commands, under the
//! VM's own systemd. The first tick converges the first commit; a new commit pushed to the
//! origin is converged by a later tick, with nobody running plumb by hand; `plumb history` on
//! the VM lists both runs.
//!
//! The repo is made by the test and manages one file on the VM, with a state folder of its own
//! (the VM's `/var/lib/plumb` belongs to the reference repo other tests converge). Everything
//! the test installs is removed at the end, whatever happens.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::lab;

const VM: &str = "pg-backup-repo-server1";
const ORIGIN: &str = "/srv/plumb-e2e-pull.git";
const MANAGED: &str = "/etc/plumb-e2e-pull.txt";
const STATE: &str = "/var/lib/plumb-e2e-pull-controller";
const BINARY: &str = "/usr/local/bin/plumb-e2e-pull";

/// Removes what the test installed on the VM (also before it starts, after an interrupted run).
fn clean_vm() {
    lab::exec(
        VM,
        &format!(
            "systemctl disable --now plumb-pull.timer >/dev/null 2>&1; systemctl stop plumb-pull.service >/dev/null 2>&1; \
             rm -f /etc/systemd/system/plumb-pull.service /etc/systemd/system/plumb-pull.timer; \
             systemctl daemon-reload; systemctl reset-failed plumb-pull.service >/dev/null 2>&1; \
             rm -rf {ORIGIN} {MANAGED} {STATE} /var/lib/plumb-e2e-pull {BINARY} /tmp/plumb-unit*; true"
        ),
    );
}

struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        clean_vm();
    }
}

fn head(dir: &Path) -> String {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(dir)
        .output()
        .expect("git rev-parse");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Commits `text` as the managed file's content.
fn commit(work: &Path, text: &str) -> String {
    std::fs::write(
        work.join("manifests/file.yaml"),
        format!("kind: File\nhosts: all\npath: {MANAGED}\ncontent: \"{text}\\n\"\n"),
    )
    .expect("writing the manifest");
    lab::git(work, &["add", "-A"]);
    lab::git(work, &["commit", "-q", "-m", text]);
    head(work)
}

/// Copies the bare origin (a fresh copy: the VM's clone of it is plumb's own) into the VM.
fn publish(bare: &Path) {
    lab::exec(VM, &format!("rm -rf {ORIGIN}"));
    let out = Command::new("docker")
        .arg("cp")
        .arg(bare)
        .arg(format!("{}:{ORIGIN}", lab::container(VM)))
        .output()
        .expect("docker cp");
    assert!(
        out.status.success(),
        "docker cp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn vm_sh(command: &str) -> (bool, String) {
    let out = lab::exec(VM, command);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Waits (bounded) until the managed file holds `text`; panics with the service's journal.
fn wait_for(text: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let (_, now) = vm_sh(&format!("cat {MANAGED} 2>/dev/null"));
        if now == format!("{text}\n") {
            return;
        }
        if started.elapsed() > within {
            let (_, journal) = vm_sh(
                "journalctl -u plumb-pull.service -n 40 --no-pager -o cat; systemctl list-timers plumb-pull.timer --no-pager",
            );
            panic!(
                "{MANAGED} never held {text:?} (it holds {now:?}) within {within:?}:\n{journal}"
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn a_vm_converges_itself_from_its_pull_timer() {
    assert!(
        lab::docker_available(),
        "no Docker engine: the end-to-end tests need one (start dockerd)"
    );
    let _guard = lab::lock();
    lab::ensure_up();
    clean_vm();
    let _cleanup = Cleanup;

    // The origin: an inventory naming this one machine (converged with --local), a state
    // folder of its own, and one file.
    let dir = tempfile::tempdir().expect("a temp dir");
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("inventory")).expect("mkdir");
    std::fs::create_dir_all(work.join("manifests")).expect("mkdir");
    std::fs::write(
        work.join("inventory/hosts.yaml"),
        "hosts:\n  self:\n    address: 127.0.0.1\n    state_dir: /var/lib/plumb-e2e-pull\n",
    )
    .expect("writing the inventory");
    lab::git(&work, &["init", "-q", "-b", "main"]);
    let first = commit(&work, "v1");
    let bare = dir.path().join("origin.git");
    lab::git(dir.path(), &["clone", "-q", "--bare", "work", "origin.git"]);
    publish(&bare);
    let out = Command::new("docker")
        .arg("cp")
        .arg(env!("CARGO_BIN_EXE_plumb"))
        .arg(format!("{}:{BINARY}", lab::container(VM)))
        .output()
        .expect("docker cp");
    assert!(out.status.success(), "docker cp of plumb");

    // The README's commands, on the VM, with a short interval.
    let (ok, out) = vm_sh(&format!(
        "set -e; cd /tmp; {BINARY} pull file://{ORIGIN} --branch main --state-dir {STATE} --local --print-systemd 15s > /tmp/plumb-units; \
         csplit -s -z -f /tmp/plumb-unit /tmp/plumb-units '/^# \\/etc\\/systemd\\/system\\//' '{{*}}'; \
         for f in /tmp/plumb-unit[0-9]*; do cp \"$f\" \"$(head -1 \"$f\" | cut -c3-)\"; done; \
         systemd-analyze verify /etc/systemd/system/plumb-pull.service /etc/systemd/system/plumb-pull.timer; \
         systemctl daemon-reload && systemctl enable --now plumb-pull.timer"
    ));
    assert!(ok, "installing the units: {out}");
    let (_, units) = vm_sh("cat /etc/systemd/system/plumb-pull.service");
    assert!(
        units.contains("--local") && units.contains(BINARY),
        "{units}"
    );

    // The first tick converges the first commit (a timer started after its OnBootSec fires at
    // once; RandomizedDelaySec adds up to 30 s).
    wait_for("v1", Duration::from_secs(180));

    // A new commit reaches the VM by itself, at a later tick.
    let second = commit(&work, "v2");
    lab::git(
        &work,
        &["push", "-q", bare.to_str().expect("utf-8 path"), "main"],
    );
    publish(&bare);
    wait_for("v2", Duration::from_secs(180));

    // plumb's history on the VM lists both commits, each applied by a run of the timer's
    // service; the host state records the commit it was converged to.
    let (ok, history) = vm_sh(&format!(
        "{BINARY} history --state-dir {STATE} --output json"
    ));
    assert!(ok, "{history}");
    for c in [&first, &second] {
        assert!(
            history.contains(c.as_str()),
            "{c} not in the history: {history}"
        );
    }
    let (_, state) = vm_sh("cat /var/lib/plumb-e2e-pull/state");
    assert!(state.contains(&second), "{state}");
}
