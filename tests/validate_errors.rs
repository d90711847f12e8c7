//! `plumb validate` on broken repos: each bad input gives a non-zero exit and a message with the
//! file, line and field, and several problems are reported in one run.

use assert_cmd::Command;
use std::path::Path;

const INVENTORY: &str = "\
defaults:
  ssh_user: root
  vars: { motd: hello }
groups:
  web: { vars: { port: 8080 } }
  db: {}
hosts:
  w1: { address: 10.0.0.1, groups: [web] }
  w2: { address: 10.0.0.2, groups: [web] }
  d1: { address: 10.0.0.3, groups: [db] }
";

const TEMPLATE: &str = "port={{ port }}\nmotd={{ motd }}\n";

/// A repo with a valid inventory and template plus the given extra files.
fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "inventory/hosts.yaml", INVENTORY);
    write(dir.path(), "templates/app.conf.tera", TEMPLATE);
    for (path, text) in files {
        write(dir.path(), path, text);
    }
    dir
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Runs validate; returns (exit code, stderr).
fn validate(dir: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::cargo_bin("plumb")
        .unwrap()
        .arg("validate")
        .arg(dir)
        .args(extra)
        .env_remove("PLUMB_AGE_IDENTITY")
        .env_remove("PLUMB_INVENTORY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_error(files: &[(&str, &str)], expected: &[&str]) {
    let dir = repo(files);
    let (code, err) = validate(dir.path(), &[]);
    assert_eq!(code, 1, "exit code; stderr:\n{err}");
    for e in expected {
        assert!(err.contains(e), "expected `{e}` in:\n{err}");
    }
    assert!(err.contains("nothing was contacted or changed"), "{err}");
}

const GOOD_FILE: &str =
    "kind: File\nhosts: group:web\npath: /etc/app.conf\ntemplate: app.conf.tera\n";

#[test]
fn a_valid_repo_passes() {
    let dir = repo(&[("manifests/app.yaml", GOOD_FILE)]);
    let (code, err) = validate(dir.path(), &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn yaml_syntax_error() {
    assert_error(
        &[(
            "manifests/app.yaml",
            "kind: File\nhosts: [group:web\npath: /etc/x\n",
        )],
        &["manifests/app.yaml:", "YAML syntax error"],
    );
}

#[test]
fn unknown_field() {
    assert_error(
        &[(
            "manifests/app.yaml",
            "kind: File\nhosts: all\npath: /etc/x\ncontent: x\nowner_name: root\n",
        )],
        &[
            "manifests/app.yaml:5:1",
            "field `owner_name`",
            "unknown field `owner_name`",
        ],
    );
    // The hint names the closest field, not a command that does not exist.
    let dir = repo(&[(
        "manifests/app.yaml",
        "kind: File\nhosts: all\npath: /etc/x\ncontent: x\nownr: root\n",
    )]);
    let (_, err) = validate(dir.path(), &[]);
    assert!(
        err.contains("hint: did you mean `owner`? A File takes the fields listed above"),
        "{err}"
    );
    assert!(!err.contains("plumb explain"), "{err}");
}

#[test]
fn wrong_type() {
    assert_error(
        &[(
            "manifests/u.yaml",
            "kind: User\nname: app\nhosts: all\nuid: lots\n",
        )],
        &[
            "manifests/u.yaml:4:6",
            "field `uid`",
            "invalid type: string \"lots\", expected u32",
        ],
    );
}

#[test]
fn unknown_kind() {
    assert_error(
        &[("manifests/x.yaml", "kind: Filee\nname: x\nhosts: all\n")],
        &[
            "manifests/x.yaml:1:7",
            "unknown kind `Filee`",
            "did you mean `File`",
        ],
    );
}

#[test]
fn selector_names_unknown_host_or_group() {
    assert_error(
        &[(
            "manifests/app.yaml",
            "kind: File\nhosts: [host:w1, group:webb, host:w9]\npath: /etc/x\ncontent: x\n",
        )],
        &[
            "field `hosts[1]`: selector names unknown group `webb`",
            "field `hosts[2]`: selector names unknown host `w9`",
            "known groups: db, web",
        ],
    );
}

#[test]
fn duplicate_resource_same_kind_and_name() {
    assert_error(
        &[
            (
                "manifests/a.yaml",
                "kind: User\nname: app\nhosts: all\nuid: 2000\n",
            ),
            (
                "manifests/b.yaml",
                "kind: User\nname: app\nhosts: all\nuid: 2000\n",
            ),
        ],
        &[
            "manifests/b.yaml:2:7",
            "duplicate resource `User/app`: already declared at manifests/a.yaml:1",
        ],
    );
}

#[test]
fn two_resources_writing_one_path() {
    assert_error(
        &[(
            "manifests/a.yaml",
            "kind: File\nname: one\nhosts: all\npath: /etc/x\ncontent: a\n---\nkind: File\nname: two\nhosts: host:w1\npath: /etc/x\ncontent: b\n",
        )],
        &[
            "manifests/a.yaml:7:1",
            "File/one and File/two both write `/etc/x` on host `w1`",
        ],
    );
}

#[test]
fn missing_template() {
    assert_error(
        &[(
            "manifests/a.yaml",
            "kind: File\nhosts: all\npath: /etc/x\ntemplate: app.cnf.tera\n",
        )],
        &[
            "manifests/a.yaml:4:11",
            "template `app.cnf.tera` does not exist",
            "did you mean `app.conf.tera`",
        ],
    );
}

#[test]
fn template_with_undefined_variable_names_the_template_line() {
    assert_error(
        &[
            ("templates/bad.tera", "a={{ port }}\nb={{ portt }}\n"),
            (
                "manifests/a.yaml",
                "kind: File\nhosts: group:web\npath: /etc/x\ntemplate: bad.tera\n",
            ),
        ],
        &[
            "templates/bad.tera:2:",
            "variable `portt` is not defined",
            "hosts `w1`, `w2`",
        ],
    );
}

#[test]
fn template_syntax_error_names_the_line() {
    assert_error(
        &[(
            "templates/broken.tera",
            "ok\n{% if port %}\nno end\n{{ x \n",
        )],
        &["templates/broken.tera:", "template syntax error"],
    );
}

#[test]
fn uid_conflict_between_two_users() {
    assert_error(
        &[(
            "manifests/u.yaml",
            "kind: User\nname: postgres\nhosts: all\nuid: 1001\n---\nkind: User\nname: pgadmin\nhosts: group:db\nuid: 1001\n",
        )],
        &[
            "manifests/u.yaml:6:1",
            "uid 1001 is given to both User/postgres and User/pgadmin on host `d1`",
        ],
    );
}

#[test]
fn gid_conflict_between_two_groups() {
    assert_error(
        &[(
            "manifests/g.yaml",
            "kind: Group\nname: a\nhosts: all\ngid: 1001\n---\nkind: Group\nname: b\nhosts: all\ngid: 1001\n",
        )],
        &["gid 1001 is given to both Group/a and Group/b"],
    );
}

#[test]
fn relative_file_path() {
    assert_error(
        &[(
            "manifests/a.yaml",
            "kind: File\nhosts: all\npath: etc/app.conf\ncontent: x\n",
        )],
        &[
            "manifests/a.yaml:3:7",
            "field `path`",
            "path `etc/app.conf` is relative",
        ],
    );
}

#[test]
fn file_path_with_dotdot() {
    assert_error(
        &[(
            "manifests/a.yaml",
            "kind: File\nhosts: all\npath: /opt/app/../../etc/shadow\ncontent: x\n",
        )],
        &["manifests/a.yaml:3:7", "contains `..`"],
    );
}

#[test]
fn source_file_escaping_the_repo() {
    assert_error(
        &[(
            "manifests/a.yaml",
            "kind: File\nhosts: all\npath: /etc/x\nsource: ../../etc/passwd\n",
        )],
        &["manifests/a.yaml:4:9", "leaves the repo"],
    );
}

#[test]
fn command_without_guard() {
    assert_error(
        &[(
            "manifests/c.yaml",
            "kind: Command\nname: init\nhosts: all\nrun: /usr/local/bin/init-db\n",
        )],
        &[
            "manifests/c.yaml:4:6",
            "a Command needs a guard",
            "creates:",
        ],
    );
}

#[test]
fn mode_not_octal() {
    assert_error(
        &[(
            "manifests/a.yaml",
            "kind: File\nhosts: all\npath: /etc/x\ncontent: x\nmode: \"0958\"\n",
        )],
        &[
            "manifests/a.yaml:5:7",
            "field `mode`",
            "mode `0958` is not an octal permission mode",
        ],
    );
}

#[test]
fn certificate_naming_unknown_ca() {
    assert_error(
        &[(
            "manifests/c.yaml",
            "kind: Certificate\nhosts: all\nca: pg-caa\ncert_path: /etc/ssl/x.crt\nkey_path: /etc/ssl/x.key\n",
        )],
        &[
            "manifests/c.yaml:3:5",
            "certificate names unknown CA `pg-caa`",
        ],
    );
}

#[test]
fn secret_referenced_but_not_defined() {
    assert_error(
        &[
            ("templates/s.tera", "pw={{ secret(name=\"db_pasword\") }}\n"),
            (
                "manifests/a.yaml",
                "kind: File\nhosts: host:d1\npath: /etc/s\ntemplate: s.tera\n",
            ),
            (
                "manifests/stack.yaml",
                "kind: ComposeStack\nname: app\nhosts: host:d1\ndir: /opt/app\ncontent: 'services: {}'\nenv:\n  PW: { secret: nope }\n",
            ),
        ],
        &[
            "templates/s.tera:1:",
            "secret `db_pasword` is not defined",
            "manifests/stack.yaml:7:7",
            "secret `nope` is not defined",
        ],
    );
}

fn age_keypair(dir: &Path, name: &str) -> (String, std::path::PathBuf) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", id.to_string().expose_secret())).unwrap();
    (id.to_public().to_string(), path)
}

#[test]
fn secret_not_decryptable_with_the_given_identity() {
    let dir = repo(&[("manifests/app.yaml", GOOD_FILE)]);
    let keys = tempfile::tempdir().unwrap();
    let (public, _right) = age_keypair(keys.path(), "right.txt");
    let (_, wrong) = age_keypair(keys.path(), "wrong.txt");
    write(dir.path(), "secrets/recipients.txt", &format!("{public}\n"));
    let value = "s3cr3t-value-never-printed";
    plumb::secrets::SecretStore::set(dir.path(), "db_password", value.as_bytes()).unwrap();
    let ciphertext = std::fs::read_to_string(dir.path().join("secrets/db_password.age")).unwrap();

    let (code, err) = validate(dir.path(), &["--age-identity", wrong.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("secrets/db_password.age"), "{err}");
    assert!(
        err.contains("cannot be decrypted with the given identity"),
        "{err}"
    );
    assert!(!err.contains(value), "{err}");
    // No part of the ciphertext either.
    for line in ciphertext.lines().filter(|l| l.len() > 20) {
        assert!(!err.contains(line), "ciphertext leaked: {err}");
    }
}

#[test]
fn several_errors_in_several_files_are_reported_in_one_run() {
    let dir = repo(&[
        (
            "manifests/a.yaml",
            "kind: File\nhosts: all\npath: relative\ncontent: x\n",
        ),
        (
            "manifests/b.yaml",
            "kind: Command\nname: c\nhosts: group:nope\nrun: x\n",
        ),
        ("manifests/c.yaml", "kind: Nope\n"),
        ("templates/bad.tera", "{{ undefined_var }}\n"),
        (
            "manifests/d.yaml",
            "kind: File\nhosts: all\npath: /etc/d\ntemplate: bad.tera\n",
        ),
    ]);
    let (code, err) = validate(dir.path(), &[]);
    assert_eq!(code, 1);
    for e in [
        "manifests/a.yaml:3:7",
        "manifests/b.yaml:3:8",
        "manifests/b.yaml:4:6",
        "manifests/c.yaml:1:7",
        "templates/bad.tera:1:",
    ] {
        assert!(err.contains(e), "expected {e} in:\n{err}");
    }
    assert!(err.contains("5 errors in the cluster repo"), "{err}");
}

#[test]
fn inventory_overlay_with_unknown_host_is_refused() {
    let dir = repo(&[("manifests/app.yaml", GOOD_FILE)]);
    write(
        dir.path(),
        "lab.yaml",
        "hosts:\n  w3: { address: 172.20.0.9 }\n",
    );
    let (code, err) = validate(
        dir.path(),
        &["--inventory", dir.path().join("lab.yaml").to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(err.contains("lab.yaml:2:"), "{err}");
    assert!(
        err.contains("host `w3` is not in the repo's inventory"),
        "{err}"
    );
}

// ---- Control characters and per-kind grammar (issue 8) ----

/// Runs validate on a repo whose inventory is `inventory` and returns (exit code, stderr),
/// asserting that stderr holds no raw control character other than the line ends.
fn validate_raw(inventory: &str, files: &[(&str, &str)]) -> (i32, String) {
    let dir = repo(files);
    write(dir.path(), "inventory/hosts.yaml", inventory);
    let (code, err) = validate(dir.path(), &[]);
    assert!(
        !err.chars()
            .any(|c| c != '\n' && (c.is_control() || c == '\u{202e}')),
        "raw control character in the output:\n{err:?}"
    );
    (code, err)
}

fn assert_refused(files: &[(&str, &str)], expected: &[&str]) {
    let (code, err) = validate_raw(INVENTORY, files);
    assert_eq!(code, 1, "exit code; stderr:\n{err}");
    for e in expected {
        assert!(err.contains(e), "expected `{e}` in:\n{err}");
    }
}

#[test]
fn control_characters_in_names_paths_and_keys_are_refused_with_file_line_and_field() {
    assert_refused(
        &[(
            "manifests/a.yaml",
            concat!(
                "kind: File\n",
                "name: \"motd\\e[2J\"\n",
                "hosts: all\n",
                "path: \"/etc/motd\\nrm -rf /\"\n",
                "content: x\n",
                "notify: [\"SystemdUnit/a.service\\r\"]\n",
                "---\n",
                "kind: ComposeStack\n",
                "name: app\n",
                "hosts: [\"group:web\\u0085\"]\n",
                "dir: /opt/app\n",
                "content: \"services: {}\\n\"\n",
                "env:\n",
                "  \"KEY\\nX\": v\n",
                "  OK: \"one\\ttwo\"\n",
                "---\n",
                "kind: Directory\n",
                "hosts: all\n",
                "path: \"/srv/\\u202Eevil\"\n",
            ),
        )],
        &[
            "manifests/a.yaml:2:7: error: field `name`: the value contains a control character (ESC shown as `\\e`)",
            "manifests/a.yaml:4:7: error: field `path`: the value contains a control character (newline shown as `\\n`)",
            "manifests/a.yaml:6:10: error: field `notify[0]`",
            "manifests/a.yaml:10:9: error: field `hosts[0]`: the value contains a control character (U+0085",
            "manifests/a.yaml:14:3: error: field `env.KEY\\nX`: the key contains a control character (newline",
            "manifests/a.yaml:15:7: error: field `env.OK`: the value contains a control character (tab",
            "manifests/a.yaml:19:7: error: field `path`: the value contains a control character (U+202E",
            "hint: names, paths, keys and other one-line fields reach shell scripts and terminals",
        ],
    );
}

#[test]
fn multi_line_fields_allow_newlines_and_tabs_but_no_other_control_character() {
    // Commands and file content may span lines; a template var may too.
    let ok = concat!(
        "kind: Command\nname: init\nhosts: all\nrun: \"set -e\\n\\techo one\\necho two\\n\"\n",
        "unless: \"test -e /x &&\\n  test -e /y\"\n",
        "---\nkind: File\nhosts: all\npath: /etc/crlf\ncontent: \"a\\r\\nb\\tc\\n\"\n",
        "---\nkind: File\nhosts: group:web\npath: /etc/app.conf\ntemplate: app.conf.tera\nvars: { motd: \"two\\nlines\" }\n",
    );
    let (code, err) = validate_raw(INVENTORY, &[("manifests/ok.yaml", ok)]);
    assert_eq!(code, 0, "{err}");

    assert_refused(
        &[(
            "manifests/bad.yaml",
            concat!(
                "kind: Command\nname: init\nhosts: all\nrun: \"echo \\e[31mred\\n\"\ncreates: /x\n",
                "user: \"app\\tx\"\n",
                "---\nkind: File\nhosts: all\npath: /etc/motd\ncontent: \"hello \\e[5m\\n\"\n",
                "---\nkind: File\nhosts: group:web\npath: /etc/app.conf\ntemplate: app.conf.tera\nvars: { \"mo\\ntd\": x }\n",
            ),
        )],
        &[
            "manifests/bad.yaml:4:6: error: field `run`: the value contains a control character (ESC shown as `\\e`) at character 6; this field allows newlines and tabs, but no other control characters",
            "manifests/bad.yaml:6:7: error: field `user`",
            "manifests/bad.yaml:11:10: error: field `content`",
            "use `source:`",
            "manifests/bad.yaml:17:9: error: field `vars.mo\\ntd`: the key contains a control character",
        ],
    );
}

#[test]
fn units_packages_env_keys_and_comments_follow_their_grammar() {
    assert_refused(
        &[(
            "manifests/k.yaml",
            concat!(
                "kind: SystemdUnit\nname: -x.service\nhosts: all\nactive: true\n",
                "---\nkind: Package\nname: tools\nhosts: all\npackages: [curl, -y, \"jq=-1\", \"--force-yes\", \"libc6:i386\", \"nginx=1.22.1-9\"]\n",
                "---\nkind: ComposeStack\nname: app\nhosts: all\ndir: /opt/app\ncontent: x\nenv: { \"BAD-KEY\": v, \"1X\": v, GOOD_1: v }\n",
                "---\nkind: User\nname: app\nhosts: all\ncomment: \"App:root\"\n",
            ),
        )],
        &[
            "manifests/k.yaml:2:7: error: field `name`: `-x.service` is not a systemd unit name",
            "manifests/k.yaml:9:18: error: field `packages[1]`: `-y` is not a package name",
            "manifests/k.yaml:9:22: error: field `packages[2]`: `jq=-1` is not a package name",
            "field `packages[3]`: `--force-yes` is not a package name",
            "field `env.BAD-KEY`: `BAD-KEY` is not an environment variable name",
            "field `env.1X`: `1X` is not an environment variable name",
            "manifests/k.yaml:21:10: error: field `comment`: the comment `App:root` holds a `:`",
        ],
    );
    let (code, err) = validate_raw(
        INVENTORY,
        &[(
            "manifests/k.yaml",
            "kind: Package\nname: tools\nhosts: all\npackages: [curl, \"libc6:i386\", \"nginx=1.22.1-9\", \"g++\", python3.11]\n",
        )],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn control_characters_in_the_inventory_are_refused() {
    let inventory = concat!(
        "defaults:\n  ssh_user: root\n  state_dir: var/lib/plumb\n",
        "  vars: { \"a\\eb\": 1, text: \"multi\\nline\" }\n",
        "hosts:\n",
        "  \"w1\\nw9\": { address: 10.0.0.1 }\n",
        "  w2: { address: \"10.0.0.2\\e]0;x\\a\", ssh_key: \"/k\\r\" }\n",
        "  w3: { address: -oProxyCommand=x }\n",
    );
    let (code, err) = validate_raw(inventory, &[("manifests/app.yaml", GOOD_FILE)]);
    assert_eq!(code, 1, "{err}");
    for e in [
        "inventory/hosts.yaml:4:11: error: field `defaults.vars.a\\eb`: the key contains a control character (ESC",
        "inventory/hosts.yaml:6:3: error: field `hosts.w1\\nw9`: the key contains a control character (newline",
        "inventory/hosts.yaml:7:18: error: field `hosts.w2.address`",
        "field `hosts.w2.ssh_key`: the value contains a control character (carriage return",
    ] {
        assert!(err.contains(e), "expected `{e}` in:\n{err}");
    }
    // The multi-line var value is fine; a relative state_dir and an address like an option are
    // refused once the control characters are gone.
    assert!(!err.contains("defaults.vars.text"), "{err}");
    let inventory =
        "defaults:\n  state_dir: var/lib/plumb\nhosts:\n  w1: { address: -oProxyCommand=x }\n";
    let (code, err) = validate_raw(inventory, &[("manifests/app.yaml", GOOD_FILE)]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("field `defaults.state_dir`: path `var/lib/plumb` is relative"),
        "{err}"
    );
    assert!(
        err.contains(
            "field `hosts.w1.address`: `-oProxyCommand=x` is not a valid host address or user name"
        ),
        "{err}"
    );
}

// ---- The repo cannot reach out; an empty repo is refused; small findings (issue 8) ----

#[test]
fn symlinks_leading_out_of_the_repo_are_refused_naming_the_link_and_the_manifest_line() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("id_ed25519");
    std::fs::write(&secret, "CONTROLLER PRIVATE KEY\n").unwrap();
    std::fs::write(outside.path().join("t.tera"), "stolen {{ port }}\n").unwrap();
    let dir = repo(&[
        ("files/ok.txt", "inside\n"),
        (
            "manifests/a.yaml",
            concat!(
                "kind: File\nhosts: all\npath: /etc/key\nsource: files/key\n",
                "---\nkind: File\nhosts: group:web\npath: /etc/t\ntemplate: evil.tera\n",
                "---\nkind: File\nhosts: all\npath: /etc/ok\nsource: files/ok-link\n",
                "---\nkind: File\nhosts: all\npath: /etc/deep\nsource: files/out/id_ed25519\n",
            ),
        ),
    ]);
    let root = dir.path();
    std::os::unix::fs::symlink(&secret, root.join("files/key")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("files/out")).unwrap();
    std::os::unix::fs::symlink("ok.txt", root.join("files/ok-link")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("t.tera"),
        root.join("templates/evil.tera"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&secret, root.join("manifests/stolen.yaml")).unwrap();
    std::fs::create_dir_all(root.join("secrets")).unwrap();
    std::os::unix::fs::symlink(&secret, root.join("secrets/db.age")).unwrap();
    let (code, err) = validate(root, &[]);
    assert_eq!(code, 1, "{err}");
    let target = secret.canonicalize().unwrap();
    for e in [
        format!(
            "files/key: error: `files/key` is a symlink to `{}`, outside the repo",
            target.display()
        ),
        "files/out: error: `files/out` is a symlink to".to_string(),
        "manifests/stolen.yaml: error: `manifests/stolen.yaml` is a symlink to".to_string(),
        "secrets/db.age: error: `secrets/db.age` is a symlink to".to_string(),
        "templates/evil.tera: error: `templates/evil.tera` is a symlink to".to_string(),
        "manifests/a.yaml:4:9: error: field `source`: source file `files/key` cannot be used: `files/key` is a symlink to".to_string(),
        "manifests/a.yaml:9:11: error: field `template`: template `evil.tera` cannot be used: `templates/evil.tera` is a symlink to".to_string(),
        "manifests/a.yaml:19:9: error: field `source`: source file `files/out/id_ed25519` cannot be used: `files/out` is a symlink to".to_string(),
        "hint: plumb reads only files inside the repo".to_string(),
    ] {
        assert!(err.contains(&e), "expected `{e}` in:\n{err}");
    }
    // The link inside the repo is fine, and nothing of the controller's file was read.
    assert!(!err.contains("files/ok-link"), "{err}");
    assert!(!err.contains("CONTROLLER PRIVATE KEY"), "{err}");
}

#[test]
fn render_never_pushes_a_file_from_outside_the_repo() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("identity.txt");
    std::fs::write(&secret, "AGE-SECRET-KEY-1CONTROLLER\n").unwrap();
    let dir = repo(&[(
        "manifests/a.yaml",
        "kind: File\nhosts: all\npath: /etc/key\nsource: files/key\n",
    )]);
    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    std::os::unix::fs::symlink(&secret, dir.path().join("files/key")).unwrap();
    let out = Command::cargo_bin("plumb")
        .unwrap()
        .arg("render")
        .arg(dir.path())
        .env_remove("PLUMB_AGE_IDENTITY")
        .env_remove("PLUMB_INVENTORY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("CONTROLLER") && !stderr.contains("CONTROLLER"));
    assert!(stderr.contains("is a symlink to"), "{stderr}");
}

#[test]
fn a_repo_that_declares_nothing_is_refused() {
    // No manifests/ at all, an empty one, and one holding only empty documents.
    for files in [
        vec![],
        vec![("manifests/README.md", "nothing here\n")],
        vec![("manifests/empty.yaml", "---\n# nothing\n---\n")],
    ] {
        let dir = repo(&files);
        let (code, err) = validate(dir.path(), &[]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("manifests/: error: the repo declares nothing: manifests/ is missing or holds no resource"),
            "{err}"
        );
        assert!(
            err.contains("would prune every resource plumb manages on every host"),
            "{err}"
        );
    }
    // A syntax error is not "declares nothing".
    let dir = repo(&[("manifests/a.yaml", "kind: [\n")]);
    let (code, err) = validate(dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("declares nothing"), "{err}");
}

#[test]
fn a_template_syntax_error_is_reported_once_without_a_false_not_found() {
    let dir = repo(&[
        ("templates/broken.tera", "ok\n{% if port %}\nno end\n"),
        ("templates/outer.tera", "x\n{% include \"broken.tera\" %}\n"),
        (
            "manifests/a.yaml",
            "kind: File\nhosts: group:web\npath: /etc/x\ntemplate: broken.tera\n---\nkind: File\nhosts: group:web\npath: /etc/y\ntemplate: outer.tera\n",
        ),
    ]);
    let (code, err) = validate(dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("templates/broken.tera:4:1: error: template syntax error"),
        "{err}"
    );
    assert!(!err.contains("not found"), "{err}");
    assert_eq!(err.matches("template syntax error").count(), 1, "{err}");
    assert!(err.contains("1 error in the cluster repo"), "{err}");
}

#[test]
fn a_secret_with_a_line_break_cannot_become_a_dot_env_value() {
    let dir = repo(&[(
        "manifests/app.yaml",
        "kind: ComposeStack\nname: app\nhosts: all\ndir: /opt/app\ncontent: \"services: {}\\n\"\nenv:\n  DB_PASSWORD: { secret: db_password }\n",
    )]);
    let keys = tempfile::tempdir().unwrap();
    let (public, id) = age_keypair(keys.path(), "id.txt");
    write(dir.path(), "secrets/recipients.txt", &format!("{public}\n"));
    let value = "first-line\nINJECTED=evil-value-never-printed";
    plumb::secrets::SecretStore::set(dir.path(), "db_password", value.as_bytes()).unwrap();
    let (code, err) = validate(dir.path(), &["--age-identity", id.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("manifests/app.yaml:7:16: error: field `env.DB_PASSWORD`: secret `db_password` holds a line break or NUL, which a `.env` value cannot"),
        "{err}"
    );
    assert!(
        !err.contains("evil-value") && !err.contains("first-line"),
        "{err}"
    );
}
