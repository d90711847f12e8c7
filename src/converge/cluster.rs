//! The cluster phase of a converge: once the hosts of a `PostgresCluster` are applied, plumb
//! talks to the cluster itself, through the SSH connection it opens to each member (PostgreSQL
//! and Patroni's REST API are reached over tunnels of that connection: no port is opened to the
//! controller beyond sshd).
//!
//! In order: the health gate (waited for, bounded, when a member changed), roles, databases and
//! grants on the leader, Patroni's dynamic configuration (`PATCH /config`), then a rolling
//! restart of the members whose parameters wait for one (replicas one at a time, a switchover,
//! the old leader; the gate between steps). A dry run reads the same things and reports what it
//! would do. The planning is in [`crate::pg`]; this module only sequences the I/O.

use super::ConvergeOptions;
use super::remote::{Parked, Remote};
use crate::kinds::Manifest;
use crate::kinds::Spec;
use crate::kinds::postgres_cluster::live::LiveCluster;
use crate::load::Repo;
use crate::pg::Password;
use crate::pg::client::{PgClient, PgConnector, PgOptions, TlsMode};
use crate::pg::dynconf;
use crate::pg::etcd::{self, EtcdHealth};
use crate::pg::health::{self, ClusterReport, Health, HealthInput, Reason, ReplicationRow};
use crate::pg::patroni::{
    ClusterView, MemberStatus, PatroniClient, RestartOptions, RestartOutcome,
};
use crate::pg::roles;
use crate::pg::roll::{self, RollStep};
use crate::report::cluster::{ClusterRun, ClusterStatus};
use crate::report::{HostRun, HostStatus};
use crate::transport::{Connection, Destination};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How the cluster phase runs.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Run the cluster phase at all (`--no-cluster` turns it off).
    pub enabled: bool,
    /// Longest wait for a cluster to become healthy (after a change, and at each gate of a
    /// roll).
    pub health_timeout: Duration,
    /// Drop roles and databases that exist but are not declared.
    pub drop_undeclared: bool,
    /// Restart members whose parameters wait for a restart (rolling).
    pub roll: bool,
    /// Longest wait for a backup plumb takes.
    pub backup_timeout: Duration,
    /// Take a full backup of a healthy cluster whose repository holds no valid backup.
    pub first_backup: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            enabled: true,
            health_timeout: Duration::from_secs(300),
            drop_undeclared: false,
            roll: true,
            backup_timeout: Duration::from_secs(1800),
            first_backup: true,
        }
    }
}

/// How often a wait polls the cluster.
const POLL: Duration = Duration::from_secs(1);
/// Bound on one etcd health request.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// The clusters of `repo` with a member among `runs`' hosts, in manifest order.
pub fn clusters_in_run<'r>(repo: &'r Repo, runs: &[HostRun]) -> Vec<&'r Manifest> {
    let in_run: BTreeSet<&str> = runs.iter().map(|r| r.host.as_str()).collect();
    repo.manifests
        .iter()
        .filter(|m| matches!(m.spec, Spec::PostgresCluster(_)))
        .filter(|m| repo.hosts_of(m).iter().any(|h| in_run.contains(h)))
        .collect()
}

/// Runs the cluster phase of every cluster with a member in the run, one cluster after the
/// other (a roll must not overlap another on shared hosts).
pub async fn converge_clusters(
    repo: &Repo,
    runs: &[HostRun],
    opts: &ConvergeOptions,
    deadline: Option<tokio::time::Instant>,
    mut rolled: BTreeMap<String, super::rollout::RolloutReport>,
    parked: &Parked,
) -> Vec<ClusterRun> {
    let mut out = Vec::new();
    if !opts.cluster.enabled || opts.remote.local {
        return out;
    }
    for m in clusters_in_run(repo, runs) {
        let rolled = rolled.remove(&m.name).unwrap_or_default();
        let one = converge_one(repo, m, runs, opts, rolled, parked);
        // The run's watchdog: a cluster phase still going at the deadline is dropped (its
        // tunnels and SSH connections close) and the cluster reported failed.
        let run = match deadline {
            Some(d) => tokio::time::timeout_at(d, one).await.unwrap_or_else(|_| {
                let mut r = ClusterRun::new(&m.name);
                r.error = Some(super::run_timeout_message(
                    opts.run_timeout.unwrap_or_default(),
                ));
                r
            }),
            None => one.await,
        };
        out.push(run);
    }
    out
}

async fn converge_one(
    repo: &Repo,
    m: &Manifest,
    runs: &[HostRun],
    opts: &ConvergeOptions,
    rolled: super::rollout::RolloutReport,
    parked: &Parked,
) -> ClusterRun {
    let mut run = ClusterRun::new(&m.name);
    // What the host phase's roll did comes first, and why it stopped is the phase's error.
    run.changes = rolled.changes;
    let live = match live_cluster(repo, m) {
        Ok(l) => l,
        Err(e) => {
            run.error = Some(e);
            return run;
        }
    };
    let status_of = |name: &str| {
        runs.iter()
            .find(|r| r.host == name)
            .map(|r| r.status(opts.dry_run))
    };
    let changed = live
        .members
        .iter()
        .any(|mb| status_of(&mb.name) == Some(HostStatus::Changed));
    let failed: Vec<String> = live
        .members
        .iter()
        .filter(|mb| status_of(&mb.name) == Some(HostStatus::Failed))
        .map(|mb| mb.name.clone())
        .collect();
    let in_run: BTreeSet<String> = live
        .members
        .iter()
        .filter(|mb| status_of(&mb.name).is_some())
        .map(|mb| mb.name.clone())
        .collect();

    let backup_repo = live.backup_repo.clone();
    let session = Session::open_reusing(repo, live, opts, Some(parked)).await;
    let mut changed = changed;
    let say = |what: &str| {
        if opts.progress {
            eprintln!(
                "cluster {}: {}",
                crate::text::escape(&m.name),
                crate::text::escape(what)
            );
        }
        tracing::info!(cluster = %m.name, "{what}");
    };
    match super::restore::on_empty(repo, &session, opts, &say).await {
        Ok(None) => {}
        Ok(Some(done)) => {
            changed = !opts.dry_run;
            run.changes.extend(done);
        }
        Err(e) => run.error = Some(format!("restore on empty: {e}")),
    }
    let cluster = session.cluster();
    let phase = Phase {
        cluster: &cluster,
        opts,
        changed,
        failed,
        in_run,
    };
    phase.run(&mut run).await;
    // Back to the run's connections: the repository host may be a member of another cluster.
    session.park(parked);
    if let Some(stopped) = rolled.error {
        run.error = Some(match run.error.take() {
            Some(e) => format!("{stopped}; {e}"),
            None => stopped,
        });
    }
    if let Some(name) = backup_repo {
        super::backup::protect(repo, &name, changed, &mut run, opts, parked).await;
    }
    run
}

/// The cluster a manifest declares, with its secrets read.
pub fn live_cluster(repo: &Repo, m: &Manifest) -> Result<LiveCluster, String> {
    let Spec::PostgresCluster(spec) = &m.spec else {
        return Err(format!("{}/{} is not a PostgresCluster", m.kind, m.name));
    };
    let secret = |name: &str| {
        repo.secrets
            .get(name)
            .map(|v| Password::from(&v))
            .map_err(|e| e.to_string())
    };
    let ca_pem = |name: &str| repo.ca_certificates.get(name).map(|c| c.bytes().to_vec());
    spec.live(m, &repo.inventory, &secret, &ca_pem)
        .map_err(|e| e.to_string())
}

/// A cluster and an SSH connection to each member that could be reached.
pub struct Session {
    live: LiveCluster,
    remotes: Vec<(String, Result<Remote, String>)>,
}

impl Session {
    /// Connects to every member (in parallel).
    pub async fn open(repo: &Repo, live: LiveCluster, opts: &ConvergeOptions) -> Session {
        Session::open_reusing(repo, live, opts, None).await
    }

    /// Connects to every member, taking the connections the run's host jobs left in `parked`
    /// first (the cluster phase of a converge reaches the members over the connections the
    /// host phase opened).
    pub async fn open_reusing(
        repo: &Repo,
        live: LiveCluster,
        opts: &ConvergeOptions,
        parked: Option<&Parked>,
    ) -> Session {
        let tasks = live.members.iter().map(|mb| async move {
            let remote = match repo.inventory.host(&mb.name) {
                Some(h) => Parked::take_or_connect(parked, h, &opts.remote)
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("not in the inventory".to_string()),
            };
            (mb.name.clone(), remote)
        });
        let remotes = futures::future::join_all(tasks).await;
        Session { live, remotes }
    }

    /// The connection to `member`, if it could be opened.
    pub fn remote(&self, member: &str) -> Result<&Remote, String> {
        match self.remotes.iter().find(|(n, _)| n == member) {
            Some((_, Ok(r))) => Ok(r),
            Some((_, Err(e))) => Err(format!("{member} is unreachable: {e}")),
            None => Err(format!("{member} is not a member")),
        }
    }

    /// The cluster as declared.
    pub fn live(&self) -> &LiveCluster {
        &self.live
    }

    /// The cluster over these connections.
    pub fn cluster(&self) -> Cluster<'_> {
        let conns = self
            .remotes
            .iter()
            .filter_map(|(name, r)| match r {
                Ok(Remote::Ssh(c)) => Some((name.clone(), &**c)),
                _ => None,
            })
            .collect();
        let unreachable = self
            .remotes
            .iter()
            .filter_map(|(name, r)| {
                r.as_ref().err().map(|e| Reason {
                    member: Some(name.clone()),
                    message: format!("unreachable: {e}"),
                })
            })
            .collect();
        Cluster {
            live: &self.live,
            conns,
            unreachable,
        }
    }

    /// Leaves the open connections in `parked` (closed when the run ends).
    pub fn park(self, parked: &Parked) {
        for (name, r) in self.remotes {
            if let Ok(remote) = r {
                parked.park(&name, remote);
            }
        }
    }

    /// Closes the connections.
    pub async fn close(self) {
        for (_, r) in self.remotes {
            if let Ok(remote) = r {
                remote.close().await;
            }
        }
    }
}

/// A cluster and the SSH connections to its reachable members.
pub struct Cluster<'a> {
    live: &'a LiveCluster,
    conns: BTreeMap<String, &'a Connection>,
    unreachable: Vec<Reason>,
}

/// One health evaluation and what it read.
struct Reading {
    health: Health,
    view: Option<ClusterView>,
    replication: Option<Vec<ReplicationRow>>,
    etcd: Vec<EtcdHealth>,
}

impl Reading {
    fn leader(&self) -> Option<String> {
        single_leader(self.view.as_ref()?)
    }
}

/// The leader's name, when exactly one member holds the lock.
fn single_leader(view: &ClusterView) -> Option<String> {
    match view.leaders().as_slice() {
        [one] => Some(one.name.clone()),
        _ => None,
    }
}

impl<'a> Cluster<'a> {
    fn address(&self, member: &str) -> Option<&str> {
        self.live
            .members
            .iter()
            .find(|m| m.name == member)
            .map(|m| m.address.as_str())
    }

    fn rest(&self, member: &str) -> Option<PatroniClient<'a>> {
        let conn = self.conns.get(member)?;
        let addr = self.address(member)?;
        Some(
            PatroniClient::new(
                conn,
                member,
                Destination::tcp(addr, self.live.ports.rest_api),
                self.live.rest_api.clone(),
            )
            .with_tls(self.live.tls.clone()),
        )
    }

    fn pg_destination(&self, member: &str) -> Option<Destination> {
        Some(Destination::tcp(
            self.address(member)?,
            self.live.ports.postgres,
        ))
    }

    fn pg_options(&self, member: &str) -> PgOptions {
        let mut options = PgOptions::new(member, "postgres", self.live.superuser.clone());
        if let Some(addr) = self.address(member) {
            options.tls = TlsMode::VerifyFull {
                tls: self.live.tls.clone(),
                server: addr.to_string(),
            };
        }
        options
    }

    async fn pg(&self, member: &str) -> Result<PgClient, String> {
        let (Some(conn), Some(dest)) = (self.conns.get(member), self.pg_destination(member)) else {
            return Err(format!("{member} is not reachable over SSH"));
        };
        PgClient::connect_through(conn, &dest, &self.pg_options(member))
            .await
            .map_err(|e| e.to_string())
    }

    fn connector(&self, member: &str) -> Option<PgConnector<'a>> {
        let conn = self.conns.get(member)?;
        Some(PgConnector::new(
            conn,
            self.pg_destination(member)?,
            self.pg_options(member),
        ))
    }

    /// `GET /cluster` from the first member that answers.
    async fn view(&self) -> Result<ClusterView, String> {
        let mut last = "no member is reachable over SSH".to_string();
        for name in self.conns.keys() {
            if let Some(rest) = self.rest(name) {
                match rest.cluster().await {
                    Ok(v) => return Ok(v),
                    Err(e) => last = e.to_string(),
                }
            }
        }
        Err(last)
    }

    /// Each reachable member's own `GET /patroni` (those that answer).
    async fn statuses(&self) -> BTreeMap<String, MemberStatus> {
        let asks = self.conns.keys().filter_map(|name| {
            let rest = self.rest(name)?;
            Some(async move { (name.clone(), rest.patroni().await) })
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(|(n, r)| r.ok().map(|s| (n, s)))
            .collect()
    }

    /// One full health evaluation.
    async fn read(&self) -> Reading {
        let members = self.live.member_names();
        let view = self.view().await;
        let leader = view.as_ref().ok().and_then(single_leader);
        let replication = match &leader {
            Some(l) => match self.pg(l).await {
                Ok(client) => health::read_replication(&client)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            },
            None => Err("no single leader to read pg_stat_replication from".to_string()),
        };
        // etcd's client port takes only clients with a certificate of the cluster CA; its
        // health is read on the metrics listener, plain HTTP on the member's loopback. With
        // Consul, the DCS is not on the members: nothing to ask them.
        let etcd_members = members.iter().filter(|_| self.live.etcd);
        let etcd_asks = etcd_members.map(|name| async move {
            match self.conns.get(name) {
                Some(conn) => {
                    etcd::health(
                        conn,
                        name,
                        &Destination::tcp("127.0.0.1", self.live.ports.etcd_metrics),
                        ETCD_TIMEOUT,
                    )
                    .await
                }
                _ => EtcdHealth {
                    member: name.clone(),
                    healthy: false,
                    reason: Some("the member is not reachable over SSH".into()),
                },
            }
        });
        let etcd = futures::future::join_all(etcd_asks).await;
        let view_err = view.as_ref().err().cloned().unwrap_or_default();
        let repl_err = replication.as_ref().err().cloned().unwrap_or_default();
        let mut health = health::evaluate(&HealthInput {
            members: &members,
            cluster: view.as_ref().map_err(|_| view_err.as_str()),
            replication: replication
                .as_ref()
                .map(Vec::as_slice)
                .map_err(|_| repl_err.as_str()),
            etcd: self.live.etcd.then_some(etcd.as_slice()),
            backup_check: None,
            max_replay_lag: health::DEFAULT_MAX_REPLAY_LAG,
        });
        if !self.unreachable.is_empty() {
            let mut reasons = match health {
                Health::Unhealthy(r) => r,
                Health::Healthy => Vec::new(),
            };
            reasons.splice(0..0, self.unreachable.iter().cloned());
            health = Health::Unhealthy(reasons);
        }
        Reading {
            health,
            view: view.ok(),
            replication: replication.ok(),
            etcd,
        }
    }

    /// Polls until healthy or `within` has passed; `say` sees each unhealthy verdict.
    async fn wait_healthy(&self, within: Duration, say: &dyn Fn(&Health)) -> Reading {
        let deadline = tokio::time::Instant::now() + within;
        let mut last = None;
        loop {
            let reading = match tokio::time::timeout_at(deadline, self.read()).await {
                Ok(r) => r,
                Err(_) => Reading {
                    health: Health::Unhealthy(vec![Reason {
                        member: None,
                        message: format!("the health check did not finish within {within:?}"),
                    }]),
                    view: None,
                    replication: None,
                    etcd: Vec::new(),
                },
            };
            if reading.health.is_healthy() || tokio::time::Instant::now() + POLL > deadline {
                return reading;
            }
            // Each new verdict once, not once a second.
            if last.as_ref() != Some(&reading.health) {
                say(&reading.health);
                last = Some(reading.health.clone());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What `plumb pg status` shows.
    async fn report(&self, reading: &Reading) -> ClusterReport {
        let statuses = self.statuses().await;
        ClusterReport {
            cluster: self.live.name.clone(),
            members: health::member_reports(
                &self.live.member_names(),
                reading.view.as_ref(),
                &statuses,
                reading.replication.as_deref(),
            ),
            etcd: reading.etcd.clone(),
            health: reading.health.clone(),
        }
    }
}

impl Cluster<'_> {
    /// The leader as the first member whose Patroni answers `GET /cluster` sees it (`None`:
    /// no single leader); an error when no member answers.
    pub async fn leader_if_answering(&self) -> Result<Option<String>, String> {
        self.view().await.map(|v| single_leader(&v))
    }

    /// The member holding the leader lock, when exactly one does.
    pub async fn current_leader(&self) -> Option<String> {
        single_leader(&self.view().await.ok()?)
    }

    /// Waits until the cluster is healthy, at most `within`; `say` sees each new verdict.
    pub async fn wait_until_healthy(
        &self,
        within: Duration,
        say: &dyn Fn(&str),
    ) -> Result<(), String> {
        let reading = self.wait_healthy(within, &|h| say(&h.to_string())).await;
        match reading.health {
            Health::Healthy => Ok(()),
            unhealthy => Err(format!("the cluster is {unhealthy}")),
        }
    }

    /// `plumb pg status`: one reading of the cluster.
    pub async fn status(&self) -> ClusterReport {
        let reading = self.read().await;
        self.report(&reading).await
    }

    /// `plumb pg switchover`: from the leader to `to` (or the replica Patroni picks), on a
    /// healthy cluster only, then the gate. Returns what was done.
    pub async fn switchover(
        &self,
        to: Option<&str>,
        within: Duration,
        say: &dyn Fn(&str),
    ) -> Result<Vec<String>, String> {
        let reading = self.read().await;
        if !reading.health.is_healthy() {
            return Err(format!(
                "the cluster is {}: no switchover was attempted",
                reading.health
            ));
        }
        let leader = reading.leader().ok_or("the cluster has no single leader")?;
        if let Some(to) = to {
            if to == leader {
                return Err(format!("{to} already leads the cluster"));
            }
            if self.address(to).is_none() {
                return Err(format!("{to} is not a member of the cluster"));
            }
        }
        let steps = vec![
            RollStep::Switchover {
                from: leader.clone(),
                to: to.map(str::to_string).unwrap_or_default(),
            },
            RollStep::Gate,
        ];
        self.execute(&steps, &RestartOptions::default(), within, say)
            .await
    }

    /// `plumb pg restart`: restarts `members` (every member when empty) in a rolling order,
    /// on a healthy cluster only. Returns what was done.
    pub async fn restart(
        &self,
        members: &BTreeSet<String>,
        within: Duration,
        say: &dyn Fn(&str),
    ) -> Result<Vec<String>, String> {
        let reading = self.read().await;
        if !reading.health.is_healthy() {
            return Err(format!(
                "the cluster is {}: nothing was restarted",
                reading.health
            ));
        }
        let all: BTreeSet<String> = if members.is_empty() {
            self.live.member_names().into_iter().collect()
        } else {
            members.clone()
        };
        let view = reading
            .view
            .as_ref()
            .ok_or("the cluster view could not be read")?;
        let steps = roll::plan(view, &all).map_err(|e| e.to_string())?;
        self.execute(&steps, &RestartOptions::default(), within, say)
            .await
    }

    /// Runs a roll's steps in order, stopping at the first failure or unhealthy gate; a
    /// restart is Patroni's `POST /restart`.
    async fn execute(
        &self,
        steps: &[RollStep],
        restart: &RestartOptions,
        within: Duration,
        say: &dyn Fn(&str),
    ) -> Result<Vec<String>, String> {
        let restart_one = |member: String| async move {
            let rest = self
                .rest(&member)
                .ok_or_else(|| format!("{member} is not reachable over SSH"))?;
            match rest.restart(restart).await.map_err(|e| e.to_string())? {
                RestartOutcome::Restarted(_) => Ok(Some(format!("restarted {member}"))),
                RestartOutcome::NotNeeded(_) => Ok(None),
            }
        };
        self.execute_with(steps, within, say, restart_one).await
    }

    /// The cluster's view (when some member answers) and its health: what a roll of changes
    /// that restart members' containers starts from.
    pub(super) async fn roll_reading(&self) -> (Option<ClusterView>, Health) {
        let reading = self.read().await;
        (reading.view, reading.health)
    }

    /// Runs a roll's steps in order, stopping at the first failure or unhealthy gate;
    /// `restart_one` does what [`RollStep::Restart`] means to the caller and says what it did.
    pub(super) async fn execute_with<F, Fut>(
        &self,
        steps: &[RollStep],
        within: Duration,
        say: &dyn Fn(&str),
        mut restart_one: F,
    ) -> Result<Vec<String>, String>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, String>>,
    {
        let mut done = Vec::new();
        for step in steps {
            say(&step.to_string());
            match step {
                RollStep::Restart { member } => {
                    let what = restart_one(member.clone()).await.map_err(|e| {
                        if done.is_empty() {
                            e
                        } else {
                            format!("{e} (after {})", done.join(", "))
                        }
                    })?;
                    done.extend(what);
                }
                RollStep::Switchover { from, to } => {
                    let rest = self
                        .rest(from)
                        .ok_or_else(|| format!("{from} is not reachable over SSH"))?;
                    let candidate = (!to.is_empty()).then_some(to.as_str());
                    rest.switchover(from, candidate)
                        .await
                        .map_err(|e| e.to_string())?;
                    done.push(match candidate {
                        Some(to) => format!("switchover {from} -> {to}"),
                        None => format!("switchover from {from}"),
                    });
                }
                RollStep::Gate => {
                    let r = self.wait_healthy(within, &|h| say(&h.to_string())).await;
                    if !r.health.is_healthy() {
                        return Err(format!(
                            "stopped after {}: the cluster did not become healthy again within {}s ({})",
                            if done.is_empty() {
                                "nothing".to_string()
                            } else {
                                done.join(", ")
                            },
                            within.as_secs(),
                            r.health
                        ));
                    }
                }
            }
        }
        Ok(done)
    }
}

/// The cluster phase of one run.
struct Phase<'a> {
    cluster: &'a Cluster<'a>,
    opts: &'a ConvergeOptions,
    /// A member host changed in this run.
    changed: bool,
    /// Member hosts that failed in this run.
    failed: Vec<String>,
    /// Members among the run's hosts (only they are restarted).
    in_run: BTreeSet<String>,
}

impl Phase<'_> {
    fn say(&self, what: &str) {
        if self.opts.progress {
            eprintln!(
                "cluster {}: {}",
                crate::text::escape(&self.cluster.live.name),
                crate::text::escape(what)
            );
        }
        tracing::info!(cluster = %self.cluster.live.name, "{what}");
    }

    async fn run(&self, run: &mut ClusterRun) {
        let c = self.cluster;
        let dry = self.opts.dry_run;
        // The gate: waited for when this run changed a member (a new cluster bootstraps, a
        // replica is being created); read once otherwise, or when a member could not be
        // converged (it will not heal by waiting).
        let mut reading = if !dry && self.changed && self.failed.is_empty() {
            self.say("waiting until the cluster is healthy");
            c.wait_healthy(self.opts.cluster.health_timeout, &|h| {
                self.say(&h.to_string())
            })
            .await
        } else {
            c.read().await
        };
        if dry && reading.view.is_none() {
            // Nothing answers yet: the converge will start it; nothing more to read.
            run.status = ClusterStatus::NotRunning;
            run.warnings.push(
                "Patroni does not answer on any member yet; a converge starts the cluster".into(),
            );
            return;
        }
        if let Some(leader) = reading.leader() {
            if let Err(e) = self.database_state(&leader, run).await {
                run.error = Some(e);
            }
            if run.error.is_none() {
                match self.dynamic_configuration(&leader, run).await {
                    Ok((restart_expected, leader_first)) => {
                        if run.error.is_none()
                            && let Err(e) = self
                                .roll_pending(&mut reading, restart_expected, leader_first, run)
                                .await
                        {
                            run.error = Some(e);
                        }
                    }
                    Err(e) => run.error = Some(e),
                }
            }
        }
        let final_reading = if dry { reading } else { c.read().await };
        let report = c.report(&final_reading).await;
        run.members = report.members;
        match &final_reading.health {
            Health::Healthy => run.status = ClusterStatus::Healthy,
            Health::Unhealthy(reasons) => {
                run.status = ClusterStatus::Unhealthy;
                run.reasons = reasons.iter().map(Reason::to_string).collect();
            }
        }
    }

    /// Roles, databases and grants, on the leader.
    async fn database_state(&self, leader: &str, run: &mut ClusterRun) -> Result<(), String> {
        let c = self.cluster;
        let Some(connector) = c.connector(leader) else {
            return Err(format!("the leader {leader} is not reachable over SSH"));
        };
        let declared = &c.live.declared;
        let actual = roles::read_actual(&connector, declared)
            .await
            .map_err(|e| format!("reading roles and databases on {leader}: {e}"))?;
        let plan = roles::plan(
            declared,
            &actual,
            roles::PlanOptions {
                drop_undeclared: self.opts.cluster.drop_undeclared,
            },
        )
        .map_err(|e| format!("roles and databases: {e}"))?;
        for change in &plan.changes {
            let line = change.to_string();
            match change.kind {
                roles::ChangeKind::Undeclared => run.warnings.push(format!(
                    "{line} (exists but is not declared; dropped only with --drop-undeclared)"
                )),
                roles::ChangeKind::Warning => run.warnings.push(line),
                _ => run.changes.push(line),
            }
        }
        if self.opts.dry_run || plan.is_empty() {
            return Ok(());
        }
        self.say(&format!(
            "{} SQL statement(s) on {leader}",
            plan.statements.len()
        ));
        roles::apply(&connector, &plan)
            .await
            .map_err(|e| format!("roles and databases on {leader}: {e}"))?;
        Ok(())
    }

    /// Patroni's dynamic configuration; returns whether a change needs a restart, and whether
    /// the leader must restart first (a standby minimum is lowered).
    async fn dynamic_configuration(
        &self,
        leader: &str,
        run: &mut ClusterRun,
    ) -> Result<(bool, bool), String> {
        let c = self.cluster;
        let Some(rest) = c.rest(leader) else {
            return Err(format!("the leader {leader} is not reachable over SSH"));
        };
        let current = rest.config().await.map_err(|e| e.to_string())?;
        let contexts = match c.pg(leader).await {
            Ok(client) => dynconf::read_contexts(&client)
                .await
                .map_err(|e| e.to_string())?,
            Err(e) => return Err(format!("reading pg_settings on {leader}: {e}")),
        };
        let plan = dynconf::plan(&c.live.dynamic, &current, &contexts);
        if !plan.unknown_parameters.is_empty() {
            return Err(format!(
                "PostgreSQL does not know the parameter(s) {}: fix `parameters` in the manifest (nothing was patched)",
                plan.unknown_parameters.join(", ")
            ));
        }
        for change in &plan.changes {
            run.changes.push(format!("configuration {change}"));
        }
        let answer = (plan.needs_restart(), plan.lowers_a_standby_minimum());
        if plan.is_empty() || self.opts.dry_run {
            return Ok(answer);
        }
        self.say(&format!(
            "PATCH /config ({} setting(s))",
            plan.changes.len()
        ));
        rest.patch_config(&plan.patch)
            .await
            .map_err(|e| e.to_string())?;
        Ok(answer)
    }

    /// Members whose parameters wait for a restart, rolled: replicas, switchover, old leader.
    async fn roll_pending(
        &self,
        reading: &mut Reading,
        restart_expected: bool,
        leader_first: bool,
        run: &mut ClusterRun,
    ) -> Result<(), String> {
        let c = self.cluster;
        if self.opts.dry_run {
            if restart_expected {
                run.changes.push(if leader_first {
                    "restart of the leader in place, then the replicas one at a time (a setting a standby needs at least as high as its primary is lowered)"
                        .into()
                } else {
                    "rolling restart of the members (replicas one at a time, switchover, then the leader)"
                        .into()
                });
            }
            let pending: Vec<String> = c
                .statuses()
                .await
                .into_iter()
                .filter(|(_, s)| s.pending_restart)
                .map(|(n, _)| n)
                .collect();
            if !pending.is_empty() && !restart_expected {
                run.changes
                    .push(format!("restart pending on {}", pending.join(", ")));
            }
            return Ok(());
        }
        // After a patch, Patroni applies it at its next HA loop: wait (bounded) until every
        // member that should say pending_restart says it.
        let mut pending = self.pending().await;
        if restart_expected {
            let within = Duration::from_secs(u64::from(c.live.dynamic.loop_wait) * 3 + 15);
            let deadline = tokio::time::Instant::now() + within;
            while pending.len() < c.conns.len() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
                pending = self.pending().await;
            }
        }
        pending.retain(|m| self.in_run.contains(m));
        if pending.is_empty() || !self.opts.cluster.roll {
            if !pending.is_empty() {
                run.warnings.push(format!(
                    "restart pending on {} (not rolled: --no-roll)",
                    pending.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            return Ok(());
        }
        if !reading.health.is_healthy() {
            *reading = c.read().await;
        }
        if !reading.health.is_healthy() {
            return Err(format!(
                "a restart is pending on {}, but the cluster is {}: the roll was not started, nothing was restarted",
                pending.iter().cloned().collect::<Vec<_>>().join(", "),
                reading.health
            ));
        }
        let view = reading
            .view
            .as_ref()
            .ok_or("the cluster view could not be read")?;
        let options = RestartOptions {
            restart_pending: true,
            ..Default::default()
        };
        let within = self.opts.cluster.health_timeout;
        let steps = if leader_first {
            roll::plan_leader_first(view, &pending)
        } else {
            roll::plan(view, &pending)
        }
        .map_err(|e| e.to_string())?;
        let done = c
            .execute(&steps, &options, within, &|w| self.say(w))
            .await?;
        run.changes.extend(done);
        // A replica restarted before its primary keeps the primary's higher standby minimums
        // and stays pending: one more pass, leader first, settles it.
        let mut left = self.pending().await;
        left.retain(|m| self.in_run.contains(m));
        if !left.is_empty() {
            let view = c.view().await?;
            let steps = roll::plan_leader_first(&view, &left).map_err(|e| e.to_string())?;
            let done = c
                .execute(&steps, &options, within, &|w| self.say(w))
                .await?;
            run.changes.extend(done);
        }
        Ok(())
    }

    async fn pending(&self) -> BTreeSet<String> {
        self.cluster
            .statuses()
            .await
            .into_iter()
            .filter(|(_, s)| s.pending_restart)
            .map(|(n, _)| n)
            .collect()
    }
}
