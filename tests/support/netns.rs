//! Isolated networks for SSH tests: network namespaces joined by veth pairs, OpenSSH sshd
//! servers inside them (or on loopback), and commands run inside a namespace.
//!
//! Isolation never relies on the host's routing: a namespace has only its loopback and the
//! links the test creates, each with an address on its own /24 and no route beyond it (no
//! default route at all), so a packet can only reach a neighbour the test wired in, and no
//! packet can leave the machine. Every wait is bounded; processes started are killed (they
//! also get SIGTERM if the test thread dies) and namespaces deleted on drop, also when a test
//! fails; namespaces left by a test run that was killed are removed by the next run.
//!
//! Each sshd in a namespace gets a private tmpfs on /var/lib (in the mount namespace
//! `ip netns exec` makes), so two "hosts" on this one machine keep separate plumb state
//! folders, as two VMs would. Needs root, iproute2 and openssh-server.
#![allow(dead_code)] // each test binary uses a different part of it

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for sshd to listen.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Prefix of every namespace these tests create.
const PREFIX: &str = "plumbt";

/// A set of network namespaces for one test; deleted on drop.
pub struct Lab {
    tag: String,
    namespaces: Vec<String>,
    /// Scratch folder (configs, keys, logs).
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// A new lab; `tag` (a few letters) keeps parallel tests apart.
    pub fn new(tag: &str) -> Lab {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "network namespace tests need root"
        );
        remove_stale_namespaces();
        Lab {
            tag: format!("{PREFIX}-{}-{tag}", std::process::id()),
            namespaces: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix("plumb-netns-")
                .tempdir()
                .expect("lab temp dir"),
        }
    }

    /// Creates a namespace with its loopback up; returns its name.
    pub fn netns(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.tag);
        run(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// Joins two namespaces with a veth pair, giving each end an address (`10.9.1.1/24`).
    /// Only the two connected /24s are routable: no other route is added.
    pub fn link(&self, a: &str, a_addr: &str, b: &str, b_addr: &str) {
        let n = self.links_so_far(a, b);
        let (ia, ib) = (format!("v{n}a"), format!("v{n}b"));
        run(&[
            "ip", "link", "add", &ia, "netns", a, "type", "veth", "peer", "name", &ib, "netns", b,
        ]);
        run(&["ip", "-n", a, "addr", "add", a_addr, "dev", &ia]);
        run(&["ip", "-n", b, "addr", "add", b_addr, "dev", &ib]);
        run(&["ip", "-n", a, "link", "set", &ia, "up"]);
        run(&["ip", "-n", b, "link", "set", &ib, "up"]);
    }

    fn links_so_far(&self, a: &str, b: &str) -> usize {
        // Interface names only need to be unique inside each namespace.
        let count = |ns: &str| {
            let out = Command::new("ip")
                .args(["-n", ns, "-o", "link", "show"])
                .output()
                .expect("ip link show");
            String::from_utf8_lossy(&out.stdout).lines().count()
        };
        count(a) + count(b)
    }

    /// The routes of a namespace (`ip route show`), for asserting there is no default route.
    pub fn routes(&self, ns: &str) -> String {
        let out = Command::new("ip")
            .args(["-n", ns, "route", "show"])
            .output()
            .expect("ip route");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether a TCP connection from `ns` to `addr:port` succeeds within 3 s (bash's
    /// /dev/tcp, so nothing but bash is needed).
    pub fn tcp_reachable(&self, ns: &str, addr: &str, port: u16) -> bool {
        let out = run_bounded(
            Command::new("ip").args([
                "netns",
                "exec",
                ns,
                "timeout",
                "3",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{addr}/{port}"),
            ]),
            Duration::from_secs(10),
        );
        out.status.success()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            // Servers inside were stopped by their own drop (they are declared after the lab,
            // so dropped first); kill anything left, then delete.
            let _ = Command::new("ip")
                .args(["netns", "pids", &ns])
                .output()
                .map(|o| {
                    for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                        if let Ok(pid) = pid.parse::<i32>() {
                            unsafe {
                                libc::kill(pid, libc::SIGKILL);
                            }
                        }
                    }
                });
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// Deletes namespaces of earlier runs whose process is gone (a test killed mid-run).
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let pid: i32 = rest
            .split('-')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if pid > 0 && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn run(args: &[&str]) {
    let out = run_bounded(
        Command::new(args[0]).args(&args[1..]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command with a deadline (killed when it passes); stdout and stderr captured.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let dir = tempfile::tempdir().expect("output dir");
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&o).expect("stdout file"))
        .stderr(fs::File::create(&e).expect("stderr file"))
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let status = child.wait().expect("wait after kill");
            let mut err = fs::read(&e).unwrap_or_default();
            err.extend_from_slice(format!("\n[killed after {limit:?}]").as_bytes());
            return Output {
                status,
                stdout: fs::read(&o).unwrap_or_default(),
                stderr: err,
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: fs::read(&o).unwrap_or_default(),
        stderr: fs::read(&e).unwrap_or_default(),
    }
}

/// How to start a [`Server`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Namespace to run in; `None` for this machine's loopback.
    pub netns: Option<String>,
    /// Address to listen on.
    pub addr: String,
    /// Port; `None` picks a free one (loopback) or 22 (namespace).
    pub port: Option<u16>,
    /// `(CA private key, principal list, validity)` to sign the host key with (`ssh-keygen -s
    /// CA -h -n PRINCIPALS -V VALIDITY`); the certificate is served with `HostCertificate`.
    pub host_cert: Option<(PathBuf, String, String)>,
    /// A CA public key file for `TrustedUserCAKeys` (user certificates).
    pub trusted_user_ca: Option<PathBuf>,
    /// Extra `sshd_config` lines.
    pub extra: Vec<String>,
}

impl ServerConfig {
    /// In a namespace on port 22.
    pub fn in_netns(ns: &str, addr: &str) -> ServerConfig {
        ServerConfig {
            netns: Some(ns.to_string()),
            addr: addr.to_string(),
            port: Some(22),
            host_cert: None,
            trusted_user_ca: None,
            extra: Vec::new(),
        }
    }

    /// On 127.0.0.1, a free port.
    pub fn loopback() -> ServerConfig {
        ServerConfig {
            netns: None,
            addr: "127.0.0.1".into(),
            port: None,
            host_cert: None,
            trusted_user_ca: None,
            extra: Vec::new(),
        }
    }
}

/// A running sshd; killed on drop.
pub struct Server {
    /// Its folder (keys, config, log).
    pub dir: tempfile::TempDir,
    /// Address.
    pub addr: String,
    /// Port.
    pub port: u16,
    child: Child,
}

impl Server {
    /// Generates an ed25519 host key (and its certificate when asked), writes the config and
    /// starts sshd; waits (bounded) until it listens.
    pub fn start(config: ServerConfig) -> Server {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: apt-get install -y openssh-server"
        );
        let _ = fs::create_dir_all("/run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("plumb-sshd-")
            .tempdir()
            .expect("sshd dir");
        let key = dir.path().join("ssh_host_ed25519_key");
        keygen(&key, "ed25519");
        let port = config.port.unwrap_or_else(|| {
            let l = std::net::TcpListener::bind((config.addr.as_str(), 0)).expect("free port");
            l.local_addr().expect("addr").port()
        });
        let mut text = format!(
            "ListenAddress {}:{port}\nHostKey {}\nAuthorizedKeysFile {}\nSetEnv HOME={}\n",
            config.addr,
            key.display(),
            dir.path().join("authorized_keys").display(),
            dir.path().display()
        );
        if let Some((ca, principals, validity)) = &config.host_cert {
            let cert = sign(
                ca,
                &key.with_extension("pub"),
                "host",
                principals,
                validity,
                true,
            );
            text.push_str(&format!("HostCertificate {}\n", cert.display()));
        }
        if let Some(ca) = &config.trusted_user_ca {
            text.push_str(&format!("TrustedUserCAKeys {}\n", ca.display()));
        }
        text.push_str(
            "LogLevel VERBOSE\nStrictModes no\nUsePAM no\nPidFile none\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nAllowTcpForwarding yes\nPrintMotd no\nUseDNS no\n\
             MaxStartups 500\nMaxSessions 64\nMaxAuthTries 20\nLoginGraceTime 30\n",
        );
        for l in &config.extra {
            text.push_str(l);
            text.push('\n');
        }
        fs::write(dir.path().join("authorized_keys"), "").expect("authorized_keys");
        fs::write(dir.path().join("sshd_config"), text).expect("sshd_config");
        let log_path = dir.path().join("sshd.log");
        let log = fs::File::create(&log_path).expect("log");
        let sshd = format!(
            "exec /usr/sbin/sshd -D -e -f {}",
            dir.path().join("sshd_config").display()
        );
        let mut cmd = match &config.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                // A private /var/lib per "host" (this mount namespace only).
                c.args([
                    "netns",
                    "exec",
                    ns,
                    "sh",
                    "-c",
                    &format!("mount -t tmpfs -o mode=0755 plumb-lab /var/lib && {sshd}"),
                ]);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.args(["-c", &sshd]);
                c
            }
        };
        let mut child = die_with_parent(&mut cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn sshd");
        let started = Instant::now();
        loop {
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("Server listening on") {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("sshd exited with {status}:\n{text}");
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                stop_child(&mut child);
                panic!("sshd not listening after {STARTUP_TIMEOUT:?}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Server {
            dir,
            addr: config.addr,
            port,
            child,
        }
    }

    /// Authorizes a public key line for every user.
    pub fn authorize(&self, public_line: &str) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .expect("authorized_keys");
        writeln!(f, "{}", public_line.trim()).expect("append");
    }

    /// `ssh-ed25519 AAAA...` of the host key.
    pub fn host_key(&self) -> String {
        let text =
            fs::read_to_string(self.dir.path().join("ssh_host_ed25519_key.pub")).expect("host key");
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The host public key file.
    pub fn host_key_file(&self) -> PathBuf {
        self.dir.path().join("ssh_host_ed25519_key.pub")
    }

    /// Name in known_hosts: `addr` on port 22, `[addr]:port` otherwise.
    pub fn known_name(&self) -> String {
        if self.port == 22 {
            self.addr.clone()
        } else {
            format!("[{}]:{}", self.addr, self.port)
        }
    }

    /// A known_hosts line for this server.
    pub fn known_hosts_line(&self) -> String {
        format!("{} {}", self.known_name(), self.host_key())
    }

    /// The log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// How many logins this server accepted so far.
    pub fn logins(&self) -> usize {
        // Certificate logins end with the same line (`ED25519-CERT ... ID name`).
        self.log().matches("Accepted publickey for").count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// `ssh-keygen -t kind -N '' -f path`.
pub fn keygen(path: &Path, kind: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "plumb-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ssh-keygen -s CA -I ID [-h] -n PRINCIPALS -V VALIDITY KEY.pub`; returns the certificate.
pub fn sign(
    ca: &Path,
    public: &Path,
    id: &str,
    principals: &str,
    validity: &str,
    host: bool,
) -> PathBuf {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-s"]).arg(ca).args(["-I", id]);
    if host {
        cmd.arg("-h");
    }
    cmd.args(["-n", principals, "-V", validity]).arg(public);
    let out = cmd.stdin(Stdio::null()).output().expect("ssh-keygen -s");
    assert!(
        out.status.success(),
        "ssh-keygen -s: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = public
        .file_name()
        .expect("name")
        .to_string_lossy()
        .trim_end_matches(".pub")
        .to_string();
    public.with_file_name(format!("{name}-cert.pub"))
}

/// Makes the child get SIGTERM when the test thread ends, so a killed test run leaves no
/// server behind.
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

/// SIGTERM, then SIGKILL after 2 s; always reaped.
pub fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own unreaped child.
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

/// An ed25519 client key in `dir`; returns (private key path, public key line).
pub fn client_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let p = dir.join(name);
    keygen(&p, "ed25519");
    let public = fs::read_to_string(format!("{}.pub", p.display())).expect("public key");
    (p, public.trim().to_string())
}
