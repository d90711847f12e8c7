//! `Identity::Agent` finds the agent through `SSH_AUTH_SOCK`.
//!
//! A test binary of its own because it changes the process environment,
//! which is only sound while no other thread reads it: this file holds a
//! single test, and the variable is set before the runtime starts.

mod support;

use std::time::Duration;

use plumb::transport::{ConnectOptions, Connection, Identity, TransportError};
use support::sshd::{ClientKey, SshAgent, Sshd, current_user};

#[test]
fn agent_identity_uses_ssh_auth_sock() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ClientKey::generate(dir.path(), "id_ed25519", "ed25519");
    sshd.authorize(&key.public_line);
    let known_hosts = dir.path().join("known_hosts");
    sshd.write_known_hosts(&known_hosts);
    let agent = SshAgent::start();
    agent.add(&key.private);
    let mut opts = ConnectOptions::new(Identity::Agent, &known_hosts);
    opts.connect_timeout = Duration::from_secs(10);
    let endpoint = sshd.endpoint(&current_user());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // SAFETY: the only test in this binary; no other thread of ours reads
    // the environment while it is changed.
    unsafe { std::env::remove_var("SSH_AUTH_SOCK") };
    let err = runtime
        .block_on(Connection::open(&endpoint, &opts))
        .expect_err("no agent configured");
    assert!(matches!(err, TransportError::Agent { .. }), "{err}");
    assert!(
        err.to_string().contains("SSH_AUTH_SOCK is not set"),
        "{err}"
    );

    // SAFETY: as above.
    unsafe { std::env::set_var("SSH_AUTH_SOCK", &agent.socket) };
    let out = runtime.block_on(async {
        let conn = Connection::open(&endpoint, &opts)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
        let out = conn.run_script(b"echo env-agent\n").await.expect("run");
        conn.close().await;
        out
    });
    assert_eq!(out.stdout, b"env-agent\n");
}
