//! Jump hosts against real OpenSSH sshd servers in network namespaces.
//!
//! Topology of each test (every namespace made by the test, joined by veth pairs, no route
//! but the connected /24s, no default route anywhere):
//!
//! ```text
//!   ctl (plumb) --10.9.1.0/24-- bastion --10.9.2.0/24-- t1
//!                                       --10.9.3.0/24-- t2
//!   ctl --10.9.1.0/24-- b1 --10.9.4.0/24-- b2 --10.9.5.0/24-- t3      (two hops)
//! ```
//!
//! plumb runs inside `ctl`, which reaches only the first bastion: every target is reachable
//! through the bastion's direct-tcpip channels or not at all (checked at the start of each
//! test). Each target sshd has its own private /var/lib, so plumb's state on one "host" is not
//! another's.

#[path = "support/netns.rs"]
mod netns;

use netns::{Lab, Server, ServerConfig, client_key, run_bounded};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const PLUMB: &str = env!("CARGO_BIN_EXE_plumb");

/// Runs plumb inside namespace `ns` with `home` as HOME, bounded.
fn plumb_in(ns: &str, home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "env"])
        .args([
            "-u",
            "SSH_AUTH_SOCK",
            "-u",
            "PLUMB_INVENTORY",
            "-u",
            "PLUMB_SSH_CONFIG",
            "-u",
            "RUST_LOG",
        ])
        .arg(format!("HOME={}", home.display()))
        .arg("NO_COLOR=1")
        .arg(PLUMB)
        .args(args);
    run_bounded(&mut cmd, Duration::from_secs(120))
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A repo with one File per target (`out/NAME/hello.txt` under `dir`: every "host" here shares
/// this machine's filesystem, and plumb's temp file names are per run, not per host, so each
/// host writes in a folder of its own) and the given inventory.
fn repo(dir: &Path, inventory: &str, targets: &[&str]) -> PathBuf {
    let repo = dir.join("repo");
    fs::create_dir_all(repo.join("inventory")).expect("inventory dir");
    fs::create_dir_all(repo.join("manifests")).expect("manifests dir");
    for t in targets {
        fs::create_dir_all(dir.join("out").join(t)).expect("out dir");
    }
    fs::write(repo.join("inventory/hosts.yaml"), inventory).expect("inventory");
    let docs: Vec<String> = targets
        .iter()
        .map(|t| {
            format!(
                "kind: File\nname: hello-{t}\nhosts: host:{t}\npath: {}/out/{t}/hello.txt\ncontent: \"hello from {t}\\n\"\n",
                dir.display()
            )
        })
        .collect();
    fs::write(repo.join("manifests/files.yaml"), docs.join("---\n")).expect("manifests");
    repo
}

fn written(dir: &Path, t: &str) -> Option<String> {
    fs::read_to_string(dir.join("out").join(t).join("hello.txt")).ok()
}

/// ctl -- bastion -- {t1, t2}; returns the lab and namespace names.
struct OneHop {
    lab: Lab,
    ctl: String,
    bastion: Server,
    t1: Server,
    t2: Server,
    key: PathBuf,
}

impl OneHop {
    fn new(tag: &str) -> OneHop {
        let mut lab = Lab::new(tag);
        let ctl = lab.netns("ctl");
        let bas = lab.netns("bas");
        let n1 = lab.netns("t1");
        let n2 = lab.netns("t2");
        lab.link(&ctl, "10.9.1.1/24", &bas, "10.9.1.2/24");
        lab.link(&bas, "10.9.2.1/24", &n1, "10.9.2.2/24");
        lab.link(&bas, "10.9.3.1/24", &n2, "10.9.3.2/24");
        let bastion = Server::start(ServerConfig::in_netns(&bas, "10.9.1.2"));
        let t1 = Server::start(ServerConfig::in_netns(&n1, "10.9.2.2"));
        let t2 = Server::start(ServerConfig::in_netns(&n2, "10.9.3.2"));
        let (key, public) = client_key(lab.dir.path(), "id_ed25519");
        for s in [&bastion, &t1, &t2] {
            s.authorize(&public);
        }
        // The isolation the test relies on, checked rather than assumed.
        let routes = lab.routes(&ctl);
        assert!(
            !routes.contains("default"),
            "ctl has a default route: {routes}"
        );
        assert!(
            lab.tcp_reachable(&ctl, "10.9.1.2", 22),
            "ctl cannot reach the bastion"
        );
        assert!(
            !lab.tcp_reachable(&ctl, "10.9.2.2", 22),
            "ctl reaches t1 directly"
        );
        assert!(
            !lab.tcp_reachable(&ctl, "10.9.3.2", 22),
            "ctl reaches t2 directly"
        );
        assert!(
            lab.tcp_reachable(&bas, "10.9.2.2", 22),
            "the bastion cannot reach t1"
        );
        OneHop {
            lab,
            ctl,
            bastion,
            t1,
            t2,
            key,
        }
    }

    fn known_hosts(&self, lines: &[String]) -> PathBuf {
        let p = self.lab.dir.path().join("known_hosts");
        fs::write(&p, lines.join("\n") + "\n").expect("known_hosts");
        p
    }

    fn inventory(&self, known_hosts: &Path) -> String {
        format!(
            "defaults:\n  ssh_user: root\n  ssh_key: {}\n  known_hosts: {}\ngroups:\n  targets: {{}}\nhosts:\n  bastion: {{ address: 10.9.1.2 }}\n  t1: {{ address: 10.9.2.2, groups: [targets], ssh_jump: bastion }}\n  t2: {{ address: 10.9.3.2, groups: [targets], ssh_jump: bastion }}\n",
            self.key.display(),
            known_hosts.display()
        )
    }
}

#[test]
fn converges_through_one_bastion_over_one_shared_session() {
    let h = OneHop::new("one");
    let kh = h.known_hosts(&[
        h.bastion.known_hosts_line(),
        h.t1.known_hosts_line(),
        h.t2.known_hosts_line(),
    ]);
    let dir = h.lab.dir.path();
    let repo = repo(dir, &h.inventory(&kh), &["t1", "t2"]);
    let repo_s = repo.to_string_lossy().into_owned();
    let args = ["converge", &repo_s, "--limit", "group:targets"];

    let out = plumb_in(&h.ctl, dir, &args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(written(dir, "t1").as_deref(), Some("hello from t1\n"));
    assert_eq!(written(dir, "t2").as_deref(), Some("hello from t2\n"));
    // One authenticated session on the bastion carried both hosts.
    assert_eq!(h.bastion.logins(), 1, "bastion log:\n{}", h.bastion.log());
    assert_eq!(h.t1.logins(), 1);
    assert_eq!(h.t2.logins(), 1);

    // Converged: a second run changes nothing, again over one bastion session.
    let out = plumb_in(&h.ctl, dir, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(h.bastion.logins(), 2, "bastion log:\n{}", h.bastion.log());
}

#[test]
fn a_wrong_bastion_host_key_fails_its_hosts_naming_the_bastion() {
    let h = OneHop::new("badb");
    let (_, other) = client_key(h.lab.dir.path(), "not_the_bastion");
    let other_key: String = other
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let kh = h.known_hosts(&[
        format!("10.9.1.2 {other_key}"),
        h.t1.known_hosts_line(),
        h.t2.known_hosts_line(),
    ]);
    let dir = h.lab.dir.path();
    let repo = repo(dir, &h.inventory(&kh), &["t1", "t2"]);
    let repo_s = repo.to_string_lossy().into_owned();
    let out = plumb_in(
        &h.ctl,
        dir,
        &["converge", &repo_s, "--limit", "group:targets"],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("its bastion bastion (10.9.1.2:22) failed"),
        "{all}"
    );
    assert!(all.contains("HOST KEY CHANGED"), "{all}");
    assert_eq!(all.matches("its bastion bastion").count(), 2, "{all}");
    // Nothing reached the targets; the bastion accepted no login either.
    assert_eq!(h.t1.logins() + h.t2.logins() + h.bastion.logins(), 0);
    assert!(written(dir, "t1").is_none() && written(dir, "t2").is_none());
}

#[test]
fn each_target_key_is_checked_on_its_own() {
    let h = OneHop::new("tkey");
    // The bastion and t1 are known; t2 is not: being behind a trusted bastion vouches for
    // nothing.
    let kh = h.known_hosts(&[h.bastion.known_hosts_line(), h.t1.known_hosts_line()]);
    let dir = h.lab.dir.path();
    let repo = repo(dir, &h.inventory(&kh), &["t1", "t2"]);
    let repo_s = repo.to_string_lossy().into_owned();
    let out = plumb_in(
        &h.ctl,
        dir,
        &["converge", &repo_s, "--limit", "group:targets"],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("host key for t2 (10.9.3.2:22) via bastion (10.9.1.2:22) is not in"),
        "{all}"
    );
    assert_eq!(written(dir, "t1").as_deref(), Some("hello from t1\n"));
    assert!(written(dir, "t2").is_none());
    assert_eq!(h.t2.logins(), 0);

    // A known key under t2's name that is not t2's: refused as changed.
    let kh = h.known_hosts(&[
        h.bastion.known_hosts_line(),
        h.t1.known_hosts_line(),
        format!("10.9.3.2 {}", h.t1.host_key()),
    ]);
    let _ = kh;
    let out = plumb_in(&h.ctl, dir, &["converge", &repo_s, "--limit", "host:t2"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("HOST KEY CHANGED for t2 (10.9.3.2:22) via bastion"),
        "{all}"
    );
}

#[test]
fn an_unreachable_bastion_fails_its_hosts_naming_the_bastion() {
    let h = OneHop::new("deadb");
    let kh = h.known_hosts(&[h.t1.known_hosts_line(), h.t2.known_hosts_line()]);
    let dir = h.lab.dir.path();
    // Nothing listens on 10.9.1.2:2200.
    let inventory = h.inventory(&kh).replace(
        "bastion: { address: 10.9.1.2 }",
        "bastion: { address: 10.9.1.2, ssh_port: 2200 }",
    );
    let repo = repo(dir, &inventory, &["t1", "t2"]);
    let repo_s = repo.to_string_lossy().into_owned();
    let out = plumb_in(
        &h.ctl,
        dir,
        &["converge", &repo_s, "--limit", "group:targets"],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert_eq!(
        all.matches("its bastion bastion (10.9.1.2:2200) failed")
            .count(),
        2,
        "{all}"
    );
    assert!(all.contains("could not connect"), "{all}");
}

#[test]
fn converges_through_two_hops() {
    let mut lab = Lab::new("two");
    let ctl = lab.netns("ctl");
    let n1 = lab.netns("b1");
    let n2 = lab.netns("b2");
    let n3 = lab.netns("t3");
    lab.link(&ctl, "10.9.1.1/24", &n1, "10.9.1.2/24");
    lab.link(&n1, "10.9.4.1/24", &n2, "10.9.4.2/24");
    lab.link(&n2, "10.9.5.1/24", &n3, "10.9.5.2/24");
    let b1 = Server::start(ServerConfig::in_netns(&n1, "10.9.1.2"));
    let b2 = Server::start(ServerConfig::in_netns(&n2, "10.9.4.2"));
    let t3 = Server::start(ServerConfig::in_netns(&n3, "10.9.5.2"));
    let (key, public) = client_key(lab.dir.path(), "id_ed25519");
    for s in [&b1, &b2, &t3] {
        s.authorize(&public);
    }
    assert!(
        !lab.tcp_reachable(&ctl, "10.9.4.2", 22),
        "ctl reaches b2 directly"
    );
    assert!(
        !lab.tcp_reachable(&n1, "10.9.5.2", 22),
        "b1 reaches t3 directly"
    );
    let dir = lab.dir.path().to_path_buf();
    let kh = dir.join("known_hosts");
    fs::write(
        &kh,
        format!(
            "{}\n{}\n{}\n",
            b1.known_hosts_line(),
            b2.known_hosts_line(),
            t3.known_hosts_line()
        ),
    )
    .expect("known_hosts");
    // Bastions written as user@host: they take t3's key and known_hosts.
    let inventory = format!(
        "defaults:\n  ssh_key: {}\n  known_hosts: {}\nhosts:\n  t3: {{ address: 10.9.5.2, ssh_jump: 'root@10.9.1.2,root@10.9.4.2:22' }}\n",
        key.display(),
        kh.display()
    );
    let repo = repo(&dir, &inventory, &["t3"]);
    let repo_s = repo.to_string_lossy().into_owned();
    let out = plumb_in(&ctl, &dir, &["converge", &repo_s]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(written(&dir, "t3").as_deref(), Some("hello from t3\n"));
    assert_eq!((b1.logins(), b2.logins(), t3.logins()), (1, 1, 1));

    let show = plumb_in(&ctl, &dir, &["inventory", "show", "t3", &repo_s]);
    let shown = text(&show);
    assert!(show.status.success(), "{shown}");
    assert!(shown.contains("bastion root@10.9.4.2:22:"), "{shown}");
    assert!(shown.contains("bastion root@10.9.1.2:"), "{shown}");
    let json = plumb_in(
        &ctl,
        &dir,
        &["inventory", "show", "t3", &repo_s, "--format", "json"],
    );
    assert!(json.status.success(), "{}", text(&json));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let value = |v: &serde_json::Value, name: &str| -> String {
        v["settings"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .map(|s| s["value"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    let hops = &doc["settings"];
    assert_eq!(value(hops, "address"), "10.9.5.2");
    assert_eq!(value(&hops["bastion"], "address"), "10.9.4.2");
    assert_eq!(value(&hops["bastion"]["bastion"], "address"), "10.9.1.2");
    assert!(hops["bastion"]["bastion"]["bastion"].is_null());

    let out = plumb_in(&ctl, &dir, &["converge", &repo_s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn ssh_config_alone_drives_a_converge() {
    let h = OneHop::new("cfg");
    let dir = h.lab.dir.path();
    let home = dir.join("home");
    let ssh = home.join(".ssh");
    fs::create_dir_all(ssh.join("config.d")).expect(".ssh");
    fs::copy(&h.key, ssh.join("lab_key")).expect("key");
    fs::write(
        ssh.join("lab_known_hosts"),
        format!(
            "{}\n{}\n{}\n",
            h.bastion.known_hosts_line(),
            h.t1.known_hosts_line(),
            h.t2.known_hosts_line()
        ),
    )
    .expect("known_hosts");
    // Aliases in an included file, wildcards, and Match choosing the bastion by address.
    fs::write(
        ssh.join("config"),
        "# the lab\nInclude config.d/*.conf\n\nHost t?\n    User root\n\nMatch host 10.9.2.*,10.9.3.*\n    ProxyJump jump\n\nHost *\n    IdentityFile ~/.ssh/lab_key\n    IdentitiesOnly yes\n    UserKnownHostsFile ~/.ssh/lab_known_hosts\n    ServerAliveInterval 15\n",
    )
    .expect("config");
    fs::write(
        ssh.join("config.d/lab.conf"),
        "Host t1\n    HostName 10.9.2.2\nHost t2\n    HostName 10.9.3.2\nHost jump\n    HostName 10.9.1.2\n    User root\n",
    )
    .expect("lab.conf");
    let repo = repo(dir, "hosts:\n  t1: {}\n  t2: {}\n", &["t1", "t2"]);
    let repo_s = repo.to_string_lossy().into_owned();

    let show = plumb_in(&h.ctl, &home, &["inventory", "show", "t1", &repo_s]);
    let shown = text(&show);
    assert!(show.status.success(), "{shown}");
    let lab_conf = ssh.join("config.d/lab.conf").display().to_string();
    let config = ssh.join("config").display().to_string();
    for want in [
        "address            10.9.2.2".to_string(),
        format!("ssh_config {lab_conf}:2"),
        format!("ssh_config {config}:5"),
        format!("ssh_config {config}:8"),
        "bastion jump:".to_string(),
        "jump               jump".to_string(),
    ] {
        assert!(shown.contains(&want), "missing {want:?} in\n{shown}");
    }

    let out = plumb_in(&h.ctl, &home, &["converge", &repo_s]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(written(dir, "t1").as_deref(), Some("hello from t1\n"));
    assert_eq!(written(dir, "t2").as_deref(), Some("hello from t2\n"));
    assert_eq!(h.bastion.logins(), 1, "bastion log:\n{}", h.bastion.log());

    // A directive plumb refuses, in effect for t2 only: t2 fails naming file and line, t1 is
    // unaffected.
    fs::write(
        ssh.join("config.d/lab.conf"),
        "Host t1\n    HostName 10.9.2.2\nHost t2\n    HostName 10.9.3.2\n    StrictHostKeyChecking no\nHost jump\n    HostName 10.9.1.2\n    User root\n",
    )
    .expect("lab.conf");
    let out = plumb_in(&h.ctl, &home, &["converge", &repo_s]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&format!("{lab_conf}:5: StrictHostKeyChecking no")),
        "{all}"
    );
}
