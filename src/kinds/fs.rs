//! What the kinds that write files share: planning a file from its probe record, and removing
//! the paths of a resource that left the repo. The shell behind these steps is the apply
//! stage's (it stages, checks, backs up, and writes as the folder's user where it must).

use crate::model::desired::Content;
use crate::model::values::FileMode;
use crate::vocab::records::PathState;
use crate::vocab::state::Managed;
use crate::vocab::step::{Change, ContentRef, Planned, Step, file_diff, short};

/// Steps for a file that should hold `content` given what the probe found there; shared by
/// File, SystemdUnit, ComposeStack and Certificate.
pub fn converge_file(
    path: &str,
    actual: &crate::vocab::records::PathState,
    content: &Content,
    owner: &str,
    group: &str,
    mode: FileMode,
    out: &mut Planned,
) {
    let write = Step::WriteFile {
        path: path.to_string(),
        content: ContentRef::of(content),
        owner: owner.to_string(),
        group: group.to_string(),
        mode,
    };
    match actual {
        PathState::Absent => {
            out.changes
                .push(Change::new(path, None, Some("created".into())));
            out.diffs.push(file_diff(path, None, content));
            out.steps.push(write);
        }
        PathState::Link(_) => {
            out.changes.push(Change::new(
                path,
                Some("symlink".into()),
                Some("file".into()),
            ));
            out.diffs.push(file_diff(path, None, content));
            out.steps.push(write);
        }
        PathState::File(f) => {
            if f.sha256 != content.sha256() {
                out.changes.push(Change::new(
                    &format!("{path}: content"),
                    Some(short(&f.sha256)),
                    Some(short(&content.sha256())),
                ));
                out.diffs.push(file_diff(path, Some(&f.sha256), content));
                out.steps.push(write);
                return;
            }
            let mut meta = (None, None, None);
            if !f.meta.owner_is(owner) {
                out.changes.push(Change::new(
                    &format!("{path}: owner"),
                    Some(f.meta.owner.clone()),
                    Some(owner.into()),
                ));
                meta.0 = Some(owner.to_string());
            }
            if !f.meta.group_is(group) {
                out.changes.push(Change::new(
                    &format!("{path}: group"),
                    Some(f.meta.group.clone()),
                    Some(group.into()),
                ));
                meta.1 = Some(group.to_string());
            }
            if f.meta.mode != mode.0 {
                out.changes.push(Change::new(
                    &format!("{path}: mode"),
                    Some(FileMode(f.meta.mode).to_string()),
                    Some(mode.to_string()),
                ));
                meta.2 = Some(mode);
            }
            if meta != (None, None, None) {
                out.steps.push(Step::SetMeta {
                    path: path.to_string(),
                    owner: meta.0,
                    group: meta.1,
                    mode: meta.2,
                });
            }
        }
        PathState::Dir(_) => {
            out.error = Some(format!(
                "`{path}` is a directory on the host; plumb will not replace a directory with a file"
            ));
        }
        PathState::Other => {
            out.error = Some(format!(
                "`{path}` is a special file on the host; remove it by hand"
            ));
        }
        PathState::Error(e) => {
            out.error = Some(format!("cannot read `{path}` on the host: {e}"));
        }
    }
}

/// Steps that remove the files or symlinks a resource wrote (a backup of each file is kept).
pub fn remove_paths(m: &Managed) -> Vec<Step> {
    m.paths
        .iter()
        .map(|p| Step::Remove { path: p.clone() })
        .collect()
}
