//! Roles, databases and grants: declared state vs the catalog, planned purely into ordered
//! SQL statements, a human diff, and what exists without being declared.
//!
//! Three steps, so the planner can be tested without a server and the dry run is the plan:
//! 1. [`read_actual`] reads the catalog with fixed queries (pg_authid, pg_auth_members,
//!    pg_database, has_database_privilege, has_schema_privilege), through a [`PgConnector`]
//!    logged in as the cluster's superuser (pg_authid needs it);
//! 2. [`plan`] compares, purely;
//! 3. [`apply`] runs the statements in order, each in its database.
//!
//! Passwords are set only as SCRAM-SHA-256 verifiers computed by [`plan`], so the plain
//! password never appears in SQL (nor in PostgreSQL's statement log); a drifted password is
//! found by checking the stored verifier against the secret ([`scram::stored_matches`]) and
//! shown only as "password changed". Grants are checked as *effective* privileges (including
//! what PUBLIC holds): a declared grant that already holds issues nothing, and nothing
//! undeclared is revoked. Roles and databases present but not declared are reported, and
//! dropped only with [`PlanOptions::drop_undeclared`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::Password;
use super::client::{PgClient, PgConnector, PgError};
use super::scram;

/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1), which would make a second plan
/// look for a name that does not exist.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Databases every cluster has; never reported as undeclared, never dropped.
pub const SYSTEM_DATABASES: &[&str] = &["postgres", "template0", "template1"];

/// A role as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredRole {
    /// Name.
    pub name: String,
    /// May log in.
    pub login: bool,
    /// May create databases.
    pub createdb: bool,
    /// May create roles.
    pub createrole: bool,
    /// Connection limit (-1: none).
    pub connection_limit: i32,
    /// Roles it is a member of: exactly these (others are revoked).
    pub member_of: Vec<String>,
    /// Its password (from a secret). `None` leaves whatever password the role has.
    pub password: Option<Password>,
}

impl DeclaredRole {
    /// A login role with no other attribute, no limit, no membership, no password.
    pub fn new(name: impl Into<String>) -> Self {
        DeclaredRole {
            name: name.into(),
            login: true,
            createdb: false,
            createrole: false,
            connection_limit: -1,
            member_of: Vec::new(),
            password: None,
        }
    }
}

/// A database as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredDatabase {
    /// Name.
    pub name: String,
    /// Owner role.
    pub owner: String,
    /// Encoding (`UTF8`); `None` takes template1's. An existing database's encoding cannot
    /// change: a difference is a warning.
    pub encoding: Option<String>,
}

/// A privilege on a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DatabasePrivilege {
    /// `CONNECT`.
    Connect,
    /// `ALL` (`CREATE`, `CONNECT`, `TEMPORARY`).
    All,
}

impl fmt::Display for DatabasePrivilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatabasePrivilege::Connect => "CONNECT",
            DatabasePrivilege::All => "ALL",
        })
    }
}

/// A grant as declared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grant {
    /// `GRANT <privilege> ON DATABASE <database> TO <role>`.
    Database {
        /// Database.
        database: String,
        /// Grantee.
        role: String,
        /// Privilege.
        privilege: DatabasePrivilege,
    },
    /// `GRANT USAGE ON SCHEMA <schema> TO <role>`, in `database`.
    SchemaUsage {
        /// The database holding the schema.
        database: String,
        /// Schema.
        schema: String,
        /// Grantee.
        role: String,
    },
}

impl Grant {
    fn role(&self) -> &str {
        match self {
            Grant::Database { role, .. } | Grant::SchemaUsage { role, .. } => role,
        }
    }

    fn database(&self) -> &str {
        match self {
            Grant::Database { database, .. } | Grant::SchemaUsage { database, .. } => database,
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::Database {
                database,
                role,
                privilege,
            } => write!(
                f,
                "{privilege} on database {} to {}",
                quote_ident(database),
                quote_ident(role)
            ),
            Grant::SchemaUsage {
                database,
                schema,
                role,
            } => write!(
                f,
                "USAGE on schema {} in database {} to {}",
                quote_ident(schema),
                quote_ident(database),
                quote_ident(role)
            ),
        }
    }
}

/// Everything declared for one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// Roles.
    pub roles: Vec<DeclaredRole>,
    /// Databases.
    pub databases: Vec<DeclaredDatabase>,
    /// Grants.
    pub grants: Vec<Grant>,
    /// Roles the cluster itself uses (superuser, replication, rewind): neither declarable
    /// here, nor reported as undeclared, nor dropped.
    pub protected_roles: Vec<String>,
}

/// A role as the catalog has it.
#[derive(Clone, PartialEq, Eq)]
pub struct ActualRole {
    /// Name.
    pub name: String,
    /// `rolsuper`.
    pub superuser: bool,
    /// `rolcanlogin`.
    pub login: bool,
    /// `rolcreatedb`.
    pub createdb: bool,
    /// `rolcreaterole`.
    pub createrole: bool,
    /// `rolconnlimit`.
    pub connection_limit: i32,
    /// Roles it is a member of.
    pub member_of: BTreeSet<String>,
    /// `rolpassword`: a SCRAM verifier, an MD5 hash, or none.
    pub password: Option<String>,
    /// The bootstrap superuser (oid 10), which cannot be dropped.
    pub bootstrap: bool,
}

impl fmt::Debug for ActualRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActualRole")
            .field("name", &self.name)
            .field("superuser", &self.superuser)
            .field("login", &self.login)
            .field("createdb", &self.createdb)
            .field("createrole", &self.createrole)
            .field("connection_limit", &self.connection_limit)
            .field("member_of", &self.member_of)
            .field("has_password", &self.password.is_some())
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

/// A database as the catalog has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualDatabase {
    /// Name.
    pub name: String,
    /// Owner.
    pub owner: String,
    /// Encoding name (`UTF8`).
    pub encoding: String,
}

/// What [`read_actual`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    /// Every role by name.
    pub roles: BTreeMap<String, ActualRole>,
    /// Every database by name.
    pub databases: BTreeMap<String, ActualDatabase>,
    /// The declared grants that hold already (effectively, PUBLIC's privileges included).
    pub held: BTreeSet<Grant>,
    /// `(database, schema)` of declared schema grants whose schema does not exist.
    pub missing_schemas: BTreeSet<(String, String)>,
}

/// How to plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Drop the roles and databases that exist but are not declared (never the system
    /// databases, `pg_*` roles, the bootstrap superuser or the protected roles).
    pub drop_undeclared: bool,
}

/// A declaration the planner cannot turn into SQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A name PostgreSQL cannot hold as given.
    #[error("{what} {name:?}: {reason}")]
    BadName {
        /// `role`, `database`, `schema`.
        what: &'static str,
        /// The name (escaped by `{:?}`).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Declared twice.
    #[error("{what} {name:?} is declared twice")]
    Duplicate {
        /// `role` or `database`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A reference to a role that is neither declared nor present.
    #[error("{context} refers to role {role:?}, which is neither declared nor present")]
    UnknownRole {
        /// Where the reference is.
        context: String,
        /// The role.
        role: String,
    },
    /// A grant on a database that is neither declared nor present.
    #[error("grant {grant} refers to database {database:?}, which is neither declared nor present")]
    UnknownDatabase {
        /// The grant.
        grant: String,
        /// The database.
        database: String,
    },
    /// A role the cluster manages itself, or a superuser, declared here.
    #[error("role {role:?} {reason}; it cannot be declared under roles")]
    Reserved {
        /// The role.
        role: String,
        /// Why.
        reason: &'static str,
    },
}

/// One SQL statement of a plan.
#[derive(Clone, PartialEq, Eq)]
pub struct Statement {
    /// The database to run it in; `None` for the connector's default database (roles,
    /// databases and database grants are cluster-wide).
    pub database: Option<String>,
    /// The statement as it may be shown (a password verifier masked).
    pub shown: String,
    /// What it does, for errors and progress (`create role "app"`).
    pub summary: String,
    sql: String,
}

impl Statement {
    fn new(database: Option<&str>, summary: String, sql: String) -> Self {
        Statement {
            database: database.map(str::to_string),
            shown: sql.clone(),
            summary,
            sql,
        }
    }

    fn with_verifier(summary: String, sql_before: String, verifier: &str, sql_after: &str) -> Self {
        Statement {
            database: None,
            shown: format!("{sql_before}'<SCRAM-SHA-256 verifier>'{sql_after}"),
            summary,
            sql: format!("{sql_before}{}{sql_after}", quote_literal(verifier)),
        }
    }

    /// The SQL to run (a password, if any, only as a SCRAM verifier).
    pub fn sql(&self) -> &str {
        &self.sql
    }
}

impl fmt::Debug for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Statement")
            .field("database", &self.database)
            .field("shown", &self.shown)
            .finish_non_exhaustive()
    }
}

/// The kind of a change in the human diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// A new object.
    Create,
    /// An object changed.
    Alter,
    /// An object dropped.
    Drop,
    /// Something present that is not declared, left alone.
    Undeclared,
    /// A declaration that cannot be converged (shown, nothing done).
    Warning,
}

/// One line of the human diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What kind.
    pub kind: ChangeKind,
    /// `role "app"`, `database "app"`, `grant CONNECT on database "app" to "app"`.
    pub object: String,
    /// What changes (`createdb: no -> yes`, `password changed`).
    pub details: Vec<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.kind {
            ChangeKind::Create => "+",
            ChangeKind::Alter => "~",
            ChangeKind::Drop => "-",
            ChangeKind::Undeclared | ChangeKind::Warning => "!",
        };
        write!(f, "{sign} {}", self.object)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details.join("; "))?;
        }
        Ok(())
    }
}

/// What exists without being declared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Undeclared {
    /// Role names.
    pub roles: Vec<String>,
    /// Database names.
    pub databases: Vec<String>,
}

/// The result of [`plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Statements, in the order to run them.
    pub statements: Vec<Statement>,
    /// The human diff, one entry per object.
    pub changes: Vec<Change>,
    /// Present but not declared (dropped only if asked, then also in `statements`).
    pub undeclared: Undeclared,
}

impl Plan {
    /// Whether nothing is to be run.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// The human diff, one line per change (warnings and undeclared objects included).
    pub fn diff(&self) -> String {
        self.changes.iter().map(|c| format!("{c}\n")).collect()
    }
}

/// `"name"` with `"` doubled: a PostgreSQL identifier for any name without NUL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with `'` doubled (standard_conforming_strings, on since PostgreSQL 9.1).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn check_name(what: &'static str, name: &str) -> Result<(), PlanError> {
    let reason = if name.is_empty() {
        "is empty"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else if name.len() > MAX_IDENTIFIER_BYTES {
        "is longer than 63 bytes (PostgreSQL would truncate it)"
    } else {
        return Ok(());
    };
    Err(PlanError::BadName {
        what,
        name: name.to_string(),
        reason,
    })
}

/// Encodings compare by PostgreSQL's canonical name: `utf-8`, `UTF_8` and `UTF8` are one.
fn same_encoding(a: &str, b: &str) -> bool {
    let canon = |s: &str| {
        s.chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_uppercase)
            .collect::<String>()
    };
    canon(a) == canon(b)
}

fn role_attributes(role: &DeclaredRole) -> String {
    format!(
        "{} {} {} CONNECTION LIMIT {}",
        if role.login { "LOGIN" } else { "NOLOGIN" },
        if role.createdb {
            "CREATEDB"
        } else {
            "NOCREATEDB"
        },
        if role.createrole {
            "CREATEROLE"
        } else {
            "NOCREATEROLE"
        },
        role.connection_limit
    )
}

fn validate(declared: &Declared, actual: &Actual) -> Result<(), PlanError> {
    let mut seen = BTreeSet::new();
    for role in &declared.roles {
        check_name("role", &role.name)?;
        if !seen.insert(role.name.as_str()) {
            return Err(PlanError::Duplicate {
                what: "role",
                name: role.name.clone(),
            });
        }
        if role.name.starts_with("pg_") {
            return Err(PlanError::Reserved {
                role: role.name.clone(),
                reason: "starts with pg_, which PostgreSQL reserves",
            });
        }
        if declared.protected_roles.contains(&role.name) {
            return Err(PlanError::Reserved {
                role: role.name.clone(),
                reason: "is one of the cluster's own users (superuser, replication, rewind)",
            });
        }
        if actual.roles.get(&role.name).is_some_and(|a| a.superuser) {
            return Err(PlanError::Reserved {
                role: role.name.clone(),
                reason: "is a superuser, which plumb does not manage",
            });
        }
    }
    let known_role = |name: &str| seen.contains(name) || actual.roles.contains_key(name);
    for role in &declared.roles {
        for parent in &role.member_of {
            check_name("role", parent)?;
            if !known_role(parent) {
                return Err(PlanError::UnknownRole {
                    context: format!("member_of of role {:?}", role.name),
                    role: parent.clone(),
                });
            }
        }
    }
    let mut databases = BTreeSet::new();
    for db in &declared.databases {
        check_name("database", &db.name)?;
        if !databases.insert(db.name.as_str()) {
            return Err(PlanError::Duplicate {
                what: "database",
                name: db.name.clone(),
            });
        }
        if !known_role(&db.owner) {
            return Err(PlanError::UnknownRole {
                context: format!("the owner of database {:?}", db.name),
                role: db.owner.clone(),
            });
        }
    }
    for grant in &declared.grants {
        check_name("role", grant.role())?;
        check_name("database", grant.database())?;
        if let Grant::SchemaUsage { schema, .. } = grant {
            check_name("schema", schema)?;
        }
        if !known_role(grant.role()) {
            return Err(PlanError::UnknownRole {
                context: format!("grant {grant}"),
                role: grant.role().to_string(),
            });
        }
        if !databases.contains(grant.database()) && !actual.databases.contains_key(grant.database())
        {
            return Err(PlanError::UnknownDatabase {
                grant: grant.to_string(),
                database: grant.database().to_string(),
            });
        }
    }
    Ok(())
}

/// Roles and databases present but not declared (nor system, nor protected).
fn undeclared(declared: &Declared, actual: &Actual) -> Undeclared {
    let roles = actual
        .roles
        .values()
        .filter(|r| {
            !r.bootstrap
                && !r.name.starts_with("pg_")
                && !declared.protected_roles.contains(&r.name)
                && !declared.roles.iter().any(|d| d.name == r.name)
        })
        .map(|r| r.name.clone())
        .collect();
    let databases = actual
        .databases
        .keys()
        .filter(|name| {
            !SYSTEM_DATABASES.contains(&name.as_str())
                && !declared.databases.iter().any(|d| &d.name == *name)
        })
        .cloned()
        .collect();
    Undeclared { roles, databases }
}

/// Plans the statements that bring `actual` to `declared`. Pure, except that a password to
/// set gets a fresh random salt.
pub fn plan(declared: &Declared, actual: &Actual, options: PlanOptions) -> Result<Plan, PlanError> {
    validate(declared, actual)?;
    let mut plan = Plan::default();
    let mut memberships = Vec::new();

    // Roles first: databases, grants and memberships refer to them.
    for role in &declared.roles {
        let name = quote_ident(&role.name);
        let object = format!("role {name}");
        match actual.roles.get(&role.name) {
            None => {
                let mut details = vec![format!(
                    "login {}, createdb {}, createrole {}, connection limit {}",
                    yes_no(role.login),
                    yes_no(role.createdb),
                    yes_no(role.createrole),
                    role.connection_limit
                )];
                let sql = format!("CREATE ROLE {name} WITH {}", role_attributes(role));
                let statement = match &role.password {
                    Some(password) => {
                        details.push("password set".into());
                        Statement::with_verifier(
                            format!("create role {name}"),
                            format!("{sql} PASSWORD "),
                            &scram::verifier(password),
                            "",
                        )
                    }
                    None => Statement::new(None, format!("create role {name}"), sql),
                };
                plan.statements.push(statement);
                plan.changes.push(Change {
                    kind: ChangeKind::Create,
                    object,
                    details,
                });
            }
            Some(have) => {
                let mut details = Vec::new();
                let mut attributes = Vec::new();
                let mut flag = |what: &str, want: bool, have: bool, on: &str, off: &str| {
                    if want != have {
                        details.push(format!("{what}: {} -> {}", yes_no(have), yes_no(want)));
                        attributes.push(if want { on } else { off }.to_string());
                    }
                };
                flag("login", role.login, have.login, "LOGIN", "NOLOGIN");
                flag(
                    "createdb",
                    role.createdb,
                    have.createdb,
                    "CREATEDB",
                    "NOCREATEDB",
                );
                flag(
                    "createrole",
                    role.createrole,
                    have.createrole,
                    "CREATEROLE",
                    "NOCREATEROLE",
                );
                if role.connection_limit != have.connection_limit {
                    details.push(format!(
                        "connection limit: {} -> {}",
                        have.connection_limit, role.connection_limit
                    ));
                    attributes.push(format!("CONNECTION LIMIT {}", role.connection_limit));
                }
                if !attributes.is_empty() {
                    plan.statements.push(Statement::new(
                        None,
                        format!("alter role {name}"),
                        format!("ALTER ROLE {name} WITH {}", attributes.join(" ")),
                    ));
                }
                if let Some(password) = &role.password {
                    let matches = have
                        .password
                        .as_deref()
                        .is_some_and(|stored| scram::stored_matches(stored, password));
                    if !matches {
                        details.push(
                            if have.password.is_some() {
                                "password changed"
                            } else {
                                "password set"
                            }
                            .into(),
                        );
                        plan.statements.push(Statement::with_verifier(
                            format!("set the password of role {name}"),
                            format!("ALTER ROLE {name} WITH PASSWORD "),
                            &scram::verifier(password),
                            "",
                        ));
                    }
                }
                if !details.is_empty() {
                    plan.changes.push(Change {
                        kind: ChangeKind::Alter,
                        object,
                        details,
                    });
                }
            }
        }
        // Memberships after every role exists (a role may be a member of one declared later).
        let have: BTreeSet<String> = actual
            .roles
            .get(&role.name)
            .map(|a| a.member_of.clone())
            .unwrap_or_default();
        let want: BTreeSet<String> = role.member_of.iter().cloned().collect();
        for parent in have.difference(&want) {
            memberships.push((
                Statement::new(
                    None,
                    format!("revoke membership of {name} in {}", quote_ident(parent)),
                    format!("REVOKE {} FROM {name}", quote_ident(parent)),
                ),
                Change {
                    kind: ChangeKind::Drop,
                    object: format!("membership of {name} in role {}", quote_ident(parent)),
                    details: Vec::new(),
                },
            ));
        }
        for parent in want.difference(&have) {
            memberships.push((
                Statement::new(
                    None,
                    format!("grant membership of {name} in {}", quote_ident(parent)),
                    format!("GRANT {} TO {name}", quote_ident(parent)),
                ),
                Change {
                    kind: ChangeKind::Create,
                    object: format!("membership of {name} in role {}", quote_ident(parent)),
                    details: Vec::new(),
                },
            ));
        }
    }
    for (statement, change) in memberships {
        plan.statements.push(statement);
        plan.changes.push(change);
    }

    plan.undeclared = undeclared(declared, actual);
    if options.drop_undeclared {
        for db in &plan.undeclared.databases {
            let name = quote_ident(db);
            plan.statements.push(Statement::new(
                None,
                format!("drop database {name}"),
                format!("DROP DATABASE {name}"),
            ));
            plan.changes.push(Change {
                kind: ChangeKind::Drop,
                object: format!("database {name}"),
                details: vec!["not declared".into()],
            });
        }
    }

    for db in &declared.databases {
        let name = quote_ident(&db.name);
        let owner = quote_ident(&db.owner);
        let object = format!("database {name}");
        match actual.databases.get(&db.name) {
            None => {
                let mut sql = format!("CREATE DATABASE {name} WITH OWNER {owner}");
                let mut details = vec![format!("owner {owner}")];
                if let Some(encoding) = &db.encoding {
                    // template1 may have another encoding; template0 accepts any.
                    sql.push_str(&format!(
                        " ENCODING {} TEMPLATE template0",
                        quote_literal(encoding)
                    ));
                    details.push(format!("encoding {encoding}"));
                }
                plan.statements
                    .push(Statement::new(None, format!("create database {name}"), sql));
                plan.changes.push(Change {
                    kind: ChangeKind::Create,
                    object,
                    details,
                });
            }
            Some(have) => {
                if have.owner != db.owner {
                    plan.statements.push(Statement::new(
                        None,
                        format!("change the owner of database {name}"),
                        format!("ALTER DATABASE {name} OWNER TO {owner}"),
                    ));
                    plan.changes.push(Change {
                        kind: ChangeKind::Alter,
                        object: object.clone(),
                        details: vec![format!("owner: {} -> {owner}", quote_ident(&have.owner))],
                    });
                }
                if let Some(encoding) = &db.encoding
                    && !same_encoding(encoding, &have.encoding)
                {
                    plan.changes.push(Change {
                        kind: ChangeKind::Warning,
                        object,
                        details: vec![format!(
                            "encoding is {} but {encoding} is declared; an existing database's \
                             encoding cannot change (dump and restore it into a new database)",
                            have.encoding
                        )],
                    });
                }
            }
        }
    }

    for grant in &declared.grants {
        if actual.held.contains(grant) {
            continue;
        }
        let (database, sql) = match grant {
            Grant::Database {
                database,
                role,
                privilege,
            } => (
                None,
                format!(
                    "GRANT {} ON DATABASE {} TO {}",
                    match privilege {
                        DatabasePrivilege::Connect => "CONNECT",
                        DatabasePrivilege::All => "ALL PRIVILEGES",
                    },
                    quote_ident(database),
                    quote_ident(role)
                ),
            ),
            Grant::SchemaUsage {
                database,
                schema,
                role,
            } => {
                if actual
                    .missing_schemas
                    .contains(&(database.clone(), schema.clone()))
                {
                    plan.changes.push(Change {
                        kind: ChangeKind::Warning,
                        object: format!("grant {grant}"),
                        details: vec![format!(
                            "schema {} does not exist in database {}: nothing granted",
                            quote_ident(schema),
                            quote_ident(database)
                        )],
                    });
                    continue;
                }
                (
                    Some(database.as_str()),
                    format!(
                        "GRANT USAGE ON SCHEMA {} TO {}",
                        quote_ident(schema),
                        quote_ident(role)
                    ),
                )
            }
        };
        plan.statements
            .push(Statement::new(database, format!("grant {grant}"), sql));
        plan.changes.push(Change {
            kind: ChangeKind::Create,
            object: format!("grant {grant}"),
            details: Vec::new(),
        });
    }

    for role in &plan.undeclared.roles {
        let name = quote_ident(role);
        if options.drop_undeclared {
            plan.statements.push(Statement::new(
                None,
                format!("drop role {name}"),
                format!("DROP ROLE {name}"),
            ));
            plan.changes.push(Change {
                kind: ChangeKind::Drop,
                object: format!("role {name}"),
                details: vec!["not declared".into()],
            });
        } else {
            plan.changes.push(Change {
                kind: ChangeKind::Undeclared,
                object: format!("role {name}"),
                details: vec!["present but not declared (kept)".into()],
            });
        }
    }
    if !options.drop_undeclared {
        for db in &plan.undeclared.databases {
            plan.changes.push(Change {
                kind: ChangeKind::Undeclared,
                object: format!("database {}", quote_ident(db)),
                details: vec!["present but not declared (kept)".into()],
            });
        }
    }
    Ok(plan)
}

const READ_ROLES: &str = "SELECT rolname, rolsuper, rolcanlogin, rolcreatedb, rolcreaterole, \
     rolconnlimit, rolpassword, oid = 10 AS bootstrap FROM pg_catalog.pg_authid";
const READ_MEMBERSHIPS: &str = "SELECT m.rolname AS member, r.rolname AS role \
     FROM pg_catalog.pg_auth_members am \
     JOIN pg_catalog.pg_authid r ON r.oid = am.roleid \
     JOIN pg_catalog.pg_authid m ON m.oid = am.member";
const READ_DATABASES: &str = "SELECT datname, pg_catalog.pg_get_userbyid(datdba) AS owner, \
     pg_catalog.pg_encoding_to_char(encoding) AS encoding FROM pg_catalog.pg_database";
// Names are passed as text: these functions look them up as given, no identifier parsing.
const READ_DATABASE_PRIVILEGES: &str = "SELECT \
     pg_catalog.has_database_privilege($1::text, $2::text, 'CONNECT'), \
     pg_catalog.has_database_privilege($1::text, $2::text, 'CREATE'), \
     pg_catalog.has_database_privilege($1::text, $2::text, 'TEMPORARY')";
const READ_SCHEMA_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1::text)";
const READ_SCHEMA_USAGE: &str =
    "SELECT pg_catalog.has_schema_privilege($1::text, $2::text, 'USAGE')";

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    client: &PgClient,
    row: &'a tokio_postgres::Row,
    what: &str,
    index: usize,
) -> Result<T, PgError> {
    row.try_get(index)
        .map_err(|e| client.unexpected(what, format!("column {index}: {e}")))
}

/// Reads the actual state the declaration is compared with, as the superuser (pg_authid):
/// every role and database, and which declared grants hold. Schema grants need a session in
/// their database, opened through `connector`.
pub async fn read_actual(
    connector: &PgConnector<'_>,
    declared: &Declared,
) -> Result<Actual, PgError> {
    let client = connector.connect_default().await?;
    let mut actual = Actual::default();

    let what = "reading roles (pg_authid)";
    for row in client.query(what, READ_ROLES, &[]).await? {
        let name: String = get(&client, &row, what, 0)?;
        actual.roles.insert(
            name.clone(),
            ActualRole {
                name,
                superuser: get(&client, &row, what, 1)?,
                login: get(&client, &row, what, 2)?,
                createdb: get(&client, &row, what, 3)?,
                createrole: get(&client, &row, what, 4)?,
                connection_limit: get(&client, &row, what, 5)?,
                password: get(&client, &row, what, 6)?,
                bootstrap: get(&client, &row, what, 7)?,
                member_of: BTreeSet::new(),
            },
        );
    }
    let what = "reading role memberships (pg_auth_members)";
    for row in client.query(what, READ_MEMBERSHIPS, &[]).await? {
        let member: String = get(&client, &row, what, 0)?;
        let role: String = get(&client, &row, what, 1)?;
        if let Some(m) = actual.roles.get_mut(&member) {
            m.member_of.insert(role);
        }
    }
    let what = "reading databases (pg_database)";
    for row in client.query(what, READ_DATABASES, &[]).await? {
        let name: String = get(&client, &row, what, 0)?;
        actual.databases.insert(
            name.clone(),
            ActualDatabase {
                name,
                owner: get(&client, &row, what, 1)?,
                encoding: get(&client, &row, what, 2)?,
            },
        );
    }

    let mut schema_grants: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for grant in &declared.grants {
        // A grant to a role or on a database that does not exist yet cannot hold.
        if !actual.roles.contains_key(grant.role())
            || !actual.databases.contains_key(grant.database())
        {
            continue;
        }
        match grant {
            Grant::Database {
                database,
                role,
                privilege,
            } => {
                let what = "checking database privileges (has_database_privilege)";
                let rows = client
                    .query(what, READ_DATABASE_PRIVILEGES, &[role, database])
                    .await?;
                let row = rows
                    .first()
                    .ok_or_else(|| client.unexpected(what, "no row"))?;
                let connect: bool = get(&client, row, what, 0)?;
                let create: bool = get(&client, row, what, 1)?;
                let temporary: bool = get(&client, row, what, 2)?;
                let holds = match privilege {
                    DatabasePrivilege::Connect => connect,
                    DatabasePrivilege::All => connect && create && temporary,
                };
                if holds {
                    actual.held.insert(grant.clone());
                }
            }
            Grant::SchemaUsage { database, .. } => {
                schema_grants.entry(database).or_default().push(grant);
            }
        }
    }
    drop(client);

    for (database, grants) in schema_grants {
        let client = connector.connect(database).await?;
        for grant in grants {
            let Grant::SchemaUsage { schema, role, .. } = grant else {
                continue;
            };
            let what = "checking a schema (pg_namespace)";
            let rows = client.query(what, READ_SCHEMA_EXISTS, &[schema]).await?;
            let row = rows
                .first()
                .ok_or_else(|| client.unexpected(what, "no row"))?;
            let exists: bool = get(&client, row, what, 0)?;
            if !exists {
                actual
                    .missing_schemas
                    .insert((database.to_string(), schema.clone()));
                continue;
            }
            let what = "checking schema privileges (has_schema_privilege)";
            let rows = client
                .query(what, READ_SCHEMA_USAGE, &[role, schema])
                .await?;
            let row = rows
                .first()
                .ok_or_else(|| client.unexpected(what, "no row"))?;
            if get::<bool>(&client, row, what, 0)? {
                actual.held.insert(grant.clone());
            }
        }
    }
    Ok(actual)
}

/// Runs the plan's statements in order, each in its database (sessions opened through
/// `connector` as needed and kept while consecutive statements share a database). Stops at the
/// first failure, naming the statement by its summary. Returns how many statements ran.
pub async fn apply(connector: &PgConnector<'_>, plan: &Plan) -> Result<usize, PgError> {
    let mut session: Option<(Option<String>, PgClient)> = None;
    let mut ran = 0;
    for statement in &plan.statements {
        let reuse = matches!(&session, Some((db, _)) if *db == statement.database);
        if !reuse {
            // Close the previous session before opening the next.
            drop(session.take());
            let client = match &statement.database {
                None => connector.connect_default().await?,
                Some(db) => connector.connect(db).await?,
            };
            session = Some((statement.database.clone(), client));
        }
        if let Some((_, client)) = &session {
            client.execute(&statement.summary, statement.sql()).await?;
            ran += 1;
        }
    }
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> ActualRole {
        ActualRole {
            name: name.into(),
            superuser: false,
            login: true,
            createdb: false,
            createrole: false,
            connection_limit: -1,
            member_of: BTreeSet::new(),
            password: None,
            bootstrap: false,
        }
    }

    fn database(name: &str, owner: &str) -> ActualDatabase {
        ActualDatabase {
            name: name.into(),
            owner: owner.into(),
            encoding: "UTF8".into(),
        }
    }

    /// A fresh cluster as Patroni bootstraps it.
    fn fresh() -> Actual {
        let mut actual = Actual::default();
        let mut postgres = role("postgres");
        postgres.superuser = true;
        postgres.bootstrap = true;
        for r in [
            postgres,
            role("replicator"),
            role("rewind_user"),
            role("pg_monitor"),
        ] {
            actual.roles.insert(r.name.clone(), r);
        }
        for d in ["postgres", "template0", "template1"] {
            actual.databases.insert(d.into(), database(d, "postgres"));
        }
        actual
    }

    fn declared_app(password: &str) -> Declared {
        let mut app = DeclaredRole::new("app");
        app.password = Some(Password::new(password));
        Declared {
            roles: vec![app],
            databases: vec![DeclaredDatabase {
                name: "app".into(),
                owner: "app".into(),
                encoding: Some("UTF8".into()),
            }],
            grants: vec![
                Grant::Database {
                    database: "app".into(),
                    role: "app".into(),
                    privilege: DatabasePrivilege::All,
                },
                Grant::SchemaUsage {
                    database: "app".into(),
                    schema: "public".into(),
                    role: "app".into(),
                },
            ],
            protected_roles: vec!["postgres".into(), "replicator".into(), "rewind_user".into()],
        }
    }

    /// What the catalog would hold after running `plan` (the planner's own model of its SQL).
    fn converge(declared: &Declared, actual: &Actual) -> Actual {
        let mut after = actual.clone();
        for r in &declared.roles {
            let entry = after
                .roles
                .entry(r.name.clone())
                .or_insert_with(|| role(&r.name));
            entry.login = r.login;
            entry.createdb = r.createdb;
            entry.createrole = r.createrole;
            entry.connection_limit = r.connection_limit;
            entry.member_of = r.member_of.iter().cloned().collect();
            if let Some(p) = &r.password {
                let keep = entry
                    .password
                    .as_deref()
                    .is_some_and(|s| scram::stored_matches(s, p));
                if !keep {
                    entry.password = Some(scram::verifier(p));
                }
            }
        }
        for d in &declared.databases {
            let entry = after
                .databases
                .entry(d.name.clone())
                .or_insert_with(|| database(&d.name, &d.owner));
            entry.owner = d.owner.clone();
        }
        after.held.extend(declared.grants.iter().cloned());
        after
    }

    fn sqls(plan: &Plan) -> Vec<String> {
        plan.statements
            .iter()
            .map(|s| s.sql().to_string())
            .collect()
    }

    #[test]
    fn a_fresh_cluster_gets_role_database_and_grants_in_order() {
        let declared = declared_app("app-secret");
        let plan = plan(&declared, &fresh(), PlanOptions::default()).expect("plan");
        let sql = sqls(&plan);
        assert_eq!(sql.len(), 4, "{sql:#?}");
        assert!(
            sql[0].starts_with(
                "CREATE ROLE \"app\" WITH LOGIN NOCREATEDB NOCREATEROLE CONNECTION LIMIT -1 PASSWORD 'SCRAM-SHA-256$4096:"
            ),
            "{}",
            sql[0]
        );
        assert_eq!(
            sql[1],
            "CREATE DATABASE \"app\" WITH OWNER \"app\" ENCODING 'UTF8' TEMPLATE template0"
        );
        assert_eq!(
            sql[2],
            "GRANT ALL PRIVILEGES ON DATABASE \"app\" TO \"app\""
        );
        assert_eq!(sql[3], "GRANT USAGE ON SCHEMA \"public\" TO \"app\"");
        assert_eq!(plan.statements[3].database.as_deref(), Some("app"));
        assert!(plan.statements[..3].iter().all(|s| s.database.is_none()));
        // The verifier in the SQL is of the declared password; the password itself is nowhere.
        let verifier = sql[0].split('\'').nth(1).expect("quoted verifier");
        assert!(scram::stored_matches(
            verifier,
            &Password::new("app-secret")
        ));
        let everything = format!("{plan:?}{}{}", plan.diff(), sql.join(";"));
        assert!(!everything.contains("app-secret"), "{everything}");
        // The shown SQL masks the verifier.
        assert!(
            plan.statements[0]
                .shown
                .ends_with("PASSWORD '<SCRAM-SHA-256 verifier>'")
        );
        assert!(!format!("{plan:?}").contains("SCRAM-SHA-256$"));
        let diff = plan.diff();
        assert!(diff.contains("+ role \"app\": login yes, createdb no, createrole no, connection limit -1; password set"), "{diff}");
        assert!(
            diff.contains("+ database \"app\": owner \"app\"; encoding UTF8"),
            "{diff}"
        );
        assert!(plan.undeclared.roles.is_empty(), "{:?}", plan.undeclared);
    }

    #[test]
    fn a_second_plan_against_the_converged_state_is_empty() {
        let declared = declared_app("app-secret");
        let first = plan(&declared, &fresh(), PlanOptions::default()).unwrap();
        assert!(!first.is_empty());
        let converged = converge(&declared, &fresh());
        let second = plan(&declared, &converged, PlanOptions::default()).unwrap();
        assert!(second.is_empty(), "{:#?}", second.statements);
        assert_eq!(second.diff(), "");
    }

    #[test]
    fn a_changed_password_is_reported_only_as_changed() {
        let converged = converge(&declared_app("old-secret"), &fresh());
        let declared = declared_app("new-secret");
        let plan = plan(&declared, &converged, PlanOptions::default()).unwrap();
        let sql = sqls(&plan);
        assert_eq!(sql.len(), 1, "{sql:?}");
        assert!(sql[0].starts_with("ALTER ROLE \"app\" WITH PASSWORD 'SCRAM-SHA-256$"));
        let verifier = sql[0].split('\'').nth(1).unwrap();
        assert!(scram::stored_matches(
            verifier,
            &Password::new("new-secret")
        ));
        assert_eq!(plan.diff(), "~ role \"app\": password changed\n");
        assert!(!plan.diff().contains("secret"));
    }

    #[test]
    fn an_md5_password_is_replaced() {
        let mut actual = converge(&declared_app("pw"), &fresh());
        actual.roles.get_mut("app").unwrap().password =
            Some("md5a3556571e93b0d20722ba62be61e8c2d".into());
        let plan = plan(&declared_app("pw"), &actual, PlanOptions::default()).unwrap();
        assert_eq!(plan.statements.len(), 1);
        assert_eq!(plan.diff(), "~ role \"app\": password changed\n");
    }

    #[test]
    fn attribute_drift_is_one_alter_with_only_what_differs() {
        let mut declared = declared_app("pw");
        let converged = converge(&declared, &fresh());
        declared.roles[0].createdb = true;
        declared.roles[0].connection_limit = 5;
        declared.roles[0].login = false;
        let plan = plan(&declared, &converged, PlanOptions::default()).unwrap();
        assert_eq!(
            sqls(&plan),
            vec!["ALTER ROLE \"app\" WITH NOLOGIN CREATEDB CONNECTION LIMIT 5"]
        );
        assert_eq!(
            plan.diff(),
            "~ role \"app\": login: yes -> no; createdb: no -> yes; connection limit: -1 -> 5\n"
        );
    }

    #[test]
    fn memberships_are_granted_after_all_roles_exist_and_extra_ones_revoked() {
        let mut reader = DeclaredRole::new("reader");
        reader.login = false;
        let mut app = DeclaredRole::new("app");
        app.member_of = vec!["reader".into()];
        // app comes first but is a member of reader, declared later.
        let declared = Declared {
            roles: vec![app, reader],
            protected_roles: vec!["replicator".into(), "rewind_user".into()],
            ..Declared::default()
        };
        let p = plan(&declared, &fresh(), PlanOptions::default()).unwrap();
        assert_eq!(
            sqls(&p),
            vec![
                "CREATE ROLE \"app\" WITH LOGIN NOCREATEDB NOCREATEROLE CONNECTION LIMIT -1",
                "CREATE ROLE \"reader\" WITH NOLOGIN NOCREATEDB NOCREATEROLE CONNECTION LIMIT -1",
                "GRANT \"reader\" TO \"app\"",
            ]
        );
        let mut actual = converge(&declared, &fresh());
        actual
            .roles
            .get_mut("app")
            .unwrap()
            .member_of
            .insert("pg_monitor".into());
        let p = plan(&declared, &actual, PlanOptions::default()).unwrap();
        assert_eq!(sqls(&p), vec!["REVOKE \"pg_monitor\" FROM \"app\""]);
        assert_eq!(p.diff(), "- membership of \"app\" in role \"pg_monitor\"\n");
    }

    #[test]
    fn identifiers_with_quotes_and_odd_characters_are_quoted() {
        let odd = "we\"ird rôle; DROP TABLE x; --";
        let db = "db \"with\" 'quotes'";
        let mut r = DeclaredRole::new(odd);
        r.password = Some(Password::new("it's \"pw\""));
        let declared = Declared {
            roles: vec![r],
            databases: vec![DeclaredDatabase {
                name: db.into(),
                owner: odd.into(),
                encoding: Some("utf-8".into()),
            }],
            grants: vec![
                Grant::Database {
                    database: db.into(),
                    role: odd.into(),
                    privilege: DatabasePrivilege::Connect,
                },
                Grant::SchemaUsage {
                    database: db.into(),
                    schema: "s\"1".into(),
                    role: odd.into(),
                },
            ],
            protected_roles: Vec::new(),
        };
        let p = plan(&declared, &fresh(), PlanOptions::default()).unwrap();
        let sql = sqls(&p);
        assert!(
            sql[0].starts_with("CREATE ROLE \"we\"\"ird rôle; DROP TABLE x; --\" WITH LOGIN"),
            "{}",
            sql[0]
        );
        assert_eq!(
            sql[1],
            "CREATE DATABASE \"db \"\"with\"\" 'quotes'\" WITH OWNER \"we\"\"ird rôle; DROP TABLE x; --\" ENCODING 'utf-8' TEMPLATE template0"
        );
        assert_eq!(
            sql[2],
            "GRANT CONNECT ON DATABASE \"db \"\"with\"\" 'quotes'\" TO \"we\"\"ird rôle; DROP TABLE x; --\""
        );
        assert_eq!(
            sql[3],
            "GRANT USAGE ON SCHEMA \"s\"\"1\" TO \"we\"\"ird rôle; DROP TABLE x; --\""
        );
        assert!(!sql.join("").contains("it's"));
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn bad_names_and_references_are_plan_errors() {
        let mut declared = declared_app("pw");
        declared.roles[0].name = "x".repeat(64);
        assert!(matches!(
            plan(&declared, &fresh(), PlanOptions::default()),
            Err(PlanError::BadName { what: "role", .. })
        ));
        let mut declared = declared_app("pw");
        declared.roles[0].name = "a\0b".into();
        assert!(matches!(
            plan(&declared, &fresh(), PlanOptions::default()),
            Err(PlanError::BadName { .. })
        ));
        let mut declared = declared_app("pw");
        declared.databases[0].owner = "nobody".into();
        let err = plan(&declared, &fresh(), PlanOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the owner of database \"app\" refers to role \"nobody\", which is neither declared nor present"
        );
        let mut declared = declared_app("pw");
        declared.roles[0].member_of = vec!["ghost".into()];
        assert!(matches!(
            plan(&declared, &fresh(), PlanOptions::default()),
            Err(PlanError::UnknownRole { .. })
        ));
        let mut declared = declared_app("pw");
        declared.roles.push(DeclaredRole::new("app"));
        assert!(matches!(
            plan(&declared, &fresh(), PlanOptions::default()),
            Err(PlanError::Duplicate { what: "role", .. })
        ));
        let mut declared = declared_app("pw");
        declared.roles.push(DeclaredRole::new("replicator"));
        assert!(matches!(
            plan(&declared, &fresh(), PlanOptions::default()),
            Err(PlanError::Reserved { .. })
        ));
        let mut declared = declared_app("pw");
        declared.grants.push(Grant::Database {
            database: "nope".into(),
            role: "app".into(),
            privilege: DatabasePrivilege::Connect,
        });
        assert!(matches!(
            plan(&declared, &fresh(), PlanOptions::default()),
            Err(PlanError::UnknownDatabase { .. })
        ));
        // An existing superuser cannot be declared either (plumb would never see it converge).
        let mut actual = fresh();
        let mut boss = role("boss");
        boss.superuser = true;
        actual.roles.insert("boss".into(), boss);
        let declared = Declared {
            roles: vec![DeclaredRole::new("boss")],
            ..Declared::default()
        };
        assert!(matches!(
            plan(&declared, &actual, PlanOptions::default()),
            Err(PlanError::Reserved { .. })
        ));
    }

    #[test]
    fn undeclared_objects_are_reported_and_dropped_only_when_asked() {
        let declared = declared_app("pw");
        let mut actual = converge(&declared, &fresh());
        actual.roles.insert("old\"app".into(), role("old\"app"));
        actual
            .databases
            .insert("legacy".into(), database("legacy", "old\"app"));
        let kept = plan(&declared, &actual, PlanOptions::default()).unwrap();
        assert!(kept.is_empty(), "{:?}", kept.statements);
        assert_eq!(kept.undeclared.roles, vec!["old\"app".to_string()]);
        assert_eq!(kept.undeclared.databases, vec!["legacy".to_string()]);
        assert_eq!(
            kept.diff(),
            "! role \"old\"\"app\": present but not declared (kept)\n! database \"legacy\": present but not declared (kept)\n"
        );
        let dropped = plan(
            &declared,
            &actual,
            PlanOptions {
                drop_undeclared: true,
            },
        )
        .unwrap();
        assert_eq!(
            sqls(&dropped),
            vec!["DROP DATABASE \"legacy\"", "DROP ROLE \"old\"\"app\""]
        );
    }

    #[test]
    fn owner_drift_is_altered_and_encoding_drift_only_warned() {
        let declared = declared_app("pw");
        let mut actual = converge(&declared, &fresh());
        let app = actual.databases.get_mut("app").unwrap();
        app.owner = "postgres".into();
        app.encoding = "SQL_ASCII".into();
        let p = plan(&declared, &actual, PlanOptions::default()).unwrap();
        assert_eq!(sqls(&p), vec!["ALTER DATABASE \"app\" OWNER TO \"app\""]);
        let diff = p.diff();
        assert!(
            diff.contains("~ database \"app\": owner: \"postgres\" -> \"app\""),
            "{diff}"
        );
        assert!(
            diff.contains("! database \"app\": encoding is SQL_ASCII but UTF8 is declared"),
            "{diff}"
        );
        assert!(same_encoding("utf-8", "UTF8") && !same_encoding("LATIN1", "UTF8"));
    }

    #[test]
    fn a_missing_schema_is_a_warning_not_a_statement() {
        let mut declared = declared_app("pw");
        declared.grants = vec![Grant::SchemaUsage {
            database: "app".into(),
            schema: "reports".into(),
            role: "app".into(),
        }];
        let mut actual = converge(&declared, &fresh());
        actual.held.clear();
        actual
            .missing_schemas
            .insert(("app".into(), "reports".into()));
        let p = plan(&declared, &actual, PlanOptions::default()).unwrap();
        assert!(p.is_empty());
        assert!(
            p.diff()
                .contains("schema \"reports\" does not exist in database \"app\"")
        );
    }

    #[test]
    fn debug_of_actual_roles_hides_the_verifier() {
        let mut r = role("app");
        r.password = Some(scram::verifier(&Password::new("pw")));
        let shown = format!("{r:?}");
        assert!(
            shown.contains("has_password: true") && !shown.contains("SCRAM"),
            "{shown}"
        );
    }
}
