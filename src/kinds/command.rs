//! `Command`: the escape hatch. It must carry a guard (`creates`, `unless`, `onlyif`) or run only
//! when notified (`refresh_only`), so that a second converge does nothing.

use super::{CheckCx, PrimitiveSpec, desired};
use crate::diag::Diagnostic;
use crate::model::desired::{Content, Desired};
use crate::model::manifest::Manifest;
use crate::render::HostCx;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A shell command with a guard.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// The command, run by `sh -c` as root (or `user`).
    pub run: String,
    /// Skip when this path exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creates: Option<String>,
    /// Skip when this command succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unless: Option<String>,
    /// Run only when this command succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onlyif: Option<String>,
    /// Run only when a resource that notifies it changed.
    #[serde(default)]
    pub refresh_only: bool,
    /// Run as this user instead of root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Extra environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Seconds before the command is killed.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn default_timeout() -> u64 {
    300
}

impl CommandSpec {
    pub(crate) fn default_name(&self) -> Option<String> {
        None
    }

    pub(crate) fn check(&self, cx: &mut CheckCx) {
        if self.creates.is_none()
            && self.unless.is_none()
            && self.onlyif.is_none()
            && !self.refresh_only
        {
            cx.error(
                "run",
                "a Command needs a guard so that it stays idempotent",
                Some("add `creates: /path/it/makes`, `unless: <check command>`, `onlyif: <check command>`, or `refresh_only: true` (run only when notified)".into()),
            );
        }
        if let Some(p) = &self.creates {
            cx.abs_path("creates", p, &[]);
        }
        if let Some(p) = &self.cwd {
            cx.abs_path("cwd", p, &[]);
        }
        if let Some(u) = &self.user {
            cx.account("user", u);
        }
        for k in self.env.keys() {
            let ok = k
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                cx.error(
                    &format!("env.{k}"),
                    format!("`{k}` is not an environment variable name"),
                    None,
                );
            }
        }
    }

    pub(crate) fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::Command(self.clone()),
        )])
    }

    pub(crate) fn contents(&self) -> Vec<&Content> {
        Vec::new()
    }

    pub(crate) fn paths(&self) -> Vec<String> {
        Vec::new()
    }
}
