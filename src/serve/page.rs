//! The status page of `plumb serve` (`GET /` and `/status.html`): one self-contained HTML page,
//! readable without JavaScript and refreshing itself, with what is applied, the run in progress,
//! the last runs, and per host its last result, what failed and what drifted. Every value comes
//! from the run history or a forge and is HTML-escaped; the page loads nothing else, and the
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
.failed{color:#b00;font-weight:bold}.changed{color:#a60}.drift{color:#83a}\
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
    match report {
        Some(r) => {
            o.push_str("<h2>Hosts</h2>\n");
            hosts_table(&mut o, r);
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
    if let Some(l) = &d.runs.last_run
        && let Some(e) = &l.outcome.error
    {
        let _ = writeln!(
            o,
            "<p class=\"failed\">The last run failed: <pre>{}</pre></p>",
            html(e)
        );
    }

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
        }
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
                if r.dry_run { " (dry run)" } else { "" },
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
}
