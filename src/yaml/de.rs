//! A serde `Deserializer` over a spanned [`Node`]: every error carries the field path and the
//! line and column of the node it is about (the key, for an unknown field).

use super::{Mark, Node, NodeValue, Resolved};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use std::fmt;

/// A deserialization error with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// What went wrong, in serde's words (e.g. "unknown field `x`, expected one of ...").
    pub message: String,
    /// The dotted field path, e.g. `roles[0].password`.
    pub path: String,
    /// Where the offending node starts, once known.
    pub mark: Option<Mark>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            message: msg.to_string(),
            path: String::new(),
            mark: None,
        }
    }
}

/// Deserializes `T` from a node.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, Error> {
    from_node_excluding(node, &[])
}

/// Deserializes `T` from a mapping node as if the keys in `exclude` were absent. Used to read a
/// manifest's kind-specific fields apart from its common fields (`kind`, `hosts`, ...), so that
/// each part can reject unknown fields on its own.
pub fn from_node_excluding<T: DeserializeOwned>(node: &Node, exclude: &[&str]) -> Result<T, Error> {
    let de = NodeDe {
        node,
        path: String::new(),
        exclude,
    };
    T::deserialize(de).map_err(|e| attach(e, node, ""))
}

fn attach(mut e: Error, node: &Node, path: &str) -> Error {
    if e.mark.is_none() {
        e.mark = Some(node.mark);
        e.path = path.to_string();
    }
    e
}

fn child_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

struct NodeDe<'de, 'x> {
    node: &'de Node,
    path: String,
    exclude: &'x [&'x str],
}

impl<'de> NodeDe<'de, '_> {
    fn child(node: &'de Node, path: String) -> NodeDe<'de, 'static> {
        NodeDe {
            node,
            path,
            exclude: &[],
        }
    }

    fn invalid_type(&self, exp: &dyn de::Expected) -> Error {
        let unexpected = match &self.node.value {
            NodeValue::Seq(_) => de::Unexpected::Seq,
            NodeValue::Map(_) => de::Unexpected::Map,
            NodeValue::Scalar { text, .. } => match self.node.resolve() {
                Some(Resolved::Null) => de::Unexpected::Unit,
                Some(Resolved::Bool(b)) => de::Unexpected::Bool(b),
                Some(Resolved::Int(i)) => de::Unexpected::Signed(i),
                Some(Resolved::Float(f)) => de::Unexpected::Float(f),
                _ => de::Unexpected::Str(text),
            },
        };
        attach(
            de::Error::invalid_type(unexpected, exp),
            self.node,
            &self.path,
        )
    }

    fn finish<V>(&self, r: Result<V, Error>) -> Result<V, Error> {
        r.map_err(|e| attach(e, self.node, &self.path))
    }
}

impl<'de> de::Deserializer<'de> for NodeDe<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = match &self.node.value {
            NodeValue::Scalar { .. } => match self.node.resolve() {
                Some(Resolved::Null) => visitor.visit_unit(),
                Some(Resolved::Bool(b)) => visitor.visit_bool(b),
                Some(Resolved::Int(i)) => visitor.visit_i64(i),
                Some(Resolved::Float(f)) => visitor.visit_f64(f),
                Some(Resolved::Str(s)) => visitor.visit_borrowed_str(s),
                None => unreachable_scalar(),
            },
            NodeValue::Seq(items) => visitor.visit_seq(SeqAcc {
                items: items.iter().enumerate(),
                path: &self.path,
            }),
            NodeValue::Map(entries) => visitor.visit_map(MapAcc {
                entries: entries.iter(),
                exclude: self.exclude,
                path: &self.path,
                value: None,
            }),
        };
        self.finish(r)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            NodeValue::Scalar { text, .. }
                if !matches!(self.node.resolve(), Some(Resolved::Null)) =>
            {
                let r = visitor.visit_borrowed_str(text);
                self.finish(r)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if matches!(self.node.resolve(), Some(Resolved::Null)) {
            let r = visitor.visit_none();
            self.finish(r)
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            NodeValue::Map(_) => self.deserialize_any(visitor),
            // An empty value (`key:`) reads as an empty mapping: `groups: { backup: }` is natural.
            NodeValue::Scalar { .. } if matches!(self.node.resolve(), Some(Resolved::Null)) => {
                let r = visitor.visit_map(MapAcc {
                    entries: [].iter(),
                    exclude: &[],
                    path: &self.path,
                    value: None,
                });
                self.finish(r)
            }
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            NodeValue::Seq(_) => self.deserialize_any(visitor),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.node.value {
            NodeValue::Scalar { text, .. } => {
                let r = visitor.visit_enum(text.as_str().into_deserializer());
                self.finish(r)
            }
            NodeValue::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                let path = child_key(&self.path, key.as_str().unwrap_or("?"));
                let r = visitor.visit_enum(EnumAcc { key, value, path });
                self.finish(r)
            }
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct tuple tuple_struct
    }
}

fn unreachable_scalar<T>() -> Result<T, Error> {
    Err(de::Error::custom("internal error: scalar did not resolve"))
}

struct SeqAcc<'de, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Node>>,
    path: &'p str,
}

impl<'de> SeqAccess<'de> for SeqAcc<'de, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some((i, node)) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{i}]", self.path);
        seed.deserialize(NodeDe::child(node, path.clone()))
            .map(Some)
            .map_err(|e| attach(e, node, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAcc<'de, 'p> {
    entries: std::slice::Iter<'de, (Node, Node)>,
    exclude: &'p [&'p str],
    path: &'p str,
    value: Option<(&'de Node, String)>,
}

impl<'de> MapAccess<'de> for MapAcc<'de, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        loop {
            let Some((key, value)) = self.entries.next() else {
                return Ok(None);
            };
            let key_text = key.as_str();
            if key_text.is_some_and(|k| self.exclude.contains(&k)) {
                continue;
            }
            let path = child_key(self.path, key_text.unwrap_or("?"));
            self.value = Some((value, path.clone()));
            return seed
                .deserialize(KeyDe { node: key })
                .map(Some)
                .map_err(|e| attach(e, key, &path));
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((node, path)) = self.value.take() else {
            return Err(de::Error::custom("value requested before key"));
        };
        seed.deserialize(NodeDe::child(node, path.clone()))
            .map_err(|e| attach(e, node, &path))
    }
}

/// Keys are always read as their source text: `1: x` in a vars map is the key "1".
struct KeyDe<'de> {
    node: &'de Node,
}

impl<'de> de::Deserializer<'de> for KeyDe<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            NodeValue::Scalar { text, .. } => visitor.visit_borrowed_str(text),
            _ => Err(de::Error::custom(format!(
                "a mapping key must be a plain value, found {}",
                self.node.type_name()
            ))),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct EnumAcc<'de> {
    key: &'de Node,
    value: &'de Node,
    path: String,
}

impl<'de> EnumAccess<'de> for EnumAcc<'de> {
    type Error = Error;
    type Variant = NodeDe<'de, 'static>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let v = seed
            .deserialize(KeyDe { node: self.key })
            .map_err(|e| attach(e, self.key, &self.path))?;
        Ok((v, NodeDe::child(self.value, self.path)))
    }
}

impl<'de> VariantAccess<'de> for NodeDe<'de, 'static> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_single;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        name: String,
        #[serde(default)]
        uid: Option<u32>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        items: Vec<Inner>,
        #[serde(default)]
        mode: Option<String>,
        #[serde(default)]
        vars: BTreeMap<String, serde_json::Value>,
        #[serde(default)]
        state: Option<State>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum State {
        Present,
        Absent,
    }

    fn de(src: &str) -> Result<Outer, Error> {
        from_node(&parse_single(src).unwrap())
    }

    #[test]
    fn reads_nested_values_and_keeps_string_text() {
        let o = de(
            "items:\n  - name: a\n    uid: 7\nmode: 0640\nvars: {x: 1, y: [a]}\nstate: absent\n",
        )
        .unwrap();
        assert_eq!(o.items[0].uid, Some(7));
        assert_eq!(o.mode.as_deref(), Some("0640"));
        assert_eq!(o.vars["x"], serde_json::json!(1));
        assert_eq!(o.state, Some(State::Absent));
    }

    #[test]
    fn unknown_field_points_at_the_key() {
        let e = de("items:\n  - name: a\n    bogus: 1\n").unwrap_err();
        assert_eq!(e.path, "items[0].bogus");
        assert_eq!(e.mark, Some(Mark { line: 3, column: 5 }));
        assert!(e.message.contains("unknown field `bogus`"), "{}", e.message);
    }

    #[test]
    fn wrong_type_points_at_the_value() {
        let e = de("items:\n  - name: a\n    uid: lots\n").unwrap_err();
        assert_eq!(e.path, "items[0].uid");
        assert_eq!(
            e.mark,
            Some(Mark {
                line: 3,
                column: 10
            })
        );
        assert!(e.message.contains("invalid type"), "{}", e.message);
    }

    #[test]
    fn missing_field_points_at_the_parent() {
        let e = de("items:\n  - uid: 1\n").unwrap_err();
        assert_eq!(e.path, "items[0]");
        assert!(e.message.contains("missing field `name`"), "{}", e.message);
    }

    #[test]
    fn bad_enum_variant_is_located() {
        let e = de("items: []\nstate: gone\n").unwrap_err();
        assert_eq!(e.path, "state");
        assert_eq!(e.mark.map(|m| m.line), Some(2));
        assert!(
            e.message.contains("unknown variant `gone`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn excluded_keys_are_invisible() {
        let node = parse_single("kind: X\nname: a\n").unwrap();
        let inner: Inner = from_node_excluding(&node, &["kind"]).unwrap();
        assert_eq!(inner.name, "a");
        let err = from_node::<Inner>(&node).unwrap_err();
        assert!(err.message.contains("unknown field `kind`"));
    }
}
