//! Where scripts run: a host over SSH, or this machine itself (`plumb pull --local`). Both run
//! the same POSIX sh scripts and take the same host lock.

use crate::model::inventory::Host;
use crate::shell::quote;
use crate::transport::route::{self, ConfigChoice, Reach, RunSettings};
use crate::transport::{self, Connection};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Connection settings shared by all hosts of a run.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Run on this machine instead of over SSH.
    pub local: bool,
    /// Trust unknown host keys on first use (changed keys are still refused).
    pub accept_new_host_keys: bool,
    /// TCP + handshake + authentication.
    pub connect_timeout: Duration,
    /// One command.
    pub command_timeout: Duration,
    /// known_hosts used when neither the inventory nor ssh_config names one.
    pub default_known_hosts: Option<PathBuf>,
    /// `--ssh-config FILE`: the OpenSSH client configuration to read instead of the
    /// inventory's `ssh_config`, or `~/.ssh/config` and `/etc/ssh/ssh_config` (`none`: none).
    pub ssh_config: Option<PathBuf>,
    /// What the hosts of a run share: ssh_config read once, one session per bastion. Clones
    /// share it; each run starts from a new one (`HostArgs::options` makes one per run).
    pub reach: Arc<Reach>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            local: false,
            accept_new_host_keys: false,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(900),
            default_known_hosts: None,
            ssh_config: None,
            reach: Arc::new(Reach::default()),
        }
    }
}

impl RemoteOptions {
    /// Which ssh_config files apply to `host`: `--ssh-config`, else the inventory's
    /// `ssh_config`, else the operator's own.
    pub fn config_choice(&self, host: &Host) -> ConfigChoice {
        match (&self.ssh_config, &host.ssh.ssh_config) {
            (Some(p), _) | (None, Some((p, _))) => ConfigChoice::from_path(p),
            (None, None) => ConfigChoice::Default,
        }
    }

    /// Resolves how to reach `host` (inventory, then ssh_config, then defaults), with where
    /// each setting came from.
    pub fn resolve(&self, host: &Host) -> Result<route::Resolved, String> {
        let config = self
            .reach
            .config(&self.config_choice(host))
            .map_err(|e| format!("{}: {e}", host.name))?;
        let run = RunSettings {
            accept_new_host_keys: self.accept_new_host_keys,
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            default_known_hosts: self.default_known_hosts.clone(),
            env: self.reach.env().clone(),
        };
        route::resolve(&host.route_spec(), &config, &run).map_err(|e| e.to_string())
    }
}

/// What a script printed.
pub struct ScriptOutput {
    /// stdout.
    pub stdout: Vec<u8>,
    /// stderr.
    pub stderr: Vec<u8>,
    /// Exit status.
    pub status: u32,
}

/// A place to run scripts.
pub enum Remote {
    /// A host over SSH.
    Ssh(Box<Connection>),
    /// This machine.
    Local {
        /// Bound on one script.
        timeout: Duration,
    },
}

impl Remote {
    /// Connects to a host (or prepares to run locally).
    pub async fn connect(host: &Host, opts: &RemoteOptions) -> Result<Remote, String> {
        if opts.local {
            return Ok(Remote::Local {
                timeout: opts.command_timeout,
            });
        }
        // The inventory's settings, then ssh_config, then defaults; bastions shared by the run.
        let resolved = opts.resolve(host)?;
        opts.reach
            .bastions
            .connect(&resolved.route())
            .await
            .map(|c| Remote::Ssh(Box::new(c)))
            .map_err(|e| e.to_string())
    }

    /// Runs a POSIX sh script.
    pub async fn run(&self, script: &[u8]) -> Result<ScriptOutput, String> {
        match self {
            Remote::Ssh(c) => c
                .run_script(script)
                .await
                .map(|o| ScriptOutput {
                    stdout: o.stdout,
                    stderr: o.stderr,
                    status: o.status,
                })
                .map_err(|e| e.to_string()),
            Remote::Local { timeout } => run_local(script, *timeout).await,
        }
    }

    /// Takes the host lock, waiting up to `wait` for another run to finish (then fails naming
    /// it), and runs `script` under it on the same channel, at most `limit`: one command for
    /// both. Returns the lock and what the script printed. The script must end by printing
    /// [`LOCKED_SCRIPT_END`] on a line of its own.
    ///
    /// The lock lives as long as the returned guard's session; if plumb dies, the connection
    /// drops and the host releases it by itself.
    pub async fn lock_and_run(
        &self,
        state_dir: &str,
        wait: Duration,
        script: &[u8],
        limit: Duration,
    ) -> Result<(Lock, Vec<u8>), String> {
        let dir = quote(state_dir);
        let secs = wait.as_secs().max(1);
        // The shell reads the script, prints its records, then `cat` holds the lock until
        // plumb closes stdin (or the connection drops).
        let cmd = format!(
            "{{ [ -d {dir} ] || mkdir -p {dir}; }} && chmod 700 {dir} && exec flock -w {secs} -E 75 {dir}/lock sh -s"
        );
        let mut input = Vec::with_capacity(script.len() + 64);
        input.extend_from_slice(script);
        input.extend_from_slice(
            format!("\nprintf '%s\\n' {LOCKED_SCRIPT_END}\nexec cat >/dev/null\n").as_bytes(),
        );
        let limit = wait + limit;
        match self {
            Remote::Ssh(c) => c
                .hold(&cmd, &input, LOCKED_SCRIPT_END, limit)
                .await
                .map(|(held, out)| (Lock::Ssh(held), out))
                .map_err(|e| lock_error(e.to_string(), secs)),
            Remote::Local { .. } => hold_local(&cmd, &input, LOCKED_SCRIPT_END, limit)
                .await
                .map_err(|e| lock_error(e, secs)),
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        if let Remote::Ssh(c) = self {
            (*c).close().await;
        }
    }
}

fn lock_error(e: String, secs: u64) -> String {
    if e.contains("another plumb run holds the lock")
        || e.contains("exit status 75")
        || e.contains("exited with 75")
    {
        format!(
            "another plumb run holds this host's lock; waited {secs}s. Try again when it has finished (the lock is released when that run's connection ends)"
        )
    } else {
        format!("cannot take the host lock: {e}")
    }
}

/// The line a script run under the lock ends with.
pub const LOCKED_SCRIPT_END: &str = "PLUMB_LOCKED_SCRIPT_END";

/// A held host lock.
pub enum Lock {
    /// Held by an SSH channel.
    Ssh(transport::Held),
    /// Held by a local `flock` process.
    Local(tokio::process::Child),
}

impl Lock {
    /// Releases the lock.
    pub async fn release(self) {
        match self {
            Lock::Ssh(h) => h.release().await,
            Lock::Local(mut child) => {
                drop(child.stdin.take());
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                let _ = child.kill().await;
            }
        }
    }
}

async fn run_local(script: &[u8], limit: Duration) -> Result<ScriptOutput, String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-s")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start sh: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let script = script.to_vec();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&script).await;
        drop(stdin);
    });
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| format!("the script did not finish within {limit:?}"))?
        .map_err(|e| e.to_string())?;
    let _ = writer.await;
    Ok(ScriptOutput {
        stdout: out.stdout,
        stderr: out.stderr,
        status: out.status.code().map(|c| c as u32).unwrap_or(255),
    })
}

async fn hold_local(
    cmd: &str,
    input: &[u8],
    ready: &str,
    limit: Duration,
) -> Result<(Lock, Vec<u8>), String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start flock: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let input = input.to_vec();
    let waited = tokio::time::timeout(limit, async {
        // stdin stays open (it holds the lock) once the input is written.
        let write = async {
            let r = stdin.write_all(&input).await;
            (stdin, r)
        };
        let read = async {
            let mut lines = BufReader::new(stdout).lines();
            let mut before = Vec::new();
            while let Ok(Some(l)) = lines.next_line().await {
                if l.trim() == ready {
                    return Some(before);
                }
                before.extend_from_slice(l.as_bytes());
                before.push(b'\n');
            }
            None
        };
        tokio::join!(write, read)
    })
    .await;
    match waited {
        Ok(((stdin, Ok(())), Some(out))) => {
            child.stdin = Some(stdin);
            Ok((Lock::Local(child), out))
        }
        Ok(_) => {
            let status = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
            Err(format!("exited with {status}"))
        }
        Err(_) => Err(format!("timed out after {limit:?}")),
    }
}
