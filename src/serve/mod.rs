//! `plumb serve`: the webhook receiver. A forge (GitHub, GitLab, Gitea/Forgejo) POSTs each push
//! to [`HOOK_PATH`]; a request with a valid signature (or GitLab token) for the followed branch
//! queues a run on the [`runner::Runner`] and is answered 202 at once. One run at a time; pushes
//! during a run coalesce into one follow-up run. `/healthz`, `/status` (JSON) and `/metrics`
//! (Prometheus text) report on it.
//!
//! Webhook senders and the network are not trusted: [`conn`] bounds what a client can hold
//! (deadlines, connection caps), a body is read within its own deadline, and a delivery received
//! already is answered `duplicate` and runs nothing ([`webhook::Deliveries`]).
//!
//! This module is the HTTP side; what a run does (fetch, converge if new, record) is the
//! caller's function, given to [`runner::Runner::start`].

pub mod conn;
pub mod page;
pub mod ratelimit;
pub mod runner;
pub mod webhook;

pub use conn::Limits;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use runner::{Queued, RunRequest, Runner, Trigger};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use webhook::{Deliveries, Event, Secret};

/// The path forges POST push events to.
pub const HOOK_PATH: &str = "/hooks";

/// The largest webhook body accepted (1 MiB); larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The `outcome` labels of `plumb_webhooks_total`.
pub const WEBHOOK_OUTCOMES: [&str; 9] = [
    "accepted",
    "ignored",
    "ping",
    "duplicate",
    "unauthorized",
    "bad_request",
    "too_large",
    "timeout",
    "rate_limited",
];

/// The `result` labels of `plumb_runs_total`.
pub const RUN_RESULTS: [&str; 6] = ["skipped", "held", "unchanged", "changed", "drift", "failed"];

/// Problems running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The HTTP server failed.
    #[error("serving HTTP: {0}")]
    Http(#[from] std::io::Error),
}

/// What the server needs to know.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The branch followed: pushes to others are ignored.
    pub branch: String,
    /// The shared webhook secret.
    pub secret: Secret,
    /// The repo URL as shown in `/status` (credentials masked).
    pub source: String,
    /// Deadlines and connection caps.
    pub limits: Limits,
    /// Webhook requests a minute per client address (0: no limit).
    pub rate_per_minute: u32,
    /// The controller state folder: the run history and the applied commit, for the page.
    pub state_dir: Option<std::path::PathBuf>,
    /// When set, every endpoint but `/hooks` (authenticated by its signature) and `/healthz`
    /// wants `Authorization: Bearer <token>`.
    pub status_token: Option<Secret>,
}

struct App {
    config: ServeConfig,
    runner: Runner,
    webhooks: Mutex<BTreeMap<&'static str, u64>>,
    deliveries: Mutex<Deliveries>,
    rate: Mutex<ratelimit::RateLimit>,
}

impl App {
    fn count(&self, outcome: &'static str) {
        let mut w = self.webhooks.lock().unwrap_or_else(|e| e.into_inner());
        *w.entry(outcome).or_default() += 1;
    }

    /// Records a delivery; false for a replay.
    fn first_delivery(&self, key: [u8; 32]) -> bool {
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key)
    }

    fn forget_delivery(&self, key: &[u8; 32]) {
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(key);
    }

    fn webhooks(&self) -> BTreeMap<&'static str, u64> {
        self.webhooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The HTTP routes: `POST /hooks`, `GET /healthz`, `GET /status`, `GET /metrics`.
pub fn router(config: ServeConfig, runner: Runner) -> Router {
    let app = Arc::new(App {
        runner,
        webhooks: Mutex::new(BTreeMap::new()),
        deliveries: Mutex::new(Deliveries::new(webhook::REMEMBERED_DELIVERIES)),
        rate: Mutex::new(ratelimit::RateLimit::new(config.rate_per_minute)),
        config,
    });
    // What the page, /status and /metrics show (hosts, commits, errors; never a secret) may
    // still be more than the network should see: those routes can want a bearer token.
    let guarded = Router::new()
        .route("/status", get(status))
        .route("/", get(status_page))
        .route("/status.html", get(status_page))
        .route("/runs/{id}", get(run_page))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            require_token,
        ));
    Router::new()
        .route(HOOK_PATH, post(hook))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(guarded)
        .with_state(app)
}

/// Lets a request through when no status token is set, or when it carries
/// `Authorization: Bearer <token>` (compared in constant time); 401 otherwise.
async fn require_token(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &app.config.status_token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| webhook::same_secret(token, g)) {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "this endpoint wants Authorization: Bearer <the status token>\n".into(),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"plumb\""),
            );
            return r;
        }
    }
    next.run(request).await
}

/// Serves `router` on `listener` within `limits` (see [`conn`]) until `shutdown` completes,
/// then stops accepting and lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    conn::serve(listener, router, limits, shutdown).await;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (status, body).into_response()
}

/// Why a body could not be read.
enum BodyError {
    TooLarge,
    Timeout,
    Unreadable(String),
}

/// Reads a body of at most [`MAX_BODY_BYTES`] within `deadline`: a client that announces or
/// sends more is cut off at once, one that sends too slowly when the deadline passes.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    deadline: Duration,
) -> Result<Bytes, BodyError> {
    use http_body_util::BodyExt as _;
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    match tokio::time::timeout(deadline, limited.collect()).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(e)) => Err(BodyError::Unreadable(e.to_string())),
    }
}

async fn hook(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // For the log before the body is in: the forge's id, escaped.
    let id = webhook::DELIVERY_HEADERS
        .iter()
        .find_map(|h| lookup(h))
        .map(|v| crate::text::escape(v).into_owned())
        .unwrap_or_else(|| "-".into());
    // Before the body is read or any MAC computed: a client that keeps sending waits.
    let allowed = app
        .rate
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(peer.ip(), std::time::Instant::now());
    if let Err(wait) = allowed {
        app.count("rate_limited");
        let secs = wait.as_secs().max(1);
        tracing::warn!(%peer, delivery = %id, retry_after_secs = secs, "webhook refused: rate limit");
        let mut r = text(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many requests from this address; retry in {secs}s\n"),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let body = match read_body(&headers, body, app.config.limits.body_timeout).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            app.count("too_large");
            tracing::warn!(%peer, delivery = %id, limit = MAX_BODY_BYTES, "webhook refused: body too large");
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("payload too large (limit {MAX_BODY_BYTES} bytes)\n"),
            );
        }
        Err(BodyError::Timeout) => {
            app.count("timeout");
            let secs = app.config.limits.body_timeout.as_secs();
            tracing::warn!(%peer, delivery = %id, deadline_secs = secs, "webhook refused: body not received in time");
            return text(
                StatusCode::REQUEST_TIMEOUT,
                format!("body not received within {secs}s\n"),
            );
        }
        Err(BodyError::Unreadable(e)) => {
            app.count("bad_request");
            tracing::warn!(%peer, delivery = %id, error = %e, "webhook refused: unreadable body");
            return text(StatusCode::BAD_REQUEST, "unreadable body\n".into());
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let forge = match webhook::authenticate(&app.config.secret, &body, now, lookup) {
        Ok(f) => f,
        Err(e) => {
            app.count("unauthorized");
            // Neither the body nor any header value is logged: only why.
            tracing::warn!(%peer, delivery = %id, error = %e, "webhook refused: not authenticated");
            return text(StatusCode::UNAUTHORIZED, "unauthorized\n".into());
        }
    };
    // Only authenticated deliveries are remembered, so that nobody without the secret can
    // fill the memory or mark a delivery to come as seen.
    let delivery = webhook::delivery_id(lookup, &body);
    let id = delivery.label.clone();
    if !app.first_delivery(delivery.key) {
        app.count("duplicate");
        tracing::info!(%peer, delivery = %id, forge = forge.name(), "webhook ignored: delivery received already");
        return text(
            StatusCode::OK,
            format!("duplicate: delivery {id} was received already; nothing run\n"),
        );
    }
    let response = classify_and_run(&app, peer, &id, forge, lookup, &body);
    if !response.status().is_success() {
        // Not acted on: the forge's retry of this delivery must be.
        app.forget_delivery(&delivery.key);
    }
    response
}

/// The part of [`hook`] after authentication: what the event asks for, and the answer.
fn classify_and_run<'a>(
    app: &App,
    peer: SocketAddr,
    id: &str,
    forge: webhook::Forge,
    lookup: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
) -> Response {
    let event = webhook::event_of(forge, &lookup);
    let classified = webhook::json_payload(body, webhook::is_form(lookup("content-type")))
        .and_then(|json| webhook::classify(event, &json, &app.config.branch));
    match classified {
        Ok(Event::Ping) => {
            app.count("ping");
            tracing::info!(%peer, delivery = %id, forge = forge.name(), "webhook ping");
            text(StatusCode::OK, "pong\n".into())
        }
        Ok(Event::Ignored { reason }) => {
            app.count("ignored");
            tracing::info!(%peer, delivery = %id, forge = forge.name(), %reason, "webhook ignored");
            text(StatusCode::ACCEPTED, format!("ignored: {reason}\n"))
        }
        Ok(Event::Push { commit }) => {
            app.count("accepted");
            let queued = app.runner.trigger(RunRequest {
                trigger: Trigger::Webhook,
                always: false,
            });
            let (what, status) = match queued {
                Queued::Started => ("run started", StatusCode::ACCEPTED),
                Queued::FollowUp => ("queued after the run in progress", StatusCode::ACCEPTED),
                Queued::Coalesced => ("folded into the run already queued", StatusCode::ACCEPTED),
                Queued::ShuttingDown => ("shutting down", StatusCode::SERVICE_UNAVAILABLE),
            };
            let commit =
                commit.map_or_else(|| "-".into(), |c| crate::text::escape(&c).into_owned());
            tracing::info!(%peer, delivery = %id, forge = forge.name(), %commit, "push: {what}");
            text(status, format!("accepted: {what}\n"))
        }
        Err(e) => {
            app.count("bad_request");
            tracing::warn!(%peer, delivery = %id, forge = forge.name(), error = %e, "webhook refused");
            text(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
    }
}

#[derive(serde::Serialize)]
struct Status<'a> {
    state: &'static str,
    source: &'a str,
    branch: &'a str,
    #[serde(flatten)]
    runs: runner::Snapshot,
    webhooks_total: BTreeMap<&'static str, u64>,
}

async fn status(State(app): State<Arc<App>>) -> Response {
    let runs = app.runner.snapshot();
    let body = Status {
        state: if runs.current.is_some() {
            "running"
        } else {
            "idle"
        },
        source: &app.config.source,
        branch: &app.config.branch,
        runs,
        webhooks_total: app.webhooks(),
    };
    match serde_json::to_string_pretty(&body) {
        Ok(json) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json + "\n",
        )
            .into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// How many runs the page lists.
const PAGE_RUNS: usize = 20;

/// The file in the state folder holding the last certificate reading (`plumb.certs/v1`), written
/// after each run.
pub const CERTS_FILE: &str = "certs.json";

/// The largest certificate reading read back.
const MAX_CERTS_FILE: u64 = 8 * 1024 * 1024;

/// What the page reads from the state folder besides the runs.
#[derive(Default)]
struct PageExtra {
    /// Commits held back, newest first.
    bad: Vec<crate::rollback::BadCommit>,
    /// The last certificate reading.
    certs: Option<serde_json::Value>,
}

fn page_extra(state_dir: Option<&std::path::Path>) -> PageExtra {
    use std::io::Read as _;
    let Some(dir) = state_dir else {
        return PageExtra::default();
    };
    let mut bad = crate::rollback::BadCommits::new(dir)
        .list()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the bad commits for the status page");
            Vec::new()
        });
    bad.reverse();
    let certs = std::fs::File::open(dir.join(CERTS_FILE))
        .ok()
        .and_then(|f| {
            let mut text = Vec::new();
            f.take(MAX_CERTS_FILE).read_to_end(&mut text).ok()?;
            serde_json::from_slice(&text).ok()
        });
    PageExtra { bad, certs }
}

/// What the page reads from the state folder: the applied commit, the last runs (newest first),
/// and the newest of them with a report.
fn page_state(
    state_dir: Option<&std::path::Path>,
) -> (
    Option<String>,
    Vec<crate::history::RunRecord>,
    Option<(usize, serde_json::Value)>,
) {
    let Some(dir) = state_dir else {
        return (None, Vec::new(), None);
    };
    let applied = std::fs::read_to_string(dir.join("last-applied"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
    let h = crate::history::History::new(dir);
    let mut runs = match h.last(PAGE_RUNS) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "reading the run history for the status page");
            Vec::new()
        }
    };
    runs.reverse();
    let report = runs.iter().enumerate().find_map(|(i, r)| {
        let text = h.report(&r.id).ok().flatten()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some((i, v))
    });
    (applied, runs, report)
}

/// The headers of every HTML page: its type, the policy that allows only its own style, and
/// no sniffing, referrer or caching.
fn html_response(body: String) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&page::content_security_policy()) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /runs/ID`: one run from the history, host by host.
async fn run_page(
    State(app): State<Arc<App>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if !crate::history::valid_id(&id) {
        return text(StatusCode::NOT_FOUND, "no such run\n".into());
    }
    let Some(dir) = app.config.state_dir.clone() else {
        return text(StatusCode::NOT_FOUND, "no run history\n".into());
    };
    let found =
        tokio::task::spawn_blocking(move || crate::history::History::new(&dir).show(&id).ok())
            .await
            .ok()
            .flatten();
    match found {
        Some((run, report)) => {
            let report: Option<serde_json::Value> =
                report.and_then(|r| serde_json::from_str(&r).ok());
            html_response(page::render_run(&run, report.as_ref()))
        }
        None => text(StatusCode::NOT_FOUND, "no such run\n".into()),
    }
}

async fn status_page(State(app): State<Arc<App>>) -> Response {
    let dir = app.config.state_dir.clone();
    let read = tokio::task::spawn_blocking(move || {
        (page_state(dir.as_deref()), page_extra(dir.as_deref()))
    })
    .await;
    let ((applied, history, report), extra) = read.unwrap_or_default();
    let runs = app.runner.snapshot();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = page::render(&page::PageData {
        source: &app.config.source,
        branch: &app.config.branch,
        applied: applied.as_deref(),
        runs: &runs,
        history: &history,
        last_report: report
            .as_ref()
            .and_then(|(i, v)| history.get(*i).map(|r| (r, v))),
        bad: &extra.bad,
        certs: extra.certs.as_ref(),
        now,
    });
    html_response(body)
}

/// The Prometheus text exposition of a snapshot and the webhook counters.
pub fn metrics_text(runs: &runner::Snapshot, webhooks: &BTreeMap<&'static str, u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP plumb_runs_total Runs finished, by result.\n# TYPE plumb_runs_total counter"
    );
    for r in RUN_RESULTS {
        let n = runs.runs_total.get(r).copied().unwrap_or(0);
        let _ = writeln!(out, "plumb_runs_total{{result=\"{r}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP plumb_webhooks_total Webhook requests, by outcome.\n# TYPE plumb_webhooks_total counter"
    );
    for o in WEBHOOK_OUTCOMES {
        let n = webhooks.get(o).copied().unwrap_or(0);
        let _ = writeln!(out, "plumb_webhooks_total{{outcome=\"{o}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP plumb_rollbacks_total Rollbacks: a new commit failed its gates, was marked bad and the last good commit was applied again.\n\
         # TYPE plumb_rollbacks_total counter\n\
         plumb_rollbacks_total {}",
        runs.rollbacks_total
    );
    let (finished, duration, code) = match &runs.last_run {
        Some(l) => (
            l.started_at as f64 + l.duration_seconds,
            l.duration_seconds,
            l.outcome.exit_code,
        ),
        None => (0.0, 0.0, 0),
    };
    let _ = writeln!(
        out,
        "# HELP plumb_last_run_timestamp_seconds Unix time the last run finished (0: none yet).\n\
         # TYPE plumb_last_run_timestamp_seconds gauge\n\
         plumb_last_run_timestamp_seconds {finished:.3}\n\
         # HELP plumb_last_run_duration_seconds Wall time of the last run.\n\
         # TYPE plumb_last_run_duration_seconds gauge\n\
         plumb_last_run_duration_seconds {duration:.3}\n\
         # HELP plumb_last_run_exit_code Exit code of the last run (as plumb pull's).\n\
         # TYPE plumb_last_run_exit_code gauge\n\
         plumb_last_run_exit_code {code}\n\
         # HELP plumb_run_in_progress 1 while a run is going.\n\
         # TYPE plumb_run_in_progress gauge\n\
         plumb_run_in_progress {}\n\
         # HELP plumb_run_queued 1 while a follow-up run is queued.\n\
         # TYPE plumb_run_queued gauge\n\
         plumb_run_queued {}",
        u8::from(runs.current.is_some()),
        u8::from(runs.queued),
    );
    out
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let body = metrics_text(&app.runner.snapshot(), &app.webhooks());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_name_every_series_before_any_run() {
        let text = metrics_text(&runner::Snapshot::default(), &BTreeMap::new());
        for line in [
            "plumb_runs_total{result=\"changed\"} 0",
            "plumb_webhooks_total{outcome=\"unauthorized\"} 0",
            "plumb_last_run_timestamp_seconds 0.000",
            "plumb_last_run_duration_seconds 0.000",
            "plumb_run_in_progress 0",
            "plumb_runs_total{result=\"held\"} 0",
            "plumb_rollbacks_total 0",
            "# TYPE plumb_rollbacks_total counter",
            "# TYPE plumb_runs_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        // Every sample line is `name{labels} value` or `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = l.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
    }
}
