//! The cluster itself (issue 10): PostgreSQL and Patroni reached through the SSH connection
//! plumb holds to each member, and the pure planners that turn declared state plus what those
//! APIs report into statements, patches and a health verdict.
//!
//! - [`client`]: a PostgreSQL session (tokio-postgres) over a [`Tunnel`](crate::transport::Tunnel).
//! - [`http`]: a bounded HTTP/1.1 request over a tunnel (hyper), shared by Patroni and etcd.
//! - [`patroni`]: Patroni's REST API: `/cluster`, `/patroni`, `/config`, `/restart`, `/switchover`.
//! - [`etcd`]: etcd's `/health` on a member.
//! - [`scram`]: SCRAM-SHA-256 verifiers: make one, check one against a password.
//! - [`roles`]: roles, databases and grants: read the catalog, plan SQL, apply it.
//! - [`dynconf`]: Patroni's dynamic configuration: plan a JSON merge patch.
//! - [`health`]: the health gate (and a bounded wait for it) and the per-member status of
//!   `plumb pg status`.
//! - [`roll`]: the order of a rolling restart (replicas, switchover, old leader, gates).
//!
//! Secrets (passwords) travel as [`Password`]: never in `Debug`, `Display`, errors or logs.
//!
//! TLS in the cluster (issue 12): etcd's client port (2379) takes only clients with a
//! certificate from the cluster's CA, so etcd's health is asked on its metrics listener,
//! plain HTTP on the member's loopback only (`ports.etcd_metrics`, default 2381). Patroni's
//! REST API answers HTTPS only, and PostgreSQL refuses TCP connections without TLS from the
//! cluster network (`hostnossl ... reject`): [`http`] and [`client`] speak TLS inside the
//! tunnel through [`tls`], verifying the member's certificate against the cluster's trust
//! bundle and the address dialled.
//!
//! How a converge of a `PostgresCluster` uses this, with `conns` the held SSH connection of
//! each member (addresses are as the member's own sshd sees them, e.g. its cluster address):
//!
//! ```text
//! let rest = |m| PatroniClient::new(&conns[m], m, Destination::tcp(addr(m), 8008), rest_api_creds);
//! let view = rest(any).cluster().await?;                      // who leads
//! let leader = view.leaders()[0].name;
//! // health gate (before a roll, after each step, at the end; poll until healthy or deadline)
//! let rows = health::read_replication(&PgClient::connect_through(&conns[leader], &pg_dest(leader), &su).await?).await?;
//! let etcd = [etcd::health(&conns[m], m, &Destination::tcp("127.0.0.1", 2381), 5s).await for m in members];
//! let verdict = health::evaluate(&HealthInput { members, cluster: Ok(&view), replication: Ok(&rows), etcd: &etcd, backup_check, max_replay_lag });
//! // dynamic configuration (dry run: print plan.diff())
//! let contexts = dynconf::read_contexts(&leader_pg).await?;
//! let plan = dynconf::plan(&declared_dynamic, &rest(leader).config().await?, &contexts);
//! if !plan.is_empty() { rest(leader).patch_config(&plan.patch).await?; }
//! // roles, databases, grants on the leader (dry run: print plan.diff() and each statement.shown)
//! let connector = PgConnector::new(&conns[leader], pg_dest(leader), PgOptions::new(leader, "postgres", su));
//! let actual = roles::read_actual(&connector, &declared).await?;
//! let plan = roles::plan(&declared, &actual, PlanOptions { drop_undeclared })?;
//! roles::apply(&connector, &plan).await?;
//! // roll pending restarts (only on a healthy cluster): members whose own GET /patroni says
//! // pending_restart (their /cluster entry says it only after their next HA loop), in
//! // roll::plan's order
//! for step in roll::plan(&view, &pending)? { match step {
//!     RollStep::Restart { member } => rest(member).restart(&RestartOptions { restart_pending: true, ..Default::default() }).await?,
//!     RollStep::Switchover { from, to } => rest(from).switchover(from, Some(to)).await?,
//!     RollStep::Gate => health::wait_healthy(timeout, 1s, || gate(), |h| progress(h)).await /* unhealthy: stop */,
//! } }
//! ```

// Every public item here is documented; keep it that way.
#![warn(missing_docs)]

pub mod backup;
pub mod client;
pub mod dynconf;
pub mod etcd;
pub mod health;
pub mod http;
pub mod patroni;
pub mod roles;
pub mod roll;
pub mod scram;
pub mod tls;

use std::fmt;

/// What `Debug` and `Display` print in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// A password in memory. Its `Debug` and `Display` never show the value; only
/// [`Password::expose`] does, for the one place that must send it (a SCRAM exchange, an HTTP
/// basic-auth header marked sensitive, a verifier computation).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password (e.g. a decrypted secret's value).
    pub fn new(value: impl Into<String>) -> Self {
        Password(value.into())
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&crate::secrets::SecretValue> for Password {
    fn from(secret: &crate::secrets::SecretValue) -> Self {
        Password(secret.expose().to_string())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A user name and its password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// User (role) name.
    pub user: String,
    /// Its password.
    pub password: Password,
}

impl Credentials {
    /// `user` with `password`.
    pub fn new(user: impl Into<String>, password: Password) -> Self {
        Credentials {
            user: user.into(),
            password,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        let creds = Credentials::new("app", Password::new("hunter2"));
        let debug = format!("{creds:?} {}", creds.password);
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("app") && debug.contains(REDACTED), "{debug}");
        assert_eq!(creds.password.expose(), "hunter2");
    }
}
