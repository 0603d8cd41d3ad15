//! AUTH payloads through the session: PLAIN with an initial response, PLAIN
//! and LOGIN exchanges, arbitrary base64 and what it decodes to.
#![no_main]
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use mx6_smtp::{Answer, Ask, Event, Session, SessionConfig, Timeouts};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else { return };
    let mut s = Session::new(
        SessionConfig {
            hostname: "mx.test".into(),
            client_literal: "[IPv6:2001:db8::1]".into(),
            max_message_size: 2048,
            max_recipients: 4,
            max_errors: 50,
            starttls: false,
            tls_active: true,
            auth: true,
            require_auth: true,
            timeouts: Timeouts::default(),
            max_line: 998,
            postmaster_domain: "mx.test".into(),
        },
        Instant::now(),
    );
    let b64 = String::from_utf8_lossy(payload).replace(['\r', '\n'], "");
    let input = match mode % 4 {
        0 => format!("EHLO x\r\nAUTH PLAIN {b64}\r\n"),
        1 => format!("EHLO x\r\nAUTH PLAIN\r\n{b64}\r\n"),
        2 => format!("EHLO x\r\nAUTH LOGIN {b64}\r\n{b64}\r\n"),
        _ => {
            use base64::Engine;
            format!("EHLO x\r\nAUTH PLAIN {}\r\n", base64::engine::general_purpose::STANDARD.encode(payload))
        }
    };
    s.receive(input.as_bytes(), Instant::now());
    while let Some(ev) = s.poll_event() {
        match ev {
            Event::Reply(r) => assert!(r.to_string().ends_with("\r\n")),
            Event::Ask(Ask::Auth { username, .. }) => {
                assert!(!username.contains('\0'), "the separators of PLAIN are never part of a name");
                s.answer(Answer::Accept);
            }
            Event::Ask(_) => s.answer(Answer::Accept),
            _ => {}
        }
    }
});
