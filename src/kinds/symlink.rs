//! `Symlink`: a symbolic link pointing at a target.

use super::{CheckCx, Kind, Primitive, PrimitiveSpec, desired};
use crate::diag::Diagnostic;
use crate::kinds::Desired;
use crate::kinds::HostCx;
use crate::kinds::Manifest;
use crate::model::desired::Content;
use crate::model::values::Presence;
use crate::shell::quote;
use crate::vocab::cx::PlanCx;
use crate::vocab::records::{PathState, Records, parse_path};
use crate::vocab::state::Managed;
use crate::vocab::step::{Action, Change, Planned, Step};
use serde::{Deserialize, Serialize};

/// A symbolic link at `path` pointing at `target`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SymlinkSpec {
    /// Absolute path of the link.
    pub path: String,
    /// What it points at (absolute, or relative to the link's folder).
    pub target: String,
    /// Owner of the link itself.
    #[serde(default = "super::directory::root")]
    pub owner: String,
    /// Group of the link itself.
    #[serde(default = "super::directory::root")]
    pub group: String,
    /// Present or absent.
    #[serde(default)]
    pub state: Presence,
}

impl Kind for SymlinkSpec {
    fn default_name(&self) -> Option<String> {
        Some(self.path.clone())
    }

    fn check(&self, cx: &mut CheckCx) {
        cx.abs_path("path", &self.path, &[]);
        cx.account("owner", &self.owner);
        cx.account("group", &self.group);
        if self.target.is_empty() || self.target.contains('\n') {
            cx.error(
                "target",
                "a symlink target must be a non-empty single line",
                None,
            );
        }
    }

    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::Symlink(self.clone()),
        )])
    }
}

impl Primitive for SymlinkSpec {
    fn removed_as_owner() -> bool {
        true
    }

    fn shell() -> &'static str {
        ""
    }

    fn prune(m: &Managed, _cx: &PlanCx) -> Vec<Step> {
        super::fs::remove_paths(m)
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
        let step = Step::Symlink {
            path: self.path.clone(),
            target: self.target.clone(),
            owner: self.owner.clone(),
            group: self.group.clone(),
        };
        match (self.state, parse_path(actual.get(""))) {
            (Presence::Present, PathState::Absent) => {
                p.action = Some(Action::Create);
                p.changes
                    .push(Change::new("target", None, Some(self.target.clone())));
                p.steps.push(step);
            }
            (Presence::Present, PathState::Link(t)) if t == self.target => {}
            (Presence::Present, PathState::Link(t)) => {
                p.changes
                    .push(Change::new("target", Some(t), Some(self.target.clone())));
                p.steps.push(step);
            }
            (Presence::Present, PathState::File(_)) => {
                p.changes.push(Change::new(
                    "target",
                    Some("a regular file".into()),
                    Some(self.target.clone()),
                ));
                p.steps.push(step);
            }
            (Presence::Present, PathState::Error(e)) => {
                p.error = Some(format!("cannot read `{}`: {e}", self.path))
            }
            (Presence::Present, _) => {
                p.error = Some(format!(
                    "`{}` is a directory or special file on the host; plumb will not replace it with a symlink",
                    self.path
                ));
            }
            (Presence::Absent, PathState::Link(t)) => {
                p.action = Some(Action::Delete);
                p.changes.push(Change::new("symlink", Some(t), None));
                p.steps.push(Step::Remove {
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

    fn want() -> SymlinkSpec {
        SymlinkSpec {
            path: "/etc/app/current".into(),
            target: "/opt/app/1.2".into(),
            owner: "root".into(),
            group: "root".into(),
            state: Presence::Present,
        }
    }

    fn plan(s: &SymlinkSpec, record: &str) -> Planned {
        s.plan(0, records(&format!("0\t{record}\n")).of(0), &plan_cx())
    }

    /// What `readlink PATH | base64 -w0` prints for a link to `target`.
    fn link(target: &str) -> String {
        format!("link\t{}", b64(&format!("{target}\n")))
    }

    #[test]
    fn a_link_to_its_target_plans_nothing() {
        let p = plan(&want(), &link("/opt/app/1.2"));
        assert!(p.steps.is_empty() && p.changes.is_empty() && p.error.is_none());
    }

    #[test]
    fn another_target_or_a_file_is_replaced_and_an_absent_link_created() {
        let step = Step::Symlink {
            path: "/etc/app/current".into(),
            target: "/opt/app/1.2".into(),
            owner: "root".into(),
            group: "root".into(),
        };
        let p = plan(&want(), &link("/opt/app/1.1"));
        assert_eq!(p.steps, std::slice::from_ref(&step));
        assert_eq!(p.changes[0].from.as_deref(), Some("/opt/app/1.1"));
        let p = plan(&want(), &file_rec("644", "root", "root", 1, OTHER_SHA));
        assert_eq!(p.steps, std::slice::from_ref(&step));
        let p = plan(&want(), "absent");
        assert_eq!(p.action, Some(Action::Create));
        assert_eq!(p.steps, [step]);
    }

    #[test]
    fn a_folder_in_its_place_is_an_error() {
        for record in [dir_rec("755", "root", "root"), "other".into()] {
            let p = plan(&want(), &record);
            assert!(p.steps.is_empty() && p.error.is_some(), "{record}");
        }
    }

    #[test]
    fn an_absent_link_is_removed_and_a_pruned_one_too() {
        let mut s = want();
        s.state = Presence::Absent;
        let p = plan(&s, &link("/opt/app/1.2"));
        assert_eq!(p.action, Some(Action::Delete));
        assert_eq!(
            p.steps,
            [Step::Remove {
                path: "/etc/app/current".into()
            }]
        );
        // A file where an absent link should be is not plumb's to remove.
        assert!(
            plan(&s, &file_rec("644", "root", "root", 1, OTHER_SHA))
                .steps
                .is_empty()
        );
        let m = managed("Symlink", "/etc/app/current", &["/etc/app/current"]);
        assert_eq!(
            SymlinkSpec::prune(&m, &plan_cx()),
            [Step::Remove {
                path: "/etc/app/current".into()
            }]
        );
    }

    #[test]
    fn hostile_records_are_errors_never_steps() {
        // Not base64, base64 of bytes that are not UTF-8, no target at all.
        for record in ["link\t!!!", "link\t/w==", "link"] {
            let p = plan(&want(), record);
            assert!(p.steps.is_empty(), "{record}: {:?}", p.steps);
            assert!(
                p.error
                    .as_deref()
                    .unwrap_or_default()
                    .contains("cannot read"),
                "{record}: {p:?}"
            );
        }
        // A target holding a newline is compared whole: it is another target.
        let p = plan(&want(), &link("/opt/app/1.2\n/etc/shadow"));
        assert_eq!(p.steps.len(), 1);
    }
}
