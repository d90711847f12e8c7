//! POSIX sh quoting: every value plumb puts into a script sent to a host goes through [`quote`].

/// Quotes a string for POSIX sh: single quotes, with embedded single quotes escaped.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@,+%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `bytes` random bytes from the operating system, as lower-case hex: names a host user cannot
/// guess (temp files, the end markers of held sessions).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        // No OS randomness at all: fall back to the std hasher's per-process random keys.
        let h = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::time::SystemTime::now(),
        );
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (h >> ((i % 8) * 8)) as u8 ^ i as u8;
        }
    }
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_only_when_needed_and_escapes_quotes() {
        assert_eq!(quote("/etc/x.conf"), "/etc/x.conf");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn quoted_strings_survive_a_real_shell() {
        for s in [
            "plain",
            "with space",
            "quote'in",
            "$HOME `x` \"y\"",
            "tab\there",
            "new\nline",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }
}
