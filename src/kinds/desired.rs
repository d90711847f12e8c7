//! The desired state of a host: each primitive resource as it should be, with where it was
//! declared; the output of rendering, the input of probing and planning.

use super::PrimitiveSpec;
use crate::model::desired::Origin;
use crate::model::values::{DriftPolicy, ResourceRef};
use serde::Serialize;

/// One primitive resource as it should be on a host.
#[derive(Clone, Debug, Serialize)]
pub struct Desired {
    /// Kind name (`File`, `User`, ...).
    pub kind: &'static str,
    /// Resource name, unique per kind on a host.
    pub name: String,
    /// Where it was declared.
    pub origin: Origin,
    /// Repair or only report drift.
    pub drift: DriftPolicy,
    /// Resources refreshed when this one changes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<ResourceRef>,
    /// The kind's own state.
    pub spec: PrimitiveSpec,
}

impl Desired {
    /// `Kind/name`.
    pub fn reference(&self) -> ResourceRef {
        ResourceRef {
            kind: self.kind.to_string(),
            name: self.name.clone(),
        }
    }

    /// True when any content of this resource is sensitive.
    pub fn is_sensitive(&self) -> bool {
        self.spec.contents().iter().any(|c| c.sensitive)
    }
}

/// Everything one host should have, in apply order.
#[derive(Clone, Debug, Serialize)]
pub struct DesiredHost {
    /// Inventory name.
    pub host: String,
    /// Resources, ordered by kind rank, then by declaration.
    pub resources: Vec<Desired>,
}
