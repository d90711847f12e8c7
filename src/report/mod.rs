//! Report: what a run found and did, per host, for humans (with colours on a terminal) or as
//! JSON with a stable schema (`plumb.run/v1`, documented in docs/json-output.md), and the exit
//! code that sums it up.

pub mod certs;
pub mod cluster;

use crate::apply::{HostOutcome, Outcome};
use crate::plan::{HostPlan, ResourcePlan, diff};
use crate::text::{escape, escape_block, escape_multiline};
use crate::vocab::step::Action;
use cluster::{ClusterRun, ClusterStatus};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// Exit code: success, nothing to change.
pub const EXIT_OK: i32 = 0;
/// Exit code: an error (invalid repo, a host failed, ...).
pub const EXIT_ERROR: i32 = 1;
/// Exit code: changes were planned (dry-run) or applied.
pub const EXIT_CHANGES: i32 = 2;
/// Exit code: drift found on resources with `drift: detect` (and nothing failed).
pub const EXIT_DRIFT: i32 = 3;
/// Exit code: bad command line.
pub const EXIT_USAGE: i32 = 64;

/// The JSON schema name.
pub const SCHEMA: &str = "plumb.run/v1";

/// How one host ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// In sync; nothing to do.
    Unchanged,
    /// Changes planned (dry-run) or applied.
    Changed,
    /// Only drift on `detect` resources.
    Drift,
    /// Unreachable, refused, or a step failed.
    Failed,
}

/// The run of one host.
#[derive(Clone, Debug)]
pub struct HostRun {
    /// Host name.
    pub host: String,
    /// The plan, when the probe succeeded.
    pub plan: Option<HostPlan>,
    /// What applying did.
    pub outcome: Option<HostOutcome>,
    /// Why the host failed, if it did.
    pub error: Option<String>,
    /// Wall time spent on the host.
    pub duration: Duration,
}

impl HostRun {
    /// The host's status.
    pub fn status(&self, dry_run: bool) -> HostStatus {
        if self.error.is_some() {
            return HostStatus::Failed;
        }
        let Some(plan) = &self.plan else {
            return HostStatus::Failed;
        };
        if plan.errors().next().is_some() {
            return HostStatus::Failed;
        }
        if let Some(o) = &self.outcome {
            let bad = |x: &Option<Outcome>| {
                matches!(
                    x,
                    Some(Outcome::Failed(_) | Outcome::Conflict(_) | Outcome::NotReached)
                )
            };
            if o.other_failure.is_some()
                || o.resources.iter().any(bad)
                || o.prune
                    .iter()
                    .any(|x| matches!(x, Some(Outcome::Failed(_))))
            {
                return HostStatus::Failed;
            }
            if !o.complete && !dry_run {
                return HostStatus::Failed;
            }
        }
        if plan.has_changes() {
            HostStatus::Changed
        } else if plan.has_drift() {
            HostStatus::Drift
        } else {
            HostStatus::Unchanged
        }
    }
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// Run id.
    pub run_id: String,
    /// Repo commit, when the repo is a git work tree.
    pub commit: Option<String>,
    /// Nothing was written.
    pub dry_run: bool,
    /// Per host, in inventory order.
    pub hosts: Vec<HostRun>,
    /// Per `PostgresCluster` with a member in the run: its health and what the cluster phase did.
    pub clusters: Vec<ClusterRun>,
    /// Wall time of the run.
    pub duration: Duration,
    /// The run's watchdog fired (`--run-timeout`): hosts or a cluster phase were stopped.
    pub timed_out: bool,
}

#[derive(Serialize)]
struct JsonRun<'a> {
    schema: &'static str,
    run_id: &'a str,
    commit: Option<&'a str>,
    dry_run: bool,
    duration_ms: u128,
    summary: Summary,
    hosts: Vec<JsonHost<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    clusters: &'a [ClusterRun],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    timed_out: bool,
}

#[derive(Serialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
/// Counts of hosts by status.
pub struct Summary {
    /// Hosts in the run.
    pub hosts: usize,
    /// Hosts with changes.
    pub changed: usize,
    /// Hosts in sync.
    pub unchanged: usize,
    /// Hosts with drift on `detect` resources only.
    pub drift: usize,
    /// Hosts that failed.
    pub failed: usize,
}

#[derive(Serialize)]
struct JsonHost<'a> {
    host: &'a str,
    status: HostStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    duration_ms: u128,
    resources: Vec<JsonResource<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    prune: Vec<JsonPrune<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    handlers: Vec<JsonHandler<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<&'a str>,
}

#[derive(Serialize)]
struct JsonResource<'a> {
    kind: &'a str,
    name: &'a str,
    action: Action,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    changes: &'a [crate::vocab::step::Change],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    diffs: &'a [crate::vocab::step::DiffSpec],
    sensitive: bool,
    actual_sha256: &'a str,
    desired_sha256: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a Outcome>,
}

#[derive(Serialize)]
struct JsonPrune<'a> {
    kind: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a Outcome>,
}

#[derive(Serialize)]
struct JsonHandler<'a> {
    target: String,
    because: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a Outcome>,
}

impl RunReport {
    /// Counts of hosts by status.
    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            hosts: self.hosts.len(),
            ..Default::default()
        };
        for h in &self.hosts {
            match h.status(self.dry_run) {
                HostStatus::Changed => s.changed += 1,
                HostStatus::Unchanged => s.unchanged += 1,
                HostStatus::Drift => s.drift += 1,
                HostStatus::Failed => s.failed += 1,
            }
        }
        s
    }

    /// 0 nothing to change, 2 changes planned or applied, 3 drift on `detect` resources only,
    /// 1 any host failed.
    pub fn exit_code(&self) -> i32 {
        let s = self.summary();
        if s.failed > 0 || self.clusters.iter().any(ClusterRun::failed) {
            EXIT_ERROR
        } else if s.changed > 0 || self.clusters.iter().any(|c| !c.changes.is_empty()) {
            EXIT_CHANGES
        } else if s.drift > 0 {
            EXIT_DRIFT
        } else {
            EXIT_OK
        }
    }

    /// The JSON report.
    pub fn to_json(&self) -> String {
        let hosts = self
            .hosts
            .iter()
            .map(|h| {
                let outcome = h.outcome.as_ref();
                let resources = h
                    .plan
                    .iter()
                    .flat_map(|p| p.resources.iter().enumerate())
                    .filter(|(_, r)| r.action != Action::None)
                    .map(|(i, r)| JsonResource {
                        kind: &r.kind,
                        name: &r.name,
                        action: r.action,
                        changes: &r.changes,
                        diffs: &r.diffs,
                        sensitive: r.sensitive,
                        actual_sha256: &r.actual_sha256,
                        desired_sha256: &r.desired_sha256,
                        error: r.error.as_deref(),
                        outcome: outcome
                            .and_then(|o| o.resources.get(i))
                            .and_then(Option::as_ref),
                    })
                    .collect();
                let prune = h
                    .plan
                    .iter()
                    .flat_map(|p| p.prune.iter().enumerate())
                    .map(|(i, p)| JsonPrune {
                        kind: &p.managed.kind,
                        name: &p.managed.name,
                        outcome: outcome
                            .and_then(|o| o.prune.get(i))
                            .and_then(Option::as_ref),
                    })
                    .collect();
                let handlers = h
                    .plan
                    .iter()
                    .flat_map(|p| p.handlers.iter().enumerate())
                    .map(|(i, x)| JsonHandler {
                        target: x.target.to_string(),
                        because: x.because.iter().map(|b| b.to_string()).collect(),
                        outcome: outcome
                            .and_then(|o| o.handlers.get(i))
                            .and_then(Option::as_ref),
                    })
                    .collect();
                JsonHost {
                    host: &h.host,
                    status: h.status(self.dry_run),
                    error: h.error.as_deref().map(crate::secrets::redact),
                    duration_ms: h.duration.as_millis(),
                    resources,
                    prune,
                    handlers,
                    warnings: outcome
                        .map(|o| o.warnings.iter().map(String::as_str).collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        let run = JsonRun {
            schema: SCHEMA,
            run_id: &self.run_id,
            commit: self.commit.as_deref(),
            dry_run: self.dry_run,
            duration_ms: self.duration.as_millis(),
            summary: self.summary(),
            hosts,
            clusters: &self.clusters,
            timed_out: self.timed_out,
        };
        crate::secrets::redact(&(serde_json::to_string_pretty(&run).unwrap_or_default() + "\n"))
    }

    /// The human report.
    pub fn to_human(&self, colour: bool) -> String {
        let paint = |code: &str, s: &str| {
            if colour {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        for h in &self.hosts {
            let status = h.status(self.dry_run);
            let label = match status {
                HostStatus::Unchanged => paint("32", "unchanged"),
                HostStatus::Changed if self.dry_run => paint("33", "would change"),
                HostStatus::Changed => paint("33", "changed"),
                HostStatus::Drift => paint("35", "drift (detect only)"),
                HostStatus::Failed => paint("31;1", "FAILED"),
            };
            let _ = writeln!(
                out,
                "{} {label} ({:.1}s)",
                paint("1", &one_line(&h.host)),
                h.duration.as_secs_f64()
            );
            if let Some(e) = &h.error {
                let _ = writeln!(out, "  {}", paint("31", &block(e, "    ")));
            }
            let Some(plan) = &h.plan else { continue };
            for (p_i, p) in plan.prune.iter().enumerate() {
                let res = h
                    .outcome
                    .as_ref()
                    .and_then(|o| o.prune.get(p_i))
                    .and_then(Option::as_ref);
                let _ = writeln!(
                    out,
                    "  {} {}/{} (removed from the repo){}",
                    paint("31", "-"),
                    one_line(&p.managed.kind),
                    one_line(&p.managed.name),
                    outcome_suffix(res, &paint)
                );
            }
            for (i, r) in plan.resources.iter().enumerate() {
                if r.action == Action::None {
                    continue;
                }
                let res = h
                    .outcome
                    .as_ref()
                    .and_then(|o| o.resources.get(i))
                    .and_then(Option::as_ref);
                write_resource(&mut out, r, res, colour, &paint);
            }
            for (x_i, x) in plan.handlers.iter().enumerate() {
                let res = h
                    .outcome
                    .as_ref()
                    .and_then(|o| o.handlers.get(x_i))
                    .and_then(Option::as_ref);
                let because: Vec<String> =
                    x.because.iter().map(|b| one_line(&b.to_string())).collect();
                let _ = writeln!(
                    out,
                    "  {} refresh {} (notified by {}){}",
                    paint("36", "↻"),
                    one_line(&x.target.to_string()),
                    because.join(", "),
                    outcome_suffix(res, &paint)
                );
            }
            if let Some(o) = &h.outcome {
                if let Some(f) = &o.other_failure {
                    let _ = writeln!(
                        out,
                        "  {}",
                        paint("31", &format!("failed: {}", block(f, "    ")))
                    );
                }
                for w in &o.warnings {
                    let _ = writeln!(out, "  warning: {}", block(w, "    "));
                }
            }
        }
        for c in &self.clusters {
            write_cluster(&mut out, c, self.dry_run, &paint);
        }
        let s = self.summary();
        let _ = writeln!(
            out,
            "\n{} hosts: {} {}, {} unchanged, {} drift, {} failed ({:.1}s){}",
            s.hosts,
            s.changed,
            if self.dry_run {
                "would change"
            } else {
                "changed"
            },
            s.unchanged,
            s.drift,
            s.failed,
            self.duration.as_secs_f64(),
            if self.dry_run {
                "; dry run: nothing was changed"
            } else {
                ""
            }
        );
        crate::secrets::redact(&out)
    }
}

/// The human report of clusters alone (what `plumb pg` prints).
pub fn clusters_to_human(clusters: &[ClusterRun], dry_run: bool, colour: bool) -> String {
    let paint = |code: &str, s: &str| {
        if colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    for c in clusters {
        write_cluster(&mut out, c, dry_run, &paint);
    }
    crate::secrets::redact(&out)
}

fn write_cluster(
    out: &mut String,
    c: &ClusterRun,
    dry_run: bool,
    paint: &dyn Fn(&str, &str) -> String,
) {
    let label = match c.status {
        _ if c.error.is_some() => paint("31;1", "FAILED"),
        ClusterStatus::Healthy => paint("32", "healthy"),
        ClusterStatus::Unhealthy => paint("31;1", "UNHEALTHY"),
        ClusterStatus::NotRunning => paint("33", "not running yet"),
    };
    let _ = writeln!(
        out,
        "{} {label}",
        paint("1", &format!("cluster {}", one_line(&c.cluster)))
    );
    for m in &c.members {
        let role = m
            .role
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "?".into());
        let mut line = format!(
            "  {} {} {}",
            one_line(&m.name),
            one_line(&role),
            one_line(m.state.as_deref().unwrap_or("unknown"))
        );
        if let Some(tl) = m.timeline {
            let _ = write!(line, ", timeline {tl}");
        }
        if let Some(lag) = m.lag_bytes {
            let _ = write!(line, ", lag {lag} B");
        }
        if let Some(t) = &m.postmaster_start_time {
            let _ = write!(line, ", up since {}", one_line(t));
        }
        if m.pending_restart {
            line.push_str(", pending restart");
        }
        let _ = writeln!(out, "{line}");
    }
    for r in &c.reasons {
        let _ = writeln!(out, "  {}", paint("31", &one_line(r)));
    }
    if let Some(b) = &c.backups {
        let _ = writeln!(out, "  backups: {}", one_line(&b.to_string()));
    }
    for ch in &c.changes {
        let _ = writeln!(
            out,
            "  {} {}",
            paint("33", if dry_run { "would:" } else { "done:" }),
            one_line(ch)
        );
    }
    for w in &c.warnings {
        let _ = writeln!(out, "  warning: {}", one_line(w));
    }
    if let Some(e) = &c.error {
        let _ = writeln!(out, "  {}", paint("31", &block(e, "    ")));
    }
}

fn outcome_suffix(o: Option<&Outcome>, paint: &dyn Fn(&str, &str) -> String) -> String {
    match o {
        Some(Outcome::Conflict(h)) => paint(
            "31",
            &format!(
                " REFUSED: changed on the host since it was planned (now {}); run again to re-plan",
                crate::vocab::step::short(h)
            ),
        ),
        Some(Outcome::Failed(m)) => paint("31", &format!(" FAILED: {}", one_line(m))),
        Some(Outcome::NotReached) => paint("31", " not reached (an earlier step failed)"),
        _ => String::new(),
    }
}

fn write_resource(
    out: &mut String,
    r: &ResourcePlan,
    res: Option<&Outcome>,
    colour: bool,
    paint: &dyn Fn(&str, &str) -> String,
) {
    let (sym, code) = match r.action {
        Action::Create => ("+", "32"),
        Action::Update => ("~", "33"),
        Action::Delete => ("-", "31"),
        Action::Run => (">", "36"),
        Action::Drift => ("!", "35"),
        Action::Error => ("✗", "31;1"),
        Action::None => (" ", "0"),
    };
    let drift = if r.action == Action::Drift {
        " (drift, policy detect: not repaired)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "  {} {}/{}{drift}{}",
        paint(code, sym),
        one_line(&r.kind),
        one_line(&r.name),
        outcome_suffix(res, paint)
    );
    if let Some(e) = &r.error {
        let _ = writeln!(out, "      {}", paint("31", &block(e, "        ")));
    }
    for c in &r.changes {
        let arrow = match (&c.from, &c.to) {
            (Some(f), Some(t)) => format!("{} -> {}", one_line(f), one_line(t)),
            (None, Some(t)) => one_line(t),
            (Some(f), None) => format!("{} -> (removed)", one_line(f)),
            (None, None) => String::new(),
        };
        let _ = writeln!(out, "      {}: {arrow}", one_line(&c.field));
    }
    for d in &r.diffs {
        if d.masked
            && let Some(text) = &d.text
        {
            // A masked diff: every secret value is a placeholder already; redacted and escaped
            // all the same, like any diff.
            if text.is_empty() {
                let line = diff::secrets_only_line(
                    &one_line(&d.path),
                    d.old_sha256.as_deref().map(one_line).as_deref(),
                    &one_line(&d.new.sha256),
                );
                let _ = write!(out, "      {line}");
                continue;
            }
            if let Some(why) = &d.old_not_shown {
                let _ = writeln!(
                    out,
                    "      {} {}: {}",
                    one_line(&d.path),
                    diff::MASKED_MARK,
                    one_line(why)
                );
            }
            let text = escape_multiline(&crate::secrets::redact(text)).into_owned();
            let text = if colour { diff::colourize(&text) } else { text };
            for line in text.split_terminator('\n') {
                let _ = writeln!(out, "      {line}");
            }
        } else if d.new.sensitive {
            let line = diff::sensitive_line(
                &one_line(&d.path),
                d.old_sha256.as_deref().map(one_line).as_deref(),
                &one_line(&d.new.sha256),
            );
            let _ = write!(out, "      {line}");
        } else if let Some(text) = &d.text {
            // A diff is multi-line by design: its lines stay (and its tabs), every other
            // control character of the file (CR, ESC, ...) is shown escaped, before colouring.
            let text = escape_multiline(&crate::secrets::redact(text)).into_owned();
            let text = if colour { diff::colourize(&text) } else { text };
            for line in text.split_terminator('\n') {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
}

/// Text from a repo or a host for one line of the human report: secrets redacted (before
/// escaping, so a secret holding a control character is still found), control characters
/// shown escaped.
fn one_line(text: &str) -> String {
    escape(&crate::secrets::redact(text)).into_owned()
}

/// Text that may span lines (a host's error with a command's output): secrets redacted,
/// control characters other than newline and tab escaped, later lines indented by `indent`.
fn block(text: &str, indent: &str) -> String {
    escape_block(&crate::secrets::redact(text), indent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A name, path or message as a hostile host or repo would write it: ESC sequences, a CR
    /// that returns to the start of the line, a newline and a forged "ok" line.
    const FORGED: &str = "x\x1b[2K\r\x1b[32mweb9 unchanged (0.1s)\nweb9 unchanged\x07";

    fn forged_report() -> RunReport {
        // The plan through its serialized form: only the fields this report reads.
        let plan: HostPlan = serde_json::from_value(json!({
            "host": "web1",
            "resources": [{
                "index": 0, "kind": "File", "name": format!("/etc/{FORGED}"),
                "action": "update",
                "changes": [{ "field": "owner", "from": FORGED, "to": "root" }],
                "diffs": [{
                    "path": format!("/etc/{FORGED}"), "old_sha256": "a",
                    "new": { "sha256": "b", "sensitive": false },
                    "text": format!("--- a/etc/x\n+++ b/etc/x\n@@ -1 +1 @@\n-\told\r\n+{FORGED}\n"),
                }],
                "actual_sha256": "a", "desired_sha256": "b",
                "error": format!("step failed:\n{FORGED}"),
            }],
            "prune": [{ "managed": { "kind": "File", "name": FORGED }, "steps": [] }],
        }))
        .unwrap();
        RunReport {
            run_id: "r".into(),
            commit: None,
            dry_run: true,
            hosts: vec![
                HostRun {
                    host: format!("web1{FORGED}"),
                    plan: None,
                    outcome: None,
                    error: Some(format!("ssh: {FORGED}\nstderr tail: {FORGED}")),
                    duration: Duration::from_millis(100),
                },
                HostRun {
                    host: "web2".into(),
                    plan: Some(plan),
                    outcome: None,
                    error: None,
                    duration: Duration::from_millis(100),
                },
            ],
            clusters: Vec::new(),
            duration: Duration::from_millis(200),
            timed_out: false,
        }
    }

    #[test]
    fn names_paths_errors_and_diffs_from_hosts_and_repos_render_escaped() {
        let r = forged_report();
        for colour in [false, true] {
            let text = r.to_human(colour);
            // No control character but newlines, tabs and plumb's own colours.
            let stripped = text
                .replace("\x1b[0m", "")
                .replace("\x1b[1m", "")
                .replace("\x1b[31m", "")
                .replace("\x1b[31;1m", "")
                .replace("\x1b[32m", "")
                .replace("\x1b[33m", "")
                .replace("\x1b[36m", "");
            assert!(
                !stripped
                    .chars()
                    .any(|c| !matches!(c, '\n' | '\t') && crate::text::is_control(c)),
                "{stripped:?}"
            );
            // The forged line never starts a line of its own.
            for line in stripped.lines() {
                assert!(!line.starts_with("web9"), "forged line in:\n{stripped}");
            }
            assert!(
                stripped.contains("x\\e[2K\\r\\e[32mweb9 unchanged (0.1s)\\nweb9 unchanged\\x07"),
                "{stripped}"
            );
            // Multi-line errors keep their lines, indented under their host.
            assert!(
                stripped.contains("\n    stderr tail: x\\e[2K"),
                "{stripped}"
            );
            // A diff keeps its lines and tabs; the CR of a CRLF line shows.
            assert!(stripped.contains("      -\told\\r\n"), "{stripped}");
        }
        // JSON stays JSON: serde escapes control characters.
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["hosts"][0]["host"], format!("web1{FORGED}"));
        assert!(!r.to_json().contains('\x1b'));
    }
}
