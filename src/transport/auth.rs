//! Client authentication: private key files, ssh-agent, and OpenSSH user certificates.
//!
//! Identities are loaded before the TCP connection is opened, so a missing
//! or encrypted key fails at once with a message about the key instead of a
//! per-host authentication failure.
//!
//! Several identities may be listed (ssh_config's `IdentityFile` lines, the
//! agent, OpenSSH's default key files): they are tried in order, each with
//! its certificates first, as OpenSSH does. A key file's certificate is
//! `KEY-cert.pub` beside it, or any `CertificateFile` whose key it is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::ssh_key::{Certificate, HashAlg, PrivateKey, PublicKey};
use russh::keys::{PrivateKeyWithHashAlg, decode_secret_key};
use russh::{MethodKind, MethodSet};

use super::{ClientHandler, Identity, TransportError};

/// An identity ready to authenticate with.
pub(crate) enum LoadedIdentity {
    /// A decoded private key from a file, and the certificates of its key.
    Key {
        path: PathBuf,
        key: Arc<PrivateKey>,
        certs: Vec<Certificate>,
    },
    /// A connected ssh-agent, the plain keys it holds, and certificates for
    /// them (held by the agent or named by `CertificateFile`).
    Agent {
        socket: PathBuf,
        client: AgentClient<tokio::net::UnixStream>,
        keys: Vec<PublicKey>,
        certs: Vec<Certificate>,
    },
}

/// Loads every identity listed, in order.
///
/// The rules keep the old single-identity behaviour exact: a lone identity
/// that cannot be loaded is that identity's error. With several, an agent
/// without `SSH_AUTH_SOCK`, a missing optional key file and (with a warning)
/// an encrypted key are skipped; only when nothing is left is it an error.
pub(crate) async fn load_all(
    identities: &[Identity],
    certificates: &[PathBuf],
) -> Result<Vec<LoadedIdentity>, TransportError> {
    let certs = load_certificates(certificates)
        .map_err(|(path, reason)| TransportError::CertificateInvalid { path, reason })?;
    let mut out = Vec::new();
    let mut first_error: Option<TransportError> = None;
    let several = identities.len() > 1;
    for identity in identities {
        let loaded = match identity {
            Identity::File(path) => load_key_file(path, &certs).await,
            Identity::OptionalFile(path) => match tokio::fs::metadata(path).await {
                Ok(_) => load_key_file(path, &certs).await,
                Err(_) => {
                    tracing::debug!(path = %path.display(), "identity file not found; skipped");
                    continue;
                }
            },
            Identity::Agent => match std::env::var_os("SSH_AUTH_SOCK") {
                Some(socket) if !socket.is_empty() => {
                    connect_agent(Path::new(&socket), &certs).await
                }
                _ if several => continue,
                _ => Err(TransportError::Agent {
                    reason: "SSH_AUTH_SOCK is not set; start ssh-agent (eval $(ssh-agent)) and \
                             ssh-add your key, or use a key file identity"
                        .to_string(),
                }),
            },
            Identity::AgentSocket(socket) => connect_agent(socket, &certs).await,
        };
        match loaded {
            Ok(l) => out.push(l),
            Err(e) if several => {
                tracing::warn!(error = %e, "an identity cannot be used; trying the others");
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    if out.is_empty() {
        return Err(first_error.unwrap_or_else(|| TransportError::NoIdentity {
            tried: identities
                .iter()
                .map(describe_identity)
                .collect::<Vec<_>>()
                .join(", "),
        }));
    }
    Ok(out)
}

fn describe_identity(identity: &Identity) -> String {
    match identity {
        Identity::File(p) | Identity::OptionalFile(p) => p.display().to_string(),
        Identity::Agent => "ssh-agent (SSH_AUTH_SOCK)".into(),
        Identity::AgentSocket(p) => format!("ssh-agent at {}", p.display()),
    }
}

/// Reads `CertificateFile`s. A listed file that cannot be read or parsed is an error: it was
/// named on purpose.
fn load_certificates(paths: &[PathBuf]) -> Result<Vec<Certificate>, (PathBuf, String)> {
    let mut out = Vec::new();
    for path in paths {
        let cert = read_certificate(path).map_err(|reason| (path.clone(), reason))?;
        out.push(cert);
    }
    Ok(out)
}

fn read_certificate(path: &Path) -> Result<Certificate, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let cert = Certificate::from_openssh(text.trim()).map_err(|e| e.to_string())?;
    if cert.cert_type() != russh::keys::ssh_key::certificate::CertType::User {
        return Err("it is a host certificate, not a user certificate".into());
    }
    Ok(cert)
}

/// `KEY-cert.pub` beside a key file, as OpenSSH finds it.
fn sibling_certificate(path: &Path) -> Option<Certificate> {
    let mut name = path.as_os_str().to_owned();
    name.push("-cert.pub");
    let cert_path = PathBuf::from(name);
    if !cert_path.exists() {
        return None;
    }
    match read_certificate(&cert_path) {
        Ok(cert) => Some(cert),
        Err(reason) => {
            tracing::warn!(path = %cert_path.display(), %reason, "ignoring unusable certificate");
            None
        }
    }
}

async fn load_key_file(
    path: &Path,
    certificates: &[Certificate],
) -> Result<LoadedIdentity, TransportError> {
    let text =
        tokio::fs::read_to_string(path)
            .await
            .map_err(|source| TransportError::IdentityRead {
                path: path.to_path_buf(),
                source,
            })?;
    let decoded = decode_secret_key(&text, None);
    let key = match decoded {
        Ok(key) => key,
        Err(russh::keys::Error::KeyIsEncrypted) => {
            return Err(TransportError::IdentityEncrypted {
                path: path.to_path_buf(),
            });
        }
        // Legacy PEM ("Proc-Type: 4,ENCRYPTED") and PKCS#8 ("ENCRYPTED
        // PRIVATE KEY") report other errors without a password; the header
        // is the reliable sign.
        Err(_) if text.contains("ENCRYPTED") => {
            return Err(TransportError::IdentityEncrypted {
                path: path.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(TransportError::IdentityInvalid {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    let public = key.public_key().key_data().clone();
    let mut certs: Vec<Certificate> = sibling_certificate(path)
        .filter(|c| {
            let mine = c.public_key() == &public;
            if !mine {
                tracing::warn!(key = %path.display(), "the -cert.pub beside this key is for another key; ignored");
            }
            mine
        })
        .into_iter()
        .collect();
    certs.extend(
        certificates
            .iter()
            .filter(|c| c.public_key() == &public)
            .cloned(),
    );
    Ok(LoadedIdentity::Key {
        path: path.to_path_buf(),
        key: Arc::new(key),
        certs,
    })
}

async fn connect_agent(
    socket: &Path,
    certificates: &[Certificate],
) -> Result<LoadedIdentity, TransportError> {
    let mut client = AgentClient::connect_uds(socket)
        .await
        .map_err(|e| TransportError::Agent {
            reason: format!(
                "cannot connect to the agent socket {}: {e}; check that ssh-agent runs and \
                 SSH_AUTH_SOCK points to it",
                socket.display()
            ),
        })?;
    let identities = client
        .request_identities()
        .await
        .map_err(|e| TransportError::Agent {
            reason: format!(
                "the agent at {} did not list its keys: {e}",
                socket.display()
            ),
        })?;
    let mut keys = Vec::new();
    let mut certs = Vec::new();
    for identity in identities {
        match identity {
            AgentIdentity::PublicKey { key, .. } => keys.push(key),
            AgentIdentity::Certificate { certificate, .. } => certs.push(certificate),
        }
    }
    // CertificateFile certificates for keys the agent holds.
    for c in certificates {
        if keys.iter().any(|k| k.key_data() == c.public_key()) && !certs.contains(c) {
            certs.push(c.clone());
        }
    }
    if keys.is_empty() {
        return Err(TransportError::Agent {
            reason: format!(
                "the agent at {} holds no keys; add one with ssh-add",
                socket.display()
            ),
        });
    }
    Ok(LoadedIdentity::Agent {
        socket: socket.to_path_buf(),
        client,
        keys,
        certs,
    })
}

/// Signature hashes to offer for `key`, best first.
///
/// For RSA the first is the best `rsa-sha2-*` in the server's
/// `server-sig-algs` (rsa-sha2-256 when the server sends no such list: every
/// OpenSSH since 7.2 does, and SHA-1 `ssh-rsa` is off since 8.8); the other
/// rsa-sha2 follows because OpenSSH before 9.x advertises every algorithm it
/// knows there, not the ones `PubkeyAcceptedAlgorithms` allows. Other key
/// types have no choice to make.
async fn signature_hashes(handle: &Handle<ClientHandler>, key: &PublicKey) -> Vec<Option<HashAlg>> {
    if !key.algorithm().is_rsa() {
        return vec![None];
    }
    let best = match handle.best_supported_rsa_hash().await {
        Ok(Some(best)) => best,
        Ok(None) | Err(_) => Some(HashAlg::Sha256),
    };
    let mut hashes = vec![best];
    for hash in [Some(HashAlg::Sha512), Some(HashAlg::Sha256)] {
        if !hashes.contains(&hash) {
            hashes.push(hash);
        }
    }
    hashes
}

fn describe_key(key: &PublicKey) -> String {
    format!(
        "{} {}",
        key.algorithm().as_str(),
        key.fingerprint(HashAlg::Sha256)
    )
}

fn describe_cert(cert: &Certificate) -> String {
    format!(
        "certificate `{}` for {} {}",
        super::ssh_config::escape(cert.key_id()),
        cert.algorithm().as_str(),
        cert.public_key().fingerprint(HashAlg::Sha256)
    )
}

fn describe_methods(methods: &MethodSet) -> String {
    if methods.is_empty() {
        return "nothing more".to_string();
    }
    methods
        .iter()
        .map(<&'static str>::from)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one attempt said.
enum Attempt {
    Success,
    /// Refused; the server may still take public keys.
    Refused {
        remaining: MethodSet,
    },
}

fn outcome(result: AuthResult) -> Attempt {
    match result {
        AuthResult::Success => Attempt::Success,
        AuthResult::Failure {
            remaining_methods, ..
        } => Attempt::Refused {
            remaining: remaining_methods,
        },
    }
}

/// Authenticates `user` on an established session with each identity in turn.
pub(crate) async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    user: &str,
    identities: &mut [LoadedIdentity],
    target: &str,
) -> Result<(), TransportError> {
    let session_error = |e: &dyn std::fmt::Display| TransportError::Session {
        target: target.to_string(),
        reason: format!("during authentication: {e}"),
    };
    let mut remaining = MethodSet::from(&[MethodKind::PublicKey][..]);
    let mut tried: Vec<String> = Vec::new();
    'identities: for identity in identities.iter_mut() {
        match identity {
            LoadedIdentity::Key { path, key, certs } => {
                for cert in certs.iter() {
                    tried.push(format!("{} ({})", describe_cert(cert), path.display()));
                    let result = handle
                        .authenticate_openssh_cert(user, Arc::clone(key), cert.clone())
                        .await
                        .map_err(|e| session_error(&e))?;
                    match outcome(result) {
                        Attempt::Success => return Ok(()),
                        Attempt::Refused { remaining: r } => remaining = r,
                    }
                    if !remaining.contains(&MethodKind::PublicKey) {
                        break 'identities;
                    }
                }
                let public = key.public_key().clone();
                tried.push(format!(
                    "key {} ({})",
                    path.display(),
                    describe_key(&public)
                ));
                for hash in signature_hashes(handle, &public).await {
                    let result = handle
                        .authenticate_publickey(
                            user,
                            PrivateKeyWithHashAlg::new(Arc::clone(key), hash),
                        )
                        .await
                        .map_err(|e| session_error(&e))?;
                    match outcome(result) {
                        Attempt::Success => return Ok(()),
                        Attempt::Refused { remaining: r } => remaining = r,
                    }
                    if !remaining.contains(&MethodKind::PublicKey) {
                        break 'identities;
                    }
                }
            }
            LoadedIdentity::Agent {
                socket,
                client,
                keys,
                certs,
            } => {
                let agent_error = |socket: &Path, what: String, e: &dyn std::fmt::Display| {
                    TransportError::Agent {
                        reason: format!(
                            "the agent at {} failed to sign with {what}: {e}",
                            socket.display()
                        ),
                    }
                };
                for cert in certs.iter() {
                    tried.push(format!("{} (agent)", describe_cert(cert)));
                    let hash = cert.algorithm().is_rsa().then_some(HashAlg::Sha512);
                    let result = handle
                        .authenticate_certificate_with(user, cert.clone(), hash, client)
                        .await
                        .map_err(|e| agent_error(socket, describe_cert(cert), &e))?;
                    match outcome(result) {
                        Attempt::Success => return Ok(()),
                        Attempt::Refused { remaining: r } => remaining = r,
                    }
                    if !remaining.contains(&MethodKind::PublicKey) {
                        break 'identities;
                    }
                }
                tried.push(format!(
                    "every key of the agent at {} ({})",
                    socket.display(),
                    keys.iter().map(describe_key).collect::<Vec<_>>().join("; ")
                ));
                for key in keys.iter() {
                    for hash in signature_hashes(handle, key).await {
                        let result = handle
                            .authenticate_publickey_with(user, key.clone(), hash, client)
                            .await
                            .map_err(|e| agent_error(socket, describe_key(key), &e))?;
                        match outcome(result) {
                            Attempt::Success => return Ok(()),
                            Attempt::Refused { remaining: r } => remaining = r,
                        }
                        if !remaining.contains(&MethodKind::PublicKey) {
                            break 'identities;
                        }
                    }
                }
            }
        }
    }
    Err(TransportError::AuthFailed {
        target: target.to_string(),
        user: user.to_string(),
        tried: tried.join(", then "),
        methods: describe_methods(&remaining),
    })
}
