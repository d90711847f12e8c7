//! What the cluster phase of a converge needs of a `PostgresCluster`, in the terms of the `pg`
//! clients: the members and their ports, the credentials plumb logs in with, and the declared
//! roles, databases, grants and dynamic configuration. Pure: secrets come through a closure,
//! so this is tested without a network and the values stay in memory.

use super::{DatabasePrivilegeSpec, Ports, PostgresClusterSpec};
use crate::kinds::Manifest;
use crate::kinds::cluster::{ClusterPaths, Member};
use crate::model::inventory::Inventory;
use crate::pg::dynconf::DeclaredDynamic;
use crate::pg::roles::{DatabasePrivilege, Declared, DeclaredDatabase, DeclaredRole, Grant};
use crate::pg::tls::ClusterTls;
use crate::pg::{Credentials, Password};

/// A secret the cluster phase needs could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster {cluster}: {field}: secret `{secret}`: {reason}")]
pub struct SecretError {
    /// The cluster.
    pub cluster: String,
    /// The manifest field naming the secret.
    pub field: String,
    /// The secret's name.
    pub secret: String,
    /// Why it could not be read (never its value).
    pub reason: String,
}

/// The cluster's trust bundle could not be built for plumb's own TLS clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster {cluster}: tls: {reason}")]
pub struct TrustError {
    /// The cluster.
    pub cluster: String,
    /// What is wrong (an undeclared CA, a certificate that cannot be read).
    pub reason: String,
}

/// Why the cluster phase cannot work with a declared cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    /// A secret could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The CA bundle could not be used.
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// A declared cluster as the cluster phase sees it.
#[derive(Debug, Clone)]
pub struct LiveCluster {
    /// Cluster (Patroni scope) name.
    pub name: String,
    /// Members, sorted by name.
    pub members: Vec<Member>,
    /// Ports of the services on each member.
    pub ports: Ports,
    /// The superuser plumb manages roles and databases as.
    pub superuser: Credentials,
    /// Basic auth of Patroni's REST API.
    pub rest_api: Credentials,
    /// The CAs the members' certificates are verified against (`tls.ca` and `tls.trust`):
    /// Patroni's REST API and PostgreSQL are reached over TLS.
    pub tls: ClusterTls,
    /// Roles, databases and grants.
    pub declared: Declared,
    /// Patroni's dynamic configuration.
    pub dynamic: DeclaredDynamic,
    /// The backup repository's name, if any.
    pub backup_repo: Option<String>,
    /// `backup.restore_on_empty`: a cluster whose every data directory is empty comes back
    /// from the newest backup.
    pub restore_on_empty: bool,
    /// Where each member keeps its data, configuration and stack (the same on every member).
    pub paths: ClusterPaths,
    /// The compose binary the stack is driven with.
    pub compose_command: String,
    /// PostgreSQL's binaries inside the member's container.
    pub bin_dir: String,
    /// etcd runs on the members (`dcs: etcd`), so the health gate asks each of them.
    pub etcd: bool,
}

impl LiveCluster {
    /// Member names, in order.
    pub fn member_names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }
}

impl PostgresClusterSpec {
    /// The cluster as the cluster phase needs it; `secret` reads a secret by name, `ca_pem` the
    /// certificate (PEM) of a `CertificateAuthority` by name.
    pub fn live(
        &self,
        m: &Manifest,
        inv: &Inventory,
        secret: &dyn Fn(&str) -> Result<Password, String>,
        ca_pem: &dyn Fn(&str) -> Option<Vec<u8>>,
    ) -> Result<LiveCluster, LiveError> {
        let model = self.model(m, inv);
        let mut bundles = Vec::new();
        for ca in std::iter::once(&self.tls.ca).chain(&self.tls.trust) {
            bundles.push(ca_pem(ca).ok_or_else(|| TrustError {
                cluster: m.name.clone(),
                reason: format!("CertificateAuthority `{ca}` is not declared"),
            })?);
        }
        let tls =
            ClusterTls::from_pem(bundles.iter().map(Vec::as_slice)).map_err(|e| TrustError {
                cluster: m.name.clone(),
                reason: e.to_string(),
            })?;
        let read = |field: &str, name: &str| {
            secret(name).map_err(|reason| SecretError {
                cluster: m.name.clone(),
                field: field.to_string(),
                secret: name.to_string(),
                reason,
            })
        };
        let superuser = Credentials::new(
            self.superuser.name_or("postgres"),
            read("superuser.password", &self.superuser.password.secret)?,
        );
        let rest_api = Credentials::new(
            self.rest_api.name_or("patroni"),
            read("rest_api.password", &self.rest_api.password.secret)?,
        );
        let mut roles = Vec::with_capacity(self.roles.len());
        for (i, r) in self.roles.iter().enumerate() {
            let password = match &r.password {
                Some(p) => Some(read(&format!("roles[{i}].password"), &p.secret)?),
                None => None,
            };
            roles.push(DeclaredRole {
                name: r.name.clone(),
                login: r.login,
                createdb: r.createdb,
                createrole: r.createrole,
                connection_limit: r.connection_limit,
                member_of: r.member_of.clone(),
                password,
            });
        }
        let mut grants = Vec::new();
        let databases = self
            .databases
            .iter()
            .map(|d| {
                for g in &d.grants {
                    if let Some(p) = g.privilege {
                        grants.push(Grant::Database {
                            database: d.name.clone(),
                            role: g.role.clone(),
                            privilege: match p {
                                DatabasePrivilegeSpec::Connect => DatabasePrivilege::Connect,
                                DatabasePrivilegeSpec::All => DatabasePrivilege::All,
                            },
                        });
                    } else if let Some(schema) = &g.schema {
                        grants.push(Grant::SchemaUsage {
                            database: d.name.clone(),
                            schema: schema.clone(),
                            role: g.role.clone(),
                        });
                    }
                }
                DeclaredDatabase {
                    name: d.name.clone(),
                    owner: d.owner.clone(),
                    encoding: d.encoding.clone(),
                }
            })
            .collect();
        let declared = Declared {
            roles,
            databases,
            grants,
            protected_roles: vec![
                self.superuser.name_or("postgres"),
                self.replication.name_or("replicator"),
                self.rewind.name_or("rewind_user"),
            ],
        };
        let dynamic = DeclaredDynamic {
            ttl: self.patroni.ttl,
            loop_wait: self.patroni.loop_wait,
            retry_timeout: self.patroni.retry_timeout,
            maximum_lag_on_failover: self.patroni.maximum_lag_on_failover,
            use_pg_rewind: Some(self.patroni.use_pg_rewind),
            parameters: self.dcs_parameters(&model.paths),
            remove_undeclared_parameters: true,
        };
        Ok(LiveCluster {
            name: m.name.clone(),
            members: model.members,
            ports: self.ports.clone(),
            superuser,
            rest_api,
            tls,
            declared,
            dynamic,
            backup_repo: model.backup_repo,
            restore_on_empty: self.backup.as_ref().is_some_and(|b| b.restore_on_empty),
            paths: model.paths,
            compose_command: self.compose_command.clone(),
            bin_dir: self.bin_dir(),
            etcd: self.dcs == super::Dcs::Etcd,
        })
    }
}
