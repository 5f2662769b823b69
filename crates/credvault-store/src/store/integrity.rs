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
