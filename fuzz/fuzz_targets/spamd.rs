//! spamd's answers (SPAMC/1.5 SYMBOLS) as mx6 parses them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = mx6_filter::spamd::parse(data) {
        assert!(v.score.is_finite(), "a score that is not a number");
    }
});
