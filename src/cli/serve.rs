//! `plumb serve`: the webhook receiver. Listens for push webhooks (see [`crate::serve`]) and runs
//! the same pull as `plumb pull` for each accepted push: fetch the branch, converge when its
//! commit is new, record it. One run at a time; bursts coalesce; `--interval` also converges
//! periodically to repair drift.

use super::pull::{SourceArgs, pull_and_notify};
use super::{EXIT_ERROR, EXIT_OK};
use crate::serve::runner::{RunOutcome, RunRequest, Runner, Trigger};
use crate::serve::{self, HOOK_PATH, ServeConfig, webhook};
use crate::source::display_url;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;
use std::time::Duration;

/// The environment variable that may hold the webhook secret.
pub const SECRET_ENV: &str = "PLUMB_WEBHOOK_SECRET";

/// How long to wait for HTTP connections to close after a shutdown signal.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// `plumb serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The repo and how to converge it (as `plumb pull`).
    #[command(flatten)]
    pub source: SourceArgs,
    /// Address to listen on (port 0: any free port; the bound address is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// File holding the webhook secret (or set PLUMB_WEBHOOK_SECRET; never on the command
    /// line). Required: unauthenticated webhooks are never accepted.
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// File holding a token (mode 0600 or 0400) that the status page, /status, /runs/ID and
    /// /metrics then want as `Authorization: Bearer <token>`; /hooks and /healthz stay open.
    #[arg(long, value_name = "FILE")]
    pub status_token_file: Option<PathBuf>,
    /// Also converge every SECS seconds after the last run, even an applied commit (repairs
    /// drift).
    #[arg(long, value_name = "SECS")]
    pub interval: Option<u64>,
    /// Run once at start-up (catches up with pushes made while the server was down).
    #[arg(long)]
    pub run_on_start: bool,
    /// On SIGTERM/SIGINT, seconds to wait for a run in progress to finish.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub shutdown_timeout: u64,
    /// Seconds a client has, from connecting, to send its request line and headers.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub header_timeout: u64,
    /// Seconds a client has to send a webhook's body once its headers are in (408 after).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub body_timeout: u64,
    /// Connections open at once; more are closed at once (lowered to fit the open-file limit).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_connections: usize,
    /// Connections open at once from one address; more are closed at once.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub max_connections_per_ip: usize,
    /// Webhook requests a minute from one address (bursts of as many pass); more are answered
    /// 429 before their body is read. 0: no limit.
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub webhook_rate_limit: u32,
}

impl ServeArgs {
    /// The connection limits these arguments ask for, fitted to the open-file limit.
    fn limits(&self, fd_limit: u64) -> Result<serve::Limits> {
        if self.header_timeout == 0 || self.body_timeout == 0 {
            bail!("--header-timeout and --body-timeout must be at least 1 second");
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            bail!("--max-connections and --max-connections-per-ip must be at least 1");
        }
        Ok(serve::Limits {
            header_timeout: Duration::from_secs(self.header_timeout),
            body_timeout: Duration::from_secs(self.body_timeout),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
        }
        .fit_to_fd_limit(fd_limit))
    }
}

/// One run: the shared pull, its result turned into what `/status` reports.
fn run(source: &SourceArgs, notifier: &crate::notify::Notifier, request: RunRequest) -> RunOutcome {
    tracing::info!(trigger = ?request.trigger, always = request.always, "run starting");
    let trigger = match request.trigger {
        Trigger::Webhook => "webhook",
        Trigger::Interval => "interval",
        Trigger::Startup => "startup",
    };
    match pull_and_notify(source, notifier, false, request.always, trigger) {
        Ok(o) => {
            // A repo that does not load, or a commit not signed as required, is refused before
            // any host is contacted.
            let error = o.error.clone().map(|e| {
                if e.contains("not a valid cluster repo") {
                    format!("{e} (the errors are in the log)")
                } else {
                    e
                }
            });
            RunOutcome {
                commit: Some(o.commit),
                summary: Some(o.summary),
                converged: o.converged,
                exit_code: o.exit_code,
                changed_hosts: o.changed_hosts,
                failed_hosts: o.failed_hosts,
                error,
                rolled_back_to: o.rolled_back_to,
                rollback_failed: o.rollback_failed,
                held: o.held.map(|b| b.commit),
            }
        }
        Err(e) => {
            let message = crate::secrets::redact(&format!("{e:#}"));
            eprintln!("error: {}", crate::text::escape_block(&message, "  "));
            RunOutcome {
                exit_code: EXIT_ERROR,
                error: Some(message),
                ..Default::default()
            }
        }
    }
}

/// `plumb serve`.
pub fn serve(a: &ServeArgs) -> Result<i32> {
    let env = std::env::var_os(SECRET_ENV);
    let secret = webhook::load_secret(
        a.webhook_secret_file.as_deref(),
        env.as_ref().map(|v| v.as_bytes()),
    )?;
    // SAFETY: no other thread runs yet (the runtime and the run thread start below).
    unsafe { crate::source::bound_network_waits() };
    if env.is_some() {
        // SAFETY: no other thread runs yet (the runtime and the run thread start below), so
        // nothing reads the environment concurrently. Child processes (`--local` scripts) then
        // never inherit the secret.
        unsafe { std::env::remove_var(SECRET_ENV) };
    }
    let status_token = a
        .status_token_file
        .as_deref()
        .map(|f| webhook::load_secret(Some(f), None))
        .transpose()
        .context("--status-token-file")?;
    if a.interval == Some(0) {
        bail!("--interval must be at least 1 second");
    }
    let limits = a.limits(serve::conn::raise_fd_limit())?;
    if limits.max_connections < a.max_connections {
        eprintln!(
            "plumb serve: at most {} connections at once (the open-file limit allows no more; raise it with LimitNOFILE= or ulimit -n)",
            limits.max_connections
        );
    }
    let state_dir = a.source.state_dir();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;

    let notifier = a.source.notifier()?;
    let source = a.source.clone();
    let runner = Runner::start(
        move |request| run(&source, &notifier, request),
        a.interval.map(Duration::from_secs),
    )
    .context("starting the run thread")?;
    let config = ServeConfig {
        branch: a.source.branch.clone(),
        secret,
        source: display_url(&a.source.url),
        limits,
        rate_per_minute: a.webhook_rate_limit,
        state_dir: Some(state_dir.clone()),
        status_token,
    };
    let router = serve::router(config, runner.clone());

    let rt = super::converge::runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        eprintln!(
            "plumb serve: listening on http://{addr} (POST {HOOK_PATH}; GET / for the status page, /healthz, /status, /metrics), following {} branch {}",
            display_url(&a.source.url),
            a.source.branch
        );
        if a.run_on_start {
            runner.trigger(RunRequest {
                trigger: Trigger::Startup,
                always: false,
            });
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut server = tokio::spawn(serve::serve(listener, router, limits, async move {
            let _ = stop_rx.await;
        }));
        tokio::select! {
            () = serve::shutdown_signal() => {}
            ended = &mut server => {
                return match ended {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(anyhow::Error::new(e)),
                    Err(e) => Err(anyhow::anyhow!("the HTTP server task failed: {e}")),
                };
            }
        }
        eprintln!("plumb serve: stopping: no new webhooks accepted");
        let _ = stop_tx.send(());
        if tokio::time::timeout(HTTP_DRAIN, server).await.is_err() {
            eprintln!(
                "plumb serve: HTTP connections still open after {}s; closing them",
                HTTP_DRAIN.as_secs()
            );
        }
        Ok::<(), anyhow::Error>(())
    })?;
    drop(rt);

    let busy = runner.snapshot().current.is_some();
    if busy {
        eprintln!(
            "plumb serve: waiting up to {}s for the run in progress to finish",
            a.shutdown_timeout
        );
    }
    if !runner.shutdown(Duration::from_secs(a.shutdown_timeout)) {
        eprintln!(
            "plumb serve: the run in progress did not finish within {}s; exiting anyway; its commit is not recorded as applied, so the next run converges it again",
            a.shutdown_timeout
        );
        return Ok(EXIT_ERROR);
    }
    eprintln!("plumb serve: stopped");
    Ok(EXIT_OK)
}
