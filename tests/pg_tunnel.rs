//! PostgreSQL reached only through SSH tunnels: a real OpenSSH sshd on loopback
//! (tests/support/sshd.rs) and a real PostgreSQL 15 (tests/support/postgres.rs) that plumb
//! reaches through the sshd's `direct-tcpip` and `direct-streamlocal@openssh.com` channels.
//! Roles, databases and grants are converged through src/pg/roles.rs, with every statement
//! logged by the server, and the log is searched for the passwords.

mod support;

use std::time::Duration;

use plumb::pg::client::{PgClient, PgConnector, PgError, PgOptions};
use plumb::pg::roles::{
    self, DatabasePrivilege, Declared, DeclaredDatabase, DeclaredRole, Grant, PlanOptions,
};
use plumb::pg::{Credentials, Password, dynconf, health};
use plumb::transport::{ConnectOptions, Connection, Destination, Identity, TunnelError};
use support::postgres::Postgres;
use support::sshd::{ClientKey, Sshd, SshdConfig, current_user, free_port};

/// An sshd and a connection to it.
struct Ssh {
    sshd: Sshd,
    _dir: tempfile::TempDir,
    conn: Connection,
}

async fn ssh_with(config: SshdConfig) -> Ssh {
    let sshd = Sshd::start_with(config);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ClientKey::generate(dir.path(), "id_ed25519", "ed25519");
    sshd.authorize(&key.public_line);
    let known_hosts = dir.path().join("known_hosts");
    sshd.write_known_hosts(&known_hosts);
    let mut opts = ConnectOptions::new(Identity::File(key.private.clone()), &known_hosts);
    opts.connect_timeout = Duration::from_secs(10);
    let conn = match Connection::open(&sshd.endpoint(&current_user()), &opts).await {
        Ok(conn) => conn,
        Err(e) => panic!("connect failed: {e}\nsshd log:\n{}", sshd.log()),
    };
    Ssh {
        sshd,
        _dir: dir,
        conn,
    }
}

async fn ssh() -> Ssh {
    ssh_with(SshdConfig::default()).await
}

fn superuser(pg: &Postgres) -> Credentials {
    Credentials::new("postgres", Password::new(pg.password.clone()))
}

fn tcp(pg: &Postgres) -> Destination {
    Destination::tcp("127.0.0.1", pg.port)
}

async fn scalar(client: &PgClient, sql: &str) -> String {
    let rows = client.query("test query", sql, &[]).await.expect(sql);
    rows[0].get::<_, String>(0)
}

#[tokio::test]
async fn postgres_answers_through_direct_tcpip_and_direct_streamlocal() {
    let pg = Postgres::start();
    let ssh = ssh().await;
    let opts = PgOptions::new("pg-test", "postgres", superuser(&pg));

    let over_tcp = PgClient::connect_through(&ssh.conn, &tcp(&pg), &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", ssh.sshd.log()));
    // Through direct-tcpip the server sees a TCP client on loopback.
    assert_eq!(
        scalar(&over_tcp, "SELECT host(inet_client_addr())").await,
        "127.0.0.1"
    );
    let over_socket =
        PgClient::connect_through(&ssh.conn, &Destination::unix(pg.socket_path()), &opts)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", ssh.sshd.log()));
    // Through direct-streamlocal it sees a unix-socket client (no client address).
    let rows = over_socket
        .query("client addr", "SELECT inet_client_addr()::text", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, Option<String>>(0), None);
    assert_eq!(
        scalar(&over_socket, "SELECT current_user::text").await,
        "postgres"
    );
    // Both authenticated with SCRAM (the server has nothing else for these lines).
    let log = pg.log();
    assert!(
        log.matches("connection authenticated: identity=\"postgres\" method=scram-sha-256")
            .count()
            >= 2,
        "{log}"
    );
    assert!(
        !log.contains(&pg.password),
        "the superuser password is in the log"
    );
}

#[tokio::test]
async fn tunnel_failures_are_typed_and_name_the_destination() {
    let pg = Postgres::start();
    let ssh = ssh().await;
    let closed = free_port("127.0.0.1".parse().unwrap());
    let err = ssh
        .conn
        .tunnel_tcp("127.0.0.1", closed)
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, TunnelError::ConnectFailed { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{closed}")),
        "{err}"
    );
    let err = ssh
        .conn
        .tunnel_unix("/nonexistent/.s.PGSQL.5432")
        .await
        .expect_err("no such socket");
    assert!(matches!(err, TunnelError::ConnectFailed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("unix:/nonexistent/.s.PGSQL.5432"),
        "{err}"
    );
    // The transport's error is kept as the source.
    assert!(std::error::Error::source(&err).is_some());

    // Every open is bounded. A listener whose accept queue is full (backlog 0, one queued
    // connection never accepted) drops further SYNs, so sshd's connect() to it hangs and the
    // channel open is never answered: a Timeout that names both ends.
    let full = tokio::net::TcpSocket::new_v4().unwrap();
    full.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = full.listen(0).unwrap();
    let full_port = full.local_addr().unwrap().port();
    let mut queued = Vec::new();
    for _ in 0..2 {
        // Each connect either lands in the queue or hangs; neither is waited for long.
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(("127.0.0.1", full_port)),
        )
        .await
        {
            queued.push(s);
        }
    }
    let started = std::time::Instant::now();
    let err = ssh
        .conn
        .tunnel(
            &Destination::tcp("127.0.0.1", full_port),
            Duration::from_millis(700),
        )
        .await
        .expect_err("sshd's connect never completes");
    assert!(matches!(err, TunnelError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{full_port}"))
            && err.to_string().contains("timed out after 700ms"),
        "{err}"
    );
    // A listener that accepts but never speaks PostgreSQL: the login is bounded too.
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = mute.accept().await {
            held.push(s);
        }
    });
    let mut hasty = PgOptions::new("pg-mute", "postgres", superuser(&pg));
    hasty.connect_timeout = Duration::from_millis(700);
    let err =
        PgClient::connect_through(&ssh.conn, &Destination::tcp("127.0.0.1", mute_port), &hasty)
            .await
            .expect_err("no login from a mute server");
    assert!(matches!(&err, PgError::Timeout { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("PostgreSQL on pg-mute: logging in"),
        "{err}"
    );
    holder.abort();
    drop(queued);
    // The connection is still usable after abandoned opens.
    PgClient::connect_through(
        &ssh.conn,
        &tcp(&pg),
        &PgOptions::new("pg-test", "postgres", superuser(&pg)),
    )
    .await
    .expect("a normal login after the timeouts");

    // A server that forbids forwarding says so.
    let strict = ssh_with(SshdConfig {
        extra: vec!["DisableForwarding yes".into()],
        ..SshdConfig::default()
    })
    .await;
    let err = strict
        .conn
        .tunnel_tcp("127.0.0.1", pg.port)
        .await
        .expect_err("forwarding disabled");
    assert!(matches!(err, TunnelError::Prohibited { .. }), "{err:?}");
    assert!(
        err.to_string().contains("administratively prohibited"),
        "{err}"
    );
    // For unix sockets OpenSSH answers "connect failed" even when it is its own refusal; the
    // message says that this may be why.
    let err = strict
        .conn
        .tunnel_unix(&pg.socket_path())
        .await
        .expect_err("forwarding disabled");
    assert!(matches!(err, TunnelError::ConnectFailed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("AllowStreamLocalForwarding"),
        "{err}"
    );
    assert!(
        strict
            .sshd
            .log()
            .contains("refused streamlocal port forward"),
        "{}",
        strict.sshd.log()
    );
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_error_that_does_not_show_it() {
    let pg = Postgres::start();
    let ssh = ssh().await;
    let wrong = Credentials::new("postgres", Password::new("not-the-password-xyz"));
    let opts = PgOptions::new("pg-test", "postgres", wrong);
    let err = PgClient::connect_through(&ssh.conn, &tcp(&pg), &opts)
        .await
        .expect_err("wrong password");
    assert!(matches!(err, PgError::Authentication { .. }), "{err:?}");
    let shown = format!("{err} {err:?} {opts:?}");
    assert!(
        shown.contains("pg-test") && shown.contains("postgres"),
        "{shown}"
    );
    assert!(!shown.contains("not-the-password-xyz"), "{shown}");
    assert!(!pg.log().contains("not-the-password-xyz"));
}

fn declared(app_password: &str) -> Declared {
    let odd_role = "we\"ird rôle";
    let mut app = DeclaredRole::new("app");
    app.password = Some(Password::new(app_password));
    app.member_of = vec!["readers".into()];
    app.connection_limit = 20;
    let mut readers = DeclaredRole::new("readers");
    readers.login = false;
    let mut odd = DeclaredRole::new(odd_role);
    odd.createdb = true;
    odd.password = Some(Password::new("odd 'pw' \"x\""));
    Declared {
        roles: vec![app, readers, odd],
        databases: vec![
            DeclaredDatabase {
                name: "app".into(),
                owner: "app".into(),
                encoding: Some("UTF8".into()),
            },
            DeclaredDatabase {
                name: "db \"quoted\" 'x'".into(),
                owner: odd_role.into(),
                encoding: None,
            },
        ],
        grants: vec![
            Grant::Database {
                database: "app".into(),
                role: "readers".into(),
                privilege: DatabasePrivilege::Connect,
            },
            Grant::Database {
                database: "app".into(),
                role: odd_role.into(),
                privilege: DatabasePrivilege::All,
            },
            Grant::SchemaUsage {
                database: "app".into(),
                schema: "public".into(),
                role: "readers".into(),
            },
        ],
        protected_roles: vec!["postgres".into()],
    }
}

async fn converge(connector: &PgConnector<'_>, declared: &Declared) -> (roles::Plan, usize) {
    let actual = roles::read_actual(connector, declared)
        .await
        .expect("read actual state");
    let plan = roles::plan(declared, &actual, PlanOptions::default()).expect("plan");
    let ran = roles::apply(connector, &plan).await.expect("apply");
    (plan, ran)
}

fn statements_logged(log: &str) -> usize {
    log.matches("LOG:  statement: ").count()
}

#[tokio::test]
async fn roles_databases_and_grants_converge_through_the_tunnel_and_passwords_stay_out_of_logs() {
    let pg = Postgres::start();
    let ssh = ssh().await;
    let connector = PgConnector::new(
        &ssh.conn,
        Destination::unix(pg.socket_path()),
        PgOptions::new("pg-test", "postgres", superuser(&pg)),
    );
    let (first_password, second_password) = ("first-Secret-4711", "second-Secret-0815");
    let want = declared(first_password);

    // 1. From empty: everything is created.
    let (plan, ran) = converge(&connector, &want).await;
    assert_eq!(ran, plan.statements.len());
    assert!(ran >= 8, "{:#?}", plan.statements);
    let diff = plan.diff();
    assert!(diff.contains("+ role \"app\""), "{diff}");
    assert!(
        diff.contains("+ database \"db \"\"quoted\"\" 'x'\""),
        "{diff}"
    );

    // The declared role logs in with its password, over the other kind of tunnel, and can
    // use its database.
    let app = PgClient::connect_through(
        &ssh.conn,
        &tcp(&pg),
        &PgOptions::new(
            "pg-test",
            "app",
            Credentials::new("app", Password::new(first_password)),
        ),
    )
    .await
    .expect("app logs in with its password");
    app.execute("create a table", "CREATE TABLE t (id int)")
        .await
        .expect("app owns its database");
    assert_eq!(
        scalar(&app, "SELECT string_agg(b.rolname, ',')::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member JOIN pg_roles b ON b.oid = m.roleid WHERE r.rolname = 'app'").await,
        "readers"
    );
    assert_eq!(
        scalar(
            &app,
            "SELECT rolconnlimit::text FROM pg_roles WHERE rolname = 'app'"
        )
        .await,
        "20"
    );
    drop(app);
    let odd = PgClient::connect_through(
        &ssh.conn,
        &tcp(&pg),
        &PgOptions::new(
            "pg-test",
            "db \"quoted\" 'x'",
            Credentials::new("we\"ird rôle", Password::new("odd 'pw' \"x\"")),
        ),
    )
    .await
    .expect("the oddly named role logs in to its oddly named database");
    assert_eq!(
        scalar(&odd, "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = current_database()").await,
        "we\"ird rôle"
    );
    drop(odd);

    // 2. A second converge issues no statement: the plan is empty and the server logs only
    //    the catalog reads.
    let before = pg.log();
    let (plan, ran) = converge(&connector, &want).await;
    assert!(plan.is_empty(), "{:#?}", plan.statements);
    assert_eq!(ran, 0);
    assert_eq!(plan.diff(), "");
    let after = pg.log();
    let new_lines = &after[before.len()..];
    for verb in ["CREATE ", "ALTER ", "GRANT ", "REVOKE ", "DROP "] {
        assert!(
            !new_lines.contains(&format!("statement: {verb}")),
            "a no-op converge sent {verb}:\n{new_lines}"
        );
    }

    // 3. A changed secret: reported as "password changed", nothing else; the new password
    //    works and the old one no longer does.
    let changed = declared(second_password);
    let (plan, ran) = converge(&connector, &changed).await;
    assert_eq!(ran, 1, "{:#?}", plan.statements);
    assert_eq!(plan.diff(), "~ role \"app\": password changed\n");
    let login = |password: &'static str| {
        let opts = PgOptions::new(
            "pg-test",
            "app",
            Credentials::new("app", Password::new(password)),
        );
        let (conn, pg_dest) = (&ssh.conn, tcp(&pg));
        async move { PgClient::connect_through(conn, &pg_dest, &opts).await }
    };
    login(second_password)
        .await
        .expect("the new password works");
    let err = login(first_password)
        .await
        .expect_err("the old password fails");
    assert!(matches!(err, PgError::Authentication { .. }), "{err}");

    // 4. Undeclared objects are reported, and dropped only when asked.
    let admin = connector.connect_default().await.unwrap();
    admin
        .execute("make a stray role", "CREATE ROLE legacy NOLOGIN")
        .await
        .unwrap();
    let actual = roles::read_actual(&connector, &changed).await.unwrap();
    let kept = roles::plan(&changed, &actual, PlanOptions::default()).unwrap();
    assert!(kept.is_empty());
    assert_eq!(kept.undeclared.roles, vec!["legacy".to_string()]);
    let dropping = roles::plan(
        &changed,
        &actual,
        PlanOptions {
            drop_undeclared: true,
        },
    )
    .unwrap();
    assert_eq!(roles::apply(&connector, &dropping).await.unwrap(), 1);
    let actual = roles::read_actual(&connector, &changed).await.unwrap();
    assert!(!actual.roles.contains_key("legacy"));

    // 5. A revoked grant is drift: found through has_database_privilege, granted again.
    admin
        .execute(
            "revoke connect",
            "REVOKE CONNECT ON DATABASE app FROM PUBLIC, readers",
        )
        .await
        .unwrap();
    let (plan, ran) = converge(&connector, &changed).await;
    assert_eq!(ran, 1, "{:#?}", plan.statements);
    assert_eq!(
        plan.diff(),
        "+ grant CONNECT on database \"app\" to \"readers\"\n"
    );
    assert_eq!(
        plan.statements[0].sql(),
        "GRANT CONNECT ON DATABASE \"app\" TO \"readers\""
    );
    let (plan, _) = converge(&connector, &changed).await;
    assert!(plan.is_empty(), "{:#?}", plan.statements);

    // 6. The server logged every statement, passwords only as verifiers.
    let log = pg.log();
    assert!(
        statements_logged(&log) > 10,
        "log_statement=all is not on:\n{log}"
    );
    assert!(
        log.contains("statement: ALTER ROLE \"app\" WITH PASSWORD 'SCRAM-SHA-256$4096:"),
        "{log}"
    );
    for secret in [first_password, second_password, "odd 'pw'", "odd ''pw''"] {
        assert!(!log.contains(secret), "{secret:?} is in the PostgreSQL log");
    }
}

#[tokio::test]
async fn parameter_contexts_and_replication_rows_come_from_the_server() {
    let pg = Postgres::start();
    let ssh = ssh().await;
    let client = PgClient::connect_through(
        &ssh.conn,
        &tcp(&pg),
        &PgOptions::new("pg-test", "postgres", superuser(&pg)),
    )
    .await
    .unwrap();
    let contexts = dynconf::read_contexts(&client).await.unwrap();
    assert_eq!(
        contexts.get("shared_buffers").map(String::as_str),
        Some("postmaster")
    );
    assert_eq!(
        contexts.get("max_connections").map(String::as_str),
        Some("postmaster")
    );
    assert_eq!(contexts.get("work_mem").map(String::as_str), Some("user"));
    assert!(contexts.len() > 300, "{}", contexts.len());
    // A standalone server has no replica.
    assert!(health::read_replication(&client).await.unwrap().is_empty());
}
