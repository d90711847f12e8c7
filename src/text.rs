//! Control characters: the one place that decides which text a field may hold and how text
//! from a repo or a host is shown on a terminal.
//!
//! Everything plumb reads from a repo ends up in a shell script run as root or on an operator's
//! terminal, and everything it reads from a host ends up on the terminal. A newline in a name can
//! end a script line and start another; an escape sequence can repaint the terminal or forge an
//! "ok" line. So:
//!
//! - validation refuses control characters in every field ([`check`]), allowing newline and tab
//!   only in fields that are multi-line by design (shell commands, descriptions: [`TextClass::Script`])
//!   and newline, tab and CR in file content ([`TextClass::Content`]);
//! - every human-facing output passes untrusted text through [`escape`] (one line) or
//!   [`escape_multiline`] (keeps newlines and tabs), which show control characters as visible
//!   escapes (`\e`, `\r`, `\x07`, `\u{85}`).

use crate::yaml::{Mark, Node, NodeValue};
use std::borrow::Cow;
use std::fmt;

/// What a field may hold besides printable text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextClass {
    /// A name, path, address, key or any other one-line value: no control character at all.
    Line,
    /// A shell command or free text written over several lines: newline and tab allowed.
    Script,
    /// File content given inline: newline, tab and CR allowed.
    Content,
}

impl TextClass {
    fn allows(self, c: char) -> bool {
        match self {
            TextClass::Line => false,
            TextClass::Script => matches!(c, '\n' | '\t'),
            TextClass::Content => matches!(c, '\n' | '\t' | '\r'),
        }
    }

    /// What the class allows, for messages.
    fn allowed(self) -> &'static str {
        match self {
            TextClass::Line => "no control characters (this is a single-line field)",
            TextClass::Script => "newlines and tabs, but no other control characters",
            TextClass::Content => {
                "newlines, tabs and carriage returns, but no other control characters"
            }
        }
    }
}

/// True for characters that must never reach a script or a terminal unescaped: C0 controls
/// (NUL to US, newline and tab included), DEL, C1 controls (U+0080 to U+009F), and the Unicode
/// line separators and bidirectional overrides that can make a terminal show text other than
/// what is there.
pub fn is_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// A control character where a field does not allow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlChar {
    /// The character.
    pub ch: char,
    /// Its position, in characters from the start of the text (0-based).
    pub index: usize,
    /// The field's class.
    pub class: TextClass,
}

impl ControlChar {
    /// A short name of the character (`newline`, `ESC`, `U+0085`).
    pub fn name(&self) -> String {
        char_name(self.ch)
    }
}

fn char_name(c: char) -> String {
    match c {
        '\0' => "NUL".into(),
        '\t' => "tab".into(),
        '\n' => "newline".into(),
        '\r' => "carriage return".into(),
        '\x1b' => "ESC".into(),
        '\x7f' => "DEL".into(),
        c => format!("U+{:04X}", c as u32),
    }
}

impl fmt::Display for ControlChar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "contains a control character ({} shown as `{}`) at character {}; this field allows {}",
            self.name(),
            escape(&self.ch.to_string()),
            self.index + 1,
            self.class.allowed()
        )
    }
}

impl std::error::Error for ControlChar {}

/// Checks that `text` holds no control character its class does not allow.
pub fn check(text: &str, class: TextClass) -> Result<(), ControlChar> {
    match text
        .chars()
        .enumerate()
        .find(|(_, c)| is_control(*c) && !class.allows(*c))
    {
        Some((index, ch)) => Err(ControlChar { ch, index, class }),
        None => Ok(()),
    }
}

/// True when `text` holds no control character at all.
pub fn is_clean(text: &str) -> bool {
    check(text, TextClass::Line).is_ok()
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x1b' => out.push_str("\\e"),
        '\0' => out.push_str("\\0"),
        c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
        c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
    }
}

fn escape_keeping<'a>(text: &'a str, keep: &[char]) -> Cow<'a, str> {
    if !text.chars().any(|c| is_control(c) && !keep.contains(&c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_control(c) && !keep.contains(&c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Text for one line of terminal output: every control character, newline included, is shown
/// as a visible escape (`\n`, `\e`, `\x07`), so the text can neither start a line of its own
/// nor send an escape sequence.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_keeping(text, &[])
}

/// Text that is multi-line by design (a diff, an error with a command's output): newlines and
/// tabs stay, every other control character (CR, ESC, ...) is shown escaped.
pub fn escape_multiline(text: &str) -> Cow<'_, str> {
    escape_keeping(text, &['\n', '\t'])
}

/// [`escape_multiline`], with every line after the first indented by `indent`: output that
/// holds another party's text over several lines keeps it visibly inside its block, so it
/// cannot pass for a line of plumb's own.
pub fn escape_block(text: &str, indent: &str) -> String {
    let escaped = escape_multiline(text.trim_end_matches('\n'));
    let mut out = String::with_capacity(escaped.len() + 16);
    for (i, line) in escaped.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            out.push_str(indent);
        }
        out.push_str(line);
    }
    out
}

/// Text for an HTML page, in an element or a quoted attribute: `&`, `<`, `>`, `"` and `'` as
/// entities, and control characters shown escaped as [`escape_multiline`] does (newlines and
/// tabs kept).
pub fn html(text: &str) -> String {
    let visible = escape_multiline(text);
    let mut out = String::with_capacity(visible.len() + 16);
    for c in visible.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A control character found in a YAML document, with where and in which field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundControl {
    /// Field path (`env.KEY`, `roles[0].name`); for a mapping key, the path of that key.
    pub field: String,
    /// Position of the scalar or key.
    pub mark: Mark,
    /// True when the character is in a mapping key rather than a value.
    pub in_key: bool,
    /// The character and the class of the field.
    pub found: ControlChar,
}

/// Walks a document and reports every mapping key and scalar holding a control character its
/// field does not allow. `class_of` gives the class of a value from its field path, as segments
/// (mapping keys, and `[i]` for sequence items); mapping keys are always [`TextClass::Line`].
pub fn walk_document(doc: &Node, class_of: &dyn Fn(&[String]) -> TextClass) -> Vec<FoundControl> {
    let mut out = Vec::new();
    walk(doc, &mut Vec::new(), class_of, &mut out);
    out
}

/// A field path from its segments: `env.KEY`, `roles[0].name`.
pub fn field_path(segments: &[String]) -> String {
    let mut out = String::new();
    for s in segments {
        if !out.is_empty() && !s.starts_with('[') {
            out.push('.');
        }
        out.push_str(&escape(s));
    }
    out
}

fn walk(
    node: &Node,
    segs: &mut Vec<String>,
    class_of: &dyn Fn(&[String]) -> TextClass,
    out: &mut Vec<FoundControl>,
) {
    match &node.value {
        NodeValue::Scalar { text, .. } => {
            if let Err(found) = check(text, class_of(segs)) {
                out.push(FoundControl {
                    field: field_path(segs),
                    mark: node.mark,
                    in_key: false,
                    found,
                });
            }
        }
        NodeValue::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                segs.push(format!("[{i}]"));
                walk(item, segs, class_of, out);
                segs.pop();
            }
        }
        NodeValue::Map(entries) => {
            for (k, v) in entries {
                // Keys name fields, vars and env entries: one line, always. A key that is not
                // a scalar (`? [a, b]`) is walked like a value, as a single-line field.
                let key_text = match &k.value {
                    NodeValue::Scalar { text, .. } => text.clone(),
                    _ => {
                        walk(k, segs, &|_| TextClass::Line, out);
                        continue;
                    }
                };
                segs.push(key_text);
                if let Some(key_text) = segs.last()
                    && let Err(found) = check(key_text, TextClass::Line)
                {
                    out.push(FoundControl {
                        field: field_path(segs),
                        mark: k.mark,
                        in_key: true,
                        found,
                    });
                }
                walk(v, segs, class_of, out);
                segs.pop();
            }
        }
    }
}

/// True when `path` is `prefix` followed by `.something` or `[i]` (a value below it).
pub fn is_below(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

#[cfg(test)]
mod tests {
    #[test]
    fn html_escapes_markup_and_control_characters() {
        assert_eq!(
            super::html("<script>alert('x' & \"y\")</script>\x1b[2J\n"),
            "&lt;script&gt;alert(&#39;x&#39; &amp; &quot;y&quot;)&lt;/script&gt;\\e[2J\n"
        );
        assert_eq!(super::html("plain"), "plain");
    }

    use super::*;

    #[test]
    fn every_c0_c1_and_del_is_a_control() {
        for c in (0u32..0x20).chain([0x7f]).chain(0x80..0xa0) {
            let c = char::from_u32(c).unwrap();
            assert!(is_control(c), "{c:?}");
            assert!(check(&format!("a{c}b"), TextClass::Line).is_err(), "{c:?}");
        }
        for c in ['a', ' ', '/', 'é', '\u{a0}', '中', '\\'] {
            assert!(!is_control(c), "{c:?}");
        }
        assert!(is_control('\u{202e}'));
        assert!(is_control('\u{2028}'));
    }

    #[test]
    fn classes_allow_what_they_say() {
        assert!(check("a\nb\tc", TextClass::Script).is_ok());
        assert!(check("a\r\nb", TextClass::Script).is_err());
        assert!(check("a\r\nb\t", TextClass::Content).is_ok());
        let e = check("a\x1b[2Jb", TextClass::Content).unwrap_err();
        assert_eq!((e.ch, e.index), ('\x1b', 1));
        let msg = e.to_string();
        assert!(msg.contains("ESC shown as `\\e`"), "{msg}");
        assert!(msg.contains("character 2"), "{msg}");
        assert!(!msg.contains('\x1b'), "{msg}");
        let e = check("x\ny", TextClass::Line).unwrap_err();
        assert!(e.to_string().contains("newline"), "{e}");
        assert!(check("\u{85}", TextClass::Content).is_err());
    }

    #[test]
    fn escape_shows_every_control_visibly() {
        assert_eq!(escape("plain/path é"), "plain/path é");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\nb\rc\td\x1b[31me\x07\0\x7f"),
            "a\\nb\\rc\\td\\e[31me\\x07\\0\\x7f"
        );
        assert_eq!(escape("\u{85}\u{9f}\u{202e}"), "\\x85\\x9f\\u{202e}");
        assert_eq!(escape_multiline("a\n\tb\r\n\x1bc"), "a\n\tb\\r\n\\ec");
        let forged = "boom\r\x1b[2K  web1 ok\nweb2 unchanged";
        let one = escape(forged);
        assert!(!one.chars().any(is_control), "{one}");
        assert_eq!(one.lines().count(), 1);
        assert_eq!(
            escape_block(forged, "    "),
            "boom\\r\\e[2K  web1 ok\n    web2 unchanged"
        );
    }

    #[test]
    fn the_walk_finds_keys_and_values_with_their_fields() {
        let doc = crate::yaml::parse_single(
            "name: \"a\\eb\"\nenv:\n  \"K\\nX\": v\n  OK: \"x\\ty\"\ncontent: \"l1\\nl2\\r\\n\"\nlist: [ok, \"b\\x07\"]\n",
        )
        .unwrap();
        let found = walk_document(&doc, &|p| {
            if field_path(p) == "content" {
                TextClass::Content
            } else {
                TextClass::Line
            }
        });
        let fields: Vec<(&str, bool, usize)> = found
            .iter()
            .map(|f| (f.field.as_str(), f.in_key, f.mark.line))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("name", false, 1),
                ("env.K\\nX", true, 3),
                ("env.OK", false, 4),
                ("list[1]", false, 6)
            ]
        );
        assert!(is_below("vars.a", "vars"));
        assert!(is_below("vars[0]", "vars"));
        assert!(!is_below("vars", "vars"));
        assert!(!is_below("variables.a", "vars"));
    }
}
