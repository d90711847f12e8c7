//! `plumb pg restore`: a whole cluster back from its pgBackRest repository, to the newest
//! state, a point in time or one backup. The sequence is Patroni's own recovery procedure,
//! driven over SSH on each member:
//!
//! 1. check the repository holds a backup that reaches the target (before anything is touched);
//! 2. stop Patroni (and with it PostgreSQL) on every member; etcd keeps running;
//! 3. remove the cluster's keys from the DCS (`patronictl remove`), so the restored data
//!    starts a new cluster history;
//! 4. on one member (the leader before the restore, else the first member):
//!    `pgbackrest restore --delta` to the target, then PostgreSQL started by hand until the
//!    recovery has ended and the server is promoted, and stopped cleanly;
//! 5. Patroni started there: it finds a clean data directory and an empty DCS and becomes the
//!    leader of a new cluster history (the new system identifier is the restored one);
//! 6. a new full backup on the new timeline (replicas are created from the newest backup: an
//!    older one may hold changes past the point the restore went back to);
//! 7. on every other member the old data directory is emptied and Patroni started: each comes
//!    back as a replica, from the repository first (`create_replica_methods`);
//! 8. the health gate.

use super::ConvergeOptions;
use super::backup::{RepoHost, live_repo};
use super::cluster::Session;
use super::remote::Remote;
use crate::kinds::postgres_cluster::live::LiveCluster;
use crate::load::Repo;
use crate::pg::backup::{BackupType, RestoreTarget};
use crate::shell::quote;
use std::time::Duration;

/// How long PostgreSQL may take to replay the WAL after a restore, before it is promoted.
const RECOVERY_LIMIT: Duration = Duration::from_secs(3600);
/// How long Patroni may take to become the leader on the restored member.
const LEADER_LIMIT: Duration = Duration::from_secs(300);

/// The member the data is restored on and the others.
pub struct RestorePlan {
    /// Member restored from the repository.
    pub restore_on: String,
    /// Members that come back as replicas.
    pub others: Vec<String>,
    /// Where the restore goes.
    pub target: RestoreTarget,
    /// The backup it starts from.
    pub from_backup: String,
}

impl RestorePlan {
    /// What the restore will do, one line each, for the operator to confirm.
    pub fn describe(&self, live: &LiveCluster) -> Vec<String> {
        vec![
            format!(
                "stop Patroni and PostgreSQL on every member of {}",
                live.name
            ),
            format!("remove cluster {} from the DCS", live.name),
            format!(
                "restore {} on {} from backup {} (pgbackrest restore --delta), replay the WAL and promote",
                self.target, self.restore_on, self.from_backup
            ),
            format!(
                "start Patroni on {}: the leader of the restored cluster",
                self.restore_on
            ),
            "take a new full backup (the new timeline)".to_string(),
            format!(
                "empty the data directory of {} and start Patroni: replicas from the repository",
                if self.others.is_empty() {
                    "no other member".to_string()
                } else {
                    self.others.join(", ")
                }
            ),
            "wait until the cluster is healthy".to_string(),
        ]
    }
}

/// sh that runs `inner` (a sh script) as the service user in a one-off container of the
/// member's `patroni` service (the same image, user, paths and network as Patroni itself).
fn in_patroni_container(live: &LiveCluster, inner: &str) -> String {
    format!(
        "cd -- {} && {} run --rm -T --no-deps patroni sh -c {}",
        quote(&live.paths.stack_dir),
        quote(&live.compose_command),
        quote(inner)
    )
}

/// sh for one compose command on the member's stack.
fn compose(live: &LiveCluster, args: &str) -> String {
    format!(
        "cd -- {} && {} {args}",
        quote(&live.paths.stack_dir),
        quote(&live.compose_command)
    )
}

/// Runs `script` on `remote`; a non-zero exit is an error naming `what` and the last lines of
/// its output.
async fn run(remote: &Remote, member: &str, what: &str, script: &str) -> Result<(), String> {
    let out = remote.run(script.as_bytes()).await?;
    if out.status == 0 {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    let tail: Vec<&str> = text.lines().rev().take(10).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "{what} on {member} failed (exit {}): {}",
        out.status,
        crate::text::escape(&tail.join(" | "))
    ))
}

/// The sh that restores the data on the chosen member and brings PostgreSQL through recovery
/// to a promoted, cleanly stopped primary.
fn restore_script(live: &LiveCluster, target: &RestoreTarget) -> String {
    let pg_ctl = quote(&format!("{}/pg_ctl", live.bin_dir));
    let controldata = quote(&format!("{}/pg_controldata", live.bin_dir));
    let data = quote(&live.paths.data_dir);
    let log = quote(&format!("{}/restore.log", live.paths.log_dir));
    let mut restore = vec![
        "pgbackrest".to_string(),
        format!("--config={}", live.paths.pgbackrest_config),
        format!("--stanza={}", live.name),
        "--delta".to_string(),
    ];
    restore.extend(target.pgbackrest_args());
    restore.push("restore".to_string());
    let restore = restore
        .iter()
        .map(|a| quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let secs = RECOVERY_LIMIT.as_secs();
    // The restored postgresql.conf is the one the backup caught, which may hold a value the
    // cluster has since gone back on (Patroni does not rewrite the file when the DCS returns
    // to the running value: a rolled-back `shared_buffers` stays in it, and the server would
    // not start). The recovery runs with the parameters the repo declares now, as Patroni
    // will once it starts on the restored data (the DCS is empty: its bootstrap values are
    // these). `pg_ctl -o` goes through sh: each option is quoted for it, then as a whole.
    let declared: Vec<String> = live
        .dynamic
        .parameters
        .iter()
        .filter_map(|(name, value)| {
            crate::pg::dynconf::setting_text(value)
                .map(|v| format!("-c {}", quote(&format!("{name}={v}"))))
        })
        .collect();
    let options = if declared.is_empty() {
        String::new()
    } else {
        format!(" -o {}", quote(&declared.join(" ")))
    };
    format!(
        "set -e\n\
         {restore}\n\
         {pg_ctl} -D {data} -l {log}{options} -w -t 300 start\n\
         i=0\n\
         until {controldata} {data} | grep -q 'in production'; do\n\
         \x20 i=$((i+1)); if [ $i -gt {secs} ]; then echo 'recovery did not end in time' >&2; {pg_ctl} -D {data} -m fast -w stop; exit 1; fi\n\
         \x20 if ! {pg_ctl} -D {data} status >/dev/null 2>&1; then echo 'PostgreSQL stopped during recovery:' >&2; tail -n 20 {log} >&2; exit 1; fi\n\
         \x20 sleep 1\n\
         done\n\
         {pg_ctl} -D {data} -m fast -w -t 300 stop\n"
    )
}

/// Runs the restore of `plan` over `session`, saying each step; returns what was done.
pub async fn restore(
    session: &Session,
    repo_host: &RepoHost,
    plan: &RestorePlan,
    opts: &ConvergeOptions,
    say: &dyn Fn(&str),
) -> Result<Vec<String>, String> {
    let live = session.live();
    let mut done = Vec::new();
    let members: Vec<String> = live.member_names();
    // Every member must be reachable: a member left running would keep the old history.
    for m in &members {
        session.remote(m)?;
    }

    say("stopping Patroni on every member");
    for m in &members {
        run(
            session.remote(m)?,
            m,
            "stopping Patroni",
            &compose(live, "stop -t 120 patroni"),
        )
        .await?;
    }
    done.push("Patroni stopped on every member".to_string());

    say("removing the cluster from the DCS");
    let config = format!("{}/patroni.yml", live.paths.config_dir);
    let remove = format!(
        "printf '%s\\n%s\\n' {scope} 'Yes I am aware' | patronictl -c {config} remove {scope}",
        scope = quote(&live.name),
        config = quote(&config)
    );
    run(
        session.remote(&plan.restore_on)?,
        &plan.restore_on,
        "patronictl remove",
        &in_patroni_container(live, &remove),
    )
    .await?;
    done.push(format!("cluster {} removed from the DCS", live.name));

    say(&format!(
        "restoring on {} ({})",
        plan.restore_on, plan.target
    ));
    run(
        session.remote(&plan.restore_on)?,
        &plan.restore_on,
        "the restore",
        &in_patroni_container(live, &restore_script(live, &plan.target)),
    )
    .await?;
    done.push(format!(
        "{} restored on {} from {}",
        plan.target, plan.restore_on, plan.from_backup
    ));

    say(&format!("starting Patroni on {}", plan.restore_on));
    run(
        session.remote(&plan.restore_on)?,
        &plan.restore_on,
        "starting Patroni",
        &compose(live, "up -d patroni"),
    )
    .await?;
    let cluster = session.cluster();
    let deadline = tokio::time::Instant::now() + LEADER_LIMIT;
    loop {
        if cluster.current_leader().await.as_deref() == Some(plan.restore_on.as_str()) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "{} did not become the leader within {LEADER_LIMIT:?} (see its Patroni log: \
                 docker-compose logs patroni in {})",
                plan.restore_on, live.paths.stack_dir
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    done.push(format!("{} is the leader", plan.restore_on));

    // The new full backup comes before the replicas: they are created from the repository's
    // newest backup, which must be on the new timeline (an older one may hold changes past
    // the point the restore went back to).
    say("taking a full backup of the restored cluster");
    repo_host
        .backup(&live.name, BackupType::Full, opts.cluster.backup_timeout)
        .await?;
    done.push("a new full backup was taken on the new timeline".to_string());

    let empty = format!("find {} -mindepth 1 -delete", quote(&live.paths.data_dir));
    for m in &plan.others {
        say(&format!(
            "{m}: emptying the old data directory, starting Patroni"
        ));
        let remote = session.remote(m)?;
        run(
            remote,
            m,
            "emptying the data directory",
            &in_patroni_container(live, &empty),
        )
        .await?;
        run(
            remote,
            m,
            "starting Patroni",
            &compose(live, "up -d patroni"),
        )
        .await?;
        done.push(format!("{m} rejoins as a replica"));
    }

    say("waiting until the cluster is healthy");
    cluster
        .wait_until_healthy(opts.cluster.health_timeout, say)
        .await?;
    done.push("the cluster is healthy".to_string());

    Ok(done)
}

/// How long an empty cluster is watched before plumb restores it, beyond Patroni's loop: a
/// bootstrap of Patroni's own (an empty DCS) fills a data directory within seconds.
const EMPTY_WATCH: Duration = Duration::from_secs(10);
/// How long plumb waits for some member's Patroni to answer before deciding anything.
const PATRONI_ANSWER: Duration = Duration::from_secs(90);

/// sh exiting 0 when the data directory is missing or empty.
fn data_empty_check(live: &LiveCluster) -> String {
    let data = quote(&live.paths.data_dir);
    format!("[ ! -e {data} ] || [ -z \"$(ls -A -- {data})\" ]")
}

/// Whether the cluster is empty as restore-on-empty means it: some member's Patroni answering
/// with no leader, and every data directory empty (every member is reachable over SSH).
async fn cluster_is_empty(session: &Session) -> Result<bool, String> {
    let live = session.live();
    if !matches!(session.cluster().leader_if_answering().await, Ok(None)) {
        return Ok(false);
    }
    let check = data_empty_check(live);
    for m in live.member_names() {
        let out = session.remote(&m)?.run(check.as_bytes()).await?;
        if out.status != 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Restore on empty when the DCS outlived the data: a cluster with `backup.restore_on_empty`
/// whose every member's data directory is empty (a lost data volume, a wiped VM disk) while
/// its DCS still holds the cluster, so Patroni waits for a leader that will never come instead
/// of bootstrapping. When that state holds twice, a Patroni loop apart, and the repository
/// holds a valid backup, the cluster is restored to the newest state the repository reaches
/// (the `plumb pg restore` sequence). A dry run says it would. `Ok(None)`: nothing to do.
pub async fn on_empty(
    repo: &Repo,
    session: &Session,
    opts: &ConvergeOptions,
    say: &dyn Fn(&str),
) -> Result<Option<Vec<String>>, String> {
    let live = session.live();
    let Some(repo_name) = live.backup_repo.clone() else {
        return Ok(None);
    };
    if !live.restore_on_empty {
        return Ok(None);
    }
    // Decide nothing on part of the cluster: an unreachable member may hold the data.
    for m in live.member_names() {
        if session.remote(&m).is_err() {
            return Ok(None);
        }
    }
    // Patroni must be up to tell whether there is a leader (a stack just started); a leader
    // (every converge of a running cluster) ends it at once.
    let deadline = tokio::time::Instant::now() + PATRONI_ANSWER;
    loop {
        match session.cluster().leader_if_answering().await {
            Ok(Some(_)) => return Ok(None),
            Ok(None) => break,
            Err(_) if opts.dry_run || tokio::time::Instant::now() > deadline => return Ok(None),
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
    if !cluster_is_empty(session).await? {
        return Ok(None);
    }
    if !opts.dry_run {
        let watch = Duration::from_secs(live.dynamic.loop_wait.into()) + EMPTY_WATCH;
        say(&format!(
            "every data directory is empty and there is no leader; watching {}s",
            watch.as_secs()
        ));
        tokio::time::sleep(watch).await;
        if !cluster_is_empty(session).await? {
            return Ok(None);
        }
    }
    let host = RepoHost::connect(repo, live_repo(repo, &repo_name)?, opts).await?;
    let outcome = async {
        let info = host.info(&live.name).await?;
        if !info.has_valid_backup() {
            return Err(format!(
                "every data directory of {} is empty and the repository holds no valid backup \
                 to restore: initialize it again by removing the cluster from the DCS \
                 (patronictl remove {})",
                live.name, live.name
            ));
        }
        let target = RestoreTarget::Latest;
        let from = target.check(&info, super::backup::now())?.label.clone();
        let names = live.member_names();
        let Some((first, rest)) = names.split_first() else {
            return Ok(None);
        };
        let plan = RestorePlan {
            restore_on: first.clone(),
            others: rest.to_vec(),
            target,
            from_backup: from.clone(),
        };
        if opts.dry_run {
            return Ok(Some(vec![format!(
                "restore {} from backup {from} and the archived WAL: every data directory is \
                 empty (restore_on_empty)",
                live.name
            )]));
        }
        say(&format!(
            "every data directory is empty: restoring from backup {from} (restore_on_empty)"
        ));
        let mut done = vec![format!(
            "every data directory of {} was empty: restored (restore_on_empty)",
            live.name
        )];
        done.extend(restore(session, &host, &plan, opts, say).await?);
        Ok(Some(done))
    }
    .await;
    host.close().await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restore_script_quotes_what_it_is_given_and_bounds_the_recovery() {
        // The reference repo at the root of this repository, secrets as placeholders.
        let repo = crate::load::load(&crate::load::LoadOptions {
            root: env!("CARGO_MANIFEST_DIR").into(),
            overlay: None,
            identity: None,
            placeholders: true,
            secret_command: None,
        })
        .unwrap_or_else(|e| panic!("{e:?}"));
        let m = repo.find("PostgresCluster", "postgres01").expect("cluster");
        let crate::kinds::Spec::PostgresCluster(spec) = &m.spec else {
            panic!("not a cluster")
        };
        let ca = |n: &str| repo.ca_certificates.get(n).map(|c| c.bytes().to_vec());
        let secret = |_: &str| Ok(crate::pg::Password::new("x"));
        let live = spec.live(m, &repo.inventory, &secret, &ca).expect("live");
        let s = restore_script(&live, &RestoreTarget::Backup("20261203-100000F".into()));
        assert!(s.starts_with("set -e\n"), "{s}");
        assert!(
            s.contains("--set=20261203-100000F --type=immediate --target-action=promote restore"),
            "{s}"
        );
        assert!(s.contains("grep -q 'in production'"), "{s}");
        // The recovery starts with the parameters declared now, quoted twice (pg_ctl -o).
        assert!(
            s.contains(" -o '-c log_directory=") && s.contains(" -c shared_buffers=128MB "),
            "{s}"
        );
        assert!(s.contains("-m fast -w -t 300 stop"), "{s}");
        // Restore on empty: missing or empty, the declared path quoted for sh.
        assert_eq!(
            data_empty_check(&live),
            "[ ! -e /home/postgres/postgres-data/data ] || \
             [ -z \"$(ls -A -- /home/postgres/postgres-data/data)\" ]"
        );
        let wrapped = in_patroni_container(&live, "echo 'x'");
        assert!(
            wrapped.contains("run --rm -T --no-deps patroni sh -c 'echo '\\''x'\\'''"),
            "{wrapped}"
        );
    }
}
