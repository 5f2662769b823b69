//! Runnable examples; see `src/bin/`. Run one with
//! `cargo run -p credvault-examples --bin rotate_keys`.
//!
//! The workspace README's library example is compiled and run as a doc test of this crate
//! (below), so it cannot fall out of step with the API.
#![doc = include_str!("../../README.md")]
