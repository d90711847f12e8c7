//! Source: where the cluster repo comes from. For now, the commit id of a local work tree (it
//! pins what a run applied); fetching a remote repo into the state dir lives here too.

use std::path::Path;

/// The commit checked out at `path` (when it is inside a git work tree), and whether the work
/// tree has uncommitted changes.
pub fn commit_of(path: &Path) -> Option<(String, bool)> {
    let repo = git2::Repository::discover(path).ok()?;
    let head = repo.head().ok()?.peel_to_commit().ok()?;
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true).include_ignored(false);
    let dirty = repo
        .statuses(Some(&mut opts))
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    Some((head.id().to_string(), dirty))
}

/// The commit label recorded on hosts: the id, with `+dirty` when the work tree had changes.
pub fn commit_label(path: &Path) -> Option<String> {
    commit_of(path).map(|(id, dirty)| if dirty { format!("{id}+dirty") } else { id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_head_and_dirtiness() {
        let dir = tempfile::tempdir().unwrap();
        assert!(commit_of(dir.path()).is_none());
        let repo = git2::Repository::init(dir.path()).unwrap();
        std::fs::write(dir.path().join("a"), "x").unwrap();
        let mut idx = repo.index().unwrap();
        idx.add_path(Path::new("a")).unwrap();
        let tree = repo.find_tree(idx.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let id = repo
            .commit(Some("HEAD"), &sig, &sig, "c", &tree, &[])
            .unwrap();
        assert_eq!(commit_of(dir.path()), Some((id.to_string(), false)));
        std::fs::write(dir.path().join("a"), "y").unwrap();
        assert_eq!(commit_label(dir.path()), Some(format!("{id}+dirty")));
    }
}
