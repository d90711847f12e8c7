//! State: what plumb manages on each host (`/var/lib/plumb/state`, to prune what left the repo)
//! and, on the controller, the run history and lock.

use crate::kinds::PrimitiveSpec;
use crate::model::desired::DesiredHost;
use crate::plan::{PlanCx, Step};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Where plumb keeps its files on a host unless the inventory says otherwise: `state` (what it
/// manages), `backup/` (previous versions of replaced files) and `lock`.
pub const HOST_DIR: &str = "/var/lib/plumb";

/// One resource plumb manages on a host, with what is needed to remove it later.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Managed {
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Paths it wrote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Unit name (SystemdUnit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Compose project and folder (ComposeStack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_dir: Option<String>,
    /// True when the path is a directory (Directory).
    #[serde(default)]
    pub is_dir: bool,
}

/// The state file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// Format version.
    #[serde(default)]
    pub version: u32,
    /// Commit of the repo last applied (when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Resources managed.
    #[serde(default)]
    pub resources: Vec<Managed>,
}

impl HostState {
    /// The state that results from applying `desired`.
    pub fn of(desired: &DesiredHost) -> HostState {
        let resources = desired
            .resources
            .iter()
            .map(|d| {
                let mut m = Managed {
                    kind: d.kind.to_string(),
                    name: d.name.clone(),
                    paths: d.spec.paths(),
                    ..Default::default()
                };
                match &d.spec {
                    PrimitiveSpec::SystemdUnit(u) => m.unit = Some(u.unit.clone()),
                    PrimitiveSpec::ComposeStack(s) => m.stack_dir = Some(s.dir.clone()),
                    PrimitiveSpec::Directory(_) => m.is_dir = true,
                    _ => {}
                }
                m
            })
            .collect();
        HostState {
            version: 1,
            commit: None,
            resources,
        }
    }

    /// Decodes the probe's base64 of the state file.
    pub fn decode(b64: &str) -> Result<HostState, String> {
        if b64 == "none" || b64.is_empty() {
            return Ok(HostState::default());
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }

    /// The union of two states (written before applying, so an interrupted run still knows
    /// everything it may have created).
    pub fn union(&self, other: &HostState) -> HostState {
        let mut out = self.clone();
        for m in &other.resources {
            if !out
                .resources
                .iter()
                .any(|x| x.kind == m.kind && x.name == m.name)
            {
                out.resources.push(m.clone());
            }
        }
        out
    }

    /// JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// Steps that remove a resource that left the repo. Users and groups go only with
/// `--prune-users`; packages and commands are never undone.
pub fn prune_steps(m: &Managed, cx: &PlanCx) -> Vec<Step> {
    match m.kind.as_str() {
        "File" | "Symlink" | "Certificate" => m
            .paths
            .iter()
            .map(|p| Step::Remove { path: p.clone() })
            .collect(),
        "Directory" => m
            .paths
            .iter()
            .map(|p| Step::RemoveDir { path: p.clone() })
            .collect(),
        "SystemdUnit" => {
            let unit = m.unit.clone().unwrap_or_else(|| m.name.clone());
            let mut v = vec![
                Step::Systemctl {
                    verb: "stop".into(),
                    unit: unit.clone(),
                },
                Step::Systemctl {
                    verb: "disable".into(),
                    unit,
                },
            ];
            v.extend(m.paths.iter().map(|p| Step::Remove { path: p.clone() }));
            if !m.paths.is_empty() {
                v.push(Step::DaemonReload);
            }
            v
        }
        "ComposeStack" => {
            let dir = m.stack_dir.clone().unwrap_or_default();
            let mut v = vec![Step::StackDown {
                project: m.name.clone(),
                dir,
            }];
            v.extend(m.paths.iter().map(|p| Step::Remove { path: p.clone() }));
            v
        }
        "User" if cx.prune_users => vec![Step::UserDel {
            name: m.name.clone(),
        }],
        "Group" if cx.prune_users => vec![Step::GroupDel {
            name: m.name.clone(),
        }],
        _ => Vec::new(),
    }
}
