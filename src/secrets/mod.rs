//! Secrets: values a repo's templates read by name, decrypted or fetched in memory only.
//!
//! Two sources sit behind one interface ([`SecretSource`]), and [`SecretStore`] asks the right
//! one by name:
//! - `secrets/NAME.age`, age-encrypted in the repo (`age_files.rs`), opened with the identity
//!   from `--age-identity FILE` (or `PLUMB_AGE_IDENTITY`). Recipients, the keys new secrets are
//!   encrypted to, are listed in `secrets/recipients.txt` (age `age1...` keys or
//!   `ssh-ed25519`/`ssh-rsa` public keys, one per line).
//! - the names listed in `secrets/external.txt`, served by a program the operator names on the
//!   controller (`--secret-command PROGRAM`, `command.rs`): the repo says which names, never
//!   which program.
//!
//! Every value revealed is remembered so that [`redact`] can scrub it from any text plumb prints
//! (errors of third-party libraries included).

mod age_files;
mod command;

pub use command::{DEFAULT_TIMEOUT, MAX_OUTPUT, SecretCommand};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The placeholder every output shows instead of sensitive content.
pub const REDACTED: &str = "<sensitive>";

/// What a secret's value is shown as where the text around it may be shown: `<secret:NAME>`
/// (`plumb validate` without the key, and the masked diffs of files that hold secrets).
pub fn placeholder(name: &str) -> String {
    format!("<secret:{name}>")
}

/// File listing the public keys secrets are encrypted to.
pub const RECIPIENTS_FILE: &str = "recipients.txt";

/// File listing the secrets the operator's secret command serves (one name a line, `#`
/// comments).
pub const EXTERNAL_FILE: &str = "external.txt";

/// A decrypted secret. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a value that was just read from a source.
    fn new(value: String) -> Self {
        SecretValue(value)
    }

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

/// Where secret values come from: asked by name, a source answers with the value, which stays
/// in memory. Implemented by the repo's age files and by the operator's secret command.
pub trait SecretSource: Send + Sync {
    /// What the source is, for messages (never a value).
    fn describe(&self) -> String;
    /// The value of the secret `name` (a valid name, see [`is_valid_name`]).
    fn fetch(&self, name: &str) -> Result<SecretValue, SecretError>;
}

/// Why a secret could not be read or written. Never carries the value or the ciphertext.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No `secrets/NAME.age` and not in `secrets/external.txt`.
    #[error(
        "secret `{0}` is not defined (no secrets/{0}.age); create it with `plumb secrets set {0}`"
    )]
    NotDefined(String),
    /// A value is needed but no identity was given.
    #[error(
        "secret `{0}` is needed but no age identity was given; pass --age-identity FILE or set PLUMB_AGE_IDENTITY"
    )]
    NoIdentity(String),
    /// An external secret is needed but the operator gave no secret command.
    #[error(
        "secret `{0}` is served by the operator's secret command (secrets/external.txt), but none was given; pass --secret-command PROGRAM or set PLUMB_SECRET_COMMAND on the controller"
    )]
    NoCommand(String),
    /// The secret command failed.
    #[error("secret `{name}`: the secret command {program} {reason}")]
    Command {
        /// Secret name.
        name: String,
        /// The program.
        program: String,
        /// What went wrong (an exit status, a bound; never its output).
        reason: String,
    },
    /// `secrets/external.txt` is malformed.
    #[error("secrets/external.txt:{line}: {message}")]
    External {
        /// Line, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
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

/// The secrets of one repo, with the sources that open them.
pub struct SecretStore {
    names: BTreeSet<String>,
    age: age_files::AgeFiles,
    age_names: BTreeSet<String>,
    /// External names and their line in `secrets/external.txt`.
    external: BTreeMap<String, usize>,
    command: Option<SecretCommand>,
    placeholders: bool,
    cache: Mutex<BTreeMap<String, SecretValue>>,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("dir", &self.age.dir)
            .field("names", &self.names)
            .field("has_identity", &self.age.identities.is_some())
            .field("command", &self.command.as_ref().map(|c| c.program()))
            .finish()
    }
}

impl SecretStore {
    /// Lists `secrets/*.age` and `secrets/external.txt` under the repo root (a missing folder
    /// means no secrets).
    pub fn open(repo_root: &Path) -> Result<SecretStore, SecretError> {
        let dir = repo_root.join("secrets");
        let mut age_names = BTreeSet::new();
        if dir.is_dir() {
            let entries = std::fs::read_dir(&dir).map_err(|source| SecretError::Io {
                context: format!("reading {}", dir.display()),
                source,
            })?;
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let file_name = file_name.to_string_lossy();
                if let Some(name) = file_name.strip_suffix(".age") {
                    age_names.insert(name.to_string());
                }
            }
        }
        let external = read_external(&dir.join(EXTERNAL_FILE), &age_names)?;
        let mut names = age_names.clone();
        names.extend(external.keys().cloned());
        Ok(SecretStore {
            names,
            age: age_files::AgeFiles {
                dir,
                identities: None,
                identity_file: None,
            },
            age_names,
            external,
            command: None,
            placeholders: false,
            cache: Mutex::new(BTreeMap::new()),
        })
    }

    /// Loads the identity (an age identity file, or an unencrypted OpenSSH private key).
    pub fn with_identity(mut self, file: &Path) -> Result<SecretStore, SecretError> {
        self.age.load_identity(file)?;
        Ok(self)
    }

    /// Serves the names of `secrets/external.txt` with the operator's program.
    pub fn with_command(mut self, command: SecretCommand) -> SecretStore {
        self.command = Some(command);
        self
    }

    /// Without an identity (or a secret command), let rendering use a placeholder for each
    /// secret (that must exist) instead of failing: `plumb validate` checks a repo this way
    /// without the key.
    pub fn allow_placeholders(mut self) -> SecretStore {
        self.placeholders = true;
        self
    }

    /// Like [`SecretStore::get`], but yields a placeholder in placeholder mode when the
    /// secret's source is not available.
    pub fn get_for_render(&self, name: &str) -> Result<SecretValue, SecretError> {
        let unavailable = if self.external.contains_key(name) {
            self.command.is_none()
        } else {
            self.age.identities.is_none()
        };
        if unavailable && self.placeholders {
            if !self.names.contains(name) {
                return Err(SecretError::NotDefined(name.to_string()));
            }
            return Ok(SecretValue(placeholder(name)));
        }
        self.get(name)
    }

    /// The identity file in use.
    pub fn identity_file(&self) -> Option<&Path> {
        self.age.identity_file.as_deref()
    }

    /// True when an identity was loaded.
    pub fn has_identity(&self) -> bool {
        self.age.identities.is_some()
    }

    /// True when the operator gave a secret command.
    pub fn has_command(&self) -> bool {
        self.command.is_some()
    }

    /// Names of the defined secrets, from every source.
    pub fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    /// Names of the secrets in `secrets/*.age`.
    pub fn age_names(&self) -> &BTreeSet<String> {
        &self.age_names
    }

    /// Names served by the secret command, with their line in `secrets/external.txt`.
    pub fn external_names(&self) -> &BTreeMap<String, usize> {
        &self.external
    }

    /// The value of a secret (read once per run; later calls hit a cache).
    pub fn get(&self, name: &str) -> Result<SecretValue, SecretError> {
        if let Some(v) = self.cache.lock().ok().and_then(|c| c.get(name).cloned()) {
            return Ok(v);
        }
        if !self.names.contains(name) {
            return Err(SecretError::NotDefined(name.to_string()));
        }
        let source: &dyn SecretSource = if self.external.contains_key(name) {
            match &self.command {
                Some(c) => c,
                None => return Err(SecretError::NoCommand(name.to_string())),
            }
        } else {
            &self.age
        };
        let v = source.fetch(name)?;
        remember(v.expose());
        tracing::debug!(secret = name, source = %source.describe(), "secret read");
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
        if let Some(line) = read_external(&dir.join(EXTERNAL_FILE), &BTreeSet::new())?.get(name) {
            return Err(SecretError::External {
                line: *line,
                message: format!(
                    "`{name}` is served by the secret command; remove it here before keeping it in secrets/{name}.age"
                ),
            });
        }
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

/// Reads `secrets/external.txt` (missing: no external secrets): valid names, each once and
/// none that is also an age file.
fn read_external(
    file: &Path,
    age_names: &BTreeSet<String>,
) -> Result<BTreeMap<String, usize>, SecretError> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(SecretError::Io {
                context: format!("reading {}", file.display()),
                source,
            });
        }
    };
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        let bad = |message: String| SecretError::External {
            line: line_no,
            message,
        };
        if !is_valid_name(name) {
            return Err(bad(format!(
                "`{name}` is not a valid secret name: use letters, digits, `_`, `-` and `.`"
            )));
        }
        if age_names.contains(name) {
            return Err(bad(format!(
                "`{name}` is also secrets/{name}.age: a secret has one source"
            )));
        }
        if let Some(first) = out.insert(name.to_string(), line_no) {
            return Err(bad(format!("`{name}` is already listed at line {first}")));
        }
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

    fn program(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("store.sh");
        std::fs::write(
            &p,
            "#!/bin/sh\ncase \"$1\" in\n  consul_token) echo token-from-the-store-42 ;;\n  *) exit 2 ;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn external_secrets_come_from_the_operators_command_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/su.age"), "x").unwrap();
        std::fs::write(
            dir.path().join("secrets/external.txt"),
            "# served by the operator's program\nconsul_token\n\nmissing_one\n",
        )
        .unwrap();
        let store = SecretStore::open(dir.path()).unwrap();
        assert!(store.names().contains("consul_token") && store.names().contains("su"));
        assert_eq!(store.age_names().len(), 1);
        assert_eq!(store.external_names().get("missing_one"), Some(&4));
        // No command: a clear error, or a placeholder when validating.
        let e = store.get("consul_token").unwrap_err().to_string();
        assert!(e.contains("pass --secret-command PROGRAM"), "{e}");
        let store = store.allow_placeholders();
        assert_eq!(
            store.get_for_render("consul_token").unwrap().expose(),
            "<secret:consul_token>"
        );
        let store = store.with_command(SecretCommand::new(program(dir.path())));
        let v = store.get_for_render("consul_token").unwrap();
        assert_eq!(v.expose(), "token-from-the-store-42");
        assert_eq!(redact("token=token-from-the-store-42"), "token=<sensitive>");
        let e = store.get("missing_one").unwrap_err().to_string();
        assert!(e.contains("secret `missing_one`"), "{e}");
        assert!(e.contains("exit status: 2"), "{e}");
        // The age files are still asked without the command's help.
        assert!(matches!(store.get("su"), Err(SecretError::NoIdentity(_))));
    }

    #[test]
    fn external_txt_is_strict() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/su.age"), "x").unwrap();
        for (text, want) in [
            (
                "a\n../etc/passwd\n",
                "secrets/external.txt:2: `../etc/passwd` is not a valid secret name",
            ),
            (
                "a\nb\na\n",
                "secrets/external.txt:3: `a` is already listed at line 1",
            ),
            (
                "su\n",
                "secrets/external.txt:1: `su` is also secrets/su.age: a secret has one source",
            ),
            (
                "$(reboot)\n",
                "secrets/external.txt:1: `$(reboot)` is not a valid secret name",
            ),
        ] {
            std::fs::write(dir.path().join("secrets/external.txt"), text).unwrap();
            let e = SecretStore::open(dir.path()).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        std::fs::write(dir.path().join("secrets/external.txt"), "tok\n").unwrap();
        let e = SecretStore::set(dir.path(), "tok", b"v")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`tok` is served by the secret command"), "{e}");
    }
}
