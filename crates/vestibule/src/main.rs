//! The `vestibule` binary: command line, logging, and the `run`, `validate`, `check` and
//! `explain` commands.

mod admin;
mod check;
mod cli;
mod cluster;
mod dashboard;
mod explain;
mod logging;
mod metrics;
mod run;
mod validate;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

// A proxy allocates and frees many small, short-lived objects across threads (request
// state, header maps, buffers); mimalloc's thread-local free lists serve that pattern with
// less locking and fragmentation than the system allocator. Its v2 line (the `v2` feature):
// v3 serves the aligned calls Rust makes for every allocation over 1 KiB through a slow
// over-allocating path, which shows in the instructions of every proxied request
// (`bench/README.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => {
            logging::init(args.log_format, &args.log_level).and_then(|()| run::run(*args))
        }
        Command::Validate(args) => validate::validate(*args),
        Command::Check(args) => check::check(*args),
        Command::Explain(args) => explain::explain(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
