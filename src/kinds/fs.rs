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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{OTHER_SHA, file_rec, managed, records};
    use crate::vocab::records::parse_path;

    fn converge(record: &str, content: &Content) -> Planned {
        let r = records(&format!("0\t{record}\n"));
        let mut p = Planned::default();
        let state = parse_path(r.of(0).get(""));
        converge_file(
            "/etc/x",
            &state,
            content,
            "root",
            "root",
            FileMode(0o640),
            &mut p,
        );
        p
    }

    #[test]
    fn converge_file_writes_only_what_differs() {
        let c = Content::sensitive("secret\n");
        // In sync: nothing.
        let same = file_rec("640", "root", "root", 7, &c.sha256());
        let p = converge(&same, &c);
        assert!(p.steps.is_empty() && p.changes.is_empty() && p.diffs.is_empty());
        // Other content: a write, its change in hashes only, and a diff that is never fetched
        // for sensitive content (the step carries the flag).
        let p = converge(&file_rec("640", "root", "root", 7, OTHER_SHA), &c);
        match &p.steps[..] {
            [Step::WriteFile { content, .. }] => assert!(content.sensitive),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.changes[0].to.as_deref(), Some(&c.sha256()[..12]));
        assert!(p.diffs[0].new.sensitive);
        // Absent: created.
        let p = converge("absent", &c);
        assert_eq!(p.changes[0].to.as_deref(), Some("created"));
        assert_eq!(p.steps.len(), 1);
    }

    #[test]
    fn converge_file_refuses_what_it_must_not_replace() {
        let c = Content::plain("x");
        for (record, why) in [
            ("dir\t755 0 0 root root", "is a directory"),
            ("other", "special file"),
            ("error\tcannot read", "cannot read"),
            ("link\tnot base64!", "cannot read"),
        ] {
            let p = converge(record, &c);
            assert!(p.steps.is_empty(), "{record}");
            assert!(p.error.unwrap().contains(why), "{record}");
        }
    }

    #[test]
    fn remove_paths_removes_each_path_written() {
        let m = managed("File", "x", &["/etc/a", "/etc/b"]);
        assert_eq!(
            remove_paths(&m),
            [
                Step::Remove {
                    path: "/etc/a".into()
                },
                Step::Remove {
                    path: "/etc/b".into()
                }
            ]
        );
    }
}
