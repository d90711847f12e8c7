//! etcd's health on a member (`GET /health` on its metrics listener: plain HTTP on the
//! member's loopback, since the client port requires a client certificate), over a tunnel
//! through the member's SSH connection. The health gate needs every member's etcd healthy.

use std::time::Duration;

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::http::{self, HttpRequest};
use crate::transport::{Connection, Destination};

/// One member's etcd, as the health gate sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdHealth {
    /// Member name.
    pub member: String,
    /// etcd answered `{"health":"true"}`.
    pub healthy: bool,
    /// Why not, when it is not (etcd's `reason`, an HTTP status, or why it could not be asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Deserialize)]
struct HealthBody {
    health: String,
    #[serde(default)]
    reason: String,
}

/// Asks `member`'s etcd at `destination` (its client URL as the SSH server sees it) whether
/// it is healthy, within `within`. Never fails: an etcd that cannot be asked is unhealthy,
/// with the reason.
pub async fn health(
    conn: &Connection,
    member: &str,
    destination: &Destination,
    within: Duration,
) -> EtcdHealth {
    let request = HttpRequest {
        method: Method::GET,
        path: "/health",
        json: None,
        auth: None,
    };
    let verdict = match http::request(
        conn,
        destination,
        &destination.to_string(),
        None,
        request,
        within,
    )
    .await
    {
        Err(e) => Err(format!("cannot ask etcd at {destination}: {e}")),
        Ok(response) => interpret(response.status, &response.body),
    };
    EtcdHealth {
        member: member.to_string(),
        healthy: verdict.is_ok(),
        reason: verdict.err(),
    }
}

/// etcd's answer to `/health` read: `Ok` when healthy, else why not. etcd 3.4 answers 503
/// with `{"health":"false"}` when it has no leader.
fn interpret(status: u16, body: &[u8]) -> Result<(), String> {
    match serde_json::from_slice::<HealthBody>(body) {
        Ok(b) if b.health == "true" && status == 200 => Ok(()),
        Ok(b) if b.reason.is_empty() => Err(format!(
            "etcd reports health {:?} (HTTP {status})",
            b.health
        )),
        Ok(b) => Err(format!(
            "etcd reports health {:?}: {} (HTTP {status})",
            b.health, b.reason
        )),
        Err(_) => Err(format!(
            "unexpected answer from etcd's /health (HTTP {status}): {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_answers_are_read() {
        assert_eq!(interpret(200, br#"{"health":"true","reason":""}"#), Ok(()));
        assert_eq!(interpret(200, br#"{"health":"true"}"#), Ok(()));
        let no_leader =
            interpret(503, br#"{"health":"false","reason":"RAFT NO LEADER"}"#).unwrap_err();
        assert!(
            no_leader.contains("RAFT NO LEADER") && no_leader.contains("503"),
            "{no_leader}"
        );
        let garbage = interpret(404, b"404 page not found").unwrap_err();
        assert!(garbage.contains("404 page not found"), "{garbage}");
    }
}
