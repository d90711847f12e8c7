//! Changes that restart a cluster member's containers, applied one member at a time.
//!
//! Hosts converge in parallel, and a change that recreates the containers of a PostgreSQL
//! cluster (a new image, a compose file or `.env` change, the stack's unit) applied on every
//! member at once would be an outage. So each member's job, once it has planned (holding its
//! host lock), tells its cluster's coordinator what its plan does to the member (its
//! [`Impact`]) and waits for its turn:
//!
//! - members whose plan leaves their containers running go at once;
//! - when no member answers (a new cluster, or one entirely down) all go at once: there is
//!   nothing to keep serving;
//! - members that are already down go first, together (applying them takes nothing more
//!   down: it is how a broken member is repaired), then the health gate;
//! - the others go in the order of a roll ([`crate::pg::roll`]): a restart of one service
//!   (etcd, after its certificate changed) replicas first then the leader, and a recreation
//!   replicas one at a time, a switchover, the old leader last, the health gate after each;
//! - on an unhealthy cluster, or when a member's apply fails or a gate does not pass, the
//!   members still waiting are refused: nothing is changed on them and the run fails, saying
//!   why. Never more than one member down because of plumb.
//!
//! Hosts outside any cluster, and members in a dry run, never wait.

use super::ConvergeOptions;
use super::cluster::{self, Session};
use crate::kinds::Spec;
use crate::load::Repo;
use crate::pg::patroni::ClusterView;
use crate::pg::roll::{self, RollStep};
use crate::plan::HostPlan;
use crate::vocab::step::Action;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// What a member's plan does to its running containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Impact {
    /// Nothing that stops a container.
    None,
    /// Restarts one service, PostgreSQL keeps running (etcd after its certificate changed):
    /// one member at a time, no switchover needed.
    Service(Vec<String>),
    /// Recreates or restarts the member's containers (PostgreSQL included): one member at a
    /// time, the leader last after a switchover.
    Recreate(Vec<String>),
}

impl Impact {
    /// The resources that cause it.
    fn causes(&self) -> &[String] {
        match self {
            Impact::None => &[],
            Impact::Service(c) | Impact::Recreate(c) => c,
        }
    }
}

/// What `plan` does to the containers of `cluster` on this member: a change (not a creation:
/// a new member has nothing running yet) of the cluster's compose stack or of the unit that
/// starts it recreates them; a restart of its etcd restarts one service.
/// (Names are unique per kind on a host: these are the cluster's own resources.)
pub fn impact(plan: &HostPlan, cluster: &str) -> Impact {
    let stack_unit = format!("{cluster}-stack.service");
    let mut recreate = Vec::new();
    for r in &plan.resources {
        let ours = (r.kind == "ComposeStack" && r.name == cluster)
            || (r.kind == "SystemdUnit" && r.name == stack_unit);
        if ours && r.changes_something() && r.action != Action::Create {
            recreate.push(format!("{}/{}", r.kind, r.name));
        }
    }
    if !recreate.is_empty() {
        return Impact::Recreate(recreate);
    }
    let restart_etcd = format!("{cluster}-restart-etcd");
    let service: Vec<String> = plan
        .handlers
        .iter()
        .filter(|h| h.target.kind == "Command" && h.target.name == restart_etcd)
        .map(|h| h.target.to_string())
        .collect();
    if service.is_empty() {
        Impact::None
    } else {
        Impact::Service(service)
    }
}

/// A member's answer from its coordinator.
enum Admission {
    /// Apply now; say on the sender whether the apply succeeded.
    Go(oneshot::Sender<bool>),
    /// Do not apply, for this reason.
    Refused(String),
}

enum Message {
    Report {
        member: String,
        impact: Impact,
        reply: oneshot::Sender<Admission>,
    },
    /// The member's job ended without reporting (unreachable, nothing to apply, refused).
    Gone(String),
}

/// A member job's line to its cluster's coordinator. Dropped without [`MemberGate::admit`],
/// it tells the coordinator the member will not report.
pub struct MemberGate {
    member: String,
    cluster: String,
    tx: Option<mpsc::UnboundedSender<Message>>,
}

/// A member's turn to apply: say how it went with [`Turn::finished`] (dropped, it counts as
/// failed).
pub struct Turn {
    done: Option<oneshot::Sender<bool>>,
}

impl Turn {
    /// Tells the coordinator whether the apply succeeded.
    pub fn finished(mut self, ok: bool) {
        if let Some(done) = self.done.take() {
            let _ = done.send(ok);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(false);
        }
    }
}

impl MemberGate {
    /// The cluster this member belongs to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Reports what the member's plan does and waits for its turn; `Err` says why it must not
    /// apply.
    pub async fn admit(mut self, impact: Impact) -> Result<Turn, String> {
        let Some(tx) = self.tx.take() else {
            return Err("internal error: the member already reported".into());
        };
        let (reply, answer) = oneshot::channel();
        let member = self.member.clone();
        if tx
            .send(Message::Report {
                member,
                impact,
                reply,
            })
            .is_err()
        {
            return Err(format!(
                "the coordinator of cluster {} stopped before this member's turn",
                self.cluster
            ));
        }
        match answer.await {
            Ok(Admission::Go(done)) => Ok(Turn { done: Some(done) }),
            Ok(Admission::Refused(why)) => Err(why),
            Err(_) => Err(format!(
                "the coordinator of cluster {} stopped before this member's turn",
                self.cluster
            )),
        }
    }
}

impl Drop for MemberGate {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Message::Gone(self.member.clone()));
        }
    }
}

/// What a coordinator did, for the cluster's report.
#[derive(Debug, Default)]
pub struct RolloutReport {
    /// What was done, in order.
    pub changes: Vec<String>,
    /// Why the roll stopped, if it did.
    pub error: Option<String>,
}

/// The coordinators of one run, one per cluster with a member among the run's hosts.
pub struct Rollouts {
    coordinators: Vec<(String, Coordinator)>,
}

/// A coordinator, run alongside the host jobs by [`Rollouts::run`].
type Coordinator = std::pin::Pin<Box<dyn std::future::Future<Output = RolloutReport>>>;

impl Rollouts {
    /// Starts a coordinator per cluster with members among `hosts` and returns the gate of
    /// each such member. Nothing is coordinated in a dry run, in local mode or with the
    /// cluster phase off. A host in several clusters waits for the first (in manifest order).
    pub fn start(
        repo: &Arc<Repo>,
        hosts: &BTreeSet<String>,
        opts: &ConvergeOptions,
    ) -> (Rollouts, BTreeMap<String, MemberGate>) {
        let mut gates = BTreeMap::new();
        let mut coordinators: Vec<(String, Coordinator)> = Vec::new();
        if opts.dry_run || opts.remote.local || !opts.cluster.enabled {
            return (Rollouts { coordinators }, gates);
        }
        for m in &repo.manifests {
            if !matches!(m.spec, Spec::PostgresCluster(_)) {
                continue;
            }
            let members: BTreeSet<String> = repo
                .hosts_of(m)
                .into_iter()
                .filter(|h| hosts.contains(*h) && !gates.contains_key(*h))
                .map(str::to_string)
                .collect();
            if members.is_empty() {
                continue;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            for member in &members {
                gates.insert(
                    member.clone(),
                    MemberGate {
                        member: member.clone(),
                        cluster: m.name.clone(),
                        tx: Some(tx.clone()),
                    },
                );
            }
            drop(tx);
            let coordinator = coordinate(repo.clone(), m.name.clone(), members, rx, opts.clone());
            coordinators.push((m.name.clone(), Box::pin(coordinator)));
        }
        (Rollouts { coordinators }, gates)
    }

    /// Runs every coordinator (to be polled alongside the host jobs: each ends once its
    /// members have all reported or gone) and returns what each did.
    pub async fn run(self) -> BTreeMap<String, RolloutReport> {
        let (names, coordinators): (Vec<String>, Vec<Coordinator>) =
            self.coordinators.into_iter().unzip();
        let reports = futures::future::join_all(coordinators).await;
        names.into_iter().zip(reports).collect()
    }
}

/// Members waiting for their turn, with what their plan does.
type Waiting = BTreeMap<String, (Impact, oneshot::Sender<Admission>)>;

/// One cluster's coordinator: waits until every member in the run has reported (or gone),
/// then lets them apply in a safe order.
async fn coordinate(
    repo: Arc<Repo>,
    cluster: String,
    expected: BTreeSet<String>,
    mut rx: mpsc::UnboundedReceiver<Message>,
    opts: ConvergeOptions,
) -> RolloutReport {
    let mut report = RolloutReport::default();
    let mut heard = BTreeSet::new();
    let mut waiting = Waiting::new();
    while heard.len() < expected.len() {
        match rx.recv().await {
            None => break,
            Some(Message::Gone(member)) => {
                heard.insert(member);
            }
            Some(Message::Report {
                member,
                impact,
                reply,
            }) => {
                heard.insert(member.clone());
                if impact == Impact::None {
                    let (done, _) = oneshot::channel();
                    let _ = reply.send(Admission::Go(done));
                } else {
                    waiting.insert(member, (impact, reply));
                }
            }
        }
    }
    if waiting.is_empty() {
        return report;
    }
    let say = |what: &str| {
        if opts.progress {
            eprintln!(
                "cluster {}: {}",
                crate::text::escape(&cluster),
                crate::text::escape(what)
            );
        }
        tracing::info!(cluster = %cluster, "{what}");
    };
    let Some(m) = repo
        .manifests
        .iter()
        .find(|m| m.name == cluster && matches!(m.spec, Spec::PostgresCluster(_)))
    else {
        refuse_all(waiting, "internal error: the cluster is not in the repo");
        return report;
    };
    let live = match cluster::live_cluster(&repo, m) {
        Ok(l) => l,
        Err(e) => {
            let why = format!("the cluster {cluster} cannot be read: {e}");
            refuse_all(waiting, &why);
            report.error = Some(why);
            return report;
        }
    };
    let session = Session::open(&repo, live, &opts).await;
    let result = roll_members(&session, waiting, &opts, &say, &mut report).await;
    session.close().await;
    if let Err(e) = result {
        report.error = Some(e);
    }
    report
}

/// The order of [`coordinate`], once every member has reported.
async fn roll_members(
    session: &Session,
    mut waiting: Waiting,
    opts: &ConvergeOptions,
    say: &dyn Fn(&str),
    report: &mut RolloutReport,
) -> Result<(), String> {
    let c = session.cluster();
    let within = opts.cluster.health_timeout;
    let (view, health) = c.roll_reading().await;
    let Some(view) = view else {
        let names = waiting.keys().cloned().collect::<Vec<_>>().join(", ");
        say(&format!(
            "no member answers: applying the changes that restart containers on {names} at once"
        ));
        let all = std::mem::take(&mut waiting);
        let failed = go_together(all).await;
        report.changes.push(format!(
            "containers restarted on {names} at once (no member was serving)"
        ));
        return match failed.is_empty() {
            true => Ok(()),
            false => Err(format!("the apply failed on {}", failed.join(", "))),
        };
    };
    // Members already down first: applying them takes nothing more down.
    let down: Vec<String> = waiting
        .keys()
        .filter(|name| !serving(&view, name))
        .cloned()
        .collect();
    // The reading the roll starts from: the first one, or a new one after the members that
    // were down have been applied.
    let (view, health) = if down.is_empty() {
        (Some(view), health)
    } else {
        let batch: Waiting = down
            .iter()
            .filter_map(|n| waiting.remove_entry(n))
            .collect();
        say(&format!(
            "applying on {} first (not running: nothing more goes down)",
            down.join(", ")
        ));
        let failed = go_together(batch).await;
        report.changes.push(format!(
            "containers restarted on {} (not running before)",
            down.join(", ")
        ));
        if !failed.is_empty() {
            let why = format!(
                "the roll stopped: the apply failed on {}",
                failed.join(", ")
            );
            refuse_all(waiting, &why);
            return Err(why);
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if let Err(e) = c.wait_until_healthy(within, &|h| say(h)).await {
            let why = format!(
                "the roll stopped: after {} the cluster did not become healthy within {}s ({e})",
                down.join(", "),
                within.as_secs()
            );
            refuse_all(waiting, &why);
            return Err(why);
        }
        c.roll_reading().await
    };
    if !health.is_healthy() {
        let why = format!(
            "the cluster is {health}: a change that restarts a member's containers waits for a \
             healthy cluster (or is applied while that member itself is down)"
        );
        refuse_all(waiting, &why);
        return Err(why);
    }
    let Some(view) = view else {
        let why = "the roll stopped: the cluster view could not be read".to_string();
        refuse_all(waiting, &why);
        return Err(why);
    };
    let steps = match steps_for(&view, &waiting) {
        Ok(s) => s,
        Err(e) => {
            let why = e.to_string();
            refuse_all(waiting, &why);
            return Err(why);
        }
    };
    let waiting = Mutex::new(waiting);
    let apply_one = |member: String| {
        let turn = waiting.lock().ok().and_then(|mut w| w.remove(&member));
        async move {
            let Some((impact, reply)) = turn else {
                return Err(format!("internal error: {member} is not waiting"));
            };
            say(&format!(
                "applying on {member} ({})",
                impact.causes().join(", ")
            ));
            match go(reply).await {
                true => Ok(Some(format!("containers restarted on {member}"))),
                false => Err(format!("the apply failed on {member}")),
            }
        }
    };
    let result = c.execute_with(&steps, within, say, apply_one).await;
    let rest = waiting.into_inner().unwrap_or_default();
    match result {
        Ok(done) => {
            report.changes.extend(done);
            // Steps cover every waiting member; anything left was not planned.
            if !rest.is_empty() {
                let why = "internal error: a member was left out of the roll".to_string();
                refuse_all(rest, &why);
                return Err(why);
            }
            Ok(())
        }
        Err(e) => {
            let why = format!("the roll stopped: {e}");
            refuse_all(rest, &why);
            Err(why)
        }
    }
}

/// The steps of a roll over the waiting members: service restarts one member at a time
/// (replicas, then the leader), then recreations in the order of a rolling restart.
fn steps_for(view: &ClusterView, waiting: &Waiting) -> Result<Vec<RollStep>, roll::RollError> {
    let leader = view.leaders().first().map(|l| l.name.clone());
    let mut service: Vec<&String> = waiting
        .iter()
        .filter(|(_, (impact, _))| matches!(impact, Impact::Service(_)))
        .map(|(name, _)| name)
        .collect();
    service.sort_by_key(|name| (Some(*name) == leader.as_ref(), (*name).clone()));
    let recreate: BTreeSet<String> = waiting
        .iter()
        .filter(|(_, (impact, _))| matches!(impact, Impact::Recreate(_)))
        .map(|(name, _)| name.clone())
        .collect();
    let mut steps = Vec::new();
    for name in service {
        steps.push(RollStep::Restart {
            member: name.clone(),
        });
        steps.push(RollStep::Gate);
    }
    if !recreate.is_empty() {
        steps.extend(roll::plan(view, &recreate)?);
    }
    Ok(steps)
}

/// True when Patroni shows `member` running PostgreSQL.
fn serving(view: &ClusterView, member: &str) -> bool {
    view.member(member)
        .is_some_and(|m| m.state == "running" || m.state == "streaming")
}

/// Lets one member apply and waits until it has; true when it succeeded.
async fn go(reply: oneshot::Sender<Admission>) -> bool {
    let (done, finished) = oneshot::channel();
    if reply.send(Admission::Go(done)).is_err() {
        return false;
    }
    finished.await.unwrap_or(false)
}

/// Lets every member of `batch` apply at once; returns those whose apply failed.
async fn go_together(batch: Waiting) -> Vec<String> {
    let applies = batch
        .into_iter()
        .map(|(name, (_, reply))| async move { (name, go(reply).await) });
    futures::future::join_all(applies)
        .await
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect()
}

fn refuse_all(waiting: Waiting, why: &str) {
    for (_, (_, reply)) in waiting {
        let _ = reply.send(Admission::Refused(why.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::patroni::{ClusterMember, Role};

    fn member(name: &str, role: &str, state: &str) -> ClusterMember {
        serde_json::from_value(serde_json::json!({
            "name": name, "role": role, "state": state
        }))
        .expect("a member")
    }

    fn view() -> ClusterView {
        ClusterView {
            members: vec![
                member("a", "leader", "running"),
                member("b", "replica", "streaming"),
                member("c", "replica", "running"),
            ],
            pause: false,
        }
    }

    fn waiting(of: &[(&str, Impact)]) -> Waiting {
        of.iter()
            .map(|(n, i)| (n.to_string(), (i.clone(), oneshot::channel().0)))
            .collect()
    }

    fn restart(m: &str) -> RollStep {
        RollStep::Restart { member: m.into() }
    }

    #[test]
    fn recreations_go_replicas_first_then_switchover_then_the_old_leader() {
        let r = Impact::Recreate(vec!["ComposeStack/pg".into()]);
        let steps = steps_for(
            &view(),
            &waiting(&[("a", r.clone()), ("b", r.clone()), ("c", r)]),
        )
        .expect("a roll");
        assert_eq!(
            steps,
            [
                restart("b"),
                RollStep::Gate,
                restart("c"),
                RollStep::Gate,
                RollStep::Switchover {
                    from: "a".into(),
                    to: "b".into()
                },
                RollStep::Gate,
                restart("a"),
                RollStep::Gate,
            ]
        );
        assert!(matches!(view().leaders()[0].role, Role::Leader));
    }

    #[test]
    fn a_service_restart_goes_one_member_at_a_time_leader_last_without_switchover() {
        let s = Impact::Service(vec!["Command/pg-restart-etcd".into()]);
        let steps = steps_for(
            &view(),
            &waiting(&[("a", s.clone()), ("b", s.clone()), ("c", s)]),
        )
        .expect("a roll");
        assert_eq!(
            steps,
            [
                restart("b"),
                RollStep::Gate,
                restart("c"),
                RollStep::Gate,
                restart("a"),
                RollStep::Gate,
            ]
        );
    }

    #[test]
    fn only_a_replica_recreated_needs_no_switchover() {
        let r = Impact::Recreate(vec!["ComposeStack/pg".into()]);
        let steps = steps_for(&view(), &waiting(&[("c", r)])).expect("a roll");
        assert_eq!(steps, [restart("c"), RollStep::Gate]);
    }

    #[test]
    fn a_recreation_without_a_leader_is_refused() {
        let mut v = view();
        v.members[0] = member("a", "replica", "running");
        let r = Impact::Recreate(vec!["ComposeStack/pg".into()]);
        assert!(steps_for(&v, &waiting(&[("b", r)])).is_err());
    }

    #[test]
    fn serving_means_running_postgres() {
        let mut v = view();
        v.members[2] = member("c", "replica", "stopped");
        assert!(serving(&v, "a") && serving(&v, "b"));
        assert!(!serving(&v, "c") && !serving(&v, "d"));
    }
}
