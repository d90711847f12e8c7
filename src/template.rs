//! The repo's Tera templates: loading (every parse error, with file and line), rendering with
//! sensitivity tracking, and turning Tera's errors into messages that name the template line.

use crate::confine::RepoRoot;
use crate::diag::{Diagnostic, Diagnostics};
use crate::model::desired::Content;
use crate::model::inventory::{Host, Inventory};
use crate::model::manifest::Manifest;
use crate::secrets::SecretStore;
use serde_json::{Map, Value, json};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

thread_local! {
    /// Set when a template calls `secret()`: what it renders is then sensitive.
    static TOUCHED_SECRET: Cell<bool> = const { Cell::new(false) };
    /// The secrets (name, value) the current rendering read: the masked rendering's text is
    /// checked free of each.
    static READ_SECRETS: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
    /// Set during the masked rendering: `secret()` yields the secret's placeholder and never
    /// reads its value.
    static MASKING: Cell<bool> = const { Cell::new(false) };
}

/// Clears the masking flag however the masked rendering ends.
struct Masking;

impl Masking {
    fn start() -> Masking {
        MASKING.with(|m| m.set(true));
        Masking
    }
}

impl Drop for Masking {
    fn drop(&mut self) {
        MASKING.with(|m| m.set(false));
    }
}

/// Runs a rendering; when it read a secret, the content is sensitive, and it runs once more
/// with placeholders in place of the secrets to give the content its masked text (what diffs
/// show). A masked rendering that fails only leaves the content without one.
fn render_tracked(run: impl Fn() -> tera::Result<String>) -> tera::Result<Content> {
    TOUCHED_SECRET.with(|t| t.set(false));
    READ_SECRETS.with(|r| r.borrow_mut().clear());
    let out = run();
    let touched = TOUCHED_SECRET.with(|t| t.replace(false));
    let used = READ_SECRETS.with(|r| r.take());
    let text = out?;
    if !touched {
        return Ok(Content::plain(text.into_bytes()));
    }
    let masked = {
        let _masking = Masking::start();
        run()
    };
    TOUCHED_SECRET.with(|t| t.set(false));
    Ok(match masked {
        Ok(m) => Content::sensitive_masked(text.into_bytes(), m, &used),
        Err(_) => Content::sensitive(text.into_bytes()),
    })
}

/// Name under which inline strings are rendered (for messages).
const INLINE: &str = "<inline>";

/// A template that failed to render, with the template line when it can be found.
#[derive(Clone, Debug)]
pub struct RenderFailure {
    /// What went wrong.
    pub message: String,
    /// Template file (repo-relative) and line.
    pub template: Option<(PathBuf, usize)>,
    /// Host being rendered.
    pub host: String,
    /// The load-time diagnostic of the template's syntax error, when the failure is only that
    /// a template with a syntax error cannot render: the same diagnostic again (duplicates are
    /// dropped), not a false "template not found".
    pub syntax_error: Option<Box<Diagnostic>>,
}

impl RenderFailure {
    /// A diagnostic pointing at the template line when known, else at the manifest field.
    pub fn into_diagnostic<S>(self, m: &Manifest<S>, field: &str) -> Diagnostic {
        if let Some(d) = self.syntax_error {
            return *d;
        }
        let context = format!(
            "(rendering {}/{} from {}:{} for host `{}`)",
            m.kind,
            m.name,
            m.file.display(),
            m.mark.line,
            self.host
        );
        match self.template {
            Some((file, line)) => Diagnostic::at(
                file,
                crate::yaml::Mark { line, column: 1 },
                format!("{} {context}", self.message),
            )
            .with_hint(hint_for(&self.message)),
            None => m
                .error(field, format!("{} {context}", self.message))
                .with_hint(hint_for(&self.message)),
        }
    }
}

fn hint_for(message: &str) -> String {
    if message.contains("secret") {
        "templates read secrets with {{ secret(name=\"NAME\") }}; each lives in secrets/NAME.age"
            .into()
    } else if message.contains("is not defined") {
        "define it in inventory vars (defaults, group or host), in the resource's `vars`, or guard it with `{% if x is defined %}`".into()
    } else {
        "see https://keats.github.io/tera/docs/ for template syntax".into()
    }
}

/// The loaded templates.
pub struct Templates {
    tera: tera::Tera,
    sources: BTreeMap<String, (PathBuf, String)>,
    /// Templates that cannot be used (a symlink out of the repo), with why.
    refused: BTreeMap<String, String>,
    /// Templates with a syntax error, with the diagnostic reported at load.
    broken: BTreeMap<String, Diagnostic>,
    hosts: Value,
    groups: Value,
    /// A copy of `hosts` and `groups` lent to one host's context at a time (rendering is one host
    /// after another), so a fleet of N hosts does not copy them N times.
    lent: std::sync::Mutex<Option<(Value, Value)>>,
}

impl Templates {
    /// Loads every file under `templates/` (names are paths relative to it), plus built-in
    /// templates the repo does not override. Problems go to `ds`.
    pub fn load(
        confined: &RepoRoot,
        inventory: &Inventory,
        secrets: Arc<SecretStore>,
        builtin: &[(&str, &str)],
        ds: &mut Diagnostics,
    ) -> Templates {
        let root = confined.path();
        let mut sources: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
        let dir = root.join("templates");
        let walk = confined.walk("templates");
        let mut refused = BTreeMap::new();
        for e in &walk.escapes {
            ds.push(e.diagnostic());
            if let Ok(name) = e.link.strip_prefix("templates") {
                let d = e.diagnostic();
                refused.insert(name.to_string_lossy().replace('\\', "/"), d.message.clone());
            }
        }
        for f in walk.files {
            let name = f
                .strip_prefix(&dir)
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            let display = crate::diag::display_path(root, &f);
            match std::fs::read_to_string(&f) {
                Ok(text) => {
                    sources.insert(name, (display, text));
                }
                Err(e) => ds.push(Diagnostic::file(
                    display,
                    format!("cannot read template: {e}"),
                )),
            }
        }
        for (name, text) in builtin {
            sources.entry(name.to_string()).or_insert_with(|| {
                (
                    PathBuf::from(format!("<built-in>/{name}")),
                    text.to_string(),
                )
            });
        }

        // Parse each template alone first, so every syntax error is reported, not only the first.
        let mut good = Vec::new();
        let mut broken = BTreeMap::new();
        for (name, (display, text)) in &sources {
            let mut probe = tera::Tera::default();
            match probe.add_raw_template(name, text) {
                Ok(()) => good.push((name.clone(), text.clone())),
                Err(e) => {
                    let msg = chain(&e);
                    let line = parse_error_line(&msg).unwrap_or(1);
                    let d = Diagnostic::at(
                        display.clone(),
                        crate::yaml::Mark { line, column: 1 },
                        format!("template syntax error: {}", last_line_summary(&msg)),
                    );
                    ds.push(d.clone());
                    broken.insert(name.clone(), d);
                }
            }
        }
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![]);
        if let Err(e) = tera.add_raw_templates(good) {
            ds.push(Diagnostic::file(
                "templates/",
                format!(
                    "templates do not fit together: {}",
                    last_line_summary(&chain(&e))
                ),
            ));
        }
        tera.register_function("secret", SecretFn { store: secrets });
        Templates {
            tera,
            sources,
            refused,
            broken,
            hosts: hosts_value(inventory),
            groups: groups_value(inventory),
            lent: std::sync::Mutex::new(None),
        }
    }

    /// `hosts` and `groups` to move into one host's context: the copy given back by the last
    /// host, or a fresh one.
    pub fn lend_shared(&self) -> (Value, Value) {
        let spare = self.lent.lock().ok().and_then(|mut l| l.take());
        spare.unwrap_or_else(|| (self.hosts.clone(), self.groups.clone()))
    }

    /// Takes back what [`Templates::lend_shared`] lent. The caller vouches it is unchanged.
    pub fn give_back_shared(&self, hosts: Value, groups: Value) {
        if let Ok(mut l) = self.lent.lock()
            && l.is_none()
        {
            *l = Some((hosts, groups));
        }
    }

    /// Templates that cannot be used, with why.
    pub fn refused(&self) -> &BTreeMap<String, String> {
        &self.refused
    }

    /// Every template name.
    pub fn names(&self) -> BTreeSet<String> {
        self.sources.keys().cloned().collect()
    }

    /// `hosts` as templates see it.
    pub fn hosts_value(&self) -> &Value {
        &self.hosts
    }

    /// `groups` as templates see it.
    pub fn groups_value(&self) -> &Value {
        &self.groups
    }

    /// Renders a named template.
    pub fn render(
        &self,
        name: &str,
        ctx: &tera::Context,
        host: &Host,
    ) -> Result<Content, RenderFailure> {
        render_tracked(|| self.tera.render(name, ctx))
            .map_err(|e| self.failure(&e, name, None, host))
    }

    /// Renders an inline string.
    pub fn render_inline(
        &self,
        text: &str,
        ctx: &tera::Context,
        host: &Host,
    ) -> Result<Content, RenderFailure> {
        render_tracked(|| tera::Tera::one_off(text, ctx, false))
            .map_err(|e| self.failure(&e, INLINE, Some(text), host))
    }

    fn failure(
        &self,
        e: &tera::Error,
        name: &str,
        inline: Option<&str>,
        host: &Host,
    ) -> RenderFailure {
        let full = crate::secrets::redact(&chain(e));
        // Tera names the template where the error happened (an included one, maybe).
        let (message, needle, tpl) = explain(&full, name);
        let source = match inline {
            Some(text) => Some((PathBuf::from(INLINE), text)),
            None => self.sources.get(&tpl).map(|(p, t)| (p.clone(), t.as_str())),
        };
        let template = match (source, needle) {
            (Some((path, text)), Some(needle)) => find_line(text, &needle).map(|l| (path, l)),
            (Some((path, _)), None) => Some((path, 1)),
            _ => None,
        };
        // A template left out for its syntax error, rendered or included: Tera only knows it
        // is missing.
        // (`{% include %}` names its candidates as `[a.tera, b.tera]`.)
        let syntax_error = full
            .lines()
            .filter(|l| l.contains("not found"))
            .find_map(|l| between(l, "Template '", '\''))
            .and_then(|missing| {
                missing
                    .trim_matches(['[', ']'])
                    .split(", ")
                    .find_map(|name| self.broken.get(name.trim()))
            })
            .map(|d| Box::new(d.clone()));
        RenderFailure {
            message,
            template: if inline.is_some() { None } else { template },
            host: host.name.clone(),
            syntax_error,
        }
    }
}

struct SecretFn {
    store: Arc<SecretStore>,
}

impl tera::Function for SecretFn {
    fn call(&self, args: &HashMap<String, Value>) -> tera::Result<Value> {
        let Some(name) = args.get("name").and_then(Value::as_str) else {
            return Err(tera::Error::msg(
                "secret() needs a name: secret(name=\"NAME\")",
            ));
        };
        TOUCHED_SECRET.with(|t| t.set(true));
        if MASKING.with(Cell::get) {
            return Ok(Value::String(crate::secrets::placeholder(name)));
        }
        let v = self
            .store
            .get_for_render(name)
            .map_err(|e| tera::Error::msg(format!("[secret:{name}] {e}")))?;
        READ_SECRETS.with(|r| {
            let mut r = r.borrow_mut();
            if !r.iter().any(|(n, _)| n == name) {
                r.push((name.to_string(), v.expose().to_string()));
            }
        });
        Ok(Value::String(v.expose().to_string()))
    }

    fn is_safe(&self) -> bool {
        true
    }
}

fn host_entry(h: &Host) -> Value {
    json!({ "name": h.name, "address": h.address, "port": h.port, "groups": h.groups })
}

fn hosts_value(inv: &Inventory) -> Value {
    let mut m = Map::new();
    for h in &inv.hosts {
        m.insert(h.name.clone(), host_entry(h));
    }
    Value::Object(m)
}

fn groups_value(inv: &Inventory) -> Value {
    let mut m = Map::new();
    for (name, g) in &inv.groups {
        let members: Vec<Value> = g
            .members
            .iter()
            .filter_map(|n| inv.host(n))
            .map(host_entry)
            .collect();
        m.insert(name.clone(), Value::Array(members));
    }
    Value::Object(m)
}

/// Tera's error with all its causes, one per line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join("\n")
}

fn last_line_summary(msg: &str) -> String {
    msg.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_error_line(msg: &str) -> Option<usize> {
    // pest reports `--> LINE:COL`.
    let i = msg.find("--> ")?;
    let rest = &msg[i + 4..];
    rest.split(':').next()?.trim().parse().ok()
}

fn between<'a>(s: &'a str, open: &str, close: char) -> Option<&'a str> {
    let i = s.find(open)? + open.len();
    let rest = &s[i..];
    Some(&rest[..rest.find(close)?])
}

/// Turns Tera's message into (message, text to search for, template name).
fn explain(full: &str, name: &str) -> (String, Option<String>, String) {
    for line in full.lines() {
        if line.starts_with("Variable `") && line.contains("not found in context") {
            let var = between(line, "Variable `", '`').unwrap_or("?").to_string();
            let tpl = between(line, "while rendering '", '\'')
                .unwrap_or(name)
                .to_string();
            return (format!("variable `{var}` is not defined"), Some(var), tpl);
        }
        if let Some(rest) = line.strip_prefix("[secret:") {
            let secret = rest.split(']').next().unwrap_or_default().to_string();
            let msg = rest
                .split_once("] ")
                .map(|(_, m)| m)
                .unwrap_or(rest)
                .to_string();
            return (msg, Some(secret), name.to_string());
        }
    }
    let tpl = full
        .lines()
        .find_map(|l| between(l, "Failed to render '", '\''))
        .unwrap_or(name)
        .to_string();
    let needle = full
        .lines()
        .find_map(|l| {
            between(l, "Filter call '", '\'').or_else(|| between(l, "Function call '", '\''))
        })
        .map(str::to_string);
    (last_line_summary(full), needle, tpl)
}

/// First line (1-based) where `needle` appears inside a Tera tag; a plain match as fallback.
fn find_line(text: &str, needle: &str) -> Option<usize> {
    let first = needle.split(['.', '[']).next().unwrap_or(needle);
    let in_tag = |l: &str, n: &str| {
        l.contains(n) && (l.contains("{{") || l.contains("{%")) && word_match(l, n)
    };
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .position(|l| in_tag(l, needle))
        .or_else(|| lines.iter().position(|l| in_tag(l, first)))
        .or_else(|| lines.iter().position(|l| l.contains(needle)))
        .map(|i| i + 1)
}

fn word_match(line: &str, word: &str) -> bool {
    let bytes = line.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut start = 0;
    while let Some(i) = line[start..].find(word) {
        let s = start + i;
        let e = s + word.len();
        let before_ok = s == 0 || !ident(bytes[s - 1]);
        let after_ok = e >= bytes.len() || !ident(bytes[e]);
        if before_ok && after_ok {
            return true;
        }
        start = s + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_line_of_an_undefined_variable() {
        let text = "a: 1\nb: {{ pg_version }}\nc: {{ pg_versio }}\n";
        assert_eq!(find_line(text, "pg_versio"), Some(3));
        assert_eq!(find_line(text, "pg_version"), Some(2));
        let (msg, needle, tpl) = explain(
            "Failed to render 'x.tera'\nVariable `pg_versio` not found in context while rendering 'x.tera'",
            "x.tera",
        );
        assert_eq!(msg, "variable `pg_versio` is not defined");
        assert_eq!(needle.as_deref(), Some("pg_versio"));
        assert_eq!(tpl, "x.tera");
    }

    #[test]
    fn parse_error_lines_are_read() {
        assert_eq!(
            parse_error_line("Failed to parse 'x'\n --> 4:7\n  |"),
            Some(4)
        );
    }
}
