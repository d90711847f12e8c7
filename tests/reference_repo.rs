//! The reference cluster repo at the top of the project: it loads, renders for every host with
//! the demo identity (snapshots of each host's desired state), and no output of `plumb` ever
//! shows a secret value.

use assert_cmd::Command;
use plumb::load::{LoadOptions, Repo, load};
use plumb::render::render_all;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn identity() -> PathBuf {
    root().join("examples/lab/demo-age-key.txt")
}

fn reference() -> Repo {
    load(&LoadOptions {
        root: root(),
        identity: Some(identity()),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("the reference repo does not load:\n{e}"))
}

#[test]
fn the_reference_repo_has_the_seed_layout() {
    let repo = reference();
    let hosts: Vec<(&str, &str)> = repo
        .inventory
        .hosts
        .iter()
        .map(|h| (h.name.as_str(), h.address.as_str()))
        .collect();
    assert_eq!(
        hosts,
        [
            ("pg-backup-repo-server1", "192.168.150.211"),
            ("pg-srv1", "192.168.150.201"),
            ("pg-srv2", "192.168.150.202"),
            ("pg-srv3", "192.168.150.203"),
        ]
    );
    assert_eq!(
        repo.inventory.groups["postgres"].members,
        ["pg-srv1", "pg-srv2", "pg-srv3"]
    );
    assert_eq!(
        repo.inventory.groups["backup"].members,
        ["pg-backup-repo-server1"]
    );
    let kinds: Vec<String> = repo
        .manifests
        .iter()
        .map(|m| format!("{}/{}", m.kind, m.name))
        .collect();
    for k in [
        "CertificateAuthority/pg-ca",
        "PostgresCluster/postgres01",
        "BackupRepo/pgbackrest",
        "User/postgres",
        "Group/postgres",
    ] {
        assert!(kinds.contains(&k.to_string()), "{k} missing from {kinds:?}");
    }
}

/// One snapshot per host: everything plumb would converge there, sensitive content redacted.
/// The YAML is plumb's own (`plumb render` prints the same), so file contents show as block
/// scalars and a template change reads as a diff of the file.
#[test]
fn rendered_desired_state_per_host() {
    let repo = reference();
    let hosts = render_all(&repo).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hosts.len(), 4);
    for h in &hosts {
        let yaml = yaml_serde::to_string(h).unwrap();
        assert!(
            !yaml.contains(&*root().to_string_lossy()),
            "no absolute paths of this machine"
        );
        insta::assert_snapshot!(format!("desired_{}", h.host), yaml);
    }
}

/// Every secret of the reference repo, decrypted with the demo identity, with the lines of
/// multi-line values (the CA key) as extra needles.
fn secret_values(repo: &Repo) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in repo.secrets.names() {
        let v = repo
            .secrets
            .get(name)
            .unwrap_or_else(|e| panic!("{e}"))
            .expose()
            .to_string();
        assert!(
            v.len() >= 16,
            "demo secret `{name}` is too short to search for"
        );
        for line in v
            .lines()
            .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
        {
            out.push((format!("{name} (a line)"), line.to_string()));
        }
        out.push((name.clone(), v));
    }
    out
}

struct Run {
    what: String,
    code: i32,
    stdout: String,
    stderr: String,
}

fn plumb(args: &[&str]) -> Run {
    let out = Command::cargo_bin("plumb")
        .unwrap()
        .args(args)
        .env_remove("PLUMB_AGE_IDENTITY")
        .env_remove("PLUMB_INVENTORY")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    Run {
        what: format!("plumb {}", args.join(" ")),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn no_output_of_plumb_shows_a_secret() {
    let repo = reference();
    let secrets = secret_values(&repo);
    assert!(
        secrets.iter().any(|(n, _)| n == "pg-ca-key") && secrets.len() >= 7,
        "{:?}",
        secrets.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    let r = root();
    let r = r.to_str().unwrap();
    let id = identity();
    let id = id.to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("rendered");
    let out_dir = out_dir.to_str().unwrap();

    // A broken copy: a template applies a numeric filter to a password, so Tera's error
    // message quotes the value.
    let broken = tempfile::tempdir().unwrap();
    for d in ["inventory", "manifests", "templates", "secrets", "pki"] {
        copy_dir(&root().join(d), &broken.path().join(d));
    }
    let tpl = broken
        .path()
        .join("templates/postgres-cluster/patroni.yml.tera");
    let mut text = std::fs::read_to_string(&tpl).unwrap();
    text.push_str("x: {{ secret(name=\"postgres01_superuser_password\") | round }}\n");
    std::fs::write(&tpl, text).unwrap();
    let b = broken.path().to_str().unwrap();

    let runs = vec![
        plumb(&["render", r, "--age-identity", id]),
        plumb(&["render", r, "--age-identity", id, "--format", "json"]),
        plumb(&[
            "-vv",
            "render",
            r,
            "--age-identity",
            id,
            "--host",
            "pg-srv1",
        ]),
        plumb(&[
            "--log-format",
            "json",
            "-vv",
            "render",
            r,
            "--age-identity",
            id,
            "--host",
            "pg-backup-repo-server1",
            "--format",
            "json",
        ]),
        plumb(&["render", r, "--age-identity", id, "--out", out_dir]),
        plumb(&["validate", r, "--age-identity", id]),
        plumb(&["-vv", "validate", r]),
        plumb(&["secrets", "list", "--repo", r]),
        plumb(&[
            "-vv",
            "render",
            b,
            "--age-identity",
            id,
            "--host",
            "pg-srv2",
        ]),
        plumb(&["validate", b, "--age-identity", id]),
        plumb(&["render", r, "--age-identity", id, "--host", "no-such-host"]),
    ];

    // The runs did what they should, so the search below is not vacuous.
    for run in &runs[..8] {
        assert_eq!(run.code, 0, "{}:\n{}", run.what, run.stderr);
    }
    for run in &runs[8..] {
        assert_eq!(run.code, 1, "{} should fail:\n{}", run.what, run.stderr);
    }
    assert!(
        runs[0].stdout.contains("content: <sensitive>"),
        "{}",
        runs[0].stdout
    );
    assert!(
        runs[0].stdout.contains("kind: PostgresCluster")
            || runs[0].stdout.contains("via: PostgresCluster/postgres01")
    );
    assert!(runs[1].stdout.contains("\"content\": \"<sensitive>\""));
    assert!(
        runs[8].stderr.contains("Filter call 'round' failed"),
        "{}",
        runs[8].stderr
    );
    assert!(runs[8].stderr.contains("<sensitive>"), "{}", runs[8].stderr);
    assert!(
        runs[9].stderr.contains("Filter call 'round' failed"),
        "{}",
        runs[9].stderr
    );
    // The written files do hold the real values: the needles are the right ones.
    let patroni = std::fs::read_to_string(
        out.path()
            .join("rendered/pg-srv1/home/postgres/config/patroni.yml"),
    )
    .unwrap();
    let su = &secrets
        .iter()
        .find(|(n, _)| n == "postgres01_superuser_password")
        .unwrap()
        .1;
    assert!(patroni.contains(su.as_str()));

    for run in &runs {
        for (name, value) in &secrets {
            for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
                assert!(
                    !text.contains(value.as_str()),
                    "`{}` printed secret `{name}` on {stream}",
                    run.what
                );
            }
        }
    }
}
