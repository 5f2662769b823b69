//! Nonce generation for random 96-bit AES-GCM nonces.
//!
//! A `getrandom` system call per nonce costs several times a whole 256-byte seal, so each
//! thread keeps a ChaCha20 generator seeded from the operating system and reseeds it after
//! [`RESEED_AFTER`] nonces (see `docs/decisions/0003-nonces.md`). The generator never leaves
//! its thread and is not reachable from outside this module.
//!
//! **Fork:** a child process inherits a copy of this state. A program that forks and then
//! seals in the child must call [`reseed_nonce_generator`] in the child first.

use core::cell::RefCell;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::error::RandomError;

/// Nonces drawn from one seed before the thread reseeds from the OS.
const RESEED_AFTER: u32 = 1 << 14;

struct State {
    rng: ChaCha20Rng,
    left: u32,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fn fresh() -> Result<State, RandomError> {
    let rng = ChaCha20Rng::try_from_os_rng().map_err(|_| RandomError)?;
    Ok(State {
        rng,
        left: RESEED_AFTER,
    })
}

/// Fills `out` with a fresh random nonce.
pub(crate) fn fill(out: &mut [u8]) -> Result<(), RandomError> {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let state = match slot.as_mut() {
            Some(s) if s.left > 0 => s,
            _ => slot.insert(fresh()?),
        };
        state.left -= 1;
        state.rng.fill_bytes(out);
        Ok(())
    })
}

/// Discards this thread's nonce generator state so the next nonce comes from a fresh OS seed.
///
/// Call it in a child process after `fork()` before sealing anything there; other threads'
/// states do not survive a fork.
pub fn reseed_nonce_generator() {
    STATE.with(|cell| *cell.borrow_mut() = None);
}
