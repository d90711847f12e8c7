//! `Certificate`: a key, a certificate signed by a plumb CA, and the CA bundle, at given paths.
//! plumb issues the certificate on the controller (the key is generated in memory and pushed as
//! sensitive content, never printed), and reissues it inside its renew-before window or when the
//! names it must carry change.

use super::fs::converge_file;
use super::{CheckCx, Kind, Primitive, PrimitiveSpec, desired};
use crate::diag::Diagnostic;
use crate::kinds::Desired;
use crate::kinds::HostCx;
use crate::kinds::Manifest;
use crate::model::desired::Content;
use crate::model::values::{FileMode, Span};
use crate::shell::quote;
use crate::vocab::cx::PlanCx;
use crate::vocab::records::{PathState, Records, parse_path};
use crate::vocab::state::Managed;
use crate::vocab::step::{Action, Change, Planned, Step};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

pub use crate::pki::KeyAlgorithm;

/// A certificate as declared.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    /// The `CertificateAuthority` that signs it.
    pub ca: String,
    /// Subject CN; default: the host name. Tera expressions allowed (`{{ host.name }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// DNS SANs; default: the host name. Tera expressions allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_names: Option<Vec<String>>,
    /// IP SANs; default: the host's address when it is an IP. Tera expressions allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_addresses: Option<Vec<String>>,
    /// Where the certificate goes.
    pub cert_path: String,
    /// Where the private key goes.
    pub key_path: String,
    /// Where the CA certificate goes (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_path: Option<String>,
    /// Owner of the three files.
    #[serde(default = "super::directory::root")]
    pub owner: String,
    /// Group of the three files.
    #[serde(default = "super::directory::root")]
    pub group: String,
    /// Mode of the key.
    #[serde(default = "key_mode")]
    pub key_mode: FileMode,
    /// Mode of the certificate and CA files.
    #[serde(default = "cert_mode")]
    pub cert_mode: FileMode,
    /// Validity of issued certificates.
    #[serde(default = "validity")]
    pub validity: Span,
    /// Reissue when fewer than this remain.
    #[serde(default = "renew_before")]
    pub renew_before: Span,
    /// Key algorithm.
    #[serde(default)]
    pub key_algorithm: KeyAlgorithm,
}

fn key_mode() -> FileMode {
    FileMode(0o600)
}
fn cert_mode() -> FileMode {
    FileMode(0o644)
}
fn validity() -> Span {
    Span { secs: 365 * 86_400 }
}
fn renew_before() -> Span {
    Span { secs: 30 * 86_400 }
}

/// A certificate as it should be on a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertificateState {
    /// Signing CA name.
    pub ca: String,
    /// The CA certificate (PEM), for the bundle and for checking the chain.
    pub ca_certificate: Content,
    /// Subject CN.
    pub common_name: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<String>,
    /// Certificate path.
    pub cert_path: String,
    /// Key path.
    pub key_path: String,
    /// CA path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_path: Option<String>,
    /// Owner.
    pub owner: String,
    /// Group.
    pub group: String,
    /// Key mode.
    pub key_mode: FileMode,
    /// Cert mode.
    pub cert_mode: FileMode,
    /// Validity.
    pub validity: Span,
    /// Renewal window.
    pub renew_before: Span,
    /// Key algorithm.
    pub key_algorithm: KeyAlgorithm,
}

impl CertificateSpec {
    /// Resolves names and the CA certificate for the host being rendered.
    pub fn resolve(&self, m: &Manifest, cx: &mut HostCx) -> Result<CertificateState, Diagnostic> {
        let host_name = cx.host().name.clone();
        let host_addr = cx.host().address.clone();
        let mut expand = |field: &str, s: &str| -> Result<String, Diagnostic> {
            cx.render_str(s).map_err(|f| f.into_diagnostic(m, field))
        };
        let common_name = match &self.common_name {
            Some(cn) => expand("common_name", cn)?,
            None => host_name.clone(),
        };
        let dns_names = match &self.dns_names {
            Some(v) => v
                .iter()
                .enumerate()
                .map(|(i, s)| expand(&format!("dns_names[{i}]"), s))
                .collect::<Result<_, _>>()?,
            None => vec![host_name],
        };
        let ip_addresses: Vec<String> = match &self.ip_addresses {
            Some(v) => v
                .iter()
                .enumerate()
                .map(|(i, s)| expand(&format!("ip_addresses[{i}]"), s))
                .collect::<Result<_, _>>()?,
            None => host_addr
                .parse::<IpAddr>()
                .ok()
                .map(|a| a.to_string())
                .into_iter()
                .collect(),
        };
        for (i, ip) in ip_addresses.iter().enumerate() {
            if ip.parse::<IpAddr>().is_err() {
                return Err(m.error(
                    &format!("ip_addresses[{i}]"),
                    format!("`{ip}` is not an IP address"),
                ));
            }
        }
        let ca_certificate = cx
            .ca_certificate(&self.ca)
            .map_err(|e| m.error("ca", e.to_string()))?;
        Ok(CertificateState {
            ca: self.ca.clone(),
            ca_certificate,
            common_name,
            dns_names,
            ip_addresses,
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
            ca_path: self.ca_path.clone(),
            owner: self.owner.clone(),
            group: self.group.clone(),
            key_mode: self.key_mode,
            cert_mode: self.cert_mode,
            validity: self.validity,
            renew_before: self.renew_before,
            key_algorithm: self.key_algorithm,
        })
    }
}

impl CertificateState {
    /// Why the certificate on the host must be (re)issued, if it must.
    pub fn reissue_reason(
        &self,
        pem_b64: Option<&str>,
        key: &PathState,
        cx: &PlanCx,
    ) -> Option<String> {
        if cx.force_reissue {
            return Some("rotation requested".into());
        }
        let Some(b64) = pem_b64.filter(|s| *s != "absent") else {
            return Some("missing".into());
        };
        if !matches!(key, PathState::File(_)) {
            return Some("private key missing".into());
        }
        let Some(pem) = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return Some("unreadable certificate".into());
        };
        let Ok(info) = crate::pki::inspect(&pem) else {
            return Some("unparsable certificate".into());
        };
        let ca_pem = String::from_utf8_lossy(self.ca_certificate.bytes());
        match crate::pki::inspect(&ca_pem) {
            Ok(ca) if ca.subject_der == info.issuer_der => {}
            Ok(_) => {
                return Some(format!(
                    "issued by `{}`, not by CA `{}`",
                    info.issuer, self.ca
                ));
            }
            Err(_) => return Some(format!("CA `{}` certificate is unreadable", self.ca)),
        }
        if info.common_name != self.common_name {
            return Some(format!(
                "common name `{}` should be `{}`",
                info.common_name, self.common_name
            ));
        }
        let mut dns = self.dns_names.clone();
        dns.sort();
        let mut ips: Vec<String> = self
            .ip_addresses
            .iter()
            .filter_map(|i| i.parse::<std::net::IpAddr>().ok().map(|a| a.to_string()))
            .collect();
        ips.sort();
        if info.dns_names != dns || info.ip_addresses != ips {
            return Some(format!(
                "names {:?} {:?} should be {:?} {:?}",
                info.dns_names, info.ip_addresses, dns, ips
            ));
        }
        let left = info.not_after - cx.now;
        if left <= self.renew_before.secs as i64 {
            return Some(if left <= 0 {
                "expired".into()
            } else {
                format!(
                    "expires in {} days (renew_before {})",
                    left / 86_400,
                    self.renew_before
                )
            });
        }
        None
    }
}

impl Kind for CertificateSpec {
    fn default_name(&self) -> Option<String> {
        Some(self.cert_path.clone())
    }

    fn check(&self, cx: &mut CheckCx) {
        if cx.repo.find("CertificateAuthority", &self.ca).is_none() {
            let known = cx.repo.names_of("CertificateAuthority").join(", ");
            cx.error(
                "ca",
                format!("certificate names unknown CA `{}`", self.ca),
                Some(if known.is_empty() {
                    format!("declare a CertificateAuthority named `{}` (and create it with `plumb certs init-ca {}`)", self.ca, self.ca)
                } else {
                    format!("known CAs: {known}")
                }),
            );
        }
        cx.abs_path("cert_path", &self.cert_path, &[]);
        cx.abs_path("key_path", &self.key_path, &[]);
        if let Some(p) = &self.ca_path {
            cx.abs_path("ca_path", p, &[]);
        }
        cx.account("owner", &self.owner);
        cx.account("group", &self.group);
        if self.renew_before >= self.validity {
            cx.error(
                "renew_before",
                format!(
                    "renew_before ({}) is not shorter than validity ({})",
                    self.renew_before, self.validity
                ),
                Some("a certificate would be reissued on every run".into()),
            );
        }
        if self.key_mode.0 & 0o077 & !0o040 != 0 {
            cx.error(
                "key_mode",
                format!(
                    "key mode {} lets others read the private key",
                    self.key_mode
                ),
                Some("use 0600 or 0640".into()),
            );
        }
    }

    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        let state = self.resolve(m, cx)?;
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::Certificate(state),
        )])
    }
}

impl Primitive for CertificateState {
    fn removed_as_owner() -> bool {
        true
    }

    fn shell() -> &'static str {
        include_str!("certificate.sh")
    }

    fn prune(m: &Managed, _cx: &PlanCx) -> Vec<Step> {
        super::fs::remove_paths(m)
    }

    fn contents(&self) -> Vec<&Content> {
        vec![&self.ca_certificate]
    }

    fn paths(&self) -> Vec<String> {
        let mut p = vec![self.cert_path.clone(), self.key_path.clone()];
        p.extend(self.ca_path.clone());
        p
    }

    fn owner(&self) -> Option<&str> {
        Some(&self.owner)
    }

    fn probe(&self, index: usize, out: &mut String) {
        self.cas_probe(index, out);
        out.push_str(&format!("pl_cert {index} {}\n", quote(&self.cert_path)));
    }

    fn cas_keys(&self) -> &'static [&'static str] {
        &["cert", "key", "ca"]
    }

    fn cas_probe(&self, index: usize, out: &mut String) {
        out.push_str(&format!(
            "pl_path {index}.cert {}\npl_path {index}.key {}\n",
            quote(&self.cert_path),
            quote(&self.key_path)
        ));
        if let Some(ca) = &self.ca_path {
            out.push_str(&format!("pl_path {index}.ca {}\n", quote(ca)));
        }
    }

    fn plan(&self, index: usize, actual: Records, cx: &PlanCx) -> Planned {
        let mut p = Planned::default();
        let cert = parse_path(actual.get("cert"));
        let key = parse_path(actual.get("key"));
        for (path, st) in [(&self.cert_path, &cert), (&self.key_path, &key)] {
            if matches!(st, PathState::Dir(_) | PathState::Other) {
                p.error = Some(format!("`{path}` is not a regular file on the host"));
                return p;
            }
        }
        let pem = actual
            .get("pem")
            .and_then(|f| f.first())
            .map(String::as_str);
        if let Some(reason) = self.reissue_reason(pem, &key, cx) {
            p.action = Some(if cert == PathState::Absent {
                Action::Create
            } else {
                Action::Update
            });
            p.changes.push(Change::new(
                "certificate",
                None,
                Some(format!("issue ({reason})")),
            ));
            p.steps.push(Step::IssueCertificate { index, reason });
        } else {
            for (path, st, mode) in [
                (&self.cert_path, &cert, self.cert_mode),
                (&self.key_path, &key, self.key_mode),
            ] {
                if let PathState::File(f) = st {
                    let mut meta = (None, None, None);
                    if !f.meta.owner_is(&self.owner) {
                        meta.0 = Some(self.owner.clone());
                    }
                    if !f.meta.group_is(&self.group) {
                        meta.1 = Some(self.group.clone());
                    }
                    if f.meta.mode != mode.0 {
                        meta.2 = Some(mode);
                    }
                    if meta != (None, None, None) {
                        p.changes.push(Change::new(
                            &format!("{path}: owner/mode"),
                            None,
                            Some(format!("{}:{} {mode}", self.owner, self.group)),
                        ));
                        p.steps.push(Step::SetMeta {
                            path: path.clone(),
                            owner: meta.0,
                            group: meta.1,
                            mode: meta.2,
                        });
                    }
                }
            }
        }
        if let Some(ca_path) = &self.ca_path {
            let ca = parse_path(actual.get("ca"));
            converge_file(
                ca_path,
                &ca,
                &self.ca_certificate,
                &self.owner,
                &self.group,
                self.cert_mode,
                &mut p,
            );
        }
        p
    }
}

/// How a certificate on a host stands, for `plumb certs status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateHealth {
    /// Present, valid, outside its renewal window, with the names and CA it must have.
    Ok,
    /// A converge would reissue it (inside its renewal window, expired, other names or CA,
    /// missing key, unreadable).
    Reissue,
    /// Not on the host yet.
    Missing,
}

/// One certificate on one host, as `plumb certs status` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertificateStatus {
    /// Host name.
    pub host: String,
    /// Resource name.
    pub name: String,
    /// Certificate path on the host.
    pub path: String,
    /// Signing CA.
    pub ca: String,
    /// Standing.
    pub health: CertificateHealth,
    /// Why a converge would reissue it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Subject CN of the certificate on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// Serial (hex) of the certificate on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Expiry, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
    /// Whole days until expiry (negative once expired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_left: Option<i64>,
    /// The renewal window, as written in the manifest.
    pub renew_before: String,
}

impl CertificateState {
    /// The standing of this certificate from its probe records; pure.
    pub fn status(&self, host: &str, name: &str, actual: Records, now: i64) -> CertificateStatus {
        let pem_b64 = actual
            .get("pem")
            .and_then(|f| f.first())
            .map(String::as_str)
            .filter(|s| *s != "absent");
        let info = pem_b64
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|pem| crate::pki::inspect(&pem).ok());
        let cx = PlanCx {
            facts: Default::default(),
            now,
            force_reissue: false,
            prune_users: false,
            dirs: Default::default(),
        };
        let reason = self.reissue_reason(pem_b64, &parse_path(actual.get("key")), &cx);
        let health = match (&reason, pem_b64) {
            (None, _) => CertificateHealth::Ok,
            (Some(_), None) => CertificateHealth::Missing,
            (Some(_), Some(_)) => CertificateHealth::Reissue,
        };
        CertificateStatus {
            host: host.to_string(),
            name: name.to_string(),
            path: self.cert_path.clone(),
            ca: self.ca.clone(),
            health,
            reason,
            common_name: info.as_ref().map(|i| i.common_name.clone()),
            serial: info.as_ref().map(|i| i.serial.clone()),
            not_after: info.as_ref().map(|i| i.not_after),
            // Floor division: a certificate 1 s past expiry has -1 days left, not 0.
            days_left: info
                .as_ref()
                .map(|i| (i.not_after - now).div_euclid(86_400)),
            renew_before: self.renew_before.to_string(),
        }
    }
}

impl CertificateState {
    /// What the CA is asked to sign.
    pub fn leaf_request(&self) -> crate::pki::LeafRequest {
        crate::pki::LeafRequest {
            ca: self.ca.clone(),
            common_name: self.common_name.clone(),
            dns_names: self.dns_names.clone(),
            ip_addresses: self.ip_addresses.clone(),
            validity_secs: self.validity.secs,
            key_algorithm: self.key_algorithm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::records::parse_records;

    fn state(ca_pem: &str) -> CertificateState {
        CertificateState {
            ca: "pg-ca".into(),
            ca_certificate: Content::plain(ca_pem.as_bytes().to_vec()),
            common_name: "pg1".into(),
            dns_names: vec!["pg1".into()],
            ip_addresses: vec!["10.0.0.1".into()],
            cert_path: "/etc/pg1.crt".into(),
            key_path: "/etc/pg1.key".into(),
            ca_path: None,
            owner: "root".into(),
            group: "root".into(),
            key_mode: key_mode(),
            cert_mode: cert_mode(),
            validity: Span { secs: 10 * 86_400 },
            renew_before: Span { secs: 3 * 86_400 },
            key_algorithm: KeyAlgorithm::EcdsaP256,
        }
    }

    fn records(cert_pem: Option<&str>) -> String {
        let pem = match cert_pem {
            Some(p) => base64::engine::general_purpose::STANDARD.encode(p),
            None => "absent".into(),
        };
        format!(
            "H\tbegin\t1\n0.cert\tfile\t644 0 0 root root 700\t{}\n0.key\tfile\t600 0 0 root root 200\t{}\n0.pem\t{pem}\nH\tdone\n",
            "a".repeat(64),
            "d".repeat(64)
        )
    }

    /// A CA, the state a manifest asks for, and a certificate that CA issued for it.
    fn issued() -> (CertificateState, String, i64) {
        issued_by("test CA")
    }

    fn issued_by(ca_name: &str) -> (CertificateState, String, i64) {
        let ca = crate::pki::create_ca(ca_name, 30).unwrap();
        let want = state(&ca.cert_pem);
        let leaf = crate::pki::issue(&ca.cert_pem, &ca.key_pem, &want.leaf_request()).unwrap();
        let not_after = crate::pki::inspect(&leaf.cert_pem).unwrap().not_after;
        (want, leaf.cert_pem, not_after)
    }

    fn plan_at(want: &CertificateState, out: &str, now: i64, force: bool) -> Planned {
        let r = parse_records(out, 1, 0, &[]).unwrap_or_else(|e| panic!("{e}\n{out}"));
        let mut cx = crate::testutil::plan_cx();
        cx.now = now;
        cx.force_reissue = force;
        want.plan(0, r.of(0), &cx)
    }

    fn issue(reason: &str) -> Step {
        Step::IssueCertificate {
            index: 0,
            reason: reason.into(),
        }
    }

    #[test]
    fn a_valid_certificate_plans_nothing_and_a_missing_one_is_issued() {
        let (want, pem, not_after) = issued();
        let now = not_after - 9 * 86_400;
        let p = plan_at(&want, &records(Some(&pem)), now, false);
        assert!(
            p.steps.is_empty() && p.changes.is_empty() && p.error.is_none(),
            "{p:?}"
        );
        let none = "H\tbegin\t1\n0.cert\tabsent\n0.key\tabsent\n0.pem\tabsent\nH\tdone\n";
        let p = plan_at(&want, none, now, false);
        assert_eq!(p.action, Some(Action::Create));
        assert_eq!(p.steps, [issue("missing")]);
    }

    #[test]
    fn a_certificate_is_reissued_near_expiry_or_when_rotation_is_asked() {
        let (want, pem, not_after) = issued();
        let p = plan_at(&want, &records(Some(&pem)), not_after - 86_400, false);
        assert_eq!(p.action, Some(Action::Update));
        assert_eq!(p.steps, [issue("expires in 1 days (renew_before 3d)")]);
        let p = plan_at(&want, &records(Some(&pem)), not_after - 9 * 86_400, true);
        assert_eq!(p.steps, [issue("rotation requested")]);
        // Signed by another CA.
        let (other, _, _) = issued_by("another CA");
        let p = plan_at(&other, &records(Some(&pem)), not_after - 9 * 86_400, false);
        assert!(
            matches!(&p.steps[..], [Step::IssueCertificate { reason, .. }] if reason.contains("not by CA")),
            "{p:?}"
        );
    }

    #[test]
    fn owner_and_mode_are_fixed_and_the_ca_file_written() {
        let (mut want, pem, not_after) = issued();
        want.ca_path = Some("/etc/ca.crt".into());
        let out = records(Some(&pem))
            .replace("0.key\tfile\t600", "0.key\tfile\t644")
            .replace("H\tdone", "0.ca\tabsent\nH\tdone");
        let p = plan_at(&want, &out, not_after - 9 * 86_400, false);
        assert_eq!(
            p.steps[0],
            Step::SetMeta {
                path: "/etc/pg1.key".into(),
                owner: None,
                group: None,
                mode: Some(FileMode(0o600)),
            }
        );
        assert!(
            matches!(&p.steps[1], Step::WriteFile { path, mode, .. } if path == "/etc/ca.crt" && mode.0 == 0o644)
        );
    }

    #[test]
    fn a_certificate_that_left_the_repo_is_removed() {
        let m = crate::testutil::managed("Certificate", "pg1", &["/etc/pg1.crt", "/etc/pg1.key"]);
        let steps = CertificateState::prune(&m, &crate::testutil::plan_cx());
        assert_eq!(
            steps,
            [
                Step::Remove {
                    path: "/etc/pg1.crt".into()
                },
                Step::Remove {
                    path: "/etc/pg1.key".into()
                }
            ]
        );
    }

    #[test]
    fn hostile_records_are_errors_or_a_fresh_certificate_never_a_kept_one() {
        let (want, pem, not_after) = issued();
        let now = not_after - 9 * 86_400;
        // A folder or a device where the certificate or key goes: an error.
        for (from, to) in [
            (
                "0.cert\tfile\t644 0 0 root root 700",
                "0.cert\tdir\t755 0 0 root root",
            ),
            ("0.key\tfile\t600 0 0 root root 200", "0.key\tother"),
        ] {
            let out = records(Some(&pem)).replace(from, to);
            let p = plan_at(&want, &out, now, false);
            assert!(p.steps.is_empty() && p.error.is_some(), "{to}: {p:?}");
        }
        // Certificate text that is not base64, not UTF-8 or not a certificate is never
        // trusted: the controller issues a fresh one (what the host printed is not used).
        for (b64, reason) in [
            ("%%%", "unreadable certificate"),
            ("/w==", "unreadable certificate"),
            ("aGVsbG8=", "unparsable certificate"),
        ] {
            let out = records(Some(&pem)).replace(
                &format!(
                    "0.pem\t{}",
                    base64::engine::general_purpose::STANDARD.encode(&pem)
                ),
                &format!("0.pem\t{b64}"),
            );
            let p = plan_at(&want, &out, now, false);
            assert_eq!(p.steps, [issue(reason)], "{b64}");
        }
    }

    #[test]
    fn status_follows_the_renewal_window_and_says_why() {
        let ca = crate::pki::create_ca("test CA", 30).unwrap();
        let want = state(&ca.cert_pem);
        let issued = crate::pki::issue(&ca.cert_pem, &ca.key_pem, &want.leaf_request()).unwrap();
        let info = crate::pki::inspect(&issued.cert_pem).unwrap();
        let out = records(Some(&issued.cert_pem));
        let r = parse_records(&out, 1, 0, &[]).unwrap();

        // Just issued: ten days left, a three-day window.
        let now = info.not_after - 10 * 86_400 + 60;
        let s = want.status("pg1", "c", r.of(0), now);
        assert_eq!(s.health, CertificateHealth::Ok, "{s:?}");
        assert_eq!(s.days_left, Some(9));
        assert_eq!(s.serial.as_deref(), Some(info.serial.as_str()));
        assert_eq!(s.reason, None);

        // Two days left: inside the window.
        let s = want.status("pg1", "c", r.of(0), info.not_after - 2 * 86_400);
        assert_eq!(s.health, CertificateHealth::Reissue);
        assert_eq!(s.days_left, Some(2));
        assert!(s.reason.unwrap().contains("expires in 2 days"));

        // Expired.
        let s = want.status("pg1", "c", r.of(0), info.not_after + 1);
        assert_eq!(s.health, CertificateHealth::Reissue);
        assert_eq!(s.days_left, Some(-1));
        assert_eq!(s.reason.as_deref(), Some("expired"));

        // Other names than the manifest asks for.
        let mut other = want.clone();
        other.dns_names = vec!["pg1".into(), "pg1.example.internal".into()];
        let s = other.status("pg1", "c", r.of(0), now);
        assert_eq!(s.health, CertificateHealth::Reissue);
        assert!(s.reason.unwrap().starts_with("names"));

        // Not there.
        let out = records(None);
        let s = want.status(
            "pg1",
            "c",
            parse_records(&out, 1, 0, &[]).unwrap().of(0),
            now,
        );
        assert_eq!(s.health, CertificateHealth::Missing);
        assert_eq!(s.days_left, None);
    }
}
