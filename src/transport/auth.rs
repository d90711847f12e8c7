//! Client authentication: a private key file or ssh-agent.
//!
//! Identities are loaded before the TCP connection is opened, so a missing
//! or encrypted key fails at once with a message about the key instead of a
//! per-host authentication failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::ssh_key::{HashAlg, PrivateKey, PublicKey};
use russh::keys::{PrivateKeyWithHashAlg, decode_secret_key};
use russh::{MethodKind, MethodSet};

use super::{ClientHandler, Identity, TransportError};

/// An identity ready to authenticate with.
pub(crate) enum LoadedIdentity {
    /// A decoded private key from a file.
    Key { path: PathBuf, key: Arc<PrivateKey> },
    /// A connected ssh-agent and the plain keys it holds.
    Agent {
        socket: PathBuf,
        client: AgentClient<tokio::net::UnixStream>,
        keys: Vec<PublicKey>,
    },
}

/// Loads the key file or connects to the agent.
pub(crate) async fn load(identity: &Identity) -> Result<LoadedIdentity, TransportError> {
    match identity {
        Identity::File(path) => load_key_file(path).await,
        Identity::Agent => match std::env::var_os("SSH_AUTH_SOCK") {
            Some(socket) if !socket.is_empty() => connect_agent(Path::new(&socket)).await,
            _ => Err(TransportError::Agent {
                reason: "SSH_AUTH_SOCK is not set; start ssh-agent (eval $(ssh-agent)) and \
                         ssh-add your key, or use a key file identity"
                    .to_string(),
            }),
        },
        Identity::AgentSocket(socket) => connect_agent(socket).await,
    }
}

async fn load_key_file(path: &Path) -> Result<LoadedIdentity, TransportError> {
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
    Ok(LoadedIdentity::Key {
        path: path.to_path_buf(),
        key: Arc::new(key),
    })
}

async fn connect_agent(socket: &Path) -> Result<LoadedIdentity, TransportError> {
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
    let keys: Vec<PublicKey> = identities
        .into_iter()
        .filter_map(|identity| match identity {
            AgentIdentity::PublicKey { key, .. } => Some(key),
            // Certificates are not used for login yet; their plain key is
            // usually in the agent too.
            AgentIdentity::Certificate { .. } => None,
        })
        .collect();
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

/// Authenticates `user` on an established session.
pub(crate) async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    user: &str,
    identity: &mut LoadedIdentity,
    target: &str,
) -> Result<(), TransportError> {
    let session_error = |e: &dyn std::fmt::Display| TransportError::Session {
        target: target.to_string(),
        reason: format!("during authentication: {e}"),
    };
    match identity {
        LoadedIdentity::Key { path, key } => {
            let public = key.public_key().clone();
            let mut remaining = MethodSet::from(&[MethodKind::PublicKey][..]);
            for hash in signature_hashes(handle, &public).await {
                let result = handle
                    .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::clone(key), hash))
                    .await
                    .map_err(|e| session_error(&e))?;
                match result {
                    AuthResult::Success => return Ok(()),
                    AuthResult::Failure {
                        remaining_methods, ..
                    } => {
                        remaining = remaining_methods;
                        if !remaining.contains(&MethodKind::PublicKey) {
                            break;
                        }
                    }
                }
            }
            Err(TransportError::AuthFailed {
                target: target.to_string(),
                user: user.to_string(),
                tried: format!("key {} ({})", path.display(), describe_key(&public)),
                methods: describe_methods(&remaining),
            })
        }
        LoadedIdentity::Agent {
            socket,
            client,
            keys,
        } => {
            let mut remaining = MethodSet::from(&[MethodKind::PublicKey][..]);
            'keys: for key in keys.iter() {
                for hash in signature_hashes(handle, key).await {
                    let result = handle
                        .authenticate_publickey_with(user, key.clone(), hash, client)
                        .await;
                    match result {
                        Ok(AuthResult::Success) => return Ok(()),
                        Ok(AuthResult::Failure {
                            remaining_methods, ..
                        }) => {
                            remaining = remaining_methods;
                            if !remaining.contains(&MethodKind::PublicKey) {
                                break 'keys;
                            }
                        }
                        Err(e) => {
                            return Err(TransportError::Agent {
                                reason: format!(
                                    "the agent at {} failed to sign with {}: {e}",
                                    socket.display(),
                                    describe_key(key)
                                ),
                            });
                        }
                    }
                }
            }
            Err(TransportError::AuthFailed {
                target: target.to_string(),
                user: user.to_string(),
                tried: format!(
                    "every key of the agent at {} ({})",
                    socket.display(),
                    keys.iter().map(describe_key).collect::<Vec<_>>().join("; ")
                ),
                methods: describe_methods(&remaining),
            })
        }
    }
}
