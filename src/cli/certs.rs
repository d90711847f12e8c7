//! `plumb certs status` and `plumb certs rotate`: the certificates plumb issues, host by host.

use super::converge::{HostArgs, OutputFormat, prepare, runtime};
use super::{EXIT_ERROR, RepoArgs, print_diagnostics};
use crate::converge::read_certificates;
use anyhow::Result;
use clap::Args;
use std::io::IsTerminal;

/// `plumb certs status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Repo options.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Host options.
    #[command(flatten)]
    pub hosts: HostArgs,
}

/// `plumb certs rotate`.
#[derive(Args, Debug)]
pub struct RotateArgs {
    /// Repo options.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Host options.
    #[command(flatten)]
    pub hosts: HostArgs,
    /// Show what would be reissued; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `plumb certs status`: reads every certificate on the selected hosts (one probe per host, no
/// lock, nothing written) and says when each expires and whether a converge would reissue it.
pub fn status(a: &StatusArgs) -> Result<i32> {
    let (_, targets) = match prepare(&a.repo, a.hosts.limit.as_deref())? {
        Ok(x) => x,
        Err(ds) => {
            print_diagnostics(&ds);
            return Ok(EXIT_ERROR);
        }
    };
    let opts = a.hosts.options(true);
    let report = runtime()?.block_on(read_certificates(targets, &opts));
    match a.hosts.output {
        OutputFormat::Json => print!("{}", report.to_json()),
        OutputFormat::Human => print!("{}", report.to_human(std::io::stdout().is_terminal())),
    }
    Ok(report.exit_code())
}

/// `plumb certs rotate`: a converge that reissues every certificate of the selected hosts now,
/// whatever their expiry, and runs the handlers they notify.
pub fn rotate(a: &RotateArgs) -> Result<i32> {
    let mut opts = a.hosts.options(a.dry_run);
    opts.force_reissue = true;
    super::converge::converge_repo(&a.repo, &a.hosts, opts)
}
