//! The inventory: hosts, groups, how to reach each host, and variables at three levels.
//!
//! Variable precedence, lowest first: `defaults.vars`, then each group's `vars` in the order the
//! host lists its groups, then the host's own `vars`, then (for a File) the resource's `vars`.
//! Mappings merge key by key, recursively; any other value replaces the one below it.
//!
//! An overlay (`--inventory FILE`) has the same schema and is merged over the repo's inventory:
//! it may change connection settings, addresses and vars of hosts and groups the repo defines,
//! but not invent new ones (a typo in an overlay must not silently create a host).

use crate::diag::{Diagnostic, Diagnostics};
use crate::yaml::{self, Node};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How plumb gains root on a host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    /// `sudo -n` when the SSH user is not root.
    #[default]
    Auto,
    /// Run as the SSH user, whoever it is.
    None,
    /// Always `sudo -n`.
    Sudo,
}

/// Connection settings that may appear in `defaults` and on each host.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSettings {
    /// SSH user.
    #[serde(default)]
    pub ssh_user: Option<String>,
    /// SSH port.
    #[serde(default)]
    pub ssh_port: Option<u16>,
    /// Private key file; without one plumb uses ssh-agent.
    #[serde(default)]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file used to verify host keys.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// How to become root.
    #[serde(default)]
    pub privilege: Option<Privilege>,
}

/// `defaults:` of an inventory file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsDef {
    /// SSH user.
    #[serde(default)]
    pub ssh_user: Option<String>,
    /// SSH port.
    #[serde(default)]
    pub ssh_port: Option<u16>,
    /// Private key file.
    #[serde(default)]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// How to become root.
    #[serde(default)]
    pub privilege: Option<Privilege>,
    /// Where plumb keeps its state on hosts (default /var/lib/plumb).
    #[serde(default)]
    pub state_dir: Option<String>,
    /// Variables for every host.
    #[serde(default)]
    pub vars: Map<String, Value>,
}

/// A group definition.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDef {
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Variables for the group's members.
    #[serde(default)]
    pub vars: Map<String, Value>,
}

/// A host definition.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDef {
    /// IP address or DNS name plumb connects to.
    #[serde(default)]
    pub address: Option<String>,
    /// Groups the host belongs to, in precedence order (later wins).
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// SSH user.
    #[serde(default)]
    pub ssh_user: Option<String>,
    /// SSH port.
    #[serde(default)]
    pub ssh_port: Option<u16>,
    /// Private key file.
    #[serde(default)]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// How to become root.
    #[serde(default)]
    pub privilege: Option<Privilege>,
    /// Where plumb keeps its state on this host.
    #[serde(default)]
    pub state_dir: Option<String>,
    /// Host variables.
    #[serde(default)]
    pub vars: Map<String, Value>,
}

/// An inventory file as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryDef {
    /// Defaults for every host.
    #[serde(default)]
    pub defaults: DefaultsDef,
    /// Groups by name.
    #[serde(default)]
    pub groups: BTreeMap<String, Option<GroupDef>>,
    /// Hosts by name.
    #[serde(default)]
    pub hosts: BTreeMap<String, Option<HostDef>>,
}

/// A host, resolved: where it is, how to reach it, its groups and merged vars.
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    /// Inventory name.
    pub name: String,
    /// Address to connect to.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// SSH user.
    pub user: String,
    /// Private key file (absolute), or `None` for ssh-agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file (absolute), or `None` for `~/.ssh/known_hosts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<PathBuf>,
    /// How to become root.
    pub privilege: Privilege,
    /// plumb's folder on the host (state, backups, lock).
    pub state_dir: String,
    /// Groups, in precedence order.
    pub groups: Vec<String>,
    /// Merged variables.
    pub vars: Map<String, Value>,
}

/// A group, resolved.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Members, sorted by name.
    pub members: Vec<String>,
    /// Group vars, as written.
    pub vars: Map<String, Value>,
}

/// The resolved inventory.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    /// Hosts sorted by name.
    pub hosts: Vec<Host>,
    /// Groups by name; `all` is implicit and holds every host.
    pub groups: BTreeMap<String, Group>,
}

impl Inventory {
    /// The host called `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts
            .binary_search_by(|h| h.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.hosts[i])
    }
}

/// Names a template may not use as a variable, because plumb puts its own values there.
pub const RESERVED_VARS: &[&str] = &["host", "hosts", "groups", "resource", "vars", "plumb"];

/// One parsed inventory file, kept with its tree for positions.
pub struct InventorySource {
    /// Path for messages.
    pub display: PathBuf,
    /// Folder that relative paths inside it are resolved against.
    pub dir: PathBuf,
    /// Parsed tree.
    pub root: Node,
    /// Typed content.
    pub def: InventoryDef,
}

/// Parses one inventory file's text.
pub fn parse_inventory(
    display: &Path,
    dir: &Path,
    text: &str,
) -> Result<InventorySource, Diagnostics> {
    let root = yaml::parse_single(text).map_err(|e| {
        Diagnostic::at(display, e.mark, format!("YAML syntax error: {}", e.message))
    })?;
    let mut ds = Diagnostics::new();
    for f in crate::model::text::walk_document(&root, &inventory_field_class) {
        ds.push(crate::kinds::control_char_diagnostic(display, f));
    }
    if !ds.is_empty() {
        return Err(ds);
    }
    let def: InventoryDef = yaml::de::from_node(&root).map_err(|e| {
        let mut d = Diagnostic::at(display, e.mark.unwrap_or(root.mark), e.message.clone())
            .with_field(e.path.clone());
        if e.message.contains("unknown field") {
            d = d.with_hint(
                "host fields are address, groups, ssh_user, ssh_port, ssh_key, known_hosts, privilege, state_dir, vars",
            );
        }
        d
    })?;
    let mut state_dirs = vec![("defaults.state_dir".to_string(), &def.defaults.state_dir)];
    for (name, h) in &def.hosts {
        if let Some(h) = h {
            state_dirs.push((format!("hosts.{name}.state_dir"), &h.state_dir));
        }
    }
    let mut words = vec![("defaults.ssh_user".to_string(), &def.defaults.ssh_user)];
    for (name, h) in &def.hosts {
        if let Some(h) = h {
            words.push((format!("hosts.{name}.address"), &h.address));
            words.push((format!("hosts.{name}.ssh_user"), &h.ssh_user));
        }
    }
    for (field, value) in words {
        if let Some(v) = value
            && (v.is_empty() || v.starts_with('-') || v.chars().any(char::is_whitespace))
        {
            ds.push(
                Diagnostic::field(display, &root, &field, format!("`{v}` is not a valid host address or user name"))
                    .with_hint("write it without spaces and not starting with `-` (a DNS name, an IP address or a login name)"),
            );
        }
    }
    for (field, dir) in state_dirs {
        if let Some(dir) = dir
            && let Err(msg) = crate::model::values::check_abs_path(dir, &[])
        {
            ds.push(
                Diagnostic::field(display, &root, &field, msg)
                    .with_hint("plumb keeps its state, backups and lock there on the host: write a normalized absolute path such as /var/lib/plumb"),
            );
        }
    }
    if !ds.is_empty() {
        return Err(ds);
    }
    Ok(InventorySource {
        display: display.to_path_buf(),
        dir: dir.to_path_buf(),
        root,
        def,
    })
}

/// Which control characters an inventory field may hold: variable values may span lines (they
/// feed templates, like file content), a group's description may too; every other field and
/// every key (host, group and variable names included) is one line.
fn inventory_field_class(path: &[String]) -> crate::model::text::TextClass {
    use crate::model::text::TextClass;
    let seg = |i: usize| path.get(i).map(String::as_str);
    match (seg(0), seg(1), seg(2)) {
        (Some("defaults"), Some("vars"), Some(_)) => TextClass::Content,
        (Some("hosts" | "groups"), Some(_), Some("vars")) if path.len() > 3 => TextClass::Content,
        (Some("groups"), Some(_), Some("description")) if path.len() == 3 => TextClass::Script,
        _ => TextClass::Line,
    }
}

fn resolve_path(dir: &Path, p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Deep-merges `over` into `base`: mappings key by key, anything else replaced.
pub fn merge_vars(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(o)) => merge_vars(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_vars(src: &InventorySource, field: &str, vars: &Map<String, Value>, ds: &mut Diagnostics) {
    for k in vars.keys() {
        let path = format!("{field}.{k}");
        if !is_identifier(k) {
            ds.push(
                Diagnostic::field(&src.display, &src.root, &path, format!("variable name `{k}` is not an identifier"))
                    .with_hint("use letters, digits and underscores, starting with a letter (templates read it as {{ name }})"),
            );
        } else if RESERVED_VARS.contains(&k.as_str()) {
            ds.push(
                Diagnostic::field(
                    &src.display,
                    &src.root,
                    &path,
                    format!("variable name `{k}` is reserved"),
                )
                .with_hint(format!(
                    "plumb sets {} in every template; pick another name",
                    RESERVED_VARS.join(", ")
                )),
            );
        }
    }
}

/// Merges the repo's inventory with an optional overlay and resolves every host.
pub fn resolve(
    base: &InventorySource,
    overlay: Option<&InventorySource>,
) -> Result<Inventory, Diagnostics> {
    let mut ds = Diagnostics::new();
    for src in std::iter::once(base).chain(overlay) {
        check_vars(src, "defaults.vars", &src.def.defaults.vars, &mut ds);
        for (name, g) in &src.def.groups {
            if let Some(g) = g {
                check_vars(src, &format!("groups.{name}.vars"), &g.vars, &mut ds);
            }
            if !is_valid_name(name) || name == "all" {
                ds.push(
                    Diagnostic::field(
                        &src.display,
                        &src.root,
                        format!("groups.{name}"),
                        format!("`{name}` is not a valid group name"),
                    )
                    .with_hint(
                        "group names use letters, digits, `-`, `_` and `.`; `all` is implicit",
                    ),
                );
            }
        }
        for (name, h) in &src.def.hosts {
            if let Some(h) = h {
                check_vars(src, &format!("hosts.{name}.vars"), &h.vars, &mut ds);
            }
            if !is_valid_name(name) {
                ds.push(
                    Diagnostic::field(
                        &src.display,
                        &src.root,
                        format!("hosts.{name}"),
                        format!("`{name}` is not a valid host name"),
                    )
                    .with_hint("host names use letters, digits, `-`, `_` and `.`"),
                );
            }
        }
    }
    if let Some(ov) = overlay {
        for name in ov.def.hosts.keys() {
            if !base.def.hosts.contains_key(name) {
                ds.push(
                    Diagnostic::field(
                        &ov.display,
                        &ov.root,
                        format!("hosts.{name}"),
                        format!("host `{name}` is not in the repo's inventory"),
                    )
                    .with_hint(format!(
                        "an overlay only changes hosts the repo defines ({})",
                        base.display.display()
                    )),
                );
            }
        }
        for name in ov.def.groups.keys() {
            if !base.def.groups.contains_key(name) {
                ds.push(
                    Diagnostic::field(
                        &ov.display,
                        &ov.root,
                        format!("groups.{name}"),
                        format!("group `{name}` is not in the repo's inventory"),
                    )
                    .with_hint(format!(
                        "an overlay only changes groups the repo defines ({})",
                        base.display.display()
                    )),
                );
            }
        }
    }

    // Defaults: overlay fields win; paths resolve against the file that set them.
    let pick = |f: &dyn Fn(&DefaultsDef) -> Option<PathBuf>| -> Option<PathBuf> {
        overlay
            .and_then(|o| f(&o.def.defaults).map(|p| resolve_path(&o.dir, &p)))
            .or_else(|| f(&base.def.defaults).map(|p| resolve_path(&base.dir, &p)))
    };
    let d_key = pick(&|d| d.ssh_key.clone());
    let d_known = pick(&|d| d.known_hosts.clone());
    let od = overlay.map(|o| &o.def.defaults);
    let d_user = od
        .and_then(|d| d.ssh_user.clone())
        .or_else(|| base.def.defaults.ssh_user.clone());
    let d_port = od.and_then(|d| d.ssh_port).or(base.def.defaults.ssh_port);
    let d_priv = od.and_then(|d| d.privilege).or(base.def.defaults.privilege);
    let d_state = od
        .and_then(|d| d.state_dir.clone())
        .or_else(|| base.def.defaults.state_dir.clone());
    let mut d_vars = base.def.defaults.vars.clone();
    if let Some(od) = od {
        merge_vars(&mut d_vars, &od.vars);
    }

    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for (name, g) in &base.def.groups {
        let mut vars = g.as_ref().map(|g| g.vars.clone()).unwrap_or_default();
        if let Some(Some(og)) = overlay.and_then(|o| o.def.groups.get(name)) {
            merge_vars(&mut vars, &og.vars);
        }
        groups.insert(
            name.clone(),
            Group {
                name: name.clone(),
                members: Vec::new(),
                vars,
            },
        );
    }

    let mut hosts = Vec::new();
    for (name, h) in &base.def.hosts {
        let empty = HostDef::default();
        let h = h.as_ref().unwrap_or(&empty);
        let o = overlay
            .and_then(|o| o.def.hosts.get(name))
            .and_then(|o| o.as_ref());
        let address = o
            .and_then(|o| o.address.clone())
            .or_else(|| h.address.clone());
        let Some(address) = address else {
            ds.push(
                Diagnostic::field(
                    &base.display,
                    &base.root,
                    format!("hosts.{name}"),
                    format!("host `{name}` has no address"),
                )
                .with_hint("add `address: <IP or DNS name>` here or in the --inventory overlay"),
            );
            continue;
        };
        let host_groups = o
            .and_then(|o| o.groups.clone())
            .or_else(|| h.groups.clone())
            .unwrap_or_default();
        for (i, g) in host_groups.iter().enumerate() {
            if !groups.contains_key(g) {
                let known: Vec<_> = groups.keys().cloned().collect();
                ds.push(
                    Diagnostic::field(
                        &base.display,
                        &base.root,
                        format!("hosts.{name}.groups[{i}]"),
                        format!("host `{name}` is in group `{g}`, which is not defined"),
                    )
                    .with_hint(format!(
                        "define it under `groups:` (known groups: {})",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    )),
                );
            }
        }
        let mut vars = d_vars.clone();
        for g in &host_groups {
            if let Some(g) = groups.get(g) {
                merge_vars(&mut vars, &g.vars);
            }
        }
        merge_vars(&mut vars, &h.vars);
        if let Some(o) = o {
            merge_vars(&mut vars, &o.vars);
        }
        let path_of = |f: &dyn Fn(&HostDef) -> Option<PathBuf>| -> Option<PathBuf> {
            o.and_then(|o| {
                f(o).map(|p| resolve_path(&overlay.map(|s| s.dir.clone()).unwrap_or_default(), &p))
            })
            .or_else(|| f(h).map(|p| resolve_path(&base.dir, &p)))
        };
        hosts.push(Host {
            name: name.clone(),
            address,
            port: o
                .and_then(|o| o.ssh_port)
                .or(h.ssh_port)
                .or(d_port)
                .unwrap_or(22),
            user: o
                .and_then(|o| o.ssh_user.clone())
                .or_else(|| h.ssh_user.clone())
                .or_else(|| d_user.clone())
                .unwrap_or_else(|| "root".into()),
            ssh_key: path_of(&|h| h.ssh_key.clone()).or_else(|| d_key.clone()),
            known_hosts: path_of(&|h| h.known_hosts.clone()).or_else(|| d_known.clone()),
            privilege: o
                .and_then(|o| o.privilege)
                .or(h.privilege)
                .or(d_priv)
                .unwrap_or_default(),
            state_dir: o
                .and_then(|o| o.state_dir.clone())
                .or_else(|| h.state_dir.clone())
                .or_else(|| d_state.clone())
                .unwrap_or_else(|| crate::state::HOST_DIR.to_string()),
            groups: host_groups,
            vars,
        });
    }
    for h in &hosts {
        for g in &h.groups {
            if let Some(g) = groups.get_mut(g) {
                g.members.push(h.name.clone());
            }
        }
    }
    groups.insert(
        "all".into(),
        Group {
            name: "all".into(),
            members: hosts.iter().map(|h| h.name.clone()).collect(),
            vars: Map::new(),
        },
    );
    ds.into_result(Inventory { hosts, groups })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn src(name: &str, text: &str) -> InventorySource {
        parse_inventory(Path::new(name), Path::new("/repo/inventory"), text).unwrap()
    }

    const BASE: &str = "
defaults:
  ssh_user: admin
  vars: { pg_version: 15, tuning: { a: 1, b: 2 }, list: [1] }
groups:
  postgres: { vars: { pg_version: 16, tuning: { b: 3 }, role: db } }
  backup:
  extra: { vars: { role: extra } }
hosts:
  pg1: { address: 10.0.0.1, groups: [postgres, extra], vars: { list: [2] } }
  b1: { address: 10.0.0.9, groups: [backup], ssh_port: 2222 }
";

    #[test]
    fn precedence_defaults_then_groups_in_order_then_host() {
        let inv = resolve(&src("hosts.yaml", BASE), None).unwrap();
        let pg1 = inv.host("pg1").unwrap();
        assert_eq!(pg1.vars["pg_version"], json!(16));
        assert_eq!(pg1.vars["tuning"], json!({"a": 1, "b": 3}));
        // `extra` is listed after `postgres`, so it wins.
        assert_eq!(pg1.vars["role"], json!("extra"));
        assert_eq!(pg1.vars["list"], json!([2]));
        assert_eq!(pg1.user, "admin");
        assert_eq!(pg1.port, 22);
        let b1 = inv.host("b1").unwrap();
        assert_eq!(b1.port, 2222);
        assert_eq!(b1.vars["pg_version"], json!(15));
        assert_eq!(inv.groups["postgres"].members, vec!["pg1"]);
        assert_eq!(inv.groups["all"].members, vec!["b1", "pg1"]);
    }

    #[test]
    fn overlay_changes_addresses_and_connection_only_for_known_hosts() {
        let ov = parse_inventory(
            Path::new("lab.yaml"),
            Path::new("/lab"),
            "defaults: { ssh_user: root, ssh_key: id_ed25519, vars: { net: 172.20.0.0/16 } }\nhosts:\n  pg1: { address: 172.20.0.10 }\n",
        )
        .unwrap();
        let inv = resolve(&src("hosts.yaml", BASE), Some(&ov)).unwrap();
        let pg1 = inv.host("pg1").unwrap();
        assert_eq!(pg1.address, "172.20.0.10");
        assert_eq!(pg1.user, "root");
        assert_eq!(pg1.ssh_key.as_deref(), Some(Path::new("/lab/id_ed25519")));
        assert_eq!(pg1.vars["net"], json!("172.20.0.0/16"));
        assert_eq!(pg1.groups, vec!["postgres", "extra"]);

        let bad = parse_inventory(
            Path::new("lab.yaml"),
            Path::new("/lab"),
            "hosts:\n  pg9: { address: 1.2.3.4 }\n",
        )
        .unwrap();
        let err = resolve(&src("hosts.yaml", BASE), Some(&bad)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("lab.yaml:2:"), "{text}");
        assert!(
            text.contains("host `pg9` is not in the repo's inventory"),
            "{text}"
        );
    }

    #[test]
    fn undefined_group_and_missing_address_are_reported_together() {
        let s = src(
            "hosts.yaml",
            "hosts:\n  a: { groups: [nope] }\n  b: { address: x, groups: [nope] }\n",
        );
        let err = resolve(&s, None).unwrap_err();
        assert_eq!(err.len(), 2, "{err}");
        let text = err.to_string();
        assert!(text.contains("host `a` has no address"), "{text}");
        assert!(text.contains("hosts.yaml:3:"), "{text}");
        assert!(
            text.contains("group `nope`, which is not defined"),
            "{text}"
        );
    }

    #[test]
    fn unknown_field_in_inventory_is_located() {
        let err = parse_inventory(
            Path::new("hosts.yaml"),
            Path::new("/"),
            "hosts:\n  a:\n    adress: x\n",
        )
        .err()
        .unwrap();
        let text = err.to_string();
        assert!(text.contains("hosts.yaml:3:5"), "{text}");
        assert!(text.contains("unknown field `adress`"), "{text}");
    }

    #[test]
    fn reserved_and_invalid_var_names_are_refused() {
        let s = src(
            "hosts.yaml",
            "defaults: { vars: { host: 1, 'bad-name': 2 } }\nhosts: {}\n",
        );
        let err = resolve(&s, None).unwrap_err();
        assert_eq!(err.len(), 2, "{err}");
    }
}
