//! Record MACs: every value the vault acts on or shows is authenticated under the tenant's
//! data key, not only the sealed secret fields (docs/formats.md, "Record MACs").
//!
//! A credential row's MAC covers its tenant, id, name, type, environment, description, tags,
//! active flag, expiry, creator, creation and update times, version, public fields, the names
//! of its secret fields, its key id and its envelope; only the last-use time and the last test
//! result (hints the audit log holds authoritatively) are left out. A data key row's MAC covers
//! its tenant, the tenant's name and creation time, its key id and creation time; its wrapped
//! form authenticates itself (AES-GCM under the master key, with the tenant in the context).
//!
//! The MAC key is derived from the data key with HKDF-Expand (RFC 5869 §2.3; the data key is
//! uniformly random, so it serves as the pseudorandom key without an extract step):
//! `K = HMAC-SHA256(data key, "credvault record mac v1" || 0x01)`. The message is a kind label
//! and then each value length-prefixed (u64 big-endian) or fixed-size, so no two rows encode
//! alike. Stored as one version byte (`0x01`) and the 32-byte tag.

use credvault_envelope::DataKey;
use credvault_token::{HmacSha256, HmacSha256Key, HMAC_SHA256_LEN};
use zeroize::Zeroizing;

use crate::storage::{CredentialRow, DataKeyRow, TenantRow};

/// The HKDF `info` of the record-MAC key.
const MAC_KEY_INFO: &[u8] = b"credvault record mac v1";
/// The stored MAC's version byte.
pub(crate) const MAC_V1: u8 = 1;
/// Stored MAC length: the version byte and the tag.
pub(crate) const MAC_LEN: usize = 1 + HMAC_SHA256_LEN;

/// The record-MAC key of a data key.
pub(crate) fn mac_key(dek: &DataKey) -> HmacSha256Key {
    let prk = HmacSha256Key::new(dek.expose_secret());
    let okm = Zeroizing::new(prk.mac(&[MAC_KEY_INFO, &[1]]));
    HmacSha256Key::new(&okm[..])
}

/// The canonical encoding, fed straight into the MAC.
struct Canon(HmacSha256);

impl Canon {
    fn new(key: &HmacSha256Key, kind: &[u8]) -> Self {
        let mut c = Self(key.start());
        c.bytes(kind);
        c
    }

    fn bytes(&mut self, b: &[u8]) {
        self.0.update(&(b.len() as u64).to_be_bytes());
        self.0.update(b);
    }

    fn u64(&mut self, v: u64) {
        self.0.update(&v.to_be_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.0.update(&v.to_be_bytes());
    }

    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.0.update(&[0]),
            Some(v) => {
                self.0.update(&[1]);
                self.i64(v);
            }
        }
    }

    fn flag(&mut self, v: bool) {
        self.0.update(&[u8::from(v)]);
    }

    fn list(&mut self, items: &[String]) {
        self.u64(items.len() as u64);
        for i in items {
            self.bytes(i.as_bytes());
        }
    }

    fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAC_LEN);
        out.push(MAC_V1);
        out.extend_from_slice(&self.0.finalize());
        out
    }
}

/// A credential row's stored MAC (version byte and tag).
pub(crate) fn credential_mac(key: &HmacSha256Key, row: &CredentialRow) -> Vec<u8> {
    let mut c = Canon::new(key, b"credential");
    c.bytes(row.tenant.as_str().as_bytes());
    c.bytes(row.id.as_str().as_bytes());
    c.bytes(row.name.as_bytes());
    c.bytes(row.type_name.as_bytes());
    c.bytes(row.environment.as_bytes());
    c.bytes(row.description.as_bytes());
    c.list(&row.tags);
    c.flag(row.is_active);
    c.opt_i64(row.expires_at);
    c.bytes(row.created_by.as_bytes());
    c.i64(row.created_at);
    c.i64(row.updated_at);
    c.u64(row.version);
    c.bytes(row.public.as_bytes());
    c.list(&row.secret_fields);
    c.bytes(row.key_id.as_bytes());
    c.bytes(&row.secret);
    // Added with per-credential reveal policies: only when there are some, so that the MAC of
    // a row without any is the one it always had. The parts above are a fixed sequence, so a
    // row with policies never encodes like one without.
    if !row.reveal.is_empty() {
        c.bytes(b"reveal");
        c.u64(row.reveal.len() as u64);
        for (field, policy) in &row.reveal {
            c.bytes(field.as_bytes());
            c.bytes(policy.as_str().as_bytes());
        }
    }
    c.finish()
}

/// A data key row's stored MAC, under the key the row holds.
pub(crate) fn data_key_mac(key: &HmacSha256Key, tenant: &TenantRow, row: &DataKeyRow) -> Vec<u8> {
    let mut c = Canon::new(key, b"data key");
    c.bytes(row.tenant.as_str().as_bytes());
    c.bytes(tenant.id.as_str().as_bytes());
    c.bytes(tenant.name.as_bytes());
    c.i64(tenant.created_at);
    c.bytes(row.key_id.as_bytes());
    c.i64(row.created_at);
    c.finish()
}

/// Whether a stored MAC is `expected`, in constant time.
pub(crate) fn mac_matches(stored: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    stored.len() == MAC_LEN && stored.len() == expected.len() && bool::from(stored.ct_eq(expected))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::{credential_mac, data_key_mac, mac_key, mac_matches};
    use crate::ids::{CredentialId, TenantId};
    use crate::storage::{CredentialRow, DataKeyRow, KeyState, TenantRow};
    use credvault_envelope::{DataKey, KeyId};
    use serde_json::Value;

    fn hex16(v: &Value) -> [u8; 16] {
        hex::decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    }

    fn strings(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    }

    /// Vectors computed from docs/formats.md by a Python script using only `hmac`/`hashlib`
    /// (tests/data/make_record_mac_vectors.py).
    #[test]
    fn frozen_vectors_from_an_independent_implementation() {
        let v: Value =
            serde_json::from_str(include_str!("../../tests/data/record_mac_v1.json")).unwrap();
        let dk: [u8; 32] = hex::decode(v["data_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let key = mac_key(&DataKey::from_bytes(KeyId::from_bytes([0; 16]), &dk));
        // The derived key itself: HKDF-Expand's first block, as a MAC of the empty message
        // under it would differ otherwise.
        let expected_key = hex::decode(v["mac_key"].as_str().unwrap()).unwrap();
        let probe = credvault_token::HmacSha256Key::new(&expected_key).mac(&[b"probe"]);
        assert_eq!(key.mac(&[b"probe"]), probe);
        for c in v["credentials"].as_array().unwrap() {
            let r = &c["row"];
            let row = CredentialRow {
                id: CredentialId::parse(r["id"].as_str().unwrap()).unwrap(),
                tenant: TenantId::new(r["tenant"].as_str().unwrap()).unwrap(),
                name: r["name"].as_str().unwrap().into(),
                type_name: r["type"].as_str().unwrap().into(),
                environment: r["environment"].as_str().unwrap().into(),
                description: r["description"].as_str().unwrap().into(),
                tags: strings(&r["tags"]),
                is_active: r["is_active"].as_bool().unwrap(),
                expires_at: r["expires_at"].as_i64(),
                created_by: r["created_by"].as_str().unwrap().into(),
                created_at: r["created_at"].as_i64().unwrap(),
                updated_at: r["updated_at"].as_i64().unwrap(),
                version: r["version"].as_u64().unwrap(),
                last_used_at: Some(5),
                last_tested: Some(6),
                test_status: Some("ok".into()),
                test_message: Some("not covered".into()),
                public: r["public"].as_str().unwrap().into(),
                secret_fields: strings(&r["secret_fields"]),
                key_id: KeyId::from_bytes(hex16(&r["key_id"])),
                secret: hex::decode(r["secret"].as_str().unwrap()).unwrap(),
                reveal: r
                    .get("reveal")
                    .map(|p| serde_json::from_value(p.clone()).unwrap())
                    .unwrap_or_default(),
                mac: Vec::new(),
            };
            let want = hex::decode(c["mac"].as_str().unwrap()).unwrap();
            assert_eq!(credential_mac(&key, &row), want);
            assert!(mac_matches(&want, &credential_mac(&key, &row)));
        }
        for k in v["data_keys"].as_array().unwrap() {
            let r = &k["row"];
            let tenant = TenantId::new(r["tenant"].as_str().unwrap()).unwrap();
            let t = TenantRow {
                id: tenant.clone(),
                name: r["tenant_name"].as_str().unwrap().into(),
                created_at: r["tenant_created_at"].as_i64().unwrap(),
            };
            let row = DataKeyRow {
                tenant,
                key_id: KeyId::from_bytes(hex16(&r["key_id"])),
                wrapped: vec![9; 40],
                state: KeyState::Retiring,
                usage: 77,
                created_at: r["created_at"].as_i64().unwrap(),
                mac: Vec::new(),
            };
            let want = hex::decode(k["mac"].as_str().unwrap()).unwrap();
            assert_eq!(data_key_mac(&key, &t, &row), want);
        }
    }

    #[test]
    fn a_stored_mac_of_another_length_or_version_never_matches() {
        let tag = [1u8; super::MAC_LEN];
        assert!(mac_matches(&tag, &tag));
        assert!(!mac_matches(&tag[..32], &tag[..32]));
        assert!(!mac_matches(&[], &[]));
    }
}
