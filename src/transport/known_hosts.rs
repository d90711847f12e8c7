//! Reading and appending OpenSSH known_hosts files.
//!
//! russh ships a known_hosts helper, but it stops at the first line it cannot
//! parse, counts line numbers without comments, ignores `@revoked`, wildcards
//! and negations, and reports a key of another type as "unknown". Host key
//! checking is the one security decision this module makes, so it follows
//! sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT" closely instead:
//!
//! - `hostnames keytype base64 [comment]`, fields separated by spaces or tabs;
//!   blank lines and `#` comments are skipped, lines that do not parse are
//!   skipped (with a debug log) rather than poisoning the whole file;
//! - host patterns are comma separated, may use `*` and `?`, and a matching
//!   `!pattern` excludes the line; hashed names (`|1|salt|hmac-sha1`) as
//!   written by `ssh-keygen -H` / `HashKnownHosts yes`;
//! - hosts on a port other than 22 are looked up as `[address]:port`;
//! - `@revoked` lines refuse their key (a plain key, the key inside a host
//!   certificate, or the CA that signed one);
//! - `@cert-authority` lines trust OpenSSH host certificates signed by their
//!   key, for the hosts their patterns match ([`KnownHosts::check_certificate`]:
//!   CA, signature, type, validity window, principals, critical options);
//! - several files are read as one (`UserKnownHostsFile a b`,
//!   `GlobalKnownHostsFile`), each line remembering its file for messages.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::{Algorithm, Certificate, HashAlg, PublicKey};

/// The name a host is recorded under: `address` on port 22, `[address]:port`
/// otherwise, lower-cased like OpenSSH does before matching.
pub(crate) fn host_pattern(address: &str, port: u16) -> String {
    let address = address.to_ascii_lowercase();
    if port == 22 {
        address
    } else {
        format!("[{address}]:{port}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The file the line is in.
    file: Arc<PathBuf>,
    /// 1-based line number in the file, for messages.
    line: usize,
    marker: Marker,
    hosts: String,
    key: PublicKey,
}

/// What the known_hosts file says about a key a host offered.
#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    /// A line for this host lists exactly this key.
    Trusted,
    /// No line mentions this host at all.
    Unknown,
    /// Lines mention this host, none with this key. `file`, `line` and
    /// `known` are the recorded key to show (one of the same type when there
    /// is one).
    Changed {
        file: PathBuf,
        line: usize,
        known: PublicKey,
    },
    /// The key is listed under `@revoked`.
    Revoked { file: PathBuf, line: usize },
}

/// What the known_hosts files say about a host certificate.
#[derive(Debug, Clone)]
pub(crate) enum CertVerdict {
    /// Signed by a CA an `@cert-authority` line trusts for this host, and
    /// valid: type, signature, validity window, principal.
    Trusted { file: PathBuf, line: usize },
    /// No `@cert-authority` line for this host holds the key that signed it.
    NoAuthority,
    /// A trusted CA signed it, but it is not valid for this host now.
    Invalid {
        file: PathBuf,
        line: usize,
        reason: String,
    },
    /// The certificate's key or its CA is listed under `@revoked`.
    Revoked { file: PathBuf, line: usize },
}

/// A parsed known_hosts file.
#[derive(Debug, Clone, Default)]
pub(crate) struct KnownHosts {
    entries: Vec<Entry>,
}

impl KnownHosts {
    /// Reads `path`; a missing file is an empty one (nothing is known yet).
    pub(crate) fn load(path: &Path) -> io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Self::parse_file(path, &String::from_utf8_lossy(&bytes))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Reads several files as one, in order; missing files are empty. The
    /// error names the file that could not be read.
    pub(crate) fn load_all(paths: &[PathBuf]) -> Result<Self, (PathBuf, io::Error)> {
        let mut all = KnownHosts::default();
        for p in paths {
            let one = Self::load(p).map_err(|e| (p.clone(), e))?;
            all.entries.extend(one.entries);
        }
        Ok(all)
    }

    /// Parses known_hosts text; never fails, see the module docs.
    #[cfg(test)]
    pub(crate) fn parse(text: &str) -> Self {
        Self::parse_file(Path::new("known_hosts"), text)
    }

    /// Parses the text of `file`; never fails, see the module docs.
    pub(crate) fn parse_file(file: &Path, text: &str) -> Self {
        let file = Arc::new(file.to_path_buf());
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut fields = trimmed.split_ascii_whitespace();
            let Some(mut first) = fields.next() else {
                continue;
            };
            let marker = if first.starts_with('@') {
                let marker = match first {
                    "@revoked" => Marker::Revoked,
                    "@cert-authority" => Marker::CertAuthority,
                    other => {
                        // Anything newer: not ours to judge.
                        tracing::debug!(line, marker = other, "known_hosts: skipping marker line");
                        continue;
                    }
                };
                match fields.next() {
                    Some(hosts) => first = hosts,
                    None => continue,
                }
                marker
            } else {
                Marker::None
            };
            let (Some(key_type), Some(blob)) = (fields.next(), fields.next()) else {
                tracing::debug!(line, "known_hosts: skipping line without a key");
                continue;
            };
            match PublicKey::from_openssh(&format!("{key_type} {blob}")) {
                Ok(key) => entries.push(Entry {
                    file: Arc::clone(&file),
                    line,
                    marker,
                    hosts: first.to_string(),
                    key,
                }),
                Err(e) => {
                    tracing::debug!(line, error = %e, "known_hosts: skipping unparsable key");
                }
            }
        }
        KnownHosts { entries }
    }

    /// Judges `key` offered by the host recorded as `name` (see
    /// [`host_pattern`]).
    pub(crate) fn check(&self, name: &str, key: &PublicKey) -> Verdict {
        let name = name.to_ascii_lowercase();
        let mut other: Option<&Entry> = None;
        for entry in self.entries.iter().filter(|e| e.marker == Marker::Revoked) {
            if entry.key.key_data() == key.key_data() && hosts_match(&entry.hosts, &name) {
                return Verdict::Revoked {
                    file: entry.file.to_path_buf(),
                    line: entry.line,
                };
            }
        }
        for entry in self.entries.iter().filter(|e| e.marker == Marker::None) {
            if !hosts_match(&entry.hosts, &name) {
                continue;
            }
            if entry.key.key_data() == key.key_data() {
                return Verdict::Trusted;
            }
            // Prefer showing a recorded key of the same type: that is the
            // one the operator will want to compare against.
            let same_type = same_family(&entry.key.algorithm(), &key.algorithm());
            match other {
                None => other = Some(entry),
                Some(prev)
                    if same_type && !same_family(&prev.key.algorithm(), &key.algorithm()) =>
                {
                    other = Some(entry)
                }
                Some(_) => {}
            }
        }
        match other {
            Some(entry) => Verdict::Changed {
                file: entry.file.to_path_buf(),
                line: entry.line,
                known: entry.key.clone(),
            },
            None => Verdict::Unknown,
        }
    }

    /// Whether an `@cert-authority` line applies to `name`: then the
    /// handshake asks for a host certificate first.
    pub(crate) fn has_authority(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.entries
            .iter()
            .any(|e| e.marker == Marker::CertAuthority && hosts_match(&e.hosts, &name))
    }

    /// Judges a host certificate offered by the host recorded as `name`
    /// (see [`host_pattern`]), which must name `principal` (the host name
    /// dialled, or `HostKeyAlias`), at `now` (seconds since the epoch).
    ///
    /// Stricter than OpenSSH in one place: a host certificate without
    /// principals is refused (OpenSSH accepts it for any host).
    pub(crate) fn check_certificate(
        &self,
        name: &str,
        principal: &str,
        cert: &Certificate,
        now: u64,
    ) -> CertVerdict {
        let name = name.to_ascii_lowercase();
        for entry in self.entries.iter().filter(|e| e.marker == Marker::Revoked) {
            let revoked = entry.key.key_data() == cert.public_key()
                || entry.key.key_data() == cert.signature_key();
            if revoked && hosts_match(&entry.hosts, &name) {
                return CertVerdict::Revoked {
                    file: entry.file.to_path_buf(),
                    line: entry.line,
                };
            }
        }
        let Some(ca) = self.entries.iter().find(|e| {
            e.marker == Marker::CertAuthority
                && e.key.key_data() == cert.signature_key()
                && hosts_match(&e.hosts, &name)
        }) else {
            return CertVerdict::NoAuthority;
        };
        let invalid = |reason: String| CertVerdict::Invalid {
            file: ca.file.to_path_buf(),
            line: ca.line,
            reason,
        };
        if cert.cert_type() != CertType::Host {
            return invalid("it is a user certificate, not a host certificate".into());
        }
        if cert.verify_signature().is_err() {
            return invalid("its signature does not verify against the CA key".into());
        }
        if now < cert.valid_after() {
            return invalid(format!(
                "it is not valid before {}",
                utc(cert.valid_after())
            ));
        }
        if now >= cert.valid_before() {
            return invalid(format!("it expired on {}", utc(cert.valid_before())));
        }
        let principals = cert.valid_principals();
        if principals.is_empty() {
            return invalid(
                "it names no principals (plumb requires the host's name in a host certificate)"
                    .into(),
            );
        }
        if !principals.iter().any(|p| p.eq_ignore_ascii_case(principal)) {
            return invalid(format!(
                "it is not valid for `{principal}` (its principals: {})",
                principals
                    .iter()
                    .map(|p| super::ssh_config::escape(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some((option, _)) = cert.critical_options().iter().next() {
            return invalid(format!(
                "it carries the critical option `{}`, which host certificates do not have",
                super::ssh_config::escape(option)
            ));
        }
        tracing::debug!(
            key_id = %super::ssh_config::escape(cert.key_id()),
            ca = %cert.signature_key().fingerprint(HashAlg::Sha256),
            "host certificate trusted"
        );
        CertVerdict::Trusted {
            file: ca.file.to_path_buf(),
            line: ca.line,
        }
    }

    /// Key algorithms recorded for `name`, so the handshake can ask the
    /// host for a key type we can verify (OpenSSH does the same).
    pub(crate) fn known_algorithms(&self, name: &str) -> Vec<Algorithm> {
        let name = name.to_ascii_lowercase();
        let mut algorithms: Vec<Algorithm> = Vec::new();
        for entry in &self.entries {
            if entry.marker == Marker::None && hosts_match(&entry.hosts, &name) {
                let algorithm = entry.key.algorithm();
                if !algorithms.contains(&algorithm) {
                    algorithms.push(algorithm);
                }
            }
        }
        algorithms
    }
}

/// `2026-01-02T03:04:05Z` for certificate times (`forever` for the maximum).
fn utc(secs: u64) -> String {
    if secs == u64::MAX {
        return "forever".into();
    }
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} (seconds since 1970)"))
}

/// RSA keys are one family whatever signature hash is negotiated.
pub(crate) fn same_family(a: &Algorithm, b: &Algorithm) -> bool {
    matches!((a, b), (Algorithm::Rsa { .. }, Algorithm::Rsa { .. })) || a == b
}

/// OpenSSH `match_hostname`: any matching `!pattern` rejects, otherwise any
/// matching pattern accepts. `name` is already lower-case.
fn hosts_match(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        let hit = if pattern.starts_with("|1|") {
            hashed_match(pattern, name)
        } else {
            glob_match(pattern.to_ascii_lowercase().as_bytes(), name.as_bytes())
        };
        if hit {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.
fn hashed_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('|').skip(2);
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let (Ok(salt), Ok(hash)) = (engine.decode(salt), engine.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    // Constant time is not needed here (the hash is not a secret), but
    // verify_slice is the API that compares, so use it.
    mac.verify_slice(&hash).is_ok()
}

/// `*` matches any run of characters, `?` exactly one.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matcher with single-star backtracking: linear enough for
    // host names and no recursion on hostile input.
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// Serialises appends from this process: many hosts may be learned at once
/// by parallel connections, and "check then append" must not interleave.
static APPEND_LOCK: Mutex<()> = Mutex::new(());

/// Records `key` for `name` unless the file already knows the host.
///
/// Re-reads the file under a lock so that parallel connections (or a key
/// added by hand meanwhile) are seen; returns the verdict found before
/// writing: only `Unknown` leads to a write.
pub(crate) fn learn(path: &Path, name: &str, key: &PublicKey) -> io::Result<Verdict> {
    let _guard = APPEND_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let verdict = KnownHosts::load(path)?.check(name, key);
    if !matches!(verdict, Verdict::Unknown) {
        return Ok(verdict);
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let mut needs_newline = false;
    if file.seek(SeekFrom::End(-1)).is_ok() {
        let mut last = [0u8; 1];
        file.read_exact(&mut last)?;
        needs_newline = last[0] != b'\n';
    }
    let mut bare = key.clone();
    bare.set_comment("");
    let encoded = bare.to_openssh().map_err(io::Error::other)?;
    let line = format!(
        "{}{name} {}\n",
        if needs_newline { "\n" } else { "" },
        encoded.trim_end()
    );
    // One write with O_APPEND: other processes appending at the same time
    // cannot split the line.
    file.write_all(line.as_bytes())?;
    file.sync_data()?;
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).expect("test key parses")
    }

    #[test]
    fn pattern_uses_brackets_off_port_22() {
        assert_eq!(host_pattern("10.0.0.5", 22), "10.0.0.5");
        assert_eq!(host_pattern("Pg1.Example", 2222), "[pg1.example]:2222");
    }

    #[test]
    fn plain_entry_port_22_and_other_port() {
        let kh = KnownHosts::parse(&format!("10.0.0.5 {ED_A}\n[10.0.0.5]:2222 {ED_B}\n"));
        assert!(matches!(kh.check("10.0.0.5", &key(ED_A)), Verdict::Trusted));
        assert!(matches!(
            kh.check("[10.0.0.5]:2222", &key(ED_B)),
            Verdict::Trusted
        ));
        // The port-22 entry does not vouch for another port, and vice versa.
        assert!(matches!(
            kh.check("[10.0.0.5]:2222", &key(ED_A)),
            Verdict::Changed { line: 2, .. }
        ));
        assert!(matches!(
            kh.check("[10.0.0.6]:2222", &key(ED_B)),
            Verdict::Unknown
        ));
    }

    #[test]
    fn line_numbers_count_comments_and_blank_lines() {
        let kh = KnownHosts::parse(&format!("# comment\n\ngarbage line\nhost1 {ED_A}\n"));
        match kh.check("host1", &key(ED_B)) {
            Verdict::Changed { line, known, .. } => {
                assert_eq!(line, 4);
                assert_eq!(known.key_data(), key(ED_A).key_data());
            }
            other => panic!("expected Changed, got {other:?}"),
        }
    }

    #[test]
    fn tabs_comments_and_several_names() {
        let kh = KnownHosts::parse(&format!(
            "a.example,10.0.0.7\t{} my comment\n",
            ED_A.replace(' ', "\t")
        ));
        assert!(matches!(kh.check("10.0.0.7", &key(ED_A)), Verdict::Trusted));
        assert!(matches!(
            kh.check("A.EXAMPLE", &key(ED_A)),
            Verdict::Trusted
        ));
    }

    #[test]
    fn hashed_entry_matches_only_its_host() {
        // Generated by `ssh-keygen -H` for the name "example.com".
        let kh = KnownHosts::parse(&format!(
            "|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= {ED_B}\n"
        ));
        assert!(matches!(
            kh.check("example.com", &key(ED_B)),
            Verdict::Trusted
        ));
        assert!(matches!(
            kh.check("example.org", &key(ED_B)),
            Verdict::Unknown
        ));
    }

    #[test]
    fn wildcards_and_negation() {
        let kh = KnownHosts::parse(&format!("*.prod.example,!db9.prod.example {ED_A}\n"));
        assert!(matches!(
            kh.check("db1.prod.example", &key(ED_A)),
            Verdict::Trusted
        ));
        assert!(matches!(
            kh.check("db9.prod.example", &key(ED_A)),
            Verdict::Unknown
        ));
        assert!(matches!(
            kh.check("prod.example", &key(ED_A)),
            Verdict::Unknown
        ));
        assert!(glob_match(b"10.0.0.?", b"10.0.0.5"));
        assert!(!glob_match(b"10.0.0.?", b"10.0.0.55"));
        assert!(glob_match(b"*a*b", b"xxaxxb"));
        assert!(!glob_match(b"*a*b", b"xxaxxbc"));
    }

    #[test]
    fn revoked_wins_over_a_trusted_line() {
        let kh = KnownHosts::parse(&format!("host1 {ED_A}\n@revoked * {ED_A}\n"));
        assert!(matches!(
            kh.check("host1", &key(ED_A)),
            Verdict::Revoked { line: 2, .. }
        ));
    }

    #[test]
    fn cert_authority_lines_do_not_vouch_for_plain_keys() {
        let kh = KnownHosts::parse(&format!("@cert-authority *.example {ED_A}\n"));
        assert!(matches!(
            kh.check("h.example", &key(ED_A)),
            Verdict::Unknown
        ));
        assert!(kh.has_authority("h.example"));
        assert!(!kh.has_authority("h.other"));
    }

    #[test]
    fn several_files_keep_their_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, format!("x {ED_A}\n")).expect("write");
        std::fs::write(&b, format!("\ny {ED_A}\n")).expect("write");
        let kh = KnownHosts::load_all(&[a, dir.path().join("missing"), b.clone()]).expect("load");
        match kh.check("y", &key(ED_B)) {
            Verdict::Changed { file, line, .. } => {
                assert_eq!(file, b);
                assert_eq!(line, 2);
            }
            other => panic!("expected Changed, got {other:?}"),
        }
    }

    #[test]
    fn known_algorithms_lists_recorded_types() {
        let kh = KnownHosts::parse(&format!("host1 {ED_A}\nhost2 {ED_B}\n"));
        assert_eq!(kh.known_algorithms("host1"), vec![Algorithm::Ed25519]);
        assert!(kh.known_algorithms("host3").is_empty());
    }

    #[test]
    fn learn_appends_once_and_keeps_existing_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("known_hosts");
        assert!(matches!(
            learn(&path, "[127.0.0.1]:2222", &key(ED_A)).expect("learn"),
            Verdict::Unknown
        ));
        assert!(matches!(
            learn(&path, "[127.0.0.1]:2222", &key(ED_A)).expect("learn"),
            Verdict::Trusted
        ));
        assert!(matches!(
            learn(&path, "[127.0.0.1]:2222", &key(ED_B)).expect("learn"),
            Verdict::Changed { line: 1, .. }
        ));
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, format!("[127.0.0.1]:2222 {ED_A}\n"));
    }

    #[test]
    fn learn_adds_missing_final_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, format!("other {ED_B}")).expect("write");
        learn(&path, "host1", &key(ED_A)).expect("learn");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, format!("other {ED_B}\nhost1 {ED_A}\n"));
    }
}
