//! `plumb inventory import` checked against Ansible itself.
//!
//! For each inventory (INI and YAML written by hand, with group_vars/ and host_vars/, and
//! larger ones generated with nested children, ranges and clashing variables), the test runs
//! `ansible-inventory -i FILE --list` (ansible-core from PyPI, the version bench/ pins,
//! installed into a virtualenv under the target folder on first use) and `plumb inventory
//! import FILE`, loads plumb's result with plumb's own inventory loader, and compares hosts,
//! group memberships (Ansible's children flattened), every host's merged variables, and the
//! connection settings (`ansible_host`, `ansible_port`, `ansible_user`,
//! `ansible_ssh_private_key_file`, `ansible_become`). Variables plumb cannot take must appear in
//! the output as comments. If ansible-core cannot be installed the test fails: it never skips.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PLUMB: &str = env!("CARGO_BIN_EXE_plumb");

/// The ansible-core pin bench/ uses.
fn ansible_pin() -> String {
    let req = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/requirements.txt");
    let text = fs::read_to_string(&req).expect("bench/requirements.txt");
    text.lines()
        .find(|l| l.trim_start().starts_with("ansible-core"))
        .expect("ansible-core is pinned in bench/requirements.txt")
        .trim()
        .to_string()
}

/// Runs a command with a deadline; panics with its output when it fails.
fn run(cmd: &mut Command, limit: Duration, what: &str) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&o).expect("o"))
        .stderr(fs::File::create(&e).expect("e"))
        .spawn()
        .unwrap_or_else(|err| panic!("{what}: cannot start: {err}"));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: no answer within {limit:?}\n{}",
                fs::read_to_string(&e).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = fs::read_to_string(&o).unwrap_or_default();
    let err = fs::read_to_string(&e).unwrap_or_default();
    assert!(status.success(), "{what} failed ({status}):\n{out}\n{err}");
    out
}

/// `ansible-inventory`, installed on first use into target/tmp/ansible-venv (under a lock, so
/// parallel tests install once).
fn ansible_inventory() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ansible-venv");
    fs::create_dir_all(&venv).expect("venv dir");
    let lock = fs::File::create(venv.with_extension("lock")).expect("lock file");
    // SAFETY: flock on a file we own; released when `lock` is dropped.
    let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(rc, 0, "cannot lock the ansible virtualenv");
    let pin = ansible_pin();
    let stamp = venv.join(".plumb-pin");
    let bin = venv.join("bin/ansible-inventory");
    if bin.exists() && fs::read_to_string(&stamp).ok().as_deref() == Some(pin.as_str()) {
        return bin;
    }
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import venv, ensurepip"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("no python3 with venv and ensurepip: apt-get install -y python3-venv");
    run(
        Command::new(python)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
        Duration::from_secs(300),
        "python3 -m venv",
    );
    run(
        Command::new(venv.join("bin/pip")).args(["install", "-q", &pin]),
        Duration::from_secs(1200),
        "pip install ansible-core (PyPI must be reachable)",
    );
    fs::write(&stamp, &pin).expect("stamp");
    assert!(bin.exists(), "pip installed no ansible-inventory");
    bin
}

/// Ansible's JSON writes an `!unsafe` string (one Jinja never renders) as
/// `{"__ansible_unsafe": "..."}`; its value is the string, which plumb (which renders no
/// variable) keeps as is.
fn unwrap_unsafe(v: Value) -> Value {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("__ansible_unsafe") => {
            m.into_iter().next().map(|(_, s)| s).unwrap_or(Value::Null)
        }
        Value::Object(m) => {
            Value::Object(m.into_iter().map(|(k, v)| (k, unwrap_unsafe(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(unwrap_unsafe).collect()),
        other => other,
    }
}

/// What Ansible says: hosts, each group's members (children included), each host's vars.
struct Ansible {
    hosts: BTreeSet<String>,
    groups: BTreeMap<String, BTreeSet<String>>,
    hostvars: BTreeMap<String, Map<String, Value>>,
}

fn ansible_list(file: &Path) -> Ansible {
    let bin = ansible_inventory();
    let cwd = tempfile::tempdir().expect("cwd");
    let out = run(
        Command::new(&bin)
            .args(["-i"])
            .arg(file)
            .arg("--list")
            .current_dir(cwd.path())
            // Without these a file Ansible cannot parse is a warning and an empty inventory.
            .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "true")
            .env("ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED", "true")
            .env("ANSIBLE_HOME", cwd.path().join("home"))
            .env("ANSIBLE_LOCAL_TEMP", cwd.path().join("tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env_remove("ANSIBLE_CONFIG")
            .env_remove("ANSIBLE_INVENTORY"),
        Duration::from_secs(120),
        "ansible-inventory --list",
    );
    let doc: Value = serde_json::from_str(&out).expect("ansible-inventory prints JSON");
    let hostvars: BTreeMap<String, Map<String, Value>> = doc["_meta"]["hostvars"]
        .as_object()
        .expect("_meta.hostvars")
        .iter()
        .map(|(h, v)| match unwrap_unsafe(v.clone()) {
            Value::Object(m) => (h.clone(), m),
            _ => (h.clone(), Map::new()),
        })
        .collect();
    let groups_doc = doc.as_object().expect("object");
    fn members(doc: &Map<String, Value>, g: &str, seen: &mut BTreeSet<String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if !seen.insert(g.to_string()) {
            return out;
        }
        if let Some(grp) = doc.get(g) {
            for h in grp["hosts"].as_array().into_iter().flatten() {
                out.insert(h.as_str().expect("host name").to_string());
            }
            for c in grp["children"].as_array().into_iter().flatten() {
                out.extend(members(doc, c.as_str().expect("group name"), seen));
            }
        }
        out
    }
    let mut groups = BTreeMap::new();
    for g in groups_doc.keys() {
        if g == "_meta" {
            continue;
        }
        groups.insert(g.clone(), members(groups_doc, g, &mut BTreeSet::new()));
    }
    let mut hosts: BTreeSet<String> = hostvars.keys().cloned().collect();
    hosts.extend(groups.get("all").cloned().unwrap_or_default());
    Ansible {
        hosts,
        groups,
        hostvars,
    }
}

const RESERVED: &[&str] = &["host", "hosts", "groups", "resource", "vars", "plumb"];

fn is_identifier(k: &str) -> bool {
    let mut b = k.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn truthy(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "y" | "yes" | "on" | "1" | "true" | "t" => Some(true),
            "n" | "no" | "off" | "0" | "false" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Imports `file` with plumb, loads the result with plumb's loader and compares everything
/// with Ansible. Returns the imported text.
fn compare(file: &Path) -> String {
    let ansible = ansible_list(file);
    let out_dir = tempfile::tempdir().expect("out");
    let out = out_dir.path().join("hosts.yaml");
    run(
        Command::new(PLUMB)
            .args(["inventory", "import"])
            .arg(file)
            .arg("--out")
            .arg(&out),
        Duration::from_secs(60),
        "plumb inventory import",
    );
    let text = fs::read_to_string(&out).expect("imported inventory");
    let src = plumb::model::inventory::parse_inventory(&out, out_dir.path(), &text)
        .unwrap_or_else(|e| panic!("plumb cannot load its own import: {e}\n{text}"));
    let inv = plumb::model::inventory::resolve(&src, None)
        .unwrap_or_else(|e| panic!("plumb cannot resolve its own import: {e}\n{text}"));

    let plumb_hosts: BTreeSet<String> = inv.hosts.iter().map(|h| h.name.clone()).collect();
    assert_eq!(plumb_hosts, ansible.hosts, "hosts differ\n{text}");
    assert!(!plumb_hosts.is_empty(), "an empty inventory proves nothing");

    for (g, members) in &ansible.groups {
        if g == "all" {
            continue;
        }
        if members.is_empty() {
            assert!(
                inv.groups.contains_key(g) || g == "ungrouped",
                "empty group {g} is missing\n{text}"
            );
            continue;
        }
        let ours: BTreeSet<String> = inv
            .groups
            .get(g)
            .unwrap_or_else(|| panic!("group {g} is missing\n{text}"))
            .members
            .iter()
            .cloned()
            .collect();
        assert_eq!(&ours, members, "members of {g} differ\n{text}");
    }
    for g in inv.groups.keys() {
        assert!(
            g == "all" || ansible.groups.contains_key(g),
            "plumb has a group Ansible does not: {g}"
        );
    }

    let mut compared_vars = 0;
    for h in &inv.hosts {
        let want = ansible.hostvars.get(&h.name).cloned().unwrap_or_default();
        let mut expected = Map::new();
        for (k, v) in &want {
            if k.starts_with("ansible_") {
                continue;
            }
            if !is_identifier(k) || RESERVED.contains(&k.as_str()) {
                // Not importable: it must be in the output as a comment, never dropped.
                assert!(
                    text.lines()
                        .any(|l| l.trim_start().starts_with('#') && l.contains(&format!("\"{k}\""))),
                    "`{k}` of {} is neither imported nor commented\n{text}",
                    h.name
                );
                continue;
            }
            expected.insert(k.clone(), v.clone());
        }
        compared_vars += expected.len();
        assert_eq!(
            Value::Object(h.vars.clone()),
            Value::Object(expected),
            "vars of {} differ\n{text}",
            h.name
        );
        // Connection settings.
        let s = |k: &str| {
            want.get(k).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        assert_eq!(
            h.address,
            s("ansible_host").unwrap_or_else(|| h.name.clone()),
            "address of {}",
            h.name
        );
        assert_eq!(
            h.port,
            s("ansible_port").map_or(22, |p| p.parse::<u16>().expect("port")),
            "port of {}",
            h.name
        );
        assert_eq!(
            h.user,
            s("ansible_user").unwrap_or_else(|| "root".into()),
            "user of {}",
            h.name
        );
        if let Some(k) = s("ansible_ssh_private_key_file") {
            let want_key = if Path::new(&k).is_absolute() {
                PathBuf::from(&k)
            } else {
                out_dir.path().join(&k)
            };
            assert_eq!(
                h.ssh_key.as_deref(),
                Some(want_key.as_path()),
                "key of {}",
                h.name
            );
        } else {
            assert!(h.ssh_key.is_none(), "key of {}", h.name);
        }
        let privilege = match want.get("ansible_become").and_then(truthy) {
            Some(true) => plumb::model::inventory::Privilege::Sudo,
            Some(false) => plumb::model::inventory::Privilege::None,
            None => plumb::model::inventory::Privilege::Auto,
        };
        assert_eq!(h.privilege, privilege, "privilege of {}", h.name);
        // Other ansible_* variables are commented, not dropped.
        for k in want.keys().filter(|k| k.starts_with("ansible_")) {
            let mapped = matches!(
                k.as_str(),
                "ansible_host"
                    | "ansible_port"
                    | "ansible_user"
                    | "ansible_ssh_private_key_file"
                    | "ansible_become"
            );
            assert!(
                mapped || text.contains(&format!("# {k}")),
                "`{k}` of {} is neither imported nor commented\n{text}",
                h.name
            );
        }
    }
    assert!(compared_vars > 0, "no variable compared\n{text}");
    text
}

#[test]
fn ini_inventory_matches_ansible() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("hosts.ini");
    fs::write(
        &file,
        r#"# hosts before any section are ungrouped
bastion.example ansible_host=192.0.2.10 ansible_user=ops

[web:children]
web_canary

[web]
web[01:12].example ansible_user=deploy weight=10
web[a:c].example:2222 weight=5 tuning="{'workers': 4}"
db-aux ansible_host=10.0.0.99

[web_canary]
web0[1:2].example canary=True weight=99

[web:vars]
http_port=8080
tuning={'workers': 2, 'keepalive': 30}
motd="hello, world"
motd_single='it''s'
maybe=true
ports=[80, 443]
hosts=reserved-in-plumb
ansible_python_interpreter=/usr/bin/python3

[db]
db[1:6:2] ansible_port=5522 ansible_become=yes role=primary
db-aux role=replica ansible_become=false

[db:vars]
ansible_ssh_private_key_file=/etc/plumb/db_key
backup={'full': 'weekly', 'incr': 'hourly'}
ansible_password=not-copied

[prod:children]
web
db

[prod:vars]
env=prod
weight=1
ansible_ssh_common_args='-o ProxyJump=ops@192.0.2.10'

[all:vars]
env=default
ntp=['0.pool.ntp.org', '1.pool.ntp.org']
"#,
    )
    .expect("inventory");
    let text = compare(&file);
    assert!(
        text.contains("ansible_password -- not imported: a secret"),
        "{text}"
    );
    assert!(
        !text.contains("not-copied"),
        "a password was copied:\n{text}"
    );
    assert!(text.contains("ssh_jump: \"ops@192.0.2.10\""), "{text}");
}

#[test]
fn yaml_inventory_with_group_and_host_vars_matches_ansible() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("inventory.yml");
    fs::write(
        &file,
        r#"---
all:
  vars:
    defaults: &defaults {timeout: 30, retries: 3}
    flag: yes
    mode: 0755
    count: 1_000
    ratio: 1e3
    exact: 1.5
    ttl: 1:30
  hosts:
    lone.example:
  children:
    dc1:
      vars:
        dc: one
        limits: {cpu: 2, mem: 4}
      children:
        dc1_app:
          hosts:
            app[1:4].dc1:
              ansible_host: 10.1.0.1
            app1.dc1:
              limits: {cpu: 8}
              template_text: !unsafe '{{ not_rendered }}'
          vars:
            <<: *defaults
            retries: 5
            ansible_group_priority: 10
        dc1_db:
          hosts:
            db1.dc1: {ansible_port: 5432, ansible_become: true}
    dc2:
      children:
        dc2_app:
          hosts:
            app[1:2].dc2: ~
    app:
      children:
        dc1_app:
        dc2_app:
      vars:
        role: app
        limits: {cpu: 1}
"#,
    )
    .expect("inventory");
    fs::create_dir_all(dir.path().join("group_vars/dc1_app")).expect("group_vars");
    fs::create_dir_all(dir.path().join("host_vars")).expect("host_vars");
    fs::write(
        dir.path().join("group_vars/all.yml"),
        "dc: none\nsite: eu\n",
    )
    .expect("all.yml");
    fs::write(dir.path().join("group_vars/dc1"), "role: dc1-from-file\n").expect("dc1");
    fs::write(
        dir.path().join("group_vars/dc1_app/10-a.yml"),
        "tier: a\nextra: {x: 1}\n",
    )
    .expect("a");
    fs::write(dir.path().join("group_vars/dc1_app/20-b.yaml"), "tier: b\n").expect("b");
    fs::write(
        dir.path().join("group_vars/dc1_app/.hidden.yml"),
        "tier: hidden\n",
    )
    .expect("hidden");
    fs::write(
        dir.path().join("host_vars/app2.dc1.yml"),
        "extra: {y: 2}\nansible_user: admin\n",
    )
    .expect("hv");
    compare(&file);
}

/// A deterministic pseudo-random sequence (no crate needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// A value of one of several types, clashing with other layers on purpose (mappings, so that
/// Ansible's replace and plumb's merge differ).
fn random_value(rng: &mut Lcg, python: bool) -> String {
    match rng.next(6) {
        0 => rng.next(1000).to_string(),
        1 => {
            let s = format!("v{}", rng.next(50));
            if python {
                format!("'{s}'")
            } else {
                format!("\"{s}\"")
            }
        }
        2 => {
            let (a, b) = (rng.next(9), rng.next(9));
            if python {
                format!("{{'a': {a}, 'b{b}': {b}}}")
            } else {
                format!("{{a: {a}, b{b}: {b}}}")
            }
        }
        3 => {
            let n = rng.next(4);
            let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            format!("[{}]", items.join(", "))
        }
        4 => {
            if python {
                "True".into()
            } else {
                "true".into()
            }
        }
        _ => format!("{}.5", rng.next(100)),
    }
}

/// Nested groups (three levels, several parents for some), ranges, vars at every level.
fn generated_yaml(seed: u64) -> String {
    let mut rng = Lcg(seed);
    let mut s = String::from("all:\n  vars:\n");
    for k in 0..4 {
        s.push_str(&format!("    k{k}: {}\n", random_value(&mut rng, false)));
    }
    s.push_str("  children:\n");
    for r in 0..3 {
        s.push_str(&format!("    region{r}:\n      vars:\n"));
        for _ in 0..3 {
            let key = rng.next(8);
            s.push_str(&format!(
                "        k{key}: {}\n",
                random_value(&mut rng, false)
            ));
        }
        s.push_str(&format!("        ansible_user: user{r}\n      children:\n"));
        for z in 0..2 {
            s.push_str(&format!("        region{r}_zone{z}:\n          vars:\n"));
            s.push_str(&format!(
                "            ansible_group_priority: {}\n",
                rng.next(3) + 1
            ));
            for _ in 0..2 {
                let key = rng.next(8);
                s.push_str(&format!(
                    "            k{key}: {}\n",
                    random_value(&mut rng, false)
                ));
            }
            s.push_str("          hosts:\n");
            s.push_str(&format!(
                "            node[{:02}:{:02}].r{r}z{z}:\n",
                1,
                3 + rng.next(10)
            ));
            s.push_str(&format!(
                "              k{}: {}\n",
                rng.next(8),
                random_value(&mut rng, false)
            ));
            s.push_str(&format!("            edge{r}{z}:\n              ansible_host: 10.{r}.{z}.1\n              ansible_port: {}\n", 2200 + rng.next(50)));
            s.push_str(&format!(
                "              k{}: {}\n",
                rng.next(8),
                random_value(&mut rng, false)
            ));
            s.push_str("          children:\n");
            s.push_str(&format!("            region{r}_zone{z}_gpu:\n              hosts:\n                gpu[a:c].r{r}z{z}:\n              vars:\n                k{}: {}\n", rng.next(8), random_value(&mut rng, false)));
        }
    }
    // A group whose children come from several regions: several parents, depth by the longest.
    s.push_str("    gpu:\n      children:\n");
    for r in 0..3 {
        s.push_str(&format!("        region{r}_zone0_gpu:\n"));
    }
    s.push_str("      vars:\n        accel: true\n");
    for _ in 0..2 {
        s.push_str(&format!(
            "        k{}: {}\n",
            rng.next(8),
            random_value(&mut rng, false)
        ));
    }
    s
}

fn generated_ini(seed: u64) -> String {
    let mut rng = Lcg(seed);
    let mut s = String::new();
    s.push_str("[all:vars]\n");
    for k in 0..4 {
        s.push_str(&format!("k{k}={}\n", random_value(&mut rng, true)));
    }
    // Children declared before the groups themselves (Ansible's pending declarations).
    s.push_str("[fleet:children]\n");
    for r in 0..3 {
        s.push_str(&format!("dc{r}\n"));
    }
    for r in 0..3 {
        s.push_str(&format!("[dc{r}:children]\ndc{r}_web\ndc{r}_db\n"));
        s.push_str(&format!("[dc{r}:vars]\nansible_user=ops{r}\n"));
        for _ in 0..3 {
            s.push_str(&format!(
                "k{}={}\n",
                rng.next(8),
                random_value(&mut rng, true)
            ));
        }
        s.push_str(&format!("[dc{r}_web]\n"));
        s.push_str(&format!(
            "web[{:03}:{:03}:{}].dc{r} k{}={}\n",
            1,
            10 + rng.next(20),
            1 + rng.next(3),
            rng.next(8),
            random_value(&mut rng, true).replace(' ', "")
        ));
        s.push_str(&format!(
            "[dc{r}_web:vars]\nansible_group_priority={}\n",
            rng.next(3) + 1
        ));
        for _ in 0..2 {
            s.push_str(&format!(
                "k{}={}\n",
                rng.next(8),
                random_value(&mut rng, true)
            ));
        }
        s.push_str(&format!(
            "[dc{r}_db]\ndb[1:3].dc{r}:54{r}2 ansible_become=yes\n"
        ));
        s.push_str(&format!(
            "[dc{r}_db:vars]\nk{}={}\n",
            rng.next(8),
            random_value(&mut rng, true)
        ));
    }
    s.push_str("[canary]\nweb001.dc0\nweb001.dc1\n[canary:vars]\ncanary=True\n");
    s.push_str(&format!(
        "k{}={}\n",
        rng.next(8),
        random_value(&mut rng, true)
    ));
    s
}

#[test]
fn generated_inventories_with_nested_children_and_ranges_match_ansible() {
    let dir = tempfile::tempdir().expect("dir");
    for seed in [1u64, 7, 42] {
        let y = dir.path().join(format!("gen{seed}.yml"));
        fs::write(&y, generated_yaml(seed)).expect("yaml");
        compare(&y);
        let i = dir.path().join(format!("gen{seed}.ini"));
        fs::write(&i, generated_ini(seed)).expect("ini");
        compare(&i);
    }
}

#[test]
fn import_refuses_what_it_cannot_read_with_file_and_line() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bad.ini");
    fs::write(&file, "[web]\nw1\n[web:nonsense]\nx=1\n").expect("file");
    let out = Command::new(PLUMB)
        .args(["inventory", "import"])
        .arg(&file)
        .output()
        .expect("run plumb");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", file.display())), "{err}");
    assert!(err.contains("unknown type: nonsense"), "{err}");
}
