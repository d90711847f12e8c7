//! The `plumb` binary: parse arguments, set up logging, run, map the outcome to an exit code.

use clap::Parser;
use plumb::cli::{self, Cli, LogFormat};
use std::io::IsTerminal as _;
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "plumb=info",
        1 => "plumb=debug",
        _ => "plumb=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: journald and log files get plain text.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false);
    match format {
        LogFormat::Human => builder.without_time().init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                cli::EXIT_USAGE
            } else {
                cli::EXIT_OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    init_logging(cli.log_format, cli.verbose);
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Errors quote names, paths and host output: shown escaped, continuation lines
            // indented, so none can pass for a line of plumb's own.
            let message = plumb::secrets::redact(&format!("{e:#}"));
            eprintln!("error: {}", plumb::text::escape_block(&message, "  "));
            cli::EXIT_ERROR
        }
    };
    std::process::exit(code);
}
