//! The controller's run history, behind one small interface: every run of `plumb pull` and
//! `plumb serve` appends one JSON line to `runs.jsonl` in the state folder (what ran, when,
//! from which commit, why, the result, which hosts changed or failed), and the full run report
//! (`plumb.run/v1`, redacted as the run printed it) goes to `runs/<ID>.json`.
//!
//! Why JSON lines and not SQLite: one writer at a time already (the controller lock), appends
//! are atomic enough for lines this short, the file stays readable with `tail` and `jq`, and it
//! costs no new dependency. Bounded: past [`MAX_RUNS`] lines the oldest are dropped (the file
//! rewritten atomically) along with their reports.
//!
//! Everything read back is data from disk: callers escape it before showing it.

use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The most runs kept.
pub const MAX_RUNS: usize = 1000;

/// The index file in the state folder.
pub const INDEX: &str = "runs.jsonl";

/// The folder of full reports in the state folder.
pub const REPORTS: &str = "runs";

/// The longest line read back (longer ones are skipped as corrupt).
const MAX_LINE: usize = 64 * 1024;

/// The largest report read back.
const MAX_REPORT: u64 = 64 * 1024 * 1024;

/// One run, one line of `runs.jsonl`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id (`20261203T093932Z-1a2b3c`); empty in lines written before ids were kept.
    #[serde(default)]
    pub id: String,
    /// Unix time the run started.
    pub started_at: i64,
    /// Wall time.
    pub duration_ms: u64,
    /// The commit run.
    pub commit: String,
    /// Its summary line.
    pub summary: String,
    /// What started it: `pull`, `webhook`, `interval`, `startup`.
    #[serde(default)]
    pub trigger: String,
    /// A dry run.
    pub dry_run: bool,
    /// The exit code of the run (as `plumb pull`'s).
    pub exit_code: i32,
    /// Hosts in the run.
    pub hosts: usize,
    /// Hosts changed.
    pub changed: usize,
    /// Hosts failed.
    pub failed: usize,
    /// Names of the hosts changed.
    #[serde(default)]
    pub changed_hosts: Vec<String>,
    /// Names of the hosts failed.
    #[serde(default)]
    pub failed_hosts: Vec<String>,
    /// Why the run stopped before or outside the converge, or failed its gates (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The run failed its gates and its commit was marked bad (see [`crate::rollback`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub marked_bad: bool,
    /// After that, the last good commit re-applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<String>,
    /// This run is a rollback: it re-applied the last good commit instead of this bad one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
}

impl RunRecord {
    /// `unchanged`, `changed`, `drift` or `failed`, from the exit code and error; a rollback
    /// run that succeeded is `rolled_back` (never a success: the commit pushed is not applied).
    pub fn result(&self) -> &'static str {
        match self.exit_code {
            _ if self.error.is_some() || self.marked_bad => "failed",
            0 | 2 | 3 if self.rollback_of.is_some() => "rolled_back",
            0 => "unchanged",
            2 => "changed",
            3 => "drift",
            _ => "failed",
        }
    }
}

/// Problems with the history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Reading or writing a file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// Reading or writing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A run id that is not one plumb makes.
    #[error("`{0}` is not a run id (ids look like 20261203T093932Z-1a2b3c)")]
    BadId(String),
    /// No run with this id.
    #[error("no run {0} in the history")]
    NotFound(String),
    /// Encoding a record failed.
    #[error("encoding the run record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A run's start time as `YYYY-MM-DD HH:MM:SS` (UTC), or `-` when out of range.
pub fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                t.month() as u8,
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_else(|_| "-".into())
}

/// The first 12 characters of a commit id, as runs are listed.
pub fn short_commit(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// True for an id plumb could have made: letters, digits, `-` and `_`, 1 to 64 of them (so it is
/// a safe file name).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The history of one state folder.
#[derive(Clone, Debug)]
pub struct History {
    dir: PathBuf,
}

impl History {
    /// The history kept in `state_dir`.
    pub fn new(state_dir: &Path) -> History {
        History {
            dir: state_dir.to_path_buf(),
        }
    }

    fn index(&self) -> PathBuf {
        self.dir.join(INDEX)
    }

    fn report_path(&self, id: &str) -> PathBuf {
        self.dir.join(REPORTS).join(format!("{id}.json"))
    }

    /// Appends a run, with its full report when there is one, then drops the oldest runs past
    /// [`MAX_RUNS`]. Secrets are redacted from both.
    pub fn append(&self, record: &RunRecord, report: Option<&str>) -> Result<(), HistoryError> {
        self.append_bounded(record, report, MAX_RUNS)
    }

    fn append_bounded(
        &self,
        record: &RunRecord,
        report: Option<&str>,
        max: usize,
    ) -> Result<(), HistoryError> {
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| HistoryError::Io { what, path, source }
        };
        if let Some(report) = report.filter(|_| valid_id(&record.id)) {
            let dir = self.dir.join(REPORTS);
            std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
            let path = self.report_path(&record.id);
            crate::secrets::write_atomic(&path, crate::secrets::redact(report).as_bytes())
                .map_err(io("writing", &path))?;
        }
        let line = crate::secrets::redact(&serde_json::to_string(record)?);
        let index = self.index();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&index)
            .map_err(io("opening", &index))?;
        writeln!(f, "{line}").map_err(io("writing", &index))?;
        drop(f);
        self.trim(max)
    }

    /// Keeps the newest `max` lines and the reports they name.
    fn trim(&self, max: usize) -> Result<(), HistoryError> {
        let index = self.index();
        let text = match std::fs::read_to_string(&index) {
            Ok(t) => t,
            Err(source) => {
                return Err(HistoryError::Io {
                    what: "reading",
                    path: index,
                    source,
                });
            }
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.len() <= max {
            return Ok(());
        }
        let kept = &lines[lines.len() - max..];
        let mut out = kept.join("\n");
        out.push('\n');
        crate::secrets::write_atomic(&index, out.as_bytes()).map_err(|source| {
            HistoryError::Io {
                what: "writing",
                path: index.clone(),
                source,
            }
        })?;
        let keep: std::collections::HashSet<String> = kept
            .iter()
            .filter_map(|l| serde_json::from_str::<RunRecord>(l).ok())
            .map(|r| r.id)
            .collect();
        if let Ok(entries) = std::fs::read_dir(self.dir.join(REPORTS)) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".json")
                    && !keep.contains(id)
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// Every run, oldest first, and how many lines could not be read (corrupt or too long).
    /// Lines written before ids were kept get their line number as id.
    pub fn list(&self) -> Result<(Vec<RunRecord>, usize), HistoryError> {
        let index = self.index();
        let text = match std::fs::read(&index) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(source) => {
                return Err(HistoryError::Io {
                    what: "reading",
                    path: index,
                    source,
                });
            }
        };
        let mut runs = Vec::new();
        let mut bad = 0;
        for (n, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if line.len() > MAX_LINE {
                bad += 1;
                continue;
            }
            match serde_json::from_slice::<RunRecord>(line) {
                Ok(mut r) => {
                    if !valid_id(&r.id) {
                        r.id = format!("line-{}", n + 1);
                    }
                    runs.push(r);
                }
                Err(_) => bad += 1,
            }
        }
        Ok((runs, bad))
    }

    /// The newest `n` runs, oldest first.
    pub fn last(&self, n: usize) -> Result<Vec<RunRecord>, HistoryError> {
        let (mut runs, _) = self.list()?;
        let skip = runs.len().saturating_sub(n);
        runs.drain(..skip);
        Ok(runs)
    }

    /// The full report of run `id`, when it was kept.
    pub fn report(&self, id: &str) -> Result<Option<String>, HistoryError> {
        if !valid_id(id) {
            return Err(HistoryError::BadId(crate::text::escape(id).into_owned()));
        }
        let path = self.report_path(id);
        match std::fs::File::open(&path) {
            Ok(f) => {
                use std::io::Read as _;
                let mut s = String::new();
                f.take(MAX_REPORT)
                    .read_to_string(&mut s)
                    .map_err(|source| HistoryError::Io {
                        what: "reading",
                        path: path.clone(),
                        source,
                    })?;
                Ok(Some(s))
            }
            Err(_) => Ok(None),
        }
    }

    /// One run and its full report (the `plumb.run/v1` JSON), when it was kept.
    pub fn show(&self, id: &str) -> Result<(RunRecord, Option<String>), HistoryError> {
        if !valid_id(id) {
            return Err(HistoryError::BadId(crate::text::escape(id).into_owned()));
        }
        let (runs, _) = self.list()?;
        let Some(run) = runs.into_iter().rev().find(|r| r.id == id) else {
            return Err(HistoryError::NotFound(id.to_string()));
        };
        let report = self.report(id)?;
        Ok((run, report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, exit_code: i32) -> RunRecord {
        RunRecord {
            id: id.into(),
            started_at: 1_700_000_000,
            duration_ms: 1200,
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            summary: "a commit".into(),
            trigger: "webhook".into(),
            exit_code,
            hosts: 2,
            changed: 1,
            changed_hosts: vec!["h0".into()],
            ..Default::default()
        }
    }

    #[test]
    fn runs_are_appended_listed_and_shown_with_their_report() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path());
        assert_eq!(h.list().unwrap(), (Vec::new(), 0));
        h.append(
            &record("20261203T093932Z-000001", 2),
            Some("{\"hosts\":[]}"),
        )
        .unwrap();
        h.append(&record("20261203T093933Z-000002", 1), None)
            .unwrap();
        let (runs, bad) = h.list().unwrap();
        assert_eq!((runs.len(), bad), (2, 0));
        assert_eq!(runs[0].result(), "changed");
        assert_eq!(runs[1].result(), "failed");
        let (run, report) = h.show("20261203T093932Z-000001").unwrap();
        assert_eq!(run.changed_hosts, ["h0"]);
        assert_eq!(report.as_deref(), Some("{\"hosts\":[]}"));
        let (_, report) = h.show("20261203T093933Z-000002").unwrap();
        assert!(report.is_none());
        assert!(matches!(h.show("nope"), Err(HistoryError::NotFound(_))));
        for bad in ["../etc/passwd", "", "a/b", "a\x1b[2J"] {
            assert!(
                matches!(h.show(bad), Err(HistoryError::BadId(_))),
                "{bad:?}"
            );
        }
        assert_eq!(h.last(1).unwrap()[0].id, "20261203T093933Z-000002");
    }

    #[test]
    fn old_and_corrupt_lines_are_read_or_counted() {
        let dir = tempfile::tempdir().unwrap();
        // A line as plumb wrote it before ids, triggers and host names were kept.
        std::fs::write(
            dir.path().join(INDEX),
            "{\"started_at\":1,\"duration_ms\":5,\"commit\":\"abc\",\"summary\":\"s\",\"dry_run\":false,\"exit_code\":2,\"hosts\":1,\"changed\":1,\"failed\":0}\nnot json\n\n",
        )
        .unwrap();
        let h = History::new(dir.path());
        let (runs, bad) = h.list().unwrap();
        assert_eq!((runs.len(), bad), (1, 1));
        assert_eq!(runs[0].id, "line-1");
        assert_eq!(runs[0].trigger, "");
        assert!(h.show("line-1").is_ok());
    }

    #[test]
    fn the_history_is_bounded_and_drops_old_reports() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path());
        for i in 0..7 {
            h.append_bounded(&record(&format!("run-{i}"), 0), Some("{}"), 3)
                .unwrap();
        }
        let (runs, _) = h.list().unwrap();
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["run-4", "run-5", "run-6"]);
        let mut reports: Vec<String> = std::fs::read_dir(dir.path().join(REPORTS))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        reports.sort();
        assert_eq!(reports, ["run-4.json", "run-5.json", "run-6.json"]);
    }
}
