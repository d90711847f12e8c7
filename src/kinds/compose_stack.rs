//! `ComposeStack`: a folder with `docker-compose.yml` and `.env`. plumb runs `docker compose up -d`
//! (or `docker-compose`, whichever the VM has) when its files change or it is not running, and
//! `down` when it is removed.

use super::fs::converge_file;
use super::{
    CheckCx, Kind, Primitive, PrimitiveSpec, check_content, content_source, desired, render_content,
};
use crate::diag::Diagnostic;
use crate::kinds::Desired;
use crate::kinds::HostCx;
use crate::kinds::Manifest;
use crate::model::desired::Content;
use crate::model::values::{FileMode, Presence, SecretRef};
use crate::shell::quote;
use crate::vocab::cx::PlanCx;
use crate::vocab::records::{PathState, Records, parse_path};
use crate::vocab::state::Managed;
use crate::vocab::step::{Action, Change, Planned, Step};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A value in the stack's `.env`: literal text or a secret.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// Literal.
    Text(String),
    /// From a secret (makes `.env` sensitive).
    Secret(SecretRef),
}

/// A compose stack as declared; the resource name is the compose project name.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeStackSpec {
    /// Folder holding the compose file and `.env`.
    pub dir: String,
    /// Literal compose file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tera template for the compose file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Repo file for the compose file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Template variables.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub vars: Map<String, Value>,
    /// `.env` entries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// Owner of the files.
    #[serde(default = "super::directory::root")]
    pub owner: String,
    /// Group of the files.
    #[serde(default = "super::directory::root")]
    pub group: String,
    /// Mode of the files.
    #[serde(default = "stack_mode")]
    pub mode: FileMode,
    /// Services restarted when notified (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_on_notify: Vec<String>,
    /// Present (up) or absent (down, files removed).
    #[serde(default)]
    pub state: Presence,
}

fn stack_mode() -> FileMode {
    FileMode(0o640)
}

/// A stack as it should be on a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StackState {
    /// Compose project name.
    pub project: String,
    /// Folder.
    pub dir: String,
    /// `docker-compose.yml`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compose: Option<Content>,
    /// `.env`, if any entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<Content>,
    /// Owner of the files.
    pub owner: String,
    /// Group of the files.
    pub group: String,
    /// Mode of the files.
    pub mode: FileMode,
    /// Services restarted when notified.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart_on_notify: Vec<String>,
    /// Up or down.
    pub state: Presence,
}

impl StackState {
    /// Path of the compose file.
    pub fn compose_path(&self) -> String {
        format!("{}/docker-compose.yml", self.dir)
    }

    /// Path of the env file.
    pub fn env_path(&self) -> String {
        format!("{}/.env", self.dir)
    }
}

/// Renders `.env` text; sensitive when any value is a secret.
pub fn render_env(
    cx: &mut HostCx,
    m: &Manifest,
    env: &BTreeMap<String, EnvValue>,
) -> Result<Option<Content>, Diagnostic> {
    if env.is_empty() {
        return Ok(None);
    }
    let mut text = String::new();
    // The same file with each secret's placeholder for its value (what diffs show), and the
    // secrets read, which that text is checked free of.
    let mut masked = String::new();
    let mut used: Vec<(String, String)> = Vec::new();
    for (k, v) in env {
        let (value, shown) = match v {
            EnvValue::Text(t) => (t.clone(), t.clone()),
            EnvValue::Secret(s) => {
                let v = cx
                    .secret(&s.secret)
                    .map_err(|e| m.error(&format!("env.{k}"), e.to_string()))?
                    .expose()
                    .to_string();
                // Compose reads `.env` line by line: a line break would end the value and
                // start a variable of the secret's choosing. (The value is never shown.)
                if v.contains(['\n', '\r', '\0']) {
                    return Err(m
                        .error(
                            &format!("env.{k}"),
                            format!(
                                "secret `{}` holds a line break or NUL, which a `.env` value cannot",
                                s.secret
                            ),
                        )
                        .with_hint("store the value on one line (`plumb secrets set` drops only a trailing newline)"));
                }
                used.push((s.secret.clone(), v.clone()));
                (v, crate::secrets::placeholder(&s.secret))
            }
        };
        text.push_str(&format!("{k}={}\n", env_quote(&value)));
        masked.push_str(&format!("{k}={}\n", env_quote(&shown)));
    }
    Ok(Some(if used.is_empty() {
        Content::plain(text.into_bytes())
    } else {
        Content::sensitive_masked(text.into_bytes(), masked, &used)
    }))
}

/// True for `.env` keys compose and shells accept: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_key(k: &str) -> bool {
    k.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Quotes a value for a compose `.env` file when it needs it.
fn env_quote(v: &str) -> String {
    if v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-./:@,+%".contains(&b))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

/// Service names declared in a compose file (its top-level `services` keys).
pub fn compose_services(content: &Content) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(content.bytes()) else {
        return Vec::new();
    };
    crate::yaml::parse_single(text)
        .ok()
        .and_then(|root| {
            root.get("services").and_then(|s| s.as_map()).map(|m| {
                m.iter()
                    .filter_map(|(k, _)| k.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

impl Kind for ComposeStackSpec {
    fn default_name(&self) -> Option<String> {
        None
    }

    fn check(&self, cx: &mut CheckCx) {
        let name = cx.manifest.name.clone();
        let ok = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            cx.error(
                "name",
                format!("`{name}` is not a valid compose project name"),
                Some("use lowercase letters, digits, `-` and `_`".into()),
            );
        }
        cx.abs_path("dir", &self.dir, &[]);
        cx.account("owner", &self.owner);
        cx.account("group", &self.group);
        check_content(
            cx,
            &self.content,
            &self.template,
            &self.source,
            self.state == Presence::Present,
        );
        for (k, v) in &self.env {
            if !is_env_key(k) {
                cx.error(
                    &format!("env.{k}"),
                    format!("`{k}` is not an environment variable name"),
                    Some("`.env` keys match [A-Za-z_][A-Za-z0-9_]*".into()),
                );
            }
            match v {
                EnvValue::Secret(s) => cx.secret(&format!("env.{k}"), &s.secret),
                EnvValue::Text(t) if t.contains(['\n', '\r', '\0']) => cx.error(
                    &format!("env.{k}"),
                    "a `.env` value must be a single line",
                    Some("compose reads `.env` line by line: remove the newline".into()),
                ),
                EnvValue::Text(_) => {}
            }
        }
    }

    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        let (compose, env) = if self.state == Presence::Present {
            let src = content_source(&self.content, &self.template, &self.source)
                .map_err(|msg| m.error("", msg))?;
            let resource = serde_json::to_value(self).unwrap_or(Value::Null);
            (
                Some(render_content(cx, m, src, &resource, &self.vars)?),
                render_env(cx, m, &self.env)?,
            )
        } else {
            (None, None)
        };
        let state = StackState {
            project: m.name.clone(),
            dir: self.dir.clone(),
            compose,
            env,
            owner: self.owner.clone(),
            group: self.group.clone(),
            mode: self.mode,
            restart_on_notify: self.restart_on_notify.clone(),
            state: self.state,
        };
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::ComposeStack(state),
        )])
    }
}

impl Primitive for StackState {
    fn shell() -> &'static str {
        include_str!("compose_stack.sh")
    }

    fn facts() -> (&'static str, &'static [&'static str]) {
        ("pl_compose_flavor\n", &["compose"])
    }

    /// Taken down, its files removed.
    fn prune(m: &Managed, cx: &PlanCx) -> Vec<Step> {
        let dir = m.stack_dir.clone().unwrap_or_default();
        // Without a compose tool the step fails and says so: containers are not left running
        // by a silent skip.
        let flavor = cx.compose().unwrap_or("none");
        let mut v = vec![compose_step(flavor, &m.name, &dir, &["down"])];
        v.extend(super::fs::remove_paths(m));
        v
    }

    fn remember(&self, m: &mut Managed) {
        m.stack_dir = Some(self.dir.clone());
    }

    fn contents(&self) -> Vec<&Content> {
        self.compose.iter().chain(self.env.iter()).collect()
    }

    fn paths(&self) -> Vec<String> {
        let mut p = vec![self.compose_path()];
        if self.env.is_some() {
            p.push(self.env_path());
        }
        p
    }

    fn probe(&self, index: usize, out: &mut String) {
        out.push_str(&format!(
            "pl_path {index}.compose {}\npl_path {index}.env {}\npl_stack_ps {index} {}\n",
            quote(&self.compose_path()),
            quote(&self.env_path()),
            quote(&self.project)
        ));
    }

    fn cas_keys(&self) -> &'static [&'static str] {
        &["compose", "env"]
    }

    fn cas_probe(&self, index: usize, out: &mut String) {
        out.push_str(&format!(
            "pl_path {index}.compose {}\npl_path {index}.env {}\n",
            quote(&self.compose_path()),
            quote(&self.env_path())
        ));
    }

    fn plan(&self, _index: usize, actual: Records, cx: &PlanCx) -> Planned {
        let mut p = Planned::default();
        let compose_file = parse_path(actual.get("compose"));
        let env_file = parse_path(actual.get("env"));
        let containers: Vec<(String, String)> = actual
            .all("ps")
            .filter(|f| f.len() >= 2)
            .map(|f| (f[0].clone(), f[1].clone()))
            .collect();
        let no_docker =
            actual.get("ps").and_then(|f| f.first()).map(String::as_str) == Some("no-docker");
        let Some(flavor) = cx.compose() else {
            if self.state == Presence::Present || !containers.is_empty() {
                p.error =
                    Some("neither `docker compose` nor `docker-compose` works on this host".into());
            }
            return p;
        };
        if self.state == Presence::Absent {
            if !containers.is_empty() || matches!(compose_file, PathState::File(_)) {
                p.action = Some(Action::Delete);
                p.changes.push(Change::new(
                    "stack",
                    Some(format!(
                        "{} ({} containers)",
                        self.project,
                        containers.len()
                    )),
                    Some("down".into()),
                ));
                p.steps
                    .push(compose_step(flavor, &self.project, &self.dir, &["down"]));
                for (path, state) in [
                    (self.compose_path(), &compose_file),
                    (self.env_path(), &env_file),
                ] {
                    if matches!(state, PathState::File(_)) {
                        p.steps.push(Step::Remove { path });
                    }
                }
            }
            return p;
        }
        let Some(compose) = &self.compose else {
            p.error = Some("no compose file".into());
            return p;
        };
        if compose_file == PathState::Absent {
            p.action = Some(Action::Create);
        }
        converge_file(
            &self.compose_path(),
            &compose_file,
            compose,
            &self.owner,
            &self.group,
            self.mode,
            &mut p,
        );
        match &self.env {
            Some(env) => converge_file(
                &self.env_path(),
                &env_file,
                env,
                &self.owner,
                &self.group,
                self.mode,
                &mut p,
            ),
            None => {
                if matches!(env_file, PathState::File(_)) {
                    p.changes.push(Change::new(
                        &self.env_path(),
                        Some("present".into()),
                        Some("removed".into()),
                    ));
                    p.steps.push(Step::Remove {
                        path: self.env_path(),
                    });
                }
            }
        }
        let files_changed = p
            .steps
            .iter()
            .any(|s| matches!(s, Step::WriteFile { .. } | Step::Remove { .. }));
        let services = compose_services(compose);
        let not_running: Vec<&String> = services
            .iter()
            .filter(|s| {
                !containers
                    .iter()
                    .any(|(svc, st)| svc == *s && st == "running")
            })
            .collect();
        if no_docker {
            p.error = Some("docker is not installed on this host".into());
            return p;
        }
        if !not_running.is_empty() {
            p.changes.push(Change::new(
                "services",
                Some(format!(
                    "not running: {}",
                    not_running
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Some("running".into()),
            ));
        }
        if files_changed || !not_running.is_empty() {
            p.steps.push(compose_step(
                flavor,
                &self.project,
                &self.dir,
                &["up", "-d", "--remove-orphans"],
            ));
        }
        p
    }

    fn refresh(&self, cx: &PlanCx) -> Vec<Step> {
        let flavor = cx.compose().unwrap_or("none");
        let mut args = vec!["restart"];
        args.extend(self.restart_on_notify.iter().map(String::as_str));
        vec![compose_step(flavor, &self.project, &self.dir, &args)]
    }
}

/// `docker compose -p PROJECT ARGS` in the stack's folder, with the tool the host has.
fn compose_step(flavor: &str, project: &str, dir: &str, args: &[&str]) -> Step {
    let mut argv = vec![
        "pl_compose".to_string(),
        flavor.to_string(),
        project.to_string(),
        dir.to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    Step::exec(argv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{OTHER_SHA, dir_rec, file_rec, managed, plan_cx, records};

    const COMPOSE: &str = "services:\n  db:\n    image: postgres:16\n  api:\n    image: app:1\n";

    fn want() -> StackState {
        StackState {
            project: "app".into(),
            dir: "/opt/app".into(),
            compose: Some(Content::plain(COMPOSE)),
            env: None,
            owner: "root".into(),
            group: "root".into(),
            mode: FileMode(0o640),
            restart_on_notify: vec!["api".into()],
            state: Presence::Present,
        }
    }

    fn compose_file() -> String {
        let sha = Content::plain(COMPOSE).sha256();
        file_rec("640", "root", "root", COMPOSE.len() as u64, &sha)
    }

    /// What the probe prints for a stack: its two files, then `pl_stack_ps`.
    fn body(compose: &str, env: &str, ps: &[(&str, &str)]) -> String {
        let mut out = format!("0.compose\t{compose}\n0.env\t{env}\n");
        for (svc, st) in ps {
            out.push_str(&format!("0.ps\t{svc}\t{st}\n"));
        }
        out.push_str("0.ps\tend\n");
        out
    }

    const RUNNING: &[(&str, &str)] = &[("db", "running"), ("api", "running")];

    fn plan_with(s: &StackState, body: &str, cx: &PlanCx) -> Planned {
        s.plan(0, records(body).of(0), cx)
    }

    fn plan(s: &StackState, body: &str) -> Planned {
        plan_with(s, body, &plan_cx())
    }

    fn compose(args: &[&str]) -> Step {
        compose_step("docker compose", "app", "/opt/app", args)
    }

    #[test]
    fn a_running_stack_in_sync_plans_nothing() {
        let p = plan(&want(), &body(&compose_file(), "absent", RUNNING));
        assert!(
            p.steps.is_empty() && p.changes.is_empty() && p.error.is_none(),
            "{p:?}"
        );
    }

    #[test]
    fn a_new_stack_is_written_and_brought_up() {
        let p = plan(&want(), &body("absent", "absent", &[]));
        assert_eq!(p.action, Some(Action::Create));
        assert!(
            matches!(&p.steps[0], Step::WriteFile { path, .. } if path == "/opt/app/docker-compose.yml")
        );
        assert_eq!(p.steps[1..], [compose(&["up", "-d", "--remove-orphans"])]);
        assert_eq!(
            p.changes.last().unwrap().from.as_deref(),
            Some("not running: db, api")
        );
    }

    #[test]
    fn changed_files_or_a_stopped_service_bring_it_up_again() {
        let other = file_rec("640", "root", "root", 3, OTHER_SHA);
        let p = plan(&want(), &body(&other, "absent", RUNNING));
        assert!(matches!(p.steps[0], Step::WriteFile { .. }));
        assert_eq!(p.steps[1..], [compose(&["up", "-d", "--remove-orphans"])]);
        let p = plan(
            &want(),
            &body(
                &compose_file(),
                "absent",
                &[("db", "running"), ("api", "exited")],
            ),
        );
        assert_eq!(p.steps, [compose(&["up", "-d", "--remove-orphans"])]);
        // A `.env` no longer declared is removed.
        let env = file_rec("640", "root", "root", 3, OTHER_SHA);
        let p = plan(&want(), &body(&compose_file(), &env, RUNNING));
        assert_eq!(
            p.steps,
            [
                Step::Remove {
                    path: "/opt/app/.env".into()
                },
                compose(&["up", "-d", "--remove-orphans"])
            ]
        );
    }

    #[test]
    fn a_host_without_compose_or_docker_is_an_error() {
        let mut cx = plan_cx();
        cx.facts.insert("compose".into(), "none".into());
        let p = plan_with(&want(), &body("absent", "absent", &[]), &cx);
        assert!(p.steps.is_empty());
        assert!(p.error.unwrap().contains("docker compose"));
        let p = plan(
            &want(),
            "0.compose\tabsent\n0.env\tabsent\n0.ps\tno-docker\n",
        );
        assert!(p.error.unwrap().contains("docker is not installed"));
    }

    #[test]
    fn an_absent_stack_is_taken_down_and_its_files_removed() {
        let mut s = want();
        s.state = Presence::Absent;
        s.compose = None;
        let p = plan(&s, &body(&compose_file(), "absent", RUNNING));
        assert_eq!(p.action, Some(Action::Delete));
        assert_eq!(
            p.steps,
            [
                compose(&["down"]),
                Step::Remove {
                    path: "/opt/app/docker-compose.yml".into()
                }
            ]
        );
        assert!(plan(&s, &body("absent", "absent", &[])).steps.is_empty());
    }

    #[test]
    fn a_stack_that_left_the_repo_is_taken_down_and_removed() {
        let mut m = managed("ComposeStack", "app", &["/opt/app/docker-compose.yml"]);
        want().remember(&mut m);
        assert_eq!(m.stack_dir.as_deref(), Some("/opt/app"));
        assert_eq!(
            StackState::prune(&m, &plan_cx()),
            [
                compose(&["down"]),
                Step::Remove {
                    path: "/opt/app/docker-compose.yml".into()
                }
            ]
        );
        // Without a compose tool the step still comes, and fails saying so.
        let mut cx = plan_cx();
        cx.facts.remove("compose");
        assert_eq!(
            StackState::prune(&m, &cx)[0],
            compose_step("none", "app", "/opt/app", &["down"])
        );
    }

    #[test]
    fn notified_it_restarts_the_services_named() {
        assert_eq!(want().refresh(&plan_cx()), [compose(&["restart", "api"])]);
    }

    #[test]
    fn hostile_records_are_errors_never_steps() {
        for file in [
            dir_rec("755", "root", "root"),
            "other".into(),
            "link\t***".into(),
        ] {
            let p = plan(&want(), &body(&file, "absent", RUNNING));
            assert!(p.error.is_some(), "{file}: {p:?}");
        }
        // A container record of a service the stack does not declare changes nothing, and a
        // host word is never a step's word.
        let p = plan(
            &want(),
            &body(
                &compose_file(),
                "absent",
                &[("db", "running"), ("api", "running"), ("x;rm", "running")],
            ),
        );
        assert!(p.steps.is_empty(), "{p:?}");
    }

    /// A `.env` holding a secret has a masked text: the secret's placeholder for its value,
    /// and for any ordinary value that happens to equal it.
    #[test]
    fn an_env_file_with_a_secret_has_a_masked_text_without_it() {
        let manifest = "kind: ComposeStack\nname: s\nhosts: host:pg1\ndir: /opt/s\ncontent: \"services: {}\\n\"\nenv:\n  IMAGE: app:1\n  DB_PASSWORD: { secret: su }\n  ALSO: env-secret-value\n";
        let (_dir, r) = crate::testutil::repo_with_secrets(
            &[("manifests/s.yaml", manifest)],
            &[("su", "env-secret-value")],
        );
        let h = crate::render::render_host(&r, r.inventory.host("pg1").unwrap()).unwrap();
        let d = crate::testutil::item(&h, "ComposeStack", "s");
        let PrimitiveSpec::ComposeStack(s) = &d.spec else {
            panic!()
        };
        let env = s.env.as_ref().unwrap();
        assert!(env.sensitive);
        assert_eq!(
            env.masked_text(),
            Some("ALSO=<secret:su>\nDB_PASSWORD='<secret:su>'\nIMAGE=app:1\n")
        );
        assert!(!s.compose.as_ref().unwrap().sensitive);
    }
}
