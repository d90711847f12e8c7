//! Secrets kept age-encrypted in the repo, `secrets/NAME.age`, opened with the operator's
//! identity (`--age-identity FILE`).

use super::{SecretError, SecretSource, SecretValue};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The `secrets/` folder and the identity that opens its files.
pub(super) struct AgeFiles {
    pub(super) dir: PathBuf,
    pub(super) identities: Option<Vec<Box<dyn age::Identity + Send + Sync>>>,
    pub(super) identity_file: Option<PathBuf>,
}

impl AgeFiles {
    /// Loads the identity (an age identity file, or an unencrypted OpenSSH private key).
    pub(super) fn load_identity(&mut self, file: &Path) -> Result<(), SecretError> {
        self.identities = Some(load_identities(file)?);
        self.identity_file = Some(file.to_path_buf());
        Ok(())
    }
}

impl SecretSource for AgeFiles {
    fn describe(&self) -> String {
        format!("age files in {}", self.dir.display())
    }

    fn fetch(&self, name: &str) -> Result<SecretValue, SecretError> {
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
        Ok(SecretValue::new(text))
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
