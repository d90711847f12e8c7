//! YAML as Ansible reads it: PyYAML's YAML 1.1 resolution (`yes`/`on` are booleans, `0755` is
//! octal, `1_000` is 1000, `190:20:30` is sexagesimal, `1e3` is a string), merge keys (`<<`),
//! the last of duplicate keys winning, and Ansible's tags (`!vault` values are kept aside,
//! `!unsafe` is a string). Built on `saphyr-parser` events, with a line for every value.

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// The key of the object that stands for a vault-encrypted value: plumb cannot decrypt it and
/// must not lose it silently.
pub const VAULT_KEY: &str = "__plumb_ansible_vault__";

/// Most nodes one file may expand to through aliases.
const MAX_NODES: usize = 1_000_000;

/// A YAML value with the line it starts on.
#[derive(Clone, Debug)]
pub struct Node {
    /// 1-based line.
    pub line: usize,
    /// The value.
    pub value: NodeValue,
}

/// Content of a [`Node`].
#[derive(Clone, Debug)]
pub enum NodeValue {
    /// A resolved scalar.
    Scalar(Value),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with its keys as Ansible sees them (strings; other scalars as their JSON
    /// text), in order, the last duplicate winning.
    Map(Vec<(String, Node)>),
}

impl Node {
    /// The plain JSON value (vault values become `{VAULT_KEY: text}`).
    pub fn to_value(&self) -> Value {
        match &self.value {
            NodeValue::Scalar(v) => v.clone(),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            NodeValue::Map(entries) => {
                let mut m = Map::new();
                for (k, v) in entries {
                    m.insert(k.clone(), v.to_value());
                }
                Value::Object(m)
            }
        }
    }

    /// The mapping entries, if this is a mapping.
    pub fn as_map(&self) -> Option<&[(String, Node)]> {
        match &self.value {
            NodeValue::Map(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is null.
    pub fn is_null(&self) -> bool {
        matches!(self.value, NodeValue::Scalar(Value::Null))
    }
}

/// A YAML error with its line.
#[derive(Clone, Debug)]
pub struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

enum Frame {
    Seq(Node, usize),
    Map(Node, usize, Option<(String, usize)>, Vec<(String, Node)>),
}

/// Parses the first document of `text` (`None` for an empty file).
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut done: Option<Node> = None;
    let mut nodes = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlError {
            line: e.marker().line(),
            message: e.info().to_string(),
        })?;
        let line = span.start.line();
        let node = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = resolve_scalar(&text, style, tag.as_deref())
                    .map_err(|message| YamlError { line, message })?;
                Some((
                    Node {
                        line,
                        value: NodeValue::Scalar(value),
                    },
                    anchor,
                ))
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq(
                    Node {
                        line,
                        value: NodeValue::Seq(Vec::new()),
                    },
                    anchor,
                ));
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(
                    Node {
                        line,
                        value: NodeValue::Map(Vec::new()),
                    },
                    anchor,
                    None,
                    Vec::new(),
                ));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(node, anchor)) => Some((node, anchor)),
                _ => {
                    return Err(YamlError {
                        line,
                        message: "unbalanced sequence end".into(),
                    });
                }
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(mut node, anchor, _, merges)) => {
                    // Merge keys: entries written in the mapping win over merged ones.
                    if let NodeValue::Map(entries) = &mut node.value {
                        for (k, v) in merges {
                            if !entries.iter().any(|(e, _)| *e == k) {
                                entries.push((k, v));
                            }
                        }
                    }
                    Some((node, anchor))
                }
                _ => {
                    return Err(YamlError {
                        line,
                        message: "unbalanced mapping end".into(),
                    });
                }
            },
            Event::Alias(id) => {
                let Some(node) = anchors.get(&id).cloned() else {
                    return Err(YamlError {
                        line,
                        message: "alias to an unknown anchor".into(),
                    });
                };
                nodes += count(&node);
                if nodes > MAX_NODES {
                    return Err(YamlError {
                        line,
                        message: format!("aliases expand beyond {MAX_NODES} nodes; refusing"),
                    });
                }
                Some((node, 0))
            }
            Event::DocumentEnd => {
                if done.is_some() {
                    break;
                }
                None
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::Nothing => {
                None
            }
        };
        let Some((node, anchor)) = node else {
            continue;
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(YamlError {
                line,
                message: format!("more than {MAX_NODES} nodes; refusing"),
            });
        }
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => {
                if done.is_none() {
                    done = Some(node);
                }
            }
            Some(Frame::Seq(seq, _)) => {
                if let NodeValue::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map(map, _, pending, merges)) => match pending.take() {
                None => {
                    let key = match &node.value {
                        NodeValue::Scalar(Value::String(s)) => s.clone(),
                        NodeValue::Scalar(Value::Null) => "null".into(),
                        NodeValue::Scalar(other) => other.to_string(),
                        _ => {
                            return Err(YamlError {
                                line: node.line,
                                message: "a mapping or sequence as a key is not supported".into(),
                            });
                        }
                    };
                    *pending = Some((key, node.line));
                }
                Some((key, key_line)) => {
                    if key == "<<" {
                        // `<<: *a` or `<<: [*a, *b]` (earlier ones win).
                        let sources: Vec<&Node> = match &node.value {
                            NodeValue::Map(_) => vec![&node],
                            NodeValue::Seq(items) => items.iter().collect(),
                            _ => {
                                return Err(YamlError {
                                    line: key_line,
                                    message: "`<<` must merge a mapping or a list of mappings"
                                        .into(),
                                });
                            }
                        };
                        for s in sources {
                            let Some(entries) = s.as_map() else {
                                return Err(YamlError {
                                    line: key_line,
                                    message: "`<<` must merge mappings".into(),
                                });
                            };
                            for (k, v) in entries {
                                if !merges.iter().any(|(m, _)| m == k) {
                                    merges.push((k.clone(), v.clone()));
                                }
                            }
                        }
                        continue;
                    }
                    if let NodeValue::Map(entries) = &mut map.value {
                        // PyYAML keeps the last of duplicate keys (Ansible warns).
                        entries.retain(|(k, _)| *k != key);
                        entries.push((key, node));
                    }
                }
            },
        }
    }
    Ok(done)
}

fn count(n: &Node) -> usize {
    match &n.value {
        NodeValue::Scalar(_) => 1,
        NodeValue::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        NodeValue::Map(e) => 1 + e.iter().map(|(_, v)| 1 + count(v)).sum::<usize>(),
    }
}

fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if let Some(tag) = tag {
        let core = tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!";
        match (core, tag.suffix.as_str()) {
            (false, "vault") => {
                let mut m = Map::new();
                m.insert(VAULT_KEY.into(), Value::String(text.to_string()));
                return Ok(Value::Object(m));
            }
            (false, "unsafe") | (true, "str") => return Ok(Value::String(text.to_string())),
            (true, "int") | (true, "float") | (true, "bool") | (true, "null") => {
                let v = resolve_plain(text);
                let ok = match tag.suffix.as_str() {
                    "int" => v.is_i64() || v.is_u64(),
                    "float" => v.is_number(),
                    "bool" => v.is_boolean(),
                    _ => v.is_null(),
                };
                if !ok {
                    return Err(format!("`{text}` is not a valid !!{}", tag.suffix));
                }
                return Ok(if tag.suffix == "float" {
                    v.as_f64()
                        .and_then(Number::from_f64)
                        .map_or(v, Value::Number)
                } else {
                    v
                });
            }
            _ => {
                return Err(format!("unsupported tag `{}{}`", tag.handle, tag.suffix));
            }
        }
    }
    if !matches!(style, ScalarStyle::Plain) {
        return Ok(Value::String(text.to_string()));
    }
    Ok(resolve_plain(text))
}

/// PyYAML's implicit resolvers (YAML 1.1).
pub fn resolve_plain(t: &str) -> Value {
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Value::Bool(true);
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            // JSON has no infinity or NaN; Ansible's JSON prints them as such strings too.
            return Value::String(t.to_string());
        }
        _ => {}
    }
    if let Some(v) = yaml11_int(t) {
        return v;
    }
    if let Some(f) = yaml11_float(t) {
        return Number::from_f64(f).map_or_else(|| Value::String(t.to_string()), Value::Number);
    }
    Value::String(t.to_string())
}

fn int_value(negative: bool, magnitude: u128) -> Option<Value> {
    if negative {
        let v = i64::try_from(magnitude).ok()?;
        Some(Value::from(-v))
    } else {
        u64::try_from(magnitude).ok().map(Value::from)
    }
}

fn yaml11_int(t: &str) -> Option<Value> {
    let (negative, body) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if body.is_empty() {
        return None;
    }
    let digits = |s: &str, radix: u32| -> Option<u128> {
        let clean: String = s.chars().filter(|c| *c != '_').collect();
        if clean.is_empty() {
            return None;
        }
        u128::from_str_radix(&clean, radix).ok()
    };
    if let Some(b) = body.strip_prefix("0b") {
        if b.chars().all(|c| c == '0' || c == '1' || c == '_') {
            return int_value(negative, digits(b, 2)?);
        }
        return None;
    }
    if let Some(x) = body.strip_prefix("0x") {
        if x.chars().all(|c| c.is_ascii_hexdigit() || c == '_') {
            return int_value(negative, digits(x, 16)?);
        }
        return None;
    }
    if body == "0" {
        return Some(Value::from(0));
    }
    if let Some(o) = body.strip_prefix('0') {
        if o.chars().all(|c| ('0'..='7').contains(&c) || c == '_') {
            return int_value(negative, digits(o, 8)?);
        }
        return None;
    }
    let first = body.chars().next()?;
    if !('1'..='9').contains(&first) {
        return None;
    }
    if body.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return int_value(negative, digits(body, 10)?);
    }
    // Sexagesimal: 190:20:30.
    let mut parts = body.split(':');
    let head = parts.next()?;
    if !head.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    let mut total = digits(head, 10)?;
    let mut any = false;
    for p in parts {
        any = true;
        if p.is_empty() || p.len() > 2 || !p.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let v: u128 = p.parse().ok()?;
        if p.len() == 2 && v > 59 {
            return None;
        }
        total = total.checked_mul(60)?.checked_add(v)?;
    }
    if !any {
        return None;
    }
    int_value(negative, total)
}

fn yaml11_float(t: &str) -> Option<f64> {
    let body = t.strip_prefix(['-', '+']).unwrap_or(t);
    let negative = t.starts_with('-');
    let sign = if negative { -1.0 } else { 1.0 };
    // [0-9][0-9_]*\.[0-9_]*([eE][-+][0-9]+)? or \.[0-9_]+([eE][-+][0-9]+)? (no sign for the
    // latter in PyYAML, but a leading sign is accepted by the first form only).
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    if let Some(e) = exponent {
        let digits = e.strip_prefix(['-', '+'])?;
        if !(e.starts_with('-') || e.starts_with('+'))
            || digits.is_empty()
            || !digits.chars().all(|c| c.is_ascii_digit())
        {
            return None;
        }
    }
    if mantissa.contains(':') {
        // Sexagesimal float: 190:20:30.15
        if exponent.is_some() {
            return None;
        }
        let (int_part, frac) = mantissa.split_once('.')?;
        let v = yaml11_int(int_part)?;
        let whole = v.as_f64()?;
        let frac: String = frac.chars().filter(|c| *c != '_').collect();
        let f: f64 = if frac.is_empty() {
            0.0
        } else {
            format!("0.{frac}").parse().ok()?
        };
        return Some(sign * (whole + f));
    }
    let (int_part, frac) = mantissa.split_once('.')?;
    if int_part.is_empty() {
        if negative || t.starts_with('+') || frac.is_empty() {
            return None;
        }
    } else if !int_part.starts_with(|c: char| c.is_ascii_digit())
        || !int_part.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return None;
    }
    if !frac.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    let clean: String = format!(
        "{}.{}{}",
        if int_part.is_empty() { "0" } else { int_part },
        if frac.is_empty() { "0" } else { frac },
        exponent.map(|e| format!("e{e}")).unwrap_or_default()
    )
    .chars()
    .filter(|c| *c != '_')
    .collect();
    clean.parse::<f64>().ok().map(|f| sign * f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pyyaml_scalars() {
        let cases = [
            ("yes", json!(true)),
            ("Off", json!(false)),
            ("0755", json!(493)),
            ("0x1F", json!(31)),
            ("1_000", json!(1000)),
            ("190:20:30", json!(685230)),
            ("1e3", json!("1e3")),
            ("1.5e+3", json!(1500.0)),
            ("1.", json!(1.0)),
            (".5", json!(0.5)),
            ("-7", json!(-7)),
            ("08", json!("08")),
            ("~", Value::Null),
            ("2001-12-14", json!("2001-12-14")),
            ("y", json!("y")),
        ];
        for (text, want) in cases {
            assert_eq!(resolve_plain(text), want, "{text}");
        }
    }

    #[test]
    fn tags_merges_and_lines() {
        let doc = "base: &b {a: 1, b: 2}\nx:\n  <<: *b\n  b: 3\ns: !unsafe '{{ x }}'\nv: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\nq: 'yes'\n";
        let n = parse(doc).unwrap().unwrap();
        let v = n.to_value();
        assert_eq!(v["x"], json!({"b": 3, "a": 1}));
        assert_eq!(v["s"], json!("{{ x }}"));
        assert!(
            v["v"][VAULT_KEY]
                .as_str()
                .unwrap()
                .starts_with("$ANSIBLE_VAULT")
        );
        assert_eq!(v["q"], json!("yes"));
        let m = n.as_map().unwrap();
        assert_eq!(m.iter().find(|(k, _)| k == "s").unwrap().1.line, 5);
    }

    #[test]
    fn errors_have_lines() {
        let e = parse("a: 1\nb: [\n").unwrap_err();
        assert!(e.line >= 2, "{e:?}");
        let e = parse("a: !nope x\n").unwrap_err();
        assert!(e.message.contains("unsupported tag"), "{e:?}");
    }
}
