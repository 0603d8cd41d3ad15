//! Milter replies (Sendmail's mfdef.h packets) as mx6 decodes them, and the
//! header and body modifications they ask for applied to a message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mx6_filter::milter;

fuzz_target!(|data: &[u8]| {
    let mut msg = milter::parse(b"Received: from x\r\n\tby y\r\nSubject: hi\r\n\r\nbody\r\n");
    let mut replaced = false;
    let mut pos = 0;
    while pos < data.len() {
        match milter::decode(&data[pos..]) {
            Ok(Some((r, n))) => {
                assert!(n > 0 && pos + n <= data.len());
                pos += n;
                milter::modify(&mut msg, &r, &mut replaced);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let _ = milter::render(&msg);
});
