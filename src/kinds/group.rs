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
