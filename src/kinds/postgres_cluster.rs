//! `PostgresCluster`: an HA PostgreSQL cluster run by Patroni, with etcd as the DCS on the same
//! hosts, a pgBackRest TLS server for backups, and HAProxy in front, all in one docker compose
//! stack per member (the layout of the seeds).
//!
//! The manifest's `hosts` are the members. On each member the cluster expands, purely, into:
//! the `postgres` group and user (uid/gid 1001, in `docker`), the folders (data 0700, logs, etcd
//! data, config, pgBackRest certs/log/spool, the stack folder), `patroni.yml` (sensitive: it holds
//! the passwords), the etcd member config, `pgbackrest.conf`, `haproxy.cfg`, a certificate for
//! pgBackRest TLS signed by the cluster's CA, the compose stack (+ `.env`), a systemd unit that
//! starts the stack at boot, and three handlers (`refresh_only` commands): reload Patroni
//! (SIGHUP to this member's Patroni only), restart the pgBackRest TLS server, reload HAProxy.
//!
//! The cluster points at its backup repository with `backup: { repo: NAME }` (a `BackupRepo`); the
//! repository finds the clusters that name it, so the link is written once. Roles and databases
//! are validated here and converged later over a PostgreSQL connection; nothing host-side.

use super::certificate::{CertificateState, KeyAlgorithm};
use super::command::CommandSpec;
use super::compose_stack::{EnvValue, StackState, render_env};
use super::directory::DirectorySpec;
use super::file::FileState;
use super::group::GroupSpec;
use super::systemd_unit::UnitState;
use super::user::UserSpec;
use super::{CheckCx, Kind, PrimitiveSpec, Spec};
use crate::diag::Diagnostic;
use crate::kinds::Desired;
use crate::kinds::HostCx;
use crate::kinds::Manifest;
use crate::model::desired::Content;
use crate::model::inventory::{Host, Inventory};
use crate::model::values::{FileMode, Presence, ResourceRef, SecretRef, Span};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Built-in templates (name, text); a file of the same name under the repo's `templates/`
/// overrides one.
pub const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    (
        "postgres-cluster/patroni.yml.tera",
        include_str!("../../templates/postgres-cluster/patroni.yml.tera"),
    ),
    (
        "postgres-cluster/etcd.yml.tera",
        include_str!("../../templates/postgres-cluster/etcd.yml.tera"),
    ),
    (
        "postgres-cluster/pgbackrest.conf.tera",
        include_str!("../../templates/postgres-cluster/pgbackrest.conf.tera"),
    ),
    (
        "postgres-cluster/haproxy.cfg.tera",
        include_str!("../../templates/postgres-cluster/haproxy.cfg.tera"),
    ),
    (
        "postgres-cluster/docker-compose.yml.tera",
        include_str!("../../templates/postgres-cluster/docker-compose.yml.tera"),
    ),
    (
        "postgres-cluster/stack.service.tera",
        include_str!("../../templates/postgres-cluster/stack.service.tera"),
    ),
];

/// The OS account the containers run as, created on the hosts with the same ids as in the image
/// so that bind-mounted files have one owner inside and outside.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OsAccount {
    /// User and group name (default `postgres`).
    #[serde(default = "default_os_name")]
    pub name: String,
    /// Numeric uid; must match the image's user (default 1001).
    #[serde(default = "default_os_id")]
    pub uid: u32,
    /// Numeric gid of the group of the same name (default 1001).
    #[serde(default = "default_os_id")]
    pub gid: u32,
    /// Home directory, also the default root of every folder (default `/home/postgres`).
    #[serde(default = "default_home")]
    pub home: String,
    /// Supplementary groups (default `[docker]`, to run the stack's commands).
    #[serde(default = "default_os_groups")]
    pub groups: Vec<String>,
}

fn default_os_name() -> String {
    "postgres".into()
}
fn default_os_id() -> u32 {
    1001
}
fn default_home() -> String {
    "/home/postgres".into()
}
fn default_os_groups() -> Vec<String> {
    vec!["docker".into()]
}

impl Default for OsAccount {
    fn default() -> Self {
        OsAccount {
            name: default_os_name(),
            uid: default_os_id(),
            gid: default_os_id(),
            home: default_home(),
            groups: default_os_groups(),
        }
    }
}

/// Certificates for pgBackRest TLS, issued per host by a plumb CA.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The `CertificateAuthority` that signs the certificates (and whose certificate every side
    /// trusts).
    pub ca: String,
    /// Validity of each issued certificate (default 365d).
    #[serde(default = "default_validity")]
    pub validity: Span,
    /// Reissue when less than this remains (default 30d).
    #[serde(default = "default_renew_before")]
    pub renew_before: Span,
}

fn default_validity() -> Span {
    Span { secs: 365 * 86_400 }
}
fn default_renew_before() -> Span {
    Span { secs: 30 * 86_400 }
}

/// A database account Patroni uses, with its password in a secret.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// User name (defaults: `postgres`, `replicator`, `rewind_user`, `patroni`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The secret holding the password.
    pub password: SecretRef,
}

/// The distributed configuration store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dcs {
    /// etcd (v3 API), one member on each cluster host.
    #[default]
    Etcd,
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
pub(crate) fn p_pgbackrest() -> u16 {
    8432
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            postgres: p_postgres(),
            rest_api: p_rest(),
            etcd_client: p_etcd_client(),
            etcd_peer: p_etcd_peer(),
            pgbackrest: p_pgbackrest(),
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

/// Where the cluster's WAL and backups go.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupLink {
    /// Name of the `BackupRepo` (its host, schedule and retention are declared there).
    pub repo: String,
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
    /// The DCS: `etcd`, run on the members themselves (the only choice for now).
    #[serde(default)]
    pub dcs: Dcs,
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
    /// Ports (defaults: postgres 5432, rest_api 8008, etcd 2379/2380, pgbackrest 8432).
    #[serde(default)]
    pub ports: Ports,
    /// Patroni's cluster-wide settings (ttl 30, loop_wait 10, retry_timeout 10, ...).
    #[serde(default)]
    pub patroni: PatroniSettings,
    /// PostgreSQL parameters, over plumb's defaults (the seed's logging settings). Those Patroni
    /// takes from the DCS only (max_connections, max_wal_senders, ...) go there at bootstrap.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    /// Extra pg_hba.conf lines, after plumb's (local peer, replication and clients from `network`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pg_hba: Vec<String>,
    /// The superuser Patroni bootstraps and manages the cluster with (default name `postgres`).
    pub superuser: Credential,
    /// The replication user (default name `replicator`).
    pub replication: Credential,
    /// The pg_rewind user (default name `rewind_user`).
    pub rewind: Credential,
    /// Basic auth of Patroni's REST API for changes (default name `patroni`); health checks
    /// stay open.
    pub rest_api: Credential,
    /// Certificates for pgBackRest TLS.
    pub tls: TlsSettings,
    /// The `BackupRepo` receiving WAL and backups; without it, no archiving and no pgBackRest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupLink>,
    /// HAProxy (on by default: 5000 primary, 5001 replicas, 7000 stats).
    #[serde(default)]
    pub haproxy: HaproxySettings,
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
pub(crate) fn default_compose() -> String {
    "/usr/bin/docker-compose".into()
}

/// Parameters Patroni reads from the DCS only: local values are ignored, so plumb writes them
/// under `bootstrap.dcs`.
pub const DCS_ONLY_PARAMETERS: &[&str] = &[
    "max_connections",
    "max_locks_per_transaction",
    "max_prepared_transactions",
    "max_replication_slots",
    "max_wal_senders",
    "max_worker_processes",
    "track_commit_timestamp",
    "wal_keep_segments",
    "wal_keep_size",
    "wal_level",
];

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
    "unix_socket_directories",
    "wal_log_hints",
];

/// Names reserved by PostgreSQL for databases.
const RESERVED_DATABASES: &[&str] = &["postgres", "template0", "template1"];

/// The folders of a cluster (or repository) on a host; the same paths inside the containers.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterPaths {
    /// Root of everything below.
    pub base: String,
    /// Bind-mounted into Patroni: data, logs, socket, pgpass.
    pub pgdata_root: String,
    /// PostgreSQL data directory.
    pub data_dir: String,
    /// PostgreSQL and Patroni logs.
    pub log_dir: String,
    /// Unix socket directory.
    pub socket_dir: String,
    /// The pgpass file Patroni writes.
    pub pgpass: String,
    /// etcd data.
    pub etcd_data_dir: String,
    /// patroni.yml, etcd.yml, haproxy.cfg.
    pub config_dir: String,
    /// pgBackRest folder (config, certs, log, spool).
    pub pgbackrest_dir: String,
    /// pgbackrest.conf.
    pub pgbackrest_config: String,
    /// Certificates.
    pub pgbackrest_certs: String,
    /// pgBackRest logs.
    pub pgbackrest_log: String,
    /// Async archiving spool.
    pub pgbackrest_spool: String,
    /// Compose stack folder.
    pub stack_dir: String,
}

impl ClusterPaths {
    /// Paths under `base`, with the stack in `stack_dir`.
    pub fn new(base: &str, stack_dir: String) -> Self {
        let pgdata = format!("{base}/postgres-data");
        let pgbr = format!("{base}/pgbackrest");
        ClusterPaths {
            base: base.to_string(),
            data_dir: format!("{pgdata}/data"),
            log_dir: format!("{pgdata}/logs"),
            socket_dir: format!("{pgdata}/unix"),
            pgpass: format!("{pgdata}/pass"),
            pgdata_root: pgdata,
            etcd_data_dir: format!("{base}/etcd-data"),
            config_dir: format!("{base}/config"),
            pgbackrest_config: format!("{pgbr}/pgbackrest.conf"),
            pgbackrest_certs: format!("{pgbr}/certs"),
            pgbackrest_log: format!("{pgbr}/log"),
            pgbackrest_spool: format!("{pgbr}/spool"),
            pgbackrest_dir: pgbr,
            stack_dir,
        }
    }

    /// Certificate, key and CA paths of a host's pgBackRest certificate.
    pub fn cert_files(&self, host: &str) -> (String, String, String) {
        (
            format!("{}/{host}.crt", self.pgbackrest_certs),
            format!("{}/{host}.key", self.pgbackrest_certs),
            format!("{}/ca.crt", self.pgbackrest_certs),
        )
    }
}

/// One member of a cluster, as other parts of the repo need it.
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    /// Inventory name (also the Patroni and etcd member name and the certificate CN).
    pub name: String,
    /// Address.
    pub address: String,
    /// Address as written before `:port` (IPv6 in brackets).
    pub host: String,
}

impl Member {
    pub(crate) fn of(h: &Host) -> Member {
        let host = match h.address.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]", h.address),
            _ => h.address.clone(),
        };
        Member {
            name: h.name.clone(),
            address: h.address.clone(),
            host,
        }
    }
}

/// The hosts a manifest selects, sorted by name.
pub(crate) fn selected_hosts<'i>(m: &Manifest, inv: &'i Inventory) -> Vec<&'i Host> {
    m.hosts
        .as_ref()
        .map(|s| {
            s.select(inv)
                .into_iter()
                .filter_map(|n| inv.host(n))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks a CIDR such as `192.168.150.0/24`.
pub fn check_cidr(text: &str) -> Result<(), String> {
    let bad = || format!("`{text}` is not a network in CIDR notation (like 192.168.150.0/24)");
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(())
}

/// A compose project, stanza or scope name: lowercase letters, digits, `-`, `_`.
pub(crate) fn check_project_name(cx: &mut CheckCx, what: &str) {
    let name = cx.manifest.name.clone();
    let ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        cx.error(
            "name",
            format!("`{name}` cannot be used as {what}"),
            Some(
                "use lowercase letters, digits, `-` and `_`, starting with a letter or digit"
                    .into(),
            ),
        );
    }
}

fn is_pg_identifier(name: &str) -> bool {
    let mut b = name.bytes();
    name.len() <= 63
        && b.next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Shared checks of the OS account, TLS settings and image.
pub(crate) fn check_common(
    cx: &mut CheckCx,
    os: &OsAccount,
    tls: &TlsSettings,
    image: &Option<String>,
    compose_command: &str,
) {
    if !crate::model::values::is_valid_account_name(&os.name) {
        cx.error(
            "os_user.name",
            format!("`{}` is not a valid user name", os.name),
            None,
        );
    }
    if os.uid == 0 || os.gid == 0 {
        cx.error(
            "os_user",
            "the containers must not run as root: give os_user a non-zero uid and gid",
            None,
        );
    }
    cx.abs_path("os_user.home", &os.home, &[]);
    for (i, g) in os.groups.iter().enumerate() {
        cx.account(&format!("os_user.groups[{i}]"), g);
    }
    cx.abs_path("compose_command", compose_command, &[]);
    if let Some(img) = image
        && (img.is_empty() || img.chars().any(char::is_whitespace))
    {
        cx.error("image", format!("`{img}` is not an image reference"), None);
    }
    if cx.repo.find("CertificateAuthority", &tls.ca).is_none() {
        let known = cx.repo.names_of("CertificateAuthority");
        let d = unknown_ca(cx.manifest, &tls.ca, &known);
        cx.diags.push(d);
    }
    if tls.renew_before >= tls.validity {
        cx.error(
            "tls.renew_before",
            format!(
                "renew_before ({}) is not shorter than validity ({})",
                tls.renew_before, tls.validity
            ),
            Some("a certificate would be reissued on every run".into()),
        );
    }
    if !cx.manifest.notify.is_empty() {
        cx.error(
            "notify",
            format!(
                "a {} wires its own handlers; `notify` is not supported on it",
                cx.manifest.kind
            ),
            None,
        );
    }
}

fn check_credential(cx: &mut CheckCx, field: &str, c: &Credential) {
    cx.secret(&format!("{field}.password.secret"), &c.password.secret);
    if let Some(u) = &c.username
        && !is_pg_identifier(u)
    {
        cx.error(
            &format!("{field}.username"),
            format!("`{u}` is not a valid PostgreSQL role name"),
            Some("use lowercase letters, digits and `_`, starting with a letter".into()),
        );
    }
}

impl Credential {
    fn name_or(&self, default: &str) -> String {
        self.username.clone().unwrap_or_else(|| default.to_string())
    }
}

/// The computed values of one cluster, shared with the `BackupRepo` that serves it.
#[derive(Clone, Debug)]
pub struct ClusterModel {
    /// Cluster name (scope, stanza).
    pub name: String,
    /// Members, sorted by name.
    pub members: Vec<Member>,
    /// Folders.
    pub paths: ClusterPaths,
    /// Superuser name.
    pub superuser: String,
    /// Ports.
    pub ports: Ports,
    /// The BackupRepo name, if any.
    pub backup_repo: Option<String>,
    /// The CA.
    pub ca: String,
}

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

    /// The PostgreSQL parameters: plumb's defaults, then the manifest's, split into those Patroni
    /// reads locally and those it reads from the DCS only. Sorted by name.
    fn split_parameters(
        &self,
        paths: &ClusterPaths,
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
        if let Some(cmd) = archive_command {
            all.insert("archive_mode".into(), json!("on"));
            all.insert("archive_command".into(), json!(cmd));
        }
        let (mut local, mut dcs) = (Map::new(), Map::new());
        for (k, v) in all {
            if DCS_ONLY_PARAMETERS.contains(&k.as_str()) {
                dcs.insert(k, v);
            } else {
                local.insert(k, v);
            }
        }
        (local, dcs)
    }
}

/// "unknown CertificateAuthority", the same from validation and from rendering.
pub(crate) fn unknown_ca(m: &Manifest, ca: &str, known: &[&str]) -> Diagnostic {
    m.error("tls.ca", format!("unknown CertificateAuthority `{ca}`"))
        .with_hint(if known.is_empty() {
            format!(
                "declare a CertificateAuthority named `{ca}` and create it with `plumb certs init-ca {ca}`"
            )
        } else {
            format!("known CAs: {}", known.join(", "))
        })
}

/// "unknown BackupRepo", the same from validation and from rendering.
pub(crate) fn unknown_backup_repo(m: &Manifest, name: &str, known: &[&str]) -> Diagnostic {
    m.error("backup.repo", format!("unknown BackupRepo `{name}`"))
        .with_hint(if known.is_empty() {
            "declare a BackupRepo manifest, or remove `backup`".to_string()
        } else {
            format!("known BackupRepos: {}", known.join(", "))
        })
}

/// A BackupRepo must select exactly one host.
pub(crate) fn repo_host_count(rm: &Manifest, hosts: &[&Host]) -> Diagnostic {
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    rm.error(
        "hosts",
        format!(
            "a BackupRepo lands on exactly one host; this one selects {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ),
    )
    .with_hint("write `hosts: host:NAME`")
}

/// The image of a cluster or repository on a host.
pub(crate) fn image_for(image: &Option<String>, host: &Host, version: u32) -> String {
    image
        .clone()
        .or_else(|| {
            host.vars
                .get("postgres_image")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("plumb-lab/postgres-ha:{version}"))
}

/// The host var `cluster_network`, checked.
fn network_var(m: &Manifest, h: &Host) -> Result<String, Diagnostic> {
    let hint = "set `network:` on the cluster, or the var `cluster_network` (a CIDR such as 192.168.150.0/24) in the inventory";
    match h.vars.get("cluster_network") {
        Some(Value::String(s)) => match check_cidr(s) {
            Ok(()) => Ok(s.clone()),
            Err(msg) => Err(m
                .error("network", format!("var `cluster_network`: {msg}"))
                .with_hint(hint)),
        },
        _ => Err(m
            .error(
                "network",
                "no `network` on the cluster and no var `cluster_network` for its hosts",
            )
            .with_hint(hint)),
    }
}

/// A host's pgBackRest certificate: CN = inventory name, SANs = the name and the address. The
/// address is a DNS SAN too, because pgBackRest (2.45 in Debian bookworm) matches the host it
/// connects to against DNS SANs and the CN only, never IP SANs.
pub(crate) fn certificate(
    cx: &HostCx,
    m: &Manifest,
    host: &Host,
    tls: &TlsSettings,
    (cert, key, ca): (&str, &str, &str),
    os: &OsAccount,
) -> Result<CertificateState, Diagnostic> {
    let ca_certificate = cx.ca_certificate(&tls.ca).map_err(|_| {
        let known: Vec<&str> = cx
            .repo()
            .ca_certificates
            .keys()
            .map(String::as_str)
            .collect();
        unknown_ca(m, &tls.ca, &known)
    })?;
    let mut dns_names = vec![host.name.clone()];
    if host.address != host.name {
        dns_names.push(host.address.clone());
    }
    Ok(CertificateState {
        ca: tls.ca.clone(),
        ca_certificate,
        common_name: host.name.clone(),
        dns_names,
        ip_addresses: host
            .address
            .parse::<IpAddr>()
            .map(|a| vec![a.to_string()])
            .unwrap_or_default(),
        cert_path: cert.to_string(),
        key_path: key.to_string(),
        ca_path: Some(ca.to_string()),
        owner: os.name.clone(),
        group: os.name.clone(),
        key_mode: FileMode(0o600),
        cert_mode: FileMode(0o644),
        validity: tls.validity,
        renew_before: tls.renew_before,
        key_algorithm: KeyAlgorithm::EcdsaP256,
    })
}

/// The resources a composite expands into on one host.
pub(crate) struct Expansion<'m> {
    m: &'m Manifest,
    /// The items, in expansion order.
    pub items: Vec<Desired>,
}

impl<'m> Expansion<'m> {
    pub(crate) fn new(m: &'m Manifest) -> Self {
        Expansion {
            m,
            items: Vec::new(),
        }
    }

    /// Adds an item with its own notify list.
    pub(crate) fn push(
        &mut self,
        cx: &HostCx,
        name: String,
        spec: PrimitiveSpec,
        notify: Vec<ResourceRef>,
    ) {
        let mut d = super::desired(self.m, cx, name, spec);
        d.notify = notify;
        self.items.push(d);
    }

    /// The group and user the containers run as.
    pub(crate) fn account(&mut self, cx: &HostCx, os: &OsAccount) {
        self.push(
            cx,
            os.name.clone(),
            PrimitiveSpec::Group(GroupSpec {
                group: os.name.clone(),
                gid: Some(os.gid),
                system: false,
                allow_renumber: false,
                state: Presence::Present,
            }),
            vec![],
        );
        self.push(
            cx,
            os.name.clone(),
            PrimitiveSpec::User(UserSpec {
                user: os.name.clone(),
                uid: Some(os.uid),
                group: Some(os.name.clone()),
                groups: os.groups.clone(),
                home: Some(os.home.clone()),
                shell: Some("/bin/bash".into()),
                comment: None,
                system: false,
                create_home: true,
                allow_renumber: false,
                state: Presence::Present,
            }),
            vec![],
        );
    }
}

impl Kind for PostgresClusterSpec {
    fn check(&self, cx: &mut CheckCx) {
        check_project_name(
            cx,
            "a Patroni scope, pgBackRest stanza and compose project name",
        );
        if !(12..=17).contains(&self.version) {
            cx.error(
                "version",
                format!("PostgreSQL {} is not supported", self.version),
                Some("use a major version from 12 to 17".into()),
            );
        }
        check_common(
            cx,
            &self.os_user,
            &self.tls,
            &self.image,
            &self.compose_command,
        );
        for (field, p) in [
            ("bin_dir", &self.bin_dir),
            ("base_dir", &self.base_dir),
            ("stack_dir", &self.stack_dir),
        ] {
            if let Some(p) = p {
                cx.abs_path(field, p, &[]);
            }
        }

        // Members.
        let members = selected_hosts(cx.manifest, cx.repo.inventory);
        if members.is_empty() {
            cx.error(
                "hosts",
                "the cluster selects no host; its hosts are its members",
                None,
            );
        }
        for h in &members {
            if h.address.parse::<IpAddr>().is_err() {
                cx.error(
                    "hosts",
                    format!(
                        "member `{}` has address `{}`, but etcd needs IP addresses",
                        h.name, h.address
                    ),
                    Some("give the host an IP address in the inventory".into()),
                );
            }
        }
        match &self.network {
            Some(n) => {
                if let Err(msg) = check_cidr(n) {
                    cx.error("network", msg, None);
                }
            }
            None => {
                for h in &members {
                    if let Err(d) = network_var(cx.manifest, h) {
                        cx.diags.push(d);
                    }
                }
            }
        }

        // Ports.
        let mut ports = vec![
            ("ports.postgres", self.ports.postgres),
            ("ports.rest_api", self.ports.rest_api),
            ("ports.etcd_client", self.ports.etcd_client),
            ("ports.etcd_peer", self.ports.etcd_peer),
        ];
        if self.backup.is_some() {
            ports.push(("ports.pgbackrest", self.ports.pgbackrest));
        }
        if self.haproxy.enabled {
            ports.push(("haproxy.primary_port", self.haproxy.primary_port));
            ports.push(("haproxy.replica_port", self.haproxy.replica_port));
            ports.push(("haproxy.stats_port", self.haproxy.stats_port));
        }
        let mut seen: BTreeMap<u16, &str> = BTreeMap::new();
        for (field, port) in ports {
            if port == 0 {
                cx.error(field, "port 0 is not a port", None);
            } else if let Some(other) = seen.get(&port) {
                cx.error(
                    field,
                    format!("port {port} is already used by `{other}`"),
                    Some("every service of a member needs its own port".into()),
                );
            } else {
                seen.insert(port, field);
            }
        }

        // Patroni.
        let p = &self.patroni;
        if p.loop_wait == 0 || p.loop_wait + 2 * p.retry_timeout > p.ttl {
            cx.error(
                "patroni.ttl",
                format!(
                    "ttl {} is too short for loop_wait {} and retry_timeout {}",
                    p.ttl, p.loop_wait, p.retry_timeout
                ),
                Some("Patroni needs loop_wait + 2 × retry_timeout ≤ ttl (e.g. 30, 10, 10)".into()),
            );
        }

        // Parameters.
        for (k, v) in &self.parameters {
            let field = format!("parameters.{k}");
            let valid_name = k
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                && k.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'
                });
            if !valid_name {
                cx.error(
                    &field,
                    format!("`{k}` is not a PostgreSQL parameter name"),
                    None,
                );
            } else if MANAGED_PARAMETERS.contains(&k.as_str()) {
                cx.error(
                    &field,
                    format!("`{k}` is set by plumb and Patroni; it cannot be given here"),
                    Some(match k.as_str() {
                        "archive_mode" | "archive_command" | "restore_command" => {
                            "archiving follows `backup.repo`".to_string()
                        }
                        "port" | "listen_addresses" => "use `ports.postgres`".to_string(),
                        _ => "remove it".to_string(),
                    }),
                );
            }
            if matches!(v, Value::Null | Value::Array(_) | Value::Object(_)) {
                cx.error(
                    &field,
                    format!("parameter `{k}` needs a string, number or boolean value"),
                    None,
                );
            }
        }
        for (i, line) in self.pg_hba.iter().enumerate() {
            let first = line.split_whitespace().next().unwrap_or_default();
            let ok_type = matches!(
                first,
                "local" | "host" | "hostssl" | "hostnossl" | "hostgssenc" | "hostnogssenc"
            );
            if line.contains('\n') || line.split_whitespace().count() < 3 || !ok_type {
                cx.error(
                    &format!("pg_hba[{i}]"),
                    format!("`{line}` is not a pg_hba.conf line"),
                    Some("e.g. `host all all 10.0.0.0/8 scram-sha-256`".into()),
                );
            }
        }

        // Credentials.
        let mut system_users = BTreeMap::new();
        for (field, c, default) in [
            ("superuser", &self.superuser, "postgres"),
            ("replication", &self.replication, "replicator"),
            ("rewind", &self.rewind, "rewind_user"),
        ] {
            check_credential(cx, field, c);
            let name = c.name_or(default);
            if let Some(other) = system_users.insert(name.clone(), field) {
                cx.error(
                    &format!("{field}.username"),
                    format!("`{name}` is already the {other} user"),
                    Some("superuser, replication and rewind need distinct users".into()),
                );
            }
        }
        check_credential(cx, "rest_api", &self.rest_api);

        // Backup.
        if let Some(b) = &self.backup {
            match cx.repo.find("BackupRepo", &b.repo) {
                None => {
                    let known = cx.repo.names_of("BackupRepo");
                    let d = unknown_backup_repo(cx.manifest, &b.repo, &known);
                    cx.diags.push(d);
                }
                Some(rm) => {
                    if let Spec::BackupRepo(r) = &rm.spec
                        && r.tls.ca != self.tls.ca
                    {
                        cx.error(
                            "backup.repo",
                            format!(
                                "BackupRepo `{}` uses CA `{}` but this cluster uses `{}`",
                                b.repo, r.tls.ca, self.tls.ca
                            ),
                            Some("both sides of pgBackRest TLS must trust one CA".into()),
                        );
                    }
                    let repo_hosts: BTreeSet<&str> = selected_hosts(rm, cx.repo.inventory)
                        .into_iter()
                        .map(|h| h.name.as_str())
                        .collect();
                    if let Some(h) = members
                        .iter()
                        .find(|h| repo_hosts.contains(h.name.as_str()))
                    {
                        cx.error(
                            "backup.repo",
                            format!(
                                "host `{}` is both a member of the cluster and its backup repository host",
                                h.name
                            ),
                            Some("keep backups on a host of their own".into()),
                        );
                    }
                }
            }
        }

        // Roles and databases.
        let mut roles: BTreeSet<&str> = BTreeSet::new();
        for (i, r) in self.roles.iter().enumerate() {
            let field = format!("roles[{i}]");
            if !is_pg_identifier(&r.name) {
                cx.error(
                    &format!("{field}.name"),
                    format!("`{}` is not a valid PostgreSQL role name", r.name),
                    Some("use lowercase letters, digits and `_`, starting with a letter".into()),
                );
            } else if system_users.contains_key(&r.name) || r.name.starts_with("pg_") {
                cx.error(
                    &format!("{field}.name"),
                    format!("role `{}` is managed by Patroni or PostgreSQL", r.name),
                    None,
                );
            } else if !roles.insert(&r.name) {
                cx.error(
                    &format!("{field}.name"),
                    format!("role `{}` is declared twice", r.name),
                    None,
                );
            }
            if let Some(pw) = &r.password {
                cx.secret(&format!("{field}.password.secret"), &pw.secret);
            }
            if r.connection_limit < -1 {
                cx.error(
                    &format!("{field}.connection_limit"),
                    "connection_limit is -1 (no limit) or a count",
                    None,
                );
            }
        }
        for (i, r) in self.roles.iter().enumerate() {
            for (j, other) in r.member_of.iter().enumerate() {
                if !roles.contains(other.as_str()) || other == &r.name {
                    cx.error(
                        &format!("roles[{i}].member_of[{j}]"),
                        format!("role `{other}` is not declared in `roles`"),
                        None,
                    );
                }
            }
        }
        let superuser = self.superuser.name_or("postgres");
        let mut dbs = BTreeSet::new();
        for (i, d) in self.databases.iter().enumerate() {
            let field = format!("databases[{i}]");
            if !is_pg_identifier(&d.name) {
                cx.error(
                    &format!("{field}.name"),
                    format!("`{}` is not a valid database name", d.name),
                    None,
                );
            } else if RESERVED_DATABASES.contains(&d.name.as_str()) {
                cx.error(
                    &format!("{field}.name"),
                    format!("database `{}` is created by PostgreSQL itself", d.name),
                    None,
                );
            } else if !dbs.insert(d.name.as_str()) {
                cx.error(
                    &format!("{field}.name"),
                    format!("database `{}` is declared twice", d.name),
                    None,
                );
            }
            if d.owner != superuser && !roles.contains(d.owner.as_str()) {
                let known: Vec<&str> = roles.iter().copied().collect();
                cx.error(
                    &format!("{field}.owner"),
                    format!(
                        "owner `{}` of database `{}` is not a declared role",
                        d.owner, d.name
                    ),
                    Some(match crate::model::manifest::closest(&d.owner, &known) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => {
                            format!("declare it under `roles`, or use the superuser `{superuser}`")
                        }
                    }),
                );
            }
        }
    }

    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        cx.set_via(Some(format!("PostgresCluster/{}", m.name)));
        let host = cx.host();
        let model = self.model(m, cx.inventory());
        let paths = &model.paths;
        let os = &self.os_user;
        let (user, group) = (os.name.as_str(), os.name.as_str());
        let network = match &self.network {
            Some(n) => n.clone(),
            None => network_var(m, host)?,
        };
        let (cert, key, ca) = paths.cert_files(&host.name);
        let stanza = m.name.clone();
        let config = format!("--config={}", paths.pgbackrest_config);

        // The repository host, for the pg side of pgBackRest.
        let backup = match &self.backup {
            None => None,
            Some(b) => {
                let Some(rm) = cx.repo().find("BackupRepo", &b.repo) else {
                    let known: Vec<&str> = cx
                        .repo()
                        .manifests
                        .iter()
                        .filter(|x| x.kind == "BackupRepo")
                        .map(|x| x.name.as_str())
                        .collect();
                    return Err(unknown_backup_repo(m, &b.repo, &known));
                };
                let Spec::BackupRepo(r) = &rm.spec else {
                    return Err(m.error("backup.repo", "not a BackupRepo"));
                };
                let hosts = selected_hosts(rm, cx.inventory());
                let [repo_host] = hosts.as_slice() else {
                    return Err(repo_host_count(rm, &hosts));
                };
                Some(json!({
                    "repo": b.repo,
                    "repo_host": Member::of(repo_host),
                    "repo_port": r.port,
                    "archive_command": format!("pgbackrest {config} --stanza={stanza} archive-push \"%p\""),
                    "restore_command": format!("pgbackrest {config} --stanza={stanza} archive-get %f \"%p\""),
                }))
            }
        };
        let archive_command = backup
            .as_ref()
            .and_then(|b| b["archive_command"].as_str().map(str::to_string));
        let (parameters, dcs_parameters) = self.split_parameters(paths, archive_command);

        let mut pg_hba = vec![
            "local all all peer".to_string(),
            format!(
                "host replication {} 127.0.0.1/32 scram-sha-256",
                self.replication.name_or("replicator")
            ),
            format!(
                "host replication {} {network} scram-sha-256",
                self.replication.name_or("replicator")
            ),
            "host all all 127.0.0.1/32 scram-sha-256".to_string(),
            format!("host all all {network} scram-sha-256"),
        ];
        pg_hba.extend(self.pg_hba.iter().cloned());

        let mut tags = serde_json::to_value(&self.tags).unwrap_or(Value::Null);
        if let (Some(t), Some(Value::Object(over))) =
            (tags.as_object_mut(), host.vars.get("patroni_tags"))
        {
            for (k, v) in over {
                t.insert(k.clone(), v.clone());
            }
        }
        let member = Member::of(host);
        let cluster = json!({
            "name": m.name,
            "scope": m.name,
            "stanza": stanza,
            "version": self.version,
            "image": self.image(host),
            "bin_dir": self.bin_dir(),
            "compose_command": self.compose_command,
            "os_user": os,
            "member": member,
            "members": model.members,
            "network": network,
            "ports": self.ports,
            "paths": paths,
            "patroni": self.patroni,
            "parameters": parameters,
            "dcs_parameters": dcs_parameters,
            "pg_hba": pg_hba,
            "tags": tags,
            "credentials": {
                "superuser": { "username": self.superuser.name_or("postgres"), "secret": self.superuser.password.secret },
                "replication": { "username": self.replication.name_or("replicator"), "secret": self.replication.password.secret },
                "rewind": { "username": self.rewind.name_or("rewind_user"), "secret": self.rewind.password.secret },
                "rest_api": { "username": self.rest_api.name_or("patroni"), "secret": self.rest_api.password.secret },
            },
            "tls": { "cert": cert, "key": key, "ca": ca },
            "backup": backup,
            "haproxy": self.haproxy,
        });
        let mut vars = Map::new();
        vars.insert("cluster".into(), cluster);
        let resource = serde_json::to_value(self).unwrap_or(Value::Null);
        let render = |cx: &mut HostCx, name: &str| -> Result<Content, Diagnostic> {
            cx.render_template(&format!("postgres-cluster/{name}"), &resource, &vars)
                .map_err(|f| f.into_diagnostic(m, ""))
        };

        let mut out = Expansion::new(m);
        let reload_patroni = format!("{}-reload-patroni", m.name);
        let restart_pgbackrest = format!("{}-restart-pgbackrest", m.name);
        let reload_haproxy = format!("{}-reload-haproxy", m.name);
        let cmd_ref = |name: &str| ResourceRef {
            kind: "Command".into(),
            name: name.to_string(),
        };

        out.account(cx, os);
        let dir = |p: &str, mode: u32| DirectorySpec {
            path: p.to_string(),
            owner: user.to_string(),
            group: group.to_string(),
            mode: FileMode(mode),
            state: Presence::Present,
        };
        let mut dirs = vec![
            dir(&paths.base, 0o750),
            dir(&paths.pgdata_root, 0o700),
            dir(&paths.data_dir, 0o700),
            dir(&paths.log_dir, 0o750),
            dir(&paths.socket_dir, 0o750),
            dir(&paths.etcd_data_dir, 0o700),
            dir(&paths.config_dir, 0o750),
        ];
        if self.backup.is_some() {
            dirs.push(dir(&paths.pgbackrest_dir, 0o750));
            dirs.push(dir(&paths.pgbackrest_certs, 0o750));
            dirs.push(dir(&paths.pgbackrest_log, 0o750));
            dirs.push(dir(&paths.pgbackrest_spool, 0o750));
        }
        dirs.push(DirectorySpec {
            path: paths.stack_dir.clone(),
            owner: "root".into(),
            group: "root".into(),
            mode: FileMode(0o755),
            state: Presence::Present,
        });
        for d in dirs {
            out.push(cx, d.path.clone(), PrimitiveSpec::Directory(d), vec![]);
        }

        if self.backup.is_some() {
            let state = certificate(cx, m, host, &self.tls, (&cert, &key, &ca), os)?;
            out.push(
                cx,
                cert.clone(),
                PrimitiveSpec::Certificate(state),
                vec![cmd_ref(&restart_pgbackrest)],
            );
        }

        let file = |path: String, mode: u32, content: Content| {
            FileState::new(path, user, group, mode, content)
        };
        let patroni_yml = format!("{}/patroni.yml", paths.config_dir);
        let content = render(cx, "patroni.yml.tera")?;
        out.push(
            cx,
            patroni_yml.clone(),
            PrimitiveSpec::File(file(patroni_yml, 0o600, content)),
            vec![cmd_ref(&reload_patroni)],
        );
        let etcd_yml = format!("{}/etcd.yml", paths.config_dir);
        let content = render(cx, "etcd.yml.tera")?;
        out.push(
            cx,
            etcd_yml.clone(),
            PrimitiveSpec::File(file(etcd_yml, 0o640, content)),
            vec![],
        );
        if self.haproxy.enabled {
            let path = format!("{}/haproxy.cfg", paths.config_dir);
            let content = render(cx, "haproxy.cfg.tera")?;
            out.push(
                cx,
                path.clone(),
                PrimitiveSpec::File(file(path, 0o640, content)),
                vec![cmd_ref(&reload_haproxy)],
            );
        }
        if self.backup.is_some() {
            let path = paths.pgbackrest_config.clone();
            let content = render(cx, "pgbackrest.conf.tera")?;
            out.push(
                cx,
                path.clone(),
                PrimitiveSpec::File(file(path, 0o640, content)),
                vec![cmd_ref(&restart_pgbackrest)],
            );
        }

        // The stack.
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: &str| {
            env.insert(k.to_string(), EnvValue::Text(v.to_string()));
        };
        set("COMPOSE_PROJECT_NAME", &m.name);
        set("IMAGE", &self.image(host));
        set("PG_UID", &os.uid.to_string());
        set("PG_GID", &os.gid.to_string());
        set("CONFIG_PATH", &paths.config_dir);
        set("PG_DATA_ROOT", &paths.pgdata_root);
        set("ETCD_DATA_PATH", &paths.etcd_data_dir);
        if self.backup.is_some() {
            set("PGBACKREST_PATH", &paths.pgbackrest_dir);
            set("PGBACKREST_CONFIG", &paths.pgbackrest_config);
        }
        let compose = render(cx, "docker-compose.yml.tera")?;
        let stack = StackState {
            project: m.name.clone(),
            dir: paths.stack_dir.clone(),
            compose: Some(compose),
            env: render_env(cx, m, &env)?,
            owner: "root".into(),
            group: "root".into(),
            mode: FileMode(0o644),
            restart_on_notify: Vec::new(),
            state: Presence::Present,
        };
        out.push(
            cx,
            m.name.clone(),
            PrimitiveSpec::ComposeStack(stack),
            vec![],
        );

        let unit = format!("{}-stack.service", m.name);
        let content = render(cx, "stack.service.tera")?;
        out.push(
            cx,
            unit.clone(),
            PrimitiveSpec::SystemdUnit(UnitState::new(&unit, content, Some(true), None)),
            vec![],
        );

        // Handlers: each acts on this member only, so a change never restarts all members.
        let handler = |run: String| CommandSpec {
            run,
            creates: None,
            unless: None,
            onlyif: None,
            refresh_only: true,
            user: None,
            cwd: Some(paths.stack_dir.clone()),
            env: BTreeMap::new(),
            timeout: 120,
            wait_for: None,
            wait_timeout: 300,
        };
        let compose_cmd = &self.compose_command;
        out.push(
            cx,
            reload_patroni,
            PrimitiveSpec::Command(handler(format!("{compose_cmd} kill -s SIGHUP patroni"))),
            vec![],
        );
        if self.backup.is_some() {
            out.push(
                cx,
                restart_pgbackrest,
                PrimitiveSpec::Command(handler(format!("{compose_cmd} restart pgbackrest"))),
                vec![],
            );
        }
        if self.haproxy.enabled {
            out.push(
                cx,
                reload_haproxy,
                PrimitiveSpec::Command(handler(format!("{compose_cmd} kill -s SIGUSR2 haproxy"))),
                vec![],
            );
        }
        Ok(out.items)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kinds::DesiredHost;
    use crate::testutil::{errors, item, render, repo, text};

    /// Line numbers matter: the validation tests point at them.
    pub(crate) const CLUSTER: &str = "\
kind: PostgresCluster
name: postgres01
hosts: group:postgres
tls: { ca: pg-ca }
backup: { repo: repo1 }
superuser: { password: { secret: su } }
replication: { password: { secret: repl } }
rewind: { password: { secret: rewind } }
rest_api: { password: { secret: api } }
parameters:
  max_connections: 200
  shared_buffers: 128MB
roles:
  - name: app
    password: { secret: app }
databases:
  - name: app
    owner: app
";

    pub(crate) const REPO: &str = "\
kind: BackupRepo
name: repo1
hosts: host:backup1
tls: { ca: pg-ca }
";

    fn pg1(cluster: &str) -> DesiredHost {
        let dir = repo(&[
            ("manifests/pg.yaml", cluster),
            ("manifests/repo.yaml", REPO),
        ]);
        render(&dir, "pg1")
    }

    fn cluster_errors(cluster: &str) -> String {
        errors(&[
            ("manifests/pg.yaml", cluster),
            ("manifests/repo.yaml", REPO),
        ])
    }

    fn dir_of(h: &DesiredHost, path: &str) -> DirectorySpec {
        match &item(h, "Directory", path).spec {
            PrimitiveSpec::Directory(d) => d.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn yaml(text: &str) -> Value {
        yaml_serde::from_str(text).unwrap()
    }

    #[test]
    fn expands_into_the_primitives_of_a_member() {
        let h = pg1(CLUSTER);
        let mut got: Vec<String> = h
            .resources
            .iter()
            .map(|d| format!("{}/{}", d.kind, d.name))
            .collect();
        got.sort();
        let want = [
            "Certificate//home/postgres/pgbackrest/certs/pg1.crt",
            "Command/postgres01-reload-haproxy",
            "Command/postgres01-reload-patroni",
            "Command/postgres01-restart-pgbackrest",
            "ComposeStack/postgres01",
            "Directory//home/postgres",
            "Directory//home/postgres/config",
            "Directory//home/postgres/etcd-data",
            "Directory//home/postgres/pgbackrest",
            "Directory//home/postgres/pgbackrest/certs",
            "Directory//home/postgres/pgbackrest/log",
            "Directory//home/postgres/pgbackrest/spool",
            "Directory//home/postgres/postgres-data",
            "Directory//home/postgres/postgres-data/data",
            "Directory//home/postgres/postgres-data/logs",
            "Directory//home/postgres/postgres-data/unix",
            "Directory//opt/plumb/postgres01",
            "File//home/postgres/config/etcd.yml",
            "File//home/postgres/config/haproxy.cfg",
            "File//home/postgres/config/patroni.yml",
            "File//home/postgres/pgbackrest/pgbackrest.conf",
            "Group/postgres",
            "SystemdUnit/postgres01-stack.service",
            "User/postgres",
        ];
        assert_eq!(got, want);
        for d in &h.resources {
            assert_eq!(d.origin.via.as_deref(), Some("PostgresCluster/postgres01"));
            assert_eq!(d.origin.file, std::path::Path::new("manifests/pg.yaml"));
        }
    }

    #[test]
    fn account_paths_owners_and_modes() {
        let h = pg1(CLUSTER);
        match &item(&h, "Group", "postgres").spec {
            PrimitiveSpec::Group(g) => assert_eq!(g.gid, Some(1001)),
            other => panic!("{other:?}"),
        }
        match &item(&h, "User", "postgres").spec {
            PrimitiveSpec::User(u) => {
                assert_eq!(u.uid, Some(1001));
                assert_eq!(u.group.as_deref(), Some("postgres"));
                assert_eq!(u.groups, ["docker"]);
                assert_eq!(u.home.as_deref(), Some("/home/postgres"));
            }
            other => panic!("{other:?}"),
        }
        let data = dir_of(&h, "/home/postgres/postgres-data/data");
        assert_eq!((data.owner.as_str(), data.mode.0), ("postgres", 0o700));
        assert_eq!(dir_of(&h, "/home/postgres/etcd-data").mode.0, 0o700);
        assert_eq!(
            dir_of(&h, "/home/postgres/postgres-data/logs").mode.0,
            0o750
        );
        assert_eq!(dir_of(&h, "/opt/plumb/postgres01").owner, "root");
        match &item(&h, "File", "/home/postgres/config/patroni.yml").spec {
            PrimitiveSpec::File(f) => {
                assert_eq!(
                    (f.owner.as_str(), f.group.as_str()),
                    ("postgres", "postgres")
                );
                assert_eq!(f.mode.0, 0o600);
            }
            other => panic!("{other:?}"),
        }
        match &item(&h, "Certificate", "/home/postgres/pgbackrest/certs/pg1.crt").spec {
            PrimitiveSpec::Certificate(c) => {
                assert_eq!(c.common_name, "pg1");
                assert_eq!(c.dns_names, ["pg1", "10.0.0.1"]);
                assert_eq!(c.ip_addresses, ["10.0.0.1"]);
                assert_eq!(c.key_path, "/home/postgres/pgbackrest/certs/pg1.key");
                assert_eq!(
                    c.ca_path.as_deref(),
                    Some("/home/postgres/pgbackrest/certs/ca.crt")
                );
                assert_eq!((c.owner.as_str(), c.key_mode.0), ("postgres", 0o600));
                assert_eq!(c.ca, "pg-ca");
            }
            other => panic!("{other:?}"),
        }
        match &item(&h, "SystemdUnit", "postgres01-stack.service").spec {
            PrimitiveSpec::SystemdUnit(u) => {
                assert_eq!(u.enabled, Some(true));
                let t = String::from_utf8(u.content.as_ref().unwrap().bytes().to_vec()).unwrap();
                assert!(t.contains("Type=oneshot\nRemainAfterExit=yes\n"), "{t}");
                assert!(
                    t.contains("WorkingDirectory=/opt/plumb/postgres01\n"),
                    "{t}"
                );
                assert!(t.contains("ExecStart=/usr/bin/docker-compose up -d"), "{t}");
                assert!(t.contains("ExecStop=/usr/bin/docker-compose down"), "{t}");
                assert!(t.contains("After=docker.service"), "{t}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn patroni_yml_is_sensitive_and_describes_the_member() {
        let h = pg1(CLUSTER);
        let d = item(&h, "File", "/home/postgres/config/patroni.yml");
        assert!(d.is_sensitive(), "patroni.yml holds passwords");
        let shown = yaml_serde::to_string(d).unwrap();
        assert!(shown.contains("<sensitive>"), "{shown}");
        assert!(!shown.contains("<secret:su>"), "{shown}");

        let y = yaml(&text(d));
        assert_eq!(y["scope"], "postgres01");
        assert_eq!(y["name"], "pg1");
        assert_eq!(y["restapi"]["listen"], "10.0.0.1:8008");
        assert_eq!(y["restapi"]["authentication"]["password"], "<secret:api>");
        assert_eq!(
            y["etcd3"]["hosts"],
            json!(["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"])
        );
        let dcs = &y["bootstrap"]["dcs"];
        assert_eq!(
            (&dcs["ttl"], &dcs["loop_wait"], &dcs["retry_timeout"]),
            (&json!(30), &json!(10), &json!(10))
        );
        assert_eq!(dcs["maximum_lag_on_failover"], 1_048_576);
        assert_eq!(dcs["postgresql"]["use_pg_rewind"], true);
        // Patroni ignores max_connections in the local section: it must be in the DCS.
        assert_eq!(dcs["postgresql"]["parameters"]["max_connections"], 200);
        assert_eq!(
            y["bootstrap"]["initdb"],
            json!([{"encoding": "UTF8"}, "data-checksums"])
        );
        let hba = y["bootstrap"]["pg_hba"].as_array().unwrap();
        assert!(hba.contains(&json!(
            "host replication replicator 10.0.0.0/24 scram-sha-256"
        )));
        let pg = &y["postgresql"];
        assert_eq!(pg["listen"], "10.0.0.1:5432");
        assert_eq!(pg["data_dir"], "/home/postgres/postgres-data/data");
        assert_eq!(pg["bin_dir"], "/usr/lib/postgresql/15/bin");
        assert_eq!(pg["authentication"]["superuser"]["username"], "postgres");
        assert_eq!(pg["authentication"]["superuser"]["password"], "<secret:su>");
        assert_eq!(
            pg["authentication"]["replication"]["username"],
            "replicator"
        );
        assert_eq!(
            pg["authentication"]["rewind"]["password"],
            "<secret:rewind>"
        );
        let params = &pg["parameters"];
        assert_eq!(params["shared_buffers"], "128MB");
        assert!(params.get("max_connections").is_none());
        assert_eq!(params["archive_mode"], "on");
        assert_eq!(
            params["archive_command"],
            "pgbackrest --config=/home/postgres/pgbackrest/pgbackrest.conf --stanza=postgres01 archive-push \"%p\""
        );
        assert_eq!(params["log_min_duration_statement"], 250);
        assert_eq!(
            params["unix_socket_directories"],
            "/home/postgres/postgres-data/unix"
        );
        assert_eq!(y["tags"]["nofailover"], false);
    }

    #[test]
    fn etcd_haproxy_and_pgbackrest_configs_name_every_member() {
        let h = pg1(CLUSTER);
        let etcd = yaml(&text(item(&h, "File", "/home/postgres/config/etcd.yml")));
        assert_eq!(etcd["name"], "pg1");
        assert_eq!(
            etcd["initial-cluster"],
            "pg1=http://10.0.0.1:2380,pg2=http://10.0.0.2:2380,pg3=http://10.0.0.3:2380"
        );
        assert_eq!(etcd["listen-client-urls"], "http://10.0.0.1:2379");
        // Patroni's etcd3 client needs the gRPC gateway, off by default with a config file.
        assert_eq!(etcd["enable-grpc-gateway"], true);

        let ha = text(item(&h, "File", "/home/postgres/config/haproxy.cfg"));
        assert!(
            ha.contains(
                "bind *:5000\n    option httpchk OPTIONS /primary\n    http-check expect status 200"
            ),
            "{ha}"
        );
        assert!(
            ha.contains("bind *:5001\n    balance roundrobin\n    option httpchk OPTIONS /replica"),
            "{ha}"
        );
        for (name, addr) in [
            ("pg1", "10.0.0.1"),
            ("pg2", "10.0.0.2"),
            ("pg3", "10.0.0.3"),
        ] {
            let line = format!("server {name} {addr}:5432 maxconn 100 check port 8008");
            assert_eq!(ha.matches(&line).count(), 2, "{ha}");
        }

        let br = text(item(
            &h,
            "File",
            "/home/postgres/pgbackrest/pgbackrest.conf",
        ));
        for line in [
            "repo1-host=10.0.0.11\n",
            "repo1-host-type=tls\n",
            "repo1-host-cert-file=/home/postgres/pgbackrest/certs/pg1.crt\n",
            "repo1-host-key-file=/home/postgres/pgbackrest/certs/pg1.key\n",
            "repo1-host-ca-file=/home/postgres/pgbackrest/certs/ca.crt\n",
            "tls-server-address=10.0.0.1\n",
            "tls-server-auth=backup1=postgres01\n",
            "[postgres01]\npg1-path=/home/postgres/postgres-data/data\n",
        ] {
            assert!(br.contains(line), "missing {line:?} in\n{br}");
        }
    }

    #[test]
    fn compose_stack_runs_the_four_services_as_1001_on_the_host_network() {
        let h = pg1(CLUSTER);
        let d = item(&h, "ComposeStack", "postgres01");
        let PrimitiveSpec::ComposeStack(s) = &d.spec else {
            panic!()
        };
        assert_eq!(s.dir, "/opt/plumb/postgres01");
        let env = String::from_utf8(s.env.as_ref().unwrap().bytes().to_vec()).unwrap();
        assert!(!s.env.as_ref().unwrap().sensitive);
        for line in [
            "COMPOSE_PROJECT_NAME=postgres01\n",
            "IMAGE=plumb-lab/postgres-ha:15\n",
            "PG_UID=1001\n",
            "PG_DATA_ROOT=/home/postgres/postgres-data\n",
        ] {
            assert!(env.contains(line), "{env}");
        }
        let c = yaml(&text(d));
        let services = c["services"].as_object().unwrap();
        let names: Vec<&String> = services.keys().collect();
        assert_eq!(names, ["etcd", "patroni", "pgbackrest", "haproxy"]);
        for (name, svc) in services {
            assert_eq!(svc["network_mode"], "host", "{name}");
            assert_eq!(svc["user"], "${PG_UID}:${PG_GID}", "{name}");
            assert_eq!(svc["image"], "${IMAGE}", "{name}");
        }
        assert_eq!(
            services["patroni"]["volumes"][1],
            "${PG_DATA_ROOT}:${PG_DATA_ROOT}"
        );
    }

    #[test]
    fn notify_wiring_touches_only_this_member_and_one_service() {
        let h = pg1(CLUSTER);
        let notified = |kind: &str, name: &str| -> Vec<String> {
            item(&h, kind, name)
                .notify
                .iter()
                .map(|r| r.to_string())
                .collect()
        };
        assert_eq!(
            notified("File", "/home/postgres/config/patroni.yml"),
            ["Command/postgres01-reload-patroni"]
        );
        assert_eq!(
            notified("File", "/home/postgres/pgbackrest/pgbackrest.conf"),
            ["Command/postgres01-restart-pgbackrest"]
        );
        assert_eq!(
            notified("Certificate", "/home/postgres/pgbackrest/certs/pg1.crt"),
            ["Command/postgres01-restart-pgbackrest"]
        );
        assert_eq!(
            notified("File", "/home/postgres/config/haproxy.cfg"),
            ["Command/postgres01-reload-haproxy"]
        );
        assert!(notified("File", "/home/postgres/config/etcd.yml").is_empty());
        assert!(
            h.resources
                .iter()
                .all(|d| d.notify.iter().all(|r| r.kind == "Command")),
            "nothing restarts the whole stack"
        );
        for (name, run) in [
            (
                "postgres01-reload-patroni",
                "/usr/bin/docker-compose kill -s SIGHUP patroni",
            ),
            (
                "postgres01-restart-pgbackrest",
                "/usr/bin/docker-compose restart pgbackrest",
            ),
            (
                "postgres01-reload-haproxy",
                "/usr/bin/docker-compose kill -s SIGUSR2 haproxy",
            ),
        ] {
            let PrimitiveSpec::Command(c) = &item(&h, "Command", name).spec else {
                panic!()
            };
            assert!(c.refresh_only, "{name} runs only when notified");
            assert_eq!(c.run, run);
            assert_eq!(c.cwd.as_deref(), Some("/opt/plumb/postgres01"));
        }
    }

    #[test]
    fn without_backup_there_is_no_pgbackrest_and_no_archiving() {
        let h = pg1(&CLUSTER.replace("backup: { repo: repo1 }\n", ""));
        assert!(
            h.resources.iter().all(|d| !d.name.contains("pgbackrest")),
            "{:#?}",
            h.resources.iter().map(|d| &d.name).collect::<Vec<_>>()
        );
        assert!(!h.resources.iter().any(|d| d.kind == "Certificate"));
        let y = yaml(&text(item(&h, "File", "/home/postgres/config/patroni.yml")));
        assert!(y["postgresql"]["parameters"].get("archive_mode").is_none());
        let c = yaml(&text(item(&h, "ComposeStack", "postgres01")));
        assert!(c["services"].get("pgbackrest").is_none());
    }

    #[test]
    fn host_vars_and_fields_override_defaults() {
        let dir = repo(&[
            (
                "manifests/pg.yaml",
                &CLUSTER.replace("hosts: group:postgres\n", "hosts: group:postgres\nhaproxy: { enabled: false }\nnetwork: 10.9.0.0/16\n"),
            ),
            ("manifests/repo.yaml", REPO),
            (
                "inventory/hosts.yaml",
                &crate::testutil::INVENTORY.replace(
                    "  pg1: { address: 10.0.0.1, groups: [postgres] }",
                    "  pg1: { address: 10.0.0.1, groups: [postgres], vars: { postgres_image: reg/pg:1, patroni_tags: { nofailover: true } } }",
                ),
            ),
        ]);
        let h = render(&dir, "pg1");
        assert!(!h.resources.iter().any(|d| d.name.contains("haproxy")));
        let y = yaml(&text(item(&h, "File", "/home/postgres/config/patroni.yml")));
        assert_eq!(y["tags"]["nofailover"], true);
        assert!(
            y["postgresql"]["pg_hba"]
                .as_array()
                .unwrap()
                .contains(&json!("host all all 10.9.0.0/16 scram-sha-256"))
        );
        let PrimitiveSpec::ComposeStack(s) = &item(&h, "ComposeStack", "postgres01").spec else {
            panic!()
        };
        let env = String::from_utf8(s.env.as_ref().unwrap().bytes().to_vec()).unwrap();
        assert!(env.contains("IMAGE=reg/pg:1\n"), "{env}");
        let h2 = render(&dir, "pg2");
        let y2 = yaml(&text(item(
            &h2,
            "File",
            "/home/postgres/config/patroni.yml",
        )));
        assert_eq!(y2["tags"]["nofailover"], false);
    }

    #[test]
    fn a_repo_template_overrides_the_built_in_one() {
        let dir = repo(&[
            ("manifests/pg.yaml", CLUSTER),
            ("manifests/repo.yaml", REPO),
            (
                "templates/postgres-cluster/etcd.yml.tera",
                "name: {{ cluster.member.name }} # custom\n",
            ),
        ]);
        let h = render(&dir, "pg2");
        assert_eq!(
            text(item(&h, "File", "/home/postgres/config/etcd.yml")),
            "name: pg2 # custom\n"
        );
    }

    #[test]
    fn an_identical_explicit_user_merges_and_a_different_one_conflicts() {
        let same = "kind: User\nname: postgres\nhosts: group:postgres\nuid: 1001\ngroup: postgres\ngroups: [docker]\nhome: /home/postgres\nshell: /bin/bash\n";
        let dir = repo(&[
            ("manifests/pg.yaml", CLUSTER),
            ("manifests/repo.yaml", REPO),
            ("manifests/users.yaml", same),
        ]);
        let h = render(&dir, "pg1");
        assert_eq!(h.resources.iter().filter(|d| d.kind == "User").count(), 1);

        let dir = repo(&[
            ("manifests/pg.yaml", CLUSTER),
            ("manifests/repo.yaml", REPO),
            ("manifests/users.yaml", &same.replace("1001", "1002")),
        ]);
        let repo = crate::testutil::load(&dir).unwrap();
        let e = crate::render::render_host(&repo, repo.inventory.host("pg1").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("User/postgres is declared twice, differently"),
            "{e}"
        );
    }

    #[test]
    fn unknown_ca_is_reported_at_its_line() {
        let e = cluster_errors(&CLUSTER.replace("ca: pg-ca }", "ca: pg-caa }"));
        assert!(
            e.contains("manifests/pg.yaml:4:12: error: field `tls.ca`: unknown CertificateAuthority `pg-caa`\n  hint: known CAs: pg-ca"),
            "{e}"
        );
    }

    #[test]
    fn unknown_backup_repo_is_reported_at_its_line() {
        let e = cluster_errors(&CLUSTER.replace("repo: repo1", "repo: repo2"));
        assert!(
            e.contains("manifests/pg.yaml:5:17: error: field `backup.repo`: unknown BackupRepo `repo2`\n  hint: known BackupRepos: repo1"),
            "{e}"
        );
    }

    #[test]
    fn database_owner_must_be_a_declared_role() {
        let e = cluster_errors(&CLUSTER.replace("    owner: app", "    owner: ap"));
        assert!(
            e.contains("manifests/pg.yaml:18:12: error: field `databases[0].owner`: owner `ap` of database `app` is not a declared role\n  hint: did you mean `app`?"),
            "{e}"
        );
        // The superuser may own databases.
        let ok = repo(&[
            (
                "manifests/pg.yaml",
                &CLUSTER.replace("    owner: app", "    owner: postgres"),
            ),
            ("manifests/repo.yaml", REPO),
        ]);
        crate::testutil::load(&ok).unwrap();
    }

    #[test]
    fn missing_secrets_are_reported_where_they_are_named() {
        let e = cluster_errors(
            &CLUSTER
                .replace("secret: su }", "secret: sux }")
                .replace("{ secret: app }", "{ secret: app_pw }"),
        );
        assert!(
            e.contains("manifests/pg.yaml:6:34: error: field `superuser.password.secret`: secret `sux` is not defined\n  hint: create it with `plumb secrets set sux`"),
            "{e}"
        );
        assert!(
            e.contains("manifests/pg.yaml:15:25: error: field `roles[0].password.secret`: secret `app_pw` is not defined"),
            "{e}"
        );
    }

    #[test]
    fn other_mistakes_are_reported_with_their_field() {
        let e = cluster_errors(&format!(
            "{}ports: {{ rest_api: 5432 }}\npatroni: {{ ttl: 20 }}\n",
            CLUSTER.replace("  shared_buffers: 128MB", "  listen_addresses: '*'")
        ));
        assert!(
            e.contains("manifests/pg.yaml:12:21: error: field `parameters.listen_addresses`: `listen_addresses` is set by plumb and Patroni"),
            "{e}"
        );
        assert!(
            e.contains("manifests/pg.yaml:19:20: error: field `ports.rest_api`: port 5432 is already used by `ports.postgres`"),
            "{e}"
        );
        assert!(
            e.contains("manifests/pg.yaml:20:17: error: field `patroni.ttl`: ttl 20 is too short for loop_wait 10 and retry_timeout 10"),
            "{e}"
        );
    }

    #[test]
    fn the_cluster_network_must_be_known() {
        let e = errors(&[
            ("manifests/pg.yaml", CLUSTER),
            ("manifests/repo.yaml", REPO),
            (
                "inventory/hosts.yaml",
                &crate::testutil::INVENTORY.replace(
                    "  vars:\n    cluster_network: 10.0.0.0/24\n",
                    "  vars: {}\n",
                ),
            ),
        ]);
        assert!(
            e.contains("manifests/pg.yaml:1:1: error: field `network`: no `network` on the cluster and no var `cluster_network` for its hosts"),
            "{e}"
        );
        let e = cluster_errors(&format!("{CLUSTER}network: 10.0.0.0/33\n"));
        assert!(
            e.contains("manifests/pg.yaml:19:10: error: field `network`: `10.0.0.0/33` is not a network in CIDR notation"),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_and_notify_are_rejected() {
        let e = cluster_errors(&format!("{CLUSTER}archive: true\n"));
        assert!(
            e.contains("manifests/pg.yaml:19:1: error: field `archive`: unknown field `archive`"),
            "{e}"
        );
        let e = cluster_errors(&format!("{CLUSTER}notify: [ComposeStack/postgres01]\n"));
        assert!(
            e.contains("error: field `notify`: a PostgresCluster wires its own handlers"),
            "{e}"
        );
    }

    #[test]
    fn cidr_syntax() {
        assert!(check_cidr("192.168.150.0/24").is_ok());
        assert!(check_cidr("fd00::/8").is_ok());
        assert!(check_cidr("192.168.150.0").is_err());
        assert!(check_cidr("192.168.150.0/40").is_err());
        assert!(check_cidr("x/8").is_err());
    }
}
