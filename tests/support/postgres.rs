//! A throwaway PostgreSQL 15 server (Debian's postgresql-15) for integration tests: `initdb`
//! into a temp dir with SCRAM authentication, listening on a free 127.0.0.1 port and on a unix
//! socket in that dir, every statement logged (`log_statement = 'all'`) to a file the test can
//! read. Run as the `postgres` system user when the tests run as root (PostgreSQL refuses
//! root). Stopped on drop (fast shutdown, then SIGKILL).
//!
//! Also the process helpers the Patroni support shares: spawn as another user, die with the
//! test thread, wait for a log line with a bound.
#![allow(dead_code)] // each test binary uses a different part of it

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's PostgreSQL 15 binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// How long a server may take to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The superuser's password of every test server (SCRAM; never used outside loopback).
pub const SUPERUSER: &str = "postgres";

/// uid and gid of the account servers run as: `postgres` when we are root, else ourselves.
pub fn service_account() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "no `postgres` user: install postgresql-15 (apt-get install -y postgresql-15)"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    Some((id("-u"), id("-g")))
}

/// A temp dir the service account owns (0700).
pub fn service_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temp dir");
    chown(dir.path());
    dir
}

/// Gives `path` to the service account (when we are root).
pub fn chown(path: &Path) {
    if let Some((uid, gid)) = service_account() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
    }
}

/// A command run as the service account, getting SIGTERM when the spawning thread exits (so
/// a killed test run leaves no server behind).
pub fn service_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new(program);
    if let Some((uid, gid)) = service_account() {
        command.uid(uid).gid(gid).env("HOME", "/var/lib/postgresql");
    }
    // SAFETY: prctl is async-signal-safe and touches no Rust state; it runs after setuid, so
    // the setting survives the credential change.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// Sends `signal`, waits up to `grace` for the exit, then SIGKILLs; always reaps.
pub fn stop(child: &mut Child, signal: i32, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(pid, signal);
        }
    }
    let started = Instant::now();
    while started.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits (bounded) until `ready()` holds; panics with `context()` if the child exits or the
/// bound passes.
pub fn wait_until(
    child: &mut Child,
    what: &str,
    bound: Duration,
    mut ready: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let started = Instant::now();
    loop {
        if ready() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status}:\n{}", context());
        }
        assert!(
            started.elapsed() < bound,
            "{what} not ready after {bound:?}:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running PostgreSQL 15.
pub struct Postgres {
    dir: tempfile::TempDir,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The superuser's password.
    pub password: String,
    child: Child,
}

impl Postgres {
    /// `initdb` and start, with every statement logged.
    pub fn start() -> Postgres {
        assert!(
            Path::new(PG_BIN).join("postgres").exists(),
            "{PG_BIN}/postgres is missing: apt-get install -y postgresql-15"
        );
        let dir = service_dir("plumb-pg-");
        let password = format!("super-{}-pw", std::process::id());
        let pwfile = dir.path().join("pwfile");
        fs::write(&pwfile, &password).expect("write pwfile");
        chown(&pwfile);
        let out = service_command(Path::new(PG_BIN).join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", SUPERUSER, "--auth=scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = fs::remove_file(&pwfile);

        let mut last = String::new();
        for _attempt in 0..5 {
            let port = super::sshd::free_port("127.0.0.1".parse().expect("ip"));
            let log_path = dir.path().join("postgres.log");
            let log = fs::File::create(&log_path).expect("create log");
            let mut child = service_command(Path::new(PG_BIN).join("postgres"))
                .arg("-D")
                .arg(dir.path().join("data"))
                .args(["-c", &format!("port={port}")])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args([
                    "-c",
                    &format!("unix_socket_directories={}", dir.path().display()),
                ])
                .args(["-c", "log_statement=all"])
                .args(["-c", "log_min_duration_statement=0"])
                .args(["-c", "log_connections=on"])
                .args(["-c", "fsync=off"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn postgres");
            let started = Instant::now();
            let outcome = loop {
                let text = fs::read_to_string(&log_path).unwrap_or_default();
                if text.contains("database system is ready to accept connections") {
                    break Ok(());
                }
                if let Ok(Some(status)) = child.try_wait() {
                    break Err(format!("postgres exited with {status}:\n{text}"));
                }
                if started.elapsed() > STARTUP_TIMEOUT {
                    break Err(format!(
                        "postgres not ready after {STARTUP_TIMEOUT:?}:\n{text}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            match outcome {
                Ok(()) => {
                    return Postgres {
                        dir,
                        port,
                        password,
                        child,
                    };
                }
                Err(log) => {
                    stop(&mut child, libc::SIGINT, Duration::from_secs(5));
                    // The port may have been taken between free_port() and the bind.
                    if !log.contains("Address already in use") {
                        panic!("{log}");
                    }
                    last = log;
                }
            }
        }
        panic!("postgres did not start:\n{last}");
    }

    /// The unix socket path (`<dir>/.s.PGSQL.<port>`).
    pub fn socket_path(&self) -> String {
        format!("{}/.s.PGSQL.{}", self.dir.path().display(), self.port)
    }

    /// The server log so far (every statement, every connection).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// The temp dir.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: it does not wait for clients to leave.
        stop(&mut self.child, libc::SIGINT, Duration::from_secs(10));
    }
}
