//! Expansion and validation of `PostgresCluster`, without hosts.

use super::*;
use crate::kinds::DesiredHost;
use crate::testutil::{errors, item, render, repo, text};

/// Line numbers matter: the validation tests point at them.
pub(crate) const CLUSTER: &str = "\
kind: PostgresCluster
name: postgres01
hosts: group:postgres
tls: { ca: pg-ca }
backup: { repo: repo1 }
superuser: { password: { secret: su } }
replication: { password: { secret: repl } }
rewind: { password: { secret: rewind } }
rest_api: { password: { secret: api } }
parameters:
  max_connections: 200
  shared_buffers: 128MB
roles:
  - name: app
    password: { secret: app }
databases:
  - name: app
    owner: app
";

pub(crate) const REPO: &str = "\
kind: BackupRepo
name: repo1
hosts: host:backup1
tls: { ca: pg-ca }
";

fn pg1(cluster: &str) -> DesiredHost {
    let dir = repo(&[
        ("manifests/pg.yaml", cluster),
        ("manifests/repo.yaml", REPO),
    ]);
    render(&dir, "pg1")
}

fn cluster_errors(cluster: &str) -> String {
    errors(&[
        ("manifests/pg.yaml", cluster),
        ("manifests/repo.yaml", REPO),
    ])
}

fn dir_of(h: &DesiredHost, path: &str) -> DirectorySpec {
    match &item(h, "Directory", path).spec {
        PrimitiveSpec::Directory(d) => d.clone(),
        other => panic!("{other:?}"),
    }
}

fn yaml(text: &str) -> Value {
    yaml_serde::from_str(text).unwrap()
}

#[test]
fn expands_into_the_primitives_of_a_member() {
    let h = pg1(CLUSTER);
    let mut got: Vec<String> = h
        .resources
        .iter()
        .map(|d| format!("{}/{}", d.kind, d.name))
        .collect();
    got.sort();
    let want = [
        "Certificate//home/postgres/config/tls/pg1.crt",
        "Certificate//home/postgres/pgbackrest/certs/pg1.crt",
        "Command/postgres01-reload-haproxy",
        "Command/postgres01-reload-patroni",
        "Command/postgres01-reload-postgres",
        "Command/postgres01-restart-etcd",
        "Command/postgres01-restart-pgbackrest",
        "ComposeStack/postgres01",
        "Directory//home/postgres",
        "Directory//home/postgres/config",
        "Directory//home/postgres/config/tls",
        "Directory//home/postgres/etcd-data",
        "Directory//home/postgres/pgbackrest",
        "Directory//home/postgres/pgbackrest/certs",
        "Directory//home/postgres/pgbackrest/log",
        "Directory//home/postgres/pgbackrest/spool",
        "Directory//home/postgres/postgres-data",
        "Directory//home/postgres/postgres-data/data",
        "Directory//home/postgres/postgres-data/logs",
        "Directory//home/postgres/postgres-data/unix",
        "Directory//opt/plumb/postgres01",
        "File//home/postgres/config/etcd.yml",
        "File//home/postgres/config/haproxy.cfg",
        "File//home/postgres/config/patroni.yml",
        "File//home/postgres/config/tls/ca.crt",
        "File//home/postgres/pgbackrest/pgbackrest.conf",
        "Group/postgres",
        "SystemdUnit/postgres01-stack.service",
        "User/postgres",
    ];
    assert_eq!(got, want);
    for d in &h.resources {
        assert_eq!(d.origin.via.as_deref(), Some("PostgresCluster/postgres01"));
        assert_eq!(d.origin.file, std::path::Path::new("manifests/pg.yaml"));
    }
}

#[test]
fn account_paths_owners_and_modes() {
    let h = pg1(CLUSTER);
    match &item(&h, "Group", "postgres").spec {
        PrimitiveSpec::Group(g) => assert_eq!(g.gid, Some(1001)),
        other => panic!("{other:?}"),
    }
    match &item(&h, "User", "postgres").spec {
        PrimitiveSpec::User(u) => {
            assert_eq!(u.uid, Some(1001));
            assert_eq!(u.group.as_deref(), Some("postgres"));
            assert_eq!(u.groups, ["docker"]);
            assert_eq!(u.home.as_deref(), Some("/home/postgres"));
        }
        other => panic!("{other:?}"),
    }
    let data = dir_of(&h, "/home/postgres/postgres-data/data");
    assert_eq!((data.owner.as_str(), data.mode.0), ("postgres", 0o700));
    assert_eq!(dir_of(&h, "/home/postgres/etcd-data").mode.0, 0o700);
    assert_eq!(
        dir_of(&h, "/home/postgres/postgres-data/logs").mode.0,
        0o750
    );
    assert_eq!(dir_of(&h, "/opt/plumb/postgres01").owner, "root");
    match &item(&h, "File", "/home/postgres/config/patroni.yml").spec {
        PrimitiveSpec::File(f) => {
            assert_eq!(
                (f.owner.as_str(), f.group.as_str()),
                ("postgres", "postgres")
            );
            assert_eq!(f.mode.0, 0o600);
        }
        other => panic!("{other:?}"),
    }
    match &item(&h, "Certificate", "/home/postgres/pgbackrest/certs/pg1.crt").spec {
        PrimitiveSpec::Certificate(c) => {
            assert_eq!(c.common_name, "pg1");
            assert_eq!(c.dns_names, ["pg1", "10.0.0.1"]);
            assert_eq!(c.ip_addresses, ["10.0.0.1"]);
            assert_eq!(c.key_path, "/home/postgres/pgbackrest/certs/pg1.key");
            assert_eq!(
                c.ca_path.as_deref(),
                Some("/home/postgres/pgbackrest/certs/ca.crt")
            );
            assert_eq!((c.owner.as_str(), c.key_mode.0), ("postgres", 0o600));
            assert_eq!(c.ca, "pg-ca");
        }
        other => panic!("{other:?}"),
    }
    match &item(&h, "SystemdUnit", "postgres01-stack.service").spec {
        PrimitiveSpec::SystemdUnit(u) => {
            assert_eq!(u.enabled, Some(true));
            let t = String::from_utf8(u.content.as_ref().unwrap().bytes().to_vec()).unwrap();
            assert!(t.contains("Type=oneshot\nRemainAfterExit=yes\n"), "{t}");
            assert!(
                t.contains("WorkingDirectory=/opt/plumb/postgres01\n"),
                "{t}"
            );
            assert!(t.contains("ExecStart=/usr/bin/docker-compose up -d"), "{t}");
            assert!(t.contains("ExecStop=/usr/bin/docker-compose down"), "{t}");
            assert!(t.contains("After=docker.service"), "{t}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn patroni_yml_is_sensitive_and_describes_the_member() {
    let h = pg1(CLUSTER);
    let d = item(&h, "File", "/home/postgres/config/patroni.yml");
    assert!(d.is_sensitive(), "patroni.yml holds passwords");
    let shown = yaml_serde::to_string(d).unwrap();
    assert!(shown.contains("<sensitive>"), "{shown}");
    assert!(!shown.contains("<secret:su>"), "{shown}");

    let y = yaml(&text(d));
    assert_eq!(y["scope"], "postgres01");
    assert_eq!(y["name"], "pg1");
    assert_eq!(y["restapi"]["listen"], "10.0.0.1:8008");
    assert_eq!(y["restapi"]["authentication"]["password"], "<secret:api>");
    assert_eq!(
        y["etcd3"]["hosts"],
        json!(["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"])
    );
    let dcs = &y["bootstrap"]["dcs"];
    assert_eq!(
        (&dcs["ttl"], &dcs["loop_wait"], &dcs["retry_timeout"]),
        (&json!(30), &json!(10), &json!(10))
    );
    assert_eq!(dcs["maximum_lag_on_failover"], 1_048_576);
    assert_eq!(dcs["postgresql"]["use_pg_rewind"], true);
    // Patroni ignores max_connections in the local section: it must be in the DCS.
    assert_eq!(dcs["postgresql"]["parameters"]["max_connections"], 200);
    assert_eq!(
        y["bootstrap"]["initdb"],
        json!([{"encoding": "UTF8"}, "data-checksums"])
    );
    let hba = y["bootstrap"]["pg_hba"].as_array().unwrap();
    assert!(hba.contains(&json!(
        "hostssl replication replicator 10.0.0.0/24 scram-sha-256"
    )));
    let pg = &y["postgresql"];
    assert_eq!(pg["listen"], "10.0.0.1:5432");
    assert_eq!(pg["data_dir"], "/home/postgres/postgres-data/data");
    assert_eq!(pg["bin_dir"], "/usr/lib/postgresql/15/bin");
    assert_eq!(pg["authentication"]["superuser"]["username"], "postgres");
    assert_eq!(pg["authentication"]["superuser"]["password"], "<secret:su>");
    assert_eq!(
        pg["authentication"]["replication"]["username"],
        "replicator"
    );
    assert_eq!(
        pg["authentication"]["rewind"]["password"],
        "<secret:rewind>"
    );
    // Locally only what names host paths or the archive wiring: a local value would override
    // the DCS, where PATCH /config keeps the cluster-wide parameters.
    let params = &pg["parameters"];
    assert!(params.get("shared_buffers").is_none(), "{params}");
    assert!(params.get("max_connections").is_none());
    assert!(params.get("log_min_duration_statement").is_none());
    let dcs = &y["bootstrap"]["dcs"]["postgresql"]["parameters"];
    assert_eq!(dcs["shared_buffers"], "128MB");
    assert_eq!(dcs["max_connections"], 200);
    assert_eq!(dcs["log_min_duration_statement"], 250);
    assert!(dcs.get("archive_command").is_none());
    assert_eq!(params["archive_mode"], "on");
    assert_eq!(
        params["archive_command"],
        "pgbackrest --config=/home/postgres/pgbackrest/pgbackrest.conf --stanza=postgres01 archive-push \"%p\""
    );
    assert_eq!(
        params["unix_socket_directories"],
        "/home/postgres/postgres-data/unix"
    );
    assert_eq!(y["tags"]["nofailover"], false);
}

#[test]
fn etcd_haproxy_and_pgbackrest_configs_name_every_member() {
    let h = pg1(CLUSTER);
    let etcd = yaml(&text(item(&h, "File", "/home/postgres/config/etcd.yml")));
    assert_eq!(etcd["name"], "pg1");
    assert_eq!(
        etcd["initial-cluster"],
        "pg1=https://10.0.0.1:2380,pg2=https://10.0.0.2:2380,pg3=https://10.0.0.3:2380"
    );
    assert_eq!(etcd["listen-client-urls"], "https://10.0.0.1:2379");
    // Patroni's etcd3 client needs the gRPC gateway, off by default with a config file.
    assert_eq!(etcd["enable-grpc-gateway"], true);

    let ha = text(item(&h, "File", "/home/postgres/config/haproxy.cfg"));
    assert!(
        ha.contains(
            "bind *:5000\n    option httpchk OPTIONS /primary\n    http-check expect status 200"
        ),
        "{ha}"
    );
    assert!(
        ha.contains("bind *:5001\n    balance roundrobin\n    option httpchk OPTIONS /replica"),
        "{ha}"
    );
    for (name, addr) in [
        ("pg1", "10.0.0.1"),
        ("pg2", "10.0.0.2"),
        ("pg3", "10.0.0.3"),
    ] {
        let line = format!(
            "server {name} {addr}:5432 maxconn 100 check port 8008 check-ssl verify required ca-file /home/postgres/config/tls/ca.crt\n"
        );
        assert_eq!(ha.matches(&line).count(), 2, "{ha}");
    }

    let br = text(item(
        &h,
        "File",
        "/home/postgres/pgbackrest/pgbackrest.conf",
    ));
    for line in [
        "repo1-host=10.0.0.11\n",
        "repo1-host-type=tls\n",
        "repo1-host-cert-file=/home/postgres/pgbackrest/certs/pg1.crt\n",
        "repo1-host-key-file=/home/postgres/pgbackrest/certs/pg1.key\n",
        "repo1-host-ca-file=/home/postgres/pgbackrest/certs/ca.crt\n",
        "tls-server-address=10.0.0.1\n",
        "tls-server-auth=backup1=postgres01\n",
        "[postgres01]\npg1-path=/home/postgres/postgres-data/data\n",
    ] {
        assert!(br.contains(line), "missing {line:?} in\n{br}");
    }
}

#[test]
fn compose_stack_runs_the_four_services_as_1001_on_the_host_network() {
    let h = pg1(CLUSTER);
    let d = item(&h, "ComposeStack", "postgres01");
    let PrimitiveSpec::ComposeStack(s) = &d.spec else {
        panic!()
    };
    assert_eq!(s.dir, "/opt/plumb/postgres01");
    let env = String::from_utf8(s.env.as_ref().unwrap().bytes().to_vec()).unwrap();
    assert!(!s.env.as_ref().unwrap().sensitive);
    for line in [
        "COMPOSE_PROJECT_NAME=postgres01\n",
        "IMAGE=plumb-lab/postgres-ha:15\n",
        "PG_UID=1001\n",
        "PG_DATA_ROOT=/home/postgres/postgres-data\n",
    ] {
        assert!(env.contains(line), "{env}");
    }
    let c = yaml(&text(d));
    let services = c["services"].as_object().unwrap();
    let names: Vec<&String> = services.keys().collect();
    assert_eq!(names, ["etcd", "patroni", "pgbackrest", "haproxy"]);
    for (name, svc) in services {
        assert_eq!(svc["network_mode"], "host", "{name}");
        assert_eq!(svc["user"], "${PG_UID}:${PG_GID}", "{name}");
        assert_eq!(svc["image"], "${IMAGE}", "{name}");
    }
    assert_eq!(
        services["patroni"]["volumes"][1],
        "${PG_DATA_ROOT}:${PG_DATA_ROOT}"
    );
}

#[test]
fn notify_wiring_touches_only_this_member_and_one_service() {
    let h = pg1(CLUSTER);
    let notified = |kind: &str, name: &str| -> Vec<String> {
        item(&h, kind, name)
            .notify
            .iter()
            .map(|r| r.to_string())
            .collect()
    };
    assert_eq!(
        notified("File", "/home/postgres/config/patroni.yml"),
        ["Command/postgres01-reload-patroni"]
    );
    assert_eq!(
        notified("File", "/home/postgres/pgbackrest/pgbackrest.conf"),
        ["Command/postgres01-restart-pgbackrest"]
    );
    assert_eq!(
        notified("Certificate", "/home/postgres/pgbackrest/certs/pg1.crt"),
        ["Command/postgres01-restart-pgbackrest"]
    );
    assert_eq!(
        notified("File", "/home/postgres/config/haproxy.cfg"),
        ["Command/postgres01-reload-haproxy"]
    );
    assert!(notified("File", "/home/postgres/config/etcd.yml").is_empty());
    assert!(
        h.resources
            .iter()
            .all(|d| d.notify.iter().all(|r| r.kind == "Command")),
        "nothing restarts the whole stack"
    );
    for (name, run) in [
        (
            "postgres01-reload-patroni",
            "/usr/bin/docker-compose kill -s SIGHUP patroni",
        ),
        (
            "postgres01-restart-pgbackrest",
            "/usr/bin/docker-compose restart pgbackrest",
        ),
        (
            "postgres01-reload-haproxy",
            "/usr/bin/docker-compose kill -s SIGUSR2 haproxy",
        ),
    ] {
        let PrimitiveSpec::Command(c) = &item(&h, "Command", name).spec else {
            panic!()
        };
        assert!(c.refresh_only, "{name} runs only when notified");
        assert_eq!(c.run, run);
        assert_eq!(c.cwd.as_deref(), Some("/opt/plumb/postgres01"));
    }
}

#[test]
fn without_backup_there_is_no_pgbackrest_and_no_archiving() {
    let h = pg1(&CLUSTER.replace("backup: { repo: repo1 }\n", ""));
    assert!(
        h.resources.iter().all(|d| !d.name.contains("pgbackrest")),
        "{:#?}",
        h.resources.iter().map(|d| &d.name).collect::<Vec<_>>()
    );
    // Only the member certificate (etcd, Patroni, PostgreSQL), no pgBackRest one.
    let certs: Vec<&str> = h
        .resources
        .iter()
        .filter(|d| d.kind == "Certificate")
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(certs, ["/home/postgres/config/tls/pg1.crt"]);
    let y = yaml(&text(item(&h, "File", "/home/postgres/config/patroni.yml")));
    assert!(y["postgresql"]["parameters"].get("archive_mode").is_none());
    let c = yaml(&text(item(&h, "ComposeStack", "postgres01")));
    assert!(c["services"].get("pgbackrest").is_none());
}

#[test]
fn host_vars_and_fields_override_defaults() {
    let dir = repo(&[
            (
                "manifests/pg.yaml",
                &CLUSTER.replace("hosts: group:postgres\n", "hosts: group:postgres\nhaproxy: { enabled: false }\nnetwork: 10.9.0.0/16\n"),
            ),
            ("manifests/repo.yaml", REPO),
            (
                "inventory/hosts.yaml",
                &crate::testutil::INVENTORY.replace(
                    "  pg1: { address: 10.0.0.1, groups: [postgres] }",
                    "  pg1: { address: 10.0.0.1, groups: [postgres], vars: { postgres_image: reg/pg:1, patroni_tags: { nofailover: true } } }",
                ),
            ),
        ]);
    let h = render(&dir, "pg1");
    assert!(!h.resources.iter().any(|d| d.name.contains("haproxy")));
    let y = yaml(&text(item(&h, "File", "/home/postgres/config/patroni.yml")));
    assert_eq!(y["tags"]["nofailover"], true);
    assert!(
        y["postgresql"]["pg_hba"]
            .as_array()
            .unwrap()
            .contains(&json!("hostssl all all 10.9.0.0/16 scram-sha-256"))
    );
    let PrimitiveSpec::ComposeStack(s) = &item(&h, "ComposeStack", "postgres01").spec else {
        panic!()
    };
    let env = String::from_utf8(s.env.as_ref().unwrap().bytes().to_vec()).unwrap();
    assert!(env.contains("IMAGE=reg/pg:1\n"), "{env}");
    let h2 = render(&dir, "pg2");
    let y2 = yaml(&text(item(
        &h2,
        "File",
        "/home/postgres/config/patroni.yml",
    )));
    assert_eq!(y2["tags"]["nofailover"], false);
}

#[test]
fn a_repo_template_overrides_the_built_in_one() {
    let dir = repo(&[
        ("manifests/pg.yaml", CLUSTER),
        ("manifests/repo.yaml", REPO),
        (
            "templates/postgres-cluster/etcd.yml.tera",
            "name: {{ cluster.member.name }} # custom\n",
        ),
    ]);
    let h = render(&dir, "pg2");
    assert_eq!(
        text(item(&h, "File", "/home/postgres/config/etcd.yml")),
        "name: pg2 # custom\n"
    );
}

#[test]
fn an_identical_explicit_user_merges_and_a_different_one_conflicts() {
    let same = "kind: User\nname: postgres\nhosts: group:postgres\nuid: 1001\ngroup: postgres\ngroups: [docker]\nhome: /home/postgres\nshell: /bin/bash\n";
    let dir = repo(&[
        ("manifests/pg.yaml", CLUSTER),
        ("manifests/repo.yaml", REPO),
        ("manifests/users.yaml", same),
    ]);
    let h = render(&dir, "pg1");
    assert_eq!(h.resources.iter().filter(|d| d.kind == "User").count(), 1);

    let dir = repo(&[
        ("manifests/pg.yaml", CLUSTER),
        ("manifests/repo.yaml", REPO),
        ("manifests/users.yaml", &same.replace("1001", "1002")),
    ]);
    let repo = crate::testutil::load(&dir).unwrap();
    let e = crate::render::render_host(&repo, repo.inventory.host("pg1").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("User/postgres is declared twice, differently"),
        "{e}"
    );
}

#[test]
fn unknown_ca_is_reported_at_its_line() {
    let e = cluster_errors(&CLUSTER.replace("ca: pg-ca }", "ca: pg-caa }"));
    assert!(
            e.contains("manifests/pg.yaml:4:12: error: field `tls.ca`: unknown CertificateAuthority `pg-caa`\n  hint: known CAs: pg-ca"),
            "{e}"
        );
}

#[test]
fn unknown_backup_repo_is_reported_at_its_line() {
    let e = cluster_errors(&CLUSTER.replace("repo: repo1", "repo: repo2"));
    assert!(
            e.contains("manifests/pg.yaml:5:17: error: field `backup.repo`: unknown BackupRepo `repo2`\n  hint: known BackupRepos: repo1"),
            "{e}"
        );
}

#[test]
fn database_owner_must_be_a_declared_role() {
    let e = cluster_errors(&CLUSTER.replace("    owner: app", "    owner: ap"));
    assert!(
            e.contains("manifests/pg.yaml:18:12: error: field `databases[0].owner`: owner `ap` of database `app` is not a declared role\n  hint: did you mean `app`?"),
            "{e}"
        );
    // The superuser may own databases.
    let ok = repo(&[
        (
            "manifests/pg.yaml",
            &CLUSTER.replace("    owner: app", "    owner: postgres"),
        ),
        ("manifests/repo.yaml", REPO),
    ]);
    crate::testutil::load(&ok).unwrap();
}

#[test]
fn missing_secrets_are_reported_where_they_are_named() {
    let e = cluster_errors(
        &CLUSTER
            .replace("secret: su }", "secret: sux }")
            .replace("{ secret: app }", "{ secret: app_pw }"),
    );
    assert!(
            e.contains("manifests/pg.yaml:6:34: error: field `superuser.password.secret`: secret `sux` is not defined\n  hint: create it with `plumb secrets set sux`"),
            "{e}"
        );
    assert!(
            e.contains("manifests/pg.yaml:15:25: error: field `roles[0].password.secret`: secret `app_pw` is not defined"),
            "{e}"
        );
}

#[test]
fn other_mistakes_are_reported_with_their_field() {
    let e = cluster_errors(&format!(
        "{}ports: {{ rest_api: 5432 }}\npatroni: {{ ttl: 20 }}\n",
        CLUSTER.replace("  shared_buffers: 128MB", "  listen_addresses: '*'")
    ));
    assert!(
            e.contains("manifests/pg.yaml:12:21: error: field `parameters.listen_addresses`: `listen_addresses` is set by plumb and Patroni"),
            "{e}"
        );
    assert!(
            e.contains("manifests/pg.yaml:19:20: error: field `ports.rest_api`: port 5432 is already used by `ports.postgres`"),
            "{e}"
        );
    assert!(
            e.contains("manifests/pg.yaml:20:17: error: field `patroni.ttl`: ttl 20 is too short for loop_wait 10 and retry_timeout 10"),
            "{e}"
        );
}

#[test]
fn the_cluster_network_must_be_known() {
    let e = errors(&[
        ("manifests/pg.yaml", CLUSTER),
        ("manifests/repo.yaml", REPO),
        (
            "inventory/hosts.yaml",
            &crate::testutil::INVENTORY.replace(
                "  vars:\n    cluster_network: 10.0.0.0/24\n",
                "  vars: {}\n",
            ),
        ),
    ]);
    assert!(
            e.contains("manifests/pg.yaml:1:1: error: field `network`: no `network` on the cluster and no var `cluster_network` for its hosts"),
            "{e}"
        );
    let e = cluster_errors(&format!("{CLUSTER}network: 10.0.0.0/33\n"));
    assert!(
            e.contains("manifests/pg.yaml:19:10: error: field `network`: `10.0.0.0/33` is not a network in CIDR notation"),
            "{e}"
        );
}

#[test]
fn unknown_fields_and_notify_are_rejected() {
    let e = cluster_errors(&format!("{CLUSTER}archive: true\n"));
    assert!(
        e.contains("manifests/pg.yaml:19:1: error: field `archive`: unknown field `archive`"),
        "{e}"
    );
    let e = cluster_errors(&format!("{CLUSTER}notify: [ComposeStack/postgres01]\n"));
    assert!(
        e.contains("error: field `notify`: a PostgresCluster wires its own handlers"),
        "{e}"
    );
}

#[test]
fn cidr_syntax() {
    assert!(check_cidr("192.168.150.0/24").is_ok());
    assert!(check_cidr("fd00::/8").is_ok());
    assert!(check_cidr("192.168.150.0").is_err());
    assert!(check_cidr("192.168.150.0/40").is_err());
    assert!(check_cidr("x/8").is_err());
}

#[test]
fn the_live_cluster_carries_roles_databases_grants_and_the_dcs_parameters() {
    let cluster = format!(
        "{}{}",
        CLUSTER.replace(
            "    owner: app\n",
            "    owner: app\n    encoding: UTF8\n    grants:\n      - { role: app, privilege: all }\n      - { role: app, schema: public }\n"
        ),
        ""
    );
    let dir = repo(&[
        ("manifests/pg.yaml", &cluster),
        ("manifests/repo.yaml", REPO),
    ]);
    let loaded = crate::testutil::load(&dir).unwrap_or_else(|e| panic!("{e:?}"));
    let m = loaded.find("PostgresCluster", "postgres01").unwrap();
    let Spec::PostgresCluster(spec) = &m.spec else {
        panic!("not a cluster")
    };
    let secret = |name: &str| Ok(crate::pg::Password::new(format!("value-of-{name}")));
    let ca_pem = |name: &str| loaded.ca_certificates.get(name).map(|c| c.bytes().to_vec());
    let live = spec.live(m, &loaded.inventory, &secret, &ca_pem).unwrap();
    assert_eq!(live.member_names(), ["pg1", "pg2", "pg3"]);
    assert_eq!(
        live.tls.anchors(),
        1,
        "the cluster's CA is what plumb trusts"
    );
    assert_eq!(live.superuser.user, "postgres");
    assert_eq!(live.superuser.password.expose(), "value-of-su");
    assert_eq!(live.rest_api.user, "patroni");
    let app = &live.declared.roles[0];
    assert_eq!(app.name, "app");
    assert_eq!(app.password.as_ref().unwrap().expose(), "value-of-app");
    assert_eq!(live.declared.databases[0].encoding.as_deref(), Some("UTF8"));
    assert_eq!(live.declared.grants.len(), 2);
    assert_eq!(
        live.declared.protected_roles,
        ["postgres", "replicator", "rewind_user"]
    );
    // Every cluster-wide parameter goes to the DCS, none of the per-member ones.
    let p = &live.dynamic.parameters;
    assert_eq!(p["shared_buffers"], "128MB");
    assert_eq!(p["max_connections"], 200);
    assert_eq!(p["log_min_duration_statement"], 250);
    assert!(!p.contains_key("archive_command") && !p.contains_key("unix_socket_directories"));
    assert!(live.dynamic.remove_undeclared_parameters);
    assert_eq!(live.dynamic.ttl, 30);

    // A secret that cannot be read names the field and the secret, never a value.
    let missing = |name: &str| {
        if name == "app" {
            Err("no identity".to_string())
        } else {
            Ok(crate::pg::Password::new("x"))
        }
    };
    let e = spec
        .live(m, &loaded.inventory, &missing, &ca_pem)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "cluster postgres01: roles[0].password: secret `app`: no identity"
    );
    // A CA plumb cannot find is named.
    let e = spec
        .live(m, &loaded.inventory, &secret, &|_| None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "cluster postgres01: tls: CertificateAuthority `pg-ca` is not declared"
    );
}

#[test]
fn two_members_and_bad_grants_are_refused_at_their_line() {
    let e = errors(&[
        (
            "manifests/pg.yaml",
            &CLUSTER.replace("hosts: group:postgres", "hosts: [host:pg1, host:pg2]"),
        ),
        ("manifests/repo.yaml", REPO),
    ]);
    assert!(
        e.contains("manifests/pg.yaml:3:8: error: field `hosts`: the cluster has 2 members"),
        "{e}"
    );
    assert!(e.contains("use 1 member (no HA) or 3"), "{e}");
    let e = cluster_errors(&CLUSTER.replace(
        "    owner: app\n",
        "    owner: app\n    grants:\n      - { role: nobody, privilege: connect }\n      - { role: app }\n",
    ));
    assert!(
        e.contains("field `databases[0].grants[0].role`: grantee `nobody` is not a declared role"),
        "{e}"
    );
    assert!(
        e.contains("field `databases[0].grants[1]`: a grant takes either `privilege`"),
        "{e}"
    );
}

/// The member certificate of `pg1`.
fn member_cert(h: &DesiredHost) -> crate::kinds::certificate::CertificateState {
    match &item(h, "Certificate", "/home/postgres/config/tls/pg1.crt").spec {
        PrimitiveSpec::Certificate(c) => c.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_member_certificate_names_the_member_and_what_clients_use() {
    let h = pg1(CLUSTER);
    let c = member_cert(&h);
    assert_eq!(c.common_name, "pg1");
    assert_eq!(c.dns_names, ["pg1", "10.0.0.1"]);
    assert_eq!(c.ip_addresses, ["10.0.0.1"]);
    assert_eq!(c.key_path, "/home/postgres/config/tls/pg1.key");
    // The bundle is a file of its own (see the rotation test).
    assert_eq!(c.ca_path, None);
    assert_eq!(
        (c.owner.as_str(), c.group.as_str()),
        ("postgres", "postgres")
    );
    assert_eq!((c.key_mode.0, c.cert_mode.0), (0o600, 0o644));
    assert_eq!(c.ca, "pg-ca");
    // Short-lived by default: 90 days, reissued in the last 30.
    assert_eq!(c.validity.secs, 90 * 86_400);
    assert_eq!(c.renew_before.secs, 30 * 86_400);
    let tls = dir_of(&h, "/home/postgres/config/tls");
    assert_eq!((tls.owner.as_str(), tls.mode.0), ("postgres", 0o750));

    // The names clients use through HAProxy go on every member's certificate.
    let h = pg1(&CLUSTER.replace(
        "tls: { ca: pg-ca }",
        "tls: { ca: pg-ca, names: [pg.example.internal, 10.0.0.100], validity: 10d, renew_before: 3d }",
    ));
    let c = member_cert(&h);
    assert_eq!(
        c.dns_names,
        ["pg1", "10.0.0.1", "pg.example.internal", "10.0.0.100"]
    );
    assert_eq!(c.ip_addresses, ["10.0.0.1", "10.0.0.100"]);
    assert_eq!((c.validity.secs, c.renew_before.secs), (864_000, 259_200));
    // ... and not on the pgBackRest one, which only the repository host checks.
    match &item(&h, "Certificate", "/home/postgres/pgbackrest/certs/pg1.crt").spec {
        PrimitiveSpec::Certificate(c) => assert_eq!(c.dns_names, ["pg1", "10.0.0.1"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn etcd_speaks_tls_only_and_requires_client_certificates() {
    let h = pg1(CLUSTER);
    let etcd = yaml(&text(item(&h, "File", "/home/postgres/config/etcd.yml")));
    for key in [
        "listen-peer-urls",
        "listen-client-urls",
        "initial-advertise-peer-urls",
        "advertise-client-urls",
    ] {
        assert!(
            etcd[key].as_str().unwrap().starts_with("https://10.0.0.1:"),
            "{key}: {}",
            etcd[key]
        );
    }
    for section in ["client-transport-security", "peer-transport-security"] {
        let s = &etcd[section];
        assert_eq!(
            s["cert-file"], "/home/postgres/config/tls/pg1.crt",
            "{section}"
        );
        assert_eq!(
            s["key-file"], "/home/postgres/config/tls/pg1.key",
            "{section}"
        );
        assert_eq!(
            s["trusted-ca-file"], "/home/postgres/config/tls/ca.crt",
            "{section}"
        );
        assert_eq!(s["client-cert-auth"], true, "{section}");
    }
    // Plain HTTP only on loopback, for /health and /metrics.
    assert_eq!(etcd["listen-metrics-urls"], "http://127.0.0.1:2381");
    let all = text(item(&h, "File", "/home/postgres/config/etcd.yml"));
    assert_eq!(all.matches("http://").count(), 1, "{all}");
}

#[test]
fn patroni_uses_tls_towards_etcd_its_clients_and_the_other_members() {
    let h = pg1(CLUSTER);
    let y = yaml(&text(item(&h, "File", "/home/postgres/config/patroni.yml")));
    let api = &y["restapi"];
    assert_eq!(api["certfile"], "/home/postgres/config/tls/pg1.crt");
    assert_eq!(api["keyfile"], "/home/postgres/config/tls/pg1.key");
    assert_eq!(api["cafile"], "/home/postgres/config/tls/ca.crt");
    assert_eq!(api["authentication"]["username"], "patroni");
    assert_eq!(y["ctl"]["cacert"], "/home/postgres/config/tls/ca.crt");
    assert_eq!(y["ctl"]["insecure"], false);
    let etcd = &y["etcd3"];
    assert_eq!(etcd["protocol"], "https");
    assert_eq!(etcd["cacert"], "/home/postgres/config/tls/ca.crt");
    assert_eq!(etcd["cert"], "/home/postgres/config/tls/pg1.crt");
    assert_eq!(etcd["key"], "/home/postgres/config/tls/pg1.key");
    let auth = &y["postgresql"]["authentication"];
    for user in ["replication", "rewind"] {
        assert_eq!(auth[user]["sslmode"], "verify-ca", "{user}");
        assert_eq!(
            auth[user]["sslrootcert"], "/home/postgres/config/tls/ca.crt",
            "{user}"
        );
    }
    // The superuser connects over the unix socket.
    assert!(auth["superuser"].get("sslmode").is_none());
}

#[test]
fn postgresql_has_ssl_on_and_refuses_plain_connections_from_the_network() {
    let h = pg1(CLUSTER);
    let y = yaml(&text(item(&h, "File", "/home/postgres/config/patroni.yml")));
    // `ssl` is cluster-wide (in the DCS); the certificate files are the member's own.
    assert_eq!(
        y["bootstrap"]["dcs"]["postgresql"]["parameters"]["ssl"],
        "on"
    );
    assert_eq!(
        y["bootstrap"]["dcs"]["postgresql"]["parameters"]["ssl_min_protocol_version"],
        "TLSv1.2"
    );
    let params = &y["postgresql"]["parameters"];
    assert!(params.get("ssl").is_none());
    assert_eq!(params["ssl_cert_file"], "/home/postgres/config/tls/pg1.crt");
    assert_eq!(params["ssl_key_file"], "/home/postgres/config/tls/pg1.key");
    assert_eq!(params["ssl_ca_file"], "/home/postgres/config/tls/ca.crt");
    let want = json!([
        "local all all peer",
        "host replication replicator 127.0.0.1/32 scram-sha-256",
        "hostssl replication replicator 10.0.0.0/24 scram-sha-256",
        "host all all 127.0.0.1/32 scram-sha-256",
        "hostssl all all 10.0.0.0/24 scram-sha-256",
        "hostnossl replication all 10.0.0.0/24 reject",
        "hostnossl all all 10.0.0.0/24 reject",
    ]);
    assert_eq!(y["postgresql"]["pg_hba"], want);
    assert_eq!(y["bootstrap"]["pg_hba"], want);
    // No plain `host` line for the cluster network.
    for line in want.as_array().unwrap() {
        let line = line.as_str().unwrap();
        assert!(
            !(line.starts_with("host ") && line.contains("10.0.0.0/24")),
            "{line}"
        );
    }
    // A manifest's own lines come after plumb's, so they cannot reopen plain connections.
    let h = pg1(&CLUSTER.replace(
        "parameters:\n",
        "pg_hba: [\"host all all 10.0.0.0/24 trust\"]\nparameters:\n",
    ));
    let y = yaml(&text(item(&h, "File", "/home/postgres/config/patroni.yml")));
    let hba = y["postgresql"]["pg_hba"].as_array().unwrap();
    assert_eq!(hba.last().unwrap(), "host all all 10.0.0.0/24 trust");
    assert_eq!(hba[6], "hostnossl all all 10.0.0.0/24 reject");
}

#[test]
fn haproxy_checks_patroni_over_https_against_the_ca() {
    let h = pg1(CLUSTER);
    let ha = text(item(&h, "File", "/home/postgres/config/haproxy.cfg"));
    let servers: Vec<&str> = ha
        .lines()
        .filter(|l| l.trim_start().starts_with("server "))
        .collect();
    assert_eq!(servers.len(), 6, "{ha}");
    for s in servers {
        assert!(
            s.ends_with(" check port 8008 check-ssl verify required ca-file /home/postgres/config/tls/ca.crt"),
            "{s}"
        );
    }
}

#[test]
fn a_new_member_certificate_reloads_patroni_postgresql_and_haproxy_only() {
    let h = pg1(CLUSTER);
    let notified: Vec<String> = item(&h, "Certificate", "/home/postgres/config/tls/pg1.crt")
        .notify
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        notified,
        [
            "Command/postgres01-reload-patroni",
            "Command/postgres01-reload-postgres",
            "Command/postgres01-reload-haproxy",
        ]
    );
    let PrimitiveSpec::Command(c) = &item(&h, "Command", "postgres01-reload-postgres").spec else {
        panic!()
    };
    assert!(c.refresh_only);
    assert_eq!(
        c.run,
        "/usr/bin/docker-compose exec -T patroni sh -c 's=$(/usr/lib/postgresql/15/bin/pg_ctl status -D /home/postgres/postgres-data/data 2>&1) || exit 0; case \"$s\" in *single-user*) exit 0;; esac; exec /usr/lib/postgresql/15/bin/pg_ctl reload -D /home/postgres/postgres-data/data'"
    );
    // Without HAProxy, nothing to reload there.
    let h = pg1(&CLUSTER.replace(
        "hosts: group:postgres\n",
        "hosts: group:postgres\nhaproxy: { enabled: false }\n",
    ));
    assert_eq!(
        item(&h, "Certificate", "/home/postgres/config/tls/pg1.crt")
            .notify
            .len(),
        2
    );
}

#[test]
fn tls_parameters_and_bad_names_are_refused() {
    let e = cluster_errors(&CLUSTER.replace(
        "  shared_buffers: 128MB\n",
        "  shared_buffers: 128MB\n  ssl: off\n",
    ));
    assert!(
        e.contains("error: field `parameters.ssl`: `ssl` is set by plumb and Patroni; it cannot be given here\n  hint: TLS is always on"),
        "{e}"
    );
    let e = cluster_errors(&CLUSTER.replace(
        "tls: { ca: pg-ca }",
        "tls: { ca: pg-ca, names: [\"bad name\"] }",
    ));
    assert!(
        e.contains(
            "error: field `tls.names[0]`: `bad name` is neither a DNS name nor an IP address"
        ),
        "{e}"
    );
}

#[test]
fn a_ca_rotation_trusts_both_cas_in_every_bundle_and_restarts_etcd_for_a_new_bundle() {
    let ca2 = crate::pki::create_ca("second CA", 30).unwrap();
    let two_cas = |tls: &str| {
        repo(&[
            (
                "manifests/pg.yaml",
                &CLUSTER.replace("tls: { ca: pg-ca }", tls),
            ),
            (
                "manifests/repo.yaml",
                &REPO.replace("tls: { ca: pg-ca }", tls),
            ),
            (
                "manifests/ca2.yaml",
                "kind: CertificateAuthority\nname: pg-ca-2\ncommon_name: second CA\ncertificate: pki/pg-ca-2.crt\nkey: { secret: pg-ca-2-key }\n",
            ),
            ("pki/pg-ca-2.crt", &ca2.cert_pem),
            ("secrets/pg-ca-2-key.age", "not decrypted in tests"),
        ])
    };
    let bundle_of = |h: &DesiredHost| text(item(h, "File", "/home/postgres/config/tls/ca.crt"));
    // Each test repo has a CA `pg-ca` of its own.
    let ca1_of = |dir: &tempfile::TempDir| {
        std::fs::read_to_string(dir.path().join("pki/pg-ca.crt")).unwrap()
    };
    let dir = two_cas("tls: { ca: pg-ca }");
    assert_eq!(bundle_of(&render(&dir, "pg1")), ca1_of(&dir));

    // Phase 1: the new CA joins every bundle; certificates stay with the old one.
    let dir = two_cas("tls: { ca: pg-ca, trust: [pg-ca-2] }");
    let h = render(&dir, "pg1");
    assert_eq!(bundle_of(&h), format!("{}{}", ca1_of(&dir), ca2.cert_pem));
    assert_eq!(member_cert(&h).ca, "pg-ca");
    let notified: Vec<String> = item(&h, "File", "/home/postgres/config/tls/ca.crt")
        .notify
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        notified,
        [
            "Command/postgres01-reload-patroni",
            "Command/postgres01-reload-postgres",
            "Command/postgres01-reload-haproxy",
            "Command/postgres01-restart-etcd",
        ]
    );
    let PrimitiveSpec::Command(c) = &item(&h, "Command", "postgres01-restart-etcd").spec else {
        panic!()
    };
    assert!(c.refresh_only);
    assert_eq!(c.run, "/usr/bin/docker-compose restart etcd");

    // Phase 2: certificates move to the new CA; the member bundle stays the same (sorted by CA
    // name, not led by the signing CA), so etcd does not restart and hosts converged a moment
    // apart still trust each other.
    let dir = two_cas("tls: { ca: pg-ca-2, trust: [pg-ca] }");
    let h = render(&dir, "pg1");
    assert_eq!(bundle_of(&h), format!("{}{}", ca1_of(&dir), ca2.cert_pem));
    assert_eq!(member_cert(&h).ca, "pg-ca-2");
    // pgBackRest's bundle: its CA first (what the issuer is checked against), then the other.
    match &item(&h, "Certificate", "/home/postgres/pgbackrest/certs/pg1.crt").spec {
        PrimitiveSpec::Certificate(c) => {
            let pem = String::from_utf8(c.ca_certificate.bytes().to_vec()).unwrap();
            assert_eq!(pem, format!("{}{}", ca2.cert_pem, ca1_of(&dir)));
            assert_eq!(c.ca, "pg-ca-2");
        }
        other => panic!("{other:?}"),
    }

    // Phase 3: the old CA leaves.
    let dir = two_cas("tls: { ca: pg-ca-2 }");
    assert_eq!(bundle_of(&render(&dir, "pg1")), ca2.cert_pem);
}

#[test]
fn trusted_cas_must_be_declared_and_other_than_the_signing_one() {
    let e = cluster_errors(&CLUSTER.replace(
        "tls: { ca: pg-ca }",
        "tls: { ca: pg-ca, trust: [pg-ca, nope] }",
    ));
    assert!(
        e.contains("error: field `tls.trust[0]`: `pg-ca` is the signing CA already (`tls.ca`)"),
        "{e}"
    );
    assert!(
        e.contains("error: field `tls.trust[1]`: unknown CertificateAuthority `nope`\n  hint: known CAs: pg-ca"),
        "{e}"
    );
}

#[test]
fn an_expired_ca_is_refused_before_any_host_is_touched() {
    let expired = crate::pki::create_ca("expired CA", 0).unwrap();
    let e = errors(&[
        ("manifests/pg.yaml", CLUSTER),
        ("manifests/repo.yaml", REPO),
        ("pki/pg-ca.crt", &expired.cert_pem),
    ]);
    assert!(
        e.contains("error: field `certificate`: CA certificate `pki/pg-ca.crt` expired 0 days ago\n  hint: create a new CA"),
        "{e}"
    );
}

/// `CLUSTER` on Consul: lines 19 to 22.
fn consul_cluster() -> String {
    format!(
        "{CLUSTER}dcs: consul\nconsul:\n  token: {{ secret: consul_token }}\n  cacert: /etc/consul.d/tls/ca.pem\n"
    )
}

fn consul_files(cluster: &str, inventory: Option<&str>) -> Vec<(String, String)> {
    let mut files = vec![
        ("manifests/pg.yaml".to_string(), cluster.to_string()),
        ("manifests/repo.yaml".to_string(), REPO.to_string()),
        ("secrets/consul_token.age".to_string(), "x".to_string()),
    ];
    if let Some(inv) = inventory {
        files.push(("inventory/hosts.yaml".to_string(), inv.to_string()));
    }
    files
}

fn consul_pg1(cluster: &str, inventory: Option<&str>) -> DesiredHost {
    let files = consul_files(cluster, inventory);
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    render(&repo(&refs), "pg1")
}

fn consul_errors(cluster: &str) -> String {
    let files = consul_files(cluster, None);
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    errors(&refs)
}

#[test]
fn with_consul_patroni_talks_to_the_agent_with_the_token_and_tls() {
    let h = consul_pg1(&consul_cluster(), None);
    let d = item(&h, "File", "/home/postgres/config/patroni.yml");
    assert!(d.is_sensitive(), "patroni.yml holds the ACL token");
    let y = yaml(&text(d));
    assert!(y.get("etcd3").is_none(), "{y}");
    let c = &y["consul"];
    assert_eq!(c["url"], "https://127.0.0.1:8501");
    assert_eq!(c["token"], "<secret:consul_token>");
    assert_eq!(c["verify"], true);
    assert_eq!(c["cacert"], "/etc/consul.d/tls/ca.pem");
    assert!(c.get("cert").is_none() && c.get("key").is_none() && c.get("dc").is_none());
    assert_eq!(c["consistency"], "default");
    assert_eq!(c["register_service"], false);
    // The rest of the file is the etcd variant's.
    assert_eq!(y["scope"], "postgres01");
    assert_eq!(y["restapi"]["listen"], "10.0.0.1:8008");
}

#[test]
fn with_consul_the_stack_has_no_etcd_and_mounts_the_agent_files() {
    let cluster = consul_cluster().replace(
        "  cacert: /etc/consul.d/tls/ca.pem\n",
        "  cacert: /etc/consul.d/tls/ca.pem\n  cert: /etc/consul.d/tls/client.pem\n  key: /etc/consul.d/tls/client-key.pem\n  dc: dc-1\n",
    );
    let h = consul_pg1(&cluster, None);
    let all: Vec<String> = h
        .resources
        .iter()
        .map(|d| format!("{}/{}", d.kind, d.name))
        .collect();
    for absent in [
        "File//home/postgres/config/etcd.yml",
        "Directory//home/postgres/etcd-data",
        "Command/postgres01-restart-etcd",
    ] {
        assert!(!all.contains(&absent.to_string()), "{absent} in {all:#?}");
    }
    let bundle = item(&h, "File", "/home/postgres/config/tls/ca.crt");
    assert!(
        bundle.notify.iter().all(|r| !r.name.contains("etcd")),
        "{:?}",
        bundle.notify
    );
    let d = item(&h, "ComposeStack", "postgres01");
    let PrimitiveSpec::ComposeStack(s) = &d.spec else {
        panic!()
    };
    let env = String::from_utf8(s.env.as_ref().unwrap().bytes().to_vec()).unwrap();
    assert!(!env.contains("ETCD"), "{env}");
    let compose = text(d);
    assert!(!compose.contains("etcd"), "{compose}");
    let c = yaml(&compose);
    let names: Vec<&String> = c["services"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["patroni", "pgbackrest", "haproxy"]);
    let patroni = &c["services"]["patroni"];
    assert!(patroni.get("depends_on").is_none(), "{patroni}");
    assert_eq!(
        patroni["volumes"],
        json!([
            "${CONFIG_PATH}:${CONFIG_PATH}:ro",
            "${PG_DATA_ROOT}:${PG_DATA_ROOT}",
            "/etc/consul.d/tls/ca.pem:/etc/consul.d/tls/ca.pem:ro",
            "/etc/consul.d/tls/client.pem:/etc/consul.d/tls/client.pem:ro",
            "/etc/consul.d/tls/client-key.pem:/etc/consul.d/tls/client-key.pem:ro",
            "${PGBACKREST_PATH}:${PGBACKREST_PATH}",
        ])
    );
    let y = yaml(&text(item(&h, "File", "/home/postgres/config/patroni.yml")));
    assert_eq!(y["consul"]["cert"], "/etc/consul.d/tls/client.pem");
    assert_eq!(y["consul"]["key"], "/etc/consul.d/tls/client-key.pem");
    assert_eq!(y["consul"]["dc"], "dc-1");
}

#[test]
fn a_host_var_points_a_member_at_its_own_agent_and_two_members_are_fine_with_consul() {
    let inventory = crate::testutil::INVENTORY
        .replace(
            "pg1: { address: 10.0.0.1, groups: [postgres] }",
            "pg1: { address: 10.0.0.1, groups: [postgres], vars: { consul_address: \"10.0.0.1:8501\" } }",
        )
        .replace("  pg3: { address: 10.0.0.3, groups: [postgres] }\n", "");
    // Two members load (no etcd majority to keep); pg1 asks its own agent, pg2 the default.
    let h = consul_pg1(&consul_cluster(), Some(&inventory));
    let y = yaml(&text(item(&h, "File", "/home/postgres/config/patroni.yml")));
    assert_eq!(y["consul"]["url"], "https://10.0.0.1:8501");
    let files = consul_files(&consul_cluster(), Some(&inventory));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let h2 = render(&repo(&refs), "pg2");
    let y = yaml(&text(item(
        &h2,
        "File",
        "/home/postgres/config/patroni.yml",
    )));
    assert_eq!(y["consul"]["url"], "https://127.0.0.1:8501");
    // The same two members on etcd are refused.
    let e = errors(&[
        ("manifests/pg.yaml", CLUSTER),
        ("manifests/repo.yaml", REPO),
        ("inventory/hosts.yaml", &inventory),
    ]);
    assert!(e.contains("the cluster has 2 members"), "{e}");
}

#[test]
fn consul_settings_are_checked_at_their_line() {
    // The section without `dcs: consul`, and `dcs: consul` without the section.
    let e = consul_errors(&format!(
        "{CLUSTER}consul:\n  token: {{ secret: consul_token }}\n"
    ));
    assert!(
        e.contains("manifests/pg.yaml:20:3: error: field `consul`: `consul` settings are given but the DCS is etcd\n  hint: set `dcs: consul`"),
        "{e}"
    );
    let e = consul_errors(&format!("{CLUSTER}dcs: consul\n"));
    assert!(
        e.contains("manifests/pg.yaml:19:6: error: field `dcs`: `dcs: consul` needs a `consul` section: at least the ACL token"),
        "{e}"
    );
    let e = consul_errors(&format!("{CLUSTER}dcs: zookeeper\n"));
    assert!(
        e.contains("manifests/pg.yaml:19:6: error: field `dcs`"),
        "{e}"
    );
    assert!(e.contains("zookeeper"), "{e}");
    // The token's secret, the address, plain HTTP and no verification off loopback.
    let bad = consul_cluster()
        .replace("secret: consul_token", "secret: consul_tokn")
        .replace(
            "  cacert: /etc/consul.d/tls/ca.pem\n",
            "  address: consul.example:x\n  cacert: etc/ca.pem\n  cert: /etc/c.pem\n  dc: \"dc 1\"\n",
        );
    let e = consul_errors(&bad);
    for want in [
        "manifests/pg.yaml:21:20: error: field `consul.token.secret`: secret `consul_tokn` is not defined",
        "manifests/pg.yaml:22:12: error: field `consul.address`: `consul.example:x` is not `host:port`: the port is not a number from 1 to 65535",
        "manifests/pg.yaml:23:11: error: field `consul.cacert`: path `etc/ca.pem` is relative",
        "manifests/pg.yaml:24:9: error: field `consul.cert`: a client certificate needs both `cert` and `key`",
        "manifests/pg.yaml:25:7: error: field `consul.dc`: `dc 1` is not a Consul datacenter name",
    ] {
        assert!(e.contains(want), "want {want}\n{e}");
    }
    let e = consul_errors(&consul_cluster().replace(
        "  cacert: /etc/consul.d/tls/ca.pem\n",
        "  address: 10.0.0.5:8500\n  scheme: http\n",
    ));
    assert!(
        e.contains("manifests/pg.yaml:23:11: error: field `consul.scheme`: plain HTTP to the Consul agent at `10.0.0.5:8500` would send the ACL token across the network in clear"),
        "{e}"
    );
    let e = consul_errors(&consul_cluster().replace(
        "  cacert: /etc/consul.d/tls/ca.pem\n",
        "  address: consul.service:8501\n  verify: false\n",
    ));
    assert!(
        e.contains("manifests/pg.yaml:23:11: error: field `consul.verify`: `verify: false` would send the ACL token to whatever answers at `consul.service:8501`"),
        "{e}"
    );
    let e = consul_errors(&consul_cluster().replace(
        "  cacert: /etc/consul.d/tls/ca.pem\n",
        "  cacert: \"/etc/consul d/ca.pem\"\n",
    ));
    assert!(
        e.contains("field `consul.cacert`: `/etc/consul d/ca.pem` has characters a compose volume cannot carry"),
        "{e}"
    );
    // On loopback, plain HTTP and an unverified agent are allowed.
    for ok in [
        "  address: 127.0.0.1:8500\n  scheme: http\n",
        "  address: localhost:8501\n  verify: false\n",
    ] {
        let files = consul_files(
            &consul_cluster().replace("  cacert: /etc/consul.d/tls/ca.pem\n", ok),
            None,
        );
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        crate::testutil::load(&repo(&refs)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn host_port_parsing() {
    use super::check::parse_host_port;
    assert_eq!(parse_host_port("127.0.0.1:8501"), Ok(("127.0.0.1", 8501)));
    assert_eq!(
        parse_host_port("consul.service.dc1:8501"),
        Ok(("consul.service.dc1", 8501))
    );
    assert_eq!(parse_host_port("[::1]:8500"), Ok(("::1", 8500)));
    for bad in [
        "",
        "host",
        ":8500",
        "host:0",
        "host:70000",
        "[::1]8500",
        "[zz]:1",
        "a b:1",
        "-a:1",
    ] {
        assert!(parse_host_port(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_live_cluster_asks_etcd_only_when_etcd_is_the_dcs() {
    let secret =
        |_: &str| -> Result<crate::pg::Password, String> { Ok(crate::pg::Password::new("x")) };
    for (cluster, etcd) in [(CLUSTER.to_string(), true), (consul_cluster(), false)] {
        let files = consul_files(&cluster, None);
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        let dir = repo(&refs);
        let r = crate::testutil::load(&dir).unwrap();
        let m = r.find("PostgresCluster", "postgres01").unwrap();
        let Spec::PostgresCluster(spec) = &m.spec else {
            panic!()
        };
        let ca = |n: &str| r.ca_certificates.get(n).map(|c| c.bytes().to_vec());
        let live = spec.live(m, &r.inventory, &secret, &ca).unwrap();
        assert_eq!(live.etcd, etcd);
    }
}

#[test]
fn pgbouncer_pools_to_the_local_haproxy_primary_port_with_tls_and_a_closed_console() {
    let h = pg1(&format!("{CLUSTER}pgbouncer: {{ pool_mode: session }}\n"));
    let ini = item(&h, "File", "/home/postgres/config/pgbouncer.ini");
    assert!(!ini.is_sensitive());
    let ini = text(ini);
    for line in [
        "* = host=127.0.0.1 port=5000\n",
        "listen_addr = 10.0.0.1\n",
        "listen_port = 6432\n",
        "unix_socket_dir = /home/postgres/pgbouncer\n",
        "admin_users =\n",
        "stats_users =\n",
        "auth_type = scram-sha-256\n",
        "auth_file = /home/postgres/config/pgbouncer-userlist.txt\n",
        "pool_mode = session\n",
        "client_tls_sslmode = require\n",
        "client_tls_cert_file = /home/postgres/config/tls/pg1.crt\n",
        "server_tls_sslmode = verify-ca\n",
        "server_tls_ca_file = /home/postgres/config/tls/ca.crt\n",
    ] {
        assert!(ini.contains(line), "{line}\n{ini}");
    }
    assert!(
        !ini.contains("0.0.0.0") && !ini.contains("listen_addr = *"),
        "{ini}"
    );
    let users = item(&h, "File", "/home/postgres/config/pgbouncer-userlist.txt");
    assert!(users.is_sensitive(), "the userlist holds passwords");
    let PrimitiveSpec::File(f) = &users.spec else {
        panic!()
    };
    assert_eq!(f.mode, FileMode(0o600));
    assert!(
        text(users).contains("\"app\" \"<secret:app>\"\n"),
        "{}",
        text(users)
    );
    assert!(!text(users).contains("postgres"), "not the superuser");
    let d = dir_of(&h, "/home/postgres/pgbouncer");
    assert_eq!((d.owner.as_str(), d.mode), ("postgres", FileMode(0o750)));
    // The stack runs it from the same image; a new config, userlist or certificate reloads it.
    let c = yaml(&text(item(&h, "ComposeStack", "postgres01")));
    let svc = &c["services"]["pgbouncer"];
    assert_eq!(
        svc["command"],
        json!(["pgbouncer", "${CONFIG_PATH}/pgbouncer.ini"])
    );
    assert_eq!(svc["network_mode"], "host");
    assert_eq!(svc["user"], "${PG_UID}:${PG_GID}");
    let reload = "Command/postgres01-reload-pgbouncer";
    for (kind, name) in [
        ("File", "/home/postgres/config/pgbouncer.ini"),
        ("File", "/home/postgres/config/pgbouncer-userlist.txt"),
        ("Certificate", "/home/postgres/config/tls/pg1.crt"),
    ] {
        let n: Vec<String> = item(&h, kind, name)
            .notify
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert!(n.contains(&reload.to_string()), "{name}: {n:?}");
    }
    let PrimitiveSpec::Command(c) = &item(&h, "Command", "postgres01-reload-pgbouncer").spec else {
        panic!()
    };
    assert_eq!(c.run, "/usr/bin/docker-compose kill -s SIGHUP pgbouncer");
    assert!(c.refresh_only);
    // Without the option: nothing of it.
    let h = pg1(CLUSTER);
    assert!(!h.resources.iter().any(|d| d.name.contains("pgbouncer")));
}

#[test]
fn pgbouncer_users_are_chosen_among_roles_and_the_quotes_of_a_password_are_doubled() {
    let cluster = CLUSTER.replace(
        "roles:\n  - name: app\n    password: { secret: app }\n",
        "roles:\n  - name: app\n    password: { secret: app }\n  - name: report\n    password: { secret: su }\n",
    );
    let h = pg1(&format!("{cluster}pgbouncer: {{ users: [report] }}\n"));
    let users = text(item(
        &h,
        "File",
        "/home/postgres/config/pgbouncer-userlist.txt",
    ));
    assert!(users.contains("\"report\" \"<secret:su>\"\n"), "{users}");
    assert!(!users.contains("\"app\""), "{users}");
}

#[test]
fn pgbouncer_settings_are_checked_at_their_line() {
    let e = cluster_errors(&format!(
        "{CLUSTER}haproxy: {{ enabled: false }}\npgbouncer: {{ port: 8008, default_pool_size: 0, users: [app, nobody, app] }}\n"
    ));
    for want in [
        "manifests/pg.yaml:20:12: error: field `pgbouncer`: PgBouncer connects to the primary through HAProxy, which is off",
        "manifests/pg.yaml:20:20: error: field `pgbouncer.port`: port 8008 is already used by `ports.rest_api`",
        "manifests/pg.yaml:20:45: error: field `pgbouncer.default_pool_size`: 0 connections would let no client through",
        "manifests/pg.yaml:20:61: error: field `pgbouncer.users[1]`: `nobody` is not a declared role",
        "manifests/pg.yaml:20:69: error: field `pgbouncer.users[2]`: `app` is listed twice",
    ] {
        assert!(e.contains(want), "want {want}\n{e}");
    }
    let e = cluster_errors(&format!("{CLUSTER}pgbouncer: {{ pool_mode: fast }}\n"));
    assert!(e.contains("field `pgbouncer.pool_mode`"), "{e}");
}

#[test]
fn restore_on_empty_bootstraps_from_the_repository_and_replicas_come_from_it() {
    let patroni = |cluster: &str| {
        let h = pg1(cluster);
        yaml(&text(item(&h, "File", "/home/postgres/config/patroni.yml")))
    };
    // Off by default: Patroni's initdb.
    let y = patroni(CLUSTER);
    assert!(y["bootstrap"].get("method").is_none(), "{y:?}");
    // Replicas from the repository first, the leader second.
    assert_eq!(
        y["postgresql"]["create_replica_methods"],
        yaml("[pgbackrest, basebackup]")
    );
    assert_eq!(
        y["postgresql"]["pgbackrest"]["command"],
        "pgbackrest --config=/home/postgres/pgbackrest/pgbackrest.conf --stanza=postgres01 --delta --type=standby restore"
    );

    let y = patroni(&CLUSTER.replace(
        "backup: { repo: repo1 }",
        "backup: { repo: repo1, restore_on_empty: true }",
    ));
    let b = &y["bootstrap"];
    assert_eq!(b["method"], "plumb_restore");
    let m = &b["plumb_restore"];
    assert_eq!(m["no_params"], true);
    assert_eq!(m["keep_existing_recovery_conf"], false);
    assert_eq!(m["recovery_conf"]["recovery_target_action"], "promote");
    assert_eq!(m["recovery_conf"]["recovery_target_timeline"], "latest");
    assert!(
        m["recovery_conf"]["restore_command"]
            .as_str()
            .unwrap()
            .contains("archive-get"),
        "{m:?}"
    );
    let cmd = m["command"].as_str().unwrap();
    assert!(cmd.starts_with("sh -c '"), "{cmd}");
    // The repository is read first: unreadable stops the bootstrap, a backup is restored,
    // none means initdb as Patroni runs it.
    assert!(cmd.contains("--output=json info) ||"), "{cmd}");
    assert!(cmd.contains("not bootstrapping"), "{cmd}");
    assert!(cmd.contains("--delta restore"), "{cmd}");
    assert!(
        cmd.contains("/usr/lib/postgresql/15/bin/initdb -D /home/postgres/postgres-data/data --encoding=UTF8 --data-checksums"),
        "{cmd}"
    );
    // The script itself is valid sh (run with `sh -n`).
    let script = cmd
        .strip_prefix("sh -c ")
        .map(|q| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {q}"))
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        })
        .unwrap();
    let check = std::process::Command::new("sh")
        .args(["-n", "-c", &script])
        .status()
        .unwrap();
    assert!(check.success(), "{script}");
    // A misspelt key is refused.
    let e = cluster_errors(&CLUSTER.replace(
        "backup: { repo: repo1 }",
        "backup: { repo: repo1, restore_on_emtpy: true }",
    ));
    assert!(e.contains("restore_on_emtpy"), "{e}");
}

/// With real passwords, `patroni.yml` and PgBouncer's userlist carry a masked text: the same
/// file with `<secret:NAME>` for each password, and nothing of the passwords themselves.
#[test]
fn patroni_yml_and_the_userlist_have_a_masked_text_without_the_passwords() {
    let values = [
        ("su", "superuser-pw-value"),
        ("repl", "replication-pw-value"),
        ("rewind", "rewind-pw-value"),
        ("api", "rest-api-pw-value"),
        ("app", "app-role-pw-value"),
    ];
    let cluster = format!("{CLUSTER}pgbouncer: {{ pool_mode: session }}\n");
    let (_dir, r) = crate::testutil::repo_with_secrets(
        &[
            ("manifests/pg.yaml", &cluster),
            ("manifests/repo.yaml", REPO),
        ],
        &values,
    );
    let h = crate::render::render_host(&r, r.inventory.host("pg1").unwrap()).unwrap();
    for (path, placeholders) in [
        (
            "/home/postgres/config/patroni.yml",
            &[
                "<secret:su>",
                "<secret:repl>",
                "<secret:rewind>",
                "<secret:api>",
            ][..],
        ),
        (
            "/home/postgres/config/pgbouncer-userlist.txt",
            &["\"app\" \"<secret:app>\"\n"][..],
        ),
    ] {
        let d = item(&h, "File", path);
        let c = d.spec.contents()[0];
        let real = String::from_utf8(c.bytes().to_vec()).unwrap();
        let masked = c.masked_text().expect("a masked text");
        for (name, value) in values {
            assert!(!masked.contains(value), "{path} shows {name}:\n{masked}");
        }
        for p in placeholders {
            assert!(masked.contains(p), "{path}: no {p}:\n{masked}");
        }
        // Everything else is the real file, line for line.
        assert_eq!(real.lines().count(), masked.lines().count(), "{path}");
        assert!(masked.contains("shared_buffers") || path.ends_with(".txt"));
    }
}
