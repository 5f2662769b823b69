#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| credvault_gateway::fuzzing::parsers(data));
