//! An Ansible inventory as Ansible builds it (ansible-core 2.19's `InventoryData`, `Group`,
//! `Host`, the `ini` and `yaml` inventory plugins and the `host_group_vars` vars plugin), and
//! each host's variables merged the way `ansible-inventory --list` merges them.

use super::ImportError;
use super::pyliteral::{parse_value, shlex_split};
use super::yaml11::{self, Node, NodeValue};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A group.
#[derive(Clone, Debug, Default)]
pub struct Group {
    /// Vars set in the inventory source.
    pub vars: Map<String, Value>,
    /// Child groups, in the order added.
    pub children: Vec<String>,
    /// Parent groups.
    pub parents: Vec<String>,
    /// Hosts added to this group directly, in order.
    pub hosts: Vec<String>,
    /// `ansible_group_priority` (default 1).
    pub priority: i64,
}

/// A host.
#[derive(Clone, Debug, Default)]
pub struct Host {
    /// Vars set in the inventory source (including `ansible_port` from `host:port`).
    pub vars: Map<String, Value>,
    /// Groups it was added to directly.
    pub groups: Vec<String>,
}

/// The inventory.
#[derive(Clone, Debug)]
pub struct Inventory {
    /// Groups by name (`all` and `ungrouped` always exist).
    pub groups: BTreeMap<String, Group>,
    /// Hosts by name.
    pub hosts: BTreeMap<String, Host>,
    /// Host names in the order first seen.
    pub host_order: Vec<String>,
    /// `group_vars/` files' data by group, `host_vars/` by host.
    pub group_files: BTreeMap<String, Map<String, Value>>,
    /// `host_vars/` data by host.
    pub host_files: BTreeMap<String, Map<String, Value>>,
    /// The files that gave variables, for the header.
    pub var_files: Vec<PathBuf>,
}

impl Inventory {
    fn new() -> Inventory {
        let mut inv = Inventory {
            groups: BTreeMap::new(),
            hosts: BTreeMap::new(),
            host_order: Vec::new(),
            group_files: BTreeMap::new(),
            host_files: BTreeMap::new(),
            var_files: Vec::new(),
        };
        inv.add_group("all");
        inv.add_group("ungrouped");
        // As InventoryData does: ungrouped is a child of all from the start.
        let _ = inv.add_child_group("all", "ungrouped", 0);
        inv
    }

    fn add_group(&mut self, name: &str) {
        self.groups
            .entry(name.to_string())
            .or_insert_with(|| Group {
                priority: 1,
                ..Group::default()
            });
    }

    /// `add_host(name, group, port)`: the port only applies to a new host.
    fn add_host(&mut self, name: &str, group: &str, port: Option<u16>) {
        if !self.hosts.contains_key(name) {
            let mut h = Host::default();
            if let Some(p) = port {
                h.vars.insert("ansible_port".into(), Value::from(p));
            }
            self.hosts.insert(name.to_string(), h);
            self.host_order.push(name.to_string());
        }
        if let Some(g) = self.groups.get_mut(group)
            && !g.hosts.iter().any(|h| h == name)
        {
            g.hosts.push(name.to_string());
        }
        if let Some(h) = self.hosts.get_mut(name)
            && !h.groups.iter().any(|g| g == group)
        {
            h.groups.push(group.to_string());
        }
    }

    fn add_child_group(&mut self, parent: &str, child: &str, line: usize) -> Result<(), String> {
        if parent == child || self.ancestors(parent).contains(child) {
            return Err(format!(
                "adding group `{child}` as a child of `{parent}` creates a loop (line {line})"
            ));
        }
        if let Some(p) = self.groups.get_mut(parent)
            && !p.children.iter().any(|c| c == child)
        {
            p.children.push(child.to_string());
        }
        if let Some(c) = self.groups.get_mut(child)
            && !c.parents.iter().any(|p| p == parent)
        {
            c.parents.push(parent.to_string());
        }
        Ok(())
    }

    fn set_group_var(&mut self, group: &str, key: &str, value: Value) {
        if let Some(g) = self.groups.get_mut(group) {
            if key == "ansible_group_priority" {
                // Group.set_variable: the priority, not a variable.
                if let Some(p) = value
                    .as_i64()
                    .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                {
                    g.priority = p;
                }
                return;
            }
            g.vars.insert(key.to_string(), value);
        }
    }

    fn set_host_var(&mut self, host: &str, key: &str, value: Value) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.vars.insert(key.to_string(), value);
        }
    }

    /// Every ancestor of a group (not itself).
    pub fn ancestors(&self, group: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![group.to_string()];
        while let Some(g) = todo.pop() {
            if let Some(grp) = self.groups.get(&g) {
                for p in &grp.parents {
                    if out.insert(p.clone()) {
                        todo.push(p.clone());
                    }
                }
            }
        }
        out
    }

    /// `reconcile_inventory`: parentless groups become children of `all`; hosts in no group
    /// but `all` join `ungrouped`; hosts in another group leave `ungrouped`.
    fn reconcile(&mut self) {
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for g in names {
            if g != "all" && self.groups[&g].parents.is_empty() {
                let _ = self.add_child_group("all", &g, 0);
            }
        }
        let hosts: Vec<String> = self.host_order.clone();
        for h in hosts {
            let groups = self.host_groups_with_all(&h);
            let others = groups
                .iter()
                .filter(|g| *g != "all" && *g != "ungrouped")
                .count();
            if groups.contains("ungrouped") {
                if others > 0 {
                    if let Some(g) = self.groups.get_mut("ungrouped") {
                        g.hosts.retain(|x| *x != h);
                    }
                    if let Some(host) = self.hosts.get_mut(&h) {
                        host.groups.retain(|g| g != "ungrouped");
                    }
                }
            } else if others == 0 {
                self.add_host(&h, "ungrouped", None);
            }
        }
    }

    fn host_groups_with_all(&self, host: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if let Some(h) = self.hosts.get(host) {
            for g in &h.groups {
                out.insert(g.clone());
                out.extend(self.ancestors(g));
            }
        }
        out
    }

    /// A group's depth: the longest path from `all`.
    pub fn depth(&self, group: &str) -> usize {
        fn walk(inv: &Inventory, g: &str, memo: &mut BTreeMap<String, usize>) -> usize {
            if let Some(d) = memo.get(g) {
                return *d;
            }
            let d = match inv.groups.get(g) {
                Some(grp) if !grp.parents.is_empty() => grp
                    .parents
                    .iter()
                    .map(|p| walk(inv, p, memo) + 1)
                    .max()
                    .unwrap_or(0),
                _ => 0,
            };
            memo.insert(g.to_string(), d);
            d
        }
        walk(self, group, &mut BTreeMap::new())
    }

    /// The groups of a host (with their ancestors, without `all`) in Ansible's precedence order:
    /// by depth, then priority, then name; later ones win.
    pub fn sorted_groups(&self, host: &str) -> Vec<String> {
        let mut groups: Vec<String> = self
            .host_groups_with_all(host)
            .into_iter()
            .filter(|g| g != "all")
            .collect();
        groups.sort_by(|a, b| {
            let key = |g: &String| {
                (
                    self.depth(g),
                    self.groups.get(g).map_or(1, |x| x.priority),
                    g.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        groups
    }

    /// Every host of a group, its children's included.
    pub fn members(&self, group: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![group.to_string()];
        let mut seen = BTreeSet::new();
        while let Some(g) = todo.pop() {
            if !seen.insert(g.clone()) {
                continue;
            }
            if let Some(grp) = self.groups.get(&g) {
                out.extend(grp.hosts.iter().cloned());
                todo.extend(grp.children.iter().cloned());
            }
        }
        out
    }

    /// A host's variables as `ansible-inventory --list` prints them: `all`'s inventory vars,
    /// the groups' inventory vars in precedence order, `group_vars/all`, the groups'
    /// `group_vars`, the host's inventory vars, its `host_vars`; each layer replaces top-level
    /// keys (Ansible's default `hash_behaviour = replace`).
    pub fn host_vars(&self, host: &str) -> Map<String, Value> {
        let groups = self.sorted_groups(host);
        let mut v = Map::new();
        let mut layer = |m: Option<&Map<String, Value>>| {
            if let Some(m) = m {
                for (k, x) in m {
                    v.insert(k.clone(), x.clone());
                }
            }
        };
        layer(self.groups.get("all").map(|g| &g.vars));
        for g in &groups {
            layer(self.groups.get(g).map(|g| &g.vars));
        }
        layer(self.group_files.get("all"));
        for g in &groups {
            layer(self.group_files.get(g));
        }
        layer(self.hosts.get(host).map(|h| &h.vars));
        layer(self.host_files.get(host));
        v
    }
}

/// Reads an inventory file (INI or YAML, chosen like Ansible's `auto` order: YAML for `.yml`,
/// `.yaml`, `.json` or a file that parses as a YAML mapping of groups; INI otherwise), then
/// `group_vars/` and `host_vars/` beside it.
pub fn load(path: &Path) -> Result<Inventory, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ImportError {
        file: path.to_path_buf(),
        line: 0,
        message: format!("cannot read it: {e}"),
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut inv = Inventory::new();
    let yaml_ext = matches!(ext.as_str(), "yml" | "yaml" | "json");
    if yaml_ext || (ext.is_empty() && looks_like_yaml(&text)) {
        parse_yaml(&mut inv, path, &text)?;
    } else {
        parse_ini(&mut inv, path, &text)?;
    }
    inv.reconcile();
    let dir = path.parent().unwrap_or(Path::new("."));
    load_var_dirs(&mut inv, dir)?;
    Ok(inv)
}

fn looks_like_yaml(text: &str) -> bool {
    matches!(yaml11::parse(text), Ok(Some(n)) if n.as_map().is_some_and(|m| m.iter().all(|(_, v)| v.as_map().is_some() || v.is_null())))
        && !text.lines().any(|l| l.trim_start().starts_with('['))
}

// ----------------------------------------------------------------------- INI --

fn parse_ini(inv: &mut Inventory, path: &Path, text: &str) -> Result<(), ImportError> {
    let err = |line: usize, message: String| ImportError {
        file: path.to_path_buf(),
        line,
        message,
    };
    // (state, parents) of groups named before they were declared.
    let mut pending: BTreeMap<String, (usize, &'static str, Vec<String>)> = BTreeMap::new();
    let mut group = "ungrouped".to_string();
    let mut state = "hosts";
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some((name, tag)) = section(line) {
            let tag = tag.unwrap_or("hosts");
            let tag: &'static str = match tag {
                "hosts" => "hosts",
                "children" => "children",
                "vars" => "vars",
                other => {
                    return Err(err(
                        n,
                        format!("section [{name}:{other}] has unknown type: {other}"),
                    ));
                }
            };
            if !inv.groups.contains_key(&name) {
                if tag == "vars" && !pending.contains_key(&name) {
                    pending.insert(name.clone(), (n, "vars", Vec::new()));
                }
                inv.add_group(&name);
            }
            if tag != "vars"
                && let Some((_, st, _)) = pending.get(&name)
            {
                if *st == "children" {
                    add_pending_children(inv, &name, &mut pending).map_err(|m| err(n, m))?;
                } else {
                    pending.remove(&name);
                }
            }
            group = name;
            state = tag;
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            return Err(err(
                n,
                format!(
                    "invalid section entry `{line}`: no spaces or other characters allowed in it"
                ),
            ));
        }
        match state {
            "hosts" => {
                let tokens = shlex_split(line).map_err(|e| err(n, format!("host line: {e}")))?;
                let Some(first) = tokens.first() else {
                    continue;
                };
                let (names, port) = expand_host_pattern(first).map_err(|m| err(n, m))?;
                if first.trim().ends_with(':') && port.is_none() {
                    return Err(err(
                        n,
                        format!("invalid host pattern `{first}`: it ends with `:`"),
                    ));
                }
                let mut vars = Vec::new();
                for t in &tokens[1..] {
                    let Some((k, v)) = t.split_once('=') else {
                        return Err(err(
                            n,
                            format!("expected key=value host variable assignment, got `{t}`"),
                        ));
                    };
                    vars.push((k.to_string(), parse_value(v)));
                }
                for h in names {
                    inv.add_host(&h, &group, port);
                    for (k, v) in &vars {
                        inv.set_host_var(&h, k, v.clone());
                    }
                }
            }
            "vars" => {
                let Some((k, v)) = line.split_once('=') else {
                    return Err(err(n, format!("expected key=value, got `{line}`")));
                };
                inv.set_group_var(&group, k.trim(), parse_value(v.trim()));
            }
            _ => {
                let child = group_name(line)
                    .ok_or_else(|| err(n, format!("expected a group name, got `{line}`")))?;
                if !inv.groups.contains_key(&child) {
                    pending
                        .entry(child.clone())
                        .and_modify(|p| p.2.push(group.clone()))
                        .or_insert((n, "children", vec![group.clone()]));
                } else {
                    inv.add_child_group(&group, &child, n)
                        .map_err(|m| err(n, m))?;
                }
            }
        }
    }
    if let Some((name, (line, st, parents))) = pending.into_iter().next() {
        return Err(err(
            line,
            if st == "vars" {
                format!("section [{name}:vars] is for a group that is never declared")
            } else {
                format!(
                    "section [{}:children] includes undefined group `{name}`",
                    parents.last().cloned().unwrap_or_default()
                )
            },
        ));
    }
    Ok(())
}

fn add_pending_children(
    inv: &mut Inventory,
    group: &str,
    pending: &mut BTreeMap<String, (usize, &'static str, Vec<String>)>,
) -> Result<(), String> {
    let Some((line, _, parents)) = pending.remove(group) else {
        return Ok(());
    };
    for parent in parents {
        inv.add_child_group(&parent, group, line)?;
        if pending.get(&parent).is_some_and(|p| p.1 == "children") {
            add_pending_children(inv, &parent, pending)?;
        }
    }
    Ok(())
}

/// `[name]`, `[name:tag]`, with an optional trailing comment.
fn section(line: &str) -> Option<(String, Option<&str>)> {
    let rest = line.strip_prefix('[')?;
    let end = rest.find(']')?;
    let inner = &rest[..end];
    let after = rest[end + 1..].trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        return None;
    }
    let (name, tag) = match inner.split_once(':') {
        Some((n, t)) => (n, Some(t)),
        None => (inner, None),
    };
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == ':' || c == ']')
    {
        return None;
    }
    if let Some(t) = tag
        && (t.is_empty() || !t.chars().all(|c| c.is_alphanumeric() || c == '_'))
    {
        return None;
    }
    Some((name.to_string(), tag))
}

fn group_name(line: &str) -> Option<String> {
    let end = line
        .find(|c: char| c.is_whitespace() || c == ':' || c == ']' || c == '#')
        .unwrap_or(line.len());
    let name = &line[..end];
    let rest = line[end..].trim_start();
    (!name.is_empty() && (rest.is_empty() || rest.starts_with('#'))).then(|| name.to_string())
}

// ---------------------------------------------------------------------- YAML --

fn parse_yaml(inv: &mut Inventory, path: &Path, text: &str) -> Result<(), ImportError> {
    let err = |line: usize, message: String| ImportError {
        file: path.to_path_buf(),
        line,
        message,
    };
    let root = yaml11::parse(text)
        .map_err(|e| err(e.line, format!("YAML: {}", e.message)))?
        .ok_or_else(|| err(1, "empty YAML file".into()))?;
    let Some(groups) = root.as_map() else {
        return Err(err(
            root.line,
            "a YAML inventory is a mapping of groups".into(),
        ));
    };
    if groups.iter().any(|(k, _)| k == "plugin") {
        return Err(err(
            root.line,
            "this is an inventory plugin configuration, not an inventory; run `ansible-inventory -i FILE --list -y > inventory.yml` and import that"
                .into(),
        ));
    }
    for (name, data) in groups {
        yaml_group(inv, path, name, data)?;
    }
    Ok(())
}

fn yaml_group(
    inv: &mut Inventory,
    path: &Path,
    name: &str,
    data: &Node,
) -> Result<String, ImportError> {
    let err = |line: usize, message: String| ImportError {
        file: path.to_path_buf(),
        line,
        message,
    };
    inv.add_group(name);
    if data.is_null() {
        return Ok(name.to_string());
    }
    let Some(sections) = data.as_map() else {
        return Err(err(
            data.line,
            format!("group `{name}` must be a mapping (hosts, vars, children)"),
        ));
    };
    for (key, value) in sections {
        // A string where a mapping is expected names one entry.
        let single;
        let value: &Node = match (&value.value, key.as_str()) {
            (NodeValue::Scalar(Value::String(s)), "vars" | "children" | "hosts") => {
                single = Node {
                    line: value.line,
                    value: NodeValue::Map(vec![(
                        s.clone(),
                        Node {
                            line: value.line,
                            value: NodeValue::Scalar(Value::Null),
                        },
                    )]),
                };
                &single
            }
            _ => value,
        };
        if value.is_null() {
            continue;
        }
        let Some(entries) = value.as_map() else {
            return Err(err(
                value.line,
                format!("`{key}` of group `{name}` must be a mapping"),
            ));
        };
        match key.as_str() {
            "vars" => {
                for (k, v) in entries {
                    inv.set_group_var(name, k, v.to_value());
                }
            }
            "children" => {
                for (child, cdata) in entries {
                    let child = yaml_group(inv, path, child, cdata)?;
                    inv.add_child_group(name, &child, cdata.line)
                        .map_err(|m| err(cdata.line, m))?;
                }
            }
            "hosts" => {
                for (pattern, hdata) in entries {
                    let (names, port) =
                        expand_host_pattern(pattern).map_err(|m| err(hdata.line, m))?;
                    let vars = match &hdata.value {
                        NodeValue::Scalar(Value::Null) => Vec::new(),
                        NodeValue::Map(m) => {
                            m.iter().map(|(k, v)| (k.clone(), v.to_value())).collect()
                        }
                        _ => {
                            return Err(err(
                                hdata.line,
                                format!("host `{pattern}` must map to its variables"),
                            ));
                        }
                    };
                    for h in names {
                        inv.add_host(&h, name, port);
                        for (k, v) in &vars {
                            inv.set_host_var(&h, k, v.clone());
                        }
                    }
                }
            }
            other => {
                return Err(err(
                    value.line,
                    format!(
                        "unexpected key `{other}` in group `{name}` (only hosts, vars and children)"
                    ),
                ));
            }
        }
    }
    Ok(name.to_string())
}

// ------------------------------------------------------------ host patterns --

/// `parse_address(pattern, allow_ranges=True)` then range expansion. A pattern that is not a
/// valid address stays whole, without a port, as in Ansible.
pub fn expand_host_pattern(pattern: &str) -> Result<(Vec<String>, Option<u16>), String> {
    let (host, port) = split_port(pattern).unwrap_or((pattern.to_string(), None));
    let names = if host.contains('[') {
        expand_ranges(&host)?
    } else {
        vec![host]
    };
    Ok((names, port))
}

fn split_port(p: &str) -> Option<(String, Option<u16>)> {
    // [host]:port
    if let Some(inner) = p.strip_prefix('[')
        && let Some((h, port)) = inner.rsplit_once("]:")
        && !port.is_empty()
        && port.chars().all(|c| c.is_ascii_digit())
    {
        return Some((h.to_string(), Some(port.parse().ok()?)));
    }
    // host:port, where host has no `:` outside brackets.
    let mut depth = 0;
    let mut colon = None;
    for (i, c) in p.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => {
                if colon.is_some() {
                    return Some((p.to_string(), None));
                }
                colon = Some(i);
            }
            _ => {}
        }
    }
    match colon {
        Some(i) if p[i + 1..].chars().all(|c| c.is_ascii_digit()) && i + 1 < p.len() => {
            Some((p[..i].to_string(), Some(p[i + 1..].parse().ok()?)))
        }
        _ => Some((p.to_string(), None)),
    }
}

/// `expand_hostname_range`: `db[01:10:3]-[a:c]`.
fn expand_ranges(line: &str) -> Result<Vec<String>, String> {
    let Some(open) = line.find('[') else {
        return Ok(vec![line.to_string()]);
    };
    let Some(close_rel) = line[open..].find(']') else {
        return Err(format!("host range `{line}` has no closing ]"));
    };
    let close = open + close_rel;
    let (head, range, tail) = (&line[..open], &line[open + 1..close], &line[close + 1..]);
    let bounds: Vec<&str> = range.split(':').collect();
    if bounds.len() != 2 && bounds.len() != 3 {
        return Err("host range must be begin:end or begin:end:step".into());
    }
    let beg = if bounds[0].is_empty() { "0" } else { bounds[0] };
    let end = bounds[1];
    if end.is_empty() {
        return Err("host range must specify an end value".into());
    }
    let step: usize = match bounds.get(2) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("host range step `{s}` is not a number"))?,
        None => 1,
    };
    if step == 0 {
        return Err("host range step must not be 0".into());
    }
    let width = if beg.starts_with('0') && beg.len() > 1 {
        if beg.len() != end.len() {
            return Err("host range must specify equal-length begin and end formats".into());
        }
        Some(beg.len())
    } else {
        None
    };
    const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let seq: Vec<String> = match (LETTERS.find(beg), LETTERS.find(end)) {
        (Some(b), Some(e)) if beg.len() == 1 && end.len() == 1 => {
            if b > e {
                return Err("host range must have begin <= end".into());
            }
            LETTERS[b..=e]
                .chars()
                .step_by(step)
                .map(|c| c.to_string())
                .collect()
        }
        _ => {
            let b: u64 = beg
                .parse()
                .map_err(|_| format!("host range begin `{beg}` is not a number"))?;
            let e: u64 = end
                .parse()
                .map_err(|_| format!("host range end `{end}` is not a number"))?;
            if e.saturating_sub(b) > 100_000 {
                return Err("host range expands to more than 100000 hosts".into());
            }
            (b..=e)
                .step_by(step)
                .map(|x| match width {
                    Some(w) => format!("{x:0w$}"),
                    None => x.to_string(),
                })
                .collect()
        }
    };
    let mut out = Vec::new();
    for s in seq {
        let name = format!("{head}{s}{tail}");
        if name.contains('[') {
            out.extend(expand_ranges(&name)?);
        } else {
            out.push(name);
        }
    }
    Ok(out)
}

// ------------------------------------------------------- group_vars/host_vars --

fn load_var_dirs(inv: &mut Inventory, dir: &Path) -> Result<(), ImportError> {
    let groups: Vec<String> = inv.groups.keys().cloned().collect();
    for g in groups {
        if let Some((data, files)) = load_vars_for(&dir.join("group_vars"), &g)? {
            inv.group_files.insert(g, data);
            inv.var_files.extend(files);
        }
    }
    let hosts: Vec<String> = inv.host_order.clone();
    for h in hosts {
        if h.starts_with('/') {
            continue;
        }
        if let Some((data, files)) = load_vars_for(&dir.join("host_vars"), &h)? {
            inv.host_files.insert(h, data);
            inv.var_files.extend(files);
        }
    }
    Ok(())
}

/// `find_vars_files`: `NAME`, `NAME.yml`, `NAME.yaml`, `NAME.json`, the first that exists; a
/// folder gives all its files (sorted, recursively, hidden and backup files skipped).
#[allow(clippy::type_complexity)]
fn load_vars_for(
    dir: &Path,
    name: &str,
) -> Result<Option<(Map<String, Value>, Vec<PathBuf>)>, ImportError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    const EXTS: [&str; 3] = [".yml", ".yaml", ".json"];
    let mut found = Vec::new();
    for ext in ["", ".yml", ".yaml", ".json"] {
        let p = dir.join(format!("{name}{ext}"));
        if p.exists() {
            if p.is_dir() {
                collect_dir(&p, &EXTS, &mut found);
            } else {
                found.push(p);
            }
            break;
        }
    }
    if found.is_empty() {
        return Ok(None);
    }
    let mut data = Map::new();
    for f in &found {
        let text = std::fs::read_to_string(f).map_err(|e| ImportError {
            file: f.clone(),
            line: 0,
            message: format!("cannot read it: {e}"),
        })?;
        let node = yaml11::parse(&text).map_err(|e| ImportError {
            file: f.clone(),
            line: e.line,
            message: format!("YAML: {}", e.message),
        })?;
        match node.map(|n| n.to_value()) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    data.insert(k, v);
                }
            }
            Some(_) => {
                return Err(ImportError {
                    file: f.clone(),
                    line: 1,
                    message: "a vars file must be a mapping".into(),
                });
            }
        }
    }
    Ok(Some((data, found)))
}

fn collect_dir(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        if n.starts_with('.') || n.ends_with('~') {
            continue;
        }
        let p = dir.join(&n);
        let ext = Path::new(&n)
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        if p.is_dir() && ext.is_empty() {
            collect_dir(&p, exts, out);
        } else if p.is_file() && (ext.is_empty() || exts.contains(&ext.as_str())) {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            expand_ranges("web[01:03]").unwrap(),
            ["web01", "web02", "web03"]
        );
        assert_eq!(
            expand_ranges("db[1:5:2]-[a:b]").unwrap(),
            ["db1-a", "db1-b", "db3-a", "db3-b", "db5-a", "db5-b"]
        );
        assert!(expand_ranges("x[01:3]").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(
            expand_host_pattern("db1:2222").unwrap(),
            (vec!["db1".to_string()], Some(2222))
        );
        assert_eq!(
            expand_host_pattern("[::1]:22").unwrap(),
            (vec!["::1".to_string()], Some(22))
        );
        assert_eq!(
            expand_host_pattern("web[1:2]:22").unwrap(),
            (vec!["web1".to_string(), "web2".to_string()], Some(22))
        );
    }

    #[test]
    fn ini_children_pending_and_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        std::fs::write(
            &p,
            "[prod:children]\nweb\n[web]\nw1 x=1\n[web:vars]\nx=2\ny=web\n[prod:vars]\ny=prod\nz=prod\n[all:vars]\nz=all\n",
        )
        .unwrap();
        let inv = load(&p).unwrap();
        assert_eq!(inv.sorted_groups("w1"), ["prod", "web"]);
        let v = inv.host_vars("w1");
        assert_eq!(v["x"], 1);
        assert_eq!(v["y"], "web");
        assert_eq!(v["z"], "prod");
        assert!(inv.members("prod").contains("w1"));
    }
}
