//! OpenSSH client configuration (`ssh_config(5)`), read with OpenSSH's own semantics.
//!
//! Why not a crate: `russh-config` 0.58 has no `Include` and no `Match`, splits lines on a single
//! space (no tabs, no `Keyword=value`), matches `Host` patterns with globset (where `[` and `{`
//! mean something OpenSSH does not), ignores unknown keywords silently, and reports no line
//! numbers. `ssh2-config` 0.9 has `Include` but no `Match`, swallows `StrictHostKeyChecking`,
//! `UserKnownHostsFile`, `IdentitiesOnly`, `IdentityAgent` and `ProxyCommand` as "unsupported"
//! without saying so, keeps one `CertificateFile`, and its errors carry no file or line. plumb
//! must refuse what it cannot honour with file and line, so this is a small parser that follows
//! readconf.c:
//!
//! - lines are `Keyword value...` or `Keyword=value`; keywords are case-insensitive; arguments
//!   split like OpenSSH's `argv_split` (quotes, `\` escapes, `#` starts a comment);
//! - the first obtained value of an option wins; `IdentityFile` and `CertificateFile` accumulate;
//! - `Host` patterns use `*`, `?` and `!negation`; `Match` supports `all`, `host`,
//!   `originalhost`, `user`, `localuser`, `canonical` and `final` (with OpenSSH's final pass);
//!   criteria that would run commands or need what plumb does not have (`exec`, `localnetwork`,
//!   `tagged`, ...) are errors when evaluated;
//! - `Include` reads files and globs (relative to `~/.ssh` or `/etc/ssh`), even inside a block
//!   that does not apply (its contents then never apply), at most 16 levels deep; a missing
//!   file is skipped like OpenSSH does;
//! - an unknown keyword is an error with file and line (as it is for `ssh`), unless listed in
//!   `IgnoreUnknown`; known keywords plumb has no use for are recorded as ignored; those whose
//!   absence would change security (`ProxyCommand`, `KnownHostsCommand`, `RevokedHostKeys`,
//!   `StrictHostKeyChecking no`, ...) are errors when they apply to a host plumb connects to.
//!
//! Everything read here is hostile input: sizes and include depth are bounded, and no value is
//! ever run or handed to a shell.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most bytes read from one configuration file.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// `READCONF_MAX_DEPTH` in OpenSSH.
const MAX_INCLUDE_DEPTH: usize = 16;
/// Most files one configuration may pull in through `Include`.
const MAX_FILES: usize = 256;
/// OpenSSH's `SSH_MAX_IDENTITY_FILES` and `SSH_MAX_CERTIFICATE_FILES`.
const MAX_IDENTITY_FILES: usize = 100;

/// A place in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A value and the line that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it was set.
    pub origin: Origin,
}

/// A problem in an ssh_config file, or a directive plumb refuses for a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct SshConfigError {
    /// File and line.
    pub origin: Origin,
    /// What is wrong and what to do.
    pub message: String,
}

/// `StrictHostKeyChecking`, as plumb honours it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    /// `yes` (and `ask`: plumb never prompts, so it refuses like `yes`).
    Yes,
    /// `accept-new`: record unknown keys, refuse changed ones.
    AcceptNew,
}

/// One criterion of a `Match` line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Criterion {
    All,
    Canonical {
        negated: bool,
    },
    Final {
        negated: bool,
    },
    Host {
        negated: bool,
        list: String,
    },
    OriginalHost {
        negated: bool,
        list: String,
    },
    User {
        negated: bool,
        list: String,
    },
    LocalUser {
        negated: bool,
        list: String,
    },
    /// `exec`, `localnetwork`, `tagged`, ...: an error if evaluated.
    Unsupported {
        name: String,
    },
}

#[derive(Clone, Debug)]
enum Item {
    Host {
        patterns: Vec<String>,
    },
    Match {
        criteria: Vec<Criterion>,
    },
    /// Files matched by one `Include` line, already parsed, in lexical order.
    Include {
        files: Vec<ConfigFile>,
    },
    Option {
        keyword: Keyword,
        /// The keyword as written (for messages).
        written: String,
        args: Vec<String>,
    },
}

#[derive(Clone, Debug)]
struct Line {
    item: Item,
    line: usize,
}

/// One parsed file (with the files it includes).
#[derive(Clone, Debug)]
struct ConfigFile {
    path: PathBuf,
    lines: Vec<Line>,
}

/// What plumb does with a keyword.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keyword {
    HostName,
    User,
    Port,
    IdentityFile,
    IdentitiesOnly,
    IdentityAgent,
    CertificateFile,
    ProxyJump,
    ProxyCommand,
    UserKnownHostsFile,
    GlobalKnownHostsFile,
    StrictHostKeyChecking,
    ConnectTimeout,
    ServerAliveInterval,
    ServerAliveCountMax,
    HostKeyAlias,
    IgnoreUnknown,
    BatchMode,
    KnownHostsCommand,
    RevokedHostKeys,
    CanonicalizeHostname,
    RefuseConnection,
    /// Known to OpenSSH, no effect on what plumb does (or plumb is stricter without it).
    Ignored(&'static str),
}

/// Keywords plumb accepts and does not use, with why that is safe; shown by
/// `plumb inventory show` and in the README's table.
const IGNORED: &[(&str, &str)] = &[
    ("addkeystoagent", "plumb never adds keys to an agent"),
    (
        "addressfamily",
        "plumb connects to what the name resolves to",
    ),
    ("bindaddress", "plumb does not choose a source address"),
    ("bindinterface", "plumb does not choose a source interface"),
    ("canonicaldomains", "only used with CanonicalizeHostname"),
    (
        "canonicalizefallbacklocal",
        "only used with CanonicalizeHostname",
    ),
    ("canonicalizemaxdots", "only used with CanonicalizeHostname"),
    (
        "canonicalizepermittedcnames",
        "only used with CanonicalizeHostname",
    ),
    ("casignaturealgorithms", "plumb's algorithm set is fixed"),
    ("channeltimeout", "plumb bounds every command itself"),
    (
        "checkhostip",
        "plumb checks the host key of the name it dials",
    ),
    ("ciphers", "plumb's algorithm set is fixed"),
    ("clearallforwardings", "plumb never forwards ports"),
    ("compression", "plumb does not compress"),
    ("connectionattempts", "plumb tries once per run"),
    ("controlmaster", "plumb multiplexes its own sessions"),
    ("controlpath", "plumb multiplexes its own sessions"),
    ("controlpersist", "plumb multiplexes its own sessions"),
    ("dynamicforward", "plumb never forwards ports"),
    ("enableescapecommandline", "no interactive session"),
    (
        "enablesshkeysign",
        "plumb does not use host-based authentication",
    ),
    ("escapechar", "no interactive session"),
    ("exitonforwardfailure", "plumb never forwards ports"),
    ("fingerprinthash", "plumb shows SHA256 fingerprints"),
    ("forkafterauthentication", "no background sessions"),
    ("forwardagent", "plumb never forwards the agent (safer)"),
    ("forwardx11", "plumb never forwards X11"),
    ("forwardx11timeout", "plumb never forwards X11"),
    ("forwardx11trusted", "plumb never forwards X11"),
    ("gatewayports", "plumb never forwards ports"),
    ("gssapiauthentication", "plumb authenticates with keys only"),
    (
        "gssapidelegatecredentials",
        "plumb authenticates with keys only",
    ),
    ("gssapikeyexchange", "plumb authenticates with keys only"),
    ("gssapiclientidentity", "plumb authenticates with keys only"),
    ("gssapiserveridentity", "plumb authenticates with keys only"),
    (
        "gssapirenewalforcesrekey",
        "plumb authenticates with keys only",
    ),
    ("gssapitrustdns", "plumb authenticates with keys only"),
    ("gssapikexalgorithms", "plumb authenticates with keys only"),
    (
        "hashknownhosts",
        "plumb writes plain names when it learns a key",
    ),
    (
        "hostbasedacceptedalgorithms",
        "plumb does not use host-based authentication",
    ),
    (
        "hostbasedauthentication",
        "plumb does not use host-based authentication",
    ),
    (
        "hostbasedkeytypes",
        "plumb does not use host-based authentication",
    ),
    ("hostkeyalgorithms", "plumb's algorithm set is fixed"),
    ("ipqos", "no effect on plumb"),
    (
        "kbdinteractiveauthentication",
        "plumb authenticates with keys only",
    ),
    (
        "kbdinteractivedevices",
        "plumb authenticates with keys only",
    ),
    (
        "challengeresponseauthentication",
        "plumb authenticates with keys only",
    ),
    ("kexalgorithms", "plumb's algorithm set is fixed"),
    ("localcommand", "plumb never runs local commands"),
    ("localforward", "plumb never forwards ports"),
    ("loglevel", "plumb has its own logging"),
    ("logverbose", "plumb has its own logging"),
    ("macs", "plumb's algorithm set is fixed"),
    (
        "nohostauthenticationforlocalhost",
        "plumb always checks host keys (stricter)",
    ),
    ("numberofpasswordprompts", "plumb never prompts"),
    ("obscurekeystroketiming", "no interactive session"),
    (
        "passwordauthentication",
        "plumb authenticates with keys only",
    ),
    ("permitlocalcommand", "plumb never runs local commands"),
    ("permitremoteopen", "plumb never forwards ports"),
    ("pkcs11provider", "plumb uses key files and the agent"),
    (
        "preferredauthentications",
        "plumb authenticates with keys only",
    ),
    ("proxyusefdpass", "only used with ProxyCommand"),
    ("pubkeyacceptedalgorithms", "plumb's algorithm set is fixed"),
    ("pubkeyacceptedkeytypes", "plumb's algorithm set is fixed"),
    ("pubkeyauthentication", "plumb authenticates with keys only"),
    ("rekeylimit", "russh rekeys on its own limits"),
    ("remotecommand", "plumb runs its own commands"),
    ("remoteforward", "plumb never forwards ports"),
    ("requesttty", "plumb never asks for a terminal"),
    ("requiredrsasize", "plumb's algorithm set is fixed"),
    ("securitykeyprovider", "plumb uses key files and the agent"),
    ("smartcarddevice", "plumb uses key files and the agent"),
    ("sendenv", "plumb sends no environment"),
    ("sessiontype", "plumb runs its own commands"),
    ("setenv", "plumb sends no environment"),
    ("stdinnull", "plumb runs its own commands"),
    ("streamlocalbindmask", "plumb never forwards sockets"),
    ("streamlocalbindunlink", "plumb never forwards sockets"),
    ("syslogfacility", "plumb has its own logging"),
    ("tag", "only used by Match tagged"),
    (
        "tcpkeepalive",
        "plumb sends SSH keepalives (ServerAliveInterval)",
    ),
    ("tunnel", "plumb never forwards devices"),
    ("tunneldevice", "plumb never forwards devices"),
    (
        "updatehostkeys",
        "plumb never changes known_hosts behind your back",
    ),
    ("usekeychain", "macOS keychain"),
    (
        "verifyhostkeydns",
        "plumb checks known_hosts only (stricter)",
    ),
    ("visualhostkey", "no interactive session"),
    ("warnweakcrypto", "plumb's algorithm set is fixed"),
    ("xauthlocation", "plumb never forwards X11"),
    // Deprecated or removed keywords OpenSSH still accepts quietly.
    ("cipher", "deprecated in OpenSSH"),
    ("protocol", "deprecated in OpenSSH"),
    ("useroaming", "deprecated in OpenSSH"),
    ("rsaauthentication", "deprecated in OpenSSH"),
    ("rhostsrsaauthentication", "deprecated in OpenSSH"),
    ("compressionlevel", "deprecated in OpenSSH"),
    ("useprivilegedport", "deprecated in OpenSSH"),
    ("fallbacktorsh", "deprecated in OpenSSH"),
    ("usersh", "deprecated in OpenSSH"),
    ("dsaauthentication", "deprecated in OpenSSH"),
    ("skeyauthentication", "deprecated in OpenSSH"),
    ("tisauthentication", "deprecated in OpenSSH"),
    ("kerberosauthentication", "deprecated in OpenSSH"),
    ("kerberostgtpassing", "deprecated in OpenSSH"),
    ("afstokenpassing", "deprecated in OpenSSH"),
    ("globalknownhostsfile2", "deprecated in OpenSSH"),
    ("userknownhostsfile2", "deprecated in OpenSSH"),
];

/// Why ignoring a keyword is safe (for `plumb inventory show`), if plumb ignores it.
pub fn ignored_reason(keyword: &str) -> Option<&'static str> {
    let lower = keyword.to_ascii_lowercase();
    IGNORED.iter().find(|(k, _)| *k == lower).map(|(_, r)| *r)
}

fn keyword(name: &str) -> Option<Keyword> {
    let lower = name.to_ascii_lowercase();
    Some(match lower.as_str() {
        "hostname" => Keyword::HostName,
        "user" => Keyword::User,
        "port" => Keyword::Port,
        "identityfile" => Keyword::IdentityFile,
        "identitiesonly" => Keyword::IdentitiesOnly,
        "identityagent" => Keyword::IdentityAgent,
        "certificatefile" => Keyword::CertificateFile,
        "proxyjump" => Keyword::ProxyJump,
        "proxycommand" => Keyword::ProxyCommand,
        "userknownhostsfile" => Keyword::UserKnownHostsFile,
        "globalknownhostsfile" => Keyword::GlobalKnownHostsFile,
        "stricthostkeychecking" => Keyword::StrictHostKeyChecking,
        "connecttimeout" => Keyword::ConnectTimeout,
        "serveraliveinterval" => Keyword::ServerAliveInterval,
        "serveralivecountmax" => Keyword::ServerAliveCountMax,
        "hostkeyalias" => Keyword::HostKeyAlias,
        "ignoreunknown" => Keyword::IgnoreUnknown,
        "batchmode" => Keyword::BatchMode,
        "knownhostscommand" => Keyword::KnownHostsCommand,
        "revokedhostkeys" => Keyword::RevokedHostKeys,
        "canonicalizehostname" => Keyword::CanonicalizeHostname,
        "refuseconnection" => Keyword::RefuseConnection,
        other => {
            let (k, _) = IGNORED.iter().find(|(k, _)| *k == other)?;
            Keyword::Ignored(k)
        }
    })
}

/// The configuration files plumb reads, parsed (with their includes).
#[derive(Clone, Debug, Default)]
pub struct SshConfig {
    /// User file first, then system file: OpenSSH's order.
    files: Vec<(ConfigFile, bool)>,
}

/// Whether a file is a user configuration (relative `Include` paths are under `~/.ssh`) or a
/// system one (`/etc/ssh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigKind {
    /// `~/.ssh/config` or a file given with `--ssh-config`.
    User,
    /// `/etc/ssh/ssh_config`.
    System,
}

/// Environment the configuration is read and evaluated in: home folder, local user and host
/// name (for `~`, `%d`, `%u`, `%l` and `Match localuser`). Taken from the process by
/// [`Env::from_process`]; tests set it explicitly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    /// `$HOME`.
    pub home: PathBuf,
    /// The local user name.
    pub local_user: String,
    /// The local host name.
    pub local_host: String,
    /// The local numeric user id (`%i`).
    pub uid: u32,
}

impl Env {
    /// The environment of this process.
    pub fn from_process() -> Env {
        // SAFETY: getuid cannot fail and touches no memory.
        let uid = unsafe { libc::getuid() };
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        let local_user = user_name(uid)
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| uid.to_string());
        let local_host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        Env {
            home,
            local_user,
            local_host,
            uid,
        }
    }
}

/// The login name of `uid` from the password database (`%u`, `Match localuser`).
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: getpwuid_r writes into `pwd` and `buf` (whose length we pass) and sets `result`
    // to `pwd` on success; nothing is kept beyond this call.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

impl SshConfig {
    /// An empty configuration (nothing read).
    pub fn empty() -> SshConfig {
        SshConfig::default()
    }

    /// Reads configuration files in order (first value wins across them). A missing file is
    /// skipped, like OpenSSH skips a missing `~/.ssh/config`.
    pub fn load(files: &[(PathBuf, ConfigKind)], env: &Env) -> Result<SshConfig, SshConfigError> {
        let mut count = 0usize;
        let mut out = Vec::new();
        for (path, kind) in files {
            let user = *kind == ConfigKind::User;
            if let Some(file) = read_file(path, user, env, 0, &mut count, None)? {
                out.push((file, user));
            }
        }
        Ok(SshConfig { files: out })
    }

    /// Parses one file's text (for tests and `--ssh-config -`); includes are read from disk.
    pub fn parse_str(
        path: &Path,
        text: &str,
        kind: ConfigKind,
        env: &Env,
    ) -> Result<SshConfig, SshConfigError> {
        let mut count = 1usize;
        let user = kind == ConfigKind::User;
        let file = parse_file(path, text, user, env, 0, &mut count)?;
        Ok(SshConfig {
            files: vec![(file, user)],
        })
    }

    /// The files read, includes included, in reading order (for `plumb inventory show`).
    pub fn file_paths(&self) -> Vec<PathBuf> {
        fn walk(f: &ConfigFile, out: &mut Vec<PathBuf>) {
            out.push(f.path.clone());
            for l in &f.lines {
                if let Item::Include { files } = &l.item {
                    for g in files {
                        walk(g, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (f, _) in &self.files {
            walk(f, &mut out);
        }
        out
    }

    /// Evaluates the configuration for `host` as `ssh host` would, with `user` as given on its
    /// command line (`-l`: plumb's inventory value, which `Match user` sees; without it and
    /// without a `User` line so far, `Match user` sees `default_user`, the user plumb would log
    /// in as), and returns the
    /// options that apply, each with the line that set it. Directives plumb refuses are errors
    /// here, naming their file and line.
    pub fn resolve(
        &self,
        host: &str,
        user: Option<&str>,
        default_user: &str,
        env: &Env,
    ) -> Result<HostConfig, SshConfigError> {
        let original = host.to_ascii_lowercase();
        let mut st = State {
            opts: HostConfig::default(),
            want_final: false,
            cli_user: user.map(str::to_string),
            default_user: default_user.to_string(),
            seq: 0,
        };
        for (file, _) in &self.files {
            let mut active = true;
            apply_file(
                file,
                &original,
                &original,
                false,
                false,
                &mut active,
                &mut st,
                env,
            )?;
        }
        if st.want_final {
            // OpenSSH's final pass: options keep their first values, `Host` now matches the
            // name after HostName substitution, and `Match final`/`canonical` are true.
            let host_now = st
                .opts
                .hostname
                .as_ref()
                .map(|h| h.value.clone())
                .unwrap_or_else(|| original.clone());
            for (file, _) in &self.files {
                let mut active = true;
                apply_file(
                    file,
                    &host_now,
                    &original,
                    true,
                    false,
                    &mut active,
                    &mut st,
                    env,
                )?;
            }
        }
        st.opts.check_refused()?;
        Ok(st.opts)
    }
}

/// The options that apply to one host, each with the line that set it. Paths and names are
/// still as written (`~`, `%h`, `${VAR}` expanded later by [`HostConfig::expand`]) because
/// their tokens depend on the final host, port and user.
#[derive(Clone, Debug, Default)]
pub struct HostConfig {
    /// `HostName` (with `%h` expanded, as OpenSSH does at parse time).
    pub hostname: Option<Located<String>>,
    /// `User`.
    pub user: Option<Located<String>>,
    /// `Port`.
    pub port: Option<Located<u16>>,
    /// `IdentityFile`, every one in order (`none` clears nothing but adds nothing).
    pub identity_files: Vec<Located<String>>,
    /// `IdentitiesOnly`.
    pub identities_only: Option<Located<bool>>,
    /// `IdentityAgent` (`none`, `SSH_AUTH_SOCK` or a socket path).
    pub identity_agent: Option<Located<String>>,
    /// `CertificateFile`, every one in order.
    pub certificate_files: Vec<Located<String>>,
    /// `ProxyJump` as written (`none` when set to none).
    pub proxy_jump: Option<Located<String>>,
    /// `ProxyCommand` as written; only `none` is accepted.
    pub proxy_command: Option<Located<String>>,
    /// `UserKnownHostsFile` (several; `none` means no file).
    pub user_known_hosts: Option<Located<Vec<String>>>,
    /// `GlobalKnownHostsFile`.
    pub global_known_hosts: Option<Located<Vec<String>>>,
    /// `StrictHostKeyChecking`.
    pub strict_host_key_checking: Option<Located<StrictHostKeyChecking>>,
    /// `ConnectTimeout`.
    pub connect_timeout: Option<Located<Duration>>,
    /// `ServerAliveInterval` (0 turns keepalives off).
    pub server_alive_interval: Option<Located<Duration>>,
    /// `ServerAliveCountMax`.
    pub server_alive_count_max: Option<Located<usize>>,
    /// `HostKeyAlias`.
    pub host_key_alias: Option<Located<String>>,
    /// Directives that applied to this host and that plumb ignores, with the line.
    pub ignored: Vec<Located<String>>,
    /// A directive plumb refuses, kept until the end (a later line cannot undo it since the
    /// first value wins, but a `ProxyJump` before a `ProxyCommand` makes it moot).
    refused: Vec<(SshConfigError, RefusedKind)>,
    /// Order in which ProxyJump and ProxyCommand were first set (the first one wins).
    proxy_first: Option<Keyword>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RefusedKind {
    ProxyCommand,
    Other,
}

impl HostConfig {
    fn check_refused(&mut self) -> Result<(), SshConfigError> {
        for (e, kind) in &self.refused {
            if *kind == RefusedKind::ProxyCommand && self.proxy_first == Some(Keyword::ProxyJump) {
                continue;
            }
            return Err(e.clone());
        }
        Ok(())
    }

    /// `ProxyJump`, unless it is `none` or a `ProxyCommand none` came first.
    pub fn jump(&self) -> Option<&Located<String>> {
        if self.proxy_first == Some(Keyword::ProxyCommand) {
            return None;
        }
        self.proxy_jump
            .as_ref()
            .filter(|j| !j.value.eq_ignore_ascii_case("none"))
    }
}

struct State {
    opts: HostConfig,
    want_final: bool,
    cli_user: Option<String>,
    default_user: String,
    seq: usize,
}

#[allow(clippy::too_many_arguments)]
fn apply_file(
    file: &ConfigFile,
    host: &str,
    original: &str,
    final_pass: bool,
    never_match: bool,
    active: &mut bool,
    st: &mut State,
    env: &Env,
) -> Result<(), SshConfigError> {
    for l in &file.lines {
        let origin = Origin {
            file: file.path.clone(),
            line: l.line,
        };
        match &l.item {
            Item::Host { patterns } => {
                *active = !never_match && host_matches(patterns, host);
            }
            Item::Match { criteria } => {
                *active = !never_match
                    && match_criteria(criteria, host, original, final_pass, st, env, &origin)?;
            }
            Item::Include { files } => {
                let outer = *active;
                for f in files {
                    apply_file(
                        f,
                        host,
                        original,
                        final_pass,
                        never_match || !outer,
                        active,
                        st,
                        env,
                    )?;
                }
                *active = outer;
            }
            Item::Option {
                keyword,
                written,
                args,
            } => {
                if *active {
                    set_option(*keyword, written, args, origin, host, st)?;
                }
            }
        }
    }
    Ok(())
}

/// `Host` lines: any negated match rejects, otherwise any match accepts.
fn host_matches(patterns: &[String], host: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        let (negated, p) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p.as_str()),
        };
        if glob_match(p.to_ascii_lowercase().as_bytes(), host.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// OpenSSH's `match_pattern_list`: comma-separated patterns, `!` negates; a negated match
/// wins. `fold` lower-cases the string and patterns (host names).
fn pattern_list_matches(list: &str, s: &str, fold: bool) -> bool {
    let s = if fold {
        s.to_ascii_lowercase()
    } else {
        s.to_string()
    };
    let mut matched = false;
    for p in list.split(',') {
        let (negated, p) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        let p = if fold {
            p.to_ascii_lowercase()
        } else {
            p.to_string()
        };
        if glob_match(p.as_bytes(), s.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

fn match_criteria(
    criteria: &[Criterion],
    host: &str,
    original: &str,
    final_pass: bool,
    st: &mut State,
    env: &Env,
    origin: &Origin,
) -> Result<bool, SshConfigError> {
    // As in readconf.c: the host a `Match host` sees is HostName (with %h expanded) when one
    // was set, else the name given; the user is the one known so far, else the one plumb
    // would log in as (ssh's would be the local user, which is also its default login).
    let target_host = st
        .opts
        .hostname
        .as_ref()
        .map(|h| h.value.to_ascii_lowercase())
        .unwrap_or_else(|| host.to_string());
    let remote_user = st
        .cli_user
        .clone()
        .or_else(|| st.opts.user.as_ref().map(|u| u.value.clone()))
        .unwrap_or_else(|| st.default_user.clone());
    let mut result = true;
    for c in criteria {
        let this = match c {
            Criterion::All => true,
            Criterion::Canonical { negated } | Criterion::Final { negated } => {
                if matches!(c, Criterion::Final { negated: false }) {
                    st.want_final = true;
                }
                final_pass != *negated
            }
            Criterion::Host { negated, list } => {
                pattern_list_matches(list, &target_host, true) != *negated
            }
            Criterion::OriginalHost { negated, list } => {
                pattern_list_matches(list, original, true) != *negated
            }
            Criterion::User { negated, list } => {
                pattern_list_matches(list, &remote_user, false) != *negated
            }
            Criterion::LocalUser { negated, list } => {
                pattern_list_matches(list, &env.local_user, false) != *negated
            }
            Criterion::Unsupported { name } => {
                if !result {
                    // An earlier criterion already failed: like OpenSSH, do not evaluate it.
                    continue;
                }
                return Err(SshConfigError {
                    origin: origin.clone(),
                    message: format!(
                        "`Match {name}` is not supported by plumb{}; it applies to this host \
                         unless an earlier criterion on the line rules it out. Use `Match host` \
                         or `Match user`, or give plumb its own file with --ssh-config",
                        if name == "exec" {
                            " (plumb never runs commands from ssh_config)"
                        } else {
                            ""
                        }
                    ),
                });
            }
        };
        if !this {
            result = false;
        }
    }
    Ok(result)
}

fn err(origin: &Origin, message: impl Into<String>) -> SshConfigError {
    SshConfigError {
        origin: origin.clone(),
        message: message.into(),
    }
}

fn one_arg<'a>(args: &'a [String], name: &str, origin: &Origin) -> Result<&'a str, SshConfigError> {
    match args {
        [one] => Ok(one),
        [] => Err(err(origin, format!("{name}: missing argument"))),
        _ => Err(err(
            origin,
            format!("{name}: garbage at end of line: {}", args[1..].join(" ")),
        )),
    }
}

fn yes_no(v: &str, name: &str, origin: &Origin) -> Result<bool, SshConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(err(
            origin,
            format!("{name}: expected yes or no, found `{}`", escape(v)),
        )),
    }
}

/// OpenSSH's `convtime`: `90`, `90s`, `1m30s`, `1h`, ...
fn parse_time(v: &str) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut last_was_unit = false;
    for c in v.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            last_was_unit = false;
            continue;
        }
        let mult = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604800,
            _ => return None,
        };
        let n: u64 = num.parse().ok()?;
        total = total.checked_add(n.checked_mul(mult)?)?;
        num.clear();
        last_was_unit = true;
    }
    if !num.is_empty() {
        total = total.checked_add(num.parse().ok()?)?;
    } else if !last_was_unit {
        return None;
    }
    Some(Duration::from_secs(total))
}

fn at<T>(value: T, origin: &Origin) -> Located<T> {
    Located {
        value,
        origin: origin.clone(),
    }
}

fn set_option(
    kw: Keyword,
    written: &str,
    args: &[String],
    origin: Origin,
    host: &str,
    st: &mut State,
) -> Result<(), SshConfigError> {
    let o = &mut st.opts;
    st.seq += 1;
    match kw {
        Keyword::HostName => {
            let v = one_arg(args, "HostName", &origin)?;
            if o.hostname.is_none() {
                // Only %h and %% are allowed in HostName; OpenSSH expands them here.
                let v = expand_tokens(v, &[('h', host)], &origin, "HostName")?;
                if v.is_empty() || v.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                    return Err(err(&origin, "HostName: not a valid host name"));
                }
                o.hostname = Some(at(v, &origin));
            }
        }
        Keyword::User => {
            let v = one_arg(args, "User", &origin)?;
            if o.user.is_none() {
                if v.is_empty() || v.bytes().any(|b| b.is_ascii_control()) {
                    return Err(err(&origin, "User: not a valid user name"));
                }
                o.user = Some(at(v.to_string(), &origin));
            }
        }
        Keyword::Port => {
            let v = one_arg(args, "Port", &origin)?;
            let port: u16 = v.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                err(
                    &origin,
                    format!("Port: `{}` is not a port number", escape(v)),
                )
            })?;
            if o.port.is_none() {
                o.port = Some(at(port, &origin));
            }
        }
        Keyword::IdentityFile => {
            let v = one_arg(args, "IdentityFile", &origin)?;
            if o.identity_files.len() >= MAX_IDENTITY_FILES {
                return Err(err(&origin, "IdentityFile: too many identity files"));
            }
            o.identity_files.push(at(v.to_string(), &origin));
        }
        Keyword::CertificateFile => {
            let v = one_arg(args, "CertificateFile", &origin)?;
            if o.certificate_files.len() >= MAX_IDENTITY_FILES {
                return Err(err(&origin, "CertificateFile: too many certificate files"));
            }
            o.certificate_files.push(at(v.to_string(), &origin));
        }
        Keyword::IdentitiesOnly => {
            let v = yes_no(
                one_arg(args, "IdentitiesOnly", &origin)?,
                "IdentitiesOnly",
                &origin,
            )?;
            if o.identities_only.is_none() {
                o.identities_only = Some(at(v, &origin));
            }
        }
        Keyword::IdentityAgent => {
            let v = one_arg(args, "IdentityAgent", &origin)?;
            if o.identity_agent.is_none() {
                o.identity_agent = Some(at(v.to_string(), &origin));
            }
        }
        Keyword::ProxyJump => {
            let v = one_arg(args, "ProxyJump", &origin)?;
            // Checked now so a bad jump is an error with its line even if it loses.
            if !v.eq_ignore_ascii_case("none") {
                parse_jump_list(v).map_err(|m| err(&origin, format!("ProxyJump: {m}")))?;
            }
            if o.proxy_jump.is_none() {
                o.proxy_jump = Some(at(v.to_string(), &origin));
                o.proxy_first.get_or_insert(Keyword::ProxyJump);
            }
        }
        Keyword::ProxyCommand => {
            // The command is the rest of the line, unsplit.
            let v = args.join(" ");
            if o.proxy_command.is_none() {
                if !v.eq_ignore_ascii_case("none") {
                    o.refused.push((
                        err(
                            &origin,
                            "ProxyCommand applies to this host, and plumb does not run commands \
                             to reach hosts; use ProxyJump (plumb carries it over one session \
                             per bastion), or `ProxyCommand none` in a more specific block",
                        ),
                        RefusedKind::ProxyCommand,
                    ));
                }
                o.proxy_command = Some(at(v, &origin));
                o.proxy_first.get_or_insert(Keyword::ProxyCommand);
            }
        }
        Keyword::UserKnownHostsFile | Keyword::GlobalKnownHostsFile => {
            if args.is_empty() {
                return Err(err(&origin, "known hosts file: missing argument"));
            }
            let slot = if kw == Keyword::UserKnownHostsFile {
                &mut o.user_known_hosts
            } else {
                &mut o.global_known_hosts
            };
            if slot.is_none() {
                *slot = Some(at(args.to_vec(), &origin));
            }
        }
        Keyword::StrictHostKeyChecking => {
            let v = one_arg(args, "StrictHostKeyChecking", &origin)?;
            let value = match v.to_ascii_lowercase().as_str() {
                "yes" | "true" | "ask" => StrictHostKeyChecking::Yes,
                "accept-new" => StrictHostKeyChecking::AcceptNew,
                "no" | "off" | "false" => {
                    if o.strict_host_key_checking.is_none() {
                        o.refused.push((
                            err(
                                &origin,
                                format!(
                                    "StrictHostKeyChecking {v} applies to this host: plumb never \
                                     connects without checking the host key. Use `accept-new` \
                                     (trust on first use, changed keys refused) or record the key \
                                     in known_hosts"
                                ),
                            ),
                            RefusedKind::Other,
                        ));
                        // Record something so that later lines do not override it.
                        o.strict_host_key_checking = Some(at(StrictHostKeyChecking::Yes, &origin));
                    }
                    return Ok(());
                }
                _ => {
                    return Err(err(
                        &origin,
                        format!(
                            "StrictHostKeyChecking: expected yes, accept-new, ask or no, found `{}`",
                            escape(v)
                        ),
                    ));
                }
            };
            if o.strict_host_key_checking.is_none() {
                o.strict_host_key_checking = Some(at(value, &origin));
            }
        }
        Keyword::ConnectTimeout | Keyword::ServerAliveInterval => {
            let name = if kw == Keyword::ConnectTimeout {
                "ConnectTimeout"
            } else {
                "ServerAliveInterval"
            };
            let v = one_arg(args, name, &origin)?;
            let d = if v.eq_ignore_ascii_case("none") {
                Duration::ZERO
            } else {
                parse_time(v).ok_or_else(|| {
                    err(
                        &origin,
                        format!("{name}: `{}` is not a time (e.g. 10, 30s, 1m)", escape(v)),
                    )
                })?
            };
            let slot = if kw == Keyword::ConnectTimeout {
                &mut o.connect_timeout
            } else {
                &mut o.server_alive_interval
            };
            if slot.is_none() {
                *slot = Some(at(d, &origin));
            }
        }
        Keyword::ServerAliveCountMax => {
            let v = one_arg(args, "ServerAliveCountMax", &origin)?;
            let n: usize = v.parse().map_err(|_| {
                err(
                    &origin,
                    format!("ServerAliveCountMax: `{}` is not a number", escape(v)),
                )
            })?;
            if o.server_alive_count_max.is_none() {
                o.server_alive_count_max = Some(at(n, &origin));
            }
        }
        Keyword::HostKeyAlias => {
            let v = one_arg(args, "HostKeyAlias", &origin)?;
            if o.host_key_alias.is_none() {
                o.host_key_alias = Some(at(v.to_ascii_lowercase(), &origin));
            }
        }
        Keyword::IgnoreUnknown => {
            // Handled while parsing (it must precede the keywords it names).
        }
        Keyword::BatchMode => {
            // plumb never prompts: BatchMode yes is what it always does, no changes nothing.
            one_arg(args, "BatchMode", &origin)?;
        }
        Keyword::KnownHostsCommand => {
            let v = args.join(" ");
            if !v.eq_ignore_ascii_case("none") && !o.refused_has("knownhostscommand") {
                o.refused.push((
                    err(
                        &origin,
                        "KnownHostsCommand applies to this host, and plumb does not run commands \
                         to find host keys: write the keys (or an @cert-authority line) into a \
                         known_hosts file and name it with UserKnownHostsFile",
                    ),
                    RefusedKind::Other,
                ));
            }
        }
        Keyword::RevokedHostKeys => {
            let v = one_arg(args, "RevokedHostKeys", &origin)?;
            if !v.eq_ignore_ascii_case("none") && !o.refused_has("revokedhostkeys") {
                o.refused.push((
                    err(
                        &origin,
                        "RevokedHostKeys applies to this host, and plumb does not read \
                         revocation files: list revoked keys as `@revoked` lines in known_hosts \
                         instead, so that plumb refuses them",
                    ),
                    RefusedKind::Other,
                ));
            }
        }
        Keyword::CanonicalizeHostname => {
            let v = one_arg(args, "CanonicalizeHostname", &origin)?;
            if !v.eq_ignore_ascii_case("no") && !o.refused_has("canonicalizehostname") {
                o.refused.push((
                    err(
                        &origin,
                        format!(
                            "CanonicalizeHostname {v} applies to this host, and plumb does not \
                             canonicalize names (it would reach another host than you think): \
                             set HostName to the full name instead"
                        ),
                    ),
                    RefusedKind::Other,
                ));
            }
        }
        Keyword::RefuseConnection => {
            let v = yes_no(
                one_arg(args, "RefuseConnection", &origin)?,
                "RefuseConnection",
                &origin,
            )?;
            if v && !o.refused_has("refuseconnection") {
                o.refused.push((
                    err(
                        &origin,
                        "RefuseConnection applies to this host: ssh would not connect to it, and \
                         neither does plumb",
                    ),
                    RefusedKind::Other,
                ));
            }
        }
        Keyword::Ignored(_) => {
            o.ignored.push(at(written.to_string(), &origin));
        }
    }
    Ok(())
}

impl HostConfig {
    fn refused_has(&self, keyword: &str) -> bool {
        self.refused
            .iter()
            .any(|(e, _)| e.message.to_ascii_lowercase().starts_with(keyword))
    }
}

/// Expands `%x` tokens from `values`; `%%` is `%`. An unknown token is an error, as in OpenSSH.
pub fn expand_tokens(
    s: &str,
    values: &[(char, &str)],
    origin: &Origin,
    what: &str,
) -> Result<String, SshConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(t) => match values.iter().find(|(k, _)| *k == t) {
                Some((_, v)) => out.push_str(v),
                None => {
                    return Err(err(
                        origin,
                        format!("{what}: unknown or unsupported token %{t}"),
                    ));
                }
            },
            None => return Err(err(origin, format!("{what}: `%` at end of value"))),
        }
    }
    Ok(out)
}

/// Expands `${NAME}` from the environment; an unset variable is an error (as in OpenSSH).
pub fn expand_env(s: &str, origin: &Origin, what: &str) -> Result<String, SshConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(err(origin, format!("{what}: unterminated ${{ in value")));
        };
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(err(
                origin,
                format!("{what}: `${{{}}}` is not a variable name", escape(name)),
            ));
        }
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => {
                return Err(err(
                    origin,
                    format!("{what}: environment variable {name} is not set"),
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands a leading `~/` (or `~`) to the home folder.
pub fn expand_tilde(s: &str, home: &Path) -> PathBuf {
    if s == "~" {
        return home.to_path_buf();
    }
    match s.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => PathBuf::from(s),
    }
}

/// One hop of a `ProxyJump` list: `[user@]host[:port]` or `ssh://[user@]host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JumpSpec {
    /// User, when the hop names one.
    pub user: Option<String>,
    /// Host name or address (an alias looked up in ssh_config).
    pub host: String,
    /// Port, when the hop names one.
    pub port: Option<u16>,
}

impl fmt::Display for JumpSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Parses a comma-separated `ProxyJump` list.
pub fn parse_jump_list(s: &str) -> Result<Vec<JumpSpec>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        out.push(parse_jump(part.trim())?);
    }
    if out.is_empty() {
        return Err("empty jump list".into());
    }
    Ok(out)
}

fn parse_jump(s: &str) -> Result<JumpSpec, String> {
    let rest = s.strip_prefix("ssh://").unwrap_or(s);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err("empty jump host".into());
    }
    let (user, hostport) = match rest.rfind('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let Some(end) = inner.find(']') else {
            return Err(format!("`{}`: unterminated [", escape(s)));
        };
        let host = &inner[..end];
        let after = &inner[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("`{}`: garbage after ]", escape(s))),
        };
        (host, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => {
                return Err(format!(
                    "`{}`: write IPv6 addresses as [address]:port",
                    escape(s)
                ));
            }
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{}`: `{}` is not a port", escape(s), escape(p)))?,
        ),
        None => None,
    };
    if host.is_empty() || !host.bytes().all(valid_host_byte) {
        return Err(format!("`{}` is not a valid jump host", escape(s)));
    }
    if let Some(u) = user
        && (u.is_empty() || !u.bytes().all(valid_user_byte))
    {
        return Err(format!(
            "`{}`: `{}` is not a valid user",
            escape(s),
            escape(u)
        ));
    }
    Ok(JumpSpec {
        user: user.map(str::to_string),
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// Bytes allowed in a host name or address given to plumb (as OpenSSH's `valid_hostname`
/// refuses shell metacharacters and controls, plus `:` for IPv6 and `%` for scope ids).
pub fn valid_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'%')
}

/// Bytes allowed in a user name (OpenSSH's `valid_ruser` refuses shell metacharacters).
pub fn valid_user_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'$' | b'+' | b'\\' | b'@')
}

/// A string from a config file or host, made safe to print: control characters escaped.
pub fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

// ----------------------------------------------------------------- reading --

fn read_file(
    path: &Path,
    user: bool,
    env: &Env,
    depth: usize,
    count: &mut usize,
    from: Option<&Origin>,
) -> Result<Option<ConfigFile>, SshConfigError> {
    let here = || Origin {
        file: path.to_path_buf(),
        line: 0,
    };
    let at = from.cloned().unwrap_or_else(here);
    *count += 1;
    if *count > MAX_FILES {
        return Err(err(
            &at,
            format!("Include: more than {MAX_FILES} configuration files; refusing"),
        ));
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(err(&at, format!("cannot read {}: {e}", path.display())));
        }
    };
    if !meta.is_file() {
        return Err(err(&at, format!("{} is not a file", path.display())));
    }
    if user {
        check_permissions(path, &meta, env, &at)?;
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(err(
            &at,
            format!(
                "{} is larger than {MAX_FILE_BYTES} bytes; refusing",
                path.display()
            ),
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| err(&at, format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|_| err(&here(), "not valid UTF-8"))?;
    parse_file(path, &text, user, env, depth, count).map(Some)
}

/// OpenSSH refuses a user configuration that others could have written ("Bad owner or
/// permissions"): a file that decides where plumb connects and which keys it trusts must be
/// the user's own.
fn check_permissions(
    path: &Path,
    meta: &std::fs::Metadata,
    env: &Env,
    at: &Origin,
) -> Result<(), SshConfigError> {
    use std::os::unix::fs::MetadataExt;
    let owner_ok = meta.uid() == env.uid || meta.uid() == 0;
    let mode = meta.mode();
    if !owner_ok || mode & 0o022 != 0 {
        return Err(err(
            at,
            format!(
                "bad owner or permissions on {} (owner uid {}, mode {:04o}): it must belong to \
                 you or root and not be writable by group or others (chmod go-w)",
                path.display(),
                meta.uid(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

fn parse_file(
    path: &Path,
    text: &str,
    user: bool,
    env: &Env,
    depth: usize,
    count: &mut usize,
) -> Result<ConfigFile, SshConfigError> {
    let mut lines = Vec::new();
    let mut ignore_unknown: Vec<String> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let origin = Origin {
            file: path.to_path_buf(),
            line: i + 1,
        };
        let Some((kw, rest)) = split_keyword(raw) else {
            continue;
        };
        if rest.is_empty() {
            return Err(err(
                &origin,
                format!("no argument after keyword `{}`", escape(kw)),
            ));
        }
        let args = argv_split(rest).map_err(|m| err(&origin, m))?;
        if args.is_empty() {
            return Err(err(
                &origin,
                format!("no argument after keyword `{}`", escape(kw)),
            ));
        }
        let lower = kw.to_ascii_lowercase();
        let item = match lower.as_str() {
            "host" => Item::Host {
                patterns: args.iter().map(|p| p.to_ascii_lowercase()).collect(),
            },
            "match" => Item::Match {
                criteria: parse_match(&args, &origin)?,
            },
            "include" => {
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(err(
                        &origin,
                        format!("Include nested more than {MAX_INCLUDE_DEPTH} levels deep"),
                    ));
                }
                let mut files = Vec::new();
                for arg in &args {
                    for p in include_paths(arg, user, env, &origin)? {
                        if let Some(f) = read_file(&p, user, env, depth + 1, count, Some(&origin))?
                        {
                            files.push(f);
                        }
                    }
                }
                Item::Include { files }
            }
            _ => match keyword(&lower) {
                Some(Keyword::IgnoreUnknown) => {
                    ignore_unknown = args
                        .iter()
                        .flat_map(|a| a.split(','))
                        .map(|s| s.to_ascii_lowercase())
                        .collect();
                    Item::Option {
                        keyword: Keyword::IgnoreUnknown,
                        written: kw.to_string(),
                        args,
                    }
                }
                Some(k) => {
                    // Values are checked on every line, applying or not, as ssh does.
                    let mut scratch = State {
                        opts: HostConfig::default(),
                        want_final: false,
                        cli_user: None,
                        default_user: String::new(),
                        seq: 0,
                    };
                    set_option(k, kw, &args, origin.clone(), "host", &mut scratch)?;
                    Item::Option {
                        keyword: k,
                        written: kw.to_string(),
                        args,
                    }
                }
                None => {
                    if ignore_unknown
                        .iter()
                        .any(|p| glob_match(p.as_bytes(), lower.as_bytes()))
                    {
                        continue;
                    }
                    return Err(err(
                        &origin,
                        format!(
                            "unknown keyword `{}` (ssh itself refuses it too); fix the line, or \
                             name it in IgnoreUnknown before it if a newer ssh knows it",
                            escape(kw)
                        ),
                    ));
                }
            },
        };
        lines.push(Line { item, line: i + 1 });
    }
    Ok(ConfigFile {
        path: path.to_path_buf(),
        lines,
    })
}

/// Splits off the keyword (`Keyword value`, `Keyword=value`, `Keyword = value`); `None` for
/// blank and comment lines.
fn split_keyword(raw: &str) -> Option<(&str, &str)> {
    let line = raw.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r' || c == '\x0c');
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find([' ', '\t', '=']).unwrap_or(line.len());
    let kw = &line[..end];
    let mut rest = &line[end..];
    rest = rest.trim_start_matches([' ', '\t']);
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start_matches([' ', '\t']);
    }
    Some((kw, rest))
}

/// OpenSSH's `argv_split` with `terminate_on_comment`: whitespace separates, `"` and `'`
/// quote, `\` escapes a quote, a backslash or (outside quotes) a space, `#` at the start of a
/// word ends the line.
fn argv_split(s: &str) -> Result<Vec<String>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == ' ' || b[i] == '\t' {
            i += 1;
            continue;
        }
        if b[i] == '#' {
            break;
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while i < b.len() {
            let c = b[i];
            if c == '\\' {
                match b.get(i + 1) {
                    Some(&n)
                        if n == '\'' || n == '"' || n == '\\' || (quote.is_none() && n == ' ') =>
                    {
                        arg.push(n);
                        i += 2;
                        continue;
                    }
                    _ => arg.push(c),
                }
            } else if quote.is_none() && (c == ' ' || c == '\t') {
                break;
            } else if quote.is_none() && (c == '"' || c == '\'') {
                quote = Some(c);
            } else if quote == Some(c) {
                quote = None;
            } else {
                arg.push(c);
            }
            i += 1;
        }
        if quote.is_some() {
            return Err("unterminated quote".into());
        }
        out.push(arg);
    }
    Ok(out)
}

fn parse_match(args: &[String], origin: &Origin) -> Result<Vec<Criterion>, SshConfigError> {
    let mut out = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(raw) = it.next() {
        let (negated, name) = match raw.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, raw.as_str()),
        };
        let lower = name.to_ascii_lowercase();
        let c = match lower.as_str() {
            "all" => {
                if negated {
                    return Err(err(origin, "Match: `all` cannot be negated"));
                }
                Criterion::All
            }
            "canonical" => Criterion::Canonical { negated },
            "final" => Criterion::Final { negated },
            "host" | "originalhost" | "user" | "localuser" => {
                let Some(list) = it.next() else {
                    return Err(err(origin, format!("Match {lower}: missing argument")));
                };
                let list = list.clone();
                match lower.as_str() {
                    "host" => Criterion::Host { negated, list },
                    "originalhost" => Criterion::OriginalHost { negated, list },
                    "user" => Criterion::User { negated, list },
                    _ => Criterion::LocalUser { negated, list },
                }
            }
            "exec" | "localnetwork" | "tagged" | "command" | "version" | "sessiontype" => {
                // These take an argument.
                if it.next().is_none() {
                    return Err(err(origin, format!("Match {lower}: missing argument")));
                }
                Criterion::Unsupported { name: lower }
            }
            _ => {
                return Err(err(
                    origin,
                    format!("Match: unknown criterion `{}`", escape(name)),
                ));
            }
        };
        out.push(c);
    }
    if out.is_empty() {
        return Err(err(origin, "Match: no criteria"));
    }
    if out.contains(&Criterion::All)
        && out.iter().any(|c| {
            !matches!(
                c,
                Criterion::All | Criterion::Canonical { .. } | Criterion::Final { .. }
            )
        })
    {
        return Err(err(
            origin,
            "Match: `all` may only be combined with canonical or final",
        ));
    }
    Ok(out)
}

/// Paths an `Include` argument names, expanded and sorted (glob(3) order).
fn include_paths(
    arg: &str,
    user: bool,
    env: &Env,
    origin: &Origin,
) -> Result<Vec<PathBuf>, SshConfigError> {
    let arg = expand_env(arg, origin, "Include")?;
    let path = if let Some(rest) = arg.strip_prefix("~/") {
        if !user {
            return Err(err(
                origin,
                "Include: `~` is only allowed in user configuration files",
            ));
        }
        env.home.join(rest)
    } else if arg.starts_with('/') {
        PathBuf::from(&arg)
    } else if user {
        env.home.join(".ssh").join(&arg)
    } else {
        PathBuf::from("/etc/ssh").join(&arg)
    };
    Ok(glob_paths(&path))
}

/// glob(3) over path components: `*`, `?` and `[...]` in any component; hidden entries only
/// when the pattern component starts with a dot; lexical order.
fn glob_paths(pattern: &Path) -> Vec<PathBuf> {
    let mut current = vec![PathBuf::from(if pattern.is_absolute() { "/" } else { "." })];
    for comp in pattern.components() {
        let part = match comp {
            std::path::Component::RootDir | std::path::Component::CurDir => continue,
            std::path::Component::Prefix(_) => continue,
            std::path::Component::ParentDir => "..".to_string(),
            std::path::Component::Normal(s) => s.to_string_lossy().into_owned(),
        };
        let wild = part.contains(['*', '?', '[']);
        let mut next = Vec::new();
        for dir in &current {
            if !wild {
                next.push(dir.join(&part));
                continue;
            }
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') || part.starts_with('.'))
                .filter(|n| fnmatch(part.as_bytes(), n.as_bytes()))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        current = next;
    }
    current.into_iter().filter(|p| p.exists()).collect()
}

/// fnmatch with `*`, `?` and `[...]` (with `!`/`^` negation and ranges).
fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, length consumed including ']').
        let mut i = 0;
        let negate = matches!(p.first(), Some(b'!') | Some(b'^'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == b']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
                if p[i] <= c && c <= p[i + 2] {
                    matched = true;
                }
                i += 3;
            } else {
                if p[i] == c {
                    matched = true;
                }
                i += 1;
            }
        }
        None
    }
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'[') => match class(&pattern[p + 1..], text[t]) {
                Some((true, len)) => Some(len + 1),
                Some((false, _)) => None,
                None => (text[t] == b'[').then_some(1),
            },
            Some(&c) if c == text[t] => Some(1),
            _ => None,
        };
        match step {
            Some(n) => {
                p += n;
                t += 1;
            }
            None => match star {
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

/// `*` matches any run of characters, `?` exactly one (OpenSSH's `match_pattern`).
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(home: &Path) -> Env {
        Env {
            home: home.to_path_buf(),
            local_user: "alice".into(),
            local_host: "ctl".into(),
            uid: unsafe { libc::getuid() },
        }
    }

    fn cfg(text: &str) -> SshConfig {
        SshConfig::parse_str(
            Path::new("cfg"),
            text,
            ConfigKind::User,
            &env(Path::new("/h")),
        )
        .expect("parses")
    }

    fn resolve(c: &SshConfig, host: &str) -> HostConfig {
        c.resolve(host, None, "alice", &env(Path::new("/h")))
            .expect("resolves")
    }

    #[test]
    fn first_value_wins_and_identity_files_accumulate() {
        let c = cfg(
            "Host web*\n  User deploy\n  IdentityFile ~/.ssh/a\nHost *\n  User root\n  IdentityFile ~/.ssh/b\n  Port 2222\n",
        );
        let h = resolve(&c, "web1");
        assert_eq!(h.user.as_ref().map(|u| u.value.as_str()), Some("deploy"));
        assert_eq!(h.user.as_ref().map(|u| u.origin.line), Some(2));
        assert_eq!(h.port.as_ref().map(|p| p.value), Some(2222));
        let ids: Vec<_> = h.identity_files.iter().map(|i| i.value.as_str()).collect();
        assert_eq!(ids, ["~/.ssh/a", "~/.ssh/b"]);
        let h = resolve(&c, "db1");
        assert_eq!(h.user.as_ref().map(|u| u.value.as_str()), Some("root"));
    }

    #[test]
    fn keyword_forms_quotes_and_comments() {
        let c = cfg("# comment\nHost=a\n\tHostName = 10.0.0.1 # trailing\nUSER \"my user\"\n");
        let h = resolve(&c, "a");
        assert_eq!(h.hostname.unwrap().value, "10.0.0.1");
        assert_eq!(h.user.unwrap().value, "my user");
    }

    #[test]
    fn negation_and_wildcards() {
        let c = cfg("Host *.prod !db9.prod\n  User ops\nHost db?.prod\n  Port 2200\n");
        assert!(resolve(&c, "db1.prod").user.is_some());
        assert!(resolve(&c, "db9.prod").user.is_none());
        assert_eq!(resolve(&c, "db9.prod").port.unwrap().value, 2200);
        assert!(resolve(&c, "db10.prod").port.is_none());
    }

    #[test]
    fn hostname_token_and_match_host_sees_it() {
        let c = cfg(
            "Host t*\n  HostName %h.internal\nMatch host *.internal user root\n  ProxyJump bastion\nMatch originalhost t1\n  Port 2201\n",
        );
        let h = c
            .resolve("t1", Some("root"), "alice", &env(Path::new("/h")))
            .unwrap();
        assert_eq!(h.hostname.as_ref().unwrap().value, "t1.internal");
        assert_eq!(h.jump().unwrap().value, "bastion");
        assert_eq!(h.port.unwrap().value, 2201);
        // Match user sees the default user when no user is known: alice here.
        let h = resolve(&c, "t1");
        assert!(h.jump().is_none());
    }

    #[test]
    fn match_final_takes_a_second_pass() {
        let c = cfg(
            "Host alias\n  HostName real.example\nMatch final host real.example\n  User late\nHost real.example\n  Port 2022\n",
        );
        let h = resolve(&c, "alias");
        assert_eq!(h.user.unwrap().value, "late");
        // In the final pass `Host` matches the HostName.
        assert_eq!(h.port.unwrap().value, 2022);
    }

    #[test]
    fn unknown_keyword_is_an_error_with_line_unless_ignored() {
        let e = SshConfig::parse_str(
            Path::new("f"),
            "Host a\n  Bogus yes\n",
            ConfigKind::User,
            &env(Path::new("/h")),
        )
        .unwrap_err();
        assert_eq!(e.origin.line, 2);
        assert!(e.message.contains("unknown keyword `Bogus`"), "{e}");
        cfg("IgnoreUnknown bog*\nHost a\n  Bogus yes\n");
    }

    #[test]
    fn refused_directives_only_when_they_apply() {
        let c = cfg(
            "Host corp-*\n  ProxyCommand nc %h %p\nHost known\n  KnownHostsCommand /bin/x\nHost lax\n  StrictHostKeyChecking no\nHost *\n  User u\n",
        );
        // Another host is not affected.
        resolve(&c, "web1");
        let e = c
            .resolve("corp-1", None, "alice", &env(Path::new("/h")))
            .unwrap_err();
        assert_eq!(e.origin.line, 2);
        assert!(e.message.contains("ProxyCommand"), "{e}");
        let e = c
            .resolve("known", None, "alice", &env(Path::new("/h")))
            .unwrap_err();
        assert!(e.message.contains("KnownHostsCommand"), "{e}");
        let e = c
            .resolve("lax", None, "alice", &env(Path::new("/h")))
            .unwrap_err();
        assert_eq!(e.origin.line, 6);
        assert!(e.message.contains("never connects without checking"), "{e}");
    }

    #[test]
    fn proxy_jump_first_makes_proxy_command_moot_and_none_disables() {
        let c = cfg(
            "Host a\n  ProxyJump b1,u@b2:2222\nHost *\n  ProxyCommand nc %h %p\nHost c\n  ProxyJump none\n",
        );
        let h = resolve(&c, "a");
        let j = parse_jump_list(&h.jump().unwrap().value).unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(j[1].user.as_deref(), Some("u"));
        assert_eq!(j[1].port, Some(2222));
        let c = cfg("Host c\n  ProxyJump none\n  ProxyCommand nc\n");
        assert!(resolve(&c, "c").jump().is_none());
        let c = cfg("Host c\n  ProxyCommand none\n  ProxyJump b\n");
        assert!(resolve(&c, "c").jump().is_none());
    }

    #[test]
    fn include_globs_and_scoping() {
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join(".ssh");
        std::fs::create_dir_all(ssh.join("conf.d")).unwrap();
        std::fs::write(ssh.join("conf.d/b.conf"), "Host t2\n  HostName 10.0.0.2\n").unwrap();
        std::fs::write(
            ssh.join("conf.d/a.conf"),
            "Host t1\n  HostName 10.0.0.1\n  User one\n",
        )
        .unwrap();
        std::fs::write(ssh.join("conf.d/.hidden"), "Host *\n  User hidden\n").unwrap();
        std::fs::write(
            ssh.join("config"),
            "Include conf.d/*.conf ~/.ssh/missing\nUser after\nHost nothing\n  Include conf.d/a.conf\n",
        )
        .unwrap();
        let e = env(dir.path());
        let c = SshConfig::load(&[(ssh.join("config"), ConfigKind::User)], &e).unwrap();
        let h = c.resolve("t1", None, "alice", &e).unwrap();
        assert_eq!(h.hostname.unwrap().value, "10.0.0.1");
        assert_eq!(h.user.as_ref().unwrap().value, "one");
        assert!(h.user.unwrap().origin.file.ends_with("a.conf"));
        // After the include, the Host t2 block of b.conf no longer applies: `User after` is
        // global again.
        let h = c.resolve("t2", None, "alice", &e).unwrap();
        assert_eq!(h.user.unwrap().value, "after");
        assert_eq!(c.file_paths().len(), 4);
    }

    #[test]
    fn unsupported_match_is_an_error_only_when_reached() {
        let c = cfg("Match host other exec \"true\"\n  User x\nMatch exec true\n  User y\n");
        let e = c
            .resolve("a", None, "alice", &env(Path::new("/h")))
            .unwrap_err();
        assert_eq!(e.origin.line, 3);
        assert!(e.message.contains("never runs commands"), "{e}");
    }

    #[test]
    fn times_and_bad_values() {
        assert_eq!(parse_time("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_time("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_time("1x"), None);
        // Values are checked on every line, even in blocks that apply to no host.
        let e = SshConfig::parse_str(
            Path::new("f"),
            "Host nothing\n  Port abc\n",
            ConfigKind::User,
            &env(Path::new("/h")),
        )
        .unwrap_err();
        assert_eq!(e.origin.line, 2);
        assert!(e.message.contains("not a port"), "{e}");
    }

    #[test]
    fn jump_specs() {
        assert_eq!(
            parse_jump("ssh://u@[::1]:22").unwrap(),
            JumpSpec {
                user: Some("u".into()),
                host: "::1".into(),
                port: Some(22)
            }
        );
        assert!(parse_jump("a;rm -rf /").is_err());
        assert!(parse_jump("h:99999").is_err());
        assert_eq!(parse_jump("Bastion").unwrap().host, "bastion");
    }

    #[test]
    fn tokens_and_env() {
        let o = Origin {
            file: "f".into(),
            line: 1,
        };
        assert_eq!(
            expand_tokens("%h-%%", &[('h', "x")], &o, "t").unwrap(),
            "x-%"
        );
        assert!(expand_tokens("%Z", &[], &o, "t").is_err());
        assert!(expand_env("${PLUMB_SURELY_UNSET_VAR}", &o, "t").is_err());
    }

    #[test]
    fn writable_user_config_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config");
        std::fs::write(&p, "Host a\n  User b\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = SshConfig::load(&[(p, ConfigKind::User)], &env(dir.path())).unwrap_err();
        assert!(e.message.contains("bad owner or permissions"), "{e}");
    }

    #[test]
    fn fnmatch_classes() {
        assert!(fnmatch(b"*.conf", b"a.conf"));
        assert!(fnmatch(b"[ab]*", b"b1"));
        assert!(!fnmatch(b"[!ab]*", b"b1"));
        assert!(fnmatch(b"x[0-9]", b"x5"));
    }
}
