//! `vestibule check`: the migration report. Reads the objects (files, or the cluster with list
//! calls only), compiles them as the installation being left would have them served, has
//! `vestibule_translate::check` judge each Ingress, and prints the result as a table,
//! Markdown or JSON. Exit status: 0 when every Ingress is served the same or with named
//! differences, 1 when one needs work or is refused, 2 when the input cannot be read.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use vestibule_controller::ManifestSource;
use vestibule_controller::kubernetes::{self, ListError, Scope};
use vestibule_translate::check::{
    self, ClusterFinding, ConfigMapCheck, Finding, IngressCheck, KeyStatus, Level, Report,
    Settings, Source,
};
use vestibule_translate::{Options, Severity, Snapshot, compile};

use crate::cli::{CheckArgs, CheckOutput};

/// Usage and read errors: the input could not be read whole, so there is no report.
const READ_ERROR: u8 = 2;

pub(crate) fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut options = Options {
        controller_class: args.controller_class.clone(),
        ingress_class: args.ingress_class.clone(),
        watch_ingress_without_class: args.watch_ingress_without_class,
        watch_namespaces: args.watch_namespaces.clone(),
        enable_ssl_passthrough: args.enable_ssl_passthrough,
        ..Options::default()
    };
    let (mut snapshot, source, mut notes) = match read(&args) {
        Ok(read) => read,
        Err(e) => return read_error(&e),
    };
    notes.extend(check::assume_class(&mut snapshot, &options));
    let config_map = match &args.nginx_configmap {
        None => None,
        Some((ns, name)) => match check::find_config_map(&snapshot, ns, name) {
            Some(found) => Some(found.clone()),
            None => {
                let r#where = match &source {
                    Source::Files { .. } => "in the files read",
                    Source::Cluster => "in the cluster",
                };
                return read_error(&anyhow!(
                    "ConfigMap {ns}/{name} (--nginx-configmap) is not {where}"
                ));
            }
        },
    };
    if let Some(config_map) = &config_map {
        notes.extend(check::apply_config_map(config_map, &mut options));
    }
    let compiled = compile(&snapshot, &options);
    let settings = Settings {
        source: &source,
        read_secrets: args.read_secrets,
        nginx_configmap: config_map.as_ref(),
    };
    let mut report = check::check(&snapshot, &options, &compiled, &settings);
    report.cluster.extend(notes);
    report.cluster.sort();
    let mut out = std::io::stdout().lock();
    match args.output {
        CheckOutput::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        CheckOutput::Markdown => out.write_all(markdown(&report).as_bytes())?,
        CheckOutput::Table => {
            let paint = Paint::for_stdout();
            out.write_all(table(&report, paint, width()).as_bytes())?;
        }
    }
    out.flush()?;
    Ok(ExitCode::from(u8::from(report.needs_action())))
}

fn read_error(e: &anyhow::Error) -> anyhow::Result<ExitCode> {
    let mut err = std::io::stderr().lock();
    for line in format!("{e:#}").lines() {
        writeln!(err, "error: {line}")?;
    }
    Ok(ExitCode::from(READ_ERROR))
}

/// The objects, where they came from, and notes about the input itself.
fn read(args: &CheckArgs) -> anyhow::Result<(Snapshot, Source, Vec<ClusterFinding>)> {
    if args.paths.is_empty() {
        let snapshot = read_cluster(args)?;
        return Ok((snapshot, Source::Cluster, Vec::new()));
    }
    // Errors of the sources name their causes in their own text, so only that text is kept
    // (anyhow's chain would repeat each cause).
    let source = ManifestSource::open(args.paths.clone()).map_err(|e| anyhow!("{e}"))?;
    let current = source.current();
    // An object defined in two files is read once (the first file wins): the report is
    // whole, so it is a note; any other problem left something out, and the report with it.
    let (twice, unread): (Vec<_>, Vec<_>) = current
        .problems
        .into_iter()
        .partition(|p| p.message.contains(" is also defined in "));
    if !unread.is_empty() {
        let lines: Vec<String> = unread.iter().map(ToString::to_string).collect();
        bail!("cannot read the input:\n{}", lines.join("\n"));
    }
    let mut snapshot = current.snapshot;
    if !args.read_secrets {
        // Not checked, so not kept: a dump may hold private keys the user never meant to
        // hand over.
        snapshot.secrets.clear();
    }
    let notes = twice
        .into_iter()
        .map(|p| ClusterFinding {
            severity: Severity::Warning,
            source: p.source,
            message: p.message,
        })
        .collect();
    let paths = args.paths.iter().map(|p| p.display().to_string()).collect();
    Ok((snapshot, Source::Files { paths }, notes))
}

/// One list of each kind; the ConfigMap's namespace too when `--watch-namespace` leaves it
/// out.
fn read_cluster(args: &CheckArgs) -> anyhow::Result<Snapshot> {
    // One provider for the process, as `run` installs it; an error means one is already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let client = kubernetes::client(args.kubeconfig.as_deref())
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let scope = Scope {
            namespaces: args.watch_namespaces.clone(),
            ..Scope::default()
        };
        let mut snapshot = kubernetes::list_once(&client, &scope, args.read_secrets)
            .await
            .map_err(refused)?;
        if let Some((ns, _)) = &args.nginx_configmap
            && !scope.namespaces.is_empty()
            && !scope.namespaces.contains(ns)
        {
            let own = Scope {
                namespaces: vec![ns.clone()],
                ..Scope::default()
            };
            let listed = kubernetes::list_once(&client, &own, false)
                .await
                .map_err(refused)?;
            snapshot.config_maps.extend(listed.config_maps);
        }
        Ok(snapshot)
    })
}

fn refused(e: ListError) -> anyhow::Error {
    if e.is_forbidden() {
        anyhow!(
            "the API server refused to list {kind} objects in {scope} (403 Forbidden): the \
             credentials need the list verb on {kind} there; --watch-namespace narrows what \
             is listed\n{e}",
            kind = e.kind,
            scope = e.scope,
        )
    } else {
        anyhow!("{e}")
    }
}

/// Terminal colours: ANSI codes on a terminal only, and never with `NO_COLOR` set.
#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn for_stdout() -> Paint {
        Paint(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
    }

    fn level(self, level: Level) -> String {
        let code = match level {
            Level::Same => "32",
            Level::Differs => "33",
            Level::NeedsWork => "31",
            Level::Refused => "35",
        };
        self.code(code, level.label())
    }

    fn bold(self, text: &str) -> String {
        self.code("1", text)
    }

    fn code(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// The width to wrap findings at: `COLUMNS`, else 100.
fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|w| *w >= 40)
        .unwrap_or(100)
}

/// `text` broken into lines of at most `width` columns (longer words alone on a line), each
/// after `indent`.
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let room = width.saturating_sub(indent.chars().count()).max(20);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > room {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines.iter().map(|l| format!("{indent}{l}\n")).collect()
}

fn summary_line(report: &Report) -> String {
    let s = &report.summary;
    let mut line = format!(
        "{} Ingress{} of class {} ({}): {} same, {} differ{}, {} need{} work, {} refused",
        s.ingresses,
        if s.ingresses == 1 { "" } else { "es" },
        report.input.ingress_class,
        report.input.controller_class,
        s.same,
        s.differs,
        if s.differs == 1 { "s" } else { "" },
        s.needs_work,
        if s.needs_work == 1 { "s" } else { "" },
        s.refused,
    );
    if s.skipped > 0 {
        let _ = write!(line, "; {} of other classes not checked", s.skipped);
    }
    line
}

fn table(report: &Report, paint: Paint, width: usize) -> String {
    let mut out = String::new();
    let name_width = report
        .ingresses
        .iter()
        .map(|i| i.namespace.len() + 1 + i.name.len())
        .chain([7])
        .max()
        .unwrap_or(7);
    let _ = writeln!(
        out,
        "{}",
        paint.bold(&format!(
            "{:name_width$}  {:10}  FINDINGS",
            "INGRESS", "VERDICT"
        ))
    );
    for ingress in &report.ingresses {
        let name = format!("{}/{}", ingress.namespace, ingress.name);
        // Padded before painting: escape codes take no columns.
        let verdict = format!("{:10}", ingress.verdict.label());
        let verdict = verdict.replace(ingress.verdict.label(), &paint.level(ingress.verdict));
        let _ = writeln!(out, "{name:name_width$}  {verdict}  {}", counts(ingress));
    }
    for ingress in report.ingresses.iter().filter(|i| !i.findings.is_empty()) {
        let title = format!("{}/{}", ingress.namespace, ingress.name);
        let _ = writeln!(
            out,
            "\n{}: {}",
            paint.bold(&title),
            paint.level(ingress.verdict)
        );
        for finding in &ingress.findings {
            out.push_str(&table_finding(finding, paint, width));
        }
    }
    if let Some(config_map) = &report.configmap {
        out.push_str(&table_config_map(config_map, paint, width));
    }
    if !report.cluster.is_empty() {
        let _ = writeln!(out, "\n{}", paint.bold("Input"));
        for note in &report.cluster {
            let text = format!(
                "{}: {}: {}",
                severity(note.severity),
                note.source,
                note.message
            );
            out.push_str(&wrap(&text, "  ", width));
        }
    }
    let _ = writeln!(out, "\n{}", summary_line(report));
    out
}

/// `2 differences, 1 note`: what an Ingress's findings are, in a few words.
fn counts(ingress: &IngressCheck) -> String {
    let notes = ingress
        .findings
        .iter()
        .filter(|f| f.level == Level::Same)
        .count();
    let others = ingress.findings.len() - notes;
    let mut parts = Vec::new();
    if others > 0 {
        parts.push(format!(
            "{others} finding{}",
            if others == 1 { "" } else { "s" }
        ));
    }
    if notes > 0 {
        parts.push(format!("{notes} note{}", if notes == 1 { "" } else { "s" }));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

fn table_finding(finding: &Finding, paint: Paint, width: usize) -> String {
    let label = match finding.level {
        Level::Same => paint.code("2", "note"),
        level => paint.level(level),
    };
    let mut out = format!("  {label} [{}] {}\n", code(finding), finding.field);
    out.push_str(&wrap(&finding.message, "      ", width));
    if let Some(fix) = &finding.fix {
        out.push_str(&wrap(&format!("fix: {fix}"), "      ", width));
    }
    out
}

fn code(finding: &Finding) -> String {
    serde_json::to_value(finding.code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn status(status: KeyStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Error => "error",
    }
}

fn table_config_map(config_map: &ConfigMapCheck, paint: Paint, width: usize) -> String {
    let mut out = format!(
        "\n{}\n",
        paint.bold(&format!(
            "ConfigMap {}/{}: key, ingress-nginx's meaning, Vestibule",
            config_map.namespace, config_map.name
        ))
    );
    for key in &config_map.keys {
        let _ = writeln!(
            out,
            "  {}: {:?} [{}]",
            key.key,
            key.value,
            status(key.status)
        );
        let mut text = format!("ingress-nginx {}.", key.meaning);
        if let Some(flag) = &key.flag {
            let _ = write!(text, " Vestibule: {flag}.");
        }
        if let Some(note) = &key.note {
            let _ = write!(text, " {}.", sentence(note));
        }
        out.push_str(&wrap(&text, "      ", width));
    }
    out
}

/// `text` with a capital first letter, to start a sentence; names that are written in lower
/// case (ingress-nginx) stay so.
fn sentence(text: &str) -> String {
    if text.starts_with("ingress-nginx") {
        return text.to_owned();
    }
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Text for a Markdown table cell: one line, `|` escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// A Markdown code span that survives the text it holds.
fn span(text: &str) -> String {
    format!("`{}`", cell(&text.replace('`', "'")))
}

fn markdown(report: &Report) -> String {
    let mut out = String::from("# Vestibule migration check\n\n");
    let _ = writeln!(out, "{}.\n", summary_line(report));
    if !report.ingresses.is_empty() {
        out.push_str("| Ingress | Verdict | Findings |\n|---|---|---|\n");
        for ingress in &report.ingresses {
            let name = format!("{}/{}", ingress.namespace, ingress.name);
            let _ = writeln!(
                out,
                "| {} | **{}** | {} |",
                span(&name),
                ingress.verdict.label(),
                counts(ingress)
            );
        }
    }
    for ingress in report.ingresses.iter().filter(|i| !i.findings.is_empty()) {
        let name = format!("{}/{}", ingress.namespace, ingress.name);
        let _ = writeln!(out, "\n## {}: {}\n", span(&name), ingress.verdict.label());
        out.push_str("| Level | Code | Field | Finding | Fix |\n|---|---|---|---|---|\n");
        for f in &ingress.findings {
            let level = match f.level {
                Level::Same => "note",
                level => level.label(),
            };
            let _ = writeln!(
                out,
                "| {level} | {} | {} | {} | {} |",
                span(&code(f)),
                span(&f.field),
                cell(&f.message),
                cell(f.fix.as_deref().unwrap_or(""))
            );
        }
    }
    if let Some(config_map) = &report.configmap {
        markdown_config_map(&mut out, config_map);
    }
    if !report.cluster.is_empty() {
        out.push_str("\n## Input\n\n");
        for note in &report.cluster {
            let _ = writeln!(
                out,
                "- {}: {}: {}",
                severity(note.severity),
                span(&note.source),
                cell(&note.message)
            );
        }
    }
    out
}

fn markdown_config_map(out: &mut String, config_map: &ConfigMapCheck) {
    let name = format!("{}/{}", config_map.namespace, config_map.name);
    let _ = writeln!(out, "\n## ConfigMap {}\n", span(&name));
    out.push_str("| Key | Value | Status | ingress-nginx | Vestibule | Note |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for key in &config_map.keys {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            span(&key.key),
            span(&key.value),
            status(key.status),
            cell(&key.meaning),
            key.flag.as_deref().map(span).unwrap_or_default(),
            cell(key.note.as_deref().unwrap_or("")),
        );
    }
}
