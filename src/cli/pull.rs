//! `plumb pull`: pull mode. Fetches one branch of the cluster repo into the controller's state
//! folder and converges it when the commit changed (or always, to repair drift); meant for cron
//! or the systemd timer it can print. One pull at a time per state folder; the commit is
//! recorded as applied only when the converge succeeded; every run is appended to a history.
//! `plumb serve` runs the same pull (`pull_once`) for each accepted push.

use super::converge::{HostArgs, prepare, print_report, runtime};
use super::{EXIT_ERROR, EXIT_OK, RepoArgs, print_diagnostics};
use crate::converge;
use crate::report::HostStatus;
use crate::source::{self, display_url};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the cluster repo comes from and how to converge it: shared by `plumb pull` and
/// `plumb serve`.
#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// Git URL of the cluster repo: https://, ssh:// (ssh-agent; host key checked against
    /// --git-known-hosts), file:// or a local path.
    pub url: String,
    /// Branch to follow.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Controller state: the checkout, the last applied commit, the run history, the lock.
    /// Default: /var/lib/plumb-controller as root, ~/.local/state/plumb otherwise.
    #[arg(long, value_name = "DIR", env = "PLUMB_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// known_hosts for SSH git remotes (default ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub git_known_hosts: Option<PathBuf>,
    /// Inventory overlay merged over the repo's inventory.
    #[arg(long, value_name = "FILE", env = "PLUMB_INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// age identity that decrypts the repo's secrets.
    #[arg(long, value_name = "FILE", env = "PLUMB_AGE_IDENTITY")]
    pub age_identity: Option<PathBuf>,
    /// Host options.
    #[command(flatten)]
    pub hosts: HostArgs,
}

impl SourceArgs {
    /// The controller state folder: `--state-dir`, or the default for this user.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(default_state_dir)
    }

    fn known_hosts(&self) -> PathBuf {
        self.git_known_hosts.clone().unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".ssh/known_hosts")
        })
    }
}

/// `plumb pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// The repo and how to converge it.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Fetch and show the plan; change nothing and record nothing as applied.
    #[arg(long)]
    pub dry_run: bool,
    /// Converge even if this commit was applied already (repairs drift).
    #[arg(long)]
    pub always: bool,
    /// Print a systemd service and timer that run this same pull every INTERVAL (a systemd
    /// time span such as 5min), and exit.
    #[arg(long, value_name = "INTERVAL")]
    pub print_systemd: Option<String>,
}

pub(super) fn default_state_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/var/lib/plumb-controller")
    } else {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".local/state/plumb")
    }
}

/// The controller lock: held for the whole pull, released when the file closes (also when
/// plumb dies).
struct ControllerLock {
    _file: std::fs::File,
}

fn lock(state_dir: &Path, wait: Duration) -> Result<ControllerLock> {
    let path = state_dir.join("pull.lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: the descriptor is open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            let _ = file.set_len(0);
            let _ = writeln!(file, "{}", std::process::id());
            return Ok(ControllerLock { _file: file });
        }
        if Instant::now() >= deadline {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another plumb pull (pid {}) holds {}; waited {}s. Try again when it has finished",
                holder.trim(),
                path.display(),
                wait.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The systemd units that run this pull on a timer.
fn systemd_units(p: &PullArgs, interval: &str, state_dir: &Path) -> Result<String> {
    let a = &p.source;
    let exe = std::env::current_exe().context("locating the plumb binary")?;
    let q = crate::shell::quote;
    let mut cmd = vec![
        q(&exe.display().to_string()),
        "pull".into(),
        q(&a.url),
        "--branch".into(),
        q(&a.branch),
        "--state-dir".into(),
        q(&state_dir.display().to_string()),
    ];
    for (flag, value) in [
        ("--inventory", &a.inventory),
        ("--age-identity", &a.age_identity),
        ("--git-known-hosts", &a.git_known_hosts),
    ] {
        if let Some(v) = value {
            let abs = std::path::absolute(v).unwrap_or_else(|_| v.clone());
            cmd.push(flag.into());
            cmd.push(q(&abs.display().to_string()));
        }
    }
    if let Some(l) = &a.hosts.limit {
        cmd.push("--limit".into());
        cmd.push(q(l));
    }
    if p.always {
        cmd.push("--always".into());
    }
    Ok(format!(
        "# /etc/systemd/system/plumb-pull.service
[Unit]
Description=plumb pull: converge the fleet to {url} ({branch})
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
# Exit 2 means changes were applied: a success.
SuccessExitStatus=2
ExecStart={cmd}

# /etc/systemd/system/plumb-pull.timer
[Unit]
Description=Run plumb pull every {interval}

[Timer]
OnBootSec=2min
OnUnitActiveSec={interval}
RandomizedDelaySec=30s

[Install]
WantedBy=timers.target
",
        url = display_url(&a.url),
        branch = a.branch,
        cmd = cmd.join(" "),
    ))
}

/// `plumb pull`.
pub fn pull(a: &PullArgs) -> Result<i32> {
    if let Some(interval) = &a.print_systemd {
        let state_dir = a.source.state_dir();
        print!("{}", systemd_units(a, interval, &state_dir)?);
        return Ok(EXIT_OK);
    }
    Ok(pull_once(&a.source, a.dry_run, a.always, "pull")?.exit_code)
}

/// What one pull did.
#[derive(Debug, Clone)]
pub(super) struct PullOutcome {
    /// The fetched commit.
    pub commit: String,
    /// Its summary line.
    pub summary: String,
    /// Whether a converge ran (false: the commit was applied already, or the repo is invalid).
    pub converged: bool,
    /// The exit code of the pull.
    pub exit_code: i32,
    /// Hosts changed (or, in a dry run, with changes planned).
    pub changed_hosts: Vec<String>,
    /// Hosts that failed.
    pub failed_hosts: Vec<String>,
    /// The run's id in the history (none when the commit was applied already).
    pub run_id: Option<String>,
}

/// One pull, shared by `plumb pull` and `plumb serve`: takes the controller lock, fetches the
/// branch, converges it when its commit is new (or `always`), records the commit as applied
/// when the converge succeeded, and appends the run to the history (`trigger` says why it ran).
pub(super) fn pull_once(
    a: &SourceArgs,
    dry_run: bool,
    always: bool,
    trigger: &str,
) -> Result<PullOutcome> {
    let state_dir = a.state_dir();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let _lock = lock(&state_dir, Duration::from_secs(a.hosts.lock_timeout))?;
    let checkout = state_dir.join("checkout");
    let fetched = source::fetch(&a.url, &a.branch, &checkout, &a.known_hosts())?;
    let mut outcome = PullOutcome {
        commit: fetched.commit.clone(),
        summary: fetched.summary.clone(),
        converged: false,
        exit_code: EXIT_OK,
        changed_hosts: Vec::new(),
        failed_hosts: Vec::new(),
        run_id: None,
    };
    let applied_file = state_dir.join("last-applied");
    let applied = std::fs::read_to_string(&applied_file).unwrap_or_default();
    if applied.trim() == fetched.commit && !always && !dry_run {
        eprintln!(
            "{} is at {} ({}), already applied; nothing to do (`plumb pull --always` converges anyway)",
            display_url(&a.url),
            short(&fetched.commit),
            crate::text::escape(&fetched.summary)
        );
        return Ok(outcome);
    }
    eprintln!(
        "{} is at {} ({}); converging",
        display_url(&a.url),
        short(&fetched.commit),
        crate::text::escape(&fetched.summary)
    );
    let repo_args = RepoArgs {
        repo: checkout,
        inventory: a.inventory.clone(),
        age_identity: a.age_identity.clone(),
    };
    let started = time::OffsetDateTime::now_utc().unix_timestamp();
    let t0 = Instant::now();
    let mut run_id = converge::new_run_id();
    let mut report_json = None;
    let mut error = None;
    let (code, hosts, changed, failed) = match prepare(&repo_args, a.hosts.limit.as_deref())? {
        Err(ds) => {
            print_diagnostics(&ds);
            eprintln!(
                "commit {} is not a valid cluster repo; nothing was contacted, and it is not recorded as applied",
                short(&fetched.commit)
            );
            error = Some(format!(
                "commit {} is not a valid cluster repo; nothing was contacted",
                short(&fetched.commit)
            ));
            (EXIT_ERROR, 0, 0, 0)
        }
        Ok((repo, targets)) => {
            let opts = a.hosts.options(dry_run);
            let report = runtime()?.block_on(converge::converge(
                repo,
                targets,
                &opts,
                Some(fetched.commit.clone()),
            ));
            print_report(&report, a.hosts.output);
            let s = report.summary();
            outcome.converged = true;
            run_id = report.run_id.clone();
            report_json = Some(report.to_json());
            for h in &report.hosts {
                match h.status(report.dry_run) {
                    HostStatus::Changed => outcome.changed_hosts.push(h.host.clone()),
                    HostStatus::Failed => outcome.failed_hosts.push(h.host.clone()),
                    HostStatus::Unchanged | HostStatus::Drift => {}
                }
            }
            (report.exit_code(), s.hosts, s.changed, s.failed)
        }
    };
    outcome.exit_code = code;
    if !dry_run && code != EXIT_ERROR {
        crate::secrets::write_atomic(&applied_file, format!("{}\n", fetched.commit).as_bytes())
            .with_context(|| format!("writing {}", applied_file.display()))?;
    }
    let record = crate::history::RunRecord {
        id: run_id.clone(),
        started_at: started,
        duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
        commit: fetched.commit.clone(),
        summary: fetched.summary.clone(),
        trigger: trigger.to_string(),
        dry_run,
        exit_code: code,
        hosts,
        changed,
        failed,
        changed_hosts: outcome.changed_hosts.clone(),
        failed_hosts: outcome.failed_hosts.clone(),
        error,
    };
    crate::history::History::new(&state_dir).append(&record, report_json.as_deref())?;
    outcome.run_id = Some(run_id);
    Ok(outcome)
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
