//! Helpers shared by the integration tests (one module per concern).

pub mod example;
pub mod gitops;
pub mod lab;
pub mod patroni;
pub mod postgres;
pub mod sshd;
