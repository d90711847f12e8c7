//! `Directory`: a folder with owner, group and mode.

use super::{CheckCx, PrimitiveSpec, desired};
use crate::diag::Diagnostic;
use crate::model::desired::{Content, Desired};
use crate::model::manifest::Manifest;
use crate::model::values::{FileMode, Presence};
use crate::render::HostCx;
use serde::{Deserialize, Serialize};

/// A directory; parents are created as needed (owned by root, mode 0755).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySpec {
    /// Absolute path.
    pub path: String,
    /// Owner (name or uid).
    #[serde(default = "root")]
    pub owner: String,
    /// Group (name or gid).
    #[serde(default = "root")]
    pub group: String,
    /// Permission mode.
    #[serde(default = "dir_mode")]
    pub mode: FileMode,
    /// Present or absent (an absent directory is removed only if empty).
    #[serde(default)]
    pub state: Presence,
}

pub(crate) fn root() -> String {
    "root".into()
}

fn dir_mode() -> FileMode {
    FileMode(0o755)
}

impl DirectorySpec {
    pub(crate) fn default_name(&self) -> Option<String> {
        Some(self.path.clone())
    }

    pub(crate) fn check(&self, cx: &mut CheckCx) {
        cx.abs_path("path", &self.path, &[]);
        cx.account("owner", &self.owner);
        cx.account("group", &self.group);
    }

    pub(crate) fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::Directory(self.clone()),
        )])
    }

    pub(crate) fn contents(&self) -> Vec<&Content> {
        Vec::new()
    }

    pub(crate) fn paths(&self) -> Vec<String> {
        vec![self.path.clone()]
    }
}
