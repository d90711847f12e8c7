//! Converge: the async edge that drives every host through probe → plan → apply, in parallel
//! with a bound, one SSH connection per host. A failing or unreachable host fails alone: its
//! error is recorded and the other hosts carry on.

pub mod remote;

use crate::apply::{self, Issuer};
use crate::kinds::Spec;
use crate::kinds::certificate::CertificateState;
use crate::load::Repo;
use crate::model::desired::DesiredHost;
use crate::model::inventory::Host;
use crate::plan::{self, Action, HostPlan, PlanCx, diff};
use crate::probe;
use crate::probe::HostRecords;
use crate::report::{HostRun, RunReport};
use crate::state::HostState;
use base64::Engine as _;
use remote::{Lock, Remote, RemoteOptions};
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
        }
    }
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
        let issued = crate::pki::issue(&String::from_utf8_lossy(cert.bytes()), key.expose(), want)
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
    let run_id = new_run_id();
    let sem = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let bar = progress_bar(opts.progress, targets.len());
    let mut tasks = Vec::with_capacity(targets.len());
    for (host, desired, planned) in targets {
        let sem = sem.clone();
        let repo = repo.clone();
        let opts = opts.clone();
        let run_id = run_id.clone();
        let commit = commit.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let t0 = Instant::now();
            let name = host.name.clone();
            let job = Job {
                repo: &repo,
                host: &host,
                desired: &desired,
                opts: &opts,
                run_id: &run_id,
                commit: commit.as_deref(),
            };
            let mut run = match job.run(planned).await {
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
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    RunReport {
        run_id,
        commit,
        dry_run: opts.dry_run,
        hosts,
        duration: started.elapsed(),
    }
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
    let remote = Remote::connect(host, opts).await?;
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
    let records = probe::parse_records(&String::from_utf8_lossy(&out.stdout));
    if out.status != 0 || !records.complete() {
        return Err(format!(
            "the probe did not complete (exit {}): {}",
            out.status,
            crate::secrets::redact(String::from_utf8_lossy(&out.stderr).trim())
        ));
    }
    Ok(records)
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
}

impl Job<'_> {
    async fn run(&self, planned: Option<HostPlan>) -> Result<HostRun, HostError> {
        let remote = Remote::connect(self.host, &self.opts.remote)
            .await
            .map_err(|e| (None, e))?;
        let result = match self.probe(&remote).await {
            Ok((lock, records)) => {
                let r = self.plan_apply(&remote, records, planned).await;
                if let Some(lock) = lock {
                    lock.release().await;
                }
                r
            }
            Err(e) => Err((None, e)),
        };
        remote.close().await;
        result
    }

    /// Reads the host. Writers take the host lock and probe under it in the same command; a
    /// dry run only reads, without the lock.
    async fn probe(&self, remote: &Remote) -> Result<(Option<Lock>, HostRecords), String> {
        let (host, opts) = (self.host, self.opts);
        let t = Instant::now();
        if opts.dry_run {
            let records = probe_unlocked(remote, self.desired, &host.state_dir).await?;
            tracing::debug!(host = %host.name, ms = t.elapsed().as_millis() as u64, "probed");
            return Ok((None, records));
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
        let records = probe::parse_records(&String::from_utf8_lossy(&stdout));
        if !records.complete() {
            lock.release().await;
            return Err("the probe did not complete: its output was cut short".into());
        }
        Ok((Some(lock), records))
    }

    async fn plan_apply(
        &self,
        remote: &Remote,
        records: HostRecords,
        planned: Option<HostPlan>,
    ) -> Result<HostRun, HostError> {
        let (host, desired, opts) = (self.host, self.desired, self.opts);
        let cx = PlanCx {
            facts: records.facts.clone(),
            now: time::OffsetDateTime::now_utc().unix_timestamp(),
            force_reissue: opts.force_reissue,
            prune_users: opts.prune_users,
        };
        let mut plan = match planned {
            // A reviewed plan: its steps, with contents from the (identical) rendering.
            Some(mut p) => {
                let fresh = plan::plan_host(desired, &records, &cx);
                // Where the host still is as reviewed, the script compares text; elsewhere
                // it compares the reviewed hash, and refuses.
                for r in &mut p.resources {
                    r.actual_text = fresh
                        .resources
                        .iter()
                        .find(|f| f.index == r.index && f.actual_sha256 == r.actual_sha256)
                        .and_then(|f| f.actual_text.clone());
                }
                p.contents = fresh.contents;
                p.next_state = fresh.next_state;
                p
            }
            None => plan::plan_host(desired, &records, &cx),
        };
        plan.next_state.commit = self.commit.map(str::to_string);
        if opts.diffs {
            fill_diffs(remote, &mut plan).await;
        }
        let mut run = HostRun {
            host: host.name.clone(),
            plan: None,
            outcome: None,
            error: None,
            duration: Duration::ZERO,
        };
        if let Some(bad) = plan.errors().next() {
            run.error = Some(format!(
                "{}/{} cannot be converged: {}; nothing was changed on this host",
                bad.kind,
                bad.name,
                bad.error.as_deref().unwrap_or("unknown error")
            ));
        }
        if run.error.is_some() {
            run.plan = Some(plan);
            return Ok(run);
        }
        if opts.dry_run || !plan.has_changes() {
            run.plan = Some(plan);
            return Ok(run);
        }
        let previous = records
            .facts
            .get("state")
            .and_then(|s| HostState::decode(s).ok())
            .unwrap_or_default();
        if let Err(e) = apply::issue_certificates(&mut plan, desired, &RepoIssuer::new(self.repo)) {
            return Err((Some(plan), e.to_string()));
        }
        let script =
            match apply::apply_script(&plan, desired, &previous, &host.state_dir, self.run_id) {
                Ok(s) => s,
                Err(e) => return Err((Some(plan), e.to_string())),
            };
        let t = Instant::now();
        let out = match remote.run(script.as_bytes()).await {
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

/// Fetches the old content of changed, non-sensitive files (one extra round trip, only when
/// something changed) and fills in the unified diffs.
async fn fill_diffs(remote: &Remote, plan: &mut HostPlan) {
    let mut wanted: Vec<String> = Vec::new();
    for r in &plan.resources {
        if !matches!(r.action, Action::Create | Action::Update | Action::Drift) {
            continue;
        }
        for d in &r.diffs {
            if !d.new.sensitive && d.old_sha256.is_some() && !wanted.contains(&d.path) {
                wanted.push(d.path.clone());
            }
        }
    }
    let mut old: std::collections::BTreeMap<String, String> = Default::default();
    if !wanted.is_empty() {
        let mut s = String::new();
        for (i, p) in wanted.iter().enumerate() {
            let q = crate::shell::quote(p);
            s.push_str(&format!(
                "if [ -f {q} ] && [ $(stat -c %s {q}) -le {MAX_DIFF_BYTES} ]; then printf 'C\\t{i}\\t'; base64 -w0 < {q}; echo; fi\n"
            ));
        }
        if let Ok(out) = remote.run(s.as_bytes()).await {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let f: Vec<&str> = line.splitn(3, '\t').collect();
                if f.len() == 3
                    && f[0] == "C"
                    && let (Ok(i), Ok(bytes)) = (
                        f[1].parse::<usize>(),
                        base64::engine::general_purpose::STANDARD.decode(f[2]),
                    )
                    && let (Some(p), Ok(text)) = (wanted.get(i), String::from_utf8(bytes))
                {
                    old.insert(p.clone(), text);
                }
            }
        }
    }
    let contents = plan.contents.clone();
    for r in &mut plan.resources {
        for d in &mut r.diffs {
            if d.new.sensitive {
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
