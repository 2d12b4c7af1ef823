//! `vestibule validate`: the same read and compile as `run`, offline, with every finding
//! printed as `namespace/name: field: message`.

use std::io::Write;
use std::process::ExitCode;

use vestibule_controller::ManifestSource;
use vestibule_translate::compile;

use crate::cli::ValidateArgs;

pub(crate) fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let source = match ManifestSource::open(args.paths.clone()) {
        Ok(source) => source,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let current = source.current();
    let options = match args.compile.options() {
        Ok(options) => options,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let compiled = compile(&current.snapshot, &options);
    for problem in &current.problems {
        writeln!(out, "{problem}")?;
    }
    for diagnostic in &compiled.report.diagnostics {
        writeln!(out, "{diagnostic}")?;
    }
    let errors = compiled.report.errors().count() + current.problems.len();
    let warnings = compiled.report.warnings().count();
    let served = compiled.report.ours().count();
    writeln!(
        err,
        "{} objects, {} Ingresses ({served} served by this controller): {errors} errors, \
         {warnings} warnings",
        current.snapshot.len(),
        current.snapshot.ingresses.len(),
    )?;
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
