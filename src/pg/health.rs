//! The cluster's health, evaluated purely, and the per-member status `plumb pg status` shows.
//!
//! Healthy means: etcd healthy on every member; Patroni lists every member and exactly one
//! leader, running; every other member is a replica that streams from the leader according to
//! PostgreSQL itself (`pg_stat_replication` on the leader: `state = streaming`, replay lag under
//! a bound), because Debian's Patroni 3.0.2 reports a streaming replica only as `running`; and,
//! with a backup repository, `pgbackrest check` passed. Every reason names the member and what
//! it is doing.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::{Instant, timeout_at};

use super::client::{PgClient, PgError};
use super::etcd::EtcdHealth;
use super::patroni::{ClusterView, Lag, MemberStatus, Role};

/// Replay lag allowed by default: 16 MiB of WAL (one segment).
pub const DEFAULT_MAX_REPLAY_LAG: u64 = 16 * 1024 * 1024;

/// One row of `pg_stat_replication` on the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationRow {
    /// `application_name`: Patroni sets it to the replica's member name.
    pub application_name: String,
    /// `state`: `streaming`, `catchup`, `startup`, `backup`, ...
    pub state: String,
    /// `client_addr`.
    pub client_addr: Option<String>,
    /// Bytes of WAL the replica has yet to replay (`pg_current_wal_lsn() - replay_lsn`).
    pub replay_lag_bytes: Option<u64>,
    /// `sync_state`: `async`, `sync`, ...
    pub sync_state: Option<String>,
}

const READ_REPLICATION: &str = "SELECT application_name, state, host(client_addr), \
     pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), replay_lsn)::bigint, sync_state \
     FROM pg_catalog.pg_stat_replication";

/// Reads `pg_stat_replication` (on the leader; as a superuser or `pg_monitor` member, to see
/// every column).
pub async fn read_replication(client: &PgClient) -> Result<Vec<ReplicationRow>, PgError> {
    let what = "reading pg_stat_replication";
    let rows = client.query(what, READ_REPLICATION, &[]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let text = |i: usize| -> Result<Option<String>, PgError> {
            row.try_get(i).map_err(|e| client.unexpected(what, e))
        };
        let lag: Option<i64> = row.try_get(3).map_err(|e| client.unexpected(what, e))?;
        out.push(ReplicationRow {
            application_name: text(0)?.unwrap_or_default(),
            state: text(1)?.unwrap_or_default(),
            client_addr: text(2)?,
            replay_lag_bytes: lag.map(|l| u64::try_from(l).unwrap_or(0)),
            sync_state: text(4)?,
        });
    }
    Ok(out)
}

/// Why the cluster is not healthy: one problem, naming the member when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The member concerned, if the problem is one member's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.member {
            Some(member) => write!(f, "{member}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The verdict of the health gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "reasons", rename_all = "snake_case")]
pub enum Health {
    /// Every check passed.
    Healthy,
    /// At least one did not.
    Unhealthy(Vec<Reason>),
}

impl Health {
    /// Whether the cluster is healthy.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Healthy => f.write_str("healthy"),
            Health::Unhealthy(reasons) => {
                f.write_str("unhealthy: ")?;
                let all: Vec<String> = reasons.iter().map(Reason::to_string).collect();
                f.write_str(&all.join("; "))
            }
        }
    }
}

/// What the health gate looks at. `None` where a source could not be read (its error is then
/// the reason given).
#[derive(Debug, Clone, Copy)]
pub struct HealthInput<'a> {
    /// The members the cluster is declared with.
    pub members: &'a [String],
    /// `GET /cluster`, or why it could not be read.
    pub cluster: Result<&'a ClusterView, &'a str>,
    /// `pg_stat_replication` on the leader, or why it could not be read.
    pub replication: Result<&'a [ReplicationRow], &'a str>,
    /// etcd's health on each member; `None` when the DCS does not run on the members (Consul:
    /// Patroni's cluster view, which needs the DCS, stands for it).
    pub etcd: Option<&'a [EtcdHealth]>,
    /// `pgbackrest check` when the cluster has a backup repository: `Ok` or its error.
    pub backup_check: Option<Result<(), &'a str>>,
    /// Most bytes of WAL a replica may have yet to replay.
    pub max_replay_lag: u64,
}

/// Evaluates the health gate.
pub fn evaluate(input: &HealthInput<'_>) -> Health {
    let mut reasons = Vec::new();
    let mut say = |member: Option<&str>, message: String| {
        reasons.push(Reason {
            member: member.map(str::to_string),
            message,
        });
    };

    for member in input.members.iter().filter(|_| input.etcd.is_some()) {
        match input
            .etcd
            .unwrap_or_default()
            .iter()
            .find(|e| &e.member == member)
        {
            None => say(Some(member), "etcd was not checked".into()),
            Some(e) if !e.healthy => say(
                Some(member),
                format!(
                    "etcd unhealthy: {}",
                    e.reason.as_deref().unwrap_or("no reason given")
                ),
            ),
            Some(_) => {}
        }
    }

    match input.cluster {
        Err(why) => say(
            None,
            format!("Patroni's cluster view could not be read: {why}"),
        ),
        Ok(cluster) => {
            if cluster.pause {
                say(None, "Patroni's cluster management is paused".into());
            }
            let leaders = cluster.leaders();
            match leaders.as_slice() {
                [] => say(
                    None,
                    "no leader: no member holds Patroni's leader lock".into(),
                ),
                [leader] => {
                    if leader.state != "running" {
                        say(
                            Some(&leader.name),
                            format!("leader is {:?}, not running", leader.state),
                        );
                    }
                }
                several => say(
                    None,
                    format!(
                        "{} leaders: {}",
                        several.len(),
                        several
                            .iter()
                            .map(|m| m.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            }
            let leader = leaders.first().map(|m| m.name.as_str());
            for name in input.members {
                let Some(member) = cluster.member(name) else {
                    say(
                        Some(name),
                        "not in Patroni's cluster view (Patroni not running, or not registered in the DCS)"
                            .into(),
                    );
                    continue;
                };
                if Some(name.as_str()) == leader {
                    continue;
                }
                if !member.role.is_replica() {
                    say(
                        Some(name),
                        format!(
                            "role {}, state {:?}: not a replica",
                            member.role, member.state
                        ),
                    );
                    continue;
                }
                // 3.0.2 says running, 3.0.4+ streaming; anything else is not serving.
                if member.state != "running" && member.state != "streaming" {
                    say(Some(name), format!("replica is {:?}", member.state));
                    continue;
                }
                let Some(leader) = leader else { continue };
                match input.replication {
                    Err(why) => say(
                        Some(leader),
                        format!("pg_stat_replication could not be read on the leader: {why}"),
                    ),
                    Ok(rows) => match rows.iter().find(|r| &r.application_name == name) {
                        None => say(
                            Some(name),
                            format!(
                                "not streaming from the leader {leader} (no row in its pg_stat_replication)"
                            ),
                        ),
                        Some(row) if row.state != "streaming" => say(
                            Some(name),
                            format!("replication state {:?}, not streaming", row.state),
                        ),
                        Some(row) => match row.replay_lag_bytes {
                            None => say(Some(name), "replay position unknown".into()),
                            Some(lag) if lag > input.max_replay_lag => say(
                                Some(name),
                                format!(
                                    "replay lag {lag} bytes, over the bound of {} bytes",
                                    input.max_replay_lag
                                ),
                            ),
                            Some(_) => {}
                        },
                    },
                }
            }
        }
    }

    if let Some(Err(why)) = input.backup_check {
        say(None, format!("pgbackrest check failed: {why}"));
    }

    if reasons.is_empty() {
        Health::Healthy
    } else {
        Health::Unhealthy(reasons)
    }
}

/// Runs `probe` (one full health evaluation) every `interval` until it answers healthy or
/// `within` has passed, calling `progress` with each verdict (for a progress line). Each probe
/// is itself cut off at the deadline. Returns the last verdict: healthy, or why not at the
/// deadline (what a converge reports, exiting non-zero).
pub async fn wait_healthy<F, Fut>(
    within: Duration,
    interval: Duration,
    mut probe: F,
    mut progress: impl FnMut(&Health),
) -> Health
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Health>,
{
    let deadline = Instant::now() + within;
    loop {
        let verdict = match timeout_at(deadline, probe()).await {
            Ok(verdict) => verdict,
            Err(_) => Health::Unhealthy(vec![Reason {
                member: None,
                message: format!("the health check did not finish within {within:?}"),
            }]),
        };
        progress(&verdict);
        if verdict.is_healthy() || Instant::now() + interval > deadline {
            return verdict;
        }
        tokio::time::sleep(interval).await;
    }
}

/// One member as `plumb pg status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    /// Member name.
    pub name: String,
    /// Role, when Patroni knows the member.
    pub role: Option<Role>,
    /// Patroni's state.
    pub state: Option<String>,
    /// Timeline.
    pub timeline: Option<u64>,
    /// Bytes behind the leader (PostgreSQL's replay lag when known, else Patroni's).
    pub lag_bytes: Option<u64>,
    /// `pg_stat_replication.state` on the leader, for replicas.
    pub replication_state: Option<String>,
    /// A parameter change waits for a restart.
    pub pending_restart: bool,
    /// When its postmaster started (from its `GET /patroni`).
    pub postmaster_start_time: Option<String>,
}

/// Everything `plumb pg status` reports about a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterReport {
    /// Cluster name.
    pub cluster: String,
    /// Each declared member, in declared order.
    pub members: Vec<MemberReport>,
    /// etcd on each member.
    pub etcd: Vec<EtcdHealth>,
    /// The health verdict.
    pub health: Health,
}

/// The status of each declared member, from `GET /cluster`, each member's `GET /patroni`
/// (those that answered) and the leader's `pg_stat_replication`.
pub fn member_reports(
    members: &[String],
    cluster: Option<&ClusterView>,
    statuses: &BTreeMap<String, MemberStatus>,
    replication: Option<&[ReplicationRow]>,
) -> Vec<MemberReport> {
    members
        .iter()
        .map(|name| {
            let seen = cluster.and_then(|c| c.member(name));
            let own = statuses.get(name);
            let row =
                replication.and_then(|rows| rows.iter().find(|r| &r.application_name == name));
            let patroni_lag = seen.and_then(|m| match m.lag {
                Some(Lag::Bytes(b)) => Some(b),
                _ => None,
            });
            MemberReport {
                name: name.clone(),
                role: seen
                    .map(|m| m.role.clone())
                    .or_else(|| own.map(|s| s.role.clone())),
                state: seen
                    .map(|m| m.state.clone())
                    .or_else(|| own.map(|s| s.state.clone())),
                timeline: seen
                    .and_then(|m| m.timeline)
                    .or_else(|| own.and_then(|s| s.timeline)),
                lag_bytes: row.and_then(|r| r.replay_lag_bytes).or(patroni_lag),
                replication_state: row.map(|r| r.state.clone()),
                pending_restart: seen.is_some_and(|m| m.pending_restart)
                    || own.is_some_and(|s| s.pending_restart),
                postmaster_start_time: own.and_then(|s| s.postmaster_start_time.clone()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::patroni::ClusterMember;

    fn member(name: &str, role: Role, state: &str) -> ClusterMember {
        ClusterMember {
            name: name.into(),
            role,
            state: state.into(),
            api_url: None,
            host: None,
            port: None,
            timeline: Some(1),
            lag: None,
            pending_restart: false,
        }
    }

    fn healthy_cluster() -> ClusterView {
        ClusterView {
            members: vec![
                member("pg1", Role::Leader, "running"),
                // Patroni 3.0.2: replicas say running.
                member("pg2", Role::Replica, "running"),
                member("pg3", Role::SyncStandby, "streaming"),
            ],
            pause: false,
        }
    }

    fn streaming(name: &str, lag: u64) -> ReplicationRow {
        ReplicationRow {
            application_name: name.into(),
            state: "streaming".into(),
            client_addr: Some("10.0.0.2".into()),
            replay_lag_bytes: Some(lag),
            sync_state: Some("async".into()),
        }
    }

    fn etcd_ok() -> Vec<EtcdHealth> {
        ["pg1", "pg2", "pg3"]
            .iter()
            .map(|m| EtcdHealth {
                member: (*m).into(),
                healthy: true,
                reason: None,
            })
            .collect()
    }

    fn names() -> Vec<String> {
        vec!["pg1".into(), "pg2".into(), "pg3".into()]
    }

    fn reasons(h: Health) -> Vec<String> {
        match h {
            Health::Healthy => Vec::new(),
            Health::Unhealthy(r) => r.iter().map(Reason::to_string).collect(),
        }
    }

    #[test]
    fn leader_and_two_streaming_replicas_are_healthy() {
        let cluster = healthy_cluster();
        let rows = vec![streaming("pg2", 0), streaming("pg3", 4096)];
        let etcd = etcd_ok();
        let members = names();
        let input = HealthInput {
            members: &members,
            cluster: Ok(&cluster),
            replication: Ok(&rows),
            etcd: Some(&etcd),
            backup_check: Some(Ok(())),
            max_replay_lag: DEFAULT_MAX_REPLAY_LAG,
        };
        assert_eq!(evaluate(&input), Health::Healthy);
        assert_eq!(
            serde_json::to_string(&evaluate(&input)).unwrap(),
            r#"{"status":"healthy"}"#
        );
    }

    #[test]
    fn a_replica_patroni_calls_running_but_postgres_does_not_stream_is_unhealthy() {
        let cluster = healthy_cluster();
        let mut catching_up = streaming("pg3", 0);
        catching_up.state = "catchup".into();
        let rows = vec![catching_up];
        let (etcd, members) = (etcd_ok(), names());
        let h = evaluate(&HealthInput {
            members: &members,
            cluster: Ok(&cluster),
            replication: Ok(&rows),
            etcd: Some(&etcd),
            backup_check: None,
            max_replay_lag: DEFAULT_MAX_REPLAY_LAG,
        });
        assert_eq!(
            reasons(h),
            vec![
                "pg2: not streaming from the leader pg1 (no row in its pg_stat_replication)",
                "pg3: replication state \"catchup\", not streaming",
            ]
        );
    }

    #[test]
    fn creating_replica_missing_member_lag_and_etcd_are_each_named() {
        let mut cluster = healthy_cluster();
        cluster.members[1].state = "creating replica".into();
        cluster.members.remove(2);
        let rows = vec![streaming("pg2", 0)];
        let mut etcd = etcd_ok();
        etcd[2].healthy = false;
        etcd[2].reason = Some("cannot ask etcd at 10.0.0.3:2379: no answer within 5s".into());
        let members = names();
        let h = evaluate(&HealthInput {
            members: &members,
            cluster: Ok(&cluster),
            replication: Ok(&rows),
            etcd: Some(&etcd),
            backup_check: Some(Err("stanza postgres01: archive timeout")),
            max_replay_lag: DEFAULT_MAX_REPLAY_LAG,
        });
        let text = h.to_string();
        assert_eq!(
            reasons(h),
            vec![
                "pg3: etcd unhealthy: cannot ask etcd at 10.0.0.3:2379: no answer within 5s",
                "pg2: replica is \"creating replica\"",
                "pg3: not in Patroni's cluster view (Patroni not running, or not registered in the DCS)",
                "pgbackrest check failed: stanza postgres01: archive timeout",
            ]
        );
        assert!(text.starts_with("unhealthy: pg3: etcd unhealthy"), "{text}");

        let cluster = healthy_cluster();
        let rows = vec![streaming("pg2", 0), streaming("pg3", 20_000_000)];
        let etcd = etcd_ok();
        let h = evaluate(&HealthInput {
            members: &members,
            cluster: Ok(&cluster),
            replication: Ok(&rows),
            etcd: Some(&etcd),
            backup_check: None,
            max_replay_lag: DEFAULT_MAX_REPLAY_LAG,
        });
        assert_eq!(
            reasons(h),
            vec!["pg3: replay lag 20000000 bytes, over the bound of 16777216 bytes"]
        );
    }

    #[test]
    fn no_leader_or_two_leaders_or_unreadable_sources() {
        let (etcd, members) = (etcd_ok(), names());
        let mut leaderless = healthy_cluster();
        leaderless.members[0].role = Role::Replica;
        leaderless.members[0].state = "stopped".into();
        let h = evaluate(&HealthInput {
            members: &members,
            cluster: Ok(&leaderless),
            replication: Err("no leader to ask"),
            etcd: Some(&etcd),
            backup_check: None,
            max_replay_lag: DEFAULT_MAX_REPLAY_LAG,
        });
        let r = reasons(h);
        assert_eq!(r[0], "no leader: no member holds Patroni's leader lock");
        assert!(
            r.contains(&"pg1: replica is \"stopped\"".to_string()),
            "{r:?}"
        );

        let mut split = healthy_cluster();
        split.members[1].role = Role::Leader;
        let rows = vec![streaming("pg3", 0)];
        let h = evaluate(&HealthInput {
            members: &members,
            cluster: Ok(&split),
            replication: Ok(&rows),
            etcd: Some(&etcd),
            backup_check: None,
            max_replay_lag: DEFAULT_MAX_REPLAY_LAG,
        });
        assert!(reasons(h).contains(&"2 leaders: pg1, pg2".to_string()));

        let h = evaluate(&HealthInput {
            members: &members,
            cluster: Err("Patroni on pg1: GET /cluster: no answer within 10s"),
            replication: Ok(&[]),
            etcd: Some(&etcd),
            backup_check: None,
            max_replay_lag: DEFAULT_MAX_REPLAY_LAG,
        });
        assert_eq!(
            reasons(h.clone()),
            vec![
                "Patroni's cluster view could not be read: Patroni on pg1: GET /cluster: no answer within 10s"
            ]
        );
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["status"], "unhealthy");
        assert!(
            json["reasons"][0]["message"]
                .as_str()
                .unwrap()
                .contains("GET /cluster")
        );

        let cluster = healthy_cluster();
        let h = evaluate(&HealthInput {
            members: &members,
            cluster: Ok(&cluster),
            replication: Err("PostgreSQL on pg1: connection refused"),
            etcd: Some(&etcd),
            backup_check: None,
            max_replay_lag: DEFAULT_MAX_REPLAY_LAG,
        });
        assert_eq!(
            reasons(h)[0],
            "pg1: pg_stat_replication could not be read on the leader: PostgreSQL on pg1: connection refused"
        );
    }

    #[tokio::test]
    async fn waiting_stops_at_healthy_or_at_the_deadline_with_the_last_reason() {
        let mut calls = 0;
        let mut seen = Vec::new();
        let verdict = wait_healthy(
            Duration::from_secs(5),
            Duration::from_millis(10),
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Health::Unhealthy(vec![Reason {
                            member: Some("pg2".into()),
                            message: "replica is \"creating replica\"".into(),
                        }])
                    } else {
                        Health::Healthy
                    }
                }
            },
            |h| seen.push(h.is_healthy()),
        )
        .await;
        assert_eq!(verdict, Health::Healthy);
        assert_eq!(seen, vec![false, false, true]);

        let started = std::time::Instant::now();
        let verdict = wait_healthy(
            Duration::from_millis(200),
            Duration::from_millis(20),
            || async {
                Health::Unhealthy(vec![Reason {
                    member: Some("pg3".into()),
                    message: "etcd unhealthy".into(),
                }])
            },
            |_| {},
        )
        .await;
        assert_eq!(verdict.to_string(), "unhealthy: pg3: etcd unhealthy");
        assert!(started.elapsed() < Duration::from_secs(2));

        // A probe that hangs is cut off at the deadline.
        let verdict = wait_healthy(
            Duration::from_millis(100),
            Duration::from_millis(10),
            std::future::pending::<Health>,
            |_| {},
        )
        .await;
        assert!(
            verdict.to_string().contains("did not finish within 100ms"),
            "{verdict}"
        );
    }

    #[test]
    fn member_reports_combine_cluster_own_status_and_replication() {
        let mut cluster = healthy_cluster();
        cluster.members[1].lag = Some(Lag::Bytes(100));
        cluster.members[2].lag = Some(Lag::Unknown("unknown".into()));
        cluster.members[0].pending_restart = true;
        let mut statuses = BTreeMap::new();
        statuses.insert(
            "pg1".to_string(),
            serde_json::from_str::<MemberStatus>(
                r#"{"state":"running","role":"master","timeline":1,
                    "postmaster_start_time":"2026-12-03 08:00:05.962018+00:00"}"#,
            )
            .unwrap(),
        );
        let rows = vec![streaming("pg2", 7)];
        let reports = member_reports(&names(), Some(&cluster), &statuses, Some(&rows));
        assert_eq!(reports.len(), 3);
        assert_eq!(reports[0].role, Some(Role::Leader));
        assert!(reports[0].pending_restart);
        assert_eq!(
            reports[0].postmaster_start_time.as_deref(),
            Some("2026-12-03 08:00:05.962018+00:00")
        );
        assert_eq!(reports[1].lag_bytes, Some(7), "PostgreSQL's own lag wins");
        assert_eq!(reports[1].replication_state.as_deref(), Some("streaming"));
        assert_eq!(reports[2].lag_bytes, None);
        assert!(!reports[2].pending_restart);
        let missing = member_reports(&["pg9".to_string()], Some(&cluster), &statuses, None);
        assert_eq!(missing[0].role, None);
        assert_eq!(missing[0].state, None);
    }
}
