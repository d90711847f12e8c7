//! `plumb inventory show HOST`: how plumb reaches a host and where each setting comes from
//! (inventory, ssh_config line, flag or default). `plumb inventory import FILE`: an Ansible
//! inventory turned into plumb's `inventory/hosts.yaml`.

use super::{EXIT_ERROR, EXIT_OK, RepoArgs, print_diagnostics};
use crate::converge::remote::RemoteOptions;
use crate::transport::route::{Resolved, Source};
use crate::transport::ssh_config::escape;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// `plumb inventory ...`.
#[derive(Subcommand, Debug)]
pub enum InventoryCommand {
    /// How plumb reaches a host: every effective connection setting (address, user, port,
    /// identities, known_hosts, bastions, ...) and where it came from. Contacts no host.
    Show(ShowArgs),
    /// Turn an Ansible inventory (INI or YAML) into plumb's inventory/hosts.yaml.
    Import(ImportArgs),
}

/// Output format of `inventory show`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ShowFormat {
    /// Aligned columns.
    Human,
    /// JSON.
    Json,
}

/// `plumb inventory show`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The host, as the inventory names it.
    pub host: String,
    /// Repo options.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// OpenSSH client configuration to read instead of the inventory's `ssh_config` or
    /// ~/.ssh/config and /etc/ssh/ssh_config (`none`: read none).
    #[arg(long, value_name = "FILE", env = "PLUMB_SSH_CONFIG")]
    pub ssh_config: Option<PathBuf>,
    /// As with converge: unknown host keys would be recorded.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// As with converge: seconds to connect when ssh_config sets no ConnectTimeout.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ShowFormat::Human)]
    pub format: ShowFormat,
}

/// `plumb inventory import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The Ansible inventory: an INI file or a YAML file (group_vars/ and host_vars/ beside it
    /// are read too).
    pub file: PathBuf,
    /// Write here instead of stdout (refuses to replace an existing file without --force).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Runs `plumb inventory ...`.
pub fn run(cmd: &InventoryCommand) -> Result<i32> {
    match cmd {
        InventoryCommand::Show(a) => show(a),
        InventoryCommand::Import(a) => import(a),
    }
}

fn show(a: &ShowArgs) -> Result<i32> {
    let repo = match super::load_repo(&a.repo, true) {
        Ok(r) => r,
        Err(ds) => {
            print_diagnostics(&ds);
            return Ok(EXIT_ERROR);
        }
    };
    let Some(host) = repo.inventory.host(&a.host) else {
        bail!(
            "host `{}` is not in the inventory (known: {})",
            escape(&a.host),
            repo.inventory
                .hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let opts = RemoteOptions {
        accept_new_host_keys: a.accept_new_host_keys,
        connect_timeout: Duration::from_secs(a.connect_timeout.max(1)),
        ssh_config: a.ssh_config.clone(),
        ..RemoteOptions::default()
    };
    let choice = opts.config_choice(host);
    let files = match opts.reach.config(&choice) {
        Ok(c) => c.file_paths(),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_ERROR);
        }
    };
    let resolved = match opts.resolve(host) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_ERROR);
        }
    };
    let mut out = std::io::stdout().lock();
    match a.format {
        ShowFormat::Json => {
            let doc = serde_json::json!({
                "host": host.name,
                "ssh_config_files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                "settings": json_settings(&resolved),
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        ShowFormat::Human => {
            writeln!(out, "host {}", escape(&host.name))?;
            writeln!(
                out,
                "  ssh_config read: {}",
                if files.is_empty() {
                    "none".to_string()
                } else {
                    files
                        .iter()
                        .map(|f| escape(&f.display().to_string()))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )?;
            print_resolved(&mut out, &resolved, 1)?;
        }
    }
    Ok(EXIT_OK)
}

fn source_text(s: &Source) -> String {
    escape(&s.to_string())
}

fn print_resolved(out: &mut impl Write, r: &Resolved, depth: usize) -> Result<()> {
    let pad = "  ".repeat(depth);
    for s in &r.shown {
        writeln!(
            out,
            "{pad}{:<18} {:<44} {}",
            s.name,
            s.value,
            source_text(&s.source)
        )?;
    }
    for (l, why) in &r.ignored {
        writeln!(
            out,
            "{pad}{:<18} {:<44} ssh_config {}",
            "ignored",
            format!("{} ({why})", escape(&l.value)),
            escape(&l.origin.to_string())
        )?;
    }
    if let Some(via) = &r.via {
        writeln!(out, "{pad}bastion {}:", escape(&via.name))?;
        print_resolved(out, via, depth + 1)?;
    }
    Ok(())
}

fn json_settings(r: &Resolved) -> serde_json::Value {
    let mut settings: Vec<serde_json::Value> = r
        .shown
        .iter()
        .map(|s| serde_json::json!({"name": s.name, "value": s.value, "source": s.source.to_string()}))
        .collect();
    for (l, why) in &r.ignored {
        settings.push(serde_json::json!({
            "name": "ignored",
            "value": format!("{} ({why})", l.value),
            "source": format!("ssh_config {}", l.origin),
        }));
    }
    serde_json::json!({
        "name": r.name,
        "settings": settings,
        "bastion": r.via.as_deref().map(json_settings),
    })
}

fn import(a: &ImportArgs) -> Result<i32> {
    let imported = match crate::inventory_import::import_file(&a.file) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_ERROR);
        }
    };
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    match &a.out {
        Some(path) => {
            if path.exists() && !a.force {
                bail!("{} exists; pass --force to replace it", path.display());
            }
            crate::secrets::write_atomic(path, imported.text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote {} ({} hosts, {} groups)",
                path.display(),
                imported.hosts,
                imported.groups
            );
        }
        None => std::io::stdout().write_all(imported.text.as_bytes())?,
    }
    Ok(EXIT_OK)
}
