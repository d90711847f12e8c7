//! From "a host as the inventory describes it" to a [`Route`]: the inventory's own settings
//! first (like options on ssh's command line), then the operator's ssh_config (first value
//! wins), then defaults. Every effective setting remembers where it came from, which
//! `plumb inventory show` prints.
//!
//! The name looked up in ssh_config (what `Host` lines match) is the inventory's `address`, or
//! the host's inventory name when it has none. An inventory `address` is dialled as written
//! (it wins over `HostName`, like every inventory setting); a host without one is reached as
//! `ssh NAME` would reach it, `HostName` included.
//!
//! Bastions: a host's jump list (inventory `ssh_jump`, else `ProxyJump`) `j1,...,jn` is reached
//! like `ssh -J j1,...,jn host` reaches it: `jn` is reached through `j1,...,jn-1` (its own
//! ProxyJump ignored), and `j1` through its own ProxyJump, if any. Each bastion is resolved
//! with its own settings, so each is verified against its own host key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::jump::{Hop, Route};
use super::ssh_config::{
    self, Env, HostConfig, JumpSpec, Located, Origin, SshConfig, StrictHostKeyChecking,
};
use super::{ConnectOptions, Endpoint, HostKeyPolicy, Identity, Privilege};

/// Which ssh_config files to read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConfigChoice {
    /// `~/.ssh/config`, then `/etc/ssh/ssh_config` (what `ssh` reads).
    Default,
    /// One file instead of both (`--ssh-config FILE`, the inventory's `ssh_config`), like
    /// `ssh -F FILE`.
    File(PathBuf),
    /// None at all (`none`).
    None,
}

impl ConfigChoice {
    /// `none` is [`ConfigChoice::None`], anything else a file.
    pub fn from_path(p: &Path) -> ConfigChoice {
        if p == Path::new("none") {
            ConfigChoice::None
        } else {
            ConfigChoice::File(p.to_path_buf())
        }
    }

    /// The files, in reading order.
    pub fn files(&self, env: &Env) -> Vec<(PathBuf, ssh_config::ConfigKind)> {
        match self {
            ConfigChoice::Default => vec![
                (env.home.join(".ssh/config"), ssh_config::ConfigKind::User),
                (
                    PathBuf::from("/etc/ssh/ssh_config"),
                    ssh_config::ConfigKind::System,
                ),
            ],
            ConfigChoice::File(p) => vec![(p.clone(), ssh_config::ConfigKind::User)],
            ConfigChoice::None => Vec::new(),
        }
    }
}

type Parsed = Result<std::sync::Arc<SshConfig>, ssh_config::SshConfigError>;

/// What the hosts of one run share: the environment, each ssh_config read once, and the
/// bastion sessions. Make one per run; clones of an `Arc` of it share everything.
#[derive(Debug, Default)]
pub struct Reach {
    env: std::sync::OnceLock<Env>,
    configs: std::sync::Mutex<std::collections::HashMap<ConfigChoice, Parsed>>,
    /// Bastion sessions of the run.
    pub bastions: super::jump::Bastions,
}

impl Reach {
    /// The environment of this process (read once).
    pub fn env(&self) -> &Env {
        self.env.get_or_init(Env::from_process)
    }

    /// The configuration `choice` names, read and parsed once per run. A file given by name
    /// must exist; the default files may be missing.
    pub fn config(
        &self,
        choice: &ConfigChoice,
    ) -> Result<std::sync::Arc<SshConfig>, ssh_config::SshConfigError> {
        let mut map = self
            .configs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(done) = map.get(choice) {
            return done.clone();
        }
        let env = self.env();
        let parsed = (|| {
            if let ConfigChoice::File(p) = choice
                && !p.exists()
            {
                return Err(ssh_config::SshConfigError {
                    origin: Origin {
                        file: p.clone(),
                        line: 0,
                    },
                    message: "the ssh_config file named does not exist".into(),
                });
            }
            SshConfig::load(&choice.files(env), env).map(std::sync::Arc::new)
        })();
        map.insert(choice.clone(), parsed.clone());
        parsed
    }
}

/// The user plumb logs in as when neither the inventory nor ssh_config names one (ssh would use
/// your local user name; plumb manages hosts as root, `sudo -n` otherwise).
const DEFAULT_USER: &str = "root";

/// Longest bastion chain followed (a loop of ProxyJump lines would otherwise never end).
const MAX_HOPS: usize = 8;

/// Where an effective setting came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The inventory: file, line and field, e.g. `inventory/hosts.yaml:12:5 hosts.pg1.ssh_user`.
    Inventory(String),
    /// An ssh_config line.
    SshConfig(Origin),
    /// A command-line flag.
    Flag(String),
    /// plumb's (or OpenSSH's) default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Inventory(at) => write!(f, "inventory {at}"),
            Source::SshConfig(o) => write!(f, "ssh_config {o}"),
            Source::Flag(flag) => write!(f, "{flag}"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// A value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

impl<T> Setting<T> {
    /// A setting written in the inventory at `at`.
    pub fn inventory(value: T, at: impl Into<String>) -> Self {
        Setting {
            value,
            source: Source::Inventory(at.into()),
        }
    }

    fn config(l: &Located<T>) -> Self
    where
        T: Clone,
    {
        Setting {
            value: l.value.clone(),
            source: Source::SshConfig(l.origin.clone()),
        }
    }

    fn default(value: T) -> Self {
        Setting {
            value,
            source: Source::Default,
        }
    }
}

/// A host as the inventory describes how to reach it. `None` fields are left to ssh_config
/// and the defaults.
#[derive(Clone, Debug)]
pub struct HostSpec {
    /// Inventory name (messages).
    pub name: String,
    /// The name looked up in ssh_config: the inventory address, or the inventory name.
    pub alias: Setting<String>,
    /// Whether `alias` is an address the inventory gave: then it is dialled as is and
    /// ssh_config's `HostName` does not apply.
    pub address_given: bool,
    /// `ssh_user`.
    pub user: Option<Setting<String>>,
    /// `ssh_port`.
    pub port: Option<Setting<u16>>,
    /// `ssh_key`: when set, the only identity (its `-cert.pub` included).
    pub key: Option<Setting<PathBuf>>,
    /// `known_hosts`: when set, the only file host keys are checked against.
    pub known_hosts: Option<Setting<PathBuf>>,
    /// `ssh_jump`: bastions in dialling order (empty: none, whatever ssh_config says).
    pub jump: Option<Setting<Vec<JumpTarget>>>,
    /// How commands get root.
    pub privilege: Privilege,
}

/// One bastion of a jump list.
#[derive(Clone, Debug)]
pub enum JumpTarget {
    /// A host described like any other (an inventory host, or a `user@host:port` of the
    /// inventory with the settings it inherits).
    Host(Box<HostSpec>),
    /// A `ProxyJump` hop, resolved through ssh_config only (as `ssh -J` does).
    Spec(JumpSpec, Source),
}

/// Settings of the whole run.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// `--accept-new-host-keys`: trust unknown keys on first use.
    pub accept_new_host_keys: bool,
    /// `--connect-timeout`, used when ssh_config sets no `ConnectTimeout`.
    pub connect_timeout: Duration,
    /// One command's bound.
    pub command_timeout: Duration,
    /// known_hosts used when neither the inventory nor ssh_config name one (callers that keep
    /// their own file).
    pub default_known_hosts: Option<PathBuf>,
    /// Home, local user and host name.
    pub env: Env,
}

/// One line of `plumb inventory show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    /// Setting name (`address`, `user`, ...).
    pub name: &'static str,
    /// Its value, printable.
    pub value: String,
    /// Where it came from.
    pub source: Source,
}

/// A host resolved: how to connect to it, through which bastion, and why.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Inventory name (or the jump spec for a bastion).
    pub name: String,
    /// Where and how.
    pub hop: Hop,
    /// The bastion it is reached through.
    pub via: Option<Box<Resolved>>,
    /// Every effective setting with its source.
    pub shown: Vec<Shown>,
    /// ssh_config directives that applied and that plumb ignores, with why.
    pub ignored: Vec<(Located<String>, &'static str)>,
}

impl Resolved {
    /// The route: bastions in dialling order, then this host.
    pub fn route(&self) -> Route {
        let mut bastions = Vec::new();
        let mut next = self.via.as_deref();
        while let Some(b) = next {
            bastions.push(b.hop.clone());
            next = b.via.as_deref();
        }
        bastions.reverse();
        Route {
            bastions,
            target: self.hop.clone(),
        }
    }
}

/// A host that cannot be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{host}: {message}")]
pub struct RouteError {
    /// The host (inventory name or bastion).
    pub host: String,
    /// What is wrong, with file and line when it comes from a file.
    pub message: String,
}

/// Resolves a host against the configuration.
pub fn resolve(
    spec: &HostSpec,
    config: &SshConfig,
    run: &RunSettings,
) -> Result<Resolved, RouteError> {
    resolve_hop(spec, None, config, run, 0)
}

fn resolve_hop(
    spec: &HostSpec,
    override_jumps: Option<(&[JumpTarget], &Source)>,
    config: &SshConfig,
    run: &RunSettings,
    depth: usize,
) -> Result<Resolved, RouteError> {
    let fail = |message: String| RouteError {
        host: spec.name.clone(),
        message,
    };
    if depth > MAX_HOPS {
        return Err(fail(format!(
            "the bastion chain is longer than {MAX_HOPS} hops; is there a ProxyJump loop?"
        )));
    }
    let env = &run.env;
    let alias = spec.alias.value.to_ascii_lowercase();
    if alias.is_empty() || !alias.bytes().all(ssh_config::valid_host_byte) {
        return Err(fail(format!(
            "`{}` is not a valid host name or address",
            ssh_config::escape(&spec.alias.value)
        )));
    }
    let hc = config
        .resolve(
            &alias,
            spec.user.as_ref().map(|u| u.value.as_str()),
            DEFAULT_USER,
            env,
        )
        .map_err(|e| fail(e.to_string()))?;

    let mut overridden: Vec<Shown> = Vec::new();
    let address = match &hc.hostname {
        Some(h) if spec.address_given => {
            overridden.push(Shown {
                name: "not used",
                value: ssh_config::escape(&format!(
                    "HostName {} (the inventory's address wins)",
                    h.value
                )),
                source: Source::SshConfig(h.origin.clone()),
            });
            spec.alias.clone()
        }
        Some(h) => Setting::config(h),
        None => spec.alias.clone(),
    };
    if !address.value.bytes().all(ssh_config::valid_host_byte) {
        return Err(fail(format!(
            "`{}` ({}) is not a valid host name or address",
            ssh_config::escape(&address.value),
            address.source
        )));
    }
    let user = spec
        .user
        .clone()
        .or_else(|| hc.user.as_ref().map(Setting::config))
        .unwrap_or_else(|| Setting::default(DEFAULT_USER.to_string()));
    if user.value.is_empty() || !user.value.bytes().all(ssh_config::valid_user_byte) {
        return Err(fail(format!(
            "`{}` ({}) is not a valid user name",
            ssh_config::escape(&user.value),
            user.source
        )));
    }
    let port = spec
        .port
        .clone()
        .or_else(|| hc.port.as_ref().map(Setting::config))
        .unwrap_or_else(|| Setting::default(22));

    // The jump list and the text %j expands to.
    let jumps: Option<(Vec<JumpTarget>, Source)> = match override_jumps {
        Some((list, source)) => Some((list.to_vec(), source.clone())),
        None => match &spec.jump {
            Some(j) => Some((j.value.clone(), j.source.clone())),
            None => match hc.jump() {
                Some(j) => {
                    let source = Source::SshConfig(j.origin.clone());
                    let list = ssh_config::parse_jump_list(&j.value)
                        .map_err(|m| fail(format!("{}: ProxyJump: {m}", j.origin)))?;
                    Some((
                        list.into_iter()
                            .map(|s| JumpTarget::Spec(s, source.clone()))
                            .collect(),
                        source,
                    ))
                }
                None => None,
            },
        },
    };
    let jump_text = jumps
        .as_ref()
        .map(|(l, _)| l.iter().map(describe_jump).collect::<Vec<_>>().join(","))
        .unwrap_or_default();

    let port_text = port.value.to_string();
    let uid = env.uid.to_string();
    let home = env.home.display().to_string();
    let short_local = env
        .local_host
        .split('.')
        .next()
        .unwrap_or(&env.local_host)
        .to_string();
    let hash = connection_hash(
        &env.local_host,
        &address.value,
        port.value,
        &user.value,
        &jump_text,
    );
    let key_alias = hc
        .host_key_alias
        .as_ref()
        .map(|a| a.value.clone())
        .unwrap_or_else(|| alias.clone());
    let tokens: Vec<(char, &str)> = vec![
        ('d', home.as_str()),
        ('h', address.value.as_str()),
        ('n', alias.as_str()),
        ('p', port_text.as_str()),
        ('r', user.value.as_str()),
        ('u', env.local_user.as_str()),
        ('l', env.local_host.as_str()),
        ('L', short_local.as_str()),
        ('i', uid.as_str()),
        ('C', hash.as_str()),
        ('k', key_alias.as_str()),
        ('j', jump_text.as_str()),
    ];
    let path_of = |l: &Located<String>, what: &str| -> Result<PathBuf, RouteError> {
        let expanded = ssh_config::expand_env(&l.value, &l.origin, what)
            .and_then(|v| ssh_config::expand_tokens(&v, &tokens, &l.origin, what))
            .map_err(|e| fail(e.to_string()))?;
        Ok(ssh_config::expand_tilde(&expanded, &env.home))
    };

    let mut shown = vec![line("address", address.value.clone(), &address.source)];
    shown.extend(overridden);
    shown.push(line("port", port.value.to_string(), &port.source));
    shown.push(line("user", user.value.clone(), &user.source));

    // Identities.
    let mut identities: Vec<Identity> = Vec::new();
    let mut certificates: Vec<PathBuf> = Vec::new();
    if let Some(key) = &spec.key {
        identities.push(Identity::File(key.value.clone()));
        shown.push(shown_path("identity", &key.value, &key.source));
        shown.push(Shown {
            name: "identity",
            value: "only this key (and its -cert.pub): the inventory names it".into(),
            source: key.source.clone(),
        });
    } else {
        for f in &hc.identity_files {
            if f.value.eq_ignore_ascii_case("none") {
                continue;
            }
            let p = path_of(f, "IdentityFile")?;
            shown.push(shown_path(
                "identity",
                &p,
                &Source::SshConfig(f.origin.clone()),
            ));
            identities.push(Identity::OptionalFile(p));
        }
        let only = hc.identities_only.as_ref().is_some_and(|o| o.value);
        let agent = match &hc.identity_agent {
            _ if only => {
                if let Some(o) = &hc.identities_only {
                    shown.push(Shown {
                        name: "agent",
                        value: "not used (IdentitiesOnly yes)".into(),
                        source: Source::SshConfig(o.origin.clone()),
                    });
                }
                None
            }
            Some(a) if a.value.eq_ignore_ascii_case("none") => {
                shown.push(Shown {
                    name: "agent",
                    value: "none".into(),
                    source: Source::SshConfig(a.origin.clone()),
                });
                None
            }
            Some(a) if a.value == "SSH_AUTH_SOCK" => {
                shown.push(Shown {
                    name: "agent",
                    value: "$SSH_AUTH_SOCK".into(),
                    source: Source::SshConfig(a.origin.clone()),
                });
                Some(Identity::Agent)
            }
            Some(a) => {
                let value = match a.value.strip_prefix('$') {
                    Some(var) => std::env::var(var).map_err(|_| {
                        fail(format!(
                            "{}: IdentityAgent: environment variable {var} is not set",
                            a.origin
                        ))
                    })?,
                    None => a.value.clone(),
                };
                let p = path_of(
                    &Located {
                        value,
                        origin: a.origin.clone(),
                    },
                    "IdentityAgent",
                )?;
                shown.push(shown_path(
                    "agent",
                    &p,
                    &Source::SshConfig(a.origin.clone()),
                ));
                Some(Identity::AgentSocket(p))
            }
            None => {
                shown.push(Shown {
                    name: "agent",
                    value: "$SSH_AUTH_SOCK when set".into(),
                    source: Source::Default,
                });
                Some(Identity::Agent)
            }
        };
        if hc.identity_files.is_empty() {
            // OpenSSH's default key files, after the agent.
            identities.extend(agent);
            for name in [
                "id_rsa",
                "id_ecdsa",
                "id_ecdsa_sk",
                "id_ed25519",
                "id_ed25519_sk",
                "id_dsa",
            ] {
                let p = env.home.join(".ssh").join(name);
                if p.exists() {
                    shown.push(shown_path("identity", &p, &Source::Default));
                }
                identities.push(Identity::OptionalFile(p));
            }
        } else {
            identities.extend(agent);
        }
        for c in &hc.certificate_files {
            let p = path_of(c, "CertificateFile")?;
            if p.exists() {
                shown.push(shown_path(
                    "certificate",
                    &p,
                    &Source::SshConfig(c.origin.clone()),
                ));
                certificates.push(p);
            } else {
                tracing::warn!(path = %p.display(), origin = %c.origin, "CertificateFile not found; skipped");
            }
        }
    }
    let Some((identity, extra_identities)) = identities.split_first() else {
        return Err(fail(
            "no identity to log in with (IdentitiesOnly yes without IdentityFile?)".into(),
        ));
    };

    // Host keys.
    let (primary, more, known_source) = known_hosts_files(spec, &hc, run, &path_of)?;
    let policy = if run.accept_new_host_keys {
        Setting {
            value: HostKeyPolicy::AcceptNew,
            source: Source::Flag("--accept-new-host-keys".into()),
        }
    } else {
        match &hc.strict_host_key_checking {
            Some(s) => Setting {
                value: match s.value {
                    StrictHostKeyChecking::Yes => HostKeyPolicy::Strict,
                    StrictHostKeyChecking::AcceptNew => HostKeyPolicy::AcceptNew,
                },
                source: Source::SshConfig(s.origin.clone()),
            },
            None => Setting::default(HostKeyPolicy::Strict),
        }
    };
    shown.push(shown_path("known_hosts", &primary, &known_source));
    for p in &more {
        shown.push(shown_path("known_hosts", p, &known_source));
    }
    shown.push(line(
        "host key checking",
        match policy.value {
            HostKeyPolicy::Strict => "strict: unknown and changed keys refused".into(),
            HostKeyPolicy::AcceptNew => {
                "accept-new: unknown keys recorded, changed keys refused".into()
            }
        },
        &policy.source,
    ));
    if let Some(a) = &hc.host_key_alias {
        shown.push(line(
            "host key alias",
            a.value.clone(),
            &Source::SshConfig(a.origin.clone()),
        ));
    }

    let connect_timeout = match &hc.connect_timeout {
        Some(t) if !t.value.is_zero() => Setting::config(t),
        _ => Setting {
            value: run.connect_timeout,
            source: Source::Flag("--connect-timeout".into()),
        },
    };
    shown.push(line(
        "connect timeout",
        format!("{}s", connect_timeout.value.as_secs()),
        &connect_timeout.source,
    ));
    let count_max = hc.server_alive_count_max.as_ref().map_or(3, |c| c.value);
    let keepalive = match &hc.server_alive_interval {
        Some(i) if i.value.is_zero() => Setting {
            value: None,
            source: Source::SshConfig(i.origin.clone()),
        },
        Some(i) => Setting {
            value: Some((i.value, count_max)),
            source: Source::SshConfig(i.origin.clone()),
        },
        None => Setting::default(Some((Duration::from_secs(30), count_max))),
    };
    shown.push(line(
        "keepalive",
        match keepalive.value {
            Some((i, n)) => format!("every {}s, {n} unanswered drop the connection", i.as_secs()),
            None => "off".into(),
        },
        &keepalive.source,
    ));

    let mut options = ConnectOptions::new(identity.clone(), primary);
    options.extra_identities = extra_identities.to_vec();
    options.certificates = certificates;
    options.more_known_hosts = more;
    options.host_key_alias = hc.host_key_alias.as_ref().map(|a| a.value.clone());
    options.host_key_policy = policy.value;
    options.privilege = spec.privilege;
    options.connect_timeout = connect_timeout.value;
    options.command_timeout = run.command_timeout;
    options.keepalive = keepalive.value;

    let hop = Hop {
        endpoint: Endpoint {
            host: spec.name.clone(),
            address: address.value.clone(),
            port: port.value,
            user: user.value.clone(),
        },
        options,
    };

    let via = match &jumps {
        Some((list, source)) if !list.is_empty() => {
            shown.push(line("jump", jump_text.clone(), source));
            let (last, before) = list.split_last().expect("non-empty");
            let last_spec = match last {
                JumpTarget::Host(h) => (**h).clone(),
                JumpTarget::Spec(s, source) => spec_host(s, source),
            };
            let sub = if before.is_empty() {
                None
            } else {
                Some((before, source))
            };
            let via = resolve_hop(&last_spec, sub, config, run, depth + 1).map_err(|e| {
                fail(format!(
                    "its bastion {} cannot be resolved: {e}",
                    describe_jump(last)
                ))
            })?;
            Some(Box::new(via))
        }
        Some((_, source)) => {
            shown.push(line("jump", "none".into(), source));
            None
        }
        None => None,
    };

    let ignored = hc
        .ignored
        .iter()
        .map(|l| {
            (
                l.clone(),
                ssh_config::ignored_reason(&l.value).unwrap_or("not used by plumb"),
            )
        })
        .collect();
    Ok(Resolved {
        name: spec.name.clone(),
        hop,
        via,
        shown,
        ignored,
    })
}

/// Expands a path from ssh_config (`${VAR}`, `%` tokens, `~`).
type PathOf<'a> = dyn Fn(&Located<String>, &str) -> Result<PathBuf, RouteError> + 'a;

/// The known_hosts files: the inventory's (alone), else ssh_config's `UserKnownHostsFile`, else
/// the caller's default, else OpenSSH's defaults; plus the global files unless the inventory or
/// the caller named one. Returns (the file learned keys go to, the others, where from).
fn known_hosts_files(
    spec: &HostSpec,
    hc: &HostConfig,
    run: &RunSettings,
    path_of: &PathOf<'_>,
) -> Result<(PathBuf, Vec<PathBuf>, Source), RouteError> {
    if let Some(k) = &spec.known_hosts {
        return Ok((k.value.clone(), Vec::new(), k.source.clone()));
    }
    let mut user: Vec<PathBuf> = Vec::new();
    let source;
    if let Some(files) = &hc.user_known_hosts {
        source = Source::SshConfig(files.origin.clone());
        for f in &files.value {
            if f.eq_ignore_ascii_case("none") {
                continue;
            }
            user.push(path_of(
                &Located {
                    value: f.clone(),
                    origin: files.origin.clone(),
                },
                "UserKnownHostsFile",
            )?);
        }
    } else if let Some(d) = &run.default_known_hosts {
        return Ok((d.clone(), Vec::new(), Source::Default));
    } else {
        source = Source::Default;
        user.push(run.env.home.join(".ssh/known_hosts"));
        user.push(run.env.home.join(".ssh/known_hosts2"));
    }
    let mut global: Vec<PathBuf> = Vec::new();
    match &hc.global_known_hosts {
        Some(files) => {
            for f in &files.value {
                if f.eq_ignore_ascii_case("none") {
                    continue;
                }
                global.push(path_of(
                    &Located {
                        value: f.clone(),
                        origin: files.origin.clone(),
                    },
                    "GlobalKnownHostsFile",
                )?);
            }
        }
        None => {
            global.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
            global.push(PathBuf::from("/etc/ssh/ssh_known_hosts2"));
        }
    }
    // `UserKnownHostsFile none`: nothing to learn into.
    let primary = if user.is_empty() {
        PathBuf::from("/dev/null")
    } else {
        user.remove(0)
    };
    user.extend(global.into_iter().filter(|p| p.exists()));
    Ok((primary, user, source))
}

/// A `ProxyJump` hop as a host spec: its user and port as written on the ProxyJump line.
fn spec_host(s: &JumpSpec, source: &Source) -> HostSpec {
    HostSpec {
        name: s.to_string(),
        alias: Setting {
            value: s.host.clone(),
            source: source.clone(),
        },
        // `ssh -J host`: an alias, HostName applies.
        address_given: false,
        user: s.user.clone().map(|u| Setting {
            value: u,
            source: source.clone(),
        }),
        port: s.port.map(|p| Setting {
            value: p,
            source: source.clone(),
        }),
        key: None,
        known_hosts: None,
        jump: None,
        privilege: Privilege::None,
    }
}

fn describe_jump(j: &JumpTarget) -> String {
    match j {
        JumpTarget::Host(h) => h.name.clone(),
        JumpTarget::Spec(s, _) => s.to_string(),
    }
}

fn line(name: &'static str, value: String, source: &Source) -> Shown {
    Shown {
        name,
        value: ssh_config::escape(&value),
        source: source.clone(),
    }
}

fn shown_path(name: &'static str, p: &Path, source: &Source) -> Shown {
    line(name, p.display().to_string(), source)
}

/// OpenSSH's `%C`: SHA-1 of `%l%h%p%r%j`, hex.
fn connection_hash(local: &str, host: &str, port: u16, user: &str, jump: &str) -> String {
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    h.update(format!("{local}{host}{port}{user}{jump}").as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ssh_config::ConfigKind;

    fn env() -> Env {
        Env {
            home: PathBuf::from("/home/op"),
            local_user: "op".into(),
            local_host: "ctl.example".into(),
            uid: 1000,
        }
    }

    fn run() -> RunSettings {
        RunSettings {
            accept_new_host_keys: false,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            default_known_hosts: None,
            env: env(),
        }
    }

    fn spec(name: &str) -> HostSpec {
        HostSpec {
            name: name.into(),
            alias: Setting::inventory(name.to_string(), "hosts.yaml:3:3 hosts.x"),
            address_given: false,
            user: None,
            port: None,
            key: None,
            known_hosts: None,
            jump: None,
            privilege: Privilege::Auto,
        }
    }

    fn config(text: &str) -> SshConfig {
        SshConfig::parse_str(
            Path::new("/home/op/.ssh/config"),
            text,
            ConfigKind::User,
            &env(),
        )
        .expect("config parses")
    }

    #[test]
    fn inventory_wins_and_config_fills_in() {
        let c = config(
            "Host t1\n  HostName 10.0.0.1\n  User admin\n  Port 2222\n  IdentityFile ~/.ssh/%h_%r\n  ConnectTimeout 3\n",
        );
        let mut s = spec("t1");
        s.user = Some(Setting::inventory(
            "deploy".into(),
            "hosts.yaml:4:5 hosts.t1.ssh_user",
        ));
        let r = resolve(&s, &c, &run()).expect("resolves");
        assert_eq!(r.hop.endpoint.address, "10.0.0.1");
        assert_eq!(r.hop.endpoint.user, "deploy");
        assert_eq!(r.hop.endpoint.port, 2222);
        assert_eq!(
            r.hop.options.identity,
            Identity::OptionalFile(PathBuf::from("/home/op/.ssh/10.0.0.1_deploy"))
        );
        assert_eq!(r.hop.options.extra_identities, vec![Identity::Agent]);
        assert_eq!(r.hop.options.connect_timeout, Duration::from_secs(3));
        assert_eq!(
            r.hop.options.known_hosts,
            PathBuf::from("/home/op/.ssh/known_hosts")
        );
        let user = r
            .shown
            .iter()
            .find(|s| s.name == "user")
            .expect("user shown");
        assert!(matches!(&user.source, Source::Inventory(at) if at.contains("ssh_user")));
        let port = r
            .shown
            .iter()
            .find(|s| s.name == "port")
            .expect("port shown");
        assert_eq!(port.source.to_string(), "ssh_config /home/op/.ssh/config:4");
    }

    #[test]
    fn an_inventory_address_wins_over_hostname() {
        let c = config("Host 10.0.0.5\n  HostName 192.0.2.9\n  Port 2222\n");
        let mut s = spec("pg1");
        s.alias = Setting::inventory("10.0.0.5".to_string(), "hosts.yaml:4:9 hosts.pg1.address");
        s.address_given = true;
        let r = resolve(&s, &c, &run()).expect("resolves");
        assert_eq!(r.hop.endpoint.address, "10.0.0.5");
        // Other settings of the block still apply.
        assert_eq!(r.hop.endpoint.port, 2222);
        assert!(
            r.shown
                .iter()
                .any(|l| l.name == "not used" && l.value.contains("192.0.2.9"))
        );
    }

    #[test]
    fn proxy_jump_chain_is_flattened_like_ssh_j() {
        let c = config(
            "Host t\n  HostName 10.2.0.5\n  ProxyJump b1,b2\nHost b1\n  HostName 10.0.0.1\n  ProxyJump b0\nHost b2\n  HostName 10.1.0.1\n  ProxyJump ignored-because-overridden\n  User jumper\nHost b0\n  HostName 192.0.2.1\n",
        );
        let r = resolve(&spec("t"), &c, &run()).expect("resolves");
        let route = r.route();
        let hops: Vec<_> = route
            .bastions
            .iter()
            .map(|h| h.endpoint.address.as_str())
            .collect();
        // b1 keeps its own ProxyJump (b0); b2 is reached through b1, its own ProxyJump ignored.
        assert_eq!(hops, ["192.0.2.1", "10.0.0.1", "10.1.0.1"]);
        assert_eq!(route.bastions[2].endpoint.user, "jumper");
        assert_eq!(route.target.endpoint.address, "10.2.0.5");
    }

    #[test]
    fn jump_loops_are_refused() {
        let c = config("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n");
        let e = resolve(&spec("a"), &c, &run()).unwrap_err();
        assert!(e.to_string().contains("ProxyJump loop"), "{e}");
    }

    #[test]
    fn inventory_key_and_known_hosts_are_exclusive() {
        let c = config(
            "Host *\n  IdentityFile ~/.ssh/other\n  UserKnownHostsFile ~/.ssh/kh1 ~/.ssh/kh2\n",
        );
        let mut s = spec("h");
        s.key = Some(Setting::inventory(PathBuf::from("/k/id"), "x"));
        s.known_hosts = Some(Setting::inventory(PathBuf::from("/k/known"), "x"));
        let r = resolve(&s, &c, &run()).expect("resolves");
        assert_eq!(
            r.hop.options.identity,
            Identity::File(PathBuf::from("/k/id"))
        );
        assert!(r.hop.options.extra_identities.is_empty());
        assert_eq!(r.hop.options.known_hosts, PathBuf::from("/k/known"));
        assert!(r.hop.options.more_known_hosts.is_empty());
        let r = resolve(&spec("h"), &c, &run()).expect("resolves");
        assert_eq!(
            r.hop.options.known_hosts,
            PathBuf::from("/home/op/.ssh/kh1")
        );
        assert_eq!(
            r.hop.options.more_known_hosts[0],
            PathBuf::from("/home/op/.ssh/kh2")
        );
    }

    #[test]
    fn identities_only_drops_the_agent_and_accept_new_is_honoured() {
        let c = config(
            "Host h\n  IdentityFile /k/a\n  IdentitiesOnly yes\n  StrictHostKeyChecking accept-new\n  ServerAliveInterval 0\n",
        );
        let r = resolve(&spec("h"), &c, &run()).expect("resolves");
        assert!(r.hop.options.extra_identities.is_empty());
        assert_eq!(r.hop.options.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(r.hop.options.keepalive, None);
    }

    #[test]
    fn bad_names_from_config_are_refused() {
        let c = config("Host h\n  HostName evil;rm\n");
        assert!(resolve(&spec("h"), &c, &run()).is_err());
    }
}
