//! `Command`: the escape hatch. It must carry a guard (`creates`, `unless`, `onlyif`) or run only
//! when notified (`refresh_only`), so that a second converge does nothing.

use super::{CheckCx, Kind, Primitive, PrimitiveSpec, desired};
use crate::diag::Diagnostic;
use crate::kinds::Desired;
use crate::kinds::HostCx;
use crate::kinds::Manifest;
use crate::model::desired::Content;
use crate::shell::quote;
use crate::vocab::cx::PlanCx;
use crate::vocab::records::Records;
use crate::vocab::state::Managed;
use crate::vocab::step::{Action, Change, Planned, Step};
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
    /// A check polled (every 2 s) before running, until it succeeds: e.g. "the cluster has a
    /// primary". Lets a command on one host wait for a service another host is bringing up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<String>,
    /// Seconds to wait for `wait_for` before failing.
    #[serde(default = "default_wait")]
    pub wait_timeout: u64,
}

fn default_wait() -> u64 {
    300
}

fn default_timeout() -> u64 {
    300
}

impl CommandSpec {
    /// Shell that prints the guard records.
    fn guards(&self, index: usize, out: &mut String) {
        out.push_str(&format!("printf '%s\\tcommand\\n' {index}\n"));
        if let Some(c) = &self.creates {
            out.push_str(&format!("pl_guard {index} creates {}\n", quote(c)));
        }
        if let Some(c) = &self.unless {
            out.push_str(&format!("pl_guard {index} unless {}\n", quote(c)));
        }
        if let Some(c) = &self.onlyif {
            out.push_str(&format!("pl_guard {index} onlyif {}\n", quote(c)));
        }
    }

    /// True when the guards say the command must run.
    pub fn guards_say_run(&self, actual: &Records) -> bool {
        let g = |k: &str| actual.get(k).and_then(|f| f.first()).map(String::as_str);
        let creates_ok = self.creates.is_none() || g("creates") == Some("fail");
        let unless_ok = self.unless.is_none() || g("unless") == Some("fail");
        let onlyif_ok = self.onlyif.is_none() || g("onlyif") == Some("ok");
        creates_ok && unless_ok && onlyif_ok
    }

    /// `pl_command_run`: the guards checked again right before running, the wait, the run.
    fn step(&self) -> Step {
        let mut argv = vec![
            "pl_command_run".to_string(),
            self.creates.clone().unwrap_or_default(),
            self.unless.clone().unwrap_or_default(),
            self.onlyif.clone().unwrap_or_default(),
            self.wait_timeout.to_string(),
            self.wait_for.clone().unwrap_or_default(),
            self.user.clone().unwrap_or_default(),
            self.cwd.clone().unwrap_or_default(),
            self.timeout.to_string(),
            self.run.clone(),
        ];
        argv.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        Step::exec(argv)
    }
}

impl Kind for CommandSpec {
    fn default_name(&self) -> Option<String> {
        None
    }

    fn check(&self, cx: &mut CheckCx) {
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
            if !super::compose_stack::is_env_key(k) {
                cx.error(
                    &format!("env.{k}"),
                    format!("`{k}` is not an environment variable name"),
                    None,
                );
            }
        }
    }

    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::Command(self.clone()),
        )])
    }
}

impl Primitive for CommandSpec {
    fn shell() -> &'static str {
        include_str!("command.sh")
    }

    /// A command that ran is not undone.
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
        self.guards(index, out);
    }

    fn cas_keys(&self) -> &'static [&'static str] {
        &[]
    }

    fn cas_probe(&self, _index: usize, _out: &mut String) {}

    fn plan(&self, _index: usize, actual: Records, _cx: &PlanCx) -> Planned {
        let mut p = Planned::default();
        if self.refresh_only {
            return p;
        }
        if self.guards_say_run(&actual) {
            p.action = Some(Action::Run);
            p.changes
                .push(Change::new("run", None, Some(self.run.clone())));
            p.steps.push(self.step());
        }
        p
    }

    fn refresh(&self, _cx: &PlanCx) -> Vec<Step> {
        vec![self.step()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{managed, plan_cx, records};

    fn want() -> CommandSpec {
        CommandSpec {
            run: "initdb /srv/db".into(),
            creates: Some("/srv/db/PG_VERSION".into()),
            unless: None,
            onlyif: None,
            refresh_only: false,
            user: Some("postgres".into()),
            cwd: None,
            env: BTreeMap::from([("LANG".to_string(), "C".to_string())]),
            timeout: 60,
            wait_for: None,
            wait_timeout: 300,
        }
    }

    /// Planned from what the guards print: `N<TAB>command`, then one record per guard.
    fn plan(c: &CommandSpec, guards: &str) -> Planned {
        c.plan(
            0,
            records(&format!("0\tcommand\n{guards}")).of(0),
            &plan_cx(),
        )
    }

    #[test]
    fn a_guard_that_says_done_plans_nothing() {
        let p = plan(&want(), "0.creates\tok\n");
        assert!(p.steps.is_empty() && p.changes.is_empty() && p.error.is_none());
    }

    #[test]
    fn a_guard_that_says_run_runs_it_with_its_guards_checked_again() {
        let p = plan(&want(), "0.creates\tfail\n");
        assert_eq!(p.action, Some(Action::Run));
        assert_eq!(
            p.steps,
            [Step::exec([
                "pl_command_run",
                "/srv/db/PG_VERSION",
                "",
                "",
                "300",
                "",
                "postgres",
                "",
                "60",
                "initdb /srv/db",
                "LANG=C",
            ])]
        );
        // unless / onlyif: every guard must agree.
        let mut c = want();
        c.unless = Some("test -f /x".into());
        c.onlyif = Some("test -d /srv".into());
        assert_eq!(
            plan(&c, "0.creates\tfail\n0.unless\tfail\n0.onlyif\tok\n")
                .steps
                .len(),
            1
        );
        assert!(
            plan(&c, "0.creates\tfail\n0.unless\tok\n0.onlyif\tok\n")
                .steps
                .is_empty()
        );
        assert!(
            plan(&c, "0.creates\tfail\n0.unless\tfail\n0.onlyif\tfail\n")
                .steps
                .is_empty()
        );
    }

    #[test]
    fn a_refresh_only_command_runs_only_when_notified() {
        let mut c = want();
        c.refresh_only = true;
        assert!(plan(&c, "0.creates\tfail\n").steps.is_empty());
        assert_eq!(c.refresh(&plan_cx()).len(), 1);
    }

    #[test]
    fn a_command_that_left_the_repo_is_not_undone() {
        assert!(CommandSpec::prune(&managed("Command", "initdb", &[]), &plan_cx()).is_empty());
        assert!(want().cas_keys().is_empty());
    }

    #[test]
    fn a_guard_record_the_probe_cannot_print_never_runs_the_command() {
        let mut c = want();
        c.onlyif = Some("true".into());
        for guards in [
            "",
            "0.creates\tmaybe\n",
            "0.creates\tfail\n0.onlyif\tOK\n",
            "0.creates\tfail\n0.onlyif\n",
        ] {
            assert!(plan(&c, guards).steps.is_empty(), "{guards:?}");
        }
    }
}
