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
            let c = render_content(cx, m, src, &resource, &self.vars)?;
            // `sensitive: true` says the whole file is a secret, not only the values it reads
            // through `secret()`: nothing of it is shown, masked or not.
            Some(if self.sensitive {
                c.wholly_sensitive()
            } else {
                c
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{OTHER_SHA, b64, dir_rec, file_rec, plan_cx, probe_output, records};

    fn want(text: &str) -> FileState {
        FileState::new("/etc/app.conf", "root", "root", 0o644, Content::plain(text))
    }

    fn plan(f: &FileState, record: &str) -> Planned {
        f.plan(0, records(&format!("0\t{record}\n")).of(0), &plan_cx())
    }

    #[test]
    fn a_file_in_sync_plans_nothing() {
        let f = want("hello\n");
        let sha = Content::plain("hello\n").sha256();
        let p = plan(&f, &file_rec("644", "root", "root", 6, &sha));
        assert!(p.steps.is_empty() && p.changes.is_empty() && p.error.is_none());
        assert_eq!(p.action, None);
    }

    #[test]
    fn other_content_is_rewritten_with_its_diff() {
        let f = want("hello\n");
        let p = plan(&f, &file_rec("644", "root", "root", 3, OTHER_SHA));
        assert!(
            matches!(&p.steps[..], [Step::WriteFile { path, mode, .. }] if path == "/etc/app.conf" && mode.0 == 0o644),
            "{:?}",
            p.steps
        );
        assert_eq!(p.changes[0].field, "/etc/app.conf: content");
        assert_eq!(p.changes[0].from.as_deref(), Some("000000000000"));
        assert_eq!(p.diffs.len(), 1);
        assert_eq!(p.diffs[0].old_sha256.as_deref(), Some(OTHER_SHA));
        assert_eq!(p.action, None, "derived by the planner: an update");
    }

    #[test]
    fn only_owner_group_and_mode_that_differ_are_set() {
        let f = want("x");
        let sha = Content::plain("x").sha256();
        let p = plan(&f, &file_rec("600", "root", "app", 1, &sha));
        let fields: Vec<&str> = p.changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["/etc/app.conf: group", "/etc/app.conf: mode"]);
        assert_eq!(
            p.steps,
            [Step::SetMeta {
                path: "/etc/app.conf".into(),
                owner: None,
                group: Some("root".into()),
                mode: Some(FileMode(0o644)),
            }]
        );
        // A numeric owner matches the uid the probe printed.
        let mut numeric = f.clone();
        numeric.owner = "0".into();
        numeric.group = "1001".into();
        numeric.mode = FileMode(0o600);
        assert!(
            plan(&numeric, &file_rec("600", "root", "app", 1, &sha))
                .steps
                .is_empty()
        );
    }

    #[test]
    fn an_absent_file_is_created_and_a_symlink_replaced() {
        let f = want("x");
        let p = plan(&f, "absent");
        assert_eq!(p.action, Some(Action::Create));
        assert!(matches!(&p.steps[..], [Step::WriteFile { .. }]));
        assert_eq!(p.diffs[0].old_sha256, None);
        let p = plan(&f, &format!("link\t{}", b64("/tmp/elsewhere\n")));
        assert_eq!(p.changes[0].from.as_deref(), Some("symlink"));
        assert!(matches!(&p.steps[..], [Step::WriteFile { .. }]));
    }

    #[test]
    fn a_folder_or_special_file_in_its_place_is_an_error_not_a_step() {
        let f = want("x");
        for (record, why) in [
            (dir_rec("755", "root", "root"), "is a directory"),
            ("other".to_string(), "special file"),
            ("error\tcannot stat".to_string(), "cannot read"),
        ] {
            let p = plan(&f, &record);
            assert!(p.steps.is_empty(), "{record}");
            assert!(
                p.error.as_deref().unwrap_or_default().contains(why),
                "{p:?}"
            );
        }
    }

    #[test]
    fn an_absent_file_is_removed_when_present() {
        let mut f = want("x");
        f.state = Presence::Absent;
        f.content = None;
        let p = plan(&f, &file_rec("644", "root", "root", 1, OTHER_SHA));
        assert_eq!(p.action, Some(Action::Delete));
        assert_eq!(
            p.steps,
            [Step::Remove {
                path: "/etc/app.conf".into()
            }]
        );
        assert!(plan(&f, "absent").steps.is_empty());
    }

    #[test]
    fn a_file_that_left_the_repo_is_removed() {
        let m = crate::testutil::managed("File", "/etc/app.conf", &["/etc/app.conf"]);
        assert_eq!(
            FileState::prune(&m, &plan_cx()),
            [Step::Remove {
                path: "/etc/app.conf".into()
            }]
        );
    }

    #[test]
    fn hostile_records_are_errors_never_steps() {
        let f = want("x");
        for record in [
            // Not base64.
            "link\t%%%not-base64%%%".to_string(),
            // A size missing, a mode that is not octal, a short hash.
            format!("file\t644 0 0 root root\t{OTHER_SHA}"),
            format!("file\t9z4 0 0 root root 1\t{OTHER_SHA}"),
            "file\t644 0 0 root root 1\tabc".to_string(),
            // A field too many, an unknown word.
            format!("file\t644 0 0 root root 1 7\t{OTHER_SHA}"),
            "socket".to_string(),
        ] {
            let p = plan(&f, &record);
            assert!(p.steps.is_empty(), "{record}: {:?}", p.steps);
            assert!(p.error.is_some(), "{record}");
        }
        // A link target with a newline, were it printed raw, would start a line of its own:
        // a second record of the resource or a second fact is refused for the whole host.
        assert!(probe_output("0\tlink\tx\n0\tabsent\n", 1, 0).is_err());
        assert!(probe_output("0\tlink\t/tmp\nH\tstate\tnone\n", 1, 0).is_err());
        // Printed as base64 (as the probe does), it is the target itself.
        let p = plan(&f, &format!("link\t{}", b64("/tmp/a\nb\n")));
        assert_eq!(p.changes[0].from.as_deref(), Some("symlink"));
    }
}
