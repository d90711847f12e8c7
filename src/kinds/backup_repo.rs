//! Composite kind (work in progress).

use super::CheckCx;
use crate::diag::Diagnostic;
use crate::model::desired::Desired;
use crate::model::manifest::Manifest;
use crate::render::HostCx;
use serde::Deserialize;

/// Built-in templates (name, text).
pub const BUILTIN_TEMPLATES: &[(&str, &str)] = &[];

/// Fields.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRepoSpec {}

impl BackupRepoSpec {
    pub(crate) fn check(&self, _cx: &mut CheckCx) {}

    pub(crate) fn render(
        &self,
        _m: &Manifest,
        _cx: &mut HostCx,
    ) -> Result<Vec<Desired>, Diagnostic> {
        Ok(Vec::new())
    }
}
