#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| credvault_envelope::fuzzing::wrapped_key(data));
