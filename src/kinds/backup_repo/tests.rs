//! Expansion and validation of `BackupRepo`, without hosts.

use super::*;
use crate::kinds::DesiredHost;
use crate::kinds::postgres_cluster::tests::{CLUSTER, REPO};
use crate::testutil::{errors, item, render, repo, text};

fn backup1(repo_manifest: &str, clusters: &[&str]) -> DesiredHost {
    let mut files = vec![("manifests/repo.yaml", repo_manifest)];
    let names: Vec<String> = (0..clusters.len())
        .map(|i| format!("manifests/pg{i}.yaml"))
        .collect();
    for (n, c) in names.iter().zip(clusters) {
        files.push((n.as_str(), c));
    }
    render(&repo(&files), "backup1")
}

fn unit(h: &DesiredHost, name: &str) -> UnitState {
    match &item(h, "SystemdUnit", name).spec {
        PrimitiveSpec::SystemdUnit(u) => u.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn expands_into_the_repository_host() {
    let h = backup1(REPO, &[CLUSTER]);
    let mut got: Vec<String> = h
        .resources
        .iter()
        .map(|d| format!("{}/{}", d.kind, d.name))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "Certificate//home/postgres/pgbackrest/certs/backup1.crt",
            "Command/repo1-restart-server",
            "Command/repo1-stanza-create-postgres01",
            "ComposeStack/repo1",
            "Directory//home/postgres",
            "Directory//home/postgres/pgbackrest",
            "Directory//home/postgres/pgbackrest/certs",
            "Directory//home/postgres/pgbackrest/log",
            "Directory//opt/plumb/repo1",
            "Directory//var/lib/pgbackrest",
            "File//home/postgres/pgbackrest/pgbackrest.conf",
            "Group/postgres",
            "SystemdUnit/repo1-postgres01-diff.service",
            "SystemdUnit/repo1-postgres01-full.service",
            "SystemdUnit/repo1-postgres01-full.timer",
            "SystemdUnit/repo1-postgres01-incr.service",
            "SystemdUnit/repo1-postgres01-incr.timer",
            "SystemdUnit/repo1-stack.service",
            "User/postgres",
        ]
    );
    for d in &h.resources {
        assert_eq!(d.origin.via.as_deref(), Some("BackupRepo/repo1"));
    }
    let PrimitiveSpec::Directory(d) = &item(&h, "Directory", "/var/lib/pgbackrest").spec else {
        panic!()
    };
    assert_eq!((d.owner.as_str(), d.mode.0), ("postgres", 0o750));
    let PrimitiveSpec::Certificate(c) = &item(
        &h,
        "Certificate",
        "/home/postgres/pgbackrest/certs/backup1.crt",
    )
    .spec
    else {
        panic!()
    };
    assert_eq!(
        c.common_name, "backup1",
        "the members' tls-server-auth names this CN"
    );
    assert_eq!(c.dns_names, ["backup1", "10.0.0.11"]);
}

#[test]
fn pgbackrest_conf_serves_every_member_of_the_stanza() {
    let h = backup1(REPO, &[CLUSTER]);
    let conf = text(item(
        &h,
        "File",
        "/home/postgres/pgbackrest/pgbackrest.conf",
    ));
    for line in [
        "repo1-path=/var/lib/pgbackrest\n",
        "repo1-retention-full=2\n",
        "tls-server-address=10.0.0.11\n",
        "tls-server-cert-file=/home/postgres/pgbackrest/certs/backup1.crt\n",
        "tls-server-auth=pg1=postgres01\ntls-server-auth=pg2=postgres01\ntls-server-auth=pg3=postgres01\n",
        "[postgres01]\npg1-host=10.0.0.1\npg1-host-type=tls\n",
        "pg2-host=10.0.0.2\n",
        "pg3-host=10.0.0.3\n",
        "pg3-path=/home/postgres/postgres-data/data\n",
        "pg1-host-cert-file=/home/postgres/pgbackrest/certs/backup1.crt\n",
    ] {
        assert!(conf.contains(line), "missing {line:?} in\n{conf}");
    }
    assert!(!conf.contains("retention-diff"), "{conf}");
}

#[test]
fn backup_units_timers_and_stanza_creation() {
    let h = backup1(REPO, &[CLUSTER]);
    for t in ["full", "incr"] {
        let s = unit(&h, &format!("repo1-postgres01-{t}.service"));
        assert_eq!(
            (s.enabled, s.active),
            (None, None),
            "started by its timer only"
        );
        let text = String::from_utf8(s.content.unwrap().bytes().to_vec()).unwrap();
        assert!(text.contains("Type=oneshot\n"), "{text}");
        assert!(text.contains(&format!(
                "ExecStart=/usr/bin/docker-compose exec -T pgbackrest pgbackrest --config=/home/postgres/pgbackrest/pgbackrest.conf --stanza=postgres01 --type={t} backup\n"
            )), "{text}");
        assert!(
            text.contains("WorkingDirectory=/opt/plumb/repo1\n"),
            "{text}"
        );
        let timer = unit(&h, &format!("repo1-postgres01-{t}.timer"));
        assert_eq!((timer.enabled, timer.active), (Some(true), Some(true)));
    }
    let full = unit(&h, "repo1-postgres01-full.timer");
    let text = String::from_utf8(full.content.unwrap().bytes().to_vec()).unwrap();
    assert!(text.contains("OnCalendar=weekly\n"), "{text}");
    assert!(text.contains("WantedBy=timers.target"), "{text}");
    let incr = unit(&h, "repo1-postgres01-incr.service");
    let text = String::from_utf8(incr.content.unwrap().bytes().to_vec()).unwrap();
    assert!(
        text.contains(
            "After=docker.service repo1-stack.service repo1-postgres01-full.service repo1-postgres01-diff.service\n"
        ),
        "an incremental backup waits for a full or differential one started at the same time:\n{text}"
    );

    let PrimitiveSpec::Command(c) = &item(&h, "Command", "repo1-stanza-create-postgres01").spec
    else {
        panic!()
    };
    assert!(!c.refresh_only);
    // Tried again (bounded) when a roll demoted the primary after the wait below.
    assert_eq!(
        c.run,
        "i=0; until /usr/bin/docker-compose exec -T pgbackrest pgbackrest --config=/home/postgres/pgbackrest/pgbackrest.conf --stanza=postgres01 stanza-create; do \
         i=$((i+1)); if [ $i -ge 10 ]; then exit 1; fi; sleep 15; done"
    );
    assert_eq!(
        c.unless.as_deref(),
        Some(
            "test -f /var/lib/pgbackrest/backup/postgres01/backup.info && test -f /var/lib/pgbackrest/archive/postgres01/archive.info"
        )
    );
    // It waits for a primary, asking Patroni over HTTPS against the cluster's CA.
    let wait = c.wait_for.as_deref().unwrap_or_default();
    assert_eq!(
        wait.split(" || ").collect::<Vec<_>>(),
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .map(|a| format!(
                "curl -sf -o /dev/null --max-time 3 --cacert /home/postgres/pgbackrest/certs/ca.crt https://{a}:8008/primary"
            ))
            .to_vec()
    );
    let PrimitiveSpec::Command(r) = &item(&h, "Command", "repo1-restart-server").spec else {
        panic!()
    };
    assert!(r.refresh_only);
    assert_eq!(r.run, "/usr/bin/docker-compose restart pgbackrest");
    for (kind, name) in [
        ("File", "/home/postgres/pgbackrest/pgbackrest.conf"),
        ("Certificate", "/home/postgres/pgbackrest/certs/backup1.crt"),
    ] {
        let n: Vec<String> = item(&h, kind, name)
            .notify
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(n, ["Command/repo1-restart-server"]);
    }
}

#[test]
fn schedules_retention_and_several_clusters() {
    let repo = format!(
        "{REPO}retention_full: 4\nretention_diff: 3\nschedule: {{ full: 'Sun *-*-* 01:00:00', diff: daily, incr: null }}\n"
    );
    let other = CLUSTER
        .replace("name: postgres01", "name: other")
        .replace("hosts: group:postgres", "hosts: [pg1]");
    let h = backup1(&repo, &[CLUSTER, &other]);
    let conf = text(item(
        &h,
        "File",
        "/home/postgres/pgbackrest/pgbackrest.conf",
    ));
    assert!(
        conf.contains("repo1-retention-full=4\nrepo1-retention-diff=3\n"),
        "{conf}"
    );
    assert!(
        conf.contains("tls-server-auth=pg1=other,postgres01\ntls-server-auth=pg2=postgres01\n"),
        "{conf}"
    );
    assert!(conf.contains("[other]\npg1-host=10.0.0.1\n"), "{conf}");
    // No schedule, no timer; the unit stays, for `plumb pg backup --type incr`.
    assert!(!h.resources.iter().any(|d| d.name.ends_with("-incr.timer")));
    let incr = unit(&h, "repo1-postgres01-incr.service");
    let incr = String::from_utf8(incr.content.unwrap().bytes().to_vec()).unwrap();
    assert!(
        incr.contains("`plumb pg backup` only (no schedule)"),
        "{incr}"
    );
    let t = unit(&h, "repo1-other-full.timer");
    let t = String::from_utf8(t.content.unwrap().bytes().to_vec()).unwrap();
    assert!(t.contains("OnCalendar=Sun *-*-* 01:00:00\n"), "{t}");
    let d = unit(&h, "repo1-postgres01-diff.service");
    let d = String::from_utf8(d.content.unwrap().bytes().to_vec()).unwrap();
    assert!(d.contains("--type=diff backup"), "{d}");
    item(&h, "Command", "repo1-stanza-create-other");
    item(&h, "Command", "repo1-stanza-create-postgres01");
}

#[test]
fn validation_errors_point_at_the_field() {
    let e = errors(&[(
        "manifests/repo.yaml",
        &format!(
            "{}retention_full: 0\nschedule: {{ full: \"weekly\\nrm -rf /\" }}\n",
            REPO.replace("host:backup1", "group:postgres")
                .replace("ca: pg-ca", "ca: nope")
        ),
    )]);
    for want in [
        "manifests/repo.yaml:3:8: error: field `hosts`: a BackupRepo lands on exactly one host; this one selects pg1, pg2, pg3",
        "manifests/repo.yaml:4:12: error: field `tls.ca`: unknown CertificateAuthority `nope`",
        "manifests/repo.yaml:5:17: error: field `retention_full`: retention_full must keep at least one full backup",
        "manifests/repo.yaml:6:19: error: field `schedule.full`: `weekly\\nrm -rf /` is not a systemd calendar expression",
    ] {
        assert!(e.contains(want), "missing {want:?} in\n{e}");
    }
}

#[test]
fn the_cluster_side_checks_the_link() {
    // Another CA on the repository side.
    let other_ca = "kind: CertificateAuthority\nname: other-ca\ncommon_name: o\ncertificate: pki/pg-ca.crt\nkey: { secret: pg-ca-key }\n";
    let e = errors(&[
        ("manifests/pg.yaml", CLUSTER),
        (
            "manifests/repo.yaml",
            &REPO.replace("ca: pg-ca", "ca: other-ca"),
        ),
        ("manifests/other-ca.yaml", other_ca),
    ]);
    assert!(
            e.contains("manifests/pg.yaml:5:17: error: field `backup.repo`: BackupRepo `repo1` uses CA `other-ca` but this cluster uses `pg-ca`"),
            "{e}"
        );
    // The repository on a member.
    let e = errors(&[
        ("manifests/pg.yaml", CLUSTER),
        (
            "manifests/repo.yaml",
            &REPO.replace("host:backup1", "host:pg2"),
        ),
    ]);
    assert!(
            e.contains("manifests/pg.yaml:5:17: error: field `backup.repo`: host `pg2` is both a member of the cluster and its backup repository host"),
            "{e}"
        );
}

/// A one-member cluster on `pg1` and a local repository there.
const SINGLE: &str = "\
kind: PostgresCluster
name: solo
hosts: host:pg1
tls: { ca: pg-ca }
backup: { repo: local1, restore_on_empty: true }
superuser: { password: { secret: su } }
replication: { password: { secret: repl } }
rewind: { password: { secret: rewind } }
rest_api: { password: { secret: api } }
";
const LOCAL: &str = "\
kind: BackupRepo
name: local1
hosts: host:pg1
local: true
path: /storage/backup
retention_full: 3
";

#[test]
fn a_local_repository_lives_in_the_members_container() {
    let dir = repo(&[
        ("manifests/pg.yaml", SINGLE),
        ("manifests/repo.yaml", LOCAL),
    ]);
    let h = render(&dir, "pg1");
    let names: Vec<String> = h
        .resources
        .iter()
        .map(|d| format!("{}/{}", d.kind, d.name))
        .collect();
    // No TLS server, certificate or restart handler on either side.
    for absent in [
        "ComposeStack/local1",
        "SystemdUnit/local1-stack.service",
        "Command/local1-restart-server",
        "Command/solo-restart-pgbackrest",
        "Certificate//home/postgres/pgbackrest/certs/pg1.crt",
    ] {
        assert!(!names.iter().any(|n| n == absent), "{absent} in {names:?}");
    }
    assert!(
        names.iter().any(|n| n == "Directory//storage/backup"),
        "{names:?}"
    );
    // Backups and the stanza run in the cluster's Patroni container, in its stack folder.
    let unit_text = text(item(&h, "SystemdUnit", "local1-solo-incr.service"));
    assert!(
        unit_text.contains("WorkingDirectory=/opt/plumb/solo\n")
            && unit_text.contains(
                "ExecStart=/usr/bin/docker-compose exec -T patroni pgbackrest \
                 --config=/home/postgres/pgbackrest/pgbackrest.conf --stanza=solo --type=incr backup"
            )
            && unit_text.contains("After=docker.service solo-stack.service"),
        "{unit_text}"
    );
    let PrimitiveSpec::Command(c) = &item(&h, "Command", "local1-stanza-create-solo").spec else {
        panic!("not a command")
    };
    assert_eq!(c.cwd.as_deref(), Some("/opt/plumb/solo"));
    assert!(c.run.contains("exec -T patroni pgbackrest"), "{}", c.run);
    assert!(
        c.wait_for.as_deref().unwrap_or("").contains("/primary"),
        "{c:?}"
    );
    // The member's pgbackrest.conf names the folder; the Patroni service mounts it.
    let conf = text(item(
        &h,
        "File",
        "/home/postgres/pgbackrest/pgbackrest.conf",
    ));
    assert!(
        conf.contains("repo1-path=/storage/backup\n") && conf.contains("repo1-retention-full=3\n"),
        "{conf}"
    );
    assert!(
        !conf.contains("repo1-host") && !conf.contains("tls-server"),
        "{conf}"
    );
    let compose = text(item(&h, "ComposeStack", "solo"));
    assert!(compose.contains("- ${REPO_PATH}:${REPO_PATH}"), "{compose}");
    assert!(!compose.contains("\n  pgbackrest:"), "{compose}");
}

#[test]
fn the_live_view_of_a_local_repository_runs_in_the_cluster_stack() {
    let dir = repo(&[
        ("manifests/pg.yaml", SINGLE),
        ("manifests/repo.yaml", LOCAL),
    ]);
    let r = crate::testutil::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let m = r.find("BackupRepo", "local1").unwrap();
    let Spec::BackupRepo(spec) = &m.spec else {
        panic!("not a repo")
    };
    let live = spec.live(m, &r.manifests, &r.inventory);
    assert_eq!(live.host.as_deref(), Some("pg1"));
    assert_eq!(live.service, "patroni");
    assert_eq!(live.stack_dir, "/opt/plumb/solo");
    assert!(
        live.info_command("solo")
            .contains("exec -T patroni pgbackrest"),
        "{}",
        live.info_command("solo")
    );
}

#[test]
fn a_local_repository_is_refused_where_it_would_not_be_a_backup() {
    // Three members.
    let e = errors(&[
        (
            "manifests/pg.yaml",
            &SINGLE.replace("host:pg1", "group:postgres"),
        ),
        ("manifests/repo.yaml", LOCAL),
    ]);
    assert!(
        e.contains("field `backup.repo`: BackupRepo `local1` is local: it can hold the backups of a cluster of one member on its own host, but this cluster has 3 (pg1, pg2, pg3)"),
        "{e}"
    );
    // One member on another host.
    let e = errors(&[
        ("manifests/pg.yaml", &SINGLE.replace("host:pg1", "host:pg2")),
        ("manifests/repo.yaml", LOCAL),
    ]);
    assert!(e.contains("is local: it can hold"), "{e}");
    // tls with local, no tls without.
    let e = errors(&[
        ("manifests/pg.yaml", SINGLE),
        (
            "manifests/repo.yaml",
            &format!("{LOCAL}tls: {{ ca: pg-ca }}\n"),
        ),
    ]);
    assert!(
        e.contains(
            "manifests/repo.yaml:7:6: error: field `tls`: a local repository has no TLS server"
        ),
        "{e}"
    );
    let e = errors(&[
        ("manifests/pg.yaml", SINGLE),
        ("manifests/repo.yaml", &LOCAL.replace("local: true\n", "")),
    ]);
    assert!(
        e.contains("error: field `tls`: a repository host needs `tls`"),
        "{e}"
    );
    // Two clusters on one local repository.
    let e = errors(&[
        ("manifests/pg.yaml", SINGLE),
        (
            "manifests/pg2.yaml",
            &SINGLE.replace("name: solo", "name: duo"),
        ),
        ("manifests/repo.yaml", LOCAL),
    ]);
    assert!(
        e.contains(
            "field `local`: a local repository holds one cluster's backups; duo, solo name it"
        ),
        "{e}"
    );
}
