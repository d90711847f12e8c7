//! `plumb history`: what `plumb pull` and `plumb serve` ran, from the controller's state folder
//! (see [`crate::history`]): one line per run, or one run's report per host. Everything read
//! from the history is escaped for the terminal (a commit message or a host's error could hold
//! escape sequences).

use super::converge::OutputFormat;
use super::{EXIT_ERROR, EXIT_OK};
use crate::history::{History, RunRecord};
use crate::text::{escape, escape_block};
use anyhow::{Result, bail};
use clap::Args;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::PathBuf;

/// `plumb history`.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Nothing: list the runs; `ID` or `show ID`: that run, host by host.
    #[arg(value_name = "[show] ID", num_args = 0..=2)]
    pub args: Vec<String>,
    /// The controller state folder (as `plumb pull` and `plumb serve`).
    /// Default: /var/lib/plumb-controller as root, ~/.local/state/plumb otherwise.
    #[arg(long, value_name = "DIR", env = "PLUMB_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Only the newest N runs.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub last: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Same as `--output json`.
    #[arg(long)]
    pub json: bool,
}

/// `plumb history`.
pub fn history(a: &HistoryArgs) -> Result<i32> {
    let state_dir = a
        .state_dir
        .clone()
        .unwrap_or_else(super::pull::default_state_dir);
    let h = History::new(&state_dir);
    let json = a.json || a.output == OutputFormat::Json;
    let id = match a.args.as_slice() {
        [] => None,
        [id] if id != "show" => Some(id.as_str()),
        [show, id] if show == "show" => Some(id.as_str()),
        _ => bail!("usage: plumb history [--last N] | plumb history [show] ID"),
    };
    match id {
        None => {
            let runs = h.last(a.last)?;
            if json {
                // Always the array of runs (each says `marked_bad` and `rolled_back_to`); the
                // held-back commits are JSON already, in the state folder's bad-commits.json.
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else {
                if runs.is_empty() {
                    eprintln!("no runs recorded in {}", state_dir.display());
                } else {
                    print!("{}", list_text(&runs));
                }
                print!(
                    "{}",
                    bad_text(&crate::rollback::BadCommits::new(&state_dir).list()?)
                );
            }
            Ok(EXIT_OK)
        }
        Some(id) => {
            let (run, report) = h.show(id)?;
            let report: Option<Value> = report.and_then(|r| serde_json::from_str(&r).ok());
            if json {
                let out = serde_json::json!({ "run": run, "report": report });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", show_text(&run, report.as_ref()));
            }
            Ok(if run.result() == "failed" {
                EXIT_ERROR
            } else {
                EXIT_OK
            })
        }
    }
}

fn when(unix: i64) -> String {
    crate::history::format_time(unix)
}

fn names(hosts: &[String]) -> String {
    if hosts.is_empty() {
        "-".into()
    } else {
        hosts
            .iter()
            .map(|h| escape(h).into_owned())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The list of runs, oldest first, one line each (every field from the log escaped).
pub fn list_text(runs: &[RunRecord]) -> String {
    let mut out = format!(
        "{:<23} {:<19} {:<9} {:<12} {:<11} {:>5} {:<16} {:<16} {}\n",
        "ID",
        "STARTED (UTC)",
        "TRIGGER",
        "COMMIT",
        "RESULT",
        "HOSTS",
        "CHANGED",
        "FAILED",
        "SUMMARY"
    );
    for r in runs {
        let _ = writeln!(
            out,
            "{:<23} {:<19} {:<9} {:<12} {:<11} {:>5} {:<16} {:<16} {}",
            escape(&r.id),
            when(r.started_at),
            if r.trigger.is_empty() {
                "-".into()
            } else {
                escape(&r.trigger)
            },
            escape(crate::history::short_commit(&r.commit)),
            if r.dry_run {
                format!("{}*", r.result())
            } else {
                r.result().into()
            },
            r.hosts,
            names(&r.changed_hosts),
            names(&r.failed_hosts),
            escape(&r.summary),
        );
    }
    if runs.iter().any(|r| r.dry_run) {
        out.push_str("* dry run: nothing was changed\n");
    }
    out
}

/// The commits held back after failing their gates, and why (every field escaped).
pub fn bad_text(bad: &[crate::rollback::BadCommit]) -> String {
    if bad.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nHELD BACK (failed their gates; not applied again until a newer commit arrives, or with --retry-bad):\n",
    );
    for b in bad {
        let _ = writeln!(
            out,
            "{} {} (run {}, {} UTC): {}; {}",
            escape(crate::history::short_commit(&b.commit)),
            escape(&b.summary),
            escape(&b.run_id),
            when(b.marked_at),
            escape(&b.reason),
            match &b.rolled_back_to {
                Some(c) => format!("rolled back to {}", escape(crate::history::short_commit(c))),
                None => "nothing to roll back to".into(),
            }
        );
    }
    out
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// One run: its line, then per host its status, error and every resource changed.
pub fn show_text(r: &RunRecord, report: Option<&Value>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "run      {}", escape(&r.id));
    let _ = writeln!(
        out,
        "started  {} UTC ({:.1}s)",
        when(r.started_at),
        r.duration_ms as f64 / 1000.0
    );
    if !r.trigger.is_empty() {
        let _ = writeln!(out, "trigger  {}", escape(&r.trigger));
    }
    let _ = writeln!(out, "commit   {} {}", escape(&r.commit), escape(&r.summary));
    let _ = writeln!(
        out,
        "result   {}{} (exit {}): {} hosts, {} changed, {} failed",
        r.result(),
        if r.dry_run { ", dry run" } else { "" },
        r.exit_code,
        r.hosts,
        r.changed,
        r.failed
    );
    if let Some(e) = &r.error {
        let _ = writeln!(out, "error    {}", escape_block(e, "         "));
    }
    if r.marked_bad {
        let _ = writeln!(
            out,
            "gates    FAILED: commit marked bad; {}",
            match &r.rolled_back_to {
                Some(c) => format!("rolled back to {}", escape(c)),
                None => "nothing to roll back to".into(),
            }
        );
    }
    if let Some(c) = &r.rollback_of {
        let _ = writeln!(
            out,
            "rollback of {} (it failed its gates; this run applied the last good commit again)",
            escape(c)
        );
    }
    let Some(report) = report else {
        let _ = writeln!(out, "\n(no per-host report kept for this run)");
        return out;
    };
    for h in report
        .get("hosts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "\n{} {}",
            escape(field(h, "host")),
            escape(field(h, "status"))
        );
        if let Some(e) = h.get("error").and_then(Value::as_str) {
            let _ = writeln!(out, "  error: {}", escape_block(e, "    "));
        }
        for res in h
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let outcome = match res.get("outcome") {
                None | Some(Value::Null) => String::new(),
                Some(o) => match o.get("detail").and_then(Value::as_str) {
                    Some(d) => format!(
                        " [{}: {}]",
                        escape(field(o, "result")),
                        escape_block(d, "        ")
                    ),
                    None => format!(" [{}]", escape(field(o, "result"))),
                },
            };
            let _ = writeln!(
                out,
                "  {} {}/{}{}",
                escape(field(res, "action")),
                escape(field(res, "kind")),
                escape(field(res, "name")),
                outcome
            );
            for c in res
                .get("changes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let _ = writeln!(
                    out,
                    "      {}: {} -> {}",
                    escape(field(c, "field")),
                    escape(c.get("from").and_then(Value::as_str).unwrap_or("-")),
                    escape(c.get("to").and_then(Value::as_str).unwrap_or("-"))
                );
            }
            for d in res
                .get("diffs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                // The run report names a diff's text `text` (a masked diff of a file from
                // secrets included); `diff` is read too, as earlier records may have it.
                if let Some(text) = d
                    .get("text")
                    .or_else(|| d.get("diff"))
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    let _ = writeln!(
                        out,
                        "      {}\n        {}",
                        escape(field(d, "path")),
                        escape_block(text.trim_end(), "        ")
                    );
                }
            }
            if let Some(e) = res.get("error").and_then(Value::as_str) {
                let _ = writeln!(out, "      error: {}", escape_block(e, "        "));
            }
        }
        for p in h
            .get("prune")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(
                out,
                "  remove {}/{}",
                escape(field(p, "kind")),
                escape(field(p, "name"))
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostile() -> RunRecord {
        RunRecord {
            id: "20261203T093932Z-00abcd".into(),
            started_at: 1_764_754_772,
            duration_ms: 1500,
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            summary: "fix\x1b]0;pwned\x07 motd\nFAKE LINE".into(),
            trigger: "webhook".into(),
            exit_code: 1,
            hosts: 2,
            changed: 1,
            failed: 1,
            changed_hosts: vec!["h0".into()],
            failed_hosts: vec!["h1\x1b[31m".into()],
            error: None,
            ..Default::default()
        }
    }

    #[test]
    fn held_back_commits_are_listed_escaped_with_why() {
        assert_eq!(bad_text(&[]), "");
        let bad = crate::rollback::BadCommit {
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            summary: "evil\x1b[2J".into(),
            marked_at: 1_764_754_772,
            run_id: "20261203T093932Z-00abcd".into(),
            reason: "host h0: Command/check: rejected\nFAKE".into(),
            rolled_back_to: None,
        };
        let text = bad_text(&[bad]);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("HELD BACK"), "{text}");
        assert!(
            text.contains("0123456789ab evil\\e[2J (run 20261203T093932Z-00abcd, 2025-12-03 09:39:32 UTC): host h0: Command/check: rejected\\nFAKE; nothing to roll back to"),
            "{text}"
        );
        let mut run = hostile();
        run.marked_bad = true;
        run.rolled_back_to = Some("fedcba9876543210fedcba9876543210fedcba98".into());
        let shown = show_text(&run, None);
        assert!(
            shown.contains("gates    FAILED: commit marked bad; rolled back to fedcba98"),
            "{shown}"
        );
    }

    #[test]
    fn the_list_escapes_what_the_log_holds() {
        let text = list_text(&[hostile()]);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(!text.contains('\x07'), "{text:?}");
        assert_eq!(text.lines().count(), 2, "{text}");
        let line = text.lines().nth(1).unwrap();
        assert!(
            line.starts_with(
                "20261203T093932Z-00abcd 2025-12-03 09:39:32 webhook   0123456789ab failed"
            ),
            "{line}"
        );
        assert!(line.contains("h1\\e[31m"), "{line}");
        assert!(
            line.contains("fix\\e]0;pwned\\x07 motd\\nFAKE LINE"),
            "{line}"
        );
    }

    #[test]
    fn a_run_is_shown_host_by_host_escaped() {
        let report = serde_json::json!({
            "schema": "plumb.run/v1",
            "hosts": [
                {"host": "h0", "status": "changed", "resources": [
                    {"kind": "File", "name": "/etc/motd", "action": "update",
                     "changes": [{"field": "content", "from": "aaaa", "to": "bbbb"}],
                     "diffs": [{"path": "/etc/motd", "diff": "-v1\n+v2\x1b[2J\n"}],
                     "outcome": {"result": "applied"}}
                ]},
                {"host": "h1", "status": "failed", "error": "ssh: refused\n\x1b[1mroot# rm -rf", "resources": []}
            ]
        });
        let text = show_text(&hostile(), Some(&report));
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("  update File//etc/motd [applied]"), "{text}");
        assert!(text.contains("      content: aaaa -> bbbb"), "{text}");
        assert!(text.contains("+v2\\e[2J"), "{text}");
        // The host's error stays indented under its host: it cannot pass for plumb's own line.
        assert!(
            text.contains("  error: ssh: refused\n    \\e[1mroot# rm -rf"),
            "{text}"
        );
        // The field the run report writes: `text` (here a masked diff).
        let report = serde_json::json!({
            "schema": "plumb.run/v1",
            "hosts": [
                {"host": "h0", "status": "changed", "resources": [
                    {"kind": "File", "name": "/etc/db.conf", "action": "update",
                     "diffs": [{"path": "/etc/db.conf", "masked": true,
                                "text": "--- a/etc/db.conf (secrets masked)\n+++ b/etc/db.conf (secrets masked)\n-image: 1\n+image: 2\n"}]}
                ]}
            ]
        });
        let text = show_text(&hostile(), Some(&report));
        assert!(
            text.contains("(secrets masked)") && text.contains("+image: 2"),
            "{text}"
        );
        let none = show_text(&hostile(), None);
        assert!(none.contains("no per-host report"), "{none}");
    }
}
