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
    /// Secret store options.
    #[command(flatten)]
    pub secret_command: super::SecretCommandArgs,
    /// Converge only commits signed (git's gpg.format=ssh) by a key of --allowed-signers;
    /// others are refused, reported and touch nothing.
    #[arg(long, requires = "allowed_signers")]
    pub require_signed: bool,
    /// Who may sign, in git's gpg.ssh.allowedSignersFile format (`PRINCIPAL KEYTYPE KEY` lines).
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// POST a JSON summary here when a run fails, and when one succeeds after a failure
    /// (repeatable; http://HOST[:PORT]/PATH; for https use --notify-command with curl).
    #[arg(long, value_name = "URL")]
    pub notify_url: Vec<String>,
    /// Run this program (no shell, no arguments) with the same JSON summary on stdin and
    /// PLUMB_NOTIFY_EVENT set to failed, recovered or changed (repeatable).
    #[arg(long, value_name = "PROGRAM")]
    pub notify_command: Vec<PathBuf>,
    /// Also notify runs that changed hosts.
    #[arg(long)]
    pub notify_changes: bool,
    /// Host options.
    #[command(flatten)]
    pub hosts: HostArgs,
}

impl SourceArgs {
    /// The notification targets these arguments name (URLs checked here, before any run).
    pub fn notifier(&self) -> Result<crate::notify::Notifier> {
        let urls = self
            .notify_url
            .iter()
            .map(|u| crate::notify::HttpUrl::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::notify::Notifier {
            urls,
            commands: self.notify_command.clone(),
            on_change: self.notify_changes,
        })
    }

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
        ("--secret-command", &a.secret_command.secret_command),
        ("--git-known-hosts", &a.git_known_hosts),
    ] {
        if let Some(v) = value {
            let abs = std::path::absolute(v).unwrap_or_else(|_| v.clone());
            cmd.push(flag.into());
            cmd.push(q(&abs.display().to_string()));
        }
    }
    for u in &a.notify_url {
        cmd.push("--notify-url".into());
        cmd.push(q(u));
    }
    for c in &a.notify_command {
        let abs = std::path::absolute(c).unwrap_or_else(|_| c.clone());
        cmd.push("--notify-command".into());
        cmd.push(q(&abs.display().to_string()));
    }
    if a.secret_command.secret_command.is_some() {
        cmd.push("--secret-command-timeout".into());
        cmd.push(a.secret_command.secret_command_timeout.to_string());
    }
    if a.notify_changes {
        cmd.push("--notify-changes".into());
    }
    if a.require_signed
        && let Some(f) = &a.allowed_signers
    {
        let abs = std::path::absolute(f).unwrap_or_else(|_| f.clone());
        cmd.push("--require-signed".into());
        cmd.push("--allowed-signers".into());
        cmd.push(q(&abs.display().to_string()));
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
    let notifier = a.source.notifier()?;
    Ok(pull_and_notify(&a.source, &notifier, a.dry_run, a.always, "pull")?.exit_code)
}

/// [`pull_once`], then a notification when the run failed, recovered from a failure, or (if
/// asked) changed hosts. A dry run notifies nothing.
pub(super) fn pull_and_notify(
    a: &SourceArgs,
    notifier: &crate::notify::Notifier,
    dry_run: bool,
    always: bool,
    trigger: &str,
) -> Result<PullOutcome> {
    if dry_run || notifier.is_empty() {
        return pull_once(a, dry_run, always, trigger);
    }
    let history = crate::history::History::new(&a.state_dir());
    let previous_failed = history
        .last(1)
        .ok()
        .and_then(|r| r.into_iter().next())
        .is_some_and(|r| r.result() == "failed");
    let result = pull_once(a, dry_run, always, trigger);
    let (failed, changed, skipped) = match &result {
        Ok(o) => (
            o.exit_code == EXIT_ERROR,
            !o.changed_hosts.is_empty(),
            !o.converged && o.exit_code == EXIT_OK,
        ),
        Err(_) => (true, false, false),
    };
    if skipped {
        return result;
    }
    let Some(event) =
        crate::notify::event_for(failed, previous_failed, changed, notifier.on_change)
    else {
        return result;
    };
    let mut s = crate::notify::Summary {
        event,
        text: String::new(),
        source: display_url(&a.url),
        branch: a.branch.clone(),
        run_id: None,
        commit: None,
        summary: None,
        trigger: trigger.to_string(),
        result: if failed {
            "failed"
        } else if changed {
            "changed"
        } else {
            "unchanged"
        }
        .into(),
        changed_hosts: Vec::new(),
        failed_hosts: Vec::new(),
        error: None,
    };
    match &result {
        Ok(o) => {
            s.run_id = o.run_id.clone();
            s.commit = Some(o.commit.clone());
            s.summary = Some(o.summary.clone());
            s.changed_hosts = o.changed_hosts.clone();
            s.failed_hosts = o.failed_hosts.clone();
            s.error = o.error.clone();
        }
        Err(e) => s.error = Some(crate::secrets::redact(&format!("{e:#}"))),
    }
    let what = match event {
        crate::notify::Event::Failed => "FAILED",
        crate::notify::Event::Recovered => "recovered",
        crate::notify::Event::Changed => "changed",
    };
    let hosts = |h: &[String]| {
        if h.is_empty() {
            String::new()
        } else {
            format!(" ({})", h.join(", "))
        }
    };
    s.text = format!(
        "plumb: {} {} at {}{}: {what}{}{}",
        s.source,
        s.branch,
        s.commit.as_deref().map_or("-", short),
        s.summary
            .as_deref()
            .map(|x| format!(" \"{x}\""))
            .unwrap_or_default(),
        match event {
            crate::notify::Event::Failed => hosts(&s.failed_hosts),
            _ => hosts(&s.changed_hosts),
        },
        s.error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default(),
    );
    let delivered = notifier.send(&s);
    tracing::info!(event = event.word(), delivered, "notification sent");
    result
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
    /// Why the commit was refused before any host was contacted.
    pub error: Option<String>,
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
        error: None,
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
    if a.require_signed {
        let allowed = a.allowed_signers.clone().unwrap_or_default();
        let started = time::OffsetDateTime::now_utc().unix_timestamp();
        match source::signed::verify_commit(&checkout, &fetched.commit, &allowed, &state_dir) {
            Ok(signer) => eprintln!(
                "commit {} is signed by {} (allowed by {})",
                short(&fetched.commit),
                crate::text::escape(&signer),
                allowed.display()
            ),
            Err(e) => {
                let message = format!("{e}; nothing was contacted");
                eprintln!("refused: {message}");
                let run_id = converge::new_run_id();
                let record = crate::history::RunRecord {
                    id: run_id.clone(),
                    started_at: started,
                    commit: fetched.commit.clone(),
                    summary: fetched.summary.clone(),
                    trigger: trigger.to_string(),
                    dry_run,
                    exit_code: EXIT_ERROR,
                    error: Some(message.clone()),
                    ..Default::default()
                };
                crate::history::History::new(&state_dir).append(&record, None)?;
                outcome.exit_code = EXIT_ERROR;
                outcome.run_id = Some(run_id);
                outcome.error = Some(message);
                return Ok(outcome);
            }
        }
    }
    let repo_args = RepoArgs {
        repo: checkout,
        inventory: a.inventory.clone(),
        age_identity: a.age_identity.clone(),
        secret_command: a.secret_command.clone(),
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
    outcome.error = record.error.clone();
    crate::history::History::new(&state_dir).append(&record, report_json.as_deref())?;
    outcome.run_id = Some(run_id);
    Ok(outcome)
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
