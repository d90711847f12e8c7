//! `User`: an OS user with pinned uid/gid, home, shell and supplementary groups.
//!
//! The seeds' `postgres` user is uid/gid 1001 so that files written by the container user are
//! owned by the same user on the VM. An existing user with another uid is a conflict, unless the
//! manifest sets `allow_renumber`, which then also re-owns that user's files.

use super::{CheckCx, PrimitiveSpec, desired};
use crate::diag::Diagnostic;
use crate::model::desired::{Content, Desired};
use crate::model::manifest::Manifest;
use crate::model::values::{Presence, check_abs_path, is_valid_account_name};
use crate::render::HostCx;
use serde::{Deserialize, Serialize};

/// A user. Its login name is the resource's `name`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// The login name (filled from the resource name).
    #[serde(default, skip_deserializing)]
    pub user: String,
    /// Numeric uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Primary group, by name (must exist or be declared as a Group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Supplementary groups (e.g. `docker`); the user is added to each and removed from no other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Home directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// Login shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// GECOS comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Create as a system user (when no uid is given).
    #[serde(default)]
    pub system: bool,
    /// Create the home directory.
    #[serde(default = "yes")]
    pub create_home: bool,
    /// Allow changing the uid of an existing user (and re-owning its files).
    #[serde(default)]
    pub allow_renumber: bool,
    /// Present or absent (absent users are removed only when declared absent).
    #[serde(default)]
    pub state: Presence,
}

fn yes() -> bool {
    true
}

impl UserSpec {
    pub(crate) fn default_name(&self) -> Option<String> {
        None
    }

    pub(crate) fn check(&self, cx: &mut CheckCx) {
        let name = cx.manifest.name.clone();
        if !is_valid_account_name(&name) {
            cx.error(
                "name",
                format!("`{name}` is not a valid user name"),
                Some("use lowercase letters, digits, `_` and `-`, starting with a letter".into()),
            );
        }
        if let Some(g) = &self.group {
            cx.account("group", g);
        }
        for (i, g) in self.groups.iter().enumerate() {
            cx.account(&format!("groups[{i}]"), g);
        }
        if let Some(h) = &self.home {
            cx.abs_path("home", h, &[]);
        }
        if let Some(s) = &self.shell
            && let Err(msg) = check_abs_path(s, &[])
        {
            cx.error("shell", msg, None);
        }
    }

    pub(crate) fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        let mut spec = self.clone();
        spec.user = m.name.clone();
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::User(spec),
        )])
    }

    pub(crate) fn contents(&self) -> Vec<&Content> {
        Vec::new()
    }

    pub(crate) fn paths(&self) -> Vec<String> {
        Vec::new()
    }
}
