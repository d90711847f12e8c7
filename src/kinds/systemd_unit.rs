//! `SystemdUnit`: a unit file (service, timer, ...) and whether it is enabled and active.
//! plumb runs `systemctl daemon-reload` once per host when any unit file changed.

use super::fs::converge_file;
use super::{
    CheckCx, Kind, Primitive, PrimitiveSpec, check_content, content_source, desired, render_content,
};
use crate::diag::Diagnostic;
use crate::kinds::Desired;
use crate::kinds::HostCx;
use crate::kinds::Manifest;
use crate::model::desired::Content;
use crate::model::values::FileMode;
use crate::model::values::Presence;
use crate::shell::quote;
use crate::vocab::cx::PlanCx;
use crate::vocab::records::{PathState, Records, parse_path};
use crate::vocab::state::Managed;
use crate::vocab::step::{Action, Change, Planned, Step};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a unit does when a resource notifies it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitRefresh {
    /// `systemctl restart`.
    #[default]
    Restart,
    /// `systemctl reload`.
    Reload,
    /// `systemctl try-restart` (only if running).
    TryRestart,
}

/// A unit as declared; its name (`rds-backup.timer`) is the resource name.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdUnitSpec {
    /// Literal unit file. Omit all three sources to manage a unit a package installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tera template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Repo file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Template variables.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub vars: Map<String, Value>,
    /// Where the unit file goes (default /etc/systemd/system/NAME).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `systemctl enable` / `disable`; unmanaged when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Running (`start`) or stopped (`stop`); unmanaged when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// What to do when notified.
    #[serde(default)]
    pub on_notify: UnitRefresh,
    /// Present or absent (absent: stopped, disabled, file removed).
    #[serde(default)]
    pub state: Presence,
}

/// A unit as it should be on a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnitState {
    /// Unit name.
    pub unit: String,
    /// Unit file path.
    pub path: String,
    /// Unit file content, if plumb manages the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Enabled state, if managed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Active state, if managed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Refresh action.
    pub on_notify: UnitRefresh,
    /// Present or absent.
    pub state: Presence,
}

impl UnitState {
    /// A managed unit file, enabled and active as given.
    pub fn new(unit: &str, content: Content, enabled: Option<bool>, active: Option<bool>) -> Self {
        UnitState {
            unit: unit.to_string(),
            path: format!("/etc/systemd/system/{unit}"),
            content: Some(content),
            enabled,
            active,
            on_notify: UnitRefresh::Restart,
            state: Presence::Present,
        }
    }
}

/// True for names systemd accepts as unit names with a known suffix.
pub fn is_valid_unit_name(name: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        ".service",
        ".timer",
        ".socket",
        ".target",
        ".mount",
        ".path",
        ".slice",
        ".automount",
    ];
    // A leading `-` would read as an option to systemctl; systemd caps names at 255 bytes.
    !name.starts_with(['-', '.', '@'])
        && name.len() <= 255
        && SUFFIXES
            .iter()
            .any(|s| name.len() > s.len() && name.ends_with(s))
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'@' | b'-' | b'\\')
        })
}

/// `systemctl VERB -- UNIT`, after the host's `daemon-reload`.
fn systemctl(verb: &str, unit: &str) -> Step {
    Step::Exec {
        argv: vec!["systemctl".into(), verb.into(), "--".into(), unit.into()],
        after_reload: true,
    }
}

/// `is-enabled` answers that satisfy `enabled: true`.
fn counts_as_enabled(s: &str) -> bool {
    matches!(
        s,
        "enabled" | "enabled-runtime" | "static" | "indirect" | "alias" | "generated"
    )
}

impl Kind for SystemdUnitSpec {
    fn default_name(&self) -> Option<String> {
        None
    }

    fn check(&self, cx: &mut CheckCx) {
        let name = cx.manifest.name.clone();
        if !is_valid_unit_name(&name) {
            cx.error(
                "name",
                format!("`{name}` is not a systemd unit name"),
                Some(
                    "unit names use letters, digits and `:_.@-\\`, do not start with `-`, `.` or `@`, and end in .service, .timer, .socket, .target, .mount, .path, .slice or .automount"
                        .into(),
                ),
            );
        }
        if let Some(p) = &self.path {
            cx.abs_path(
                "path",
                p,
                &["/etc/systemd/system", "/usr/local/lib/systemd/system"],
            );
        }
        check_content(cx, &self.content, &self.template, &self.source, false);
    }

    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        let content = match content_source(&self.content, &self.template, &self.source) {
            Ok(src) if self.state == Presence::Present => {
                let resource = serde_json::to_value(self).unwrap_or(Value::Null);
                Some(render_content(cx, m, src, &resource, &self.vars)?)
            }
            _ => None,
        };
        let state = UnitState {
            unit: m.name.clone(),
            path: self
                .path
                .clone()
                .unwrap_or_else(|| format!("/etc/systemd/system/{}", m.name)),
            content,
            enabled: self.enabled,
            active: self.active,
            on_notify: self.on_notify,
            state: self.state,
        };
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::SystemdUnit(state),
        )])
    }
}

impl Primitive for UnitState {
    fn shell() -> &'static str {
        include_str!("systemd_unit.sh")
    }

    fn facts() -> (&'static str, &'static [&'static str]) {
        ("pl_systemd\n", &["systemd"])
    }

    /// Stopped, disabled, its file removed (when plumb wrote one) and systemd reloaded.
    fn prune(m: &Managed, _cx: &PlanCx) -> Vec<Step> {
        let unit = m.unit.clone().unwrap_or_else(|| m.name.clone());
        let mut v = vec![systemctl("stop", &unit), systemctl("disable", &unit)];
        v.extend(super::fs::remove_paths(m));
        if !m.paths.is_empty() {
            v.push(Step::DaemonReload);
        }
        v
    }

    fn remember(&self, m: &mut Managed) {
        m.unit = Some(self.unit.clone());
    }

    fn contents(&self) -> Vec<&Content> {
        self.content.iter().collect()
    }

    fn paths(&self) -> Vec<String> {
        if self.content.is_some() || self.state == Presence::Absent {
            vec![self.path.clone()]
        } else {
            Vec::new()
        }
    }

    fn probe(&self, index: usize, out: &mut String) {
        out.push_str(&format!(
            "pl_path {index}.file {}\npl_unit_state {index} {}\n",
            quote(&self.path),
            quote(&self.unit)
        ));
    }

    fn cas_keys(&self) -> &'static [&'static str] {
        &["file", "enabled"]
    }

    fn cas_probe(&self, index: usize, out: &mut String) {
        out.push_str(&format!(
            "pl_path {index}.file {}\npl_unit_enabled {index} {}\n",
            quote(&self.path),
            quote(&self.unit)
        ));
    }

    fn plan(&self, _index: usize, actual: Records, cx: &PlanCx) -> Planned {
        let mut p = Planned::default();
        let file = parse_path(actual.get("file"));
        let enabled = actual
            .get("enabled")
            .and_then(|f| f.first())
            .cloned()
            .unwrap_or_default();
        let active = actual
            .get("active")
            .and_then(|f| f.first())
            .cloned()
            .unwrap_or_default();
        let no_systemd =
            cx.facts.get("systemd").map(String::as_str) == Some("no") || enabled == "no-systemd";
        if self.state == Presence::Absent {
            if active == "active" {
                p.steps.push(systemctl("stop", &self.unit));
            }
            if enabled == "enabled" {
                p.steps.push(systemctl("disable", &self.unit));
            }
            if matches!(file, PathState::File(_) | PathState::Link(_)) {
                p.steps.push(Step::Remove {
                    path: self.path.clone(),
                });
                p.steps.push(Step::DaemonReload);
            }
            if !p.steps.is_empty() {
                p.action = Some(Action::Delete);
                p.changes
                    .push(Change::new("unit", Some(self.unit.clone()), None));
            }
            return p;
        }
        if no_systemd && (self.enabled.is_some() || self.active.is_some()) {
            p.error = Some("systemd is not running on this host; cannot manage unit state".into());
            return p;
        }
        let mut content_changed = false;
        if let Some(content) = &self.content {
            if file == PathState::Absent {
                p.action = Some(Action::Create);
            }
            let before = p.steps.len();
            converge_file(
                &self.path,
                &file,
                content,
                "root",
                "root",
                FileMode(0o644),
                &mut p,
            );
            content_changed = p.steps[before..]
                .iter()
                .any(|s| matches!(s, Step::WriteFile { .. }));
            if p.steps.len() > before {
                p.steps.push(Step::DaemonReload);
            }
        } else if matches!(file, PathState::Absent) && !no_systemd && enabled.is_empty() {
            p.error = Some(format!(
                "unit `{}` does not exist on the host and the manifest gives no content",
                self.unit
            ));
            return p;
        }
        match self.enabled {
            Some(true) if !counts_as_enabled(&enabled) => {
                p.changes.push(Change::new(
                    "enabled",
                    Some(enabled.clone()),
                    Some("enabled".into()),
                ));
                p.steps.push(systemctl("enable", &self.unit));
            }
            Some(false) if enabled == "enabled" => {
                p.changes.push(Change::new(
                    "enabled",
                    Some(enabled.clone()),
                    Some("disabled".into()),
                ));
                p.steps.push(systemctl("disable", &self.unit));
            }
            _ => {}
        }
        match self.active {
            Some(true) if active != "active" => {
                p.changes.push(Change::new(
                    "active",
                    Some(active.clone()),
                    Some("active".into()),
                ));
                p.steps.push(systemctl("start", &self.unit));
            }
            Some(true) if content_changed => {
                p.changes.push(Change::new(
                    "active",
                    Some("active".into()),
                    Some("restarted (unit file changed)".into()),
                ));
                p.steps.push(systemctl("restart", &self.unit));
            }
            Some(false) if active == "active" => {
                p.changes.push(Change::new(
                    "active",
                    Some(active.clone()),
                    Some("inactive".into()),
                ));
                p.steps.push(systemctl("stop", &self.unit));
            }
            _ => {}
        }
        p
    }

    fn refresh(&self, _cx: &PlanCx) -> Vec<Step> {
        let verb = match self.on_notify {
            UnitRefresh::Restart => "restart",
            UnitRefresh::Reload => "reload",
            UnitRefresh::TryRestart => "try-restart",
        };
        vec![systemctl(verb, &self.unit)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{OTHER_SHA, dir_rec, file_rec, managed, plan_cx, records};

    const UNIT: &str = "[Service]\nExecStart=/usr/bin/app\n";

    fn want() -> UnitState {
        UnitState::new("app.service", Content::plain(UNIT), Some(true), Some(true))
    }

    /// What the probe prints for a unit: its file (`pl_path`), then `pl_unit_state`.
    fn body(file: &str, enabled: &str, active: &str) -> String {
        format!("0.file\t{file}\n0.enabled\t{enabled}\n0.active\t{active}\n")
    }

    fn in_sync_file() -> String {
        file_rec(
            "644",
            "root",
            "root",
            UNIT.len() as u64,
            &Content::plain(UNIT).sha256(),
        )
    }

    fn plan_with(u: &UnitState, body: &str, cx: &PlanCx) -> Planned {
        u.plan(0, records(body).of(0), cx)
    }

    fn plan(u: &UnitState, body: &str) -> Planned {
        plan_with(u, body, &plan_cx())
    }

    fn after_reload(verb: &str) -> Step {
        systemctl(verb, "app.service")
    }

    #[test]
    fn a_unit_in_sync_plans_nothing() {
        let p = plan(&want(), &body(&in_sync_file(), "enabled", "active"));
        assert!(
            p.steps.is_empty() && p.changes.is_empty() && p.error.is_none(),
            "{p:?}"
        );
        // A static unit counts as enabled.
        assert!(
            plan(&want(), &body(&in_sync_file(), "static", "active"))
                .steps
                .is_empty()
        );
    }

    #[test]
    fn a_new_unit_is_written_reloaded_enabled_and_started() {
        let p = plan(&want(), &body("absent", "", "inactive"));
        assert_eq!(p.action, Some(Action::Create));
        assert!(matches!(p.steps[0], Step::WriteFile { .. }));
        assert_eq!(
            p.steps[1..],
            [
                Step::DaemonReload,
                after_reload("enable"),
                after_reload("start")
            ]
        );
        assert!(p.steps[2].after_reload());
    }

    #[test]
    fn a_changed_unit_file_restarts_a_running_unit() {
        let file = file_rec("644", "root", "root", 10, OTHER_SHA);
        let p = plan(&want(), &body(&file, "enabled", "active"));
        assert!(matches!(p.steps[0], Step::WriteFile { .. }));
        assert_eq!(p.steps[1..], [Step::DaemonReload, after_reload("restart")]);
        // Only the mode differs: fixed, reloaded, not restarted.
        let file = file_rec("600", "root", "root", 10, &Content::plain(UNIT).sha256());
        let p = plan(&want(), &body(&file, "enabled", "active"));
        assert!(matches!(p.steps[0], Step::SetMeta { .. }));
        assert_eq!(p.steps[1..], [Step::DaemonReload]);
    }

    #[test]
    fn enabled_and_active_follow_the_manifest() {
        let p = plan(&want(), &body(&in_sync_file(), "disabled", "failed"));
        assert_eq!(p.steps, [after_reload("enable"), after_reload("start")]);
        let mut off = want();
        off.enabled = Some(false);
        off.active = Some(false);
        let p = plan(&off, &body(&in_sync_file(), "enabled", "active"));
        assert_eq!(p.steps, [after_reload("disable"), after_reload("stop")]);
    }

    #[test]
    fn a_unit_without_content_must_exist() {
        let mut u = want();
        u.content = None;
        let p = plan(&u, &body("absent", "", "inactive"));
        assert!(p.steps.is_empty());
        assert!(p.error.unwrap().contains("does not exist"));
        // A unit a package installed: only its state is managed.
        let p = plan(&u, &body("absent", "disabled", "inactive"));
        assert_eq!(p.steps, [after_reload("enable"), after_reload("start")]);
    }

    #[test]
    fn a_host_without_systemd_is_an_error() {
        let mut cx = plan_cx();
        cx.facts.insert("systemd".into(), "no".into());
        let p = plan_with(&want(), &body("absent", "no-systemd", "no-systemd"), &cx);
        assert!(p.steps.is_empty());
        assert!(p.error.unwrap().contains("systemd is not running"));
    }

    #[test]
    fn an_absent_unit_is_stopped_disabled_and_removed() {
        let mut u = want();
        u.state = Presence::Absent;
        u.content = None;
        let p = plan(&u, &body(&in_sync_file(), "enabled", "active"));
        assert_eq!(p.action, Some(Action::Delete));
        assert_eq!(
            p.steps,
            [
                after_reload("stop"),
                after_reload("disable"),
                Step::Remove {
                    path: "/etc/systemd/system/app.service".into()
                },
                Step::DaemonReload,
            ]
        );
        assert!(plan(&u, &body("absent", "", "inactive")).steps.is_empty());
    }

    #[test]
    fn a_unit_that_left_the_repo_is_stopped_disabled_and_removed() {
        let mut m = managed(
            "SystemdUnit",
            "app.service",
            &["/etc/systemd/system/app.service"],
        );
        want().remember(&mut m);
        assert_eq!(m.unit.as_deref(), Some("app.service"));
        assert_eq!(
            UnitState::prune(&m, &plan_cx()),
            [
                after_reload("stop"),
                after_reload("disable"),
                Step::Remove {
                    path: "/etc/systemd/system/app.service".into()
                },
                Step::DaemonReload,
            ]
        );
        // A unit plumb wrote no file for: nothing to remove nor reload.
        m.paths.clear();
        assert_eq!(UnitState::prune(&m, &plan_cx()).len(), 2);
    }

    #[test]
    fn notified_it_does_what_on_notify_says() {
        let mut u = want();
        assert_eq!(u.refresh(&plan_cx()), [after_reload("restart")]);
        u.on_notify = UnitRefresh::Reload;
        assert_eq!(u.refresh(&plan_cx()), [after_reload("reload")]);
    }

    #[test]
    fn hostile_records_are_errors_never_steps() {
        for file in [
            dir_rec("755", "root", "root"),
            "other".to_string(),
            "link\t%%%".to_string(),
            format!("file\t644 0 0 root root\t{OTHER_SHA}"),
        ] {
            let p = plan(&want(), &body(&file, "enabled", "active"));
            assert!(p.error.is_some(), "{file}: {p:?}");
        }
        // The file record missing altogether (the probe stopped early).
        let p = plan(&want(), "0.enabled\tenabled\n0.active\tactive\n");
        assert!(p.error.is_some(), "{p:?}");
    }

    #[test]
    fn unit_names_have_a_known_suffix_and_never_look_like_options() {
        for ok in [
            "app.service",
            "rds-backup.timer",
            "getty@tty1.service",
            "dev-disk-by\\x2dlabel.mount",
        ] {
            assert!(is_valid_unit_name(ok), "{ok}");
        }
        for bad in [
            "-x.service",
            "--now.service",
            ".service",
            "app",
            "app.conf",
            "a b.service",
            "a\n.service",
            "a/b.service",
            "@.service",
        ] {
            assert!(!is_valid_unit_name(bad), "{bad:?}");
        }
        assert!(!is_valid_unit_name(&format!("{}.service", "a".repeat(250))));
    }
}
