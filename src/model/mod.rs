//! The model of a cluster repo: inventory, selectors, manifests and the values they share, and
//! the desired state that rendering produces.

pub mod desired;
pub mod inventory;
pub mod manifest;
pub mod selector;

pub mod values;
