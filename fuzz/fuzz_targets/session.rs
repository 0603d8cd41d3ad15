//! Fuzz the whole sans-IO session: the first byte picks how input is split into
//! reads and how questions are answered; the rest is the client's bytes.
#![no_main]
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use mx6_smtp::{reply, Answer, Event, Session, SessionConfig, Timeouts};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    let mut s = Session::new(
        SessionConfig {
            hostname: "mx.test".into(),
            client_literal: "[IPv6:2001:db8::1]".into(),
            max_message_size: 2048,
            max_recipients: 4,
            max_errors: 50,
            starttls: true,
            tls_active: false,
            auth: true,
            require_auth: false,
            timeouts: Timeouts::default(),
            max_line: if mode & 0x80 != 0 { mx6_smtp::data::LONG_LINE } else { 998 },
            postmaster_domain: "mx.test".into(),
        },
        Instant::now(),
    );
    let step = 1 + (mode as usize & 0x3f);
    let mut n = 0u32;
    for chunk in input.chunks(step) {
        s.receive(chunk, Instant::now());
        while let Some(ev) = s.poll_event() {
            match ev {
                Event::Reply(r) => {
                    let text = r.to_string();
                    assert!(text.ends_with("\r\n") && text.len() >= 5);
                }
                Event::Ask(_) => {
                    n += 1;
                    let a = if mode & 0x40 != 0 && n % 3 == 0 { Answer::Reject(reply::unknown_user()) } else { Answer::Queued(format!("Q{n}")) };
                    s.answer(a);
                }
                Event::StartTls => s.tls_established(),
                Event::Rejected { .. } | Event::Reset => {}
                Event::Close => return,
            }
        }
    }
});
