//! What a kind's planner sees besides its own records: the host's facts and the folders on the
//! way to its paths, the time, and the run's options.

use crate::vocab::records::DirState;
use std::collections::BTreeMap;

/// What planning needs besides the records.
#[derive(Clone, Debug)]
pub struct PlanCx {
    /// Host facts from the probe.
    pub facts: BTreeMap<String, String>,
    /// Now, seconds since the epoch (certificate windows).
    pub now: i64,
    /// Reissue every certificate (`plumb certs rotate`).
    pub force_reissue: bool,
    /// Remove users and groups that left the repo.
    pub prune_users: bool,
    /// The folders on the way to managed paths, as the probe found them.
    pub dirs: BTreeMap<String, DirState>,
}

impl PlanCx {
    /// The uid plumb's shell runs as on the host (from the probe; 0 when unknown).
    pub fn login_uid(&self) -> u32 {
        self.facts
            .get("uid")
            .and_then(|u| u.parse().ok())
            .unwrap_or(0)
    }

    /// The compose command the host has, if any.
    pub fn compose(&self) -> Option<&str> {
        self.facts
            .get("compose")
            .map(String::as_str)
            .filter(|c| *c != "none")
    }
}
