//! The plan's vocabulary: what a kind's planner returns ([`Planned`]: changes in words, the steps
//! that repair them, content diffs) and the steps themselves. Plain data, serializable into a
//! plan file; turning steps into shell is the apply stage's job (and, for a kind's own
//! commands, the kind's shell fragment).

use crate::model::desired::Content;
use crate::model::values::FileMode;
use serde::{Deserialize, Serialize};

/// Content referenced by a step: its hash, and whether it may be shown. The bytes travel in
/// [`HostPlan::contents`], never in a serialized plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRef {
    /// Hex SHA-256.
    pub sha256: String,
    /// Never show it.
    pub sensitive: bool,
}

impl ContentRef {
    /// Refers to content.
    pub fn of(c: &Content) -> Self {
        ContentRef {
            sha256: c.sha256(),
            sensitive: c.sensitive,
        }
    }
}

/// One thing to do on a host. Apply turns steps into shell; planning never touches a host.
///
/// The file-system steps are the apply stage's own (it stages, checks, backs up and switches to
/// the folder's user for them). Everything else a kind does is an [`Step::Exec`]: a command
/// line built by the kind, every word quoted by the apply stage, calling a system tool or a
/// function of the kind's own shell fragment (its `.sh` file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Write a file atomically (temp file, fsync, owner and mode, rename), keeping a backup.
    WriteFile {
        path: String,
        content: ContentRef,
        owner: String,
        group: String,
        mode: FileMode,
    },
    /// Change owner, group or mode.
    SetMeta {
        path: String,
        owner: Option<String>,
        group: Option<String>,
        mode: Option<FileMode>,
    },
    /// Create a directory (and missing parents).
    Mkdir {
        path: String,
        owner: String,
        group: String,
        mode: FileMode,
    },
    /// Remove a file or symlink (keeping a backup of a file).
    Remove { path: String },
    /// Remove a directory if it is empty.
    RemoveDir { path: String },
    /// Point a symlink at a target (atomic replace).
    Symlink {
        path: String,
        target: String,
        owner: String,
        group: String,
    },
    /// `systemctl daemon-reload`: once per host, after every unit file of the run was written
    /// and before any step marked `after_reload` runs.
    DaemonReload,
    /// A kind's own command: `argv[0]` is a system tool or a function of the kind's shell
    /// fragment; the apply stage quotes every word.
    Exec {
        argv: Vec<String>,
        /// Run after the host's `daemon-reload` (unit state changes).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        after_reload: bool,
    },
    /// Issue a certificate on the controller and write key, certificate and CA files.
    IssueCertificate { index: usize, reason: String },
}

impl Step {
    /// A command step from its words.
    pub fn exec<I, S>(argv: I) -> Step
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Step::Exec {
            argv: argv.into_iter().map(Into::into).collect(),
            after_reload: false,
        }
    }

    /// True for steps that run after `daemon-reload`.
    pub fn after_reload(&self) -> bool {
        matches!(
            self,
            Step::Exec {
                after_reload: true,
                ..
            }
        )
    }

    /// The host path a file-system step acts on (for deciding whose hands run it).
    pub fn path(&self) -> Option<&str> {
        match self {
            Step::WriteFile { path, .. }
            | Step::SetMeta { path, .. }
            | Step::Mkdir { path, .. }
            | Step::Remove { path }
            | Step::RemoveDir { path }
            | Step::Symlink { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// A field that differs, in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Field name (`content`, `mode`, `owner`, `uid`, ...).
    pub field: String,
    /// Actual value (or hash), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Desired value (or hash), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl Change {
    /// A change from one value to another.
    pub fn new(field: &str, from: Option<String>, to: Option<String>) -> Self {
        Change {
            field: field.into(),
            from,
            to,
        }
    }
}

/// What a resource's plan does, in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// In sync.
    None,
    /// Will be created.
    Create,
    /// Will be changed.
    Update,
    /// Will be removed.
    Delete,
    /// A command will run.
    Run,
    /// Differs, but its drift policy is `detect`: reported, not repaired.
    Drift,
    /// Cannot be planned (e.g. a directory where a file should be).
    Error,
}

/// A content diff to show: the old content is fetched from the host only when needed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffSpec {
    /// Path on the host.
    pub path: String,
    /// Old content hash (None: the file does not exist).
    pub old_sha256: Option<String>,
    /// New content.
    pub new: ContentRef,
    /// True when the host's current content came from a secret (the host state says so):
    /// it is never fetched nor shown, whatever the new content is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub old_sensitive: bool,
    /// Unified diff text, filled in after fetching. For content from secrets, only the masked
    /// diff (`masked`), never the content itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// True when `text` is a masked diff: both sides rendered with each secret value replaced
    /// by its placeholder `<secret:NAME>`, the old side from plumb's host state, never from the
    /// host's bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub masked: bool,
    /// Why a masked diff does not show the previous content (it then shows the new content
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_not_shown: Option<String>,
}

/// What a kind's planner returns.
#[derive(Clone, Debug, Default)]
pub struct Planned {
    /// Fields that differ.
    pub changes: Vec<Change>,
    /// Steps that repair them.
    pub steps: Vec<Step>,
    /// Content diffs.
    pub diffs: Vec<DiffSpec>,
    /// Explicit action (otherwise derived).
    pub action: Option<Action>,
    /// A problem that prevents planning this resource.
    pub error: Option<String>,
}

/// Convenience for planners: the content diff of a file.
pub fn file_diff(path: &str, old: Option<&str>, new: &Content) -> DiffSpec {
    DiffSpec {
        path: path.to_string(),
        old_sha256: old.map(str::to_string),
        new: ContentRef::of(new),
        old_sensitive: false,
        text: None,
        masked: false,
        old_not_shown: None,
    }
}

/// The first 12 hex digits of a hash, for display.
pub fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}
