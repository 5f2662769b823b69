//! Benchmarks live in `benches/`; see docs/PERFORMANCE.md.
