//! Entry points for the fuzz targets (not a public API).

/// Offers arbitrary bytes to everything the receiver parses from outside: a whole SMTP
/// conversation (commands, `DATA`, the messages in it), an email on its own, a receiving
/// address, and a Twilio signature check over them. Must never panic.
pub fn message(data: &[u8]) {
    let _ = crate::tfa::parse_email(data);
    let text = String::from_utf8_lossy(data);
    if let Some(t) = crate::address_token(&text) {
        assert!(!t.is_empty() && t.len() <= 64, "a token is 1 to 64 bytes");
        assert_eq!(t, t.to_ascii_lowercase(), "a token is lower-cased");
    }
    let (url, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let params: Vec<(String, String)> = rest
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let sig = crate::twilio_signature(b"token", url, &params);
    assert!(
        crate::verify_twilio_signature(b"token", url, &params, &sig),
        "a signature verifies over what it signed"
    );
    assert!(!crate::verify_twilio_signature(
        b"other", url, &params, &sig
    ));
    crate::smtp::fuzz_conversation(data);
}
