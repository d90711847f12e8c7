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

use super::cluster::{
    ClusterModel, ClusterPaths, OsAccount, TlsSettings, default_compose, p_pgbackrest,
};
use super::command::CommandSpec;
use super::compose_stack::{EnvValue, StackState, render_env};
use super::directory::DirectorySpec;
use super::file::FileState;
use super::systemd_unit::UnitState;
mod check;
mod live;
mod render;

pub use live::LiveRepo;
#[cfg(test)]
mod tests;

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
        include_str!("../../../templates/backup-repo/pgbackrest.conf.tera"),
    ),
    (
        "backup-repo/docker-compose.yml.tera",
        include_str!("../../../templates/backup-repo/docker-compose.yml.tera"),
    ),
    (
        "backup-repo/stack.service.tera",
        include_str!("../../../templates/backup-repo/stack.service.tera"),
    ),
    (
        "backup-repo/backup.service.tera",
        include_str!("../../../templates/backup-repo/backup.service.tera"),
    ),
    (
        "backup-repo/backup.timer.tera",
        include_str!("../../../templates/backup-repo/backup.timer.tera"),
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
    /// A local repository: a folder on the host of its one cluster's only member, written by
    /// that member's own pgBackRest (no TLS server, no certificate, no second host). For a
    /// single-node cluster (seed 000); default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
    /// Certificate settings of a repository host; `ca` must be the CA of every cluster using
    /// this repository. Required unless `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
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
        clusters_naming(&m.name, repo.manifests, repo.inventory)
    }
}

/// The clusters whose `backup.repo` is `name`, sorted by name.
pub(crate) fn clusters_naming<'m>(
    name: &str,
    manifests: impl IntoIterator<Item = &'m Manifest>,
    inv: &crate::model::inventory::Inventory,
) -> Vec<ClusterModel> {
    let mut v: Vec<ClusterModel> = manifests
        .into_iter()
        .filter_map(|cm| match &cm.spec {
            Spec::PostgresCluster(c) if c.backup.as_ref().is_some_and(|b| b.repo == name) => {
                Some(c.model(cm, inv))
            }
            _ => None,
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// A shell check that succeeds when some member of the cluster is the running primary
/// (Patroni's REST API answers 200 on `/primary` over HTTPS, its certificate checked against
/// the CA at `ca_file`; needs curl on the repository host).
fn primary_check(c: &ClusterModel, ca_file: &str) -> String {
    let ca = crate::shell::quote(ca_file);
    c.members
        .iter()
        .map(|mem| {
            format!(
                "curl -sf -o /dev/null --max-time 3 --cacert {ca} https://{}:{}/primary",
                mem.host, c.ports.rest_api
            )
        })
        .collect::<Vec<_>>()
        .join(" || ")
}

impl Kind for BackupRepoSpec {
    fn check(&self, cx: &mut CheckCx) {
        check::check(self, cx)
    }

    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        render::render(self, m, cx)
    }
}
