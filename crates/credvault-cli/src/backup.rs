//! `credvault backup` and `credvault restore`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use credvault_store::backup::{BackupLimits, BackupSummary};
use credvault_store::Vault;
use serde_json::json;

use crate::vault::{fail, opts, with_vault, VaultArgs};
use crate::{Failure, Output};

/// `credvault backup` options.
#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// Where to write the backup: a new file (owner-only; an existing file is never
    /// overwritten), or `-` for stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    out: PathBuf,
}

/// `credvault restore` options.
#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The backup file (`-` for stdin).
    #[arg(long = "from", value_name = "FILE")]
    from: PathBuf,
    /// Copy the vault's keys (`master.key`, `audit.key`) from this directory — where the keys
    /// are kept, or the old vault — into the new vault's directory first. Without it they
    /// must be there already (a backup holds no key).
    #[arg(long, value_name = "DIR")]
    keys_from: Option<PathBuf>,
}

fn summary_json(s: &BackupSummary) -> serde_json::Value {
    json!({
        "source": s.source,
        "created_at": s.created_at,
        "tenants": s.tenants,
        "data_keys": s.data_keys,
        "credentials": s.credentials,
        "audit_last_seq": s.audit_last_seq,
        "audit_log_id": s.audit_log_id,
        "bytes": s.bytes,
    })
}

fn summary_text(s: &BackupSummary) -> String {
    format!(
        "{} tenant(s), {} data key(s) (wrapped), {} credential(s) (sealed), audit chain to record {} ({} bytes, from {})",
        s.tenants, s.data_keys, s.credentials, s.audit_last_seq, s.bytes, s.source
    )
}

pub(crate) fn backup(args: &VaultArgs, a: BackupArgs) -> Result<Output, Failure> {
    let to_stdout = a.out.as_os_str() == "-";
    let dir = args.dir();
    let summary = with_vault(args, |v| {
        if to_stdout {
            let mut out = std::io::stdout().lock();
            return v.backup(&mut out).map_err(fail);
        }
        // Written beside its destination, then moved there only if nothing is there yet.
        let parent = match a.out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".credvault-backup-")
            .tempfile_in(&parent)
            .map_err(|e| Failure::new(format!("backup {}: {e}", a.out.display())))?;
        let s = v.backup(tmp.as_file_mut()).map_err(fail)?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Failure::new(format!("backup {}: {e}", a.out.display())))?;
        tmp.persist_noclobber(&a.out)
            .map_err(|e| Failure::new(format!("backup {}: {}", a.out.display(), e.error)))?;
        Ok(s)
    })?;
    let text = format!(
        "backed up vault {}: {}\n  to {}\n  it holds no key: keep the vault's master key and audit key apart from it\n",
        dir.display(),
        summary_text(&summary),
        if to_stdout { "stdout".into() } else { a.out.display().to_string() },
    );
    if to_stdout {
        // Stdout carries the backup; the report goes to stderr.
        let _ = std::io::stderr().write_all(text.as_bytes());
        return Ok(Output::Exit(0));
    }
    let mut j = summary_json(&summary);
    j["file"] = json!(a.out.display().to_string());
    Ok(Output::Text { text, json: j })
}

/// Reads the backup, refusing more than the limit before reading it all.
fn read_backup(from: &Path, limits: &BackupLimits) -> Result<Vec<u8>, Failure> {
    let err = |e: std::io::Error| Failure::new(format!("backup {}: {e}", from.display()));
    let mut bytes = Vec::new();
    let reader: Box<dyn Read> = if from.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(from).map_err(err)?)
    };
    reader
        .take(limits.max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(err)?;
    Ok(bytes)
}

/// Copies the key files found in `from` into `dir` (owner-only); a key already there must be
/// the same.
fn copy_keys(from: &Path, dir: &Path) -> Result<Vec<&'static str>, Failure> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .map_err(|e| Failure::new(format!("vault directory {}: {e}", dir.display())))?;
    let mut copied = Vec::new();
    for name in ["master.key", "audit.key", crate::master::URI_FILE] {
        let src = from.join(name);
        if !src.exists() {
            continue;
        }
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(&src).map_err(|e| Failure::new(format!("{}: {e}", src.display())))?,
        );
        let dst = dir.join(name);
        if dst.exists() {
            let there = zeroize::Zeroizing::new(
                std::fs::read(&dst).map_err(|e| Failure::new(format!("{}: {e}", dst.display())))?,
            );
            if *there != *bytes {
                return Err(Failure::new(format!(
                    "{} exists already and is another key; restore into a new directory",
                    dst.display()
                )));
            }
            continue;
        }
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        o.open(&dst)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
            .map_err(|e| Failure::new(format!("{}: {e}", dst.display())))?;
        copied.push(name);
    }
    Ok(copied)
}

pub(crate) fn restore(args: &VaultArgs, a: RestoreArgs) -> Result<Output, Failure> {
    let dir = args.dir();
    let limits = BackupLimits::default();
    let bytes = read_backup(&a.from, &limits)?;
    let copied = match &a.keys_from {
        Some(from) => copy_keys(from, &dir)?,
        None => Vec::new(),
    };
    let (v, r) = Vault::restore(&dir, &bytes, &limits, opts(&dir)?, &args.actor()).map_err(fail)?;
    v.close().map_err(fail)?;
    let text = format!(
        "restored vault {}: {}\n  verified: the backup authenticated under the audit key, its audit chain and the restored vault verify\n  audit chain continues: record {} is vault_restored\n  data keys rotated in {} tenant(s) (their usage counters were the backup's){}\n",
        dir.display(),
        summary_text(&r.backup),
        r.audit_seq,
        r.rotated_tenants,
        if copied.is_empty() {
            String::new()
        } else {
            format!("\n  keys copied from {}: {}", a.keys_from.as_deref().unwrap_or(Path::new("")).display(), copied.join(", "))
        }
    );
    let mut j = summary_json(&r.backup);
    j["vault"] = json!(dir.display().to_string());
    j["audit_seq"] = json!(r.audit_seq);
    j["rotated_tenants"] = json!(r.rotated_tenants);
    Ok(Output::Text { text, json: j })
}
