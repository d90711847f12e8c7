//! Errors of the SSH transport.
//!
//! Every message follows the cargo style: what happened, on which host, and
//! what the operator can do about it. The `target` fields read like
//! `pg-srv1 (10.0.0.5:22)` so one line of output identifies the host both by
//! its inventory name and by the address plumb actually dialled.

use std::path::PathBuf;
use std::time::Duration;

/// The phase of [`Connection::open`](super::Connection::open) that a
/// connect timeout interrupted; named in the error so the operator knows
/// whether the network, sshd or authentication was slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectStage {
    /// Resolving the address and opening the TCP connection.
    Tcp,
    /// SSH version exchange, key exchange and host key verification.
    Handshake,
    /// Public key authentication (including ssh-agent signing).
    Authentication,
}

impl std::fmt::Display for ConnectStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectStage::Tcp => "the TCP connect",
            ConnectStage::Handshake => "the SSH handshake",
            ConnectStage::Authentication => "authentication",
        })
    }
}

/// Everything that can go wrong while connecting to a host or running a
/// command on it.
///
/// Host key problems are separate variants (not strings) because callers
/// treat them differently: an unreachable host is retried on the next run,
/// a changed host key must stop and wait for a human.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The TCP connection could not be established (refused, unreachable,
    /// DNS failure).
    #[error(
        "could not connect to {target}: {source}; check that the host is up, that the address \
         and port in the inventory are right and that sshd listens there"
    )]
    Connect {
        /// `name (address:port)` of the host.
        target: String,
        /// The underlying socket error.
        #[source]
        source: std::io::Error,
    },

    /// The connect timeout (TCP + handshake + authentication) elapsed.
    #[error(
        "connecting to {target} timed out after {after:?} during {stage}; check that the host \
         is reachable and sshd is responsive, or raise the connect timeout"
    )]
    ConnectTimeout {
        /// `name (address:port)` of the host.
        target: String,
        /// Which phase was running when the time ran out.
        stage: ConnectStage,
        /// The configured connect timeout.
        after: Duration,
    },

    /// The host offered a key that the known_hosts file does not list.
    #[error(
        "host key for {target} is not in {known_hosts}; its {algorithm} fingerprint is \
         {fingerprint}; verify it and add it ({keyscan} >> {known_hosts}), or rerun with \
         --accept-new-host-keys"
    )]
    UnknownHostKey {
        /// `name (address:port)` of the host.
        target: String,
        /// The known_hosts file that was consulted.
        known_hosts: PathBuf,
        /// Key type offered by the host, e.g. `ssh-ed25519`.
        algorithm: String,
        /// `SHA256:...` fingerprint of the offered key.
        fingerprint: String,
        /// A ready-to-run `ssh-keyscan` command that prints the entry.
        keyscan: String,
    },

    /// The known_hosts file lists a different key for this host: either the
    /// host was reinstalled or someone is in the middle.
    #[error(
        "HOST KEY CHANGED for {target}: {known_hosts} line {line} has {expected}, server \
         offered {offered}: refusing to connect. If the host was reinstalled, verify the new \
         key out of band, then remove the old entry (ssh-keygen -R '{pattern}' -f {known_hosts}) \
         and add the new one; otherwise someone may be intercepting the connection"
    )]
    HostKeyChanged {
        /// `name (address:port)` of the host.
        target: String,
        /// The known_hosts file that was consulted.
        known_hosts: PathBuf,
        /// 1-based line of the recorded key.
        line: usize,
        /// `SHA256:... (ssh-ed25519)` of the recorded key.
        expected: String,
        /// `SHA256:... (ssh-ed25519)` of the key the host offered.
        offered: String,
        /// The known_hosts host pattern, e.g. `[10.0.0.5]:2222`.
        pattern: String,
    },

    /// The offered key is listed under `@revoked`.
    #[error(
        "host key {fingerprint} of {target} is marked @revoked in {known_hosts} line {line}: \
         refusing to connect; give the host a new host key"
    )]
    HostKeyRevoked {
        /// `name (address:port)` of the host.
        target: String,
        /// The known_hosts file that was consulted.
        known_hosts: PathBuf,
        /// 1-based line of the `@revoked` entry.
        line: usize,
        /// `SHA256:...` fingerprint of the offered key.
        fingerprint: String,
    },

    /// The host presented a host certificate signed by a CA that a known_hosts
    /// `@cert-authority` line trusts for it, but the certificate is not valid
    /// for this host now (expired, not yet valid, wrong principal, wrong type,
    /// bad signature), and its plain key is not listed either.
    #[error(
        "the host certificate of {target} is not valid: {reason} (CA trusted by {known_hosts} \
         line {line}); refusing to connect. Issue the host a new certificate (ssh-keygen -s CA \
         -h -n NAME ...) or list its plain key in known_hosts"
    )]
    HostCertificateInvalid {
        /// `name (address:port)` of the host.
        target: String,
        /// The file holding the `@cert-authority` line.
        known_hosts: PathBuf,
        /// 1-based line of the `@cert-authority` entry.
        line: usize,
        /// Why the certificate is refused.
        reason: String,
    },

    /// The host presented a host certificate signed by a CA that no
    /// `@cert-authority` line trusts for this host, and its plain key is not
    /// listed either.
    #[error(
        "{target} presented a host certificate signed by CA {ca_fingerprint}, which no \
         @cert-authority line in {known_hosts} trusts for {pattern}, and its key {fingerprint} is \
         not listed either: refusing to connect. Add `@cert-authority {pattern} <CA public key>` \
         once you have checked the CA out of band"
    )]
    HostCertificateUntrusted {
        /// `name (address:port)` of the host.
        target: String,
        /// The known_hosts file(s) consulted.
        known_hosts: String,
        /// The name looked up (`[address]:port` or `HostKeyAlias`).
        pattern: String,
        /// `SHA256:...` of the CA key.
        ca_fingerprint: String,
        /// `SHA256:...` of the certified key.
        fingerprint: String,
    },

    /// A `CertificateFile` cannot be read or is not an OpenSSH user certificate.
    #[error("SSH certificate file {path} is not usable: {reason}")]
    CertificateInvalid {
        /// The certificate file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// No identity could be loaded at all.
    #[error(
        "no SSH identity to log in with (looked for {tried}); set ssh_key in the inventory, \
         IdentityFile in ssh_config, or start ssh-agent and ssh-add a key"
    )]
    NoIdentity {
        /// What was looked for.
        tried: String,
    },

    /// The bastion a host is reached through could not be reached or
    /// refused plumb; the host itself was not contacted.
    #[error("cannot reach {target}: its bastion {bastion} failed: {reason}")]
    Bastion {
        /// The host behind the bastion.
        target: String,
        /// `name (address:port)` of the bastion.
        bastion: String,
        /// Why the bastion failed.
        reason: String,
    },

    /// The bastion is up but could not open a connection to the host
    /// (`direct-tcpip` refused: the host is down or unreachable from the
    /// bastion, or the bastion forbids TCP forwarding).
    #[error(
        "bastion {bastion} could not open a connection to {address}:{port} for {target}: \
         {reason}; check that the host is up and reachable from the bastion, and that the \
         bastion's sshd allows TCP forwarding (AllowTcpForwarding)"
    )]
    JumpChannel {
        /// `name (address:port)` of the host.
        target: String,
        /// `name (address:port)` of the bastion.
        bastion: String,
        /// Address asked of the bastion.
        address: String,
        /// Port asked of the bastion.
        port: u16,
        /// What the bastion answered.
        reason: String,
    },

    /// The known_hosts file exists but cannot be read, or a new key cannot
    /// be written to it.
    #[error("cannot {action} known_hosts file {path}: {source}")]
    KnownHostsIo {
        /// `read` or `update`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The SSH protocol failed before authentication (no common algorithm,
    /// connection dropped, not an SSH server).
    #[error(
        "SSH handshake with {target} failed: {reason}; check that an OpenSSH server answers on \
         that port"
    )]
    Handshake {
        /// `name (address:port)` of the host.
        target: String,
        /// What russh reported.
        reason: String,
    },

    /// The identity file cannot be read.
    #[error("cannot read SSH identity file {path}: {source}; check the path and its permissions")]
    IdentityRead {
        /// The identity file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The identity file is protected by a passphrase.
    #[error(
        "SSH identity file {path} is encrypted with a passphrase and plumb never prompts for \
         one; load it into ssh-agent (ssh-add {path}) and use the agent identity, or use an \
         unencrypted deploy key"
    )]
    IdentityEncrypted {
        /// The identity file.
        path: PathBuf,
    },

    /// The identity file is not a private key russh understands.
    #[error(
        "SSH identity file {path} is not a usable private key ({reason}); plumb reads OpenSSH, \
         PEM and PKCS#8 ed25519, ECDSA and RSA keys"
    )]
    IdentityInvalid {
        /// The identity file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },

    /// ssh-agent cannot be used.
    #[error("cannot use ssh-agent: {reason}")]
    Agent {
        /// What went wrong, with the socket path where known.
        reason: String,
    },

    /// The server refused every key offered.
    #[error(
        "authentication failed for {user}@{target}: the server refused {tried}; make sure the \
         matching public key is in {user}'s authorized_keys on the host, or use another \
         identity (server accepts: {methods})"
    )]
    AuthFailed {
        /// `name (address:port)` of the host.
        target: String,
        /// The remote user.
        user: String,
        /// Description of the key(s) offered.
        tried: String,
        /// Methods the server said it would still accept.
        methods: String,
    },

    /// `sudo -n` refused because the user needs a password.
    #[error(
        "sudo on {target} needs a password for user {user}, and plumb runs sudo -n \
         (non-interactive): allow passwordless sudo for {user} (e.g. '{user} ALL=(ALL) \
         NOPASSWD: ALL' in /etc/sudoers.d/plumb) or connect as root. sudo said: {message}"
    )]
    SudoPasswordRequired {
        /// `name (address:port)` of the host.
        target: String,
        /// The remote user.
        user: String,
        /// sudo's own message.
        message: String,
    },

    /// sudo is missing or failed for another reason (requiretty, not in
    /// sudoers with a different message, ...).
    #[error(
        "sudo on {target} failed for user {user}: {message}; plumb needs passwordless sudo -n \
         (or a root login) to change the host"
    )]
    SudoFailed {
        /// `name (address:port)` of the host.
        target: String,
        /// The remote user.
        user: String,
        /// What sudo or the shell said.
        message: String,
    },

    /// The command did not finish within the command timeout.
    #[error(
        "command on {target} timed out after {after:?} (command timeout); the remote process \
         was sent SIGTERM and its channel closed; raise the command timeout if this step \
         legitimately takes longer"
    )]
    CommandTimeout {
        /// `name (address:port)` of the host.
        target: String,
        /// The configured command timeout.
        after: Duration,
    },

    /// The command printed more than the configured limit.
    #[error(
        "command on {target} wrote more than {limit} bytes to {stream}; plumb stopped reading \
         and closed the channel; fetch large content in smaller pieces or raise the output limit"
    )]
    OutputTooLarge {
        /// `name (address:port)` of the host.
        target: String,
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The configured limit in bytes.
        limit: usize,
    },

    /// The server refused to start the command.
    #[error(
        "{target} refused to run the command (exec request denied); check sshd's ForceCommand \
         and Match rules for this user"
    )]
    ExecRefused {
        /// `name (address:port)` of the host.
        target: String,
    },

    /// The SSH session failed while a command was running or being set up
    /// (connection lost, channel refused).
    #[error(
        "SSH session with {target} failed: {reason}; the host may have rebooted or dropped the connection"
    )]
    Session {
        /// `name (address:port)` of the host.
        target: String,
        /// What russh reported.
        reason: String,
    },

    /// The channel closed without an exit status or signal.
    #[error(
        "command on {target} ended without reporting an exit status; the connection was \
         probably lost"
    )]
    NoExitStatus {
        /// `name (address:port)` of the host.
        target: String,
    },
}
