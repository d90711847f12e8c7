//! The desired state of one host: what rendering produces and planning consumes.
//!
//! Every item is a primitive resource with final content, owner and mode. Content rendered from a
//! secret is marked sensitive here and stays marked: its `Debug` and `Serialize` forms show only
//! `<sensitive>`, so no output path of plumb can print it by accident.
//!
//! Content rendered from secrets may also carry a *masked* text: the same file rendered again
//! with each secret value replaced by its placeholder (`<secret:NAME>`). It holds no secret by
//! construction (the second rendering never sees a value), and is what diffs show of such a
//! file.

use crate::yaml::Mark;
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// The placeholder every output shows instead of sensitive content.
pub use crate::secrets::REDACTED;

/// Largest masked text kept (and so shown as a diff) for one file: the host state file keeps a
/// copy of it, and that file is read back by every probe. Larger files show two hashes.
pub const MAX_MASKED_BYTES: usize = 64 * 1024;

/// Shortest secret value a masked text may be built around. The masked text replaces every
/// occurrence of a secret's value, ordinary text included, with its placeholder: a value of one
/// to three characters would be found all over a file, so such a file shows two hashes.
pub const MIN_MASKED_SECRET: usize = 4;

/// File content, with its sensitivity.
#[derive(Clone, PartialEq, Eq)]
pub struct Content {
    bytes: Arc<[u8]>,
    /// True when the content came from a secret (or the manifest marked it sensitive).
    pub sensitive: bool,
    /// The text with each secret value replaced by its placeholder (sensitive content only,
    /// and only when it could be made safely: see [`Content::sensitive_masked`]).
    masked: Option<Arc<str>>,
}

impl Content {
    /// Content that may be shown.
    pub fn plain(bytes: impl Into<Vec<u8>>) -> Self {
        Content {
            bytes: bytes.into().into(),
            sensitive: false,
            masked: None,
        }
    }

    /// Content that must never be shown.
    pub fn sensitive(bytes: impl Into<Vec<u8>>) -> Self {
        Content {
            bytes: bytes.into().into(),
            sensitive: true,
            masked: None,
        }
    }

    /// Content from secrets that may be shown masked: `masked` is the same content rendered
    /// with each secret's placeholder ([`crate::secrets::placeholder`]) in place of its value,
    /// and `used` the secrets (name, value) the real rendering read.
    ///
    /// The masked text is kept only when it is certainly free of every value in `used`: each
    /// value that also occurs as ordinary text is replaced by its placeholder as well (a
    /// password equal to a user name shows as the placeholder in both places), and the masked
    /// text is dropped (the content then shows two hashes) when a value is shorter than
    /// [`MIN_MASKED_SECRET`], when a value is still found after that, or when the masked text
    /// is larger than [`MAX_MASKED_BYTES`].
    pub fn sensitive_masked(
        bytes: impl Into<Vec<u8>>,
        masked: String,
        used: &[(String, String)],
    ) -> Self {
        let mut c = Content::sensitive(bytes);
        c.masked = scrub(masked, used).map(Arc::from);
        c
    }

    /// The same bytes, sensitive as a whole: no masked text (the manifest says the file is a
    /// secret in itself, not only the values it reads).
    pub fn wholly_sensitive(self) -> Self {
        Content {
            bytes: self.bytes,
            sensitive: true,
            masked: None,
        }
    }

    /// The masked text of sensitive content, when it has one. Holds no secret value.
    pub fn masked_text(&self) -> Option<&str> {
        if self.sensitive {
            self.masked.as_deref()
        } else {
            None
        }
    }

    /// The raw bytes. Callers that print must check [`Content::sensitive`] first.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Hex SHA-256 of the bytes (safe to show even for sensitive content).
    pub fn sha256(&self) -> String {
        sha256_hex(&self.bytes)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The content as text for display, or `None` if sensitive or not UTF-8.
    pub fn display_text(&self) -> Option<&str> {
        if self.sensitive {
            None
        } else {
            std::str::from_utf8(&self.bytes).ok()
        }
    }
}

/// `masked` with every value of `used` replaced by its placeholder, or `None` when that cannot
/// be made certain (see [`Content::sensitive_masked`]).
fn scrub(mut masked: String, used: &[(String, String)]) -> Option<String> {
    if used.iter().any(|(_, v)| v.len() < MIN_MASKED_SECRET) {
        return None;
    }
    // Longest first: a value that holds another is replaced whole.
    let mut by_len: Vec<&(String, String)> = used.iter().collect();
    by_len.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    for (name, value) in &by_len {
        if masked.contains(value.as_str()) {
            masked = masked.replace(value.as_str(), &crate::secrets::placeholder(name));
        }
    }
    // A replacement can itself form a value again (a value that looks like a placeholder, or
    // that straddles one): then no masked text at all.
    if by_len.iter().any(|(_, v)| masked.contains(v.as_str())) || masked.len() > MAX_MASKED_BYTES {
        return None;
    }
    Some(masked)
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sensitive {
            write!(f, "Content({REDACTED}, sha256={})", self.sha256())
        } else {
            write!(f, "Content({:?})", String::from_utf8_lossy(&self.bytes))
        }
    }
}

impl Serialize for Content {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.display_text() {
            Some(text) => s.serialize_str(text),
            None if self.sensitive => s.serialize_str(REDACTED),
            None => s.serialize_str(&format!("<{} bytes of binary content>", self.len())),
        }
    }
}

/// Where a desired resource comes from: the manifest document, and the composite that expanded
/// into it, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// Manifest file, relative to the repo.
    pub file: PathBuf,
    /// Position of the manifest document (its `kind:` line).
    pub mark: Mark,
    /// `Kind/name` of the composite that produced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.mark.line)?;
        if let Some(v) = &self.via {
            write!(f, " (via {v})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// The masked text is checked free of every value read, ordinary text included, or is not
    /// kept at all.
    #[test]
    fn a_masked_text_never_holds_a_value_it_was_rendered_around() {
        // A value that is also ordinary text is masked there too; the longer value first.
        let c = Content::sensitive_masked(
            "user: hunter22\npw: hunter22\nother: hunter22-long\n",
            "user: hunter22\npw: <secret:pw>\nother: hunter22-long\n".into(),
            &used(&[("pw", "hunter22"), ("long", "hunter22-long")]),
        );
        assert_eq!(
            c.masked_text(),
            Some("user: <secret:pw>\npw: <secret:pw>\nother: <secret:long>\n")
        );
        // A multi-line value is masked whole.
        let key = "-----BEGIN-----\nabcdef\n-----END-----";
        let c = Content::sensitive_masked(
            format!("k: {key}\n"),
            format!("k: <secret:k>\ncopy: {key}\n"),
            &used(&[("k", key)]),
        );
        assert_eq!(c.masked_text(), Some("k: <secret:k>\ncopy: <secret:k>\n"));
        // Too short to mask safely, equal to its own placeholder, or too large: none.
        for (masked, pairs) in [
            ("pw: <secret:a>\n".to_string(), used(&[("a", "abc")])),
            ("pw: <secret:a>\n".to_string(), used(&[("a", "")])),
            ("v: <secret:a>\n".to_string(), used(&[("a", "<secret:a>")])),
            (
                "x".repeat(MAX_MASKED_BYTES + 1),
                used(&[("a", "long enough")]),
            ),
        ] {
            let c = Content::sensitive_masked("real", masked, &pairs);
            assert!(c.sensitive && c.masked_text().is_none());
        }
        // Plain content has none; a file sensitive as a whole loses its own.
        assert!(Content::plain("x").masked_text().is_none());
        let c = Content::sensitive_masked("a", "b".into(), &[]);
        assert_eq!(c.masked_text(), Some("b"));
        assert!(c.wholly_sensitive().masked_text().is_none());
    }
}
