//! Twilio's request signature (`X-Twilio-Signature`).

use base64::Engine;
use ring::hmac;
use subtle::ConstantTimeEq;

/// Whether `signature` (the `X-Twilio-Signature` header) is Twilio's signature of a POST to
/// `url` (exactly as configured in Twilio, with scheme, host, path and query) with the form
/// parameters `params`, under the account's auth token: base64 of HMAC-SHA1 over the URL
/// followed by every parameter's name and value, sorted by name (Twilio's "Validating
/// requests" algorithm). Constant-time comparison.
pub fn verify_twilio_signature(
    auth_token: &[u8],
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let want = twilio_signature_bytes(auth_token, url, params);
    want.len() == given.len() && bool::from(want.as_slice().ct_eq(&given))
}

/// The signature Twilio sends for a request (base64), for tests and for clients forwarding
/// Twilio's posts.
pub fn twilio_signature(auth_token: &[u8], url: &str, params: &[(String, String)]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(twilio_signature_bytes(auth_token, url, params))
}

fn twilio_signature_bytes(auth_token: &[u8], url: &str, params: &[(String, String)]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(url.as_bytes());
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    for (k, v) in sorted {
        ctx.update(k.as_bytes());
        ctx.update(v.as_bytes());
    }
    ctx.sign().as_ref().to_vec()
}
