//! A throwaway Patroni cluster for integration tests: one etcd (Debian's etcd-server, v3 API
//! with the gRPC gateway Patroni's etcd3 client uses) and N Patroni members (Debian's patroni
//! 3.0.2) running PostgreSQL 15, all on free 127.0.0.1 ports in one temp dir, run as the
//! `postgres` system user when the tests run as root. The first member bootstraps and leads,
//! the others are created as replicas (pg_basebackup) one after the other. Everything is
//! stopped on drop; every wait is bounded.
#![allow(dead_code)] // each test binary uses a different part of it

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::postgres::{PG_BIN, chown, service_command, service_dir, stop, tail, wait_until};
use super::sshd::free_port;

/// Patroni's cluster (scope) name in the tests.
pub const SCOPE: &str = "plumbtest";
/// The REST API user.
pub const REST_USER: &str = "patroni";

/// How long a member may take to bootstrap or to be cloned.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(90);

/// One Patroni member.
pub struct Member {
    /// Patroni name (`m1`, `m2`, ...).
    pub name: String,
    /// REST API port on 127.0.0.1.
    pub rest_port: u16,
    /// PostgreSQL port on 127.0.0.1.
    pub pg_port: u16,
    log: PathBuf,
    child: Child,
}

impl Member {
    /// Patroni's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// etcd plus Patroni members.
pub struct PatroniCluster {
    /// Members, in start order (the first bootstraps).
    pub members: Vec<Member>,
    /// etcd's client port on 127.0.0.1.
    pub etcd_port: u16,
    /// The REST API password.
    pub rest_password: String,
    /// The PostgreSQL superuser's password.
    pub superuser_password: String,
    etcd: Child,
    dir: tempfile::TempDir,
}

/// `GET path` over plain HTTP/1.0 on 127.0.0.1 (the fixture's own readiness checks, not the
/// code under test): the status code and body, or `None` if nothing answered.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

impl PatroniCluster {
    /// Starts etcd and `members` Patroni members; returns once every member's `/health`
    /// answers 200 (PostgreSQL running) and the first is the leader.
    pub fn start(members: usize) -> PatroniCluster {
        for (path, package) in [
            ("/usr/bin/patroni", "patroni"),
            ("/usr/bin/etcd", "etcd-server"),
        ] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: apt-get install -y {package}"
            );
        }
        assert!(
            Path::new(PG_BIN).join("postgres").exists(),
            "{PG_BIN}/postgres is missing: apt-get install -y postgresql-15"
        );
        let dir = service_dir("plumb-patroni-");
        let etcd_port = free_port("127.0.0.1".parse().expect("ip"));
        let peer_port = free_port("127.0.0.1".parse().expect("ip"));
        let etcd_log = dir.path().join("etcd.log");
        let mut etcd = service_command("/usr/bin/etcd")
            .args(["--name", "e1", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-cluster",
                &format!("e1=http://127.0.0.1:{peer_port}"),
                "--enable-v2=false",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(&etcd_log).expect("etcd log")))
            .spawn()
            .expect("spawn etcd");
        wait_until(
            &mut etcd,
            "etcd",
            Duration::from_secs(30),
            || http_get(etcd_port, "/health").is_some_and(|(s, b)| s == 200 && b.contains("true")),
            || tail(&etcd_log, 30),
        );

        let mut cluster = PatroniCluster {
            members: Vec::new(),
            etcd_port,
            rest_password: format!("rest-{}-pw", std::process::id()),
            superuser_password: format!("super-{}-pw", std::process::id()),
            etcd,
            dir,
        };
        for i in 1..=members {
            cluster.start_member(&format!("m{i}"));
        }
        cluster
    }

    fn start_member(&mut self, name: &str) {
        let home = self.dir.path().join(name);
        fs::create_dir(&home).expect("member dir");
        chown(&home);
        let rest_port = free_port("127.0.0.1".parse().expect("ip"));
        let pg_port = free_port("127.0.0.1".parse().expect("ip"));
        let config = format!(
            r#"scope: {SCOPE}
name: {name}
restapi:
  listen: 127.0.0.1:{rest_port}
  connect_address: 127.0.0.1:{rest_port}
  authentication:
    username: {REST_USER}
    password: "{rest_password}"
etcd3:
  hosts: ["127.0.0.1:{etcd_port}"]
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: false
      use_slots: true
      parameters:
        max_connections: 100
  initdb:
    - encoding: UTF8
    - locale: C
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 scram-sha-256
    - host replication replicator 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {home}/data
  bin_dir: {PG_BIN}
  pgpass: {home}/pgpass
  use_unix_socket: false
  authentication:
    superuser:
      username: postgres
      password: "{superuser_password}"
    replication:
      username: replicator
      password: "replicator-pw"
  parameters:
    unix_socket_directories: "{home}"
    fsync: "off"
    log_statement: all
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 scram-sha-256
    - host replication replicator 127.0.0.1/32 scram-sha-256
"#,
            rest_password = self.rest_password,
            etcd_port = self.etcd_port,
            superuser_password = self.superuser_password,
            home = home.display(),
        );
        let config_path = home.join("patroni.yml");
        fs::write(&config_path, config).expect("write patroni.yml");
        chown(&config_path);
        let log = home.join("patroni.log");
        let mut child = service_command("/usr/bin/patroni")
            .arg(&config_path)
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(Stdio::from(fs::File::create(&log).expect("patroni log")))
            .stderr(Stdio::from(
                fs::OpenOptions::new()
                    .append(true)
                    .open(&log)
                    .expect("patroni log"),
            ))
            .spawn()
            .expect("spawn patroni");
        let what = format!("Patroni member {name}");
        wait_until(
            &mut child,
            &what,
            MEMBER_TIMEOUT,
            || http_get(rest_port, "/health").is_some_and(|(s, _)| s == 200),
            || tail(&log, 40),
        );
        self.members.push(Member {
            name: name.to_string(),
            rest_port,
            pg_port,
            log,
            child,
        });
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> &Member {
        self.members
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    /// Every member's log, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {}\n{}\n", m.name, tail(&m.log, 40)))
            .collect()
    }
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        // Replicas first, then the leader: Patroni stops its PostgreSQL on SIGTERM (fast
        // shutdown) before it exits.
        for member in self.members.iter_mut().rev() {
            stop(&mut member.child, libc::SIGTERM, Duration::from_secs(20));
        }
        // A Patroni killed by the bound leaves its postmaster: stop those too.
        for member in &self.members {
            let pid_file = self
                .dir
                .path()
                .join(&member.name)
                .join("data/postmaster.pid");
            if let Some(pid) = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
                && fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "postgres")
            {
                // SAFETY: kill(2); the pid is the postmaster this fixture's Patroni started.
                unsafe {
                    libc::kill(pid, libc::SIGINT);
                }
            }
        }
        stop(&mut self.etcd, libc::SIGTERM, Duration::from_secs(5));
    }
}
