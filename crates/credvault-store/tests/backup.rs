//! Backups and restores: a backup holds every row verbatim and the whole audit chain, never a
//! key; a restore verifies it before writing anything and the restored vault whole after,
//! continues the chain, and rotates every data key. From SQLite and from PostgreSQL.
#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use credvault_store::backup::{parse, BackupError, BackupLimits};
use credvault_store::storage::CredentialRow;
use credvault_store::{
    AuditKey, CredentialId, NewCredential, Restored, SqliteStorage, StoreError, TenantId, Vault,
    VaultOptions,
};
use serde_json::json;

#[cfg(feature = "postgres")]
mod pg;

/// RFC 4226 Appendix D's key (base32) and its first codes.
const HOTP_SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const HOTP_CODES: [&str; 4] = ["755224", "287082", "359152", "969429"];

const CUSTOM_TYPE: &str = r#"{"name": "acme_token", "display_name": "Acme token", "category": "other",
    "fields": [{"key": "token", "label": "Token", "kind": "password", "required": true}]}"#;

struct Contents {
    tenants: Vec<TenantId>,
    /// (tenant, credential, field, value)
    secrets: Vec<(TenantId, CredentialId, &'static str, String)>,
    hotp: (TenantId, CredentialId),
}

/// A vault made in `dir` with `options`, holding two tenants (one rotated), credentials of a
/// built-in type and of the vault's own, an HOTP key with two codes handed out, and a TOTP
/// code accepted once.
fn filled(dir: &Path, options: VaultOptions) -> (Vault, Contents) {
    let v = Vault::init(dir, options).unwrap();
    v.add_type(CUSTOM_TYPE).unwrap();
    v.close().unwrap();
    // Reopened: the vault's own types are loaded when it opens.
    let v = Vault::open(dir, VaultOptions::default()).unwrap();
    let c = fill(&v);
    (v, c)
}

fn fill(v: &Vault) -> Contents {
    let (a, b) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("globex").unwrap(),
    );
    let mut secrets = Vec::new();
    for t in [&a, &b] {
        v.store().create_tenant(t, "T", "admin").unwrap();
        let s = v.store().tenant(t, "alice").unwrap();
        for i in 0..3 {
            let value = format!("{t}-tok-{i}");
            let id = s
                .create(NewCredential::new(
                    "http_bearer_token",
                    format!("c{i}"),
                    json!({"token": value}),
                ))
                .unwrap()
                .id;
            secrets.push((t.clone(), id, "token", value));
        }
    }
    v.store()
        .tenant(&a, "admin")
        .unwrap()
        .rotate_key(&mut |_| {})
        .unwrap();
    let s = v.store().tenant(&b, "alice").unwrap();
    let id = s
        .create(NewCredential::new(
            "acme_token",
            "custom",
            json!({"token": "acme-custom-1"}),
        ))
        .unwrap()
        .id;
    secrets.push((b.clone(), id, "token", "acme-custom-1".into()));
    let hotp = s
        .create(NewCredential::new(
            "hotp_key",
            "vpn",
            json!({"secret": HOTP_SEED, "hotp_counter": 0}),
        ))
        .unwrap()
        .id;
    for expected in &HOTP_CODES[..2] {
        assert_eq!(s.totp_code(&hotp, None).unwrap().expose_secret(), *expected);
    }
    let login = s
        .create(NewCredential::new(
            "website_login",
            "site",
            json!({"login_url": "https://example.com", "username": "u", "password": "p",
                   "totp_secret": "JBSWY3DPEHPK3PXP"}),
        ))
        .unwrap()
        .id;
    let code = s.totp_code(&login, None).unwrap();
    s.verify_totp(&login, code.expose_secret()).unwrap();
    Contents {
        tenants: vec![a, b.clone()],
        secrets,
        hotp: (b, hotp),
    }
}

fn rows(v: &Vault, tenants: &[TenantId]) -> Vec<CredentialRow> {
    tenants
        .iter()
        .flat_map(|t| {
            v.store()
                .storage()
                .credentials(t, &Default::default())
                .unwrap()
        })
        .collect()
}

/// A new directory holding only the vault's keys (as an operator restores them from wherever
/// keys are kept: a backup holds none).
fn keys_only(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["master.key", "audit.key"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// Restores `bytes` into `dst`, a new directory given the keys of the vault in `src`.
fn restore_into(src: &Path, dst: &Path, bytes: &[u8]) -> (Vault, Restored) {
    keys_only(src, dst);
    Vault::restore(
        dst,
        bytes,
        &BackupLimits::default(),
        VaultOptions::default(),
        "ops",
    )
    .unwrap()
}

fn backup_of(v: &Vault) -> Vec<u8> {
    let mut out = Vec::new();
    let summary = v.backup(&mut out).unwrap();
    assert_eq!(summary.bytes, out.len() as u64);
    out
}

#[test]
fn a_backup_restores_every_row_the_chain_and_the_one_time_state_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (v, c) = filled(&src, VaultOptions::default().seal_audit());
    let before = rows(&v, &c.tenants);
    let one_time_before = SqliteStorage::open(Vault::db_path(&src), Default::default())
        .unwrap()
        .one_time_state()
        .unwrap();
    assert!(!one_time_before.replay.is_empty() && !one_time_before.hotp.is_empty());
    let events_before = v.audit_events(&Default::default()).unwrap().events.len();
    let bytes = backup_of(&v);
    v.close().unwrap();

    // No key, no secret in the clear in the backup.
    let text = String::from_utf8_lossy(&bytes);
    for (_, _, _, value) in &c.secrets {
        assert!(!text.contains(value.as_str()), "a secret is in the backup");
    }
    for f in ["master.key", "audit.key"] {
        let key = std::fs::read_to_string(src.join(f)).unwrap();
        for line in key.lines().filter(|l| l.len() >= 32) {
            assert!(!text.contains(line.trim()), "{f} is in the backup");
        }
    }
    let summary = parse(&bytes, &BackupLimits::default()).unwrap();
    assert_eq!(
        (
            summary.source.as_str(),
            summary.tenants,
            summary.credentials
        ),
        ("sqlite", 2, before.len())
    );

    let dst = tmp.path().join("dst");
    let (r, report) = restore_into(&src, &dst, &bytes);
    assert_eq!(report.rotated_tenants, 2, "{report:?}");
    assert!(r.seals_audit());
    // The directory the operator made by hand (create_dir_all: 0755 under the usual umask)
    // is owner-only now.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "restored vault directory mode {mode:o}");
    }
    // Every secret reads back; every row but its data key is as it was (a restore rotates
    // each tenant's key, so the ciphertexts and MACs are new).
    for (t, id, field, value) in &c.secrets {
        let got = r
            .store()
            .tenant(t, "bob")
            .unwrap()
            .reveal(id, &[field], None)
            .unwrap();
        assert_eq!(got.expose_secret(field), Some(value.as_str()));
    }
    let after = rows(&r, &c.tenants);
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (&b.id, &b.name, &b.type_name, &b.public, &b.secret_fields),
            (&a.id, &a.name, &a.type_name, &a.public, &a.secret_fields)
        );
        assert_ne!(b.key_id, a.key_id, "the data key was not rotated");
    }
    // The HOTP counter came along: the next code is the third, not the first again.
    let (t, hotp) = &c.hotp;
    let s = r.store().tenant(t, "bot").unwrap();
    assert_eq!(
        s.totp_code(hotp, None).unwrap().expose_secret(),
        HOTP_CODES[2]
    );
    // The chain continues: every event before, then the restore's.
    let events = r.audit_events(&Default::default()).unwrap().events;
    assert!(events.len() > events_before);
    assert_eq!(
        events[events_before].event.action.to_string(),
        "vault_restored"
    );
    assert!(r.verify().unwrap().is_ok());
    r.close().unwrap();
    let one_time_after = SqliteStorage::open(Vault::db_path(&dst), Default::default())
        .unwrap()
        .one_time_state()
        .unwrap();
    assert_eq!(one_time_after.replay, one_time_before.replay);
    // The restored vault opens like any other.
    Vault::open(&dst, VaultOptions::default()).unwrap();
}

#[test]
fn a_backup_that_was_altered_or_is_another_vaults_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (v, _) = filled(&src, VaultOptions::default());
    let bytes = backup_of(&v);
    v.close().unwrap();
    let dst = tmp.path().join("dst");
    keys_only(&src, &dst);
    let limits = BackupLimits::default();
    let restore =
        |b: &[u8]| Vault::restore(&dst, b, &limits, VaultOptions::default(), "ops").map(|_| ());
    // One byte changed anywhere in the body.
    let body_start = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    for at in [body_start, bytes.len() / 2, bytes.len() - 80] {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        let err = restore(&b).unwrap_err();
        assert!(
            matches!(err, StoreError::Backup(BackupError::NotAuthentic)),
            "{err:?}"
        );
    }
    // Cut short, or not a backup at all.
    for b in [
        &bytes[..bytes.len() - 1],
        &b"credvault-backup v1\n{}"[..],
        b"",
    ] {
        let err = restore(b).unwrap_err();
        assert!(
            matches!(err, StoreError::Backup(BackupError::NotABackup)),
            "{err:?}"
        );
    }
    // Larger than the limit.
    let err = Vault::restore(
        &dst,
        &bytes,
        &BackupLimits::default().max_bytes(100),
        VaultOptions::default(),
        "ops",
    )
    .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Backup(BackupError::TooLarge { limit: 100 })
    ));
    // Another vault's audit key: the backup does not authenticate.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(src.join("master.key"), other.join("master.key")).unwrap();
    let key = AuditKey::generate().unwrap();
    std::fs::write(other.join("audit.key"), format!("{}\n", &*key.to_hex())).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            other.join("audit.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let err = Vault::restore(&other, &bytes, &limits, VaultOptions::default(), "ops").unwrap_err();
    assert!(
        matches!(err, StoreError::Backup(BackupError::NotAuthentic)),
        "{err:?}"
    );
    // Nothing was written by any of them.
    for d in [&dst, &other] {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.key", "master.key"]);
    }
    // The untouched backup still restores.
    restore(&bytes).unwrap();
}

#[test]
fn a_restore_stopped_halfway_keeps_the_vault_closed_and_runs_again() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (v, c) = filled(&src, VaultOptions::default());
    let bytes = backup_of(&v);
    v.close().unwrap();
    // The wrong master key: found once the files are written, so the restore stops halfway.
    let dst = tmp.path().join("dst");
    keys_only(&src, &dst);
    let other = tmp.path().join("other");
    Vault::init(&other, VaultOptions::default())
        .unwrap()
        .close()
        .unwrap();
    std::fs::remove_file(dst.join("master.key")).unwrap();
    std::fs::copy(other.join("master.key"), dst.join("master.key")).unwrap();
    let limits = BackupLimits::default();
    let err = Vault::restore(&dst, &bytes, &limits, VaultOptions::default(), "ops").unwrap_err();
    assert!(err.to_string().contains("master key"), "{err}");
    assert!(!Vault::exists(&dst));
    let err = Vault::open(&dst, VaultOptions::default()).unwrap_err();
    assert!(err.to_string().contains("vault"), "{err}");
    // With the right key it starts over and finishes.
    std::fs::remove_file(dst.join("master.key")).unwrap();
    std::fs::copy(src.join("master.key"), dst.join("master.key")).unwrap();
    let (r, _) = Vault::restore(&dst, &bytes, &limits, VaultOptions::default(), "ops").unwrap();
    let (t, id, field, value) = &c.secrets[0];
    let got = r
        .store()
        .tenant(t, "bob")
        .unwrap()
        .reveal(id, &[field], None)
        .unwrap();
    assert_eq!(got.expose_secret(field), Some(value.as_str()));
    let restored = r
        .audit_events(&Default::default())
        .unwrap()
        .events
        .iter()
        .filter(|e| e.event.action.to_string() == "vault_restored")
        .count();
    assert_eq!(restored, 1, "the chain holds only the finished restore");
    r.close().unwrap();
    // A finished restore is a vault: restoring over it is refused.
    let err = Vault::restore(&dst, &bytes, &limits, VaultOptions::default(), "ops").unwrap_err();
    assert!(err.to_string().contains("already holds a vault"), "{err}");
}

#[test]
fn a_restore_needs_the_audit_key() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let v = Vault::init(&src, VaultOptions::default()).unwrap();
    let bytes = backup_of(&v);
    v.close().unwrap();
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    let err = Vault::restore(
        &dst,
        &bytes,
        &BackupLimits::default(),
        VaultOptions::default(),
        "ops",
    )
    .unwrap_err();
    assert!(err.to_string().contains("audit.key"), "{err}");
}

#[cfg(feature = "postgres")]
#[test]
fn a_postgres_vault_backs_up_restores_as_sqlite_and_moves_back() {
    use credvault_store::DatabaseConfig;
    let Some(server) = pg::server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let db = DatabaseConfig::new(server.url()).schema(server.new_schema());
    let (v, c) = filled(&src, VaultOptions::default().database(db));
    v.store().flush().unwrap();
    let events_before = v.audit_events(&Default::default()).unwrap().events.len();
    let bytes = backup_of(&v);
    assert_eq!(
        parse(&bytes, &BackupLimits::default()).unwrap().source,
        "postgres"
    );
    v.close().unwrap();

    let dst = tmp.path().join("dst");
    let (r, report) = restore_into(&src, &dst, &bytes);
    assert!(!r.is_postgres());
    assert_eq!(report.backup.credentials, c.secrets.len() + 2);
    let events = r.audit_events(&Default::default()).unwrap().events;
    assert_eq!(
        events[events_before].event.action.to_string(),
        "vault_restored"
    );
    r.close().unwrap();
    // And back into PostgreSQL, in a new schema: the chain goes on there.
    let db = DatabaseConfig::new(server.url()).schema(server.new_schema());
    let (m, _) = Vault::migrate_to_postgres(&dst, db, VaultOptions::default(), "ops").unwrap();
    for (t, id, field, value) in &c.secrets {
        let got = m
            .store()
            .tenant(t, "bob")
            .unwrap()
            .reveal(id, &[field], None)
            .unwrap();
        assert_eq!(got.expose_secret(field), Some(value.as_str()));
    }
    assert!(m.verify().unwrap().is_ok());
    m.close().unwrap();
}

/// The frozen v1 vector (docs/formats.md): it parses, authenticates under its audit key,
/// restores, and gives back the secret its vault held.
#[test]
fn the_v1_vector_restores_to_its_secret() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("backup_v1.json")).unwrap())
            .unwrap();
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    let n = |k: &str| v[k].as_u64().unwrap();
    let bytes = std::fs::read(data.join(s("file"))).unwrap();
    let summary = parse(&bytes, &BackupLimits::default()).unwrap();
    assert_eq!(
        (
            summary.tenants as u64,
            summary.data_keys as u64,
            summary.credentials as u64,
            summary.audit_last_seq
        ),
        (
            n("tenants"),
            n("data_keys"),
            n("credentials"),
            n("audit_last_seq")
        )
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    std::fs::create_dir_all(&dir).unwrap();
    for (from, to) in [("master_key", "master.key"), ("audit_key", "audit.key")] {
        std::fs::copy(data.join(s(from)), dir.join(to)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join(to), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let (r, _) = Vault::restore(
        &dir,
        &bytes,
        &BackupLimits::default(),
        VaultOptions::default(),
        "ops",
    )
    .unwrap();
    let t = TenantId::new(s("tenant")).unwrap();
    let id = CredentialId::parse(&s("credential_id")).unwrap();
    let field = s("field");
    let got = r
        .store()
        .tenant(&t, "ops")
        .unwrap()
        .reveal(&id, &[field.as_str()], None)
        .unwrap();
    assert_eq!(got.expose_secret(&field), Some(s("value").as_str()));
    r.close().unwrap();
}

/// Backups taken while another thread writes are each one instant of the vault: every one
/// restores to a vault whose rows agree with its audit chain (`verify` finds a row without its
/// record, or a record without its row).
fn backups_under_writes(src: &Path, v: &Vault, tmp: &Path) {
    let t = TenantId::new("acme").unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let backups = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let s = v.store().tenant(&t, "writer").unwrap();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 400 {
                let id = s
                    .create(NewCredential::new(
                        "http_bearer_token",
                        format!("w{n}"),
                        json!({"token": format!("w-{n}")}),
                    ))
                    .unwrap()
                    .id;
                s.reveal(&id, &["token"], None).unwrap();
                n += 1;
            }
            n
        });
        let mut backups = Vec::new();
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            backups.push(backup_of(v));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(writer.join().unwrap() > 0);
        backups
    });
    for (i, b) in backups.iter().enumerate() {
        let dst = tmp.join(format!("r{i}"));
        let (r, report) = restore_into(src, &dst, b);
        let check = r.verify().unwrap();
        assert!(check.is_ok(), "backup {i}: {check:?}");
        assert_eq!(
            rows(&r, std::slice::from_ref(&t)).len(),
            report.backup.credentials - 6,
            "backup {i}: globex's rows and acme's"
        );
        r.close().unwrap();
    }
}

#[test]
fn backups_taken_during_writes_are_consistent_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (v, _) = filled(&src, VaultOptions::default());
    backups_under_writes(&src, &v, tmp.path());
    v.close().unwrap();
}

#[cfg(feature = "postgres")]
#[test]
fn backups_taken_during_writes_are_consistent_postgres() {
    use credvault_store::DatabaseConfig;
    let Some(server) = pg::server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let db = DatabaseConfig::new(server.url()).schema(server.new_schema());
    let (v, _) = filled(&src, VaultOptions::default().database(db));
    backups_under_writes(&src, &v, tmp.path());
    v.close().unwrap();
}
