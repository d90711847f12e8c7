//! examples/single-node (seed 000, "Hetzner RDS Postgres") on a lab of its own: one VM,
//! `rds-srv1`, with real PostgreSQL 15, Patroni, etcd and pgBackRest, the repository local on
//! the VM's "backup volume". The seed's three start scenarios, each from its own state:
//!
//! (a) fresh: one converge initializes the instance, creates the declared database and user
//!     (who logs in over TLS with the secret's password and writes), takes the first full
//!     backup into the local repository and installs the backup timers and the unit that
//!     starts the stack at boot; a second converge changes nothing;
//! (b) existing data: the VM reboots, the stack starts on its data by itself, and a converge
//!     after the password in the secret changed applies it (the old one stops working);
//! (c) a lost data volume with backups present: after a backup, more writes and their WAL
//!     archived, the data directory is removed; the next converge restores the newest backup
//!     and the archived WAL by itself (`restore_on_empty`), takes a new full backup, and every
//!     row written before the loss is back.
//!
//! The lab is `<PLUMB_LAB_NAME>-rds` (default `plumb-lab-rds`), brought up fresh and down
//! again: the shared lab's VMs are never touched. Needs a Docker engine; without one the test
//! fails (a skipped test must not count as passing).

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::example::Fixture;
use support::lab;

const VM: &str = "rds-srv1";
/// The example's compose project is the cluster's name: its Patroni container.
const CONTAINER: &str = "instance1_patroni_1";
/// The cluster's CA inside the container (`base_dir: /storage/data`).
const CA: &str = "/storage/data/config/tls/ca.crt";
const PGBACKREST: &str =
    "pgbackrest --config=/storage/data/pgbackrest/pgbackrest.conf --stanza=instance1";

/// Brings this test's lab down, whatever happens.
struct Down;
impl Drop for Down {
    fn drop(&mut self) {
        lab::down();
    }
}

fn sh(cmd: &str) -> (bool, String) {
    let out = lab::exec(VM, cmd);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// psql as the declared user over TLS (the CA checked, the address dialled) with `password`.
fn psql(password: &str, sql: &str) -> (bool, String) {
    sh(&format!(
        "docker exec -e PGPASSWORD='{password}' -e PGCONNECT_TIMEOUT=5 {CONTAINER} \
         timeout -k 5 30 psql 'host={} port=5432 dbname=instance1 user=instance1 \
         sslmode=verify-full sslrootcert={CA}' -v ON_ERROR_STOP=1 -Atc \"{sql}\"",
        lab::address(VM)
    ))
}

/// The last line of psql's output: the answer of the last statement (the ones before it print
/// their command tags).
fn answer(out: &str) -> &str {
    out.trim().lines().last().unwrap_or("").trim()
}

/// `pgbackrest info` of the instance's stanza, read in its container.
fn backups() -> Vec<Value> {
    let (ok, out) = sh(&format!(
        "docker exec {CONTAINER} {PGBACKREST} --output=json info"
    ));
    assert!(ok, "pgbackrest info: {out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v[0]["backup"].as_array().cloned().unwrap_or_default()
}

fn full_backups() -> usize {
    backups().iter().filter(|b| b["type"] == "full").count()
}

/// Waits (bounded) until `password` logs in and `sql` answers; returns the answer.
fn wait_for(password: &str, sql: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (ok, out) = psql(password, sql);
        if ok {
            return answer(&out).to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the instance did not answer within {within:?}: {out}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn the_single_node_example_holds_the_seeds_three_start_scenarios() {
    assert!(
        lab::docker_available(),
        "this test needs a Docker engine (the lab's VMs are containers)"
    );
    // A lab of its own, set before any lab call (this binary has one test, so nothing reads
    // the environment concurrently).
    let name = format!("{}-rds", lab::lab_name());
    unsafe {
        std::env::set_var("PLUMB_LAB_NAME", &name);
        std::env::set_var("PLUMB_LAB_VMS", VM);
    }
    let _lock = lab::lock();
    lab::down();
    lab::up();
    let _down = Down;
    let f = Fixture::new("examples/single-node", &lab::inventory_overlay());
    let (code, out, err) = f.plumb(&["validate"]);
    assert_eq!(code, 0, "{out}{err}");

    // (a) Fresh: initdb, the database and its user, the first full backup.
    let (code, cluster, out) = f.converge();
    assert_eq!(code, 2, "{out}");
    assert_eq!(cluster["status"], "healthy", "{cluster}");
    let changes = cluster["changes"].to_string();
    assert!(
        changes.contains("took the first full backup of instance1"),
        "{changes}"
    );
    assert!(changes.contains("instance1"), "{changes}");
    assert_eq!(full_backups(), 1, "{:?}", backups());
    let (ok, out) = sh("test -f /storage/backup/backup/instance1/backup.info && \
         test -f /storage/backup/archive/instance1/archive.info && \
         systemctl is-enabled instance1-stack.service && \
         systemctl is-active rds-backups-instance1-full.timer rds-backups-instance1-incr.timer");
    assert!(
        ok,
        "the local repository, the boot unit and the timers: {out}"
    );
    let pw1 = "first-Passw0rd";
    f.set_secret("instance1_password", pw1);
    let (code, _, out) = f.converge();
    assert_eq!(code, 2, "the first password set: {out}");
    let (ok, out) = psql(
        pw1,
        "CREATE TABLE pets (id serial PRIMARY KEY, name text NOT NULL); \
         INSERT INTO pets (name) SELECT 'before-' || g FROM generate_series(1, 100) g; \
         SELECT count(*) FROM pets",
    );
    assert!(
        ok && answer(&out) == "100",
        "the declared user writes: {out}"
    );
    let (code, cluster, out) = f.converge();
    assert_eq!(code, 0, "a second converge changes nothing: {out}");
    assert_eq!(cluster["status"], "healthy", "{cluster}");

    // (b) Existing data: the VM reboots, the stack starts at boot on its data; a new
    // password in the secret is applied by the next converge.
    lab::restart(VM);
    assert_eq!(
        wait_for(pw1, "SELECT count(*) FROM pets", Duration::from_secs(180)),
        "100"
    );
    let pw2 = "second-Passw0rd";
    f.set_secret("instance1_password", pw2);
    let (code, cluster, out) = f.converge();
    assert_eq!(code, 2, "{out}");
    assert!(
        cluster["changes"].to_string().contains("password changed"),
        "{cluster}"
    );
    assert!(
        !out.contains(pw1) && !out.contains(pw2),
        "a password in the report"
    );
    let (ok, _) = psql(pw1, "SELECT 1");
    assert!(!ok, "the old password still works");
    let (ok, out) = psql(pw2, "SELECT count(*) FROM pets");
    assert!(ok && answer(&out) == "100", "{out}");

    // (c) A lost data volume while the repository holds backups: an incremental backup,
    // more rows after it whose WAL is archived (`pgbackrest check` switches and waits), then
    // the data directory is gone.
    let (code, out, err) = f.plumb(&["pg", "backup", "--type", "incr"]);
    assert_eq!(code, 0, "{out}{err}");
    let (ok, out) = psql(
        pw2,
        "INSERT INTO pets (name) SELECT 'after-' || g FROM generate_series(1, 50) g; \
         SELECT count(*) FROM pets",
    );
    assert!(ok && answer(&out) == "150", "{out}");
    let (ok, out) = sh(&format!("docker exec {CONTAINER} {PGBACKREST} check"));
    assert!(ok, "pgbackrest check: {out}");
    let fulls = full_backups();
    let (ok, out) = sh("systemctl stop instance1-stack.service && \
         rm -rf /storage/data/postgres-data/data && test ! -e /storage/data/postgres-data/data");
    assert!(ok, "losing the data volume: {out}");
    let (code, cluster, out) = f.converge();
    assert_eq!(code, 2, "{out}");
    assert_eq!(cluster["status"], "healthy", "{cluster}");
    let changes = cluster["changes"].to_string();
    assert!(
        changes.contains("every data directory of instance1 was empty: restored"),
        "{changes}"
    );
    let (ok, out) = psql(
        pw2,
        "SELECT count(*) FILTER (WHERE name LIKE 'before-%') || ' ' || \
         count(*) FILTER (WHERE name LIKE 'after-%') FROM pets",
    );
    assert!(
        ok && answer(&out) == "100 50",
        "rows after the restore: {out}"
    );
    assert_eq!(
        full_backups(),
        fulls + 1,
        "a new full backup after the restore: {:?}",
        backups()
    );
    let (code, cluster, out) = f.converge();
    assert_eq!(
        code, 0,
        "a converge after the restore changes nothing: {out}"
    );
    assert_eq!(cluster["status"], "healthy", "{cluster}");
}
