//! The repository host of a cluster's backups, reached over SSH: what it holds
//! (`pgbackrest info`) and a backup taken now through the unit its timer starts. Used by the
//! cluster phase (the first backup of a new cluster), `plumb pg backup` and `plumb pg status`.

use super::ConvergeOptions;
use super::remote::{Parked, Remote};
use crate::kinds::Spec;
use crate::kinds::backup_repo::LiveRepo;
use crate::load::Repo;
use crate::pg::backup::{self, BackupType, StanzaInfo};
use crate::report::cluster::{ClusterRun, ClusterStatus};
use std::time::Duration;

/// The repository named `name`, as declared.
pub fn live_repo(repo: &Repo, name: &str) -> Result<LiveRepo, String> {
    let Some(m) = repo.find("BackupRepo", name) else {
        return Err(format!("the repo declares no BackupRepo `{name}`"));
    };
    let Spec::BackupRepo(spec) = &m.spec else {
        return Err(format!("`{name}` is not a BackupRepo"));
    };
    Ok(spec.live(m, &repo.manifests, &repo.inventory))
}

/// An SSH connection to a repository's host.
pub struct RepoHost {
    live: LiveRepo,
    remote: Remote,
}

impl RepoHost {
    /// Connects to the host of `live`.
    pub async fn connect(
        repo: &Repo,
        live: LiveRepo,
        opts: &ConvergeOptions,
    ) -> Result<RepoHost, String> {
        RepoHost::connect_reusing(repo, live, opts, None).await
    }

    /// Connects to the host of `live`, over the run's connection to it when `parked` holds one.
    pub async fn connect_reusing(
        repo: &Repo,
        live: LiveRepo,
        opts: &ConvergeOptions,
        parked: Option<&Parked>,
    ) -> Result<RepoHost, String> {
        let Some(name) = live.host.clone() else {
            return Err(format!(
                "BackupRepo {} does not select exactly one host",
                live.name
            ));
        };
        let Some(host) = repo.inventory.host(&name) else {
            return Err(format!(
                "the repository host {name} is not in the inventory"
            ));
        };
        let remote = Parked::take_or_connect(parked, host, &opts.remote)
            .await
            .map_err(|e| format!("the repository host {name}: {e}"))?;
        Ok(RepoHost { live, remote })
    }

    /// The repository as declared.
    pub fn live(&self) -> &LiveRepo {
        &self.live
    }

    /// What the repository holds for `stanza`.
    pub async fn info(&self, stanza: &str) -> Result<StanzaInfo, String> {
        let out = self
            .remote
            .run(self.live.info_command(stanza).as_bytes())
            .await?;
        if out.status != 0 {
            return Err(format!(
                "`pgbackrest info` on the repository host failed (exit {}): {}",
                out.status,
                excerpt(&out.stderr)
            ));
        }
        let all = backup::parse_info(&out.stdout).map_err(|e| e.to_string())?;
        StanzaInfo::find(all, stanza)
            .ok_or_else(|| format!("the repository holds no stanza {stanza}"))
    }

    /// `pgbackrest check` of `stanza`: WAL reaches the repository and the repository reaches
    /// the members, at most `within`.
    pub async fn check(&self, stanza: &str, within: Duration) -> Result<(), String> {
        let secs = within.as_secs().max(1);
        let out = self
            .remote
            .run(self.live.check_command(stanza, secs).as_bytes())
            .await?;
        match out.status {
            0 => Ok(()),
            124 => Err(format!("it did not end within {secs} s")),
            code => Err(format!("exit {code}: {}", excerpt(&out.stderr))),
        }
    }

    /// Takes a `kind` backup of `stanza` now and waits for it, at most `within`.
    pub async fn backup(
        &self,
        stanza: &str,
        kind: BackupType,
        within: Duration,
    ) -> Result<(), String> {
        let secs = within.as_secs().max(1);
        let out = self
            .remote
            .run(self.live.backup_command(stanza, kind, secs).as_bytes())
            .await?;
        match out.status {
            0 => Ok(()),
            124 => Err(format!(
                "the {kind} backup of {stanza} did not end within {secs} s (it goes on in {})",
                self.live.unit(stanza, kind)
            )),
            code => Err(format!(
                "the {kind} backup of {stanza} failed ({} exited {code}): {}",
                self.live.unit(stanza, kind),
                excerpt(&out.stderr)
            )),
        }
    }

    /// Leaves the connection in `parked` (closed when the run ends).
    pub fn park(self, parked: &Parked) {
        if let Some(host) = &self.live.host {
            parked.park(host, self.remote);
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.remote.close().await;
    }
}

/// Longest `pgbackrest check` of the health gate (it switches WAL and waits for the segment to
/// reach the repository).
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// After the cluster phase of `run.cluster`: when the run `changed` a member of a healthy
/// cluster, the last part of the health gate, `pgbackrest check` (a failure makes the cluster
/// unhealthy and fails the run; not on every run: each check switches WAL, archiving a
/// segment); then reads what its repository `repo_name` holds, takes the first full backup
/// when it holds none and the cluster is healthy (a new cluster is protected from its first
/// converge; a dry run says it would), and puts the newest backups and their warnings in the
/// report. A repository that cannot be read is a warning; a first backup that fails fails the
/// run.
pub async fn protect(
    repo: &Repo,
    repo_name: &str,
    changed: bool,
    run: &mut ClusterRun,
    opts: &ConvergeOptions,
    parked: &Parked,
) {
    let stanza = run.cluster.clone();
    let say = |what: &str| {
        if opts.progress {
            eprintln!(
                "cluster {}: {}",
                crate::text::escape(&stanza),
                crate::text::escape(what)
            );
        }
        tracing::info!(cluster = %stanza, "{what}");
    };
    let live = match live_repo(repo, repo_name) {
        Ok(l) => l,
        Err(e) => {
            run.warnings.push(format!("backups not checked: {e}"));
            return;
        }
    };
    let host = match RepoHost::connect_reusing(repo, live, opts, Some(parked)).await {
        Ok(h) => h,
        Err(e) => {
            run.warnings.push(format!("backups not checked: {e}"));
            return;
        }
    };
    let mut info = host.info(&stanza).await;
    // A stanza with no backup yet is checked by its first backup below (which fails the run
    // the same way when archiving does not work).
    let has_backup = info.as_ref().is_ok_and(|i| i.has_valid_backup());
    if changed && has_backup && !opts.dry_run && run.status == ClusterStatus::Healthy {
        say("pgbackrest check");
        if let Err(e) = host.check(&stanza, CHECK_TIMEOUT).await {
            run.status = ClusterStatus::Unhealthy;
            run.reasons.push(format!("pgbackrest check failed: {e}"));
        }
    }
    if let Ok(i) = &info
        && !i.has_valid_backup()
    {
        let may = run.status == ClusterStatus::Healthy && run.error.is_none();
        if !opts.cluster.first_backup {
            run.warnings.push(format!(
                "the repository holds no valid backup of {stanza} (first backup not taken: \
                 --no-first-backup); take one with `plumb pg backup --type full`"
            ));
        } else if opts.dry_run {
            run.changes
                .push(format!("take the first full backup of {stanza}"));
        } else if !may {
            run.warnings.push(format!(
                "the repository holds no valid backup of {stanza}; the first full backup \
                 waits for a healthy cluster"
            ));
        } else {
            say("taking the first full backup");
            match host
                .backup(&stanza, BackupType::Full, opts.cluster.backup_timeout)
                .await
            {
                Ok(()) => {
                    info = host.info(&stanza).await;
                    let label = info
                        .as_ref()
                        .ok()
                        .and_then(|i| i.newest().get(&BackupType::Full).map(|b| b.label.clone()))
                        .unwrap_or_else(|| "?".into());
                    run.changes
                        .push(format!("took the first full backup of {stanza}: {label}"));
                }
                Err(e) => run.error = Some(e),
            }
        }
    }
    match info {
        Ok(i) => {
            let summary = i.summary(now(), &host.live().schedules);
            run.warnings.extend(
                summary
                    .warnings
                    .iter()
                    .filter(|_| i.has_valid_backup())
                    .cloned(),
            );
            run.backups = Some(summary);
        }
        Err(e) => run.warnings.push(format!("backups not read: {e}")),
    }
    host.park(parked);
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The last lines of a command's stderr, printable.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().rev().take(8).collect();
    let joined = lines.into_iter().rev().collect::<Vec<_>>().join(" | ");
    crate::text::escape(joined.trim()).into_owned()
}
