//! `PostgresCluster`: an HA PostgreSQL cluster run by Patroni, with etcd as the DCS on the same
//! hosts, a pgBackRest TLS server for backups, and HAProxy in front, all in one docker compose
//! stack per member (the layout of the seeds).
//!
//! The manifest's `hosts` are the members. On each member the cluster expands, purely, into:
//! the `postgres` group and user (uid/gid 1001, in `docker`), the folders (data 0700, logs, etcd
//! data, config, TLS, pgBackRest certs/log/spool, the stack folder), the member certificate
//! signed by the cluster's CA (etcd client and peer, Patroni's REST API and etcd client,
//! PostgreSQL) and its trust bundle, `patroni.yml` (sensitive: it holds the passwords), the etcd
//! member config, `pgbackrest.conf`, `haproxy.cfg`, a certificate for pgBackRest TLS, the compose
//! stack (+ `.env`), a systemd unit that starts the stack at boot, and handlers (`refresh_only`
//! commands), each on this member only: reload Patroni (SIGHUP), reload PostgreSQL
//! (`pg_ctl reload`), restart etcd (a new trust bundle), restart the pgBackRest TLS server,
//! reload HAProxy.
//!
//! The cluster points at its backup repository with `backup: { repo: NAME }` (a `BackupRepo`); the
//! repository finds the clusters that name it, so the link is written once. Roles and databases
//! are validated here and converged later over a PostgreSQL connection; nothing host-side.

use super::command::CommandSpec;
use super::compose_stack::{EnvValue, StackState, render_env};
use super::directory::DirectorySpec;
use super::file::FileState;
use super::systemd_unit::UnitState;
mod check;
pub mod live;
mod render;
#[cfg(test)]
pub(crate) mod tests;

pub use super::cluster::{
    ClusterModel, ClusterPaths, Credential, Member, OsAccount, TlsSettings, check_cidr,
};
use super::cluster::{default_compose, image_for, p_pgbackrest, selected_hosts};
use super::{CheckCx, Kind, PrimitiveSpec, Spec};
use crate::diag::Diagnostic;
use crate::kinds::Desired;
use crate::kinds::HostCx;
use crate::kinds::Manifest;
use crate::model::desired::Content;
use crate::model::inventory::{Host, Inventory};
use crate::model::values::{FileMode, Presence, ResourceRef, SecretRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Built-in templates (name, text); a file of the same name under the repo's `templates/`
/// overrides one.
pub const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    (
        "postgres-cluster/patroni.yml.tera",
        include_str!("../../../templates/postgres-cluster/patroni.yml.tera"),
    ),
    (
        "postgres-cluster/etcd.yml.tera",
        include_str!("../../../templates/postgres-cluster/etcd.yml.tera"),
    ),
    (
        "postgres-cluster/pgbackrest.conf.tera",
        include_str!("../../../templates/postgres-cluster/pgbackrest.conf.tera"),
    ),
    (
        "postgres-cluster/haproxy.cfg.tera",
        include_str!("../../../templates/postgres-cluster/haproxy.cfg.tera"),
    ),
    (
        "postgres-cluster/pgbouncer.ini.tera",
        include_str!("../../../templates/postgres-cluster/pgbouncer.ini.tera"),
    ),
    (
        "postgres-cluster/docker-compose.yml.tera",
        include_str!("../../../templates/postgres-cluster/docker-compose.yml.tera"),
    ),
    (
        "postgres-cluster/stack.service.tera",
        include_str!("../../../templates/postgres-cluster/stack.service.tera"),
    ),
];

/// The distributed configuration store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dcs {
    /// etcd (v3 API), one member on each cluster host.
    #[default]
    Etcd,
    /// Consul, run outside the cluster (an agent Patroni talks to, usually the member's own);
    /// its settings are the manifest's `consul:` section.
    Consul,
}

impl Dcs {
    /// The name as written in a manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Dcs::Etcd => "etcd",
            Dcs::Consul => "consul",
        }
    }
}

/// How Patroni speaks to its Consul agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsulScheme {
    /// HTTPS (the default).
    #[default]
    Https,
    /// Plain HTTP: allowed only to an agent on a loopback address.
    Http,
}

/// Consul's read consistency mode for Patroni's reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsulConsistency {
    /// Consul's default mode.
    #[default]
    Default,
    /// Reads go through the Raft leader and are always current.
    Consistent,
    /// Any server answers, possibly stale.
    Stale,
}

/// The Consul agent Patroni uses as its DCS (`dcs: consul`). Consul itself is not run by
/// plumb: it is the platform's (the Nomad seed's Consul cluster). Patroni talks to one agent,
/// usually the one on the member itself; Consul's servers give the HA.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulSettings {
    /// `host:port` of the agent (default `127.0.0.1:8501`, the agent's HTTPS port on the member);
    /// a host var `consul_address` overrides it per member.
    #[serde(default = "default_consul_address")]
    pub address: String,
    /// `https` (default) or `http` (only to an agent on loopback: the ACL token must not cross
    /// a network in clear).
    #[serde(default)]
    pub scheme: ConsulScheme,
    /// The secret holding Patroni's ACL token (needs `key` and `session` write on the
    /// cluster's prefix, `service` write when `register_service` is on).
    pub token: SecretRef,
    /// Verify the agent's certificate (default true; false only for an agent on loopback).
    #[serde(default = "yes")]
    pub verify: bool,
    /// CA certificate of the agent, a file on the member (default: the image's trust store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cacert: Option<String>,
    /// Client certificate for agents that verify incoming connections, a file on the member
    /// (with `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// The client certificate's key, a file on the member readable by the OS account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Datacenter (default: the agent's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dc: Option<String>,
    /// Read consistency (default `default`).
    #[serde(default)]
    pub consistency: ConsulConsistency,
    /// Register the cluster as a Consul service, tagged with each member's role (default false).
    #[serde(default)]
    pub register_service: bool,
}

fn default_consul_address() -> String {
    "127.0.0.1:8501".into()
}

impl ConsulSettings {
    /// The files on the member Patroni reads (CA, certificate, key), to mount into its
    /// container.
    pub fn files(&self) -> Vec<&str> {
        [&self.cacert, &self.cert, &self.key]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect()
    }
}

/// Patroni's log level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    /// DEBUG.
    Debug,
    /// INFO (the default).
    #[default]
    Info,
    /// WARNING.
    Warning,
    /// ERROR.
    Error,
}

/// Patroni's cluster-wide settings (written to the DCS at bootstrap).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PatroniSettings {
    /// Leader lock TTL in seconds (default 30).
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Seconds between HA loops (default 10).
    #[serde(default = "default_loop_wait")]
    pub loop_wait: u32,
    /// Seconds before a DCS or PostgreSQL operation is retried (default 10).
    #[serde(default = "default_retry_timeout")]
    pub retry_timeout: u32,
    /// Bytes a replica may lag and still be promoted (default 1048576).
    #[serde(default = "default_max_lag")]
    pub maximum_lag_on_failover: u64,
    /// Use pg_rewind to rejoin a former primary (default true).
    #[serde(default = "yes")]
    pub use_pg_rewind: bool,
    /// Patroni's log level (default INFO).
    #[serde(default)]
    pub log_level: LogLevel,
}

fn default_ttl() -> u32 {
    30
}
fn default_loop_wait() -> u32 {
    10
}
fn default_retry_timeout() -> u32 {
    10
}
fn default_max_lag() -> u64 {
    1_048_576
}
fn yes() -> bool {
    true
}

impl Default for PatroniSettings {
    fn default() -> Self {
        PatroniSettings {
            ttl: default_ttl(),
            loop_wait: default_loop_wait(),
            retry_timeout: default_retry_timeout(),
            maximum_lag_on_failover: default_max_lag(),
            use_pg_rewind: true,
            log_level: LogLevel::Info,
        }
    }
}

/// TCP ports of the services on each member.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    /// PostgreSQL (default 5432).
    #[serde(default = "p_postgres")]
    pub postgres: u16,
    /// Patroni's REST API, also HAProxy's health check target (default 8008).
    #[serde(default = "p_rest")]
    pub rest_api: u16,
    /// etcd client port (default 2379).
    #[serde(default = "p_etcd_client")]
    pub etcd_client: u16,
    /// etcd peer port (default 2380).
    #[serde(default = "p_etcd_peer")]
    pub etcd_peer: u16,
    /// pgBackRest TLS server (default 8432).
    #[serde(default = "p_pgbackrest")]
    pub pgbackrest: u16,
    /// etcd's `/health` and `/metrics` in plain HTTP on 127.0.0.1 only (default 2381).
    #[serde(default = "p_etcd_metrics")]
    pub etcd_metrics: u16,
}

fn p_postgres() -> u16 {
    5432
}
fn p_rest() -> u16 {
    8008
}
fn p_etcd_client() -> u16 {
    2379
}
fn p_etcd_peer() -> u16 {
    2380
}
fn p_etcd_metrics() -> u16 {
    2381
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            postgres: p_postgres(),
            rest_api: p_rest(),
            etcd_client: p_etcd_client(),
            etcd_peer: p_etcd_peer(),
            pgbackrest: p_pgbackrest(),
            etcd_metrics: p_etcd_metrics(),
        }
    }
}

/// HAProxy on each member, routing to the primary and to the replicas by Patroni's health checks.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxySettings {
    /// Run HAProxy (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Port leading to the primary (default 5000).
    #[serde(default = "p_primary")]
    pub primary_port: u16,
    /// Port leading to the replicas, round robin (default 5001).
    #[serde(default = "p_replicas")]
    pub replica_port: u16,
    /// Port of the statistics page, on the member's address (default 7000).
    #[serde(default = "p_stats")]
    pub stats_port: u16,
    /// Connections per PostgreSQL server (default 100).
    #[serde(default = "default_maxconn")]
    pub maxconn: u32,
}

fn p_primary() -> u16 {
    5000
}
fn p_replicas() -> u16 {
    5001
}
fn p_stats() -> u16 {
    7000
}
fn default_maxconn() -> u32 {
    100
}

impl Default for HaproxySettings {
    fn default() -> Self {
        HaproxySettings {
            enabled: true,
            primary_port: p_primary(),
            replica_port: p_replicas(),
            stats_port: p_stats(),
            maxconn: default_maxconn(),
        }
    }
}

/// How PgBouncer hands server connections to clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection per client session.
    Session,
    /// A server connection per transaction (the default).
    #[default]
    Transaction,
    /// A server connection per statement.
    Statement,
}

/// PgBouncer on each member, in front of the local HAProxy's primary port: clients reach the
/// current primary through any member's PgBouncer, and after a failover HAProxy's health
/// checks lead new server connections to the new primary with no change of PgBouncer's
/// configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PgbouncerSettings {
    /// Port on the member's address (default 6432).
    #[serde(default = "p_pgbouncer")]
    pub port: u16,
    /// Pool mode (default transaction).
    #[serde(default)]
    pub pool_mode: PoolMode,
    /// Client connections accepted (default 200).
    #[serde(default = "default_max_client_conn")]
    pub max_client_conn: u32,
    /// Server connections per user and database (default 20).
    #[serde(default = "default_pool_size")]
    pub default_pool_size: u32,
    /// Roles (of `roles`, with a password) that may connect through PgBouncer; default: every
    /// declared role with a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<String>>,
}

fn p_pgbouncer() -> u16 {
    6432
}
fn default_max_client_conn() -> u32 {
    200
}
fn default_pool_size() -> u32 {
    20
}

/// Where the cluster's WAL and backups go.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupLink {
    /// Name of the `BackupRepo` (its host, schedule and retention are declared there).
    pub repo: String,
    /// Restore on empty: when the cluster starts with an empty DCS and an empty data directory
    /// (VMs recreated from scratch), Patroni bootstraps it from the newest backup and every
    /// archived WAL instead of `initdb`; a repository without a backup still gets `initdb`, a
    /// repository that cannot be read stops the bootstrap (Patroni tries again) rather than
    /// start an empty cluster over the backups. Default off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore_on_empty: bool,
}

/// Patroni tags of the members (a host var `patroni_tags` overrides them per host).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tags {
    /// Never promote this member.
    #[serde(default)]
    pub nofailover: bool,
    /// Keep this member out of read load balancing.
    #[serde(default)]
    pub noloadbalance: bool,
    /// Prefer this member as a source for new replicas.
    #[serde(default)]
    pub clonefrom: bool,
    /// Never make this member a synchronous standby.
    #[serde(default)]
    pub nosync: bool,
}

/// A database role, converged over a PostgreSQL connection (not on hosts).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// Role name.
    pub name: String,
    /// The secret holding its password (a role without one cannot log in with a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// May log in (default true).
    #[serde(default = "yes")]
    pub login: bool,
    /// May create databases.
    #[serde(default)]
    pub createdb: bool,
    /// May create roles.
    #[serde(default)]
    pub createrole: bool,
    /// Roles it is a member of (each must be declared in `roles`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_of: Vec<String>,
    /// Connection limit (-1: none).
    #[serde(default = "no_limit")]
    pub connection_limit: i32,
}

fn no_limit() -> i32 {
    -1
}

/// A database, converged over a PostgreSQL connection (not on hosts).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSpec {
    /// Database name.
    pub name: String,
    /// Owner: a role of `roles`, or the superuser.
    pub owner: String,
    /// Encoding at creation (e.g. `UTF8`; default: template1's). An existing database keeps
    /// its own: a difference is reported, never forced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Grants in this database: `{ role: r, privilege: connect|all }` on the database, or
    /// `{ role: r, schema: s }` for `USAGE` on a schema of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantSpec>,
}

/// A privilege on a database, as declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabasePrivilegeSpec {
    /// `CONNECT`.
    Connect,
    /// `ALL` (`CREATE`, `CONNECT`, `TEMPORARY`).
    All,
}

/// One grant of a database's `grants`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    /// The grantee: a role of `roles`.
    pub role: String,
    /// A privilege on the database itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privilege: Option<DatabasePrivilegeSpec>,
    /// A schema of the database whose `USAGE` is granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

/// A `PostgresCluster` as declared. Its `name` is Patroni's scope, the pgBackRest stanza and the
/// compose project name.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresClusterSpec {
    /// PostgreSQL major version in the image (default 15).
    #[serde(default = "default_version")]
    pub version: u32,
    /// Container image with PostgreSQL, Patroni, etcd, pgBackRest and HAProxy. Default: the host
    /// var `postgres_image`, else `plumb-lab/postgres-ha:<version>` (the lab's image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// PostgreSQL binaries inside the image (default `/usr/lib/postgresql/<version>/bin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<String>,
    /// The DCS: `etcd` (default), run on the members themselves, or `consul`, the platform's,
    /// with its settings in `consul`.
    #[serde(default)]
    pub dcs: Dcs,
    /// The Consul agent, token and TLS settings (with `dcs: consul` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul: Option<ConsulSettings>,
    /// The OS account (default `postgres`, uid/gid 1001, home `/home/postgres`, in `docker`).
    #[serde(default)]
    pub os_user: OsAccount,
    /// Root of the cluster's folders, the same path on the host and in the containers
    /// (default: `os_user.home`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<String>,
    /// Folder of the compose stack (default `/opt/plumb/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_dir: Option<String>,
    /// The compose binary the systemd unit and the handlers run (default `/usr/bin/docker-compose`).
    #[serde(default = "default_compose")]
    pub compose_command: String,
    /// Network (CIDR) allowed to connect: replication between members and clients, which come
    /// through HAProxy from the members' addresses. Default: the host var `cluster_network`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Ports (defaults: postgres 5432, rest_api 8008, etcd 2379/2380, etcd metrics 2381 on
    /// loopback, pgbackrest 8432).
    #[serde(default)]
    pub ports: Ports,
    /// Patroni's cluster-wide settings (ttl 30, loop_wait 10, retry_timeout 10, ...).
    #[serde(default)]
    pub patroni: PatroniSettings,
    /// PostgreSQL parameters, over plumb's defaults (the seed's logging settings). Those Patroni
    /// takes from the DCS only (max_connections, max_wal_senders, ...) go there at bootstrap.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    /// Extra pg_hba.conf lines, after plumb's (local peer; `hostssl` replication and clients
    /// from `network`; `hostnossl` from `network` rejected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pg_hba: Vec<String>,
    /// The superuser Patroni bootstraps and manages the cluster with (default name `postgres`).
    pub superuser: Credential,
    /// The replication user (default name `replicator`).
    pub replication: Credential,
    /// The pg_rewind user (default name `rewind_user`).
    pub rewind: Credential,
    /// Basic auth of Patroni's REST API for changes (default name `patroni`), over HTTPS;
    /// health checks (GET) need no credential.
    pub rest_api: Credential,
    /// Certificates: the CA, their validity and renewal window, extra names for clients.
    pub tls: TlsSettings,
    /// The `BackupRepo` receiving WAL and backups; without it, no archiving and no pgBackRest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupLink>,
    /// HAProxy (on by default: 5000 primary, 5001 replicas, 7000 stats).
    #[serde(default)]
    pub haproxy: HaproxySettings,
    /// PgBouncer in front of HAProxy's primary port on every member (off unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgbouncer: Option<PgbouncerSettings>,
    /// Patroni tags of every member (host var `patroni_tags` overrides per host).
    #[serde(default)]
    pub tags: Tags,
    /// Database roles (converged over a PostgreSQL connection).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleSpec>,
    /// Databases (converged over a PostgreSQL connection).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseSpec>,
}

fn default_version() -> u32 {
    15
}

/// Parameters plumb or Patroni set themselves.
pub const MANAGED_PARAMETERS: &[&str] = &[
    "archive_command",
    "archive_mode",
    "cluster_name",
    "config_file",
    "data_directory",
    "hba_file",
    "hot_standby",
    "ident_file",
    "listen_addresses",
    "port",
    "restore_command",
    "ssl",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
    "unix_socket_directories",
    "wal_log_hints",
];

/// Names reserved by PostgreSQL for databases.
pub(super) const RESERVED_DATABASES: &[&str] = &["postgres", "template0", "template1"];

impl PostgresClusterSpec {
    /// Values derived from the manifest and the inventory.
    pub fn model(&self, m: &Manifest, inv: &Inventory) -> ClusterModel {
        let base = self
            .base_dir
            .clone()
            .unwrap_or_else(|| self.os_user.home.clone());
        let stack_dir = self
            .stack_dir
            .clone()
            .unwrap_or_else(|| format!("/opt/plumb/{}", m.name));
        ClusterModel {
            name: m.name.clone(),
            members: selected_hosts(m, inv).into_iter().map(Member::of).collect(),
            paths: ClusterPaths::new(&base, stack_dir),
            superuser: self.superuser.name_or("postgres"),
            ports: self.ports.clone(),
            backup_repo: self.backup.as_ref().map(|b| b.repo.clone()),
            ca: self.tls.ca.clone(),
        }
    }

    fn bin_dir(&self) -> String {
        self.bin_dir
            .clone()
            .unwrap_or_else(|| format!("/usr/lib/postgresql/{}/bin", self.version))
    }

    fn image(&self, host: &Host) -> String {
        image_for(&self.image, host, self.version)
    }

    /// The PostgreSQL parameters: plumb's defaults, then the manifest's, split into those each
    /// member keeps in its own `patroni.yml` ([`LOCAL_PARAMETERS`]: paths and the archive wiring)
    /// and the cluster-wide rest, which live in the DCS: written under `bootstrap.dcs` for the
    /// first start, then kept in step by the converge through `PATCH /config` (a local value
    /// would override the DCS and no patch could change it). Sorted by name.
    fn split_parameters(
        &self,
        paths: &ClusterPaths,
        tls_files: Option<(&str, &str, &str)>,
        archive_command: Option<String>,
    ) -> (Map<String, Value>, Map<String, Value>) {
        let mut all: BTreeMap<String, Value> = BTreeMap::new();
        all.insert("logging_collector".into(), json!(true));
        all.insert("log_directory".into(), json!(paths.log_dir));
        all.insert("log_filename".into(), json!("postgres.log"));
        all.insert("log_rotation_size".into(), json!(50000));
        all.insert("log_truncate_on_rotation".into(), json!(true));
        all.insert("log_file_mode".into(), json!("0604"));
        all.insert("log_min_duration_statement".into(), json!(250));
        for (k, v) in &self.parameters {
            all.insert(k.clone(), v.clone());
        }
        all.insert("unix_socket_directories".into(), json!(paths.socket_dir));
        // TLS for clients and replication, with the member certificate; the CA file is there
        // for clients that present certificates (pg_hba `cert` lines a manifest may add).
        all.insert("ssl".into(), json!("on"));
        if let Some((cert, key, ca)) = tls_files {
            all.insert("ssl_cert_file".into(), json!(cert));
            all.insert("ssl_key_file".into(), json!(key));
            all.insert("ssl_ca_file".into(), json!(ca));
        }
        all.entry("ssl_min_protocol_version".to_string())
            .or_insert_with(|| json!("TLSv1.2"));
        if let Some(cmd) = archive_command {
            all.insert("archive_mode".into(), json!("on"));
            all.insert("archive_command".into(), json!(cmd));
        }
        let (mut local, mut dcs) = (Map::new(), Map::new());
        for (k, v) in all {
            if LOCAL_PARAMETERS.contains(&k.as_str()) {
                local.insert(k, v);
            } else {
                dcs.insert(k, v);
            }
        }
        (local, dcs)
    }

    /// The cluster-wide PostgreSQL parameters the DCS must hold (see [`Self::split_parameters`]).
    pub fn dcs_parameters(&self, paths: &ClusterPaths) -> BTreeMap<String, Value> {
        self.split_parameters(paths, None, None)
            .1
            .into_iter()
            .collect()
    }
}

/// Parameters each member keeps in its own `patroni.yml`: they name host paths (the member's
/// own certificate among them) or the archive wiring plumb manages; every other parameter is
/// cluster-wide and lives in the DCS.
pub const LOCAL_PARAMETERS: &[&str] = &[
    "archive_command",
    "archive_mode",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
    "unix_socket_directories",
];

impl Kind for PostgresClusterSpec {
    fn check(&self, cx: &mut CheckCx) {
        check::check(self, cx)
    }

    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        render::render(self, m, cx)
    }
}
