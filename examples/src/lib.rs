//! Runnable examples; see `src/bin/`. Run one with
//! `cargo run -p credvault-examples --bin rotate_keys`.
