//! Small typed values that manifests share: file modes, durations, presence, drift policy,
//! references to other resources and to secrets.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// Why a small value of a manifest does not parse (the message is for the operator).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not an octal mode.
    #[error("mode `{0}` is not an octal permission mode (like \"0640\" or \"0755\")")]
    Mode(String),
    /// An octal number above 07777.
    #[error("mode `{0}` is larger than 07777")]
    ModeTooLarge(String),
    /// Not a duration.
    #[error("`{0}` is not a duration (like 90s, 15m, 12h, 30d, 52w)")]
    Span(String),
    /// Not `Kind/name`.
    #[error("`{0}` is not a resource reference: write `Kind/name`, e.g. `ComposeStack/postgres01`")]
    Reference(String),
}

/// A POSIX permission mode, written in octal (`"0640"`, `"755"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileMode(pub u32);

impl FileMode {
    /// Parses an octal mode such as `0640` or `2775`.
    pub fn parse(text: &str) -> Result<FileMode, ValueError> {
        let t = text.trim();
        let digits = t.strip_prefix("0o").unwrap_or(t);
        if digits.is_empty()
            || digits.len() > 5
            || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
        {
            return Err(ValueError::Mode(text.to_string()));
        }
        // At most five octal digits: always a u32.
        let v = u32::from_str_radix(digits, 8).map_err(|_| ValueError::Mode(text.to_string()))?;
        if v > 0o7777 {
            return Err(ValueError::ModeTooLarge(text.to_string()));
        }
        Ok(FileMode(v))
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Read the source text: `mode: 0640` must mean octal 640, whatever YAML thinks of it.
        let text = String::deserialize(d)?;
        FileMode::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A length of time written as `90s`, `15m`, `12h`, `30d` or `52w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    /// Seconds.
    pub secs: u64,
}

impl Span {
    /// Parses `30d` and friends.
    pub fn parse(text: &str) -> Result<Span, ValueError> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| ValueError::Span(text.to_string()))?;
        let mult = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => {
                return Err(ValueError::Span(text.to_string()));
            }
        };
        Ok(Span {
            secs: n.saturating_mul(mult),
        })
    }

    /// Whole days, rounded down.
    pub fn days(&self) -> u64 {
        self.secs / 86_400
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.secs;
        if s.is_multiple_of(86_400) {
            write!(f, "{}d", s / 86_400)
        } else if s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Span::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Whether a resource should exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// Create or keep it.
    #[default]
    Present,
    /// Remove it.
    Absent,
}

/// What converge does when a host differs from the repo.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    /// Repair it (the default).
    #[default]
    Correct,
    /// Only report it; the exit code says so.
    Detect,
}

/// A reference to a secret by name: `{ secret: app_password }`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The secret's name (`secrets/NAME.age`).
    pub secret: String,
}

/// A reference to another resource: `Kind/name`, e.g. `ComposeStack/postgres01`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceRef {
    /// Kind name.
    pub kind: String,
    /// Resource name.
    pub name: String,
}

impl ResourceRef {
    /// Parses `Kind/name`.
    pub fn parse(text: &str) -> Result<ResourceRef, ValueError> {
        match text.split_once('/') {
            Some((k, n)) if !k.is_empty() && !n.is_empty() => Ok(ResourceRef {
                kind: k.to_string(),
                name: n.to_string(),
            }),
            _ => Err(ValueError::Reference(text.to_string())),
        }
    }
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl<'de> Deserialize<'de> for ResourceRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ResourceRef::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for ResourceRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Why a path from a manifest is refused (the message is for the operator).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A host path that is not absolute.
    #[error("path `{0}` is relative; paths on hosts must be absolute")]
    Relative(String),
    /// A host path with a control character.
    #[error("path `{0}` {1}")]
    Control(String, crate::text::ControlChar),
    /// A host path with a `.` or `..` component.
    #[error("path `{path}` contains `{component}`; write it without `.` or `..`")]
    Dots {
        /// The path.
        path: String,
        /// `.` or `..`.
        component: String,
    },
    /// A host path with `//` or a trailing `/`.
    #[error("path `{0}` has an empty component (`//` or a trailing `/`)")]
    Empty(String),
    /// A host path outside the roots its field allows.
    #[error("path `{path}` is outside the allowed roots ({roots})")]
    OutsideRoots {
        /// The path.
        path: String,
        /// The allowed roots, comma-separated.
        roots: String,
    },
    /// A repo path with a control character.
    #[error("`{0}` {1}")]
    RepoControl(String, crate::text::ControlChar),
    /// A repo path that is absolute.
    #[error("`{0}` must be relative to the repo")]
    RepoAbsolute(String),
    /// A repo path that climbs out through `..`.
    #[error("`{0}` leaves the repo through `..`")]
    RepoEscape(String),
}

/// Checks that a path from a manifest is absolute, normal (no `.`/`..`/`//`) and inside one of
/// `roots` (when given).
pub fn check_abs_path(path: &str, roots: &[&str]) -> Result<(), PathError> {
    if !path.starts_with('/') {
        return Err(PathError::Relative(path.to_string()));
    }
    if let Err(c) = crate::text::check(path, crate::text::TextClass::Line) {
        return Err(PathError::Control(path.to_string(), c));
    }
    for comp in path.split('/').skip(1) {
        if comp == ".." || comp == "." {
            return Err(PathError::Dots {
                path: path.to_string(),
                component: comp.to_string(),
            });
        }
        if comp.is_empty() && path != "/" {
            return Err(PathError::Empty(path.to_string()));
        }
    }
    if !roots.is_empty()
        && !roots
            .iter()
            .any(|r| path == *r || path.starts_with(&format!("{}/", r.trim_end_matches('/'))))
    {
        return Err(PathError::OutsideRoots {
            path: path.to_string(),
            roots: roots.join(", "),
        });
    }
    Ok(())
}

/// Checks that a path inside the cluster repo is relative and stays inside it.
pub fn check_repo_relative(path: &str) -> Result<(), PathError> {
    if let Err(c) = crate::text::check(path, crate::text::TextClass::Line) {
        return Err(PathError::RepoControl(path.to_string(), c));
    }
    if path.starts_with('/') {
        return Err(PathError::RepoAbsolute(path.to_string()));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(PathError::RepoEscape(path.to_string()));
    }
    Ok(())
}

/// Valid POSIX user or group name (the portable subset `useradd` accepts).
pub fn is_valid_account_name(name: &str) -> bool {
    let mut b = name.bytes();
    name.len() <= 32
        && b.next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal() {
        assert_eq!(FileMode::parse("0640").unwrap().0, 0o640);
        assert_eq!(FileMode::parse("755").unwrap().0, 0o755);
        assert_eq!(FileMode::parse("2775").unwrap().to_string(), "2775");
        assert!(
            FileMode::parse("0999")
                .unwrap_err()
                .to_string()
                .contains("not an octal")
        );
        assert!(FileMode::parse("rw-r--r--").is_err());
        assert!(FileMode::parse("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(Span::parse("30d").unwrap().secs, 30 * 86_400);
        assert_eq!(Span::parse("90s").unwrap().to_string(), "90s");
        assert_eq!(Span::parse("2w").unwrap().to_string(), "14d");
        assert!(Span::parse("30 days").is_err());
        assert!(Span::parse("d").is_err());
    }

    #[test]
    fn paths_must_be_absolute_normal_and_rooted() {
        assert!(check_abs_path("/etc/x", &[]).is_ok());
        assert!(
            check_abs_path("etc/x", &[])
                .unwrap_err()
                .to_string()
                .contains("relative")
        );
        assert!(
            check_abs_path("/etc/../root/x", &[])
                .unwrap_err()
                .to_string()
                .contains("..")
        );
        assert!(check_abs_path("/etc//x", &[]).is_err());
        for bad in [
            "/etc/a\nb",
            "/etc/a\x1bb",
            "/etc/\tx",
            "/etc/x\r",
            "/etc/\u{85}",
            "/etc/\0",
        ] {
            let e = check_abs_path(bad, &[]).unwrap_err().to_string();
            assert!(e.contains("control character"), "{bad:?}: {e}");
        }
        assert!(check_repo_relative("files/a\x1b").is_err());
        assert!(check_abs_path("/opt/a/b", &["/opt/a"]).is_ok());
        assert!(check_abs_path("/opt/ab", &["/opt/a"]).is_err());
        assert!(check_repo_relative("files/../../etc/shadow").is_err());
        assert!(check_repo_relative("/etc/shadow").is_err());
    }

    #[test]
    fn account_names() {
        assert!(is_valid_account_name("postgres"));
        assert!(is_valid_account_name("_svc-1"));
        assert!(!is_valid_account_name("Postgres"));
        assert!(!is_valid_account_name("1abc"));
    }
}
