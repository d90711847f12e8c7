//! The expansion of a `PostgresCluster` on one member into primitives.

use super::super::cluster::*;
use super::*;
use crate::diag::Diagnostic;
use crate::kinds::{Desired, HostCx, Manifest};
use serde_json::{Map, Value, json};

/// Patroni's custom bootstrap for `restore_on_empty` (run with no parameters, not through a
/// shell: Patroni splits it like a shell would): the newest backup when the repository holds
/// one, `initdb` as Patroni runs it when it holds none, and a failure (Patroni tries again)
/// when the repository cannot be read, so an empty cluster never starts over its backups.
fn bootstrap_command(
    spec: &PostgresClusterSpec,
    paths: &ClusterPaths,
    config: &str,
    stanza: &str,
) -> String {
    let q = crate::shell::quote;
    let initdb = q(&format!("{}/initdb", spec.bin_dir()));
    let data = q(&paths.data_dir);
    let (config, stanza) = (q(config), q(&format!("--stanza={stanza}")));
    let script = format!(
        "info=$(pgbackrest {config} {stanza} --output=json info) || \
         {{ echo 'plumb: the backup repository cannot be read: not bootstrapping' >&2; exit 1; }}; \
         case \"$info\" in *'\"label\"'*) exec pgbackrest {config} {stanza} --delta restore;; esac; \
         exec {initdb} -D {data} --encoding=UTF8 --data-checksums"
    );
    format!("sh -c {}", q(&script))
}

/// Expands the cluster into the desired state of one member.
pub(super) fn render(
    spec: &PostgresClusterSpec,
    m: &Manifest,
    cx: &mut HostCx,
) -> Result<Vec<Desired>, Diagnostic> {
    cx.set_via(Some(format!("PostgresCluster/{}", m.name)));
    let host = cx.host();
    let model = spec.model(m, cx.inventory());
    let paths = &model.paths;
    let os = &spec.os_user;
    let (user, group) = (os.name.as_str(), os.name.as_str());
    let network = match &spec.network {
        Some(n) => n.clone(),
        None => network_var(m, host)?,
    };
    let (cert, key, ca) = paths.cert_files(&host.name);
    let (member_cert, member_key, member_ca) = paths.member_cert_files(&host.name);
    let stanza = m.name.clone();
    let config = format!("--config={}", paths.pgbackrest_config);

    // The repository host, for the pg side of pgBackRest.
    let backup = match &spec.backup {
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
                "local": r.local,
                "repo_path": r.path,
                "retention_full": r.retention_full,
                "retention_diff": r.retention_diff,
                "repo_host": Member::of(repo_host),
                "repo_port": r.port,
                "archive_command": format!("pgbackrest {config} --stanza={stanza} archive-push \"%p\""),
                "restore_command": format!("pgbackrest {config} --stanza={stanza} archive-get %f \"%p\""),
                // A new or wiped replica is restored from the repository (its WAL then
                // streams from the leader): the leader is not read in full for it.
                "replica_command": format!("pgbackrest {config} --stanza={stanza} --delta --type=standby restore"),
                "restore_on_empty": b.restore_on_empty,
                "bootstrap_command": bootstrap_command(spec, paths, &config, &stanza),
            }))
        }
    };
    // With a repository host, a pgBackRest TLS server runs on the member (the repository host
    // takes backups through it) with a certificate of its own; a local repository needs none.
    let tls_server = backup
        .as_ref()
        .is_some_and(|b| b["local"] != Value::Bool(true));
    let archive_command = backup
        .as_ref()
        .and_then(|b| b["archive_command"].as_str().map(str::to_string));
    let (parameters, dcs_parameters) = spec.split_parameters(
        paths,
        Some((&member_cert, &member_key, &member_ca)),
        archive_command,
    );

    // From the cluster network, TLS only: replication and clients (who come through HAProxy,
    // from the members' addresses) on `hostssl`, anything else refused before a password is
    // asked for. Loopback is not the cluster network (PostgreSQL listens on the member's
    // address only; the lines serve a manifest that adds a loopback listener).
    let replicator = spec.replication.name_or("replicator");
    let mut pg_hba = vec![
        "local all all peer".to_string(),
        format!("host replication {replicator} 127.0.0.1/32 scram-sha-256"),
        format!("hostssl replication {replicator} {network} scram-sha-256"),
        "host all all 127.0.0.1/32 scram-sha-256".to_string(),
        format!("hostssl all all {network} scram-sha-256"),
        format!("hostnossl replication all {network} reject"),
        format!("hostnossl all all {network} reject"),
    ];
    pg_hba.extend(spec.pg_hba.iter().cloned());

    let mut tags = serde_json::to_value(&spec.tags).unwrap_or(Value::Null);
    if let (Some(t), Some(Value::Object(over))) =
        (tags.as_object_mut(), host.vars.get("patroni_tags"))
    {
        for (k, v) in over {
            t.insert(k.clone(), v.clone());
        }
    }
    let member = Member::of(host);
    let consul = consul_vars(spec, m, host)?;
    let etcd = spec.dcs == Dcs::Etcd;
    let cluster = json!({
        "name": m.name,
        "scope": m.name,
        "stanza": stanza,
        "version": spec.version,
        "image": spec.image(host),
        "bin_dir": spec.bin_dir(),
        "compose_command": spec.compose_command,
        "os_user": os,
        "member": member,
        "members": model.members,
        "network": network,
        "ports": spec.ports,
        "paths": paths,
        "patroni": spec.patroni,
        "parameters": parameters,
        "dcs_parameters": dcs_parameters,
        "pg_hba": pg_hba,
        "tags": tags,
        "credentials": {
            "superuser": { "username": spec.superuser.name_or("postgres"), "secret": spec.superuser.password.secret },
            "replication": { "username": spec.replication.name_or("replicator"), "secret": spec.replication.password.secret },
            "rewind": { "username": spec.rewind.name_or("rewind_user"), "secret": spec.rewind.password.secret },
            "rest_api": { "username": spec.rest_api.name_or("patroni"), "secret": spec.rest_api.password.secret },
        },
        "tls": { "cert": cert, "key": key, "ca": ca },
        "member_tls": { "cert": member_cert, "key": member_key, "ca": member_ca },
        "backup": backup,
        "haproxy": spec.haproxy,
        "pgbouncer": pgbouncer_vars(spec, paths),
        "dcs": spec.dcs.as_str(),
        "consul": consul,
    });
    let mut vars = Map::new();
    vars.insert("cluster".into(), cluster);
    let resource = serde_json::to_value(spec).unwrap_or(Value::Null);
    let render = |cx: &mut HostCx, name: &str| -> Result<Content, Diagnostic> {
        cx.render_template(&format!("postgres-cluster/{name}"), &resource, &vars)
            .map_err(|f| f.into_diagnostic(m, ""))
    };

    let mut out = Expansion::new(m);
    let reload_patroni = format!("{}-reload-patroni", m.name);
    let restart_pgbackrest = format!("{}-restart-pgbackrest", m.name);
    let reload_haproxy = format!("{}-reload-haproxy", m.name);
    let reload_postgres = format!("{}-reload-postgres", m.name);
    let restart_etcd = format!("{}-restart-etcd", m.name);
    let reload_pgbouncer = format!("{}-reload-pgbouncer", m.name);
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
        dir(&paths.config_dir, 0o750),
        dir(&paths.tls_dir, 0o750),
    ];
    if etcd {
        dirs.insert(5, dir(&paths.etcd_data_dir, 0o700));
    }
    if spec.pgbouncer.is_some() {
        dirs.push(dir(&paths.pgbouncer_dir, 0o750));
    }
    if spec.backup.is_some() {
        dirs.push(dir(&paths.pgbackrest_dir, 0o750));
        if tls_server {
            dirs.push(dir(&paths.pgbackrest_certs, 0o750));
        }
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

    // The member certificate: etcd (server, peer and client), Patroni's REST API and etcd
    // client, PostgreSQL. A new one is picked up by etcd on the next handshake, by Patroni on
    // SIGHUP, by PostgreSQL on a reload; HAProxy reloads for a new CA bundle.
    let mut member_notify = vec![cmd_ref(&reload_patroni), cmd_ref(&reload_postgres)];
    if spec.haproxy.enabled {
        member_notify.push(cmd_ref(&reload_haproxy));
    }
    if spec.pgbouncer.is_some() {
        member_notify.push(cmd_ref(&reload_pgbouncer));
    }
    let mut state = certificate(
        cx,
        m,
        host,
        &spec.tls,
        (&member_cert, &member_key, &member_ca),
        os,
        &spec.tls.names,
    )?;
    // The CA bundle is a file of its own: a new bundle (a CA rotation) also restarts etcd,
    // which reads its trusted CAs only when it starts; a new certificate does not.
    state.ca_path = None;
    out.push(
        cx,
        member_cert.clone(),
        PrimitiveSpec::Certificate(state),
        member_notify.clone(),
    );
    let bundle = trust_bundle(cx, m, &spec.tls, true)?;
    let mut bundle_notify = member_notify;
    if etcd {
        bundle_notify.push(cmd_ref(&restart_etcd));
    }
    out.push(
        cx,
        member_ca.clone(),
        PrimitiveSpec::File(FileState::new(
            member_ca.clone(),
            user,
            group,
            0o644,
            bundle,
        )),
        bundle_notify,
    );

    if tls_server {
        let state = certificate(cx, m, host, &spec.tls, (&cert, &key, &ca), os, &[])?;
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
    if etcd {
        let etcd_yml = format!("{}/etcd.yml", paths.config_dir);
        let content = render(cx, "etcd.yml.tera")?;
        out.push(
            cx,
            etcd_yml.clone(),
            PrimitiveSpec::File(file(etcd_yml, 0o640, content)),
            vec![],
        );
    }
    if spec.haproxy.enabled {
        let path = format!("{}/haproxy.cfg", paths.config_dir);
        let content = render(cx, "haproxy.cfg.tera")?;
        out.push(
            cx,
            path.clone(),
            PrimitiveSpec::File(file(path, 0o640, content)),
            vec![cmd_ref(&reload_haproxy)],
        );
    }
    if spec.pgbouncer.is_some() {
        let path = format!("{}/pgbouncer.ini", paths.config_dir);
        let content = render(cx, "pgbouncer.ini.tera")?;
        out.push(
            cx,
            path.clone(),
            PrimitiveSpec::File(file(path, 0o640, content)),
            vec![cmd_ref(&reload_pgbouncer)],
        );
        let path = format!("{}/pgbouncer-userlist.txt", paths.config_dir);
        let content = pgbouncer_userlist(spec, m, cx)?;
        out.push(
            cx,
            path.clone(),
            PrimitiveSpec::File(file(path, 0o600, content)),
            vec![cmd_ref(&reload_pgbouncer)],
        );
    }
    if spec.backup.is_some() {
        let path = paths.pgbackrest_config.clone();
        let content = render(cx, "pgbackrest.conf.tera")?;
        out.push(
            cx,
            path.clone(),
            PrimitiveSpec::File(file(path, 0o640, content)),
            // pgBackRest reads its configuration at each command; only the TLS server runs on.
            if tls_server {
                vec![cmd_ref(&restart_pgbackrest)]
            } else {
                vec![]
            },
        );
    }

    // The stack.
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        env.insert(k.to_string(), EnvValue::Text(v.to_string()));
    };
    set("COMPOSE_PROJECT_NAME", &m.name);
    set("IMAGE", &spec.image(host));
    set("PG_UID", &os.uid.to_string());
    set("PG_GID", &os.gid.to_string());
    set("CONFIG_PATH", &paths.config_dir);
    set("PG_DATA_ROOT", &paths.pgdata_root);
    if etcd {
        set("ETCD_DATA_PATH", &paths.etcd_data_dir);
    }
    if spec.pgbouncer.is_some() {
        set("PGBOUNCER_PATH", &paths.pgbouncer_dir);
    }
    if spec.backup.is_some() {
        set("PGBACKREST_PATH", &paths.pgbackrest_dir);
        if !tls_server && let Some(p) = backup.as_ref().and_then(|b| b["repo_path"].as_str()) {
            set("REPO_PATH", p);
        }
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
    let compose_cmd = &spec.compose_command;
    out.push(
        cx,
        reload_patroni,
        PrimitiveSpec::Command(handler(format!("{compose_cmd} kill -s SIGHUP patroni"))),
        vec![],
    );
    if etcd {
        out.push(
            cx,
            restart_etcd,
            PrimitiveSpec::Command(handler(format!("{compose_cmd} restart etcd"))),
            vec![],
        );
    }
    // PostgreSQL rereads its certificate on a reload (pg_ctl as the server's user, in the
    // container); nothing to do while it is not running, or while initdb's single-user
    // backend holds the data directory (a first converge): it reads them when it starts.
    let pg_ctl = crate::shell::quote(&format!("{}/pg_ctl", spec.bin_dir()));
    let data = crate::shell::quote(&paths.data_dir);
    let script = format!(
        "s=$({pg_ctl} status -D {data} 2>&1) || exit 0; \
         case \"$s\" in *single-user*) exit 0;; esac; exec {pg_ctl} reload -D {data}"
    );
    out.push(
        cx,
        reload_postgres,
        PrimitiveSpec::Command(handler(format!(
            "{compose_cmd} exec -T patroni sh -c {}",
            crate::shell::quote(&script)
        ))),
        vec![],
    );
    if tls_server {
        out.push(
            cx,
            restart_pgbackrest,
            PrimitiveSpec::Command(handler(format!("{compose_cmd} restart pgbackrest"))),
            vec![],
        );
    }
    if spec.haproxy.enabled {
        out.push(
            cx,
            reload_haproxy,
            PrimitiveSpec::Command(handler(format!("{compose_cmd} kill -s SIGUSR2 haproxy"))),
            vec![],
        );
    }
    if spec.pgbouncer.is_some() {
        // PgBouncer rereads its configuration, users and TLS files on SIGHUP.
        out.push(
            cx,
            reload_pgbouncer,
            PrimitiveSpec::Command(handler(format!("{compose_cmd} kill -s SIGHUP pgbouncer"))),
            vec![],
        );
    }
    Ok(out.items)
}

/// What the templates see of PgBouncer (`null` when it is off).
fn pgbouncer_vars(spec: &PostgresClusterSpec, paths: &ClusterPaths) -> Value {
    match &spec.pgbouncer {
        None => Value::Null,
        Some(b) => json!({
            "port": b.port,
            "pool_mode": b.pool_mode,
            "max_client_conn": b.max_client_conn,
            "default_pool_size": b.default_pool_size,
            "auth_file": format!("{}/pgbouncer-userlist.txt", paths.config_dir),
            "socket_dir": paths.pgbouncer_dir,
        }),
    }
}

/// PgBouncer's `auth_file`: `"user" "password"` for each of its users, from the roles' secrets.
/// The password itself, not a SCRAM verifier: PgBouncer logs in to PostgreSQL with a stored
/// verifier only when it is byte-identical to the server's (same salt), and the server's comes
/// from the roles converge with a random salt. Clients still authenticate with SCRAM; the file
/// is 0600 and sensitive, like `patroni.yml`.
fn pgbouncer_userlist(
    spec: &PostgresClusterSpec,
    m: &Manifest,
    cx: &HostCx,
) -> Result<Content, Diagnostic> {
    let mut text = String::from("; PgBouncer users, rendered by plumb from the roles' secrets.\n");
    // The same file with each password's placeholder (what diffs show), and the secrets read.
    let mut masked = text.clone();
    let mut used: Vec<(String, String)> = Vec::new();
    for (i, r) in spec.roles.iter().enumerate() {
        let listed = match spec.pgbouncer.as_ref().and_then(|b| b.users.as_ref()) {
            Some(users) => users.contains(&r.name),
            None => true,
        };
        let Some(pw) = r.password.as_ref().filter(|_| listed) else {
            continue;
        };
        let field = format!("roles[{i}].password.secret");
        let value = cx
            .secret(&pw.secret)
            .map_err(|e| m.error(&field, e.to_string()))?;
        if value.expose().contains(['\n', '\r', '\0']) {
            return Err(m.error(
                &field,
                format!(
                    "secret `{}` holds a line break or NUL, which PgBouncer's userlist cannot carry",
                    pw.secret
                ),
            ));
        }
        let user = r.name.replace('"', "\"\"");
        text.push_str(&format!(
            "\"{user}\" \"{}\"\n",
            value.expose().replace('"', "\"\"")
        ));
        masked.push_str(&format!(
            "\"{user}\" \"{}\"\n",
            crate::secrets::placeholder(&pw.secret)
        ));
        used.push((pw.secret.clone(), value.expose().to_string()));
    }
    Ok(Content::sensitive_masked(text.into_bytes(), masked, &used))
}

/// What the templates see of the Consul settings on this member (`null` with etcd): the
/// agent's URL (the host var `consul_address` over the manifest's address), the name of the
/// token's secret, TLS and the files to mount into Patroni's container.
fn consul_vars(spec: &PostgresClusterSpec, m: &Manifest, host: &Host) -> Result<Value, Diagnostic> {
    let (Dcs::Consul, Some(c)) = (spec.dcs, &spec.consul) else {
        return Ok(Value::Null);
    };
    let address = match host.vars.get("consul_address") {
        None => c.address.clone(),
        Some(Value::String(a)) => a.clone(),
        Some(other) => {
            return Err(m.error(
                "consul.address",
                format!(
                    "host var `consul_address` of `{}` is {other}, not `host:port`",
                    host.name
                ),
            ));
        }
    };
    let scheme = match c.scheme {
        ConsulScheme::Https => "https",
        ConsulScheme::Http => "http",
    };
    let mounts: Vec<String> = c.files().iter().map(|f| format!("{f}:{f}:ro")).collect();
    Ok(json!({
        "url": format!("{scheme}://{address}"),
        "token_secret": c.token.secret,
        "verify": c.verify,
        "cacert": c.cacert,
        "cert": c.cert,
        "key": c.key,
        "dc": c.dc,
        "consistency": c.consistency,
        "register_service": c.register_service,
        "mounts": mounts,
    }))
}
