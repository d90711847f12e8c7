//! Report: what a run found and did, per host, for humans (with colours on a terminal) or as
//! JSON with a stable schema (`plumb.run/v1`, documented in docs/json-output.md), and the exit
//! code that sums it up.

pub mod certs;

use crate::apply::{HostOutcome, Outcome};
use crate::plan::{Action, HostPlan, ResourcePlan, diff};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

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
    /// Wall time of the run.
    pub duration: Duration,
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
    changes: &'a [crate::plan::Change],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    diffs: &'a [crate::plan::DiffSpec],
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
        if s.failed > 0 {
            crate::cli::EXIT_ERROR
        } else if s.changed > 0 {
            crate::cli::EXIT_CHANGES
        } else if s.drift > 0 {
            crate::cli::EXIT_DRIFT
        } else {
            crate::cli::EXIT_OK
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
                paint("1", &h.host),
                h.duration.as_secs_f64()
            );
            if let Some(e) = &h.error {
                let _ = writeln!(out, "  {}", paint("31", &crate::secrets::redact(e)));
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
                    p.managed.kind,
                    p.managed.name,
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
                let because: Vec<String> = x.because.iter().map(|b| b.to_string()).collect();
                let _ = writeln!(
                    out,
                    "  {} refresh {} (notified by {}){}",
                    paint("36", "↻"),
                    x.target,
                    because.join(", "),
                    outcome_suffix(res, &paint)
                );
            }
            if let Some(o) = &h.outcome {
                if let Some(f) = &o.other_failure {
                    let _ = writeln!(out, "  {}", paint("31", &format!("failed: {f}")));
                }
                for w in &o.warnings {
                    let _ = writeln!(out, "  warning: {w}");
                }
            }
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

fn outcome_suffix(o: Option<&Outcome>, paint: &dyn Fn(&str, &str) -> String) -> String {
    match o {
        Some(Outcome::Conflict(h)) => paint(
            "31",
            &format!(
                " REFUSED: changed on the host since it was planned (now {}); run again to re-plan",
                crate::plan::short(h)
            ),
        ),
        Some(Outcome::Failed(m)) => paint("31", &format!(" FAILED: {m}")),
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
        r.kind,
        r.name,
        outcome_suffix(res, paint)
    );
    if let Some(e) = &r.error {
        let _ = writeln!(out, "      {}", paint("31", e));
    }
    for c in &r.changes {
        let arrow = match (&c.from, &c.to) {
            (Some(f), Some(t)) => format!("{f} -> {t}"),
            (None, Some(t)) => t.clone(),
            (Some(f), None) => format!("{f} -> (removed)"),
            (None, None) => String::new(),
        };
        let _ = writeln!(out, "      {}: {arrow}", c.field);
    }
    for d in &r.diffs {
        if d.new.sensitive {
            let _ = write!(
                out,
                "      {}",
                diff::sensitive_line(&d.path, d.old_sha256.as_deref(), &d.new.sha256)
            );
        } else if let Some(text) = &d.text {
            let text = if colour {
                diff::colourize(text)
            } else {
                text.clone()
            };
            for line in text.lines() {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
}
