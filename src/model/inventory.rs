//! The inventory: hosts, groups, how to reach each host, and variables at three levels.
//!
//! Variable precedence, lowest first: `defaults.vars`, then each group's `vars` in the order the
//! host lists its groups, then the host's own `vars`, then (for a File) the resource's `vars`.
//! Mappings merge key by key, recursively; any other value replaces the one below it.
//!
//! How to reach a host: `address`, `ssh_user`, `ssh_port`, `ssh_key`, `known_hosts`, `ssh_jump`
//! (bastions) and `ssh_config` (an OpenSSH client configuration file). Each one set here wins
//! over the operator's ssh_config, which fills in what the inventory leaves out: a host may have
//! no `address` at all, and is then reached as `ssh NAME` would reach it, `HostName` included
//! (see [`crate::transport::route`]). [`Host::ssh`] keeps what was written and where.
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

/// Where plumb keeps its files on a host unless the inventory says otherwise: `state` (what it
/// manages), `backup/` (previous versions of replaced files) and `lock`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/plumb";

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
    /// Bastions to reach the host through: comma-separated, each another inventory host or
    /// `[user@]host[:port]` (resolved through ssh_config); `none` for no bastion even if
    /// ssh_config names one.
    #[serde(default)]
    pub ssh_jump: Option<String>,
    /// An OpenSSH client configuration file to read instead of `~/.ssh/config` and
    /// `/etc/ssh/ssh_config` (`none`: read none).
    #[serde(default)]
    pub ssh_config: Option<PathBuf>,
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
    /// Bastions to reach the host through: comma-separated, each another inventory host or
    /// `[user@]host[:port]` (resolved through ssh_config); `none` for no bastion even if
    /// ssh_config names one.
    #[serde(default)]
    pub ssh_jump: Option<String>,
    /// An OpenSSH client configuration file to read instead of `~/.ssh/config` and
    /// `/etc/ssh/ssh_config` (`none`: read none).
    #[serde(default)]
    pub ssh_config: Option<PathBuf>,
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
    /// IP address or DNS name plumb connects to; without one, the host's name (which
    /// ssh_config may map to an address with `HostName`).
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
    /// Bastions to reach the host through: comma-separated, each another inventory host or
    /// `[user@]host[:port]` (resolved through ssh_config); `none` for no bastion even if
    /// ssh_config names one.
    #[serde(default)]
    pub ssh_jump: Option<String>,
    /// An OpenSSH client configuration file to read instead of `~/.ssh/config` and
    /// `/etc/ssh/ssh_config` (`none`: read none).
    #[serde(default)]
    pub ssh_config: Option<PathBuf>,
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
    /// The connection settings as the inventory wrote them, with where: what ssh_config may
    /// fill in is `None` here.
    #[serde(skip)]
    pub ssh: SshSettings,
}

/// A connection setting as written, and where: `inventory/hosts.yaml:12:5 hosts.pg1.ssh_user`.
pub type Written<T> = Option<(T, String)>;

/// The connection settings of a host as the inventory wrote them (after defaults and the
/// overlay), each with its place; `None` where the inventory says nothing.
#[derive(Clone, Debug, Default)]
pub struct SshSettings {
    /// `address`.
    pub address: Written<String>,
    /// `ssh_user`.
    pub user: Written<String>,
    /// `ssh_port`.
    pub port: Written<u16>,
    /// `ssh_key` (absolute).
    pub key: Written<PathBuf>,
    /// `known_hosts` (absolute).
    pub known_hosts: Written<PathBuf>,
    /// `ssh_jump`, resolved: bastions in dialling order (empty for `none`).
    pub jump: Written<Vec<JumpHop>>,
    /// `ssh_config` (absolute, or `none`).
    pub ssh_config: Written<PathBuf>,
}

/// One bastion of `ssh_jump`.
#[derive(Clone, Debug)]
pub enum JumpHop {
    /// Another inventory host, with its own settings (and its own `ssh_jump`).
    Host(Box<Host>),
    /// `[user@]host[:port]`: reached through ssh_config, with the `ssh_key` and `known_hosts`
    /// of the host it serves.
    Spec(crate::transport::ssh_config::JumpSpec),
}

impl Host {
    /// How the inventory describes reaching this host, for [`crate::transport::route`]:
    /// what it sets wins over ssh_config. A bastion written as `user@host:port` inherits this
    /// host's `ssh_key` and `known_hosts` (one file for the whole fleet is the common case).
    pub fn route_spec(&self) -> crate::transport::route::HostSpec {
        use crate::transport::route::{HostSpec, JumpTarget, Setting, Source};
        let setting =
            |v: &Written<String>| v.as_ref().map(|(v, at)| Setting::inventory(v.clone(), at));
        let path =
            |v: &Written<PathBuf>| v.as_ref().map(|(v, at)| Setting::inventory(v.clone(), at));
        let port = self
            .ssh
            .port
            .as_ref()
            .map(|(v, at)| Setting::inventory(*v, at));
        let jump = self.ssh.jump.as_ref().map(|(list, at)| {
            let hops = list
                .iter()
                .map(|hop| match hop {
                    JumpHop::Host(b) => JumpTarget::Host(Box::new(b.route_spec())),
                    JumpHop::Spec(s) => JumpTarget::Host(Box::new(HostSpec {
                        name: s.to_string(),
                        alias: Setting::inventory(s.host.clone(), at),
                        // Like `ssh -J host`: an alias that ssh_config may map.
                        address_given: false,
                        user: s.user.clone().map(|u| Setting::inventory(u, at)),
                        port: s.port.map(|p| Setting::inventory(p, at)),
                        key: path(&self.ssh.key),
                        known_hosts: path(&self.ssh.known_hosts),
                        jump: None,
                        privilege: crate::transport::Privilege::None,
                    })),
                })
                .collect();
            Setting::inventory(hops, at)
        });
        HostSpec {
            name: self.name.clone(),
            address_given: self.ssh.address.is_some(),
            alias: match &self.ssh.address {
                Some((a, at)) => Setting::inventory(a.clone(), at),
                None => Setting {
                    value: self.name.clone(),
                    source: Source::Inventory(format!("host name `{}` (no address)", self.name)),
                },
            },
            user: setting(&self.ssh.user),
            port,
            key: path(&self.ssh.key),
            known_hosts: path(&self.ssh.known_hosts),
            jump,
            privilege: match self.privilege {
                Privilege::Auto => crate::transport::Privilege::Auto,
                Privilege::None => crate::transport::Privilege::None,
                Privilege::Sudo => crate::transport::Privilege::Sudo,
            },
        }
    }
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
    for f in crate::text::walk_document(&root, &inventory_field_class) {
        ds.push(crate::diag::control_char(display, f));
    }
    if !ds.is_empty() {
        return Err(ds);
    }
    let def: InventoryDef = yaml::de::from_node(&root).map_err(|e| {
        let mut d = Diagnostic::at(display, e.mark.unwrap_or(root.mark), e.message.clone())
            .with_field(e.path.clone());
        if e.message.contains("unknown field") {
            d = d.with_hint(
                "host fields are address, groups, ssh_user, ssh_port, ssh_key, known_hosts, ssh_jump, ssh_config, privilege, state_dir, vars",
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
            && let Err(e) = crate::model::values::check_abs_path(dir, &[])
        {
            ds.push(
                Diagnostic::field(display, &root, &field, e.to_string())
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
fn inventory_field_class(path: &[String]) -> crate::text::TextClass {
    use crate::text::TextClass;
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

/// Finds each connection setting of one host where the inventory wrote it, in precedence order:
/// the overlay's host entry, the repo's host entry, the overlay's defaults, the repo's defaults.
struct Finder<'a> {
    base: &'a InventorySource,
    overlay: Option<&'a InventorySource>,
    name: &'a str,
    host: &'a HostDef,
    overlay_host: Option<&'a HostDef>,
}

impl<'a> Finder<'a> {
    fn new(
        base: &'a InventorySource,
        overlay: Option<&'a InventorySource>,
        name: &'a str,
        host: &'a HostDef,
        overlay_host: Option<&'a HostDef>,
    ) -> Self {
        Finder {
            base,
            overlay,
            name,
            host,
            overlay_host,
        }
    }

    fn place(&self, src: &InventorySource, field: &str) -> String {
        let mark = src.root.locate(field).mark;
        format!("{}:{} {field}", src.display.display(), mark)
    }

    /// The value and its place (`file:line:col field`).
    fn value<T>(
        &self,
        host: impl Fn(&HostDef) -> Option<T>,
        defaults: impl Fn(&DefaultsDef) -> Option<T>,
        field: &str,
    ) -> Written<T> {
        let host_field = format!("hosts.{}.{field}", self.name);
        let defaults_field = format!("defaults.{field}");
        if let (Some(o), Some(oh)) = (self.overlay, self.overlay_host)
            && let Some(v) = host(oh)
        {
            return Some((v, self.place(o, &host_field)));
        }
        if let Some(v) = host(self.host) {
            return Some((v, self.place(self.base, &host_field)));
        }
        if let Some(o) = self.overlay
            && let Some(v) = defaults(&o.def.defaults)
        {
            return Some((v, self.place(o, &defaults_field)));
        }
        defaults(&self.base.def.defaults).map(|v| (v, self.place(self.base, &defaults_field)))
    }

    /// A path value, resolved against the folder of the file that set it.
    fn path(
        &self,
        host: impl Fn(&HostDef) -> Option<PathBuf>,
        defaults: impl Fn(&DefaultsDef) -> Option<PathBuf>,
        field: &str,
    ) -> Written<PathBuf> {
        self.value(host, defaults, field)
            .map(|(p, at)| (self.resolve_at(&at, &p), at))
    }

    fn source_of(&self, at: &str) -> &'a InventorySource {
        match self.overlay {
            Some(o) if at.starts_with(&format!("{}:", o.display.display())) => o,
            _ => self.base,
        }
    }

    fn resolve_at(&self, at: &str, p: &Path) -> PathBuf {
        resolve_path(&self.source_of(at).dir, p)
    }

    fn file_of(&self, at: &str) -> PathBuf {
        self.source_of(at).display.clone()
    }

    fn root_of(&self, at: &str) -> &'a Node {
        &self.source_of(at).root
    }

    fn field_of(&self, at: &str) -> String {
        at.rsplit(' ').next().unwrap_or_default().to_string()
    }
}

/// Turns each host's `ssh_jump` text into bastions: inventory hosts (with their own settings and
/// bastions) or `user@host:port` specs. Loops and bad specs are diagnostics at the field.
fn resolve_jumps(
    hosts: &mut [Host],
    jump_text: &BTreeMap<String, (String, String)>,
    base: &InventorySource,
    overlay: Option<&InventorySource>,
    ds: &mut Diagnostics,
) {
    let source_of = |at: &str| match overlay {
        Some(o) if at.starts_with(&format!("{}:", o.display.display())) => o,
        _ => base,
    };
    let by_name: BTreeMap<String, Host> =
        hosts.iter().map(|h| (h.name.clone(), h.clone())).collect();
    fn build(
        name: &str,
        jump_text: &BTreeMap<String, (String, String)>,
        by_name: &BTreeMap<String, Host>,
        stack: &mut Vec<String>,
        memo: &mut BTreeMap<String, Result<Option<Vec<JumpHop>>, String>>,
    ) -> Result<Option<Vec<JumpHop>>, String> {
        if let Some(done) = memo.get(name) {
            return done.clone();
        }
        let Some((text, _)) = jump_text.get(name) else {
            return Ok(None);
        };
        if stack.iter().any(|s| s == name) {
            stack.push(name.to_string());
            return Err(format!("bastion loop: {}", stack.join(" -> ")));
        }
        stack.push(name.to_string());
        let mut out = Vec::new();
        let result = (|| {
            if text.trim().eq_ignore_ascii_case("none") {
                return Ok(Some(Vec::new()));
            }
            for token in text.split(',').map(str::trim) {
                if let Some(h) = by_name.get(token) {
                    let mut bastion = h.clone();
                    let inner = build(token, jump_text, by_name, stack, memo)?;
                    bastion.ssh.jump = inner.map(|j| {
                        let at = jump_text
                            .get(token)
                            .map(|(_, at)| at.clone())
                            .unwrap_or_default();
                        (j, at)
                    });
                    out.push(JumpHop::Host(Box::new(bastion)));
                } else {
                    let spec = crate::transport::ssh_config::parse_jump_list(token).map_err(|e| {
                        format!("`{token}` is neither a host of this inventory nor [user@]host[:port]: {e}")
                    })?;
                    out.extend(spec.into_iter().map(JumpHop::Spec));
                }
            }
            Ok(Some(out))
        })();
        stack.pop();
        memo.insert(name.to_string(), result.clone());
        result
    }
    let mut memo = BTreeMap::new();
    for h in hosts.iter_mut() {
        let Some((_, at)) = jump_text.get(&h.name) else {
            continue;
        };
        let mut stack = Vec::new();
        match build(&h.name, jump_text, &by_name, &mut stack, &mut memo) {
            Ok(Some(list)) => h.ssh.jump = Some((list, at.clone())),
            Ok(None) => {}
            Err(message) => {
                let src = source_of(at);
                let field = at.rsplit(' ').next().unwrap_or_default();
                ds.push(
                    Diagnostic::field(&src.display, &src.root, field, message).with_hint(
                        "ssh_jump names inventory hosts or [user@]host[:port], comma-separated, first bastion first; `none` for no bastion",
                    ),
                );
            }
        }
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
    let mut jump_text: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (name, h) in &base.def.hosts {
        let empty = HostDef::default();
        let h = h.as_ref().unwrap_or(&empty);
        let o = overlay
            .and_then(|o| o.def.hosts.get(name))
            .and_then(|o| o.as_ref());
        // Each connection setting as written, with where: the overlay's host, the repo's host,
        // the overlay's defaults, the repo's defaults.
        let written = Finder::new(base, overlay, name, h, o);
        let ssh = SshSettings {
            address: written.value(|h| h.address.clone(), |_| None, "address"),
            user: written.value(|h| h.ssh_user.clone(), |d| d.ssh_user.clone(), "ssh_user"),
            port: written.value(|h| h.ssh_port, |d| d.ssh_port, "ssh_port"),
            key: written.path(|h| h.ssh_key.clone(), |d| d.ssh_key.clone(), "ssh_key"),
            known_hosts: written.path(
                |h| h.known_hosts.clone(),
                |d| d.known_hosts.clone(),
                "known_hosts",
            ),
            // Resolved once every host is known (a bastion may be another host).
            jump: None,
            ssh_config: written
                .value(
                    |h| h.ssh_config.clone(),
                    |d| d.ssh_config.clone(),
                    "ssh_config",
                )
                .map(|(p, at)| {
                    let resolved = if p == Path::new("none") {
                        p
                    } else {
                        written.resolve_at(&at, &p)
                    };
                    (resolved, at)
                }),
        };
        if let Some((address, at)) = &ssh.address
            && (address.is_empty()
                || !address
                    .bytes()
                    .all(crate::transport::ssh_config::valid_host_byte))
        {
            ds.push(
                Diagnostic::field(
                    written.file_of(at),
                    written.root_of(at),
                    written.field_of(at),
                    format!("`{address}` is not an IP address or DNS name"),
                )
                .with_hint("letters, digits, `.`, `-`, `_` and `:` (IPv6)"),
            );
        }
        if let Some((user, at)) = &ssh.user
            && (user.is_empty()
                || !user
                    .bytes()
                    .all(crate::transport::ssh_config::valid_user_byte))
        {
            ds.push(Diagnostic::field(
                written.file_of(at),
                written.root_of(at),
                written.field_of(at),
                format!("`{user}` is not a valid user name"),
            ));
        }
        if let Some((jump, at)) =
            written.value(|h| h.ssh_jump.clone(), |d| d.ssh_jump.clone(), "ssh_jump")
        {
            jump_text.insert(name.clone(), (jump, at));
        }
        // Without an address, the host's name is what ssh is given (ssh_config may map it).
        let address = ssh
            .address
            .as_ref()
            .map(|(a, _)| a.clone())
            .unwrap_or_else(|| name.clone());
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
                .unwrap_or_else(|| crate::model::inventory::DEFAULT_STATE_DIR.to_string()),
            groups: host_groups,
            vars,
            ssh,
        });
    }
    resolve_jumps(&mut hosts, &jump_text, base, overlay, &mut ds);
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
    fn undefined_groups_are_reported_together_and_address_is_optional() {
        let s = src(
            "hosts.yaml",
            "hosts:\n  a: { groups: [nope] }\n  b: { address: x, groups: [nope] }\n",
        );
        let err = resolve(&s, None).unwrap_err();
        assert_eq!(err.len(), 2, "{err}");
        let text = err.to_string();
        assert!(text.contains("hosts.yaml:2:"), "{text}");
        assert!(text.contains("hosts.yaml:3:"), "{text}");
        assert!(
            text.contains("group `nope`, which is not defined"),
            "{text}"
        );
        // Without an address the host is dialled by its name (ssh_config may map it).
        let inv = resolve(&src("hosts.yaml", "hosts:\n  web1: {}\n"), None).unwrap();
        let web1 = inv.host("web1").unwrap();
        assert_eq!(web1.address, "web1");
        assert!(web1.ssh.address.is_none());
        assert!(web1.ssh.user.is_none());
    }

    #[test]
    fn connection_settings_remember_where_they_were_written() {
        let s = src(
            "hosts.yaml",
            "defaults:\n  ssh_user: ops\n  known_hosts: kh\nhosts:\n  a:\n    address: 10.0.0.1\n    ssh_port: 2222\n",
        );
        let inv = resolve(&s, None).unwrap();
        let a = inv.host("a").unwrap();
        assert_eq!(
            a.ssh.user,
            Some(("ops".into(), "hosts.yaml:2:13 defaults.ssh_user".into()))
        );
        assert_eq!(
            a.ssh.port,
            Some((2222, "hosts.yaml:7:15 hosts.a.ssh_port".into()))
        );
        assert_eq!(
            a.ssh.known_hosts.as_ref().map(|(p, _)| p.clone()),
            Some(PathBuf::from("/repo/inventory/kh"))
        );
    }

    #[test]
    fn ssh_jump_names_hosts_or_specs_and_loops_are_errors() {
        let s = src(
            "hosts.yaml",
            "hosts:\n  bastion: { address: 10.0.0.1, ssh_jump: outer }\n  outer: { address: 192.0.2.1 }\n  t1: { address: 10.1.0.1, ssh_jump: bastion }\n  t2: { ssh_jump: 'admin@jump.example:2222,bastion' }\n  t3: { ssh_jump: none }\n",
        );
        let inv = resolve(&s, None).unwrap();
        let (j, _) = inv.host("t1").unwrap().ssh.jump.clone().unwrap();
        match &j[..] {
            [JumpHop::Host(b)] => {
                assert_eq!(b.name, "bastion");
                let (inner, _) = b.ssh.jump.clone().unwrap();
                assert!(matches!(&inner[..], [JumpHop::Host(o)] if o.name == "outer"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let (j, _) = inv.host("t2").unwrap().ssh.jump.clone().unwrap();
        assert!(matches!(&j[..], [JumpHop::Spec(s), JumpHop::Host(_)] if s.port == Some(2222)));
        assert!(
            inv.host("t3")
                .unwrap()
                .ssh
                .jump
                .as_ref()
                .unwrap()
                .0
                .is_empty()
        );

        let s = src(
            "hosts.yaml",
            "hosts:\n  a: { ssh_jump: b }\n  b: { ssh_jump: a }\n  c: { ssh_jump: 'x;y' }\n",
        );
        let err = resolve(&s, None).unwrap_err().to_string();
        assert!(err.contains("bastion loop: a -> b -> a"), "{err}");
        assert!(err.contains("hosts.yaml:4:"), "{err}");
        assert!(err.contains("neither a host of this inventory"), "{err}");
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
