//! Event records encrypted at rest: `sealed` records (docs/formats.md, "Audit log v1").
//!
//! A log configured with a [`RecordSealer`] ([`LogConfig::sealer`](crate::LogConfig::sealer))
//! writes each event's JSON encrypted, as a `sealed` record. The chain, the checkpoints and the
//! anchor cover the record line as written, so a log is verified with the audit key alone
//! ([`verify_files`](crate::verify_files)); reading the events needs the sealer
//! ([`read_event_files_opening`](crate::read_event_files_opening)).

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

/// Encrypts and decrypts event records. Implementations bind each record to its log id and
/// sequence number (associated data), so a sealed body copied to another record does not open.
pub trait RecordSealer: Send + Sync + fmt::Debug {
    /// Seals an event's JSON for record `seq` of log `log`.
    ///
    /// # Errors
    /// The sealer could not encrypt (a key service that is down, a random source failing).
    fn seal(&self, log: &str, seq: u64, body: &[u8]) -> Result<Vec<u8>, SealError>;

    /// Opens what [`seal`](Self::seal) made for the same log and record.
    ///
    /// # Errors
    /// [`SealError`] if it does not open (another key, another record, altered bytes).
    fn open(&self, log: &str, seq: u64, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError>;
}

/// A sealed record could not be made or opened; opaque on purpose.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("sealed audit record: {0}")]
pub struct SealError(pub &'static str);

/// Domain label of the associated data.
const AAD_LABEL: &[u8] = b"credvault-audit sealed v1";

/// The sealer of format v1: AES-256-GCM under a 32-byte audit data key, a random 96-bit nonce
/// per record, associated data = the framed parts `"credvault-audit sealed v1"`, the log id and
/// `seq` (decimal), as the log's MACs frame theirs. Sealed bytes: nonce ‖ ciphertext ‖ tag.
///
/// The key is the caller's to keep (a vault wraps it under its master key). Not `Clone`;
/// `Debug` is redacted; the key bytes live only inside `ring`'s key schedule.
pub struct AesGcmSealer {
    key: LessSafeKey,
}

impl AesGcmSealer {
    /// A sealer with the 32-byte key `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        // A 32-byte key is always a valid AES-256 key.
        let unbound = UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!());
        Self {
            key: LessSafeKey::new(unbound),
        }
    }

    fn aad(log: &str, seq: u64) -> Vec<u8> {
        crate::key::framed(&[AAD_LABEL, log.as_bytes(), seq.to_string().as_bytes()])
    }

    /// Seals with the nonce given (vectors only: a nonce must never repeat under one key).
    #[doc(hidden)]
    pub fn seal_with_nonce(
        &self,
        log: &str,
        seq: u64,
        body: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(NONCE_LEN + body.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        let mut ct = body.to_vec();
        // Sealing a buffer under 2^32 blocks cannot fail.
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(log, seq)),
                &mut ct,
            )
            .unwrap_or_else(|_| unreachable!());
        out.extend_from_slice(&ct);
        out.extend_from_slice(tag.as_ref());
        out
    }
}

impl RecordSealer for AesGcmSealer {
    fn seal(&self, log: &str, seq: u64, body: &[u8]) -> Result<Vec<u8>, SealError> {
        if body.len() > crate::record::MAX_LINE {
            return Err(SealError("record too long"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealError("no random nonce"))?;
        Ok(self.seal_with_nonce(log, seq, body, nonce))
    }

    fn open(&self, log: &str, seq: u64, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let bad = SealError("does not open");
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(bad);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad.clone())?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let n = self
            .key
            .open_in_place(nonce, Aad::from(Self::aad(log, seq)), &mut buf)
            .map_err(|_| bad)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

impl fmt::Debug for AesGcmSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesGcmSealer(<redacted>)")
    }
}

/// Body of a `sealed` record.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct SealedBody {
    /// The sealer's output, standard base64 with padding.
    pub(crate) sealed: String,
}
