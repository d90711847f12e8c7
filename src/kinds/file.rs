//! `File`: a file with content from inline text, a Tera template, or a file of the repo.

use super::fs::converge_file;
use super::{
    CheckCx, Kind, Primitive, PrimitiveSpec, check_content, content_source, desired, render_content,
};
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
use serde_json::{Map, Value};

/// A file as declared.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Absolute path on the host.
    pub path: String,
    /// Owner (name or uid).
    #[serde(default = "super::directory::root")]
    pub owner: String,
    /// Group (name or gid).
    #[serde(default = "super::directory::root")]
    pub group: String,
    /// Permission mode.
    #[serde(default = "file_mode")]
    pub mode: FileMode,
    /// Literal content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tera template under `templates/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Repo file copied as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Variables for the template, over the host's.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub vars: Map<String, Value>,
    /// Treat the content as secret even if no secret was used to render it.
    #[serde(default)]
    pub sensitive: bool,
    /// Present or absent.
    #[serde(default)]
    pub state: Presence,
}

fn file_mode() -> FileMode {
    FileMode(0o644)
}

/// A file as it should be on a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileState {
    /// Absolute path.
    pub path: String,
    /// Owner.
    pub owner: String,
    /// Group.
    pub group: String,
    /// Mode.
    pub mode: FileMode,
    /// Present or absent.
    pub state: Presence,
    /// Final content (absent files have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

impl FileState {
    /// A present file.
    pub fn new(
        path: impl Into<String>,
        owner: &str,
        group: &str,
        mode: u32,
        content: Content,
    ) -> Self {
        FileState {
            path: path.into(),
            owner: owner.into(),
            group: group.into(),
            mode: FileMode(mode),
            state: Presence::Present,
            content: Some(content),
        }
    }
}

impl Kind for FileSpec {
    fn default_name(&self) -> Option<String> {
        Some(self.path.clone())
    }

    fn check(&self, cx: &mut CheckCx) {
        cx.abs_path("path", &self.path, &[]);
        cx.account("owner", &self.owner);
        cx.account("group", &self.group);
        check_content(
            cx,
            &self.content,
            &self.template,
            &self.source,
            self.state == Presence::Present,
        );
    }

    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        let content = if self.state == Presence::Absent {
            None
        } else {
            let src = content_source(&self.content, &self.template, &self.source)
                .map_err(|msg| m.error("", msg))?;
            let resource = serde_json::to_value(self).unwrap_or(Value::Null);
            let mut c = render_content(cx, m, src, &resource, &self.vars)?;
            c.sensitive |= self.sensitive;
            Some(c)
        };
        let state = FileState {
            path: self.path.clone(),
            owner: self.owner.clone(),
            group: self.group.clone(),
            mode: self.mode,
            state: self.state,
            content,
        };
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::File(state),
        )])
    }
}

impl Primitive for FileState {
    fn shell() -> &'static str {
        ""
    }

    fn prune(m: &Managed, _cx: &PlanCx) -> Vec<Step> {
        super::fs::remove_paths(m)
    }

    fn contents(&self) -> Vec<&Content> {
        self.content.iter().collect()
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
        match (&self.content, self.state) {
            (Some(content), Presence::Present) => {
                if state == PathState::Absent {
                    p.action = Some(Action::Create);
                }
                converge_file(
                    &self.path,
                    &state,
                    content,
                    &self.owner,
                    &self.group,
                    self.mode,
                    &mut p,
                );
            }
            (_, Presence::Absent) => match state {
                PathState::File(f) => {
                    p.action = Some(Action::Delete);
                    p.changes.push(Change::new(
                        &self.path,
                        Some(format!("{} bytes", f.size)),
                        Some("removed".into()),
                    ));
                    p.steps.push(Step::Remove {
                        path: self.path.clone(),
                    });
                }
                PathState::Link(_) => {
                    p.action = Some(Action::Delete);
                    p.changes.push(Change::new(
                        &self.path,
                        Some("symlink".into()),
                        Some("removed".into()),
                    ));
                    p.steps.push(Step::Remove {
                        path: self.path.clone(),
                    });
                }
                _ => {}
            },
            (None, Presence::Present) => p.error = Some("no content".into()),
        }
        p
    }
}
