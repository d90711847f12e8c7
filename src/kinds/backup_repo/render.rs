//! The expansion of a `BackupRepo` on its host into primitives.

use super::super::cluster::*;
use super::*;
use crate::diag::Diagnostic;
use crate::kinds::{Desired, HostCx, Manifest};

/// Expands the repository into the desired state of its host.
pub(super) fn render(
    spec: &BackupRepoSpec,
    m: &Manifest,
    cx: &mut HostCx,
) -> Result<Vec<Desired>, Diagnostic> {
    cx.set_via(Some(format!("BackupRepo/{}", m.name)));
    let host = cx.host();
    let os = &spec.os_user;
    let user = os.name.as_str();
    let paths = spec.paths(m);
    let (cert, key, ca) = paths.cert_files(&host.name);
    let clusters = spec.clusters(m, cx);
    let stack_unit = format!("{}-stack.service", m.name);
    let compose_cmd = &spec.compose_command;

    let mut clients: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in &clusters {
        for mem in &c.members {
            clients
                .entry(mem.name.clone())
                .or_default()
                .push(c.name.clone());
        }
    }
    let repo = json!({
        "name": m.name,
        "local": spec.local,
        "host": Member::of(host),
        "path": spec.path,
        "retention_full": spec.retention_full,
        "retention_diff": spec.retention_diff,
        "port": spec.port,
        "os_user": os,
        "image": image_for(&spec.image, host, 15),
        "compose_command": compose_cmd,
        "stack_unit": stack_unit,
        "paths": paths,
        "tls": { "cert": cert, "key": key, "ca": ca },
        "clients": clients.iter().map(|(cn, s)| json!({ "cn": cn, "stanzas": s })).collect::<Vec<_>>(),
        "clusters": clusters.iter().map(|c| json!({
            "stanza": c.name,
            "members": c.members,
            "data_dir": c.paths.data_dir,
            "socket_dir": c.paths.socket_dir,
            "postgres_port": c.ports.postgres,
            "pgbackrest_port": c.ports.pgbackrest,
            "superuser": c.superuser,
        })).collect::<Vec<_>>(),
    });
    let resource = serde_json::to_value(spec).unwrap_or(Value::Null);
    let render = |cx: &mut HostCx, name: &str, extra: Option<Value>| {
        let mut vars = Map::new();
        vars.insert("repo".into(), repo.clone());
        if let Some(b) = extra {
            vars.insert("backup".into(), b);
        }
        cx.render_template(&format!("backup-repo/{name}"), &resource, &vars)
            .map_err(|f| f.into_diagnostic(m, ""))
    };

    let mut out = Expansion::new(m);
    out.account(cx, os);
    if spec.local {
        render_local(spec, m, cx, &clusters, &render, &mut out)?;
        return Ok(out.items);
    }
    let restart = format!("{}-restart-server", m.name);
    let restart_ref = ResourceRef {
        kind: "Command".into(),
        name: restart.clone(),
    };
    let dir = |p: &str, owner: &str, mode: u32| DirectorySpec {
        path: p.to_string(),
        owner: owner.to_string(),
        group: owner.to_string(),
        mode: FileMode(mode),
        state: Presence::Present,
    };
    for d in [
        dir(&paths.base, user, 0o750),
        dir(&paths.pgbackrest_dir, user, 0o750),
        dir(&paths.pgbackrest_certs, user, 0o750),
        dir(&paths.pgbackrest_log, user, 0o750),
        dir(&spec.path, user, 0o750),
        dir(&paths.stack_dir, "root", 0o755),
    ] {
        out.push(cx, d.path.clone(), PrimitiveSpec::Directory(d), vec![]);
    }
    let Some(tls) = &spec.tls else {
        return Err(m.error("tls", "a repository host needs `tls`"));
    };
    let state = certificate(cx, m, host, tls, (&cert, &key, &ca), os, &[])?;
    out.push(
        cx,
        cert.clone(),
        PrimitiveSpec::Certificate(state),
        vec![restart_ref.clone()],
    );
    let content = render(cx, "pgbackrest.conf.tera", None)?;
    out.push(
        cx,
        paths.pgbackrest_config.clone(),
        PrimitiveSpec::File(FileState::new(
            paths.pgbackrest_config.clone(),
            user,
            user,
            0o640,
            content,
        )),
        vec![restart_ref],
    );

    let mut env = BTreeMap::new();
    for (k, v) in [
        ("COMPOSE_PROJECT_NAME", m.name.clone()),
        ("IMAGE", image_for(&spec.image, host, 15)),
        ("PG_UID", os.uid.to_string()),
        ("PG_GID", os.gid.to_string()),
        ("PGBACKREST_PATH", paths.pgbackrest_dir.clone()),
        ("PGBACKREST_CONFIG", paths.pgbackrest_config.clone()),
        ("REPO_PATH", spec.path.clone()),
    ] {
        env.insert(k.to_string(), EnvValue::Text(v));
    }
    let compose: Content = render(cx, "docker-compose.yml.tera", None)?;
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
    let content = render(cx, "stack.service.tera", None)?;
    out.push(
        cx,
        stack_unit.clone(),
        PrimitiveSpec::SystemdUnit(UnitState::new(&stack_unit, content, Some(true), None)),
        vec![],
    );

    // pgBackRest runs in the repository's own container.
    let target = ExecTarget {
        workdir: paths.stack_dir.clone(),
        service: "pgbackrest",
        config: paths.pgbackrest_config.clone(),
        stack_unit: stack_unit.clone(),
    };
    for c in &clusters {
        stanza(spec, m, cx, c, &target, &ca, &render, &mut out)?;
    }
    out.push(
        cx,
        restart,
        PrimitiveSpec::Command(CommandSpec {
            run: format!("{compose_cmd} restart pgbackrest"),
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
        }),
        vec![],
    );
    Ok(out.items)
}

/// Where a backup of a cluster runs pgBackRest: a service of a compose stack, with its
/// configuration file (the repository's TLS server container, or for a local repository the
/// cluster's own Patroni container).
struct ExecTarget {
    workdir: String,
    service: &'static str,
    config: String,
    stack_unit: String,
}

/// A oneshot service per backup type of cluster `c` (`plumb pg backup` starts any of them;
/// systemd never runs one twice at once), and a timer, enabled and active, for each scheduled
/// type.
fn backup_units<R>(
    spec: &BackupRepoSpec,
    m: &Manifest,
    cx: &mut HostCx,
    c: &ClusterModel,
    target: &ExecTarget,
    render: &R,
    out: &mut Expansion,
) -> Result<(), Diagnostic>
where
    R: Fn(&mut HostCx, &str, Option<Value>) -> Result<Content, Diagnostic>,
{
    let schedules = spec.schedules();
    for (i, t) in TYPES.iter().enumerate() {
        let service = super::live::unit_name(&m.name, &c.name, t);
        let when = schedules.iter().find(|(k, _)| k == t).map(|(_, w)| *w);
        let timer = format!("{}.timer", service.trim_end_matches(".service"));
        let after: Vec<String> = TYPES[..i]
            .iter()
            .map(|e| super::live::unit_name(&m.name, &c.name, e))
            .collect();
        let b = json!({
            "kind": t, "stanza": c.name, "service": service,
            "timer": when.map(|_| timer.clone()),
            "schedule": when, "after": after,
            "workdir": target.workdir, "container": target.service,
            "config": target.config, "stack_unit": target.stack_unit,
        });
        let content = render(cx, "backup.service.tera", Some(b.clone()))?;
        out.push(
            cx,
            service.clone(),
            PrimitiveSpec::SystemdUnit(UnitState::new(&service, content, None, None)),
            vec![],
        );
        if when.is_some() {
            let content = render(cx, "backup.timer.tera", Some(b))?;
            out.push(
                cx,
                timer.clone(),
                PrimitiveSpec::SystemdUnit(UnitState::new(&timer, content, Some(true), Some(true))),
                vec![],
            );
        }
    }
    Ok(())
}

/// Everything of cluster `c`'s stanza: its backup units and timers, and its creation once some
/// member is the primary (checked with the CA bundle at `ca`).
#[allow(clippy::too_many_arguments)]
fn stanza<R>(
    spec: &BackupRepoSpec,
    m: &Manifest,
    cx: &mut HostCx,
    c: &ClusterModel,
    target: &ExecTarget,
    ca: &str,
    render: &R,
    out: &mut Expansion,
) -> Result<(), Diagnostic>
where
    R: Fn(&mut HostCx, &str, Option<Value>) -> Result<Content, Diagnostic>,
{
    backup_units(spec, m, cx, c, target, render, out)?;
    let create = stanza_create(spec, &c.name, target, primary_check(c, ca));
    out.push(
        cx,
        format!("{}-stanza-create-{}", m.name, c.name),
        PrimitiveSpec::Command(create),
        vec![],
    );
    Ok(())
}

/// A `stanza-create` run in `target`'s container once some member is the running primary
/// (`primary` is that check), skipped when the stanza's files exist.
fn stanza_create(
    spec: &BackupRepoSpec,
    stanza: &str,
    target: &ExecTarget,
    primary: String,
) -> CommandSpec {
    CommandSpec {
        // pgBackRest needs the primary running when it creates the stanza; a roll of the
        // members (a switchover) can demote it between the wait below and the command, so the
        // command tries again, bounded (10 tries, 15 s apart, within the command's timeout).
        run: format!(
            "i=0; until {} exec -T {} pgbackrest --config={} --stanza={stanza} stanza-create; do \
             i=$((i+1)); if [ $i -ge 10 ]; then exit 1; fi; sleep 15; done",
            spec.compose_command, target.service, target.config
        ),
        creates: None,
        unless: Some(format!(
            "test -f {0}/backup/{stanza}/backup.info && test -f {0}/archive/{stanza}/archive.info",
            spec.path
        )),
        onlyif: None,
        refresh_only: false,
        user: None,
        cwd: Some(target.workdir.clone()),
        env: BTreeMap::new(),
        timeout: 600,
        // The members converge in parallel with this host (or, local, in the same run on
        // it): wait, bounded, until one of them is the running primary.
        wait_for: Some(primary),
        wait_timeout: 300,
    }
}

/// A local repository on the host of its cluster's only member: the repository folder, the
/// backup units running pgBackRest in the cluster's Patroni container (which mounts the folder
/// and whose `pgbackrest.conf` names it), and the stanza. No TLS server, no certificate.
fn render_local<R>(
    spec: &BackupRepoSpec,
    m: &Manifest,
    cx: &mut HostCx,
    clusters: &[ClusterModel],
    render: &R,
    out: &mut Expansion,
) -> Result<(), Diagnostic>
where
    R: Fn(&mut HostCx, &str, Option<Value>) -> Result<Content, Diagnostic>,
{
    let host = cx.host().name.clone();
    let user = spec.os_user.name.clone();
    let d = DirectorySpec {
        path: spec.path.clone(),
        owner: user.clone(),
        group: user,
        mode: FileMode(0o750),
        state: Presence::Present,
    };
    out.push(cx, d.path.clone(), PrimitiveSpec::Directory(d), vec![]);
    for c in clusters {
        let target = ExecTarget {
            workdir: c.paths.stack_dir.clone(),
            service: "patroni",
            config: c.paths.pgbackrest_config.clone(),
            stack_unit: format!("{}-stack.service", c.name),
        };
        // The primary check reads the member's own REST API with the cluster's CA bundle.
        let (_, _, ca) = c.paths.member_cert_files(&host);
        stanza(spec, m, cx, c, &target, &ca, render, out)?;
    }
    Ok(())
}
