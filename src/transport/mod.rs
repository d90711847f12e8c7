//! SSH transport: one authenticated SSH connection per host, used by the
//! probe and apply stages to run POSIX sh scripts on VMs.
//!
//! plumb is agentless: all it needs on a VM is sshd, `sh` and coreutils. A
//! no-op converge costs one SSH handshake plus one command round trip per
//! host (DESIGN.md §11), so this module is built for few round trips and
//! little CPU per connection:
//!
//! - our own [`tokio::net::TcpStream`] with `TCP_NODELAY` (Nagle would add
//!   ~40 ms to each round trip) handed to [`russh::client::connect_stream`];
//! - `curve25519-sha256` key exchange first (OpenSSH 9.2's default
//!   sntrup761x25519 costs ~60 ms of CPU per handshake), the rest kept as
//!   fallbacks; ed25519 host keys first, except that key types the
//!   known_hosts file records for the host go first so the host offers a
//!   key we can verify;
//! - a script runs as `exec sh -s` with the script on stdin: the exec
//!   request and the script are pipelined, so a command is the channel open
//!   plus one exchange.
//!
//! Host keys are checked against known_hosts files ([`HostKeyPolicy`]):
//! unknown and changed keys are refused with their fingerprint, and
//! trust-on-first-use happens only when asked for; `@cert-authority` lines
//! verify OpenSSH host certificates. Authentication uses key files, ssh-agent
//! and OpenSSH user certificates ([`Identity`]). Non-root users get `sudo -n`
//! ([`Privilege`]).
//!
//! Hosts behind bastions are reached through `direct-tcpip` channels of one
//! session per bastion ([`Connection::open_through`], [`jump::Bastions`]);
//! operators' OpenSSH client configuration is read by [`ssh_config`] and
//! turned into routes by [`route`].
//!
//! Every wait is bounded: [`ConnectOptions::connect_timeout`] covers TCP,
//! handshake and authentication, [`ConnectOptions::command_timeout`] covers
//! one command from channel open to exit status.

// Every public item of the transport is documented; keep it that way.
#![warn(missing_docs)]

mod auth;
mod error;
mod hold;
pub mod jump;
mod known_hosts;
pub mod route;
pub mod ssh_config;
mod tunnel;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{Config, Handle};
use russh::keys::PublicKeyOrCertificate;
use russh::keys::ssh_key::{Algorithm, Certificate, HashAlg, PublicKey};
use russh::{ChannelMsg, Preferred, Sig, kex};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout, timeout_at};

pub use error::{ConnectStage, TransportError};
pub use hold::{Held, HeldOutput};
pub use tunnel::{DEFAULT_TUNNEL_TIMEOUT, Destination, Tunnel, TunnelError};

/// Checks a host key in SSH wire format (as libgit2 hands it over when `plumb pull` fetches
/// over SSH) against a known_hosts file, with the same rules as plumb's own connections:
/// unknown, changed and revoked keys are refused, with the fingerprint in the message.
pub fn check_host_key_blob(
    known_hosts: &std::path::Path,
    address: &str,
    port: u16,
    blob: &[u8],
) -> Result<(), String> {
    let key = PublicKey::from_bytes(blob).map_err(|e| format!("unreadable host key: {e}"))?;
    let fingerprint = key.fingerprint(HashAlg::Sha256);
    let known = KnownHosts::load(known_hosts)
        .map_err(|e| format!("cannot read {}: {e}", known_hosts.display()))?;
    let name = host_pattern(address, port);
    match known.check(&name, &key) {
        Verdict::Trusted => Ok(()),
        Verdict::Unknown => Err(format!(
            "the host key of {name} ({fingerprint}) is not in {}; check it and add it (ssh-keyscan {address} >> {})",
            known_hosts.display(),
            known_hosts.display()
        )),
        Verdict::Changed { file, line, .. } => Err(format!(
            "the host key of {name} CHANGED ({fingerprint}); {}:{line} records another one. Refusing",
            file.display()
        )),
        Verdict::Revoked { file, line } => Err(format!(
            "the host key of {name} ({fingerprint}) is revoked at {}:{line}",
            file.display()
        )),
    }
}
use known_hosts::{CertVerdict, KnownHosts, Verdict, host_pattern};

/// Output limit per stream used by [`ConnectOptions::new`]: large enough for
/// any probe record or file fetched for a diff, small enough that a runaway
/// command cannot take the controller's memory with it.
pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024 * 1024;

/// How many commands may run at once on one connection. OpenSSH's sshd
/// allows 10 sessions per connection (`MaxSessions`); staying below it means
/// parallel callers queue here instead of getting a channel-open failure.
const MAX_PARALLEL_CHANNELS: usize = 8;

/// Stdin is handed to russh in pieces of this size: it splits them into
/// packets that fit the channel window, and we never copy the whole script.
const STDIN_CHUNK: usize = 64 * 1024;

/// Where to reach a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Inventory name of the host; used in messages only.
    pub host: String,
    /// IP address or DNS name to dial; also the name looked up in
    /// known_hosts (as `[address]:port` when the port is not 22).
    pub address: String,
    /// TCP port of sshd.
    pub port: u16,
    /// Remote user to log in as.
    pub user: String,
}

impl Endpoint {
    /// `pg-srv1 (10.0.0.5:22)`, or just `10.0.0.5:22` when the inventory
    /// name is the address: how errors and logs name the host.
    pub fn describe(&self) -> String {
        let address = if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        };
        if self.host.is_empty() || self.host == self.address {
            address
        } else {
            format!("{} ({address})", self.host)
        }
    }
}

/// Which private key proves who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An unencrypted private key file (OpenSSH, PEM or PKCS#8; ed25519,
    /// ECDSA or RSA). Encrypted keys are refused with advice to use the
    /// agent: plumb runs unattended and never prompts. A `KEY-cert.pub`
    /// beside it is offered first (an OpenSSH user certificate).
    File(PathBuf),
    /// Like `File`, but skipped when the file does not exist: ssh_config's
    /// `IdentityFile` lines and OpenSSH's default key files.
    OptionalFile(PathBuf),
    /// The ssh-agent named by `SSH_AUTH_SOCK`; every key it holds is tried
    /// in order.
    Agent,
    /// An ssh-agent at an explicit socket path (the same as `Agent` without
    /// going through the environment; handy for services and tests).
    AgentSocket(PathBuf),
}

/// What to do with a host key the known_hosts file does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Refuse unknown keys (the default): the error carries the fingerprint
    /// and an `ssh-keyscan` command to record it.
    Strict,
    /// Trust on first use: record unknown keys in the known_hosts file (with
    /// a warning naming host and fingerprint). Changed keys are still
    /// refused.
    AcceptNew,
}

/// How commands get root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// `sudo -n` when the login user is not `root`, nothing otherwise.
    Auto,
    /// Run as the login user.
    None,
    /// Always `sudo -n`.
    Sudo,
}

/// Everything [`Connection::open`] needs besides the endpoint. One value is
/// usually shared by all hosts of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The key to log in with.
    pub identity: Identity,
    /// The known_hosts file to verify host keys against (and to append to
    /// under [`HostKeyPolicy::AcceptNew`]).
    pub known_hosts: PathBuf,
    /// What to do with unknown host keys.
    pub host_key_policy: HostKeyPolicy,
    /// How commands get root.
    pub privilege: Privilege,
    /// Bound on TCP connect + SSH handshake + authentication.
    pub connect_timeout: Duration,
    /// Bound on one command, from opening its channel to its exit status.
    pub command_timeout: Duration,
    /// Most bytes kept from a command's stdout, and separately its stderr;
    /// more is an error ([`TransportError::OutputTooLarge`]).
    pub max_output: usize,
    /// Identities tried after `identity`, in order (further `IdentityFile`
    /// lines, the agent, OpenSSH's default key files).
    pub extra_identities: Vec<Identity>,
    /// OpenSSH user certificates offered with the key they certify
    /// (`CertificateFile`); `KEY-cert.pub` beside a key file needs no entry.
    pub certificates: Vec<PathBuf>,
    /// More known_hosts files, read but never written (further
    /// `UserKnownHostsFile` entries, `GlobalKnownHostsFile`).
    pub more_known_hosts: Vec<PathBuf>,
    /// The name host keys are looked up under and host certificates must
    /// name, instead of the address (`HostKeyAlias`).
    pub host_key_alias: Option<String>,
    /// SSH keepalive interval and how many may go unanswered before the
    /// connection is dropped (`ServerAliveInterval`, `ServerAliveCountMax`);
    /// `None` sends none.
    pub keepalive: Option<(Duration, usize)>,
}

impl ConnectOptions {
    /// Options with the defaults plumb uses: strict host keys, `sudo -n` for
    /// non-root users, 10 s to connect, 10 min per command,
    /// [`DEFAULT_MAX_OUTPUT`].
    pub fn new(identity: Identity, known_hosts: impl Into<PathBuf>) -> Self {
        ConnectOptions {
            identity,
            known_hosts: known_hosts.into(),
            host_key_policy: HostKeyPolicy::Strict,
            privilege: Privilege::Auto,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(600),
            max_output: DEFAULT_MAX_OUTPUT,
            extra_identities: Vec::new(),
            certificates: Vec::new(),
            more_known_hosts: Vec::new(),
            host_key_alias: None,
            keepalive: Some((Duration::from_secs(30), 3)),
        }
    }

    /// Every identity, in the order tried.
    fn identities(&self) -> Vec<Identity> {
        std::iter::once(self.identity.clone())
            .chain(self.extra_identities.iter().cloned())
            .collect()
    }

    /// Every known_hosts file: the one written to first.
    fn known_hosts_files(&self) -> Vec<PathBuf> {
        std::iter::once(self.known_hosts.clone())
            .chain(self.more_known_hosts.iter().cloned())
            .collect()
    }
}

/// What a remote command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
    /// Exit status; for a command killed by a signal, 128 + the signal
    /// number like a shell reports it (255 for signals without a number).
    pub status: u32,
    /// Name of the signal that killed the command (`TERM`, `KILL`, ...), if
    /// one did.
    pub signal: Option<String>,
}

impl Output {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0 && self.signal.is_none()
    }
}

/// One authenticated SSH connection to one host.
///
/// `Send + Sync`: it can be shared (`Arc`) between tokio tasks, and several
/// commands may run on it at once, each on its own channel.
pub struct Connection {
    handle: Handle<ClientHandler>,
    /// The bastion this connection travels through: kept alive as long as
    /// this connection is.
    via: Option<Arc<Connection>>,
    target: String,
    user: String,
    sudo: bool,
    command_timeout: Duration,
    max_output: usize,
    channels: Semaphore,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target)
            .field("user", &self.user)
            .field("sudo", &self.sudo)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects, verifies the host key and authenticates, all within
    /// `opts.connect_timeout`.
    pub async fn open(
        endpoint: &Endpoint,
        opts: &ConnectOptions,
    ) -> Result<Connection, TransportError> {
        let target = endpoint.describe();
        let started = Instant::now();
        let deadline = started + opts.connect_timeout;
        // Local problems (unreadable key, no agent, unreadable known_hosts)
        // are reported before touching the network.
        let prepared = Prepared::new(endpoint, opts, target.clone()).await?;
        let stream = timeout_at(
            deadline,
            tokio::net::TcpStream::connect((endpoint.address.as_str(), endpoint.port)),
        )
        .await
        .map_err(|_| prepared.timed_out(ConnectStage::Tcp))?
        .map_err(|source| TransportError::Connect {
            target: target.clone(),
            source,
        })?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(target = %target, error = %e, "cannot set TCP_NODELAY");
        }
        let conn = prepared.finish(stream, deadline, None).await?;
        tracing::debug!(target = %conn.target, elapsed = ?started.elapsed(), "SSH connection open");
        Ok(conn)
    }

    /// Connects to `endpoint` through `bastion`: a `direct-tcpip` channel of
    /// the bastion's session to the endpoint's address and port, and a whole
    /// SSH session inside it, whose host key is verified against `opts` like
    /// any other (the bastion vouches for nothing). Bounded by
    /// `opts.connect_timeout`. The new connection keeps the bastion alive.
    pub async fn open_through(
        bastion: &Arc<Connection>,
        endpoint: &Endpoint,
        opts: &ConnectOptions,
    ) -> Result<Connection, TransportError> {
        let target = format!("{} via {}", endpoint.describe(), bastion.target);
        let started = Instant::now();
        let deadline = started + opts.connect_timeout;
        let prepared = Prepared::new(endpoint, opts, target.clone()).await?;
        let channel = timeout_at(
            deadline,
            bastion.handle.channel_open_direct_tcpip(
                endpoint.address.as_str(),
                u32::from(endpoint.port),
                "127.0.0.1",
                0,
            ),
        )
        .await
        .map_err(|_| prepared.timed_out(ConnectStage::Tcp))?
        .map_err(|e| TransportError::JumpChannel {
            target: endpoint.describe(),
            bastion: bastion.target.clone(),
            address: endpoint.address.clone(),
            port: endpoint.port,
            reason: match e {
                russh::Error::ChannelOpenFailure(russh::ChannelOpenFailure::ConnectFailed) => {
                    "the bastion could not connect to it (refused, unreachable or timed out)".into()
                }
                russh::Error::ChannelOpenFailure(
                    russh::ChannelOpenFailure::AdministrativelyProhibited,
                ) => "the bastion forbids it (AllowTcpForwarding, PermitOpen)".into(),
                russh::Error::ChannelOpenFailure(russh::ChannelOpenFailure::Other {
                    code,
                    reason,
                }) => format!("refused ({code}): {}", ssh_config::escape(&reason)),
                other => other.to_string(),
            },
        })?;
        let conn = prepared
            .finish(channel.into_stream(), deadline, Some(Arc::clone(bastion)))
            .await?;
        tracing::debug!(target = %conn.target, elapsed = ?started.elapsed(), "SSH connection open through a bastion");
        Ok(conn)
    }

    /// Whether the SSH session has ended (the peer went away or it was
    /// closed): a pooled bastion connection is then opened again.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// `pg-srv1 (10.0.0.5:22)`: the host as named in messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The bastion this connection travels through, as named in messages.
    pub fn bastion(&self) -> Option<&str> {
        self.via.as_deref().map(Connection::target)
    }

    /// Whether commands on this connection run through `sudo -n`.
    pub fn uses_sudo(&self) -> bool {
        self.sudo
    }

    /// Runs a POSIX sh script: `exec sh -s` (or `exec sudo -n -- sh -s`)
    /// with the script sent on stdin followed by EOF; collects stdout,
    /// stderr and the exit status, bounded by the command timeout.
    ///
    /// The script may be several MB (file contents embedded): it is
    /// streamed as the channel window allows while output is read, so
    /// neither side can stall the other. A non-zero exit status is not an
    /// error: it is in [`Output::status`].
    pub async fn run_script(&self, script: &[u8]) -> Result<Output, TransportError> {
        let command = if self.sudo {
            "exec sudo -n -- sh -s"
        } else {
            "exec sh -s"
        };
        self.run(command.to_string(), script).await
    }

    /// Runs one command line with empty stdin, e.g. for diagnostics. The
    /// login shell interprets it; under sudo it runs as `sudo -n -- sh -c`.
    pub async fn exec(&self, command: &str) -> Result<Output, TransportError> {
        let command = if self.sudo {
            format!("exec sudo -n -- sh -c {}", crate::shell::quote(command))
        } else {
            command.to_string()
        };
        self.run(command, b"").await
    }

    /// Says goodbye to the server and waits (at most 2 s) until the
    /// session has ended, so the remote sshd process is gone when this
    /// returns. Dropping a `Connection` also closes it, just without
    /// waiting.
    pub async fn close(self) {
        let Connection { handle, target, .. } = self;
        let close = async move {
            // The session ends right after sending DISCONNECT; awaiting the
            // handle waits for exactly that.
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "plumb done", "en")
                .await;
            let _ = handle.await;
        };
        if timeout(Duration::from_secs(2), close).await.is_err() {
            tracing::debug!(target = %target, "SSH session did not end within 2s of disconnecting");
        }
    }

    async fn run(&self, command: String, stdin: &[u8]) -> Result<Output, TransportError> {
        let deadline = Instant::now() + self.command_timeout;
        let timed_out = || TransportError::CommandTimeout {
            target: self.target.clone(),
            after: self.command_timeout,
        };
        let _permit = timeout_at(deadline, self.channels.acquire())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| self.session_error("the connection is closing"))?;
        let channel = timeout_at(deadline, self.open_channel())
            .await
            .map_err(|_| timed_out())??;
        let (mut reader, writer) = channel.split();
        let result = timeout_at(deadline, self.drive(&mut reader, &writer, command, stdin)).await;
        let output = match result {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                drop(reader);
                abort_channel(&writer, false).await;
                return Err(e);
            }
            Err(_) => {
                // Stop reading first: russh delivers to a dropped reader
                // without blocking, to a full one it would wait.
                drop(reader);
                abort_channel(&writer, true).await;
                return Err(timed_out());
            }
        };
        match self.sudo_failure(&output) {
            Some(e) => Err(e),
            None => Ok(output),
        }
    }

    /// Opens a session channel, retrying briefly when sshd refuses it.
    ///
    /// The semaphore keeps us under `MaxSessions`, but sshd frees a finished
    /// session slot a little after it sent the channel close we wait for, so
    /// an open right behind a close can still be refused; a few short
    /// retries absorb that. The caller's deadline bounds the whole loop.
    async fn open_channel(&self) -> Result<russh::Channel<russh::client::Msg>, TransportError> {
        let mut delay = Duration::from_millis(5);
        let mut attempts = 0;
        loop {
            match self.handle.channel_open_session().await {
                Ok(channel) => return Ok(channel),
                Err(russh::Error::ChannelOpenFailure(reason)) if attempts < 8 => {
                    attempts += 1;
                    tracing::debug!(target = %self.target, ?reason, attempts, "channel refused, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                Err(e) => {
                    return Err(self.session_error(&format!("cannot open a channel: {e}")));
                }
            }
        }
    }

    /// Sends the exec request and stdin while collecting output, until the
    /// server closes the channel.
    async fn drive(
        &self,
        reader: &mut russh::ChannelReadHalf,
        writer: &russh::ChannelWriteHalf<russh::client::Msg>,
        command: String,
        stdin: &[u8],
    ) -> Result<Output, TransportError> {
        // want_reply: a refusal comes back as ChannelMsg::Failure. We do not
        // wait for the reply before sending stdin: sshd grants the window
        // only once the command runs, so data cannot arrive early.
        writer
            .exec(true, command)
            .await
            .map_err(|e| self.session_error(&format!("cannot send the command: {e}")))?;

        let send_stdin = async {
            for chunk in stdin.chunks(STDIN_CHUNK) {
                writer.data_bytes(chunk.to_vec()).await?;
            }
            writer.eof().await
        };
        let mut send_stdin = std::pin::pin!(send_stdin);
        let mut sending = true;

        let mut output = Output::default();
        let mut status: Option<u32> = None;
        loop {
            let message = tokio::select! {
                sent = &mut send_stdin, if sending => {
                    sending = false;
                    if let Err(e) = sent {
                        // The command may legitimately exit without reading
                        // all of stdin; its exit status tells the story.
                        tracing::debug!(target = %self.target, error = %e, "stdin not fully sent");
                    }
                    continue;
                }
                message = reader.wait() => message,
            };
            match message {
                Some(ChannelMsg::Data { data }) => {
                    self.append(&mut output.stdout, &data, "stdout")
                        .map_err(|stream| self.too_large(stream))?;
                }
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    self.append(&mut output.stderr, &data, "stderr")
                        .map_err(|stream| self.too_large(stream))?;
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                Some(ChannelMsg::ExitSignal {
                    signal_name,
                    error_message,
                    ..
                }) => {
                    let (name, number) = signal_info(&signal_name);
                    status = Some(number.map_or(255, |n| 128 + n));
                    if !error_message.is_empty() {
                        tracing::debug!(target = %self.target, signal = %name, message = %error_message, "command killed");
                    }
                    output.signal = Some(name);
                }
                Some(ChannelMsg::Failure) => {
                    return Err(TransportError::ExecRefused {
                        target: self.target.clone(),
                    });
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
        match status {
            Some(status) => {
                output.status = status;
                Ok(output)
            }
            None => Err(TransportError::NoExitStatus {
                target: self.target.clone(),
            }),
        }
    }

    /// Appends output unless that would pass the limit; the error is the
    /// stream's name (kept small: this runs for every packet).
    fn append(
        &self,
        buffer: &mut Vec<u8>,
        data: &[u8],
        stream: &'static str,
    ) -> Result<(), &'static str> {
        if buffer.len().saturating_add(data.len()) > self.max_output {
            return Err(stream);
        }
        buffer.extend_from_slice(data);
        Ok(())
    }

    fn too_large(&self, stream: &'static str) -> TransportError {
        TransportError::OutputTooLarge {
            target: self.target.clone(),
            stream,
            limit: self.max_output,
        }
    }

    fn session_error(&self, reason: &str) -> TransportError {
        TransportError::Session {
            target: self.target.clone(),
            reason: reason.to_string(),
        }
    }

    /// Recognises sudo refusing to run the command: sudo prints a `sudo:`
    /// line as its last word on stderr and exits 1 before the command
    /// produced anything (other lines may precede it, such as sshd's "Could
    /// not chdir to home directory"); a missing sudo is the shell's "not
    /// found" with status 127. The wording is localised, so only the prefix
    /// and "password" (kept by sudo's English and most catalogues) are
    /// relied upon; anything else from sudo is a
    /// [`TransportError::SudoFailed`] with its text.
    fn sudo_failure(&self, output: &Output) -> Option<TransportError> {
        if !self.sudo {
            return None;
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr.trim().to_string();
        if output.status == 127 && stderr.contains("sudo") && stderr.contains("not found") {
            return Some(TransportError::SudoFailed {
                target: self.target.clone(),
                user: self.user.clone(),
                message: format!("sudo is not installed ({message})"),
            });
        }
        let lines: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let last_is_sudo = lines.last().is_some_and(|l| l.starts_with("sudo:"));
        if output.status != 1 || !output.stdout.is_empty() || !last_is_sudo {
            return None;
        }
        let sudo_lines: Vec<&str> = lines
            .into_iter()
            .filter(|l| l.starts_with("sudo:"))
            .collect();
        // Report sudo's own words; sshd's chatter is not the point.
        let message = sudo_lines.join("; ");
        if sudo_lines.iter().any(|l| l.contains("password")) {
            return Some(TransportError::SudoPasswordRequired {
                target: self.target.clone(),
                user: self.user.clone(),
                message,
            });
        }
        // "unable to resolve host" is a warning after which sudo runs the
        // command anyway: a script that then failed silently is the
        // script's failure, not sudo's.
        if sudo_lines
            .iter()
            .all(|l| l.contains("unable to resolve host"))
        {
            return None;
        }
        Some(TransportError::SudoFailed {
            target: self.target.clone(),
            user: self.user.clone(),
            message,
        })
    }
}

/// Everything checked and loaded before the network is touched, then the
/// handshake and authentication over whatever stream reaches the host.
struct Prepared {
    target: String,
    user: String,
    identities: Vec<auth::LoadedIdentity>,
    config: Arc<Config>,
    check: Arc<HostKeyCheck>,
    sudo: bool,
    command_timeout: Duration,
    connect_timeout: Duration,
    max_output: usize,
}

impl Prepared {
    async fn new(
        endpoint: &Endpoint,
        opts: &ConnectOptions,
        target: String,
    ) -> Result<Prepared, TransportError> {
        let identities = auth::load_all(&opts.identities(), &opts.certificates).await?;
        let files = opts.known_hosts_files();
        let known = KnownHosts::load_all(&files).map_err(|(path, source)| {
            TransportError::KnownHostsIo {
                action: "read",
                path,
                source,
            }
        })?;
        let pattern = match &opts.host_key_alias {
            Some(alias) => alias.to_ascii_lowercase(),
            None => host_pattern(&endpoint.address, endpoint.port),
        };
        let principal = opts
            .host_key_alias
            .clone()
            .unwrap_or_else(|| endpoint.address.to_ascii_lowercase());
        let config = client_config(
            &known.known_algorithms(&pattern),
            known.has_authority(&pattern),
            opts.keepalive,
        );
        let check = Arc::new(HostKeyCheck {
            host: endpoint.host.clone(),
            target: target.clone(),
            keyscan: keyscan_command(&endpoint.address, endpoint.port),
            pattern,
            principal,
            path: opts.known_hosts.clone(),
            all_paths: files,
            known,
            policy: opts.host_key_policy,
            rejection: Mutex::new(None),
        });
        let sudo = match opts.privilege {
            Privilege::Auto => endpoint.user != "root",
            Privilege::None => false,
            Privilege::Sudo => true,
        };
        Ok(Prepared {
            target,
            user: endpoint.user.clone(),
            identities,
            config,
            check,
            sudo,
            command_timeout: opts.command_timeout,
            connect_timeout: opts.connect_timeout,
            max_output: opts.max_output,
        })
    }

    fn timed_out(&self, stage: ConnectStage) -> TransportError {
        TransportError::ConnectTimeout {
            target: self.target.clone(),
            stage,
            after: self.connect_timeout,
        }
    }

    async fn finish<S>(
        mut self,
        stream: S,
        deadline: Instant,
        via: Option<Arc<Connection>>,
    ) -> Result<Connection, TransportError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let handler = ClientHandler {
            check: Arc::clone(&self.check),
        };
        let mut handle = match timeout_at(
            deadline,
            russh::client::connect_stream(Arc::clone(&self.config), stream, handler),
        )
        .await
        {
            Err(_) => return Err(self.timed_out(ConnectStage::Handshake)),
            // A refused host key surfaces from russh as a generic error;
            // the handler kept the real reason.
            Ok(Err(e)) => {
                return Err(self.check.take_rejection().unwrap_or_else(|| {
                    TransportError::Handshake {
                        target: self.target.clone(),
                        reason: handshake_reason(&e),
                    }
                }));
            }
            Ok(Ok(handle)) => handle,
        };
        timeout_at(
            deadline,
            auth::authenticate(&mut handle, &self.user, &mut self.identities, &self.target),
        )
        .await
        .map_err(|_| self.timed_out(ConnectStage::Authentication))??;
        Ok(Connection {
            handle,
            via,
            target: self.target,
            user: self.user,
            sudo: self.sudo,
            command_timeout: self.command_timeout,
            max_output: self.max_output,
            channels: Semaphore::new(MAX_PARALLEL_CHANNELS),
        })
    }
}

/// Ends a channel we gave up on: SIGTERM for a command that ran too long
/// (OpenSSH ≥ 8.1 delivers it), then close. Bounded, since the session may
/// be the thing that is stuck.
async fn abort_channel(writer: &russh::ChannelWriteHalf<russh::client::Msg>, signal: bool) {
    let abort = async {
        if signal {
            let _ = writer.signal(Sig::TERM).await;
        }
        let _ = writer.close().await;
    };
    let _ = timeout(Duration::from_secs(2), abort).await;
}

/// Name and Linux number of a signal reported by `exit-signal`.
fn signal_info(signal: &Sig) -> (String, Option<u32>) {
    let (name, number) = match signal {
        Sig::HUP => ("HUP", 1),
        Sig::INT => ("INT", 2),
        Sig::QUIT => ("QUIT", 3),
        Sig::ILL => ("ILL", 4),
        Sig::ABRT => ("ABRT", 6),
        Sig::FPE => ("FPE", 8),
        Sig::KILL => ("KILL", 9),
        Sig::USR1 => ("USR1", 10),
        Sig::SEGV => ("SEGV", 11),
        Sig::PIPE => ("PIPE", 13),
        Sig::ALRM => ("ALRM", 14),
        Sig::TERM => ("TERM", 15),
        Sig::Custom(name) => return (name.clone(), None),
    };
    (name.to_string(), Some(number))
}

/// russh's wording for the common handshake failures is terse
/// ("Disconnected"); say what it means from here.
fn handshake_reason(error: &russh::Error) -> String {
    match error {
        russh::Error::Disconnect | russh::Error::HUP => {
            "the server closed the connection before the SSH handshake finished".to_string()
        }
        russh::Error::Version => "the server did not send an SSH version banner".to_string(),
        other => other.to_string(),
    }
}

/// `ssh-keyscan` command that prints the known_hosts entry of a host, for
/// error messages.
fn keyscan_command(address: &str, port: u16) -> String {
    if port == 22 {
        format!("ssh-keyscan -t ed25519 {address}")
    } else {
        format!("ssh-keyscan -p {port} -t ed25519 {address}")
    }
}

/// Key exchange preference: curve25519-sha256 first (cheapest and
/// everywhere since OpenSSH 6.5), then russh's defaults (ML-KEM hybrid,
/// finite-field DH) as fallbacks.
fn kex_order() -> Vec<kex::Name> {
    let first = [kex::CURVE25519, kex::CURVE25519_PRE_RFC_8731];
    first
        .iter()
        .copied()
        .chain(
            Preferred::DEFAULT
                .kex
                .iter()
                .copied()
                .filter(|k| !first.contains(k)),
        )
        .collect()
}

/// Host key preference: russh's default order (ed25519 first), with the
/// families recorded in known_hosts for this host moved to the front.
fn host_key_order(known: &[Algorithm]) -> Vec<Algorithm> {
    let default: Vec<Algorithm> = Preferred::DEFAULT.key.to_vec();
    let is_known = |a: &Algorithm| known.iter().any(|k| known_hosts::same_family(k, a));
    let (mut front, back): (Vec<_>, Vec<_>) = default.into_iter().partition(|a| is_known(a));
    front.extend(back);
    front
}

/// The client configuration for one host: host certificates are asked for
/// (ahead of plain keys) only when an `@cert-authority` line applies to it,
/// as OpenSSH orders them, so that a host with a plain key recorded is not
/// made to prove itself with a certificate nobody vouches for.
fn client_config(
    known: &[Algorithm],
    want_certificates: bool,
    keepalive: Option<(Duration, usize)>,
) -> Arc<Config> {
    let key = host_key_order(known);
    let certificates = if want_certificates {
        key.clone()
    } else {
        Vec::new()
    };
    let preferred = Preferred {
        kex: Cow::Owned(kex_order()),
        key: Cow::Owned(key),
        host_key_certificates: Cow::Owned(certificates),
        ..Preferred::DEFAULT
    };
    Arc::new(Config {
        preferred,
        // We set TCP_NODELAY on our own socket; keep russh's flag in sync
        // for anything it opens itself.
        nodelay: true,
        // Notice a dead peer during a long command even without traffic.
        keepalive_interval: keepalive.map(|(interval, _)| interval),
        keepalive_max: keepalive.map_or(3, |(_, max)| max),
        ..Config::default()
    })
}

/// Host key verification for one connection attempt.
struct HostKeyCheck {
    host: String,
    target: String,
    /// The name looked up in known_hosts: `[address]:port` or `HostKeyAlias`.
    pattern: String,
    /// The name a host certificate must list: the address or `HostKeyAlias`.
    principal: String,
    keyscan: String,
    /// The known_hosts file new keys are written to.
    path: PathBuf,
    /// Every file consulted, for messages.
    all_paths: Vec<PathBuf>,
    known: KnownHosts,
    policy: HostKeyPolicy,
    /// Why the key was refused: russh only reports "unknown key".
    rejection: Mutex<Option<TransportError>>,
}

impl HostKeyCheck {
    fn take_rejection(&self) -> Option<TransportError> {
        self.rejection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn reject(&self, error: TransportError) {
        *self
            .rejection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error);
    }

    async fn verify(&self, offered: &PublicKeyOrCertificate) -> Result<(), TransportError> {
        let key = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(cert) => return self.verify_certificate(cert),
        };
        match self.known.check(&self.pattern, key) {
            Verdict::Trusted => Ok(()),
            Verdict::Unknown => match self.policy {
                HostKeyPolicy::Strict => Err(TransportError::UnknownHostKey {
                    target: self.target.clone(),
                    known_hosts: self.path.clone(),
                    algorithm: key.algorithm().as_str().to_string(),
                    fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
                    keyscan: self.keyscan.clone(),
                }),
                HostKeyPolicy::AcceptNew => self.learn(key).await,
            },
            other => Err(self.refusal(other, key)),
        }
    }

    /// A host certificate: trusted through an `@cert-authority` line, or
    /// (as OpenSSH does) through its plain key listed in known_hosts. Never
    /// learned on first use: a host that presents a certificate is checked
    /// against the CA or refused.
    // The transport's one error type, as everywhere here (the async callers are not linted).
    #[allow(clippy::result_large_err)]
    fn verify_certificate(&self, cert: &Certificate) -> Result<(), TransportError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let plain = PublicKey::new(cert.public_key().clone(), "");
        match self
            .known
            .check_certificate(&self.pattern, &self.principal, cert, now)
        {
            CertVerdict::Trusted { file, line } => {
                tracing::debug!(target = %self.target, ca = %format!("{}:{line}", file.display()), "host certificate accepted");
                Ok(())
            }
            CertVerdict::Revoked { file, line } => Err(TransportError::HostKeyRevoked {
                target: self.target.clone(),
                known_hosts: file,
                line,
                fingerprint: plain.fingerprint(HashAlg::Sha256).to_string(),
            }),
            CertVerdict::Invalid { file, line, reason } => {
                if matches!(self.known.check(&self.pattern, &plain), Verdict::Trusted) {
                    tracing::warn!(target = %self.target, %reason, "host certificate invalid; its plain key is listed in known_hosts, accepted");
                    return Ok(());
                }
                Err(TransportError::HostCertificateInvalid {
                    target: self.target.clone(),
                    known_hosts: file,
                    line,
                    reason,
                })
            }
            CertVerdict::NoAuthority => match self.known.check(&self.pattern, &plain) {
                Verdict::Trusted => Ok(()),
                Verdict::Unknown => Err(TransportError::HostCertificateUntrusted {
                    target: self.target.clone(),
                    known_hosts: self
                        .all_paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    pattern: self.pattern.clone(),
                    ca_fingerprint: cert
                        .signature_key()
                        .fingerprint(HashAlg::Sha256)
                        .to_string(),
                    fingerprint: plain.fingerprint(HashAlg::Sha256).to_string(),
                }),
                other => Err(self.refusal(other, &plain)),
            },
        }
    }

    async fn learn(&self, key: &PublicKey) -> Result<(), TransportError> {
        let (path, pattern, owned) = (self.path.clone(), self.pattern.clone(), key.clone());
        let io_error = |source| TransportError::KnownHostsIo {
            action: "update",
            path: self.path.clone(),
            source,
        };
        let verdict =
            tokio::task::spawn_blocking(move || known_hosts::learn(&path, &pattern, &owned))
                .await
                .map_err(|e| io_error(std::io::Error::other(e)))?
                .map_err(io_error)?;
        match verdict {
            Verdict::Unknown => {
                tracing::warn!(
                    host = %self.host,
                    target = %self.target,
                    fingerprint = %key.fingerprint(HashAlg::Sha256),
                    algorithm = %key.algorithm().as_str(),
                    known_hosts = %self.path.display(),
                    "trusting new host key on first use"
                );
                Ok(())
            }
            Verdict::Trusted => Ok(()),
            other => Err(self.refusal(other, key)),
        }
    }

    fn refusal(&self, verdict: Verdict, key: &PublicKey) -> TransportError {
        let describe = |k: &PublicKey| {
            format!(
                "{} ({})",
                k.fingerprint(HashAlg::Sha256),
                k.algorithm().as_str()
            )
        };
        match verdict {
            Verdict::Revoked { file, line } => TransportError::HostKeyRevoked {
                target: self.target.clone(),
                known_hosts: file,
                line,
                fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
            },
            Verdict::Changed { file, line, known } => TransportError::HostKeyChanged {
                target: self.target.clone(),
                known_hosts: file,
                line,
                expected: describe(&known),
                offered: describe(key),
                pattern: self.pattern.clone(),
            },
            // Not reached: callers handle these before asking for a refusal.
            Verdict::Trusted | Verdict::Unknown => TransportError::Handshake {
                target: self.target.clone(),
                reason: "internal error: host key refused without a reason".to_string(),
            },
        }
    }
}

/// The russh callback object; one per connection attempt.
pub(crate) struct ClientHandler {
    check: Arc<HostKeyCheck>,
}

impl russh::client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match self.check.verify(server_public_key).await {
            Ok(()) => Ok(true),
            Err(rejection) => {
                self.check.reject(rejection);
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Connection>();
        assert_send_sync::<TransportError>();
    }

    #[test]
    fn curve25519_is_offered_first_and_fallbacks_kept() {
        let order = kex_order();
        assert_eq!(order.first(), Some(&kex::CURVE25519));
        assert!(order.contains(&kex::DH_G14_SHA256));
        assert!(order.contains(&kex::EXTENSION_SUPPORT_AS_CLIENT));
        assert_eq!(order.iter().filter(|k| **k == kex::CURVE25519).count(), 1);
    }

    #[test]
    fn host_keys_prefer_ed25519_then_recorded_types() {
        assert_eq!(host_key_order(&[]).first(), Some(&Algorithm::Ed25519));
        let rsa_first = host_key_order(&[Algorithm::Rsa { hash: None }]);
        assert!(matches!(rsa_first.first(), Some(Algorithm::Rsa { .. })));
        assert!(rsa_first.contains(&Algorithm::Ed25519));
    }

    #[test]
    fn describe_names_host_and_address() {
        let mut endpoint = Endpoint {
            host: "pg-srv1".into(),
            address: "10.0.0.5".into(),
            port: 22,
            user: "root".into(),
        };
        assert_eq!(endpoint.describe(), "pg-srv1 (10.0.0.5:22)");
        endpoint.host = "10.0.0.5".into();
        assert_eq!(endpoint.describe(), "10.0.0.5:22");
        endpoint.address = "::1".into();
        assert_eq!(endpoint.describe(), "10.0.0.5 ([::1]:22)");
    }

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(crate::shell::quote("echo 'hi'"), r"'echo '\''hi'\'''");
    }
}
