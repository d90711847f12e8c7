//! The order of a rolling restart, planned purely: replicas one at a time, each followed by the
//! health gate, then a switchover to a replica that is already done, then the old leader.
//! Never more than one member down because of plumb; a cluster without a leader, or one whose
//! only candidates are unhealthy, is refused with the reason.
//!
//! The same order serves changes that recreate a member's containers (image, compose file,
//! `.env`): the caller runs its own action where this says [`RollStep::Restart`].

use std::collections::BTreeSet;
use std::fmt;

use super::patroni::ClusterView;

/// One step of a roll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollStep {
    /// Restart (or recreate) this member; for a restart after a configuration change, use
    /// `POST /restart` with `restart_pending`, which does nothing if nothing is pending.
    Restart {
        /// Member name.
        member: String,
    },
    /// Wait (bounded) until the cluster is healthy again; stop the roll if it is not.
    Gate,
    /// `POST /switchover` from the leader to the candidate.
    Switchover {
        /// The current leader.
        from: String,
        /// The replica to promote.
        to: String,
    },
}

impl fmt::Display for RollStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollStep::Restart { member } => write!(f, "restart {member}"),
            RollStep::Gate => f.write_str("wait until healthy"),
            RollStep::Switchover { from, to } => write!(f, "switchover {from} -> {to}"),
        }
    }
}

/// Why no roll can be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollError {
    /// No member holds the leader lock (or several do).
    #[error("cannot roll: the cluster has {0} leaders (it needs exactly one)")]
    Leaders(usize),
    /// A member to restart is not in Patroni's view.
    #[error("cannot roll: member {0} is not in Patroni's cluster view")]
    Unknown(String),
    /// The leader must restart but no replica can take over.
    #[error(
        "cannot roll: the leader {leader} needs a restart and no replica is running to take over \
         ({why})"
    )]
    NoCandidate {
        /// The leader.
        leader: String,
        /// What the replicas are doing.
        why: String,
    },
}

/// Plans the roll that restarts each member of `restart` (names) in `view`'s cluster.
/// A single-member cluster's leader is restarted in place (there is nobody to switch to).
pub fn plan(view: &ClusterView, restart: &BTreeSet<String>) -> Result<Vec<RollStep>, RollError> {
    let leaders = view.leaders();
    let [leader] = leaders.as_slice() else {
        return Err(RollError::Leaders(leaders.len()));
    };
    for name in restart {
        if view.member(name).is_none() {
            return Err(RollError::Unknown(name.clone()));
        }
    }
    let mut steps = Vec::new();
    let replicas: Vec<_> = view
        .members
        .iter()
        .filter(|m| m.name != leader.name)
        .collect();
    for replica in &replicas {
        if restart.contains(&replica.name) {
            steps.push(RollStep::Restart {
                member: replica.name.clone(),
            });
            steps.push(RollStep::Gate);
        }
    }
    if restart.contains(&leader.name) {
        if view.members.len() == 1 {
            steps.push(RollStep::Restart {
                member: leader.name.clone(),
            });
            steps.push(RollStep::Gate);
            return Ok(steps);
        }
        let serving = |state: &str| state == "running" || state == "streaming";
        // Prefer a replica restarted in this roll (it already runs the new settings), then any
        // serving replica; by name for a stable order.
        let candidate = replicas
            .iter()
            .filter(|m| m.role.is_replica() && serving(&m.state))
            .min_by_key(|m| (!restart.contains(&m.name), m.name.clone()))
            .ok_or_else(|| RollError::NoCandidate {
                leader: leader.name.clone(),
                why: replicas
                    .iter()
                    .map(|m| format!("{} is {} {:?}", m.name, m.role, m.state))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        steps.push(RollStep::Switchover {
            from: leader.name.clone(),
            to: candidate.name.clone(),
        });
        steps.push(RollStep::Gate);
        steps.push(RollStep::Restart {
            member: leader.name.clone(),
        });
        steps.push(RollStep::Gate);
    }
    Ok(steps)
}

/// Plans a roll that restarts the leader first, in place, then the replicas one at a time,
/// each followed by the gate. For lowering a setting a standby must hold at least as high as
/// its primary (`max_connections`, `max_wal_senders`, ...): a replica restarted before its
/// primary keeps the primary's higher value (Patroni reads it from `pg_controldata`) and would
/// stay pending. The leader's restart costs its clients a few seconds; no switchover helps,
/// since the promoted replica would carry the old value too.
pub fn plan_leader_first(
    view: &ClusterView,
    restart: &BTreeSet<String>,
) -> Result<Vec<RollStep>, RollError> {
    let leaders = view.leaders();
    let [leader] = leaders.as_slice() else {
        return Err(RollError::Leaders(leaders.len()));
    };
    for name in restart {
        if view.member(name).is_none() {
            return Err(RollError::Unknown(name.clone()));
        }
    }
    let mut steps = Vec::new();
    if restart.contains(&leader.name) {
        steps.push(RollStep::Restart {
            member: leader.name.clone(),
        });
        steps.push(RollStep::Gate);
    }
    for m in &view.members {
        if m.name != leader.name && restart.contains(&m.name) {
            steps.push(RollStep::Restart {
                member: m.name.clone(),
            });
            steps.push(RollStep::Gate);
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::patroni::{ClusterMember, Role};

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
            pending_restart: true,
        }
    }

    fn view() -> ClusterView {
        ClusterView {
            members: vec![
                member("pg1", Role::Replica, "running"),
                member("pg2", Role::Leader, "running"),
                member("pg3", Role::Replica, "streaming"),
            ],
            pause: false,
        }
    }

    fn all() -> BTreeSet<String> {
        ["pg1", "pg2", "pg3"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn shown(steps: &[RollStep]) -> Vec<String> {
        steps.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn replicas_one_at_a_time_then_switchover_then_the_old_leader() {
        let steps = plan(&view(), &all()).unwrap();
        assert_eq!(
            shown(&steps),
            vec![
                "restart pg1",
                "wait until healthy",
                "restart pg3",
                "wait until healthy",
                "switchover pg2 -> pg1",
                "wait until healthy",
                "restart pg2",
                "wait until healthy",
            ]
        );
        // Never two restarts without a gate between them.
        for pair in steps.windows(2) {
            assert!(
                !matches!(pair, [RollStep::Restart { .. }, RollStep::Restart { .. }]),
                "{steps:?}"
            );
        }
    }

    #[test]
    fn only_what_needs_it_and_the_switchover_prefers_a_restarted_replica() {
        let only_pg3: BTreeSet<String> = ["pg3".to_string()].into();
        assert_eq!(
            shown(&plan(&view(), &only_pg3).unwrap()),
            vec!["restart pg3", "wait until healthy"]
        );
        let pg3_and_leader: BTreeSet<String> = ["pg2".to_string(), "pg3".to_string()].into();
        assert_eq!(
            shown(&plan(&view(), &pg3_and_leader).unwrap()),
            vec![
                "restart pg3",
                "wait until healthy",
                "switchover pg2 -> pg3",
                "wait until healthy",
                "restart pg2",
                "wait until healthy",
            ]
        );
        assert!(plan(&view(), &BTreeSet::new()).unwrap().is_empty());
    }

    #[test]
    fn refusals_say_why() {
        let mut leaderless = view();
        leaderless.members[1].role = Role::Replica;
        assert_eq!(plan(&leaderless, &all()), Err(RollError::Leaders(0)));
        let ghost: BTreeSet<String> = ["pg9".to_string()].into();
        assert_eq!(plan(&view(), &ghost), Err(RollError::Unknown("pg9".into())));
        let mut stuck = view();
        stuck.members[0].state = "creating replica".into();
        stuck.members[2].state = "stopped".into();
        let leader_only: BTreeSet<String> = ["pg2".to_string()].into();
        let err = plan(&stuck, &leader_only).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot roll: the leader pg2 needs a restart and no replica is running to take over \
             (pg1 is replica \"creating replica\", pg3 is replica \"stopped\")"
        );
        let single = ClusterView {
            members: vec![member("pg1", Role::Leader, "running")],
            pause: false,
        };
        let one: BTreeSet<String> = ["pg1".to_string()].into();
        assert_eq!(
            shown(&plan(&single, &one).unwrap()),
            vec!["restart pg1", "wait until healthy"]
        );
    }

    #[test]
    fn leader_first_restarts_the_leader_in_place_then_each_replica() {
        let view = ClusterView {
            members: vec![
                member("a", Role::Replica, "running"),
                member("b", Role::Leader, "running"),
                member("c", Role::Replica, "running"),
            ],
            pause: false,
        };
        let all: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let steps: Vec<String> = plan_leader_first(&view, &all)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            steps,
            [
                "restart b",
                "wait until healthy",
                "restart a",
                "wait until healthy",
                "restart c",
                "wait until healthy"
            ]
        );
        assert!(!steps.iter().any(|s| s.starts_with("switchover")));
    }
}
