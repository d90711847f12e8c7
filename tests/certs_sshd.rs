//! `plumb certs status` and `plumb certs rotate` against OpenSSH's sshd on loopback: a CA made
//! by `plumb certs init-ca`, certificates issued by a converge, their expiry read back from the
//! hosts, a forced rotation, a renewal window that catches up, and an unreachable host.

mod support;

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::sshd::{ClientKey, Sshd};

struct Fleet {
    dir: tempfile::TempDir,
    identity: PathBuf,
    _sshds: Vec<Sshd>,
}

impl Fleet {
    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn root(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("host{i}"))
    }

    fn plumb(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::cargo_bin("plumb")
            .unwrap()
            .args(args)
            .arg(self.repo())
            .env("PLUMB_AGE_IDENTITY", &self.identity)
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

    fn certificates(&self, validity: &str, renew_before: &str) {
        let mut docs = vec![
            "kind: CertificateAuthority\nname: pg-ca\ncommon_name: test CA\ncertificate: pki/pg-ca.crt\nkey: { secret: pg-ca-key }\n".to_string(),
        ];
        for i in 0..self._sshds.len() {
            let root = self.root(i);
            docs.push(format!(
                "kind: Certificate\nname: tls-h{i}\nhosts: host:h{i}\nca: pg-ca\ncert_path: {r}/tls/server.crt\nkey_path: {r}/tls/server.key\nca_path: {r}/tls/ca.crt\nvalidity: {validity}\nrenew_before: {renew_before}\n",
                r = root.display()
            ));
        }
        write(&self.repo(), "manifests/tls.yaml", &docs.join("---\n"));
    }

    fn status_json(&self) -> (i32, serde_json::Value) {
        let (code, out, err) = self.plumb(&["certs", "status", "--output", "json"]);
        let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
        (code, v)
    }
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn fleet(hosts: usize, extra_inventory: &str) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let key = ClientKey::generate(dir.path(), "id_ed25519", "ed25519");
    let mut sshds = Vec::new();
    let mut known = String::new();
    let mut inv = String::new();
    for i in 0..hosts {
        let s = Sshd::start();
        s.authorize(&key.public_line);
        known.push_str(&s.known_hosts_line("ed25519"));
        known.push('\n');
        let root = dir.path().join(format!("host{i}"));
        inv.push_str(&format!(
            "  h{i}: {{ address: {}, ssh_port: {}, state_dir: {}/state }}\n",
            s.addr,
            s.port,
            root.display()
        ));
        sshds.push(s);
    }
    inv.push_str(extra_inventory);
    std::fs::write(dir.path().join("known_hosts"), known).unwrap();
    let repo = dir.path().join("repo");
    write(
        &repo,
        "inventory/hosts.yaml",
        &format!(
            "defaults:\n  ssh_user: root\n  ssh_key: {}\n  known_hosts: {}\nhosts:\n{inv}",
            key.private.display(),
            dir.path().join("known_hosts").display()
        ),
    );
    let id = age::x25519::Identity::generate();
    let identity = dir.path().join("age-key.txt");
    std::fs::write(&identity, format!("{}\n", id.to_string().expose_secret())).unwrap();
    write(
        &repo,
        "secrets/recipients.txt",
        &format!("{}\n", id.to_public()),
    );
    let f = Fleet {
        dir,
        identity,
        _sshds: sshds,
    };
    f.certificates("10d", "3d");
    let (code, out, err) = f.plumb(&["certs", "init-ca", "pg-ca", "--repo"]);
    assert_eq!(code, 0, "{out}\n{err}");
    f
}

use age::secrecy::ExposeSecret as _;

#[test]
fn status_reads_expiry_from_the_hosts_and_rotate_reissues() {
    let f = fleet(2, "");

    // Nothing issued yet: both missing, and the exit code says a converge would act.
    let (code, v) = f.status_json();
    assert_eq!(code, 2, "{v}");
    let certs = v["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2);
    assert!(certs.iter().all(|c| c["health"] == "missing"), "{v}");

    let (code, out, err) = f.plumb(&["converge"]);
    assert_eq!(code, 2, "{out}\n{err}");
    let (code, v) = f.status_json();
    assert_eq!(code, 0, "{v}");
    let serials: Vec<String> = v["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["health"], "ok", "{v}");
            // Issued for ten days a moment ago (within the same second, ten whole days).
            let days = c["days_left"].as_i64().unwrap();
            assert!((9..=10).contains(&days), "{v}");
            c["serial"].as_str().unwrap().to_string()
        })
        .collect();
    // What the host holds is what the status read.
    let on_disk = std::fs::read_to_string(f.root(0).join("tls/server.crt")).unwrap();
    assert_eq!(plumb::pki::inspect(&on_disk).unwrap().serial, serials[0]);

    // The human table names every host and certificate.
    let (code, out, _) = f.plumb(&["certs", "status"]);
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap().starts_with("HOST"), "{out}");
    assert!(out.contains("server.crt") && out.contains("ok"), "{out}");
    assert!(out.contains("  9  ") || out.contains("  10  "), "{out}");
    assert!(out.contains("2 certificates: 2 in order"), "{out}");

    // Rotation reissues now; a dry run only says it would.
    let (code, out, _) = f.plumb(&["certs", "rotate", "--dry-run", "--no-diff"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("rotation requested"), "{out}");
    assert_eq!(f.status_json().1["certificates"][0]["serial"], serials[0]);
    let (code, out, err) = f.plumb(&["certs", "rotate", "--limit", "host:h0"]);
    assert_eq!(code, 2, "{out}\n{err}");
    let (code, v) = f.status_json();
    assert_eq!(code, 0, "{v}");
    assert_ne!(
        v["certificates"][0]["serial"],
        serials[0].as_str(),
        "h0 rotated"
    );
    assert_eq!(
        v["certificates"][1]["serial"],
        serials[1].as_str(),
        "h1 untouched"
    );

    // A wider renewal window catches the certificates up: status says so, converge renews.
    f.certificates("30d", "20d");
    let (code, v) = f.status_json();
    assert_eq!(code, 2, "{v}");
    let reason = v["certificates"][1]["reason"].as_str().unwrap();
    assert!(
        reason.contains("expires in 9 days") || reason.contains("expires in 10 days"),
        "{reason}"
    );
    assert_eq!(f.plumb(&["converge"]).0, 2);
    let (code, v) = f.status_json();
    assert_eq!(code, 0, "{v}");
    let days = v["certificates"][1]["days_left"].as_i64().unwrap();
    assert!((29..=30).contains(&days), "{v}");
}

#[test]
fn an_unreachable_host_is_reported_and_fails_the_status() {
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let f = fleet(
        1,
        &format!("  gone: {{ address: 127.0.0.1, ssh_port: {port} }}\n"),
    );
    // The CA manifest's Certificate docs only cover h0; give `gone` one too.
    let text = std::fs::read_to_string(f.repo().join("manifests/tls.yaml")).unwrap();
    write(
        &f.repo(),
        "manifests/tls.yaml",
        &format!(
            "{text}---\nkind: Certificate\nname: tls-gone\nhosts: host:gone\nca: pg-ca\ncert_path: /nonexistent/plumb-test/server.crt\nkey_path: /nonexistent/plumb-test/server.key\n"
        ),
    );
    let (code, v) = f.status_json();
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["failed"][0]["host"], "gone", "{v}");
    assert_eq!(v["certificates"][0]["host"], "h0", "{v}");
}
