//! The desired state of one host: what rendering produces and planning consumes.
//!
//! Every item is a primitive resource with final content, owner and mode. Content rendered from a
//! secret is marked sensitive here and stays marked: its `Debug` and `Serialize` forms show only
//! `<sensitive>`, so no output path of plumb can print it by accident.

use crate::yaml::Mark;
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// The placeholder every output shows instead of sensitive content.
pub use crate::secrets::REDACTED;

/// File content, with its sensitivity.
#[derive(Clone, PartialEq, Eq)]
pub struct Content {
    bytes: Arc<[u8]>,
    /// True when the content came from a secret (or the manifest marked it sensitive).
    pub sensitive: bool,
}

impl Content {
    /// Content that may be shown.
    pub fn plain(bytes: impl Into<Vec<u8>>) -> Self {
        Content {
            bytes: bytes.into().into(),
            sensitive: false,
        }
    }

    /// Content that must never be shown.
    pub fn sensitive(bytes: impl Into<Vec<u8>>) -> Self {
        Content {
            bytes: bytes.into().into(),
            sensitive: true,
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
