//! The plan's vocabulary: what a kind's planner returns ([`Planned`]: changes in words, the steps
//! that repair them, content diffs) and the steps themselves. Plain data, serializable into a
//! plan file; turning steps into shell is the apply stage's job (and, for a kind's own
//! commands, the kind's shell fragment).

use crate::model::desired::Content;
use crate::model::values::FileMode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// `groupadd`.
    GroupAdd {
        name: String,
        gid: Option<u32>,
        system: bool,
    },
    /// `groupmod -g`, re-owning the group's files when asked.
    GroupRenumber {
        name: String,
        old: u32,
        new: u32,
        reown: bool,
    },
    /// `groupdel`.
    GroupDel { name: String },
    /// `useradd`.
    UserAdd {
        name: String,
        uid: Option<u32>,
        group: Option<String>,
        groups: Vec<String>,
        home: Option<String>,
        shell: Option<String>,
        comment: Option<String>,
        system: bool,
        create_home: bool,
    },
    /// `usermod` for attributes other than the uid.
    UserMod {
        name: String,
        group: Option<String>,
        add_groups: Vec<String>,
        home: Option<String>,
        shell: Option<String>,
        comment: Option<String>,
    },
    /// `usermod -u`, then re-own the user's files elsewhere on the file system.
    UserRenumber { name: String, old: u32, new: u32 },
    /// `userdel`.
    UserDel { name: String },
    /// Install packages.
    PkgInstall {
        manager: String,
        packages: Vec<String>,
    },
    /// Remove packages.
    PkgRemove {
        manager: String,
        packages: Vec<String>,
    },
    /// `systemctl daemon-reload` (once per host, after unit files changed).
    DaemonReload,
    /// `systemctl <verb> <unit>`.
    Systemctl { verb: String, unit: String },
    /// `docker compose up -d` in a folder.
    StackUp { project: String, dir: String },
    /// `docker compose down` in a folder.
    StackDown { project: String, dir: String },
    /// `docker compose restart [services]`.
    StackRestart {
        project: String,
        dir: String,
        services: Vec<String>,
    },
    /// Run a command.
    Run {
        command: String,
        user: Option<String>,
        cwd: Option<String>,
        env: BTreeMap<String, String>,
        timeout: u64,
        /// Shell test re-checked right before running (empty: none).
        guard: String,
        /// Check polled before running until it succeeds (empty: none).
        #[serde(default)]
        wait_for: String,
        /// Seconds to wait for `wait_for`.
        #[serde(default)]
        wait_timeout: u64,
    },
    /// Issue a certificate on the controller and write key, certificate and CA files.
    IssueCertificate { index: usize, reason: String },
}

impl Step {
    /// True for steps that only change a unit's state (they run after `daemon-reload`).
    pub fn after_reload(&self) -> bool {
        matches!(self, Step::Systemctl { .. })
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
    /// Unified diff text, filled in after fetching (never for sensitive content).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
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
    }
}

/// The first 12 hex digits of a hash, for display.
pub fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}
