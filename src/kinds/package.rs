//! `Package`: OS packages installed (or removed) with the VM's package manager (apt or dnf).

use super::{CheckCx, Converge, PrimitiveSpec, desired};
use crate::diag::Diagnostic;
use crate::model::desired::{Content, Desired};
use crate::model::manifest::Manifest;
use crate::model::values::Presence;
use crate::plan::{Action, Change, PlanCx, Planned, Step};
use crate::probe::Records;
use crate::render::HostCx;
use crate::shell::quote;
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

impl Converge for PackageSpec {
    fn probe(&self, index: usize, out: &mut String) {
        out.push_str(&format!("pl_pkg {index}"));
        for p in &self.packages {
            out.push(' ');
            out.push_str(&quote(p.split('=').next().unwrap_or(p)));
        }
        out.push('\n');
    }

    fn plan(&self, _index: usize, actual: Records, _cx: &PlanCx) -> Planned {
        let mut p = Planned::default();
        let manager = match self.manager {
            PackageManager::Apt => "apt",
            PackageManager::Dnf => "dnf",
            PackageManager::Auto => actual
                .get("mgr")
                .and_then(|f| f.first())
                .map(String::as_str)
                .unwrap_or("none"),
        };
        let mut missing = Vec::new();
        let mut installed = Vec::new();
        for want in &self.packages {
            let name = want.split('=').next().unwrap_or(want);
            let rec = actual
                .all("pkg")
                .find(|f| f.first().map(String::as_str) == Some(name));
            match rec.and_then(|f| f.get(1)).map(String::as_str) {
                Some("installed") => installed.push(want.clone()),
                _ => missing.push(want.clone()),
            }
        }
        if manager == "none" && (self.state == Presence::Present && !missing.is_empty()) {
            p.error =
                Some("no package manager found on the host (neither dpkg/apt nor rpm/dnf)".into());
            return p;
        }
        match self.state {
            Presence::Present if !missing.is_empty() => {
                p.action = Some(if installed.is_empty() {
                    Action::Create
                } else {
                    Action::Update
                });
                for m in &missing {
                    p.changes
                        .push(Change::new("package", None, Some(m.clone())));
                }
                p.steps.push(Step::PkgInstall {
                    manager: manager.to_string(),
                    packages: missing,
                });
            }
            Presence::Absent if !installed.is_empty() => {
                p.action = Some(Action::Delete);
                for m in &installed {
                    p.changes
                        .push(Change::new("package", Some(m.clone()), None));
                }
                p.steps.push(Step::PkgRemove {
                    manager: manager.to_string(),
                    packages: installed,
                });
            }
            _ => {}
        }
        p
    }
}
