#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| credvault_session::fuzzing::state(data));
