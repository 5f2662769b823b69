//! Counting every master-key use: what a service exports as metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use credvault_envelope::{DataKey, EncryptionContext, MasterKey, ProviderError, WrappedKey};

/// A provider whose every call is counted, by operation and outcome.
pub struct Metered {
    inner: Arc<dyn MasterKey>,
    counts: [AtomicU64; 16],
}

/// The calls a [`Metered`] provider saw, by operation (`wrap`, `unwrap`, `rewrap`, `generate`)
/// and outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MasterKeyCounts {
    /// Calls that succeeded, per operation: wrap, unwrap, rewrap, generate.
    pub ok: [u64; 4],
    /// Calls that found the provider unavailable, per operation.
    pub unavailable: [u64; 4],
    /// Calls the provider refused (access denied), per operation.
    pub denied: [u64; 4],
    /// Calls that failed otherwise (wrong context, tampered, unknown version), per operation.
    pub failed: [u64; 4],
}

/// The operations, in the order of [`MasterKeyCounts`]' arrays.
pub const OPERATIONS: [&str; 4] = ["wrap", "unwrap", "rewrap", "generate"];

impl Metered {
    /// Counts the calls to `inner`.
    pub fn new(inner: Arc<dyn MasterKey>) -> Self {
        Self {
            inner,
            counts: Default::default(),
        }
    }

    /// What was counted so far.
    pub fn counts(&self) -> MasterKeyCounts {
        let get = |i: usize| self.counts[i].load(Ordering::Relaxed);
        let mut c = MasterKeyCounts::default();
        for op in 0..4 {
            c.ok[op] = get(op * 4);
            c.unavailable[op] = get(op * 4 + 1);
            c.denied[op] = get(op * 4 + 2);
            c.failed[op] = get(op * 4 + 3);
        }
        c
    }

    fn count<T>(&self, op: usize, r: Result<T, ProviderError>) -> Result<T, ProviderError> {
        let outcome = match &r {
            Ok(_) => 0,
            Err(ProviderError::Unavailable { .. }) => 1,
            Err(ProviderError::Denied { .. }) => 2,
            Err(_) => 3,
        };
        self.counts[op * 4 + outcome].fetch_add(1, Ordering::Relaxed);
        r
    }
}

impl MasterKey for Metered {
    fn provider_id(&self) -> &str {
        self.inner.provider_id()
    }

    fn active_version(&self) -> Result<u32, ProviderError> {
        self.inner.active_version()
    }

    fn wrap(&self, key: &DataKey, ctx: &EncryptionContext) -> Result<WrappedKey, ProviderError> {
        self.count(0, self.inner.wrap(key, ctx))
    }

    fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError> {
        self.count(1, self.inner.unwrap(wrapped, ctx))
    }

    fn rewrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<WrappedKey, ProviderError> {
        self.count(2, self.inner.rewrap(wrapped, ctx))
    }

    fn generate(&self, ctx: &EncryptionContext) -> Result<(DataKey, WrappedKey), ProviderError> {
        self.count(3, self.inner.generate(ctx))
    }
}

impl std::fmt::Debug for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered")
            .field("provider", &self.inner.provider_id())
            .field("counts", &self.counts())
            .finish()
    }
}
