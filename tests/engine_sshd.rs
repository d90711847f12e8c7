//! The engine end to end against OpenSSH's sshd on loopback: converge files, directories and
//! symlinks under a temporary root, dry-run diffs, drift, prune, compare-and-swap, atomic
//! replace, host key refusal and failure isolation. Every host here is a real sshd; every file
//! is checked on disk.

mod support;

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::sshd::{ClientKey, Sshd};

/// A cluster repo plus the sshd "hosts" it targets, all under one temp dir.
struct Lab {
    dir: tempfile::TempDir,
    key: ClientKey,
    sshds: Vec<Sshd>,
}

impl Lab {
    fn new(hosts: usize) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let key = ClientKey::generate(dir.path(), "id_ed25519", "ed25519");
        let mut sshds = Vec::new();
        for _ in 0..hosts {
            let s = Sshd::start();
            s.authorize(&key.public_line);
            sshds.push(s);
        }
        let known = dir.path().join("known_hosts");
        let mut text = String::new();
        for s in &sshds {
            text.push_str(&s.known_hosts_line("ed25519"));
            text.push('\n');
        }
        std::fs::write(&known, text).unwrap();
        Lab { dir, key, sshds }
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// The root folder standing in for host `i`'s file system.
    fn root(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("host{i}"))
    }

    fn write_inventory(&self, extra_hosts: &str) {
        let mut hosts = String::new();
        for (i, s) in self.sshds.iter().enumerate() {
            hosts.push_str(&format!(
                "  h{i}: {{ address: {}, ssh_port: {}, groups: [app], vars: {{ root: {} }}, state_dir: {}/state }}\n",
                s.addr,
                s.port,
                self.root(i).display(),
                self.root(i).display()
            ));
        }
        hosts.push_str(extra_hosts);
        write(
            &self.repo(),
            "inventory/hosts.yaml",
            &format!(
                "defaults:\n  ssh_user: root\n  ssh_key: {}\n  known_hosts: {}\n  vars: {{ greeting: hello }}\ngroups:\n  app: {{}}\nhosts:\n{hosts}",
                self.key.private.display(),
                self.dir.path().join("known_hosts").display()
            ),
        );
    }

    /// Writes the manifests; `{root}` is replaced per host by a template variable.
    fn write_manifests(&self, text: &str) {
        write(&self.repo(), "manifests/app.yaml", text);
    }

    fn plumb(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::cargo_bin("plumb")
            .unwrap()
            .args(args)
            .arg(self.repo())
            .env_remove("PLUMB_AGE_IDENTITY")
            .env_remove("PLUMB_INVENTORY")
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

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Paths are per host: each host's root is a host var, but manifests need literal paths, so
/// each test host gets its own manifest document (selected by `host:`).
fn per_host(lab: &Lab, doc: impl Fn(usize, &str) -> String) -> String {
    (0..lab.sshds.len())
        .map(|i| doc(i, &lab.root(i).display().to_string()))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn basic_manifests(lab: &Lab) -> String {
    write(
        &lab.repo(),
        "templates/app.conf.tera",
        "# {{ host.name }}\ngreeting={{ greeting }}\nport={{ port | default(value=80) }}\n",
    );
    per_host(lab, |i, root| {
        format!(
            "kind: Directory\nname: etc-{i}\nhosts: host:h{i}\npath: {root}/etc/app\nmode: \"0750\"\n---\n\
             kind: File\nname: conf-{i}\nhosts: host:h{i}\npath: {root}/etc/app/app.conf\ntemplate: app.conf.tera\nmode: \"0640\"\n---\n\
             kind: Symlink\nname: link-{i}\nhosts: host:h{i}\npath: {root}/current\ntarget: {root}/etc/app\n"
        )
    })
}

#[test]
fn converge_creates_files_directories_symlinks_then_changes_nothing() {
    let lab = Lab::new(2);
    lab.write_inventory("");
    lab.write_manifests(&basic_manifests(&lab));

    let (code, out, err) = lab.plumb(&["converge", "--dry-run"]);
    assert_eq!(code, 2, "dry-run with changes exits 2\n{out}\n{err}");
    assert!(out.contains("+ File/conf-0"), "{out}");
    assert!(
        out.contains("+greeting=hello"),
        "the dry run shows the new content as a diff:\n{out}"
    );
    assert!(!lab.root(0).join("etc").exists(), "dry-run must not write");

    let (code, out, err) = lab.plumb(&["converge"]);
    assert_eq!(code, 2, "{out}\n{err}");
    for i in 0..2 {
        let conf = lab.root(i).join("etc/app/app.conf");
        assert_eq!(
            std::fs::read_to_string(&conf).unwrap(),
            format!("# h{i}\ngreeting=hello\nport=80\n")
        );
        assert_eq!(mode_of(&conf), 0o640);
        assert_eq!(mode_of(&lab.root(i).join("etc/app")), 0o750);
        assert_eq!(
            std::fs::read_link(lab.root(i).join("current")).unwrap(),
            lab.root(i).join("etc/app")
        );
        let state = std::fs::read_to_string(lab.root(i).join("state/state")).unwrap();
        assert!(state.contains(&format!("conf-{i}")), "{state}");
    }

    let (code, out, err) = lab.plumb(&["converge"]);
    assert_eq!(code, 0, "a second converge changes nothing\n{out}\n{err}");
    assert!(out.contains("2 hosts: 0 changed, 2 unchanged"), "{out}");
}

#[test]
fn dry_run_shows_exactly_the_changed_variable_and_touches_nothing() {
    let lab = Lab::new(1);
    lab.write_inventory("");
    lab.write_manifests(&basic_manifests(&lab));
    assert_eq!(lab.plumb(&["converge"]).0, 2);
    let conf = lab.root(0).join("etc/app/app.conf");
    let before = std::fs::read(&conf).unwrap();
    let mtime = std::fs::metadata(&conf).unwrap().modified().unwrap();

    let inv = std::fs::read_to_string(lab.repo().join("inventory/hosts.yaml")).unwrap();
    write(
        &lab.repo(),
        "inventory/hosts.yaml",
        &inv.replace("greeting: hello", "greeting: bonjour"),
    );
    let (code, out, _) = lab.plumb(&["converge", "--dry-run"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("-greeting=hello\n") || out.contains("-greeting=hello"),
        "{out}"
    );
    assert!(out.contains("+greeting=bonjour"), "{out}");
    assert!(
        !out.contains("-port=80"),
        "only the changed line differs:\n{out}"
    );
    assert_eq!(
        std::fs::read(&conf).unwrap(),
        before,
        "dry-run changed the file"
    );
    assert_eq!(std::fs::metadata(&conf).unwrap().modified().unwrap(), mtime);

    assert_eq!(lab.plumb(&["converge"]).0, 2);
    assert!(
        std::fs::read_to_string(&conf)
            .unwrap()
            .contains("greeting=bonjour")
    );
    // The previous version was kept.
    let backups = std::fs::read_dir(
        lab.root(0)
            .join("state/backup")
            .join(conf.strip_prefix("/").unwrap())
            .parent()
            .unwrap(),
    )
    .unwrap()
    .count();
    assert!(backups >= 1);
}

#[test]
fn drift_is_shown_then_repaired_or_only_reported_with_detect() {
    let lab = Lab::new(1);
    lab.write_inventory("");
    let root = lab.root(0).display().to_string();
    lab.write_manifests(&format!(
        "kind: File\nname: fixed\nhosts: all\npath: {root}/fixed.txt\ncontent: \"managed\\n\"\n---\n\
         kind: File\nname: watched\nhosts: all\ndrift: detect\npath: {root}/watched.txt\ncontent: \"watched\\n\"\n"
    ));
    assert_eq!(lab.plumb(&["converge"]).0, 2);
    std::fs::write(lab.root(0).join("fixed.txt"), "edited by hand\n").unwrap();
    let (code, out, _) = lab.plumb(&["converge", "--dry-run"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("-edited by hand") && out.contains("+managed"),
        "{out}"
    );
    assert_eq!(lab.plumb(&["converge"]).0, 2);
    assert_eq!(
        std::fs::read_to_string(lab.root(0).join("fixed.txt")).unwrap(),
        "managed\n"
    );

    std::fs::write(lab.root(0).join("watched.txt"), "edited\n").unwrap();
    let (code, out, _) = lab.plumb(&["converge"]);
    assert_eq!(code, 3, "drift on a detect resource exits 3\n{out}");
    assert!(out.contains("drift"), "{out}");
    assert_eq!(
        std::fs::read_to_string(lab.root(0).join("watched.txt")).unwrap(),
        "edited\n",
        "detect never repairs"
    );
}

#[test]
fn a_resource_removed_from_the_repo_is_pruned() {
    let lab = Lab::new(1);
    lab.write_inventory("");
    let root = lab.root(0).display().to_string();
    let keep: String = (0..3)
        .map(|i| {
            format!(
                "kind: File\nname: keep{i}\nhosts: all\npath: {root}/keep{i}\ncontent: k\n---\n"
            )
        })
        .collect();
    let gone = format!(
        "kind: File\nname: gone\nhosts: all\npath: {root}/gone\ncontent: g\n---\nkind: Directory\nname: d\nhosts: all\npath: {root}/d\n"
    );
    lab.write_manifests(&(keep.clone() + &gone));
    assert_eq!(lab.plumb(&["converge"]).0, 2);
    assert!(lab.root(0).join("gone").exists() && lab.root(0).join("d").is_dir());
    lab.write_manifests(&keep);
    let (code, out, _) = lab.plumb(&["converge", "--dry-run"]);
    assert_eq!(code, 2);
    assert!(out.contains("File/gone (removed from the repo)"), "{out}");
    assert!(lab.root(0).join("gone").exists());
    assert_eq!(lab.plumb(&["converge"]).0, 2);
    assert!(!lab.root(0).join("gone").exists());
    assert!(!lab.root(0).join("d").exists());
    assert!(lab.root(0).join("keep0").exists());
    assert_eq!(lab.plumb(&["converge"]).0, 0);
}

/// A repo that lost most of a host's resources (a manifest deleted, a selector changed) does
/// not wipe the host: more than half is refused unless the operator says so.
#[test]
fn removing_more_than_half_of_a_host_is_refused_without_allow_mass_prune() {
    let lab = Lab::new(1);
    lab.write_inventory("");
    let root = lab.root(0).display().to_string();
    let files: String = (0..4)
        .map(|i| {
            format!("kind: File\nname: f{i}\nhosts: all\npath: {root}/f{i}\ncontent: x\n---\n")
        })
        .collect();
    lab.write_manifests(&files);
    assert_eq!(lab.plumb(&["converge"]).0, 2);
    lab.write_manifests(&format!(
        "kind: File\nname: f0\nhosts: all\npath: {root}/f0\ncontent: x\n"
    ));
    for args in [&["converge", "--dry-run"][..], &["converge"][..]] {
        let (code, out, err) = lab.plumb(args);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            out.contains("would remove 3 of the 4 resources") && out.contains("--allow-mass-prune"),
            "{out}"
        );
        for i in 0..4 {
            assert!(
                lab.root(0).join(format!("f{i}")).exists(),
                "f{i} was removed"
            );
        }
    }
    assert_eq!(lab.plumb(&["converge", "--allow-mass-prune"]).0, 2);
    assert!(!lab.root(0).join("f1").exists() && lab.root(0).join("f0").exists());
    assert_eq!(lab.plumb(&["converge"]).0, 0);
}

#[test]
fn a_changed_host_key_is_refused_and_other_hosts_still_converge() {
    let lab = Lab::new(2);
    lab.write_inventory("");
    lab.write_manifests(&basic_manifests(&lab));
    // Host 1's known_hosts entry now holds some other key.
    let other = Sshd::start();
    let known = lab.dir.path().join("known_hosts");
    let text = std::fs::read_to_string(&known).unwrap();
    let h1 = lab.sshds[1].known_hosts_line("ed25519");
    let forged = h1.replace(
        h1.split_whitespace().nth(2).unwrap(),
        other
            .known_hosts_line("ed25519")
            .split_whitespace()
            .nth(2)
            .unwrap(),
    );
    std::fs::write(&known, text.replace(&h1, &forged)).unwrap();

    let (code, out, err) = lab.plumb(&["converge"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("HOST KEY CHANGED for h1"), "{out}");
    assert!(
        out.contains(&lab.sshds[1].host_fingerprint("ed25519")),
        "the error names the offered fingerprint:\n{out}"
    );
    assert!(
        lab.root(0).join("etc/app/app.conf").exists(),
        "host 0 converged"
    );
    assert!(!lab.root(1).join("etc").exists(), "host 1 untouched");
}

#[test]
fn an_unknown_host_key_is_refused_unless_accepted_explicitly() {
    let lab = Lab::new(1);
    lab.write_inventory("");
    lab.write_manifests(&basic_manifests(&lab));
    std::fs::write(lab.dir.path().join("known_hosts"), "").unwrap();
    let (code, out, _) = lab.plumb(&["converge"]);
    assert_eq!(code, 1);
    assert!(out.contains("is not in"), "{out}");
    assert!(
        out.contains(&lab.sshds[0].host_fingerprint("ed25519")),
        "{out}"
    );
    let (code, out, _) = lab.plumb(&["converge", "--accept-new-host-keys"]);
    assert_eq!(code, 2, "{out}");
    let known = std::fs::read_to_string(lab.dir.path().join("known_hosts")).unwrap();
    assert!(!known.trim().is_empty(), "the key was recorded");
    assert_eq!(lab.plumb(&["converge"]).0, 0);
}

#[test]
fn an_unreachable_host_fails_alone() {
    let lab = Lab::new(1);
    let port = support::sshd::free_port("127.0.0.1".parse().unwrap());
    lab.write_inventory(&format!(
        "  dead: {{ address: 127.0.0.1, ssh_port: {port}, groups: [app] }}\n"
    ));
    lab.write_manifests(&basic_manifests(&lab));
    let (code, out, _) = lab.plumb(&["converge", "--connect-timeout", "3"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("dead FAILED"), "{out}");
    assert!(
        out.contains(&format!("127.0.0.1:{port}")),
        "the error names the address:\n{out}"
    );
    assert!(
        out.contains("1 changed") && out.contains("1 failed"),
        "{out}"
    );
    assert!(lab.root(0).join("etc/app/app.conf").exists());
}

#[test]
fn an_invalid_repo_never_connects() {
    let lab = Lab::new(1);
    lab.write_inventory("");
    lab.write_manifests("kind: File\nhosts: all\npath: relative/path\ncontent: x\n");
    let (code, out, err) = lab.plumb(&["converge"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("manifests/app.yaml:3:7"), "{err}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !lab.sshds[0].log().contains("Accepted publickey"),
        "sshd saw a login:\n{}",
        lab.sshds[0].log()
    );
}

#[test]
fn a_reviewed_plan_is_applied_exactly_and_refuses_what_changed_since() {
    let lab = Lab::new(1);
    lab.write_inventory("");
    let root = lab.root(0).display().to_string();
    lab.write_manifests(&format!(
        "kind: File\nname: a\nhosts: all\npath: {root}/a\ncontent: \"A2\\n\"\n---\nkind: File\nname: b\nhosts: all\npath: {root}/b\ncontent: \"B2\\n\"\n"
    ));
    std::fs::create_dir_all(lab.root(0)).unwrap();
    std::fs::write(lab.root(0).join("a"), "A1\n").unwrap();
    std::fs::write(lab.root(0).join("b"), "B1\n").unwrap();
    let plan = lab.dir.path().join("plan.json");
    let (code, _, err) = lab.plumb(&["plan", "--out", plan.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let text = std::fs::read_to_string(&plan).unwrap();
    assert!(
        text.contains("\"plan_sha256\"") && text.contains("\"actual_sha256\""),
        "{text}"
    );
    // Someone edits `b` after the plan was reviewed.
    std::fs::write(lab.root(0).join("b"), "B-by-hand\n").unwrap();
    let out = Command::cargo_bin("plumb")
        .unwrap()
        .args(["apply", plan.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("File/b") && stdout.contains("REFUSED"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(lab.root(0).join("a")).unwrap(),
        "A2\n",
        "the unchanged resource was applied"
    );
    assert_eq!(
        std::fs::read_to_string(lab.root(0).join("b")).unwrap(),
        "B-by-hand\n",
        "the changed one was refused"
    );

    // A tampered plan is refused as a whole.
    std::fs::write(&plan, text.replace("A2", "A3")).unwrap();
    let out = Command::cargo_bin("plumb")
        .unwrap()
        .args(["apply", plan.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn the_host_lock_makes_a_second_run_wait_then_fail_clearly() {
    let lab = Lab::new(1);
    lab.write_inventory("");
    lab.write_manifests(&basic_manifests(&lab));
    std::fs::create_dir_all(lab.root(0).join("state")).unwrap();
    // Another run holds the lock.
    let mut holder = std::process::Command::new("flock")
        .arg(lab.root(0).join("state/lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let (code, out, _) = lab.plumb(&["converge", "--lock-timeout", "2"]);
    let waited = started.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("another plumb run holds this host's lock"),
        "{out}"
    );
    assert!(
        waited >= Duration::from_secs(2),
        "it waited for the lock ({waited:?})"
    );
    assert!(!lab.root(0).join("etc").exists());
    assert_eq!(
        lab.plumb(&["converge"]).0,
        2,
        "once released, the next run proceeds"
    );
}

#[test]
fn json_output_has_the_documented_shape() {
    let lab = Lab::new(1);
    lab.write_inventory("");
    lab.write_manifests(&basic_manifests(&lab));
    let (code, out, _) = lab.plumb(&["converge", "--dry-run", "--output", "json"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schema"], "plumb.run/v1");
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["summary"]["changed"], 1);
    let host = &v["hosts"][0];
    assert_eq!(host["host"], "h0");
    assert_eq!(host["status"], "changed");
    let kinds: Vec<&str> = host["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["Directory", "File", "Symlink"]);
    assert_eq!(host["resources"][1]["action"], "create");
    assert!(
        host["resources"][1]["diffs"][0]["text"]
            .as_str()
            .unwrap()
            .contains("+greeting=hello")
    );
}

#[test]
fn atomic_replace_a_reader_never_sees_a_partial_file() {
    let lab = Lab::new(1);
    lab.write_inventory("");
    let root = lab.root(0).display().to_string();
    let big_a = "a".repeat(4 * 1024 * 1024);
    let big_b = "b".repeat(4 * 1024 * 1024);
    write(&lab.repo(), "files/big", &big_a);
    lab.write_manifests(&format!(
        "kind: File\nname: big\nhosts: all\npath: {root}/big\nsource: files/big\n"
    ));
    assert_eq!(lab.plumb(&["converge"]).0, 2);
    let path = lab.root(0).join("big");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let data = std::fs::read(&path).unwrap();
                assert_eq!(
                    data.len(),
                    4 * 1024 * 1024,
                    "a reader saw a file of {} bytes",
                    data.len()
                );
                assert!(
                    data.iter().all(|b| *b == data[0]),
                    "a reader saw mixed content"
                );
                reads += 1;
            }
            reads
        })
    };
    for content in [&big_b, &big_a, &big_b] {
        write(&lab.repo(), "files/big", content);
        assert_eq!(lab.plumb(&["converge"]).0, 2);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("reader saw a partial file");
    assert!(reads > 10, "the reader ran ({reads} reads)");
    assert_eq!(std::fs::read(&path).unwrap()[0], b'b');
    // No temp file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(lab.root(0))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("plumb-tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn a_failing_command_fails_its_host_and_reports_why() {
    let lab = Lab::new(2);
    lab.write_inventory("");
    let docs = per_host(&lab, |i, root| {
        let run = if i == 0 {
            "echo boom >&2; exit 7".to_string()
        } else {
            format!("touch {root}/ran")
        };
        format!("kind: Command\nname: c{i}\nhosts: host:h{i}\nrun: '{run}'\ncreates: {root}/ran\n")
    });
    lab.write_manifests(&docs);
    let (code, out, _) = lab.plumb(&["converge"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("boom") && out.contains("exit 7"), "{out}");
    assert!(
        lab.root(1).join("ran").exists(),
        "the other host ran its command"
    );
}

/// A file that holds a secret, converged, then changed on a line that is not the secret while
/// the secret is rotated: the dry run shows that line as a masked diff (old side from plumb's
/// host state), with the secret as its placeholder, and neither the old nor the new value
/// anywhere, in the human or the JSON report; the host state keeps no value either.
#[test]
fn a_dry_run_shows_a_masked_diff_of_a_file_that_holds_a_secret() {
    use age::secrecy::ExposeSecret;
    const OLD_PW: &str = "first-Passw0rd-value";
    const NEW_PW: &str = "second-Passw0rd-value";
    let lab = Lab::new(1);
    lab.write_inventory("");
    let id = age::x25519::Identity::generate();
    write(
        &lab.repo(),
        "secrets/recipients.txt",
        &format!("{}\n", id.to_public()),
    );
    let id_file = lab.dir.path().join("age-identity.txt");
    std::fs::write(&id_file, id.to_string().expose_secret()).unwrap();
    let id_arg = id_file.display().to_string();
    write(
        &lab.repo(),
        "templates/db.conf.tera",
        "image: {{ image }}\nshared_buffers: 128MB\npassword: {{ secret(name=\"db_pw\") }}\n",
    );
    let manifests = |image: &str| {
        per_host(&lab, |i, root| {
            format!(
                "kind: File\nname: db-{i}\nhosts: host:h{i}\npath: {root}/db.conf\nmode: \"0600\"\ntemplate: db.conf.tera\nvars: {{ image: \"{image}\" }}\n"
            )
        })
    };
    plumb::secrets::SecretStore::set(&lab.repo(), "db_pw", OLD_PW.as_bytes()).unwrap();
    lab.write_manifests(&manifests("app:1"));
    let (code, out, err) = lab.plumb(&["converge", "--age-identity", &id_arg]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("(secrets masked)"), "{out}");
    assert!(!out.contains(OLD_PW), "{out}");
    let conf = lab.root(0).join("db.conf");
    assert!(std::fs::read_to_string(&conf).unwrap().contains(OLD_PW));
    let state = std::fs::read_to_string(lab.root(0).join("state/state")).unwrap();
    assert!(state.contains("<secret:db_pw>"), "{state}");
    assert!(!state.contains(OLD_PW), "{state}");

    plumb::secrets::SecretStore::set(&lab.repo(), "db_pw", NEW_PW.as_bytes()).unwrap();
    lab.write_manifests(&manifests("app:2"));
    let (code, out, err) = lab.plumb(&["converge", "--dry-run", "--age-identity", &id_arg]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("(secrets masked)"), "{out}");
    assert!(out.contains("-image: app:1\n"), "{out}");
    assert!(out.contains("+image: app:2\n"), "{out}");
    assert!(out.contains(" password: <secret:db_pw>\n"), "{out}");
    assert!(!out.contains("sensitive content changed"), "{out}");
    for text in [&out, &err] {
        assert!(!text.contains(OLD_PW) && !text.contains(NEW_PW), "{text}");
    }
    let (_, json, _) = lab.plumb(&[
        "converge",
        "--dry-run",
        "--output",
        "json",
        "--age-identity",
        &id_arg,
    ]);
    assert!(json.contains("\"masked\": true"), "{json}");
    assert!(json.contains("+image: app:2"), "{json}");
    assert!(!json.contains(OLD_PW) && !json.contains(NEW_PW), "{json}");
    assert!(
        std::fs::read_to_string(&conf).unwrap().contains(OLD_PW),
        "a dry run writes nothing"
    );
}
