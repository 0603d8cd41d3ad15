//! Fuzz the SMTP command parser: any line must parse or fail, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = mx6_smtp::command::parse(s);
        let _ = mx6_smtp::address::parse_path(s, true, true);
    }
});
