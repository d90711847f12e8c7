//! Unified diffs of file content, coloured on a terminal. Sensitive content itself is never
//! diffed: a file rendered from secrets shows a masked diff (each secret value replaced by its
//! placeholder, see [`crate::plan::masked_diffs`]), other sensitive content (keys, files
//! marked sensitive as a whole) only the fact that it changed and the two hashes.

use similar::{ChangeTag, TextDiff};

/// A unified diff between two texts, with `a/` and `b/` headers naming the path.
pub fn unified(path: &str, old: &str, new: &str) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a{path}"), &format!("b{path}"))
        .to_string()
}

/// The marker a masked diff's headers carry, wherever its text goes (report, JSON, plan file).
pub const MASKED_MARK: &str = "(secrets masked)";

/// A unified diff between two masked texts, its headers marked [`MASKED_MARK`]; with
/// `old_unknown`, the old side is empty and its header says the previous content is not shown.
/// Empty when the masked texts are equal (only secret values changed).
pub fn masked(path: &str, old: &str, new: &str, old_unknown: bool) -> String {
    if old == new && !old_unknown {
        return String::new();
    }
    let old_header = if old_unknown {
        format!("a{path} (previous content not shown)")
    } else {
        format!("a{path} {MASKED_MARK}")
    };
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&old_header, &format!("b{path} {MASKED_MARK}"))
        .to_string()
}

/// The line shown for a masked diff that has no lines: the masked texts are the same, only
/// secret values changed.
pub fn secrets_only_line(path: &str, old: Option<&str>, new: &str) -> String {
    format!(
        "{path}: only secret values changed {MASKED_MARK} (sha256 {} -> {new})\n",
        old.unwrap_or("none")
    )
}

/// The line shown instead of a diff for sensitive content.
pub fn sensitive_line(path: &str, old: Option<&str>, new: &str) -> String {
    match old {
        Some(o) => format!("{path}: sensitive content changed (sha256 {o} -> {new})\n"),
        None => format!("{path}: sensitive content created (sha256 {new})\n"),
    }
}

/// Colours a unified diff for a terminal.
pub fn colourize(diff: &str) -> String {
    let mut out = String::with_capacity(diff.len() + 64);
    for line in diff.lines() {
        let colour = if line.starts_with("+++") || line.starts_with("---") {
            "\x1b[1m"
        } else if line.starts_with('+') {
            "\x1b[32m"
        } else if line.starts_with('-') {
            "\x1b[31m"
        } else if line.starts_with("@@") {
            "\x1b[36m"
        } else {
            ""
        };
        if colour.is_empty() {
            out.push_str(line);
        } else {
            out.push_str(colour);
            out.push_str(line);
            out.push_str("\x1b[0m");
        }
        out.push('\n');
    }
    out
}

/// Counts of inserted and deleted lines.
pub fn stats(old: &str, new: &str) -> (usize, usize) {
    let d = TextDiff::from_lines(old, new);
    let mut ins = 0;
    let mut del = 0;
    for c in d.iter_all_changes() {
        match c.tag() {
            ChangeTag::Insert => ins += 1,
            ChangeTag::Delete => del += 1,
            ChangeTag::Equal => {}
        }
    }
    (ins, del)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_diff_names_the_path_and_lines() {
        let d = unified("/etc/x.conf", "a\nb\nc\n", "a\nB\nc\n");
        assert!(d.contains("--- a/etc/x.conf"), "{d}");
        assert!(d.contains("+++ b/etc/x.conf"), "{d}");
        assert!(d.contains("-b\n+B\n"), "{d}");
        assert_eq!(stats("a\nb\n", "a\nc\nd\n"), (2, 1));
        assert!(colourize(&d).contains("\x1b[32m+B"));
    }
}
