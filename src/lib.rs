//! plumb: a declarative GitOps reconciler for VMs.
//!
//! The pipeline runs one way: `source` → `load` → `render` → `probe` → `plan` → `apply` → `report`.

pub mod transport;
