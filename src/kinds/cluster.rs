//! What `PostgresCluster` and `BackupRepo` share: the OS account the containers run as, TLS
//! settings, the folders of a cluster on a host, its members, the checks both run, and the
//! builder of an expansion (the primitives a composite renders into, with the account).

use super::certificate::{CertificateState, KeyAlgorithm};
use super::group::GroupSpec;
use super::postgres_cluster::Ports;
use super::user::UserSpec;
use super::{CheckCx, PrimitiveSpec};
use crate::diag::Diagnostic;
use crate::kinds::{Desired, HostCx, Manifest};
use crate::model::desired::Content;
use crate::model::inventory::{Host, Inventory};
use crate::model::values::{FileMode, Presence, ResourceRef, SecretRef, Span};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;

/// The OS account the containers run as, created on the hosts with the same ids as in the image
/// so that bind-mounted files have one owner inside and outside.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OsAccount {
    /// User and group name (default `postgres`).
    #[serde(default = "default_os_name")]
    pub name: String,
    /// Numeric uid; must match the image's user (default 1001).
    #[serde(default = "default_os_id")]
    pub uid: u32,
    /// Numeric gid of the group of the same name (default 1001).
    #[serde(default = "default_os_id")]
    pub gid: u32,
    /// Home directory, also the default root of every folder (default `/home/postgres`).
    #[serde(default = "default_home")]
    pub home: String,
    /// Supplementary groups (default `[docker]`, to run the stack's commands).
    #[serde(default = "default_os_groups")]
    pub groups: Vec<String>,
}

fn default_os_name() -> String {
    "postgres".into()
}

fn default_os_id() -> u32 {
    1001
}

fn default_home() -> String {
    "/home/postgres".into()
}

fn default_os_groups() -> Vec<String> {
    vec!["docker".into()]
}

impl Default for OsAccount {
    fn default() -> Self {
        OsAccount {
            name: default_os_name(),
            uid: default_os_id(),
            gid: default_os_id(),
            home: default_home(),
            groups: default_os_groups(),
        }
    }
}

/// Certificates of the cluster's services, issued per host by a plumb CA: on a
/// `PostgresCluster`, the member certificate (etcd client and peer, Patroni's REST API and its
/// etcd client, PostgreSQL) and the pgBackRest one; on a `BackupRepo`, the pgBackRest one.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The `CertificateAuthority` that signs the certificates (and whose certificate every side
    /// trusts).
    pub ca: String,
    /// Validity of each issued certificate (default 90d).
    #[serde(default = "default_validity")]
    pub validity: Span,
    /// Reissue when less than this remains (default 30d).
    #[serde(default = "default_renew_before")]
    pub renew_before: Span,
    /// Extra names on every member certificate, besides the member's own name and address:
    /// the DNS names or IP addresses clients use to reach the cluster through HAProxy (a DNS
    /// name in front of all members, a virtual IP). With them, a client can connect with
    /// `sslmode=verify-full` to that name; without them, `verify-ca` is the mode to use
    /// through HAProxy (the server certificate is the primary's, wherever the client entered).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Other `CertificateAuthority`s every trust bundle holds besides `ca`: the overlap of a CA
    /// rotation. To move from CA A to CA B: (1) `ca: A, trust: [B]` (every bundle trusts both;
    /// services reload), (2) `ca: B, trust: [A]` (every certificate is reissued by B), (3)
    /// `ca: B` (A leaves the bundles). Converge each phase on every host, and check the
    /// cluster's health, before the next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust: Vec<String>,
}

fn default_validity() -> Span {
    Span { secs: 90 * 86_400 }
}

fn default_renew_before() -> Span {
    Span { secs: 30 * 86_400 }
}

/// A database account Patroni uses, with its password in a secret.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// User name (defaults: `postgres`, `replicator`, `rewind_user`, `patroni`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The secret holding the password.
    pub password: SecretRef,
}

impl Credential {
    pub(crate) fn name_or(&self, default: &str) -> String {
        self.username.clone().unwrap_or_else(|| default.to_string())
    }
}

pub(crate) fn check_credential(cx: &mut CheckCx, field: &str, c: &Credential) {
    cx.secret(&format!("{field}.password.secret"), &c.password.secret);
    if let Some(u) = &c.username
        && !is_pg_identifier(u)
    {
        cx.error(
            &format!("{field}.username"),
            format!("`{u}` is not a valid PostgreSQL role name"),
            Some("use lowercase letters, digits and `_`, starting with a letter".into()),
        );
    }
}

/// The folders of a cluster (or repository) on a host; the same paths inside the containers.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterPaths {
    /// Root of everything below.
    pub base: String,
    /// Bind-mounted into Patroni: data, logs, socket, pgpass.
    pub pgdata_root: String,
    /// PostgreSQL data directory.
    pub data_dir: String,
    /// PostgreSQL and Patroni logs.
    pub log_dir: String,
    /// Unix socket directory.
    pub socket_dir: String,
    /// The pgpass file Patroni writes.
    pub pgpass: String,
    /// etcd data.
    pub etcd_data_dir: String,
    /// patroni.yml, etcd.yml, haproxy.cfg.
    pub config_dir: String,
    /// The member certificate, its key and the CA bundle (under `config_dir`, so every
    /// container of the stack that mounts the configuration sees them).
    pub tls_dir: String,
    /// pgBackRest folder (config, certs, log, spool).
    pub pgbackrest_dir: String,
    /// pgbackrest.conf.
    pub pgbackrest_config: String,
    /// Certificates.
    pub pgbackrest_certs: String,
    /// pgBackRest logs.
    pub pgbackrest_log: String,
    /// Async archiving spool.
    pub pgbackrest_spool: String,
    /// PgBouncer's folder (its unix socket).
    pub pgbouncer_dir: String,
    /// Compose stack folder.
    pub stack_dir: String,
}

impl ClusterPaths {
    /// Paths under `base`, with the stack in `stack_dir`.
    pub fn new(base: &str, stack_dir: String) -> Self {
        let pgdata = format!("{base}/postgres-data");
        let pgbr = format!("{base}/pgbackrest");
        ClusterPaths {
            base: base.to_string(),
            data_dir: format!("{pgdata}/data"),
            log_dir: format!("{pgdata}/logs"),
            socket_dir: format!("{pgdata}/unix"),
            pgpass: format!("{pgdata}/pass"),
            pgdata_root: pgdata,
            etcd_data_dir: format!("{base}/etcd-data"),
            config_dir: format!("{base}/config"),
            tls_dir: format!("{base}/config/tls"),
            pgbackrest_config: format!("{pgbr}/pgbackrest.conf"),
            pgbackrest_certs: format!("{pgbr}/certs"),
            pgbackrest_log: format!("{pgbr}/log"),
            pgbackrest_spool: format!("{pgbr}/spool"),
            pgbackrest_dir: pgbr,
            pgbouncer_dir: format!("{base}/pgbouncer"),
            stack_dir,
        }
    }

    /// Certificate, key and CA paths of a host's pgBackRest certificate.
    pub fn cert_files(&self, host: &str) -> (String, String, String) {
        (
            format!("{}/{host}.crt", self.pgbackrest_certs),
            format!("{}/{host}.key", self.pgbackrest_certs),
            format!("{}/ca.crt", self.pgbackrest_certs),
        )
    }
}

impl ClusterPaths {
    /// Certificate, key and CA paths of a member's certificate (etcd, Patroni, PostgreSQL).
    pub fn member_cert_files(&self, host: &str) -> (String, String, String) {
        (
            format!("{}/{host}.crt", self.tls_dir),
            format!("{}/{host}.key", self.tls_dir),
            format!("{}/ca.crt", self.tls_dir),
        )
    }
}

/// One member of a cluster, as other parts of the repo need it.
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    /// Inventory name (also the Patroni and etcd member name and the certificate CN).
    pub name: String,
    /// Address.
    pub address: String,
    /// Address as written before `:port` (IPv6 in brackets).
    pub host: String,
}

impl Member {
    pub(crate) fn of(h: &Host) -> Member {
        let host = match h.address.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]", h.address),
            _ => h.address.clone(),
        };
        Member {
            name: h.name.clone(),
            address: h.address.clone(),
            host,
        }
    }
}

/// The hosts a manifest selects, sorted by name.
pub(crate) fn selected_hosts<'i>(m: &Manifest, inv: &'i Inventory) -> Vec<&'i Host> {
    m.hosts
        .as_ref()
        .map(|s| {
            s.select(inv)
                .into_iter()
                .filter_map(|n| inv.host(n))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks a CIDR such as `192.168.150.0/24`.
pub fn check_cidr(text: &str) -> Result<(), String> {
    let bad = || format!("`{text}` is not a network in CIDR notation (like 192.168.150.0/24)");
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(())
}

/// A compose project, stanza or scope name: lowercase letters, digits, `-`, `_`.
pub(crate) fn check_project_name(cx: &mut CheckCx, what: &str) {
    let name = cx.manifest.name.clone();
    let ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        cx.error(
            "name",
            format!("`{name}` cannot be used as {what}"),
            Some(
                "use lowercase letters, digits, `-` and `_`, starting with a letter or digit"
                    .into(),
            ),
        );
    }
}

pub(crate) fn is_pg_identifier(name: &str) -> bool {
    let mut b = name.bytes();
    name.len() <= 63
        && b.next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Shared checks of the OS account, TLS settings (when there are any) and image.
pub(crate) fn check_common(
    cx: &mut CheckCx,
    os: &OsAccount,
    tls: Option<&TlsSettings>,
    image: &Option<String>,
    compose_command: &str,
) {
    if !crate::model::values::is_valid_account_name(&os.name) {
        cx.error(
            "os_user.name",
            format!("`{}` is not a valid user name", os.name),
            None,
        );
    }
    if os.uid == 0 || os.gid == 0 {
        cx.error(
            "os_user",
            "the containers must not run as root: give os_user a non-zero uid and gid",
            None,
        );
    }
    cx.abs_path("os_user.home", &os.home, &[]);
    for (i, g) in os.groups.iter().enumerate() {
        cx.account(&format!("os_user.groups[{i}]"), g);
    }
    cx.abs_path("compose_command", compose_command, &[]);
    if let Some(img) = image
        && (img.is_empty() || img.chars().any(char::is_whitespace))
    {
        cx.error("image", format!("`{img}` is not an image reference"), None);
    }
    if let Some(tls) = tls {
        check_tls(cx, tls);
    }
    if !cx.manifest.notify.is_empty() {
        cx.error(
            "notify",
            format!(
                "a {} wires its own handlers; `notify` is not supported on it",
                cx.manifest.kind
            ),
            None,
        );
    }
}

/// The CA, names, trusted CAs and renewal of a certificate's settings.
fn check_tls(cx: &mut CheckCx, tls: &TlsSettings) {
    if cx.repo.find("CertificateAuthority", &tls.ca).is_none() {
        let known = cx.repo.names_of("CertificateAuthority");
        let d = unknown_ca(cx.manifest, &tls.ca, &known);
        cx.diags.push(d);
    }
    for (i, name) in tls.names.iter().enumerate() {
        let dns_ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
            });
        if name.parse::<IpAddr>().is_err() && !dns_ok {
            cx.error(
                &format!("tls.names[{i}]"),
                format!("`{name}` is neither a DNS name nor an IP address"),
                Some("write the name or address clients use to reach the cluster".into()),
            );
        }
    }
    for (i, other) in tls.trust.iter().enumerate() {
        let field = format!("tls.trust[{i}]");
        if other == &tls.ca {
            cx.error(
                &field,
                format!("`{other}` is the signing CA already (`tls.ca`)"),
                Some("list only the other CAs to trust during a rotation".into()),
            );
        } else if tls.trust[..i].contains(other) {
            cx.error(&field, format!("`{other}` is listed twice"), None);
        } else if cx.repo.find("CertificateAuthority", other).is_none() {
            let known = cx.repo.names_of("CertificateAuthority");
            cx.error(
                &field,
                format!("unknown CertificateAuthority `{other}`"),
                Some(if known.is_empty() {
                    format!("declare it and create it with `plumb certs init-ca {other}`")
                } else {
                    format!("known CAs: {}", known.join(", "))
                }),
            );
        }
    }
    if tls.renew_before >= tls.validity {
        cx.error(
            "tls.renew_before",
            format!(
                "renew_before ({}) is not shorter than validity ({})",
                tls.renew_before, tls.validity
            ),
            Some("a certificate would be reissued on every run".into()),
        );
    }
}

/// The computed values of one cluster, shared with the `BackupRepo` that serves it.
#[derive(Clone, Debug)]
pub struct ClusterModel {
    /// Cluster name (scope, stanza).
    pub name: String,
    /// Members, sorted by name.
    pub members: Vec<Member>,
    /// Folders.
    pub paths: ClusterPaths,
    /// Superuser name.
    pub superuser: String,
    /// Ports.
    pub ports: Ports,
    /// The BackupRepo name, if any.
    pub backup_repo: Option<String>,
    /// The CA.
    pub ca: String,
}

/// "unknown CertificateAuthority", the same from validation and from rendering.
pub(crate) fn unknown_ca(m: &Manifest, ca: &str, known: &[&str]) -> Diagnostic {
    m.error("tls.ca", format!("unknown CertificateAuthority `{ca}`"))
        .with_hint(if known.is_empty() {
            format!(
                "declare a CertificateAuthority named `{ca}` and create it with `plumb certs init-ca {ca}`"
            )
        } else {
            format!("known CAs: {}", known.join(", "))
        })
}

/// "unknown BackupRepo", the same from validation and from rendering.
pub(crate) fn unknown_backup_repo(m: &Manifest, name: &str, known: &[&str]) -> Diagnostic {
    m.error("backup.repo", format!("unknown BackupRepo `{name}`"))
        .with_hint(if known.is_empty() {
            "declare a BackupRepo manifest, or remove `backup`".to_string()
        } else {
            format!("known BackupRepos: {}", known.join(", "))
        })
}

/// A BackupRepo must select exactly one host.
pub(crate) fn repo_host_count(rm: &Manifest, hosts: &[&Host]) -> Diagnostic {
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    rm.error(
        "hosts",
        format!(
            "a BackupRepo lands on exactly one host; this one selects {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ),
    )
    .with_hint("write `hosts: host:NAME`")
}

/// The image of a cluster or repository on a host.
pub(crate) fn image_for(image: &Option<String>, host: &Host, version: u32) -> String {
    image
        .clone()
        .or_else(|| {
            host.vars
                .get("postgres_image")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("plumb-lab/postgres-ha:{version}"))
}

/// The host var `cluster_network`, checked.
pub(crate) fn network_var(m: &Manifest, h: &Host) -> Result<String, Diagnostic> {
    let hint = "set `network:` on the cluster, or the var `cluster_network` (a CIDR such as 192.168.150.0/24) in the inventory";
    match h.vars.get("cluster_network") {
        Some(Value::String(s)) => match check_cidr(s) {
            Ok(()) => Ok(s.clone()),
            Err(msg) => Err(m
                .error("network", format!("var `cluster_network`: {msg}"))
                .with_hint(hint)),
        },
        _ => Err(m
            .error(
                "network",
                "no `network` on the cluster and no var `cluster_network` for its hosts",
            )
            .with_hint(hint)),
    }
}

/// The PEM of `tls.ca` followed by those of `tls.trust`, in that order when `sorted` is false
/// (a certificate's bundle: its CA first), sorted by CA name otherwise (a bundle that stays the
/// same when a rotation swaps `ca` and `trust`).
pub(crate) fn trust_bundle(
    cx: &HostCx,
    m: &Manifest,
    tls: &TlsSettings,
    sorted: bool,
) -> Result<Content, Diagnostic> {
    let mut names: Vec<&String> = std::iter::once(&tls.ca).chain(&tls.trust).collect();
    if sorted {
        names.sort();
    }
    let mut pem = Vec::new();
    for name in names {
        let cert = cx.ca_certificate(name).map_err(|_| {
            let known: Vec<&str> = cx
                .repo()
                .ca_certificates
                .keys()
                .map(String::as_str)
                .collect();
            unknown_ca(m, name, &known)
        })?;
        pem.extend_from_slice(cert.bytes());
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
    }
    Ok(Content::plain(pem))
}

/// A host's certificate: CN = inventory name, SANs = the name and the address, then `extra`
/// (each a DNS name, or an IP address which goes in both lists). The address is a DNS SAN too,
/// because pgBackRest (2.45 in Debian bookworm) matches the host it connects to against DNS
/// SANs and the CN only, never IP SANs; etcd, Patroni's clients (Python's ssl), HAProxy and
/// libpq match IP SANs.
pub(crate) fn certificate(
    cx: &HostCx,
    m: &Manifest,
    host: &Host,
    tls: &TlsSettings,
    (cert, key, ca): (&str, &str, &str),
    os: &OsAccount,
    extra: &[String],
) -> Result<CertificateState, Diagnostic> {
    // Its CA first (what the issuer is checked against), then the CAs of a rotation.
    let ca_certificate = trust_bundle(cx, m, tls, false)?;
    let mut dns_names = vec![host.name.clone()];
    let mut ip_addresses: Vec<String> = Vec::new();
    for name in std::iter::once(&host.address).chain(extra) {
        if let Ok(a) = name.parse::<IpAddr>()
            && !ip_addresses.contains(&a.to_string())
        {
            ip_addresses.push(a.to_string());
        }
        if !dns_names.contains(name) {
            dns_names.push(name.clone());
        }
    }
    Ok(CertificateState {
        ca: tls.ca.clone(),
        ca_certificate,
        common_name: host.name.clone(),
        dns_names,
        ip_addresses,
        cert_path: cert.to_string(),
        key_path: key.to_string(),
        ca_path: Some(ca.to_string()),
        owner: os.name.clone(),
        group: os.name.clone(),
        key_mode: FileMode(0o600),
        cert_mode: FileMode(0o644),
        validity: tls.validity,
        renew_before: tls.renew_before,
        key_algorithm: KeyAlgorithm::EcdsaP256,
    })
}

/// The resources a composite expands into on one host.
pub(crate) struct Expansion<'m> {
    m: &'m Manifest,
    /// The items, in expansion order.
    pub items: Vec<Desired>,
}

impl<'m> Expansion<'m> {
    pub(crate) fn new(m: &'m Manifest) -> Self {
        Expansion {
            m,
            items: Vec::new(),
        }
    }

    /// Adds an item with its own notify list.
    pub(crate) fn push(
        &mut self,
        cx: &HostCx,
        name: String,
        spec: PrimitiveSpec,
        notify: Vec<ResourceRef>,
    ) {
        let mut d = super::desired(self.m, cx, name, spec);
        d.notify = notify;
        self.items.push(d);
    }

    /// The group and user the containers run as.
    pub(crate) fn account(&mut self, cx: &HostCx, os: &OsAccount) {
        self.push(
            cx,
            os.name.clone(),
            PrimitiveSpec::Group(GroupSpec {
                group: os.name.clone(),
                gid: Some(os.gid),
                system: false,
                allow_renumber: false,
                state: Presence::Present,
            }),
            vec![],
        );
        self.push(
            cx,
            os.name.clone(),
            PrimitiveSpec::User(UserSpec {
                user: os.name.clone(),
                uid: Some(os.uid),
                group: Some(os.name.clone()),
                groups: os.groups.clone(),
                home: Some(os.home.clone()),
                shell: Some("/bin/bash".into()),
                comment: None,
                system: false,
                create_home: true,
                allow_renumber: false,
                state: Presence::Present,
            }),
            vec![],
        );
    }
}

pub(crate) fn default_compose() -> String {
    "/usr/bin/docker-compose".into()
}

pub(crate) fn p_pgbackrest() -> u16 {
    8432
}
