//! The attacks of issue 8, reproduced as an attacker would run them: an unprivileged account on
//! the managed host (a real user, acting through `runuser`), against a real OpenSSH sshd on
//! loopback and real files. Each test fails on a plumb that lets the attack through.
//!
//! The "host" is a folder tree under a temp dir; plumb logs in as root, exactly as on a VM.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::sshd::{ClientKey, Sshd};

/// A real unprivileged user on this machine, removed on drop.
struct Attacker {
    name: String,
    uid: u32,
}

impl Attacker {
    fn new() -> Attacker {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "plumbatk{}x{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::SeqCst)
        );
        let ok = Command::new("useradd")
            .args(["-M", "-r", "-s", "/bin/sh", &name])
            .status()
            .expect("useradd");
        assert!(ok.success(), "useradd {name}");
        let out = Command::new("id").args(["-u", &name]).output().unwrap();
        let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        Attacker { name, uid }
    }

    /// Runs a shell command as the attacker; returns its stdout.
    fn sh(&self, cmd: &str) -> String {
        let out = Command::new("runuser")
            .args(["-u", &self.name, "--", "sh", "-c", cmd])
            .output()
            .expect("runuser");
        assert!(
            out.status.success(),
            "as {}: `{cmd}` failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a shell command as the attacker in the background; [`Attacker::stop`] ends it.
    fn spawn(&self, cmd: &str) -> std::process::Child {
        Command::new("runuser")
            .args(["-u", &self.name, "--", "sh", "-c", cmd])
            .spawn()
            .expect("runuser")
    }

    /// Kills every process of the attacker and reaps `child` (runuser forks the command, so
    /// killing runuser alone would leave the loop running).
    fn stop(&self, mut child: std::process::Child) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
        let _ = child.kill();
        let _ = child.wait();
        let t0 = Instant::now();
        while Command::new("pgrep")
            .args(["-u", &self.name])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "attacker processes linger"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        // Bounded: the user's last processes may take a moment to go.
        for _ in 0..50 {
            let _ = Command::new("pkill")
                .args(["-KILL", "-u", &self.name])
                .status();
            let gone = Command::new("userdel")
                .arg(&self.name)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if gone {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One sshd "host" and a repo that targets it.
struct Host {
    dir: tempfile::TempDir,
    key: ClientKey,
    sshd: Sshd,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        // The attacker must reach its own folder inside the host's tree.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let key = ClientKey::generate(dir.path(), "id_ed25519", "ed25519");
        let sshd = Sshd::start();
        sshd.authorize(&key.public_line);
        std::fs::write(
            dir.path().join("known_hosts"),
            format!("{}\n", sshd.known_hosts_line("ed25519")),
        )
        .unwrap();
        let h = Host { dir, key, sshd };
        std::fs::create_dir_all(h.root()).unwrap();
        std::fs::set_permissions(h.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
        h.write(
            "inventory/hosts.yaml",
            &format!(
                "defaults:\n  ssh_user: root\n  ssh_key: {}\n  known_hosts: {}\nhosts:\n  h0: {{ address: {}, ssh_port: {}, state_dir: {}/state }}\n",
                h.key.private.display(),
                h.dir.path().join("known_hosts").display(),
                h.sshd.addr,
                h.sshd.port,
                h.dir.path().display()
            ),
        );
        h
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// The host's file system root for this test.
    fn root(&self) -> PathBuf {
        self.dir.path().join("host")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.repo().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn manifests(&self, text: &str) {
        self.write("manifests/app.yaml", text);
    }

    fn plumb(&self, args: &[&str]) -> (i32, String, String) {
        self.plumb_env(args, &[])
    }

    fn plumb_env(&self, args: &[&str], env: &[(&str, &Path)]) -> (i32, String, String) {
        let mut cmd = assert_cmd::Command::cargo_bin("plumb").unwrap();
        cmd.args(args)
            .arg(self.repo())
            .env_remove("PLUMB_AGE_IDENTITY")
            .env_remove("PLUMB_INVENTORY")
            .env("NO_COLOR", "1")
            .timeout(Duration::from_secs(120));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A folder of the host owned by `atk` (mode 0755).
    fn user_dir(&self, atk: &Attacker, rel: &str) -> PathBuf {
        let d = self.root().join(rel);
        std::fs::create_dir_all(&d).unwrap();
        chown(&d, atk.uid);
        d
    }

    /// A root-only file with a secret, outside anything plumb manages.
    fn root_secret(&self, rel: &str) -> PathBuf {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "ROOT-ONLY-SECRET\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
}

fn assert_untouched_secret(p: &Path) {
    let md = std::fs::symlink_metadata(p).unwrap();
    assert!(
        md.file_type().is_file(),
        "{} is no longer a file",
        p.display()
    );
    assert_eq!(md.uid(), 0, "{} changed owner", p.display());
    assert_eq!(md.mode() & 0o7777, 0o600, "{} changed mode", p.display());
    let text = std::fs::read_to_string(p).unwrap();
    assert!(
        text == "ROOT-ONLY-SECRET\n",
        "{} was overwritten ({} bytes now)",
        p.display(),
        text.len()
    );
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Finding 1: a host user forges the host state through a symlink target holding a newline and
/// an `H state` record; the forged state lists a "previously managed" file at any path, with a
/// name whose second line is a command. Neither the deletion nor the command may happen.
#[test]
fn a_forged_state_record_in_a_symlink_target_deletes_nothing_and_runs_nothing() {
    let h = Host::new();
    let atk = Attacker::new();
    let dir = h.user_dir(&atk, "home/atk");
    let victim = h.root_secret("etc/victim");
    let pwned = h.root().join("pwned");
    h.manifests(&format!(
        "kind: File\nname: app\nhosts: all\npath: {}/app.conf\nowner: {}\ngroup: {}\ncontent: hello\n",
        dir.display(),
        atk.name,
        atk.name
    ));
    let (code, out, err) = h.plumb(&["converge"]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("app.conf")).unwrap(),
        "hello"
    );

    // The forged state: a File whose path is the victim and whose name runs a command.
    let forged = format!(
        "{{\"version\":1,\"resources\":[{{\"kind\":\"File\",\"name\":\"x\\ntouch {}\\n\",\"paths\":[\"{}\"]}}]}}",
        pwned.display(),
        victim.display()
    );
    let target = format!("/nowhere\nH\tstate\t{}\n0\tabsent", b64(forged.as_bytes()));
    atk.sh(&format!(
        "cd {} && rm -f app.conf && ln -s \"$(printf '{}')\" app.conf",
        dir.display(),
        target.replace('\n', "\\n").replace('\t', "\\t")
    ));
    // The symlink's target really holds the newline and the record.
    let link = std::fs::read_link(dir.join("app.conf")).unwrap();
    assert!(link.to_string_lossy().contains("\nH\tstate\t"));

    for args in [
        &["converge", "--dry-run"][..],
        &["converge"][..],
        &["converge"][..],
    ] {
        let (code, out, err) = h.plumb(args);
        assert!(!out.contains("(removed from the repo)"), "{out}");
        assert!(code == 0 || code == 2, "{args:?}: {code}\n{out}{err}");
        assert_untouched_secret(&victim);
        assert!(!pwned.exists(), "the forged name ran as a command");
    }
    // The symlink was replaced by the managed file, written as its owner.
    let md = std::fs::symlink_metadata(dir.join("app.conf")).unwrap();
    assert!(md.file_type().is_file() && md.uid() == atk.uid);
}

/// Finding 1, second half: a state file plumb did not write (here: owned by the attacker) is
/// not trusted for pruning, and the host fails with a message that says what to do.
#[test]
fn a_state_file_that_is_not_plumbs_own_is_refused() {
    let h = Host::new();
    let atk = Attacker::new();
    let victim = h.root_secret("etc/victim");
    h.manifests(&format!(
        "kind: File\nname: a\nhosts: all\npath: {}/a\ncontent: a\n",
        h.root().display()
    ));
    assert_eq!(h.plumb(&["converge"]).0, 2);
    let state = h.state_dir().join("state");
    let forged = format!(
        "{{\"version\":1,\"resources\":[{{\"kind\":\"File\",\"name\":\"v\",\"paths\":[\"{}\"]}}]}}",
        victim.display()
    );
    std::fs::write(&state, forged).unwrap();
    chown(&state, atk.uid);
    let (code, out, err) = h.plumb(&["converge"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("not plumb's own"), "{out}");
    assert_untouched_secret(&victim);
    // A corrupt state file owned by root is an error too, never "nothing managed".
    std::fs::write(&state, "not json").unwrap();
    chown(&state, 0);
    let (code, out, _) = h.plumb(&["converge"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot be read"), "{out}");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "not json");
}

/// Finding 2: the attacker owns the folder of a managed file and plants symlinks where plumb's
/// temp files appear, racing the write. Root's files never change.
#[test]
fn temp_file_races_in_a_users_folder_cannot_touch_root_files() {
    let h = Host::new();
    let atk = Attacker::new();
    let dir = h.user_dir(&atk, "home/atk");
    let secret = h.root_secret("etc/shadow-like");
    let files: String = (0..60)
        .map(|i| {
            format!(
                "kind: File\nname: f{i}\nhosts: all\npath: {}/f{i}\nowner: {}\ngroup: {}\nmode: \"0755\"\ncontent: \"v1-{i}-{}\"\n---\n",
                dir.display(),
                atk.name,
                atk.name,
                "x".repeat(20_000)
            )
        })
        .collect();
    h.manifests(&files);
    // The race: as soon as a temp file appears, its siblings' names are guessed (plumb once
    // numbered them: .plumb-tmp.RUN.s0, s1, ...) and planted as symlinks to the secret, and the
    // file itself is swapped for one.
    let racer = atk.spawn(&format!(
        "cd {d} && end=$(( $(date +%s) + 30 )); while [ $(date +%s) -lt $end ]; do \
           for t in .plumb-tmp.*; do \
             [ -e \"$t\" ] || [ -L \"$t\" ] || continue; \
             case $t in *.s[0-9]*) b=${{t%.s*}}; i=0; while [ $i -lt 80 ]; do ln -s {s} \"$b.s$i\" 2>/dev/null; i=$((i+1)); done;; esac; \
             [ -L \"$t\" ] || {{ rm -f \"$t\" && ln -s {s} \"$t\"; }} 2>/dev/null; \
           done; \
         done",
        d = dir.display(),
        s = secret.display()
    ));
    for round in 0..6 {
        h.manifests(&files.replace("v1-", &format!("v{round}-")));
        let _ = h.plumb(&["converge"]);
        assert_untouched_secret(&secret);
    }
    atk.stop(racer);
    assert_untouched_secret(&secret);
}

/// Finding 2, the design's other half: a root-owned file in a folder another user can write
/// is refused with a message saying why and how to fix it, and nothing is written.
#[test]
fn a_root_file_in_a_users_folder_is_refused_with_a_fix() {
    let h = Host::new();
    let atk = Attacker::new();
    let dir = h.user_dir(&atk, "home/atk");
    h.manifests(&format!(
        "kind: File\nname: f\nhosts: all\npath: {}/f\ncontent: x\n",
        dir.display()
    ));
    let (code, out, err) = h.plumb(&["converge"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("user {} can write", atk.name)) && out.contains("make"),
        "{out}"
    );
    assert!(!dir.join("f").exists());
    // A group- or world-writable folder is refused outright.
    let shared = h.root().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    h.manifests(&format!(
        "kind: File\nname: f\nhosts: all\npath: {}/f\ncontent: x\n",
        shared.display()
    ));
    let (code, out, _) = h.plumb(&["converge"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("writable by everyone") && out.contains("chmod go-w"),
        "{out}"
    );
    assert!(!shared.join("f").exists());
}

/// Finding 3: the attacker swaps a subfolder on a managed path for a symlink to a root-owned
/// folder; plumb must not create the managed file there.
#[test]
fn a_symlink_in_a_parent_folder_is_not_followed() {
    let h = Host::new();
    let atk = Attacker::new();
    let dir = h.user_dir(&atk, "home/atk");
    let rootdir = h.root().join("etc/profile.d");
    std::fs::create_dir_all(&rootdir).unwrap();
    let manifest = format!(
        "kind: File\nname: f\nhosts: all\npath: {}/sub/evil.sh\nowner: {u}\ngroup: {u}\ncontent: \"echo pwned\"\n",
        dir.display(),
        u = atk.name
    );
    h.manifests(&manifest);
    atk.sh(&format!(
        "ln -s {} {}/sub",
        rootdir.display(),
        dir.display()
    ));
    let (code, out, _) = h.plumb(&["converge"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is a symlink"), "{out}");
    assert!(!rootdir.join("evil.sh").exists());
    // Racing it: the folder is real at probe time and swapped during the run; writes run as
    // the attacker, who cannot write the root folder.
    atk.sh(&format!("rm {d}/sub && mkdir {d}/sub", d = dir.display()));
    let racer = atk.spawn(&format!(
        "end=$(( $(date +%s) + 15 )); while [ $(date +%s) -lt $end ]; do \
           mv {d}/sub {d}/sub.real 2>/dev/null && ln -s {r} {d}/sub 2>/dev/null; \
           rm -f {d}/sub 2>/dev/null; mv {d}/sub.real {d}/sub 2>/dev/null; done",
        d = dir.display(),
        r = rootdir.display()
    ));
    for _ in 0..5 {
        let _ = h.plumb(&["converge"]);
        assert!(
            !rootdir.join("evil.sh").exists(),
            "written through the symlink"
        );
        let _ = std::fs::remove_file(dir.join("sub/evil.sh"));
    }
    atk.stop(racer);
    assert!(!rootdir.join("evil.sh").exists());
}

/// Finding 4: a managed file swapped for a symlink to a root-only file between the probe and
/// the diff fetch: the dry-run never prints the root-only content.
#[test]
fn the_diff_never_shows_a_file_swapped_in_after_the_probe() {
    let h = Host::new();
    let atk = Attacker::new();
    let dir = h.user_dir(&atk, "home/atk");
    let secret = h.root_secret("root/secret");
    let manifest = |v: &str| {
        format!(
            "kind: File\nname: f\nhosts: all\npath: {}/app.conf\nowner: {u}\ngroup: {u}\ncontent: \"{v}\\n\"\n",
            dir.display(),
            u = atk.name
        )
    };
    h.manifests(&manifest("one"));
    assert_eq!(h.plumb(&["converge"]).0, 2);
    h.manifests(&manifest("two"));
    let racer = atk.spawn(&format!(
        "cd {} && end=$(( $(date +%s) + 25 )); while [ $(date +%s) -lt $end ]; do \
           ln -sf {} x && mv -fT x app.conf; printf 'one\\n' > y && mv -fT y app.conf; done",
        dir.display(),
        secret.display()
    ));
    let mut diffs = 0;
    for _ in 0..20 {
        let (_, out, err) = h.plumb(&["converge", "--dry-run"]);
        assert!(!out.contains("ROOT-ONLY-SECRET"), "{out}");
        assert!(!err.contains("ROOT-ONLY-SECRET"), "{err}");
        if out.contains("+two") {
            diffs += 1;
        }
    }
    atk.stop(racer);
    assert_untouched_secret(&secret);
    // Without the race, the real diff is shown.
    atk.sh(&format!(
        "cd {} && rm -f app.conf && printf 'one\\n' > app.conf",
        dir.display()
    ));
    let (_, out, _) = h.plumb(&["converge", "--dry-run"]);
    assert!(out.contains("-one") && out.contains("+two"), "{out}");
    eprintln!("dry runs that showed a diff during the race: {diffs}/20");
}

/// Finding 5: a file once rendered from a secret, now plain: its old content (the password)
/// is never shown, in human or JSON output.
#[test]
fn old_content_from_a_secret_is_never_shown() {
    let h = Host::new();
    let id = age::x25519::Identity::generate();
    let identity = h.dir.path().join("age-key.txt");
    {
        use age::secrecy::ExposeSecret as _;
        std::fs::write(&identity, format!("{}\n", id.to_string().expose_secret())).unwrap();
    }
    h.write("secrets/recipients.txt", &format!("{}\n", id.to_public()));
    let set = assert_cmd::Command::cargo_bin("plumb")
        .unwrap()
        .args(["secrets", "set", "db_password", "--repo"])
        .arg(h.repo())
        .write_stdin("Sup3r-S3cret-Pw")
        .output()
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    h.write(
        "templates/app.conf.tera",
        "password={{ secret(name=\"db_password\") }}\n",
    );
    let file = |how: &str| {
        format!(
            "kind: File\nname: app\nhosts: all\npath: {}/app.conf\nmode: \"0600\"\n{how}\n",
            h.root().display()
        )
    };
    h.manifests(&file("template: app.conf.tera"));
    let env = [("PLUMB_AGE_IDENTITY", identity.as_path())];
    assert_eq!(h.plumb_env(&["converge"], &env).0, 2);
    assert!(
        std::fs::read_to_string(h.root().join("app.conf"))
            .unwrap()
            .contains("Sup3r")
    );
    // The template becomes plain text.
    h.manifests(&file("content: \"password=changeme\\n\""));
    for args in [
        &["converge", "--dry-run"][..],
        &["converge", "--dry-run", "--output", "json"][..],
    ] {
        for env in [&env[..], &[][..]] {
            let (code, out, err) = h.plumb_env(args, env);
            assert_eq!(code, 2, "{out}{err}");
            assert!(
                !out.contains("Sup3r") && !err.contains("Sup3r"),
                "{out}{err}"
            );
            // The old side is the masked copy plumb kept, never the host's bytes.
            assert!(out.contains("-password=<secret:db_password>"), "{out}");
            assert!(out.contains("+password=changeme"), "{out}");
        }
    }
    assert_eq!(h.plumb(&["converge"]).0, 2);
    // Once plain on the host, the next change shows its old (plain) content again.
    h.manifests(&file("content: \"password=other\\n\""));
    let (_, out, _) = h.plumb(&["converge", "--dry-run"]);
    assert!(out.contains("-password=changeme"), "{out}");
}

/// Finding 8: plumb killed during an apply: the host's work stops with it (no step runs after
/// plumb died), the lock is free again once it stopped, and the next run cleans up and
/// converges.
#[test]
fn killing_plumb_stops_the_apply_on_the_host_and_frees_the_lock() {
    let h = Host::new();
    let root = h.root();
    let files: String = (0..30)
        .map(|i| {
            format!(
                "kind: File\nname: f{i}\nhosts: all\npath: {}/d/f{i}\ncontent: \"{i}\"\n---\n",
                root.display()
            )
        })
        .collect();
    h.manifests(&format!(
        "{files}kind: Command\nname: slow\nhosts: all\nrun: \"sleep 8 && touch {r}/late\"\ncreates: {r}/late\n",
        r = root.display()
    ));
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("plumb"))
        .arg("converge")
        .arg(h.repo())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) until the host runs the slow command, then kill plumb.
    let t0 = Instant::now();
    loop {
        let out = Command::new("pgrep")
            .args(["-f", "sleep 8"])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the slow command never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if std::env::var_os("PLUMB_TEST_DEBUG").is_some() {
        let ps = Command::new("ps")
            .args(["-eo", "pid,ppid,pgid,sid,stat,args"])
            .output()
            .unwrap();
        eprintln!(
            "BEFORE KILL:\n{}",
            String::from_utf8_lossy(&ps.stdout)
                .lines()
                .filter(|l| l.contains("sh -s")
                    || l.contains("cat")
                    || l.contains("sleep")
                    || l.contains("flock")
                    || l.contains("sshd"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    child.kill().unwrap();
    let _ = child.wait();
    // The host stops the work: the sleep goes away well before it would have ended.
    let t1 = Instant::now();
    while Command::new("pgrep")
        .args(["-f", "sleep 8"])
        .status()
        .unwrap()
        .success()
    {
        if t1.elapsed() > Duration::from_secs(6) {
            let ps = Command::new("ps")
                .args(["-eo", "pid,pgid,sid,stat,args"])
                .output()
                .unwrap();
            panic!(
                "the apply outlived plumb:\n{}",
                String::from_utf8_lossy(&ps.stdout)
                    .lines()
                    .filter(|l| !l.contains("binary_backend") && !l.contains("rustc"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(9));
    assert!(!root.join("late").exists(), "a step ran after plumb died");
    // The next run takes the lock at once and converges; no temp file is left.
    let (code, out, err) = h.plumb(&["converge", "--lock-timeout", "5"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(root.join("late").exists());
    let left: Vec<_> = std::fs::read_dir(root.join("d"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".plumb-tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Finding 9: a managed file whose name is near NAME_MAX (its backup name would pass it)
/// converges, changes and stays converged.
#[test]
fn a_file_name_near_name_max_does_not_wedge_the_host() {
    let h = Host::new();
    let name = "n".repeat(250);
    let file = |v: &str| {
        format!(
            "kind: File\nname: long\nhosts: all\npath: {}/{name}\ncontent: \"{v}\"\n---\nkind: File\nname: other\nhosts: all\npath: {}/other\ncontent: \"{v}\"\n",
            h.root().display(),
            h.root().display()
        )
    };
    h.manifests(&file("one"));
    assert_eq!(h.plumb(&["converge"]).0, 2);
    h.manifests(&file("two"));
    let (code, out, err) = h.plumb(&["converge"]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(h.root().join(&name)).unwrap(),
        "two"
    );
    assert_eq!(
        std::fs::read_to_string(h.root().join("other")).unwrap(),
        "two"
    );
    h.manifests(&file("three"));
    assert_eq!(h.plumb(&["converge"]).0, 2);
    assert_eq!(h.plumb(&["converge"]).0, 0);
}
