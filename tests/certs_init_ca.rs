//! `plumb certs init-ca` follows the CertificateAuthority manifest (certificate path, key secret,
//! common name) even though the repo cannot validate before the CA exists.

use assert_cmd::Command;

#[test]
fn init_ca_uses_the_manifest_of_a_repo_that_does_not_validate_yet() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("inventory")).unwrap();
    std::fs::create_dir_all(root.join("manifests")).unwrap();
    std::fs::create_dir_all(root.join("secrets")).unwrap();
    std::fs::write(
        root.join("inventory/hosts.yaml"),
        "hosts:\n  h1: { address: 10.0.0.1 }\n",
    )
    .unwrap();
    std::fs::write(
        root.join("manifests/pki.yaml"),
        "kind: CertificateAuthority\nname: pg-ca\ncommon_name: Reference CA\ncertificate: tls/ca.pem\nkey: { secret: the-ca-key }\n",
    )
    .unwrap();
    let id = age::x25519::Identity::generate();
    std::fs::write(
        root.join("secrets/recipients.txt"),
        id.to_public().to_string(),
    )
    .unwrap();

    let out = Command::cargo_bin("plumb")
        .unwrap()
        .args(["certs", "init-ca", "pg-ca", "--repo"])
        .arg(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read_to_string(root.join("tls/ca.pem")).unwrap();
    let info = plumb::pki::inspect(&pem).unwrap();
    assert_eq!(info.common_name, "Reference CA");
    assert!(root.join("secrets/the-ca-key.age").is_file());
}
