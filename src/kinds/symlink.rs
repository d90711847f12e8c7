//! `Symlink`: a symbolic link pointing at a target.

use super::{CheckCx, PrimitiveSpec, desired};
use crate::diag::Diagnostic;
use crate::model::desired::{Content, Desired};
use crate::model::manifest::Manifest;
use crate::model::values::Presence;
use crate::render::HostCx;
use serde::{Deserialize, Serialize};

/// A symbolic link at `path` pointing at `target`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SymlinkSpec {
    /// Absolute path of the link.
    pub path: String,
    /// What it points at (absolute, or relative to the link's folder).
    pub target: String,
    /// Owner of the link itself.
    #[serde(default = "super::directory::root")]
    pub owner: String,
    /// Group of the link itself.
    #[serde(default = "super::directory::root")]
    pub group: String,
    /// Present or absent.
    #[serde(default)]
    pub state: Presence,
}

impl SymlinkSpec {
    pub(crate) fn default_name(&self) -> Option<String> {
        Some(self.path.clone())
    }

    pub(crate) fn check(&self, cx: &mut CheckCx) {
        cx.abs_path("path", &self.path, &[]);
        cx.account("owner", &self.owner);
        cx.account("group", &self.group);
        if self.target.is_empty() || self.target.contains('\n') {
            cx.error(
                "target",
                "a symlink target must be a non-empty single line",
                None,
            );
        }
    }

    pub(crate) fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::Symlink(self.clone()),
        )])
    }

    pub(crate) fn contents(&self) -> Vec<&Content> {
        Vec::new()
    }

    pub(crate) fn paths(&self) -> Vec<String> {
        vec![self.path.clone()]
    }
}
