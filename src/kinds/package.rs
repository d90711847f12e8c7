//! `Package`: OS packages installed (or removed) with the VM's package manager (apt or dnf).

use super::{CheckCx, Kind, Primitive, PrimitiveSpec, desired};
use crate::diag::Diagnostic;
use crate::kinds::Desired;
use crate::kinds::HostCx;
use crate::kinds::Manifest;
use crate::model::desired::Content;
use crate::model::values::Presence;
use crate::shell::quote;
use crate::vocab::cx::PlanCx;
use crate::vocab::records::Records;
use crate::vocab::state::Managed;
use crate::vocab::step::{Action, Change, Planned, Step};
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

/// True for `NAME[:ARCH][=VERSION]` where NAME follows the Debian and RPM grammars (a letter or
/// digit first, then letters, digits and `.+-_`), ARCH is letters, digits and `-`, and VERSION
/// starts with a digit and uses letters, digits and `.+~:_-`. Nothing can start with `-`, so no
/// package name reaches apt or dnf as an option (`-y`, `--allow-downgrades`).
pub fn is_valid_package(spec: &str) -> bool {
    let (name_arch, version) = match spec.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
    let (name, arch) = match name_arch.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (name_arch, None),
    };
    let name_ok = name.len() <= 255
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'_'));
    let arch_ok = arch.is_none_or(|a| {
        a.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    let version_ok = version.is_none_or(|v| {
        v.bytes().next().is_some_and(|b| b.is_ascii_digit())
            && v.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'~' | b':' | b'_' | b'-')
            })
    });
    name_ok && arch_ok && version_ok
}

impl Kind for PackageSpec {
    fn default_name(&self) -> Option<String> {
        None
    }

    fn check(&self, cx: &mut CheckCx) {
        if self.packages.is_empty() {
            cx.error("packages", "list at least one package", None);
        }
        for (i, p) in self.packages.iter().enumerate() {
            if !is_valid_package(p) {
                cx.error(
                    &format!("packages[{i}]"),
                    format!("`{p}` is not a package name"),
                    Some("a package name starts with a letter or digit and uses letters, digits and . + - _ (Debian and RPM names), optionally `:ARCH` and `=VERSION` (a version starts with a digit); nothing may start with `-`, which apt and dnf would read as an option".into()),
                );
            }
        }
    }

    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::Package(self.clone()),
        )])
    }
}

impl Primitive for PackageSpec {
    fn shell() -> &'static str {
        include_str!("package.sh")
    }

    /// Packages that left the repo stay installed: removing them could take what other
    /// software needs.
    fn prune(_m: &Managed, _cx: &PlanCx) -> Vec<Step> {
        Vec::new()
    }

    fn contents(&self) -> Vec<&Content> {
        Vec::new()
    }

    fn paths(&self) -> Vec<String> {
        Vec::new()
    }

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
        if !matches!(manager, "apt" | "dnf" | "none") {
            // `pl_pkg` prints only these: anything else is not a record it printed.
            p.error = Some("the probe reported an unknown package manager".into());
            return p;
        }
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
                let mut argv = vec!["pl_pkg_install".to_string(), manager.to_string()];
                argv.extend(missing);
                p.steps.push(Step::exec(argv));
            }
            Presence::Absent if !installed.is_empty() => {
                p.action = Some(Action::Delete);
                for m in &installed {
                    p.changes
                        .push(Change::new("package", Some(m.clone()), None));
                }
                let mut argv = vec!["pl_pkg_remove".to_string(), manager.to_string()];
                argv.extend(installed);
                p.steps.push(Step::exec(argv));
            }
            _ => {}
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{managed, plan_cx, records};

    fn want(packages: &[&str]) -> PackageSpec {
        PackageSpec {
            packages: packages.iter().map(|p| p.to_string()).collect(),
            state: Presence::Present,
            manager: PackageManager::Auto,
        }
    }

    /// Planned from what `pl_pkg` prints: the manager, then one `pkg` record per package.
    fn plan(p: &PackageSpec, body: &str) -> Planned {
        p.plan(0, records(body).of(0), &plan_cx())
    }

    const APT: &str = "0.mgr\tapt\n0.pkg\tcurl\tinstalled\t7.88.1-10+deb12u5\n0.pkg\tjq\tmissing\n";

    #[test]
    fn installed_packages_plan_nothing_and_missing_ones_are_installed() {
        let p = plan(&want(&["curl"]), APT);
        assert!(p.steps.is_empty() && p.changes.is_empty() && p.error.is_none());
        // A pinned version is looked up by its name.
        let p = plan(&want(&["curl", "jq=1.6-2.1"]), APT);
        assert_eq!(p.action, Some(Action::Update));
        assert_eq!(
            p.steps,
            [Step::exec(["pl_pkg_install", "apt", "jq=1.6-2.1"])]
        );
        assert_eq!(p.changes[0].to.as_deref(), Some("jq=1.6-2.1"));
        let p = plan(&want(&["jq"]), APT);
        assert_eq!(p.action, Some(Action::Create));
        // The manifest's manager wins over the host's.
        let mut dnf = want(&["jq"]);
        dnf.manager = PackageManager::Dnf;
        assert_eq!(
            plan(&dnf, APT).steps,
            [Step::exec(["pl_pkg_install", "dnf", "jq"])]
        );
    }

    #[test]
    fn absent_packages_are_removed_when_installed() {
        let mut p = want(&["curl", "jq"]);
        p.state = Presence::Absent;
        let planned = plan(&p, APT);
        assert_eq!(planned.action, Some(Action::Delete));
        assert_eq!(
            planned.steps,
            [Step::exec(["pl_pkg_remove", "apt", "curl"])]
        );
    }

    #[test]
    fn a_host_without_a_package_manager_is_an_error() {
        let p = plan(&want(&["jq"]), "0.mgr\tnone\n0.pkg\tjq\tunknown\n");
        assert!(p.steps.is_empty());
        assert!(p.error.unwrap().contains("no package manager"));
    }

    #[test]
    fn packages_that_left_the_repo_stay_installed() {
        assert!(PackageSpec::prune(&managed("Package", "tools", &[]), &plan_cx()).is_empty());
    }

    #[test]
    fn hostile_records_never_reach_a_step() {
        // A manager `pl_pkg` cannot print.
        let p = plan(&want(&["jq"]), "0.mgr\tsh\n0.pkg\tjq\tmissing\n");
        assert!(p.steps.is_empty() && p.error.is_some(), "{p:?}");
        // Records of packages nobody asked for, and a status that is not `installed`: only
        // the declared names are ever installed.
        let p = plan(
            &want(&["jq"]),
            "0.mgr\tapt\n0.pkg\t--force-yes\tmissing\n0.pkg\tjq\tinstalled?\n",
        );
        assert_eq!(p.steps, [Step::exec(["pl_pkg_install", "apt", "jq"])]);
    }

    #[test]
    fn package_names_follow_debian_and_rpm_grammar_and_never_look_like_options() {
        for ok in [
            "curl",
            "docker.io",
            "g++",
            "libc6:i386",
            "nginx=1.22.1-9",
            "pkg=2:1.0~rc1+dfsg-1",
            "NetworkManager",
            "python3.11",
        ] {
            assert!(is_valid_package(ok), "{ok}");
        }
        for bad in [
            "",
            "-y",
            "--force-yes",
            "jq=-1",
            "jq=",
            "x:",
            ":amd64",
            ".hidden",
            "a b",
            "a\nb",
            "a;rm",
            "x=1\n",
            "x:-arch",
        ] {
            assert!(!is_valid_package(bad), "{bad:?}");
        }
    }
}
