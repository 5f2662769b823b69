#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| credvault_token::fuzzing::cbc_hmac_open(data));
