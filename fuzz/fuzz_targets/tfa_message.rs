#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| credvault_tfa::fuzzing::message(data));
