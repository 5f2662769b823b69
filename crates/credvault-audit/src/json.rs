//! An event as the body of a log record, written straight to bytes.
//!
//! The bytes are exactly `serde_json::to_vec(&event)`'s (the derived `Serialize`, compact),
//! which the record format is frozen on; a property test holds the two together. What differs
//! is the work: serde_json escapes every string one byte at a time, and a record's strings
//! (ids, names, times) almost never need escaping, which one pass without branches finds.

use crate::event::{AuditEvent, Details, Resource};

/// Appends `e` as compact JSON, in the field order and with the omissions of its derived
/// `Serialize`.
pub(crate) fn write_event(out: &mut Vec<u8>, e: &AuditEvent) -> Result<(), serde_json::Error> {
    // Every field named: a field added to the event does not compile here until written.
    let AuditEvent {
        id,
        time,
        tenant,
        actor,
        source_ip,
        client_host,
        request_id,
        action,
        resource,
        outcome,
        details,
    } = e;
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(&id.text());
    out.extend_from_slice(b"\",\"time\":");
    match time.rfc3339() {
        Some(t) => {
            out.push(b'"');
            out.extend_from_slice(&t);
            out.push(b'"');
        }
        None => serde_json::to_writer(&mut *out, time)?,
    }
    field(out, "tenant", tenant);
    field(out, "actor", actor);
    for (name, value) in [
        ("source_ip", source_ip),
        ("client_host", client_host),
        ("request_id", request_id),
    ] {
        if let Some(v) = value {
            field(out, name, v);
        }
    }
    field(out, "action", action.as_str());
    if !resource.is_empty() {
        out.extend_from_slice(b",\"resource\":");
        write_resource(out, resource)?;
    }
    field(out, "outcome", outcome.as_str());
    match details {
        // The one every reveal writes.
        Some(Details::Accessed { service, fields }) => {
            out.extend_from_slice(b",\"details\":{\"kind\":\"accessed\"");
            if let Some(s) = service {
                field(out, "service", s);
            }
            out.extend_from_slice(b",\"fields\":[");
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, f);
            }
            out.extend_from_slice(b"]}");
        }
        Some(d) => {
            out.extend_from_slice(b",\"details\":");
            serde_json::to_writer(&mut *out, d)?;
        }
        None => {}
    }
    out.push(b'}');
    Ok(())
}

fn write_resource(out: &mut Vec<u8>, r: &Resource) -> Result<(), serde_json::Error> {
    let Resource {
        id,
        name,
        kind,
        environment,
        version,
        key,
    } = r;
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    out.push(b'{');
    for (k, v) in [
        ("id", id),
        ("name", name),
        ("type", kind),
        ("environment", environment),
    ] {
        if let Some(v) = v {
            sep(out);
            key_of(out, k);
            string(out, v);
        }
    }
    if let Some(v) = version {
        sep(out);
        key_of(out, "version");
        serde_json::to_writer(&mut *out, v)?;
    }
    if let Some(v) = key {
        sep(out);
        key_of(out, "key");
        string(out, v);
    }
    out.push(b'}');
    Ok(())
}

/// `,"name":"value"`.
fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b',');
    key_of(out, name);
    string(out, value);
}

/// `"name":` for a name that needs no escaping.
fn key_of(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// A JSON string, escaped as serde_json escapes: `"` and `\`, the short forms of backspace,
/// tab, line feed, form feed and carriage return, `\u00xx` (lower-case hex) for the other
/// control characters, everything else as it is.
fn string(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    // No early exit, so the compiler can check many bytes at once.
    let plain = !b.iter().fold(false, |any, &c| {
        any | (c < 0x20) | (c == b'"') | (c == b'\\')
    });
    if plain {
        out.extend_from_slice(b);
    } else {
        escape(out, b);
    }
    out.push(b'"');
}

fn escape(out: &mut Vec<u8>, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        let short: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[run..i]);
        run = i + 1;
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 15)]);
        } else {
            out.extend_from_slice(short);
        }
    }
    out.extend_from_slice(&b[run..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, DenyReason, Details, Outcome, Timestamp};
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-z0-9_\\-]{0,24}",
            "[\\x00-\\x20\"\\\\/a\u{7f}\u{e9}\u{2028}\u{1f600}]{0,12}",
        ]
    }

    fn resource() -> impl Strategy<Value = Resource> {
        (
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(text()),
        )
            .prop_map(|(id, name, kind, environment, version, key)| Resource {
                id,
                name,
                kind,
                environment,
                version,
                key,
            })
    }

    fn details() -> impl Strategy<Value = Option<Details>> {
        proptest::option::of(prop_oneof![
            text().prop_map(|reason| Details::AccessFailed { reason }),
            (
                proptest::option::of(text()),
                proptest::collection::vec(text(), 0..4)
            )
                .prop_map(|(service, fields)| Details::Accessed { service, fields }),
            Just(Details::AccessDenied {
                reason: DenyReason::Expired
            }),
        ])
    }

    fn event() -> impl Strategy<Value = AuditEvent> {
        (
            (
                text(),
                text(),
                0usize..40,
                text(),
                0u64..253_402_300_799_999,
            ),
            (
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
            ),
            resource(),
            prop_oneof![
                Just(Outcome::Success),
                Just(Outcome::Denied),
                Just(Outcome::Failure)
            ],
            details(),
        )
            .prop_map(
                |(
                    (tenant, actor, a, other, millis),
                    (ip, host, req),
                    resource,
                    outcome,
                    details,
                )| {
                    let action = Action::KNOWN
                        .get(a)
                        .cloned()
                        .unwrap_or(Action::Other(other));
                    let mut e = AuditEvent::new(tenant, actor, action)
                        .at(Timestamp::from_unix_millis(millis))
                        .with_resource(resource)
                        .with_outcome(outcome);
                    e.source_ip = ip;
                    e.client_host = host;
                    e.request_id = req;
                    e.details = details;
                    e
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        #[test]
        fn the_same_bytes_as_serde_json(e in event()) {
            let mut out = Vec::new();
            write_event(&mut out, &e).unwrap();
            let expected = serde_json::to_vec(&e).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
        }
    }

    #[test]
    fn every_control_character_and_quote_is_escaped_like_serde_json() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let mut out = Vec::new();
        string(&mut out, &all);
        assert_eq!(out, serde_json::to_vec(&all).unwrap());
    }
}
