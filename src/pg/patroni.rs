//! Patroni's REST API on one member, over a tunnel through that member's SSH connection:
//! `GET /cluster`, `GET /patroni`, `GET /config`, `PATCH /config`, `POST /restart`,
//! `POST /switchover`, with basic authentication (Patroni's `restapi.authentication`).
//!
//! Responses are typed for what plumb needs and tolerant of what it does not: Patroni 3.0
//! (Debian bookworm) says `master` where 4.x says `primary`, reports replicas as `running`
//! where 3.0.4+ says `streaming`, and adds fields over time; unknown fields are ignored and
//! roles map to [`Role`].

use std::time::Duration;

use hyper::Method;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::Credentials;
use super::http::{self, HttpError, HttpRequest, HttpResponse};
use super::tls::ClusterTls;
use crate::transport::{Connection, Destination};

/// Bound on a read (`GET`) or a `PATCH /config`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on a restart or a switchover: Patroni answers once PostgreSQL is back (restart) or
/// the new leader holds the lock (switchover), which takes a few `loop_wait`s.
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// A member's role, as `/cluster` and `/patroni` name it in any Patroni version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds the leader lock (`leader` in `/cluster`; `master` or `primary` in `/patroni`).
    Leader,
    /// The leader of a standby cluster.
    StandbyLeader,
    /// A synchronous replica.
    SyncStandby,
    /// A replica.
    Replica,
    /// Anything else Patroni says (kept as said).
    #[serde(untagged)]
    Other(String),
}

impl Role {
    /// Whether the member is the cluster's primary.
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader)
    }

    /// Whether the member is a replica of some kind.
    pub fn is_replica(&self) -> bool {
        matches!(self, Role::Replica | Role::SyncStandby)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Leader => "leader",
            Role::StandbyLeader => "standby_leader",
            Role::SyncStandby => "sync_standby",
            Role::Replica => "replica",
            Role::Other(other) => other,
        })
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(match text.as_str() {
            "leader" | "master" | "primary" => Role::Leader,
            "standby_leader" | "standby-leader" => Role::StandbyLeader,
            "sync_standby" | "sync-standby" => Role::SyncStandby,
            "replica" => Role::Replica,
            _ => Role::Other(text),
        })
    }
}

/// A replica's lag behind the leader in bytes of WAL, as `/cluster` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Lag {
    /// Bytes behind.
    Bytes(u64),
    /// `"unknown"` (no WAL position reported yet) or another word.
    Unknown(String),
}

/// One member in `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// Member name (Patroni's `name`).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Patroni's state: `running`, `streaming` (3.0.4+), `starting`, `stopped`,
    /// `creating replica`, `crashed`, ...
    #[serde(default)]
    pub state: String,
    /// The member's REST API URL.
    #[serde(default)]
    pub api_url: Option<String>,
    /// PostgreSQL's address.
    #[serde(default)]
    pub host: Option<String>,
    /// PostgreSQL's port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Timeline.
    #[serde(default)]
    pub timeline: Option<u64>,
    /// Lag behind the leader (replicas only).
    #[serde(default)]
    pub lag: Option<Lag>,
    /// A parameter change waits for a restart.
    #[serde(default)]
    pub pending_restart: bool,
}

/// `GET /cluster`: every member as the DCS knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Members, sorted by name (Patroni sorts them).
    pub members: Vec<ClusterMember>,
    /// Cluster management is paused.
    #[serde(default)]
    pub pause: bool,
}

impl ClusterView {
    /// The members holding the leader role (one in a healthy cluster).
    pub fn leaders(&self) -> Vec<&ClusterMember> {
        self.members.iter().filter(|m| m.role.is_leader()).collect()
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&ClusterMember> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// Patroni's own version and scope, in `GET /patroni`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatroniInfo {
    /// Patroni's version.
    #[serde(default)]
    pub version: String,
    /// The cluster (scope) name.
    #[serde(default)]
    pub scope: String,
}

/// `GET /patroni`: one member's view of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// PostgreSQL's state as Patroni sees it (`running`, `starting`, `stopped`, ...).
    #[serde(default)]
    pub state: String,
    /// Role (`master`/`primary` map to [`Role::Leader`]).
    pub role: Role,
    /// PostgreSQL's version as a number (150018 for 15.18).
    #[serde(default)]
    pub server_version: Option<u32>,
    /// Timeline.
    #[serde(default)]
    pub timeline: Option<u64>,
    /// When the postmaster started (PostgreSQL's text, e.g. `2026-12-03 08:00:05.962+00:00`):
    /// a restart changes it.
    #[serde(default)]
    pub postmaster_start_time: Option<String>,
    /// A parameter change waits for a restart.
    #[serde(default)]
    pub pending_restart: bool,
    /// The system identifier of the data directory.
    #[serde(default)]
    pub database_system_identifier: Option<String>,
    /// Patroni's version and scope.
    #[serde(default)]
    pub patroni: Option<PatroniInfo>,
    /// The DCS has no leader.
    #[serde(default)]
    pub cluster_unlocked: bool,
    /// Unix time Patroni last reached the DCS.
    #[serde(default)]
    pub dcs_last_seen: Option<u64>,
}

/// Restart filters of `POST /restart` (Patroni 3.0): the member restarts only if they hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestartOptions {
    /// Only if a parameter change waits for a restart (what a roll after `PATCH /config` uses).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub restart_pending: bool,
    /// Only if the member has this role: `primary` or `replica`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Only if PostgreSQL is older than this version (`15.4`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres_version: Option<String>,
    /// Seconds Patroni waits for PostgreSQL to come back before it fails the restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
}

/// What `POST /restart` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartOutcome {
    /// PostgreSQL was restarted (Patroni's message).
    Restarted(String),
    /// The filters did not hold (e.g. nothing pending): nothing was done.
    NotNeeded(String),
}

/// What went wrong with a REST call. Names the member and the endpoint, never the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PatroniError {
    /// No answer (tunnel, HTTP, timeout).
    #[error("Patroni on {member}: {endpoint}: {source}")]
    Request {
        /// Member name.
        member: String,
        /// `GET /cluster`, `POST /restart`, ...
        endpoint: String,
        /// Why.
        #[source]
        source: HttpError,
    },
    /// The REST API refused the credentials.
    #[error(
        "Patroni on {member}: {endpoint}: 401 Unauthorized (check the cluster's rest_api username \
         and password secret)"
    )]
    Unauthorized {
        /// Member name.
        member: String,
        /// The endpoint.
        endpoint: String,
    },
    /// An answer other than success.
    #[error("Patroni on {member}: {endpoint}: HTTP {status}: {message}")]
    Status {
        /// Member name.
        member: String,
        /// The endpoint.
        endpoint: String,
        /// HTTP status code.
        status: u16,
        /// The start of Patroni's answer.
        message: String,
    },
    /// A success whose JSON plumb cannot read.
    #[error("Patroni on {member}: {endpoint}: unexpected answer: {source}")]
    Decode {
        /// Member name.
        member: String,
        /// The endpoint.
        endpoint: String,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
}

/// A client of one member's REST API, through that member's SSH connection.
#[derive(Debug, Clone)]
pub struct PatroniClient<'a> {
    conn: &'a Connection,
    member: String,
    destination: Destination,
    host: String,
    auth: Credentials,
    tls: Option<ClusterTls>,
    request_timeout: Duration,
    action_timeout: Duration,
}

impl<'a> PatroniClient<'a> {
    /// A client of member `member`'s REST API at `destination` (as its SSH server sees it,
    /// e.g. `Destination::tcp("10.0.0.5", 8008)`), authenticating with `auth`.
    pub fn new(
        conn: &'a Connection,
        member: &str,
        destination: Destination,
        auth: Credentials,
    ) -> Self {
        let host = match &destination {
            Destination::Tcp { .. } => destination.to_string(),
            Destination::Unix { .. } => "localhost".to_string(),
        };
        PatroniClient {
            conn,
            member: member.to_string(),
            destination,
            host,
            auth,
            tls: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            action_timeout: DEFAULT_ACTION_TIMEOUT,
        }
    }

    /// Speaks HTTPS, verifying the REST API's certificate against `tls` and the destination's
    /// host (Patroni's `restapi.certfile`).
    pub fn with_tls(mut self, tls: ClusterTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the bounds on reads and `PATCH` (`request`) and on restart and switchover
    /// (`action`).
    pub fn with_timeouts(mut self, request: Duration, action: Duration) -> Self {
        self.request_timeout = request;
        self.action_timeout = action;
        self
    }

    /// The member this client talks to.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// `GET /cluster`.
    pub async fn cluster(&self) -> Result<ClusterView, PatroniError> {
        let response = self
            .call(Method::GET, "/cluster", None, self.request_timeout)
            .await?;
        self.success_json(Method::GET, "/cluster", response)
    }

    /// `GET /patroni`.
    pub async fn patroni(&self) -> Result<MemberStatus, PatroniError> {
        let response = self
            .call(Method::GET, "/patroni", None, self.request_timeout)
            .await?;
        self.success_json(Method::GET, "/patroni", response)
    }

    /// `GET /config`: the dynamic configuration in the DCS.
    pub async fn config(&self) -> Result<Value, PatroniError> {
        let response = self
            .call(Method::GET, "/config", None, self.request_timeout)
            .await?;
        self.success_json(Method::GET, "/config", response)
    }

    /// `PATCH /config` with a JSON merge patch (`null` removes a key); returns the whole new
    /// configuration.
    pub async fn patch_config(&self, patch: &Value) -> Result<Value, PatroniError> {
        let body = serde_json::to_vec(patch)
            .map_err(|source| self.decode_error(&Method::PATCH, "/config", source))?;
        let response = self
            .call(Method::PATCH, "/config", Some(body), self.request_timeout)
            .await?;
        self.success_json(Method::PATCH, "/config", response)
    }

    /// `POST /restart` with filters. Returns once Patroni answers, which for an immediate
    /// restart is after PostgreSQL is back (or Patroni gave up).
    pub async fn restart(&self, options: &RestartOptions) -> Result<RestartOutcome, PatroniError> {
        let body = serde_json::to_vec(options)
            .map_err(|source| self.decode_error(&Method::POST, "/restart", source))?;
        let response = self
            .call(Method::POST, "/restart", Some(body), self.action_timeout)
            .await?;
        let message = response.body_excerpt(500);
        match response.status {
            200 => Ok(RestartOutcome::Restarted(message)),
            // Patroni answers 503 both when a filter does not hold and when the restart failed.
            503 if message.contains("conditions are not satisfied") => {
                Ok(RestartOutcome::NotNeeded(message))
            }
            _ => Err(self.status_error(&Method::POST, "/restart", &response)),
        }
    }

    /// `POST /switchover` from `leader` to `candidate` (any healthy replica when `None`).
    /// Returns Patroni's message once the new leader holds the lock.
    pub async fn switchover(
        &self,
        leader: &str,
        candidate: Option<&str>,
    ) -> Result<String, PatroniError> {
        let mut request = serde_json::Map::new();
        request.insert("leader".into(), Value::String(leader.to_string()));
        if let Some(candidate) = candidate {
            request.insert("candidate".into(), Value::String(candidate.to_string()));
        }
        let body = serde_json::to_vec(&Value::Object(request))
            .map_err(|source| self.decode_error(&Method::POST, "/switchover", source))?;
        let response = self
            .call(Method::POST, "/switchover", Some(body), self.action_timeout)
            .await?;
        match response.status {
            200 => Ok(response.body_excerpt(500)),
            _ => Err(self.status_error(&Method::POST, "/switchover", &response)),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
        within: Duration,
    ) -> Result<HttpResponse, PatroniError> {
        let request = HttpRequest {
            method: method.clone(),
            path,
            json,
            auth: Some(&self.auth),
        };
        let response = http::request(
            self.conn,
            &self.destination,
            &self.host,
            self.tls.as_ref(),
            request,
            within,
        )
        .await
        .map_err(|source| PatroniError::Request {
            member: self.member.clone(),
            endpoint: endpoint(&method, path),
            source,
        })?;
        if response.status == 401 {
            return Err(PatroniError::Unauthorized {
                member: self.member.clone(),
                endpoint: endpoint(&method, path),
            });
        }
        Ok(response)
    }

    fn success_json<T: for<'de> Deserialize<'de>>(
        &self,
        method: Method,
        path: &str,
        response: HttpResponse,
    ) -> Result<T, PatroniError> {
        if response.status != 200 {
            return Err(self.status_error(&method, path, &response));
        }
        serde_json::from_slice(&response.body)
            .map_err(|source| self.decode_error(&method, path, source))
    }

    fn status_error(&self, method: &Method, path: &str, response: &HttpResponse) -> PatroniError {
        PatroniError::Status {
            member: self.member.clone(),
            endpoint: endpoint(method, path),
            status: response.status,
            message: response.body_excerpt(300),
        }
    }

    fn decode_error(&self, method: &Method, path: &str, source: serde_json::Error) -> PatroniError {
        PatroniError::Decode {
            member: self.member.clone(),
            endpoint: endpoint(method, path),
            source,
        }
    }
}

fn endpoint(method: &Method, path: &str) -> String {
    format!("{method} {path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    // GET /cluster of Debian's Patroni 3.0.2: a leader, a replica still being created, one
    // streaming with a pending restart.
    const CLUSTER_302: &str = r#"{"members": [
        {"name": "pg1", "role": "leader", "state": "running", "api_url": "http://10.0.0.1:8008/patroni",
         "host": "10.0.0.1", "port": 5432, "timeline": 3, "pending_restart": true,
         "tags": {"nofailover": false}},
        {"name": "pg2", "role": "replica", "state": "creating replica", "api_url": "http://10.0.0.2:8008/patroni",
         "host": "10.0.0.2", "port": 5432, "lag": "unknown"},
        {"name": "pg3", "role": "sync_standby", "state": "running", "api_url": "http://10.0.0.3:8008/patroni",
         "host": "10.0.0.3", "port": 5432, "timeline": 3, "lag": 1024}],
        "scope": "postgres01"}"#;

    #[test]
    fn cluster_view_reads_patroni_302() {
        let view: ClusterView = serde_json::from_str(CLUSTER_302).expect("parse");
        assert_eq!(view.members.len(), 3);
        let pg1 = view.member("pg1").unwrap();
        assert_eq!(pg1.role, Role::Leader);
        assert!(pg1.pending_restart);
        assert_eq!(pg1.timeline, Some(3));
        assert_eq!(pg1.lag, None);
        let pg2 = view.member("pg2").unwrap();
        assert_eq!(pg2.state, "creating replica");
        assert_eq!(pg2.lag, Some(Lag::Unknown("unknown".into())));
        assert!(!pg2.pending_restart);
        let pg3 = view.member("pg3").unwrap();
        assert_eq!(pg3.role, Role::SyncStandby);
        assert!(pg3.role.is_replica());
        assert_eq!(pg3.lag, Some(Lag::Bytes(1024)));
        assert_eq!(view.leaders().len(), 1);
        assert!(!view.pause);
    }

    #[test]
    fn member_status_maps_master_and_primary_to_leader() {
        let v302 = r#"{"state": "running", "postmaster_start_time": "2026-12-03 08:00:05.962018+00:00",
            "role": "master", "server_version": 150018, "xlog": {"location": 50331968}, "timeline": 1,
            "replication": [{"usename": "replicator", "application_name": "pg2", "client_addr": "10.0.0.2",
            "state": "streaming", "sync_state": "async", "sync_priority": 0}],
            "dcs_last_seen": 1764748805, "database_system_identifier": "7313850436227616825",
            "pending_restart": true, "patroni": {"version": "3.0.2", "scope": "postgres01"}}"#;
        let s: MemberStatus = serde_json::from_str(v302).expect("parse 3.0.2");
        assert_eq!(s.role, Role::Leader);
        assert!(s.pending_restart);
        assert_eq!(s.server_version, Some(150018));
        assert_eq!(
            s.postmaster_start_time.as_deref(),
            Some("2026-12-03 08:00:05.962018+00:00")
        );
        assert_eq!(s.patroni.unwrap().version, "3.0.2");
        let v4: MemberStatus =
            serde_json::from_str(r#"{"state": "streaming", "role": "replica", "timeline": 2}"#)
                .unwrap();
        assert_eq!(v4.role, Role::Replica);
        assert!(!v4.pending_restart);
        let primary: MemberStatus =
            serde_json::from_str(r#"{"state": "running", "role": "primary"}"#).unwrap();
        assert!(primary.role.is_leader());
        let odd: MemberStatus =
            serde_json::from_str(r#"{"state": "stopped", "role": "uninitialized"}"#).unwrap();
        assert_eq!(odd.role, Role::Other("uninitialized".into()));
        assert_eq!(odd.role.to_string(), "uninitialized");
    }

    #[test]
    fn restart_options_send_only_what_is_set() {
        let pending = RestartOptions {
            restart_pending: true,
            ..RestartOptions::default()
        };
        assert_eq!(
            serde_json::to_string(&pending).unwrap(),
            r#"{"restart_pending":true}"#
        );
        assert_eq!(
            serde_json::to_string(&RestartOptions::default()).unwrap(),
            "{}"
        );
        let all = RestartOptions {
            restart_pending: false,
            role: Some("replica".into()),
            postgres_version: Some("15.4".into()),
            timeout: Some(60),
        };
        assert_eq!(
            serde_json::to_string(&all).unwrap(),
            r#"{"role":"replica","postgres_version":"15.4","timeout":60}"#
        );
    }

    #[test]
    fn roles_serialize_as_patroni_4_names() {
        assert_eq!(serde_json::to_string(&Role::Leader).unwrap(), r#""leader""#);
        assert_eq!(
            serde_json::to_string(&Role::Other("x y".into())).unwrap(),
            r#""x y""#
        );
    }
}
