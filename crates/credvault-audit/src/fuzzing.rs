//! Entry points for the fuzz targets (not a public API).

use crate::{verify_segments, Anchor, AuditKey, Query, VerifyOptions};

/// Parses every line, verifies the bytes as one or two segments with and without a key and an
/// anchor, and reads events back. Must never panic.
pub fn verify_bytes(data: &[u8]) {
    let key = AuditKey::from_bytes(&[7u8; 32]);
    let _ = verify_segments(&[data], VerifyOptions::default());
    let _ = verify_segments(
        &[data],
        VerifyOptions {
            key: Some(&key),
            anchor: None,
        },
    );
    let split = data.len() / 2;
    let _ = verify_segments(
        &[&data[..split], &data[split..]],
        VerifyOptions {
            key: Some(&key),
            anchor: None,
        },
    );
    if let Some(anchor) = Anchor::parse(data) {
        let _ = verify_segments(
            &[data],
            VerifyOptions {
                key: Some(&key),
                anchor: Some(&anchor),
            },
        );
    }
    for line in data.split(|b| *b == b'\n') {
        if let Some(l) = crate::record::Line::parse(line) {
            let _ = l.check_hash();
        }
    }
    let _ = crate::read_events(&[data], &Query::new());
}
