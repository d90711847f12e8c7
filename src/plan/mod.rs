//! Plan: desired state against actual state, per host, into ordered steps with human-readable
//! changes and unified diffs. Pure: the probe's records in, a [`HostPlan`] out.

pub mod chain;
pub mod diff;

use crate::kinds::PrimitiveSpec;
use crate::kinds::{Desired, DesiredHost};
use crate::model::desired::{Content, sha256_hex};
use crate::model::values::{DriftPolicy, ResourceRef};
use crate::vocab::cx::PlanCx;
use crate::vocab::records::{HostRecords, Records};
use crate::vocab::state::{HostState, MAX_MASKED_TOTAL, Managed, MaskedCopy};
use crate::vocab::step::{Action, Change, DiffSpec, Step};
use chain::{Chain, ChainError, Domain};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The plan of one resource.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResourcePlan {
    /// Index in the host's desired list.
    pub index: usize,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// What happens.
    pub action: Action,
    /// Field-level changes.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub changes: Vec<Change>,
    /// Content diffs.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub diffs: Vec<DiffSpec>,
    /// Steps.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub steps: Vec<Step>,
    /// Hash of the actual state this plan was made against (compare-and-swap checks it).
    pub actual_sha256: String,
    /// The probe records that hash covers, when this run read them itself: the apply script
    /// compares text, which costs the host no process (a plan file carries only the hash).
    #[serde(skip)]
    pub actual_text: Option<String>,
    /// Hash of the desired state.
    pub desired_sha256: String,
    /// Why it cannot be planned.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// True when any content is sensitive.
    #[serde(default)]
    pub sensitive: bool,
}

impl ResourcePlan {
    /// True when the resource will change.
    pub fn changes_something(&self) -> bool {
        matches!(
            self.action,
            Action::Create | Action::Update | Action::Delete | Action::Run
        )
    }
}

/// A handler: a resource refreshed because something that notifies it changed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandlerPlan {
    /// The refreshed resource.
    pub target: ResourceRef,
    /// The resources whose change triggered it.
    pub because: Vec<ResourceRef>,
    /// Steps.
    pub steps: Vec<Step>,
}

/// Something removed from the repo that plumb managed on this host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrunePlan {
    /// What it was.
    pub managed: Managed,
    /// Steps that remove it.
    pub steps: Vec<Step>,
    /// Why it cannot be removed safely (nothing is then applied on the host).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// The plan of one host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostPlan {
    /// Host name.
    pub host: String,
    /// Per resource, in apply order.
    pub resources: Vec<ResourcePlan>,
    /// Removals of resources no longer in the repo.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub prune: Vec<PrunePlan>,
    /// Handlers to run after the resources.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub handlers: Vec<HandlerPlan>,
    /// Content bytes by hash (kept in memory only).
    #[serde(skip)]
    pub contents: BTreeMap<String, Content>,
    /// What the host's state file will say after apply.
    #[serde(skip)]
    pub next_state: HostState,
    /// Paths written as another user than root (see [`chain`]): path → the user for `setpriv`.
    #[serde(skip)]
    pub domains: BTreeMap<String, String>,
}

impl HostPlan {
    /// True when applying would change something (drift with `detect` does not count).
    pub fn has_changes(&self) -> bool {
        self.resources.iter().any(ResourcePlan::changes_something)
            || !self.prune.is_empty()
            || !self.handlers.is_empty()
    }

    /// True when some `detect` resource drifted.
    pub fn has_drift(&self) -> bool {
        self.resources.iter().any(|r| r.action == Action::Drift)
    }

    /// Resources that cannot be planned.
    pub fn errors(&self) -> impl Iterator<Item = &ResourcePlan> {
        self.resources.iter().filter(|r| r.action == Action::Error)
    }

    /// The first reason this plan cannot be applied at all, in words: a resource or a removal
    /// that cannot be planned.
    pub fn refusal(&self) -> Option<String> {
        if let Some(bad) = self.errors().next() {
            return Some(format!(
                "{}/{} cannot be converged: {}",
                bad.kind,
                bad.name,
                bad.error.as_deref().unwrap_or("unknown error")
            ));
        }
        self.prune.iter().find_map(|p| {
            p.error.as_ref().map(|e| {
                format!(
                    "{}/{} (removed from the repo) cannot be removed: {e}",
                    p.managed.kind, p.managed.name
                )
            })
        })
    }
}

/// Hash of a desired resource: its serialized spec plus the hash of every content.
pub fn desired_hash(d: &Desired) -> String {
    let mut text = serde_json::to_string(&d.spec).unwrap_or_default();
    for c in d.spec.contents() {
        text.push_str(&c.sha256());
    }
    sha256_hex(text.as_bytes())
}

/// Plans one host: `previous` is what the host's state file says plumb managed there (see
/// [`crate::vocab::state::HostState::from_probe`]).
pub fn plan_host(
    desired: &DesiredHost,
    records: &HostRecords,
    previous: &HostState,
    cx: &PlanCx,
) -> HostPlan {
    let declared = declared_dirs(desired);
    let chain = Chain {
        dirs: &cx.dirs,
        declared: &declared,
        login_uid: cx.login_uid(),
    };
    let mut domains = BTreeMap::new();
    let mut resources = Vec::with_capacity(desired.resources.len());
    let mut contents = BTreeMap::new();
    for (i, d) in desired.resources.iter().enumerate() {
        for c in d.spec.contents() {
            contents.insert(c.sha256(), c.clone());
        }
        let mut p = plan_resource(i, d, records.of(i), cx);
        if let Err(e) = place(d, &chain, &mut domains) {
            p.action = Action::Error;
            p.error = Some(e.to_string());
            p.steps.clear();
        }
        resources.push(p);
    }

    let next_state = next_state(desired);
    // What plumb last wrote from a secret is never shown, whatever the new content is.
    for r in &mut resources {
        for d in &mut r.diffs {
            d.old_sensitive = previous.was_sensitive(&d.path);
        }
    }
    let mut prune = plan_prune(previous, &next_state, cx);
    for item in &mut prune {
        if let Err(e) = place_prune(&item.managed, &chain, &mut domains) {
            item.error = Some(e.to_string());
            item.steps.clear();
        }
    }

    let handlers = plan_handlers(desired, &resources, cx);
    HostPlan {
        host: desired.host.clone(),
        resources,
        prune,
        handlers,
        contents,
        next_state,
        domains,
    }
}

/// Directories the repo declares on this host, by path: their owner (for folders the host does
/// not have yet, see [`Chain`]).
fn declared_dirs(desired: &DesiredHost) -> BTreeMap<String, String> {
    desired
        .resources
        .iter()
        .filter_map(|d| match &d.spec {
            PrimitiveSpec::Directory(dir)
                if dir.state == crate::model::values::Presence::Present =>
            {
                Some((dir.path.clone(), dir.owner.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Why plumb refuses to write (or remove) a path where it lies.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// The folders on the way refuse it.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A resource owned by another user than the one who can write its folder.
    #[error(
        "`{path}` lies in a folder that user {user} can write, so plumb writes it as {user}; it cannot be owned by {owner}: make {user} its owner, or move it to a folder only root can write"
    )]
    Owner {
        /// The path.
        path: String,
        /// Who can write its folder.
        user: String,
        /// Its declared owner.
        owner: String,
    },
    /// A kind whose files root acts on, in a folder a user can write.
    #[error(
        "`{path}` lies in a folder that user {user} can write; a {kind} runs as root and must live in folders only root can write"
    )]
    RootOnly {
        /// The path.
        path: String,
        /// Who can write its folder.
        user: String,
        /// The kind.
        kind: String,
    },
    /// The same for a resource that left the repo.
    #[error(
        "`{path}` lies in a folder that user {user} can write; plumb will not remove a {kind} from there as root"
    )]
    RemoveAsRoot {
        /// The path.
        path: String,
        /// Who can write its folder.
        user: String,
        /// The kind.
        kind: String,
    },
}

/// Decides whose hands write each path of a resource (recorded in `domains` when not root's),
/// or why plumb refuses to write it.
fn place(
    d: &Desired,
    chain: &Chain,
    domains: &mut BTreeMap<String, String>,
) -> Result<(), PlaceError> {
    for path in d.spec.paths() {
        let domain = chain.domain(&path)?;
        let Some(user) = domain.user() else { continue };
        let Domain::User { name, .. } = &domain else {
            continue;
        };
        match d.spec.engine().owner() {
            Some(owner) if domain.admits(owner) => {
                domains.insert(path, user);
            }
            Some(owner) => {
                return Err(PlaceError::Owner {
                    path,
                    user: name.clone(),
                    owner: owner.to_string(),
                });
            }
            None => {
                return Err(PlaceError::RootOnly {
                    path,
                    user: name.clone(),
                    kind: d.kind.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The same for a resource that left the repo: removing a file is done as the folder's user.
fn place_prune(
    m: &Managed,
    chain: &Chain,
    domains: &mut BTreeMap<String, String>,
) -> Result<(), PlaceError> {
    for path in &m.paths {
        match chain.domain(path)? {
            Domain::Root => {}
            domain if crate::kinds::removed_as_owner(&m.kind) => {
                if let Some(user) = domain.user() {
                    domains.insert(path.clone(), user);
                }
            }
            Domain::User { name, .. } => {
                return Err(PlaceError::RemoveAsRoot {
                    path: path.clone(),
                    user: name,
                    kind: m.kind.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The folders the probe did not read but pruning needs: those on the way to the paths of
/// resources that left the repo. Usually none; when some, converge reads them in a second
/// command (on the same locked session) before planning.
pub fn prune_dirs(desired: &DesiredHost, previous: &HostState) -> Vec<String> {
    let next = next_state(desired);
    let gone = previous.resources.iter().filter(|m| {
        !next
            .resources
            .iter()
            .any(|n| n.kind == m.kind && n.name == m.name)
    });
    let probed = crate::probe::host_dirs(desired);
    crate::vocab::records::ancestor_dirs(gone.flat_map(|m| m.paths.iter().cloned()))
        .into_iter()
        .filter(|d| probed.binary_search(d).is_err())
        .collect()
}

/// Why a host's plan is refused for removing too much at once, unless told so: more than half
/// of what plumb manages on the host, and at least two resources. A repo that lost a manifest
/// or a host selector by mistake must not wipe a host (and under `plumb pull` a fleet).
pub fn mass_prune(previous: &HostState, plan: &HostPlan) -> Option<String> {
    let managed = previous.resources.len();
    let gone = previous
        .resources
        .iter()
        .filter(|m| {
            !plan
                .next_state
                .resources
                .iter()
                .any(|n| n.kind == m.kind && n.name == m.name)
        })
        .count();
    (gone >= 2 && gone * 2 > managed).then(|| {
        format!(
            "this converge would remove {gone} of the {managed} resources plumb manages on this host; plumb refuses to remove more than half at once. If that is what you want, run again with --allow-mass-prune; otherwise check the repo (a manifest deleted, a host selector changed?)"
        )
    })
}

fn plan_resource(index: usize, d: &Desired, actual: Records, cx: &PlanCx) -> ResourcePlan {
    let engine = d.spec.engine();
    let keys = engine.cas_keys();
    let mut p = ResourcePlan {
        index,
        kind: d.kind.to_string(),
        name: d.name.clone(),
        action: Action::None,
        changes: Vec::new(),
        diffs: Vec::new(),
        steps: Vec::new(),
        actual_sha256: actual.hash(keys),
        actual_text: Some(actual.text(keys)),
        desired_sha256: desired_hash(d),
        error: None,
        sensitive: d.is_sensitive(),
    };
    if actual.is_empty() {
        p.action = Action::Error;
        p.error = Some("the probe returned no record for this resource".into());
        return p;
    }
    let planned = engine.plan(index, actual, cx);
    if let Some(e) = planned.error {
        p.action = Action::Error;
        p.error = Some(e);
        return p;
    }
    p.action = planned.action.unwrap_or(if planned.steps.is_empty() {
        Action::None
    } else {
        Action::Update
    });
    p.changes = planned.changes;
    p.diffs = planned.diffs;
    p.steps = planned.steps;
    if d.drift == DriftPolicy::Detect && p.action != Action::None {
        p.action = Action::Drift;
        p.steps.clear();
    }
    p
}

fn plan_prune(previous: &HostState, next: &HostState, cx: &PlanCx) -> Vec<PrunePlan> {
    previous
        .resources
        .iter()
        .filter(|m| {
            !next
                .resources
                .iter()
                .any(|n| n.kind == m.kind && n.name == m.name)
        })
        .filter_map(|m| {
            let steps = crate::kinds::prune_steps(m, cx).unwrap_or_default();
            if steps.is_empty() {
                None
            } else {
                Some(PrunePlan {
                    managed: m.clone(),
                    steps,
                    error: None,
                })
            }
        })
        .collect()
}

fn plan_handlers(desired: &DesiredHost, plans: &[ResourcePlan], cx: &PlanCx) -> Vec<HandlerPlan> {
    let mut triggered: BTreeMap<ResourceRef, Vec<ResourceRef>> = BTreeMap::new();
    for (d, p) in desired.resources.iter().zip(plans) {
        if p.changes_something() {
            for t in &d.notify {
                triggered.entry(t.clone()).or_default().push(d.reference());
            }
        }
    }
    // Handlers run in resource order, once each.
    let mut out = Vec::new();
    for (d, p) in desired.resources.iter().zip(plans) {
        let r = d.reference();
        if let Some(because) = triggered.remove(&r) {
            if p.action == Action::Error {
                continue;
            }
            let steps = d.spec.engine().refresh(cx);
            if !steps.is_empty() {
                out.push(HandlerPlan {
                    target: r,
                    because,
                    steps,
                });
            }
        }
    }
    out
}

/// Records of a resource, re-exported for planners.
pub type Actual<'a> = Records<'a>;

/// The state that results from applying `desired`, with the masked text of each content from
/// secrets (the old side of its next diff), within [`MAX_MASKED_TOTAL`] for the host.
pub fn next_state(desired: &DesiredHost) -> HostState {
    let mut budget = MAX_MASKED_TOTAL;
    let resources = desired
        .resources
        .iter()
        .map(|d| {
            let mut m = Managed {
                kind: d.kind.to_string(),
                name: d.name.clone(),
                paths: d.spec.paths(),
                sensitive: d.is_sensitive(),
                ..Default::default()
            };
            for c in d.spec.contents() {
                let Some(text) = c.masked_text() else {
                    continue;
                };
                let sha256 = c.sha256();
                let cost = text.len() + sha256.len();
                if cost <= budget && !m.masked.iter().any(|x| x.sha256 == sha256) {
                    budget -= cost;
                    m.masked.push(MaskedCopy {
                        sha256,
                        text: text.to_string(),
                    });
                }
            }
            d.spec.engine().remember(&mut m);
            m
        })
        .collect();
    HostState {
        version: 1,
        commit: None,
        resources,
    }
}

/// Why a masked diff shows the new content only.
pub const OLD_NOT_SHOWN: &str = "previous content not shown: plumb kept no masked copy of what the host has now (changed on the host since plumb wrote it, or written by hand or by an older plumb); the host's bytes are never shown, they may hold a secret";

/// Fills in the diffs of files whose new or old content came from secrets, as masked diffs:
/// the new side is the content's masked text (each secret value replaced by `<secret:NAME>`),
/// the old side the masked text plumb kept in the host state of what it last wrote, used only
/// while the host's file still hashes to what plumb wrote. The host's bytes are never used:
/// they may hold a secret plumb no longer knows (a rotated password). Without a kept copy, the
/// diff shows the new content only and says why; content without a masked text (keys,
/// certificates, files marked sensitive as a whole, too large) keeps no text: its two hashes
/// are shown. Pure.
pub fn masked_diffs(plan: &mut HostPlan, previous: &HostState) {
    for r in &mut plan.resources {
        if !matches!(r.action, Action::Create | Action::Update | Action::Drift) {
            continue;
        }
        for d in &mut r.diffs {
            let Some(new) = plan.contents.get(&d.new.sha256) else {
                continue;
            };
            if !new.sensitive && !d.old_sensitive {
                continue;
            }
            let shown = if new.sensitive {
                new.masked_text()
            } else {
                new.display_text()
            };
            let Some(shown) = shown else {
                continue;
            };
            let (old, why) = match &d.old_sha256 {
                None => ("", None),
                Some(sha) => match previous.masked_copy(&d.path, sha) {
                    Some(kept) => (kept, None),
                    None => ("", Some(OLD_NOT_SHOWN.to_string())),
                },
            };
            d.text = Some(diff::masked(&d.path, old, shown, why.is_some()));
            d.masked = true;
            d.old_not_shown = why;
        }
    }
}

#[cfg(test)]
mod tests;
