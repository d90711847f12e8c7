//! End to end on the lab (containers acting as VMs, reached over SSH exactly like VMs): the
//! reference repo converges and stays converged; dry-runs change nothing; drift is repaired;
//! removed resources are pruned; a VM stopped mid-run fails alone and converges next time;
//! plumb killed mid-apply leaves no half-written file and the next run completes.
//!
//! Needs a Docker engine; without one the tests fail (a skipped test must not count as passing).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::lab;

/// The lab needs a Docker engine; without one the test fails rather than passing unseen.
fn skip() -> bool {
    assert!(
        lab::docker_available(),
        "no Docker engine: the end-to-end tests need one (start dockerd)"
    );
    false
}

fn plumb_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("plumb")
}

/// Runs plumb with the lab overlay; returns (exit code, stdout, stderr).
fn plumb(repo: &Path, overlay: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(plumb_bin())
        .args(args)
        .arg(repo)
        .arg("--inventory")
        .arg(overlay)
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

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn sh(vm: &str, cmd: &str) -> String {
    let out: Output = lab::exec(vm, cmd);
    assert!(
        out.status.success(),
        "{vm}: `{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lab's overlay with this test's own state folder on the VMs, so tests that use different
/// repos never prune each other's resources.
fn overlay(dir: &Path, state_dir: &str) -> PathBuf {
    let text = lab::overlay_text(&lab::inventory_overlay()).replace(
        "defaults:\n",
        &format!("defaults:\n  state_dir: {state_dir}\n"),
    );
    let p = dir.join("overlay.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

const INVENTORY: &str = "\
defaults: { ssh_user: root }
groups: { postgres: {}, backup: {} }
hosts:
  pg-srv1: { address: 192.0.2.1, groups: [postgres] }
  pg-srv2: { address: 192.0.2.2, groups: [postgres] }
  pg-srv3: { address: 192.0.2.3, groups: [postgres] }
  pg-backup-repo-server1: { address: 192.0.2.4, groups: [backup] }
";

#[test]
fn a_vm_stopped_mid_run_fails_alone_and_converges_next_time() {
    if skip() {
        return;
    }
    let _guard = lab::lock();
    lab::ensure_up();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    write(&repo, "inventory/hosts.yaml", INVENTORY);
    write(
        &repo,
        "manifests/slow.yaml",
        "kind: File\nhosts: all\npath: /opt/e2e-stop/before\ncontent: \"before\\n\"\n---\n\
         kind: Command\nname: slow\nhosts: all\nrun: touch /opt/e2e-stop/slow-started && sleep 6 && touch /opt/e2e-stop/slow-done\ncreates: /opt/e2e-stop/slow-done\n",
    );
    let overlay = overlay(dir.path(), "/var/lib/plumb-e2e-stop");
    for vm in lab::vm_names() {
        sh(&vm, "rm -rf /opt/e2e-stop /var/lib/plumb-e2e-stop");
    }
    let child = Command::new(plumb_bin())
        .args([
            "converge",
            repo.to_str().unwrap(),
            "--inventory",
            overlay.to_str().unwrap(),
            "--connect-timeout",
            "5",
            "--command-timeout",
            "60",
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the slow command runs on pg-srv2, then stop that VM.
    let started = Instant::now();
    loop {
        let out = lab::exec(
            "pg-srv2",
            "test -f /opt/e2e-stop/slow-started && echo yes || true",
        );
        if String::from_utf8_lossy(&out.stdout).contains("yes") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the converge never reached pg-srv2's command"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    lab::stop("pg-srv2");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "one host failed: exit 1");
    assert!(stdout.contains("pg-srv2 FAILED"), "{stdout}");
    assert!(
        stdout.contains("3 changed") && stdout.contains("1 failed"),
        "{stdout}"
    );
    for vm in ["pg-srv1", "pg-srv3", "pg-backup-repo-server1"] {
        sh(vm, "test -f /opt/e2e-stop/slow-done");
    }
    lab::start("pg-srv2");
    let (code, out, _) = plumb(&repo, &overlay, &["converge"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("pg-srv2 changed") && out.contains("pg-srv1 unchanged"),
        "{out}"
    );
    sh(
        "pg-srv2",
        "test -f /opt/e2e-stop/slow-done && test -f /opt/e2e-stop/before",
    );
    let (code, out, _) = plumb(&repo, &overlay, &["converge"]);
    assert_eq!(code, 0, "{out}");
}

/// Every `f*` file present under /opt/e2e-kill on pg-srv1 is byte for byte the repo's file.
fn assert_whole_files(repo: &Path) -> String {
    let listing = sh(
        "pg-srv1",
        "mkdir -p /opt/e2e-kill && cd /opt/e2e-kill && for f in f*; do [ -f \"$f\" ] && printf '%s %s\\n' \"$f\" \"$(sha256sum < \"$f\" | cut -d' ' -f1)\"; done; ls -a",
    );
    for line in listing
        .lines()
        .filter(|l| l.starts_with('f') && l.contains(' '))
    {
        let (name, hash) = line.split_once(' ').unwrap();
        let want = plumb::model::desired::sha256_hex(
            &std::fs::read(repo.join("files").join(name)).unwrap(),
        );
        assert_eq!(hash, want, "{name} on the VM is not the whole file");
    }
    listing
}

#[test]
fn plumb_killed_mid_apply_leaves_no_half_written_file() {
    if skip() {
        return;
    }
    let _guard = lab::lock();
    lab::ensure_up();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    write(&repo, "inventory/hosts.yaml", INVENTORY);
    // Many large files (about 50 MB of script), then a pause at the end of the apply.
    let mut manifests = String::new();
    for i in 0..12 {
        let byte = (b'a' + i as u8) as char;
        write(
            &repo,
            &format!("files/f{i}"),
            &byte.to_string().repeat(3 * 1024 * 1024),
        );
        manifests.push_str(&format!("---\nkind: File\nname: f{i}\nhosts: host:pg-srv1\npath: /opt/e2e-kill/f{i}\nsource: files/f{i}\n"));
    }
    manifests.push_str("---\nkind: Command\nname: pause\nhosts: host:pg-srv1\nrun: touch /opt/e2e-kill/pausing && sleep 15 && touch /opt/e2e-kill/paused\ncreates: /opt/e2e-kill/paused\n");
    write(&repo, "manifests/big.yaml", &manifests);
    let overlay = overlay(dir.path(), "/var/lib/plumb-e2e-kill");
    let spawn = || {
        Command::new(plumb_bin())
            .args([
                "converge",
                repo.to_str().unwrap(),
                "--inventory",
                overlay.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    // 1. Killed at fixed moments (while rendering, sending or writing, whichever it is then).
    for delay in [300u64, 900, 1800] {
        sh("pg-srv1", "rm -rf /opt/e2e-kill /var/lib/plumb-e2e-kill");
        let mut child = spawn();
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL: no chance to clean up
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(500));
        assert_whole_files(&repo);
    }

    // 2. Killed while the apply script runs on the host (the pause at its end).
    sh("pg-srv1", "rm -rf /opt/e2e-kill /var/lib/plumb-e2e-kill");
    let mut child = spawn();
    let started = Instant::now();
    loop {
        let out = lab::exec(
            "pg-srv1",
            "test -f /opt/e2e-kill/pausing && echo yes || true",
        );
        if String::from_utf8_lossy(&out.stdout).contains("yes") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the apply never reached the pause"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    let _ = child.wait();
    std::thread::sleep(Duration::from_secs(1));
    let listing = assert_whole_files(&repo);
    assert!(
        listing.contains("f11"),
        "the files were written before the pause:\n{listing}"
    );
    assert!(
        !listing.contains("paused"),
        "the listing must come before the 15 s pause ends (plumb was killed during it):\n{listing}"
    );

    // The lock died with the connection: the next run proceeds, finishes the job, leaves no
    // temp file; the one after has nothing to do.
    let (code, out, _) = plumb(&repo, &overlay, &["converge", "--lock-timeout", "10"]);
    assert_eq!(code, 2, "{out}");
    let listing = assert_whole_files(&repo);
    assert!(
        !listing.contains("plumb-tmp"),
        "temp files were left:\n{listing}"
    );
    assert!(listing.contains("paused"), "{listing}");
    let (code, out, _) = plumb(&repo, &overlay, &["converge"]);
    assert_eq!(code, 0, "{out}");
}

/// A copy of the reference repo (inventory, manifests, templates, secrets, pki) to edit freely.
fn reference_copy(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dst = dir.join("reference");
    for sub in ["inventory", "manifests", "templates", "secrets", "pki"] {
        lab::copy_tree(&src.join(sub), &dst.join(sub));
    }
    dst
}

/// `plumb` on the reference repo with the demo identity.
fn plumb_ref(repo: &Path, overlay: &Path, args: &[&str]) -> (i32, String, String) {
    let identity = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab/demo-age-key.txt");
    let mut all: Vec<&str> = args.to_vec();
    all.push("--age-identity");
    all.push(identity.to_str().unwrap());
    plumb(repo, overlay, &all)
}

/// SHA-256 of every file plumb manages for the reference repo on a VM.
fn managed_hashes(vm: &str) -> String {
    sh(
        vm,
        "find /home/postgres/config /home/postgres/pgbackrest /opt/plumb /etc/systemd/system -maxdepth 3 -type f -not -path '*/log/*' 2>/dev/null | sort | xargs -r sha256sum",
    )
}

#[test]
fn the_reference_repo_converges_and_stays_converged() {
    if skip() {
        return;
    }
    let _guard = lab::lock();
    lab::ensure_up();
    let dir = tempfile::tempdir().unwrap();
    let repo = reference_copy(dir.path());
    let overlay = overlay(dir.path(), "/var/lib/plumb");

    // Converge (the lab may already be converged by the demo), then nothing is left to do.
    let (code, out, err) = plumb_ref(&repo, &overlay, &["converge"]);
    assert!(code == 0 || code == 2, "{out}\n{err}");
    // It reads every VM, the cluster (Patroni, PostgreSQL, etcd) and the backup repository
    // over one SSH connection per VM: the cluster phase reuses the host phase's connections.
    let accepted = || -> Vec<usize> {
        lab::vm_names()
            .iter()
            .map(|vm| {
                sh(
                    vm,
                    "journalctl -u ssh --no-pager -o cat | grep -c '^Accepted ' || true",
                )
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{vm}: sshd's log: {e}"))
            })
            .collect()
    };
    let before = accepted();
    let (code, out, err) = plumb_ref(&repo, &overlay, &["converge"]);
    assert_eq!(code, 0, "a second converge changes nothing\n{out}\n{err}");
    assert!(out.contains("4 hosts: 0 changed, 4 unchanged"), "{out}");
    let opened: Vec<usize> = accepted().iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        opened,
        vec![1; before.len()],
        "SSH connections per VM: {:?}",
        lab::vm_names()
    );

    // The postgres user matches the container user on every VM; files have their owners and modes.
    for vm in lab::vm_names() {
        let id = sh(&vm, "id postgres");
        assert!(
            id.starts_with("uid=1001(postgres) gid=1001(postgres)"),
            "{vm}: {id}"
        );
        assert!(id.contains("docker"), "{vm}: {id}");
    }
    for vm in ["pg-srv1", "pg-srv2", "pg-srv3"] {
        let st = sh(
            vm,
            "stat -c '%U:%G %a' /home/postgres/config/patroni.yml /home/postgres/postgres-data/data",
        );
        assert_eq!(st, "postgres:postgres 600\npostgres:postgres 700\n", "{vm}");
    }

    // One variable changes: the dry run shows exactly that diff and touches nothing.
    let before: Vec<String> = lab::vm_names().iter().map(|v| managed_hashes(v)).collect();
    let manifest = repo.join("manifests/postgres01.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("{text}haproxy: {{ maxconn: 150 }}\n")).unwrap();
    let (code, out, _) = plumb_ref(
        &repo,
        &overlay,
        &["converge", "--dry-run", "--output", "json"],
    );
    assert_eq!(code, 2, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for host in v["hosts"].as_array().unwrap() {
        let changed: Vec<String> = host["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r["kind"].as_str().unwrap(),
                    r["name"].as_str().unwrap()
                )
            })
            .collect();
        if host["host"] == "pg-backup-repo-server1" {
            assert!(changed.is_empty(), "{changed:?}");
            continue;
        }
        assert_eq!(
            changed,
            vec!["File//home/postgres/config/haproxy.cfg"],
            "{}",
            host["host"]
        );
        let diff = host["resources"][0]["diffs"][0]["text"].as_str().unwrap();
        assert!(
            diff.contains("-    maxconn 400") && diff.contains("+    maxconn 600"),
            "{diff}"
        );
        assert!(diff.contains("maxconn 150 check"), "{diff}");
        let minus = diff
            .lines()
            .filter(|l| l.starts_with('-') && !l.starts_with("---"))
            .count();
        assert_eq!(minus, 7, "only the maxconn lines change:\n{diff}");
        assert_eq!(
            host["handlers"][0]["target"],
            "Command/postgres01-reload-haproxy"
        );
    }
    let after: Vec<String> = lab::vm_names().iter().map(|v| managed_hashes(v)).collect();
    assert_eq!(before, after, "the dry run changed a file on a VM");

    let (code, out, _) = plumb_ref(&repo, &overlay, &["converge"]);
    assert_eq!(code, 2, "{out}");
    assert!(sh("pg-srv2", "cat /home/postgres/config/haproxy.cfg").contains("maxconn 150 check"));
    assert_eq!(plumb_ref(&repo, &overlay, &["converge"]).0, 0);

    // Drift: a managed file edited by hand is shown, then repaired.
    sh(
        "pg-srv3",
        "echo '# edited by hand' >> /home/postgres/config/haproxy.cfg",
    );
    let (code, out, _) = plumb_ref(&repo, &overlay, &["converge", "--dry-run"]);
    assert_eq!(code, 2);
    assert!(out.contains("-# edited by hand"), "{out}");
    assert!(out.contains("pg-srv1 unchanged"), "{out}");
    let (code, _, _) = plumb_ref(&repo, &overlay, &["converge"]);
    assert_eq!(code, 2);
    assert!(!sh("pg-srv3", "cat /home/postgres/config/haproxy.cfg").contains("edited by hand"));

    // A resource removed from the repo is pruned.
    write(
        &repo,
        "manifests/note.yaml",
        "kind: File\nhosts: all\npath: /etc/plumb-e2e-note\ncontent: \"note\\n\"\n",
    );
    assert_eq!(plumb_ref(&repo, &overlay, &["converge"]).0, 2);
    sh("pg-srv1", "test -f /etc/plumb-e2e-note");
    std::fs::remove_file(repo.join("manifests/note.yaml")).unwrap();
    let (code, out, _) = plumb_ref(&repo, &overlay, &["converge"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("File//etc/plumb-e2e-note (removed from the repo)"),
        "{out}"
    );
    sh("pg-srv1", "test ! -e /etc/plumb-e2e-note");

    // Back to the repo as shipped, for the next user of the lab.
    std::fs::write(&manifest, text).unwrap();
    assert_eq!(plumb_ref(&repo, &overlay, &["converge"]).0, 2);
    assert_eq!(plumb_ref(&repo, &overlay, &["converge"]).0, 0);
}

#[test]
fn a_user_with_another_uid_is_a_conflict_unless_renumbering_is_allowed() {
    if skip() {
        return;
    }
    let _guard = lab::lock();
    lab::ensure_up();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    write(&repo, "inventory/hosts.yaml", INVENTORY);
    let overlay = overlay(dir.path(), "/var/lib/plumb-e2e-users");
    // Someone created the user by hand with another uid, and it owns files.
    sh(
        "pg-srv3",
        "userdel -r e2eapp 2>/dev/null; groupdel e2eapp 2>/dev/null; rm -rf /srv/e2eapp; groupadd -g 2600 e2eapp && useradd -u 2500 -g e2eapp -m e2eapp && mkdir -p /srv/e2eapp && touch /srv/e2eapp/data && chown -R e2eapp /srv/e2eapp",
    );
    let user = "kind: Group\nname: e2eapp\nhosts: host:pg-srv3\ngid: 2600\n---\nkind: User\nname: e2eapp\nhosts: host:pg-srv3\nuid: 2700\ngroup: e2eapp\n";
    write(&repo, "manifests/user.yaml", user);
    let (code, out, _) = plumb(&repo, &overlay, &["converge"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("user `e2eapp` exists with uid 2500, but the manifest pins uid 2700"),
        "{out}"
    );
    assert!(out.contains("allow_renumber"), "{out}");
    assert!(
        sh("pg-srv3", "id -u e2eapp").trim() == "2500",
        "nothing changed on a conflict"
    );

    write(
        &repo,
        "manifests/user.yaml",
        &format!("{user}allow_renumber: true\n"),
    );
    let (code, out, _) = plumb(&repo, &overlay, &["converge"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(sh("pg-srv3", "id -u e2eapp").trim(), "2700");
    assert_eq!(
        sh("pg-srv3", "stat -c %u /srv/e2eapp/data").trim(),
        "2700",
        "the user's files were re-owned"
    );
    assert_eq!(plumb(&repo, &overlay, &["converge"]).0, 0);
    sh(
        "pg-srv3",
        "userdel -r e2eapp; groupdel e2eapp 2>/dev/null; rm -rf /srv/e2eapp; true",
    );
}

/// Where the member certificates are on a member.
const TLS_DIR: &str = "/home/postgres/config/tls";

/// `cmd` on a VM; (success, stdout + stderr). Never prints the command (it may hold a
/// password): the caller says what failed.
fn try_sh(vm: &str, cmd: &str) -> (bool, String) {
    let out = lab::exec(vm, cmd);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The last lines of the stack's logs on a member, for failure messages.
fn stack_logs(vm: &str) -> String {
    try_sh(
        vm,
        "cd /opt/plumb/postgres01 && docker-compose logs --no-color --tail 25 etcd patroni haproxy 2>&1",
    )
    .1
}

/// `GET /cluster` over HTTPS (checked against the CA) until a leader and two replicas run;
/// returns the leader's name.
fn wait_for_healthy_cluster(addr: &str, bound: Duration) -> String {
    let started = Instant::now();
    loop {
        let (_, body) = try_sh(
            "pg-srv1",
            &format!("curl -sf --max-time 5 --cacert {TLS_DIR}/ca.crt https://{addr}:8008/cluster"),
        );
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
            let members = v["members"].as_array().cloned().unwrap_or_default();
            let leader = members
                .iter()
                .find(|m| m["role"] == "leader" && m["state"] == "running")
                .and_then(|m| m["name"].as_str().map(str::to_string));
            let replicas = members
                .iter()
                .filter(|m| {
                    m["role"] == "replica" && (m["state"] == "running" || m["state"] == "streaming")
                })
                .count();
            if let (Some(leader), 2) = (leader, replicas) {
                return leader;
            }
        }
        assert!(
            started.elapsed() < bound,
            "no leader and two replicas over HTTPS after {bound:?}; last answer: {body}\n{}",
            stack_logs("pg-srv1")
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// The serial and issuer of the certificate a TLS server presents, verified against the
/// member bundle (`openssl s_client` on pg-srv1); an error carrying the output when no certificate was read (a
/// server restarting its listener to load a new certificate, for a moment).
fn try_served(addr: &str, port: u16, extra: &str) -> Result<(String, String), String> {
    let (_, out) = try_sh(
        "pg-srv1",
        &format!(
            "openssl s_client -connect {addr}:{port} -CAfile {TLS_DIR}/ca.crt -verify_return_error {extra} </dev/null 2>/dev/null | openssl x509 -noout -serial -issuer"
        ),
    );
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    match (field("serial="), field("issuer=")) {
        (Some(serial), Some(issuer)) => Ok((serial, issuer)),
        _ => Err(out),
    }
}

/// The serial of the certificate served, which must be readable.
fn served_serial(addr: &str, port: u16, extra: &str) -> String {
    try_served(addr, port, extra)
        .unwrap_or_else(|out| panic!("no certificate served on {addr}:{port}: {out}"))
        .0
}

/// `pgbackrest check` from the repository host (archiving and the TLS links both ways).
fn pgbackrest_check() {
    let (ok, out) = try_sh(
        "pg-backup-repo-server1",
        "cd /opt/plumb/pgbackrest && docker-compose exec -T pgbackrest pgbackrest --config=/home/postgres/pgbackrest/pgbackrest.conf --stanza=postgres01 check 2>&1",
    );
    assert!(ok, "pgbackrest check: {out}");
}

/// psql in pg-srv2's Patroni container with a connection string; (success, output).
fn psql(conninfo: &str, password: &str, sql: &str) -> (bool, String) {
    try_sh(
        "pg-srv2",
        &format!(
            "cd /opt/plumb/postgres01 && docker-compose exec -T -e PGPASSWORD='{password}' -e PGCONNECT_TIMEOUT=10 patroni psql '{conninfo}' -Atc \"{sql}\""
        ),
    )
}

#[test]
fn the_cluster_answers_only_over_tls_with_credentials_and_rotates_without_restarting() {
    if skip() {
        return;
    }
    let _guard = lab::lock();
    lab::ensure_up();
    let dir = tempfile::tempdir().unwrap();
    let repo = reference_copy(dir.path());
    let overlay = overlay(dir.path(), "/var/lib/plumb");
    let (code, out, err) = plumb_ref(&repo, &overlay, &["converge"]);
    assert!(code == 0 || code == 2, "{out}\n{err}");

    let members = ["pg-srv1", "pg-srv2", "pg-srv3"];
    let addrs: Vec<String> = members.iter().map(|m| lab::address(m)).collect();
    let leader = wait_for_healthy_cluster(&addrs[0], Duration::from_secs(480));
    let ca = format!("{TLS_DIR}/ca.crt");
    let (cert, key) = (
        format!("{TLS_DIR}/pg-srv1.crt"),
        format!("{TLS_DIR}/pg-srv1.key"),
    );

    for (vm, addr) in members.iter().zip(&addrs) {
        // Keys: the service user's, 0600.
        assert_eq!(
            sh(vm, &format!("stat -c '%U:%G %a' {TLS_DIR}/{vm}.key")),
            "postgres:postgres 600\n",
            "{vm}"
        );

        // etcd: without a client certificate, nothing (client and peer ports, TLS or not).
        for url in [
            format!("https://{addr}:2379/version"),
            format!("http://{addr}:2379/version"),
            format!("https://{addr}:2380/members"),
        ] {
            let (ok, out) = try_sh(
                "pg-srv1",
                &format!("curl -s --max-time 5 --cacert {ca} {url}"),
            );
            assert!(
                !out.contains("etcdserver") && !out.contains("\"id\""),
                "{url} answered without a client certificate ({ok}): {out}"
            );
        }
        let (ok, out) = try_sh(
            "pg-srv1",
            &format!(
                "curl -s --max-time 5 --cacert {ca} -X POST https://{addr}:2379/v3/kv/range -d '{{\"key\":\"L3NlcnZpY2U=\",\"range_end\":\"AA==\"}}'"
            ),
        );
        assert!(
            !ok || !out.contains("\"kvs\""),
            "etcd read without a certificate: {out}"
        );
        // With the member certificate: the API answers, and etcdctl works.
        let (ok, out) = try_sh(
            "pg-srv1",
            &format!(
                "curl -s --max-time 5 --cacert {ca} --cert {cert} --key {key} https://{addr}:2379/version"
            ),
        );
        assert!(
            ok && out.contains("etcdserver"),
            "{vm} etcd with a client certificate: {out}"
        );
        let (ok, out) = try_sh(
            vm,
            &format!(
                "cd /opt/plumb/postgres01 && docker-compose exec -T etcd etcdctl --endpoints https://{addr}:2379 --cacert {ca} --cert {TLS_DIR}/{vm}.crt --key {TLS_DIR}/{vm}.key endpoint health"
            ),
        );
        assert!(
            ok && out.contains("is healthy"),
            "{vm} etcdctl with a certificate: {out}"
        );
        let (ok, out) = try_sh(
            vm,
            &format!(
                "cd /opt/plumb/postgres01 && docker-compose exec -T etcd etcdctl --dial-timeout 3s --command-timeout 5s --endpoints https://{addr}:2379 --cacert {ca} endpoint health"
            ),
        );
        assert!(
            !ok,
            "{vm} etcdctl without a client certificate succeeded: {out}"
        );

        // Patroni's REST API: HTTPS only; changes still need the basic auth.
        let (_, out) = try_sh(
            "pg-srv1",
            &format!("curl -s --max-time 5 http://{addr}:8008/health"),
        );
        assert!(
            !out.contains("\"state\""),
            "{vm} REST over plain HTTP: {out}"
        );
        let (ok, out) = try_sh(
            "pg-srv1",
            &format!("curl -sf --max-time 5 --cacert {ca} https://{addr}:8008/health"),
        );
        assert!(
            ok && out.contains("\"state\""),
            "{vm} REST over HTTPS: {out}"
        );
        let (_, code) = try_sh(
            "pg-srv1",
            &format!(
                "curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 --cacert {ca} -X POST https://{addr}:8008/restart -d '{{}}'"
            ),
        );
        assert_eq!(code.trim(), "401", "{vm} POST /restart without credentials");
    }

    // PostgreSQL: through HAProxy with verify-ca, TLS; without TLS, refused before any
    // password is asked for, through HAProxy and directly.
    let identity = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab/demo-age-key.txt");
    let store = plumb::secrets::SecretStore::open(&repo)
        .and_then(|s| s.with_identity(&identity))
        .expect("the reference repo's secrets");
    let password = store
        .get("postgres01_superuser_password")
        .expect("the superuser's password")
        .expose()
        .to_string();
    let (ok, out) = psql(
        &format!(
            "host={} port=5000 user=postgres dbname=postgres sslmode=verify-ca sslrootcert={ca}",
            addrs[1]
        ),
        &password,
        "select ssl, pg_is_in_recovery() from pg_stat_ssl where pid = pg_backend_pid()",
    );
    assert!(
        ok && out.trim() == "t|f",
        "verify-ca through HAProxy 5000: {out}"
    );
    let (ok, out) = psql(
        &format!(
            "host={} port=5001 user=postgres dbname=postgres sslmode=verify-ca sslrootcert={ca}",
            addrs[0]
        ),
        &password,
        "select ssl, pg_is_in_recovery() from pg_stat_ssl where pid = pg_backend_pid()",
    );
    assert!(
        ok && out.trim() == "t|t",
        "verify-ca through HAProxy 5001: {out}"
    );
    for target in [
        format!("host={} port=5000", addrs[0]),
        format!("host={} port=5432", addrs[2]),
    ] {
        let (ok, out) = psql(
            &format!("{target} user=postgres dbname=postgres sslmode=disable"),
            &password,
            "select 1",
        );
        assert!(
            !ok && out.contains("pg_hba.conf rejects connection") && out.contains("no encryption"),
            "{target} without TLS: {out}"
        );
    }
    // A CA that is not the cluster's: the client refuses the server.
    let (ok, out) = psql(
        &format!(
            "host={} port=5000 user=postgres dbname=postgres sslmode=verify-ca sslrootcert=/etc/ssl/certs/ca-certificates.crt",
            addrs[0]
        ),
        &password,
        "select 1",
    );
    assert!(
        !ok && out.contains("certificate verify failed"),
        "foreign CA: {out}"
    );

    // Replication runs over TLS: both replicas' walsenders on the leader use it.
    let leader_vm = members
        .iter()
        .find(|m| **m == leader)
        .copied()
        .unwrap_or("pg-srv1");
    let replication = |vm: &str| {
        sh(
            vm,
            "cd /opt/plumb/postgres01 && docker-compose exec -T patroni psql -h /home/postgres/postgres-data/unix -U postgres -Atc \"select count(*) filter (where s.ssl), count(*) from pg_stat_replication r join pg_stat_ssl s using (pid)\"",
        )
    };
    assert_eq!(
        replication(leader_vm).trim(),
        "2|2",
        "replication over TLS on {leader_vm}"
    );

    // Rotation: every certificate reissued now; etcd, Patroni and PostgreSQL serve the new
    // ones without a PostgreSQL restart, and the cluster stays healthy.
    let started_at = |vm: &str| {
        sh(
            vm,
            "cd /opt/plumb/postgres01 && docker-compose exec -T patroni psql -h /home/postgres/postgres-data/unix -U postgres -Atc 'select pg_postmaster_start_time()'",
        )
    };
    let before_start: Vec<String> = members.iter().map(|m| started_at(m)).collect();
    let client = format!("-cert {cert} -key {key}");
    let serials = |addr: &str| {
        [
            served_serial(addr, 2379, &client),
            served_serial(addr, 8008, ""),
            served_serial(addr, 5432, "-starttls postgres"),
        ]
    };
    let before: Vec<[String; 3]> = addrs.iter().map(|a| serials(a)).collect();
    let (code, out, err) = plumb_ref(&repo, &overlay, &["certs", "rotate"]);
    assert_eq!(code, 2, "{out}\n{err}");
    // Patroni applies its SIGHUP at its next loop (loop_wait, 10 s): a bounded wait until
    // every service serves a new certificate (asserted below, service by service).
    // A read that finds no certificate (Patroni restarts its REST listener to load the new
    // one) counts as "not yet"; the final read below must succeed everywhere.
    let try_serials = |addr: &str| -> Option<[String; 3]> {
        Some([
            try_served(addr, 2379, &client).ok()?.0,
            try_served(addr, 8008, "").ok()?.0,
            try_served(addr, 5432, "-starttls postgres").ok()?.0,
        ])
    };
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(1));
        let now: Option<Vec<[String; 3]>> = addrs.iter().map(|a| try_serials(a)).collect();
        let all_new = now.is_some_and(|now| {
            before
                .iter()
                .zip(&now)
                .all(|(b, a)| b.iter().zip(a).all(|(x, y)| x != y))
        });
        if all_new {
            break;
        }
    }
    let after: Vec<[String; 3]> = addrs.iter().map(|a| serials(a)).collect();
    for (i, vm) in members.iter().enumerate() {
        for (j, service) in ["etcd", "Patroni REST", "PostgreSQL"].iter().enumerate() {
            assert_ne!(
                before[i][j],
                after[i][j],
                "{vm}: {service} still serves the old certificate\n{}",
                stack_logs(vm)
            );
        }
    }
    let after_start: Vec<String> = members.iter().map(|m| started_at(m)).collect();
    assert_eq!(before_start, after_start, "a rotation restarted PostgreSQL");
    wait_for_healthy_cluster(&addrs[0], Duration::from_secs(120));
    pgbackrest_check();
    let (code, out, _) = plumb_ref(&repo, &overlay, &["converge"]);
    assert_eq!(code, 0, "nothing left to do after a rotation: {out}");

    // CA rotation in three phases, each converged on every host and checked before the next:
    // the new CA joins every bundle, every certificate moves to it, the old CA leaves. The lab
    // is left on the new CA (its key is in this test's temp copy only): the next converge of
    // the reference repo moves it back to pg-ca in one step, which other tests do not mind.
    let o = Command::new(plumb_bin())
        .args(["certs", "init-ca", "pg-ca-2", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    write(
        &repo,
        "manifests/pki-2.yaml",
        &String::from_utf8_lossy(&o.stdout),
    );
    let cluster_manifest = repo.join("manifests/postgres01.yaml");
    let cluster_text = std::fs::read_to_string(&cluster_manifest).unwrap();
    let backup_manifest = repo.join("manifests/backup.yaml");
    let backup_text = std::fs::read_to_string(&backup_manifest).unwrap();
    let old_ca_subject = sh("pg-srv1", &format!("openssl x509 -in {ca} -noout -subject"));
    for (phase, tls) in [
        "tls: { ca: pg-ca, trust: [pg-ca-2] }",
        "tls: { ca: pg-ca-2, trust: [pg-ca] }",
        "tls: { ca: pg-ca-2 }",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(
            &cluster_manifest,
            cluster_text.replace("tls: { ca: pg-ca, renew_before: 30d }", tls),
        )
        .unwrap();
        std::fs::write(
            &backup_manifest,
            backup_text.replace("tls: { ca: pg-ca }", tls),
        )
        .unwrap();
        let (code, out, err) = plumb_ref(&repo, &overlay, &["converge"]);
        assert_eq!(code, 2, "CA rotation phase {}: {out}\n{err}", phase + 1);
        let leader = wait_for_healthy_cluster(&addrs[0], Duration::from_secs(180));
        let (ok, out) = psql(
            &format!(
                "host={} port=5000 user=postgres dbname=postgres sslmode=verify-ca sslrootcert={ca}",
                addrs[2]
            ),
            &password,
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
        );
        assert!(
            ok && out.trim() == "t",
            "phase {}: psql through HAProxy: {out}",
            phase + 1
        );
        assert_eq!(replication(&leader).trim(), "2|2", "phase {}", phase + 1);
        pgbackrest_check();
        let bundle = sh("pg-srv1", &format!("grep -c 'BEGIN CERTIFICATE' {ca}"));
        assert_eq!(
            bundle.trim(),
            if phase == 2 { "1" } else { "2" },
            "phase {}",
            phase + 1
        );
        if phase >= 1 {
            for addr in &addrs {
                for (port, extra) in [
                    (2379, client.as_str()),
                    (8008, ""),
                    (5432, "-starttls postgres"),
                ] {
                    // Patroni applies a SIGHUP at its next loop (loop_wait, 10 s): bounded wait.
                    // A read that finds no certificate (a listener reloading) is retried.
                    let mut issuer = String::new();
                    for _ in 0..30 {
                        match try_served(addr, port, extra) {
                            Ok((_, now)) if now.contains("pg-ca-2") => {
                                issuer = now;
                                break;
                            }
                            Ok((_, now)) => issuer = now,
                            Err(out) => issuer = format!("nothing readable: {out}"),
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    assert!(
                        issuer.contains("pg-ca-2"),
                        "phase {}: {addr}:{port} serves a certificate of {issuer}",
                        phase + 1
                    );
                }
            }
        }
    }
    // The old CA is in no bundle any more, on any host.
    for vm in lab::vm_names() {
        let subjects = sh(
            &vm,
            "for f in /home/postgres/config/tls/ca.crt /home/postgres/pgbackrest/certs/ca.crt; do [ -f $f ] && openssl crl2pkcs7 -nocrl -certfile $f | openssl pkcs7 -print_certs -noout; done",
        );
        assert!(
            !subjects.contains(old_ca_subject.trim().trim_start_matches("subject=")),
            "{vm} still trusts the old CA: {subjects}"
        );
    }
    let (code, out, _) = plumb_ref(&repo, &overlay, &["converge"]);
    assert_eq!(code, 0, "nothing left to do after the CA rotation: {out}");
}
