//! Bastions, multiplexed: one authenticated session per bastion, shared by every host behind
//! it, each host reached over a `direct-tcpip` channel of that session and verified against
//! its own host key.
//!
//! A [`Route`] lists the bastions to go through (the first dialled directly, each next one
//! through the one before) and the host. [`Bastions`] opens each bastion once per run, however
//! many hosts ask for it at the same time, and keeps it until the run ends; a bastion that
//! fails is not tried again by every host behind it: they all fail at once with its error,
//! named as the bastion's. A session that has ended (the bastion rebooted) is opened again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::{ConnectOptions, Connection, Endpoint, TransportError};

/// One SSH hop: where, and how to connect and verify it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// Where.
    pub endpoint: Endpoint,
    /// How (identity, known_hosts, timeouts).
    pub options: ConnectOptions,
}

impl Hop {
    /// Identifies a session: two hosts share a bastion session only when they reach it the same
    /// way (same user, address, port, identities and known_hosts).
    fn key(&self) -> String {
        format!(
            "{}@{}:{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.endpoint.user,
            self.endpoint.address,
            self.endpoint.port,
            self.options.identity,
            self.options.extra_identities,
            self.options.certificates,
            self.options.known_hosts,
            self.options.more_known_hosts,
            self.options.host_key_alias,
        )
    }
}

/// How to reach a host: bastions first (in dialling order), then the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Bastions, the first dialled directly.
    pub bastions: Vec<Hop>,
    /// The host.
    pub target: Hop,
}

type Opened = Result<Arc<Connection>, Arc<TransportError>>;
type Slot = Arc<OnceCell<Opened>>;
type OpenFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Opened> + Send + 'a>>;

/// The bastion sessions of one run. Cheap to share (`Arc`); sessions close when it is dropped
/// and no host connection uses them any more.
#[derive(Default)]
pub struct Bastions {
    sessions: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for Bastions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.sessions.lock().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("Bastions").field("sessions", &n).finish()
    }
}

impl Bastions {
    /// An empty pool.
    pub fn new() -> Bastions {
        Bastions::default()
    }

    /// Connects to the route's host, through its bastions (opened once and shared).
    pub async fn connect(&self, route: &Route) -> Result<Connection, TransportError> {
        let target = &route.target;
        if route.bastions.is_empty() {
            return Connection::open(&target.endpoint, &target.options).await;
        }
        let bastion = self.session(&route.bastions).await.map_err(|e| {
            let (bastion, reason) = describe_failure(&route.bastions, &e);
            TransportError::Bastion {
                target: target.endpoint.describe(),
                bastion,
                reason,
            }
        })?;
        Connection::open_through(&bastion, &target.endpoint, &target.options).await
    }

    /// How many bastion sessions were opened (for tests and logs).
    pub fn open_sessions(&self) -> usize {
        let map = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.values()
            .filter(|slot| matches!(slot.get(), Some(Ok(c)) if !c.is_closed()))
            .count()
    }

    /// The session of the last hop of `chain`, opening it (and the hops before it) if needed.
    fn session<'a>(&'a self, chain: &'a [Hop]) -> OpenFuture<'a> {
        Box::pin(async move {
            let Some((last, before)) = chain.split_last() else {
                return Err(Arc::new(TransportError::Handshake {
                    target: String::new(),
                    reason: "internal error: empty bastion chain".into(),
                }));
            };
            let key = chain.iter().map(Hop::key).collect::<Vec<_>>().join(" > ");
            let slot = {
                let mut map = self
                    .sessions
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let slot = map.entry(key.clone()).or_default();
                // A session that ended is opened again (a failure is not: it stands for the run).
                if matches!(slot.get(), Some(Ok(c)) if c.is_closed()) {
                    *slot = Slot::default();
                }
                Arc::clone(slot)
            };
            slot.get_or_init(|| async {
                let opened = if before.is_empty() {
                    Connection::open(&last.endpoint, &last.options).await
                } else {
                    match self.session(before).await {
                        Ok(via) => {
                            Connection::open_through(&via, &last.endpoint, &last.options).await
                        }
                        Err(e) => {
                            let (bastion, reason) = describe_failure(before, &e);
                            Err(TransportError::Bastion {
                                target: last.endpoint.describe(),
                                bastion,
                                reason,
                            })
                        }
                    }
                };
                match opened {
                    Ok(c) => {
                        tracing::debug!(bastion = %c.target(), "bastion session open");
                        Ok(Arc::new(c))
                    }
                    Err(e) => Err(Arc::new(e)),
                }
            })
            .await
            .clone()
        })
    }
}

/// The bastion to name for a failure of `chain`, and why. When an earlier bastion of the chain
/// is the one that failed, its own error already names it.
fn describe_failure(chain: &[Hop], error: &TransportError) -> (String, String) {
    let last = chain
        .last()
        .map(|h| h.endpoint.describe())
        .unwrap_or_default();
    match error {
        TransportError::Bastion {
            bastion, reason, ..
        } => (bastion.clone(), reason.clone()),
        other => (last, other.to_string()),
    }
}
