//! examples/nomad-consul (seed 004) on the lab, in its etcd variant: the example's manifest
//! with `dcs: etcd` and its `consul:` section removed, as its README tells an operator to do
//! (Consul cannot be installed here). Every Patroni password comes from the example's secret
//! command (`secret-command/vault-kv.sh`, in its demo mode: one file per Vault field), the
//! `platform` role's from the repo's age secrets. One converge on fresh VMs ends with a healthy
//! cluster named after the seed's tenant (`default`); `platform` logs in through HAProxy's
//! write port with its password and writes; a second converge changes nothing.
//!
//! The cluster shares the members' folders with the reference cluster, so the test starts
//! and leaves the lab's VMs fresh (down, up, down): the next test brings the lab up again.
//! Needs a Docker engine; without one the test fails (a skipped test must not count as
//! passing).

mod support;

use std::path::Path;
use support::example::Fixture;
use support::lab;

/// Brings the lab down, whatever happens: its VMs hold this example's cluster.
struct Down;
impl Drop for Down {
    fn drop(&mut self) {
        lab::down();
    }
}

/// The etcd variant of the example's manifest: `dcs: etcd`, no `consul:` section.
fn etcd_variant(text: &str) -> String {
    let mut out = String::new();
    let mut in_consul = false;
    for line in text.lines() {
        if line.starts_with("consul:") {
            in_consul = true;
            continue;
        }
        if in_consul && (line.starts_with(' ') || line.is_empty()) {
            continue;
        }
        in_consul = false;
        out.push_str(&line.replace("dcs: consul", "dcs: etcd"));
        out.push('\n');
    }
    out
}

#[test]
fn the_etcd_variant_of_the_nomad_consul_example_converges_on_the_lab() {
    assert!(
        lab::docker_available(),
        "this test needs a Docker engine (the lab's VMs are containers)"
    );
    let _lock = lab::lock();
    let _down = Down;
    lab::down();
    lab::up();
    let f = Fixture::new("examples/nomad-consul", &lab::postgres_overlay());
    let manifest = f.repo.join("manifests/postgres.yaml");
    let text = std::fs::read_to_string(&manifest).expect("the example's manifest");
    let variant = etcd_variant(&text);
    assert!(
        variant.contains("dcs: etcd\n")
            && !variant.contains("consul:")
            && !variant.contains("dcs: consul"),
        "{variant}"
    );
    std::fs::write(&manifest, variant).expect("write the variant");

    // The secret command's demo mode: one file per Vault field, in a folder of the test's.
    let vault = tempfile::tempdir().expect("temp dir");
    for field in [
        "patroni_consul_token",
        "postgres_root_password",
        "postgres_replication_password",
        "postgres_rewind_password",
        "patroni_restapi_password",
    ] {
        std::fs::write(
            vault.path().join(field),
            format!("{field}-{}", std::process::id()),
        )
        .expect("write a demo secret");
    }
    // This binary has one test: nothing reads the environment concurrently.
    unsafe { std::env::set_var("PLUMB_DEMO_SECRETS", vault.path()) };
    let command = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/nomad-consul/secret-command/vault-kv.sh");
    let command = command.to_str().expect("a UTF-8 path");
    let pw = format!("platform-{}", std::process::id());
    f.set_secret("platform_password", &pw);

    let converge = || {
        let (code, out, err) =
            f.plumb(&["converge", "--output", "json", "--secret-command", command]);
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("converge JSON ({e}):\n{out}\n{err}"));
        (code, v["clusters"][0].clone(), out)
    };
    let (code, cluster, out) = converge();
    assert_eq!(code, 2, "{out}");
    assert_eq!(cluster["cluster"], "default", "{cluster}");
    assert_eq!(cluster["status"], "healthy", "{cluster}");
    for secret in [
        &pw,
        &format!("postgres_root_password-{}", std::process::id()),
    ] {
        assert!(!out.contains(secret.as_str()), "a secret in the report");
    }

    // `platform` logs in through pg-srv1's HAProxy write port and writes on the primary.
    let sql = "CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t VALUES (1); \
               SELECT pg_is_in_recovery()::text || ' ' || count(*) FROM t";
    let out = lab::exec(
        "pg-srv1",
        &format!(
            "docker exec -e PGPASSWORD='{pw}' -e PGCONNECT_TIMEOUT=5 default_patroni_1 \
             timeout -k 5 30 psql 'host={} port=5000 dbname=platform user=platform \
             sslmode=verify-ca sslrootcert=/home/postgres/config/tls/ca.crt' \
             -v ON_ERROR_STOP=1 -Atc \"{sql}\"",
            lab::address("pg-srv1")
        ),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.trim().lines().last() == Some("false 1"),
        "platform through 5000: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, cluster, out) = converge();
    assert_eq!(code, 0, "the second converge is not a no-op: {out}");
    assert_eq!(cluster["status"], "healthy", "{cluster}");
}
