//! `Directory`: a folder with owner, group and mode.

use super::{CheckCx, Kind, Primitive, PrimitiveSpec, desired};
use crate::diag::Diagnostic;
use crate::kinds::Desired;
use crate::kinds::HostCx;
use crate::kinds::Manifest;
use crate::model::desired::Content;
use crate::model::values::{FileMode, Presence};
use crate::shell::quote;
use crate::vocab::cx::PlanCx;
use crate::vocab::records::{PathState, Records, parse_path};
use crate::vocab::state::Managed;
use crate::vocab::step::{Action, Change, Planned, Step};
use serde::{Deserialize, Serialize};

/// A directory; parents are created as needed (owned by root, mode 0755).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySpec {
    /// Absolute path.
    pub path: String,
    /// Owner (name or uid).
    #[serde(default = "root")]
    pub owner: String,
    /// Group (name or gid).
    #[serde(default = "root")]
    pub group: String,
    /// Permission mode.
    #[serde(default = "dir_mode")]
    pub mode: FileMode,
    /// Present or absent (an absent directory is removed only if empty).
    #[serde(default)]
    pub state: Presence,
}

pub(crate) fn root() -> String {
    "root".into()
}

fn dir_mode() -> FileMode {
    FileMode(0o755)
}

impl Kind for DirectorySpec {
    fn default_name(&self) -> Option<String> {
        Some(self.path.clone())
    }

    fn check(&self, cx: &mut CheckCx) {
        cx.abs_path("path", &self.path, &[]);
        cx.account("owner", &self.owner);
        cx.account("group", &self.group);
    }

    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::Directory(self.clone()),
        )])
    }
}

impl Primitive for DirectorySpec {
    fn removed_as_owner() -> bool {
        true
    }

    fn shell() -> &'static str {
        ""
    }

    fn prune(m: &Managed, _cx: &PlanCx) -> Vec<Step> {
        // Removed only when empty: what others put there stays.
        m.paths
            .iter()
            .map(|p| Step::RemoveDir { path: p.clone() })
            .collect()
    }

    fn remember(&self, m: &mut Managed) {
        m.is_dir = true;
    }

    fn contents(&self) -> Vec<&Content> {
        Vec::new()
    }

    fn paths(&self) -> Vec<String> {
        vec![self.path.clone()]
    }

    fn owner(&self) -> Option<&str> {
        Some(&self.owner)
    }

    fn probe(&self, index: usize, out: &mut String) {
        out.push_str(&format!("pl_path {index} {}\n", quote(&self.path)));
    }

    fn plan(&self, _index: usize, actual: Records, _cx: &PlanCx) -> Planned {
        let mut p = Planned::default();
        let state = parse_path(actual.get(""));
        match (self.state, state) {
            (Presence::Present, PathState::Absent) => {
                p.action = Some(Action::Create);
                p.changes.push(Change::new(
                    "directory",
                    None,
                    Some(format!(
                        "{} {}:{} {}",
                        self.path, self.owner, self.group, self.mode
                    )),
                ));
                p.steps.push(Step::Mkdir {
                    path: self.path.clone(),
                    owner: self.owner.clone(),
                    group: self.group.clone(),
                    mode: self.mode,
                });
            }
            (Presence::Present, PathState::Dir(m)) => {
                let owner = (!m.owner_is(&self.owner)).then(|| self.owner.clone());
                let group = (!m.group_is(&self.group)).then(|| self.group.clone());
                let mode = (m.mode != self.mode.0).then_some(self.mode);
                if let Some(o) = &owner {
                    p.changes
                        .push(Change::new("owner", Some(m.owner.clone()), Some(o.clone())));
                }
                if let Some(g) = &group {
                    p.changes
                        .push(Change::new("group", Some(m.group.clone()), Some(g.clone())));
                }
                if let Some(md) = mode {
                    p.changes.push(Change::new(
                        "mode",
                        Some(FileMode(m.mode).to_string()),
                        Some(md.to_string()),
                    ));
                }
                if owner.is_some() || group.is_some() || mode.is_some() {
                    p.steps.push(Step::SetMeta {
                        path: self.path.clone(),
                        owner,
                        group,
                        mode,
                    });
                }
            }
            (Presence::Present, PathState::Error(e)) => {
                p.error = Some(format!("cannot read `{}`: {e}", self.path))
            }
            (Presence::Present, other) => {
                p.error = Some(format!(
                    "`{}` exists on the host but is not a directory ({}); plumb will not replace it",
                    self.path,
                    match other {
                        PathState::File(_) => "a file",
                        PathState::Link(_) => "a symlink",
                        _ => "a special file",
                    }
                ));
            }
            (Presence::Absent, PathState::Dir(_)) => {
                p.action = Some(Action::Delete);
                p.changes
                    .push(Change::new("directory", Some(self.path.clone()), None));
                p.steps.push(Step::RemoveDir {
                    path: self.path.clone(),
                });
            }
            (Presence::Absent, _) => {}
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{OTHER_SHA, b64, dir_rec, file_rec, managed, plan_cx, records};

    fn want() -> DirectorySpec {
        DirectorySpec {
            path: "/srv/app".into(),
            owner: "app".into(),
            group: "app".into(),
            mode: FileMode(0o750),
            state: Presence::Present,
        }
    }

    fn plan(d: &DirectorySpec, record: &str) -> Planned {
        d.plan(0, records(&format!("0\t{record}\n")).of(0), &plan_cx())
    }

    #[test]
    fn a_folder_in_sync_plans_nothing() {
        let p = plan(&want(), &dir_rec("750", "app", "app"));
        assert!(p.steps.is_empty() && p.changes.is_empty() && p.error.is_none());
    }

    #[test]
    fn an_absent_folder_is_created_and_a_differing_one_fixed() {
        let p = plan(&want(), "absent");
        assert_eq!(p.action, Some(Action::Create));
        assert_eq!(
            p.steps,
            [Step::Mkdir {
                path: "/srv/app".into(),
                owner: "app".into(),
                group: "app".into(),
                mode: FileMode(0o750),
            }]
        );
        let p = plan(&want(), &dir_rec("755", "root", "app"));
        let fields: Vec<&str> = p.changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["owner", "mode"]);
        assert_eq!(
            p.steps,
            [Step::SetMeta {
                path: "/srv/app".into(),
                owner: Some("app".into()),
                group: None,
                mode: Some(FileMode(0o750)),
            }]
        );
    }

    #[test]
    fn a_file_or_symlink_in_its_place_is_an_error() {
        for record in [
            file_rec("644", "root", "root", 1, OTHER_SHA),
            format!("link\t{}", b64("/srv/other\n")),
            "other".into(),
            "error\tcannot stat".into(),
        ] {
            let p = plan(&want(), &record);
            assert!(p.steps.is_empty() && p.error.is_some(), "{record}: {p:?}");
        }
    }

    #[test]
    fn an_absent_folder_is_removed_only_when_empty() {
        let mut d = want();
        d.state = Presence::Absent;
        let p = plan(&d, &dir_rec("750", "app", "app"));
        assert_eq!(p.action, Some(Action::Delete));
        assert_eq!(
            p.steps,
            [Step::RemoveDir {
                path: "/srv/app".into()
            }]
        );
        assert!(plan(&d, "absent").steps.is_empty());
        // Something else there is not a folder plumb removes.
        assert!(
            plan(&d, &file_rec("644", "root", "root", 1, OTHER_SHA))
                .steps
                .is_empty()
        );
    }

    #[test]
    fn a_folder_that_left_the_repo_is_removed_when_empty() {
        let m = managed("Directory", "/srv/app", &["/srv/app"]);
        assert_eq!(
            DirectorySpec::prune(&m, &plan_cx()),
            [Step::RemoveDir {
                path: "/srv/app".into()
            }]
        );
        let mut remembered = Managed::default();
        want().remember(&mut remembered);
        assert!(remembered.is_dir);
    }

    #[test]
    fn hostile_records_are_errors_never_steps() {
        for record in [
            "dir\t750 0 0 app".to_string(),
            "dir\t750 x 0 app app".to_string(),
            "dir".to_string(),
            "weird\tthing".to_string(),
        ] {
            let p = plan(&want(), &record);
            assert!(p.steps.is_empty() && p.error.is_some(), "{record}: {p:?}");
        }
    }
}
