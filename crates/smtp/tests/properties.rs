//! Property tests (run by CI): the parser and the session survive any input,
//! every reply is well-formed, and DATA decoding is exact and smuggling-proof
//! however the input is split into reads.

use std::time::Instant;

use mx6_smtp::data::{ContentError, DataDecoder};
use mx6_smtp::{command, Answer, Event, Session, SessionConfig, Timeouts};
use proptest::prelude::*;

fn session() -> Session {
    Session::new(
        SessionConfig {
            hostname: "mx.test".into(),
            client_literal: "[127.0.0.1]".into(),
            max_message_size: 4096,
            max_recipients: 5,
            max_errors: 1000,
            starttls: true,
            tls_active: false,
            auth: true,
            require_auth: false,
            timeouts: Timeouts::default(),
            max_line: mx6_smtp::data::MAX_TEXT_LINE,
            postmaster_domain: "mx.test".into(),
        },
        Instant::now(),
    )
}

fn drive(s: &mut Session, replies: &mut Vec<String>) {
    while let Some(ev) = s.poll_event() {
        match ev {
            Event::Reply(r) => replies.push(r.to_string()),
            Event::Ask(_) => s.answer(Answer::Queued("Q".into())),
            Event::StartTls => s.tls_established(),
            Event::Close | Event::Rejected { .. } | Event::Reset => {}
        }
    }
}

fn well_formed(r: &str) -> bool {
    r.ends_with("\r\n")
        && r.split_terminator("\r\n").all(|l| {
            let b = l.as_bytes();
            b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && (b[3] == b' ' || b[3] == b'-') && !l.contains('\r')
        })
}

/// SMTP-ish input: fragments that exercise the state machine, plus noise.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"EHLO x.test\r\n".to_vec()),
        Just(b"MAIL FROM:<a@b.test>\r\n".to_vec()),
        Just(b"RCPT TO:<c@d.test>\r\n".to_vec()),
        Just(b"DATA\r\n".to_vec()),
        Just(b"\r\n.\r\n".to_vec()),
        Just(b"\n.\n".to_vec()),
        Just(b"BDAT 5\r\n".to_vec()),
        Just(b"BDAT 3 LAST\r\n".to_vec()),
        Just(b"STARTTLS\r\n".to_vec()),
        Just(b"RSET\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parser_never_panics(line in ".{0,300}") {
        let _ = command::parse(&line);
    }

    #[test]
    fn session_survives_anything(frags in proptest::collection::vec(fragment(), 0..40), splits in proptest::collection::vec(1usize..50, 1..10)) {
        let input: Vec<u8> = frags.concat();
        let mut s = session();
        let mut replies = Vec::new();
        drive(&mut s, &mut replies);
        let mut pos = 0;
        let mut i = 0;
        while pos < input.len() {
            let n = splits[i % splits.len()].min(input.len() - pos);
            s.receive(&input[pos..pos + n], Instant::now());
            drive(&mut s, &mut replies);
            pos += n;
            i += 1;
        }
        for r in &replies {
            prop_assert!(well_formed(r), "malformed reply {:?}", r);
        }
    }

    #[test]
    fn data_roundtrip_any_split(lines in proptest::collection::vec("[ -~]{0,120}", 0..30), split in 0usize..4000) {
        // Dot-stuff the message as a client must, then decode.
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for l in &lines {
            if l.starts_with('.') { wire.push(b'.'); }
            wire.extend_from_slice(l.as_bytes());
            wire.extend_from_slice(b"\r\n");
            want.extend_from_slice(l.as_bytes());
            want.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\n");
        let split = split.min(wire.len());
        let mut d = DataDecoder::new(1 << 20, mx6_smtp::data::MAX_TEXT_LINE);
        let (n, done) = d.feed(&wire[..split]);
        let (m, done2) = if done { (0, true) } else { d.feed(&wire[n..]) };
        prop_assert!(done2);
        prop_assert_eq!(n + m, wire.len());
        prop_assert_eq!(d.finish().unwrap(), want);
    }

    #[test]
    fn bare_newlines_are_never_accepted(body in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')], 0..60)) {
        let mut wire = body.clone();
        wire.extend_from_slice(b"\r\n.\r\n");
        let mut d = DataDecoder::new(1 << 20, mx6_smtp::data::MAX_TEXT_LINE);
        let (n, done) = d.feed(&wire);
        prop_assert!(done);
        // What was consumed up to the end, minus the terminator, must be free
        // of bare CR/LF, or the message is refused.
        let consumed = &wire[..n - 3];
        let mut bare = false;
        for (i, &b) in consumed.iter().enumerate() {
            if b == b'\n' && (i == 0 || consumed[i - 1] != b'\r') { bare = true; }
            if b == b'\r' && consumed.get(i + 1) != Some(&b'\n') { bare = true; }
        }
        match d.finish() {
            Ok(_) => prop_assert!(!bare),
            Err(e) => prop_assert_eq!(e, ContentError::BareNewline),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// What mx6 passes on as ENVID or ORCPT decodes back to what it was given,
    /// and nothing a client sends decodes to a control character (the values
    /// end up in header fields of the notices).
    #[test]
    fn dsn_values_round_trip_and_never_carry_control_characters(
        value in "[ -~\u{e9}\u{4e2d}]{1,40}",
        wire in "[!-~]{0,40}",
    ) {
        use mx6_smtp::dsn::{decode_xtext, utf8_xtext, xtext, Orcpt, RcptDsn};
        prop_assert_eq!(decode_xtext(&xtext(&value)).unwrap(), value.clone());
        let o = Orcpt { addr_type: "utf-8".into(), addr: value.clone() };
        let line = format!("RCPT TO:<a@b.test> ORCPT={}", o.to_param());
        let Ok(command::Command::Rcpt { dsn: RcptDsn { orcpt: Some(back), .. }, .. }) = command::parse(&line) else {
            return Err(TestCaseError::fail(format!("{line} did not parse")));
        };
        prop_assert_eq!(back.addr, value);
        prop_assert!(utf8_xtext(&o.addr).is_ascii());
        for key in ["ENVID", "ORCPT=rfc822;"] {
            let sep = if key.ends_with(';') { "" } else { "=" };
            let mail = format!("MAIL FROM:<a@b.test> {key}{sep}{wire}");
            let rcpt = format!("RCPT TO:<a@b.test> {key}{sep}{wire}");
            for l in [mail, rcpt] {
                match command::parse(&l) {
                    Ok(command::Command::Mail { params, .. }) => {
                        prop_assert!(params.dsn.envid.iter().all(|e| !e.chars().any(char::is_control)));
                    }
                    Ok(command::Command::Rcpt { dsn, .. }) => {
                        prop_assert!(dsn.orcpt.iter().all(|o| !o.addr.chars().any(char::is_control)));
                    }
                    _ => {}
                }
            }
        }
    }
}
