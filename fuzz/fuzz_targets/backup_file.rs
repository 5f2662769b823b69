#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| credvault_store::fuzzing::backup_file(data));
