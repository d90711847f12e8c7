//! An example repo of examples/ (or the reference repo) copied into a temp folder and driven
//! with the plumb binary against a lab: its overlay, the demo age identity, JSON reports.
#![allow(dead_code)]

use super::lab;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn plumb_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("plumb")
}

/// A repo copied from this source tree, with a lab overlay (absolute key paths) and the demo
/// identity.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub repo: PathBuf,
    overlay: PathBuf,
    identity: PathBuf,
}

impl Fixture {
    /// `from`: the repo's folder relative to the source tree; `overlay`: the lab's overlay.
    pub fn new(from: &str, overlay: &Path) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = Path::new(env!("CARGO_MANIFEST_DIR"));
        let repo = dir.path().join("repo");
        for sub in ["inventory", "manifests", "templates", "secrets", "pki"] {
            let from = src.join(from).join(sub);
            if from.is_dir() {
                lab::copy_tree(&from, &repo.join(sub));
            }
        }
        let text = lab::overlay_text(overlay);
        let overlay = dir.path().join("overlay.yaml");
        std::fs::write(&overlay, text).expect("write the overlay");
        Fixture {
            repo,
            overlay,
            identity: src.join("examples/lab/demo-age-key.txt"),
            _dir: dir,
        }
    }

    /// `plumb ARGS REPO --inventory OVERLAY --age-identity ID`: (exit code, stdout, stderr).
    pub fn plumb(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(plumb_bin())
            .args(args)
            .arg(&self.repo)
            .arg("--inventory")
            .arg(&self.overlay)
            .arg("--age-identity")
            .arg(&self.identity)
            .env("NO_COLOR", "1")
            .env_remove("PLUMB_AGE_IDENTITY")
            .output()
            .expect("run plumb");
        let r = (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        eprintln!("$ plumb {} -> exit {}\n{}{}", args.join(" "), r.0, r.1, r.2);
        r
    }

    /// Sets a secret of the copied repo.
    pub fn set_secret(&self, name: &str, value: &str) {
        let mut child = Command::new(plumb_bin())
            .args(["secrets", "set", name, "--repo"])
            .arg(&self.repo)
            .stdin(Stdio::piped())
            .spawn()
            .expect("run plumb secrets set");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(value.as_bytes())
            .expect("write the secret");
        assert!(
            child.wait().expect("plumb secrets set").success(),
            "plumb secrets set {name}"
        );
    }

    /// `plumb converge --output json`: (exit code, the cluster's report, stdout).
    pub fn converge(&self) -> (i32, Value, String) {
        let (code, out, err) = self.plumb(&["converge", "--output", "json"]);
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("converge JSON ({e}):\n{out}\n{err}"));
        (code, v["clusters"][0].clone(), out)
    }

    /// `plumb pg status --output json`.
    pub fn status(&self) -> (i32, Value) {
        let (code, out, err) = self.plumb(&["pg", "status", "--output", "json"]);
        let v = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("pg status JSON ({e}):\n{out}\n{err}"));
        (code, v)
    }
}
