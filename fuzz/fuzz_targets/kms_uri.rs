#![no_main]
// Master-key URIs: parse arbitrary text; whatever parses writes back to text that parses to
// the same URI.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = core::str::from_utf8(data) {
        if let Ok(u) = credvault_kms::MasterUri::parse(s) {
            let again = credvault_kms::MasterUri::parse(&u.to_string());
            assert_eq!(again.as_ref().ok(), Some(&u), "a written URI reads back differently");
        }
    }
});
