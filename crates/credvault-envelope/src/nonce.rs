//! Nonce generation for 96-bit AES-GCM nonces.
//!
//! A `getrandom` system call per nonce costs several times a whole 256-byte seal, so each
//! thread draws a random 96-bit base from the operating system and hands out
//! `base + i` (in the low 64 bits) for `i` in `0..RESEED_AFTER`, then draws a new base. Within
//! one run nonces are distinct by construction; runs start at independent random points, so
//! the collision probability over `n` nonces is about `n² / (RESEED_AFTER · 2^96)`, below the
//! `n² / 2^97` of fully random nonces that NIST SP 800-38D's 2^32 limit is computed for
//! (`docs/decisions/0003-nonces.md`). Nonces need not be unpredictable for GCM.
//!
//! **Fork:** a child process inherits this thread's state and would repeat the parent's next
//! nonces. A program that forks and then seals in the child must call
//! [`reseed_nonce_generator`] in the child first.

use core::cell::Cell;

use crate::error::RandomError;

/// Nonces handed out from one OS-drawn base (amortises the system call to ~0.1 ns a nonce).
const RESEED_AFTER: u32 = 1 << 12;

#[derive(Clone, Copy)]
struct State {
    high: [u8; 4],
    low: u64,
    used: u32,
}

const EXHAUSTED: State = State {
    high: [0; 4],
    low: 0,
    used: RESEED_AFTER,
};

thread_local! {
    static STATE: Cell<State> = const { Cell::new(EXHAUSTED) };
}

/// Fills `out` with a fresh 96-bit nonce.
pub(crate) fn fill(out: &mut [u8; 12]) -> Result<(), RandomError> {
    STATE.with(|cell| {
        let mut s = cell.get();
        if s.used >= RESEED_AFTER {
            let mut seed = [0u8; 12];
            getrandom::fill(&mut seed).map_err(|_| RandomError)?;
            let mut low = [0u8; 8];
            low.copy_from_slice(&seed[4..]);
            s = State {
                high: [seed[0], seed[1], seed[2], seed[3]],
                low: u64::from_be_bytes(low),
                used: 0,
            };
        }
        out[..4].copy_from_slice(&s.high);
        out[4..].copy_from_slice(&s.low.wrapping_add(u64::from(s.used)).to_be_bytes());
        s.used += 1;
        cell.set(s);
        Ok(())
    })
}

/// Discards this thread's nonce state so the next nonce starts from a fresh OS-drawn base.
///
/// Call it in a child process after `fork()` before sealing anything there.
pub fn reseed_nonce_generator() {
    STATE.with(|cell| cell.set(EXHAUSTED));
}
