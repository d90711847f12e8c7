//! `plumb converge`, `plumb plan` and `plumb apply`: the commands that talk to hosts.

use super::{EXIT_ERROR, RepoArgs, print_diagnostics};
use crate::converge::remote::RemoteOptions;
use crate::converge::{self, ConvergeOptions};
use crate::diag::Diagnostics;
use crate::kinds::DesiredHost;
use crate::load::Repo;
use crate::model::desired::sha256_hex;
use crate::model::inventory::Host;
use crate::model::selector::Selector;
use crate::plan::HostPlan;
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Report format.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    /// For people.
    Human,
    /// `plumb.run/v1` JSON on stdout.
    Json,
}

/// Options shared by commands that reach hosts.
#[derive(Args, Debug, Clone)]
pub struct HostArgs {
    /// Only hosts matching this selector (`host:pg-srv1`, `group:postgres`, `!host:x`, comma-separated).
    #[arg(long, value_name = "SELECTOR")]
    pub limit: Option<String>,
    /// Hosts worked on at once.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub parallel: usize,
    /// Report format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Trust host keys not yet in known_hosts and record them (changed keys are always refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Seconds to connect (TCP, handshake, authentication).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,
    /// Seconds one probe or apply script may run.
    #[arg(long, default_value_t = 900, value_name = "SECS")]
    pub command_timeout: u64,
    /// Seconds to wait for another run's lock on a host.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub lock_timeout: u64,
    /// Also remove users and groups that were removed from the repo.
    #[arg(long)]
    pub prune_users: bool,
    /// Do not fetch old file contents to show diffs.
    #[arg(long)]
    pub no_diff: bool,
    /// Converge this machine itself instead of connecting over SSH (all selected hosts must be it).
    #[arg(long)]
    pub local: bool,
    /// OpenSSH client configuration to read instead of the inventory's `ssh_config` or
    /// ~/.ssh/config and /etc/ssh/ssh_config (`none`: read none).
    #[arg(long, value_name = "FILE", env = "PLUMB_SSH_CONFIG")]
    pub ssh_config: Option<PathBuf>,
    /// Seconds to wait for a PostgresCluster to become healthy after a change (and at each
    /// step of a rolling restart); unhealthy at the deadline fails the run.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub health_timeout: u64,
    /// Skip the cluster phase (health gate, roles and databases, dynamic configuration,
    /// rolling restarts): converge the hosts' files only.
    #[arg(long)]
    pub no_cluster: bool,
    /// Do not restart members whose parameters wait for a restart (reported instead).
    #[arg(long)]
    pub no_roll: bool,
    /// Drop database roles and databases that exist but are not declared (never the system
    /// databases or the roles the cluster itself uses).
    #[arg(long)]
    pub drop_undeclared: bool,
    /// Seconds to wait for a backup plumb takes (the first full backup of a new cluster,
    /// `plumb pg backup`); the backup goes on in its unit past the deadline.
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub backup_timeout: u64,
    /// Do not take the first full backup of a cluster whose repository holds none (it is
    /// reported instead).
    #[arg(long)]
    pub no_first_backup: bool,
}

impl HostArgs {
    /// Converge options from these arguments.
    pub fn options(&self, dry_run: bool) -> ConvergeOptions {
        ConvergeOptions {
            dry_run,
            parallel: self.parallel.max(1),
            remote: RemoteOptions {
                local: self.local,
                accept_new_host_keys: self.accept_new_host_keys,
                connect_timeout: Duration::from_secs(self.connect_timeout.max(1)),
                command_timeout: Duration::from_secs(self.command_timeout.max(1)),
                default_known_hosts: None,
                ssh_config: self.ssh_config.clone(),
                ..RemoteOptions::default()
            },
            lock_timeout: Duration::from_secs(self.lock_timeout),
            prune_users: self.prune_users,
            force_reissue: false,
            diffs: !self.no_diff,
            progress: self.output == OutputFormat::Human && std::io::stderr().is_terminal(),
            allow_mass_prune: false,
            cluster: crate::converge::cluster::ClusterOptions {
                enabled: !self.no_cluster,
                health_timeout: Duration::from_secs(self.health_timeout.max(1)),
                drop_undeclared: self.drop_undeclared,
                roll: !self.no_roll,
                backup_timeout: Duration::from_secs(self.backup_timeout.max(1)),
                first_backup: !self.no_first_backup,
            },
            // `plumb pull` and `plumb serve` set their watchdog (`--run-timeout`); a converge
            // by hand is watched by the person who started it.
            run_timeout: None,
        }
    }
}

/// `plumb converge`.
#[derive(Args, Debug)]
pub struct ConvergeArgs {
    /// Repo options.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Host options.
    #[command(flatten)]
    pub hosts: HostArgs,
    /// Read the hosts and show the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Let this run remove more than half of what plumb manages on a host (refused otherwise:
    /// a deleted manifest or a changed selector must not wipe a host).
    #[arg(long)]
    pub allow_mass_prune: bool,
}

/// `plumb plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Repo options.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Host options.
    #[command(flatten)]
    pub hosts: HostArgs,
    /// Where to write the plan.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `plumb apply`.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// A plan written by `plumb plan --out`.
    pub plan: PathBuf,
    /// age identity (needed when the plan writes secrets or issues certificates).
    #[arg(long, value_name = "FILE", env = "PLUMB_AGE_IDENTITY")]
    pub age_identity: Option<PathBuf>,
    /// Secret store options.
    #[command(flatten)]
    pub secret_command: super::SecretCommandArgs,
    /// Host options (`--limit` is not allowed: the plan says which hosts).
    #[command(flatten)]
    pub hosts: HostArgs,
    /// Let this plan remove more than half of what plumb manages on a host.
    #[arg(long)]
    pub allow_mass_prune: bool,
}

/// A loaded repo and the rendered hosts to work on.
pub(super) type Prepared = (Arc<Repo>, Vec<(Host, DesiredHost)>);

/// Loads the repo and renders the selected hosts. Any problem stops here: no host is contacted.
pub(super) fn prepare(
    repo_args: &RepoArgs,
    limit: Option<&str>,
) -> Result<Result<Prepared, Diagnostics>> {
    let repo = match super::load_repo(repo_args, false) {
        Ok(r) => r,
        Err(ds) => return Ok(Err(ds)),
    };
    let selected: Vec<Host> = match limit {
        Some(l) => {
            let sel = Selector::parse(l).map_err(|e| anyhow::anyhow!("--limit {l}: {e}"))?;
            let unknown = sel.check(&repo.inventory);
            if let Some(u) = unknown.first() {
                bail!("--limit {l}: {}; {}", u.message, u.hint);
            }
            let names = sel.select(&repo.inventory);
            repo.inventory
                .hosts
                .iter()
                .filter(|h| names.contains(h.name.as_str()))
                .cloned()
                .collect()
        }
        None => repo.inventory.hosts.clone(),
    };
    let mut ds = Diagnostics::new();
    let mut targets = Vec::new();
    for h in selected {
        match crate::render::render_host(&repo, &h) {
            Ok(d) => targets.push((h, d)),
            Err(e) => ds.extend(e.items),
        }
    }
    if !ds.is_empty() {
        ds.sort();
        return Ok(Err(ds));
    }
    Ok(Ok((Arc::new(repo), targets)))
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(super) fn print_report(report: &crate::report::RunReport, format: OutputFormat) {
    match format {
        OutputFormat::Json => print!("{}", report.to_json()),
        OutputFormat::Human => print!("{}", report.to_human(std::io::stdout().is_terminal())),
    }
}

/// `plumb converge`.
pub fn converge(a: &ConvergeArgs) -> Result<i32> {
    let mut opts = a.hosts.options(a.dry_run);
    opts.allow_mass_prune = a.allow_mass_prune;
    converge_repo(&a.repo, &a.hosts, opts)
}

/// Loads the repo (nothing is contacted if it is invalid), converges the selected hosts with
/// `opts` and prints the report: `plumb converge` and `plumb certs rotate`.
pub(super) fn converge_repo(
    repo_args: &RepoArgs,
    hosts: &HostArgs,
    opts: ConvergeOptions,
) -> Result<i32> {
    let (repo, targets) = match prepare(repo_args, hosts.limit.as_deref())? {
        Ok(x) => x,
        Err(ds) => {
            print_diagnostics(&ds);
            return Ok(EXIT_ERROR);
        }
    };
    let commit = crate::source::commit_label(&repo_args.repo);
    let report = runtime()?.block_on(converge::converge(repo, targets, &opts, commit));
    print_report(&report, hosts.output);
    Ok(report.exit_code())
}

/// The plan file.
#[derive(Serialize, Deserialize)]
pub struct PlanFile {
    /// `plumb.plan/v1`.
    pub schema: String,
    /// Absolute repo path.
    pub repo: PathBuf,
    /// Inventory overlay used.
    pub inventory: Option<PathBuf>,
    /// Commit of the repo when planned.
    pub commit: Option<String>,
    /// SHA-256 of the serialized `hosts`.
    pub plan_sha256: String,
    /// Per host.
    pub hosts: Vec<HostPlan>,
}

const PLAN_SCHEMA: &str = "plumb.plan/v1";

fn hosts_hash(hosts: &[HostPlan]) -> String {
    sha256_hex(serde_json::to_string(hosts).unwrap_or_default().as_bytes())
}

/// `plumb plan --out FILE`.
pub fn plan(a: &PlanArgs) -> Result<i32> {
    let (repo, targets) = match prepare(&a.repo, a.hosts.limit.as_deref())? {
        Ok(x) => x,
        Err(ds) => {
            print_diagnostics(&ds);
            return Ok(EXIT_ERROR);
        }
    };
    let commit = crate::source::commit_label(&a.repo.repo);
    let opts = a.hosts.options(true);
    let report = runtime()?.block_on(converge::converge(repo, targets, &opts, commit.clone()));
    print_report(&report, a.hosts.output);
    let code = report.exit_code();
    if code == EXIT_ERROR {
        eprintln!("error: the plan was not written because some hosts failed");
        return Ok(EXIT_ERROR);
    }
    let hosts: Vec<HostPlan> = report.hosts.into_iter().filter_map(|h| h.plan).collect();
    let file = PlanFile {
        schema: PLAN_SCHEMA.into(),
        repo: std::fs::canonicalize(&a.repo.repo)?,
        inventory: a
            .repo
            .inventory
            .as_ref()
            .map(std::fs::canonicalize)
            .transpose()?,
        commit,
        plan_sha256: hosts_hash(&hosts),
        hosts,
    };
    let text = serde_json::to_string_pretty(&file)? + "\n";
    crate::secrets::write_atomic(&a.out, crate::secrets::redact(&text).as_bytes())
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "plan written to {} (plan sha256 {})",
        a.out.display(),
        file.plan_sha256
    );
    Ok(code)
}

/// `plumb apply PLAN`: applies exactly a reviewed plan, with compare-and-swap per resource.
pub fn apply(a: &ApplyArgs) -> Result<i32> {
    if a.hosts.limit.is_some() {
        bail!("`plumb apply` applies the hosts of the plan; --limit belongs to `plumb plan`");
    }
    let text = std::fs::read_to_string(&a.plan)
        .with_context(|| format!("reading {}", a.plan.display()))?;
    let file: PlanFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a plumb plan", a.plan.display()))?;
    if file.schema != PLAN_SCHEMA {
        bail!(
            "{}: unsupported plan schema `{}` (expected {PLAN_SCHEMA})",
            a.plan.display(),
            file.schema
        );
    }
    if hosts_hash(&file.hosts) != file.plan_sha256 {
        bail!(
            "{}: the plan's hash does not match its content; it was edited or damaged; make a new plan",
            a.plan.display()
        );
    }
    let now_commit = crate::source::commit_label(&file.repo);
    if file.commit.is_some() && now_commit != file.commit {
        bail!(
            "the repo at {} is at {} but the plan was made at {}; make a new plan",
            file.repo.display(),
            now_commit.as_deref().unwrap_or("no commit"),
            file.commit.as_deref().unwrap_or("?")
        );
    }
    let repo_args = RepoArgs {
        repo: file.repo.clone(),
        inventory: file.inventory.clone(),
        age_identity: a.age_identity.clone(),
        secret_command: a.secret_command.clone(),
    };
    let names: Vec<String> = file.hosts.iter().map(|h| h.host.clone()).collect();
    let limit = names
        .iter()
        .map(|n| format!("host:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let (repo, targets) = match prepare(&repo_args, Some(&limit))? {
        Ok(x) => x,
        Err(ds) => {
            print_diagnostics(&ds);
            return Ok(EXIT_ERROR);
        }
    };
    // The re-rendered desired state must be the one planned, resource by resource.
    for (planned, (_, desired)) in file.hosts.iter().zip(&targets) {
        if planned.resources.len() != desired.resources.len() {
            bail!(
                "host {}: the repo renders {} resources, the plan has {}; make a new plan",
                planned.host,
                desired.resources.len(),
                planned.resources.len()
            );
        }
        for (p, d) in planned.resources.iter().zip(&desired.resources) {
            if p.desired_sha256 != crate::plan::desired_hash(d) {
                bail!(
                    "host {}: {}/{} renders differently than when it was planned; make a new plan",
                    planned.host,
                    p.kind,
                    p.name
                );
            }
        }
    }
    let mut opts = a.hosts.options(false);
    opts.allow_mass_prune = a.allow_mass_prune;
    let report = runtime()?.block_on(converge::apply_planned(
        repo,
        targets,
        file.hosts,
        &opts,
        file.commit,
    ));
    print_report(&report, a.hosts.output);
    Ok(report.exit_code())
}
