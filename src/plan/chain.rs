//! Who may change the folders on the way to a managed path, and so whose hands plumb writes it
//! with. Pure: the probe's `A` records in, a [`Domain`] or a refusal out.
//!
//! An entry of a folder can be replaced only by someone who can write that folder. So:
//! - while every folder from `/` down is writable by root alone (or by the login user when
//!   plumb does not run as root), root works there and nobody can redirect it;
//! - a folder writable by one other user U (owned by U, not writable by group or others) hands
//!   everything below it to U: plumb writes there AS U (`setpriv`), so a symlink U plants can
//!   only lead plumb where U could write anyway, and the resource must be owned by U;
//! - a folder writable by a group or by everyone (without the sticky bit protecting the next
//!   entry) is refused: any of them could replace what plumb writes;
//! - a symlink on the way is refused unless plumb declared it (a `Symlink` resource), because a
//!   symlink plumb did not declare is a redirection nobody reviewed.

use crate::vocab::records::DirState;
use std::collections::BTreeMap;

/// Why plumb refuses to write below a folder.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A folder on the way that the probe did not read.
    #[error("`{0}` was not read by the probe (plumb bug: please report it)")]
    NotProbed(String),
    /// A symlink on the way that the repo does not declare.
    #[error(
        "`{dir}` is a symlink (to `{target}`) on the host; plumb does not follow a symlink it did not declare: write the path it leads to instead, or replace the symlink by a folder"
    )]
    Symlink {
        /// The folder's path.
        dir: String,
        /// Where it leads.
        target: String,
    },
    /// A file, device or unreadable entry where a folder should be.
    #[error("`{0}` is not a folder on the host")]
    NotAFolder(String),
    /// A folder a group or everyone can write.
    #[error(
        "`{dir}` is writable by {who}: any of them could replace what plumb writes below it; make it writable by its owner only (`chmod go-w {dir}`)"
    )]
    Shared {
        /// The folder's path.
        dir: String,
        /// `everyone`, or the group.
        who: String,
    },
    /// Below a user's folder, a folder that user does not own alone.
    #[error(
        "`{dir}` lies in a folder that user {user} can write, but is owned by {owner} with mode {mode:04o}: plumb writes there only as {user}, into folders that {user} alone owns"
    )]
    Foreign {
        /// The folder's path.
        dir: String,
        /// The user whose domain it lies in.
        user: String,
        /// Its owner.
        owner: String,
        /// Its mode.
        mode: u32,
    },
}

/// Whose hands the writes below a folder run in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    /// Root (or the login user): the whole way is theirs alone.
    Root,
    /// This user: its name, and its uid when the host told it (a folder plumb has yet to
    /// create is known by its declared owner only).
    User {
        /// User name (or the owner as the repo wrote it).
        name: String,
        /// Numeric uid, when known.
        uid: Option<u32>,
    },
}

impl Domain {
    /// True when `owner` (a name or a uid) is this domain's user; always true for root's.
    pub fn admits(&self, owner: &str) -> bool {
        match self {
            Domain::Root => true,
            Domain::User { name, uid } => {
                owner == name || uid.is_some_and(|u| owner == u.to_string())
            }
        }
    }

    /// How the host names the user for `setpriv` (the uid when known); None for root.
    pub fn user(&self) -> Option<String> {
        match self {
            Domain::Root => None,
            Domain::User { name, uid } => Some(uid.map(|u| u.to_string()).unwrap_or(name.clone())),
        }
    }
}

/// What is known about the folders on the way to the host's managed paths.
pub struct Chain<'a> {
    /// The folders the probe read, by path.
    pub dirs: &'a BTreeMap<String, DirState>,
    /// Folders the repo declares (Directory resources), by path: their owner. Used for folders
    /// the host does not have yet.
    pub declared: &'a BTreeMap<String, String>,
    /// The uid plumb runs as on the host (0 for root, or the login user's).
    pub login_uid: u32,
}

fn writable_by_others(mode: u32, gid: u32) -> bool {
    mode & 0o002 != 0 || (mode & 0o020 != 0 && gid != 0)
}

fn is_root_name(user: &str) -> bool {
    matches!(user, "root" | "0")
}

impl Chain<'_> {
    /// The domain in which `path` (absolute, normalized) is written, or why plumb refuses to
    /// write it. Only the folders on the way count: the entry itself can be replaced only by
    /// whoever can write its folder.
    pub fn domain(&self, path: &str) -> Result<Domain, ChainError> {
        let mut domain = Domain::Root;
        let mut absent = false;
        let folders = folders_of(path);
        for (i, dir) in folders.iter().enumerate() {
            let next = folders.get(i + 1).map(String::as_str).unwrap_or(path);
            if absent {
                // Created by plumb in the current domain; a declared owner takes over below.
                self.take_declared(dir, &mut domain);
                continue;
            }
            let state = self
                .dirs
                .get(dir.as_str())
                .ok_or_else(|| ChainError::NotProbed(dir.clone()))?;
            match state {
                DirState::Absent => {
                    absent = true;
                    self.take_declared(dir, &mut domain);
                }
                DirState::Link(target) => {
                    return Err(ChainError::Symlink {
                        dir: dir.clone(),
                        target: target.clone(),
                    });
                }
                DirState::Other => {
                    return Err(ChainError::NotAFolder(dir.clone()));
                }
                DirState::Dir(meta) => {
                    let others = writable_by_others(meta.mode, meta.gid);
                    let trusted_owner = meta.uid == 0 || meta.uid == self.login_uid;
                    match &domain {
                        Domain::Root if trusted_owner && !others => {}
                        Domain::Root if meta.mode & 0o1000 != 0 && self.trusted_entry(next) => {
                            // Sticky: only the next entry's owner (root) may replace it.
                        }
                        Domain::Root if !trusted_owner && !others => {
                            domain = Domain::User {
                                name: meta.owner.clone(),
                                uid: Some(meta.uid),
                            };
                        }
                        Domain::Root => {
                            let who = if meta.mode & 0o002 != 0 {
                                "everyone".to_string()
                            } else {
                                format!("group {} (gid {})", meta.group, meta.gid)
                            };
                            return Err(ChainError::Shared {
                                dir: dir.clone(),
                                who,
                            });
                        }
                        Domain::User { name, uid } => {
                            let same = match uid {
                                Some(u) => *u == meta.uid,
                                None => *name == meta.owner,
                            };
                            if !same || others {
                                return Err(ChainError::Foreign {
                                    dir: dir.clone(),
                                    user: name.clone(),
                                    owner: meta.owner.clone(),
                                    mode: meta.mode,
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(domain)
    }

    /// True when `entry` is a folder that exists and belongs to root (or the login user).
    fn trusted_entry(&self, entry: &str) -> bool {
        matches!(self.dirs.get(entry), Some(DirState::Dir(m)) if m.uid == 0 || m.uid == self.login_uid)
    }

    /// Below a folder plumb creates with a declared non-root owner, that owner writes.
    fn take_declared(&self, dir: &str, domain: &mut Domain) {
        if let Some(owner) = self.declared.get(dir)
            && !is_root_name(owner)
            && (*domain == Domain::Root || !domain.admits(owner))
        {
            *domain = Domain::User {
                name: owner.clone(),
                uid: owner.parse().ok(),
            };
        }
    }
}

/// The folders on the way to `path`, from `/` down to its parent.
pub fn folders_of(path: &str) -> Vec<String> {
    let mut out = vec!["/".to_string()];
    let Some((parent, _)) = path.rsplit_once('/') else {
        return out;
    };
    let mut cur = String::new();
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        cur.push('/');
        cur.push_str(part);
        out.push(cur.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::records::Meta;

    fn dir(mode: u32, uid: u32, gid: u32, owner: &str) -> DirState {
        DirState::Dir(Meta {
            mode,
            uid,
            gid,
            owner: owner.into(),
            group: owner.into(),
        })
    }

    fn chain(
        dirs: &[(&str, DirState)],
        declared: &[(&str, &str)],
    ) -> (BTreeMap<String, DirState>, BTreeMap<String, String>) {
        (
            dirs.iter()
                .map(|(p, s)| (p.to_string(), s.clone()))
                .collect(),
            declared
                .iter()
                .map(|(p, o)| (p.to_string(), o.to_string()))
                .collect(),
        )
    }

    fn domain(
        dirs: &[(&str, DirState)],
        declared: &[(&str, &str)],
        path: &str,
    ) -> Result<Domain, String> {
        let (d, decl) = chain(dirs, declared);
        Chain {
            dirs: &d,
            declared: &decl,
            login_uid: 0,
        }
        .domain(path)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn root_owned_folders_are_root_domain() {
        let dirs = [
            ("/", dir(0o755, 0, 0, "root")),
            ("/etc", dir(0o755, 0, 0, "root")),
        ];
        assert_eq!(domain(&dirs, &[], "/etc/app.conf"), Ok(Domain::Root));
    }

    #[test]
    fn a_user_owned_folder_hands_the_rest_to_that_user() {
        let dirs = [
            ("/", dir(0o755, 0, 0, "root")),
            ("/home", dir(0o755, 0, 0, "root")),
            ("/home/pg", dir(0o700, 1001, 1001, "postgres")),
            ("/home/pg/conf", dir(0o750, 1001, 1001, "postgres")),
        ];
        assert_eq!(
            domain(&dirs, &[], "/home/pg/conf/patroni.yml"),
            Ok(Domain::User {
                name: "postgres".into(),
                uid: Some(1001)
            })
        );
        // The home folder itself lives in /home: root's.
        assert_eq!(domain(&dirs, &[], "/home/pg"), Ok(Domain::Root));
        // A root-owned folder inside the user's domain is refused (the user can swap it).
        let dirs2 = [
            ("/", dir(0o755, 0, 0, "root")),
            ("/home", dir(0o755, 0, 0, "root")),
            ("/home/pg", dir(0o700, 1001, 1001, "postgres")),
            ("/home/pg/conf", dir(0o755, 0, 0, "root")),
        ];
        assert!(
            domain(&dirs2, &[], "/home/pg/conf/x")
                .unwrap_err()
                .contains("owned by root")
        );
    }

    #[test]
    fn symlinks_and_shared_folders_are_refused() {
        let dirs = [
            ("/", dir(0o755, 0, 0, "root")),
            ("/srv", DirState::Link("/etc".into())),
        ];
        let e = domain(&dirs, &[], "/srv/x").unwrap_err();
        assert!(e.contains("symlink") && e.contains("/etc"), "{e}");
        let dirs = [
            ("/", dir(0o755, 0, 0, "root")),
            ("/srv", dir(0o775, 0, 50, "staff")),
        ];
        assert!(
            domain(&dirs, &[], "/srv/x")
                .unwrap_err()
                .contains("group staff")
        );
        let dirs = [
            ("/", dir(0o755, 0, 0, "root")),
            ("/srv", dir(0o777, 0, 0, "root")),
        ];
        assert!(
            domain(&dirs, &[], "/srv/x")
                .unwrap_err()
                .contains("everyone")
        );
        // Group-writable by root's own group is fine.
        let dirs = [
            ("/", dir(0o755, 0, 0, "root")),
            ("/srv", dir(0o775, 0, 0, "root")),
        ];
        assert_eq!(domain(&dirs, &[], "/srv/x"), Ok(Domain::Root));
    }

    #[test]
    fn a_sticky_folder_protects_a_root_owned_entry_only() {
        let dirs = [
            ("/", dir(0o755, 0, 0, "root")),
            ("/tmp", dir(0o1777, 0, 0, "root")),
            ("/tmp/t", dir(0o700, 0, 0, "root")),
            ("/tmp/u", dir(0o700, 1000, 1000, "u")),
        ];
        assert_eq!(domain(&dirs, &[], "/tmp/t/x"), Ok(Domain::Root));
        // A file directly in /tmp, or below a user's entry there, is refused.
        assert!(domain(&dirs, &[], "/tmp/x").is_err());
        assert!(domain(&dirs, &[], "/tmp/u/x").is_err());
    }

    #[test]
    fn absent_folders_take_their_declared_owner() {
        let dirs = [
            ("/", dir(0o755, 0, 0, "root")),
            ("/home", dir(0o755, 0, 0, "root")),
            ("/home/pg", DirState::Absent),
            ("/home/pg/conf", DirState::Absent),
        ];
        let declared = [("/home/pg", "postgres")];
        assert_eq!(domain(&dirs, &declared, "/home/pg"), Ok(Domain::Root));
        assert_eq!(
            domain(&dirs, &declared, "/home/pg/conf/x"),
            Ok(Domain::User {
                name: "postgres".into(),
                uid: None
            })
        );
        assert_eq!(domain(&dirs, &[], "/home/pg/conf/x"), Ok(Domain::Root));
    }

    #[test]
    fn folders_of_lists_every_folder_from_the_root() {
        assert_eq!(folders_of("/a/b/c"), ["/", "/a", "/a/b"]);
        assert_eq!(folders_of("/a"), ["/"]);
    }
}
