//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use credvault_audit::{
    anchor_path, segment_paths, verify_files, Action, Anchor, AuditEvent, AuditKey, Details,
    Durability, FieldChange, LogConfig, Resource, Timestamp, VerifyOptions, VerifyReport,
};

pub(crate) const KEY: [u8; 32] = [0x42; 32];

pub(crate) fn key() -> AuditKey {
    AuditKey::from_bytes(&KEY)
}

/// A config for tests: no timer thread, no fsync unless asked.
pub(crate) fn fast_config() -> LogConfig {
    LogConfig::default()
        .durability(Durability::NoSync)
        .checkpoint_interval(None)
}

/// A varied event, deterministic in `i`.
pub(crate) fn event(i: u64) -> AuditEvent {
    let actions = [
        Action::Created,
        Action::Accessed,
        Action::Updated,
        Action::AccessDenied,
        Action::Tested,
        Action::Deleted,
    ];
    let action = actions[(i % actions.len() as u64) as usize].clone();
    let mut e = AuditEvent::new(
        format!("tenant-{}", i % 3),
        format!("user-{}", i % 7),
        action.clone(),
    )
    .at(Timestamp::from_unix_millis(1_790_000_000_000 + i * 1000))
    .with_resource(
        Resource::credential(format!("cred_{i}"))
            .with_name(format!("name-{}", i % 11))
            .with_type("postgres")
            .with_environment("production"),
    )
    .with_source_ip(format!("10.0.{}.{}", i % 256, (i / 256) % 256))
    .with_request_id(format!("req-{i}"));
    e = match action {
        Action::Updated => e.with_details(Details::Updated {
            changes: vec![
                FieldChange::metadata("description", Some("old"), Some("new \"quoted\"\n")),
                FieldChange::secret("password"),
            ],
        }),
        Action::Accessed => e.with_details(Details::Accessed {
            service: Some("n8n".into()),
            fields: vec!["username".into(), "password".into()],
        }),
        _ => e,
    };
    e
}

/// Everything a verification needs from a log directory.
pub(crate) fn verify_dir(dir: &Path, with_key: bool) -> VerifyReport {
    let key = key();
    let anchor = Anchor::load(&anchor_path(dir)).ok();
    let segments = segment_paths(dir).unwrap();
    verify_files(
        &segments,
        VerifyOptions {
            key: with_key.then_some(&key),
            anchor: anchor.as_ref(),
        },
    )
    .unwrap()
}

/// Polls `f` until it is true, for at most 20 s (an eventual property, not a timing claim).
pub(crate) fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..2000 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
