//! `CertificateAuthority`: a private CA that lives on the controller. Its certificate is a file
//! of the repo; its private key is an age-encrypted secret, never plain text in git.
//! `plumb certs init-ca NAME` creates both.

use super::{CheckCx, Kind};
use crate::diag::Diagnostic;
use crate::kinds::Desired;
use crate::kinds::HostCx;
use crate::kinds::Manifest;
use crate::model::values::{SecretRef, Span};
use serde::{Deserialize, Serialize};

/// A CA as declared.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateAuthoritySpec {
    /// Subject common name of the CA certificate.
    pub common_name: String,
    /// Repo path of the CA certificate (PEM).
    pub certificate: String,
    /// The secret holding the CA private key (PEM).
    pub key: SecretRef,
    /// Validity of the CA certificate when created.
    #[serde(default = "ca_validity")]
    pub validity: Span,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn ca_validity() -> Span {
    Span {
        secs: 3650 * 86_400,
    }
}

impl Kind for CertificateAuthoritySpec {
    /// A CA lives on the controller only: its key never leaves the repo.
    fn needs_hosts(&self) -> bool {
        false
    }

    fn check(&self, cx: &mut CheckCx) {
        let name = cx.manifest.name.clone();
        if let Err(e) = crate::model::values::check_repo_relative(&self.certificate) {
            cx.error("certificate", e.to_string(), None);
        } else if let Err(e @ crate::confine::Confined::Outside { .. }) = cx
            .repo
            .confined
            .resolve(std::path::Path::new(&self.certificate))
        {
            // The CA certificate is pushed to every host that trusts it.
            cx.error(
                "certificate",
                format!("CA certificate `{}` cannot be used: {e}", self.certificate),
                Some(crate::confine::OUTSIDE_HINT.into()),
            );
        } else {
            match std::fs::read_to_string(cx.repo.root.join(&self.certificate)) {
                Err(_) => cx.error(
                    "certificate",
                    format!(
                        "CA certificate `{}` does not exist in the repo",
                        self.certificate
                    ),
                    Some(format!("create the CA with `plumb certs init-ca {name}`")),
                ),
                Ok(pem) if !pem.contains("-----BEGIN CERTIFICATE-----") => cx.error(
                    "certificate",
                    format!("`{}` is not a PEM certificate", self.certificate),
                    None,
                ),
                Ok(pem) => match crate::pki::inspect(&pem) {
                    Err(e) => cx.error(
                        "certificate",
                        format!("`{}`: {e}", self.certificate),
                        None,
                    ),
                    // An expired CA signs nothing any service accepts: refused before any host
                    // is touched.
                    Ok(info) if info.not_after <= now() => cx.error(
                        "certificate",
                        format!(
                            "CA certificate `{}` expired {} days ago",
                            self.certificate,
                            (now() - info.not_after) / 86_400
                        ),
                        Some(format!(
                            "create a new CA (`plumb certs init-ca NEW`) and move the clusters to it: \
                             `tls: {{ ca: NEW, trust: [{name}] }}`, then `tls: {{ ca: NEW }}`"
                        )),
                    ),
                    Ok(_) => {}
                },
            }
        }
        if !cx.repo.secrets.contains(&self.key.secret) {
            cx.error(
                "key.secret",
                format!("secret `{}` (the CA key) is not defined", self.key.secret),
                Some(format!("create the CA with `plumb certs init-ca {name}`")),
            );
        }
    }

    fn render(&self, _m: &Manifest, _cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        // A CA has no state on hosts: certificates that name it carry its certificate.
        Ok(Vec::new())
    }
}
