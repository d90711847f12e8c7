//! `plumb pg status|switchover|restart`: the PostgresCluster as a cluster, reached through the
//! SSH connection to each member (nothing but sshd is opened to the controller).

use super::converge::{HostArgs, OutputFormat, runtime};
use super::{EXIT_ERROR, EXIT_OK, RepoArgs, print_diagnostics};
use crate::converge::backup::{self, RepoHost};
use crate::converge::cluster::{Session, live_cluster};
use crate::converge::restore::RestorePlan;
use crate::kinds::postgres_cluster::live::LiveCluster;
use crate::kinds::{Manifest, Spec};
use crate::load::Repo;
use crate::pg::backup::{BackupSummary, BackupType, RestoreTarget};
use crate::pg::health::ClusterReport;
use crate::report::cluster::{ClusterRun, ClusterStatus};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::Duration;

/// `plumb pg ...`.
#[derive(Subcommand, Debug)]
pub enum PgCommand {
    /// Each member's role, state, timeline, lag, pending restart and start time, etcd's
    /// health and the health verdict (exit 0 healthy, 1 otherwise). Reads only.
    Status(PgArgs),
    /// Hand the leader role to a replica (`--to`, or the one Patroni picks), on a healthy
    /// cluster, then wait until it is healthy again.
    Switchover(SwitchoverArgs),
    /// Restart members through Patroni in a rolling order (replicas one at a time, a
    /// switchover, then the old leader), with the health gate between steps.
    Restart(RestartArgs),
    /// Take a backup now, on the repository host, through the unit its timer starts (they
    /// never overlap), wait for it (`--backup-timeout`) and show what the repository holds.
    Backup(BackupArgs),
    /// Restore the whole cluster from its repository (the newest state, a point in time or one
    /// backup): shows what it will do and asks (or `--yes`), stops every member, removes the
    /// cluster from the DCS, restores one member, brings the others back as replicas, waits for
    /// the health gate and takes a new full backup. Refused, with nothing touched, when the
    /// repository holds no backup that reaches the target.
    Restore(RestoreArgs),
}

/// `plumb pg restore`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["latest", "target_time", "backup"])))]
pub struct RestoreArgs {
    /// Common arguments.
    #[command(flatten)]
    pub pg: PgArgs,
    /// The newest backup and every archived WAL segment after it.
    #[arg(long)]
    pub latest: bool,
    /// A point in time, RFC 3339 with its offset (`2026-12-03T10:30:00Z`).
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// One backup (its label in `plumb pg status`), consistent at its end.
    #[arg(long, value_name = "LABEL")]
    pub backup: Option<String>,
    /// Do not ask: the operator has read what the restore does.
    #[arg(long)]
    pub yes: bool,
}

/// `plumb pg backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Common arguments.
    #[command(flatten)]
    pub pg: PgArgs,
    /// Backup type.
    #[arg(long = "type", value_name = "TYPE", default_value = "full", value_parser = ["full", "diff", "incr"])]
    pub kind: String,
}

/// Arguments every `plumb pg` command takes.
#[derive(Args, Debug)]
pub struct PgArgs {
    /// Repo options.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Host options (`--limit` is ignored: a cluster is all its members).
    #[command(flatten)]
    pub hosts: HostArgs,
    /// The cluster, when the repo declares more than one.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
}

/// `plumb pg switchover`.
#[derive(Args, Debug)]
pub struct SwitchoverArgs {
    /// Common arguments.
    #[command(flatten)]
    pub pg: PgArgs,
    /// The replica to promote.
    #[arg(long, value_name = "MEMBER")]
    pub to: Option<String>,
}

/// `plumb pg restart`.
#[derive(Args, Debug)]
pub struct RestartArgs {
    /// Common arguments.
    #[command(flatten)]
    pub pg: PgArgs,
    /// Only this member (repeatable); default every member.
    #[arg(long, value_name = "MEMBER")]
    pub member: Vec<String>,
}

/// Runs a `plumb pg` command.
pub fn run(c: &PgCommand) -> Result<i32> {
    match c {
        PgCommand::Status(a) => status(a),
        PgCommand::Switchover(a) => switchover(a),
        PgCommand::Restart(a) => restart(a),
        PgCommand::Backup(a) => backup(a),
        PgCommand::Restore(a) => restore(a),
    }
}

/// The one cluster the command is about.
fn pick<'r>(repo: &'r Repo, wanted: Option<&str>) -> Result<&'r Manifest> {
    let clusters: Vec<&Manifest> = repo
        .manifests
        .iter()
        .filter(|m| matches!(m.spec, Spec::PostgresCluster(_)))
        .collect();
    let names: Vec<&str> = clusters.iter().map(|m| m.name.as_str()).collect();
    match wanted {
        Some(w) => match clusters.iter().find(|m| m.name == w) {
            Some(m) => Ok(m),
            None => bail!(
                "the repo declares no PostgresCluster `{}` (it declares: {})",
                crate::text::escape(w),
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            ),
        },
        None => match clusters.as_slice() {
            [one] => Ok(one),
            [] => bail!("the repo declares no PostgresCluster"),
            _ => bail!(
                "the repo declares several clusters ({}): name one with --cluster",
                names.join(", ")
            ),
        },
    }
}

fn with_cluster<T>(
    a: &PgArgs,
    work: impl AsyncFnOnce(
        &crate::converge::cluster::Cluster<'_>,
        &crate::converge::ConvergeOptions,
    ) -> T,
) -> Result<std::result::Result<T, i32>> {
    let repo = match super::load_repo(&a.repo, false) {
        Ok(r) => r,
        Err(ds) => {
            print_diagnostics(&ds);
            return Ok(Err(EXIT_ERROR));
        }
    };
    let m = pick(&repo, a.cluster.as_deref())?;
    let live = live_cluster(&repo, m).map_err(anyhow::Error::msg)?;
    let mut opts = a.hosts.options(false);
    opts.progress = false;
    let out = runtime()?.block_on(async {
        let session = Session::open(&repo, live, &opts).await;
        let out = work(&session.cluster(), &opts).await;
        session.close().await;
        out
    });
    Ok(Ok(out))
}

fn say(what: &str) {
    eprintln!("{}", crate::text::escape(what));
}

fn print_status(report: &ClusterReport, format: OutputFormat) {
    print_status_with(report, None, format)
}

/// What the cluster's repository holds (`None` without a repository); a repository that cannot
/// be read is a summary with the reason as its warning.
fn read_backups(a: &PgArgs) -> Result<Option<BackupSummary>> {
    let repo = match super::load_repo(&a.repo, false) {
        Ok(r) => r,
        Err(_) => return Ok(None),
    };
    let m = pick(&repo, a.cluster.as_deref())?;
    let live = live_cluster(&repo, m).map_err(anyhow::Error::msg)?;
    let Some(repo_name) = live.backup_repo.clone() else {
        return Ok(None);
    };
    let opts = a.hosts.options(true);
    let stanza = live.name.clone();
    let summary = runtime()?.block_on(async {
        let read = async {
            let l = backup::live_repo(&repo, &repo_name)?;
            let host = RepoHost::connect(&repo, l, &opts).await?;
            let info = host.info(&stanza).await;
            let schedules = host.live().schedules.clone();
            host.close().await;
            info.map(|i| i.summary(backup::now(), &schedules))
        };
        match read.await {
            Ok(s) => s,
            Err(e) => BackupSummary {
                stanza: stanza.clone(),
                status: "unknown".into(),
                newest: Vec::new(),
                warnings: vec![format!("the repository could not be read: {e}")],
            },
        }
    });
    Ok(Some(summary))
}

fn print_status_with(
    report: &ClusterReport,
    backups: Option<&BackupSummary>,
    format: OutputFormat,
) {
    match format {
        OutputFormat::Json => {
            let mut value = serde_json::to_value(report).unwrap_or_default();
            if let (Some(b), Some(obj)) = (backups, value.as_object_mut()) {
                obj.insert(
                    "backups".into(),
                    serde_json::to_value(b).unwrap_or_default(),
                );
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            )
        }
        OutputFormat::Human => {
            let mut run = ClusterRun::new(&report.cluster);
            if let Some(b) = backups {
                run.backups = Some(b.clone());
                run.warnings.extend(b.warnings.iter().cloned());
            }
            run.members = report.members.clone();
            match &report.health {
                crate::pg::health::Health::Healthy => run.status = ClusterStatus::Healthy,
                crate::pg::health::Health::Unhealthy(reasons) => {
                    run.status = ClusterStatus::Unhealthy;
                    run.reasons = reasons.iter().map(|r| r.to_string()).collect();
                }
            }
            for e in &report.etcd {
                if !e.healthy {
                    run.warnings.push(format!(
                        "etcd on {}: {}",
                        e.member,
                        e.reason.as_deref().unwrap_or("unhealthy")
                    ));
                }
            }
            print!(
                "{}",
                crate::report::clusters_to_human(&[run], false, std::io::stdout().is_terminal())
            );
        }
    }
}

fn status(a: &PgArgs) -> Result<i32> {
    let report = match with_cluster(a, async |c, _| c.status().await)? {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let backups = read_backups(a)?;
    print_status_with(&report, backups.as_ref(), a.hosts.output);
    Ok(if report.health.is_healthy() {
        EXIT_OK
    } else {
        EXIT_ERROR
    })
}

fn finish(
    a: &PgArgs,
    result: std::result::Result<(std::result::Result<Vec<String>, String>, ClusterReport), i32>,
) -> Result<i32> {
    let (done, report) = match result {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    for d in done.as_ref().map(Vec::as_slice).unwrap_or_default() {
        eprintln!("done: {}", crate::text::escape(d));
    }
    print_status(&report, a.hosts.output);
    match done {
        Ok(_) if report.health.is_healthy() => Ok(EXIT_OK),
        Ok(_) => Ok(EXIT_ERROR),
        Err(e) => {
            eprintln!("error: {}", crate::text::escape_block(&e, "  "));
            Ok(EXIT_ERROR)
        }
    }
}

fn switchover(a: &SwitchoverArgs) -> Result<i32> {
    let within = Duration::from_secs(a.pg.hosts.health_timeout.max(1));
    let to = a.to.clone();
    let result = with_cluster(&a.pg, async move |c, _| {
        let done = c.switchover(to.as_deref(), within, &say).await;
        (done, c.status().await)
    })?;
    finish(&a.pg, result)
}

/// The repo, the cluster the command is about and the name of its backup repository (an
/// error when it has none); `Err(code)` when the repo does not load (its diagnostics printed).
fn with_repository(a: &PgArgs) -> Result<std::result::Result<(Repo, LiveCluster, String), i32>> {
    let repo = match super::load_repo(&a.repo, false) {
        Ok(r) => r,
        Err(ds) => {
            print_diagnostics(&ds);
            return Ok(Err(EXIT_ERROR));
        }
    };
    let m = pick(&repo, a.cluster.as_deref())?;
    let live = live_cluster(&repo, m).map_err(anyhow::Error::msg)?;
    let Some(repo_name) = live.backup_repo.clone() else {
        bail!(
            "cluster {} has no backup repository: declare `backup: {{ repo: NAME }}` in its manifest",
            live.name
        );
    };
    Ok(Ok((repo, live, repo_name)))
}

fn backup(a: &BackupArgs) -> Result<i32> {
    let Some(kind) = BackupType::parse(&a.kind) else {
        bail!("unknown backup type `{}`", crate::text::escape(&a.kind));
    };
    let (repo, live, repo_name) = match with_repository(&a.pg)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let opts = a.pg.hosts.options(false);
    let within = Duration::from_secs(a.pg.hosts.backup_timeout.max(1));
    let stanza = live.name.clone();
    let outcome = runtime()?.block_on(async {
        let l = backup::live_repo(&repo, &repo_name)?;
        let host = RepoHost::connect(&repo, l, &opts).await?;
        let unit = host.live().unit(&stanza, kind);
        say(&format!(
            "{kind} backup of {stanza} on the repository host: starting {unit}"
        ));
        let started = std::time::Instant::now();
        let done = {
            let job = host.backup(&stanza, kind, within);
            tokio::pin!(job);
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            tick.tick().await;
            loop {
                tokio::select! {
                    r = &mut job => break r,
                    _ = tick.tick() => say(&format!(
                        "{kind} backup of {stanza}: running for {}",
                        crate::pg::backup::age(started.elapsed().as_secs() as i64)
                    )),
                }
            }
        };
        let info = host.info(&stanza).await;
        let schedules = host.live().schedules.clone();
        host.close().await;
        Ok::<_, String>((
            done,
            info.map(|i| i.summary(backup::now(), &schedules)),
            started.elapsed(),
        ))
    });
    let (done, info, took) = match outcome {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {}", crate::text::escape_block(&e, "  "));
            return Ok(EXIT_ERROR);
        }
    };
    match a.pg.hosts.output {
        OutputFormat::Json => {
            let value = serde_json::json!({
                "cluster": stanza,
                "type": kind,
                "ok": done.is_ok(),
                "error": done.as_ref().err(),
                "seconds": took.as_secs(),
                "backups": info.as_ref().ok(),
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
        }
        OutputFormat::Human => {
            if done.is_ok() {
                println!(
                    "{kind} backup of {stanza} done in {}",
                    crate::pg::backup::age(took.as_secs() as i64)
                );
            }
            match &info {
                Ok(s) => println!(
                    "backups of {stanza}: {}",
                    crate::text::escape(&s.to_string())
                ),
                Err(e) => eprintln!("warning: {}", crate::text::escape(e)),
            }
        }
    }
    match done {
        Ok(()) => Ok(EXIT_OK),
        Err(e) => {
            eprintln!("error: {}", crate::text::escape_block(&e, "  "));
            Ok(EXIT_ERROR)
        }
    }
}

fn restore(a: &RestoreArgs) -> Result<i32> {
    let target = match (&a.target_time, &a.backup) {
        (Some(t), _) => RestoreTarget::parse_time(t).map_err(anyhow::Error::msg)?,
        (None, Some(label)) => RestoreTarget::Backup(label.clone()),
        (None, None) => RestoreTarget::Latest,
    };
    let (repo, live, repo_name) = match with_repository(&a.pg)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let opts = a.pg.hosts.options(false);
    let yes = a.yes;
    let result = runtime()?.block_on(async {
        let l = backup::live_repo(&repo, &repo_name)?;
        let host = RepoHost::connect(&repo, l, &opts).await?;
        let outcome = async {
            // Checked before anything is touched.
            let info = host.info(&live.name).await?;
            let from = target.check(&info, backup::now())?.label.clone();
            let session = Session::open(&repo, live.clone(), &opts).await;
            let leader = session.cluster().current_leader().await;
            let names = live.member_names();
            let restore_on = leader
                .filter(|l| names.contains(l))
                .or_else(|| names.first().cloned())
                .ok_or_else(|| "the cluster has no member".to_string())?;
            let plan = RestorePlan {
                others: names
                    .iter()
                    .filter(|n| **n != restore_on)
                    .cloned()
                    .collect(),
                restore_on,
                target: target.clone(),
                from_backup: from,
            };
            eprintln!("plumb pg restore will:");
            for (i, line) in plan.describe(&live).iter().enumerate() {
                eprintln!("  {}. {}", i + 1, crate::text::escape(line));
            }
            if !yes && !confirm(&live.name) {
                session.close().await;
                return Err("not confirmed: nothing was touched".to_string());
            }
            let done = crate::converge::restore::restore(&session, &host, &plan, &opts, &say).await;
            session.close().await;
            done
        }
        .await;
        host.close().await;
        outcome
    });
    match result {
        Ok(done) => {
            for d in &done {
                println!("done: {}", crate::text::escape(d));
            }
            Ok(EXIT_OK)
        }
        Err(e) => {
            eprintln!("error: {}", crate::text::escape_block(&e, "  "));
            Ok(EXIT_ERROR)
        }
    }
}

/// Asks the operator to type the cluster's name (only on a terminal; otherwise `--yes` is
/// needed).
fn confirm(cluster: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        eprintln!("not a terminal: pass --yes to restore without being asked");
        return false;
    }
    eprint!("type the cluster's name ({cluster}) to go on: ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && line.trim() == cluster
}

fn restart(a: &RestartArgs) -> Result<i32> {
    let within = Duration::from_secs(a.pg.hosts.health_timeout.max(1));
    let members: BTreeSet<String> = a.member.iter().cloned().collect();
    let result = with_cluster(&a.pg, async move |c, _| {
        let done = c.restart(&members, within, &say).await;
        (done, c.status().await)
    })?;
    finish(&a.pg, result)
}
