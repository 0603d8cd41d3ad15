//! Milter replies (Sendmail's mfdef.h packets) as mx6 decodes them: the
//! header modifications they ask for spliced into a message (the fields not
//! touched keep their bytes, the result still parses), and `SMFIR_REPLYCODE`
//! texts turned into SMTP replies that cannot break the reply framing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mx6_filter::milter::{self, Reply};

const MSG: &[u8] = b"Received: from x\r\n\tby y\r\nSubject:hi\r\nX-8: caf\xc3\xa9  \r\nno colon here\r\n\r\nbody\r\n";

fuzz_target!(|data: &[u8]| {
    let mut edit = mx6_message::HeaderEdit::new(MSG);
    let lead = data.first().is_some_and(|b| b & 1 == 1);
    let mut pos = 1.min(data.len());
    let mut edits = 0;
    while pos < data.len() {
        match milter::decode(&data[pos..]) {
            Ok(Some((r, n))) => {
                assert!(n > 0 && pos + n <= data.len());
                pos += n;
                if milter::edit_header(&mut edit, &r, lead) {
                    edits += 1;
                }
                if let Reply::ReplyCode(text) = &r {
                    if let Some(reply) = mx6_smtp::reply::Reply::custom(text, "5.7.1") {
                        let s = reply.to_string();
                        let code = &s[..3];
                        for line in s.split_terminator("\r\n") {
                            assert!(line.starts_with(code) && !line.contains('\r') && !line.contains('\n'), "{s:?}");
                        }
                    }
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let out = edit.render(None);
    if edits == 0 {
        assert_eq!(out, MSG);
    }
    assert!(out.ends_with(b"\r\n\r\nbody\r\n"), "the body and the empty line stay");
    // What was spliced in parses as fields again, and nothing swallowed the body.
    assert_eq!(mx6_message::body(&out), b"body\r\n");
});
