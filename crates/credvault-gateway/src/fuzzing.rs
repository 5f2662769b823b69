//! Entry points for the fuzz targets (not a public API).

use base64::Engine as _;

/// Offers arbitrary bytes to every parser the gateway has for what a client or a source sends:
/// the API key format, the `Host` header, the proxy's path, a Connect filter and item id, a transit key
/// ring, a transit ciphertext, a KV version record, a Vault KV answer and a Connect item (as external sources read
/// them), an engine key name. Must never panic.
pub fn parsers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = crate::apikey::parse_key(&text) {
        assert!(text.contains(id), "a key's id comes from the key");
    }
    if let Some(h) = crate::gateway::normalise_host(&text) {
        assert_eq!(
            crate::gateway::normalise_host(&h).as_deref(),
            Some(h.as_str()),
            "host normalisation is idempotent"
        );
    }
    let path = format!("/proxy/credential/{text}");
    if let Ok(tail) = crate::proxy::tail_of(&path) {
        assert!(!tail.split('/').any(|s| s == ".."), "no dot segment passes");
    }
    let _ = crate::connect_api::filter_value(Some(&text), "title");
    if let Some(id) = crate::connect_api::item_credential(&text) {
        assert_eq!(
            crate::connect_api::item_id(&id),
            text,
            "an item id reads back as itself"
        );
    }
    let _ = crate::vault_transit::Ring::parse(&text);
    if let Ok((v, sealed)) = crate::vault_transit::parse_ciphertext(&text) {
        let again = format!(
            "vault:v{v}:{}",
            base64::engine::general_purpose::STANDARD.encode(&sealed)
        );
        assert_eq!(
            crate::vault_transit::parse_ciphertext(&again)
                .map(|(w, s)| (w, s == sealed))
                .ok(),
            Some((v, true)),
            "a ciphertext written back parses to the same version and bytes"
        );
    }
    if let Ok(p) = crate::vault_api::kv_path(&text) {
        assert!(
            !p.split('/').any(|s| s.is_empty() || s == ".."),
            "a KV path has no empty or dot segment"
        );
    }
    let _ = crate::vault_api::KV.name(&text);
    if let Ok(r) = crate::vault_kv::parse_record(&text) {
        assert_eq!(
            crate::vault_kv::parse_record(&r.text()).ok().as_ref(),
            Some(&r),
            "a KV version record written back reads the same"
        );
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = crate::source::from_kv_answer(v.clone());
        let _ = crate::source::from_connect_item(v);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_input_never_panics_a_parser(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            super::parsers(&data);
        }

        #[test]
        fn json_shaped_input_never_panics_a_parser(s in "[{}\\[\\]\":,a-z0-9 ]{0,200}") {
            super::parsers(s.as_bytes());
        }
    }
}
