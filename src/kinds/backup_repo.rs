//! `BackupRepo`: the pgBackRest repository host of one or more `PostgresCluster`s: its TLS
//! server, a stanza per cluster (created once), backup services and timers per schedule, and
//! retention.
//!
//! A cluster chooses its repository with `backup: { repo: NAME }`; the repository serves every
//! cluster that names it (one stanza each, named after the cluster), so the link is declared once.
//! On its host (exactly one) the repository expands into: the `postgres` group and user (uid/gid
//! 1001), the repository folder, its certificate (CN = the host's inventory name, which the
//! members' `tls-server-auth` names), `pgbackrest.conf`, a compose stack running the pgBackRest
//! TLS server, a systemd unit starting the stack at boot, per cluster and schedule a backup
//! service and its timer (enabled and active), a `stanza-create` command guarded by the stanza's
//! files, and a handler restarting the TLS server when its configuration or certificate changes.

use super::command::CommandSpec;
use super::compose_stack::{EnvValue, StackState, render_env};
use super::directory::DirectorySpec;
use super::file::FileState;
use super::postgres_cluster::{
    ClusterModel, ClusterPaths, Expansion, Member, OsAccount, TlsSettings, certificate,
    check_common, check_project_name, default_compose, image_for, p_pgbackrest, repo_host_count,
    selected_hosts,
};
use super::systemd_unit::UnitState;
use super::{CheckCx, Kind, PrimitiveSpec, Spec};
use crate::diag::Diagnostic;
use crate::kinds::Desired;
use crate::kinds::HostCx;
use crate::kinds::Manifest;
use crate::model::desired::Content;
use crate::model::values::{FileMode, Presence, ResourceRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Built-in templates (name, text); a file of the same name under the repo's `templates/`
/// overrides one.
pub const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    (
        "backup-repo/pgbackrest.conf.tera",
        include_str!("../../templates/backup-repo/pgbackrest.conf.tera"),
    ),
    (
        "backup-repo/docker-compose.yml.tera",
        include_str!("../../templates/backup-repo/docker-compose.yml.tera"),
    ),
    (
        "backup-repo/stack.service.tera",
        include_str!("../../templates/backup-repo/stack.service.tera"),
    ),
    (
        "backup-repo/backup.service.tera",
        include_str!("../../templates/backup-repo/backup.service.tera"),
    ),
    (
        "backup-repo/backup.timer.tera",
        include_str!("../../templates/backup-repo/backup.timer.tera"),
    ),
];

/// When backups run: systemd `OnCalendar=` expressions (`hourly`, `weekly`, `Sun *-*-* 01:00`).
/// `null` turns a type off.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Full backups (default `weekly`).
    #[serde(default = "weekly")]
    pub full: Option<String>,
    /// Differential backups (default: none).
    #[serde(default)]
    pub diff: Option<String>,
    /// Incremental backups (default `hourly`; the first one is taken as a full backup).
    #[serde(default = "hourly")]
    pub incr: Option<String>,
}

fn weekly() -> Option<String> {
    Some("weekly".into())
}
fn hourly() -> Option<String> {
    Some("hourly".into())
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            full: weekly(),
            diff: None,
            incr: hourly(),
        }
    }
}

/// A `BackupRepo` as declared; its `name` is also its compose project name.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRepoSpec {
    /// Repository folder on the host (`repo1-path`, default `/var/lib/pgbackrest`).
    #[serde(default = "default_repo_path")]
    pub path: String,
    /// Full backups to keep (`repo1-retention-full`, default 2); older ones and their WAL expire.
    #[serde(default = "default_retention_full")]
    pub retention_full: u32,
    /// Differential backups to keep (`repo1-retention-diff`); unset by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_diff: Option<u32>,
    /// Backup schedules (default: full weekly, incremental hourly).
    #[serde(default)]
    pub schedule: Schedule,
    /// Certificate settings; `ca` must be the CA of every cluster using this repository.
    pub tls: TlsSettings,
    /// Port of the repository's TLS server, which members push WAL to (default 8432).
    #[serde(default = "p_pgbackrest")]
    pub port: u16,
    /// Container image with pgBackRest (the same version as on the members). Default: the host
    /// var `postgres_image`, else `plumb-lab/postgres-ha:15`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The OS account (default `postgres`, uid/gid 1001, home `/home/postgres`, in `docker`).
    #[serde(default)]
    pub os_user: OsAccount,
    /// Root of the pgBackRest folders (default: `os_user.home`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<String>,
    /// Folder of the compose stack (default `/opt/plumb/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_dir: Option<String>,
    /// The compose binary the units and commands run (default `/usr/bin/docker-compose`).
    #[serde(default = "default_compose")]
    pub compose_command: String,
}

fn default_repo_path() -> String {
    "/var/lib/pgbackrest".into()
}
fn default_retention_full() -> u32 {
    2
}

/// Backup types in the order they must not overlap (a later type waits for an earlier one that
/// was started at the same time).
const TYPES: &[&str] = &["full", "diff", "incr"];

fn valid_calendar(s: &str) -> bool {
    !s.trim().is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b' ' | b'*' | b':' | b',' | b'.' | b'/' | b'~' | b'-')
        })
}

impl BackupRepoSpec {
    fn paths(&self, m: &Manifest) -> ClusterPaths {
        let base = self
            .base_dir
            .clone()
            .unwrap_or_else(|| self.os_user.home.clone());
        ClusterPaths::new(
            &base,
            self.stack_dir
                .clone()
                .unwrap_or_else(|| format!("/opt/plumb/{}", m.name)),
        )
    }

    fn schedules(&self) -> Vec<(&'static str, &str)> {
        let s = &self.schedule;
        TYPES
            .iter()
            .zip([&s.full, &s.diff, &s.incr])
            .filter_map(|(t, v)| v.as_deref().map(|v| (*t, v)))
            .collect()
    }

    /// Clusters that name this repository, sorted by name.
    fn clusters(&self, m: &Manifest, cx: &HostCx) -> Vec<ClusterModel> {
        let repo = cx.repo();
        let mut v: Vec<ClusterModel> = repo
            .manifests
            .iter()
            .filter_map(|cm| match &cm.spec {
                Spec::PostgresCluster(c) if c.backup.as_ref().is_some_and(|b| b.repo == m.name) => {
                    Some(c.model(cm, repo.inventory))
                }
                _ => None,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

/// A shell check that succeeds when some member of the cluster is the running primary
/// (Patroni's REST API answers 200 on `/primary`; needs curl on the repository host).
fn primary_check(c: &ClusterModel) -> String {
    c.members
        .iter()
        .map(|mem| {
            format!(
                "curl -sf -o /dev/null --max-time 3 http://{}:{}/primary",
                mem.host, c.ports.rest_api
            )
        })
        .collect::<Vec<_>>()
        .join(" || ")
}

impl Kind for BackupRepoSpec {
    fn check(&self, cx: &mut CheckCx) {
        check_project_name(cx, "a compose project name");
        check_common(
            cx,
            &self.os_user,
            &self.tls,
            &self.image,
            &self.compose_command,
        );
        let hosts = selected_hosts(cx.manifest, cx.repo.inventory);
        if hosts.len() != 1 {
            let d = repo_host_count(cx.manifest, &hosts);
            cx.diags.push(d);
        }
        cx.abs_path("path", &self.path, &[]);
        for (field, p) in [("base_dir", &self.base_dir), ("stack_dir", &self.stack_dir)] {
            if let Some(p) = p {
                cx.abs_path(field, p, &[]);
            }
        }
        if self.retention_full == 0 {
            cx.error(
                "retention_full",
                "retention_full must keep at least one full backup",
                None,
            );
        }
        if self.retention_diff == Some(0) {
            cx.error(
                "retention_diff",
                "retention_diff must keep at least one backup (or be omitted)",
                None,
            );
        }
        for (t, v) in self.schedules() {
            if !valid_calendar(v) {
                cx.error(
                    &format!("schedule.{t}"),
                    format!(
                        "`{}` is not a systemd calendar expression",
                        v.escape_debug()
                    ),
                    Some("e.g. `hourly`, `daily`, `weekly`, `Sun *-*-* 01:00:00`".into()),
                );
            }
        }
        if self.port == 0 {
            cx.error("port", "port 0 is not a port", None);
        }
    }

    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        cx.set_via(Some(format!("BackupRepo/{}", m.name)));
        let host = cx.host();
        let os = &self.os_user;
        let user = os.name.as_str();
        let paths = self.paths(m);
        let (cert, key, ca) = paths.cert_files(&host.name);
        let clusters = self.clusters(m, cx);
        let stack_unit = format!("{}-stack.service", m.name);
        let config = format!("--config={}", paths.pgbackrest_config);
        let compose_cmd = &self.compose_command;

        let mut clients: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in &clusters {
            for mem in &c.members {
                clients
                    .entry(mem.name.clone())
                    .or_default()
                    .push(c.name.clone());
            }
        }
        let repo = json!({
            "name": m.name,
            "host": Member::of(host),
            "path": self.path,
            "retention_full": self.retention_full,
            "retention_diff": self.retention_diff,
            "port": self.port,
            "os_user": os,
            "image": image_for(&self.image, host, 15),
            "compose_command": compose_cmd,
            "stack_unit": stack_unit,
            "paths": paths,
            "tls": { "cert": cert, "key": key, "ca": ca },
            "clients": clients.iter().map(|(cn, s)| json!({ "cn": cn, "stanzas": s })).collect::<Vec<_>>(),
            "clusters": clusters.iter().map(|c| json!({
                "stanza": c.name,
                "members": c.members,
                "data_dir": c.paths.data_dir,
                "socket_dir": c.paths.socket_dir,
                "postgres_port": c.ports.postgres,
                "pgbackrest_port": c.ports.pgbackrest,
                "superuser": c.superuser,
            })).collect::<Vec<_>>(),
        });
        let resource = serde_json::to_value(self).unwrap_or(Value::Null);
        let render = |cx: &mut HostCx, name: &str, extra: Option<Value>| {
            let mut vars = Map::new();
            vars.insert("repo".into(), repo.clone());
            if let Some(b) = extra {
                vars.insert("backup".into(), b);
            }
            cx.render_template(&format!("backup-repo/{name}"), &resource, &vars)
                .map_err(|f| f.into_diagnostic(m, ""))
        };

        let mut out = Expansion::new(m);
        let restart = format!("{}-restart-server", m.name);
        let restart_ref = ResourceRef {
            kind: "Command".into(),
            name: restart.clone(),
        };
        out.account(cx, os);
        let dir = |p: &str, owner: &str, mode: u32| DirectorySpec {
            path: p.to_string(),
            owner: owner.to_string(),
            group: owner.to_string(),
            mode: FileMode(mode),
            state: Presence::Present,
        };
        for d in [
            dir(&paths.base, user, 0o750),
            dir(&paths.pgbackrest_dir, user, 0o750),
            dir(&paths.pgbackrest_certs, user, 0o750),
            dir(&paths.pgbackrest_log, user, 0o750),
            dir(&self.path, user, 0o750),
            dir(&paths.stack_dir, "root", 0o755),
        ] {
            out.push(cx, d.path.clone(), PrimitiveSpec::Directory(d), vec![]);
        }
        let state = certificate(cx, m, host, &self.tls, (&cert, &key, &ca), os)?;
        out.push(
            cx,
            cert.clone(),
            PrimitiveSpec::Certificate(state),
            vec![restart_ref.clone()],
        );
        let content = render(cx, "pgbackrest.conf.tera", None)?;
        out.push(
            cx,
            paths.pgbackrest_config.clone(),
            PrimitiveSpec::File(FileState::new(
                paths.pgbackrest_config.clone(),
                user,
                user,
                0o640,
                content,
            )),
            vec![restart_ref],
        );

        let mut env = BTreeMap::new();
        for (k, v) in [
            ("COMPOSE_PROJECT_NAME", m.name.clone()),
            ("IMAGE", image_for(&self.image, host, 15)),
            ("PG_UID", os.uid.to_string()),
            ("PG_GID", os.gid.to_string()),
            ("PGBACKREST_PATH", paths.pgbackrest_dir.clone()),
            ("PGBACKREST_CONFIG", paths.pgbackrest_config.clone()),
            ("REPO_PATH", self.path.clone()),
        ] {
            env.insert(k.to_string(), EnvValue::Text(v));
        }
        let compose: Content = render(cx, "docker-compose.yml.tera", None)?;
        let stack = StackState {
            project: m.name.clone(),
            dir: paths.stack_dir.clone(),
            compose: Some(compose),
            env: render_env(cx, m, &env)?,
            owner: "root".into(),
            group: "root".into(),
            mode: FileMode(0o644),
            restart_on_notify: Vec::new(),
            state: Presence::Present,
        };
        out.push(
            cx,
            m.name.clone(),
            PrimitiveSpec::ComposeStack(stack),
            vec![],
        );
        let content = render(cx, "stack.service.tera", None)?;
        out.push(
            cx,
            stack_unit.clone(),
            PrimitiveSpec::SystemdUnit(UnitState::new(&stack_unit, content, Some(true), None)),
            vec![],
        );

        // Backups: a oneshot service per cluster and type (started by its timer only) and the
        // timer, enabled and active.
        let schedules = self.schedules();
        for c in &clusters {
            let unit_of = |t: &str| format!("{}-{}-{t}", m.name, c.name);
            for (i, (t, when)) in schedules.iter().enumerate() {
                let service = format!("{}.service", unit_of(t));
                let timer = format!("{}.timer", unit_of(t));
                let after: Vec<String> = schedules[..i]
                    .iter()
                    .map(|(e, _)| format!("{}.service", unit_of(e)))
                    .collect();
                let b = json!({
                    "kind": t, "stanza": c.name, "service": service, "timer": timer,
                    "schedule": when, "after": after,
                });
                let content = render(cx, "backup.service.tera", Some(b.clone()))?;
                out.push(
                    cx,
                    service.clone(),
                    PrimitiveSpec::SystemdUnit(UnitState::new(&service, content, None, None)),
                    vec![],
                );
                let content = render(cx, "backup.timer.tera", Some(b))?;
                out.push(
                    cx,
                    timer.clone(),
                    PrimitiveSpec::SystemdUnit(UnitState::new(
                        &timer,
                        content,
                        Some(true),
                        Some(true),
                    )),
                    vec![],
                );
            }
        }

        let command =
            |run: String, unless: Option<String>, refresh_only: bool, timeout: u64| CommandSpec {
                run,
                creates: None,
                unless,
                onlyif: None,
                refresh_only,
                user: None,
                cwd: Some(paths.stack_dir.clone()),
                env: BTreeMap::new(),
                timeout,
                wait_for: None,
                wait_timeout: 300,
            };
        for c in &clusters {
            let stanza = &c.name;
            let mut create = command(
                format!(
                    "{compose_cmd} exec -T pgbackrest pgbackrest {config} --stanza={stanza} stanza-create"
                ),
                Some(format!(
                    "test -f {0}/backup/{stanza}/backup.info && test -f {0}/archive/{stanza}/archive.info",
                    self.path
                )),
                false,
                600,
            );
            // The members converge in parallel with this host: wait (bounded) until one of them
            // is the running primary, as Patroni's REST API says, before creating the stanza.
            create.wait_for = Some(primary_check(c));
            out.push(
                cx,
                format!("{}-stanza-create-{stanza}", m.name),
                PrimitiveSpec::Command(create),
                vec![],
            );
        }
        out.push(
            cx,
            restart,
            PrimitiveSpec::Command(command(
                format!("{compose_cmd} restart pgbackrest"),
                None,
                true,
                120,
            )),
            vec![],
        );
        Ok(out.items)
    }
}

#[cfg(test)]
mod tests {
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
                "After=docker.service repo1-stack.service repo1-postgres01-full.service\n"
            ),
            "an incremental backup waits for a full one started at the same time:\n{text}"
        );

        let PrimitiveSpec::Command(c) = &item(&h, "Command", "repo1-stanza-create-postgres01").spec
        else {
            panic!()
        };
        assert!(!c.refresh_only);
        assert_eq!(
            c.run,
            "/usr/bin/docker-compose exec -T pgbackrest pgbackrest --config=/home/postgres/pgbackrest/pgbackrest.conf --stanza=postgres01 stanza-create"
        );
        assert_eq!(
            c.unless.as_deref(),
            Some(
                "test -f /var/lib/pgbackrest/backup/postgres01/backup.info && test -f /var/lib/pgbackrest/archive/postgres01/archive.info"
            )
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
        assert!(!h.resources.iter().any(|d| d.name.contains("-incr")));
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
}
