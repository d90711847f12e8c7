//! plumb: a declarative GitOps reconciler for VMs.
//!
//! The pipeline runs one way: `source` → `load` → `render` → `probe` → `plan` → `apply` → `report`.

pub mod apply;
pub mod cli;
pub mod diag;
pub mod kinds;
pub mod load;
pub mod model;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod render;
pub mod report;
pub mod secrets;
pub mod shell;
pub mod state;
pub mod yaml;
pub mod converge;
pub mod source;
