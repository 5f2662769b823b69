//! An event as the body of a log record, written straight to bytes.
//!
//! The bytes are exactly `serde_json::to_vec(&event)`'s (the derived `Serialize`, compact),
//! which the record format is frozen on; a property test holds the two together. What differs
//! is the work: serde_json escapes every string one byte at a time, and a record's strings
//! (ids, names, times) almost never need escaping, which one pass without branches finds.

use std::fmt::Write as _;

use crate::event::{AuditEvent, Details, Resource, StackText};

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
    match rfc3339_millis(time.as_unix_millis()) {
        Some(t) => {
            out.push(b'"');
            out.extend_from_slice(&t);
            out.push(b'"');
        }
        None => {
            let mut t = StackText::default();
            match write!(t, "{time}") {
                Ok(()) => string(out, t.as_str()),
                Err(_) => serde_json::to_writer(&mut *out, time)?,
            }
        }
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
        write_resource(out, resource);
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

fn write_resource(out: &mut Vec<u8>, r: &Resource) {
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
        let _ = write!(VecText(out), "{v}");
    }
    if let Some(v) = key {
        sep(out);
        key_of(out, "key");
        string(out, v);
    }
    out.push(b'}');
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a time in years 1970 to 9999 (what `Timestamp`'s `Display`
/// writes), `None` past them.
fn rfc3339_millis(ms: u64) -> Option<[u8; 24]> {
    let days = ms / 86_400_000;
    let in_day = ms % 86_400_000;
    // Civil date from days since 1970-01-01 (H. Hinnant, "chrono-compatible low-level date
    // algorithms"), in eras of 400 years starting on 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    if year > 9_999 {
        return None;
    }
    let mut t = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            t[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, in_day / 3_600_000);
    put(14, 2, in_day / 60_000 % 60);
    put(17, 2, in_day / 1_000 % 60);
    put(20, 3, in_day % 1_000);
    Some(t)
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

/// `fmt::Write` into a byte vector (numbers).
struct VecText<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecText<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
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

    proptest! {
        #[test]
        fn times_are_written_as_their_display(ms in 0u64..253_402_300_800_000) {
            let t = rfc3339_millis(ms).unwrap();
            prop_assert_eq!(
                std::str::from_utf8(&t).unwrap(),
                Timestamp::from_unix_millis(ms).to_string()
            );
        }
    }

    #[test]
    fn times_at_the_edges_of_days_months_and_years() {
        for text in [
            "1970-01-01T00:00:00.000Z",
            "1999-12-31T23:59:59.999Z",
            "2000-02-29T12:00:00.001Z",
            "2100-03-01T00:00:00.000Z",
            "2026-12-07T18:30:05.250Z",
            "9999-12-31T23:59:59.999Z",
        ] {
            let ms = text.parse::<Timestamp>().unwrap().as_unix_millis();
            assert_eq!(
                rfc3339_millis(ms).map(|t| t.to_vec()),
                Some(text.as_bytes().to_vec())
            );
        }
        assert_eq!(rfc3339_millis(253_402_300_800_000), None);
    }

    #[test]
    fn every_control_character_and_quote_is_escaped_like_serde_json() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let mut out = Vec::new();
        string(&mut out, &all);
        assert_eq!(out, serde_json::to_vec(&all).unwrap());
    }
}
