//! Secrets served by an external program the operator names on the controller
//! (`--secret-command PROGRAM`, or `PLUMB_SECRET_COMMAND`): a bridge to Vault, a cloud secret
//! manager or a password store, which plumb does not link.
//!
//! The program is never named by the repo: whoever can push to the repo would otherwise run
//! code on the controller (and `plumb serve` applies pushes by itself). The repo only lists
//! which secret names the program serves (`secrets/external.txt`); plumb runs
//! `PROGRAM NAME` — no shell, the name a validated word, stdin empty — and takes its standard
//! output as the value. The value is held in memory only: it is remembered for redaction, and
//! never logged, shown or written by plumb outside the rendered files that use it. The
//! program's standard error is discarded (it might echo a value); a failure is reported by its
//! exit status. Each call is bounded in time (killed with its process group when late) and in
//! output size.

use super::{SecretError, SecretSource, SecretValue, is_valid_name};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one call may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest value a call may print (bytes); more is an error, never a truncated secret.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// Environment variables of plumb's own that the program is not given.
const WITHHELD_ENV: &[&str] = &["PLUMB_WEBHOOK_SECRET"];

/// The operator's secret program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretCommand {
    program: PathBuf,
    timeout: Duration,
    max_output: usize,
}

impl SecretCommand {
    /// The program to run as `PROGRAM NAME`, with the default bounds.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        SecretCommand {
            program: program.into(),
            timeout: DEFAULT_TIMEOUT,
            max_output: MAX_OUTPUT,
        }
    }

    /// Another bound on the time of one call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Another bound on the size of one value.
    pub fn with_max_output(mut self, bytes: usize) -> Self {
        self.max_output = bytes;
        self
    }

    /// The program.
    pub fn program(&self) -> &Path {
        &self.program
    }

    fn fail(&self, name: &str, reason: impl Into<String>) -> SecretError {
        SecretError::Command {
            name: name.to_string(),
            program: self.program.display().to_string(),
            reason: reason.into(),
        }
    }
}

impl SecretSource for SecretCommand {
    fn describe(&self) -> String {
        format!("the secret command {}", self.program.display())
    }

    fn fetch(&self, name: &str) -> Result<SecretValue, SecretError> {
        if !is_valid_name(name) {
            return Err(SecretError::BadName(name.to_string()));
        }
        let mut cmd = Command::new(&self.program);
        cmd.arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group: a late call is killed with whatever it started.
            .process_group(0);
        for v in WITHHELD_ENV {
            cmd.env_remove(v);
        }
        let deadline = Instant::now() + self.timeout;
        // "Text file busy": a program just written is still open for writing in a process
        // forked meanwhile (until that one's exec); it passes, so try again within the bound.
        let mut child = loop {
            match cmd.spawn() {
                Ok(child) => break child,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(self.fail(name, format!("cannot be started: {e}"))),
            }
        };
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let limit = self.max_output as u64 + 1;
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let read = stdout.take(limit).read_to_end(&mut buf).map(|_| buf);
                let _ = tx.send(read);
            });
        }
        let kill = |child: &mut std::process::Child| {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) on the process group this call created; no memory involved.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        };
        let late = || {
            format!(
                "did not finish within {}s and was killed",
                self.timeout.as_secs_f64()
            )
        };
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    kill(&mut child);
                    return Err(self.fail(name, late()));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    kill(&mut child);
                    return Err(self.fail(name, format!("cannot be waited for: {e}")));
                }
            }
        };
        // Whatever it started may still hold its output open: that is late too.
        let left = deadline.saturating_duration_since(Instant::now());
        let out = match rx.recv_timeout(left) {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(self.fail(name, format!("its output cannot be read: {e}"))),
            Err(_) => {
                kill(&mut child);
                return Err(self.fail(name, late()));
            }
        };
        // First: a program stopped by the bound (SIGPIPE) failed because of its size.
        if out.len() > self.max_output {
            return Err(self.fail(name, format!("printed more than {} bytes", self.max_output)));
        }
        if !status.success() {
            return Err(self.fail(
                name,
                format!(
                    "failed ({status}; its output is not shown: it may hold secret material; run `{} {name}` by hand to see why)",
                    self.program.display()
                ),
            ));
        }
        let text = String::from_utf8(out)
            .map_err(|_| self.fail(name, "printed a value that is not UTF-8 text"))?;
        let text = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if text.is_empty() {
            return Err(self.fail(name, "printed an empty value"));
        }
        if text.contains('\0') {
            return Err(self.fail(name, "printed a value with a NUL byte"));
        }
        Ok(SecretValue::new(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A small secret program: serves two names, misbehaves on others as asked.
    fn script(dir: &Path) -> PathBuf {
        let p = dir.join("secret-program");
        std::fs::write(
            &p,
            "#!/bin/sh\n\
             case \"$1\" in\n\
             db_password) printf 'from-the-store-0123\\n' ;;\n\
             api_token) printf 'tok-\\r\\n' ; printf 'x' >&2 ;;\n\
             failing) echo 'leaked-on-stderr-9876' >&2 ; exit 3 ;;\n\
             slow) sleep 30 ; echo late ;;\n\
             forked) (sleep 30) & echo fast ;;\n\
             huge) head -c 70000 /dev/zero | tr '\\0' a ;;\n\
             empty) printf '' ;;\n\
             *) exit 1 ;;\n\
             esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn prints_the_value_without_the_trailing_newline_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let c = SecretCommand::new(script(dir.path()));
        let v = c.fetch("db_password").unwrap();
        assert_eq!(v.expose(), "from-the-store-0123");
        assert_eq!(format!("{v:?}"), "<sensitive>");
        // stderr is not part of the value; a CRLF ending is dropped too.
        let v = c.fetch("api_token").unwrap();
        assert_eq!(v.expose(), "tok-");
    }

    #[test]
    fn failures_are_clear_and_never_show_what_the_program_printed() {
        let dir = tempfile::tempdir().unwrap();
        let c = SecretCommand::new(script(dir.path())).with_timeout(Duration::from_secs(2));
        let e = c.fetch("failing").unwrap_err().to_string();
        assert!(e.contains("secret `failing`"), "{e}");
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(!e.contains("leaked-on-stderr"), "{e}");
        let e = c.fetch("huge").unwrap_err().to_string();
        assert!(e.contains("printed more than 65536 bytes"), "{e}");
        assert!(!e.contains("aaaa"), "{e}");
        let e = c.fetch("empty").unwrap_err().to_string();
        assert!(e.contains("printed an empty value"), "{e}");
        let e = SecretCommand::new(dir.path().join("missing"))
            .fetch("x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be started"), "{e}");
        assert!(matches!(c.fetch("../x"), Err(SecretError::BadName(_))));
    }

    #[test]
    fn a_late_program_is_killed_within_its_bound_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let c = SecretCommand::new(script(dir.path())).with_timeout(Duration::from_millis(500));
        for name in ["slow", "forked"] {
            let t0 = Instant::now();
            let e = c.fetch(name).unwrap_err().to_string();
            assert!(
                e.contains("did not finish within 0.5s and was killed"),
                "{name}: {e}"
            );
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "{name}: {:?}",
                t0.elapsed()
            );
        }
    }
}
