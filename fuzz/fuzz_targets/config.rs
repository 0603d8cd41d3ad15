//! The configuration file: parsing and the whole-file checks never panic,
//! and every error names a key.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match mx6_config::Config::parse(text, "fuzz.toml") {
        Ok(c) => {
            for f in c.findings() {
                assert!(!f.key.is_empty());
            }
        }
        Err(e) => assert!(!e.key.is_empty()),
    }
});
