//! DATA and BDAT content: the DATA decoder (dot-unstuffing, the end of data,
//! the smuggling defense) fed arbitrary bytes split arbitrarily, and the BDAT
//! check. Decoded content never holds a bare CR or LF or an unstuffed end.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mx6_smtp::data::{check_chunked, DataDecoder, LONG_LINE, MAX_TEXT_LINE};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    let max_line = if mode & 1 == 0 { MAX_TEXT_LINE } else { LONG_LINE };
    let mut d = DataDecoder::new(4096, max_line);
    let step = 1 + (mode as usize >> 1);
    let mut pos = 0;
    let mut done = false;
    while pos < input.len() && !done {
        let end = (pos + step).min(input.len());
        let (n, fin) = d.feed(&input[pos..end]);
        assert!(n <= end - pos);
        pos += n.max(if fin { 0 } else { end - pos });
        done = fin;
    }
    if done {
        if let Ok(msg) = d.finish() {
            for (i, &b) in msg.iter().enumerate() {
                if b == b'\n' {
                    assert!(i > 0 && msg[i - 1] == b'\r', "a bare LF was accepted");
                }
                if b == b'\r' {
                    assert_eq!(msg.get(i + 1), Some(&b'\n'), "a bare CR was accepted");
                }
            }
            assert!(msg.is_empty() || msg.ends_with(b"\r\n"));
        }
    }
    if let Ok(m) = check_chunked(input.to_vec(), max_line) {
        assert!(m.is_empty() || m.ends_with(b"\r\n"));
    }
});
