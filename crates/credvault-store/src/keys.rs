//! The unwrapped data-key cache: bounded, with a time-to-live and a use limit. Keys are
//! expanded on RustCrypto's AES-GCM, whose key schedule is wiped when the entry is dropped
//! (evicted, expired or invalidated), unlike ring's.
//!
//! Usage accounting: sealing takes a *permit*. Permits are reserved from the durable counter
//! in blocks ([`CacheConfig::lease`]) and the reservation is committed before any message it
//! covers is sealed, so the stored counter never undercounts (a crash loses at most unused
//! permits, which only makes it count high).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use credvault_envelope::{Backend, DataKey, KeyId, SealingKey, UsageLimits, MAX_SEALS_PER_KEY};

use crate::error::StoreError;
use crate::ids::TenantId;

/// Data-key cache settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Most keys held (the oldest is evicted first). Default 1024.
    pub capacity: usize,
    /// How long an unwrapped key is kept. Default 5 minutes.
    pub ttl: Duration,
    /// How many operations a cached key serves before it is unwrapped again. Default 100,000.
    pub max_uses: u64,
    /// Seal permits reserved from the durable usage counter at a time. Default 256.
    pub lease: u64,
    /// The usage count at which a data key refuses to seal (NIST SP 800-38D: 2^32).
    pub seal_limit: u64,
    /// The usage count at which the store starts a rotation of the tenant's data key by
    /// itself (default ⌊0.9 × 2^32⌋): the next seals use a new key, and the old one stays
    /// (retiring) until `rotate_key` has re-sealed what it holds.
    pub rotate_at: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            ttl: Duration::from_secs(300),
            max_uses: 100_000,
            lease: 256,
            seal_limit: MAX_SEALS_PER_KEY,
            rotate_at: UsageLimits::DEFAULT_ROTATE_AFTER,
        }
    }
}

impl CacheConfig {
    /// Sets the capacity (at least 1).
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n.max(1);
        self
    }

    /// Sets the time-to-live.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the use limit (at least 1).
    pub fn max_uses(mut self, n: u64) -> Self {
        self.max_uses = n.max(1);
        self
    }

    /// Sets the permit block size (at least 1).
    pub fn lease(mut self, n: u64) -> Self {
        self.lease = n.max(1);
        self
    }

    /// Sets the seal limit (tests exercise exhaustion with a small one).
    pub fn seal_limit(mut self, n: u64) -> Self {
        self.seal_limit = n;
        self
    }

    /// Sets the usage count that starts an automatic rotation (tests use a small one).
    pub fn rotate_at(mut self, n: u64) -> Self {
        self.rotate_at = n;
        self
    }

    /// Checks a durable usage total after a reservation: an error past the seal limit, else
    /// whether a rotation is due.
    pub(crate) fn check_usage(&self, total: u64) -> Result<bool, StoreError> {
        if total > self.seal_limit {
            return Err(StoreError::KeyExhausted);
        }
        Ok(total >= self.rotate_at)
    }
}

/// One unwrapped data key.
pub(crate) struct CachedKey {
    pub(crate) key: SealingKey,
    /// The record-MAC key derived from it (wiped on drop).
    pub(crate) mac: credvault_token::HmacSha256Key,
    loaded: Instant,
    uses: AtomicU64,
    permits: Mutex<u64>,
}

impl CachedKey {
    pub(crate) fn new(key: &DataKey) -> Self {
        Self {
            key: SealingKey::with_backend(key, Backend::RustCrypto),
            mac: crate::store::mac_key(key),
            loaded: Instant::now(),
            uses: AtomicU64::new(0),
            permits: Mutex::new(0),
        }
    }

    /// Takes `n` seal permits, reserving a new block through `reserve` (which returns the
    /// durable total after reserving) when there are too few. Returns whether that
    /// reservation made a rotation due ([`CacheConfig::rotate_at`]).
    pub(crate) fn take_permits(
        &self,
        n: u64,
        cfg: &CacheConfig,
        reserve: impl FnOnce(u64) -> Result<u64, StoreError>,
    ) -> Result<bool, StoreError> {
        let mut p = self
            .permits
            .lock()
            .map_err(|_| StoreError::Unsupported("key cache lock poisoned".into()))?;
        let mut due = false;
        if *p < n {
            let block = cfg.lease.max(n);
            due = cfg.check_usage(reserve(block)?)?;
            *p += block;
        }
        *p -= n;
        Ok(due)
    }
}

type KeyMap = HashMap<(TenantId, KeyId), Arc<CachedKey>>;

/// The cache.
pub(crate) struct KeyCache {
    map: Mutex<KeyMap>,
    pub(crate) cfg: CacheConfig,
}

impl KeyCache {
    pub(crate) fn new(cfg: CacheConfig) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            cfg,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, KeyMap>, StoreError> {
        self.map
            .lock()
            .map_err(|_| StoreError::Unsupported("key cache lock poisoned".into()))
    }

    /// The cached key, or `load` it (outside the lock) and cache it.
    pub(crate) fn get(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
        load: impl FnOnce() -> Result<CachedKey, StoreError>,
    ) -> Result<Arc<CachedKey>, StoreError> {
        {
            let mut m = self.lock()?;
            let k = (tenant.clone(), key_id);
            if let Some(e) = m.get(&k) {
                let fresh = e.loaded.elapsed() < self.cfg.ttl;
                if fresh && e.uses.fetch_add(1, Ordering::Relaxed) < self.cfg.max_uses {
                    return Ok(Arc::clone(e));
                }
                m.remove(&k);
            }
        }
        let entry = Arc::new(load()?);
        entry.uses.store(1, Ordering::Relaxed);
        let mut m = self.lock()?;
        while m.len() >= self.cfg.capacity {
            let oldest = m
                .iter()
                .min_by_key(|(_, v)| v.loaded)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(o) => {
                    m.remove(&o);
                }
                None => break,
            }
        }
        m.insert((tenant.clone(), key_id), Arc::clone(&entry));
        Ok(entry)
    }

    /// Drops a tenant's keys (after a rotation or rewrap).
    pub(crate) fn invalidate(&self, tenant: &TenantId) {
        if let Ok(mut m) = self.lock() {
            m.retain(|(t, _), _| t != tenant);
        }
    }

    /// Drops every key.
    pub(crate) fn clear(&self) {
        if let Ok(mut m) = self.lock() {
            m.clear();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().map(|m| m.len()).unwrap_or(0)
    }
}
