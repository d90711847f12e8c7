//! What plumb manages on a host (`/var/lib/plumb/state`): the resources it wrote, with what is
//! needed to remove them once they leave the repo. Written by the apply script, read back by
//! the probe (only from plumb's own file) and trusted for pruning only then.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub use crate::model::inventory::DEFAULT_STATE_DIR as HOST_DIR;

/// One resource plumb manages on a host, with what is needed to remove it later.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Managed {
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Paths it wrote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Unit name (SystemdUnit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Compose project and folder (ComposeStack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_dir: Option<String>,
    /// True when the path is a directory (Directory).
    #[serde(default)]
    pub is_dir: bool,
    /// True when what plumb last wrote came from a secret: its old content is never shown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
    /// The masked texts of what plumb last wrote from secrets (each secret value replaced by
    /// its placeholder): the old side of the next masked diff, since the host's bytes may hold
    /// a secret plumb no longer knows (a rotated password) and are never shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked: Vec<MaskedCopy>,
}

/// The masked text of content plumb wrote, with the hash of the real bytes: shown as the old
/// side of a diff only while the host's file still hashes to `sha256`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskedCopy {
    /// Hex SHA-256 of the bytes written (not of the masked text).
    pub sha256: String,
    /// The masked text.
    pub text: String,
}

/// Largest masked text the host state keeps for one file (what plumb writes, and what it
/// accepts back).
pub const MAX_MASKED_COPY: usize = crate::model::desired::MAX_MASKED_BYTES;

/// Largest sum of the masked texts (and their hashes) the host state keeps: the file is read
/// back by every probe. Past it, files get no masked copy (their next diff shows the new
/// content only).
pub const MAX_MASKED_TOTAL: usize = 1024 * 1024;

/// The state file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// Format version.
    #[serde(default)]
    pub version: u32,
    /// Commit of the repo last applied (when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Resources managed.
    #[serde(default)]
    pub resources: Vec<Managed>,
}

impl HostState {
    /// Decodes the probe's `state` fact: `none` (no state file yet), `untrusted<TAB>what` (a
    /// state file plumb did not write: wrong owner, mode or type), or the file's base64.
    pub fn from_probe(fact: Option<&str>) -> Result<HostState, StateError> {
        let fact = fact.ok_or(StateError::Missing)?;
        if fact == "none" {
            return Ok(HostState::default());
        }
        if let Some(found) = fact.strip_prefix("untrusted\t") {
            return Err(StateError::Untrusted(found.to_string()));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(fact)
            .map_err(|e| StateError::Corrupt(format!("not base64: {e}")))?;
        let state: HostState = serde_json::from_slice(&bytes)
            .map_err(|e| StateError::Corrupt(format!("not a plumb state: {e}")))?;
        state.check()?;
        Ok(state)
    }

    /// Every path absolute and normalized, every name and kind free of control characters:
    /// the state file is plumb's own, but what it lists is removed as root.
    fn check(&self) -> Result<(), StateError> {
        for m in &self.resources {
            let bad_text = |t: &str| t.is_empty() || t.chars().any(char::is_control);
            if bad_text(&m.kind) || m.name.chars().any(char::is_control) {
                return Err(StateError::Corrupt(
                    "a resource kind or name holds a control character".into(),
                ));
            }
            let paths = m.paths.iter().chain(m.stack_dir.iter());
            for p in paths {
                if crate::model::values::check_abs_path(p, &[]).is_err()
                    || p.chars().any(char::is_control)
                {
                    return Err(StateError::Corrupt(
                        "a path is not absolute and normalized".into(),
                    ));
                }
            }
            if m.unit
                .as_deref()
                .is_some_and(|u| bad_text(u) || u.starts_with('-'))
            {
                return Err(StateError::Corrupt("a unit name is malformed".into()));
            }
        }
        // The masked copies are shown (escaped) in diffs: bounded as plumb writes them, each
        // tied to a well-formed hash.
        let mut total = 0usize;
        for c in self.resources.iter().flat_map(|m| &m.masked) {
            if c.sha256.len() != 64
                || !c
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(StateError::Corrupt(
                    "a masked copy's hash is not a SHA-256".into(),
                ));
            }
            if c.text.len() > MAX_MASKED_COPY {
                return Err(StateError::Corrupt(format!(
                    "a masked copy is larger than {MAX_MASKED_COPY} bytes"
                )));
            }
            total = total.saturating_add(c.text.len() + c.sha256.len());
        }
        if total > MAX_MASKED_TOTAL {
            return Err(StateError::Corrupt(format!(
                "the masked copies hold more than {MAX_MASKED_TOTAL} bytes"
            )));
        }
        Ok(())
    }

    /// The masked text of what plumb last wrote at `path`, if the host's file is still exactly
    /// that (`host_sha256`, as probed). Never built from the host's bytes, which may hold an
    /// old secret value. `None` when the file changed on the host since plumb wrote it, or
    /// plumb kept no masked copy of it (written by an older plumb, by hand, too large to keep).
    pub fn masked_copy(&self, path: &str, host_sha256: &str) -> Option<&str> {
        self.resources
            .iter()
            .filter(|m| m.paths.iter().any(|p| p == path))
            .flat_map(|m| &m.masked)
            .find(|c| c.sha256 == host_sha256)
            .map(|c| c.text.as_str())
    }

    /// True when `path` held content from a secret when plumb last wrote it.
    pub fn was_sensitive(&self, path: &str) -> bool {
        self.resources
            .iter()
            .any(|m| m.sensitive && m.paths.iter().any(|p| p == path))
    }

    /// The union of two states (written before applying, so an interrupted run still knows
    /// everything it may have created).
    pub fn union(&self, other: &HostState) -> HostState {
        let mut out = self.clone();
        for m in &other.resources {
            if !out
                .resources
                .iter()
                .any(|x| x.kind == m.kind && x.name == m.name)
            {
                out.resources.push(m.clone());
            }
        }
        out
    }

    /// JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// Why the host's state file cannot be used. Nothing is pruned and the file is kept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The probe did not report it.
    #[error("the probe reported no host state")]
    Missing,
    /// Not plumb's own file.
    #[error(
        "the host state file is not plumb's own ({0}); plumb trusts only a file it wrote (owned by the user it runs as, mode 0600, in a folder only that user can write) to decide what to remove. Find out who changed it, then delete it: plumb then prunes nothing and writes a new one"
    )]
    Untrusted(String),
    /// Unreadable.
    #[error(
        "the host state file cannot be read ({0}); nothing was pruned and it was left as is. Move it aside (plumb then prunes nothing and writes a new one), or restore it from /var/lib/plumb/backup"
    )]
    Corrupt(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn no_state_file_means_nothing_managed_yet() {
        assert_eq!(
            HostState::from_probe(Some("none")),
            Ok(HostState::default())
        );
        let state = HostState {
            version: 1,
            commit: Some("abc".into()),
            resources: vec![Managed {
                kind: "File".into(),
                name: "/etc/a".into(),
                paths: vec!["/etc/a".into()],
                ..Default::default()
            }],
        };
        assert_eq!(
            HostState::from_probe(Some(&b64(&state.to_json()))),
            Ok(state)
        );
    }

    /// A state file that does not decode is an error for the host, never "nothing managed":
    /// nothing is pruned, the file is kept (converge stops before applying) and the message
    /// says what to do.
    #[test]
    fn a_state_file_that_does_not_decode_is_an_error_that_says_what_to_do() {
        let cases = [
            ("%%% not base64".to_string(), "not base64"),
            (b64("not json"), "not a plumb state"),
            (b64("{\"resources\": 3}"), "not a plumb state"),
            (
                b64("{\"resources\":[{\"kind\":\"File\",\"name\":\"x\",\"paths\":[\"etc/x\"]}]}"),
                "not absolute",
            ),
            (
                b64(
                    "{\"resources\":[{\"kind\":\"File\",\"name\":\"x\",\"paths\":[\"/etc/../x\"]}]}",
                ),
                "not absolute",
            ),
            (
                b64("{\"resources\":[{\"kind\":\"File\",\"name\":\"a\\nb\",\"paths\":[]}]}"),
                "control character",
            ),
            (
                b64("{\"resources\":[{\"kind\":\"\",\"name\":\"a\"}]}"),
                "control character",
            ),
            (
                b64(
                    "{\"resources\":[{\"kind\":\"SystemdUnit\",\"name\":\"a\",\"unit\":\"--now\"}]}",
                ),
                "unit name",
            ),
        ];
        for (fact, why) in cases {
            let e = HostState::from_probe(Some(&fact)).unwrap_err();
            assert!(matches!(e, StateError::Corrupt(_)), "{fact}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(why), "{fact}: {msg}");
            assert!(
                msg.contains("nothing was pruned and it was left as is")
                    && msg.contains("Move it aside"),
                "{msg}"
            );
        }
        let e = HostState::from_probe(Some("untrusted\tfolder directory:1001:755")).unwrap_err();
        assert_eq!(e, StateError::Untrusted("folder directory:1001:755".into()));
        assert!(e.to_string().contains("then delete it"));
        assert_eq!(HostState::from_probe(None), Err(StateError::Missing));
    }

    fn with_copy(sha256: &str, text: &str) -> HostState {
        HostState {
            version: 1,
            commit: None,
            resources: vec![Managed {
                kind: "File".into(),
                name: "/etc/a".into(),
                paths: vec!["/etc/a".into()],
                sensitive: true,
                masked: vec![MaskedCopy {
                    sha256: sha256.into(),
                    text: text.into(),
                }],
                ..Default::default()
            }],
        }
    }

    /// A masked copy is the old side of a diff only for its own path and only while the
    /// host's file hashes to what plumb wrote.
    #[test]
    fn a_masked_copy_is_found_by_path_and_the_hash_of_what_was_written() {
        let sha = "a".repeat(64);
        let state = with_copy(&sha, "pw: <secret:x>\n");
        let back = HostState::from_probe(Some(&b64(&state.to_json()))).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.masked_copy("/etc/a", &sha), Some("pw: <secret:x>\n"));
        assert_eq!(back.masked_copy("/etc/a", &"b".repeat(64)), None);
        assert_eq!(back.masked_copy("/etc/b", &sha), None);
        // A state written before masked copies decodes, with none.
        let old = b64(
            "{\"version\":1,\"resources\":[{\"kind\":\"File\",\"name\":\"/etc/a\",\"paths\":[\"/etc/a\"],\"sensitive\":true}]}",
        );
        let old = HostState::from_probe(Some(&old)).unwrap();
        assert_eq!(old.masked_copy("/etc/a", &sha), None);
    }

    /// The state file comes from a host: a masked copy that plumb would not have written (a
    /// malformed hash, an unknown field, too large, too many) makes it unreadable, as any other
    /// damage does.
    #[test]
    fn hostile_masked_copies_are_refused() {
        let sha = "a".repeat(64);
        let big = "x".repeat(MAX_MASKED_COPY + 1);
        let mut many = with_copy(&sha, &"y".repeat(MAX_MASKED_COPY));
        let copy = many.resources[0].masked[0].clone();
        many.resources[0].masked = vec![copy; MAX_MASKED_TOTAL / MAX_MASKED_COPY + 1];
        let cases = [
            (with_copy("ABC", "t").to_json(), "not a SHA-256"),
            (with_copy(&"A".repeat(64), "t").to_json(), "not a SHA-256"),
            (with_copy(&big[..64], "t").to_json(), "not a SHA-256"),
            (with_copy(&sha, &big).to_json(), "larger than"),
            (many.to_json(), "more than"),
            (
                with_copy(&sha, "t")
                    .to_json()
                    .replace("\"text\"", "\"extra\": 1, \"text\""),
                "not a plumb state",
            ),
            (
                with_copy(&sha, "t").to_json().replace("\"t\"", "3"),
                "not a plumb state",
            ),
        ];
        for (json, why) in cases {
            let e = HostState::from_probe(Some(&b64(&json))).unwrap_err();
            assert!(matches!(e, StateError::Corrupt(_)), "{e:?}");
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
    }
}
