#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| credvault_envelope::fuzzing::keyring_text(data));
