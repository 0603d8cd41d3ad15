//! Header sections as mx6 reads them (stored messages, milter input): the
//! fields tile the header section, and removing fields keeps the rest.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let end = mx6_message::header_end(data);
    assert!(end <= data.len());
    let mut at = 0;
    for f in mx6_message::fields(data) {
        assert_eq!(f.offset, at);
        at += f.raw.len();
        let _ = (f.name(), f.value(), f.unfolded());
    }
    assert_eq!(at, end);
    if let Some(out) = mx6_message::remove_named(data, "Subject") {
        assert!(out.len() < data.len());
        assert_eq!(mx6_message::body(&out), mx6_message::body(data));
    }
});
