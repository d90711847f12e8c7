//! Writes plumb's inventory for an Ansible [`Inventory`]. See the module docs of
//! [`super`] for the mapping.

use super::ansible::Inventory;
use super::yaml11::VAULT_KEY;
use super::{ImportError, Imported};
use crate::model::inventory::{RESERVED_VARS, merge_vars};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// Connection settings of one host, from its Ansible variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Conn {
    address: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    key: Option<String>,
    privilege: Option<&'static str>,
    jump: Option<String>,
    /// `# ...` lines about what has no equivalent.
    comments: Vec<String>,
}

/// Ansible's `boolean()`.
fn truthy(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "on" | "1" | "true" | "t" | "1.0" => Some(true),
            "n" | "no" | "off" | "0" | "false" | "f" | "0.0" => Some(false),
            _ => None,
        },
        Value::Null => Some(false),
        _ => None,
    }
}

fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("pass") || k.contains("secret") || k.ends_with("_token")
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn one_line(v: &Value) -> String {
    if let Some(obj) = v.as_object()
        && obj.contains_key(VAULT_KEY)
    {
        return "<vault-encrypted>".into();
    }
    serde_json::to_string(v).unwrap_or_default()
}

/// Finds a bastion in ssh arguments: `-J x`, `-o ProxyJump=x`, `-o ProxyJump x`, or the
/// classic `-o ProxyCommand="ssh -W %h:%p [-p P] [-q] user@bastion"`.
fn jump_from_args(args: &str) -> Option<String> {
    let words = crate::inventory_import::pyliteral::shlex_split(args).ok()?;
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if w == "-J" {
            return words.get(i + 1).cloned();
        }
        if let Some(rest) = w.strip_prefix("-J") {
            return Some(rest.to_string());
        }
        let opt = if w == "-o" {
            i += 1;
            words.get(i).cloned()
        } else {
            w.strip_prefix("-o").map(str::to_string)
        };
        if let Some(opt) = opt {
            let (k, v) = match opt.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
                None => match opt.split_once(' ') {
                    Some((k, v)) => (k.to_string(), Some(v.trim().to_string())),
                    None => (opt.clone(), words.get(i + 1).cloned()),
                },
            };
            if k.eq_ignore_ascii_case("proxyjump") {
                return v;
            }
            if k.eq_ignore_ascii_case("proxycommand")
                && let Some(cmd) = v
            {
                return jump_from_proxy_command(&cmd);
            }
        }
        i += 1;
    }
    None
}

fn jump_from_proxy_command(cmd: &str) -> Option<String> {
    let words = crate::inventory_import::pyliteral::shlex_split(cmd).ok()?;
    if words.first().map(String::as_str) != Some("ssh") || !words.iter().any(|w| w == "-W") {
        return None;
    }
    let mut port = None;
    let mut user = None;
    let mut host = None;
    let mut i = 1;
    while i < words.len() {
        match words[i].as_str() {
            "-W" | "-i" | "-F" | "-o" => i += 1,
            "-p" => {
                port = words.get(i + 1).cloned();
                i += 1;
            }
            "-l" => {
                user = words.get(i + 1).cloned();
                i += 1;
            }
            w if w.starts_with('-') => {}
            w => host = Some(w.to_string()),
        }
        i += 1;
    }
    let host = host?;
    let mut out = String::new();
    if let Some(u) = user
        && !host.contains('@')
    {
        out.push_str(&u);
        out.push('@');
    }
    out.push_str(&host);
    if let Some(p) = port {
        out.push(':');
        out.push_str(&p);
    }
    Some(out)
}

fn connection(vars: &Map<String, Value>) -> Conn {
    let mut c = Conn::default();
    let get = |a: &str, b: &str| vars.get(a).or_else(|| vars.get(b));
    let templated = |s: &str| s.contains("{{") || s.contains("{%");
    if let Some(v) = get("ansible_host", "ansible_ssh_host") {
        match text_of(v) {
            Some(s)
                if !templated(&s)
                    && !s.is_empty()
                    && s.bytes().all(crate::transport::ssh_config::valid_host_byte) =>
            {
                c.address = Some(s)
            }
            _ => c.comments.push(format!(
                "ansible_host: {} -- not imported: not an address plumb can dial",
                one_line(v)
            )),
        }
    }
    if let Some(v) = get("ansible_port", "ansible_ssh_port") {
        match text_of(v)
            .and_then(|s| s.trim().parse::<u16>().ok())
            .filter(|p| *p > 0)
        {
            Some(p) => c.port = Some(p),
            None => c.comments.push(format!(
                "ansible_port: {} -- not imported: not a port number",
                one_line(v)
            )),
        }
    }
    if let Some(v) = get("ansible_user", "ansible_ssh_user") {
        match text_of(v) {
            Some(s)
                if !templated(&s)
                    && !s.is_empty()
                    && s.bytes().all(crate::transport::ssh_config::valid_user_byte) =>
            {
                c.user = Some(s)
            }
            _ => c.comments.push(format!(
                "ansible_user: {} -- not imported: not a user name",
                one_line(v)
            )),
        }
    }
    if let Some(v) = get("ansible_ssh_private_key_file", "ansible_private_key_file") {
        match text_of(v) {
            Some(s) if !templated(&s) && !s.is_empty() => c.key = Some(s),
            _ => c.comments.push(format!(
                "ansible_ssh_private_key_file: {} -- not imported: not a path",
                one_line(v)
            )),
        }
    }
    if let Some(v) = vars.get("ansible_become") {
        match truthy(v) {
            Some(true) => c.privilege = Some("sudo"),
            Some(false) => c.privilege = Some("none"),
            None => c.comments.push(format!(
                "ansible_become: {} -- not imported: not a boolean",
                one_line(v)
            )),
        }
    }
    for (k, v) in vars {
        let handled = matches!(
            k.as_str(),
            "ansible_host"
                | "ansible_ssh_host"
                | "ansible_port"
                | "ansible_ssh_port"
                | "ansible_user"
                | "ansible_ssh_user"
                | "ansible_ssh_private_key_file"
                | "ansible_private_key_file"
                | "ansible_become"
        );
        if handled || !k.starts_with("ansible_") {
            continue;
        }
        if is_secret(k) {
            c.comments.push(format!(
                "{k} -- not imported: a secret (plumb logs in with keys; keep secrets with `plumb secrets set`)"
            ));
            continue;
        }
        let why = match k.as_str() {
            "ansible_become_method" if v.as_str() == Some("sudo") => continue,
            "ansible_become_user" if v.as_str() == Some("root") => continue,
            "ansible_connection" => match v.as_str() {
                Some("ssh") | Some("smart") | Some("paramiko") => continue,
                Some("local") => {
                    "plumb converges the machine it runs on with `plumb converge --local`"
                }
                _ => "plumb connects over SSH only",
            },
            "ansible_become_method" => "plumb becomes root with `sudo -n` only",
            "ansible_become_user" => "plumb becomes root only",
            "ansible_ssh_common_args" | "ansible_ssh_extra_args" | "ansible_ssh_args" => {
                match v.as_str().and_then(jump_from_args) {
                    Some(j) if c.jump.is_none() => {
                        c.jump = Some(j);
                        continue;
                    }
                    _ => {
                        "plumb takes no ssh arguments: use ssh_config (plumb reads ~/.ssh/config) or ssh_jump"
                    }
                }
            }
            "ansible_python_interpreter" => "plumb needs no Python on hosts",
            _ => "no plumb equivalent",
        };
        c.comments
            .push(format!("{k}: {} -- not imported: {why}", one_line(v)));
    }
    c
}

fn is_conn_key(k: &str) -> bool {
    k.starts_with("ansible_")
}

fn is_identifier(k: &str) -> bool {
    let mut b = k.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_vault(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key(VAULT_KEY) || m.values().any(is_vault),
        Value::Array(a) => a.iter().any(is_vault),
        _ => false,
    }
}

/// Why a plain variable cannot be imported as is, if it cannot.
fn unimportable(k: &str, v: &Value) -> Option<&'static str> {
    if is_vault(v) {
        return Some(
            "vault-encrypted (plumb cannot decrypt it; re-create it with `plumb secrets set` and use secret() in templates)",
        );
    }
    if !is_identifier(k) {
        return Some("not a valid variable name in plumb");
    }
    if RESERVED_VARS.contains(&k) {
        return Some("plumb reserves this name in templates; rename it");
    }
    None
}

/// Splits a layer of variables into what plumb takes and comments for the rest.
fn plain(layer: &Map<String, Value>, comments: &mut Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in layer {
        if is_conn_key(k) {
            continue;
        }
        match unimportable(k, v) {
            Some(why) => comments.push(format!(
                "var {}: {} -- not imported: {why}",
                one_line(&Value::String(k.clone())),
                if is_vault(v) {
                    "<vault-encrypted>".into()
                } else {
                    one_line(v)
                }
            )),
            None => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

fn overlay(base: &mut Map<String, Value>, over: Option<&Map<String, Value>>) {
    if let Some(o) = over {
        for (k, v) in o {
            base.insert(k.clone(), v.clone());
        }
    }
}

/// A key plumb's YAML reads back as the same string.
fn key(k: &str) -> String {
    let plain = k
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        k.to_string()
    } else {
        serde_json::to_string(k).unwrap_or_default()
    }
}

/// A value as YAML plumb reads back exactly: JSON (flow style), which is YAML.
fn value(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn write_vars(out: &mut String, indent: &str, vars: &Map<String, Value>) {
    if vars.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}vars:");
    for (k, v) in vars {
        let _ = writeln!(out, "{indent}  {}: {}", key(k), value(v));
    }
}

fn write_comments(out: &mut String, indent: &str, comments: &[String]) {
    for c in comments {
        // One line each; values were JSON-encoded, so no newline or control byte survives.
        let c: String = c
            .chars()
            .map(|ch| if ch.is_control() { ' ' } else { ch })
            .collect();
        let _ = writeln!(out, "{indent}# {c}");
    }
}

/// Writes the inventory.
pub(super) fn emit(inv: &Inventory, source: &Path) -> Result<Imported, ImportError> {
    let mut notes = Vec::new();
    let hosts: Vec<&String> = inv.host_order.iter().collect();

    // Layers as plumb will see them (plain variables only), with comments for the rest.
    let mut defaults_comments = Vec::new();
    let mut d_layer = inv
        .groups
        .get("all")
        .map(|g| g.vars.clone())
        .unwrap_or_default();
    overlay(&mut d_layer, inv.group_files.get("all"));
    let mut defaults = plain(&d_layer, &mut defaults_comments);

    let mut group_vars: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut group_comments: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, g) in &inv.groups {
        if name == "all" {
            continue;
        }
        let mut layer = g.vars.clone();
        overlay(&mut layer, inv.group_files.get(name));
        let mut comments = Vec::new();
        for (k, v) in &layer {
            if is_conn_key(k) {
                // Resolved per host below; say where it came from.
                comments.push(format!(
                    "{k}: {} -- applied to this group's hosts as their connection settings",
                    if is_secret(k) {
                        "<secret>".to_string()
                    } else {
                        one_line(v)
                    }
                ));
            }
        }
        let vars = plain(&layer, &mut comments);
        group_vars.insert(name.clone(), vars);
        group_comments.insert(name.clone(), comments);
    }

    let mut host_vars: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut host_comments: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut conns: BTreeMap<String, Conn> = BTreeMap::new();
    let mut want: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for h in &hosts {
        let mut layer = inv
            .hosts
            .get(*h)
            .map(|x| x.vars.clone())
            .unwrap_or_default();
        overlay(&mut layer, inv.host_files.get(*h));
        let mut comments = Vec::new();
        host_vars.insert((*h).clone(), plain(&layer, &mut comments));
        host_comments.insert((*h).clone(), comments);
        let all = inv.host_vars(h);
        conns.insert((*h).clone(), connection(&all));
        let mut ignore = Vec::new();
        want.insert((*h).clone(), plain(&all, &mut ignore));
    }

    // plumb merges mappings key by key and puts every group below every host; Ansible
    // replaces and puts group_vars/ files above the inventory's groups. Where the results
    // differ, the variable goes on each host with Ansible's value.
    let plumb_view = |h: &str,
                      defaults: &Map<String, Value>,
                      group_vars: &BTreeMap<String, Map<String, Value>>,
                      host_vars: &BTreeMap<String, Map<String, Value>>| {
        let mut v = defaults.clone();
        for g in inv.sorted_groups(h) {
            if let Some(gv) = group_vars.get(&g) {
                merge_vars(&mut v, gv);
            }
        }
        if let Some(hv) = host_vars.get(h) {
            merge_vars(&mut v, hv);
        }
        v
    };
    let mut moved: BTreeSet<String> = BTreeSet::new();
    for h in &hosts {
        let got = plumb_view(h, &defaults, &group_vars, &host_vars);
        let w = &want[*h];
        let keys: BTreeSet<&String> = got.keys().chain(w.keys()).collect();
        for k in keys {
            if got.get(k) != w.get(k) {
                moved.insert(k.clone());
            }
        }
    }
    if !moved.is_empty() {
        for k in &moved {
            defaults.remove(k);
            for gv in group_vars.values_mut() {
                gv.remove(k);
            }
            for (h, hv) in host_vars.iter_mut() {
                hv.remove(k);
                if let Some(v) = want[h].get(k) {
                    hv.insert(k.clone(), v.clone());
                }
            }
        }
        notes.push(format!(
            "written on each host, because Ansible's precedence gives them values plumb's layering would not: {}",
            moved.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    // The promise of this importer: plumb resolves every host to Ansible's variables.
    for h in &hosts {
        let got = plumb_view(h, &defaults, &group_vars, &host_vars);
        if got != want[*h] {
            return Err(ImportError {
                file: source.to_path_buf(),
                line: 0,
                message: format!(
                    "internal error: the variables of host `{h}` would differ from Ansible's; please report this"
                ),
            });
        }
    }

    // Connection settings shared by every host go to defaults.
    let common = |f: &dyn Fn(&Conn) -> Option<String>| -> Option<String> {
        let mut vals = conns.values().map(f);
        let first = vals.next()??;
        vals.all(|v| v.as_deref() == Some(first.as_str()))
            .then_some(first)
    };
    let d_user = common(&|c| c.user.clone());
    let d_port = common(&|c| c.port.map(|p| p.to_string()));
    let d_key = common(&|c| c.key.clone());
    let d_priv = common(&|c| c.privilege.map(str::to_string));
    let d_jump = common(&|c| c.jump.clone());
    let all_comments: Option<Vec<String>> = {
        let mut it = conns.values().map(|c| c.comments.clone());
        match it.next() {
            Some(first) if !first.is_empty() && it.all(|c| c == first) => Some(first),
            _ => None,
        }
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported from the Ansible inventory {} by `plumb inventory import`.",
        source.display()
    );
    if !inv.var_files.is_empty() {
        let _ = writeln!(out, "# Variables also from:");
        for f in &inv.var_files {
            let _ = writeln!(out, "#   {}", f.display());
        }
    }
    let _ = writeln!(
        out,
        "# ansible_host -> address, ansible_port -> ssh_port, ansible_user -> ssh_user,\n\
         # ansible_ssh_private_key_file -> ssh_key, ansible_become -> privilege (sudo | none),\n\
         # a ProxyJump in ansible_ssh_common_args -> ssh_jump. Ansible's children are flattened:\n\
         # each host lists every group it is in, lowest precedence first, in Ansible's order.\n\
         # Lines starting with `# ... -- not imported` have no plumb equivalent: review them."
    );
    if !moved.is_empty() {
        let _ = writeln!(
            out,
            "# Set on each host (Ansible replaces mappings and ranks group_vars/ files above the\n\
             # inventory's groups; plumb merges mappings and ranks every group below hosts):\n\
             #   {}",
            moved.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let _ = writeln!(out, "defaults:");
    if let Some(u) = &d_user {
        let _ = writeln!(out, "  ssh_user: {}", value(&Value::String(u.clone())));
    }
    if let Some(p) = &d_port {
        let _ = writeln!(out, "  ssh_port: {p}");
    }
    if let Some(k) = &d_key {
        let _ = writeln!(out, "  ssh_key: {}", value(&Value::String(k.clone())));
    }
    if let Some(p) = &d_priv {
        let _ = writeln!(out, "  privilege: {p}");
    }
    if let Some(j) = &d_jump {
        let _ = writeln!(out, "  ssh_jump: {}", value(&Value::String(j.clone())));
    }
    write_comments(&mut out, "  ", &defaults_comments);
    if let Some(c) = &all_comments {
        write_comments(&mut out, "  ", c);
    }
    if defaults.is_empty() {
        let _ = writeln!(out, "  vars: {{}}");
    } else {
        write_vars(&mut out, "  ", &defaults);
    }

    // Groups.
    let mut written_groups = 0;
    let _ = writeln!(out, "groups:");
    for (name, g) in &inv.groups {
        if name == "all" {
            continue;
        }
        let members = inv.members(name);
        if name == "ungrouped" && members.is_empty() {
            continue;
        }
        if !valid_name(name) {
            let _ = writeln!(
                out,
                "  # group {} -- not imported: not a valid plumb group name (letters, digits, `-`, `_`, `.`)",
                value(&Value::String(name.clone()))
            );
            notes.push(format!(
                "group `{name}` has a name plumb does not accept; its hosts are imported without it"
            ));
            continue;
        }
        written_groups += 1;
        let vars = &group_vars[name];
        let comments = &group_comments[name];
        if vars.is_empty() && comments.is_empty() && g.children.is_empty() && !members.is_empty() {
            let _ = writeln!(out, "  {}: {{}}", key(name));
            continue;
        }
        let _ = writeln!(out, "  {}:", key(name));
        if !g.children.is_empty() {
            let _ = writeln!(
                out,
                "    # Ansible children: {} (flattened: their hosts are members of this group)",
                g.children.join(", ")
            );
        }
        if members.is_empty() {
            let _ = writeln!(out, "    # empty in Ansible");
        }
        write_comments(&mut out, "    ", comments);
        if vars.is_empty() {
            let _ = writeln!(out, "    vars: {{}}");
        } else {
            write_vars(&mut out, "    ", vars);
        }
    }
    if written_groups == 0 {
        let _ = writeln!(out, "  {{}}");
    }

    // Hosts.
    let mut written_hosts = 0;
    let _ = writeln!(out, "hosts:");
    for h in &hosts {
        let conn = &conns[*h];
        if !valid_name(h) {
            let _ = writeln!(
                out,
                "  # host {} -- not imported: not a valid plumb host name; add it by hand under another name with `address:`",
                value(&Value::String((*h).clone()))
            );
            notes.push(format!("host `{h}` has a name plumb does not accept"));
            continue;
        }
        written_hosts += 1;
        let _ = writeln!(out, "  {}:", key(h));
        if let Some(a) = &conn.address {
            let _ = writeln!(out, "    address: {}", value(&Value::String(a.clone())));
        }
        let groups: Vec<String> = inv
            .sorted_groups(h)
            .into_iter()
            .filter(|g| valid_name(g))
            .collect();
        if !groups.is_empty() {
            let _ = writeln!(
                out,
                "    groups: [{}]",
                groups.iter().map(|g| key(g)).collect::<Vec<_>>().join(", ")
            );
        }
        if d_user.is_none()
            && let Some(u) = &conn.user
        {
            let _ = writeln!(out, "    ssh_user: {}", value(&Value::String(u.clone())));
        }
        if d_port.is_none()
            && let Some(p) = conn.port
        {
            let _ = writeln!(out, "    ssh_port: {p}");
        }
        if d_key.is_none()
            && let Some(k) = &conn.key
        {
            let _ = writeln!(out, "    ssh_key: {}", value(&Value::String(k.clone())));
        }
        if d_priv.is_none()
            && let Some(p) = conn.privilege
        {
            let _ = writeln!(out, "    privilege: {p}");
        }
        if d_jump.is_none()
            && let Some(j) = &conn.jump
        {
            let _ = writeln!(out, "    ssh_jump: {}", value(&Value::String(j.clone())));
        }
        if all_comments.is_none() {
            write_comments(&mut out, "    ", &conn.comments);
        }
        write_comments(&mut out, "    ", &host_comments[*h]);
        write_vars(&mut out, "    ", &host_vars[*h]);
    }
    if written_hosts == 0 {
        let _ = writeln!(out, "  {{}}");
    }
    Ok(Imported {
        text: out,
        hosts: written_hosts,
        groups: written_groups,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bastions_from_ssh_args() {
        assert_eq!(
            jump_from_args("-J admin@b1:2222").as_deref(),
            Some("admin@b1:2222")
        );
        assert_eq!(
            jump_from_args("-o ProxyJump=b1,b2 -C").as_deref(),
            Some("b1,b2")
        );
        assert_eq!(
            jump_from_args("-o ProxyCommand=\"ssh -W %h:%p -q -p 2200 ops@bastion\"").as_deref(),
            Some("ops@bastion:2200")
        );
        assert_eq!(jump_from_args("-o StrictHostKeyChecking=no"), None);
    }

    #[test]
    fn secrets_are_named_never_copied() {
        let mut vars = Map::new();
        vars.insert("ansible_password".into(), Value::String("hunter2".into()));
        vars.insert(
            "ansible_python_interpreter".into(),
            Value::String("/usr/bin/python3".into()),
        );
        let c = connection(&vars);
        let text = c.comments.join("\n");
        assert!(
            text.contains("ansible_password -- not imported: a secret"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("plumb needs no Python"), "{text}");
    }

    #[test]
    fn import_round_trips_through_plumbs_loader() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts.ini");
        std::fs::write(
            &p,
            "[web]\nweb[1:2] ansible_host=10.0.0.1 tuning=\"{'a': 1}\"\n[web:vars]\ntuning={'b': 2}\nhost=reserved\nansible_user=deploy\n[db]\ndb1 ansible_port=2222 ansible_become=yes\n",
        )
        .unwrap();
        let imported = super::super::import_file(&p).unwrap();
        let src = crate::model::inventory::parse_inventory(
            Path::new("hosts.yaml"),
            dir.path(),
            &imported.text,
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", imported.text));
        let inv = crate::model::inventory::resolve(&src, None)
            .unwrap_or_else(|e| panic!("{e}\n{}", imported.text));
        let web1 = inv.host("web1").unwrap();
        assert_eq!(web1.address, "10.0.0.1");
        assert_eq!(web1.user, "deploy");
        // Ansible: the host's mapping replaces the group's.
        assert_eq!(web1.vars["tuning"], serde_json::json!({"a": 1}));
        let db1 = inv.host("db1").unwrap();
        assert_eq!(db1.port, 2222);
        assert_eq!(db1.privilege, crate::model::inventory::Privilege::Sudo);
        assert!(
            imported
                .text
                .contains("var \"host\": \"reserved\" -- not imported"),
            "{}",
            imported.text
        );
    }
}
