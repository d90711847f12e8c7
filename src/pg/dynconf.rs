//! Patroni's dynamic configuration (the DCS copy every member follows): declared cluster-wide
//! settings and PostgreSQL parameters vs `GET /config`, planned purely into a JSON merge patch
//! for `PATCH /config` (empty when in sync) and a human diff naming each setting.
//!
//! Parameters go under `postgresql.parameters`, where Patroni applies them on every member,
//! including those it reads from the DCS only (`max_connections`, `max_wal_senders`, ...), which
//! a rendered `patroni.yml` cannot change after bootstrap. Which changes need a restart comes
//! from the server itself: `pg_settings.context = 'postmaster'` ([`read_contexts`]), not from a
//! list kept here.
//!
//! Values compare as PostgreSQL would read them from the configuration: `200` and `"200"` are
//! one value, `true` and `"on"` are one value; units are compared as written (`128MB` vs
//! `131072kB` is a change: declare values the way they are stored).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::client::{PgClient, PgError};

/// Settings a hot standby must hold at least as high as its primary.
pub const STANDBY_MINIMUMS: &[&str] = &[
    "max_connections",
    "max_locks_per_transaction",
    "max_prepared_transactions",
    "max_wal_senders",
    "max_worker_processes",
];

/// The cluster-wide settings plumb converges, as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredDynamic {
    /// `ttl` (seconds the leader lock lives).
    pub ttl: u32,
    /// `loop_wait` (seconds between HA loops).
    pub loop_wait: u32,
    /// `retry_timeout` (seconds DCS and PostgreSQL operations are retried).
    pub retry_timeout: u32,
    /// `maximum_lag_on_failover` (bytes).
    pub maximum_lag_on_failover: u64,
    /// `postgresql.use_pg_rewind`; `None` leaves it as it is.
    pub use_pg_rewind: Option<bool>,
    /// PostgreSQL parameters (names as PostgreSQL spells them), under `postgresql.parameters`.
    pub parameters: BTreeMap<String, Value>,
    /// Remove parameters present in the DCS but not declared (they fall back to the member's
    /// local configuration or PostgreSQL's default).
    pub remove_undeclared_parameters: bool,
}

/// `pg_settings.context` per lower-cased parameter name (`postmaster`, `sighup`, `user`, ...).
pub type ParameterContexts = BTreeMap<String, String>;

/// Which part of the configuration a change is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SettingKind {
    /// A Patroni setting (`ttl`, `loop_wait`, ...).
    Patroni,
    /// A PostgreSQL parameter.
    Parameter,
}

/// One changed setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingChange {
    /// Patroni setting or PostgreSQL parameter.
    pub kind: SettingKind,
    /// Its name (`ttl`, `shared_buffers`).
    pub name: String,
    /// The value in the DCS now (`None`: not set there).
    pub from: Option<String>,
    /// The value after the patch (`None`: removed).
    pub to: Option<String>,
    /// PostgreSQL must restart for it to take effect (`pg_settings.context = 'postmaster'`).
    pub restart: bool,
}

impl fmt::Display for SettingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = self.from.as_deref().unwrap_or("(not set)");
        let to = self.to.as_deref().unwrap_or("(removed)");
        write!(f, "{}: {from} -> {to}", self.name)?;
        if self.restart {
            f.write_str(" (needs a restart)")?;
        }
        Ok(())
    }
}

/// The result of [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct DynconfPlan {
    /// The JSON merge patch for `PATCH /config`; `{}` when in sync.
    pub patch: Value,
    /// Each changed setting.
    pub changes: Vec<SettingChange>,
    /// Declared parameters PostgreSQL does not know (not in `pg_settings`): Patroni would pass
    /// them on and PostgreSQL refuse to start or ignore them; the caller should refuse.
    pub unknown_parameters: Vec<String>,
}

impl DynconfPlan {
    /// Whether the DCS already holds what is declared.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether any change takes effect only after a restart: members will show
    /// `pending_restart` once Patroni applied the patch.
    pub fn needs_restart(&self) -> bool {
        self.changes.iter().any(|c| c.restart)
    }

    /// Whether a setting a standby must hold at least as high as its primary is lowered: the
    /// leader must then restart first (see [`crate::pg::roll::plan_leader_first`]).
    pub fn lowers_a_standby_minimum(&self) -> bool {
        self.changes.iter().any(|c| {
            STANDBY_MINIMUMS.contains(&c.name.as_str())
                && match (c.from.as_deref(), c.to.as_deref()) {
                    (Some(from), Some(to)) => {
                        match (from.trim().parse::<f64>(), to.trim().parse::<f64>()) {
                            (Ok(f), Ok(t)) => t < f,
                            _ => false,
                        }
                    }
                    // Removed: back to the default, possibly lower.
                    (Some(_), None) => true,
                    _ => false,
                }
        })
    }

    /// The human diff, one line per setting.
    pub fn diff(&self) -> String {
        self.changes.iter().map(|c| format!("~ {c}\n")).collect()
    }
}

/// A value as PostgreSQL reads it from the configuration, for comparing.
fn canonical(value: &Value) -> String {
    match value {
        Value::String(s) => {
            let t = s.trim();
            match t.to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" => "on".into(),
                "false" | "off" | "no" => "off".into(),
                _ => t.to_string(),
            }
        }
        Value::Bool(true) => "on".into(),
        Value::Bool(false) => "off".into(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A declared parameter's value as PostgreSQL takes it in `-c name=value` (`None`: not set).
pub fn setting_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        other => Some(canonical(other)),
    }
}

/// How a value is shown in the diff.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x == y;
    }
    canonical(a) == canonical(b)
}

/// Numbers written as JSON numbers or as plain numeric strings.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

/// Plans the merge patch that brings `current` (the answer of `GET /config`) to `declared`.
/// `contexts` (from [`read_contexts`]) says which parameters need a restart and which are
/// unknown; an empty map marks none as either.
pub fn plan(
    declared: &DeclaredDynamic,
    current: &Value,
    contexts: &ParameterContexts,
) -> DynconfPlan {
    let mut patch = Map::new();
    let mut changes = Vec::new();
    let empty = Map::new();
    let current_top = current.as_object().unwrap_or(&empty);

    let settings: [(&str, Value); 4] = [
        ("ttl", declared.ttl.into()),
        ("loop_wait", declared.loop_wait.into()),
        ("retry_timeout", declared.retry_timeout.into()),
        (
            "maximum_lag_on_failover",
            declared.maximum_lag_on_failover.into(),
        ),
    ];
    for (name, want) in settings {
        let have = current_top.get(name);
        if have.is_none_or(|h| !same(h, &want)) {
            changes.push(SettingChange {
                kind: SettingKind::Patroni,
                name: name.to_string(),
                from: have.map(shown),
                to: Some(shown(&want)),
                restart: false,
            });
            patch.insert(name.to_string(), want);
        }
    }

    let current_pg = current_top
        .get("postgresql")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut pg_patch = Map::new();
    if let Some(want) = declared.use_pg_rewind {
        let have = current_pg.get("use_pg_rewind");
        let want = Value::Bool(want);
        if have.is_none_or(|h| !same(h, &want)) {
            changes.push(SettingChange {
                kind: SettingKind::Patroni,
                name: "postgresql.use_pg_rewind".into(),
                from: have.map(shown),
                to: Some(shown(&want)),
                restart: false,
            });
            pg_patch.insert("use_pg_rewind".into(), want);
        }
    }

    let current_params = current_pg
        .get("parameters")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let needs_restart = |name: &str| {
        contexts
            .get(&name.to_ascii_lowercase())
            .is_some_and(|c| c == "postmaster")
    };
    let mut params_patch = Map::new();
    let mut unknown_parameters = Vec::new();
    for (name, want) in &declared.parameters {
        if !contexts.is_empty() && !contexts.contains_key(&name.to_ascii_lowercase()) {
            unknown_parameters.push(name.clone());
        }
        let have = current_params.get(name);
        if have.is_none_or(|h| !same(h, want)) {
            changes.push(SettingChange {
                kind: SettingKind::Parameter,
                name: name.clone(),
                from: have.filter(|h| !h.is_null()).map(shown),
                to: Some(shown(want)),
                restart: needs_restart(name),
            });
            params_patch.insert(name.clone(), want.clone());
        }
    }
    if declared.remove_undeclared_parameters {
        for (name, have) in current_params {
            if declared.parameters.contains_key(name) || have.is_null() {
                continue;
            }
            changes.push(SettingChange {
                kind: SettingKind::Parameter,
                name: name.clone(),
                from: Some(shown(have)),
                to: None,
                restart: needs_restart(name),
            });
            // JSON merge patch: null removes the key.
            params_patch.insert(name.clone(), Value::Null);
        }
    }
    if !params_patch.is_empty() {
        pg_patch.insert("parameters".into(), Value::Object(params_patch));
    }
    if !pg_patch.is_empty() {
        patch.insert("postgresql".into(), Value::Object(pg_patch));
    }
    DynconfPlan {
        patch: Value::Object(patch),
        changes,
        unknown_parameters,
    }
}

const READ_CONTEXTS: &str = "SELECT name, context FROM pg_catalog.pg_settings";

/// Reads `pg_settings.context` of every parameter the server knows (a few hundred rows).
pub async fn read_contexts(client: &PgClient) -> Result<ParameterContexts, PgError> {
    let what = "reading parameter contexts (pg_settings)";
    let rows = client.query(what, READ_CONTEXTS, &[]).await?;
    let mut contexts = ParameterContexts::new();
    for row in rows {
        let name: String = row.try_get(0).map_err(|e| client.unexpected(what, e))?;
        let context: String = row.try_get(1).map_err(|e| client.unexpected(what, e))?;
        contexts.insert(name.to_ascii_lowercase(), context);
    }
    Ok(contexts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declared() -> DeclaredDynamic {
        DeclaredDynamic {
            ttl: 30,
            loop_wait: 10,
            retry_timeout: 10,
            maximum_lag_on_failover: 1_048_576,
            use_pg_rewind: Some(true),
            parameters: BTreeMap::from([
                ("max_connections".into(), json!(200)),
                ("shared_buffers".into(), json!("128MB")),
                ("log_min_duration_statement".into(), json!(250)),
            ]),
            remove_undeclared_parameters: true,
        }
    }

    fn contexts() -> ParameterContexts {
        BTreeMap::from([
            ("max_connections".into(), "postmaster".into()),
            ("shared_buffers".into(), "postmaster".into()),
            ("log_min_duration_statement".into(), "superuser".into()),
            ("work_mem".into(), "user".into()),
        ])
    }

    /// GET /config of a cluster bootstrapped from plumb's patroni.yml.
    fn bootstrapped() -> Value {
        json!({
            "ttl": 30, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 1048576,
            "postgresql": {"use_pg_rewind": true, "use_slots": true,
                           "parameters": {"max_connections": 200}}
        })
    }

    #[test]
    fn in_sync_is_an_empty_patch() {
        let mut current = bootstrapped();
        current["postgresql"]["parameters"]["shared_buffers"] = json!("128MB");
        // Stored as a string, declared as a number: one value.
        current["postgresql"]["parameters"]["log_min_duration_statement"] = json!("250");
        let plan = plan(&declared(), &current, &contexts());
        assert!(plan.is_empty(), "{:?}", plan.changes);
        assert_eq!(plan.patch, json!({}));
        assert_eq!(plan.diff(), "");
        assert!(!plan.needs_restart());
    }

    #[test]
    fn parameters_missing_from_the_dcs_are_patched_and_restart_is_flagged() {
        let plan = plan(&declared(), &bootstrapped(), &contexts());
        assert_eq!(
            plan.patch,
            json!({"postgresql": {"parameters": {"log_min_duration_statement": 250, "shared_buffers": "128MB"}}})
        );
        assert_eq!(
            plan.diff(),
            "~ log_min_duration_statement: (not set) -> 250\n~ shared_buffers: (not set) -> 128MB (needs a restart)\n"
        );
        assert!(plan.needs_restart());
    }

    #[test]
    fn the_issue_change_names_both_settings_and_needs_a_restart() {
        let mut current = bootstrapped();
        current["postgresql"]["parameters"]["shared_buffers"] = json!("128MB");
        current["postgresql"]["parameters"]["log_min_duration_statement"] = json!(250);
        let mut want = declared();
        want.parameters
            .insert("shared_buffers".into(), json!("192MB"));
        want.parameters.insert("max_connections".into(), json!(150));
        want.ttl = 20;
        let plan = plan(&want, &current, &contexts());
        assert_eq!(
            plan.patch,
            json!({"ttl": 20, "postgresql": {"parameters": {"max_connections": 150, "shared_buffers": "192MB"}}})
        );
        assert_eq!(
            plan.diff(),
            "~ ttl: 30 -> 20\n~ max_connections: 200 -> 150 (needs a restart)\n~ shared_buffers: 128MB -> 192MB (needs a restart)\n"
        );
        assert!(plan.needs_restart());
        assert!(plan.unknown_parameters.is_empty());
    }

    #[test]
    fn undeclared_parameters_are_removed_with_null_only_when_asked() {
        let mut current = bootstrapped();
        current["postgresql"]["parameters"]["shared_buffers"] = json!("128MB");
        current["postgresql"]["parameters"]["log_min_duration_statement"] = json!(250);
        current["postgresql"]["parameters"]["work_mem"] = json!("8MB");
        let p = plan(&declared(), &current, &contexts());
        assert_eq!(
            p.patch,
            json!({"postgresql": {"parameters": {"work_mem": null}}})
        );
        assert_eq!(p.diff(), "~ work_mem: 8MB -> (removed)\n");
        assert!(!p.needs_restart());
        let mut keep = declared();
        keep.remove_undeclared_parameters = false;
        assert!(plan(&keep, &current, &contexts()).is_empty());
    }

    #[test]
    fn booleans_and_numbers_compare_as_postgresql_reads_them() {
        assert!(same(&json!(true), &json!("on")));
        assert!(same(&json!("off"), &json!(false)));
        assert!(same(&json!(200), &json!("200")));
        assert!(same(&json!(0.9), &json!("0.90")));
        assert!(!same(&json!("128MB"), &json!("131072kB")));
        assert!(!same(&json!(200), &json!(150)));
    }

    #[test]
    fn unknown_parameters_and_settings_missing_from_a_bare_config() {
        let mut want = declared();
        want.parameters.insert("shared_bufers".into(), json!("1GB"));
        let p = plan(&want, &json!({}), &contexts());
        assert_eq!(p.unknown_parameters, vec!["shared_bufers".to_string()]);
        assert_eq!(p.patch["ttl"], json!(30));
        assert_eq!(p.patch["postgresql"]["use_pg_rewind"], json!(true));
        assert!(
            p.diff().starts_with("~ ttl: (not set) -> 30\n"),
            "{}",
            p.diff()
        );
        // Without contexts nothing is judged unknown or restart-bound.
        let blind = plan(&want, &json!({}), &ParameterContexts::new());
        assert!(blind.unknown_parameters.is_empty() && !blind.needs_restart());
    }
}
