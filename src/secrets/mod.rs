//! Secrets: values kept age-encrypted in the repo's `secrets/NAME.age`, decrypted in memory only.
//!
//! The identity comes from `--age-identity FILE` (or `PLUMB_AGE_IDENTITY`). Recipients, the keys
//! new secrets are encrypted to, are listed in `secrets/recipients.txt` (age `age1...` keys or
//! `ssh-ed25519`/`ssh-rsa` public keys, one per line). Every value revealed is remembered so that
//! [`redact`] can scrub it from any text plumb prints (errors of third-party libraries included).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The placeholder every output shows instead of sensitive content.
pub const REDACTED: &str = "<sensitive>";

/// File listing the public keys secrets are encrypted to.
pub const RECIPIENTS_FILE: &str = "recipients.txt";

/// A decrypted secret. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// The value itself; whatever uses it must mark its output sensitive.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Why a secret could not be read or written. Never carries the value or the ciphertext.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No `secrets/NAME.age`.
    #[error(
        "secret `{0}` is not defined (no secrets/{0}.age); create it with `plumb secrets set {0}`"
    )]
    NotDefined(String),
    /// A value is needed but no identity was given.
    #[error(
        "secret `{0}` is needed but no age identity was given; pass --age-identity FILE or set PLUMB_AGE_IDENTITY"
    )]
    NoIdentity(String),
    /// The identity does not open the file.
    #[error("secret `{name}` ({file}) cannot be decrypted with the given identity: {reason}")]
    Decrypt {
        /// Secret name.
        name: String,
        /// File.
        file: String,
        /// What age said (no secret material).
        reason: String,
    },
    /// The identity file is unusable.
    #[error("age identity {file}: {reason}")]
    Identity {
        /// File.
        file: String,
        /// Why.
        reason: String,
    },
    /// Bad secret name.
    #[error("`{0}` is not a valid secret name: use letters, digits, `_`, `-` and `.`")]
    BadName(String),
    /// No recipients to encrypt to.
    #[error("{0}")]
    Recipients(String),
    /// File system trouble.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// True for names usable as `secrets/NAME.age`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The secrets of one repo, with the identity that opens them.
pub struct SecretStore {
    dir: PathBuf,
    names: BTreeSet<String>,
    identities: Option<Vec<Box<dyn age::Identity + Send + Sync>>>,
    identity_file: Option<PathBuf>,
    placeholders: bool,
    cache: Mutex<BTreeMap<String, SecretValue>>,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("dir", &self.dir)
            .field("names", &self.names)
            .field("has_identity", &self.identities.is_some())
            .finish()
    }
}

impl SecretStore {
    /// Lists `secrets/*.age` under the repo root (a missing folder means no secrets).
    pub fn open(repo_root: &Path) -> Result<SecretStore, SecretError> {
        let dir = repo_root.join("secrets");
        let mut names = BTreeSet::new();
        if dir.is_dir() {
            let entries = std::fs::read_dir(&dir).map_err(|source| SecretError::Io {
                context: format!("reading {}", dir.display()),
                source,
            })?;
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let file_name = file_name.to_string_lossy();
                if let Some(name) = file_name.strip_suffix(".age") {
                    names.insert(name.to_string());
                }
            }
        }
        Ok(SecretStore {
            dir,
            names,
            identities: None,
            identity_file: None,
            placeholders: false,
            cache: Mutex::new(BTreeMap::new()),
        })
    }

    /// Loads the identity (an age identity file, or an unencrypted OpenSSH private key).
    pub fn with_identity(mut self, file: &Path) -> Result<SecretStore, SecretError> {
        self.identities = Some(load_identities(file)?);
        self.identity_file = Some(file.to_path_buf());
        Ok(self)
    }

    /// Without an identity, let rendering use a placeholder for each secret (that must exist)
    /// instead of failing: `plumb validate` checks a repo this way without the key.
    pub fn allow_placeholders(mut self) -> SecretStore {
        self.placeholders = true;
        self
    }

    /// Like [`SecretStore::get`], but yields a placeholder in placeholder mode.
    pub fn get_for_render(&self, name: &str) -> Result<SecretValue, SecretError> {
        if self.identities.is_none() && self.placeholders {
            if !self.names.contains(name) {
                return Err(SecretError::NotDefined(name.to_string()));
            }
            return Ok(SecretValue(format!("<secret:{name}>")));
        }
        self.get(name)
    }

    /// The identity file in use.
    pub fn identity_file(&self) -> Option<&Path> {
        self.identity_file.as_deref()
    }

    /// True when an identity was loaded.
    pub fn has_identity(&self) -> bool {
        self.identities.is_some()
    }

    /// Names of the defined secrets.
    pub fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    /// Decrypts a secret (once per run; later calls hit a cache).
    pub fn get(&self, name: &str) -> Result<SecretValue, SecretError> {
        if let Some(v) = self.cache.lock().ok().and_then(|c| c.get(name).cloned()) {
            return Ok(v);
        }
        if !self.names.contains(name) {
            return Err(SecretError::NotDefined(name.to_string()));
        }
        let Some(ids) = &self.identities else {
            return Err(SecretError::NoIdentity(name.to_string()));
        };
        let file = self.dir.join(format!("{name}.age"));
        let bytes = std::fs::read(&file).map_err(|source| SecretError::Io {
            context: format!("reading {}", file.display()),
            source,
        })?;
        let fail = |reason: String| SecretError::Decrypt {
            name: name.to_string(),
            file: format!("secrets/{name}.age"),
            reason,
        };
        let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(&bytes[..]))
            .map_err(|e| fail(e.to_string()))?;
        let mut reader = decryptor
            .decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| fail(e.to_string()))?;
        let mut plain = Vec::new();
        reader
            .read_to_end(&mut plain)
            .map_err(|e| fail(e.to_string()))?;
        let text =
            String::from_utf8(plain).map_err(|_| fail("the value is not UTF-8 text".into()))?;
        // A trailing newline from `echo value | plumb secrets set` is never part of a password.
        let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
        remember(&text);
        let v = SecretValue(text);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(name.to_string(), v.clone());
        }
        Ok(v)
    }

    /// Encrypts `value` to the repo's recipients and writes `secrets/NAME.age` atomically.
    pub fn set(repo_root: &Path, name: &str, value: &[u8]) -> Result<PathBuf, SecretError> {
        if !is_valid_name(name) {
            return Err(SecretError::BadName(name.to_string()));
        }
        let dir = repo_root.join("secrets");
        let recipients = load_recipients(&dir.join(RECIPIENTS_FILE))?;
        let armored = encrypt(&recipients, value)?;
        let path = dir.join(format!("{name}.age"));
        write_atomic(&path, armored.as_bytes()).map_err(|source| SecretError::Io {
            context: format!("writing {}", path.display()),
            source,
        })?;
        Ok(path)
    }
}

fn load_identities(file: &Path) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, SecretError> {
    let err = |reason: String| SecretError::Identity {
        file: file.display().to_string(),
        reason,
    };
    let data = std::fs::read(file).map_err(|e| err(e.to_string()))?;
    if data.starts_with(b"-----BEGIN OPENSSH PRIVATE KEY-----") {
        let id = age::ssh::Identity::from_buffer(&data[..], Some(file.display().to_string()))
            .map_err(|e| err(e.to_string()))?;
        return match id {
            age::ssh::Identity::Unencrypted(_) => Ok(vec![Box::new(id)]),
            _ => Err(err(
                "encrypted or unsupported SSH keys cannot be used; use an age identity file".into(),
            )),
        };
    }
    let mut out: Vec<Box<dyn age::Identity + Send + Sync>> = Vec::new();
    for line in String::from_utf8_lossy(&data).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let id: age::x25519::Identity = line
            .parse()
            .map_err(|_| err("a line is not an age identity (AGE-SECRET-KEY-1...)".into()))?;
        out.push(Box::new(id));
    }
    if out.is_empty() {
        return Err(err("no identity found in the file".into()));
    }
    Ok(out)
}

/// Parses a recipients file: `age1...` keys and SSH public keys, `#` comments.
pub fn load_recipients(file: &Path) -> Result<Vec<Box<dyn age::Recipient + Send>>, SecretError> {
    let text = std::fs::read_to_string(file).map_err(|_| {
        SecretError::Recipients(format!(
            "no recipients: {} is missing; list the age or SSH public keys secrets are encrypted to, one per line",
            file.display()
        ))
    })?;
    let mut out: Vec<Box<dyn age::Recipient + Send>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Ok(r) = line.parse::<age::x25519::Recipient>() {
            out.push(Box::new(r));
        } else if let Ok(r) = line.parse::<age::ssh::Recipient>() {
            out.push(Box::new(r));
        } else {
            return Err(SecretError::Recipients(format!(
                "{}:{}: not an age (age1...) or SSH public key",
                file.display(),
                i + 1
            )));
        }
    }
    if out.is_empty() {
        return Err(SecretError::Recipients(format!(
            "{} lists no recipients",
            file.display()
        )));
    }
    Ok(out)
}

/// Encrypts to recipients, ASCII-armored.
pub fn encrypt(
    recipients: &[Box<dyn age::Recipient + Send>],
    value: &[u8],
) -> Result<String, SecretError> {
    let io = |e: std::io::Error| SecretError::Io {
        context: "encrypting".into(),
        source: e,
    };
    let enc = age::Encryptor::with_recipients(
        recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient),
    )
    .map_err(|e| SecretError::Recipients(e.to_string()))?;
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(io)?;
    let mut w = enc.wrap_output(armor).map_err(io)?;
    w.write_all(value).map_err(io)?;
    w.finish().and_then(|a| a.finish()).map_err(io)?;
    String::from_utf8(out)
        .map_err(|_| SecretError::Recipients("armored output is not UTF-8".into()))
}

/// Writes a file on the controller atomically: temp file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.plumb-tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn revealed() -> &'static Mutex<Vec<String>> {
    static REVEALED: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    REVEALED.get_or_init(|| Mutex::new(Vec::new()))
}

/// Records a value that must never be printed.
pub fn remember(value: &str) {
    // Very short values would redact ordinary words; they are weak passwords anyway.
    if value.len() >= 4
        && let Ok(mut v) = revealed().lock()
        && !v.iter().any(|x| x == value)
    {
        v.push(value.to_string());
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Replaces every secret value revealed so far with `<sensitive>`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    if let Ok(v) = revealed().lock() {
        for s in v.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn set_then_get_round_trips_and_never_shows_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
        std::fs::write(
            dir.path().join("secrets/recipients.txt"),
            format!("# demo\n{}\n", id.to_public()),
        )
        .unwrap();
        let id_file = dir.path().join("id.txt");
        std::fs::write(&id_file, id.to_string().expose_secret()).unwrap();
        SecretStore::set(dir.path(), "db_pw", b"hunter2-very-secret\n").unwrap();
        let ct = std::fs::read_to_string(dir.path().join("secrets/db_pw.age")).unwrap();
        assert!(ct.contains("BEGIN AGE ENCRYPTED FILE"));
        assert!(!ct.contains("hunter2"));

        let store = SecretStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.get("db_pw"),
            Err(SecretError::NoIdentity(_))
        ));
        let store = store.with_identity(&id_file).unwrap();
        let v = store.get("db_pw").unwrap();
        assert_eq!(v.expose(), "hunter2-very-secret");
        assert_eq!(format!("{v:?} {v}"), "<sensitive> <sensitive>");
        assert_eq!(
            redact("password is hunter2-very-secret!"),
            "password is <sensitive>!"
        );
        assert!(matches!(store.get("nope"), Err(SecretError::NotDefined(_))));
    }

    #[test]
    fn wrong_identity_is_a_clear_error_without_ciphertext() {
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
        std::fs::write(
            dir.path().join("secrets/recipients.txt"),
            id.to_public().to_string(),
        )
        .unwrap();
        SecretStore::set(dir.path(), "x", b"value-x-123").unwrap();
        let id_file = dir.path().join("other.txt");
        std::fs::write(&id_file, other.to_string().expose_secret()).unwrap();
        let store = SecretStore::open(dir.path())
            .unwrap()
            .with_identity(&id_file)
            .unwrap();
        let err = store.get("x").unwrap_err().to_string();
        assert!(
            err.contains("secret `x` (secrets/x.age) cannot be decrypted"),
            "{err}"
        );
        assert!(!err.contains("AGE ENCRYPTED"), "{err}");
        assert!(!err.contains("value-x-123"), "{err}");
    }

    #[test]
    fn bad_names_and_missing_recipients() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            SecretStore::set(dir.path(), "../x", b"v"),
            Err(SecretError::BadName(_))
        ));
        let e = SecretStore::set(dir.path(), "ok", b"v")
            .unwrap_err()
            .to_string();
        assert!(e.contains("recipients.txt is missing"), "{e}");
    }
}
