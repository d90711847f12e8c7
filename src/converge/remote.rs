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
    pub fn resolve(&self, host: &Host) -> Result<route::Resolved, ConnectError> {
        let config = self
            .reach
            .config(&self.config_choice(host))
            .map_err(|source| ConnectError::Config {
                host: host.name.clone(),
                source,
            })?;
        let run = RunSettings {
            accept_new_host_keys: self.accept_new_host_keys,
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            default_known_hosts: self.default_known_hosts.clone(),
            env: self.reach.env().clone(),
        };
        route::resolve(&host.route_spec(), &config, &run).map_err(ConnectError::Route)
    }
}

/// Why a host cannot be reached: its SSH settings do not resolve, or the connection fails.
/// Each message is the one the operator has always seen; the cause stays attached as the
/// error's source.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The ssh_config files that apply to the host cannot be read.
    #[error("{host}: {source}")]
    Config {
        /// The host's inventory name.
        host: String,
        /// What is wrong with the file.
        #[source]
        source: crate::transport::ssh_config::SshConfigError,
    },
    /// The host's settings do not resolve into a route (a loop of jump hosts, a bad port...).
    #[error("{0}")]
    Route(#[source] route::RouteError),
    /// The connection, a bastion's or the host's, failed (boxed: it is large, and a host
    /// that connects carries none).
    #[error("{0}")]
    Transport(#[source] Box<transport::TransportError>),
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
    pub async fn connect(host: &Host, opts: &RemoteOptions) -> Result<Remote, ConnectError> {
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
            .map_err(|e| ConnectError::Transport(Box::new(e)))
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
    /// both. Returns the lock, still held by the shell that ran the script (later scripts go
    /// to that same shell through [`Lock::exchange`] and [`Lock::finish`]), and what the script
    /// printed.
    ///
    /// The lock is held by the process that does the work: it is released when that shell
    /// ends, never while an apply it runs is still going; if plumb dies, the apply script's
    /// watchdog stops the work, and the lock goes with it.
    pub async fn lock_and_run(
        &self,
        state_dir: &str,
        wait: Duration,
        script: &[u8],
        limit: Duration,
    ) -> Result<(Lock, Vec<u8>), String> {
        let dir = quote(state_dir);
        let secs = wait.as_secs().max(1);
        // A symlink in place of the state folder would send the lock, the state file and the
        // backups elsewhere: refused. The folder is created for this user alone.
        let cmd = format!(
            "if [ -L {dir} ]; then echo 'plumb: the state folder is a symlink' >&2; exit 78; fi; \
             {{ [ -d {dir} ] || mkdir -p -m 700 {dir}; }} && chmod 700 {dir} && exec flock -w {secs} -E 75 {dir}/lock sh -s"
        );
        let marker = end_marker();
        let mut input = Vec::with_capacity(script.len() + 64);
        input.extend_from_slice(script);
        input.extend_from_slice(format!("\nprintf '%s\\n' {marker}\n").as_bytes());
        let limit = wait + limit;
        match self {
            Remote::Ssh(c) => c
                .hold(&cmd, &input, &marker, limit)
                .await
                .map(|(held, out)| (Lock::Ssh(held), out))
                .map_err(|e| lock_error(e.to_string(), secs)),
            Remote::Local { .. } => hold_local(&cmd, &input, &marker, limit)
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

/// A random line that ends a turn of a held shell: a host user cannot print it ahead of time.
fn end_marker() -> String {
    format!("PLUMB_END_{}", crate::shell::random_hex(16))
}

/// A held host lock: the shell that took it, waiting for the next script.
pub enum Lock {
    /// Held by an SSH channel.
    Ssh(transport::Held),
    /// Held by a local `flock` process.
    Local(Box<LocalHeld>),
}

/// A local held shell: the child, its stdin, and its stdout read line by line.
pub struct LocalHeld {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Lock {
    /// Runs `script` in the held shell and returns what it printed (the shell stays held).
    pub async fn exchange(&mut self, script: &[u8], limit: Duration) -> Result<Vec<u8>, String> {
        let marker = end_marker();
        match self {
            Lock::Ssh(h) => h
                .exchange(script, &marker, limit)
                .await
                .map(|o| o.stdout)
                .map_err(|e| e.to_string()),
            Lock::Local(l) => {
                let mut input = script.to_vec();
                input.extend_from_slice(format!("\nprintf '%s\\n' {marker}\n").as_bytes());
                let turn = async {
                    l.stdin.write_all(&input).await.map_err(|e| e.to_string())?;
                    read_lines_until(&mut l.stdout, Some(&marker)).await
                };
                match tokio::time::timeout(limit, turn).await {
                    Ok(Ok((out, true))) => Ok(out),
                    Ok(Ok((_, false))) => {
                        Err("the held shell ended in the middle of a turn".into())
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(format!("the script did not finish within {limit:?}")),
                }
            }
        }
    }

    /// Runs the last `script` (it ends the shell, which releases the lock) and returns what it
    /// printed and its exit status. stdin stays open until the shell has ended: its end is what
    /// tells the script's watchdog that plumb went away.
    pub async fn finish(self, script: &[u8], limit: Duration) -> Result<ScriptOutput, String> {
        match self {
            Lock::Ssh(h) => {
                let out = h.finish(script, limit).await.map_err(|e| e.to_string())?;
                Ok(ScriptOutput {
                    stdout: out.stdout,
                    stderr: out.stderr,
                    status: out.status.unwrap_or(255),
                })
            }
            Lock::Local(mut l) => {
                let turn = async {
                    l.stdin.write_all(script).await.map_err(|e| e.to_string())?;
                    let (out, _) = read_lines_until(&mut l.stdout, None).await?;
                    let status = l.child.wait().await.map_err(|e| e.to_string())?;
                    Ok::<_, String>((out, status.code().map(|c| c as u32).unwrap_or(255)))
                };
                let r = tokio::time::timeout(limit, turn).await;
                let mut stderr = Vec::new();
                if let Some(mut e) = l.child.stderr.take() {
                    use tokio::io::AsyncReadExt as _;
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), e.read_to_end(&mut stderr))
                            .await;
                }
                let _ = l.child.kill().await;
                match r {
                    Ok(Ok((stdout, status))) => Ok(ScriptOutput {
                        stdout,
                        stderr,
                        status,
                    }),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(format!("the script did not finish within {limit:?}")),
                }
            }
        }
    }

    /// Releases the lock: EOF to the held shell, which then ends.
    pub async fn release(self) {
        match self {
            Lock::Ssh(h) => h.release().await,
            Lock::Local(l) => {
                let LocalHeld {
                    mut child, stdin, ..
                } = *l;
                drop(stdin);
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                let _ = child.kill().await;
            }
        }
    }
}

/// Reads lines until one equals `marker` (true) or the stream ends (false); the lines before,
/// each with its newline.
async fn read_lines_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    marker: Option<&str>,
) -> Result<(Vec<u8>, bool), String> {
    let mut before = Vec::new();
    loop {
        match lines.next_line().await {
            Ok(Some(l)) => {
                if Some(l.as_str()) == marker {
                    return Ok((before, true));
                }
                before.extend_from_slice(l.as_bytes());
                before.push(b'\n');
            }
            Ok(None) => return Ok((before, false)),
            Err(e) => return Err(e.to_string()),
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
    let mut child = tokio::process::Command::new("sh");
    child
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // A session of its own, as sshd gives each command: the apply watchdog stops every
    // process of "its session", never plumb's nor the operator's terminal.
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        child.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = child
        .spawn()
        .map_err(|e| format!("cannot start flock: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let waited = tokio::time::timeout(limit, async {
        // stdin stays open (it holds the lock) once the input is written.
        let write = stdin.write_all(input);
        let read = read_lines_until(&mut lines, Some(ready));
        tokio::join!(write, read)
    })
    .await;
    match waited {
        Ok((Ok(()), Ok((out, true)))) => Ok((
            Lock::Local(Box::new(LocalHeld {
                child,
                stdin,
                stdout: lines,
            })),
            out,
        )),
        Ok(_) => {
            let status = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
            Err(format!("exited with {status}"))
        }
        Err(_) => Err(format!("timed out after {limit:?}")),
    }
}

/// Connections of hosts whose job ended cleanly, kept for the cluster phase of the same run
/// (the members, the repository host) so that it does not connect to them again. Only a job
/// that ended parks its connection: a job the run's watchdog drops closes its connection,
/// which is what stops its apply on the host (`pl_watchdog`), and a parked connection has
/// nothing running on it. Whatever is still parked is closed when the run ends.
#[derive(Default)]
pub struct Parked(std::sync::Mutex<std::collections::BTreeMap<String, Remote>>);

impl Parked {
    /// Keeps `remote`, the connection to `host` (a local "connection" is not kept).
    pub fn park(&self, host: &str, remote: Remote) {
        if let Remote::Ssh(_) = remote
            && let Ok(mut m) = self.0.lock()
        {
            m.insert(host.to_string(), remote);
        }
    }

    /// The connection kept for `host`, if it is still open.
    pub fn take(&self, host: &str) -> Option<Remote> {
        let remote = self.0.lock().ok()?.remove(host)?;
        match &remote {
            Remote::Ssh(c) if c.is_closed() => None,
            _ => Some(remote),
        }
    }

    /// `take`, else a new connection.
    pub async fn take_or_connect(
        parked: Option<&Parked>,
        host: &Host,
        opts: &RemoteOptions,
    ) -> Result<Remote, ConnectError> {
        match parked.and_then(|p| p.take(&host.name)) {
            Some(r) => Ok(r),
            None => Remote::connect(host, opts).await,
        }
    }

    /// Closes every connection still kept.
    pub async fn close_all(&self) {
        let all: Vec<Remote> = match self.0.lock() {
            Ok(mut m) => std::mem::take(&mut *m).into_values().collect(),
            Err(_) => Vec::new(),
        };
        futures::future::join_all(all.into_iter().map(Remote::close)).await;
    }
}
