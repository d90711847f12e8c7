//! Converge: the async edge that drives every host through probe → plan → apply, in parallel
//! with a bound, one SSH connection per host. A failing or unreachable host fails alone: its
//! error is recorded and the other hosts carry on.

pub mod backup;
pub mod cluster;
pub mod remote;
pub mod restore;
pub mod rollout;

use crate::apply::{self, Issuer};
use crate::kinds::DesiredHost;
use crate::kinds::Spec;
use crate::kinds::certificate::CertificateState;
use crate::load::Repo;
use crate::model::inventory::Host;
use crate::plan::{self, HostPlan, diff};
use crate::probe;
use crate::report::{HostRun, RunReport};
use crate::vocab::cx::PlanCx;
use crate::vocab::records;
use crate::vocab::records::HostRecords;
use crate::vocab::state::HostState;
use crate::vocab::step::Action;
use base64::Engine as _;
use remote::{Lock, Parked, Remote, RemoteOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How a converge runs.
#[derive(Clone, Debug)]
pub struct ConvergeOptions {
    /// Read only: probe and plan, never write.
    pub dry_run: bool,
    /// Hosts worked on at once.
    pub parallel: usize,
    /// Connection settings.
    pub remote: RemoteOptions,
    /// How long to wait for another run's lock on a host.
    pub lock_timeout: Duration,
    /// Remove users and groups that left the repo.
    pub prune_users: bool,
    /// Reissue every certificate.
    pub force_reissue: bool,
    /// Fetch old contents to show unified diffs.
    pub diffs: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Remove more than half of a host's managed resources if the repo says so (see
    /// [`plan::mass_prune`]); never implied by pull or serve.
    pub allow_mass_prune: bool,
    /// The cluster phase (health gates, database state, dynamic configuration, rolls).
    pub cluster: cluster::ClusterOptions,
    /// The watchdog: the longest the whole run may take (hosts, then the cluster phase). A host
    /// still working at the deadline is stopped the way a lost controller stops it (its
    /// connection closes: the apply script's own watchdog ends the run on the host and removes
    /// its temp files; every file is switched atomically, so none is left half written) and is
    /// reported failed, as is a cluster phase still going.
    pub run_timeout: Option<Duration>,
}

impl Default for ConvergeOptions {
    fn default() -> Self {
        ConvergeOptions {
            dry_run: false,
            parallel: 32,
            remote: RemoteOptions::default(),
            lock_timeout: Duration::from_secs(60),
            prune_users: false,
            force_reissue: false,
            diffs: true,
            progress: false,
            allow_mass_prune: false,
            cluster: cluster::ClusterOptions::default(),
            run_timeout: None,
        }
    }
}

/// Why a host or a cluster failed when the run's watchdog fired.
pub fn run_timeout_message(limit: Duration) -> String {
    format!(
        "the run exceeded its time limit ({}s, --run-timeout): stopped here; what was applied before is kept (each file is written whole or not at all), the rest is not",
        limit.as_secs()
    )
}

/// Issues certificates with the repo's CAs.
pub struct RepoIssuer<'r> {
    repo: &'r Repo,
}

impl<'r> RepoIssuer<'r> {
    /// An issuer for a repo.
    pub fn new(repo: &'r Repo) -> Self {
        RepoIssuer { repo }
    }
}

impl Issuer for RepoIssuer<'_> {
    fn issue(&self, want: &CertificateState) -> Result<(String, String), String> {
        let Some(m) = self.repo.find("CertificateAuthority", &want.ca) else {
            return Err(format!("unknown CA `{}`", want.ca));
        };
        let Spec::CertificateAuthority(ca) = &m.spec else {
            return Err(format!("`{}` is not a CA", want.ca));
        };
        let key = self
            .repo
            .secrets
            .get(&ca.key.secret)
            .map_err(|e| e.to_string())?;
        let cert = self
            .repo
            .ca_certificates
            .get(&want.ca)
            .ok_or_else(|| format!("CA `{}` has no certificate", want.ca))?;
        let issued = crate::pki::issue(
            &String::from_utf8_lossy(cert.bytes()),
            key.expose(),
            &want.leaf_request(),
        )
        .map_err(|e| e.to_string())?;
        Ok((issued.cert_pem, issued.key_pem))
    }
}

/// A run id: sortable time plus a random suffix.
pub fn new_run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let rand =
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), now);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{:06x}",
        now.year(),
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        rand & 0xff_ffff
    )
}

/// Converges the given hosts (already rendered: a repo with errors never gets here).
pub async fn converge(
    repo: Arc<Repo>,
    targets: Vec<(Host, DesiredHost)>,
    opts: &ConvergeOptions,
    commit: Option<String>,
) -> RunReport {
    let jobs = targets.into_iter().map(|(h, d)| (h, d, None)).collect();
    run_all(repo, jobs, opts, commit).await
}

/// Applies reviewed plans (from `plumb plan --out`), one per host, in the same order as
/// `targets`. Each resource is still compare-and-swapped against the state it was planned on.
pub async fn apply_planned(
    repo: Arc<Repo>,
    targets: Vec<(Host, DesiredHost)>,
    plans: Vec<HostPlan>,
    opts: &ConvergeOptions,
    commit: Option<String>,
) -> RunReport {
    let jobs = targets
        .into_iter()
        .zip(plans)
        .map(|((h, d), p)| (h, d, Some(p)))
        .collect();
    run_all(repo, jobs, opts, commit).await
}

async fn run_all(
    repo: Arc<Repo>,
    targets: Vec<(Host, DesiredHost, Option<HostPlan>)>,
    opts: &ConvergeOptions,
    commit: Option<String>,
) -> RunReport {
    let started = Instant::now();
    let deadline = opts
        .run_timeout
        .map(|t| tokio::time::Instant::from_std(started + t));
    let run_id = new_run_id();
    let sem = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let bar = progress_bar(opts.progress, targets.len());
    let names = targets.iter().map(|(h, _, _)| h.name.clone()).collect();
    let (rollouts, mut gates) = rollout::Rollouts::start(&repo, &names, opts);
    let parked = Arc::new(Parked::default());
    let mut tasks = Vec::with_capacity(targets.len());
    for (host, desired, planned) in targets {
        let gate = gates.remove(&host.name);
        let sem = sem.clone();
        let repo = repo.clone();
        let opts = opts.clone();
        let run_id = run_id.clone();
        let commit = commit.clone();
        let bar = bar.clone();
        let parked = parked.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let name = host.name.clone();
            let job = Job {
                repo: &repo,
                host: &host,
                desired: &desired,
                opts: &opts,
                run_id: &run_id,
                commit: commit.as_deref(),
                parallel: &sem,
                parked: &parked,
            };
            // Waiting for a permit counts against the deadline too. When it fires, the job's
            // future is dropped: its SSH connection closes, which is exactly what the host's
            // watchdog (`pl_watchdog`) treats as a controller gone, so the apply stops through
            // the same path as when plumb dies.
            let work = async {
                let permit = sem.acquire().await.ok();
                job.run(planned, gate, permit).await
            };
            let result = match deadline {
                Some(d) => match tokio::time::timeout_at(d, work).await {
                    Ok(r) => r,
                    Err(_) => Err((
                        None,
                        run_timeout_message(opts.run_timeout.unwrap_or_default()),
                    )),
                },
                None => work.await,
            };
            let mut run = match result {
                Ok(r) => r,
                Err((plan, e)) => HostRun {
                    host: name.clone(),
                    plan,
                    outcome: None,
                    error: Some(e),
                    duration: Duration::ZERO,
                },
            };
            run.duration = t0.elapsed();
            if let Some(b) = &bar {
                b.inc(1);
                b.set_message(name);
            }
            run
        }));
    }
    // The clusters' coordinators run alongside the host jobs, which wait on them for their
    // turn; each ends once every member of its cluster has reported or gone.
    let jobs = async {
        let mut hosts = Vec::with_capacity(tasks.len());
        for t in tasks {
            match t.await {
                Ok(r) => hosts.push(r),
                Err(e) => hosts.push(HostRun {
                    host: "?".into(),
                    plan: None,
                    outcome: None,
                    error: Some(format!("internal error: {e}")),
                    duration: Duration::ZERO,
                }),
            }
        }
        hosts
    };
    // Bounded by the run's watchdog like everything else (a gate can wait long).
    let coordinators = async {
        match deadline {
            Some(d) => tokio::time::timeout_at(d, rollouts.run())
                .await
                .unwrap_or_default(),
            None => rollouts.run().await,
        }
    };
    let (hosts, rolled) = futures::future::join(jobs, coordinators).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let clusters = cluster::converge_clusters(&repo, &hosts, opts, deadline, rolled, &parked).await;
    parked.close_all().await;
    let timed_out = opts.run_timeout.is_some_and(|t| {
        let why = run_timeout_message(t);
        hosts
            .iter()
            .any(|h| h.error.as_deref() == Some(why.as_str()))
            || clusters
                .iter()
                .any(|c| c.error.as_deref() == Some(why.as_str()))
    });
    RunReport {
        run_id,
        commit,
        dry_run: opts.dry_run,
        hosts,
        clusters,
        duration: started.elapsed(),
        timed_out,
    }
}

/// Reads every certificate of the given hosts (one probe per host that has any, no lock,
/// nothing written) and says when each expires and whether a converge would reissue it: the
/// report of `plumb certs status`, also kept after each run of `plumb pull` and `plumb serve`
/// for the status page.
pub async fn read_certificates(
    targets: Vec<(Host, DesiredHost)>,
    opts: &ConvergeOptions,
) -> crate::report::certs::CertsReport {
    use crate::kinds::PrimitiveSpec;
    use crate::report::certs::{CertsReport, HostFailure, SCHEMA};
    let targets: Vec<_> = targets
        .into_iter()
        .map(|(h, mut d)| {
            d.resources
                .retain(|r| matches!(r.spec, PrimitiveSpec::Certificate(_)));
            (h, d)
        })
        .filter(|(_, d)| !d.resources.is_empty())
        .collect();
    let readings = read_hosts(targets, opts).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut report = CertsReport {
        schema: SCHEMA,
        checked_at: now,
        certificates: Vec::new(),
        failed: Vec::new(),
    };
    for r in readings {
        match &r.records {
            Ok(records) => {
                for (i, d) in r.desired.resources.iter().enumerate() {
                    if let PrimitiveSpec::Certificate(c) = &d.spec {
                        report.certificates.push(c.status(
                            &r.host.name,
                            &d.name,
                            records.of(i),
                            now,
                        ));
                    }
                }
            }
            Err(e) => report.failed.push(HostFailure {
                host: r.host.name.clone(),
                error: e.clone(),
            }),
        }
    }
    report
}

/// Whether any of these hosts has a certificate to read.
pub fn has_certificates(targets: &[(Host, DesiredHost)]) -> bool {
    targets.iter().any(|(_, d)| {
        d.resources
            .iter()
            .any(|r| matches!(r.spec, crate::kinds::PrimitiveSpec::Certificate(_)))
    })
}

/// What a read-only pass found on one host.
pub struct HostReading {
    /// The host.
    pub host: Host,
    /// What was probed.
    pub desired: DesiredHost,
    /// The probe's records, or why the host could not be read.
    pub records: Result<HostRecords, String>,
}

/// Reads hosts without taking their lock or planning, in parallel with the same bound as a
/// converge: the ground of reports such as `plumb certs status`.
pub async fn read_hosts(
    targets: Vec<(Host, DesiredHost)>,
    opts: &ConvergeOptions,
) -> Vec<HostReading> {
    let sem = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let mut tasks = Vec::with_capacity(targets.len());
    for (host, desired) in targets {
        let sem = sem.clone();
        let remote_opts = opts.remote.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let records = read_host(&host, &desired, &remote_opts).await;
            HostReading {
                host,
                desired,
                records,
            }
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(r) => out.push(r),
            Err(e) => tracing::error!(error = %e, "a host's read task ended abnormally"),
        }
    }
    out
}

async fn read_host(
    host: &Host,
    desired: &DesiredHost,
    opts: &RemoteOptions,
) -> Result<HostRecords, String> {
    let remote = Remote::connect(host, opts)
        .await
        .map_err(|e| e.to_string())?;
    let records = probe_unlocked(&remote, desired, &host.state_dir).await;
    remote.close().await;
    records
}

/// Probes a host without its lock (dry runs and reports only read).
async fn probe_unlocked(
    remote: &Remote,
    desired: &DesiredHost,
    state_dir: &str,
) -> Result<HostRecords, String> {
    let script = probe::probe_script(desired, state_dir);
    let out = remote.run(script.as_bytes()).await?;
    if out.status != 0 {
        return Err(format!(
            "the probe did not complete (exit {}): {}",
            out.status,
            crate::secrets::redact(String::from_utf8_lossy(&out.stderr).trim())
        ));
    }
    parse_probe(&out.stdout, desired)
}

/// Parses a host's probe output against what was probed.
fn parse_probe(stdout: &[u8], desired: &DesiredHost) -> Result<HostRecords, String> {
    probe::parse(&String::from_utf8_lossy(stdout), desired).map_err(|e| e.to_string())
}

/// Where the scripts after the probe go: the held shell that took the host lock (writers), or
/// new commands on the connection (dry runs, which only read).
enum Session<'a> {
    Locked(Box<Lock>),
    Unlocked(&'a Remote),
}

impl Session<'_> {
    /// Runs a read-only script and returns its stdout.
    async fn exchange(&mut self, script: &str, limit: Duration) -> Result<Vec<u8>, String> {
        match self {
            Session::Locked(lock) => lock.exchange(script.as_bytes(), limit).await,
            Session::Unlocked(remote) => {
                let out = remote.run(script.as_bytes()).await?;
                if out.status != 0 {
                    return Err(format!("a read-only script failed (exit {})", out.status));
                }
                Ok(out.stdout)
            }
        }
    }

    async fn release(self) {
        if let Session::Locked(lock) = self {
            lock.release().await;
        }
    }
}

/// Reads the folders on the way to the paths of resources that left the repo (those the
/// probe did not read), in a second command: only when something is to be pruned.
async fn read_prune_dirs(
    session: &mut Session<'_>,
    dirs: &[String],
    limit: Duration,
) -> Result<std::collections::BTreeMap<String, records::DirState>, String> {
    let mut script = format!("printf 'H\\tbegin\\t{}\\n'\n", records::PROTOCOL);
    probe::dirs_probe(&mut script, dirs);
    script.push_str("printf 'H\\tdone\\n'\n");
    if let Session::Unlocked(_) = session {
        // A fresh shell: it needs the library.
        script = format!("{}{script}", records::LIB);
    }
    let out = session.exchange(&script, limit).await?;
    let records = records::parse_records(&String::from_utf8_lossy(&out), 0, dirs.len(), &[])
        .map_err(|e| e.to_string())?;
    Ok(records.dir_states(dirs))
}

fn progress_bar(enabled: bool, n: usize) -> Option<indicatif::ProgressBar> {
    if !enabled || n == 0 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} hosts {wide_msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

type HostError = (Option<HostPlan>, String);

/// One host's share of a run.
struct Job<'a> {
    repo: &'a Repo,
    host: &'a Host,
    desired: &'a DesiredHost,
    opts: &'a ConvergeOptions,
    run_id: &'a str,
    commit: Option<&'a str>,
    /// The run's bound on hosts worked on at once.
    parallel: &'a Semaphore,
    /// Where a job that ended cleanly leaves its connection for the cluster phase.
    parked: &'a Parked,
}

impl<'a> Job<'a> {
    /// Converges the host; `gate` is its cluster's coordinator when it is a member, `permit`
    /// its place among the hosts worked on at once (given back while it waits for its turn).
    async fn run(
        &self,
        planned: Option<HostPlan>,
        gate: Option<rollout::MemberGate>,
        permit: Option<tokio::sync::SemaphorePermit<'a>>,
    ) -> Result<HostRun, HostError> {
        let remote = Remote::connect(self.host, &self.opts.remote)
            .await
            .map_err(|e| (None, e.to_string()))?;
        let result = match self.probe(&remote).await {
            Ok((session, records)) => {
                self.plan_apply(session, records, planned, gate, permit)
                    .await
            }
            Err(e) => Err((None, e)),
        };
        match &result {
            Ok(run) if run.error.is_none() => self.parked.park(&self.host.name, remote),
            _ => remote.close().await,
        }
        result
    }

    /// Reads the host. Writers take the host lock and probe under it in the same command; a
    /// dry run only reads, without the lock.
    async fn probe<'r>(&self, remote: &'r Remote) -> Result<(Session<'r>, HostRecords), String> {
        let (host, opts) = (self.host, self.opts);
        let t = Instant::now();
        if opts.dry_run {
            let records = probe_unlocked(remote, self.desired, &host.state_dir).await?;
            tracing::debug!(host = %host.name, ms = t.elapsed().as_millis() as u64, "probed");
            return Ok((Session::Unlocked(remote), records));
        }
        let script = probe::probe_script(self.desired, &host.state_dir);
        let (lock, stdout) = remote
            .lock_and_run(
                &host.state_dir,
                opts.lock_timeout,
                script.as_bytes(),
                opts.remote.command_timeout,
            )
            .await?;
        tracing::debug!(host = %host.name, ms = t.elapsed().as_millis() as u64, bytes = script.len(), "probed under the lock");
        match parse_probe(&stdout, self.desired) {
            Ok(records) => Ok((Session::Locked(Box::new(lock)), records)),
            Err(e) => {
                lock.release().await;
                Err(e)
            }
        }
    }

    async fn plan_apply(
        &self,
        mut session: Session<'_>,
        records: HostRecords,
        planned: Option<HostPlan>,
        gate: Option<rollout::MemberGate>,
        permit: Option<tokio::sync::SemaphorePermit<'a>>,
    ) -> Result<HostRun, HostError> {
        let result = self.plan(&mut session, &records, planned).await;
        let (plan, previous) = match result {
            Ok(p) => p,
            Err(e) => {
                session.release().await;
                return Err((None, e));
            }
        };
        let mut run = HostRun {
            host: self.host.name.clone(),
            plan: None,
            outcome: None,
            error: None,
            duration: Duration::ZERO,
        };
        let refusal = plan.refusal().or_else(|| {
            (!self.opts.allow_mass_prune)
                .then(|| plan::mass_prune(&previous, &plan))
                .flatten()
        });
        if let Some(why) = refusal {
            run.error = Some(format!("{why}; nothing was changed on this host"));
        }
        let lock = match session {
            Session::Locked(lock) if run.error.is_none() && plan.has_changes() => *lock,
            other => {
                other.release().await;
                run.plan = Some(plan);
                return Ok(run);
            }
        };
        let Some(gate) = gate else {
            return self.apply(lock, plan, &previous, run).await;
        };
        // A cluster member waits for its turn (holding its lock, not its place among the
        // hosts worked on at once: the members before it need theirs).
        let impact = rollout::impact(&plan, gate.cluster());
        let waits = impact != rollout::Impact::None;
        if waits {
            drop(permit);
        }
        let turn = gate.admit(impact).await;
        let _permit = match waits {
            true => self.parallel.acquire().await.ok(),
            false => None,
        };
        match turn {
            Ok(turn) => {
                let result = self.apply(lock, plan, &previous, run).await;
                turn.finished(
                    result
                        .as_ref()
                        .is_ok_and(|r| r.status(false) != crate::report::HostStatus::Failed),
                );
                result
            }
            Err(why) => {
                lock.release().await;
                run.error = Some(format!("{why}; nothing was changed on this host"));
                run.plan = Some(plan);
                Ok(run)
            }
        }
    }

    /// Reads what planning needs besides the probe (the folders of what is to be pruned, the
    /// old contents of changed files) and plans the host.
    async fn plan(
        &self,
        session: &mut Session<'_>,
        records: &HostRecords,
        planned: Option<HostPlan>,
    ) -> Result<(HostPlan, HostState), String> {
        let (desired, opts) = (self.desired, self.opts);
        let previous = HostState::from_probe(records.facts.get("state").map(String::as_str))
            .map_err(|e| e.to_string())?;
        let mut dirs = records.dir_states(&probe::host_dirs(desired));
        let extra = plan::prune_dirs(desired, &previous);
        if !extra.is_empty() {
            dirs.extend(read_prune_dirs(session, &extra, opts.remote.command_timeout).await?);
        }
        let cx = PlanCx {
            facts: records.facts.clone(),
            now: time::OffsetDateTime::now_utc().unix_timestamp(),
            force_reissue: opts.force_reissue,
            prune_users: opts.prune_users,
            dirs,
        };
        let fresh = plan::plan_host(desired, records, &previous, &cx);
        let mut plan = match planned {
            // A reviewed plan: its steps, with contents from the (identical) rendering.
            Some(mut p) => {
                // Where the host still is as reviewed, the script compares text; elsewhere
                // it compares the reviewed hash, and refuses.
                for r in &mut p.resources {
                    r.actual_text = fresh
                        .resources
                        .iter()
                        .find(|f| f.index == r.index && f.actual_sha256 == r.actual_sha256)
                        .and_then(|f| f.actual_text.clone());
                }
                // Whose hands write each path is decided again, from what the host is now.
                for (r, f) in p.resources.iter_mut().zip(&fresh.resources) {
                    if f.action == Action::Error {
                        r.action = Action::Error;
                        r.error = f.error.clone();
                    }
                }
                p.contents = fresh.contents;
                p.next_state = fresh.next_state;
                p.domains = fresh.domains;
                p
            }
            None => fresh,
        };
        plan.next_state.commit = self.commit.map(str::to_string);
        if opts.diffs {
            plan::masked_diffs(&mut plan, &previous);
            fill_diffs(session, &mut plan, opts.remote.command_timeout).await;
        }
        Ok((plan, previous))
    }

    async fn apply(
        &self,
        lock: Lock,
        mut plan: HostPlan,
        previous: &HostState,
        mut run: HostRun,
    ) -> Result<HostRun, HostError> {
        let (host, desired) = (self.host, self.desired);
        if let Err(e) = apply::issue_certificates(&mut plan, desired, &RepoIssuer::new(self.repo)) {
            lock.release().await;
            return Err((Some(plan), e.to_string()));
        }
        let script =
            match apply::apply_script(&plan, desired, previous, &host.state_dir, self.run_id) {
                Ok(s) => s,
                Err(e) => {
                    lock.release().await;
                    return Err((Some(plan), e.to_string()));
                }
            };
        let t = Instant::now();
        let out = match lock
            .finish(script.as_bytes(), self.opts.remote.command_timeout)
            .await
        {
            Ok(o) => o,
            Err(e) => return Err((Some(plan), e)),
        };
        tracing::debug!(host = %host.name, ms = t.elapsed().as_millis() as u64, status = out.status, "applied");
        let outcome = apply::parse_outcome(&String::from_utf8_lossy(&out.stdout), &plan);
        let step_failed = outcome.other_failure.is_some()
            || outcome
                .resources
                .iter()
                .flatten()
                .any(|o| matches!(o, apply::Outcome::Failed(_)));
        if !outcome.complete && !step_failed {
            run.error = Some(format!(
                "the apply script stopped early (exit {}): {}",
                out.status,
                crate::secrets::redact(String::from_utf8_lossy(&out.stderr).trim())
            ));
        }
        run.plan = Some(plan);
        run.outcome = Some(outcome);
        Ok(run)
    }
}

/// Largest old file fetched to show a diff.
const MAX_DIFF_BYTES: u64 = 512 * 1024;

/// Fetches the old content of changed files that may be shown (one extra read, only when
/// something changed) and fills in the unified diffs. Content from a secret is never fetched,
/// old (the host state says it was) or new. The old content is read as the user whose hands
/// write the path (see [`crate::plan::chain`]), never through a symlink, and shown only when it
/// is exactly what the probe hashed.
async fn fill_diffs(session: &mut Session<'_>, plan: &mut HostPlan, limit: Duration) {
    let mut wanted: Vec<(String, String)> = Vec::new();
    for r in &plan.resources {
        if !matches!(r.action, Action::Create | Action::Update | Action::Drift) {
            continue;
        }
        for d in &r.diffs {
            if let Some(old) = &d.old_sha256
                && !d.new.sensitive
                && !d.old_sensitive
                && !wanted.iter().any(|(p, _)| p == &d.path)
            {
                wanted.push((d.path.clone(), old.clone()));
            }
        }
    }
    let mut old: std::collections::BTreeMap<String, String> = Default::default();
    if !wanted.is_empty() {
        let mut s = String::new();
        for (i, (p, _)) in wanted.iter().enumerate() {
            let q = crate::shell::quote(p);
            let reader = match plan.domains.get(p) {
                Some(user) => {
                    let u = crate::shell::quote(user);
                    format!(
                        "pl_g=$(id -g -- {u}) && setpriv --reuid={u} --regid=\"$pl_g\" --init-groups -- base64 -w0 -- {q}"
                    )
                }
                None => format!("base64 -w0 -- {q}"),
            };
            s.push_str(&format!(
                "if [ -f {q} ] && [ ! -L {q} ] && [ \"$(stat -c %s -- {q})\" -le {MAX_DIFF_BYTES} ]; then printf 'C\\t{i}\\t'; {reader}; echo; fi\n"
            ));
        }
        if let Ok(out) = session.exchange(&s, limit).await {
            for line in String::from_utf8_lossy(&out).lines() {
                let f: Vec<&str> = line.splitn(3, '\t').collect();
                if f.len() == 3
                    && f[0] == "C"
                    && let (Ok(i), Ok(bytes)) = (
                        f[1].parse::<usize>(),
                        base64::engine::general_purpose::STANDARD.decode(f[2]),
                    )
                    && let Some((p, sha)) = wanted.get(i)
                    // The same bytes the probe hashed, or nothing: a file swapped since
                    // then is not shown.
                    && crate::model::desired::sha256_hex(&bytes) == *sha
                    && let Ok(text) = String::from_utf8(bytes)
                {
                    old.insert(p.clone(), text);
                }
            }
        }
    }
    let contents = plan.contents.clone();
    for r in &mut plan.resources {
        for d in &mut r.diffs {
            if d.new.sensitive || d.old_sensitive {
                continue;
            }
            let Some(new) = contents.get(&d.new.sha256).and_then(|c| c.display_text()) else {
                continue;
            };
            let before = match &d.old_sha256 {
                None => Some(""),
                Some(_) => old.get(&d.path).map(String::as_str),
            };
            if let Some(before) = before {
                d.text = Some(diff::unified(&d.path, before, new));
            }
        }
    }
}
