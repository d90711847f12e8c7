//! `Group`: an OS group, with its gid pinned when given.

use super::{CheckCx, Kind, Primitive, PrimitiveSpec, desired};
use crate::diag::Diagnostic;
use crate::kinds::Desired;
use crate::kinds::HostCx;
use crate::kinds::Manifest;
use crate::model::desired::Content;
use crate::model::values::{Presence, is_valid_account_name};
use crate::shell::quote;
use crate::vocab::cx::PlanCx;
use crate::vocab::records::Records;
use crate::vocab::state::Managed;
use crate::vocab::step::{Action, Change, Planned, Step};
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
    /// Allow changing the gid of an existing group (and re-owning its files).
    #[serde(default)]
    pub allow_renumber: bool,
    /// Present or absent.
    #[serde(default)]
    pub state: Presence,
}

/// A parsed `getent group` line.
pub fn parse_group_entry(line: &str) -> Option<(String, u32, Vec<String>)> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 4 {
        return None;
    }
    let members = f[3]
        .split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    Some((f[0].to_string(), f[2].parse().ok()?, members))
}

impl Kind for GroupSpec {
    fn default_name(&self) -> Option<String> {
        None
    }

    fn check(&self, cx: &mut CheckCx) {
        if !is_valid_account_name(&cx.manifest.name) {
            let name = cx.manifest.name.clone();
            cx.error(
                "name",
                format!("`{name}` is not a valid group name"),
                Some("use lowercase letters, digits, `_` and `-`, starting with a letter".into()),
            );
        }
    }

    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        let mut spec = self.clone();
        spec.group = m.name.clone();
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::Group(spec),
        )])
    }
}

impl Primitive for GroupSpec {
    fn shell() -> &'static str {
        include_str!("group.sh")
    }

    /// Groups go only with `--prune-users`.
    fn prune(m: &Managed, cx: &PlanCx) -> Vec<Step> {
        if cx.prune_users {
            vec![del_step(&m.name)]
        } else {
            Vec::new()
        }
    }

    fn contents(&self) -> Vec<&Content> {
        Vec::new()
    }

    fn paths(&self) -> Vec<String> {
        Vec::new()
    }

    fn probe(&self, index: usize, out: &mut String) {
        out.push_str(&format!("pl_group {index} {}\n", quote(&self.group)));
    }

    fn plan(&self, _index: usize, actual: Records, _cx: &PlanCx) -> Planned {
        let mut p = Planned::default();
        let rec = actual.get("").unwrap_or(&[]);
        let present = rec.first().map(String::as_str) == Some("present");
        match (self.state, present) {
            (Presence::Present, false) => {
                p.action = Some(Action::Create);
                p.changes.push(Change::new(
                    "group",
                    None,
                    Some(match self.gid {
                        Some(g) => format!("{} (gid {g})", self.group),
                        None => self.group.clone(),
                    }),
                ));
                p.steps.push(self.add_step());
            }
            (Presence::Present, true) => {
                let entry = rec
                    .get(1)
                    .and_then(|b| crate::vocab::records::decode_text(b))
                    .and_then(|l| parse_group_entry(&l))
                    .filter(|(name, _, _)| *name == self.group);
                let Some((_, gid, _)) = entry else {
                    p.error = Some("unreadable group entry".into());
                    return p;
                };
                if let Some(want) = self.gid.filter(|w| *w != gid) {
                    if self.allow_renumber {
                        p.changes.push(Change::new(
                            "gid",
                            Some(gid.to_string()),
                            Some(want.to_string()),
                        ));
                        p.steps.push(Step::exec([
                            "groupmod".to_string(),
                            "-g".into(),
                            want.to_string(),
                            "--".into(),
                            self.group.clone(),
                        ]));
                        p.steps.push(Step::exec([
                            "pl_reown_gid".to_string(),
                            gid.to_string(),
                            want.to_string(),
                        ]));
                    } else {
                        p.error = Some(format!(
                            "group `{}` exists with gid {gid}, but the manifest pins gid {want}; set `allow_renumber: true` to change it (its files are re-owned), or change the manifest",
                            self.group
                        ));
                    }
                }
            }
            (Presence::Absent, true) => {
                p.action = Some(Action::Delete);
                p.changes
                    .push(Change::new("group", Some(self.group.clone()), None));
                p.steps.push(del_step(&self.group));
            }
            (Presence::Absent, false) => {}
        }
        p
    }
}

impl GroupSpec {
    /// `groupadd`, with the pinned gid (or as a system group).
    fn add_step(&self) -> Step {
        let mut argv = vec!["groupadd".to_string()];
        if let Some(g) = self.gid {
            argv.extend(["-g".into(), g.to_string()]);
        } else if self.system {
            argv.push("-r".into());
        }
        argv.extend(["--".into(), self.group.clone()]);
        Step::exec(argv)
    }
}

fn del_step(name: &str) -> Step {
    Step::exec(["groupdel", "--", name])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{b64, managed, plan_cx, records};

    fn want() -> GroupSpec {
        GroupSpec {
            group: "postgres".into(),
            gid: Some(1001),
            system: false,
            allow_renumber: false,
            state: Presence::Present,
        }
    }

    /// What `pl_group` prints for a group: its `getent group` line, base64.
    fn present(entry: &str) -> String {
        format!("present\t{}", b64(&format!("{entry}\n")))
    }

    fn plan(g: &GroupSpec, record: &str) -> Planned {
        g.plan(0, records(&format!("0\t{record}\n")).of(0), &plan_cx())
    }

    #[test]
    fn a_group_in_sync_plans_nothing_and_an_absent_one_is_added() {
        let p = plan(&want(), &present("postgres:x:1001:app"));
        assert!(p.steps.is_empty() && p.changes.is_empty() && p.error.is_none());
        let p = plan(&want(), "absent");
        assert_eq!(p.action, Some(Action::Create));
        assert_eq!(
            p.steps,
            [Step::exec(["groupadd", "-g", "1001", "--", "postgres"])]
        );
        let mut system = want();
        system.gid = None;
        system.system = true;
        assert_eq!(
            plan(&system, "absent").steps,
            [Step::exec(["groupadd", "-r", "--", "postgres"])]
        );
    }

    #[test]
    fn another_gid_is_an_error_unless_renumbering_is_allowed() {
        let p = plan(&want(), &present("postgres:x:999:"));
        assert!(p.steps.is_empty());
        assert!(p.error.unwrap().contains("allow_renumber"));
        let mut g = want();
        g.allow_renumber = true;
        assert_eq!(
            plan(&g, &present("postgres:x:999:")).steps,
            [
                Step::exec(["groupmod", "-g", "1001", "--", "postgres"]),
                Step::exec(["pl_reown_gid", "999", "1001"]),
            ]
        );
    }

    #[test]
    fn an_absent_group_is_deleted_and_a_pruned_one_only_when_asked() {
        let mut g = want();
        g.state = Presence::Absent;
        let p = plan(&g, &present("postgres:x:1001:"));
        assert_eq!(p.action, Some(Action::Delete));
        assert_eq!(p.steps, [Step::exec(["groupdel", "--", "postgres"])]);
        let m = managed("Group", "postgres", &[]);
        assert!(GroupSpec::prune(&m, &plan_cx()).is_empty());
        let mut cx = plan_cx();
        cx.prune_users = true;
        assert_eq!(
            GroupSpec::prune(&m, &cx),
            [Step::exec(["groupdel", "--", "postgres"])]
        );
    }

    #[test]
    fn hostile_records_are_errors_never_steps() {
        for record in [
            "present\tnot base64!".to_string(),
            "present".to_string(),
            present("wheel:x:10:"),
            present("postgres\nwheel:x:10:"),
            present("postgres:x:1001"),
            present("postgres:x:gid:"),
        ] {
            let p = plan(&want(), &record);
            assert!(p.steps.is_empty(), "{record}: {:?}", p.steps);
            assert_eq!(
                p.error.as_deref(),
                Some("unreadable group entry"),
                "{record}"
            );
        }
    }
}
