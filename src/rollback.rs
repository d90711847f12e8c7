//! Health-gated rollback: what `plumb pull` and `plumb serve` decide when the branch moves, and
//! the commits held back because a run of them failed its gates.
//!
//! A run of a new commit *fails its gates* when a host it reached failed (a step failed, a
//! plan could not be made, the apply stopped early), a cluster did not come back healthy, or the
//! run's watchdog fired. Then the driver re-applies the last good commit (the one recorded as
//! applied) and marks the new commit bad here, so that neither the timer nor a webhook applies
//! it again: the branch has to move to a newer commit, or an operator asks for it on purpose
//! (`--retry-bad`). A host that could not even be reached says nothing about the commit: that
//! run fails, but nothing is rolled back or marked.
//!
//! Marks are kept by commit id and are not cleared when a newer commit applies: a force-push
//! back to a bad id brings back the very same tree, which would fail the same way.
//!
//! The store is one small JSON file in the state folder (`bad-commits.json`), written
//! atomically under the controller lock, bounded to [`MAX_BAD`] entries. Everything read back
//! is data from disk: callers escape it before showing it.

use crate::report::{HostStatus, RunReport};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file in the state folder.
pub const FILE: &str = "bad-commits.json";

/// The most marks kept (the oldest go first).
pub const MAX_BAD: usize = 200;

/// The largest file read back.
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// A commit held back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadCommit {
    /// The commit id.
    pub commit: String,
    /// Its summary line.
    pub summary: String,
    /// Unix time it was marked.
    pub marked_at: i64,
    /// The run that failed its gates.
    pub run_id: String,
    /// Why (which hosts or clusters failed, and how), secrets redacted.
    pub reason: String,
    /// The commit re-applied instead, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<String>,
}

/// Problems with the store.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// Reading or writing the file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// Reading or writing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not what plumb writes.
    #[error("{path} is not a list of bad commits ({message}); move it away to start afresh")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
}

/// The bad commits of one state folder.
#[derive(Clone, Debug)]
pub struct BadCommits {
    path: PathBuf,
}

impl BadCommits {
    /// The store kept in `state_dir`.
    pub fn new(state_dir: &Path) -> BadCommits {
        BadCommits {
            path: state_dir.join(FILE),
        }
    }

    /// Every mark, oldest first.
    pub fn list(&self) -> Result<Vec<BadCommit>, RollbackError> {
        use std::io::Read as _;
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RollbackError::Io {
                    what: "reading",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut text = Vec::new();
        file.take(MAX_FILE)
            .read_to_end(&mut text)
            .map_err(|source| RollbackError::Io {
                what: "reading",
                path: self.path.clone(),
                source,
            })?;
        serde_json::from_slice(&text).map_err(|e| RollbackError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// The mark of `commit`, if it is bad.
    pub fn get(&self, commit: &str) -> Result<Option<BadCommit>, RollbackError> {
        Ok(self.list()?.into_iter().rev().find(|b| b.commit == commit))
    }

    /// Marks a commit bad (replacing an older mark of the same commit), keeping the newest
    /// [`MAX_BAD`].
    pub fn mark(&self, bad: BadCommit) -> Result<(), RollbackError> {
        let mut all = self.list()?;
        all.retain(|b| b.commit != bad.commit);
        all.push(bad);
        let skip = all.len().saturating_sub(MAX_BAD);
        all.drain(..skip);
        self.write(&all)
    }

    /// Clears the mark of `commit` (a retry of it passed); says whether there was one.
    pub fn unmark(&self, commit: &str) -> Result<bool, RollbackError> {
        let mut all = self.list()?;
        let before = all.len();
        all.retain(|b| b.commit != commit);
        if all.len() == before {
            return Ok(false);
        }
        self.write(&all)?;
        Ok(true)
    }

    fn write(&self, all: &[BadCommit]) -> Result<(), RollbackError> {
        let text = serde_json::to_string_pretty(all).unwrap_or_else(|_| "[]".into()) + "\n";
        crate::secrets::write_atomic(&self.path, crate::secrets::redact(&text).as_bytes()).map_err(
            |source| RollbackError::Io {
                what: "writing",
                path: self.path.clone(),
                source,
            },
        )
    }
}

/// What to do with the commit the branch is at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It is the commit applied last, and no drift repair was asked: nothing to do.
    AlreadyApplied,
    /// It was marked bad: do not apply it. With `repair`, converge that commit instead (the
    /// last good one, for a drift repair the interval or `--always` asked for).
    Held {
        /// Why it is held back.
        bad: BadCommit,
        /// The last good commit to converge instead.
        repair: Option<String>,
    },
    /// Converge it; `new` when it is not the commit applied last (so a failure of its gates
    /// rolls back to that one).
    Run {
        /// Not the commit applied last.
        new: bool,
    },
}

/// Decides what a pull does with `head`, the commit the branch is at.
pub fn decide(
    head: &str,
    applied: Option<&str>,
    bad: Option<BadCommit>,
    always: bool,
    retry_bad: bool,
) -> Decision {
    let new = applied != Some(head);
    if !new {
        // Marks are by id: the applied commit can hold one only if a retry of it passed and
        // the unmark failed; what is applied is what a drift repair repairs either way.
        return if always {
            Decision::Run { new: false }
        } else {
            Decision::AlreadyApplied
        };
    }
    match bad {
        Some(bad) if !retry_bad => Decision::Held {
            bad,
            repair: applied.filter(|_| always).map(str::to_string),
        },
        _ => Decision::Run { new: true },
    }
}

/// Why a run failed its gates, or `None` when it passed them, or failed only in ways that
/// say nothing about the commit (hosts that could not be reached).
pub fn gate_failure(report: &RunReport) -> Option<String> {
    let mut why: Vec<String> = Vec::new();
    if report.timed_out {
        why.push("the run exceeded its time limit (--run-timeout)".into());
    }
    for h in &report.hosts {
        // A host with no plan failed before planning (connection, lock, probe): unless the
        // watchdog stopped it, that is about the host, not the commit.
        if h.status(report.dry_run) != HostStatus::Failed || h.plan.is_none() {
            continue;
        }
        why.push(format!("host {}: {}", h.host, host_failure(h)));
    }
    for c in report.clusters.iter().filter(|c| c.failed()) {
        let detail = match (&c.error, c.reasons.is_empty()) {
            (Some(e), _) => e.clone(),
            (None, false) => c.reasons.join("; "),
            (None, true) => "not healthy".into(),
        };
        why.push(format!("cluster {}: {detail}", c.cluster));
    }
    if why.is_empty() {
        None
    } else {
        Some(crate::secrets::redact(&why.join("; ")))
    }
}

/// The first thing that failed on a host that was planned.
fn host_failure(h: &crate::report::HostRun) -> String {
    if let Some(e) = &h.error {
        return first_line(e);
    }
    let Some(plan) = &h.plan else {
        return "failed".into();
    };
    if let Some(r) = plan.errors().next() {
        return format!(
            "{}/{}: {}",
            r.kind,
            r.name,
            first_line(r.error.as_deref().unwrap_or("cannot be planned"))
        );
    }
    if let Some(o) = &h.outcome {
        if let Some(e) = &o.other_failure {
            return first_line(e);
        }
        for (r, out) in plan.resources.iter().zip(&o.resources) {
            match out {
                Some(crate::apply::Outcome::Failed(d)) => {
                    return format!("{}/{}: {}", r.kind, r.name, first_line(d));
                }
                Some(crate::apply::Outcome::Conflict(_)) => {
                    return format!("{}/{}: changed on the host since planned", r.kind, r.name);
                }
                _ => {}
            }
        }
    }
    "the apply did not complete".into()
}

/// The first line of a message, at most 300 characters (a reason is a summary; the run's
/// report has the rest).
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default().trim();
    match line.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(commit: &str) -> BadCommit {
        BadCommit {
            commit: commit.into(),
            summary: "breaks h0".into(),
            marked_at: 1_700_000_000,
            run_id: "20261203T093932Z-000001".into(),
            reason: "host h0: File//etc/x: exit 1".into(),
            rolled_back_to: Some("a".repeat(40)),
        }
    }

    #[test]
    fn marks_are_kept_by_id_replaced_bounded_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let s = BadCommits::new(dir.path());
        assert_eq!(s.list().unwrap(), []);
        assert_eq!(s.get("b").unwrap(), None);
        s.mark(bad("b")).unwrap();
        let mut again = bad("b");
        again.reason = "second".into();
        s.mark(again).unwrap();
        let all = s.list().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].reason, "second");
        assert!(s.unmark("b").unwrap());
        assert!(!s.unmark("b").unwrap());
        for i in 0..MAX_BAD + 5 {
            s.mark(bad(&format!("c{i}"))).unwrap();
        }
        let all = s.list().unwrap();
        assert_eq!(all.len(), MAX_BAD);
        assert_eq!(all[0].commit, "c5");
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        assert!(matches!(s.list(), Err(RollbackError::Corrupt { .. })));
    }

    #[test]
    fn a_bad_head_is_held_until_the_branch_moves_or_a_retry_is_asked() {
        let (g, b, n) = ("g".repeat(40), "b".repeat(40), "n".repeat(40));
        assert_eq!(
            decide(&g, Some(&g), None, false, false),
            Decision::AlreadyApplied
        );
        assert_eq!(
            decide(&g, Some(&g), None, true, false),
            Decision::Run { new: false }
        );
        // The first run of all: new, nothing to roll back to (the driver says so).
        assert_eq!(
            decide(&g, None, None, false, false),
            Decision::Run { new: true }
        );
        // Held, also by the timer and after a force-push back to it.
        assert_eq!(
            decide(&b, Some(&g), Some(bad(&b)), false, false),
            Decision::Held {
                bad: bad(&b),
                repair: None
            }
        );
        // A drift repair converges the last good commit instead.
        assert_eq!(
            decide(&b, Some(&g), Some(bad(&b)), true, false),
            Decision::Held {
                bad: bad(&b),
                repair: Some(g.clone())
            }
        );
        assert_eq!(
            decide(&b, Some(&g), Some(bad(&b)), false, true),
            Decision::Run { new: true }
        );
        // A newer commit runs.
        assert_eq!(
            decide(&n, Some(&g), None, false, false),
            Decision::Run { new: true }
        );
    }

    #[test]
    fn unreachable_hosts_are_not_a_gate_failure_but_failed_clusters_and_timeouts_are() {
        let mut report = RunReport {
            run_id: "r".into(),
            commit: None,
            dry_run: false,
            hosts: vec![crate::report::HostRun {
                host: "h0".into(),
                plan: None,
                outcome: None,
                error: Some("connection refused".into()),
                duration: std::time::Duration::ZERO,
            }],
            clusters: Vec::new(),
            duration: std::time::Duration::ZERO,
            timed_out: false,
        };
        assert_eq!(gate_failure(&report), None);
        let mut c = crate::report::cluster::ClusterRun::new("pg");
        c.status = crate::report::cluster::ClusterStatus::Unhealthy;
        c.reasons = vec!["pg2 is not streaming".into()];
        report.clusters.push(c);
        assert_eq!(
            gate_failure(&report).as_deref(),
            Some("cluster pg: pg2 is not streaming")
        );
        report.clusters.clear();
        report.timed_out = true;
        assert!(gate_failure(&report).unwrap().contains("--run-timeout"));
    }
}
