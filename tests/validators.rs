//! The real validators of the rendered files, from Debian packages, run on the reference repo
//! rendered with `plumb render --out`:
//!
//! | validator                         | on                     | Debian packages                        |
//! |-----------------------------------|------------------------|----------------------------------------|
//! | `patroni --validate-config`       | every `patroni.yml`    | patroni, postgresql-15, etcd-server    |
//! | `docker-compose config -q`        | every compose file     | docker-compose                         |
//! | `haproxy -c -f`                   | every `haproxy.cfg`    | haproxy                                |
//! | `systemd-analyze verify`          | every unit             | systemd, docker.io, docker-compose     |
//! | `pgbackrest ... help` (parses it) | every `pgbackrest.conf`| pgbackrest                             |
//!
//! The `dcs: consul` variant is validated on `examples/nomad-consul` (rendered with its secret
//! command in demo mode): `patroni --validate-config` (with `python3-consul`, the module
//! Patroni's consul DCS imports) and `docker-compose config`. Consul itself is not installed
//! (no package registry here has it, and its licence is no longer open source): the validator
//! checks the consul section without contacting an agent, and no stand-in agent is run.
//!
//! A missing validator fails its test with the package to install; nothing is skipped.
//!
//! Patroni's validator checks the network from where it runs: etcd must answer and the REST API
//! and PostgreSQL ports must be free; `bin_dir` must hold the PostgreSQL 15 binaries. So its test
//! renders the reference repo through an inventory overlay that puts the members on loopback
//! addresses (127.0.1.x), starts a real three-member etcd cluster from the rendered `etcd.yml`
//! files (only `data-dir`, the metrics listener and the certificate folder are pointed
//! elsewhere), and validates against it. The certificates the rendered files name are issued
//! for the test by plumb's own PKI (a CA, a member certificate per host) into a temp folder.

use assert_cmd::Command as Plumb;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The validator's path, or a failure naming the package that provides it.
fn need(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "validator `{program}` is not installed: install the Debian package `{package}` \
                 (apt-get install -y {package})"
            )
        })
}

/// A file the validation depends on, or a failure naming its package.
fn need_file(path: &str, package: &str, why: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing ({why}): install the Debian package `{package}` (apt-get install -y {package})"
    );
}

/// Where the rendered files expect the member certificates.
const TLS_DIR: &str = "/home/postgres/config/tls";

/// A CA and a member certificate per host (CN = the name, SANs = the address, and 127.0.0.1,
/// where the members' connections to each other come from here), as a converge would write
/// them, in `dir`; returns `dir`.
fn tls_files(dir: &Path, members: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let ca = plumb::pki::create_ca("validators CA", 2).unwrap();
    std::fs::write(dir.join("ca.crt"), &ca.cert_pem).unwrap();
    for (name, address) in members {
        let leaf = plumb::pki::issue(
            &ca.cert_pem,
            &ca.key_pem,
            &plumb::pki::LeafRequest {
                ca: "validators".into(),
                common_name: name.to_string(),
                dns_names: vec![name.to_string(), address.to_string()],
                // etcd checks a peer's source address against its certificate: on one
                // machine, every member dials the others from 127.0.0.1.
                ip_addresses: vec![address.to_string(), "127.0.0.1".to_string()],
                validity_secs: 86_400,
                key_algorithm: plumb::pki::KeyAlgorithm::EcdsaP256,
            },
        )
        .unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), &leaf.cert_pem).unwrap();
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&key, &leaf.key_pem).unwrap();
        std::fs::set_permissions(
            &key,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )
        .unwrap();
    }
    dir.to_path_buf()
}

/// Renders the reference repo into a temp folder; returns it (the files are under `rendered/`).
fn render(overlay: Option<&Path>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rendered");
    let mut cmd = Plumb::cargo_bin("plumb").unwrap();
    cmd.arg("render")
        .arg(root())
        .arg("--age-identity")
        .arg(root().join("examples/lab/demo-age-key.txt"))
        .arg("--out")
        .arg(&out)
        .env_remove("PLUMB_INVENTORY")
        .env_remove("PLUMB_AGE_IDENTITY");
    if let Some(o) = overlay {
        cmd.arg("--inventory").arg(o);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "plumb render failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    dir
}

/// Every file called `name` under `dir`, sorted.
fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == name) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn show(what: &str, o: &Output) -> String {
    format!(
        "{what}: exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn haproxy_accepts_every_haproxy_cfg() {
    let haproxy = need("haproxy", "haproxy");
    let dir = render(None);
    let files = files_named(dir.path(), "haproxy.cfg");
    assert_eq!(files.len(), 3, "one per member: {files:?}");
    // The health checks verify Patroni against the CA file, which haproxy reads at start.
    let tls = tls_files(&dir.path().join("tls"), &[]);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.contains(&format!("ca-file {TLS_DIR}/ca.crt")),
            "{text}"
        );
        std::fs::write(&f, text.replace(TLS_DIR, &tls.to_string_lossy())).unwrap();
        let o = Command::new(&haproxy)
            .arg("-c")
            .arg("-f")
            .arg(&f)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let what = format!("haproxy -c -f {}", f.display());
        assert!(o.status.success(), "{}", show(&what, &o));
        assert!(
            !all.contains("[WARNING]") && !all.contains("[ALERT]"),
            "{}",
            show(&what, &o)
        );
    }
}

#[test]
fn docker_compose_accepts_every_stack_with_its_env() {
    let compose = need("docker-compose", "docker-compose");
    let dir = render(None);
    let files = files_named(dir.path(), "docker-compose.yml");
    assert_eq!(files.len(), 4, "one per host: {files:?}");
    for f in files {
        let stack = f.parent().unwrap();
        assert!(
            stack.join(".env").is_file(),
            "no .env next to {}",
            f.display()
        );
        let o = Command::new(&compose)
            .current_dir(stack)
            .args(["-f", "docker-compose.yml", "config", "-q"])
            .env_remove("COMPOSE_PROJECT_NAME")
            .output()
            .unwrap();
        let what = format!("docker-compose -f {} config -q", f.display());
        assert!(o.status.success(), "{}", show(&what, &o));
        // Interpolation warnings ("The X variable is not set") are errors here.
        assert!(o.stderr.is_empty(), "{}", show(&what, &o));
        // And .env was used: the resolved file names the image and the paths.
        let o = Command::new(&compose)
            .current_dir(stack)
            .args(["-f", "docker-compose.yml", "config"])
            .env_remove("COMPOSE_PROJECT_NAME")
            .output()
            .unwrap();
        let resolved = String::from_utf8_lossy(&o.stdout);
        assert!(
            resolved.contains("image: plumb-lab/postgres-ha:15")
                && resolved.contains("user: 1001:1001")
                && resolved.contains("network_mode: host"),
            "{}",
            show(&what, &o)
        );
    }
}

#[test]
fn systemd_analyze_verifies_every_unit() {
    let analyze = need("systemd-analyze", "systemd");
    need_file(
        "/usr/bin/docker-compose",
        "docker-compose",
        "the units' ExecStart",
    );
    assert!(
        [
            "/lib/systemd/system/docker.service",
            "/usr/lib/systemd/system/docker.service",
            "/etc/systemd/system/docker.service"
        ]
        .iter()
        .any(|p| Path::new(p).exists()),
        "docker.service is missing (the units require it): install the Debian package `docker.io` (apt-get install -y docker.io)"
    );
    let dir = render(None);
    let mut checked = 0;
    for host in std::fs::read_dir(dir.path().join("rendered")).unwrap() {
        let host = host.unwrap().path();
        let units_dir = host.join("etc/systemd/system");
        let units: Vec<PathBuf> = std::fs::read_dir(&units_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!units.is_empty(), "{}", units_dir.display());
        // Verify the host's units together (a timer needs its service next to it).
        let tmp = tempfile::tempdir().unwrap();
        let mut copies = Vec::new();
        for u in &units {
            let c = tmp.path().join(u.file_name().unwrap());
            std::fs::copy(u, &c).unwrap();
            copies.push(c);
        }
        let o = Command::new(&analyze)
            .arg("verify")
            .args(&copies)
            .output()
            .unwrap();
        let what = format!("systemd-analyze verify {}", units_dir.display());
        assert!(o.status.success(), "{}", show(&what, &o));
        // Warnings about our units (unknown keys, bad values) fail too; lines about the
        // machine's own units are not ours to judge.
        let stderr = String::from_utf8_lossy(&o.stderr);
        for line in stderr.lines() {
            let ours = line.contains(&*tmp.path().to_string_lossy())
                || units
                    .iter()
                    .any(|u| line.contains(&*u.file_name().unwrap().to_string_lossy()));
            assert!(!ours, "{}", show(&what, &o));
        }
        checked += units.len();
    }
    // 3 members × 1 stack unit + the repository's stack unit, 3 backup services (full, diff,
    // incr) and 2 timers (full, incr).
    assert_eq!(checked, 3 + 1 + 3 + 2);
}

#[test]
fn pgbackrest_parses_every_pgbackrest_conf() {
    let pgbackrest = need("pgbackrest", "pgbackrest");
    let dir = render(None);
    let files = files_named(dir.path(), "pgbackrest.conf");
    assert_eq!(files.len(), 4, "{files:?}");
    for f in files {
        // `help COMMAND` reads the file as that command would: an unknown option is a warning,
        // an option set twice or a bad value is an error.
        let command = if f.to_string_lossy().contains("pg-backup-repo-server1") {
            "backup"
        } else {
            "archive-push"
        };
        let o = Command::new(&pgbackrest)
            .arg(format!("--config={}", f.display()))
            .args(["--stanza=postgres01", "help", command])
            .output()
            .unwrap();
        let what = format!("pgbackrest --config={} help {command}", f.display());
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{}", show(&what, &o));
        assert!(
            !stderr.contains("WARN") && !stderr.contains("ERROR"),
            "{}",
            show(&what, &o)
        );
    }
}

/// etcd members started for the test, stopped when dropped.
struct Etcd(Vec<Child>);

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn etcd_healthy(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// The response of etcd's gRPC gateway to the member list call (curl, over TLS, with `host`'s
/// certificate from `tls` or none).
fn etcd_gateway_members(addr: &str, tls: &Path, cert_of: Option<&str>) -> String {
    let mut cmd = Command::new(need("curl", "curl"));
    cmd.args(["-s", "--max-time", "5", "-X", "POST", "-d", "{}"])
        .arg("--cacert")
        .arg(tls.join("ca.crt"));
    if let Some(host) = cert_of {
        cmd.arg("--cert")
            .arg(tls.join(format!("{host}.crt")))
            .arg("--key")
            .arg(tls.join(format!("{host}.key")));
    }
    let o = cmd
        .arg(format!("https://{addr}/v3/cluster/member/list"))
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn patroni_validates_every_patroni_yml_against_a_running_etcd() {
    let patroni = need("patroni", "patroni");
    let etcd = need("etcd", "etcd-server");
    need_file(
        "/usr/lib/postgresql/15/bin/postgres",
        "postgresql-15",
        "patroni.yml's bin_dir, which Patroni's validator checks",
    );
    need_file(
        "/usr/lib/postgresql/15/bin/pg_isready",
        "postgresql-client-15",
        "patroni.yml's bin_dir, which Patroni's validator checks",
    );
    let dir = render(Some(&root().join("tests/fixtures/loopback-inventory.yaml")));
    let rendered = dir.path().join("rendered");

    // A real etcd cluster from the rendered member configs.
    let hosts = [
        ("pg-srv1", "127.0.1.1"),
        ("pg-srv2", "127.0.1.2"),
        ("pg-srv3", "127.0.1.3"),
    ];
    let tls = tls_files(&dir.path().join("tls"), &hosts);
    let tls_dir = tls.to_string_lossy().into_owned();
    let mut members = Etcd(Vec::new());
    let mut clients = Vec::new();
    let mut health = Vec::new();
    for (host, address) in hosts {
        let conf =
            std::fs::read_to_string(rendered.join(host).join("home/postgres/config/etcd.yml"))
                .unwrap()
                .replace(TLS_DIR, &tls_dir);
        // Three members on one machine: each its own loopback address for the metrics.
        assert!(
            conf.contains("listen-metrics-urls: http://127.0.0.1:2381\n"),
            "{conf}"
        );
        let conf = conf.replace(
            "listen-metrics-urls: http://127.0.0.1:2381",
            &format!("listen-metrics-urls: http://{address}:2381"),
        );
        health.push(format!("{address}:2381"));
        let data = dir.path().join(format!("etcd-{host}"));
        let mut replaced = 0;
        let conf: String = conf
            .lines()
            .map(|l| {
                if l.starts_with("data-dir:") {
                    replaced += 1;
                    format!("data-dir: {}\n", data.display())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        assert_eq!(replaced, 1, "etcd.yml of {host} has one data-dir");
        let client = conf
            .lines()
            .find_map(|l| l.strip_prefix("advertise-client-urls: https://"))
            .unwrap()
            .to_string();
        clients.push(client);
        let f = dir.path().join(format!("etcd-{host}.yml"));
        std::fs::write(&f, conf).unwrap();
        let log = std::fs::File::create(dir.path().join(format!("etcd-{host}.log"))).unwrap();
        members.0.push(
            Command::new(&etcd)
                .arg("--config-file")
                .arg(&f)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !health.iter().all(|c| etcd_healthy(c)) {
        if Instant::now() > deadline {
            let logs: String = ["pg-srv1", "pg-srv2", "pg-srv3"]
                .iter()
                .map(|h| {
                    let t = std::fs::read_to_string(dir.path().join(format!("etcd-{h}.log")))
                        .unwrap_or_default();
                    let tail: Vec<&str> = t.lines().rev().take(15).collect();
                    format!(
                        "--- {h}\n{}\n",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
            panic!(
                "the etcd cluster from the rendered etcd.yml files did not become healthy:\n{logs}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // Patroni's etcd3 client talks to the gRPC gateway: every member must list all three, to a
    // client with a certificate, and to none without one.
    for c in &clients {
        let members = etcd_gateway_members(c, &tls, Some("pg-srv1"));
        assert_eq!(
            members.matches("\"name\":").count(),
            3,
            "POST https://{c}/v3/cluster/member/list (Patroni's first call):\n{members}"
        );
        let refused = etcd_gateway_members(c, &tls, None);
        assert!(
            !refused.contains("\"name\":"),
            "{c} without a certificate: {refused}"
        );
    }

    let files = files_named(&rendered, "patroni.yml");
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        std::fs::write(f, text.replace(TLS_DIR, &tls_dir)).unwrap();
        let o = Command::new(&patroni)
            .arg("--validate-config")
            .arg(f)
            .output()
            .unwrap();
        let what = format!("patroni --validate-config {}", f.display());
        assert!(o.status.success(), "{}", show(&what, &o));
        assert!(
            o.stdout.is_empty() && o.stderr.is_empty(),
            "{}",
            show(&what, &o)
        );
    }

    // The validator is not a rubber stamp here: a wrong bin_dir fails.
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("bin_dir: /usr/lib/postgresql/15/bin\n"));
    let bad = dir.path().join("bad-patroni.yml");
    std::fs::write(
        &bad,
        text.replace(
            "bin_dir: /usr/lib/postgresql/15/bin",
            "bin_dir: /usr/lib/postgresql/99/bin",
        ),
    )
    .unwrap();
    let o = Command::new(&patroni)
        .arg("--validate-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "{}",
        show("patroni on a wrong bin_dir", &o)
    );
}

/// The demo values the nomad-consul example's secret command serves (its demo mode), in a
/// temp folder: (folder, values).
fn consul_demo_secrets(dir: &Path) -> Vec<String> {
    let store = dir.join("vault-demo");
    std::fs::create_dir_all(&store).unwrap();
    let mut values = Vec::new();
    for field in [
        "patroni_consul_token",
        "postgres_root_password",
        "postgres_replication_password",
        "postgres_rewind_password",
        "patroni_restapi_password",
    ] {
        let v = format!("demo-{field}-{}", std::process::id());
        std::fs::write(store.join(field), format!("{v}\n")).unwrap();
        values.push(v);
    }
    values
}

#[test]
fn patroni_validates_every_patroni_yml_of_the_consul_example() {
    let patroni = need("patroni", "patroni");
    // Patroni's consul module imports python-consul.
    need_file(
        "/usr/lib/python3/dist-packages/consul/__init__.py",
        "python3-consul",
        "Patroni's consul DCS module",
    );
    need_file(
        "/usr/lib/postgresql/15/bin/pg_isready",
        "postgresql-client-15",
        "patroni.yml's bin_dir, which Patroni's validator checks",
    );
    let example = root().join("examples/nomad-consul");
    let dir = tempfile::tempdir().unwrap();
    let values = consul_demo_secrets(dir.path());
    let out = dir.path().join("rendered");
    let o = Plumb::cargo_bin("plumb")
        .unwrap()
        .arg("render")
        .arg(&example)
        .arg("--age-identity")
        .arg(root().join("examples/lab/demo-age-key.txt"))
        .arg("--secret-command")
        .arg(example.join("secret-command/vault-kv.sh"))
        .arg("--inventory")
        .arg(root().join("tests/fixtures/loopback-members.yaml"))
        .arg("--out")
        .arg(&out)
        .env("PLUMB_DEMO_SECRETS", dir.path().join("vault-demo"))
        .env_remove("PLUMB_INVENTORY")
        .env_remove("PLUMB_AGE_IDENTITY")
        .env_remove("PLUMB_SECRET_COMMAND")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show("plumb render", &o));
    assert!(
        files_named(&out, "etcd.yml").is_empty(),
        "no etcd with consul"
    );
    let files = files_named(&out, "patroni.yml");
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        // The token and the passwords came from the secret command.
        for v in &values {
            assert!(
                text.contains(&format!("\"{v}\"")),
                "{v} not in {}",
                f.display()
            );
        }
        assert!(!text.contains("etcd"), "{text}");
        let o = Command::new(&patroni)
            .arg("--validate-config")
            .arg(f)
            .output()
            .unwrap();
        let what = format!("patroni --validate-config {}", f.display());
        assert!(o.status.success(), "{}", show(&what, &o));
        assert!(
            o.stdout.is_empty() && o.stderr.is_empty(),
            "{}",
            show(&what, &o)
        );
    }
    // Not a rubber stamp: a consul section without the agent's address fails.
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.contains("\n  url: \"https://127.0.0.1:8501\"\n"),
        "{text}"
    );
    let bad = dir.path().join("bad-patroni.yml");
    std::fs::write(&bad, text.replace("\n  url: ", "\n  urll: ")).unwrap();
    let o = Command::new(&patroni)
        .arg("--validate-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "{}",
        show("patroni without consul.url", &o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("consul.url  is not defined"),
        "{}",
        show("patroni without consul.url", &o)
    );
    // The stacks carry no etcd service and compose accepts them.
    let compose = need("docker-compose", "docker-compose");
    let stacks = files_named(&out, "docker-compose.yml");
    assert_eq!(stacks.len(), 3, "{stacks:?}");
    for f in stacks {
        let o = Command::new(&compose)
            .current_dir(f.parent().unwrap())
            .args(["-f", "docker-compose.yml", "config", "--services"])
            .env_remove("COMPOSE_PROJECT_NAME")
            .output()
            .unwrap();
        let what = format!("docker-compose config --services {}", f.display());
        assert!(o.status.success(), "{}", show(&what, &o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .collect::<Vec<_>>()
                .len(),
            2,
            "patroni and haproxy: {}",
            show(&what, &o)
        );
        assert!(!String::from_utf8_lossy(&o.stdout).contains("etcd"));
    }
}
