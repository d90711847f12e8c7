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
