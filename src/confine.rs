//! Keeping the repo's files inside the repo.
//!
//! Whoever can push to the repo must not be able to make plumb read a file of the controller
//! (its age identity, its SSH key) and push it to a host: a committed `files/x -> /root/.ssh/id`
//! would do just that. So every file plumb reads from a repo (inventory, manifests, templates,
//! secrets, `source:` files, CA certificates) is resolved, symlinks included, and refused when it
//! lands outside the repo. Symlinks that stay inside the repo are fine; directories reached
//! through them are walked once (a link to a parent folder cannot loop).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// The folders of a repo plumb reads; every symlink under them must stay inside the repo.
pub const READ_DIRS: &[&str] = &[
    "inventory",
    "manifests",
    "templates",
    "secrets",
    "pki",
    "files",
];

/// Why a repo file cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confined {
    /// A symlink (the file itself or a folder on its way) leads outside the repo.
    Outside {
        /// The symlink, relative to the repo.
        link: PathBuf,
        /// Where it leads (resolved when it exists, else as written).
        target: PathBuf,
    },
    /// The file does not exist (or a symlink on its way is dangling).
    Missing(String),
}

impl fmt::Display for Confined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Confined::Outside { link, target } => write!(
                f,
                "`{}` is a symlink to `{}`, outside the repo",
                link.display(),
                target.display()
            ),
            Confined::Missing(e) => f.write_str(e),
        }
    }
}

/// The hint every "outside the repo" error carries.
pub const OUTSIDE_HINT: &str = "plumb reads only files inside the repo (what it reads may be pushed to hosts as root): copy the file into the repo, or make the link point inside it";

/// A repo root, resolved once.
#[derive(Clone, Debug)]
pub struct RepoRoot {
    canonical: PathBuf,
}

impl RepoRoot {
    /// Resolves `root` (itself possibly reached through symlinks: only what is below it counts).
    pub fn new(root: &Path) -> std::io::Result<RepoRoot> {
        Ok(RepoRoot {
            canonical: root.canonicalize()?,
        })
    }

    /// The resolved root.
    pub fn path(&self) -> &Path {
        &self.canonical
    }

    fn inside(&self, p: &Path) -> bool {
        p.starts_with(&self.canonical)
    }

    /// Resolves a repo-relative path, following symlinks, and checks that it and every folder
    /// on its way stay inside the repo. Returns the resolved path.
    pub fn resolve(&self, rel: &Path) -> Result<PathBuf, Confined> {
        let full = self.canonical.join(rel);
        match full.canonicalize() {
            Ok(c) if self.inside(&c) => Ok(c),
            Ok(c) => Err(Confined::Outside {
                link: self.first_escape(rel).unwrap_or_else(|| rel.to_path_buf()),
                target: c,
            }),
            Err(e) => match self.first_escape(rel) {
                // A dangling link that points outside is as bad as a live one.
                Some(link) => Err(Confined::Outside {
                    target: std::fs::read_link(self.canonical.join(&link)).unwrap_or_default(),
                    link,
                }),
                None => Err(Confined::Missing(format!("`{}`: {e}", rel.display()))),
            },
        }
    }

    /// The first symlink on the way to `rel` that leads outside the repo, repo-relative.
    fn first_escape(&self, rel: &Path) -> Option<PathBuf> {
        let mut prefix = PathBuf::new();
        for comp in rel.components() {
            prefix.push(comp);
            let full = self.canonical.join(&prefix);
            let Ok(meta) = full.symlink_metadata() else {
                return None;
            };
            if meta.file_type().is_symlink() && !self.link_stays_inside(&full) {
                return Some(prefix);
            }
        }
        None
    }

    /// True when the symlink at `link` leads inside the repo: resolved when it resolves, else
    /// judged by its text (a dangling link to `/etc/x` is outside, one to `../x` may not be).
    fn link_stays_inside(&self, link: &Path) -> bool {
        match link.canonicalize() {
            Ok(c) => self.inside(&c),
            Err(_) => {
                let Ok(target) = std::fs::read_link(link) else {
                    return false;
                };
                let base = link.parent().unwrap_or(&self.canonical);
                let joined = if target.is_absolute() {
                    target
                } else {
                    base.join(target)
                };
                lexical_normalize(&joined).is_some_and(|p| self.inside(&p))
            }
        }
    }

    /// Every file under the repo-relative folder `dir` (sorted), following symlinks that stay
    /// inside the repo and visiting each real folder once; hidden entries are skipped. Symlinks
    /// that lead outside are returned as problems and not followed.
    pub fn walk(&self, dir: &str) -> Walk {
        let mut out = Walk::default();
        let start = self.canonical.join(dir);
        match start.symlink_metadata() {
            Err(_) => return out,
            Ok(m) if m.file_type().is_symlink() && !self.link_stays_inside(&start) => {
                out.escapes.push(self.escape_of(&start));
                return out;
            }
            Ok(_) => {}
        }
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(d) = stack.pop() {
            let Ok(real) = d.canonicalize() else { continue };
            if !seen.insert(real) {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let p = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_symlink() {
                    if !self.link_stays_inside(&p) {
                        out.escapes.push(self.escape_of(&p));
                        continue;
                    }
                    match p.metadata() {
                        Ok(m) if m.is_dir() => stack.push(p),
                        Ok(_) => out.files.push(p),
                        Err(_) => {} // dangling, inside: nothing to read
                    }
                } else if ft.is_dir() {
                    stack.push(p);
                } else {
                    out.files.push(p);
                }
            }
        }
        out.files.sort();
        out.escapes.sort_by(|a, b| a.link.cmp(&b.link));
        out
    }

    fn escape_of(&self, link: &Path) -> Escape {
        let target = link
            .canonicalize()
            .or_else(|_| std::fs::read_link(link))
            .unwrap_or_default();
        Escape {
            link: link
                .strip_prefix(&self.canonical)
                .unwrap_or(link)
                .to_path_buf(),
            target,
        }
    }
}

/// What [`RepoRoot::walk`] found.
#[derive(Clone, Debug, Default)]
pub struct Walk {
    /// Files (absolute, under the resolved root or reached through inside links).
    pub files: Vec<PathBuf>,
    /// Symlinks that lead outside the repo.
    pub escapes: Vec<Escape>,
}

/// A symlink that leads outside the repo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escape {
    /// The link, repo-relative.
    pub link: PathBuf,
    /// Where it leads.
    pub target: PathBuf,
}

impl Escape {
    /// The diagnostic naming the link.
    pub fn diagnostic(&self) -> crate::diag::Diagnostic {
        crate::diag::Diagnostic::file(
            &self.link,
            Confined::Outside {
                link: self.link.clone(),
                target: self.target.clone(),
            }
            .to_string(),
        )
        .with_hint(OUTSIDE_HINT)
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system; `None` when `..` climbs above the
/// start.
fn lexical_normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_inside_are_followed_once_and_links_outside_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("id_ed25519"), "PRIVATE").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("files/sub")).unwrap();
        std::fs::write(root.join("files/motd"), "hi").unwrap();
        std::fs::write(root.join("files/sub/a"), "a").unwrap();
        symlink("motd", root.join("files/motd-link")).unwrap();
        symlink("..", root.join("files/sub/loop")).unwrap();
        symlink(outside.path().join("id_ed25519"), root.join("files/key")).unwrap();
        symlink(outside.path(), root.join("files/elsewhere")).unwrap();
        symlink("/nonexistent/plumb/x", root.join("files/dangling")).unwrap();
        symlink("../../../../../../../../etc", root.join("files/up")).unwrap();
        let r = RepoRoot::new(root).unwrap();

        let w = r.walk("files");
        let files: Vec<String> = w
            .files
            .iter()
            .map(|f| f.strip_prefix(r.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(files, ["files/motd", "files/motd-link", "files/sub/a"]);
        let links: Vec<String> = w
            .escapes
            .iter()
            .map(|e| e.link.display().to_string())
            .collect();
        assert_eq!(
            links,
            ["files/dangling", "files/elsewhere", "files/key", "files/up"]
        );
        let d = w.escapes[2].diagnostic().to_string();
        assert!(
            d.starts_with("files/key: error: `files/key` is a symlink to `"),
            "{d}"
        );
        assert!(d.contains("id_ed25519`, outside the repo"), "{d}");

        assert!(r.resolve(Path::new("files/motd-link")).is_ok());
        assert!(r.resolve(Path::new("files/sub/loop/motd")).is_ok());
        assert_eq!(
            r.resolve(Path::new("files/elsewhere/id_ed25519")),
            Err(Confined::Outside {
                link: "files/elsewhere".into(),
                target: outside.path().canonicalize().unwrap().join("id_ed25519"),
            })
        );
        assert!(matches!(
            r.resolve(Path::new("files/dangling")),
            Err(Confined::Outside { .. })
        ));
        assert!(matches!(
            r.resolve(Path::new("files/none")),
            Err(Confined::Missing(_))
        ));
        // A whole folder linked outside.
        symlink(outside.path(), root.join("templates")).unwrap();
        let w = r.walk("templates");
        assert!(w.files.is_empty());
        assert_eq!(w.escapes[0].link, PathBuf::from("templates"));
    }
}
