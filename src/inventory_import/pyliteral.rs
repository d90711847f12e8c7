//! The two Python routines Ansible's INI inventory parser leans on: `shlex.split(line,
//! comments=True)` for host lines, and `ast.literal_eval` for every value (what it cannot
//! evaluate stays the string it was). Reimplemented for the subset literal_eval accepts:
//! strings (with prefixes, escapes, implicit concatenation), numbers (underscores, hex, octal,
//! binary, floats, a unary sign), `True`/`False`/`None`, lists, tuples, sets and dicts, `...`,
//! and comments. Anything else is "not a literal", exactly as Python would say.

use serde_json::{Map, Number, Value};

/// POSIX `shlex.split(s, comments=True)`.
pub fn shlex_split(s: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut token = String::new();
    let mut in_token = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                if in_token {
                    out.push(std::mem::take(&mut token));
                    in_token = false;
                }
                i += 1;
            }
            '#' => {
                // A comment runs to the end of the line and ends the token.
                if in_token {
                    out.push(std::mem::take(&mut token));
                }
                return Ok(out);
            }
            '\'' => {
                in_token = true;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("no closing quotation".into()),
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            token.push(ch);
                            i += 1;
                        }
                    }
                }
            }
            '"' => {
                in_token = true;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("no closing quotation".into()),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => match chars.get(i + 1) {
                            Some(&n) if matches!(n, '"' | '\\' | '$' | '`' | '\n') => {
                                if n != '\n' {
                                    token.push(n);
                                }
                                i += 2;
                            }
                            Some(_) => {
                                token.push('\\');
                                i += 1;
                            }
                            None => return Err("no closing quotation".into()),
                        },
                        Some(&ch) => {
                            token.push(ch);
                            i += 1;
                        }
                    }
                }
            }
            '\\' => {
                in_token = true;
                match chars.get(i + 1) {
                    Some('\n') => i += 2,
                    Some(&n) => {
                        token.push(n);
                        i += 2;
                    }
                    None => return Err("no escaped character".into()),
                }
            }
            _ => {
                in_token = true;
                token.push(c);
                i += 1;
            }
        }
    }
    if in_token {
        out.push(token);
    }
    Ok(out)
}

/// Ansible's `_parse_value`: `ast.literal_eval(v)`, or `v` itself when that fails.
pub fn parse_value(v: &str) -> Value {
    literal_eval(v).unwrap_or_else(|| Value::String(v.to_string()))
}

/// `ast.literal_eval`, or `None` where Python raises.
pub fn literal_eval(s: &str) -> Option<Value> {
    let mut p = P {
        c: s.chars().collect(),
        i: 0,
        depth: 0,
    };
    // Python parses in "eval" mode: leading whitespace is an indentation error; `v` has been
    // stripped by the caller anyway.
    if p.c.first().is_some_and(|c| *c == ' ' || *c == '\t') {
        return None;
    }
    let v = p.expr()?;
    p.skip_ws(true);
    (p.i == p.c.len()).then_some(v)
}

/// A literal as Python sees it, before the JSON view (sets and tuples become lists).
enum Lit {
    Value(Value),
    Complex(String),
}

struct P {
    c: Vec<char>,
    i: usize,
    depth: usize,
}

impl P {
    fn peek(&self) -> Option<char> {
        self.c.get(self.i).copied()
    }

    /// Skips spaces and comments; inside brackets newlines too.
    fn skip_ws(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\x0c' => self.i += 1,
                '\n' | '\r' if newlines || self.depth > 0 => self.i += 1,
                '\\' if self.c.get(self.i + 1) == Some(&'\n') => self.i += 2,
                '#' => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn expr(&mut self) -> Option<Value> {
        match self.lit()? {
            Lit::Value(v) => Some(v),
            // literal_eval returns a complex; Ansible turns it into its str().
            Lit::Complex(s) => Some(Value::String(s)),
        }
    }

    fn lit(&mut self) -> Option<Lit> {
        self.depth += 1;
        if self.depth > 200 {
            return None;
        }
        self.skip_ws(false);
        let out = self.lit_inner();
        self.depth -= 1;
        out
    }

    fn lit_inner(&mut self) -> Option<Lit> {
        let c = self.peek()?;
        // Unary signs apply to numbers only.
        if c == '-' || c == '+' {
            self.i += 1;
            self.skip_ws(false);
            let inner = self.lit()?;
            return match inner {
                Lit::Value(Value::Number(n)) => {
                    if c == '+' {
                        Some(Lit::Value(Value::Number(n)))
                    } else if let Some(i) = n.as_i64() {
                        Some(Lit::Value(Value::from(i.checked_neg()?)))
                    } else if let Some(u) = n.as_u64() {
                        let i = i64::try_from(u).ok()?;
                        Some(Lit::Value(Value::from(-i)))
                    } else {
                        let f = -n.as_f64()?;
                        Some(Lit::Value(Value::Number(Number::from_f64(f)?)))
                    }
                }
                Lit::Complex(s) => Some(Lit::Complex(if c == '-' {
                    format!("(-{})", s.trim_matches(['(', ')']))
                } else {
                    s
                })),
                _ => None,
            };
        }
        if c == '[' {
            return self.seq(']').map(|v| Lit::Value(Value::Array(v)));
        }
        if c == '(' {
            self.i += 1;
            self.skip_ws(true);
            if self.peek() == Some(')') {
                self.i += 1;
                return Some(Lit::Value(Value::Array(Vec::new())));
            }
            let first = self.expr()?;
            self.skip_ws(true);
            match self.peek()? {
                ')' => {
                    self.i += 1;
                    return Some(Lit::Value(first));
                }
                ',' => {
                    self.i += 1;
                    let mut items = vec![first];
                    items.extend(self.items(')')?);
                    return Some(Lit::Value(Value::Array(items)));
                }
                _ => return None,
            }
        }
        if c == '{' {
            return self.dict_or_set();
        }
        if c == '.' && self.c.get(self.i + 1) == Some(&'.') && self.c.get(self.i + 2) == Some(&'.')
        {
            self.i += 3;
            return Some(Lit::Value(Value::String("...".into())));
        }
        if c.is_ascii_digit()
            || (c == '.' && self.c.get(self.i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            return self.number();
        }
        if c.is_alphabetic() || c == '_' {
            let start = self.i;
            while let Some(ch) = self.peek() {
                if ch.is_alphanumeric() || ch == '_' {
                    self.i += 1;
                } else {
                    break;
                }
            }
            let word: String = self.c[start..self.i].iter().collect();
            match word.as_str() {
                "True" => return Some(Lit::Value(Value::Bool(true))),
                "False" => return Some(Lit::Value(Value::Bool(false))),
                "None" => return Some(Lit::Value(Value::Null)),
                _ => {}
            }
            // A string prefix?
            let lower = word.to_ascii_lowercase();
            if matches!(lower.as_str(), "r" | "u" | "b" | "br" | "rb")
                && matches!(self.peek(), Some('\'') | Some('"'))
            {
                return self.strings(Some(lower));
            }
            return None;
        }
        if c == '\'' || c == '"' {
            return self.strings(None);
        }
        None
    }

    fn items(&mut self, close: char) -> Option<Vec<Value>> {
        let mut items = Vec::new();
        loop {
            self.skip_ws(true);
            if self.peek()? == close {
                self.i += 1;
                return Some(items);
            }
            items.push(self.expr()?);
            self.skip_ws(true);
            match self.peek()? {
                ',' => self.i += 1,
                ch if ch == close => {
                    self.i += 1;
                    return Some(items);
                }
                _ => return None,
            }
        }
    }

    fn seq(&mut self, close: char) -> Option<Vec<Value>> {
        self.i += 1;
        self.items(close)
    }

    fn dict_or_set(&mut self) -> Option<Lit> {
        self.i += 1;
        self.skip_ws(true);
        if self.peek()? == '}' {
            self.i += 1;
            return Some(Lit::Value(Value::Object(Map::new())));
        }
        let first = self.expr()?;
        self.skip_ws(true);
        if self.peek()? == ':' {
            let mut m = Map::new();
            self.i += 1;
            let v = self.expr()?;
            m.insert(key_text(&first)?, v);
            loop {
                self.skip_ws(true);
                match self.peek()? {
                    '}' => {
                        self.i += 1;
                        return Some(Lit::Value(Value::Object(m)));
                    }
                    ',' => {
                        self.i += 1;
                        self.skip_ws(true);
                        if self.peek()? == '}' {
                            self.i += 1;
                            return Some(Lit::Value(Value::Object(m)));
                        }
                        let k = self.expr()?;
                        self.skip_ws(true);
                        if self.peek()? != ':' {
                            return None;
                        }
                        self.i += 1;
                        let v = self.expr()?;
                        m.insert(key_text(&k)?, v);
                    }
                    _ => return None,
                }
            }
        }
        // A set: unordered in Python, so its list order in Ansible is not reproducible.
        None
    }

    fn strings(&mut self, mut prefix: Option<String>) -> Option<Lit> {
        let mut out = String::new();
        let mut bytes_kind: Option<bool> = None;
        loop {
            let p = prefix.take().unwrap_or_default();
            let raw = p.contains('r');
            let is_bytes = p.contains('b');
            match bytes_kind {
                None => bytes_kind = Some(is_bytes),
                // Mixing bytes and str is a SyntaxError.
                Some(b) if b != is_bytes => return None,
                _ => {}
            }
            out.push_str(&self.one_string(raw, is_bytes)?);
            // Adjacent literals concatenate.
            let save = self.i;
            self.skip_ws(false);
            let start = self.i;
            while let Some(ch) = self.peek() {
                if ch.is_ascii_alphabetic() && self.i - start < 2 {
                    self.i += 1;
                } else {
                    break;
                }
            }
            let word: String = self.c[start..self.i]
                .iter()
                .collect::<String>()
                .to_ascii_lowercase();
            if matches!(self.peek(), Some('\'') | Some('"'))
                && matches!(word.as_str(), "" | "r" | "u" | "b" | "br" | "rb")
            {
                prefix = Some(word);
                continue;
            }
            self.i = save;
            return Some(Lit::Value(Value::String(out)));
        }
    }

    fn one_string(&mut self, raw: bool, is_bytes: bool) -> Option<String> {
        let q = self.peek()?;
        let triple = self.c.get(self.i + 1) == Some(&q) && self.c.get(self.i + 2) == Some(&q);
        self.i += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            if c == q {
                if !triple {
                    self.i += 1;
                    return Some(out);
                }
                if self.c.get(self.i + 1) == Some(&q) && self.c.get(self.i + 2) == Some(&q) {
                    self.i += 3;
                    return Some(out);
                }
            }
            if (c == '\n') && !triple {
                return None;
            }
            if is_bytes && !c.is_ascii() {
                return None;
            }
            if c == '\\' {
                let n = *self.c.get(self.i + 1)?;
                if raw {
                    out.push('\\');
                    out.push(n);
                    self.i += 2;
                    continue;
                }
                self.i += 2;
                match n {
                    '\n' => {}
                    '\\' => out.push('\\'),
                    '\'' => out.push('\''),
                    '"' => out.push('"'),
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'v' => out.push('\x0b'),
                    '0'..='7' => {
                        let mut v = n.to_digit(8)?;
                        for _ in 0..2 {
                            match self.peek().and_then(|d| d.to_digit(8)) {
                                Some(d) => {
                                    v = v * 8 + d;
                                    self.i += 1;
                                }
                                None => break,
                            }
                        }
                        out.push(char::from_u32(v)?);
                    }
                    'x' => out.push(self.hex_escape(2)?),
                    'u' if !is_bytes => out.push(self.hex_escape(4)?),
                    'U' if !is_bytes => out.push(self.hex_escape(8)?),
                    // \N{NAME} needs Unicode's name table: not a literal we can honour.
                    'N' if !is_bytes => return None,
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
                continue;
            }
            out.push(c);
            self.i += 1;
        }
    }

    fn hex_escape(&mut self, n: usize) -> Option<char> {
        let s: String = self.c.get(self.i..self.i + n)?.iter().collect();
        let v = u32::from_str_radix(&s, 16).ok()?;
        self.i += n;
        char::from_u32(v)
    }

    fn number(&mut self) -> Option<Lit> {
        let start = self.i;
        while let Some(c) = self.peek() {
            let prev = if self.i > start {
                self.c[self.i - 1]
            } else {
                ' '
            };
            if c.is_ascii_alphanumeric()
                || c == '_'
                || c == '.'
                || ((c == '+' || c == '-')
                    && (prev == 'e' || prev == 'E')
                    && !self.c[start..self.i].iter().any(|d| matches!(d, 'x' | 'X')))
            {
                self.i += 1;
            } else {
                break;
            }
        }
        let text: String = self.c[start..self.i].iter().collect();
        python_number(&text)
    }
}

fn key_text(k: &Value) -> Option<String> {
    Some(match k {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // Lists (from tuples) as keys: JSON cannot say it.
        _ => return None,
    })
}

fn python_number(t: &str) -> Option<Lit> {
    let underscores_ok = |s: &str| !s.starts_with('_') && !s.ends_with('_') && !s.contains("__");
    let lower = t.to_ascii_lowercase();
    if let Some(imag) = lower.strip_suffix('j') {
        // A complex literal; Ansible keeps str(complex).
        let f = parse_float(imag)?;
        return Some(Lit::Complex(format!(
            "{}j",
            py_float_repr(f).trim_end_matches(".0")
        )));
    }
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = lower.strip_prefix(prefix) {
            let rest = rest.strip_prefix('_').unwrap_or(rest);
            if rest.is_empty() || !underscores_ok(rest) {
                return None;
            }
            let clean: String = rest.chars().filter(|c| *c != '_').collect();
            let v = u64::from_str_radix(&clean, radix).ok()?;
            return Some(Lit::Value(Value::from(v)));
        }
    }
    if lower.chars().all(|c| c.is_ascii_digit() || c == '_') {
        if !underscores_ok(&lower) {
            return None;
        }
        let clean: String = lower.chars().filter(|c| *c != '_').collect();
        // Leading zeros are only allowed for zero itself.
        if clean.len() > 1 && clean.starts_with('0') && clean.chars().any(|c| c != '0') {
            return None;
        }
        return match clean.parse::<u64>() {
            Ok(v) => Some(Lit::Value(Value::from(v))),
            Err(_) => None,
        };
    }
    let f = parse_float(&lower)?;
    Some(Lit::Value(Value::Number(Number::from_f64(f)?)))
}

fn parse_float(t: &str) -> Option<f64> {
    if t.is_empty() {
        return None;
    }
    let (mantissa, exp) = match t.find('e') {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let ok_digits = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_digit() || c == '_')
            && !s.starts_with('_')
            && !s.ends_with('_')
            && !s.contains("__")
    };
    match mantissa.split_once('.') {
        Some((a, b)) => {
            if (a.is_empty() && b.is_empty())
                || (!a.is_empty() && !ok_digits(a))
                || (!b.is_empty() && !ok_digits(b))
            {
                return None;
            }
        }
        None => {
            if !ok_digits(mantissa) || exp.is_none() {
                return None;
            }
        }
    }
    if let Some(e) = exp {
        let d = e.strip_prefix(['+', '-']).unwrap_or(e);
        if !ok_digits(d) {
            return None;
        }
    }
    t.replace('_', "").parse().ok()
}

fn py_float_repr(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shlex_like_python() {
        assert_eq!(
            shlex_split(r#"web1 a="x y" b='q#r' c=d#comment"#).unwrap(),
            ["web1", "a=x y", "b=q#r", "c=d"]
        );
        assert_eq!(
            shlex_split(r#"h x=a\ b y="\$z\n""#).unwrap(),
            ["h", "x=a b", r"y=$z\n"]
        );
        assert!(shlex_split("h a='x").is_err());
    }

    #[test]
    fn literals_like_python() {
        let cases = [
            ("5", json!(5)),
            ("-5", json!(-5)),
            ("1_000", json!(1000)),
            ("0x10", json!(16)),
            ("010", json!("010")),
            ("1.5", json!(1.5)),
            ("1e3", json!(1000.0)),
            ("True", json!(true)),
            ("true", json!("true")),
            ("None", Value::Null),
            ("'5'", json!("5")),
            ("\"a\" 'b'", json!("ab")),
            ("[1, 'two', (3, 4)]", json!([1, "two", [3, 4]])),
            ("{'a': 1, 2: [3]}", json!({"a": 1, "2": [3]})),
            ("5 # comment", json!(5)),
            ("foo # comment", json!("foo # comment")),
            ("r'\\d'", json!("\\d")),
            ("'\\x41\\n'", json!("A\n")),
            ("...", json!("...")),
            ("1j", json!("1j")),
            ("/usr/bin/python3", json!("/usr/bin/python3")),
            ("{'a': }", json!("{'a': }")),
            ("10.0.0.1", json!("10.0.0.1")),
        ];
        for (text, want) in cases {
            assert_eq!(parse_value(text), want, "{text}");
        }
    }
}
