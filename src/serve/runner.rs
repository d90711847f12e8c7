//! The run queue of `plumb serve`: one run at a time, on a thread of its own; triggers that
//! arrive while a run is going coalesce into exactly one follow-up run, so a burst of pushes
//! costs at most two runs. Also keeps what `/status` and `/metrics` report.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Why a run was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A push webhook.
    Webhook,
    /// The `--interval` timer (drift repair: converges even an applied commit).
    Interval,
    /// `--run-on-start`.
    Startup,
}

/// What to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunRequest {
    /// What asked for it (the first trigger of a coalesced burst).
    pub trigger: Trigger,
    /// Converge even if the fetched commit was applied already.
    pub always: bool,
}

impl RunRequest {
    fn merge(self, other: RunRequest) -> RunRequest {
        RunRequest {
            trigger: self.trigger,
            always: self.always || other.always,
        }
    }
}

/// How a run ended, as the run function reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunOutcome {
    /// The fetched commit, when the fetch succeeded.
    pub commit: Option<String>,
    /// Its summary line.
    pub summary: Option<String>,
    /// Whether a converge ran (false when the commit was applied already, or on errors
    /// before any host was contacted).
    pub converged: bool,
    /// The exit code `plumb pull` would have ended with.
    pub exit_code: i32,
    /// Hosts changed by the run.
    pub changed_hosts: Vec<String>,
    /// Hosts that failed.
    pub failed_hosts: Vec<String>,
    /// The error that stopped the run before or outside the converge, secrets redacted.
    pub error: Option<String>,
    /// The fetched commit failed its gates; this is the last good commit re-applied after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<String>,
    /// That rollback failed too (or could not start).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rollback_failed: bool,
    /// The fetched commit is marked bad and was not applied (why: `plumb history`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

impl RunOutcome {
    /// The `result` label of `plumb_runs_total`: `skipped` (commit applied already), `held`
    /// (the branch is at a commit marked bad: not applied), `unchanged`, `changed`, `drift` or
    /// `failed` (a rollback too: it is never a success).
    pub fn result(&self) -> &'static str {
        match self.exit_code {
            _ if self.error.is_some() => "failed",
            0 if !self.converged && self.held.is_some() => "held",
            0 if !self.converged => "skipped",
            0 => "unchanged",
            2 => "changed",
            3 => "drift",
            _ => "failed",
        }
    }
}

/// A finished run, for `/status`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FinishedRun {
    /// What started it.
    pub trigger: Trigger,
    /// Unix time it started, in seconds.
    pub started_at: u64,
    /// Wall time, in seconds.
    pub duration_seconds: f64,
    /// See [`RunOutcome::result`].
    pub result: &'static str,
    /// What the run function reported.
    #[serde(flatten)]
    pub outcome: RunOutcome,
}

/// The run in progress, for `/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CurrentRun {
    /// What started it.
    pub trigger: Trigger,
    /// Unix time it started, in seconds.
    pub started_at: u64,
}

/// A consistent copy of the runner's state.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Snapshot {
    /// The run in progress.
    pub current: Option<CurrentRun>,
    /// Whether a follow-up run is queued.
    pub queued: bool,
    /// The last finished run.
    pub last_run: Option<FinishedRun>,
    /// Finished runs by result.
    pub runs_total: BTreeMap<&'static str, u64>,
    /// Rollbacks started (a new commit failed its gates and the last good one was re-applied).
    pub rollbacks_total: u64,
}

/// What [`Runner::trigger`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    /// The runner was idle: a run starts now.
    Started,
    /// A run is going: one follow-up run is queued after it.
    FollowUp,
    /// A run was queued already: this trigger is folded into it.
    Coalesced,
    /// The server is shutting down: nothing will run.
    ShuttingDown,
}

#[derive(Default)]
struct State {
    snapshot: Snapshot,
    pending: Option<RunRequest>,
    shutdown: bool,
    worker_done: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits on `changed` until `done` holds or `deadline` passes; says whether it holds.
    fn wait_until(
        &self,
        mut st: MutexGuard<'_, State>,
        deadline: Instant,
        done: impl Fn(&State) -> bool,
    ) -> bool {
        while !done(&st) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }
}

/// Handle on the run thread; cheap to clone.
#[derive(Clone)]
pub struct Runner {
    shared: Arc<Shared>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Runner {
    /// Starts the run thread. `run` does one run; `interval`, when set, also runs it that long
    /// after the previous run ended (with `always`, to repair drift).
    pub fn start<F>(mut run: F, interval: Option<Duration>) -> std::io::Result<Runner>
    where
        F: FnMut(RunRequest) -> RunOutcome + Send + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("plumb-serve-run".into())
            .spawn(move || {
                let mut next_interval = interval.map(|i| Instant::now() + i);
                loop {
                    let started_at;
                    let request = {
                        let mut st = worker.lock();
                        let request = loop {
                            if st.shutdown {
                                st.worker_done = true;
                                worker.changed.notify_all();
                                return;
                            }
                            if let Some(r) = st.pending.take() {
                                break r;
                            }
                            match next_interval {
                                Some(due) => {
                                    let now = Instant::now();
                                    if now >= due {
                                        break RunRequest {
                                            trigger: Trigger::Interval,
                                            always: true,
                                        };
                                    }
                                    st = worker
                                        .changed
                                        .wait_timeout(st, due - now)
                                        .map(|(g, _)| g)
                                        .unwrap_or_else(|e| e.into_inner().0);
                                }
                                None => {
                                    st = worker.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                                }
                            }
                        };
                        // Marked running under the same lock that took the request, so a
                        // trigger now sees a run going and queues a follow-up.
                        started_at = unix_now();
                        st.snapshot.current = Some(CurrentRun {
                            trigger: request.trigger,
                            started_at,
                        });
                        st.snapshot.queued = false;
                        worker.changed.notify_all();
                        request
                    };
                    let t0 = Instant::now();
                    let outcome =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(request)))
                            .unwrap_or_else(|_| RunOutcome {
                                exit_code: 1,
                                error: Some("the run panicked".into()),
                                ..Default::default()
                            });
                    let finished = FinishedRun {
                        trigger: request.trigger,
                        started_at,
                        duration_seconds: t0.elapsed().as_secs_f64(),
                        result: outcome.result(),
                        outcome,
                    };
                    next_interval = interval.map(|i| Instant::now() + i);
                    let mut st = worker.lock();
                    *st.snapshot.runs_total.entry(finished.result).or_default() += 1;
                    if finished.outcome.rolled_back_to.is_some() {
                        st.snapshot.rollbacks_total += 1;
                    }
                    st.snapshot.last_run = Some(finished);
                    st.snapshot.current = None;
                    worker.changed.notify_all();
                }
            })?;
        Ok(Runner { shared })
    }

    /// Asks for a run: starts one now if idle, else queues exactly one follow-up.
    pub fn trigger(&self, request: RunRequest) -> Queued {
        let mut st = self.shared.lock();
        if st.shutdown {
            return Queued::ShuttingDown;
        }
        let queued = match st.pending.take() {
            Some(p) => {
                st.pending = Some(p.merge(request));
                Queued::Coalesced
            }
            None => {
                st.pending = Some(request);
                if st.snapshot.current.is_some() {
                    Queued::FollowUp
                } else {
                    Queued::Started
                }
            }
        };
        st.snapshot.queued = st.snapshot.current.is_some();
        self.shared.changed.notify_all();
        queued
    }

    /// A consistent copy of the state.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.lock().snapshot.clone()
    }

    /// Stops the run thread: no new run starts; a run in progress is waited for, up to
    /// `grace`. Returns whether the thread ended in time.
    pub fn shutdown(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        let mut st = self.shared.lock();
        st.shutdown = true;
        st.pending = None;
        st.snapshot.queued = false;
        self.shared.changed.notify_all();
        self.shared.wait_until(st, deadline, |st| st.worker_done)
    }

    /// Waits until no run is going or queued, up to `timeout` (for tests and tools).
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let st = self.shared.lock();
        self.shared.wait_until(st, deadline, |st| {
            st.snapshot.current.is_none() && st.pending.is_none()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    fn webhook() -> RunRequest {
        RunRequest {
            trigger: Trigger::Webhook,
            always: false,
        }
    }

    #[test]
    fn a_burst_during_a_run_coalesces_into_one_follow_up() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let counted = Arc::clone(&runs);
        let runner = Runner::start(
            move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                // Each run waits for the test to let it finish (bounded).
                let _ = gate_rx.recv_timeout(Duration::from_secs(10));
                RunOutcome {
                    commit: Some("abc".into()),
                    converged: true,
                    exit_code: 2,
                    changed_hosts: vec!["h0".into()],
                    ..Default::default()
                }
            },
            None,
        )
        .unwrap();
        assert_eq!(runner.trigger(webhook()), Queued::Started);
        // Wait (bounded) for the first run to start.
        let t0 = Instant::now();
        while runner.snapshot().current.is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the run never started"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(runner.trigger(webhook()), Queued::FollowUp);
        for _ in 0..20 {
            assert_eq!(runner.trigger(webhook()), Queued::Coalesced);
        }
        assert!(runner.snapshot().queued);
        gate_tx.send(()).unwrap();
        gate_tx.send(()).unwrap();
        assert!(runner.wait_idle(Duration::from_secs(10)));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        let snap = runner.snapshot();
        assert!(!snap.queued);
        assert_eq!(snap.runs_total.get("changed"), Some(&2));
        let last = snap.last_run.unwrap();
        assert_eq!(last.result, "changed");
        assert_eq!(last.outcome.changed_hosts, ["h0"]);
        assert!(runner.shutdown(Duration::from_secs(5)));
        assert_eq!(runner.trigger(webhook()), Queued::ShuttingDown);
    }

    #[test]
    fn a_rollback_is_counted_and_is_a_failed_run_and_a_held_commit_is_held() {
        let (tx, rx) = mpsc::channel::<RunOutcome>();
        let rx = Mutex::new(rx);
        let runner = Runner::start(
            move |_| {
                rx.lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(10))
                    .unwrap_or_default()
            },
            None,
        )
        .unwrap();
        tx.send(RunOutcome {
            commit: Some("b".repeat(40)),
            converged: true,
            exit_code: 1,
            error: Some("commit bbbb failed its gates".into()),
            rolled_back_to: Some("a".repeat(40)),
            ..Default::default()
        })
        .unwrap();
        runner.trigger(webhook());
        assert!(runner.wait_idle(Duration::from_secs(10)));
        tx.send(RunOutcome {
            commit: Some("b".repeat(40)),
            held: Some("b".repeat(40)),
            ..Default::default()
        })
        .unwrap();
        runner.trigger(webhook());
        assert!(runner.wait_idle(Duration::from_secs(10)));
        let snap = runner.snapshot();
        assert_eq!(snap.rollbacks_total, 1);
        assert_eq!(snap.runs_total.get("failed"), Some(&1));
        assert_eq!(snap.runs_total.get("held"), Some(&1));
        assert!(runner.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn shutdown_waits_for_the_run_in_progress_but_not_forever() {
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let runner = Runner::start(
            move |_| {
                let _ = gate_rx.recv_timeout(Duration::from_secs(10));
                RunOutcome::default()
            },
            None,
        )
        .unwrap();
        runner.trigger(webhook());
        let t0 = Instant::now();
        while runner.snapshot().current.is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the run never started"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!runner.shutdown(Duration::from_millis(100)));
        gate_tx.send(()).unwrap();
        assert!(runner.shutdown(Duration::from_secs(10)));
        assert_eq!(runner.snapshot().runs_total.get("skipped"), Some(&1));
    }

    #[test]
    fn the_interval_runs_with_always_and_a_panic_is_a_failed_run() {
        let (tx, rx) = mpsc::channel::<RunRequest>();
        let runner = Runner::start(
            move |r| {
                let _ = tx.send(r);
                panic!("boom");
            },
            Some(Duration::from_millis(200)),
        )
        .unwrap();
        let r = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(r.trigger, Trigger::Interval);
        assert!(r.always);
        // Shutting down waits for the run in progress (bounded), then no run starts again.
        assert!(runner.shutdown(Duration::from_secs(30)));
        let snap = runner.snapshot();
        assert!(snap.runs_total.get("failed").copied().unwrap_or(0) >= 1);
        assert_eq!(
            snap.last_run.unwrap().outcome.error.as_deref(),
            Some("the run panicked")
        );
    }

    #[test]
    fn results_are_labelled() {
        let o = |converged, exit_code, error: Option<&str>| RunOutcome {
            converged,
            exit_code,
            error: error.map(str::to_string),
            ..Default::default()
        };
        assert_eq!(o(false, 0, None).result(), "skipped");
        assert_eq!(o(true, 0, None).result(), "unchanged");
        assert_eq!(o(true, 2, None).result(), "changed");
        assert_eq!(o(true, 3, None).result(), "drift");
        assert_eq!(o(true, 1, None).result(), "failed");
        assert_eq!(o(false, 0, Some("fetch failed")).result(), "failed");
    }
}
