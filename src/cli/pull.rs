//! `plumb pull`: pull mode. Fetches one branch of the cluster repo into the controller's state
//! folder and converges it when the commit changed (or always, to repair drift); meant for cron
//! or the systemd timer it can print. One pull at a time per state folder; the commit is
//! recorded as applied only when the converge succeeded; every run is appended to a history.
//! `plumb serve` runs the same pull (`pull_once`) for each accepted push.

use super::converge::{HostArgs, prepare, print_report, runtime};
use super::{EXIT_ERROR, EXIT_OK, RepoArgs, print_diagnostics};
use crate::converge;
use crate::report::HostStatus;
use crate::rollback::Decision;
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
    /// PLUMB_NOTIFY_EVENT set to failed, rolled_back, recovered or changed (repeatable).
    #[arg(long, value_name = "PROGRAM")]
    pub notify_command: Vec<PathBuf>,
    /// Also notify runs that changed hosts.
    #[arg(long)]
    pub notify_changes: bool,
    /// Converge the branch's commit even though an earlier run of it failed its gates and
    /// marked it bad (`plumb history` lists the bad commits and why).
    #[arg(long)]
    pub retry_bad: bool,
    /// The watchdog: seconds a whole run may take (every host, then the cluster phase); a run
    /// still going then is stopped and fails, and a new commit's run is rolled back.
    #[arg(long, default_value_t = DEFAULT_RUN_TIMEOUT, value_name = "SECS")]
    pub run_timeout: u64,
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
    if a.run_timeout != DEFAULT_RUN_TIMEOUT {
        cmd.push("--run-timeout".into());
        cmd.push(a.run_timeout.to_string());
    }
    if a.hosts.local {
        cmd.push("--local".into());
    }
    // `--retry-bad` is never carried over: a timer that retries a bad commit on every tick is
    // what holding it back prevents.
    let hardening = if a.hosts.local {
        // `--local` converges this very machine as root: it writes anywhere the repo says,
        // installs packages and reloads units, so the sandbox can only be light.
        "# --local converges this machine itself (files anywhere, packages, units): only light
# sandboxing fits.
LockPersonality=yes
RestrictRealtime=yes
"
        .to_string()
    } else {
        // A controller only needs the network (SSH, git), its state folder and read access to
        // its keys.
        format!(
            "# A controller needs the network (SSH to the hosts, git), its state folder and read
# access to its keys and the repo's identity: nothing else.
NoNewPrivileges=yes
ProtectSystem=strict
{state}
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
CapabilityBoundingSet=
UMask=0077
",
            state = writable_state(&systemd_path(state_dir)?)
        )
    };
    // systemd's own bound is a backstop behind plumb's watchdog (a rollback may follow a run
    // that hit it, with a watchdog of its own).
    let backstop = a.run_timeout.max(1).saturating_mul(2).saturating_add(300);
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
TimeoutStartSec={backstop}
{hardening}
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

/// The default of `--run-timeout`, in seconds.
const DEFAULT_RUN_TIMEOUT: u64 = 3600;

/// A path as a systemd setting takes it: absolute, and with nothing systemd would read as a
/// specifier, a quote or a separator.
fn systemd_path(p: &Path) -> Result<String> {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let s = abs.display().to_string();
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '%' | '"' | '\'' | '\\'))
    {
        bail!(
            "the state folder {} has a character a systemd unit cannot hold as is; choose another --state-dir",
            crate::text::escape(&s)
        );
    }
    Ok(s)
}

/// The setting that lets the sandboxed service write its state folder: under /var/lib systemd
/// makes it (`StateDirectory=`); elsewhere it must exist before the first run.
fn writable_state(state: &str) -> String {
    match state.strip_prefix("/var/lib/").filter(|r| !r.is_empty()) {
        Some(rest) => format!("StateDirectory={rest}\nStateDirectoryMode=0700"),
        None => format!(
            "# The state folder must exist before the first run: mkdir -p {state}\nReadWritePaths={state}"
        ),
    }
}

/// `plumb pull`.
pub fn pull(a: &PullArgs) -> Result<i32> {
    if let Some(interval) = &a.print_systemd {
        let state_dir = a.source.state_dir();
        print!("{}", systemd_units(a, interval, &state_dir)?);
        return Ok(EXIT_OK);
    }
    // SAFETY: plumb pull has started no other thread yet.
    unsafe { source::bound_network_waits() };
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
    let Some(mut event) =
        crate::notify::event_for(failed, previous_failed, changed, notifier.on_change)
    else {
        return result;
    };
    let rolled_back_to = match &result {
        Ok(o) if o.marked_bad => {
            if o.rolled_back_to.is_some() {
                event = crate::notify::Event::RolledBack;
            }
            o.rolled_back_to.clone()
        }
        _ => None,
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
        rolled_back_to,
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
        crate::notify::Event::Failed => "FAILED".to_string(),
        crate::notify::Event::RolledBack => format!(
            "FAILED, rolled back to {}",
            s.rolled_back_to.as_deref().map_or("-", short)
        ),
        crate::notify::Event::Recovered => "recovered".into(),
        crate::notify::Event::Changed => "changed".into(),
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
            crate::notify::Event::Failed | crate::notify::Event::RolledBack => {
                hosts(&s.failed_hosts)
            }
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
    /// Whether a converge ran (false: the commit was applied already or is held back, or the
    /// repo is invalid).
    pub converged: bool,
    /// The exit code of the pull.
    pub exit_code: i32,
    /// Hosts changed (or, in a dry run, with changes planned).
    pub changed_hosts: Vec<String>,
    /// Hosts that failed.
    pub failed_hosts: Vec<String>,
    /// The run's id in the history (none when the commit was applied already).
    pub run_id: Option<String>,
    /// Why the commit was refused before any host was contacted, or why its run failed its
    /// gates.
    pub error: Option<String>,
    /// The fetched commit failed its gates and is now marked bad.
    pub marked_bad: bool,
    /// The last good commit re-applied after that, when there was one.
    pub rolled_back_to: Option<String>,
    /// The rollback run's id.
    pub rollback_run_id: Option<String>,
    /// The rollback run failed too.
    pub rollback_failed: bool,
    /// The fetched commit is marked bad and was not applied.
    pub held: Option<crate::rollback::BadCommit>,
}

/// The commit recorded as applied in the state folder (the last good one), if any.
fn read_applied(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let c = text.trim();
    (matches!(c.len(), 40 | 64) && c.bytes().all(|b| b.is_ascii_hexdigit())).then(|| c.to_string())
}

/// One pull, shared by `plumb pull` and `plumb serve`: takes the controller lock, fetches the
/// branch, and converges its commit when it is new (or `always`) and not marked bad. A new
/// commit that fails its gates (see [`crate::rollback`]) is marked bad and the last good commit
/// is converged again; the pull fails either way. The commit is recorded as applied only when
/// its converge succeeded; every run is appended to the history (`trigger` says why it ran).
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
        marked_bad: false,
        rolled_back_to: None,
        rollback_run_id: None,
        rollback_failed: false,
        held: None,
    };
    let applied_file = state_dir.join("last-applied");
    let applied = read_applied(&applied_file);
    let bad_commits = crate::rollback::BadCommits::new(&state_dir);
    let decision = if dry_run {
        // A dry run changes nothing, so it shows any commit, bad or applied, and never rolls
        // back.
        Decision::Run { new: false }
    } else {
        let bad = bad_commits.get(&fetched.commit)?;
        crate::rollback::decide(
            &fetched.commit,
            applied.as_deref(),
            bad,
            always,
            a.retry_bad,
        )
    };
    let shown = |c: &str, s: &str| format!("{} ({})", short(c), crate::text::escape(s));
    let (target, new) = match decision {
        Decision::AlreadyApplied => {
            eprintln!(
                "{} is at {}, already applied; nothing to do (`plumb pull --always` converges anyway)",
                display_url(&a.url),
                shown(&fetched.commit, &fetched.summary)
            );
            return Ok(outcome);
        }
        Decision::Held { bad, repair } => {
            eprintln!(
                "{} is at {}, which failed its gates in run {} ({}) and is held back: not applied again until a newer commit arrives (`--retry-bad` tries it again)",
                display_url(&a.url),
                shown(&fetched.commit, &fetched.summary),
                crate::text::escape(&bad.run_id),
                crate::text::escape(&bad.reason)
            );
            outcome.held = Some(bad);
            let Some(good) = repair else {
                return Ok(outcome);
            };
            let target = source::checkout_commit(&checkout, &good)?;
            eprintln!(
                "converging the last good commit {} instead (drift repair)",
                shown(&target.commit, &target.summary)
            );
            (target, false)
        }
        Decision::Run { new } => {
            eprintln!(
                "{} is at {}; converging",
                display_url(&a.url),
                shown(&fetched.commit, &fetched.summary)
            );
            (fetched.clone(), new)
        }
    };
    let ran = run_commit(a, &state_dir, &checkout, &target, dry_run, trigger, None)?;
    outcome.commit = target.commit.clone();
    outcome.summary = target.summary.clone();
    outcome.converged = ran.converged;
    outcome.exit_code = ran.record.exit_code;
    outcome.changed_hosts = ran.record.changed_hosts.clone();
    outcome.failed_hosts = ran.record.failed_hosts.clone();
    outcome.run_id = Some(ran.record.id.clone());
    outcome.error = ran.record.error.clone();
    let history = crate::history::History::new(&state_dir);
    let gate = ran.gate_failure.clone().filter(|_| new && !dry_run);
    let Some(why) = gate else {
        if !dry_run && ran.record.exit_code != EXIT_ERROR {
            crate::secrets::write_atomic(&applied_file, format!("{}\n", target.commit).as_bytes())
                .with_context(|| format!("writing {}", applied_file.display()))?;
            if a.retry_bad && bad_commits.unmark(&target.commit)? {
                eprintln!(
                    "{} passed its gates this time: no longer marked bad",
                    short(&target.commit)
                );
            }
        }
        history.append(&ran.record, ran.report_json.as_deref())?;
        return Ok(outcome);
    };

    // The new commit failed its gates: mark it bad, then converge the last good one again.
    let good = applied.filter(|g| *g != target.commit);
    let mut record = ran.record;
    record.marked_bad = true;
    record.rolled_back_to = good.clone();
    let base = format!("commit {} failed its gates: {why}", short(&target.commit));
    record.error = Some(match &good {
        Some(g) => format!("{base}; rolling back to {}", short(g)),
        None => format!(
            "{base}; nothing to roll back to (no commit was applied before by this controller)"
        ),
    });
    record.exit_code = EXIT_ERROR;
    bad_commits.mark(crate::rollback::BadCommit {
        commit: target.commit.clone(),
        summary: target.summary.clone(),
        marked_at: record.started_at,
        run_id: record.id.clone(),
        reason: why.clone(),
        rolled_back_to: good.clone(),
    })?;
    history.append(&record, ran.report_json.as_deref())?;
    outcome.exit_code = EXIT_ERROR;
    outcome.marked_bad = true;
    outcome.error = record.error.clone();
    // What the live outcome says once the rollback ran (or could not).
    let base = |what: String| format!("{base}; {what}");
    eprintln!(
        "FAILED: {}; marked bad: not applied again until a newer commit arrives (`--retry-bad` tries it again)",
        record.error.as_deref().unwrap_or_default()
    );
    let Some(good) = good else {
        return Ok(outcome);
    };
    outcome.rolled_back_to = Some(good.clone());
    let rollback = source::checkout_commit(&checkout, &good).inspect(|t| {
        eprintln!(
            "rolling back: converging the last good commit {}",
            shown(&t.commit, &t.summary)
        );
    });
    let back = match rollback {
        Ok(t) => run_commit(
            a,
            &state_dir,
            &checkout,
            &t,
            false,
            "rollback",
            Some(&target.commit),
        ),
        Err(e) => Err(e.into()),
    };
    match back {
        Ok(back) => {
            outcome.rollback_run_id = Some(back.record.id.clone());
            for h in &back.record.changed_hosts {
                if !outcome.changed_hosts.contains(h) {
                    outcome.changed_hosts.push(h.clone());
                }
            }
            if back.record.exit_code == EXIT_ERROR {
                // Reported, never retried here: a rollback that fails does not start another.
                // The next run (a push, or the interval's drift repair of the last good commit)
                // tries again.
                outcome.rollback_failed = true;
                for h in &back.record.failed_hosts {
                    if !outcome.failed_hosts.contains(h) {
                        outcome.failed_hosts.push(h.clone());
                    }
                }
                outcome.error = Some(base(format!(
                    "the rollback to {} failed too (run {}): {}",
                    short(&good),
                    back.record.id,
                    back.record.error.clone().unwrap_or_else(|| format!(
                        "failed hosts: {}",
                        back.record.failed_hosts.join(", ")
                    ))
                )));
                eprintln!("FAILED: the rollback to {} failed too", short(&good));
            } else {
                outcome.error = Some(base(format!(
                    "rolled back to {} (run {})",
                    short(&good),
                    back.record.id
                )));
                eprintln!(
                    "rolled back to {}; this pull still FAILED (a rollback is never a success)",
                    short(&good)
                );
            }
            history.append(&back.record, back.report_json.as_deref())?;
        }
        Err(e) => {
            outcome.rollback_failed = true;
            let message = crate::secrets::redact(&format!("{e:#}"));
            outcome.error = Some(base(format!(
                "the rollback to {} could not start: {message}",
                short(&good)
            )));
            eprintln!(
                "FAILED: the rollback to {} could not start: {message}",
                short(&good)
            );
        }
    }
    Ok(outcome)
}

/// Reads the certificates of `targets` (none: forgets the last reading) and keeps the report in
/// the state folder for the status page. Bounded; a failure is logged, never fatal to the run.
fn keep_certificates(
    rt: &tokio::runtime::Runtime,
    state_dir: &Path,
    targets: Option<Vec<(crate::model::inventory::Host, crate::kinds::DesiredHost)>>,
    hosts: &HostArgs,
) {
    let path = state_dir.join(crate::serve::CERTS_FILE);
    let Some(targets) = targets else {
        let _ = std::fs::remove_file(&path);
        return;
    };
    let opts = hosts.options(true);
    let limit = opts.remote.connect_timeout + opts.remote.command_timeout;
    match rt.block_on(async {
        tokio::time::timeout(limit, converge::read_certificates(targets, &opts)).await
    }) {
        Ok(report) => {
            if let Err(e) = crate::secrets::write_atomic(&path, report.to_json().as_bytes()) {
                tracing::warn!(path = %path.display(), error = %e, "keeping the certificate reading");
            }
        }
        Err(_) => tracing::warn!("reading the certificates after the run took too long; skipped"),
    }
}

/// One converge of a checked-out commit, not yet in the history.
struct CommitRun {
    /// The history line of the run.
    record: crate::history::RunRecord,
    /// Its full report.
    report_json: Option<String>,
    /// Whether a converge ran.
    converged: bool,
    /// Why it failed its gates, if it did.
    gate_failure: Option<String>,
}

/// Converges `target` (checked out at `checkout`): refuses it when signatures are required and
/// it is not signed by an allowed key, refuses a repo that does not load, and makes the
/// history line of the run. `rollback_of` names the bad commit a rollback run replaces.
fn run_commit(
    a: &SourceArgs,
    state_dir: &Path,
    checkout: &Path,
    target: &source::Fetched,
    dry_run: bool,
    trigger: &str,
    rollback_of: Option<&str>,
) -> Result<CommitRun> {
    let started = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut record = crate::history::RunRecord {
        id: converge::new_run_id(),
        started_at: started,
        commit: target.commit.clone(),
        summary: target.summary.clone(),
        trigger: trigger.to_string(),
        dry_run,
        rollback_of: rollback_of.map(str::to_string),
        ..Default::default()
    };
    if a.require_signed {
        let allowed = a.allowed_signers.clone().unwrap_or_default();
        match source::signed::verify_commit(checkout, &target.commit, &allowed, state_dir) {
            Ok(signer) => eprintln!(
                "commit {} is signed by {} (allowed by {})",
                short(&target.commit),
                crate::text::escape(&signer),
                allowed.display()
            ),
            Err(e) => {
                let message = format!("{e}; nothing was contacted");
                eprintln!("refused: {message}");
                record.exit_code = EXIT_ERROR;
                record.error = Some(message);
                return Ok(CommitRun {
                    record,
                    report_json: None,
                    converged: false,
                    gate_failure: None,
                });
            }
        }
    }
    let repo_args = RepoArgs {
        repo: checkout.to_path_buf(),
        inventory: a.inventory.clone(),
        age_identity: a.age_identity.clone(),
        secret_command: a.secret_command.clone(),
    };
    let t0 = Instant::now();
    let mut report_json = None;
    let mut converged = false;
    let mut gate_failure = None;
    match prepare(&repo_args, a.hosts.limit.as_deref())? {
        Err(ds) => {
            print_diagnostics(&ds);
            eprintln!(
                "commit {} is not a valid cluster repo; nothing was contacted, and it is not recorded as applied",
                short(&target.commit)
            );
            record.exit_code = EXIT_ERROR;
            record.error = Some(format!(
                "commit {} is not a valid cluster repo; nothing was contacted",
                short(&target.commit)
            ));
        }
        Ok((repo, targets)) => {
            let mut opts = a.hosts.options(dry_run);
            opts.run_timeout = Some(Duration::from_secs(a.run_timeout.max(1)));
            // The certificates are read again after the run (for the status page) only where
            // there are any.
            let cert_targets =
                (!dry_run && converge::has_certificates(&targets)).then(|| targets.clone());
            let rt = runtime()?;
            let report = rt.block_on(converge::converge(
                repo,
                targets,
                &opts,
                Some(target.commit.clone()),
            ));
            keep_certificates(&rt, state_dir, cert_targets, &a.hosts);
            print_report(&report, a.hosts.output);
            let s = report.summary();
            converged = true;
            record.id = report.run_id.clone();
            report_json = Some(report.to_json());
            for h in &report.hosts {
                match h.status(report.dry_run) {
                    HostStatus::Changed => record.changed_hosts.push(h.host.clone()),
                    HostStatus::Failed => record.failed_hosts.push(h.host.clone()),
                    HostStatus::Unchanged | HostStatus::Drift => {}
                }
            }
            record.exit_code = report.exit_code();
            (record.hosts, record.changed, record.failed) = (s.hosts, s.changed, s.failed);
            if report.timed_out {
                record.error = Some(converge::run_timeout_message(Duration::from_secs(
                    a.run_timeout.max(1),
                )));
            }
            gate_failure = crate::rollback::gate_failure(&report);
        }
    }
    record.duration_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
    record.error = record.error.map(|e| crate::secrets::redact(&e));
    Ok(CommitRun {
        record,
        report_json,
        converged,
        gate_failure,
    })
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
