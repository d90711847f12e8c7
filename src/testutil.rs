//! Test helpers: a small cluster repo in a temp folder (inventory, a CA, placeholder secrets).

use crate::diag::Diagnostics;
use crate::kinds::{Desired, DesiredHost};
use crate::load::{LoadOptions, Repo};
use crate::render::render_host;

/// Three members and a backup host, like the reference repo with shorter names.
pub const INVENTORY: &str = "\
defaults:
  vars:
    cluster_network: 10.0.0.0/24
groups:
  postgres: {}
  backup: {}
hosts:
  pg1: { address: 10.0.0.1, groups: [postgres] }
  pg2: { address: 10.0.0.2, groups: [postgres] }
  pg3: { address: 10.0.0.3, groups: [postgres] }
  backup1: { address: 10.0.0.11, groups: [backup] }
";

/// The CA manifest every test repo has.
pub const PKI: &str = "\
kind: CertificateAuthority
name: pg-ca
common_name: test CA
certificate: pki/pg-ca.crt
key: { secret: pg-ca-key }
";

/// Secrets that exist (as files; with placeholders they are never decrypted).
pub const SECRETS: &[&str] = &["pg-ca-key", "su", "repl", "rewind", "api", "app"];

/// Writes a repo with the given extra files (path, text) and returns its folder.
pub fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["inventory", "manifests", "secrets", "pki"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("inventory/hosts.yaml"), INVENTORY).unwrap();
    std::fs::write(root.join("manifests/pki.yaml"), PKI).unwrap();
    let ca = crate::pki::create_ca("test CA", 30).unwrap();
    std::fs::write(root.join("pki/pg-ca.crt"), ca.cert_pem).unwrap();
    for s in SECRETS {
        std::fs::write(
            root.join(format!("secrets/{s}.age")),
            "not decrypted in tests",
        )
        .unwrap();
    }
    for (path, text) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

/// Loads a test repo (secrets render as placeholders).
pub fn load(dir: &tempfile::TempDir) -> Result<Repo, Diagnostics> {
    crate::load::load(&LoadOptions {
        root: dir.path().to_path_buf(),
        placeholders: true,
        ..Default::default()
    })
}

/// Loads a repo that must fail validation and returns every message, one per line.
pub fn errors(files: &[(&str, &str)]) -> String {
    let dir = repo(files);
    match load(&dir) {
        Ok(_) => panic!("the repo should not validate"),
        Err(ds) => ds.to_string(),
    }
}

/// Renders one host of a valid repo.
pub fn render(dir: &tempfile::TempDir, host: &str) -> DesiredHost {
    let repo = load(dir).unwrap_or_else(|e| panic!("{e}"));
    let h = repo.inventory.host(host).unwrap();
    render_host(&repo, h).unwrap_or_else(|e| panic!("{e}"))
}

/// The item `kind/name` of a rendered host.
pub fn item<'a>(h: &'a DesiredHost, kind: &str, name: &str) -> &'a Desired {
    h.resources
        .iter()
        .find(|d| d.kind == kind && d.name == name)
        .unwrap_or_else(|| {
            let all: Vec<String> = h
                .resources
                .iter()
                .map(|d| format!("{}/{}", d.kind, d.name))
                .collect();
            panic!("no {kind}/{name} on {}; have: {all:#?}", h.host)
        })
}

/// The text of a file-like item (File, SystemdUnit, ComposeStack compose file).
pub fn text(d: &Desired) -> String {
    use crate::kinds::PrimitiveSpec;
    let c = match &d.spec {
        PrimitiveSpec::File(f) => f.content.as_ref(),
        PrimitiveSpec::SystemdUnit(u) => u.content.as_ref(),
        PrimitiveSpec::ComposeStack(s) => s.compose.as_ref(),
        _ => None,
    };
    String::from_utf8(c.expect("content").bytes().to_vec()).unwrap()
}

// Planning fixtures: probe record text in, a kind's plan out, no host involved.

/// A SHA-256 that is not the hash of any content a test declares.
pub const OTHER_SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Base64 of `text`, as the probe prints text a host user may choose.
pub fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Parses the record lines of `body` (resource records, `A` records, kind facts) the way the
/// probe's output is parsed, between the start and end records: `resources` resources, `dirs`
/// folders, and every host fact the registered kinds may print.
pub fn probe_output(
    body: &str,
    resources: usize,
    dirs: usize,
) -> Result<crate::vocab::records::HostRecords, crate::vocab::records::ProbeError> {
    let text = format!(
        "H\tbegin\t{}\nH\tuid\t0\nH\thostname\ttest\nH\tstate\tnone\n{body}H\tdone\n",
        crate::vocab::records::PROTOCOL
    );
    crate::vocab::records::parse_records(&text, resources, dirs, &crate::kinds::fact_keys())
}

/// The records of one resource (index 0), parsed from `body`; panics on a malformed record.
pub fn records(body: &str) -> crate::vocab::records::HostRecords {
    probe_output(body, 1, 0).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// What a `pl_path` record says of a regular file: `file<TAB>MODE UID GID OWNER GROUP SIZE<TAB>SHA`.
pub fn file_rec(mode: &str, owner: &str, group: &str, size: u64, sha: &str) -> String {
    let id = |n: &str| if n == "root" { "0" } else { "1001" };
    format!(
        "file\t{mode} {} {} {owner} {group} {size}\t{sha}",
        id(owner),
        id(group)
    )
}

/// What a `pl_path` record says of a folder: `dir<TAB>MODE UID GID OWNER GROUP`.
pub fn dir_rec(mode: &str, owner: &str, group: &str) -> String {
    let id = |n: &str| if n == "root" { "0" } else { "1001" };
    format!("dir\t{mode} {} {} {owner} {group}", id(owner), id(group))
}

/// A planner context for a Linux host with systemd and `docker compose`, seen by root.
pub fn plan_cx() -> crate::vocab::cx::PlanCx {
    let facts = [
        ("uid", "0"),
        ("systemd", "yes"),
        ("compose", "docker compose"),
        ("state", "none"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    crate::vocab::cx::PlanCx {
        facts,
        now: 1_800_000_000,
        force_reissue: false,
        prune_users: false,
        dirs: Default::default(),
    }
}

/// A desired resource built directly from its state, as rendering would (no repo needed).
pub fn desired(name: &str, spec: crate::kinds::PrimitiveSpec) -> Desired {
    Desired {
        kind: spec.kind(),
        name: name.to_string(),
        origin: crate::model::desired::Origin {
            file: "manifests/test.yaml".into(),
            mark: Default::default(),
            via: None,
        },
        drift: Default::default(),
        notify: Vec::new(),
        spec,
    }
}

/// A host whose desired state is `resources`, ordered by rank as rendering orders them.
pub fn host(resources: Vec<Desired>) -> DesiredHost {
    let mut resources = resources;
    resources.sort_by_key(|d| d.spec.rank());
    DesiredHost {
        host: "pg1".into(),
        resources,
    }
}

/// A resource the host state says plumb manages.
pub fn managed(kind: &str, name: &str, paths: &[&str]) -> crate::vocab::state::Managed {
    crate::vocab::state::Managed {
        kind: kind.into(),
        name: name.into(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

/// A repo (see [`repo`]) whose secrets `values` (name, value) are really encrypted, loaded with
/// their identity: rendering reads the values, as a converge does.
pub fn repo_with_secrets(
    files: &[(&str, &str)],
    values: &[(&str, &str)],
) -> (tempfile::TempDir, Repo) {
    use age::secrecy::ExposeSecret;
    let dir = repo(files);
    let id = age::x25519::Identity::generate();
    std::fs::write(
        dir.path().join("secrets/recipients.txt"),
        format!("{}\n", id.to_public()),
    )
    .unwrap();
    let id_file = dir.path().join("identity.txt");
    std::fs::write(&id_file, id.to_string().expose_secret()).unwrap();
    // Every secret must decrypt with the identity: those the test does not give hold a
    // stand-in value.
    for name in SECRETS {
        if !values.iter().any(|(n, _)| n == name) {
            let stand_in = format!("stand-in value of {name}");
            crate::secrets::SecretStore::set(dir.path(), name, stand_in.as_bytes()).unwrap();
        }
    }
    for (name, value) in values {
        crate::secrets::SecretStore::set(dir.path(), name, value.as_bytes()).unwrap();
    }
    let repo = crate::load::load(&LoadOptions {
        root: dir.path().to_path_buf(),
        identity: Some(id_file),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    (dir, repo)
}
