//! YAML with positions: a small spanned node tree built from `saphyr-parser` events, and a serde
//! deserializer over it ([`de`]) that reports every error with line, column and field path.
//!
//! Why not deserialize straight from text: validation after parsing (an unknown host in a selector,
//! two users with one uid, a path outside its root) must point at the line of the offending field.
//! Keeping the tree lets any later stage turn a field path back into a position.

pub mod de;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};
use std::collections::HashMap;
use std::fmt;

/// A position in a YAML source: 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Mark {
    /// Line, counted from 1.
    pub line: usize,
    /// Column, counted from 1.
    pub column: usize,
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A YAML node with the position where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the node starts in its source.
    pub mark: Mark,
    /// The node itself.
    pub value: NodeValue,
}

/// The content of a node. Scalars keep their source text; they are resolved to null, bool,
/// number or string only when the deserializer is asked for "any" value, so a field typed as a
/// string (a file mode `0640`, a version `15`) receives exactly what the user wrote.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    /// A scalar: its text and whether it was quoted or a block (then it is always a string).
    Scalar { text: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order (duplicate keys are rejected while parsing).
    Map(Vec<(Node, Node)>),
}

/// A scalar resolved with the YAML 1.2 core schema.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved<'a> {
    /// `~`, `null`, or an empty plain scalar.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer (decimal, `0o` octal or `0x` hex).
    Int(i64),
    /// A float, including `.inf` and `.nan`.
    Float(f64),
    /// Anything else.
    Str(&'a str),
}

impl Node {
    /// The human name of this node's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            NodeValue::Seq(_) => "a sequence",
            NodeValue::Map(_) => "a mapping",
            NodeValue::Scalar { .. } => match self.resolve() {
                Some(Resolved::Null) => "null",
                Some(Resolved::Bool(_)) => "a boolean",
                Some(Resolved::Int(_)) => "an integer",
                Some(Resolved::Float(_)) => "a number",
                _ => "a string",
            },
        }
    }

    /// Resolves a scalar with the YAML 1.2 core schema; `None` for sequences and mappings.
    pub fn resolve(&self) -> Option<Resolved<'_>> {
        let NodeValue::Scalar { text, plain } = &self.value else {
            return None;
        };
        if !plain {
            return Some(Resolved::Str(text));
        }
        Some(resolve_plain(text))
    }

    /// The scalar text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The entries of a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            NodeValue::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// Finds the node at a dotted field path such as `roles[0].password` and returns the
    /// deepest node reached: an error about a missing field still points at its parent.
    pub fn locate(&self, path: &str) -> &Node {
        let mut node = self;
        for segment in split_path(path) {
            let next = match (segment, &node.value) {
                (PathSegment::Key(key), NodeValue::Map(entries)) => entries
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(key))
                    .map(|(_, v)| v),
                (PathSegment::Index(i), NodeValue::Seq(items)) => items.get(i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }

    /// Finds the key node of the last segment of `path` (for "unknown field" style errors that
    /// are about a key rather than its value).
    pub fn locate_key(&self, path: &str) -> Option<&Node> {
        let (parent, last) = match path.rfind('.') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path),
        };
        let parent = if parent.is_empty() {
            self
        } else {
            self.locate(parent)
        };
        parent
            .as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(last))
            .map(|(k, _)| k)
    }
}

enum PathSegment<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> impl Iterator<Item = PathSegment<'_>> {
    path.split('.').filter(|s| !s.is_empty()).flat_map(|part| {
        let mut out = Vec::new();
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(PathSegment::Key(key));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(PathSegment::Index(i));
            }
        }
        out
    })
}

fn resolve_plain(text: &str) -> Resolved<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(v) = i64::from_str_radix(oct, 8)
    {
        return Resolved::Int(v);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(v) = i64::from_str_radix(hex, 16)
    {
        return Resolved::Int(v);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(v) = text.parse::<i64>()
    {
        return Resolved::Int(v);
    }
    let looks_numeric = digits
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_numeric && let Ok(v) = text.parse::<f64>() {
        return Resolved::Float(v);
    }
    Resolved::Str(text)
}

/// One document of a YAML stream.
#[derive(Clone, Debug)]
pub struct Document {
    /// Its root node.
    pub root: Node,
    /// Where the document starts (its `---` or its first node).
    pub mark: Mark,
}

/// A YAML syntax error, or a structural one the parser catches (duplicate key, alias bomb).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where it happened.
    pub mark: Mark,
    /// What happened.
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.mark, self.message)
    }
}

/// Most nodes one stream may expand to through aliases: stops "billion laughs" documents.
const MAX_NODES: usize = 1_000_000;

fn mark_of(m: &saphyr_parser::Marker) -> Mark {
    Mark {
        line: m.line(),
        column: m.col() + 1,
    }
}

fn scan_error(e: ScanError) -> SyntaxError {
    SyntaxError {
        mark: mark_of(e.marker()),
        message: e.info().to_string(),
    }
}

/// Parses a multi-document YAML stream into spanned documents.
pub fn parse_documents(source: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut builder = Builder::default();
    for event in Parser::new_from_str(source) {
        let (event, span) = event.map_err(scan_error)?;
        builder.on_event(event, mark_of(&span.start))?;
    }
    Ok(builder.documents)
}

/// Parses a stream that must hold exactly one document (an empty stream is an empty mapping).
pub fn parse_single(source: &str) -> Result<Node, SyntaxError> {
    let mut docs = parse_documents(source)?;
    match docs.len() {
        0 => Ok(Node {
            mark: Mark { line: 1, column: 1 },
            value: NodeValue::Map(Vec::new()),
        }),
        1 => Ok(docs.remove(0).root),
        _ => Err(SyntaxError {
            mark: docs[1].mark,
            message: "expected a single YAML document, found several (`---`)".into(),
        }),
    }
}

enum Frame {
    Seq(Node, usize),
    Map(Node, usize, Option<Node>),
}

#[derive(Default)]
struct Builder {
    documents: Vec<Document>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    doc_mark: Mark,
    nodes: usize,
}

impl Builder {
    fn on_event(&mut self, event: Event<'_>, mark: Mark) -> Result<(), SyntaxError> {
        match event {
            Event::DocumentStart(_) => {
                self.doc_mark = mark;
                self.anchors.clear();
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = matches!(style, ScalarStyle::Plain);
                let node = Node {
                    mark,
                    value: NodeValue::Scalar {
                        text: text.into_owned(),
                        plain,
                    },
                };
                self.push(node, anchor)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq(
                    Node {
                        mark,
                        value: NodeValue::Seq(Vec::new()),
                    },
                    anchor,
                ));
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(
                    Node {
                        mark,
                        value: NodeValue::Map(Vec::new()),
                    },
                    anchor,
                    None,
                ));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq(node, anchor)) | Some(Frame::Map(node, anchor, _)) => {
                        (node, anchor)
                    }
                    None => {
                        return Err(SyntaxError {
                            mark,
                            message: "unbalanced collection end".into(),
                        });
                    }
                };
                self.push(node, anchor)?;
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id).cloned() else {
                    return Err(SyntaxError {
                        mark,
                        message: "alias refers to an unknown anchor".into(),
                    });
                };
                self.nodes += count_nodes(&node);
                if self.nodes > MAX_NODES {
                    return Err(SyntaxError {
                        mark,
                        message: format!(
                            "aliases expand this document beyond {MAX_NODES} nodes; refusing it"
                        ),
                    });
                }
                self.push(node, 0)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        self.nodes += 1;
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.documents.push(Document {
                root: node,
                mark: self.doc_mark,
            }),
            Some(Frame::Seq(seq, _)) => {
                if let NodeValue::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map(map, _, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    if let NodeValue::Map(entries) = &mut map.value {
                        if let Some(text) = key.as_str()
                            && let Some((first, _)) =
                                entries.iter().find(|(k, _)| k.as_str() == Some(text))
                        {
                            return Err(SyntaxError {
                                mark: key.mark,
                                message: format!(
                                    "duplicate key `{text}` (first defined at line {})",
                                    first.mark.line
                                ),
                            });
                        }
                        entries.push((key, node));
                    }
                }
            },
        }
        Ok(())
    }
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.value {
        NodeValue::Scalar { .. } => 0,
        NodeValue::Seq(items) => items.iter().map(count_nodes).sum(),
        NodeValue::Map(entries) => entries
            .iter()
            .map(|(k, v)| count_nodes(k) + count_nodes(v))
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documents_with_marks() {
        let docs = parse_documents("a: 1\nb:\n  - x\n---\nc: 'q'\n").unwrap();
        assert_eq!(docs.len(), 2);
        let b = docs[0].root.get("b").unwrap();
        assert_eq!(b.mark.line, 3);
        let x = docs[0].root.locate("b[0]");
        assert_eq!(x.as_str(), Some("x"));
        assert_eq!(x.mark, Mark { line: 3, column: 5 });
        assert_eq!(
            docs[1].root.get("c").unwrap().resolve(),
            Some(Resolved::Str("q"))
        );
    }

    #[test]
    fn resolves_core_schema_but_keeps_text() {
        let docs = parse_documents("a: 0640\nb: '0640'\nc: 0o17\nd: ~\ne: 1.5\nf: yes\n").unwrap();
        let r = &docs[0].root;
        assert_eq!(r.get("a").unwrap().resolve(), Some(Resolved::Int(640)));
        assert_eq!(r.get("a").unwrap().as_str(), Some("0640"));
        assert_eq!(r.get("b").unwrap().resolve(), Some(Resolved::Str("0640")));
        assert_eq!(r.get("c").unwrap().resolve(), Some(Resolved::Int(15)));
        assert_eq!(r.get("d").unwrap().resolve(), Some(Resolved::Null));
        assert_eq!(r.get("e").unwrap().resolve(), Some(Resolved::Float(1.5)));
        // YAML 1.2: `yes` is a string, not a boolean.
        assert_eq!(r.get("f").unwrap().resolve(), Some(Resolved::Str("yes")));
    }

    #[test]
    fn rejects_duplicate_keys_with_both_lines() {
        let err = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.mark.line, 3);
        assert!(err.message.contains("duplicate key `a`"), "{}", err.message);
        assert!(err.message.contains("line 1"), "{}", err.message);
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.mark.line >= 1);
        assert!(!err.message.is_empty());
    }

    #[test]
    fn aliases_expand_and_bombs_are_refused() {
        let docs = parse_documents("a: &x [1, 2]\nb: *x\n").unwrap();
        assert_eq!(docs[0].root.get("b").unwrap().type_name(), "a sequence");
        let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
        for i in 0..8 {
            let prev = (b'a' + i) as char;
            let next = (b'a' + i + 1) as char;
            bomb.push_str(&format!(
                "{next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        let err = parse_documents(&bomb).unwrap_err();
        assert!(err.message.contains("refusing"), "{}", err.message);
    }
}
