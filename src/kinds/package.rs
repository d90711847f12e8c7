//! `Package`: OS packages installed (or removed) with the VM's package manager (apt or dnf).

use super::{CheckCx, PrimitiveSpec, desired};
use crate::diag::Diagnostic;
use crate::model::desired::{Content, Desired};
use crate::model::manifest::Manifest;
use crate::model::values::Presence;
use crate::render::HostCx;
use serde::{Deserialize, Serialize};

/// Which package manager to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    /// apt-get if present, else dnf.
    #[default]
    Auto,
    /// Debian and Ubuntu.
    Apt,
    /// Fedora, RHEL and friends.
    Dnf,
}

/// A set of packages.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    /// Package names, e.g. `[docker.io, docker-compose]`.
    pub packages: Vec<String>,
    /// Present or absent.
    #[serde(default)]
    pub state: Presence,
    /// Package manager.
    #[serde(default)]
    pub manager: PackageManager,
}

impl PackageSpec {
    pub(crate) fn default_name(&self) -> Option<String> {
        None
    }

    pub(crate) fn check(&self, cx: &mut CheckCx) {
        if self.packages.is_empty() {
            cx.error("packages", "list at least one package", None);
        }
        for (i, p) in self.packages.iter().enumerate() {
            let ok = !p.is_empty()
                && p.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'+' | b'-' | b'_' | b':' | b'=')
                });
            if !ok {
                cx.error(
                    &format!("packages[{i}]"),
                    format!("`{p}` is not a package name"),
                    Some("package names use letters, digits and . + - _ (and `=version`)".into()),
                );
            }
        }
    }

    pub(crate) fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::Package(self.clone()),
        )])
    }

    pub(crate) fn contents(&self) -> Vec<&Content> {
        Vec::new()
    }

    pub(crate) fn paths(&self) -> Vec<String> {
        Vec::new()
    }
}
