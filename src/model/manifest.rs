//! Manifests: typed resources, one per YAML document, each with common fields (`kind`, `name`,
//! `hosts`, `notify`, `drift`, `description`) and the fields of its kind.

use crate::diag::Diagnostic;
use crate::model::selector::Selector;
use crate::model::values::{DriftPolicy, ResourceRef};
use crate::yaml::{self, Mark, Node};
use serde::Deserialize;
use std::path::PathBuf;

/// Fields every manifest may carry, whatever its kind.
pub const COMMON_FIELDS: &[&str] = &["kind", "name", "hosts", "notify", "drift", "description"];

#[derive(Deserialize)]
struct CommonDef {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    hosts: Option<Selector>,
    #[serde(default)]
    notify: Vec<ResourceRef>,
    #[serde(default)]
    drift: DriftPolicy,
    #[serde(default)]
    description: Option<String>,
}

/// The fields of the kinds a repo may declare: how the model reads them without knowing them
/// (implemented by `crate::kinds::Spec`, the registry).
pub trait KindFields: Sized {
    /// Every kind name.
    const KIND_NAMES: &'static [&'static str];

    /// Reads the kind-specific fields of a document of kind `kind` (one of `KIND_NAMES`).
    fn parse(kind: &str, doc: &Node) -> Result<Self, yaml::de::Error>;

    /// A name derived from the fields when `name:` is omitted (paths for files).
    fn default_name(&self) -> Option<String>;

    /// False for kinds that live on the controller only (no `hosts:`).
    fn needs_hosts(&self) -> bool;
}

/// One resource as declared in `manifests/`, with its kind's fields `S`.
#[derive(Clone, Debug)]
pub struct Manifest<S> {
    /// Kind name, as registered.
    pub kind: &'static str,
    /// Resource name (unique per kind in the repo).
    pub name: String,
    /// The hosts it lands on (`None` only for controller-side kinds).
    pub hosts: Option<Selector>,
    /// Resources refreshed when this one changes.
    pub notify: Vec<ResourceRef>,
    /// Repair or only report drift.
    pub drift: DriftPolicy,
    /// Free text.
    pub description: Option<String>,
    /// The kind's own fields.
    pub spec: S,
    /// File it was read from, relative to the repo.
    pub file: PathBuf,
    /// Where the document starts.
    pub mark: Mark,
    /// The document tree, kept to locate later errors.
    pub doc: Node,
}

impl<S> Manifest<S> {
    /// `Kind/name`.
    pub fn reference(&self) -> ResourceRef {
        ResourceRef {
            kind: self.kind.to_string(),
            name: self.name.clone(),
        }
    }

    /// A diagnostic about one of this manifest's fields.
    pub fn error(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::field(&self.file, &self.doc, field, message)
    }
}

fn located(file: &PathBuf, doc: &Node, kind: &str, e: yaml::de::Error) -> Diagnostic {
    let mut d =
        Diagnostic::at(file, e.mark.unwrap_or(doc.mark), e.message.clone()).with_field(e.path);
    if e.message.contains("unknown field") {
        d = d.with_hint(unknown_field_hint(kind, &e.message));
    }
    d
}

/// The hint for serde's "unknown field `x`, expected one of `a`, `b`": the closest field when the
/// name looks like a typo, and where the fields are listed (there is no `plumb explain`).
fn unknown_field_hint(kind: &str, message: &str) -> String {
    let field = message.split('`').nth(1).unwrap_or_default().to_string();
    let expected: Vec<&str> = message
        .split_once("expected one of ")
        .or_else(|| message.split_once("expected "))
        .map(|(_, list)| {
            list.split(", ")
                .map(|f| f.trim().trim_matches('`'))
                .filter(|f| !f.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let common = COMMON_FIELDS.join(", ");
    match closest(&field, &expected) {
        Some(near) => {
            format!("did you mean `{near}`? A {kind} takes the fields listed above, plus {common}")
        }
        None => format!(
            "remove the field or fix its spelling: a {kind} takes the fields listed above, plus {common} (README.md, \"The cluster repo\", describes each kind)"
        ),
    }
}

/// Reads one manifest document. Returns every problem found in it (common fields and kind
/// fields are checked separately, so both kinds of mistakes show up in one run).
pub fn parse_manifest<S: KindFields>(
    file: &PathBuf,
    doc: Node,
) -> Result<Manifest<S>, Vec<Diagnostic>> {
    if doc.as_map().is_none() {
        return Err(vec![Diagnostic::at(
            file,
            doc.mark,
            format!(
                "a manifest must be a mapping with a `kind`, found {}",
                doc.type_name()
            ),
        )]);
    }
    let Some(kind_node) = doc.get("kind") else {
        return Err(vec![
            Diagnostic::at(file, doc.mark, "missing field `kind`")
                .with_hint(format!("known kinds: {}", S::KIND_NAMES.join(", "))),
        ]);
    };
    let kind_text = kind_node.as_str().unwrap_or_default();
    let Some(kind) = S::KIND_NAMES.iter().copied().find(|k| *k == kind_text) else {
        let mut hint = format!("known kinds: {}", S::KIND_NAMES.join(", "));
        if let Some(near) = closest(kind_text, S::KIND_NAMES) {
            hint = format!("did you mean `{near}`? {hint}");
        }
        return Err(vec![
            Diagnostic::at(file, kind_node.mark, format!("unknown kind `{kind_text}`"))
                .with_field("kind")
                .with_hint(hint),
        ]);
    };

    let mut errors = Vec::new();
    let common: Option<CommonDef> = match yaml::de::from_node(&doc) {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push(located(file, &doc, kind, e));
            None
        }
    };
    let spec = match S::parse(kind, &doc) {
        Ok(s) => Some(s),
        Err(e) => {
            errors.push(located(file, &doc, kind, e));
            None
        }
    };
    let (Some(common), Some(spec)) = (common, spec) else {
        return Err(errors);
    };
    let name = match common.name.or_else(|| spec.default_name()) {
        Some(n) if !n.trim().is_empty() => n,
        _ => {
            errors.push(
                Diagnostic::at(file, doc.mark, format!("missing field `name` in {kind}"))
                    .with_hint("every resource needs a `name`, unique among resources of its kind"),
            );
            return Err(errors);
        }
    };
    if common.hosts.is_none() && spec.needs_hosts() {
        errors.push(Diagnostic::at(file, doc.mark, format!("missing field `hosts` in {kind} `{name}`"))
            .with_hint("say where it lands: `hosts: all`, `hosts: group:NAME`, `hosts: host:NAME` or a list"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Manifest {
        kind,
        name,
        hosts: common.hosts,
        notify: common.notify,
        drift: common.drift,
        description: common.description,
        spec,
        file: file.clone(),
        mark: doc.mark,
        doc,
    })
}

/// The candidate nearest to `word` by edit distance, if it is close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<crate::kinds::Manifest, Vec<Diagnostic>> {
        let doc = yaml::parse_single(src).unwrap();
        parse_manifest(&PathBuf::from("manifests/m.yaml"), doc)
    }

    #[test]
    fn unknown_kind_suggests_the_closest() {
        let e = parse("kind: Fil\nname: x\nhosts: all\n").unwrap_err();
        let text = e[0].to_string();
        assert!(text.contains("manifests/m.yaml:1:7"), "{text}");
        assert!(text.contains("unknown kind `Fil`"), "{text}");
        assert!(text.contains("did you mean `File`"), "{text}");
    }

    #[test]
    fn common_and_kind_errors_are_both_reported() {
        let e = parse("kind: Directory\nhosts: 7\npath: /x\nbogus: 1\n").unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn file_name_defaults_to_its_path() {
        let m = parse("kind: File\nhosts: all\npath: /etc/motd\ncontent: hi\n").unwrap();
        assert_eq!(m.name, "/etc/motd");
        assert_eq!(m.reference().to_string(), "File//etc/motd");
    }

    #[test]
    fn closest_matches_typos_only() {
        assert_eq!(
            closest("systemdunit", &["SystemdUnit", "File"]),
            Some("SystemdUnit")
        );
        assert_eq!(closest("Banana", &["SystemdUnit", "File"]), None);
    }
}
