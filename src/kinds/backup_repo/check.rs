//! Validation of a `BackupRepo`: its name, account, TLS, paths, retention and schedules.

use super::super::cluster::{check_common, check_project_name, repo_host_count, selected_hosts};
use super::{BackupRepoSpec, valid_calendar};
use crate::kinds::CheckCx;

/// Everything there is to check about a repository.
pub(super) fn check(spec: &BackupRepoSpec, cx: &mut CheckCx) {
    check_project_name(cx, "a compose project name");
    check_common(
        cx,
        &spec.os_user,
        spec.tls.as_ref(),
        &spec.image,
        &spec.compose_command,
    );
    match (spec.local, &spec.tls) {
        (true, Some(_)) => cx.error(
            "tls",
            "a local repository has no TLS server: `tls` does not apply",
            Some("remove `tls`, or drop `local` for a repository host".into()),
        ),
        (false, None) => cx.error(
            "tls",
            "a repository host needs `tls` (its members push WAL to it over TLS)",
            Some(
                "add `tls: { ca: NAME }` naming the clusters' CA, or `local: true` for the \
                 backups of a one-member cluster on its own host"
                    .into(),
            ),
        ),
        _ => {}
    }
    if spec.local {
        let clusters = super::clusters_naming(
            &cx.manifest.name,
            cx.repo.manifests.values().copied(),
            cx.repo.inventory,
        );
        if clusters.len() > 1 {
            let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
            cx.error(
                "local",
                format!(
                    "a local repository holds one cluster's backups; {} name it",
                    names.join(", ")
                ),
                Some("declare one local BackupRepo per cluster".into()),
            );
        }
    }
    let hosts = selected_hosts(cx.manifest, cx.repo.inventory);
    if hosts.len() != 1 {
        let d = repo_host_count(cx.manifest, &hosts);
        cx.diags.push(d);
    }
    cx.abs_path("path", &spec.path, &[]);
    for (field, p) in [("base_dir", &spec.base_dir), ("stack_dir", &spec.stack_dir)] {
        if let Some(p) = p {
            cx.abs_path(field, p, &[]);
        }
    }
    if spec.retention_full == 0 {
        cx.error(
            "retention_full",
            "retention_full must keep at least one full backup",
            None,
        );
    }
    if spec.retention_diff == Some(0) {
        cx.error(
            "retention_diff",
            "retention_diff must keep at least one backup (or be omitted)",
            None,
        );
    }
    for (t, v) in spec.schedules() {
        if !valid_calendar(v) {
            cx.error(
                &format!("schedule.{t}"),
                format!(
                    "`{}` is not a systemd calendar expression",
                    v.escape_debug()
                ),
                Some("e.g. `hourly`, `daily`, `weekly`, `Sun *-*-* 01:00:00`".into()),
            );
        }
    }
    if spec.port == 0 {
        cx.error("port", "port 0 is not a port", None);
    }
}
