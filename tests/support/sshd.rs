//! A throwaway OpenSSH `sshd` on a loopback address, for integration tests
//! and benchmarks that need a real SSH server.
//!
//! Each [`Sshd`] lives in its own temp dir: host keys made by `ssh-keygen`,
//! an `authorized_keys` file, an `sshd_config` and the server log. It listens
//! on a free port of a loopback address (any of 127.0.0.0/8, so a benchmark
//! can give 100 "hosts" 100 addresses), and is killed on drop.
//!
//! The server sets `HOME` to its temp dir: bash reads `$HOME/.bashrc` for
//! commands run through sshd, and the developer's own `.bashrc` (pyenv init
//! and friends) would otherwise add ~0.4 s to every remote command.
//!
//! Needs `/usr/sbin/sshd` (`apt-get install -y openssh-server`) and the
//! OpenSSH client tools (`ssh-keygen`, `ssh-agent`, `ssh-add`).
#![allow(dead_code)] // each test binary uses a different part of it

use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where Debian puts the server.
pub const SSHD: &str = "/usr/sbin/sshd";

/// How long to wait for sshd (or ssh-agent) to come up before failing.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// How to start an [`Sshd`].
#[derive(Debug, Clone)]
pub struct SshdConfig {
    /// Loopback address to listen on (127.0.0.1 by default; any 127.x.y.z
    /// works on Linux without setup).
    pub listen: IpAddr,
    /// `KexAlgorithms` line value; `None` keeps OpenSSH's default list.
    pub kex_algorithms: Option<String>,
    /// Host key types to generate and serve, first is "the" host key
    /// (`ed25519`, `rsa`, `ecdsa`).
    pub host_key_types: Vec<&'static str>,
    /// `LogLevel` (`INFO`, `VERBOSE`, `DEBUG1`, ...).
    pub log_level: &'static str,
    /// Extra raw `sshd_config` lines.
    pub extra: Vec<String>,
}

impl Default for SshdConfig {
    fn default() -> Self {
        SshdConfig {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            kex_algorithms: None,
            host_key_types: vec!["ed25519"],
            log_level: "INFO",
            extra: Vec::new(),
        }
    }
}

/// A running sshd; killed when dropped.
pub struct Sshd {
    dir: tempfile::TempDir,
    /// The address it listens on.
    pub addr: IpAddr,
    /// The port it listens on.
    pub port: u16,
    child: Child,
    host_keys: Vec<(&'static str, PathBuf)>,
}

impl Sshd {
    /// Starts an sshd on 127.0.0.1 with an ed25519 host key.
    pub fn start() -> Sshd {
        Self::start_with(SshdConfig::default())
    }

    /// Starts an sshd as configured, retrying on another port if the one
    /// picked was taken in the meantime.
    pub fn start_with(config: SshdConfig) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install the server with `apt-get install -y openssh-server` \
             (and keep any system sshd off port 22: `systemctl disable --now ssh`)"
        );
        // Privilege separation directory: sshd refuses to start without it,
        // and on a host without a system sshd running nobody created it.
        let _ = fs::create_dir_all("/run/sshd");

        let dir = tempfile::Builder::new()
            .prefix("plumb-sshd-")
            .tempdir()
            .expect("create sshd temp dir");
        let mut host_keys = Vec::new();
        for kind in &config.host_key_types {
            let path = dir.path().join(format!("ssh_host_{kind}_key"));
            keygen(&path, kind, "");
            host_keys.push((*kind, path));
        }
        fs::write(dir.path().join("authorized_keys"), "").expect("write authorized_keys");

        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port(config.listen);
            write_config(dir.path(), &config, port, &host_keys);
            let log_path = dir.path().join("sshd.log");
            let log = fs::File::create(&log_path).expect("create sshd log");
            let mut child = die_with_parent(&mut Command::new(SSHD))
                .args(["-D", "-e", "-f"])
                .arg(dir.path().join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn sshd");
            match wait_listening(&mut child, &log_path) {
                Ok(()) => {
                    return Sshd {
                        dir,
                        addr: config.listen,
                        port,
                        child,
                        host_keys,
                    };
                }
                Err(log) => {
                    stop_child(&mut child);
                    // Another process may have taken the port between
                    // free_port() and sshd's bind: try another one.
                    if !log.contains("Address already in use") {
                        panic!("sshd did not start:\n{log}");
                    }
                    last_log = log;
                }
            }
        }
        panic!("sshd did not start:\n{last_log}");
    }

    fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    /// Process id of the listening sshd.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Number of per-connection sshd processes (children of the listener):
    /// how many client connections the server still serves.
    pub fn connection_count(&self) -> usize {
        let out = Command::new("ps")
            .args(["-o", "pid=", "--ppid", &self.pid().to_string()])
            .output()
            .expect("run ps");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }

    /// The temp dir holding keys, config and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log so far (stderr of `sshd -e`).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Lets users other than the one running the tests log in: sshd reads
    /// `authorized_keys` as the logging-in user, and the temp dir is 0700.
    pub fn allow_other_users(&self) {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(self.dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod sshd dir");
        fs::set_permissions(
            self.dir.path().join("authorized_keys"),
            fs::Permissions::from_mode(0o644),
        )
        .expect("chmod authorized_keys");
    }

    /// Adds a public key line (`ssh-ed25519 AAAA... comment`) to the
    /// authorized keys of every user of this server.
    pub fn authorize(&self, public_key_line: &str) {
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .expect("open authorized_keys");
        writeln!(file, "{}", public_key_line.trim()).expect("append authorized_keys");
    }

    /// `ssh-ed25519 AAAA...` of the host key of type `kind`.
    pub fn host_key(&self, kind: &str) -> String {
        let (_, path) = self
            .host_keys
            .iter()
            .find(|(k, _)| *k == kind)
            .unwrap_or_else(|| panic!("this sshd has no {kind} host key"));
        let text = fs::read_to_string(path.with_extension("pub")).expect("read host key");
        let mut fields = text.split_whitespace();
        format!(
            "{} {}",
            fields.next().expect("key type"),
            fields.next().expect("key blob")
        )
    }

    /// The name this server is recorded under in known_hosts:
    /// `[127.0.0.1]:PORT`.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.addr.to_string()
        } else {
            format!("[{}]:{}", self.addr, self.port)
        }
    }

    /// A known_hosts line for the host key of type `kind`.
    pub fn known_hosts_line(&self, kind: &str) -> String {
        format!("{} {}", self.known_hosts_name(), self.host_key(kind))
    }

    /// Writes a known_hosts file listing the first host key.
    pub fn write_known_hosts(&self, path: &Path) {
        let kind = self.host_keys.first().expect("a host key").0;
        fs::write(path, format!("{}\n", self.known_hosts_line(kind))).expect("write known_hosts");
    }

    /// `SHA256:...` fingerprint of the host key of type `kind`, as
    /// `ssh-keygen -l` prints it.
    pub fn host_fingerprint(&self, kind: &str) -> String {
        let (_, path) = self
            .host_keys
            .iter()
            .find(|(k, _)| *k == kind)
            .unwrap_or_else(|| panic!("this sshd has no {kind} host key"));
        fingerprint(&path.with_extension("pub"))
    }

    /// An [`plumb::transport::Endpoint`] for this server.
    pub fn endpoint(&self, user: &str) -> plumb::transport::Endpoint {
        plumb::transport::Endpoint {
            host: format!("test-{}", self.port),
            address: self.addr.to_string(),
            port: self.port,
            user: user.to_string(),
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits (bounded) for "Server listening on" in the log; returns the log if
/// sshd exited or never got there.
fn wait_listening(child: &mut Child, log_path: &Path) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let log = fs::read_to_string(log_path).unwrap_or_default();
        if log.contains("Server listening on") {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("sshd exited with {status}:\n{log}"));
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            return Err(format!(
                "sshd not listening after {STARTUP_TIMEOUT:?}:\n{log}"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn write_config(dir: &Path, config: &SshdConfig, port: u16, host_keys: &[(&'static str, PathBuf)]) {
    let mut text = String::new();
    text.push_str(&format!("ListenAddress {}:{}\n", config.listen, port));
    for (_, path) in host_keys {
        text.push_str(&format!("HostKey {}\n", path.display()));
    }
    text.push_str(&format!(
        "AuthorizedKeysFile {}\n",
        dir.join("authorized_keys").display()
    ));
    text.push_str(&format!("SetEnv HOME={}\n", dir.display()));
    text.push_str(&format!("LogLevel {}\n", config.log_level));
    if let Some(kex) = &config.kex_algorithms {
        text.push_str(&format!("KexAlgorithms {kex}\n"));
    }
    text.push_str(
        "StrictModes no\n\
         UsePAM no\n\
         PidFile none\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         PrintMotd no\n\
         UseDNS no\n\
         MaxStartups 500\n\
         MaxAuthTries 20\n\
         LoginGraceTime 30\n\
         Subsystem sftp internal-sftp\n",
    );
    // OpenSSH 9.8+ penalises addresses that fail often; tests fail auth on
    // purpose, from one address. Older servers reject the keyword.
    if sshd_version() >= (9, 8) {
        text.push_str("PerSourcePenalties no\n");
    }
    for line in &config.extra {
        text.push_str(line);
        text.push('\n');
    }
    fs::write(dir.join("sshd_config"), text).expect("write sshd_config");
}

/// (major, minor) of the installed sshd, from `sshd -V`.
pub fn sshd_version() -> (u32, u32) {
    static VERSION: OnceLock<(u32, u32)> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let out = Command::new(SSHD).arg("-V").output().expect("run sshd -V");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let version = text
            .split("OpenSSH_")
            .nth(1)
            .expect("sshd -V prints OpenSSH_x.y");
        let mut numbers = version
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().unwrap_or(0));
        (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
    })
}

/// A port on `addr` that nothing listens on right now.
pub fn free_port(addr: IpAddr) -> u16 {
    let listener = TcpListener::bind((addr, 0)).expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Makes the child get SIGTERM when the thread that spawned it exits, so a
/// test run killed from outside (CI timeout, Ctrl-C) does not leave
/// servers behind. Linux ties this to the spawning *thread*: start servers
/// from a thread that outlives them (the test's own thread does).
fn die_with_parent(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: prctl is async-signal-safe and touches no Rust state.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// SIGTERM, then SIGKILL if it has not exited within 2 s; always reaped.
pub fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: plain kill(2) on a child we spawned and have not reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `ssh-keygen -t kind -N passphrase -f path`.
fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let mut command = Command::new("ssh-keygen");
    command.args(["-q", "-t", kind, "-N", passphrase, "-C", "plumb-test", "-f"]);
    command.arg(path);
    if kind == "rsa" {
        // 2048 bits: the smallest OpenSSH accepts by default, and fast.
        command.args(["-b", "2048"]);
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen -t {kind} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `SHA256:...` of a public key file.
pub fn fingerprint(public_key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(public_key)
        .output()
        .expect("run ssh-keygen -l");
    assert!(out.status.success(), "ssh-keygen -l failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_string()
}

/// A client key pair made by `ssh-keygen`.
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// The private key file.
    pub private: PathBuf,
    /// The public key line (`ssh-ed25519 AAAA... plumb-test`).
    pub public_line: String,
}

impl ClientKey {
    /// Generates a `kind` key pair (`ed25519`, `rsa`, `ecdsa`) named `name`
    /// in `dir`, without passphrase.
    pub fn generate(dir: &Path, name: &str, kind: &str) -> ClientKey {
        Self::generate_with_passphrase(dir, name, kind, "")
    }

    /// Same, protected by `passphrase`.
    pub fn generate_with_passphrase(
        dir: &Path,
        name: &str,
        kind: &str,
        passphrase: &str,
    ) -> ClientKey {
        let private = dir.join(name);
        keygen(&private, kind, passphrase);
        let public_line = fs::read_to_string(private.with_extension("pub"))
            .or_else(|_| fs::read_to_string(format!("{}.pub", private.display())))
            .expect("read public key");
        ClientKey {
            private,
            public_line: public_line.trim().to_string(),
        }
    }

    /// `SHA256:...` of this key.
    pub fn fingerprint(&self) -> String {
        fingerprint(Path::new(&format!("{}.pub", self.private.display())))
    }
}

/// An `ssh-agent -D -a SOCKET` of our own; killed when dropped.
pub struct SshAgent {
    child: Child,
    /// The agent socket (for `SSH_AUTH_SOCK`).
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl SshAgent {
    /// Starts an agent and waits (bounded) for its socket.
    pub fn start() -> SshAgent {
        let dir = tempfile::Builder::new()
            .prefix("plumb-agent-")
            .tempdir()
            .expect("agent temp dir");
        let socket = dir.path().join("agent.sock");
        let child = die_with_parent(&mut Command::new("ssh-agent"))
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ssh-agent");
        let mut agent = SshAgent {
            child,
            socket,
            _dir: dir,
        };
        let started = Instant::now();
        while !agent.socket.exists() {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("ssh-agent exited with {status}");
            }
            assert!(
                started.elapsed() < STARTUP_TIMEOUT,
                "ssh-agent socket did not appear"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        agent
    }

    /// `ssh-add`s a private key file.
    pub fn add(&self, private_key: &Path) {
        let out = Command::new("ssh-add")
            .arg(private_key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh-add");
        assert!(
            out.status.success(),
            "ssh-add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// The user the tests run as (the one sshd lets us log in as).
pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
