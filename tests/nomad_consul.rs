//! `examples/nomad-consul` (seed 004 without Nomad): `plumb validate` and `plumb render` of the
//! example, with its secrets from the operator's secret command (the example's
//! `secret-command/vault-kv.sh` in demo mode, a real program run by plumb) and the age files.
//! `patroni --validate-config` on every rendered `patroni.yml` is in tests/validators.rs.

use assert_cmd::Command as Plumb;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example() -> PathBuf {
    root().join("examples/nomad-consul")
}

/// The demo store: one file per Vault field, in `dir`; returns the values.
fn demo_store(dir: &Path) -> Vec<String> {
    let mut values = Vec::new();
    for field in [
        "patroni_consul_token",
        "postgres_root_password",
        "postgres_replication_password",
        "postgres_rewind_password",
        "patroni_restapi_password",
    ] {
        let v = format!("store-{field}-{}", std::process::id());
        std::fs::write(dir.join(field), format!("{v}\n")).unwrap();
        values.push(v);
    }
    values
}

fn plumb(args: &[&str], store: Option<&Path>) -> std::process::Output {
    let mut cmd = Plumb::cargo_bin("plumb").unwrap();
    cmd.args(args)
        .env_remove("PLUMB_INVENTORY")
        .env_remove("PLUMB_AGE_IDENTITY")
        .env_remove("PLUMB_SECRET_COMMAND")
        .env_remove("PLUMB_DEMO_SECRETS");
    if let Some(s) = store {
        cmd.env("PLUMB_DEMO_SECRETS", s);
    }
    cmd.output().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn validate_checks_the_example_without_the_key_or_the_command() {
    let ex = example();
    let o = plumb(&["validate", &ex.to_string_lossy()], None);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("valid: 3 hosts, 3 manifests"), "{out}");
    assert!(
        out.contains("no --age-identity, no --secret-command"),
        "{out}"
    );
}

#[test]
fn render_takes_the_token_and_passwords_from_the_command_and_never_prints_them() {
    let ex = example();
    let store = tempfile::tempdir().unwrap();
    let values = demo_store(store.path());
    let id = root().join("examples/lab/demo-age-key.txt");
    let command = ex.join("secret-command/vault-kv.sh");
    let out = store.path().join("out");
    let args = [
        "render",
        &ex.to_string_lossy(),
        "--age-identity",
        &id.to_string_lossy(),
        "--secret-command",
        &command.to_string_lossy(),
    ]
    .map(|s| s.to_string());
    let mut shown = String::new();
    for extra in [
        vec![],
        vec!["--format".to_string(), "json".to_string()],
        vec!["-vv".to_string()],
        vec!["--out".to_string(), out.to_string_lossy().into_owned()],
    ] {
        let all: Vec<&str> = args.iter().chain(&extra).map(String::as_str).collect();
        let o = plumb(&all, Some(store.path()));
        assert!(o.status.success(), "{}", text(&o));
        shown.push_str(&text(&o));
    }
    for v in &values {
        assert!(!shown.contains(v.as_str()), "{v} was printed:\n{shown}");
    }
    assert!(shown.contains("<sensitive>"), "{shown}");
    // The files themselves hold the values (what the hosts would get).
    let patroni =
        std::fs::read_to_string(out.join("pg-srv2/home/postgres/config/patroni.yml")).unwrap();
    for v in &values {
        assert!(patroni.contains(&format!("\"{v}\"")), "{v}\n{patroni}");
    }
    assert!(
        patroni.contains("consul:\n  url: \"https://127.0.0.1:8501\""),
        "{patroni}"
    );
}

#[test]
fn a_failing_command_stops_the_run_before_any_host_with_the_line_of_the_name() {
    let ex = example();
    let store = tempfile::tempdir().unwrap();
    let values = demo_store(store.path());
    // The store lacks one field: the command fails for that name only.
    std::fs::remove_file(store.path().join("postgres_rewind_password")).unwrap();
    let id = root().join("examples/lab/demo-age-key.txt");
    let command = ex.join("secret-command/vault-kv.sh");
    let o = plumb(
        &[
            "converge",
            &ex.to_string_lossy(),
            "--age-identity",
            &id.to_string_lossy(),
            "--secret-command",
            &command.to_string_lossy(),
        ],
        Some(store.path()),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "secrets/external.txt:7:1: error: secret `postgres_rewind_password`: the secret command"
        ),
        "{err}"
    );
    assert!(err.contains("failed (exit status: 1"), "{err}");
    assert!(err.contains("nothing was contacted or changed"), "{err}");
    for v in &values {
        assert!(!err.contains(v.as_str()), "{err}");
    }
    // Without the command, rendering says how to give one.
    let o = plumb(
        &[
            "render",
            &ex.to_string_lossy(),
            "--age-identity",
            &id.to_string_lossy(),
        ],
        None,
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pass --secret-command PROGRAM"),
        "{}",
        text(&o)
    );
}

#[test]
fn the_example_command_serves_only_the_names_it_knows() {
    let store = tempfile::tempdir().unwrap();
    demo_store(store.path());
    let command = example().join("secret-command/vault-kv.sh");
    let o = std::process::Command::new(&command)
        .arg("../../etc/passwd")
        .env("PLUMB_DEMO_SECRETS", store.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(o.stdout.is_empty());
    let o = std::process::Command::new(&command)
        .arg("consul_token")
        .env("PLUMB_DEMO_SECRETS", store.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("store-patroni_consul_token-"));
}
