//! The files the log writes: owner-only from creation, never written through a symlink an
//! attacker planted in the log directory (at the names temporary files used to have, at the
//! next segment's name, at the lock), and never opened through a symlinked segment.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use common::{event, fast_config, key, verify_dir};
use credvault_audit::{anchor_path, segment_path, segment_paths, AuditLog};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A file outside the log directory that must stay as it is.
fn victim(dir: &Path) -> std::path::PathBuf {
    let v = dir.join("victim");
    std::fs::write(&v, "untouched").unwrap();
    v
}

#[test]
fn log_files_are_owner_only_and_planted_symlinks_are_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    let victim = victim(outside.path());
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/audit");
    let config = fast_config().max_segment_bytes(4096).checkpoint_every(50);
    let (log, _) = AuditLog::open(&dir, key(), config.clone()).unwrap();
    log.record(&event(0)).unwrap();
    // Symlinks at the fixed temporary names older versions used, and at the next segments'
    // temporary names.
    symlink(&victim, dir.join("audit.anchor.tmp")).unwrap();
    for n in 2..40 {
        symlink(&victim, segment_path(&dir, n).with_extension("jsonl.tmp")).unwrap();
    }
    for i in 1..200 {
        log.record(&event(i)).unwrap();
    }
    log.close().unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let segments = segment_paths(&dir).unwrap();
    assert!(segments.len() > 3, "{} segments", segments.len());
    assert!(verify_dir(&dir, true).is_intact());
    // Directories created 0700, files 0600 (whatever the process umask: the test binary runs
    // with the usual 022, which would give 0755 and 0644).
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&root.path().join("a")), 0o700);
    for f in segments
        .iter()
        .cloned()
        .chain([anchor_path(&dir), dir.join("audit.lock")])
    {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    // No temporary file is left behind.
    let stray: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".audit-"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // A symlink at the next segment's own name: rotation refuses (fail closed), the target is
    // not written.
    let next = segment_path(&dir, segments.len() as u32 + 1);
    let (log, _) = AuditLog::open(&dir, key(), config.clone()).unwrap();
    symlink(&victim, &next).unwrap();
    let mut refused = false;
    for i in 0..200 {
        if log.record(&event(1000 + i)).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "rotation wrote a segment over a symlink");
    drop(log);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    std::fs::remove_file(&next).unwrap();

    // A segment replaced by a symlink to a copy elsewhere is not opened.
    let last = segment_paths(&dir).unwrap().pop().unwrap();
    let copy = outside.path().join("copy.jsonl");
    std::fs::copy(&last, &copy).unwrap();
    std::fs::remove_file(&last).unwrap();
    symlink(&copy, &last).unwrap();
    assert!(AuditLog::open(&dir, key(), config.clone()).is_err());
    std::fs::remove_file(&last).unwrap();
    std::fs::copy(&copy, &last).unwrap();

    // A symlink at the lock: not followed, not created through.
    let lock = dir.join("audit.lock");
    std::fs::remove_file(&lock).unwrap();
    let target = outside.path().join("made-by-lock");
    symlink(&target, &lock).unwrap();
    assert!(AuditLog::open(&dir, key(), config).is_err());
    assert!(!target.exists());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
}
