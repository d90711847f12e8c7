//! A git-driven fleet for the tests of `plumb pull` and `plumb serve`: a git repo made by the
//! test (inventory + one File manifest), one real sshd host, and folders for the controller's
//! state and the host's files.

#![allow(dead_code)] // each test binary uses a different part of it

use super::sshd::{ClientKey, Sshd};
use std::path::{Path, PathBuf};

/// A fleet of one host (a loopback sshd) converged from a git repo made by the test.
pub struct Setup {
    /// Holds the origin repo, the controller state and the host's root.
    pub dir: tempfile::TempDir,
    /// The git repo plumb fetches from.
    pub origin: git2::Repository,
    /// The origin's branch (git's default name here).
    pub branch: String,
    /// The one host.
    pub sshd: Sshd,
}

impl Setup {
    pub fn origin_dir(&self) -> PathBuf {
        self.dir.path().join("origin")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("controller")
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("host0")
    }

    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        let root = self.origin_dir();
        let mut idx = self.origin.index().unwrap();
        for (rel, text) in files {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            idx.add_path(Path::new(rel)).unwrap();
        }
        idx.write().unwrap();
        let tree = self.origin.find_tree(idx.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let parent = self
            .origin
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        self.origin
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .unwrap()
            .to_string()
    }

    pub fn logins(&self) -> usize {
        self.sshd.log().matches("Accepted publickey").count()
    }
}

/// The fleet, its inventory and a first commit with one File (`<host root>/etc/motd` = v1).
pub fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = ClientKey::generate(dir.path(), "id_ed25519", "ed25519");
    let sshd = Sshd::start_with(super::sshd::SshdConfig {
        log_level: "VERBOSE",
        ..Default::default()
    });
    sshd.authorize(&key.public_line);
    let known = dir.path().join("known_hosts");
    sshd.write_known_hosts(&known);
    let origin = git2::Repository::init(dir.path().join("origin")).unwrap();
    let mut s = Setup {
        dir,
        origin,
        branch: String::new(),
        sshd,
    };
    let inventory = format!(
        "defaults:\n  ssh_user: root\n  ssh_key: {}\n  known_hosts: {}\nhosts:\n  h0: {{ address: {}, ssh_port: {}, state_dir: {}/state }}\n",
        key.private.display(),
        known.display(),
        s.sshd.addr,
        s.sshd.port,
        s.root().display()
    );
    s.commit(
        &[
            ("inventory/hosts.yaml", &inventory),
            ("manifests/motd.yaml", &motd(&s.root(), "v1")),
        ],
        "first",
    );
    s.branch = s.origin.head().unwrap().shorthand().unwrap().to_string();
    s
}

/// A manifest of one File, `<root>/etc/motd`, holding `text`.
pub fn motd(root: &Path, text: &str) -> String {
    format!(
        "kind: File\nhosts: all\npath: {}/etc/motd\ncontent: \"{text}\\n\"\n",
        root.display()
    )
}
