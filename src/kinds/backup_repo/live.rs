//! What `plumb pg backup`, the first backup of a converge and `plumb pg status` need of a
//! `BackupRepo`: its host, where its stack and configuration are, and the names of the backup
//! units, so that a backup started by plumb is the very unit the timer starts (systemd never
//! runs it twice at once). Pure.

use super::BackupRepoSpec;
use crate::kinds::Manifest;
use crate::kinds::cluster::selected_hosts;
use crate::model::inventory::Inventory;
use crate::pg::backup::BackupType;
use crate::shell::quote;

/// A declared repository as the commands that use it see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRepo {
    /// The `BackupRepo`'s name.
    pub name: String,
    /// Its host's inventory name (`None` when the manifest selects no single host; validation
    /// refuses that, this is for callers that skip it).
    pub host: Option<String>,
    /// Folder of the compose stack whose container runs pgBackRest: the repository's own, or
    /// for a local repository its cluster's.
    pub stack_dir: String,
    /// The compose service that runs pgBackRest (`pgbackrest`, or `patroni` for a local
    /// repository).
    pub service: String,
    /// The compose binary.
    pub compose_command: String,
    /// pgBackRest's configuration file inside the container.
    pub config: String,
    /// Scheduled backup types and their calendars.
    pub schedules: Vec<(BackupType, String)>,
}

impl LiveRepo {
    /// The systemd service that takes a `kind` backup of `stanza` (its timer starts the same).
    pub fn unit(&self, stanza: &str, kind: BackupType) -> String {
        unit_name(&self.name, stanza, kind.as_str())
    }

    /// A sh command printing `pgbackrest info --output=json` for `stanza`.
    pub fn info_command(&self, stanza: &str) -> String {
        format!(
            "cd -- {} && {} exec -T {} pgbackrest {} {} --output=json info",
            quote(&self.stack_dir),
            quote(&self.compose_command),
            quote(&self.service),
            quote(&format!("--config={}", self.config)),
            quote(&format!("--stanza={stanza}")),
        )
    }

    /// A sh command running `pgbackrest check` for `stanza` (archiving from the primary and
    /// the TLS links both ways), bounded by `secs` seconds; its output goes to stderr.
    pub fn check_command(&self, stanza: &str, secs: u64) -> String {
        format!(
            "cd -- {} && timeout {secs} {} exec -T {} pgbackrest {} {} check 1>&2",
            quote(&self.stack_dir),
            quote(&self.compose_command),
            quote(&self.service),
            quote(&format!("--config={}", self.config)),
            quote(&format!("--stanza={stanza}")),
        )
    }

    /// A sh command that runs the `kind` backup unit of `stanza` and waits for it, at most
    /// `secs` seconds (a oneshot unit's `systemctl start` returns when the backup has ended;
    /// when the timer's run is already going, it waits for that one), then prints the unit's
    /// last log lines when it failed.
    pub fn backup_command(&self, stanza: &str, kind: BackupType, secs: u64) -> String {
        let unit = quote(&self.unit(stanza, kind));
        format!(
            "if timeout {secs} systemctl start -- {unit}; then exit 0; fi; rc=$?; \
             journalctl -u {unit} -n 15 --no-pager -o cat 2>/dev/null | tail -n 15 >&2; exit $rc"
        )
    }
}

/// `<repo>-<stanza>-<type>.service`, as the repository's render names it.
pub(super) fn unit_name(repo: &str, stanza: &str, kind: &str) -> String {
    format!("{repo}-{stanza}-{kind}.service")
}

impl BackupRepoSpec {
    /// The repository as the cluster commands need it (`manifests`: the repo's, where a local
    /// repository finds its cluster).
    pub fn live<'m>(
        &self,
        m: &Manifest,
        manifests: impl IntoIterator<Item = &'m Manifest>,
        inv: &Inventory,
    ) -> LiveRepo {
        let hosts = selected_hosts(m, inv);
        let host = match hosts.as_slice() {
            [one] => Some(one.name.clone()),
            _ => None,
        };
        let paths = self.paths(m);
        let (stack_dir, service, config) = match self.local {
            false => (paths.stack_dir, "pgbackrest", paths.pgbackrest_config),
            true => match super::clusters_naming(&m.name, manifests, inv).first() {
                Some(c) => (
                    c.paths.stack_dir.clone(),
                    "patroni",
                    c.paths.pgbackrest_config.clone(),
                ),
                // No cluster names it: nothing to back up, and nothing runs there.
                None => (paths.stack_dir, "patroni", paths.pgbackrest_config),
            },
        };
        LiveRepo {
            name: m.name.clone(),
            host,
            stack_dir,
            service: service.to_string(),
            compose_command: self.compose_command.clone(),
            config,
            schedules: self
                .schedules()
                .into_iter()
                .filter_map(|(t, when)| Some((BackupType::parse(t)?, when.to_string())))
                .collect(),
        }
    }
}
