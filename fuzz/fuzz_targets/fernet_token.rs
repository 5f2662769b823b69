#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| credvault_token::fuzzing::fernet_token(data));
