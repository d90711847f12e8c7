//! The status page of `plumb serve` (`GET /` and `/status.html`): one self-contained HTML page,
//! readable without JavaScript and refreshing itself, with what is applied, the run in progress,
//! the commits held back after failing their gates, the last runs, per host its last result,
//! what failed and what drifted, per cluster its health (leader, replicas, lag), and every
//! certificate's days left. Every value comes from the state folder (the run history, the last
//! certificate reading) or a forge and is HTML-escaped; the page loads nothing else, and the
//! response's Content-Security-Policy allows nothing but its own inline style (by hash).

use super::runner::Snapshot;
use crate::history::RunRecord;
use crate::text::html;
use serde_json::Value;
use std::fmt::Write as _;

/// The page's only style, allowed by its hash in [`content_security_policy`].
const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}code,pre{font:12px ui-monospace,monospace}\
pre{margin:0;white-space:pre-wrap;max-width:60em}\
.failed,.rolled_back,.unhealthy,.expired{color:#b00;font-weight:bold}\
.changed,.reissue,.missing{color:#a60}.drift{color:#83a}.healthy,.ok{color:#080}\
.unchanged,.skipped{color:#080}.muted{color:#777}";

/// How often the page reloads itself, in seconds.
pub const REFRESH_SECS: u32 = 15;

/// The Content-Security-Policy of the page: nothing may load, run, frame it or be posted; only
/// its own inline style, by hash.
pub fn content_security_policy() -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// What the page shows.
pub struct PageData<'a> {
    /// The repo URL (credentials masked) and the branch followed.
    pub source: &'a str,
    /// The branch followed.
    pub branch: &'a str,
    /// The commit recorded as applied, if any.
    pub applied: Option<&'a str>,
    /// The runner's state.
    pub runs: &'a Snapshot,
    /// The newest runs from the history, newest first.
    pub history: &'a [RunRecord],
    /// The full report (`plumb.run/v1`) of the newest run that has one, with that run.
    pub last_report: Option<(&'a RunRecord, &'a Value)>,
    /// The commits held back after failing their gates, newest first.
    pub bad: &'a [crate::rollback::BadCommit],
    /// The last certificate reading (`plumb.certs/v1`), if one was kept.
    pub certs: Option<&'a Value>,
    /// Unix time now.
    pub now: u64,
}

fn when(unix: i64) -> String {
    match crate::history::format_time(unix) {
        t if t == "-" => t,
        t => format!("{t} UTC"),
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "<span class=\"muted\">-</span>".into()
    } else {
        names.iter().map(|n| html(n)).collect::<Vec<_>>().join(", ")
    }
}

/// A class name for a result word (only known words; anything else gets none).
fn class(result: &str) -> &'static str {
    match result {
        "failed" => "failed",
        "rolled_back" => "rolled_back",
        "held" => "failed",
        "changed" => "changed",
        "drift" => "drift",
        "unchanged" => "unchanged",
        "skipped" => "skipped",
        _ => "",
    }
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Per host of a `plumb.run/v1` report: its result, what changed, what drifted, what failed.
fn hosts_table(o: &mut String, report: &Value) {
    o.push_str(
        "<table><tr><th>Host</th><th>Result</th><th>Changed</th><th>Drift</th><th>What failed</th></tr>\n",
    );
    for h in report
        .get("hosts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let status = field(h, "status");
        let resources: Vec<&Value> = h
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        let named = |r: &Value| format!("{}/{}", field(r, "kind"), field(r, "name"));
        let failed_outcome = |r: &Value| {
            r.get("outcome").is_some_and(|o| {
                matches!(field(o, "result"), "failed" | "conflict" | "not_reached")
            })
        };
        let changed: Vec<String> = resources
            .iter()
            .filter(|r| !matches!(field(r, "action"), "none" | "drift"))
            .filter(|r| !failed_outcome(r))
            .map(|r| named(r))
            .collect();
        let drift: Vec<String> = resources
            .iter()
            .filter(|r| field(r, "action") == "drift")
            .map(|r| named(r))
            .collect();
        let mut failures: Vec<String> = Vec::new();
        if let Some(e) = h.get("error").and_then(Value::as_str) {
            failures.push(e.to_string());
        }
        for r in &resources {
            if let Some(e) = r.get("error").and_then(Value::as_str) {
                failures.push(format!("{}: {e}", named(r)));
            } else if failed_outcome(r) {
                let o = r.get("outcome").unwrap_or(&Value::Null);
                let why = match (field(o, "result"), field(o, "detail")) {
                    ("not_reached", _) => "not reached (an earlier step failed)".into(),
                    ("conflict", d) => format!("changed on the host since planned ({d})"),
                    (_, d) => d.to_string(),
                };
                failures.push(format!("{}: {why}", named(r)));
            }
        }
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html(field(h, "host")),
            class(status),
            html(status),
            list(&changed),
            list(&drift),
            if failures.is_empty() {
                "<span class=\"muted\">-</span>".to_string()
            } else {
                failures
                    .iter()
                    .map(|f| format!("<pre>{}</pre>", html(f)))
                    .collect::<String>()
            }
        );
    }
    o.push_str("</table>\n");
}

fn muted(text: &str) -> String {
    format!("<span class=\"muted\">{}</span>", html(text))
}

/// A cluster's `backups` in a `plumb.run/v1` report: the newest backup of each type with when
/// it ended, and the warnings (none older than its schedule allows, none at all).
fn backups_cell(c: &Value) -> String {
    let Some(b) = c.get("backups").filter(|b| b.is_object()) else {
        return muted("not read");
    };
    let mut out: Vec<String> = b
        .get("newest")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|n| {
            format!(
                "{} <code>{}</code>, ended {}",
                html(field(n, "type")),
                html(field(n, "label")),
                html(&when(n.get("stop").and_then(Value::as_i64).unwrap_or(0)))
            )
        })
        .collect();
    if out.is_empty() {
        out.push(format!(
            "<span class=\"failed\">no backup</span> ({})",
            html(field(b, "status"))
        ));
    }
    out.extend(
        b.get("warnings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|w| format!("<span class=\"failed\">{}</span>", html(w))),
    );
    out.join("<br>")
}

/// Per cluster of a `plumb.run/v1` report: its health after the run, its leader, each
/// member's role, state, replication and lag, and the newest backups.
fn clusters_table(o: &mut String, report: &Value) {
    let clusters: Vec<&Value> = report
        .get("clusters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if clusters.is_empty() {
        return;
    }
    o.push_str("<h2>Clusters</h2>\n<table><tr><th>Cluster</th><th>Health</th><th>Leader</th><th>Members</th><th>Newest backups</th><th>Why not healthy</th></tr>\n");
    for c in clusters {
        let status = field(c, "status");
        let members: Vec<&Value> = c
            .get("members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        let leader: Vec<&str> = members
            .iter()
            .filter(|m| matches!(field(m, "role"), "leader" | "standby_leader"))
            .map(|m| field(m, "name"))
            .collect();
        let mut rows = String::new();
        for m in &members {
            let lag = m
                .get("lag_bytes")
                .and_then(Value::as_u64)
                .map_or_else(|| "-".to_string(), |b| format!("{b} B"));
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html(field(m, "name")),
                html(or_dash(field(m, "role"))),
                html(or_dash(field(m, "state"))),
                html(or_dash(field(m, "replication_state"))),
                html(&lag),
            );
        }
        let mut why: Vec<String> = c
            .get("reasons")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        if let Some(e) = c.get("error").and_then(Value::as_str) {
            why.push(e.to_string());
        }
        let status_class = match status {
            "healthy" => "healthy",
            "unhealthy" => "unhealthy",
            _ => "",
        };
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=\"{status_class}\">{}</td><td class=\"leader\">{}</td>\
             <td><table><tr><th>Member</th><th>Role</th><th>State</th><th>Replication</th><th>Lag</th></tr>{rows}</table></td><td>{}</td><td>{}</td></tr>",
            html(field(c, "cluster")),
            html(status),
            if leader.is_empty() {
                "<span class=\"failed\">none</span>".to_string()
            } else {
                leader
                    .iter()
                    .map(|l| html(l))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            backups_cell(c),
            if why.is_empty() {
                muted("-")
            } else {
                why.iter()
                    .map(|w| format!("<pre>{}</pre>", html(w)))
                    .collect()
            },
        );
    }
    o.push_str("</table>\n");
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Every certificate of the last reading (`plumb.certs/v1`), with its days left counted from
/// now.
fn certs_table(o: &mut String, certs: &Value, now: u64) {
    let list: Vec<&Value> = certs
        .get("certificates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let failed: Vec<&Value> = certs
        .get("failed")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if list.is_empty() && failed.is_empty() {
        return;
    }
    let checked = certs.get("checked_at").and_then(Value::as_i64).unwrap_or(0);
    let _ = writeln!(
        o,
        "<h2>Certificates</h2>\n<p>As read on the hosts after the last run ({}).</p>\n\
         <table><tr><th>Host</th><th>Path</th><th>CA</th><th>Expires</th><th>Days left</th><th>Standing</th></tr>",
        when(checked)
    );
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    for c in list {
        let not_after = c.get("not_after").and_then(Value::as_i64);
        let days = not_after.map(|t| t.saturating_sub(now).div_euclid(86_400));
        let health = field(c, "health");
        let standing = match (health, days) {
            (_, Some(d)) if d < 0 => ("expired", "expired".to_string()),
            ("ok", _) => ("ok", "ok".to_string()),
            ("missing", _) => ("missing", "missing".to_string()),
            (h, _) => (
                "reissue",
                match c.get("reason").and_then(Value::as_str) {
                    Some(r) => format!("{h}: {r}"),
                    None => h.to_string(),
                },
            ),
        };
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            html(field(c, "host")),
            html(field(c, "path")),
            html(field(c, "ca")),
            not_after.map_or_else(|| muted("-"), when),
            days.map_or_else(|| muted("-"), |d| d.to_string()),
            standing.0,
            html(&standing.1),
        );
    }
    for f in failed {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td colspan=\"5\" class=\"failed\">not read: {}</td></tr>",
            html(field(f, "host")),
            html(field(f, "error"))
        );
    }
    o.push_str("</table>\n");
}

/// The commits held back after failing their gates.
fn bad_table(o: &mut String, bad: &[crate::rollback::BadCommit]) {
    if bad.is_empty() {
        return;
    }
    o.push_str("<h2>Held back</h2>\n<p>These commits failed their gates and are not applied again until a newer commit arrives (<code>--retry-bad</code> tries the branch's commit again).</p>\n\
        <table><tr><th>Commit</th><th>Marked</th><th>Run</th><th>Why</th><th>Rolled back to</th></tr>\n");
    for b in bad {
        let _ = writeln!(
            o,
            "<tr><td><code>{}</code> {}</td><td>{}</td><td><a href=\"/runs/{}\"><code>{}</code></a></td><td><pre>{}</pre></td><td>{}</td></tr>",
            html(crate::history::short_commit(&b.commit)),
            html(&b.summary),
            when(b.marked_at),
            html(&b.run_id),
            html(&b.run_id),
            html(&b.reason),
            b.rolled_back_to.as_deref().map_or_else(
                || muted("nothing to roll back to"),
                |c| format!("<code>{}</code>", html(crate::history::short_commit(c)))
            ),
        );
    }
    o.push_str("</table>\n");
}

/// What follows a run's result in the list: a dry run, a commit marked bad and where it was
/// rolled back to.
fn rollback_note(r: &RunRecord) -> String {
    let mut note = String::new();
    if r.dry_run {
        note.push_str(" (dry run)");
    }
    if r.marked_bad {
        match &r.rolled_back_to {
            Some(c) => {
                let _ = write!(
                    note,
                    " (marked bad; rolled back to <code>{}</code>)",
                    html(crate::history::short_commit(c))
                );
            }
            None => note.push_str(" (marked bad; nothing to roll back to)"),
        }
    }
    note
}

/// One run's page (`GET /runs/ID`): its record and its hosts.
pub fn render_run(run: &RunRecord, report: Option<&Value>) -> String {
    let mut o = String::with_capacity(4096);
    let _ = writeln!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>plumb run {}</title><style>{STYLE}</style></head><body>\n\
         <p><a href=\"/\">&larr; status</a></p><h1>Run <code>{}</code></h1>",
        html(&run.id),
        html(&run.id)
    );
    let result = run.result();
    let _ = writeln!(
        o,
        "<table><tr><th>Started</th><td>{}</td></tr><tr><th>Duration</th><td>{:.1}s</td></tr>\
         <tr><th>Trigger</th><td>{}</td></tr><tr><th>Commit</th><td><code>{}</code> {}</td></tr>\
         <tr><th>Result</th><td class=\"{}\">{}{} (exit {})</td></tr>\
         <tr><th>Changed hosts</th><td>{}</td></tr><tr><th>Failed hosts</th><td>{}</td></tr></table>",
        when(run.started_at),
        run.duration_ms as f64 / 1000.0,
        html(if run.trigger.is_empty() {
            "-"
        } else {
            &run.trigger
        }),
        html(&run.commit),
        html(&run.summary),
        class(result),
        result,
        if run.dry_run { " (dry run)" } else { "" },
        run.exit_code,
        list(&run.changed_hosts),
        list(&run.failed_hosts),
    );
    if let Some(e) = &run.error {
        let _ = writeln!(o, "<p class=\"failed\">Error:</p><pre>{}</pre>", html(e));
    }
    if run.marked_bad {
        let _ = writeln!(
            o,
            "<p class=\"failed\">This commit failed its gates and is held back; {}.</p>",
            run.rolled_back_to.as_deref().map_or_else(
                || "there was nothing to roll back to".to_string(),
                |c| format!("rolled back to <code>{}</code>", html(c))
            )
        );
    }
    if let Some(bad) = &run.rollback_of {
        let _ = writeln!(
            o,
            "<p class=\"rolled_back\">A rollback: the last good commit applied again after <code>{}</code> failed its gates.</p>",
            html(bad)
        );
    }
    match report {
        Some(r) => {
            o.push_str("<h2>Hosts</h2>\n");
            hosts_table(&mut o, r);
            clusters_table(&mut o, r);
        }
        None => o.push_str("<p class=\"muted\">No per-host report was kept for this run.</p>\n"),
    }
    o.push_str("</body></html>\n");
    o
}

/// The page.
pub fn render(d: &PageData<'_>) -> String {
    let mut o = String::with_capacity(8192);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>plumb: {}</title><style>{STYLE}</style></head><body>\n",
        html(d.branch)
    );
    let _ = writeln!(
        o,
        "<h1>plumb</h1>\n<p>Following <code>{}</code> branch <code>{}</code>.</p>",
        html(d.source),
        html(d.branch)
    );
    match d.applied {
        Some(c) => {
            let _ = writeln!(o, "<p>Applied commit: <code>{}</code>", html(c));
            if let Some(r) = d.history.iter().find(|r| r.commit == c) {
                let _ = write!(o, " ({})", html(&r.summary));
            }
            o.push_str("</p>\n");
        }
        None => o.push_str("<p>No commit applied yet.</p>\n"),
    }
    match &d.runs.current {
        Some(c) => {
            let _ = writeln!(
                o,
                "<p><strong>Run in progress</strong> ({}, started {}s ago){}.</p>",
                html(&format!("{:?}", c.trigger).to_lowercase()),
                d.now.saturating_sub(c.started_at),
                if d.runs.queued {
                    "; another is queued"
                } else {
                    ""
                }
            );
        }
        None => o.push_str("<p>Idle.</p>\n"),
    }
    if let Some(l) = &d.runs.last_run {
        if let Some(e) = &l.outcome.error {
            let what = match (&l.outcome.rolled_back_to, l.outcome.rollback_failed) {
                (Some(_), true) => "The last run FAILED, and so did its rollback",
                (Some(_), false) => "The last run FAILED and was rolled back",
                (None, _) => "The last run FAILED",
            };
            let _ = writeln!(o, "<p class=\"failed\">{what}:</p><pre>{}</pre>", html(e));
        }
        if let Some(c) = &l.outcome.held {
            let _ = writeln!(
                o,
                "<p class=\"failed\">The branch is at <code>{}</code>, which failed its gates: held back, not applied.</p>",
                html(c)
            );
        }
    }
    bad_table(&mut o, d.bad);

    o.push_str("<h2>Hosts</h2>\n");
    match d.last_report {
        None => o.push_str("<p class=\"muted\">No run with a per-host report yet.</p>\n"),
        Some((run, report)) => {
            let _ = writeln!(
                o,
                "<p>As of run <code>{}</code> ({}, commit <code>{}</code>).</p>",
                html(&run.id),
                when(run.started_at),
                html(crate::history::short_commit(&run.commit))
            );
            hosts_table(&mut o, report);
            clusters_table(&mut o, report);
        }
    }
    if let Some(c) = d.certs {
        certs_table(&mut o, c, d.now);
    }

    o.push_str("<h2>Last runs</h2>\n");
    if d.history.is_empty() {
        o.push_str("<p class=\"muted\">No run recorded yet.</p>\n");
    } else {
        o.push_str(
            "<table><tr><th>Run</th><th>Started</th><th>Trigger</th><th>Commit</th><th>Duration</th><th>Result</th><th>Changed hosts</th><th>Failed hosts</th></tr>\n",
        );
        for r in d.history {
            let result = r.result();
            let _ = writeln!(
                o,
                "<tr><td><a href=\"/runs/{}\"><code>{}</code></a></td><td>{}</td><td>{}</td><td><code>{}</code> {}</td><td>{:.1}s</td><td class=\"{}\">{}{}</td><td>{}</td><td>{}</td></tr>",
                html(&r.id),
                html(&r.id),
                when(r.started_at),
                html(if r.trigger.is_empty() {
                    "-"
                } else {
                    &r.trigger
                }),
                html(crate::history::short_commit(&r.commit)),
                html(&r.summary),
                r.duration_ms as f64 / 1000.0,
                class(result),
                result,
                rollback_note(r),
                list(&r.changed_hosts),
                list(&r.failed_hosts),
            );
        }
        o.push_str("</table>\n");
    }
    let _ = writeln!(
        o,
        "<p class=\"muted\">Runs since start: {}. JSON: <code>/status</code>; Prometheus: <code>/metrics</code>. This page reloads every {REFRESH_SECS}s.</p>\n</body></html>",
        d.runs
            .runs_total
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_strings_come_out_escaped_and_the_policy_allows_only_the_style() {
        let evil = RunRecord {
            id: "20261203T093932Z-00abcd".into(),
            started_at: 1_764_754_772,
            duration_ms: 2500,
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            summary: "<script>alert(1)</script>".into(),
            trigger: "webhook".into(),
            exit_code: 1,
            hosts: 2,
            changed: 1,
            failed: 1,
            changed_hosts: vec!["web\"><img src=x onerror=alert(2)>".into()],
            failed_hosts: vec!["db1".into()],
            ..Default::default()
        };
        let report = serde_json::json!({"hosts": [
            {"host": "db1", "status": "failed", "error": "sshd said </pre><script>alert(3)</script>",
             "resources": [{"kind": "File", "name": "/etc/<b>x", "action": "update",
                            "outcome": {"result": "failed", "detail": "exit 1: <iframe src=//evil>"}}]},
            {"host": "web\"><img src=x onerror=alert(2)>", "status": "drift",
             "resources": [{"kind": "File", "name": "/etc/app.conf", "action": "drift"}]}
        ]});
        let runs = Snapshot::default();
        let page = render(&PageData {
            source: "https://example.invalid/<x>.git",
            branch: "main",
            applied: Some("0123456789abcdef0123456789abcdef01234567"),
            runs: &runs,
            history: std::slice::from_ref(&evil),
            last_report: Some((&evil, &report)),
            bad: &[],
            certs: None,
            now: 1_764_754_800,
        });
        for bad in ["<script", "<img", "<iframe", "<b>", "onerror=alert(2)>"] {
            assert!(!page.contains(bad), "{bad} in\n{page}");
        }
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(
            page.contains("&lt;/pre&gt;&lt;script&gt;alert(3)"),
            "{page}"
        );
        assert!(
            page.contains("File//etc/&lt;b&gt;x: exit 1: &lt;iframe"),
            "{page}"
        );
        assert!(page.contains("<td class=\"drift\">drift</td><td><span class=\"muted\">-</span></td><td>File//etc/app.conf</td>"), "{page}");
        assert!(page.contains("<meta http-equiv=\"refresh\""), "{page}");
        // The policy's hash is the style's: a browser applies the style and nothing else.
        let csp = content_security_policy();
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(page.contains(&format!("<style>{STYLE}</style>")));
        assert!(
            page.contains("<a href=\"/runs/20261203T093932Z-00abcd\">"),
            "{page}"
        );
        // One run's page: the same escaping, its hosts.
        let run = render_run(&evil, Some(&report));
        for bad in ["<script", "<img", "<iframe", "<b>"] {
            assert!(!run.contains(bad), "{bad} in\n{run}");
        }
        assert!(
            run.contains("<td>db1</td><td class=\"failed\">failed</td>"),
            "{run}"
        );
        assert!(render_run(&evil, None).contains("No per-host report"));
    }

    #[test]
    fn clusters_certificates_and_held_back_commits_are_shown_escaped() {
        let run = RunRecord {
            id: "20261203T093932Z-00abcd".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            exit_code: 1,
            marked_bad: true,
            rolled_back_to: Some("fedcba9876543210fedcba9876543210fedcba98".into()),
            ..Default::default()
        };
        let report = serde_json::json!({
            "hosts": [{"host": "pg1", "status": "unchanged"}, {"host": "pg2", "status": "unchanged"}],
            "clusters": [{
                "cluster": "pg<main>", "status": "unhealthy",
                "reasons": ["pg2: replication <b>stopped</b>"],
                "backups": {"stanza": "pg", "status": "ok", "newest": [
                    {"type": "full", "label": "20261203-093000F<z>", "stop": 1_764_754_200, "age_secs": 600}
                ], "warnings": ["the newest diff is <old>"]},
                "members": [
                    {"name": "pg1", "role": "leader", "state": "running", "lag_bytes": null},
                    {"name": "pg2", "role": "replica", "state": "running", "replication_state": "catchup", "lag_bytes": 4096}
                ]
            }]
        });
        let now = 1_764_754_800u64;
        let certs = serde_json::json!({
            "schema": "plumb.certs/v1", "checked_at": now,
            "certificates": [
                {"host": "pg1", "path": "/etc/tls/<x>.crt", "ca": "ca", "health": "ok",
                 "not_after": now as i64 + 40 * 86_400 + 10, "days_left": 40, "renew_before": "30d"},
                {"host": "pg2", "path": "/etc/tls/b.crt", "ca": "ca", "health": "reissue",
                 "reason": "expired", "not_after": now as i64 - 86_400, "days_left": -1, "renew_before": "30d"}
            ],
            "failed": [{"host": "pg3", "error": "connection <refused>"}]
        });
        let bad = [crate::rollback::BadCommit {
            commit: run.commit.clone(),
            summary: "<i>breaks</i>".into(),
            marked_at: 1_764_754_772,
            run_id: run.id.clone(),
            reason: "host pg1: Command/check: <exit 3>".into(),
            rolled_back_to: run.rolled_back_to.clone(),
        }];
        let runs = Snapshot::default();
        let page = render(&PageData {
            source: "/srv/git/fleet.git",
            branch: "main",
            applied: None,
            runs: &runs,
            history: std::slice::from_ref(&run),
            last_report: Some((&run, &report)),
            bad: &bad,
            certs: Some(&certs),
            now,
        });
        assert!(
            page.contains("full <code>20261203-093000F&lt;z&gt;</code>, ended 2025-12-03 09:30"),
            "{page}"
        );
        assert!(page.contains("the newest diff is &lt;old&gt;"), "{page}");
        for bad in [
            "<main>",
            "<b>",
            "<x>",
            "<i>",
            "<exit",
            "<refused>",
            "<z>",
            "<old>",
        ] {
            assert!(!page.contains(bad), "{bad} in\n{page}");
        }
        assert!(page.contains("<h2>Clusters</h2>"), "{page}");
        assert!(page.contains("<td class=\"leader\">pg1</td>"), "{page}");
        assert!(
            page.contains(
                "<td>pg2</td><td>replica</td><td>running</td><td>catchup</td><td>4096 B</td>"
            ),
            "{page}"
        );
        assert!(page.contains("replication &lt;b&gt;stopped"), "{page}");
        assert!(page.contains("<h2>Certificates</h2>"), "{page}");
        assert!(
            page.contains("<td>40</td><td class=\"ok\">ok</td>"),
            "{page}"
        );
        assert!(
            page.contains("<td>-1</td><td class=\"expired\">expired</td>"),
            "{page}"
        );
        assert!(
            page.contains("not read: connection &lt;refused&gt;"),
            "{page}"
        );
        assert!(page.contains("<h2>Held back</h2>"), "{page}");
        assert!(
            page.contains("(marked bad; rolled back to <code>fedcba987654</code>)"),
            "{page}"
        );
        // Without a leader the page says so.
        let leaderless = serde_json::json!({"hosts": [], "clusters": [{"cluster": "c", "status": "unhealthy", "members": [{"name": "a", "role": "replica"}]}]});
        let mut o = String::new();
        clusters_table(&mut o, &leaderless);
        assert!(
            o.contains("<td class=\"leader\"><span class=\"failed\">none</span></td>"),
            "{o}"
        );
    }
}
