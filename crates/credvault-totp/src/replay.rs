//! Replay protection: a code's step is accepted at most once per credential.

use std::collections::HashMap;
use std::sync::Mutex;

/// The replay guard could not answer (storage down). Callers must refuse the code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GuardError(pub String);

/// The joint where replay storage plugs in (memory here; the store adds a durable one).
///
/// Contract: `check_and_mark` is atomic per credential. It returns `Ok(true)` and records
/// `step` if `step` is newer than every step accepted for `credential` whose record is still
/// live (`retain_until > now`), and `Ok(false)` otherwise. Refusing older steps too means a
/// code cannot be used after a newer one was.
pub trait ReplayGuard: Send + Sync {
    /// Atomically checks that `step` was not used and marks it used until `retain_until`.
    fn check_and_mark(
        &self,
        credential: &str,
        step: u64,
        retain_until: u64,
        now: u64,
    ) -> Result<bool, GuardError>;
}

/// In-memory guard: the last accepted step per credential, with its expiry.
#[derive(Debug, Default)]
pub struct MemoryReplayGuard {
    last: Mutex<HashMap<String, (u64, u64)>>,
}

impl MemoryReplayGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops records whose retention has passed.
    pub fn prune(&self, now: u64) {
        if let Ok(mut m) = self.last.lock() {
            m.retain(|_, &mut (_, until)| until > now);
        }
    }
}

impl ReplayGuard for MemoryReplayGuard {
    fn check_and_mark(
        &self,
        credential: &str,
        step: u64,
        retain_until: u64,
        now: u64,
    ) -> Result<bool, GuardError> {
        let mut m = self
            .last
            .lock()
            .map_err(|_| GuardError("replay guard lock poisoned".into()))?;
        match m.get(credential) {
            Some(&(last, until)) if until > now && step <= last => Ok(false),
            _ => {
                m.insert(credential.to_owned(), (step, retain_until));
                Ok(true)
            }
        }
    }
}
