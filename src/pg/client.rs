//! A PostgreSQL session over a tunnel: tokio-postgres's `connect_raw` on any byte stream (in
//! practice a [`Tunnel`](crate::transport::Tunnel) through the member's SSH connection),
//! password authentication (SCRAM when the server asks for it, as PostgreSQL 15 does by
//! default), every wait bounded.
//!
//! The password is handed to tokio-postgres in memory and nowhere else: tokio-postgres's own
//! `Debug` redacts it, ours never holds it in a printable field, and errors name the member,
//! the user and the database only.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};

use super::Credentials;
use super::tls::ClusterTls;
use crate::transport::{Connection, Destination, TunnelError};

/// How the session is protected beyond the SSH tunnel it runs in.
///
/// The tunnel already encrypts the path to the member's sshd; a cluster converged by plumb
/// also refuses TCP sessions without TLS (`hostnossl ... reject`), so plumb speaks TLS inside
/// the tunnel and verifies the server as `sslmode=verify-full` would.
#[derive(Debug, Clone, Default)]
pub enum TlsMode {
    /// No TLS inside the tunnel (a server on loopback or a unix socket).
    #[default]
    Disable,
    /// TLS required: the server's certificate must chain to a CA of `tls` and name `server`
    /// (the address dialled); SCRAM is bound to the TLS session when the server offers it.
    VerifyFull {
        /// The cluster's trust bundle.
        tls: ClusterTls,
        /// The DNS name or IP address the certificate must name.
        server: String,
    },
}

/// How to log in.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The member's name, for messages.
    pub member: String,
    /// Database to connect to.
    pub database: String,
    /// User and password.
    pub credentials: Credentials,
    /// TLS inside the tunnel.
    pub tls: TlsMode,
    /// Bound on opening the tunnel plus the startup and authentication exchange.
    pub connect_timeout: Duration,
    /// Bound on each query or statement sent through [`PgClient`]'s helpers.
    pub query_timeout: Duration,
    /// `application_name` the server shows in `pg_stat_activity` and logs.
    pub application_name: String,
}

impl PgOptions {
    /// Options with plumb's defaults: no TLS in the tunnel, 10 s to connect, 60 s per query,
    /// `application_name = plumb`.
    pub fn new(
        member: impl Into<String>,
        database: impl Into<String>,
        credentials: Credentials,
    ) -> Self {
        PgOptions {
            member: member.into(),
            database: database.into(),
            credentials,
            tls: TlsMode::Disable,
            connect_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(60),
            application_name: "plumb".into(),
        }
    }

    /// The same options for another database of the same server.
    pub fn for_database(&self, database: &str) -> Self {
        PgOptions {
            database: database.to_string(),
            ..self.clone()
        }
    }
}

/// What went wrong talking to PostgreSQL. Names the member, never a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The tunnel to the member's PostgreSQL could not be opened.
    #[error("PostgreSQL on {member}: {source}")]
    Tunnel {
        /// Member name.
        member: String,
        /// The transport's error (boxed: it is large, and errors travel by value).
        #[source]
        source: Box<TunnelError>,
    },
    /// The server refused the user's password.
    #[error("PostgreSQL on {member}: password authentication failed for user {user:?}")]
    Authentication {
        /// Member name.
        member: String,
        /// The user that tried.
        user: String,
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The startup exchange failed for another reason (no such database, refused by
    /// pg_hba.conf, not PostgreSQL at the other end...).
    #[error(
        "PostgreSQL on {member}: cannot connect to database {database:?} as {user:?}: {source}"
    )]
    Connect {
        /// Member name.
        member: String,
        /// Database.
        database: String,
        /// User.
        user: String,
        /// tokio-postgres's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A query or statement failed.
    #[error("PostgreSQL on {member}, database {database:?}: {what} failed: {source}")]
    Query {
        /// Member name.
        member: String,
        /// Database.
        database: String,
        /// What was being done (never the SQL text, which may hold a password verifier).
        what: String,
        /// tokio-postgres's error (the server's message and SQLSTATE).
        #[source]
        source: tokio_postgres::Error,
    },
    /// A bound elapsed.
    #[error("PostgreSQL on {member}: {what} timed out after {after:?}")]
    Timeout {
        /// Member name.
        member: String,
        /// What was being waited for.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// A catalog row did not have the expected shape.
    #[error("PostgreSQL on {member}: unexpected answer to {what}: {reason}")]
    Unexpected {
        /// Member name.
        member: String,
        /// The query, by purpose.
        what: String,
        /// What was wrong.
        reason: String,
    },
}

impl PgError {
    /// The SQLSTATE of a server error, if the server sent one.
    pub fn sql_state(&self) -> Option<&SqlState> {
        match self {
            PgError::Authentication { source, .. }
            | PgError::Connect { source, .. }
            | PgError::Query { source, .. } => source.code(),
            _ => None,
        }
    }
}

/// One logged-in session. The connection task ends when this is dropped.
pub struct PgClient {
    client: Client,
    member: String,
    database: String,
    query_timeout: Duration,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for PgClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgClient")
            .field("member", &self.member)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Drop for PgClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgClient {
    /// Opens a tunnel to `destination` through `conn` (a member's SSH connection) and logs in,
    /// all within `opts.connect_timeout`.
    pub async fn connect_through(
        conn: &Connection,
        destination: &Destination,
        opts: &PgOptions,
    ) -> Result<PgClient, PgError> {
        let started = tokio::time::Instant::now();
        let tunnel = conn
            .tunnel(destination, opts.connect_timeout)
            .await
            .map_err(|source| PgError::Tunnel {
                member: opts.member.clone(),
                source: Box::new(source),
            })?;
        let left = opts.connect_timeout.saturating_sub(started.elapsed());
        Self::connect_within(tunnel, opts, left, opts.connect_timeout).await
    }

    /// Logs in over an open byte stream (a tunnel, or a socket in tests), within
    /// `opts.connect_timeout`.
    pub async fn connect<S>(stream: S, opts: &PgOptions) -> Result<PgClient, PgError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::connect_within(stream, opts, opts.connect_timeout, opts.connect_timeout).await
    }

    async fn connect_within<S>(
        stream: S,
        opts: &PgOptions,
        left: Duration,
        bound: Duration,
    ) -> Result<PgClient, PgError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut config = tokio_postgres::Config::new();
        config
            .user(&opts.credentials.user)
            .password(opts.credentials.password.expose())
            .dbname(&opts.database)
            .application_name(&opts.application_name);
        if matches!(opts.tls, TlsMode::VerifyFull { .. }) {
            config.ssl_mode(SslMode::Require);
        }
        let startup = async {
            let member = opts.member.clone();
            let spawn = move |connection: std::pin::Pin<
                Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>,
            >| {
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%member, error = %e, "PostgreSQL connection ended");
                    }
                })
            };
            match &opts.tls {
                TlsMode::Disable => {
                    let (client, connection) = config.connect_raw(stream, NoTls).await?;
                    Ok::<_, tokio_postgres::Error>((client, spawn(Box::pin(connection))))
                }
                TlsMode::VerifyFull { tls, server } => {
                    let connector = tls.for_postgres(server);
                    let (client, connection) = config.connect_raw(stream, connector).await?;
                    Ok((client, spawn(Box::pin(connection))))
                }
            }
        };
        let (client, task) = timeout(left, startup)
            .await
            .map_err(|_| PgError::Timeout {
                member: opts.member.clone(),
                what: format!("logging in to database {:?}", opts.database),
                after: bound,
            })?
            .map_err(|source| match source.code() {
                Some(code) if *code == SqlState::INVALID_PASSWORD => PgError::Authentication {
                    member: opts.member.clone(),
                    user: opts.credentials.user.clone(),
                    source,
                },
                _ => PgError::Connect {
                    member: opts.member.clone(),
                    database: opts.database.clone(),
                    user: opts.credentials.user.clone(),
                    source,
                },
            })?;
        Ok(PgClient {
            client,
            member: opts.member.clone(),
            database: opts.database.clone(),
            query_timeout: opts.query_timeout,
            task,
        })
    }

    /// The member this session is on.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// The database this session is in.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// tokio-postgres's client, for what the helpers here do not cover (unbounded: wrap calls
    /// in a timeout).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs a parameterised query (extended protocol), bounded by the query timeout. `what`
    /// names it in errors.
    pub async fn query(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, PgError> {
        let run = self.client.query(sql, params);
        timeout(self.query_timeout, run)
            .await
            .map_err(|_| self.timed_out(what))?
            .map_err(|source| self.query_error(what, source))
    }

    /// Runs one statement with the simple query protocol (no parameters; allowed outside a
    /// transaction, as `CREATE DATABASE` needs), bounded by the query timeout.
    pub async fn execute(&self, what: &str, sql: &str) -> Result<(), PgError> {
        let run = self.client.batch_execute(sql);
        timeout(self.query_timeout, run)
            .await
            .map_err(|_| self.timed_out(what))?
            .map_err(|source| self.query_error(what, source))
    }

    fn timed_out(&self, what: &str) -> PgError {
        PgError::Timeout {
            member: self.member.clone(),
            what: what.to_string(),
            after: self.query_timeout,
        }
    }

    fn query_error(&self, what: &str, source: tokio_postgres::Error) -> PgError {
        PgError::Query {
            member: self.member.clone(),
            database: self.database.clone(),
            what: what.to_string(),
            source,
        }
    }

    /// An "unexpected answer" error for a catalog row of the wrong shape.
    pub(crate) fn unexpected(&self, what: &str, reason: impl std::fmt::Display) -> PgError {
        PgError::Unexpected {
            member: self.member.clone(),
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Opens sessions to any database of one member through one SSH connection: roles and
/// databases are converged from the maintenance database, schema grants need a session in the
/// database that holds the schema.
#[derive(Debug, Clone)]
pub struct PgConnector<'a> {
    conn: &'a Connection,
    destination: Destination,
    options: PgOptions,
}

impl<'a> PgConnector<'a> {
    /// Sessions through `conn` to `destination` (the member's PostgreSQL port or socket) with
    /// `options` (whose `database` is the default one, usually `postgres`).
    pub fn new(conn: &'a Connection, destination: Destination, options: PgOptions) -> Self {
        PgConnector {
            conn,
            destination,
            options,
        }
    }

    /// The member's name.
    pub fn member(&self) -> &str {
        &self.options.member
    }

    /// The database [`PgConnector::connect_default`] opens.
    pub fn default_database(&self) -> &str {
        &self.options.database
    }

    /// A session in the default database.
    pub async fn connect_default(&self) -> Result<PgClient, PgError> {
        PgClient::connect_through(self.conn, &self.destination, &self.options).await
    }

    /// A session in `database`.
    pub async fn connect(&self, database: &str) -> Result<PgClient, PgError> {
        PgClient::connect_through(
            self.conn,
            &self.destination,
            &self.options.for_database(database),
        )
        .await
    }
}
