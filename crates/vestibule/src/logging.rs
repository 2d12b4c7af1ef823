//! Log output: readable text or one JSON object per line, on stderr.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Libraries that log what clients do wrong, once per connection: at their own levels, any
/// client could fill the log (and the disk) by misbehaving. Vestibule logs those events
/// itself at `debug`. A filter that names the library keeps its own level.
const QUIET: &[&str] = &["rustls=error"];

/// `RUST_LOG`, when set, wins over `--log-level`, as Rust developers expect.
pub(crate) fn init(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let (directives, origin) = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => (env, "RUST_LOG".to_owned()),
        _ => (level.to_owned(), format!("--log-level {level:?}")),
    };
    let filter = EnvFilter::try_new(with_quiet_libraries(&directives))
        .with_context(|| format!("parsing {origin}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("setting up logging: {e}"))
}

fn with_quiet_libraries(directives: &str) -> String {
    let mut all = directives.to_owned();
    for quiet in QUIET {
        let target = quiet.split('=').next().unwrap_or(quiet);
        let named = directives
            .split(',')
            .any(|d| d.trim().split(['=', '[']).next() == Some(target));
        if !named {
            if !all.is_empty() {
                all.push(',');
            }
            all.push_str(quiet);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatty_libraries_are_quiet_unless_named() {
        assert_eq!(with_quiet_libraries("info"), "info,rustls=error");
        assert_eq!(
            with_quiet_libraries("info,rustls=debug"),
            "info,rustls=debug"
        );
        assert_eq!(
            with_quiet_libraries("warn, rustls[x]=trace"),
            "warn, rustls[x]=trace"
        );
        assert_eq!(with_quiet_libraries(""), "rustls=error");
    }
}
