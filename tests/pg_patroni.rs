//! Patroni's REST API, etcd's health and PostgreSQL's replication view, all reached through a
//! real OpenSSH sshd's `direct-tcpip` channels: a real two-member Patroni 3.0.2 cluster
//! (Debian's patroni, etcd-server and postgresql-15; tests/support/patroni.rs) on loopback.
//! One test walks what a converge does: health gate, dynamic configuration planned and
//! patched, pending restarts rolled (replica, switchover, old primary), idempotence.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use plumb::pg::client::{PgClient, PgOptions};
use plumb::pg::dynconf::{self, DeclaredDynamic};
use plumb::pg::health::{self, DEFAULT_MAX_REPLAY_LAG, Health, HealthInput};
use plumb::pg::patroni::{PatroniClient, PatroniError, RestartOptions, RestartOutcome, Role};
use plumb::pg::{Credentials, Password, etcd, roll};
use plumb::transport::{ConnectOptions, Connection, Destination, Identity};
use serde_json::json;
use support::patroni::{PatroniCluster, REST_USER};
use support::sshd::{ClientKey, Sshd, current_user};

struct Ssh {
    // Kept running (and stopped on drop) for as long as the connection is used.
    _sshd: Sshd,
    _dir: tempfile::TempDir,
    conn: Connection,
}

async fn ssh() -> Ssh {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ClientKey::generate(dir.path(), "id_ed25519", "ed25519");
    sshd.authorize(&key.public_line);
    let known_hosts = dir.path().join("known_hosts");
    sshd.write_known_hosts(&known_hosts);
    let opts = ConnectOptions::new(Identity::File(key.private.clone()), &known_hosts);
    let conn = match Connection::open(&sshd.endpoint(&current_user()), &opts).await {
        Ok(conn) => conn,
        Err(e) => panic!("connect failed: {e}\nsshd log:\n{}", sshd.log()),
    };
    Ssh {
        _sshd: sshd,
        _dir: dir,
        conn,
    }
}

/// Polls `check` every 300 ms until it returns `Some`, at most `bound`; panics with the last
/// state and the cluster's logs otherwise.
async fn wait_for<T, F, Fut>(
    what: &str,
    bound: Duration,
    cluster: &PatroniCluster,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(state) => state,
        };
        if started.elapsed() > bound {
            panic!(
                "{what}: not after {bound:?}; last: {last}\n{}",
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

struct Fixture {
    cluster: PatroniCluster,
    ssh: Ssh,
}

impl Fixture {
    fn rest(&self, member: &str) -> PatroniClient<'_> {
        let m = self.cluster.member(member);
        PatroniClient::new(
            &self.ssh.conn,
            member,
            Destination::tcp("127.0.0.1", m.rest_port),
            Credentials::new(REST_USER, Password::new(self.cluster.rest_password.clone())),
        )
        .with_timeouts(Duration::from_secs(10), Duration::from_secs(90))
    }

    async fn pg(&self, member: &str) -> Result<PgClient, String> {
        let m = self.cluster.member(member);
        PgClient::connect_through(
            &self.ssh.conn,
            &Destination::tcp("127.0.0.1", m.pg_port),
            &PgOptions::new(
                member,
                "postgres",
                Credentials::new(
                    "postgres",
                    Password::new(self.cluster.superuser_password.clone()),
                ),
            ),
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// The health gate as a converge evaluates it, everything read through the tunnel.
    async fn health(&self, members: &[String]) -> Result<Health, String> {
        let view = self.rest("m1").cluster().await;
        let view_error = view.as_ref().err().map(ToString::to_string);
        let cluster = match &view {
            Ok(v) => Ok(v),
            Err(_) => Err(view_error.as_deref().unwrap_or("")),
        };
        let leader = view
            .as_ref()
            .ok()
            .and_then(|v| v.leaders().first().map(|m| m.name.clone()));
        let replication = match &leader {
            Some(leader) => match self.pg(leader).await {
                Ok(client) => health::read_replication(&client)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            },
            None => Err("no leader".to_string()),
        };
        let etcd_destination = Destination::tcp("127.0.0.1", self.cluster.etcd_port);
        let mut etcd_health = Vec::new();
        for member in members {
            // One etcd serves both test members.
            etcd_health.push(
                etcd::health(
                    &self.ssh.conn,
                    member,
                    &etcd_destination,
                    Duration::from_secs(5),
                )
                .await,
            );
        }
        let replication_ref = match &replication {
            Ok(rows) => Ok(rows.as_slice()),
            Err(e) => Err(e.as_str()),
        };
        Ok(health::evaluate(&HealthInput {
            members,
            cluster,
            replication: replication_ref,
            etcd: Some(&etcd_health),
            backup_check: None,
            max_replay_lag: DEFAULT_MAX_REPLAY_LAG,
        }))
    }
}

fn declared(loop_wait: u32, parameters: serde_json::Value) -> DeclaredDynamic {
    DeclaredDynamic {
        ttl: 20,
        loop_wait,
        retry_timeout: 5,
        maximum_lag_on_failover: 1_048_576,
        use_pg_rewind: Some(false),
        parameters: parameters
            .as_object()
            .expect("object")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        remove_undeclared_parameters: false,
    }
}

#[tokio::test]
async fn patroni_rest_through_the_tunnel_health_config_and_a_rolling_restart() {
    let cluster = PatroniCluster::start(2);
    let ssh = ssh().await;
    let f = Fixture { cluster, ssh };
    let members = vec!["m1".to_string(), "m2".to_string()];

    // 1. GET /cluster: m1 leads, m2 replicates; and the health gate, which reads PostgreSQL's
    //    pg_stat_replication on the leader, says healthy.
    let view = wait_for(
        "m2 running as a replica",
        Duration::from_secs(60),
        &f.cluster,
        || async {
            let view = f.rest("m1").cluster().await.map_err(|e| e.to_string())?;
            let m2 = view.member("m2").ok_or("m2 not listed")?;
            if m2.role.is_replica() && (m2.state == "running" || m2.state == "streaming") {
                Ok(view)
            } else {
                Err(format!("{view:?}"))
            }
        },
    )
    .await;
    assert_eq!(view.members.len(), 2);
    assert_eq!(view.leaders().len(), 1);
    assert_eq!(view.leaders()[0].name, "m1");
    assert_eq!(view.member("m1").unwrap().timeline, Some(1));
    wait_for("healthy", Duration::from_secs(60), &f.cluster, || async {
        match f.health(&members).await? {
            Health::Healthy => Ok(()),
            unhealthy => Err(unhealthy.to_string()),
        }
    })
    .await;
    let leader_pg = f
        .pg("m1")
        .await
        .expect("leader's PostgreSQL through the tunnel");
    let rows = health::read_replication(&leader_pg).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].application_name, "m2");
    assert_eq!(rows[0].state, "streaming");

    // The gate fails, naming the member, for a member Patroni does not know.
    let with_ghost = vec!["m1".to_string(), "m2".to_string(), "m3".to_string()];
    let verdict = f.health(&with_ghost).await.unwrap();
    assert!(
        verdict
            .to_string()
            .contains("m3: not in Patroni's cluster view"),
        "{verdict}"
    );

    // 2. GET /patroni on each member: role, version, postmaster start time.
    let m1 = f.rest("m1").patroni().await.expect("GET /patroni on m1");
    let m2 = f.rest("m2").patroni().await.expect("GET /patroni on m2");
    assert_eq!(m1.role, Role::Leader);
    assert_eq!(m2.role, Role::Replica);
    assert_eq!(
        m1.patroni.as_ref().map(|p| p.version.as_str()),
        Some("3.0.2")
    );
    assert!(m1.server_version.unwrap_or(0) >= 150000);
    let m2_started = m2
        .postmaster_start_time
        .clone()
        .expect("postmaster_start_time");
    let m1_started = m1
        .postmaster_start_time
        .clone()
        .expect("postmaster_start_time");
    assert!(!m1.pending_restart && !m2.pending_restart);

    // 3. Dynamic configuration: plan against GET /config, PATCH, and see it in GET /config.
    let contexts = dynconf::read_contexts(&leader_pg).await.unwrap();
    let current = f.rest("m1").config().await.expect("GET /config");
    assert_eq!(current["loop_wait"], json!(2));
    let want = declared(3, json!({"max_connections": 120, "work_mem": "8MB"}));
    let plan = dynconf::plan(&want, &current, &contexts);
    assert_eq!(
        plan.diff(),
        "~ loop_wait: 2 -> 3\n~ max_connections: 100 -> 120 (needs a restart)\n~ work_mem: (not set) -> 8MB\n"
    );
    assert!(plan.needs_restart());
    let patched = f
        .rest("m1")
        .patch_config(&plan.patch)
        .await
        .expect("PATCH /config");
    assert_eq!(patched["loop_wait"], json!(3));
    // Read back from another member: it is the DCS's copy.
    let after = f.rest("m2").config().await.expect("GET /config");
    assert_eq!(after["loop_wait"], json!(3));
    assert_eq!(
        after["postgresql"]["parameters"]["max_connections"],
        json!(120)
    );
    assert_eq!(after["postgresql"]["parameters"]["work_mem"], json!("8MB"));
    assert_eq!(
        after["postgresql"]["use_slots"],
        json!(true),
        "merge patch kept the rest"
    );
    let again = dynconf::plan(&want, &after, &contexts);
    assert!(again.is_empty(), "{:?}", again.changes);
    assert_eq!(again.patch, json!({}));

    // 4. max_connections needs a restart: both members say so once Patroni applied it.
    for member in ["m1", "m2"] {
        wait_for(
            "pending_restart",
            Duration::from_secs(30),
            &f.cluster,
            || async {
                let s = f.rest(member).patroni().await.map_err(|e| e.to_string())?;
                if s.pending_restart {
                    Ok(())
                } else {
                    Err(format!("{s:?}"))
                }
            },
        )
        .await;
    }

    // 5. The roll, in the order roll::plan gives for what the members say is pending (each
    //    member's own GET /patroni: /cluster shows it only after the member's next HA loop):
    //    the replica first, a gate, the switchover to it, a gate, the old leader, a gate.
    let view = f.rest("m1").cluster().await.unwrap();
    let mut pending = BTreeSet::new();
    for m in &view.members {
        if f.rest(&m.name).patroni().await.unwrap().pending_restart {
            pending.insert(m.name.clone());
        }
    }
    assert_eq!(pending.len(), 2, "{view:?}");
    let steps: Vec<String> = roll::plan(&view, &pending)
        .expect("roll plan")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        steps,
        vec![
            "restart m2",
            "wait until healthy",
            "switchover m1 -> m2",
            "wait until healthy",
            "restart m1",
            "wait until healthy",
        ]
    );
    let outcome = f
        .rest("m2")
        .restart(&RestartOptions {
            restart_pending: true,
            ..RestartOptions::default()
        })
        .await
        .expect("POST /restart on m2");
    assert!(
        matches!(outcome, RestartOutcome::Restarted(_)),
        "{outcome:?}"
    );
    let m2_after = f.rest("m2").patroni().await.unwrap();
    assert_ne!(
        m2_after.postmaster_start_time.as_deref(),
        Some(m2_started.as_str())
    );
    assert!(!m2_after.pending_restart);
    let m2_pg = f.pg("m2").await.expect("m2's PostgreSQL");
    let rows = m2_pg
        .query("show", "SELECT current_setting('max_connections')", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "120");
    drop(m2_pg);
    // Nothing pending any more: a second restart request is declined, nothing restarts.
    let outcome = f
        .rest("m2")
        .restart(&RestartOptions {
            restart_pending: true,
            ..RestartOptions::default()
        })
        .await
        .expect("POST /restart on m2 again");
    assert!(
        matches!(outcome, RestartOutcome::NotNeeded(_)),
        "{outcome:?}"
    );
    let m2_still = f.rest("m2").patroni().await.unwrap();
    assert_eq!(
        m2_still.postmaster_start_time,
        m2_after.postmaster_start_time
    );

    // Healthy again before the switchover (the gate between steps of a roll).
    wait_for(
        "healthy after the replica's restart",
        Duration::from_secs(60),
        &f.cluster,
        || async {
            match f.health(&members).await? {
                Health::Healthy => Ok(()),
                unhealthy => Err(unhealthy.to_string()),
            }
        },
    )
    .await;

    // 6. Switchover to the restarted replica, then the old primary restarts as a replica.
    drop(leader_pg);
    let message = f
        .rest("m1")
        .switchover("m1", Some("m2"))
        .await
        .expect("POST /switchover");
    assert!(
        message.to_lowercase().contains("switched over"),
        "{message}"
    );
    wait_for(
        "m2 leads and m1 replicates",
        Duration::from_secs(60),
        &f.cluster,
        || async {
            let view = f.rest("m2").cluster().await.map_err(|e| e.to_string())?;
            let leader = view.leaders().first().map(|m| m.name.clone());
            let m1 = view.member("m1").ok_or("m1 missing")?;
            if leader.as_deref() == Some("m2") && m1.role.is_replica() && m1.state == "running" {
                Ok(())
            } else {
                Err(format!("{view:?}"))
            }
        },
    )
    .await;
    let outcome = wait_for(
        "m1 restarted",
        Duration::from_secs(60),
        &f.cluster,
        || async {
            match f
                .rest("m1")
                .restart(&RestartOptions {
                    restart_pending: true,
                    ..RestartOptions::default()
                })
                .await
            {
                Ok(outcome) => Ok(outcome),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    // The demotion itself restarted m1 with the new settings, so it may have nothing pending.
    let m1_after = f.rest("m1").patroni().await.unwrap();
    assert_ne!(
        m1_after.postmaster_start_time.as_deref(),
        Some(m1_started.as_str()),
        "{outcome:?}"
    );
    assert!(!m1_after.pending_restart, "{m1_after:?}");
    let mut polls = 0;
    let verdict = health::wait_healthy(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            f.health(&members)
                .await
                .unwrap_or_else(|e| panic!("health: {e}"))
        },
        |_| polls += 1,
    )
    .await;
    assert!(verdict.is_healthy(), "{verdict}\n{}", f.cluster.logs());
    assert!(polls >= 1);
    for member in ["m1", "m2"] {
        let status = f.rest(member).patroni().await.unwrap();
        assert!(!status.pending_restart, "{member}: {status:?}");
    }

    // 7. Wrong REST credentials: refused, named, the password nowhere in the error.
    let wrong = PatroniClient::new(
        &f.ssh.conn,
        "m1",
        Destination::tcp("127.0.0.1", f.cluster.member("m1").rest_port),
        Credentials::new(REST_USER, Password::new("wrong-rest-pw-123")),
    );
    let err = wrong
        .patch_config(&json!({"loop_wait": 2}))
        .await
        .expect_err("bad credentials");
    assert!(matches!(err, PatroniError::Unauthorized { .. }), "{err:?}");
    let shown = format!("{err} {err:?} {wrong:?}");
    assert!(
        shown.contains("m1") && shown.contains("PATCH /config"),
        "{shown}"
    );
    assert!(
        !shown.contains("wrong-rest-pw-123") && !shown.contains(&f.cluster.rest_password),
        "{shown}"
    );
    // ...and nothing changed.
    assert_eq!(f.rest("m1").config().await.unwrap()["loop_wait"], json!(3));

    // A member whose REST port is closed: the error names it and the endpoint.
    let gone = PatroniClient::new(
        &f.ssh.conn,
        "m9",
        Destination::tcp(
            "127.0.0.1",
            support::sshd::free_port("127.0.0.1".parse().unwrap()),
        ),
        Credentials::new(REST_USER, Password::new("x")),
    );
    let err = gone.cluster().await.expect_err("nothing listens");
    assert!(
        err.to_string().starts_with("Patroni on m9: GET /cluster:"),
        "{err}"
    );
}
