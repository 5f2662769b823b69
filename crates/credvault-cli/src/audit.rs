//! `credvault audit ...`: verify and read hash-chained audit logs.
//!
//! A log is given as its directory (segments and `audit.anchor` found inside) or as segment
//! files in order. The audit key comes from `--key @FILE` or `CREDVAULT_AUDIT_KEY`, never as a
//! bare argument.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use credvault_audit::{
    anchor_path, read_event_files, segment_paths, verify_files, write_csv, Action, Anchor,
    AnchorCheck, AuditKey, Query, Timestamp, VerifyOptions,
};
use serde_json::json;

use crate::{Failure, Output};

/// Environment variable holding the audit key (hex or base64) when `--key` is not given.
pub(crate) const KEY_ENV: &str = "CREDVAULT_AUDIT_KEY";

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check every hash, link, checkpoint and the anchor: exit 0 with a summary if intact, exit 1
    /// with the first problem (record number and kind) if not.
    Verify {
        /// A log directory, or its segment files in order. None: the vault's own log, checked
        /// with its key, its anchor and the head its database recorded.
        #[arg(value_name = "FILE|DIR")]
        files: Vec<PathBuf>,
        /// The audit key as @FILE (hex or base64). Default: CREDVAULT_AUDIT_KEY. Without a key
        /// the chain is checked but checkpoint MACs are not.
        #[arg(long, value_name = "@FILE")]
        key: Option<String>,
        /// The anchor file. Default: `audit.anchor` in the log directory, if present. For the
        /// vault's own log: an anchor kept outside the vault (`credvault audit anchor`),
        /// checked in addition; a vault restored from before it fails.
        #[arg(long, value_name = "FILE")]
        anchor: Option<PathBuf>,
    },
    /// Write a checkpoint and print its anchor (one JSON line: log id, record number, hash,
    /// time, MAC under the audit key). Keep it outside the vault (another host, a ticket, a
    /// WORM bucket): `audit verify --anchor FILE` then detects a vault directory restored from
    /// before it, database and log together.
    Anchor,
    /// Print events, filtered; text, JSON Lines (--json) or CSV (--csv).
    Show {
        /// A log directory, or its segment files in order. None: the vault's own log.
        #[arg(value_name = "FILE|DIR")]
        files: Vec<PathBuf>,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this action (created, updated, deleted, accessed, access_denied, ...).
        #[arg(long)]
        action: Option<String>,
        /// Only this credential (id or name).
        #[arg(long)]
        resource: Option<String>,
        /// Only events at or after this time (RFC 3339, or a date YYYY-MM-DD).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only events before this time.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// CSV with a header row instead of text.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
    },
    /// Print a new random audit key (64 hex digits) for a key file.
    Genkey,
}

pub(crate) fn run(
    cmd: AuditCommand,
    vault: &crate::vault::VaultArgs,
    json_out: bool,
) -> Result<Output, Failure> {
    match cmd {
        AuditCommand::Verify { files, key, anchor } if files.is_empty() && key.is_none() => {
            crate::vault::audit_verify(vault, anchor.as_deref())
        }
        AuditCommand::Anchor => crate::vault::audit_anchor(vault),
        AuditCommand::Verify { files, key, anchor } => {
            if files.is_empty() {
                return Err(Failure::usage("--key applies to a log given as FILE|DIR"));
            }
            verify(&files, key.as_deref(), anchor.as_deref())
        }
        AuditCommand::Show {
            mut files,
            tenant,
            action,
            resource,
            since,
            until,
            csv,
        } => {
            let mut q = Query::new();
            q.tenant = tenant;
            q.action = action.map(|a| {
                let Ok(a) = a.parse::<Action>();
                a
            });
            q.resource = resource;
            q.since = since
                .as_deref()
                .map(|t| parse_time("--since", t))
                .transpose()?;
            q.until = until
                .as_deref()
                .map(|t| parse_time("--until", t))
                .transpose()?;
            if files.is_empty() {
                // The vault's own log: opened through the vault, which holds the key of
                // sealed events (and reads a PostgreSQL vault's chain from its database).
                if crate::vault::seals_audit(vault) || crate::vault::in_database(vault) {
                    return crate::vault::audit_show(vault, &q, json_out, csv);
                }
                files.push(crate::vault::audit_dir(vault));
            }
            show(&files, &q, json_out, csv)
        }
        AuditCommand::Genkey => {
            let key = AuditKey::generate()
                .map_err(|e| Failure::new(format!("cannot generate a key: {e}")))?;
            let hex = key.to_hex();
            Ok(Output::Bytes(zeroize::Zeroizing::new(
                format!("{}\n", hex.as_str()).into_bytes(),
            )))
        }
    }
}

fn parse_time(flag: &str, text: &str) -> Result<Timestamp, Failure> {
    text.parse()
        .map_err(|e| Failure::usage(format!("{flag}: {e}")))
}

/// Segment files, and the anchor found beside them when a directory was given.
fn resolve(files: &[PathBuf]) -> Result<(Vec<PathBuf>, Option<PathBuf>), Failure> {
    if let [dir] = files {
        if dir.is_dir() {
            let segments = segment_paths(dir).map_err(|e| {
                Failure::new(format!("cannot read log directory {}: {e}", dir.display()))
            })?;
            if segments.is_empty() {
                return Err(Failure::new(format!(
                    "{} holds no audit log segment",
                    dir.display()
                )));
            }
            let anchor = anchor_path(dir);
            return Ok((segments, anchor.exists().then_some(anchor)));
        }
    }
    for f in files {
        if !f.is_file() {
            return Err(Failure::new(format!("{}: no such file", f.display())));
        }
    }
    Ok((files.to_vec(), None))
}

fn load_key(arg: Option<&str>) -> Result<Option<AuditKey>, Failure> {
    let text = match arg {
        Some(a) => {
            let Some(path) = a.strip_prefix('@') else {
                return Err(Failure::usage(
                    "--key takes @FILE (a key on the command line would end up in shell history)",
                ));
            };
            zeroize::Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| Failure::new(format!("cannot read key file {path}: {e}")))?,
            )
        }
        None => match std::env::var(KEY_ENV) {
            Ok(v) => zeroize::Zeroizing::new(v),
            Err(_) => return Ok(None),
        },
    };
    AuditKey::from_text(&text)
        .map(Some)
        .map_err(|e| Failure::new(e.to_string()))
}

fn verify(files: &[PathBuf], key: Option<&str>, anchor: Option<&Path>) -> Result<Output, Failure> {
    let key = load_key(key)?;
    let (segments, found_anchor) = resolve(files)?;
    let anchor_file = anchor.map(Path::to_path_buf).or(found_anchor);
    let anchor = anchor_file
        .as_deref()
        .map(Anchor::load)
        .transpose()
        .map_err(|e| Failure::new(e.to_string()))?;
    let report = verify_files(
        &segments,
        VerifyOptions {
            key: key.as_ref(),
            anchor: anchor.as_ref(),
        },
    )
    .map_err(|e| Failure::new(format!("cannot read the log: {e}")))?;
    if let Some(p) = &report.problem {
        let file = segments
            .get(p.segment)
            .map_or_else(String::new, |f| f.display().to_string());
        let at = if p.line == 0 {
            "at the end".to_owned()
        } else {
            format!("line {} of {file}", p.line)
        };
        return Err(Failure::new(format!(
            "audit log NOT intact: record {} ({at}): {}: {}; {} records verified before it",
            p.seq, p.kind, p.detail, report.records
        )));
    }
    let anchor_text = match report.anchor {
        AnchorCheck::Authenticated => "anchor matched and authenticated",
        AnchorCheck::Matched => "anchor matched (not authenticated: no key)",
        _ => "no anchor: a log cut at a record boundary would go unnoticed",
    };
    let checkpoints = if key.is_some() {
        format!("{} checkpoints authenticated", report.checkpoints_checked)
    } else {
        format!(
            "{} checkpoints linked (MACs not checked: no key)",
            report.checkpoints_unchecked
        )
    };
    let text = format!(
        "audit log intact: {} records ({} events) in {} segment(s), {checkpoints}, {} recovered crash break(s), {anchor_text}; last record {}\n",
        report.records,
        report.events,
        report.segments,
        report.recovered_breaks,
        report.last_seq.map_or_else(|| "-".into(), |s| s.to_string()),
    );
    let json = json!({
        "intact": true,
        "records": report.records,
        "events": report.events,
        "segments": report.segments,
        "checkpoints_checked": report.checkpoints_checked,
        "checkpoints_unchecked": report.checkpoints_unchecked,
        "recovered_breaks": report.recovered_breaks,
        "anchor": match report.anchor { AnchorCheck::Authenticated => "authenticated", AnchorCheck::Matched => "matched", _ => "none" },
        "log_id": report.log_id,
        "last_seq": report.last_seq,
        "head": report.head,
    });
    Ok(Output::Text { text, json })
}

fn show(files: &[PathBuf], query: &Query, json_out: bool, csv: bool) -> Result<Output, Failure> {
    let (segments, _) = resolve(files)?;
    let events = read_event_files(&segments, query)
        .map_err(|e| Failure::new(format!("cannot read the log: {e}")))?;
    if events.sealed > 0 && events.events.is_empty() {
        return Err(Failure::new(format!(
            "the log's {} event(s) are sealed: show the vault's own log (no FILE) to open them with its master key",
            events.sealed
        )));
    }
    show_events(&events, json_out, csv)
}

/// Prints events read from a log.
pub(crate) fn show_events(
    events: &credvault_audit::Events,
    json_out: bool,
    csv: bool,
) -> Result<Output, Failure> {
    if csv || json_out {
        let mut out = Vec::new();
        let written = if csv {
            write_csv(&events.events, &mut out)
        } else {
            credvault_audit::write_jsonl(&events.events, &mut out)
        };
        written.map_err(|e| Failure::new(format!("cannot format events: {e}")))?;
        return Ok(Output::Bytes(zeroize::Zeroizing::new(out)));
    }
    let mut text = String::new();
    for e in &events.events {
        let ev = &e.event;
        let resource = ev
            .resource
            .name
            .as_deref()
            .or(ev.resource.id.as_deref())
            .unwrap_or("-");
        let env = ev
            .resource
            .environment
            .as_deref()
            .map(|e| format!(" [{e}]"))
            .unwrap_or_default();
        let details = ev
            .details
            .as_ref()
            .and_then(|d| serde_json::to_string(d).ok())
            .map(|d| format!(" {d}"))
            .unwrap_or_default();
        // Every stored string is escaped: a name, an actor or a detail holding terminal
        // escapes must not rewrite what the reader sees (JSON output keeps JSON escaping).
        use crate::term::escape as esc;
        text.push_str(&format!(
            "{:>6} {} {} {} {} {}{} {}{}\n",
            e.seq,
            ev.time,
            esc(&ev.tenant),
            esc(&ev.actor),
            esc(ev.action.as_str()),
            esc(resource),
            esc(&env),
            ev.outcome.as_str(),
            esc(&details)
        ));
    }
    if events.unreadable > 0 {
        text.push_str(&format!(
            "({} unreadable line(s) skipped; run `credvault audit verify`)\n",
            events.unreadable
        ));
    }
    Ok(Output::Text {
        text,
        json: serde_json::Value::Null,
    })
}
