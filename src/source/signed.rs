//! Signed commits: `plumb pull` and `plumb serve` with `--require-signed` converge a commit only
//! when it carries an SSH signature (git's `gpg.format=ssh`) by a key of an allowed-signers file
//! (git's `gpg.ssh.allowedSignersFile` format). The signature is checked by OpenSSH's own
//! `ssh-keygen -Y find-principals` and `ssh-keygen -Y verify -n git`, never by hand: the
//! signed payload goes on stdin, the signature through a private temporary file, and nothing
//! passes through a shell.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest `ssh-keygen` may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a commit is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The commit carries no signature.
    #[error(
        "commit {commit} is not signed; --require-signed accepts only commits signed by a key of {allowed}"
    )]
    Unsigned {
        /// The commit.
        commit: String,
        /// The allowed-signers file.
        allowed: String,
    },
    /// A signature that is not an SSH one (GPG, X.509).
    #[error(
        "commit {commit} has a signature that is not an SSH signature (only gpg.format=ssh is supported)"
    )]
    NotSsh {
        /// The commit.
        commit: String,
    },
    /// No allowed signer has the key that signed.
    #[error("commit {commit} is signed by a key that {allowed} does not allow")]
    UnknownSigner {
        /// The commit.
        commit: String,
        /// The allowed-signers file.
        allowed: String,
    },
    /// The signature does not verify (tampered, wrong namespace, expired key).
    #[error("commit {commit}: the signature of {signer} does not verify: {message}")]
    Bad {
        /// The commit.
        commit: String,
        /// Who it claims.
        signer: String,
        /// What ssh-keygen said.
        message: String,
    },
    /// The check itself could not run.
    #[error("checking the signature of commit {commit}: {message}")]
    Check {
        /// The commit.
        commit: String,
        /// Why.
        message: String,
    },
}

/// Runs ssh-keygen with `args`, `stdin` on its stdin, within [`TIMEOUT`]: (success, stdout,
/// stderr escaped), each bounded.
fn ssh_keygen(args: &[&std::ffi::OsStr], stdin: &[u8]) -> Result<(bool, String, String), String> {
    let mut child = Command::new("ssh-keygen")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running ssh-keygen: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(_) => break,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "ssh-keygen did not finish in {}s",
                    TIMEOUT.as_secs()
                ));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = |b: &[u8]| {
        let s = String::from_utf8_lossy(&b[..b.len().min(4096)])
            .trim()
            .to_string();
        crate::text::escape(&s).into_owned()
    };
    let stdout = String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(4096)]).into_owned();
    Ok((out.status.success(), stdout, text(&out.stderr)))
}

/// Checks that `commit` of the repo at `checkout` is signed by a key `allowed_signers` allows;
/// returns the principal that signed it. `scratch` is a private folder for the signature file.
pub fn verify_commit(
    checkout: &Path,
    commit: &str,
    allowed_signers: &Path,
    scratch: &Path,
) -> Result<String, SignatureError> {
    let c = commit.to_string();
    let check = |message: String| SignatureError::Check {
        commit: c.clone(),
        message,
    };
    let repo = git2::Repository::open(checkout).map_err(|e| check(e.message().to_string()))?;
    let oid = git2::Oid::from_str(commit).map_err(|e| check(e.message().to_string()))?;
    let (sig, payload) = match repo.extract_signature(&oid, None) {
        Ok(x) => x,
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Err(SignatureError::Unsigned {
                commit: c,
                allowed: allowed_signers.display().to_string(),
            });
        }
        Err(e) => return Err(check(e.message().to_string())),
    };
    if !sig.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
        return Err(SignatureError::NotSsh { commit: c });
    }
    // The signature file: a fresh name, created exclusively, readable by this user only.
    let mut rand = [0u8; 8];
    getrandom::fill(&mut rand).map_err(|e| check(e.to_string()))?;
    let sig_path = scratch.join(format!("commit-signature-{}.sig", hex::encode(rand)));
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&sig_path)
            .map_err(|e| check(format!("{}: {e}", sig_path.display())))?;
        f.write_all(&sig).map_err(|e| check(e.to_string()))?;
    }
    let result = verify_file(&sig_path, &payload, commit, allowed_signers);
    let _ = std::fs::remove_file(&sig_path);
    result
}

fn verify_file(
    sig_path: &Path,
    payload: &[u8],
    commit: &str,
    allowed: &Path,
) -> Result<String, SignatureError> {
    let c = commit.to_string();
    let check = |message: String| SignatureError::Check {
        commit: c.clone(),
        message,
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let (found, principals, _) = ssh_keygen(
        &[
            os("-Y"),
            os("find-principals"),
            os("-f"),
            allowed.as_os_str(),
            os("-s"),
            sig_path.as_os_str(),
        ],
        b"",
    )
    .map_err(check)?;
    let principal = principals
        .lines()
        .map(str::trim)
        .find(|p| !p.is_empty() && crate::text::is_clean(p))
        .map(str::to_string);
    let Some(principal) = principal.filter(|_| found) else {
        return Err(SignatureError::UnknownSigner {
            commit: c,
            allowed: allowed.display().to_string(),
        });
    };
    let (ok, out, err) = ssh_keygen(
        &[
            os("-Y"),
            os("verify"),
            os("-f"),
            allowed.as_os_str(),
            os("-I"),
            std::ffi::OsStr::new(&principal),
            os("-n"),
            os("git"),
            os("-s"),
            sig_path.as_os_str(),
        ],
        payload,
    )
    .map_err(check)?;
    if ok {
        Ok(principal)
    } else {
        Err(SignatureError::Bad {
            commit: c,
            signer: principal,
            message: if err.is_empty() {
                crate::text::escape(out.trim()).into_owned()
            } else {
                err
            },
        })
    }
}
