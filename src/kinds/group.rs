//! `Group`: an OS group, with its gid pinned when given.

use super::{CheckCx, PrimitiveSpec, desired};
use crate::diag::Diagnostic;
use crate::model::desired::{Content, Desired};
use crate::model::manifest::Manifest;
use crate::model::values::{Presence, is_valid_account_name};
use crate::render::HostCx;
use serde::{Deserialize, Serialize};

/// A group. Its name is the resource's `name`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// The OS group name (filled from the resource name).
    #[serde(default, skip_deserializing)]
    pub group: String,
    /// Numeric id; a group that exists with another gid is a conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Create as a system group (when no gid is given).
    #[serde(default)]
    pub system: bool,
    /// Present or absent.
    #[serde(default)]
    pub state: Presence,
}

impl GroupSpec {
    pub(crate) fn default_name(&self) -> Option<String> {
        None
    }

    pub(crate) fn check(&self, cx: &mut CheckCx) {
        if !is_valid_account_name(&cx.manifest.name) {
            let name = cx.manifest.name.clone();
            cx.error(
                "name",
                format!("`{name}` is not a valid group name"),
                Some("use lowercase letters, digits, `_` and `-`, starting with a letter".into()),
            );
        }
    }

    pub(crate) fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        let mut spec = self.clone();
        spec.group = m.name.clone();
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::Group(spec),
        )])
    }

    pub(crate) fn contents(&self) -> Vec<&Content> {
        Vec::new()
    }

    pub(crate) fn paths(&self) -> Vec<String> {
        Vec::new()
    }
}
