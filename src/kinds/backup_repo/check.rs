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
        &spec.tls,
        &spec.image,
        &spec.compose_command,
    );
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
