//! The cluster part of a run's report: per `PostgresCluster`, its health after the run, its
//! members, and what the cluster phase changed (SQL-level, dynamic configuration, restarts).

use crate::pg::health::MemberReport;
use serde::Serialize;

/// How a cluster ended the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterStatus {
    /// The health gate passed.
    Healthy,
    /// The health gate did not pass (the reasons say why): the run fails.
    Unhealthy,
    /// Nothing runs yet (a dry run before the first converge): nothing to check.
    NotRunning,
}

/// What the cluster phase found and did for one cluster.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterRun {
    /// Cluster name.
    pub cluster: String,
    /// Health after the run.
    pub status: ClusterStatus,
    /// Why it is not healthy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Each member as the cluster reports it.
    pub members: Vec<MemberReport>,
    /// What changed (or would change, in a dry run), one line each, secrets never included.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// Notes that change nothing (undeclared roles left alone, a roll that was not started).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The cluster's backups in its repository (newest of each type, with their age), when it
    /// has a repository and it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backups: Option<crate::pg::backup::BackupSummary>,
    /// Why the phase stopped, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ClusterRun {
    /// A cluster with nothing known yet.
    pub fn new(cluster: &str) -> Self {
        ClusterRun {
            cluster: cluster.to_string(),
            status: ClusterStatus::NotRunning,
            reasons: Vec::new(),
            members: Vec::new(),
            changes: Vec::new(),
            warnings: Vec::new(),
            backups: None,
            error: None,
        }
    }

    /// Whether the run fails because of this cluster.
    pub fn failed(&self) -> bool {
        self.error.is_some() || self.status == ClusterStatus::Unhealthy
    }
}
