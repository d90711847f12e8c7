//! The SSH transport against OpenSSH's real sshd on loopback.
//!
//! Every test starts its own sshd (tests/support/sshd.rs) on 127.0.0.1 and a
//! free port; nothing here talks to anything but loopback.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plumb::transport::{
    ConnectOptions, ConnectStage, Connection, HostKeyPolicy, Identity, Privilege, TransportError,
};
use sha2::{Digest as _, Sha256};
use support::sshd::{ClientKey, SshAgent, Sshd, SshdConfig, current_user, free_port};

/// An sshd, a client key it accepts, and a known_hosts file that lists it.
struct Fixture {
    sshd: Sshd,
    key: ClientKey,
    dir: tempfile::TempDir,
    known_hosts: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        Self::with(SshdConfig::default())
    }

    fn with(config: SshdConfig) -> Fixture {
        let sshd = Sshd::start_with(config);
        let dir = tempfile::tempdir().expect("tempdir");
        let key = ClientKey::generate(dir.path(), "id_ed25519", "ed25519");
        sshd.authorize(&key.public_line);
        let known_hosts = dir.path().join("known_hosts");
        sshd.write_known_hosts(&known_hosts);
        Fixture {
            sshd,
            key,
            dir,
            known_hosts,
        }
    }

    fn options(&self) -> ConnectOptions {
        let mut opts =
            ConnectOptions::new(Identity::File(self.key.private.clone()), &self.known_hosts);
        opts.connect_timeout = Duration::from_secs(10);
        opts.command_timeout = Duration::from_secs(60);
        opts
    }

    async fn connect(&self) -> Connection {
        self.connect_with(&self.options()).await
    }

    async fn connect_with(&self, opts: &ConnectOptions) -> Connection {
        match Connection::open(&self.sshd.endpoint(&current_user()), opts).await {
            Ok(conn) => conn,
            Err(e) => panic!("connect failed: {e}\nsshd log:\n{}", self.sshd.log()),
        }
    }

    async fn try_connect(&self, opts: &ConnectOptions) -> Result<Connection, TransportError> {
        Connection::open(&self.sshd.endpoint(&current_user()), opts).await
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn script_output_and_exit_status_are_preserved() {
    let f = Fixture::new();
    let conn = f.connect().await;

    let out = conn
        .run_script(b"echo out\necho err >&2\nprintf 'a\\000b\\377'\nexit 3\n")
        .await
        .expect("run");
    assert_eq!(out.stdout, b"out\na\0b\xff");
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status, 3);
    assert!(!out.success());
    assert_eq!(out.signal, None);

    let ok = conn.run_script(b"true\n").await.expect("run");
    assert!(ok.success());
    assert!(ok.stdout.is_empty() && ok.stderr.is_empty());

    // The script runs under sh, not the login shell.
    let shell = conn.run_script(b"echo $0\n").await.expect("run");
    assert_eq!(text(&shell.stdout), "sh\n");

    // exec: one command line through the login shell, stdin empty (cat
    // returns at once instead of hanging).
    let exec = conn.exec("cat; echo done; exit 7").await.expect("exec");
    assert_eq!(text(&exec.stdout), "done\n");
    assert_eq!(exec.status, 7);
    conn.close().await;
}

#[tokio::test]
async fn close_ends_the_remote_session() {
    let f = Fixture::new();
    let conn = f.connect().await;
    conn.run_script(b"true\n").await.expect("run");
    assert_eq!(f.sshd.connection_count(), 1);
    let started = Instant::now();
    conn.close().await;
    eprintln!("close took {:?}", started.elapsed());
    // sshd's per-connection process exits once it reads our disconnect.
    let deadline = Instant::now() + Duration::from_secs(2);
    while f.sshd.connection_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(f.sshd.connection_count(), 0, "sshd log:\n{}", f.sshd.log());
}

#[tokio::test]
async fn killed_command_reports_signal() {
    let f = Fixture::new();
    let conn = f.connect().await;
    let out = conn
        .run_script(b"echo before\nkill -TERM $$\necho after\n")
        .await
        .expect("run");
    assert_eq!(text(&out.stdout), "before\n");
    assert_eq!(out.signal.as_deref(), Some("TERM"));
    assert_eq!(out.status, 128 + 15);
    assert!(!out.success());
}

/// Deterministic pseudo-random bytes (xorshift), so a failure reproduces.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn multi_megabyte_script_round_trips_intact() {
    use base64::Engine as _;
    let f = Fixture::new();
    let conn = f.connect().await;

    let payload = pseudo_random(4 * 1024 * 1024);
    let encoded = base64::engine::general_purpose::STANDARD.encode(&payload);
    let mut script = Vec::new();
    // Output first, while the rest of the script is still on its way: the
    // transport must read while it writes or both sides stall.
    script.extend_from_slice(b"head -c 3000000 /dev/zero | tr '\\000' z\n");
    script.extend_from_slice(b"base64 -d <<'PLUMB_EOF' | sha256sum\n");
    for line in encoded.as_bytes().chunks(76) {
        script.extend_from_slice(line);
        script.push(b'\n');
    }
    script.extend_from_slice(b"PLUMB_EOF\n");
    assert!(script.len() > 5_000_000);

    let out = conn.run_script(&script).await.expect("run");
    assert_eq!(out.status, 0, "stderr: {}", text(&out.stderr));
    let (zs, hash_line) = out.stdout.split_at(3_000_000);
    assert!(zs.iter().all(|&b| b == b'z'));
    let expected = format!("{}  -\n", hex::encode(Sha256::digest(&payload)));
    assert_eq!(text(hash_line), expected);
}

#[tokio::test]
async fn output_beyond_the_limit_is_an_error_and_the_connection_survives() {
    let f = Fixture::new();
    let mut opts = f.options();
    opts.max_output = 1024 * 1024;
    let conn = f.connect_with(&opts).await;
    let err = conn
        .run_script(b"head -c 2000000 /dev/zero\n")
        .await
        .expect_err("2 MB > 1 MiB limit");
    assert!(
        matches!(
            err,
            TransportError::OutputTooLarge {
                stream: "stdout",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("more than 1048576 bytes to stdout"),
        "{err}"
    );
    let out = conn.run_script(b"echo ok\n").await.expect("still usable");
    assert_eq!(text(&out.stdout), "ok\n");
}

#[tokio::test]
async fn unknown_host_key_is_refused_with_fingerprint_and_not_recorded() {
    let f = Fixture::new();
    std::fs::write(&f.known_hosts, "# nothing known yet\n").expect("write");
    let err = f
        .try_connect(&f.options())
        .await
        .expect_err("unknown key must be refused");
    let message = err.to_string();
    eprintln!("{message}");
    assert!(
        matches!(err, TransportError::UnknownHostKey { .. }),
        "{message}"
    );
    let fingerprint = f.sshd.host_fingerprint("ed25519");
    assert!(
        message.contains(&fingerprint),
        "fingerprint {fingerprint} missing: {message}"
    );
    assert!(
        message.contains(&f.known_hosts.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "ssh-keyscan -p {} -t ed25519 127.0.0.1",
            f.sshd.port
        )),
        "{message}"
    );
    assert!(message.contains("--accept-new-host-keys"), "{message}");
    assert_eq!(
        std::fs::read_to_string(&f.known_hosts).expect("read"),
        "# nothing known yet\n",
        "Strict must not write known_hosts"
    );

    // A missing file is the same: refused, and not created.
    let missing = f.dir.path().join("absent").join("known_hosts");
    let mut opts = f.options();
    opts.known_hosts = missing.clone();
    let err = f.try_connect(&opts).await.expect_err("refused");
    assert!(
        matches!(err, TransportError::UnknownHostKey { .. }),
        "{err}"
    );
    assert!(!missing.exists());
}

#[tokio::test]
async fn accept_new_records_the_key_and_strict_then_trusts_it() {
    let f = Fixture::new();
    let known_hosts = f.dir.path().join("fresh").join("known_hosts");
    let mut opts = f.options();
    opts.known_hosts = known_hosts.clone();
    opts.host_key_policy = HostKeyPolicy::AcceptNew;
    let conn = f.connect_with(&opts).await;
    assert!(conn.run_script(b"true\n").await.expect("run").success());
    conn.close().await;

    let recorded = std::fs::read_to_string(&known_hosts).expect("known_hosts written");
    assert_eq!(
        recorded,
        format!("{}\n", f.sshd.known_hosts_line("ed25519"))
    );
    // OpenSSH itself finds the entry under the [addr]:port name.
    let found = Command::new("ssh-keygen")
        .args(["-F", &f.sshd.known_hosts_name(), "-f"])
        .arg(&known_hosts)
        .output()
        .expect("ssh-keygen -F");
    assert!(
        found.status.success(),
        "ssh-keygen -F did not find the learned entry"
    );

    opts.host_key_policy = HostKeyPolicy::Strict;
    let again = f.connect_with(&opts).await;
    assert!(again.run_script(b"true\n").await.expect("run").success());
    // Nothing more written on a known host.
    assert_eq!(
        std::fs::read_to_string(&known_hosts).expect("read"),
        recorded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_first_contacts_record_the_key_once() {
    let f = Arc::new(Fixture::new());
    let known_hosts = f.dir.path().join("tofu_known_hosts");
    let mut opts = f.options();
    opts.known_hosts = known_hosts.clone();
    opts.host_key_policy = HostKeyPolicy::AcceptNew;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (f, opts) = (Arc::clone(&f), opts.clone());
            tokio::spawn(async move {
                let conn = f.try_connect(&opts).await?;
                conn.close().await;
                Ok::<_, TransportError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("join").unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        std::fs::read_to_string(&known_hosts).expect("read"),
        format!("{}\n", f.sshd.known_hosts_line("ed25519"))
    );
}

#[tokio::test]
async fn sshd_on_another_loopback_address() {
    let f = Fixture::with(SshdConfig {
        listen: "127.0.0.2".parse().expect("ip"),
        ..SshdConfig::default()
    });
    assert!(f.sshd.known_hosts_name().starts_with("[127.0.0.2]:"));
    let conn = f.connect().await;
    let out = conn
        .run_script(b"echo $SSH_CONNECTION\n")
        .await
        .expect("run");
    let fields: Vec<String> = text(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(
        fields.get(2).map(String::as_str),
        Some("127.0.0.2"),
        "{fields:?}"
    );
    assert_eq!(fields.get(3), Some(&f.sshd.port.to_string()));
}

#[tokio::test]
async fn changed_host_key_is_refused_even_with_accept_new() {
    let f = Fixture::new();
    let other = ClientKey::generate(f.dir.path(), "impostor", "ed25519");
    let mut fields = other.public_line.split_whitespace();
    let other_key = format!(
        "{} {}",
        fields.next().expect("type"),
        fields.next().expect("blob")
    );
    let contents = format!("# header\n{} {other_key}\n", f.sshd.known_hosts_name());
    std::fs::write(&f.known_hosts, &contents).expect("write");

    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let mut opts = f.options();
        opts.host_key_policy = policy;
        let err = f
            .try_connect(&opts)
            .await
            .expect_err("changed key must be refused");
        let message = err.to_string();
        eprintln!("{message}");
        assert!(
            matches!(err, TransportError::HostKeyChanged { line: 2, .. }),
            "{message}"
        );
        assert!(message.starts_with("HOST KEY CHANGED for "), "{message}");
        assert!(message.contains("line 2 has"), "{message}");
        assert!(
            message.contains(&other.fingerprint()),
            "recorded fingerprint: {message}"
        );
        assert!(
            message.contains(&f.sshd.host_fingerprint("ed25519")),
            "offered: {message}"
        );
        assert!(message.contains("refusing to connect"), "{message}");
        assert_eq!(
            std::fs::read_to_string(&f.known_hosts).expect("read"),
            contents
        );
    }
}

#[tokio::test]
async fn hashed_known_hosts_entry_is_accepted() {
    let f = Fixture::new();
    let hashed = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&f.known_hosts)
        .output()
        .expect("ssh-keygen -H");
    assert!(hashed.status.success());
    let contents = std::fs::read_to_string(&f.known_hosts).expect("read");
    assert!(contents.starts_with("|1|"), "{contents}");
    assert!(!contents.contains("127.0.0.1"), "{contents}");
    let conn = f.connect().await;
    assert!(conn.run_script(b"true\n").await.expect("run").success());
}

#[tokio::test]
async fn non_standard_port_needs_the_bracketed_entry() {
    let f = Fixture::new();
    // An entry for the bare address stands for port 22 only.
    std::fs::write(
        &f.known_hosts,
        format!("127.0.0.1 {}\n", f.sshd.host_key("ed25519")),
    )
    .expect("write");
    let err = f
        .try_connect(&f.options())
        .await
        .expect_err("port 22 entry must not match");
    assert!(
        matches!(err, TransportError::UnknownHostKey { .. }),
        "{err}"
    );

    std::fs::write(
        &f.known_hosts,
        format!(
            "[127.0.0.1]:{} {}\n",
            f.sshd.port,
            f.sshd.host_key("ed25519")
        ),
    )
    .expect("write");
    let conn = f.connect().await;
    assert!(conn.run_script(b"true\n").await.expect("run").success());
}

#[tokio::test]
async fn host_key_type_recorded_in_known_hosts_is_negotiated() {
    // The server has ed25519 and RSA host keys; we only know the RSA one.
    // Plain ed25519-first negotiation would get a key we cannot verify.
    let f = Fixture::with(SshdConfig {
        host_key_types: vec!["ed25519", "rsa"],
        ..SshdConfig::default()
    });
    std::fs::write(
        &f.known_hosts,
        format!("{}\n", f.sshd.known_hosts_line("rsa")),
    )
    .expect("write");
    let conn = f.connect().await;
    assert!(conn.run_script(b"true\n").await.expect("run").success());

    // And with nothing recorded, ed25519 is what the host is asked for.
    std::fs::write(&f.known_hosts, "").expect("write");
    let err = f.try_connect(&f.options()).await.expect_err("unknown");
    match err {
        TransportError::UnknownHostKey { algorithm, .. } => assert_eq!(algorithm, "ssh-ed25519"),
        other => panic!("expected UnknownHostKey, got {other}"),
    }
}

#[tokio::test]
async fn key_exchange_prefers_curve25519_and_falls_back() {
    let f = Fixture::with(SshdConfig {
        log_level: "DEBUG1",
        ..SshdConfig::default()
    });
    let conn = f.connect().await;
    conn.close().await;
    assert!(
        f.sshd.log().contains("kex: algorithm: curve25519-sha256"),
        "sshd log:\n{}",
        f.sshd.log()
    );

    let g = Fixture::with(SshdConfig {
        kex_algorithms: Some("diffie-hellman-group14-sha256".into()),
        log_level: "DEBUG1",
        ..SshdConfig::default()
    });
    let conn = g.connect().await;
    assert!(conn.run_script(b"true\n").await.expect("run").success());
    assert!(
        g.sshd
            .log()
            .contains("kex: algorithm: diffie-hellman-group14-sha256")
    );
}

#[tokio::test]
async fn wrong_client_key_gets_a_clear_auth_error() {
    let f = Fixture::new();
    let stranger = ClientKey::generate(f.dir.path(), "stranger", "ed25519");
    let mut opts = f.options();
    opts.identity = Identity::File(stranger.private.clone());
    let err = f.try_connect(&opts).await.expect_err("not authorized");
    let message = err.to_string();
    eprintln!("{message}");
    assert!(
        matches!(err, TransportError::AuthFailed { .. }),
        "{message}"
    );
    let user = current_user();
    assert!(
        message.starts_with(&format!("authentication failed for {user}@test-")),
        "{message}"
    );
    assert!(
        message.contains(&stranger.private.display().to_string()),
        "{message}"
    );
    assert!(message.contains(&stranger.fingerprint()), "{message}");
    assert!(message.contains("authorized_keys"), "{message}");
}

#[tokio::test]
async fn rsa_and_ecdsa_client_keys_authenticate() {
    // The server takes only rsa-sha2-256 for RSA: the client must pick the
    // hash from server-sig-algs rather than assume SHA-512 (or SHA-1).
    let f = Fixture::with(SshdConfig {
        extra: vec!["PubkeyAcceptedAlgorithms rsa-sha2-256,ecdsa-sha2-nistp256,ssh-ed25519".into()],
        ..SshdConfig::default()
    });
    for (name, kind) in [("id_rsa", "rsa"), ("id_ecdsa", "ecdsa")] {
        let key = ClientKey::generate(f.dir.path(), name, kind);
        f.sshd.authorize(&key.public_line);
        let mut opts = f.options();
        opts.identity = Identity::File(key.private.clone());
        let conn = f.connect_with(&opts).await;
        let out = conn.run_script(b"echo $0\n").await.expect("run");
        assert_eq!(text(&out.stdout), "sh\n", "{kind}");
    }
}

#[tokio::test]
async fn encrypted_key_asks_for_ssh_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ClientKey::generate_with_passphrase(dir.path(), "locked", "ed25519", "secret phrase");
    let opts = ConnectOptions::new(
        Identity::File(key.private.clone()),
        dir.path().join("known_hosts"),
    );
    // No server needed: the key is refused before any connection.
    let endpoint = plumb::transport::Endpoint {
        host: "h".into(),
        address: "127.0.0.1".into(),
        port: free_port("127.0.0.1".parse().expect("ip")),
        user: "root".into(),
    };
    let err = Connection::open(&endpoint, &opts)
        .await
        .expect_err("encrypted");
    let message = err.to_string();
    eprintln!("{message}");
    assert!(
        matches!(err, TransportError::IdentityEncrypted { .. }),
        "{message}"
    );
    assert!(message.contains("ssh-add"), "{message}");
    assert!(
        message.contains(&key.private.display().to_string()),
        "{message}"
    );

    let mut missing = opts.clone();
    missing.identity = Identity::File(dir.path().join("nope"));
    let err = Connection::open(&endpoint, &missing)
        .await
        .expect_err("missing");
    assert!(matches!(err, TransportError::IdentityRead { .. }), "{err}");
}

#[tokio::test]
async fn ssh_agent_identity_logs_in() {
    let f = Fixture::new();
    let agent = SshAgent::start();
    let mut opts = f.options();
    opts.identity = Identity::AgentSocket(agent.socket.clone());

    // An empty agent is a clear local error.
    let err = f.try_connect(&opts).await.expect_err("empty agent");
    assert!(matches!(err, TransportError::Agent { .. }), "{err}");
    assert!(err.to_string().contains("holds no keys"), "{err}");

    // A key the server does not accept first, then the right one: the
    // agent's keys are tried in order.
    let stranger = ClientKey::generate(f.dir.path(), "stranger", "ed25519");
    agent.add(&stranger.private);
    let err = f.try_connect(&opts).await.expect_err("wrong key only");
    assert!(matches!(err, TransportError::AuthFailed { .. }), "{err}");
    assert!(err.to_string().contains(&stranger.fingerprint()), "{err}");

    agent.add(&f.key.private);
    let conn = f.connect_with(&opts).await;
    let out = conn.run_script(b"echo via-agent\n").await.expect("run");
    assert_eq!(text(&out.stdout), "via-agent\n");
    conn.close().await;
    drop(agent);

    // And a socket nobody listens on.
    let err = f.try_connect(&opts).await.expect_err("agent gone");
    assert!(matches!(err, TransportError::Agent { .. }), "{err}");
}

#[tokio::test]
async fn closed_port_fails_fast_naming_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ClientKey::generate(dir.path(), "id", "ed25519");
    let opts = ConnectOptions::new(Identity::File(key.private), dir.path().join("known_hosts"));
    let port = free_port("127.0.0.1".parse().expect("ip"));
    let endpoint = plumb::transport::Endpoint {
        host: "pg-srv9".into(),
        address: "127.0.0.1".into(),
        port,
        user: "root".into(),
    };
    let started = Instant::now();
    let err = Connection::open(&endpoint, &opts)
        .await
        .expect_err("nothing listens");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, TransportError::Connect { .. }), "{message}");
    assert!(
        message.contains(&format!("pg-srv9 (127.0.0.1:{port})")),
        "{message}"
    );
    assert!(message.to_lowercase().contains("refused"), "{message}");
}

#[tokio::test]
async fn silent_server_hits_the_connect_timeout_in_the_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ClientKey::generate(dir.path(), "id", "ed25519");
    let mut opts = ConnectOptions::new(Identity::File(key.private), dir.path().join("known_hosts"));
    opts.connect_timeout = Duration::from_secs(1);
    // The kernel completes the TCP handshake for a listening socket even if
    // nobody accepts; no SSH banner ever comes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let endpoint = plumb::transport::Endpoint {
        host: "mute".into(),
        address: "127.0.0.1".into(),
        port,
        user: "root".into(),
    };
    let started = Instant::now();
    let err = Connection::open(&endpoint, &opts)
        .await
        .expect_err("timeout");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    let message = err.to_string();
    eprintln!("{message}");
    assert!(
        matches!(
            err,
            TransportError::ConnectTimeout {
                stage: ConnectStage::Handshake,
                ..
            }
        ),
        "{message}"
    );
    assert!(
        message.contains("timed out after 1s during the SSH handshake"),
        "{message}"
    );
    drop(listener);
}

#[tokio::test]
async fn something_else_on_the_port_is_a_handshake_error() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ClientKey::generate(dir.path(), "id", "ed25519");
    let opts = ConnectOptions::new(Identity::File(key.private), dir.path().join("known_hosts"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let endpoint = plumb::transport::Endpoint {
        host: "web1".into(),
        address: "127.0.0.1".into(),
        port,
        user: "root".into(),
    };
    let err = Connection::open(&endpoint, &opts)
        .await
        .expect_err("not SSH");
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, TransportError::Handshake { .. }), "{message}");
    assert!(
        message.starts_with(&format!(
            "SSH handshake with web1 (127.0.0.1:{port}) failed"
        )),
        "{message}"
    );
    server.join().expect("server thread");
}

#[tokio::test]
async fn command_timeout_fires_and_the_connection_stays_usable() {
    let f = Fixture::new();
    let mut opts = f.options();
    opts.command_timeout = Duration::from_secs(1);
    let conn = f.connect_with(&opts).await;
    let started = Instant::now();
    let err = conn
        .run_script(b"sleep 30\n")
        .await
        .expect_err("must time out");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let message = err.to_string();
    eprintln!("{message}");
    assert!(
        matches!(err, TransportError::CommandTimeout { .. }),
        "{message}"
    );
    assert!(
        message.contains("timed out after 1s (command timeout)"),
        "{message}"
    );
    let out = conn
        .run_script(b"echo still-here\n")
        .await
        .expect("run after timeout");
    assert_eq!(text(&out.stdout), "still-here\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_connections_all_succeed() {
    let f = Arc::new(Fixture::new());
    let mut tasks = Vec::new();
    for i in 0..20 {
        let f = Arc::clone(&f);
        tasks.push(tokio::spawn(async move {
            let conn = f.try_connect(&f.options()).await?;
            let out = conn.run_script(format!("echo {i}\n").as_bytes()).await?;
            conn.close().await;
            Ok::<_, TransportError>((i, out))
        }));
    }
    for task in tasks {
        let (i, out) = task
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("{e}\n{}", f.sshd.log()));
        assert_eq!(text(&out.stdout), format!("{i}\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_parallel_commands_than_max_sessions_on_one_connection() {
    // sshd allows 10 sessions per connection; 16 callers must queue, not fail.
    let f = Fixture::new();
    let conn = Arc::new(f.connect().await);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let conn = Arc::clone(&conn);
        tasks.push(tokio::spawn(async move {
            conn.run_script(format!("sleep 0.2; echo {i}\n").as_bytes())
                .await
                .map(|o| (i, o))
        }));
    }
    for task in tasks {
        let (i, out) = task.await.expect("join").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text(&out.stdout), format!("{i}\n"));
    }
}

/// Opens 50 connections at once to one sshd and runs `true` on each; prints
/// the wall time (the per-host floor of a no-op converge).
/// `cargo test --release --test transport fanout -- --nocapture`
#[tokio::test(flavor = "multi_thread")]
async fn fanout_50_connections_timing() {
    let f = Arc::new(Fixture::new());
    // Warm up (page cache, sshd binary) so the figure is the steady state.
    f.connect()
        .await
        .run_script(b"true\n")
        .await
        .expect("warm-up");
    let cpu_before = process_cpu_time();
    let started = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let f = Arc::clone(&f);
            tokio::spawn(async move {
                let conn = f.try_connect(&f.options()).await?;
                let out = conn.run_script(b"true\n").await?;
                conn.close().await;
                Ok::<_, TransportError>(out.status)
            })
        })
        .collect();
    for task in tasks {
        let status = task.await.expect("join").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 0);
    }
    let elapsed = started.elapsed();
    let client_cpu = process_cpu_time().saturating_sub(cpu_before);
    println!(
        "fanout: 50 parallel connections + `true` on one sshd in {elapsed:?} \
         (plumb's own CPU: {client_cpu:?}, {:?} per connection)",
        client_cpu / 50
    );
}

/// User + system CPU time of this process (not of sshd).
fn process_cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; zeroed is a valid start.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// A throwaway system user, removed (with its sudoers file) on drop.
struct SystemUser {
    name: String,
    sudoers: Option<PathBuf>,
}

impl SystemUser {
    fn create(name: &str, passwordless_sudo: bool) -> SystemUser {
        let _ = Command::new("userdel").arg(name).output();
        // A uid far above the normal range: containers on this machine run
        // their own users (postgres is 1001 there), and a shared uid would
        // make userdel see their processes as ours.
        let mut uid = 3_000_000 + std::process::id() % 1_000_000 * 2;
        while Command::new("getent")
            .args(["passwd", &uid.to_string()])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            uid += 1;
        }
        let out = Command::new("useradd")
            .args([
                "-M",
                "-N",
                "-d",
                "/nonexistent",
                "-s",
                "/bin/sh",
                "-u",
                &uid.to_string(),
                name,
            ])
            .output()
            .expect("run useradd");
        assert!(
            out.status.success(),
            "useradd {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // useradd locks the password ("!"), and sshd without PAM refuses
        // locked accounts even for key logins; "*" means "no password".
        let status = Command::new("usermod")
            .args(["-p", "*", name])
            .status()
            .expect("usermod");
        assert!(status.success());
        let mut user = SystemUser {
            name: name.to_string(),
            sudoers: None,
        };
        if passwordless_sudo {
            let path = PathBuf::from(format!("/etc/sudoers.d/{name}"));
            std::fs::write(&path, format!("{name} ALL=(ALL) NOPASSWD: ALL\n"))
                .expect("write sudoers");
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).expect("chmod");
            user.sudoers = Some(path.clone());
            let check = Command::new("visudo")
                .arg("-cf")
                .arg(&path)
                .output()
                .expect("visudo");
            assert!(check.status.success(), "sudoers file invalid");
        }
        user
    }
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        if let Some(path) = &self.sudoers {
            let _ = std::fs::remove_file(path);
        }
        // userdel refuses while sshd still runs a session process of the
        // user, which can outlive the client side by a moment.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            match Command::new("userdel").arg(&self.name).output() {
                Ok(out) if out.status.success() => return,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let _ = Command::new("userdel").arg("-f").arg(&self.name).output();
    }
}

fn is_root() -> bool {
    current_user() == "root"
}

#[tokio::test]
async fn sudo_for_non_root_users() {
    if !is_root() {
        eprintln!("SKIPPED sudo_for_non_root_users: needs root to create throwaway users");
        return;
    }
    assert!(
        Path::new("/usr/bin/sudo").exists(),
        "sudo is not installed: apt-get install -y sudo"
    );
    let f = Fixture::new();
    f.sshd.allow_other_users();
    let pid = std::process::id();
    let admin = SystemUser::create(&format!("plumbsu{pid}"), true);
    let nobody = SystemUser::create(&format!("plumbns{pid}"), false);

    let endpoint = |user: &str| f.sshd.endpoint(user);
    let opts = f.options();

    // Auto: non-root user → sudo -n → root.
    let conn = Connection::open(&endpoint(&admin.name), &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.sshd.log()));
    assert!(conn.uses_sudo());
    let out = conn
        .run_script(b"id -u\necho err >&2\nexit 4\n")
        .await
        .expect("run");
    assert_eq!(text(&out.stdout), "0\n", "stderr: {}", text(&out.stderr));
    assert_eq!(out.status, 4, "the script's own status survives sudo");
    let out = conn
        .exec("id -un; echo \"it's quoted\"")
        .await
        .expect("exec");
    assert_eq!(text(&out.stdout), "root\nit's quoted\n");
    conn.close().await;

    // None: stays the login user.
    let mut plain = opts.clone();
    plain.privilege = Privilege::None;
    let conn = Connection::open(&endpoint(&admin.name), &plain)
        .await
        .expect("open");
    assert!(!conn.uses_sudo());
    let out = conn.run_script(b"id -un\n").await.expect("run");
    assert_eq!(text(&out.stdout), format!("{}\n", admin.name));
    conn.close().await;

    // A user without sudo rights gets the clear error, for scripts and exec.
    let conn = Connection::open(&endpoint(&nobody.name), &opts)
        .await
        .expect("open");
    let err = conn
        .run_script(b"id -u\n")
        .await
        .expect_err("no sudo rights");
    let message = err.to_string();
    eprintln!("{message}");
    assert!(
        matches!(err, TransportError::SudoPasswordRequired { .. }),
        "{message}"
    );
    assert!(
        message.contains(&format!("sudo on test-{}", f.sshd.port)),
        "{message}"
    );
    assert!(
        message.contains(&format!("needs a password for user {}", nobody.name)),
        "{message}"
    );
    assert!(message.contains("NOPASSWD"), "{message}");
    assert!(
        message.ends_with("sudo said: sudo: a password is required"),
        "{message}"
    );
    let err = conn.exec("id -u").await.expect_err("no sudo rights");
    assert!(
        matches!(err, TransportError::SudoPasswordRequired { .. }),
        "{err}"
    );
    conn.close().await;
}
