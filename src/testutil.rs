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
