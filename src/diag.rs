//! Diagnostics: errors in a cluster repo, each with file, line, column, field, message and hint.
//!
//! Loading and validating a repo collects every problem it finds into [`Diagnostics`] instead of
//! stopping at the first, so an operator fixes a repo in one pass.

use crate::text::escape;
use crate::yaml::{Mark, Node};
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a cluster repo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, relative to the repo root where possible.
    pub file: PathBuf,
    /// Where in the file, when known.
    pub mark: Option<Mark>,
    /// The field path inside the document (`hosts`, `roles[0].password`), when there is one.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic about a whole file.
    pub fn file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.into(),
            mark: None,
            field: None,
            message: message.into(),
            hint: None,
        }
    }

    /// A diagnostic at a position.
    pub fn at(file: impl Into<PathBuf>, mark: Mark, message: impl Into<String>) -> Self {
        Diagnostic {
            mark: Some(mark),
            ..Diagnostic::file(file, message)
        }
    }

    /// A diagnostic about a field of a document: the position is looked up from the field path,
    /// falling back to the nearest enclosing node that exists.
    pub fn field(
        file: impl Into<PathBuf>,
        doc: &Node,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let field = field.into();
        let mark = doc.locate(&field).mark;
        Diagnostic {
            mark: Some(mark),
            field: if field.is_empty() { None } else { Some(field) },
            ..Diagnostic::file(file, message)
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets the field path without moving the position.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        self.field = if field.is_empty() { None } else { Some(field) };
        self
    }

    /// `file:line:column` (or just the file), control characters escaped.
    pub fn location(&self) -> String {
        let file = self.file.display().to_string();
        let file = escape(&file);
        match self.mark {
            Some(m) => format!("{file}:{}:{}", m.line, m.column),
            None => file.into_owned(),
        }
    }
}

impl fmt::Display for Diagnostic {
    /// One line per diagnostic (and one for its hint): the file name, field, message and hint
    /// come from the repo and may hold anything, so control characters (newlines included) are
    /// shown escaped and cannot forge a line of output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: error: ", self.location())?;
        if let Some(field) = &self.field {
            write!(f, "field `{}`: ", escape(field))?;
        }
        write!(f, "{}", escape(&self.message))?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {}", escape(hint))?;
        }
        Ok(())
    }
}

/// Every problem found in a repo, in file and line order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    /// The problems.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// No problems yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    /// Records several problems.
    pub fn extend(&mut self, ds: impl IntoIterator<Item = Diagnostic>) {
        self.items.extend(ds);
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// `Ok(value)` when empty, otherwise the sorted problems.
    pub fn into_result<T>(mut self, value: T) -> Result<T, Diagnostics> {
        if self.items.is_empty() {
            Ok(value)
        } else {
            self.sort();
            Err(self)
        }
    }

    /// Sorts by file, then position; drops exact duplicates.
    pub fn sort(&mut self) {
        self.items
            .sort_by(|a, b| (&a.file, a.mark, &a.message).cmp(&(&b.file, b.mark, &b.message)));
        self.items.dedup();
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{d}")?;
        }
        let n = self.items.len();
        write!(
            f,
            "{n} error{} in the cluster repo; nothing was contacted or changed",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics { items: vec![d] }
    }
}

/// Makes `path` relative to `root` for display, when it is inside it.
pub fn display_path(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).unwrap_or(path).to_path_buf()
}

/// The diagnostic for one control character found by [`crate::text::walk_document`].
pub fn control_char(file: &std::path::Path, f: crate::text::FoundControl) -> Diagnostic {
    let what = if f.in_key { "key" } else { "value" };
    let hint = match f.found.class {
        crate::text::TextClass::Line => {
            "names, paths, keys and other one-line fields reach shell scripts and terminals, so they may not hold control characters; remove it (look for escapes such as \\e, \\x1b, \\t or \\n in double-quoted YAML strings)"
        }
        crate::text::TextClass::Script => {
            "commands and descriptions may span lines (newlines and tabs); remove the other control character"
        }
        crate::text::TextClass::Content => {
            "inline content may hold newlines, tabs and carriage returns; put content with other control bytes in a file of the repo and use `source:`"
        }
    };
    Diagnostic::at(file, f.mark, format!("the {what} {}", f.found))
        .with_field(f.field)
        .with_hint(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diagnostic_renders_control_characters_escaped_on_its_own_lines() {
        let forged = "x\r\x1b[2K\nweb1: ok\x07";
        let d = Diagnostic::at(
            format!("manifests/{forged}.yaml"),
            Mark { line: 3, column: 7 },
            format!("`{forged}` is not a valid user name"),
        )
        .with_field(format!("env.{forged}"))
        .with_hint(format!("rename `{forged}`"));
        let ds = Diagnostics::from(d);
        let text = ds.to_string();
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && crate::text::is_control(c)),
            "{text:?}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with(
                "manifests/x\\r\\e[2K\\nweb1: ok\\x07.yaml:3:7: error: field `env.x\\r"
            ),
            "{text}"
        );
        assert!(lines[0].ends_with("is not a valid user name"), "{text}");
        assert!(
            lines[1].starts_with("  hint: rename `x\\r\\e[2K\\nweb1: ok\\x07`"),
            "{text}"
        );
        assert!(!text.lines().any(|l| l.starts_with("web1")), "{text}");
    }
}
