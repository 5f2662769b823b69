//! `credvault dlp ...`: mask known secrets in a stream; scan text for sensitive data.
//!
//! `mask` streams: it writes masked output as it reads stdin (with bounded memory), so a failure
//! after the first chunk leaves partial output on stdout. Secrets come from files (`@FILE`, or
//! `--secrets-file` with one per line), never from argv.

use std::io::Read;
use std::path::Path;

use clap::Subcommand;
use credvault_dlp::{Action, MaskerBuilder, Scanner};
use serde_json::json;

use crate::{Failure, Output};

/// Most stdin `scan` reads.
const MAX_SCAN_INPUT: u64 = 64 << 20;

#[derive(Debug, Subcommand)]
pub(crate) enum DlpCommand {
    /// Copy stdin to stdout with every known secret (and its base64, hex, percent and JSON
    /// forms) replaced by `[cv:<name>]`.
    Mask {
        /// A file holding one secret (trailing newline ignored); named by the file name.
        /// Repeatable.
        #[arg(long = "secret", value_name = "@FILE")]
        secrets: Vec<String>,
        /// A file of secrets, one per line; line N is named `<file name>/N`.
        #[arg(long, value_name = "FILE")]
        secrets_file: Option<String>,
        /// Mask short or common values too (otherwise they are refused: they would hit ordinary
        /// text everywhere).
        #[arg(long)]
        force: bool,
    },
    /// Print the findings of the built-in detectors on stdin; exit 1 if a `block` detector
    /// fired.
    Scan {
        /// Make this detector block (repeatable).
        #[arg(long = "block", value_name = "DETECTOR")]
        block: Vec<String>,
        /// Only report this detector (repeatable): warn instead of redact or block.
        #[arg(long = "warn", value_name = "DETECTOR")]
        warn: Vec<String>,
    },
}

pub(crate) fn run(cmd: DlpCommand) -> Result<Output, Failure> {
    match cmd {
        DlpCommand::Mask {
            secrets,
            secrets_file,
            force,
        } => mask(&secrets, secrets_file.as_deref(), force),
        DlpCommand::Scan { block, warn } => scan(&block, &warn),
    }
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().replace(['[', ']'], "_"))
        .unwrap_or_else(|| "secret".into())
}

fn read_file(path: &str) -> Result<zeroize::Zeroizing<String>, Failure> {
    std::fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| Failure::new(format!("cannot read {path}: {e}")))
}

fn mask(secrets: &[String], secrets_file: Option<&str>, force: bool) -> Result<Output, Failure> {
    let mut b = MaskerBuilder::new();
    let mut add = |name: String, value: &str| -> Result<(), Failure> {
        let r = if force {
            b.add_forced(&name, value)
        } else {
            b.add(&name, value)
        };
        r.map_err(|e| Failure::new(format!("secret {name}: {e} (--force masks it anyway)")))
    };
    for s in secrets {
        let Some(path) = s.strip_prefix('@') else {
            return Err(Failure::usage(
                "--secret takes @FILE (a secret on the command line would end up in shell history)",
            ));
        };
        let text = read_file(path)?;
        let value = text.strip_suffix('\n').unwrap_or(&text);
        let value = value.strip_suffix('\r').unwrap_or(value);
        add(file_name(path), value)?;
    }
    if let Some(path) = secrets_file {
        let text = read_file(path)?;
        let base = file_name(path);
        for (i, line) in text.lines().enumerate() {
            if !line.is_empty() {
                add(format!("{base}/{}", i + 1), line)?;
            }
        }
    }
    if secrets.is_empty() && secrets_file.is_none() {
        return Err(Failure::usage(
            "give at least one --secret @FILE or --secrets-file FILE",
        ));
    }
    let masker = b.build().map_err(|e| Failure::new(e.to_string()))?;
    crate::process::pump(std::io::stdin().lock(), std::io::stdout().lock(), &masker)
        .map_err(|e| e.failure("stdin", "stdout"))?;
    Ok(Output::Bytes(zeroize::Zeroizing::new(Vec::new())))
}

fn scan(block: &[String], warn: &[String]) -> Result<Output, Failure> {
    let mut scanner = Scanner::builtin();
    for (names, action) in [(block, Action::Block), (warn, Action::Warn)] {
        for name in names {
            scanner = scanner
                .with_action(name, action)
                .map_err(|e| Failure::usage(e.to_string()))?;
        }
    }
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_SCAN_INPUT + 1)
        .read_to_end(&mut input)
        .map_err(|e| Failure::new(format!("cannot read stdin: {e}")))?;
    if input.len() as u64 > MAX_SCAN_INPUT {
        return Err(Failure::new(format!(
            "input larger than {MAX_SCAN_INPUT} bytes"
        )));
    }
    let findings = scanner.scan(&input);
    let blocked = findings.iter().any(|f| f.action == Action::Block);
    let mut text = String::new();
    for f in &findings {
        let action = match f.action {
            Action::Redact => "redact",
            Action::Block => "block",
            _ => "warn",
        };
        text.push_str(&format!(
            "{}\t{}..{}\t{action}\n",
            f.detector, f.range.start, f.range.end
        ));
    }
    let json = json!({ "blocked": blocked, "findings": findings });
    Ok(Output::Report {
        text,
        json,
        code: u8::from(blocked),
    })
}
