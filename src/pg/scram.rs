//! SCRAM-SHA-256 verifiers (RFC 5802 / RFC 7677, as PostgreSQL stores them in
//! `pg_authid.rolpassword`): `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
//!
//! plumb sets passwords as verifiers computed here, so the plain password never travels in SQL
//! (where `log_statement` or `log_min_duration_statement` would log it), and it detects a
//! drifted password by recomputing the stored verifier's keys from the secret with the stored
//! salt and iteration count: the server never has to be asked to check a password.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::Password;

/// Most PBKDF2 iterations a stored verifier may ask for before we refuse to recompute it: the
/// verifier comes from the server, and PostgreSQL's default is 4096 (`scram_iterations` in 16+
/// may raise it; 10 million takes seconds and is far past any sane setting).
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// Why a stored password is not a usable SCRAM-SHA-256 verifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// An `md5...` hash: PostgreSQL's older format, which plumb replaces.
    #[error("the stored password is an MD5 hash, not a SCRAM-SHA-256 verifier")]
    Md5,
    /// Not in the `SCRAM-SHA-256$iter:salt$stored:server` shape (what is wrong, never the text).
    #[error("the stored password is not a SCRAM-SHA-256 verifier: {0}")]
    Malformed(&'static str),
    /// An iteration count past [`MAX_ITERATIONS`].
    #[error("the stored verifier asks for {0} iterations, more than plumb recomputes")]
    TooManyIterations(u32),
}

/// A verifier for `password` with a fresh random salt and PostgreSQL's default 4096 iterations,
/// ready for `ALTER ROLE ... PASSWORD '<verifier>'` (it holds only base64 and `$:`).
pub fn verifier(password: &Password) -> String {
    postgres_protocol::password::scram_sha_256(password.expose().as_bytes())
}

/// A parsed SCRAM-SHA-256 verifier. Not secret like a password, but it is what a server
/// authenticates with, so `Debug` shows only the iteration count.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Parses `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Result<Verifier, ScramError> {
        if text.starts_with("md5") {
            return Err(ScramError::Md5);
        }
        let rest = text
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(ScramError::Malformed("no SCRAM-SHA-256$ prefix"))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(ScramError::Malformed("no $ before the keys"))?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or(ScramError::Malformed("no iterations:salt"))?;
        let (stored, server) = keys
            .split_once(':')
            .ok_or(ScramError::Malformed("no StoredKey:ServerKey"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| ScramError::Malformed("iteration count is not a number"))?;
        if iterations == 0 {
            return Err(ScramError::Malformed("iteration count is 0"));
        }
        if iterations > MAX_ITERATIONS {
            return Err(ScramError::TooManyIterations(iterations));
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let key = |text: &str| -> Result<[u8; 32], ScramError> {
            STANDARD
                .decode(text)
                .map_err(|_| ScramError::Malformed("key is not base64"))?
                .try_into()
                .map_err(|_| ScramError::Malformed("key is not 32 bytes"))
        };
        Ok(Verifier {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// PBKDF2 iterations of this verifier.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Whether `password` is the password this verifier was made from: both keys recomputed
    /// with its salt and iteration count, compared in constant time.
    pub fn matches(&self, password: &Password) -> bool {
        let salted = hi(&prepare(password.expose()), &self.salt, self.iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let server_key = hmac(&salted, b"Server Key");
        let same = stored_key.ct_eq(&self.stored_key) & server_key.ct_eq(&self.server_key);
        bool::from(same)
    }
}

/// Whether the stored `rolpassword` text is a SCRAM verifier of `password`; an MD5 hash or
/// anything unparsable counts as "does not match" (plumb then sets a fresh verifier).
pub fn stored_matches(stored: &str, password: &Password) -> bool {
    Verifier::parse(stored).is_ok_and(|v| v.matches(password))
}

/// SASLprep as PostgreSQL applies it (libpq's `PQencryptPasswordConn` and the backend): a
/// password that is not valid for SASLprep is used as its raw bytes.
fn prepare(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(prepared) => prepared.into_owned().into_bytes(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block (RFC 5802's `Hi`).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut previous = hmac(password, &first);
    let mut result = previous;
    for _ in 1..iterations {
        previous = hmac(password, &previous);
        for (r, p) in result.iter_mut().zip(previous) {
            *r ^= p;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    // Verifiers made by a real PostgreSQL 15.18 (`CREATE ROLE t PASSWORD '...'` with the default
    // password_encryption = scram-sha-256, then `SELECT rolpassword FROM pg_authid`).
    const PG_T1: &str = "SCRAM-SHA-256$4096:Nt3ghRoHSBt7+3YAgd/YBg==$msCPx1w4yPOjEHodcqtrzRcE0F6eGRu0+TEob5IlUXg=:g00FchjwO9Wm6k7ay5FGYOOm9v2wgwBwzh9CMdcudEE=";
    const PG_T1_PASSWORD: &str = "correct horse battery staple";
    const PG_T2: &str = "SCRAM-SHA-256$4096:TvyXGHmZZ8o0p0mxAMdffg==$ZYiQG1ug4DdGdbUu+05GOj9nQzjK3bPZKmNCbQEBa9c=:MD7uh4Ed5v1zxrfSDOkP80tdqptBy73afGafVKpKQrk=";
    const PG_T2_PASSWORD: &str = "pässwörd ünïcode";
    // Set as E'I\u00ADX': SASLprep maps the soft hyphen to nothing.
    const PG_T3: &str = "SCRAM-SHA-256$4096:rDtOV/XOcnxZrV82E56WjA==$I+8zE4zb7nh/iO7AtlSKYsSuGi6y0IleHfMyVEfRV/g=:X2Z4o1lkJCVjf1VG2VIpkAXzpC8ABVPWvNKcL+QKkRk=";
    const PG_T4: &str = "SCRAM-SHA-256$4096:LjB1bHI8A7WQEmaqPUf0NQ==$6BaNAQbKhPRw7BDeKAsWzjlMlx6dzfz+6Ns8BKTfTmw=:+QW65osyK81FLfcg9JkJgfjrZ/ftdeL4VxAPPOWq2bQ=";
    const PG_T4_PASSWORD: &str = r#"it's "q" \ x"#;

    fn pw(s: &str) -> Password {
        Password::new(s)
    }

    #[test]
    fn verifiers_from_postgresql_match_their_password_only() {
        assert!(stored_matches(PG_T1, &pw(PG_T1_PASSWORD)));
        assert!(!stored_matches(PG_T1, &pw("correct horse battery stapl")));
        assert!(!stored_matches(PG_T1, &pw("")));
        assert!(stored_matches(PG_T2, &pw(PG_T2_PASSWORD)));
        assert!(!stored_matches(PG_T2, &pw("passwörd ünïcode")));
        assert!(stored_matches(PG_T4, &pw(PG_T4_PASSWORD)));
        assert!(!stored_matches(PG_T4, &pw(PG_T1_PASSWORD)));
    }

    #[test]
    fn saslprep_is_applied_like_postgresql_does() {
        assert!(stored_matches(PG_T3, &pw("I\u{AD}X")));
        assert!(stored_matches(PG_T3, &pw("IX")));
        assert!(!stored_matches(PG_T3, &pw("I-X")));
    }

    #[test]
    fn computed_verifiers_round_trip_and_are_salted() {
        let secret = pw("s3cr3t with 'quotes' and \"double\"");
        let a = verifier(&secret);
        let b = verifier(&secret);
        assert_ne!(a, b, "each verifier has its own salt");
        assert!(!a.contains("s3cr3t"));
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"$:+/=-".contains(&c)),
            "{a}"
        );
        for v in [&a, &b] {
            let parsed = Verifier::parse(v).expect("parse our own verifier");
            assert_eq!(parsed.iterations(), 4096);
            assert!(parsed.matches(&secret));
            assert!(!parsed.matches(&pw("s3cr3t")));
        }
    }

    #[test]
    fn a_key_flip_in_either_half_is_a_mismatch() {
        let good = Verifier::parse(PG_T1).unwrap();
        let mut bad_stored = good.clone();
        bad_stored.stored_key[0] ^= 1;
        let mut bad_server = good.clone();
        bad_server.server_key[31] ^= 0x80;
        assert!(good.matches(&pw(PG_T1_PASSWORD)));
        assert!(!bad_stored.matches(&pw(PG_T1_PASSWORD)));
        assert!(!bad_server.matches(&pw(PG_T1_PASSWORD)));
    }

    #[test]
    fn malformed_and_md5_are_refused_without_echoing_them() {
        assert_eq!(
            Verifier::parse("md5e2c2c1c4f3b1e1f3c0c2e6d1c7b1a0a1"),
            Err(ScramError::Md5)
        );
        for bad in [
            "",
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$x:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:!!$msCPx1w4yPOjEHodcqtrzRcE0F6eGRu0+TEob5IlUXg=:g00FchjwO9Wm6k7ay5FGYOOm9v2wgwBwzh9CMdcudEE=",
            "plain-text-password",
        ] {
            let err = Verifier::parse(bad).expect_err(bad);
            assert!(matches!(err, ScramError::Malformed(_)), "{bad}: {err:?}");
            if !bad.is_empty() {
                assert!(!err.to_string().contains(bad), "{err}");
            }
            assert!(!stored_matches(bad, &pw("x")));
        }
        assert_eq!(
            Verifier::parse("SCRAM-SHA-256$4294967295:c2FsdA==$AAAA:AAAA"),
            Err(ScramError::TooManyIterations(u32::MAX))
        );
    }

    #[test]
    fn debug_shows_no_key_material() {
        let v = Verifier::parse(PG_T1).unwrap();
        let shown = format!("{v:?}");
        assert!(
            shown.contains("4096") && !shown.contains("msCPx1"),
            "{shown}"
        );
    }
}
