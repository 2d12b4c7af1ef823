//! `vestibule check`: the migration report.

use std::process::ExitCode;

use crate::cli::CheckArgs;

pub(crate) fn check(_args: CheckArgs) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::from(2))
}
