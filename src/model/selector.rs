//! Host selectors: which hosts a resource lands on (`all`, `host:pg1`, `group:postgres`, a list of
//! these, and `!`-prefixed exclusions). Also the syntax of `--limit`.

use super::inventory::Inventory;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// One term of a selector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Term {
    /// Every host.
    All,
    /// One host by name.
    Host(String),
    /// Every member of a group.
    Group(String),
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::All => f.write_str("all"),
            Term::Host(h) => write!(f, "host:{h}"),
            Term::Group(g) => write!(f, "group:{g}"),
        }
    }
}

/// A selector: the union of its included terms minus the union of its excluded terms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Selector {
    /// Terms whose hosts are selected.
    pub include: Vec<Term>,
    /// Terms whose hosts are then removed.
    pub exclude: Vec<Term>,
}

/// A selector term that names no known host or group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownTarget {
    /// Index of the term in the written list (for the field path).
    pub index: usize,
    /// The message.
    pub message: String,
    /// A hint listing what is known.
    pub hint: String,
}

/// Why a selector does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A term of an unknown form (`grp:pg`).
    #[error("`{0}` is not a selector: use `all`, `host:NAME`, `group:NAME` or a bare host name")]
    BadTerm(String),
    /// `host:` or `group:` without a name, or an empty item.
    #[error("empty name in selector")]
    EmptyName,
    /// Only exclusions.
    #[error("a selector needs at least one host, group or `all`")]
    NothingIncluded,
}

fn parse_term(s: &str) -> Result<Term, SelectorError> {
    let s = s.trim();
    if s == "all" || s == "*" {
        return Ok(Term::All);
    }
    if let Some(h) = s.strip_prefix("host:") {
        return non_empty(h).map(Term::Host);
    }
    if let Some(g) = s.strip_prefix("group:") {
        return non_empty(g).map(Term::Group);
    }
    if s.contains(':') {
        return Err(SelectorError::BadTerm(s.to_string()));
    }
    non_empty(s).map(Term::Host)
}

fn non_empty(s: &str) -> Result<String, SelectorError> {
    if s.is_empty() {
        Err(SelectorError::EmptyName)
    } else {
        Ok(s.to_string())
    }
}

impl Selector {
    /// Parses a comma-separated selector such as `group:postgres,!host:pg-srv3`.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        Self::from_items(text.split(',').map(str::to_string))
    }

    fn from_items(items: impl IntoIterator<Item = String>) -> Result<Selector, SelectorError> {
        let mut sel = Selector::default();
        for item in items {
            let item = item.trim();
            if let Some(neg) = item.strip_prefix('!') {
                sel.exclude.push(parse_term(neg)?);
            } else {
                sel.include.push(parse_term(item)?);
            }
        }
        if sel.include.is_empty() {
            return Err(SelectorError::NothingIncluded);
        }
        Ok(sel)
    }

    /// Terms in written order with their index, for error positions.
    fn terms(&self) -> impl Iterator<Item = (usize, &Term)> {
        self.include.iter().chain(&self.exclude).enumerate()
    }

    /// Reports terms naming unknown hosts or groups.
    pub fn check(&self, inv: &Inventory) -> Vec<UnknownTarget> {
        let mut out = Vec::new();
        for (index, term) in self.terms() {
            match term {
                Term::All => {}
                Term::Host(h) if inv.host(h).is_none() => {
                    let hint = if inv.groups.contains_key(h) {
                        format!("`{h}` is a group: write `group:{h}`")
                    } else {
                        format!(
                            "known hosts: {}",
                            names(inv.hosts.iter().map(|h| h.name.as_str()))
                        )
                    };
                    out.push(UnknownTarget {
                        index,
                        message: format!("selector names unknown host `{h}`"),
                        hint,
                    });
                }
                Term::Group(g) if !inv.groups.contains_key(g) => {
                    let hint = if inv.host(g).is_some() {
                        format!("`{g}` is a host: write `host:{g}`")
                    } else {
                        format!(
                            "known groups: {}",
                            names(
                                inv.groups
                                    .keys()
                                    .map(String::as_str)
                                    .filter(|g| *g != "all")
                            )
                        )
                    };
                    out.push(UnknownTarget {
                        index,
                        message: format!("selector names unknown group `{g}`"),
                        hint,
                    });
                }
                _ => {}
            }
        }
        out
    }

    /// The selected host names, sorted.
    pub fn select<'i>(&self, inv: &'i Inventory) -> BTreeSet<&'i str> {
        let expand = |t: &Term| -> Vec<&'i str> {
            match t {
                Term::All => inv.hosts.iter().map(|h| h.name.as_str()).collect(),
                Term::Host(h) => inv.host(h).map(|h| h.name.as_str()).into_iter().collect(),
                Term::Group(g) => inv
                    .groups
                    .get(g)
                    .map(|g| g.members.iter().map(String::as_str).collect())
                    .unwrap_or_default(),
            }
        };
        let mut set: BTreeSet<&str> = self.include.iter().flat_map(expand).collect();
        for t in &self.exclude {
            for h in expand(t) {
                set.remove(h);
            }
        }
        set
    }

    /// True when the host is selected.
    pub fn matches(&self, inv: &Inventory, host: &str) -> bool {
        self.select(inv).contains(host)
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .include
            .iter()
            .map(|t| t.to_string())
            .chain(self.exclude.iter().map(|t| format!("!{t}")))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let items = match Raw::deserialize(d).map_err(|_| {
            de::Error::custom(
                "expected a selector: `all`, `host:NAME`, `group:NAME`, or a list of these",
            )
        })? {
            Raw::One(s) => vec![s],
            Raw::Many(v) => v,
        };
        Selector::from_items(items).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inventory::{parse_inventory, resolve};
    use std::path::Path;

    fn inv() -> Inventory {
        let s = parse_inventory(
            Path::new("h.yaml"),
            Path::new("/"),
            "groups: { pg: {}, bk: {} }\nhosts:\n  a: { address: x, groups: [pg] }\n  b: { address: x, groups: [pg] }\n  c: { address: x, groups: [bk] }\n",
        )
        .unwrap();
        resolve(&s, None).unwrap()
    }

    #[test]
    fn selects_union_minus_exclusions() {
        let inv = inv();
        let s = Selector::parse("group:pg,host:c,!host:a").unwrap();
        assert_eq!(
            s.select(&inv).into_iter().collect::<Vec<_>>(),
            vec!["b", "c"]
        );
        assert_eq!(Selector::parse("all").unwrap().select(&inv).len(), 3);
        assert_eq!(Selector::parse("a").unwrap().select(&inv).len(), 1);
        assert!(Selector::parse("!host:a").is_err());
        assert!(Selector::parse("grp:pg").is_err());
    }

    #[test]
    fn unknown_targets_get_hints() {
        let inv = inv();
        let s = Selector::parse("group:pgg,host:pg,group:a").unwrap();
        let errs = s.check(&inv);
        assert_eq!(errs.len(), 3);
        assert!(
            errs[0].hint.contains("known groups: bk, pg"),
            "{}",
            errs[0].hint
        );
        assert!(errs[1].hint.contains("write `group:pg`"));
        assert!(errs[2].hint.contains("write `host:a`"));
    }
}
