//! Source: where the cluster repo comes from. The commit id of a local work tree (it pins what
//! a run applied), and, for `plumb pull`, fetching one branch of a remote repo into a checkout
//! in the controller's state folder with git2.

pub mod signed;

use std::path::Path;
use std::time::{Duration, Instant};

/// The longest a fetch may take in all: checked each time data arrives (libgit2's own timeouts,
/// set by [`bound_network_waits`], bound each wait between two arrivals).
pub const FETCH_LIMIT: Duration = Duration::from_secs(600);

/// Bounds libgit2's network waits: connecting to a git server (30 s) and each read from it
/// (120 s), so that a server that stops answering cannot hold a pull (and the controller lock)
/// forever.
///
/// # Safety
/// Sets libgit2's process-wide options without synchronization: call it before any other thread
/// can use libgit2 (at the start of a command).
pub unsafe fn bound_network_waits() {
    // SAFETY: the caller guarantees no other thread uses libgit2 yet.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(30_000);
        let _ = git2::opts::set_server_timeout_in_milliseconds(120_000);
    }
}

/// Problems getting the cluster repo.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Fetching failed (network, authentication, host key, no such repo).
    #[error("cannot fetch {url}: {message}")]
    Fetch {
        /// The URL, credentials masked.
        url: String,
        /// What git said.
        message: String,
    },
    /// The remote has no such branch.
    #[error("{url} has no branch `{branch}`")]
    NoBranch {
        /// The URL, credentials masked.
        url: String,
        /// The branch asked for.
        branch: String,
    },
    /// The local checkout could not be prepared or updated.
    #[error("checkout {path}: {message}")]
    Checkout {
        /// The checkout folder.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// What a fetch checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The commit id.
    pub commit: String,
    /// The first line of its message.
    pub summary: String,
}

/// A URL fit for messages and logs: a password or token in it is masked.
pub fn display_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_string()
            };
            format!("{scheme}://{masked}@{host}{path}")
        }
        None => url.to_string(),
    }
}

/// Fetches `branch` of `url` into the git checkout at `checkout` (made on first use) and checks
/// that commit out exactly: files the commit does not have are removed, local edits are
/// overwritten. SSH remotes authenticate with the ssh-agent and have their host key checked
/// against `known_hosts` (unknown or changed keys are refused).
pub fn fetch(
    url: &str,
    branch: &str,
    checkout: &Path,
    known_hosts: &Path,
) -> Result<Fetched, SourceError> {
    let shown = display_url(url);
    let co_err = |e: &dyn std::fmt::Display| SourceError::Checkout {
        path: checkout.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(checkout).map_err(|e| co_err(&e))?;
    let repo = match git2::Repository::open(checkout) {
        Ok(r) => r,
        Err(_) => git2::Repository::init(checkout).map_err(|e| co_err(&e))?,
    };
    match repo.find_remote("origin") {
        Ok(r) if r.url().ok() == Some(url) => {}
        Ok(_) => repo.remote_set_url("origin", url).map_err(|e| co_err(&e))?,
        Err(_) => {
            repo.remote("origin", url).map_err(|e| co_err(&e))?;
        }
    }
    let mut remote = repo.find_remote("origin").map_err(|e| co_err(&e))?;
    let tracking = format!("refs/remotes/origin/{branch}");
    let refspec = format!("+refs/heads/{branch}:{tracking}");
    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.credentials(|_url, user, allowed| {
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            git2::Cred::ssh_key_from_agent(user.unwrap_or("git"))
        } else {
            git2::Cred::default()
        }
    });
    let known = known_hosts.to_path_buf();
    callbacks.certificate_check(move |cert, host| {
        match cert.as_hostkey().and_then(|k| k.hostkey()) {
            // SSH: our own known_hosts check, the same as for the hosts plumb converges.
            Some(blob) => crate::transport::check_host_key_blob(&known, host, 22, blob)
                .map(|()| git2::CertificateCheckStatus::CertificateOk)
                .map_err(|msg| git2::Error::from_str(&msg)),
            // TLS: libgit2 has already checked it against the system's trust store.
            None => Ok(git2::CertificateCheckStatus::CertificatePassthrough),
        }
    });
    // The whole fetch is bounded too: a server trickling data resets no deadline.
    let deadline = Instant::now() + FETCH_LIMIT;
    callbacks.transfer_progress(move |_| Instant::now() < deadline);
    callbacks.sideband_progress(move |_| Instant::now() < deadline);
    let mut fo = git2::FetchOptions::new();
    fo.remote_callbacks(callbacks);
    remote
        .fetch(&[refspec.as_str()], Some(&mut fo), None)
        .map_err(|e| SourceError::Fetch {
            url: shown.clone(),
            message: if Instant::now() >= deadline {
                format!("the fetch did not finish within {}s", FETCH_LIMIT.as_secs())
            } else {
                e.message().to_string()
            },
        })?;
    let reference = repo
        .find_reference(&tracking)
        .map_err(|_| SourceError::NoBranch {
            url: shown.clone(),
            branch: branch.to_string(),
        })?;
    let commit = reference.peel_to_commit().map_err(|e| co_err(&e))?;
    check_out(&repo, &commit).map_err(|e| co_err(&e))
}

/// Checks `commit` out exactly in `repo`'s work tree (untracked and ignored files removed,
/// local edits overwritten) and detaches HEAD there.
fn check_out(repo: &git2::Repository, commit: &git2::Commit<'_>) -> Result<Fetched, git2::Error> {
    let mut cb = git2::build::CheckoutBuilder::new();
    cb.force().remove_untracked(true).remove_ignored(true);
    repo.checkout_tree(commit.as_object(), Some(&mut cb))?;
    repo.set_head_detached(commit.id())?;
    Ok(Fetched {
        commit: commit.id().to_string(),
        summary: commit
            .summary()
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_string(),
    })
}

/// Checks out a commit fetched before (the last good one, to roll back to) in the checkout
/// made by [`fetch`], without fetching: it is found by its full id among the objects already
/// there, even when the branch no longer leads to it (a force-push).
pub fn checkout_commit(checkout: &Path, commit: &str) -> Result<Fetched, SourceError> {
    let co_err = |e: &dyn std::fmt::Display| SourceError::Checkout {
        path: checkout.display().to_string(),
        message: e.to_string(),
    };
    // Only a full commit id (from the state folder, so checked like any input): never a
    // revision expression.
    if !matches!(commit.len(), 40 | 64) || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(co_err(&format!(
            "`{}` is not a full commit id",
            crate::text::escape(commit)
        )));
    }
    let repo = git2::Repository::open(checkout).map_err(|e| co_err(&e))?;
    let oid = git2::Oid::from_str(commit).map_err(|e| co_err(&e))?;
    let found = repo.find_commit(oid).map_err(|e| co_err(&e))?;
    check_out(&repo, &found).map_err(|e| co_err(&e))
}

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
        idx.write().unwrap();
        let tree = repo.find_tree(idx.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let id = repo
            .commit(Some("HEAD"), &sig, &sig, "c", &tree, &[])
            .unwrap();
        assert_eq!(commit_of(dir.path()), Some((id.to_string(), false)));
        std::fs::write(dir.path().join("a"), "y").unwrap();
        assert_eq!(commit_label(dir.path()), Some(format!("{id}+dirty")));
    }

    #[test]
    fn urls_are_shown_without_their_credentials() {
        assert_eq!(
            display_url("https://deploy:s3cr3t@git.example.internal/ops/cluster.git"),
            "https://deploy:***@git.example.internal/ops/cluster.git"
        );
        assert_eq!(
            display_url("https://TOKEN@git.example.internal/x"),
            "https://***@git.example.internal/x"
        );
        assert_eq!(
            display_url("ssh://git@git.example.internal/x"),
            "ssh://***@git.example.internal/x"
        );
        assert_eq!(display_url("/srv/cluster.git"), "/srv/cluster.git");
        assert_eq!(
            display_url("git@git.example.internal:ops/x"),
            "git@git.example.internal:ops/x"
        );
    }

    fn commit_file(repo: &git2::Repository, name: &str, text: &str, msg: &str) -> git2::Oid {
        let root = repo.workdir().unwrap();
        std::fs::write(root.join(name), text).unwrap();
        let mut idx = repo.index().unwrap();
        idx.add_path(Path::new(name)).unwrap();
        idx.write().unwrap();
        let tree = repo.find_tree(idx.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let parents: Vec<git2::Commit> = repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents)
            .unwrap()
    }

    #[test]
    fn a_commit_fetched_before_is_checked_out_again_even_after_a_force_push() {
        let dir = tempfile::tempdir().unwrap();
        let origin_dir = dir.path().join("origin");
        let origin = git2::Repository::init(&origin_dir).unwrap();
        let first = commit_file(&origin, "a.txt", "one\n", "first");
        let branch = origin.head().unwrap().shorthand().unwrap().to_string();
        let checkout = dir.path().join("checkout");
        let kh = dir.path().join("known_hosts");
        let url = origin_dir.display().to_string();
        fetch(&url, &branch, &checkout, &kh).unwrap();
        let second = commit_file(&origin, "a.txt", "two\n", "second");
        fetch(&url, &branch, &checkout, &kh).unwrap();
        // The branch is force-pushed away from both; the checkout still has their objects.
        let orphan = origin.find_commit(first).unwrap();
        origin
            .reference(&format!("refs/heads/{branch}"), orphan.id(), true, "reset")
            .unwrap();
        let back = checkout_commit(&checkout, &second.to_string()).unwrap();
        assert_eq!(back.summary, "second");
        assert_eq!(
            std::fs::read_to_string(checkout.join("a.txt")).unwrap(),
            "two\n"
        );
        let back = checkout_commit(&checkout, &first.to_string()).unwrap();
        assert_eq!(back.commit, first.to_string());
        // Only full ids: never a revision expression, never an unknown object.
        for bad in [
            "HEAD",
            "HEAD~1",
            &first.to_string()[..12],
            "../x",
            &"0".repeat(40),
        ] {
            assert!(
                matches!(
                    checkout_commit(&checkout, bad),
                    Err(SourceError::Checkout { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn fetch_checks_out_the_branch_exactly_and_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let origin_dir = dir.path().join("origin");
        let origin = git2::Repository::init(&origin_dir).unwrap();
        let first = commit_file(&origin, "a.txt", "one\n", "first");
        let branch = origin.head().unwrap().shorthand().unwrap().to_string();
        let checkout = dir.path().join("checkout");
        let kh = dir.path().join("known_hosts");
        let url = origin_dir.display().to_string();

        let f = fetch(&url, &branch, &checkout, &kh).unwrap();
        assert_eq!(f.commit, first.to_string());
        assert_eq!(f.summary, "first");
        assert_eq!(
            std::fs::read_to_string(checkout.join("a.txt")).unwrap(),
            "one\n"
        );

        // Local edits and stray files do not survive the next fetch.
        std::fs::write(checkout.join("a.txt"), "edited").unwrap();
        std::fs::write(checkout.join("stray.txt"), "x").unwrap();
        let second = commit_file(&origin, "b.txt", "two\n", "second");
        let f = fetch(&url, &branch, &checkout, &kh).unwrap();
        assert_eq!(f.commit, second.to_string());
        assert_eq!(
            std::fs::read_to_string(checkout.join("a.txt")).unwrap(),
            "one\n"
        );
        assert_eq!(
            std::fs::read_to_string(checkout.join("b.txt")).unwrap(),
            "two\n"
        );
        assert!(!checkout.join("stray.txt").exists());

        match fetch(&url, "no-such-branch", &checkout, &kh) {
            Err(SourceError::NoBranch { branch, .. }) => assert_eq!(branch, "no-such-branch"),
            other => panic!("{other:?}"),
        }
        match fetch(
            &dir.path().join("nothing").display().to_string(),
            &branch,
            &dir.path().join("c2"),
            &kh,
        ) {
            Err(SourceError::Fetch { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
