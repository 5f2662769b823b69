//! Entry points for the fuzz targets under `fuzz/` (not a stable API).

use crate::{
    DataKey, EncryptionContext, EnvelopeHeader, KeyId, LocalKeyring, MasterKey, OpeningKey,
    WrappedKey,
};

/// Parses arbitrary bytes as an envelope header.
pub fn envelope_header(data: &[u8]) {
    if let Ok(h) = EnvelopeHeader::parse(data) {
        assert_eq!(h.plaintext_len() + crate::OVERHEAD, data.len());
    }
}

/// Opens arbitrary bytes under a fixed key, once with the envelope's own key id forced in,
/// so the decryption path (not only the header check) is reached.
pub fn envelope_open(data: &[u8]) {
    let ctx = EncryptionContext::new();
    let key = DataKey::from_bytes(KeyId::from_bytes([7; 16]), &[9; 32]);
    let opener = OpeningKey::new(&key);
    assert!(opener.open(data, &ctx).is_err() || data.len() >= crate::OVERHEAD);
    if data.len() >= 18 {
        let mut forced = data.to_vec();
        forced[2..18].copy_from_slice(&[7; 16]);
        let _ = opener.open(&forced, &ctx);
        let _ = opener.open_in_place(&mut forced, &ctx);
    }
}

/// Parses arbitrary bytes as a wrapped key and tries to unwrap them with a fixed keyring.
pub fn wrapped_key(data: &[u8]) {
    if let Ok(w) = WrappedKey::parse(data) {
        assert_eq!(w.as_bytes(), data, "parse must round-trip exactly");
        if let Ok(k) =
            LocalKeyring::from_secret_text("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        {
            let _ = k.unwrap(&w, &EncryptionContext::new());
        }
    }
}

/// Parses arbitrary bytes as keyring text; a keyring that parses must export text that parses
/// back to the same versions.
pub fn keyring_text(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    if let Ok(k) = LocalKeyring::from_secret_text(text) {
        let again = LocalKeyring::from_secret_text(&k.export_secret_text());
        assert!(again.is_ok_and(|a| a.versions().eq(k.versions()) && a.active() == k.active()));
    }
}
