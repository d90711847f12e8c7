//! The connections of `plumb serve`: its own accept loop over hyper, so that no client can hold
//! the server. Each connection gets a deadline for its request head ([`Limits::header_timeout`],
//! hyper's header read timeout) and a lifetime cap; the webhook handler bounds the body
//! ([`Limits::body_timeout`]). Connections are capped in total and per client address: past a
//! cap a connection is accepted and closed at once, so file descriptors never run out and one
//! address (a slowloris) cannot take the slots forges and health checks need. Each connection
//! serves one request (no keep-alive), so no idle connection outlives its deadline.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// How much the server lets clients hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send its request line and headers from connecting.
    pub header_timeout: Duration,
    /// Time a client has to send the body once the headers are in.
    pub body_timeout: Duration,
    /// Connections open at once, in total.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_connections_per_ip: 32,
        }
    }
}

impl Limits {
    /// The longest a connection may live: its head, its body and a margin for the answer
    /// (handlers only queue runs, they never wait for one).
    pub fn lifetime(&self) -> Duration {
        self.header_timeout + self.body_timeout + Duration::from_secs(10)
    }

    /// These limits with the connection cap lowered to fit `fd_limit` open files: half of them
    /// stay for the runs (git, SSH sessions to hosts, files).
    pub fn fit_to_fd_limit(mut self, fd_limit: u64) -> Limits {
        let room = usize::try_from(fd_limit / 2).unwrap_or(usize::MAX).max(1);
        self.max_connections = self.max_connections.min(room).max(1);
        self.max_connections_per_ip = self.max_connections_per_ip.min(self.max_connections).max(1);
        self
    }
}

/// Raises the soft limit of open files to the hard limit and returns the soft limit then in
/// force (a service manager's default of 1024 is easy to exhaust with idle connections).
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit on this process with a struct they fill in or read.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur as u64
    }
}

/// The per-address counts, and the total, of open connections.
struct Slots {
    total: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
}

/// One connection's place; given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Slots {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let permit = self.total.clone().try_acquire_owned().ok()?;
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_ip.entry(ip).or_default();
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            ip,
            _permit: permit,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_ip = self.slots.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Says how many connections were refused, at most every 10 seconds (a flood must not flood
/// the log too).
struct RefusalLog {
    since: Option<Instant>,
    count: u64,
}

impl RefusalLog {
    fn refused(&mut self, peer: SocketAddr, limits: &Limits) {
        self.count += 1;
        if self
            .since
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(
                refused = self.count,
                last_peer = %peer,
                max_connections = limits.max_connections,
                max_connections_per_ip = limits.max_connections_per_ip,
                "connections refused: too many open (in total or from one address)"
            );
            self.count = 0;
            self.since = Some(Instant::now());
        }
    }
}

/// Completes once the server asks its connections to close.
async fn closing(close: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: the server is gone too.
    let _ = close.wait_for(|closing| *closing).await;
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, asks open connections to finish their request, and returns once they are closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Slots {
        total: Arc::new(Semaphore::new(limits.max_connections)),
        per_ip: Mutex::new(HashMap::new()),
        max_per_ip: limits.max_connections_per_ip,
    });
    let (close_tx, close_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut refusals = RefusalLog {
        since: None,
        count: 0,
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: wait a
                    // little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = slots.take(peer.ip()) else {
            refusals.refused(peer, &limits);
            drop(stream);
            continue;
        };
        let router = router.clone();
        let mut close = close_rx.clone();
        tasks.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                tower::ServiceExt::oneshot(router.clone(), req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let lifetime = tokio::time::sleep(limits.lifetime());
            tokio::pin!(lifetime);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                () = &mut lifetime => {
                    tracing::debug!(%peer, "connection closed: it outlived its deadline");
                }
                () = closing(&mut close) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.lifetime(), conn).await;
                }
            }
        });
    }
    drop(listener);
    let _ = close_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_the_file_limit_and_stay_positive() {
        let l = Limits::default().fit_to_fd_limit(1024);
        assert_eq!((l.max_connections, l.max_connections_per_ip), (256, 32));
        let l = Limits::default().fit_to_fd_limit(100);
        assert_eq!((l.max_connections, l.max_connections_per_ip), (50, 32));
        let l = Limits {
            max_connections_per_ip: 100,
            ..Limits::default()
        }
        .fit_to_fd_limit(64);
        assert_eq!((l.max_connections, l.max_connections_per_ip), (32, 32));
        let l = Limits::default().fit_to_fd_limit(0);
        assert_eq!((l.max_connections, l.max_connections_per_ip), (1, 1));
    }

    #[test]
    fn slots_are_capped_per_address_and_in_total_and_given_back() {
        let slots = Arc::new(Slots {
            total: Arc::new(Semaphore::new(3)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: 2,
        });
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        let a1 = slots.take(a).unwrap();
        let _a2 = slots.take(a).unwrap();
        assert!(slots.take(a).is_none(), "a third from one address");
        let b1 = slots.take(b).unwrap();
        assert!(slots.take(b).is_none(), "over the total");
        drop(a1);
        assert!(slots.take(a).is_some());
        drop(b1);
        let _b = slots.take(b).unwrap();
        assert_eq!(slots.per_ip.lock().unwrap().get(&b), Some(&1));
    }
}
