//! Webhook authentication and push payloads: pure functions, no I/O.
//!
//! - GitHub signs the raw body as sent: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret,
//!   body)>`, whether the body is JSON or form-encoded (`payload=<url-encoded JSON>`).
//! - Gitea (and Forgejo) sign the JSON payload: `X-Gitea-Signature` / `X-Forgejo-Signature:
//!   <hex HMAC-SHA256(secret, json)>`; with a form-encoded body the JSON is the one inside
//!   `payload=` (a signature over the raw body is accepted too).
//! - GitLab sends the secret itself: `X-Gitlab-Token: <secret>`; or, with a signing token,
//!   signs as [Standard Webhooks](https://www.standardwebhooks.com/) do: `webhook-id`,
//!   `webhook-timestamp` (refused outside [`TIMESTAMP_TOLERANCE_SECS`]) and `webhook-signature:
//!   v1,<base64 HMAC-SHA256(key, id.timestamp.body)>` (several, space-separated, may be sent),
//!   the key being the base64 after the secret's `whsec_` prefix.
//!
//! Every comparison is constant time: signatures through [`Mac::verify_slice`], the GitLab token
//! by comparing HMACs of both values (equal length whatever the token's length).

use crate::text::escape;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

/// GitHub's signature header.
pub const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
/// Gitea's signature header.
pub const GITEA_SIGNATURE: &str = "x-gitea-signature";
/// Forgejo's signature header (the same scheme as Gitea's).
pub const FORGEJO_SIGNATURE: &str = "x-forgejo-signature";
/// GitLab's secret token header.
pub const GITLAB_TOKEN: &str = "x-gitlab-token";
/// Standard Webhooks' (GitLab's signing token) message id header.
pub const STANDARD_ID: &str = "webhook-id";
/// Standard Webhooks' timestamp header (Unix seconds).
pub const STANDARD_TIMESTAMP: &str = "webhook-timestamp";
/// Standard Webhooks' signature header (`v1,<base64>`, space-separated).
pub const STANDARD_SIGNATURE: &str = "webhook-signature";
/// How far a Standard Webhooks timestamp may be from the server's clock, either way.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;
/// The most signatures one `webhook-signature` header may carry (bounds the work).
const MAX_SIGNATURES: usize = 16;
/// The longest `webhook-id` accepted.
const MAX_STANDARD_ID: usize = 256;

/// The shared webhook secret. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from its bytes; surrounding whitespace (a file's trailing newline) is dropped.
    pub fn new(bytes: &[u8]) -> Result<Secret, SecretError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret(trimmed.to_vec()))
    }

    /// The value, for the MAC.
    fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The Standard Webhooks key: the base64 after `whsec_` decoded (as the reference
    /// libraries do, with or without the prefix); a secret that is not base64 is used as is.
    fn standard_key(&self) -> Vec<u8> {
        use base64::Engine as _;
        let b = self.bytes();
        let encoded = b.strip_prefix(b"whsec_").unwrap_or(b);
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| b.to_vec())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<sensitive>)")
    }
}

/// Problems getting the webhook secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Neither a file nor the environment variable gives one.
    #[error(
        "no webhook secret: pass --webhook-secret-file FILE or set PLUMB_WEBHOOK_SECRET (plumb serve never accepts unauthenticated webhooks)"
    )]
    Missing,
    /// The secret is empty.
    #[error("the webhook secret is empty")]
    Empty,
    /// The file could not be read.
    #[error("reading the webhook secret file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is open to its group or to others.
    #[error(
        "the webhook secret file {path} has mode {mode:04o}: its group or others may read or change it; run `chmod 600 {path}` (or `chmod 400`)"
    )]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

/// The secret from `file` if given, else from `env` (the value of `PLUMB_WEBHOOK_SECRET`).
pub fn load_secret(file: Option<&Path>, env: Option<&[u8]>) -> Result<Secret, SecretError> {
    match (file, env) {
        (Some(path), _) => {
            use std::io::Read as _;
            use std::os::unix::fs::PermissionsExt as _;
            let read_err = |source| SecretError::Read {
                path: path.display().to_string(),
                source,
            };
            // The mode of the file read, not of a name that may change in between.
            let mut file = std::fs::File::open(path).map_err(read_err)?;
            let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(SecretError::Permissions {
                    path: path.display().to_string(),
                    mode,
                });
            }
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(read_err)?;
            Secret::new(&bytes)
        }
        (None, Some(value)) => Secret::new(value),
        (None, None) => Err(SecretError::Missing),
    }
}

/// The forge that sent a request, as told by the header it authenticated with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forge {
    /// GitHub (`X-Hub-Signature-256`).
    GitHub,
    /// Gitea or Forgejo (`X-Gitea-Signature` / `X-Forgejo-Signature`).
    Gitea,
    /// GitLab (`X-Gitlab-Token`, or a signing token's `webhook-signature`).
    GitLab,
}

impl Forge {
    /// Lower-case name, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::GitLab => "gitlab",
        }
    }
}

/// Why a request is not authenticated. Messages never include the secret or the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No signature or token header at all.
    #[error(
        "no X-Hub-Signature-256, X-Gitea-Signature, X-Forgejo-Signature, webhook-signature or X-Gitlab-Token header (is the webhook secret set at the forge?)"
    )]
    Missing,
    /// A Standard Webhooks timestamp too far from the server's clock (a replay, or a clock off).
    #[error(
        "webhook-timestamp is {skew_secs}s away from this server's clock (at most {TIMESTAMP_TOLERANCE_SECS}s allowed)"
    )]
    Stale {
        /// How far, in seconds.
        skew_secs: i64,
    },
    /// The header is not of the expected form (`sha256=<64 hex digits>`, or 64 hex digits).
    #[error("malformed {header} header")]
    Malformed {
        /// The header.
        header: &'static str,
    },
    /// The signature or token does not match the secret.
    #[error("{header} does not match the webhook secret")]
    Mismatch {
        /// The header.
        header: &'static str,
    },
}

fn mac(secret: &Secret) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail.
    match <HmacSha256 as KeyInit>::new_from_slice(secret.bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

fn verify_hex(
    secret: &Secret,
    body: &[u8],
    hex_sig: &str,
    header: &'static str,
) -> Result<(), AuthError> {
    let hex_sig = hex_sig.trim();
    if hex_sig.len() != 64 {
        return Err(AuthError::Malformed { header });
    }
    let tag = hex::decode(hex_sig).map_err(|_| AuthError::Malformed { header })?;
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&tag)
        .map_err(|_| AuthError::Mismatch { header })
}

/// Checks GitHub's `X-Hub-Signature-256` value (`sha256=<hex>`) against the raw body.
pub fn verify_github(secret: &Secret, body: &[u8], header: &str) -> Result<(), AuthError> {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return Err(AuthError::Malformed {
            header: "X-Hub-Signature-256",
        });
    };
    verify_hex(secret, body, hex_sig, "X-Hub-Signature-256")
}

/// Checks Gitea's `X-Gitea-Signature` value (`<hex>`) against the raw body.
pub fn verify_gitea(secret: &Secret, body: &[u8], header: &str) -> Result<(), AuthError> {
    verify_hex(secret, body, header, "X-Gitea-Signature")
}

/// Checks GitLab's `X-Gitlab-Token` value against the secret, in constant time: both are
/// MACed under one fixed key and the MACs compared, so neither content nor length leaks.
pub fn verify_gitlab(secret: &Secret, token: &str) -> Result<(), AuthError> {
    if same_secret(secret, token) {
        Ok(())
    } else {
        Err(AuthError::Mismatch {
            header: "X-Gitlab-Token",
        })
    }
}

/// Whether `value` is the secret itself, in constant time: both are MACed under one fixed key
/// and the MACs compared, so neither content nor length leaks. (GitLab's token, and the bearer
/// token of the status page.)
pub fn same_secret(secret: &Secret, value: &str) -> bool {
    const KEY: &[u8] = b"plumb gitlab token comparison";
    let digest = |value: &[u8]| {
        let mut m = match <HmacSha256 as KeyInit>::new_from_slice(KEY) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        m.update(value);
        m
    };
    let expected = digest(secret.bytes()).finalize().into_bytes();
    digest(value.as_bytes()).verify_slice(&expected).is_ok()
}

/// Checks Standard Webhooks headers (GitLab's signing token): `id`, `timestamp` (Unix seconds,
/// within [`TIMESTAMP_TOLERANCE_SECS`] of `now`) and `signatures` (space-separated `v1,<base64>`;
/// other versions are skipped; one matching `v1` is enough) over `id.timestamp.body`.
pub fn verify_standard(
    secret: &Secret,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
) -> Result<(), AuthError> {
    use base64::Engine as _;
    let malformed = |header| AuthError::Malformed { header };
    let id = id.trim();
    if id.is_empty() || id.len() > MAX_STANDARD_ID || !crate::text::is_clean(id) {
        return Err(malformed("webhook-id"));
    }
    let ts = timestamp.trim();
    if ts.is_empty() || ts.len() > 12 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("webhook-timestamp"));
    }
    let t: i64 = ts.parse().map_err(|_| malformed("webhook-timestamp"))?;
    let skew_secs = t.saturating_sub(now).abs();
    if skew_secs > TIMESTAMP_TOLERANCE_SECS {
        return Err(AuthError::Stale { skew_secs });
    }
    let mut m = match <HmacSha256 as KeyInit>::new_from_slice(&secret.standard_key()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    m.update(id.as_bytes());
    m.update(b".");
    m.update(ts.as_bytes());
    m.update(b".");
    m.update(body);
    let mut v1 = 0;
    for sig in signatures.split_ascii_whitespace().take(MAX_SIGNATURES) {
        let Some(b64) = sig.strip_prefix("v1,") else {
            continue;
        };
        v1 += 1;
        let Ok(tag) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        if m.clone().verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    if v1 == 0 {
        return Err(malformed("webhook-signature"));
    }
    Err(AuthError::Mismatch {
        header: "webhook-signature",
    })
}

/// `v1,<base64>` of a Standard Webhooks message (for tests and tools).
pub fn standard_signature(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    use base64::Engine as _;
    let mut m = match <HmacSha256 as KeyInit>::new_from_slice(&secret.standard_key()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    m.update(format!("{id}.{timestamp}.").as_bytes());
    m.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    )
}

/// True when a `Content-Type` names a form-encoded body.
pub fn is_form(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

/// The JSON a delivery carries: the body itself, or, for a form-encoded body, the value of its
/// one `payload` field (strictly decoded: a bad `%` escape, a repeated or missing `payload` is
/// an error).
pub fn json_payload(body: &[u8], form: bool) -> Result<std::borrow::Cow<'_, [u8]>, PayloadError> {
    if !form {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    let mut found = None;
    for field in body.split(|&b| b == b'&').filter(|f| !f.is_empty()) {
        let (name, value) = match field.iter().position(|&b| b == b'=') {
            Some(i) => (&field[..i], &field[i + 1..]),
            None => (field, &b""[..]),
        };
        if percent_decode(name)? == b"payload" {
            if found.is_some() {
                return Err(PayloadError::Form("more than one `payload` field".into()));
            }
            found = Some(percent_decode(value)?);
        }
    }
    found
        .map(std::borrow::Cow::Owned)
        .ok_or_else(|| PayloadError::Form("no `payload` field".into()))
}

/// `application/x-www-form-urlencoded` decoding of one name or value: `+` is a space, `%XX` a
/// byte; anything else after `%` is an error.
fn percent_decode(s: &[u8]) -> Result<Vec<u8>, PayloadError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .filter(|_| s[i + 1].is_ascii_hexdigit() && s[i + 2].is_ascii_hexdigit())
                    .ok_or_else(|| PayloadError::Form("a bad `%` escape".into()))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

/// Authenticates a request by whichever forge header it carries (looked up by lower-case name
/// through `header`); `now` is the server's Unix time, for Standard Webhooks timestamps.
/// GitHub's signature is preferred when several are present (Gitea sends both its own and
/// GitHub's), then Gitea's/Forgejo's, then a Standard Webhooks signature, then GitLab's token.
pub fn authenticate<'a>(
    secret: &Secret,
    body: &[u8],
    now: i64,
    header: impl Fn(&str) -> Option<&'a str>,
) -> Result<Forge, AuthError> {
    if let Some(v) = header(GITHUB_SIGNATURE) {
        // The raw body as sent, JSON or form.
        return verify_github(secret, body, v).map(|()| Forge::GitHub);
    }
    if let Some(v) = header(GITEA_SIGNATURE).or_else(|| header(FORGEJO_SIGNATURE)) {
        if is_form(header("content-type")) {
            // Gitea and Forgejo sign the JSON inside `payload=`.
            if let Ok(json) = json_payload(body, true)
                && verify_gitea(secret, &json, v).is_ok()
            {
                return Ok(Forge::Gitea);
            }
        }
        return verify_gitea(secret, body, v).map(|()| Forge::Gitea);
    }
    if let Some(sigs) = header(STANDARD_SIGNATURE) {
        let id = header(STANDARD_ID).ok_or(AuthError::Malformed {
            header: "webhook-id",
        })?;
        let ts = header(STANDARD_TIMESTAMP).ok_or(AuthError::Malformed {
            header: "webhook-timestamp",
        })?;
        return verify_standard(secret, id, ts, sigs, body, now).map(|()| Forge::GitLab);
    }
    if let Some(v) = header(GITLAB_TOKEN) {
        return verify_gitlab(secret, v).map(|()| Forge::GitLab);
    }
    Err(AuthError::Missing)
}

/// The headers that name the event, for each forge, by preference.
pub fn event_headers(forge: Forge) -> &'static [&'static str] {
    match forge {
        Forge::GitHub => &["x-github-event"],
        Forge::Gitea => &["x-gitea-event", "x-forgejo-event"],
        Forge::GitLab => &["x-gitlab-event"],
    }
}

/// The event a request names (`None` when it names none).
pub fn event_of<'a>(forge: Forge, header: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    event_headers(forge).iter().find_map(|h| header(h))
}

/// What an authenticated request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// GitHub's `ping` when a webhook is created: answered, nothing run.
    Ping,
    /// A push to the followed branch: run.
    Push {
        /// The pushed commit (`after`), when the payload has it.
        commit: Option<String>,
    },
    /// Anything else (another branch, a tag, a branch deletion, another event): nothing run.
    Ignored {
        /// Why, for the response and the log.
        reason: String,
    },
}

/// Problems with a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not a JSON object with a string `ref`.
    #[error("the payload is not a JSON push event with a `ref`: {0}")]
    Invalid(String),
    /// A form-encoded body without one well-formed `payload` field.
    #[error("the form-encoded body is not `payload=<JSON>`: {0}")]
    Form(String),
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    after: Option<String>,
    /// GitHub's and Gitea's flag for a deleted ref.
    #[serde(default)]
    deleted: Option<bool>,
}

/// The branch a ref names: `refs/heads/main` → `main`; `None` for tags and other refs.
pub fn branch_of(git_ref: &str) -> Option<&str> {
    git_ref
        .strip_prefix("refs/heads/")
        .filter(|b| !b.is_empty())
}

/// Classifies an authenticated request: `event` is the forge's event header (`push`,
/// `ping`, `Push Hook`, ...; `None` when absent, taken as a push), `body` the raw JSON payload,
/// `branch` the branch plumb follows.
pub fn classify(event: Option<&str>, body: &[u8], branch: &str) -> Result<Event, PayloadError> {
    match event.map(|e| e.trim().to_ascii_lowercase()) {
        Some(e) if e == "ping" => return Ok(Event::Ping),
        Some(e) if e == "push" || e == "push hook" || e == "system hook" => {}
        Some(e) if e == "tag push hook" || e == "create" || e == "delete" => {
            return Ok(Event::Ignored {
                reason: format!("event `{e}` does not push the branch"),
            });
        }
        None => {}
        Some(e) => {
            return Ok(Event::Ignored {
                reason: format!("event `{}` is not a push", escape(&e)),
            });
        }
    }
    let p: PushPayload =
        serde_json::from_slice(body).map_err(|e| PayloadError::Invalid(e.to_string()))?;
    let Some(pushed) = branch_of(&p.git_ref) else {
        return Ok(Event::Ignored {
            reason: format!("`{}` is not a branch", escape(&p.git_ref)),
        });
    };
    if pushed != branch {
        return Ok(Event::Ignored {
            reason: format!("push to branch `{}`, not `{branch}`", escape(pushed)),
        });
    }
    let commit = p.after.filter(|c| !c.is_empty());
    if p.deleted == Some(true)
        || commit
            .as_deref()
            .is_some_and(|c| !c.is_empty() && c.bytes().all(|b| b == b'0'))
    {
        return Ok(Event::Ignored {
            reason: format!("branch `{branch}` was deleted"),
        });
    }
    Ok(Event::Push { commit })
}

/// Headers that identify a delivery, by preference: GitHub's and Gitea's/Forgejo's delivery
/// UUIDs (kept by a redelivery), GitLab's `Idempotency-Key` (kept by its retries, GitLab 17.4+)
/// and then its `X-Gitlab-Event-UUID`.
pub const DELIVERY_HEADERS: &[&str] = &[
    "x-github-delivery",
    "x-gitea-delivery",
    "x-forgejo-delivery",
    "idempotency-key",
    "webhook-id",
    "x-gitlab-event-uuid",
];

/// Longest delivery id kept as is for the log; longer ones are shown by their hash.
const MAX_ID_LEN: usize = 128;

/// What identifies one delivery: the forge's delivery id, or the body's hash when the request
/// carries none (a replay of a captured request repeats the body exactly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryId {
    /// For logs and answers: the id (escaped, bounded), or `sha256:<hex>` of the body.
    pub label: String,
    /// What is remembered: SHA-256 of the header name and value (or of the body).
    pub key: [u8; 32],
}

/// The identity of a request, from its headers (looked up by lower-case name) and body.
pub fn delivery_id<'a>(header: impl Fn(&str) -> Option<&'a str>, body: &[u8]) -> DeliveryId {
    use sha2::Digest as _;
    for name in DELIVERY_HEADERS {
        if let Some(v) = header(name).map(str::trim).filter(|v| !v.is_empty()) {
            let mut h = Sha256::new();
            h.update(name.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            let key: [u8; 32] = h.finalize().into();
            let label = if v.len() <= MAX_ID_LEN {
                escape(v).into_owned()
            } else {
                format!("sha256:{}", hex::encode(key))
            };
            return DeliveryId { label, key };
        }
    }
    let key: [u8; 32] = Sha256::digest(body).into();
    DeliveryId {
        label: format!("sha256:{}", hex::encode(key)),
        key,
    }
}

/// How many deliveries [`Deliveries`] remembers by default.
pub const REMEMBERED_DELIVERIES: usize = 4096;

/// The deliveries seen lately, in bounded memory: the oldest is forgotten first.
#[derive(Debug)]
pub struct Deliveries {
    seen: std::collections::HashSet<[u8; 32]>,
    order: std::collections::VecDeque<[u8; 32]>,
    capacity: usize,
}

impl Deliveries {
    /// Remembers up to `capacity` deliveries (at least one).
    pub fn new(capacity: usize) -> Deliveries {
        Deliveries {
            seen: std::collections::HashSet::new(),
            order: std::collections::VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records a delivery; false when it was recorded already (a replay).
    pub fn insert(&mut self, key: [u8; 32]) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// Forgets a delivery that was not acted on, so that the forge's retry is.
    pub fn forget(&mut self, key: &[u8; 32]) {
        if self.seen.remove(key) {
            self.order.retain(|k| k != key);
        }
    }

    /// Number remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when none is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// `sha256=<hex>` of `body` under `secret`, as GitHub sends it (for tests and tools).
pub fn github_signature(secret: &Secret, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new(b"It's a Secret to Everybody").unwrap()
    }

    const BODY: &[u8] = b"Hello, World!";
    // GitHub's documented example for this secret and payload.
    const GITHUB_EXAMPLE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_signature_matches_githubs_documented_example() {
        assert_eq!(github_signature(&secret(), BODY), GITHUB_EXAMPLE);
        assert_eq!(verify_github(&secret(), BODY, GITHUB_EXAMPLE), Ok(()));
        // Upper-case hex is accepted too.
        let upper = format!("sha256={}", GITHUB_EXAMPLE[7..].to_ascii_uppercase());
        assert_eq!(verify_github(&secret(), BODY, &upper), Ok(()));
    }

    #[test]
    fn github_signature_with_a_wrong_secret_is_refused() {
        let other = Secret::new(b"another secret").unwrap();
        assert_eq!(
            verify_github(&other, BODY, GITHUB_EXAMPLE),
            Err(AuthError::Mismatch {
                header: "X-Hub-Signature-256"
            })
        );
    }

    #[test]
    fn a_tampered_body_is_refused() {
        assert!(matches!(
            verify_github(&secret(), b"Hello, World?", GITHUB_EXAMPLE),
            Err(AuthError::Mismatch { .. })
        ));
        let gitea = &GITHUB_EXAMPLE[7..];
        assert_eq!(verify_gitea(&secret(), BODY, gitea), Ok(()));
        assert!(matches!(
            verify_gitea(&secret(), b"Hello, World!\n", gitea),
            Err(AuthError::Mismatch { .. })
        ));
    }

    #[test]
    fn malformed_signatures_are_refused_as_malformed() {
        let s = secret();
        for bad in [
            "",
            "sha256=",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1700",
        ] {
            assert!(
                matches!(
                    verify_github(&s, BODY, bad),
                    Err(AuthError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            verify_gitea(&s, BODY, "not hex at all"),
            Err(AuthError::Malformed { .. })
        ));
    }

    #[test]
    fn gitlab_token_is_compared_whole() {
        let s = secret();
        assert_eq!(verify_gitlab(&s, "It's a Secret to Everybody"), Ok(()));
        for bad in [
            "",
            "It's a Secret to Everybod",
            "It's a Secret to Everybody!",
            "it's a secret to everybody",
        ] {
            assert!(
                matches!(verify_gitlab(&s, bad), Err(AuthError::Mismatch { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn authenticate_picks_the_forge_by_header_and_requires_one() {
        let s = secret();
        assert_eq!(
            authenticate(&s, BODY, 0, |n| (n == GITHUB_SIGNATURE)
                .then_some(GITHUB_EXAMPLE)),
            Ok(Forge::GitHub)
        );

        let gitea = GITHUB_EXAMPLE[7..].to_string();
        assert_eq!(
            authenticate(&s, BODY, 0, |n| (n == GITEA_SIGNATURE)
                .then_some(gitea.as_str())),
            Ok(Forge::Gitea)
        );
        assert_eq!(
            authenticate(&s, BODY, 0, |n| (n == FORGEJO_SIGNATURE)
                .then_some(gitea.as_str())),
            Ok(Forge::Gitea)
        );
        assert_eq!(
            authenticate(&s, BODY, 0, |n| (n == GITLAB_TOKEN)
                .then_some("It's a Secret to Everybody")),
            Ok(Forge::GitLab)
        );
        assert_eq!(authenticate(&s, BODY, 0, |_| None), Err(AuthError::Missing));
        // A wrong GitHub signature is not rescued by a right GitLab token.
        assert!(matches!(
            authenticate(&s, BODY, 0, |n| match n {
                GITHUB_SIGNATURE => Some("sha256=00"),
                GITLAB_TOKEN => Some("It's a Secret to Everybody"),
                _ => None,
            }),
            Err(AuthError::Malformed { .. })
        ));
    }

    #[test]
    fn secrets_are_trimmed_required_and_never_shown() {
        assert!(matches!(Secret::new(b" \n"), Err(SecretError::Empty)));
        let s = Secret::new(b"It's a Secret to Everybody\n").unwrap();
        assert_eq!(verify_github(&s, BODY, GITHUB_EXAMPLE), Ok(()));
        assert!(!format!("{s:?}").contains("Secret to"));
        assert!(matches!(load_secret(None, None), Err(SecretError::Missing)));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "from-file\n").unwrap();
        set_mode(&f, 0o600);
        let s = load_secret(Some(&f), Some(b"from-env")).unwrap();
        assert_eq!(verify_gitlab(&s, "from-file"), Ok(()));
        let s = load_secret(None, Some(b"from-env")).unwrap();
        assert_eq!(verify_gitlab(&s, "from-env"), Ok(()));
        assert!(matches!(
            load_secret(Some(&dir.path().join("missing")), None),
            Err(SecretError::Read { .. })
        ));
    }

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_secret_file_open_to_group_or_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "s3cret\n").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602, 0o620, 0o601] {
            set_mode(&f, mode);
            let e = load_secret(Some(&f), None).unwrap_err();
            assert!(
                matches!(e, SecretError::Permissions { mode: m, .. } if m == mode),
                "{mode:o}: {e}"
            );
            let msg = e.to_string();
            assert!(msg.contains(&format!("chmod 600 {}", f.display())), "{msg}");
            assert!(msg.contains(&format!("mode {mode:04o}")), "{msg}");
            assert!(!msg.contains("s3cret"), "{msg}");
        }
        for mode in [0o600, 0o400] {
            set_mode(&f, mode);
            assert!(load_secret(Some(&f), None).is_ok(), "{mode:o}");
        }
    }

    #[test]
    fn deliveries_are_identified_by_the_forge_id_or_the_body_and_remembered_boundedly() {
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
        };
        let gh = delivery_id(headers(&[("x-github-delivery", "72d3162e")]), b"{}");
        assert_eq!(gh.label, "72d3162e");
        // The same id under another forge's header is another delivery.
        let gitea = delivery_id(headers(&[("x-gitea-delivery", "72d3162e")]), b"{}");
        assert_ne!(gh.key, gitea.key);
        // GitLab: the idempotency key (kept by retries) wins over the event UUID.
        let gl = delivery_id(
            headers(&[("x-gitlab-event-uuid", "e"), ("idempotency-key", "k")]),
            b"{}",
        );
        assert_eq!(gl.label, "k");
        // No id: the body's hash; escape sequences in an id are shown escaped.
        let none = delivery_id(headers(&[]), b"body");
        assert!(none.label.starts_with("sha256:"), "{}", none.label);
        assert_eq!(none, delivery_id(headers(&[]), b"body"));
        assert_ne!(none.key, delivery_id(headers(&[]), b"body2").key);
        let odd = delivery_id(headers(&[("x-github-delivery", "a\x1b[2Jb")]), b"");
        assert_eq!(odd.label, "a\\e[2Jb");

        let mut d = Deliveries::new(3);
        assert!(d.insert(gh.key));
        assert!(!d.insert(gh.key), "a replay");
        d.forget(&gh.key);
        assert!(d.insert(gh.key), "forgotten: taken again");
        for k in [gitea.key, gl.key, none.key] {
            assert!(d.insert(k));
        }
        assert_eq!(d.len(), 3);
        // The oldest went first.
        assert!(d.insert(gh.key));
        assert!(!d.insert(none.key));
    }

    #[test]
    fn push_refs_are_parsed_for_every_forge() {
        let github = br#"{"ref":"refs/heads/main","before":"a","after":"0123456789abcdef0123456789abcdef01234567","repository":{"full_name":"o/r"}}"#;
        assert_eq!(
            classify(Some("push"), github, "main"),
            Ok(Event::Push {
                commit: Some("0123456789abcdef0123456789abcdef01234567".into())
            })
        );
        let gitlab =
            br#"{"object_kind":"push","ref":"refs/heads/main","checkout_sha":"abc","after":"abc"}"#;
        assert_eq!(
            classify(Some("Push Hook"), gitlab, "main"),
            Ok(Event::Push {
                commit: Some("abc".into())
            })
        );
        let gitea = br#"{"ref":"refs/heads/release/1.x","after":"def"}"#;
        assert_eq!(
            classify(Some("push"), gitea, "release/1.x"),
            Ok(Event::Push {
                commit: Some("def".into())
            })
        );
        // No event header: taken as a push.
        assert_eq!(
            classify(None, br#"{"ref":"refs/heads/main"}"#, "main"),
            Ok(Event::Push { commit: None })
        );
    }

    #[test]
    fn other_branches_tags_deletions_and_events_are_ignored() {
        let ignored = |e: Result<Event, PayloadError>| matches!(e, Ok(Event::Ignored { .. }));
        assert!(ignored(classify(
            Some("push"),
            br#"{"ref":"refs/heads/dev","after":"abc"}"#,
            "main"
        )));
        assert!(ignored(classify(
            Some("push"),
            br#"{"ref":"refs/heads/mainline","after":"abc"}"#,
            "main"
        )));
        assert!(ignored(classify(
            Some("push"),
            br#"{"ref":"refs/tags/main","after":"abc"}"#,
            "main"
        )));
        assert!(ignored(classify(
            Some("push"),
            br#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}"#,
            "main"
        )));
        assert!(ignored(classify(Some("issues"), b"{}", "main")));
        assert_eq!(classify(Some("ping"), b"{}", "main"), Ok(Event::Ping));
        assert_eq!(branch_of("refs/heads/a/b"), Some("a/b"));
        assert_eq!(branch_of("refs/heads/"), None);
        assert_eq!(branch_of("main"), None);
    }

    #[test]
    fn bad_payloads_are_errors() {
        for body in [
            &b""[..],
            b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D",
            b"{}",
            br#"{"ref":5}"#,
            b"[1,2]",
        ] {
            assert!(classify(Some("push"), body, "main").is_err(), "{body:?}");
        }
    }

    // The Standard Webhooks reference vector (their libraries' "sign function works" test).
    const SW_KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TS: i64 = 1614265330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn standard_webhooks_reference_vector() {
        let key = Secret::new(SW_KEY.as_bytes()).unwrap();
        assert_eq!(standard_signature(&key, SW_ID, SW_TS, SW_BODY), SW_SIG);
        let ts = SW_TS.to_string();
        assert_eq!(
            verify_standard(&key, SW_ID, &ts, SW_SIG, SW_BODY, SW_TS),
            Ok(())
        );
        // Without the prefix the key is the same base64.
        let bare = Secret::new(&SW_KEY.as_bytes()[6..]).unwrap();
        assert_eq!(
            verify_standard(&bare, SW_ID, &ts, SW_SIG, SW_BODY, SW_TS + 299),
            Ok(())
        );
        // Several signatures, other versions among them: one valid v1 is enough.
        let several = format!(
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {SW_SIG} v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
        );
        assert_eq!(
            verify_standard(&key, SW_ID, &ts, &several, SW_BODY, SW_TS),
            Ok(())
        );
        // Through `authenticate`, as GitLab sends it.
        let h = |n: &str| match n {
            STANDARD_ID => Some(SW_ID),
            STANDARD_TIMESTAMP => Some("1614265330"),
            STANDARD_SIGNATURE => Some(SW_SIG),
            "x-gitlab-event" => Some("Push Hook"),
            _ => None,
        };
        assert_eq!(
            authenticate(&key, SW_BODY, SW_TS - 10, h),
            Ok(Forge::GitLab)
        );
    }

    #[test]
    fn standard_webhooks_refuse_stale_tampered_and_malformed() {
        let key = Secret::new(SW_KEY.as_bytes()).unwrap();
        let ts = SW_TS.to_string();
        // Outside the 5-minute tolerance, either way.
        for now in [SW_TS + 301, SW_TS - 301, SW_TS + 86_400] {
            assert!(
                matches!(
                    verify_standard(&key, SW_ID, &ts, SW_SIG, SW_BODY, now),
                    Err(AuthError::Stale { .. })
                ),
                "{now}"
            );
        }
        // Another body, id, timestamp or key.
        let mismatch = |r| matches!(r, Err(AuthError::Mismatch { .. }));
        assert!(mismatch(verify_standard(
            &key,
            SW_ID,
            &ts,
            SW_SIG,
            br#"{"test": 2432232315}"#,
            SW_TS
        )));
        assert!(mismatch(verify_standard(
            &key,
            "msg_other",
            &ts,
            SW_SIG,
            SW_BODY,
            SW_TS
        )));
        assert!(mismatch(verify_standard(
            &key,
            SW_ID,
            "1614265331",
            SW_SIG,
            SW_BODY,
            SW_TS
        )));
        let other = Secret::new(b"whsec_c2VjcmV0").unwrap();
        assert!(mismatch(verify_standard(
            &other, SW_ID, &ts, SW_SIG, SW_BODY, SW_TS
        )));
        assert!(mismatch(verify_standard(
            &key,
            SW_ID,
            &ts,
            "v1,dawfeoifkpqwoekfpqoekf",
            SW_BODY,
            SW_TS
        )));
        assert!(mismatch(verify_standard(
            &key,
            SW_ID,
            &ts,
            &SW_SIG[..8],
            SW_BODY,
            SW_TS
        )));
        // Malformed headers.
        let malformed = |r| matches!(r, Err(AuthError::Malformed { .. }));
        for (id, t, sig) in [
            ("", ts.as_str(), SW_SIG),
            ("a\nb", ts.as_str(), SW_SIG),
            (SW_ID, "hello", SW_SIG),
            (SW_ID, "-5", SW_SIG),
            (SW_ID, "", SW_SIG),
            (SW_ID, ts.as_str(), ""),
            (SW_ID, ts.as_str(), "v2,abc"),
        ] {
            assert!(
                malformed(verify_standard(&key, id, t, sig, SW_BODY, SW_TS)),
                "{id:?} {t:?} {sig:?}"
            );
        }
        // A signature without its id or timestamp header.
        assert!(matches!(
            authenticate(&key, SW_BODY, SW_TS, |n| (n == STANDARD_SIGNATURE)
                .then_some(SW_SIG)),
            Err(AuthError::Malformed { .. })
        ));
    }

    /// `payload=<JSON>` as a browser or a forge form-encodes it.
    fn form(json: &[u8]) -> Vec<u8> {
        let mut out = b"payload=".to_vec();
        for &b in json {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b),
                b' ' => out.push(b'+'),
                _ => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
            }
        }
        out
    }

    const FORM: &str = "application/x-www-form-urlencoded";

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |n: &str| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
    }

    /// Authenticates and classifies a request as `plumb serve` does.
    fn deliver(s: &Secret, body: &[u8], pairs: &[(&str, &str)]) -> Result<Event, String> {
        let h = headers(pairs);
        let forge = authenticate(s, body, 0, &h).map_err(|e| e.to_string())?;
        let json = json_payload(body, is_form(h("content-type"))).map_err(|e| e.to_string())?;
        classify(event_of(forge, &h), &json, "main").map_err(|e| e.to_string())
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/webhooks")
            .join(name);
        std::fs::read(&p).unwrap()
    }

    fn pushed(e: &Result<Event, String>, commit: &str) -> bool {
        matches!(e, Ok(Event::Push { commit: Some(c) }) if c == commit)
    }

    fn ignored(e: &Result<Event, String>) -> bool {
        matches!(e, Ok(Event::Ignored { .. }))
    }

    #[test]
    fn github_json_and_form_deliveries_sign_the_raw_body() {
        let s = secret();
        let new = fixture("github-push-new-branch.json");
        for (body, ct) in [
            (new.clone(), "application/json"),
            (form(&new), FORM),
            (
                form(&new),
                "Application/X-WWW-Form-Urlencoded; charset=utf-8",
            ),
        ] {
            let sig = github_signature(&s, &body);
            let e = deliver(
                &s,
                &body,
                &[
                    ("content-type", ct),
                    ("x-github-event", "push"),
                    (GITHUB_SIGNATURE, &sig),
                ],
            );
            assert!(
                pushed(&e, "6113728f27ae82c7b1a177c8d03f9e96e0adf246"),
                "{ct}: {e:?}"
            );
            // The signature of the decoded JSON is not GitHub's for a form: refused.
            if ct != "application/json" {
                let wrong = github_signature(&s, &new);
                let e = deliver(
                    &s,
                    &body,
                    &[("content-type", ct), (GITHUB_SIGNATURE, &wrong)],
                );
                assert!(e.unwrap_err().contains("does not match"));
            }
            // Unsigned: refused.
            let e = deliver(
                &s,
                &body,
                &[("content-type", ct), ("x-github-event", "push")],
            );
            assert!(e.unwrap_err().contains("no X-Hub-Signature-256"));
        }
        // A tag and a branch deletion, JSON and form: nothing run.
        for name in ["github-push-tag.json", "github-push-delete-branch.json"] {
            let json = fixture(name);
            for (body, ct) in [(json.clone(), "application/json"), (form(&json), FORM)] {
                let sig = github_signature(&s, &body);
                let e = deliver(
                    &s,
                    &body,
                    &[
                        ("content-type", ct),
                        ("x-github-event", "push"),
                        (GITHUB_SIGNATURE, &sig),
                    ],
                );
                assert!(ignored(&e), "{name} {ct}: {e:?}");
            }
        }
    }

    #[test]
    fn gitea_and_forgejo_sign_the_json_inside_the_form() {
        let s = secret();
        let json = fixture("gitea-push-new-branch.json");
        let sig_json = github_signature(&s, &json)[7..].to_string();
        let commit = "bffeb74224043ba2feb48d137756c8a9331c449a";
        for (sig_header, event_header) in [
            (GITEA_SIGNATURE, "x-gitea-event"),
            (FORGEJO_SIGNATURE, "x-forgejo-event"),
        ] {
            // JSON.
            let e = deliver(
                &s,
                &json,
                &[
                    ("content-type", "application/json"),
                    (event_header, "push"),
                    (sig_header, &sig_json),
                ],
            );
            assert!(pushed(&e, commit), "{e:?}");
            // Form, signed over the JSON inside `payload=`.
            let body = form(&json);
            let e = deliver(
                &s,
                &body,
                &[
                    ("content-type", FORM),
                    (event_header, "push"),
                    (sig_header, &sig_json),
                ],
            );
            assert!(pushed(&e, commit), "{e:?}");
            // Form signed with another secret: refused.
            let other = github_signature(&Secret::new(b"other").unwrap(), &json)[7..].to_string();
            let e = deliver(&s, &body, &[("content-type", FORM), (sig_header, &other)]);
            assert!(e.unwrap_err().contains("does not match"));
        }
        // A tag push, a branch deletion (as a push with zeros and as a `delete` event).
        for (name, event) in [
            ("gitea-push-tag.json", "push"),
            ("gitea-push-delete-branch.json", "push"),
            ("gitea-delete-branch.json", "delete"),
        ] {
            let json = fixture(name);
            let sig = github_signature(&s, &json)[7..].to_string();
            let body = form(&json);
            let e = deliver(
                &s,
                &body,
                &[
                    ("content-type", FORM),
                    ("x-gitea-event", event),
                    (GITEA_SIGNATURE, &sig),
                ],
            );
            assert!(ignored(&e), "{name}: {e:?}");
        }
    }

    #[test]
    fn gitlab_token_and_signing_token_deliveries() {
        let s = Secret::new(SW_KEY.as_bytes()).unwrap();
        let new = fixture("gitlab-push-new-branch.json");
        let commit = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";
        let e = deliver(
            &s,
            &new,
            &[("x-gitlab-event", "Push Hook"), (GITLAB_TOKEN, SW_KEY)],
        );
        assert!(pushed(&e, commit), "{e:?}");
        let e = deliver(
            &s,
            &new,
            &[("x-gitlab-event", "Push Hook"), (GITLAB_TOKEN, "nope")],
        );
        assert!(e.unwrap_err().contains("does not match"));
        // Signing token, at the server's time (0 in `deliver`).
        let sig = standard_signature(&s, "whid-1", 0, &new);
        let e = deliver(
            &s,
            &new,
            &[
                ("x-gitlab-event", "Push Hook"),
                (STANDARD_ID, "whid-1"),
                (STANDARD_TIMESTAMP, "0"),
                (STANDARD_SIGNATURE, &sig),
            ],
        );
        assert!(pushed(&e, commit), "{e:?}");
        // Outside the tolerance: refused, however well signed.
        let sig = standard_signature(&s, "whid-2", 3600, &new);
        let e = deliver(
            &s,
            &new,
            &[
                (STANDARD_ID, "whid-2"),
                (STANDARD_TIMESTAMP, "3600"),
                (STANDARD_SIGNATURE, &sig),
                // A right token does not rescue a stale signature.
                (GITLAB_TOKEN, SW_KEY),
            ],
        );
        assert!(e.unwrap_err().contains("3600s away"));
        // A tag push and a branch deletion run nothing.
        for (name, event) in [
            ("gitlab-tag-push.json", "Tag Push Hook"),
            ("gitlab-push-delete-branch.json", "Push Hook"),
        ] {
            let json = fixture(name);
            let e = deliver(
                &s,
                &json,
                &[("x-gitlab-event", event), (GITLAB_TOKEN, SW_KEY)],
            );
            assert!(ignored(&e), "{name}: {e:?}");
        }
        // The tag push is ignored on its ref too, without the event header.
        let json = fixture("gitlab-tag-push.json");
        assert!(ignored(&Ok(classify(None, &json, "main").unwrap())));
    }

    #[test]
    fn form_bodies_are_decoded_strictly() {
        assert_eq!(
            json_payload(b"payload=%7B%22a%22%3A+1%7D", true)
                .unwrap()
                .as_ref(),
            br#"{"a": 1}"#
        );
        assert_eq!(
            json_payload(b"x=1&payload=%7B%7D&y", true)
                .unwrap()
                .as_ref(),
            b"{}"
        );
        for bad in [
            &b""[..],
            b"x=1",
            b"payload=%7",
            b"payload=%zz",
            b"payload=%+1",
            b"payload=1&payload=2",
        ] {
            assert!(json_payload(bad, true).is_err(), "{bad:?}");
        }
        assert!(is_form(Some("application/x-www-form-urlencoded")));
        assert!(!is_form(Some("application/json")));
        assert!(!is_form(None));
    }
}
