//! Random CBC initialisation vectors.
//!
//! CBC needs unpredictable IVs, so (unlike GCM nonces) they come from a CSPRNG: a per-thread
//! ChaCha20 seeded from the operating system and reseeded after 64 KiB of output. A `getrandom`
//! call per IV would cost more than encrypting a 256-byte secret.
//!
//! **Fork:** a child inherits this state; call [`reseed_iv_generator`] in the child before
//! encrypting there.

use core::cell::RefCell;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// IVs drawn from one seed before reseeding (64 KiB of output).
const RESEED_AFTER: u32 = 4096;

struct State {
    rng: ChaCha20Rng,
    left: u32,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// A fresh random 16-byte IV, or `None` if the OS generator failed.
pub(crate) fn random_iv() -> Option<[u8; 16]> {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let state = match slot.as_mut() {
            Some(s) if s.left > 0 => s,
            _ => slot.insert(State {
                rng: ChaCha20Rng::try_from_os_rng().ok()?,
                left: RESEED_AFTER,
            }),
        };
        state.left -= 1;
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&state.rng.next_u64().to_le_bytes());
        iv[8..].copy_from_slice(&state.rng.next_u64().to_le_bytes());
        Some(iv)
    })
}

/// Discards this thread's IV generator so the next IV comes from a fresh OS seed. Call it in a
/// child process after `fork()`.
pub fn reseed_iv_generator() {
    STATE.with(|cell| *cell.borrow_mut() = None);
}
