//! plumb: a declarative GitOps reconciler for VMs.
//!
//! The pipeline runs one way, one module per stage: [`source`] (where the repo comes from) →
//! [`load`] (parse and validate) → [`render`] (desired state per host) → [`probe`] (read the
//! hosts, one round trip) → [`plan`] (what differs) → [`apply`] (change only that) → [`report`].
//! [`converge`] drives the stages across hosts over [`transport`]; [`kinds`] holds one module
//! per resource kind. [`serve`] is the webhook receiver of `plumb serve`: it turns a git push
//! into a run.

pub mod apply;
pub mod cli;
pub mod confine;
pub mod converge;
pub mod diag;
pub mod history;
pub mod inventory_import;
pub mod kinds;
pub mod load;
pub mod model;
pub mod notify;
pub mod pg;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod render;
pub mod report;
pub mod rollback;
pub mod secrets;
pub mod serve;
pub mod shell;
pub mod source;
pub mod template;
#[cfg(test)]
pub(crate) mod testutil;
pub mod text;
pub mod transport;
pub mod vocab;
pub mod yaml;
