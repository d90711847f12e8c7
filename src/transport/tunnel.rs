//! Tunnels through an SSH connection plumb already holds: a `direct-tcpip` channel to a TCP port
//! or a `direct-streamlocal@openssh.com` channel to a unix socket on the far side, used as a
//! byte stream ([`Tunnel`], tokio's `AsyncRead + AsyncWrite`).
//!
//! This is how plumb reaches PostgreSQL and Patroni's REST API on a member without any port
//! open to the controller besides sshd. OpenSSH allows both by default (`AllowTcpForwarding`,
//! `AllowStreamLocalForwarding`); a server that forbids them answers "administratively
//! prohibited", reported as [`TunnelError::Prohibited`].
//!
//! Tunnels are not counted against the connection's session limit (sshd's `MaxSessions` covers
//! shell and exec sessions, not forwarded channels), and the SSH connection must outlive them:
//! a dropped [`Connection`] ends its tunnels.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use russh::ChannelStream;
use russh::client::Msg;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::timeout;

use super::Connection;

/// How long opening a tunnel may take when the caller does not say: the far side answers a
/// channel open as soon as its own `connect()` returns.
pub const DEFAULT_TUNNEL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a tunnel leads, as seen from the SSH server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A TCP port: `host` is resolved and dialled by the SSH server.
    Tcp {
        /// Address or name, as the server resolves it (`127.0.0.1`, `10.0.0.5`).
        host: String,
        /// Port.
        port: u16,
    },
    /// A unix socket path on the server, e.g. `/run/postgresql/.s.PGSQL.5432`.
    Unix {
        /// Absolute path of the socket.
        path: String,
    },
}

impl Destination {
    /// A TCP destination.
    pub fn tcp(host: impl Into<String>, port: u16) -> Self {
        Destination::Tcp {
            host: host.into(),
            port,
        }
    }

    /// A unix socket destination.
    pub fn unix(path: impl Into<String>) -> Self {
        Destination::Unix { path: path.into() }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Destination::Tcp { host, port } => write!(f, "{host}:{port}"),
            Destination::Unix { path } => write!(f, "unix:{path}"),
        }
    }
}

/// Why a tunnel could not be opened. Each names the SSH host and the destination.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// The SSH server refuses forwarding for this user or destination.
    #[error(
        "{target} refused a tunnel to {destination}: forwarding is administratively prohibited \
         (sshd's AllowTcpForwarding / AllowStreamLocalForwarding / PermitOpen / DisableForwarding)"
    )]
    Prohibited {
        /// The SSH host, as [`Connection::target`] names it.
        target: String,
        /// Where the tunnel was to lead.
        destination: Destination,
        /// russh's error.
        #[source]
        source: russh::Error,
    },
    /// The SSH server could not reach the destination (nothing listens there, no such socket).
    #[error("{target} could not connect to {destination}: {reason}")]
    ConnectFailed {
        /// The SSH host.
        target: String,
        /// Where the tunnel was to lead.
        destination: Destination,
        /// What the server said.
        reason: String,
        /// russh's error.
        #[source]
        source: russh::Error,
    },
    /// No answer to the channel open in time.
    #[error("opening a tunnel to {destination} through {target} timed out after {after:?}")]
    Timeout {
        /// The SSH host.
        target: String,
        /// Where the tunnel was to lead.
        destination: Destination,
        /// The bound that elapsed.
        after: Duration,
    },
    /// The SSH session itself failed (closed, broken).
    #[error("cannot open a tunnel to {destination} through {target}: {source}")]
    Session {
        /// The SSH host.
        target: String,
        /// Where the tunnel was to lead.
        destination: Destination,
        /// russh's error.
        #[source]
        source: russh::Error,
    },
}

/// An open tunnel: a byte stream to the destination, closed when dropped.
pub struct Tunnel {
    stream: ChannelStream<Msg>,
    target: String,
    destination: Destination,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("target", &self.target)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

impl Tunnel {
    /// The SSH host the tunnel goes through.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Where the tunnel leads.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connection {
    /// Opens a `direct-tcpip` tunnel to `host:port` as the SSH server sees it, within
    /// [`DEFAULT_TUNNEL_TIMEOUT`].
    pub async fn tunnel_tcp(&self, host: &str, port: u16) -> Result<Tunnel, TunnelError> {
        self.tunnel(&Destination::tcp(host, port), DEFAULT_TUNNEL_TIMEOUT)
            .await
    }

    /// Opens a `direct-streamlocal@openssh.com` tunnel to the unix socket `path` on the SSH
    /// server, within [`DEFAULT_TUNNEL_TIMEOUT`].
    pub async fn tunnel_unix(&self, path: &str) -> Result<Tunnel, TunnelError> {
        self.tunnel(&Destination::unix(path), DEFAULT_TUNNEL_TIMEOUT)
            .await
    }

    /// Opens a tunnel to `destination`, bounded by `within`.
    pub async fn tunnel(
        &self,
        destination: &Destination,
        within: Duration,
    ) -> Result<Tunnel, TunnelError> {
        let open = async {
            match destination {
                // The originator is informational for the server (it logs it); we have no
                // meaningful local socket, so say loopback like OpenSSH's `ssh -W` does.
                Destination::Tcp { host, port } => {
                    self.handle
                        .channel_open_direct_tcpip(host.as_str(), u32::from(*port), "127.0.0.1", 0)
                        .await
                }
                Destination::Unix { path } => {
                    self.handle
                        .channel_open_direct_streamlocal(path.as_str())
                        .await
                }
            }
        };
        let channel = timeout(within, open)
            .await
            .map_err(|_| TunnelError::Timeout {
                target: self.target.clone(),
                destination: destination.clone(),
                after: within,
            })?
            .map_err(|source| self.tunnel_error(destination, source))?;
        tracing::debug!(target = %self.target, %destination, "tunnel open");
        Ok(Tunnel {
            stream: channel.into_stream(),
            target: self.target.clone(),
            destination: destination.clone(),
        })
    }

    fn tunnel_error(&self, destination: &Destination, source: russh::Error) -> TunnelError {
        let target = self.target.clone();
        let destination = destination.clone();
        match &source {
            russh::Error::ChannelOpenFailure(
                russh::ChannelOpenFailure::AdministrativelyProhibited,
            ) => TunnelError::Prohibited {
                target,
                destination,
                source,
            },
            russh::Error::ChannelOpenFailure(russh::ChannelOpenFailure::ConnectFailed) => {
                let reason = match destination {
                    Destination::Tcp { .. } => "connection refused or unreachable",
                    // OpenSSH answers "connect failed", not "prohibited", when it refuses
                    // unix-socket forwarding, so that is one of the possibilities here.
                    Destination::Unix { .. } => {
                        "no such socket, nothing listening, permission denied, or sshd refuses                          unix-socket forwarding (AllowStreamLocalForwarding, DisableForwarding)"
                    }
                };
                TunnelError::ConnectFailed {
                    target,
                    destination,
                    reason: reason.into(),
                    source,
                }
            }
            russh::Error::ChannelOpenFailure(russh::ChannelOpenFailure::Other { code, reason }) => {
                let reason = format!("refused ({code}): {}", super::ssh_config::escape(reason));
                TunnelError::ConnectFailed {
                    target,
                    destination,
                    reason,
                    source,
                }
            }
            russh::Error::ChannelOpenFailure(other) => TunnelError::ConnectFailed {
                target,
                destination,
                reason: format!("{other:?}"),
                source,
            },
            _ => TunnelError::Session {
                target,
                destination,
                source,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_display_like_addresses() {
        assert_eq!(
            Destination::tcp("10.0.0.5", 5432).to_string(),
            "10.0.0.5:5432"
        );
        assert_eq!(Destination::tcp("::1", 8008).to_string(), "[::1]:8008");
        assert_eq!(
            Destination::unix("/run/postgresql/.s.PGSQL.5432").to_string(),
            "unix:/run/postgresql/.s.PGSQL.5432"
        );
    }

    #[test]
    fn tunnel_is_send_and_errors_are_send_sync() {
        fn send<T: Send + Unpin + 'static>() {}
        fn send_sync<T: Send + Sync + 'static>() {}
        send::<Tunnel>();
        send_sync::<TunnelError>();
    }
}
