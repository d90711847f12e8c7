//! The command line: argument definitions and the commands that only read the repo
//! (`validate`, `render`, `secrets`, `certs init-ca`, `completions`). Commands that talk to hosts
//! live in their own modules and are dispatched from here.

pub mod certs;
pub mod converge;
pub mod history;
pub mod inventory;
pub mod pg;
pub mod pull;
pub mod serve;

use crate::diag::Diagnostics;
use crate::load::{LoadOptions, Repo};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

pub use crate::report::{EXIT_CHANGES, EXIT_DRIFT, EXIT_ERROR, EXIT_OK, EXIT_USAGE};

/// plumb: keep a fleet of VMs in the state a git repo declares.
#[derive(Parser, Debug)]
#[command(name = "plumb", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "PLUMB_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// More logging (-v: debug, -vv: trace). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Options of every command that reads a cluster repo.
#[derive(Args, Debug, Clone)]
pub struct RepoArgs {
    /// The cluster repo (a folder with inventory/, manifests/, templates/).
    #[arg(default_value = ".")]
    pub repo: PathBuf,
    /// Inventory overlay merged over the repo's inventory (other addresses, keys, vars).
    #[arg(long, value_name = "FILE", env = "PLUMB_INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// age identity that decrypts secrets/ (an age key file or an unencrypted SSH key).
    #[arg(long, value_name = "FILE", env = "PLUMB_AGE_IDENTITY")]
    pub age_identity: Option<PathBuf>,
    /// Secret store options.
    #[command(flatten)]
    pub secret_command: SecretCommandArgs,
}

/// The operator's secret program, on the controller only (the repo can never name one).
#[derive(Args, Debug, Clone, Default)]
pub struct SecretCommandArgs {
    /// Program serving the secrets listed in secrets/external.txt: run as `PROGRAM NAME` (no
    /// shell), its stdout is the value (held in memory only; its stderr is discarded).
    #[arg(long, value_name = "PROGRAM", env = "PLUMB_SECRET_COMMAND")]
    pub secret_command: Option<PathBuf>,
    /// Seconds one call of the secret program may take before it is killed.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub secret_command_timeout: u64,
}

impl SecretCommandArgs {
    /// The secret command, when one is given.
    pub fn command(&self) -> Option<crate::secrets::SecretCommand> {
        self.secret_command.as_ref().map(|p| {
            crate::secrets::SecretCommand::new(p.clone())
                .with_timeout(std::time::Duration::from_secs(self.secret_command_timeout))
        })
    }
}

impl RepoArgs {
    /// Load options for these arguments.
    pub fn load_options(&self, placeholders: bool) -> LoadOptions {
        LoadOptions {
            root: self.repo.clone(),
            overlay: self.inventory.clone(),
            identity: self.age_identity.clone(),
            placeholders,
            secret_command: self.secret_command.command(),
        }
    }
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a cluster repo: syntax, fields, references, templates, secrets. Contacts no host.
    Validate(ValidateArgs),
    /// Print (or write) each host's desired state after templates and composite expansion.
    Render(RenderArgs),
    /// Read every host, show what differs, and apply it (`--dry-run`: only show).
    Converge(converge::ConvergeArgs),
    /// Read every host and write the plan to a file for review (`plumb apply` applies it).
    Plan(converge::PlanArgs),
    /// Apply a plan written by `plumb plan`, exactly, refusing resources that changed since.
    Apply(converge::ApplyArgs),
    /// Pull mode: fetch the repo's branch and converge when its commit changed (for a timer).
    Pull(pull::PullArgs),
    /// Webhook receiver: converge on each git push (GitHub, GitLab, Gitea), one run at a time.
    Serve(serve::ServeArgs),
    /// The runs of `pull` and `serve`: when, which commit, why, the result; one run per host.
    History(history::HistoryArgs),
    /// The inventory: how plumb reaches a host (`show`), or import an Ansible inventory.
    #[command(subcommand)]
    Inventory(inventory::InventoryCommand),
    /// Manage age-encrypted secrets in the repo's secrets/.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Certificates: create a CA, see every certificate's expiry, rotate them.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// The PostgreSQL cluster itself: status, switchover, rolling restart.
    #[command(subcommand)]
    Pg(pg::PgCommand),
    /// Print shell completions.
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
}

/// `plumb validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Repo options.
    #[command(flatten)]
    pub repo: RepoArgs,
}

/// Output format of `render`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum RenderFormat {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

/// `plumb render`.
#[derive(Args, Debug)]
pub struct RenderArgs {
    /// Repo options.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Only this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only resources matching `Kind/name`, `Kind` or `name`.
    #[arg(long)]
    pub resource: Option<String>,
    /// Write the files to DIR/HOST/<absolute path> instead of printing (real content, mode 0600).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Output format when printing.
    #[arg(long, value_enum, default_value_t = RenderFormat::Yaml)]
    pub format: RenderFormat,
}

/// `plumb secrets ...`.
#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Encrypt a value into secrets/NAME.age. The value is read from stdin (or a prompt), never argv.
    Set {
        /// Secret name.
        name: String,
        /// The repo.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
    /// List secret names (never values).
    List {
        /// The repo.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
}

/// `plumb certs ...`.
#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Every certificate on every host: expiry, days left, and whether the next converge
    /// reissues it (exit 2 when one would be). Reads only.
    Status(certs::StatusArgs),
    /// Reissue every certificate of the selected hosts now (a converge that forces it), and run
    /// the handlers they notify.
    Rotate(certs::RotateArgs),
    /// Create a private CA: certificate into the repo, key as an age-encrypted secret.
    InitCa {
        /// CA name (as a CertificateAuthority manifest names it).
        name: String,
        /// The repo.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Subject common name.
        #[arg(long)]
        common_name: Option<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u64,
        /// Replace an existing CA (hosts then need new certificates).
        #[arg(long)]
        force: bool,
    },
}

/// Loads a repo or returns its diagnostics as the error.
pub fn load_repo(args: &RepoArgs, placeholders: bool) -> Result<Repo, Diagnostics> {
    crate::load::load(&args.load_options(placeholders))
}

/// Runs a command; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Validate(a) => validate(&a),
        Command::Render(a) => render(&a),
        Command::Converge(a) => converge::converge(&a),
        Command::Plan(a) => converge::plan(&a),
        Command::Apply(a) => converge::apply(&a),
        Command::Pull(a) => pull::pull(&a),
        Command::Serve(a) => serve::serve(&a),
        Command::History(a) => history::history(&a),
        Command::Inventory(c) => inventory::run(&c),
        Command::Secrets(SecretsCommand::Set { name, repo }) => secrets_set(&repo, &name),
        Command::Secrets(SecretsCommand::List { repo }) => secrets_list(&repo),
        Command::Pg(c) => pg::run(&c),
        Command::Certs(CertsCommand::Status(a)) => certs::status(&a),
        Command::Certs(CertsCommand::Rotate(a)) => certs::rotate(&a),
        Command::Certs(CertsCommand::InitCa {
            name,
            repo,
            common_name,
            days,
            force,
        }) => init_ca(&repo, &name, common_name.as_deref(), days, force),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "plumb", &mut std::io::stdout());
            Ok(EXIT_OK)
        }
    }
}

pub(crate) fn print_diagnostics(ds: &Diagnostics) {
    eprintln!("{}", crate::secrets::redact(&ds.to_string()));
}

fn validate(a: &ValidateArgs) -> Result<i32> {
    // Without an identity or a secret command, the secrets it would open are placeholders.
    let placeholders =
        a.repo.age_identity.is_none() || a.repo.secret_command.secret_command.is_none();
    let (repo, mut ds) = crate::load::load_lenient(&a.repo.load_options(placeholders));
    let Some(repo) = repo else {
        ds.sort();
        print_diagnostics(&ds);
        return Ok(EXIT_ERROR);
    };
    // Render even a repo with problems: template errors are reported in the same run.
    let rendered = crate::render::render_all(&repo);
    if let Err(e) = &rendered {
        ds.extend(e.items.clone());
    }
    if !ds.is_empty() {
        ds.sort();
        print_diagnostics(&ds);
        return Ok(EXIT_ERROR);
    }
    match rendered {
        Ok(hosts) => {
            let resources: usize = hosts.iter().map(|h| h.resources.len()).sum();
            println!(
                "{}: valid: {} hosts, {} manifests, {} resources after expansion{}",
                a.repo.repo.display(),
                hosts.len(),
                repo.manifests.len(),
                resources,
                match (
                    a.repo.age_identity.is_none() && !repo.secrets.age_names().is_empty(),
                    !repo.secrets.has_command() && !repo.secrets.external_names().is_empty(),
                ) {
                    (true, true) => {
                        " (secrets checked for existence only: no --age-identity, no --secret-command)"
                    }
                    (true, false) => " (secrets checked for existence only: no --age-identity)",
                    (false, true) => {
                        " (external secrets checked for existence only: no --secret-command)"
                    }
                    (false, false) => "",
                }
            );
            Ok(EXIT_OK)
        }
        Err(ds) => {
            print_diagnostics(&ds);
            Ok(EXIT_ERROR)
        }
    }
}

fn matches_resource(filter: &str, kind: &str, name: &str) -> bool {
    filter == kind || filter == name || filter == format!("{kind}/{name}")
}

fn render(a: &RenderArgs) -> Result<i32> {
    let repo = match load_repo(&a.repo, false) {
        Ok(r) => r,
        Err(ds) => {
            print_diagnostics(&ds);
            return Ok(EXIT_ERROR);
        }
    };
    let hosts: Vec<_> = match &a.host {
        Some(h) => match repo.inventory.host(h) {
            Some(h) => vec![h],
            None => bail!(
                "host `{h}` is not in the inventory (known: {})",
                repo.inventory
                    .hosts
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        None => repo.inventory.hosts.iter().collect(),
    };
    let mut out = Vec::new();
    let mut ds = Diagnostics::new();
    for h in hosts {
        match crate::render::render_host(&repo, h) {
            Ok(mut d) => {
                if let Some(f) = &a.resource {
                    d.resources.retain(|r| matches_resource(f, r.kind, &r.name));
                }
                out.push(d);
            }
            Err(e) => ds.extend(e.items),
        }
    }
    if !ds.is_empty() {
        ds.sort();
        print_diagnostics(&ds);
        return Ok(EXIT_ERROR);
    }
    if let Some(dir) = &a.out {
        let written = write_private_tree(dir, &out)?;
        eprintln!("wrote {} files under {}", written, dir.display());
        return Ok(EXIT_OK);
    }
    let text = match a.format {
        RenderFormat::Yaml => {
            yaml_serde::to_string(&out).context("serializing the desired state")?
        }
        RenderFormat::Json => serde_json::to_string_pretty(&out)? + "\n",
    };
    std::io::stdout().write_all(crate::secrets::redact(&text).as_bytes())?;
    Ok(EXIT_OK)
}

/// Writes rendered files with owner-only permissions: they may hold secrets.
fn write_private_tree(dir: &Path, hosts: &[crate::kinds::DesiredHost]) -> Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let files = crate::render::write_tree(dir, hosts)
        .with_context(|| format!("writing under {}", dir.display()))?;
    for f in &files {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(files.len())
}

fn read_secret_value(name: &str) -> Result<Vec<u8>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("value for secret `{name}` (input hidden): ");
        std::io::stderr().flush()?;
        let line = read_line_without_echo()?;
        eprintln!();
        return Ok(line.into_bytes());
    }
    let mut buf = Vec::new();
    stdin.lock().read_to_end(&mut buf)?;
    Ok(buf)
}

fn read_line_without_echo() -> Result<String> {
    // SAFETY: termios calls on stdin's fd with a zeroed struct that tcgetattr fills in.
    unsafe {
        let fd = libc::STDIN_FILENO;
        let mut term: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut term) != 0 {
            bail!("cannot read the terminal settings");
        }
        let saved = term;
        term.c_lflag &= !libc::ECHO;
        libc::tcsetattr(fd, libc::TCSANOW, &term);
        let mut line = String::new();
        let r = std::io::stdin().read_line(&mut line);
        libc::tcsetattr(fd, libc::TCSANOW, &saved);
        r?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    }
}

fn secrets_set(repo: &Path, name: &str) -> Result<i32> {
    let value = read_secret_value(name)?;
    if value.is_empty() {
        bail!("refusing to store an empty value for secret `{name}`");
    }
    let path = crate::secrets::SecretStore::set(repo, name, &value)?;
    eprintln!("encrypted secret `{name}` to {}", path.display());
    Ok(EXIT_OK)
}

fn secrets_list(repo: &Path) -> Result<i32> {
    let store = crate::secrets::SecretStore::open(repo)?;
    for n in store.names() {
        // Names are file names under secrets/ or lines of external.txt: shown escaped, one
        // per line.
        let source = if store.external_names().contains_key(n) {
            " (secret command)"
        } else {
            ""
        };
        println!("{}{source}", crate::text::escape(n));
    }
    Ok(EXIT_OK)
}

fn init_ca(repo: &Path, name: &str, cn: Option<&str>, days: u64, force: bool) -> Result<i32> {
    // Use the paths of the CertificateAuthority manifest when one exists.
    let mut cert_path = PathBuf::from(format!("pki/{name}.crt"));
    let mut key_secret = format!("{name}-key");
    let mut common_name = cn.map(str::to_string);
    // Leniently: the repo cannot validate yet, since the CA's certificate does not exist.
    if let (Some(r), _) = crate::load::load_lenient(&LoadOptions {
        root: repo.to_path_buf(),
        placeholders: true,
        ..Default::default()
    }) && let Some(m) = r.find("CertificateAuthority", name)
        && let crate::kinds::Spec::CertificateAuthority(ca) = &m.spec
    {
        cert_path = PathBuf::from(&ca.certificate);
        key_secret = ca.key.secret.clone();
        common_name = common_name.or_else(|| Some(ca.common_name.clone()));
    }
    let common_name = common_name.unwrap_or_else(|| format!("{name} (plumb private CA)"));
    let full_cert = repo.join(&cert_path);
    if full_cert.exists() && !force {
        bail!(
            "{} already exists; pass --force to replace the CA (every certificate it signed must then be reissued)",
            full_cert.display()
        );
    }
    let ca = crate::pki::create_ca(&common_name, days)?;
    crate::secrets::SecretStore::set(repo, &key_secret, ca.key_pem.as_bytes())?;
    crate::secrets::write_atomic(&full_cert, ca.cert_pem.as_bytes())?;
    eprintln!(
        "created CA `{name}` (CN={common_name}, {days} days): certificate {}, key in secret `{key_secret}`",
        cert_path.display()
    );
    println!(
        "---\nkind: CertificateAuthority\nname: {name}\ncommon_name: {common_name}\ncertificate: {}\nkey: {{ secret: {key_secret} }}",
        cert_path.display()
    );
    Ok(EXIT_OK)
}
