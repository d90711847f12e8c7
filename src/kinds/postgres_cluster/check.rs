//! Validation of a `PostgresCluster`, one function per concern: the members and their network,
//! the ports of each member's services, Patroni's timings and the PostgreSQL parameters, the
//! accounts Patroni uses, the backup link, and the roles and databases. Each reports with the
//! manifest's file, line and field.

use super::super::cluster::{
    check_cidr, check_common, check_credential, check_project_name, is_pg_identifier, network_var,
    selected_hosts, unknown_backup_repo,
};
use super::{ConsulScheme, Dcs, MANAGED_PARAMETERS, PostgresClusterSpec, RESERVED_DATABASES};
use crate::kinds::{CheckCx, Spec};
use crate::model::inventory::Host;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Everything there is to check about a cluster.
pub(super) fn check(spec: &PostgresClusterSpec, cx: &mut CheckCx) {
    check_project_name(
        cx,
        "a Patroni scope, pgBackRest stanza and compose project name",
    );
    if !(12..=17).contains(&spec.version) {
        cx.error(
            "version",
            format!("PostgreSQL {} is not supported", spec.version),
            Some("use a major version from 12 to 17".into()),
        );
    }
    check_common(
        cx,
        &spec.os_user,
        Some(&spec.tls),
        &spec.image,
        &spec.compose_command,
    );
    for (field, p) in [
        ("bin_dir", &spec.bin_dir),
        ("base_dir", &spec.base_dir),
        ("stack_dir", &spec.stack_dir),
    ] {
        if let Some(p) = p {
            cx.abs_path(field, p, &[]);
        }
    }
    let members = members(spec, cx);
    dcs(spec, cx, &members);
    ports(spec, cx);
    patroni(spec, cx);
    parameters(spec, cx);
    let system_users = credentials(spec, cx);
    backup(spec, cx, &members);
    roles_and_databases(spec, cx, &system_users);
    pgbouncer(spec, cx);
}

/// PgBouncer: behind HAProxy (which finds the primary), sizes that are sizes, and users that
/// are declared roles with a password.
fn pgbouncer(spec: &PostgresClusterSpec, cx: &mut CheckCx) {
    let Some(b) = &spec.pgbouncer else { return };
    if !spec.haproxy.enabled {
        cx.error(
            "pgbouncer",
            "PgBouncer connects to the primary through HAProxy, which is off",
            Some("turn HAProxy on (`haproxy: { enabled: true }`, the default)".into()),
        );
    }
    for (field, n) in [
        ("pgbouncer.max_client_conn", b.max_client_conn),
        ("pgbouncer.default_pool_size", b.default_pool_size),
    ] {
        if n == 0 {
            cx.error(field, "0 connections would let no client through", None);
        }
    }
    let mut seen = BTreeSet::new();
    for (i, u) in b.users.iter().flatten().enumerate() {
        let field = format!("pgbouncer.users[{i}]");
        match spec.roles.iter().find(|r| &r.name == u) {
            None => cx.error(
                &field,
                format!("`{u}` is not a declared role"),
                Some("PgBouncer's users are roles of `roles` with a password".into()),
            ),
            Some(r) if r.password.is_none() => cx.error(
                &field,
                format!("role `{u}` has no password, so it cannot log in through PgBouncer"),
                None,
            ),
            Some(_) => {}
        }
        if !seen.insert(u.as_str()) {
            cx.error(&field, format!("`{u}` is listed twice"), None);
        }
    }
}

/// The members: at least one, each with an IP address, and the cluster network known.
fn members<'r>(spec: &PostgresClusterSpec, cx: &mut CheckCx<'_, 'r>) -> Vec<&'r Host> {
    let members = selected_hosts(cx.manifest, cx.repo.inventory);
    if members.is_empty() {
        cx.error(
            "hosts",
            "the cluster selects no host; its hosts are its members",
            None,
        );
    }
    if members.len() == 2 && spec.dcs == Dcs::Etcd {
        cx.error(
            "hosts",
            "the cluster has 2 members, but etcd runs on each member and needs a majority: \
             with 2, losing either one stops the whole cluster (no failover at all)",
            Some("use 1 member (no HA) or 3 (one may fail); an odd number, as etcd advises".into()),
        );
    }
    for h in &members {
        if h.address.parse::<IpAddr>().is_err() {
            cx.error(
                "hosts",
                format!(
                    "member `{}` has address `{}`, but {} needs IP addresses",
                    h.name,
                    h.address,
                    match spec.dcs {
                        Dcs::Etcd => "etcd",
                        Dcs::Consul => "the members' listeners and certificates",
                    }
                ),
                Some("give the host an IP address in the inventory".into()),
            );
        }
    }
    match &spec.network {
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
    members
}

/// The DCS: with `consul`, its section, and nothing of it without. The ACL token must never
/// cross a network in clear or go to an agent whose certificate is not checked, so plain HTTP
/// and `verify: false` are for an agent on loopback only.
fn dcs(spec: &PostgresClusterSpec, cx: &mut CheckCx, members: &[&Host]) {
    let consul = match (spec.dcs, &spec.consul) {
        (Dcs::Etcd, None) => return,
        (Dcs::Etcd, Some(_)) => {
            cx.error(
                "consul",
                "`consul` settings are given but the DCS is etcd",
                Some("set `dcs: consul`, or remove the `consul` section".into()),
            );
            return;
        }
        (Dcs::Consul, None) => {
            cx.error(
                "dcs",
                "`dcs: consul` needs a `consul` section: at least the ACL token",
                Some("e.g. `consul: { token: { secret: consul_token } }`".into()),
            );
            return;
        }
        (Dcs::Consul, Some(c)) => c,
    };
    cx.secret("consul.token.secret", &consul.token.secret);
    // The address each member's Patroni uses: the manifest's, or its host var.
    let mut addresses = vec![(None, consul.address.clone())];
    for h in members {
        match h.vars.get("consul_address") {
            None => {}
            Some(Value::String(a)) => addresses.push((Some(h.name.as_str()), a.clone())),
            Some(other) => cx.error(
                "consul.address",
                format!(
                    "host var `consul_address` of `{}` is {other}, not `host:port`",
                    h.name
                ),
                None,
            ),
        }
    }
    for (host, address) in &addresses {
        let whose = match host {
            None => String::new(),
            Some(h) => format!(" (host var `consul_address` of `{h}`)"),
        };
        let loopback = match parse_host_port(address) {
            Err(why) => {
                cx.error(
                    "consul.address",
                    format!("`{address}`{whose} is not `host:port`: {why}"),
                    Some("e.g. `127.0.0.1:8501`, the member's own agent".into()),
                );
                continue;
            }
            Ok((h, _)) => is_loopback(h),
        };
        if consul.scheme == ConsulScheme::Http && !loopback {
            cx.error(
                "consul.scheme",
                format!("plain HTTP to the Consul agent at `{address}`{whose} would send the ACL token across the network in clear"),
                Some("use `scheme: https` (the default), or an agent on the member's loopback".into()),
            );
        }
        if consul.scheme == ConsulScheme::Https && !consul.verify && !loopback {
            cx.error(
                "consul.verify",
                format!("`verify: false` would send the ACL token to whatever answers at `{address}`{whose}"),
                Some("keep `verify: true` and give the agent's CA as `cacert`".into()),
            );
        }
    }
    for (field, path) in [
        ("consul.cacert", &consul.cacert),
        ("consul.cert", &consul.cert),
        ("consul.key", &consul.key),
    ] {
        let Some(path) = path else { continue };
        if consul.scheme == ConsulScheme::Http {
            cx.error(
                field,
                "TLS files are given but the scheme is `http`",
                Some("use `scheme: https`, or remove the file".into()),
            );
        }
        cx.abs_path(field, path, &[]);
        // The path is also a bind mount of Patroni's container (`SRC:DST:ro`).
        if !path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
        {
            cx.error(
                field,
                format!("`{path}` has characters a compose volume cannot carry"),
                Some("use letters, digits, `/`, `.`, `_` and `-`".into()),
            );
        }
    }
    if consul.cert.is_some() != consul.key.is_some() {
        let field = if consul.cert.is_some() {
            "consul.cert"
        } else {
            "consul.key"
        };
        cx.error(
            field,
            "a client certificate needs both `cert` and `key`",
            None,
        );
    }
    if let Some(dc) = &consul.dc
        && (dc.is_empty()
            || !dc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
    {
        cx.error(
            "consul.dc",
            format!("`{dc}` is not a Consul datacenter name"),
            Some("letters, digits, `_`, `-` and `.`".into()),
        );
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6); the host is a name or an address.
pub(super) fn parse_host_port(s: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or("an IPv6 address is written `[addr]:port`")?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not an IPv6 address between the brackets");
        }
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or("no `:port`")?;
        let name_ok = !h.is_empty()
            && h.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !name_ok {
            return Err("the host is neither a DNS name nor an IPv4 address");
        }
        (h, p)
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host, p)),
        _ => Err("the port is not a number from 1 to 65535"),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Every service of a member on a port of its own.
fn ports(spec: &PostgresClusterSpec, cx: &mut CheckCx) {
    let mut ports = vec![
        ("ports.postgres", spec.ports.postgres),
        ("ports.rest_api", spec.ports.rest_api),
    ];
    if spec.dcs == Dcs::Etcd {
        ports.push(("ports.etcd_client", spec.ports.etcd_client));
        ports.push(("ports.etcd_peer", spec.ports.etcd_peer));
        ports.push(("ports.etcd_metrics", spec.ports.etcd_metrics));
    }
    if spec.backup.is_some() {
        ports.push(("ports.pgbackrest", spec.ports.pgbackrest));
    }
    if let Some(b) = &spec.pgbouncer {
        ports.push(("pgbouncer.port", b.port));
    }
    if spec.haproxy.enabled {
        ports.push(("haproxy.primary_port", spec.haproxy.primary_port));
        ports.push(("haproxy.replica_port", spec.haproxy.replica_port));
        ports.push(("haproxy.stats_port", spec.haproxy.stats_port));
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
}

/// Patroni's timings fit its own rule.
fn patroni(spec: &PostgresClusterSpec, cx: &mut CheckCx) {
    let p = &spec.patroni;
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
}

/// PostgreSQL parameters and pg_hba lines: well-formed, and none that plumb or Patroni set.
fn parameters(spec: &PostgresClusterSpec, cx: &mut CheckCx) {
    for (k, v) in &spec.parameters {
        let field = format!("parameters.{k}");
        let valid_name = k
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
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
                    "ssl" | "ssl_cert_file" | "ssl_key_file" | "ssl_ca_file" => {
                        "TLS is always on, with the member certificate from `tls.ca`".to_string()
                    }
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
    for (i, line) in spec.pg_hba.iter().enumerate() {
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
}

/// The superuser, replication and rewind users: distinct, with their secrets. Returns their
/// names (no declared role may take one).
fn credentials(spec: &PostgresClusterSpec, cx: &mut CheckCx) -> BTreeMap<String, &'static str> {
    let mut system_users = BTreeMap::new();
    for (field, c, default) in [
        ("superuser", &spec.superuser, "postgres"),
        ("replication", &spec.replication, "replicator"),
        ("rewind", &spec.rewind, "rewind_user"),
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
    check_credential(cx, "rest_api", &spec.rest_api);
    system_users
}

/// The backup repository exists and either trusts the same CA and lives on a host of its own,
/// or is local to the cluster's only member.
fn backup(spec: &PostgresClusterSpec, cx: &mut CheckCx, members: &[&Host]) {
    if let Some(b) = &spec.backup {
        match cx.repo.find("BackupRepo", &b.repo) {
            None => {
                let known = cx.repo.names_of("BackupRepo");
                let d = unknown_backup_repo(cx.manifest, &b.repo, &known);
                cx.diags.push(d);
            }
            Some(rm) => {
                let Spec::BackupRepo(r) = &rm.spec else {
                    return;
                };
                let repo_hosts: BTreeSet<&str> = selected_hosts(rm, cx.repo.inventory)
                    .into_iter()
                    .map(|h| h.name.as_str())
                    .collect();
                if r.local {
                    // A local repository is a folder of the only member: one host holds the
                    // data and its backups (seed 000), nothing to reach over TLS.
                    let names: Vec<&str> = members.iter().map(|h| h.name.as_str()).collect();
                    let on_member = names.len() == 1 && repo_hosts.contains(names[0]);
                    if !on_member {
                        cx.error(
                            "backup.repo",
                            format!(
                                "BackupRepo `{}` is local: it can hold the backups of a cluster \
                                 of one member on its own host, but this cluster has {} ({})",
                                b.repo,
                                names.len(),
                                names.join(", ")
                            ),
                            Some(
                                "give the cluster one member on the repository's host, or make \
                                 the repository a host of its own (drop `local`, declare `tls`)"
                                    .into(),
                            ),
                        );
                    }
                    return;
                }
                if let Some(rt) = &r.tls
                    && rt.ca != spec.tls.ca
                {
                    cx.error(
                        "backup.repo",
                        format!(
                            "BackupRepo `{}` uses CA `{}` but this cluster uses `{}`",
                            b.repo, rt.ca, spec.tls.ca
                        ),
                        Some("both sides of pgBackRest TLS must trust one CA".into()),
                    );
                }
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
                        Some(
                            "keep backups on a host of their own (a cluster of one member may \
                             use a `local: true` repository on its host)"
                                .into(),
                        ),
                    );
                }
            }
        }
    }
}

/// Roles and databases: valid, unique names; memberships and owners among the declared roles.
fn roles_and_databases(
    spec: &PostgresClusterSpec,
    cx: &mut CheckCx,
    system_users: &BTreeMap<String, &'static str>,
) {
    let mut roles: BTreeSet<&str> = BTreeSet::new();
    for (i, r) in spec.roles.iter().enumerate() {
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
    for (i, r) in spec.roles.iter().enumerate() {
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
    let superuser = spec.superuser.name_or("postgres");
    let mut dbs = BTreeSet::new();
    for (i, d) in spec.databases.iter().enumerate() {
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
        for (j, g) in d.grants.iter().enumerate() {
            let gfield = format!("{field}.grants[{j}]");
            if g.role != superuser && !roles.contains(g.role.as_str()) {
                cx.error(
                    &format!("{gfield}.role"),
                    format!("grantee `{}` is not a declared role", g.role),
                    Some("declare it under `roles`".into()),
                );
            }
            match (&g.privilege, &g.schema) {
                (Some(_), None) => {}
                (None, Some(schema)) if is_pg_identifier(schema) => {}
                (None, Some(schema)) => cx.error(
                    &format!("{gfield}.schema"),
                    format!("`{schema}` is not a valid schema name"),
                    None,
                ),
                _ => cx.error(
                    &gfield,
                    "a grant takes either `privilege` (connect or all, on the database) or `schema` (USAGE on that schema)",
                    None,
                ),
            }
        }
        if let Some(enc) = &d.encoding
            && (enc.is_empty() || !enc.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            cx.error(
                &format!("{field}.encoding"),
                format!("`{enc}` is not an encoding name (e.g. UTF8)"),
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
