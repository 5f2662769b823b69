//! A master key moving from one provider to another (`credvault rotate master --to URI`).

use std::sync::Arc;

use credvault_envelope::{DataKey, EncryptionContext, MasterKey, ProviderError, WrappedKey};

/// The new provider, with the ones it replaces: wraps (and generates) under the new one only,
/// unwraps under whichever provider a wrapped key names, and rewraps a key of an old provider
/// into the new one. A store opened with it keeps working at every point of a move; a store's
/// master-key rotation over it moves every data key, after which the old providers are no
/// longer needed.
pub struct Migrating {
    new: Arc<dyn MasterKey>,
    old: Vec<Arc<dyn MasterKey>>,
}

impl Migrating {
    /// `new` wraps from now on; `old` still unwrap what they wrapped.
    pub fn new(new: Arc<dyn MasterKey>, old: Vec<Arc<dyn MasterKey>>) -> Self {
        Self { new, old }
    }

    /// The provider a wrapped key needs: the new one unless it refuses the key as another
    /// provider's and an old one is that provider.
    fn unwrap_any(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError> {
        match self.new.unwrap(wrapped, ctx) {
            Err(ProviderError::WrongProvider { .. }) => {}
            other => return other,
        }
        let found = &wrapped.master_key().provider;
        for o in &self.old {
            if o.provider_id() == found {
                return o.unwrap(wrapped, ctx);
            }
        }
        Err(ProviderError::WrongProvider {
            expected: self.new.provider_id().to_owned(),
            found: found.clone(),
        })
    }
}

impl MasterKey for Migrating {
    fn provider_id(&self) -> &str {
        self.new.provider_id()
    }

    fn active_version(&self) -> Result<u32, ProviderError> {
        self.new.active_version()
    }

    fn wrap(&self, key: &DataKey, ctx: &EncryptionContext) -> Result<WrappedKey, ProviderError> {
        self.new.wrap(key, ctx)
    }

    fn generate(&self, ctx: &EncryptionContext) -> Result<(DataKey, WrappedKey), ProviderError> {
        self.new.generate(ctx)
    }

    fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError> {
        self.unwrap_any(wrapped, ctx)
    }

    fn rewrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<WrappedKey, ProviderError> {
        // Within the new provider (or one it can re-encrypt from, as KMS keys can), the key
        // need not leave it; from another provider it passes through this process once.
        match self.new.rewrap(wrapped, ctx) {
            Err(ProviderError::WrongProvider { .. }) => {
                let key = self.unwrap_any(wrapped, ctx)?;
                self.new.wrap(&key, ctx)
            }
            other => other,
        }
    }
}

impl std::fmt::Debug for Migrating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrating")
            .field("new", &self.new.provider_id())
            .field(
                "old",
                &self.old.iter().map(|o| o.provider_id()).collect::<Vec<_>>(),
            )
            .finish()
    }
}
