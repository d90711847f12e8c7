//! OpenSSH certificates against a real sshd on loopback: host certificates made with
//! `ssh-keygen -s CA -h` verified through known_hosts `@cert-authority` lines (valid, expired,
//! not yet valid, wrong principal, revoked, unknown CA, CA for other hosts), and user
//! certificates (`KEY-cert.pub` beside the key, `CertificateFile`) accepted by
//! `TrustedUserCAKeys`.

#[path = "support/netns.rs"]
mod netns;

use netns::{Server, ServerConfig, client_key, keygen, sign};
use plumb::transport::route::{self, RunSettings};
use plumb::transport::ssh_config::{ConfigKind, Env, SshConfig};
use plumb::transport::{ConnectOptions, Connection, Endpoint, Identity, TransportError};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Ca {
    private: PathBuf,
    public_line: String,
}

fn ca(dir: &Path, name: &str) -> Ca {
    let private = dir.join(name);
    keygen(&private, "ed25519");
    let public = fs::read_to_string(format!("{}.pub", private.display())).expect("ca pub");
    Ca {
        private,
        public_line: public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn endpoint(s: &Server) -> Endpoint {
    Endpoint {
        host: "h".into(),
        address: s.addr.clone(),
        port: s.port,
        user: "root".into(),
    }
}

fn options(key: &Path, known_hosts: &Path) -> ConnectOptions {
    let mut o = ConnectOptions::new(Identity::File(key.to_path_buf()), known_hosts);
    o.connect_timeout = Duration::from_secs(10);
    o
}

/// An sshd on loopback serving a host certificate, a client key it accepts, and a scratch dir.
struct Fixture {
    dir: tempfile::TempDir,
    server: Server,
    key: PathBuf,
    ca: Ca,
}

impl Fixture {
    fn new(principals: &str, validity: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("dir");
        let ca = ca(dir.path(), "host_ca");
        let mut config = ServerConfig::loopback();
        config.host_cert = Some((ca.private.clone(), principals.into(), validity.into()));
        let server = Server::start(config);
        let (key, public) = client_key(dir.path(), "id_ed25519");
        server.authorize(&public);
        Fixture {
            dir,
            server,
            key,
            ca,
        }
    }

    fn known_hosts(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("known_hosts");
        fs::write(&p, text).expect("known_hosts");
        p
    }

    async fn connect(&self, known_hosts_text: &str) -> Result<Connection, TransportError> {
        let kh = self.known_hosts(known_hosts_text);
        Connection::open(&endpoint(&self.server), &options(&self.key, &kh)).await
    }
}

#[tokio::test]
async fn a_valid_host_certificate_is_trusted_through_its_ca() {
    let f = Fixture::new("127.0.0.1,localhost", "-5m:+1h");
    // Only the CA is known: the plain host key is not, so success means the certificate was
    // asked for, presented and verified.
    let conn = f
        .connect(&format!(
            "# fleet CA\n@cert-authority [127.0.0.1]:*,*.example {}\n",
            f.ca.public_line
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.server.log()));
    let out = conn.exec("echo certified").await.expect("exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "certified\n");
    conn.close().await;
}

#[tokio::test]
async fn an_expired_host_certificate_is_refused() {
    let f = Fixture::new("127.0.0.1", "20200101:20200102");
    let err = f
        .connect(&format!("@cert-authority * {}\n", f.ca.public_line))
        .await
        .expect_err("expired");
    assert!(
        matches!(err, TransportError::HostCertificateInvalid { line: 1, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("it expired on 2020-01-02"),
        "{err}"
    );
}

#[tokio::test]
async fn a_host_certificate_not_yet_valid_is_refused() {
    let f = Fixture::new("127.0.0.1", "+1d:+2d");
    let err = f
        .connect(&format!("@cert-authority * {}\n", f.ca.public_line))
        .await
        .expect_err("not yet valid");
    assert!(err.to_string().contains("it is not valid before"), "{err}");
}

#[tokio::test]
async fn a_host_certificate_for_another_name_is_refused() {
    let f = Fixture::new("db1.example,10.0.0.7", "-5m:+1h");
    let err = f
        .connect(&format!("@cert-authority * {}\n", f.ca.public_line))
        .await
        .expect_err("wrong principal");
    let msg = err.to_string();
    assert!(msg.contains("it is not valid for `127.0.0.1`"), "{msg}");
    assert!(msg.contains("db1.example, 10.0.0.7"), "{msg}");

    // OpenSSH's fallback: the certificate's plain key listed for the host is trusted.
    let plain = format!(
        "@cert-authority * {}\n{}\n",
        f.ca.public_line,
        f.server.known_hosts_line()
    );
    f.connect(&plain)
        .await
        .expect("plain key listed")
        .close()
        .await;
}

#[tokio::test]
async fn revoked_host_keys_and_revoked_cas_are_refused() {
    let f = Fixture::new("127.0.0.1", "-5m:+1h");
    let err = f
        .connect(&format!(
            "@cert-authority * {}\n@revoked * {}\n",
            f.ca.public_line,
            f.server.host_key()
        ))
        .await
        .expect_err("host key revoked");
    assert!(
        matches!(err, TransportError::HostKeyRevoked { line: 2, .. }),
        "{err}"
    );

    let err = f
        .connect(&format!(
            "@cert-authority * {}\n\n@revoked [127.0.0.1]:* {}\n",
            f.ca.public_line, f.ca.public_line
        ))
        .await
        .expect_err("CA revoked");
    assert!(
        matches!(err, TransportError::HostKeyRevoked { line: 3, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    let f = Fixture::new("127.0.0.1", "-5m:+1h");
    let other = ca(f.dir.path(), "other_ca");
    let err = f
        .connect(&format!("@cert-authority * {}\n", other.public_line))
        .await
        .expect_err("unknown CA");
    assert!(
        matches!(err, TransportError::HostCertificateUntrusted { .. }),
        "{err}"
    );

    // A CA trusted for other hosts only is not asked about here: the host's plain key is
    // checked, and it is unknown.
    let err = f
        .connect(&format!("@cert-authority *.example {}\n", f.ca.public_line))
        .await
        .expect_err("CA for other hosts");
    assert!(
        matches!(err, TransportError::UnknownHostKey { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn user_certificates_log_in() {
    let dir = tempfile::tempdir().expect("dir");
    let user_ca = ca(dir.path(), "user_ca");
    let mut config = ServerConfig::loopback();
    config.trusted_user_ca = Some(PathBuf::from(format!("{}.pub", user_ca.private.display())));
    let server = Server::start(config);
    let kh = dir.path().join("known_hosts");
    fs::write(&kh, format!("{}\n", server.known_hosts_line())).expect("known_hosts");

    // The key alone is not authorized anywhere: only its certificate is.
    let (key, _) = client_key(dir.path(), "id_ed25519");
    let plain_only = Connection::open(&endpoint(&server), &options(&key, &kh)).await;
    assert!(
        matches!(plain_only, Err(TransportError::AuthFailed { .. })),
        "{plain_only:?}"
    );

    // KEY-cert.pub beside the key, as ssh-keygen -s writes it.
    let cert = sign(
        &user_ca.private,
        Path::new(&format!("{}.pub", key.display())),
        "ops-alice",
        "root",
        "-5m:+1h",
        false,
    );
    let conn = Connection::open(&endpoint(&server), &options(&key, &kh))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    conn.close().await;
    let cert_logins = |log: &str| log.matches("ID ops-alice (serial 0) CA").count();
    assert!(
        server.log().contains("ssh2: ED25519-CERT")
            && server.log().contains("ID ops-alice (serial 0) CA"),
        "{}",
        server.log()
    );
    assert_eq!(cert_logins(&server.log()), 1);

    // Elsewhere, named by ssh_config's CertificateFile.
    let moved = dir.path().join("certs/alice-cert.pub");
    fs::create_dir_all(moved.parent().expect("parent")).expect("certs dir");
    fs::rename(&cert, &moved).expect("move cert");
    let env = Env {
        home: dir.path().to_path_buf(),
        local_user: "root".into(),
        local_host: "ctl".into(),
        uid: 0,
    };
    let cfg = SshConfig::parse_str(
        &dir.path().join("config"),
        &format!(
            "Host cert-host\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {}\n  CertificateFile ~/certs/alice-cert.pub\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n",
            server.port,
            key.display(),
            kh.display()
        ),
        ConfigKind::User,
        &env,
    )
    .expect("config");
    let spec = route::HostSpec {
        name: "cert-host".into(),
        alias: route::Setting::inventory("cert-host".to_string(), "test"),
        address_given: false,
        user: None,
        port: None,
        key: None,
        known_hosts: None,
        jump: None,
        privilege: plumb::transport::Privilege::None,
    };
    let run = RunSettings {
        accept_new_host_keys: false,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(30),
        default_known_hosts: None,
        env,
    };
    let resolved = route::resolve(&spec, &cfg, &run).expect("resolves");
    assert_eq!(resolved.hop.options.certificates, vec![moved.clone()]);
    let pool = plumb::transport::jump::Bastions::new();
    let conn = pool
        .connect(&resolved.route())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    conn.close().await;
    assert_eq!(cert_logins(&server.log()), 2, "{}", server.log());

    // A certificate for another user is refused by sshd.
    let (key2, _) = client_key(dir.path(), "id_bob");
    sign(
        &user_ca.private,
        Path::new(&format!("{}.pub", key2.display())),
        "bob",
        "bob",
        "-5m:+1h",
        false,
    );
    let err = Connection::open(&endpoint(&server), &options(&key2, &kh))
        .await
        .expect_err("principal bob cannot log in as root");
    assert!(matches!(err, TransportError::AuthFailed { .. }), "{err}");
    assert!(err.to_string().contains("certificate `bob`"), "{err}");
}
