//! `plumb certs status` and `plumb certs rotate`: the certificates plumb issues, host by host.

use super::converge::{HostArgs, OutputFormat, prepare, runtime};
use super::{EXIT_ERROR, RepoArgs, print_diagnostics};
use crate::converge::read_hosts;
use crate::kinds::DesiredHost;
use crate::kinds::PrimitiveSpec;
use crate::report::certs::{CertsReport, HostFailure, SCHEMA};
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

/// Only the certificates of a host (what `certs status` reads).
fn certificates_of(mut desired: DesiredHost) -> DesiredHost {
    desired
        .resources
        .retain(|d| matches!(d.spec, PrimitiveSpec::Certificate(_)));
    desired
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
    let targets: Vec<_> = targets
        .into_iter()
        .map(|(h, d)| (h, certificates_of(d)))
        .filter(|(_, d)| !d.resources.is_empty())
        .collect();
    let opts = a.hosts.options(true);
    let readings = runtime()?.block_on(read_hosts(targets, &opts));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut report = CertsReport {
        schema: SCHEMA,
        checked_at: now,
        certificates: Vec::new(),
        failed: Vec::new(),
    };
    for r in readings {
        match &r.records {
            Ok(records) => {
                for (i, d) in r.desired.resources.iter().enumerate() {
                    if let PrimitiveSpec::Certificate(c) = &d.spec {
                        report.certificates.push(c.status(
                            &r.host.name,
                            &d.name,
                            records.of(i),
                            now,
                        ));
                    }
                }
            }
            Err(e) => report.failed.push(HostFailure {
                host: r.host.name.clone(),
                error: e.clone(),
            }),
        }
    }
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
