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
    /// The first host, `h0`.
    pub sshd: Sshd,
    /// More hosts (`h1`, ...), when the fleet has them.
    pub more: Vec<Sshd>,
}

impl Setup {
    pub fn origin_dir(&self) -> PathBuf {
        self.dir.path().join("origin")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("controller")
    }

    pub fn root(&self) -> PathBuf {
        self.root_of(0)
    }

    /// The root folder of host `h<i>`.
    pub fn root_of(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("host{i}"))
    }

    /// Every host name, in inventory order.
    pub fn hosts(&self) -> Vec<String> {
        (0..=self.more.len()).map(|i| format!("h{i}")).collect()
    }

    /// A bare clone of the origin at `<dir>/origin.git` (what a forge holds); push to it with
    /// [`Setup::push`].
    pub fn bare(&self) -> PathBuf {
        let bare = self.dir.path().join("origin.git");
        if !bare.exists() {
            let out = git(
                &["clone", "--quiet", "--bare"],
                &[&self.origin_dir(), &bare],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        bare
    }

    /// `git push` (the real git, which runs the bare repo's hooks) of the origin's HEAD, or of
    /// `commit` with `force`, to the bare repo's branch; git's output (hooks print to it).
    pub fn push(&self, commit: Option<&str>, force: bool) -> String {
        let refspec = format!(
            "{}{}:refs/heads/{}",
            if force { "+" } else { "" },
            commit.unwrap_or("HEAD"),
            self.branch
        );
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(self.origin_dir())
            .args(["push", "--quiet"])
            .arg(self.bare())
            .arg(&refspec)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .expect("running git push");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "git push {refspec}: {text}");
        text
    }

    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        self.commit_removing(files, &[], message)
    }

    /// A commit that writes `files` and removes `removed`.
    pub fn commit_removing(
        &self,
        files: &[(&str, &str)],
        removed: &[&str],
        message: &str,
    ) -> String {
        let root = self.origin_dir();
        let mut idx = self.origin.index().unwrap();
        for (rel, text) in files {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            idx.add_path(Path::new(rel)).unwrap();
        }
        for rel in removed {
            let _ = std::fs::remove_file(root.join(rel));
            idx.remove_path(Path::new(rel)).unwrap();
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

    /// Commits everything in the origin's work tree (files a command made there).
    pub fn commit_all(&self, message: &str) -> String {
        let mut idx = self.origin.index().unwrap();
        idx.add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        idx.write().unwrap();
        let tree = self.origin.find_tree(idx.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let parent = self.origin.head().unwrap().peel_to_commit().unwrap();
        self.origin
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &[&parent])
            .unwrap()
            .to_string()
    }

    pub fn logins(&self) -> usize {
        self.sshd.log().matches("Accepted publickey").count()
    }
}

fn git(args: &[&str], paths: &[&Path]) -> std::process::Output {
    std::process::Command::new("git")
        .args(args)
        .args(paths)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("running git (install Debian's git)")
}

/// The fleet, its inventory and a first commit with one File (`<host root>/etc/motd` = v1).
pub fn setup() -> Setup {
    setup_hosts(1)
}

/// A fleet of `n` hosts (`h0`...), each with its own root folder; the first commit puts
/// `<root>/etc/motd` = v1 on `h0` only (the others get what the test commits; a test that
/// rewrites the motd with [`motd`] selects all hosts, which is right for one host only).
pub fn setup_hosts(n: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = ClientKey::generate(dir.path(), "id_ed25519", "ed25519");
    let known = dir.path().join("known_hosts");
    let mut sshds: Vec<Sshd> = (0..n.max(1))
        .map(|_| {
            let sshd = Sshd::start_with(super::sshd::SshdConfig {
                log_level: "VERBOSE",
                ..Default::default()
            });
            sshd.authorize(&key.public_line);
            sshd
        })
        .collect();
    let lines: String = sshds
        .iter()
        .map(|s| {
            s.write_known_hosts(&known);
            std::fs::read_to_string(&known).unwrap()
        })
        .collect();
    std::fs::write(&known, lines).unwrap();
    let origin = git2::Repository::init(dir.path().join("origin")).unwrap();
    let sshd = sshds.remove(0);
    let mut s = Setup {
        dir,
        origin,
        branch: String::new(),
        sshd,
        more: sshds,
    };
    let mut inventory = format!(
        "defaults:\n  ssh_user: root\n  ssh_key: {}\n  known_hosts: {}\nhosts:\n",
        key.private.display(),
        known.display(),
    );
    for (i, h) in std::iter::once(&s.sshd).chain(&s.more).enumerate() {
        inventory.push_str(&format!(
            "  h{i}: {{ address: {}, ssh_port: {}, state_dir: {}/state }}\n",
            h.addr,
            h.port,
            s.root_of(i).display()
        ));
    }
    // The hosts share this machine: the motd is h0's alone (two hosts writing one path would
    // race).
    let first_motd = motd(&s.root(), "v1").replace("hosts: all", "hosts: host:h0");
    s.commit(
        &[
            ("inventory/hosts.yaml", &inventory),
            ("manifests/motd.yaml", &first_motd),
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

/// A `Command` on host `host` that fails at apply time on the real host, as a configuration
/// check that rejects what was written would: it prints `why` and exits 3.
pub fn failing_check(root: &Path, host: &str, why: &str) -> String {
    format!(
        "kind: Command\nname: config-check\nhosts: host:{host}\nrun: \"echo '{why}' >&2; exit 3\"\ncreates: {}/never-created\n",
        root.display()
    )
}
