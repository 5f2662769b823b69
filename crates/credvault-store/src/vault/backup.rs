//! [`Vault::backup`] and [`Vault::restore`] (the format is in [`crate::backup`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use credvault_audit::{segment_path, segment_paths, AuditKey, AuditLog, LogConfig, VerifyOptions};
use zeroize::Zeroizing;

use super::{
    create_private_dir, find_record_hash_in, read_audit_key, verify_vault_audit, verr,
    write_private, Vault, VaultAudit, VaultOptions,
};
use crate::backup::{BackupLimits, BackupSummary, ChainEnds, Snapshot};
use crate::error::StoreError;
use crate::sqlite::SqliteStorage;
use crate::storage::{AuditHead, Storage};

/// The marker of a restore that has not finished: while it is in a directory, the vault
/// there is not opened, and the next restore into it starts over.
const RESTORING: &str = ".restore-in-progress";

/// Where a restore builds the database before it becomes `vault.db`.
const RESTORING_DB: &str = ".vault.db.restore";

/// What [`Vault::restore`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restored {
    /// What the backup held.
    pub backup: BackupSummary,
    /// The audit record that marks the restore (`vault_restored`).
    pub audit_seq: u64,
    /// Tenants whose data key was rotated after the restore (each one: data-key usage
    /// counters went back to the backup's time, so no key sealed before the backup seals
    /// again).
    pub rotated_tenants: usize,
}

/// Both write locks of a SQLite vault (its database's and its audit log's), held while it is
/// read: nothing is written to it meanwhile. Released when dropped.
pub(super) struct SqliteLocks {
    guard: rusqlite::Connection,
    _lock: credvault_audit::LogLock,
}

impl Drop for SqliteLocks {
    fn drop(&mut self) {
        // The log's lock goes with `_lock`.
        let _ = self.guard.execute_batch("ROLLBACK");
    }
}

impl Vault {
    /// Takes both write locks of the SQLite vault in `dir`.
    pub(super) fn lock_sqlite(
        dir: &Path,
        options: &VaultOptions,
    ) -> Result<SqliteLocks, StoreError> {
        let db_file = Self::db_path(dir);
        let guard =
            rusqlite::Connection::open(&db_file).map_err(|e| verr("database", &db_file, e))?;
        guard
            .busy_timeout(options.lock_timeout)
            .and_then(|()| guard.execute_batch("BEGIN IMMEDIATE"))
            .map_err(|_| StoreError::Busy {
                resource: "database",
            })?;
        let audit_dir = Self::audit_dir(dir);
        let lock = credvault_audit::LogLock::acquire(&audit_dir, options.lock_timeout)
            .map_err(|e| super::audit_log_error(e, |e| verr("audit log", &audit_dir, e)))?;
        Ok(SqliteLocks { guard, _lock: lock })
    }

    /// The SQLite vault in `dir` as it is (its locks must be held: [`Self::lock_sqlite`]),
    /// checked whole first; with the number of audit records.
    pub(super) fn sqlite_snapshot(
        dir: &Path,
        options: &VaultOptions,
        _locks: &SqliteLocks,
    ) -> Result<(Snapshot, u64), StoreError> {
        let db_file = Self::db_path(dir);
        let audit_dir = Self::audit_dir(dir);
        let source = SqliteStorage::open(&db_file, options.sqlite)?;
        if !source.records_authenticated()? || !source.heads_authenticated()? {
            return Err(verr(
                "vault",
                dir,
                "is from before record MACs or head tags: open it once with this version first",
            ));
        }
        let audit_key = read_audit_key(dir)?;
        let check = verify_vault_audit(dir, &audit_key, source.audit_head()?, None)?;
        if !check.is_intact() {
            return Err(verr(
                "audit log",
                &audit_dir,
                "does not verify (run `credvault audit verify`); fix it first",
            ));
        }
        let report = check.report;
        let (Some(log_id), Some(last_seq), Some(head_hex), None) = (
            report.log_id.clone(),
            report.last_seq,
            report.head.clone(),
            &report.problem,
        ) else {
            return Err(verr(
                "audit log",
                &audit_dir,
                "does not verify; fix it first",
            ));
        };
        let mut head = [0u8; 32];
        hex::decode_to_slice(&head_hex, &mut head)
            .map_err(|_| verr("audit log", &audit_dir, "its head is not hex"))?;
        let paths = segment_paths(&audit_dir).map_err(|e| verr("audit log", &audit_dir, e))?;
        let audit_segments = paths
            .iter()
            .map(|p| std::fs::read(p).map_err(|e| verr("audit log", p, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let genesis = {
            let segs: Vec<&[u8]> = audit_segments.iter().map(Vec::as_slice).collect();
            find_record_hash_in(&segs, 0)
                .ok_or_else(|| verr("audit log", &audit_dir, "has no genesis record"))?
        };
        let tenants = source.tenants()?;
        let mut keys = Vec::new();
        let mut credentials = Vec::new();
        for t in &tenants {
            keys.extend(source.data_keys(&t.id)?);
            credentials.extend(source.credentials(&t.id, &crate::storage::ListFilter::new())?);
        }
        let snap = Snapshot {
            source: "sqlite".into(),
            created_at: crate::backup::now_ms(),
            tenants,
            keys,
            credentials,
            one_time: source.one_time_state()?,
            records_authenticated: true,
            heads_authenticated: true,
            audit_segments,
            chain: ChainEnds {
                log_id,
                genesis,
                last_seq,
                head,
            },
            sealing_key: None,
            types: BTreeMap::new(),
        };
        Ok((snap, report.records))
    }

    /// The vault's own files a backup carries: the wrapped audit sealing key and the
    /// credential types.
    fn add_files(dir: &Path, snap: &mut Snapshot) -> Result<(), StoreError> {
        let p = Self::audit_sealing_key_path(dir);
        if p.exists() {
            let text = std::fs::read_to_string(&p).map_err(|e| verr("audit sealing key", &p, e))?;
            snap.sealing_key = Some(text.trim().to_owned());
        }
        let tdir = Self::types_dir(dir);
        if tdir.is_dir() {
            for entry in std::fs::read_dir(&tdir).map_err(|e| verr("types directory", &tdir, e))? {
                let path = entry.map_err(|e| verr("types directory", &tdir, e))?.path();
                if path.extension().is_some_and(|x| x == "json") {
                    let name = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .ok_or_else(|| verr("credential type", &path, "name is not UTF-8"))?
                        .to_owned();
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| verr("credential type", &path, e))?;
                    snap.types.insert(name, text);
                }
            }
        }
        Ok(())
    }

    /// Writes a backup of the whole vault to `out`: a consistent snapshot of every row
    /// (verbatim: nothing is decrypted) and of the whole audit chain, with the wrapped audit
    /// sealing key and the vault's credential types, authenticated under the audit key. It
    /// never holds a key: restoring needs the master key and the audit key
    /// ([`restore`](Self::restore)).
    ///
    /// A SQLite vault is read under both of its write locks (other processes' writes wait
    /// for it, up to their lock timeout) and verified first; a PostgreSQL vault is read in one
    /// repeatable-read transaction (writers do not wait).
    ///
    /// # Errors
    /// [`StoreError::Vault`] if the vault does not verify or `out` fails;
    /// [`StoreError::Busy`]; [`StoreError::Storage`].
    pub fn backup(&self, out: &mut dyn std::io::Write) -> Result<BackupSummary, StoreError> {
        let mut snap = match &self.audit {
            VaultAudit::File(_) => {
                let locks = Self::lock_sqlite(&self.dir, &self.options)?;
                let (snap, _) = Self::sqlite_snapshot(&self.dir, &self.options, &locks)?;
                snap
            }
            #[cfg(feature = "postgres")]
            VaultAudit::Database(pg) => pg.snapshot()?,
        };
        Self::add_files(&self.dir, &mut snap)?;
        let bytes = snap.encode(&self.audit_key);
        out.write_all(&bytes)
            .and_then(|()| out.flush())
            .map_err(|e| verr("backup", Path::new("<output>"), e))?;
        Ok(snap.summary(bytes.len() as u64))
    }

    /// Makes a SQLite vault in `dir` from a backup, verified before anything is written and
    /// again once it is: the backup must authenticate under the audit key, its audit chain
    /// must verify and end where the backup says, the master key must open its data keys,
    /// and the restored vault must verify whole ([`verify`](Self::verify)). The chain
    /// continues from the backup's last record with a `vault_restored` record; then each
    /// tenant's data key is rotated (usage counters went back to the backup's time).
    ///
    /// A backup holds no key: `dir` must hold the vault's audit key (`audit.key`) and its
    /// master key must be at hand as for [`open`](Self::open) (`master.key` in `dir`, the
    /// environment or a provider). A PostgreSQL vault's backup restores as SQLite: move it
    /// back with [`migrate_to_postgres`](Self::migrate_to_postgres).
    ///
    /// Killed at any point, run it again: it starts over (the directory is marked until it
    /// finishes, and a marked vault is not opened).
    ///
    /// # Errors
    /// [`StoreError::Vault`] if `dir` holds a vault or lacks the audit key, the master key
    /// is wrong, or the restored vault does not verify; [`StoreError::Backup`] if the backup
    /// is malformed or does not authenticate; [`StoreError::Storage`].
    pub fn restore(
        dir: &Path,
        backup: &[u8],
        limits: &BackupLimits,
        options: VaultOptions,
        actor: &str,
    ) -> Result<(Self, Restored), StoreError> {
        let marker = dir.join(RESTORING);
        if Self::exists(dir) && !marker.exists() {
            return Err(verr(
                "vault",
                dir,
                "already holds a vault; restore into a new directory",
            ));
        }
        let akp = Self::audit_key_path(dir);
        if !akp.exists() {
            return Err(verr(
                "audit key",
                &akp,
                "is missing: a backup holds no key; put the vault's audit.key (and master.key, unless the master key comes from elsewhere) in the directory first",
            ));
        }
        let key = read_audit_key(dir)?;
        let snap = crate::backup::open(backup, &key, limits)?;
        check_chain(&snap, &key)?;
        // Nothing is written until the backup is known good; from here on, the marker says a
        // restore is under way. The directory was made by hand (the keys were put in it):
        // narrowed to owner-only like one `init` makes.
        create_private_dir(dir, "vault directory")?;
        if marker.exists() {
            Self::clear_restore(dir)?;
        } else {
            write_private(&marker, b"", "restore marker")?;
        }
        let (vault, audit_seq) = Self::restore_files(dir, &snap, &key, options, actor)?;
        let mut rotated = 0;
        for t in vault.store.storage().tenants()? {
            let rotation = vault.store.tenant(&t.id, actor)?.rotate_key(&mut |_| {})?;
            if !rotation.is_finished() {
                return Err(verr(
                    "vault",
                    dir,
                    format!(
                        "tenant {}: the data key rotation after the restore did not finish",
                        t.id
                    ),
                ));
            }
            rotated += 1;
        }
        std::fs::remove_file(&marker).map_err(|e| verr("restore marker", &marker, e))?;
        Ok((
            vault,
            Restored {
                backup: snap.summary(backup.len() as u64),
                audit_seq,
                rotated_tenants: rotated,
            },
        ))
    }

    /// Whether a restore into `dir` has not finished.
    pub(super) fn restoring(dir: &Path) -> bool {
        dir.join(RESTORING).exists()
    }

    /// Removes what an unfinished restore wrote (never the keys).
    fn clear_restore(dir: &Path) -> Result<(), StoreError> {
        for d in [Self::audit_dir(dir), Self::types_dir(dir)] {
            if d.exists() {
                std::fs::remove_dir_all(&d).map_err(|e| verr("restore", &d, e))?;
            }
        }
        let db = Self::db_path(dir);
        let mut files = vec![Self::audit_sealing_key_path(dir)];
        for base in [db.clone(), dir.join(RESTORING_DB)] {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                files.push(PathBuf::from(format!("{}{suffix}", base.display())));
            }
        }
        for f in files {
            if f.exists() {
                std::fs::remove_file(&f).map_err(|e| verr("restore", &f, e))?;
            }
        }
        Ok(())
    }

    /// Writes the vault's files from `snap`, opens it and verifies it; returns it with the
    /// sequence number of its `vault_restored` record.
    fn restore_files(
        dir: &Path,
        snap: &Snapshot,
        key: &AuditKey,
        options: VaultOptions,
        actor: &str,
    ) -> Result<(Self, u64), StoreError> {
        if let Some(text) = &snap.sealing_key {
            write_private(
                &Self::audit_sealing_key_path(dir),
                text.as_bytes(),
                "audit sealing key",
            )?;
        }
        if !snap.types.is_empty() {
            let tdir = Self::types_dir(dir);
            create_private_dir(&tdir, "types directory")?;
            for (name, text) in &snap.types {
                write_private(&tdir.join(name), text.as_bytes(), "credential type")?;
            }
        }
        let audit_dir = Self::audit_dir(dir);
        create_private_dir(&audit_dir, "audit log")?;
        for (i, seg) in snap.audit_segments.iter().enumerate() {
            let n = u32::try_from(i + 1)
                .map_err(|_| verr("audit log", &audit_dir, "too many segments"))?;
            write_private(&segment_path(&audit_dir, n), seg, "audit log")?;
        }
        // The chain continues here: the restore's record, then a checkpoint (and the anchor
        // it writes).
        let (keyring, _) = Self::load_master(dir, &options)?;
        let sealer = Self::load_sealer(dir, &*keyring)?;
        drop(keyring);
        let mut config = LogConfig::default()
            .durability(options.audit)
            .lock_timeout(options.lock_timeout);
        if let Some(s) = sealer {
            config = config.sealed_with(s);
        }
        let (log, _) =
            AuditLog::open(&audit_dir, copy_key(key)?, config).map_err(StoreError::AuditLog)?;
        let event = credvault_audit::AuditEvent::new(
            crate::store::verify::VAULT_WIDE,
            actor,
            credvault_audit::Action::Other("vault_restored".into()),
        );
        let receipt = log.record(&event).map_err(StoreError::AuditLog)?;
        log.checkpoint().map_err(StoreError::AuditLog)?;
        drop(log);
        let head = AuditHead {
            seq: receipt.seq,
            hash: receipt.hash,
            tag: Some(key.head_tag(receipt.seq, &receipt.hash)),
        };
        // The database last, under a name that is not a vault until it is complete.
        let tmp = dir.join(RESTORING_DB);
        write_private(&tmp, b"", "database")?;
        SqliteStorage::open(&tmp, options.sqlite)?.import(snap, head)?;
        let db = Self::db_path(dir);
        std::fs::rename(&tmp, &db).map_err(|e| verr("database", &db, e))?;
        let unmake = |e: StoreError| {
            let _ = std::fs::rename(&db, &tmp);
            e
        };
        let vault = Self::open_unchecked(dir, options).map_err(unmake)?;
        let check = vault.verify().map_err(unmake)?;
        if !check.is_ok() {
            drop(vault);
            return Err(unmake(verr(
                "vault",
                dir,
                format!(
                    "does not verify after the restore ({} finding(s) in the rows, audit intact: {})",
                    check.store.findings.len(),
                    check.audit.is_intact()
                ),
            )));
        }
        Ok((vault, receipt.seq))
    }
}

/// The backup's chain verifies under `key`, starts at its genesis and ends at its tip.
fn check_chain(snap: &Snapshot, key: &AuditKey) -> Result<(), StoreError> {
    let here = Path::new("<backup>");
    let segs: Vec<&[u8]> = snap.audit_segments.iter().map(Vec::as_slice).collect();
    let report = credvault_audit::verify_segments(
        &segs,
        VerifyOptions {
            key: Some(key),
            anchor: None,
        },
    );
    if let Some(p) = &report.problem {
        return Err(verr(
            "audit log",
            here,
            format!(
                "does not verify: record {}: {}: {}",
                p.seq, p.kind, p.detail
            ),
        ));
    }
    let head = hex::encode(snap.chain.head);
    if report.log_id.as_deref() != Some(snap.chain.log_id.as_str())
        || report.last_seq != Some(snap.chain.last_seq)
        || report.head.as_deref() != Some(head.as_str())
        || find_record_hash_in(&segs, 0) != Some(snap.chain.genesis)
    {
        return Err(verr(
            "audit log",
            here,
            "does not end (or begin) where the backup says it does",
        ));
    }
    Ok(())
}

/// A second handle on the audit key (the log takes one by value).
fn copy_key(key: &AuditKey) -> Result<AuditKey, StoreError> {
    let text = Zeroizing::new(key.to_hex().to_string());
    AuditKey::from_text(&text).map_err(|e| verr("audit key", Path::new("audit.key"), e))
}
