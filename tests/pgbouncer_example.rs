//! `examples/pgbouncer` (seed 003): the HA cluster with PgBouncer in front. It loads and
//! renders with the demo identity; the desired state of a member is a snapshot (sensitive
//! contents redacted), so a change of the PgBouncer expansion reads as a diff; the userlist
//! holds the declared user's password and is never shown; compose accepts every stack.
//! The lab end-to-end test (writes through PgBouncer across a failover) is tests/e2e_pgbouncer.rs.

use plumb::load::{LoadOptions, load};
use plumb::render::render_all;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example() -> plumb::load::Repo {
    load(&LoadOptions {
        root: root().join("examples/pgbouncer"),
        identity: Some(root().join("examples/lab/demo-age-key.txt")),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("examples/pgbouncer does not load:\n{e}"))
}

#[test]
fn a_member_renders_pgbouncer_in_front_of_haproxy() {
    let repo = example();
    let hosts = render_all(&repo).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hosts.len(), 3);
    let app = repo.secret("app_password").unwrap();
    for h in &hosts {
        let yaml = yaml_serde::to_string(h).unwrap();
        assert!(yaml.contains("* = host=127.0.0.1 port=5000"), "{yaml}");
        assert!(yaml.contains("command: [\"pgbouncer\""), "{yaml}");
        assert!(
            !yaml.contains(app.expose()),
            "a password in the render of {}",
            h.host
        );
        let userlist = h
            .resources
            .iter()
            .find(|d| d.name == "/home/postgres/config/pgbouncer-userlist.txt")
            .expect("the userlist");
        assert!(userlist.is_sensitive());
        if h.host == "pg-srv1" {
            insta::assert_snapshot!("pgbouncer_desired_pg-srv1", yaml);
        }
    }
}

#[test]
fn docker_compose_accepts_every_stack_with_pgbouncer() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rendered");
    let o = assert_cmd::Command::cargo_bin("plumb")
        .unwrap()
        .arg("render")
        .arg(root().join("examples/pgbouncer"))
        .arg("--age-identity")
        .arg(root().join("examples/lab/demo-age-key.txt"))
        .arg("--out")
        .arg(&out)
        .env_remove("PLUMB_INVENTORY")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for host in ["pg-srv1", "pg-srv2", "pg-srv3"] {
        let stack = out.join(host).join("opt/plumb/postgres01");
        let o = Command::new("docker-compose")
            .current_dir(&stack)
            .args(["-f", "docker-compose.yml", "config", "--services"])
            .env_remove("COMPOSE_PROJECT_NAME")
            .output()
            .expect("docker-compose (Debian package docker-compose)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            o.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let services = String::from_utf8_lossy(&o.stdout);
        let mut names: Vec<&str> = services.lines().collect();
        names.sort();
        assert_eq!(names, ["etcd", "haproxy", "patroni", "pgbouncer"], "{host}");
        let users = std::fs::read_to_string(
            out.join(host)
                .join("home/postgres/config/pgbouncer-userlist.txt"),
        )
        .unwrap();
        assert_eq!(
            users.lines().filter(|l| l.starts_with('"')).count(),
            1,
            "only app"
        );
        assert!(users.contains("\"app\" \""), "{users}");
    }
}
