//! End-to-end bad input: every case gets its precise reply, the server keeps
//! serving, and no partial or smuggled message is ever stored.

mod common;

use common::*;

fn start_tx(c: &mut Raw, rcpt: &str) {
    assert!(c.cmd("EHLO c.example").starts_with("250-"));
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250 2.1.0"));
    assert!(c.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250 2.1.5"));
}

#[test]
fn end_of_data_variants_never_end_or_smuggle() {
    let s = Server::start("smuggle", "");
    for (i, variant) in [&b"\n.\n"[..], b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r"].iter().enumerate() {
        for addr in [v6(s.port), v4(s.port)] {
            let mut c = Raw::open(addr);
            start_tx(&mut c, "victim@mx.test");
            assert!(c.cmd("DATA").starts_with("354"));
            let mut m = format!("Subject: smuggle {i}\r\n\r\nhello").into_bytes();
            m.extend_from_slice(variant);
            m.extend_from_slice(
                b"MAIL FROM:<admin@mx.test>\r\nRCPT TO:<smuggled@mx.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nowned\r\n.\r\n",
            );
            c.send(&m);
            // The only end of data is the real CRLF.CRLF above; the whole thing is refused.
            assert_eq!(c.reply(), "550 5.5.2 Error: bare <CR> or <LF> in message data; lines must end with <CR><LF>\r\n");
            assert!(c.cmd("NOOP").starts_with("250"));
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(walk(&s.data().join("mail")).is_empty(), "nothing may be delivered");
}

#[test]
fn overlong_lines_nul_binary_and_limits() {
    let s = Server::start("badin", "[limits]\nmessage_size = \"10KiB\"\nrecipients = 2\n");
    let mut c = Raw::open(v6(s.port));
    c.send(format!("NOOP {}\r\n", "x".repeat(5000)).as_bytes());
    assert_eq!(c.reply(), "500 5.5.2 Error: command line too long\r\n");
    c.send(b"EHLO a\0b\r\n");
    assert_eq!(c.reply(), "500 5.5.2 Error: NUL or bare CR in command\r\n");
    c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xff\r\n");
    assert!(c.reply().starts_with("50"));
    assert!(c.cmd("DATA").starts_with("503 5.5.1"));
    assert!(c.cmd("RCPT TO:<a@mx.test>").starts_with("503 5.5.1"));
    start_tx(&mut c, "r1@mx.test");
    assert!(c.cmd("RCPT TO:<r2@mx.test>").starts_with("250"));
    assert_eq!(c.cmd("RCPT TO:<r3@mx.test>"), "452 4.5.3 Error: too many recipients\r\n");
    assert!(c.cmd("RCPT TO:<bad address>").starts_with("501 5.1.3"));
    assert!(c.cmd("RCPT TO:<x@[1.2.3]>").starts_with("501 5.1.3"));
    assert!(c.cmd("RSET").starts_with("250"));
    assert_eq!(c.cmd("MAIL FROM:<a@example.org> SIZE=20000"), "552 5.3.4 Message size exceeds fixed limit\r\n");
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<big@mx.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    for _ in 0..200 {
        c.send(format!("{}\r\n", "y".repeat(100)).as_bytes());
    }
    assert_eq!(c.cmd("."), "552 5.3.4 Message size exceeds fixed limit\r\n");
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<long@mx.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    // Long lines are accepted by default (as Postfix does); `long_lines =
    // "refuse"` refuses them (tests/hostile_clients.rs).
    c.send(format!("{}\r\n", "z".repeat(1500)).as_bytes());
    assert!(c.cmd(".").starts_with("250 2.0.0 Ok: queued"));
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<nul@mx.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"a\0b\r\n");
    assert_eq!(c.cmd("."), "550 5.6.0 Error: NUL byte in message data\r\n");
    // Still serving, and the transaction after all that works.
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<fine@mx.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c.cmd("Subject: fine\r\n\r\nok\r\n.").starts_with("250 2.0.0 Ok: queued"));
    assert_eq!(s.wait_mail("fine", "mx.test", 1).len(), 1);
    assert_eq!(s.wait_mail("long", "mx.test", 1).len(), 1);
    for u in ["big", "nul", "r1", "r2"] {
        assert!(s.wait_mail(u, "mx.test", 0).is_empty(), "{u} must have no mail");
    }
}

#[test]
fn random_binary_does_not_crash_the_server() {
    let s = Server::start("binary", "");
    let mut seed = 0x9e3779b97f4a7c15u64;
    for _ in 0..50 {
        let mut c = Raw::connect(v4(s.port));
        let mut junk = vec![0u8; 4096];
        for b in junk.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        c.send(&junk);
        drop(c);
    }
    let out = swaks_ok(&["--server", "::1", "--port", &s.port.to_string(), "--to", "after@mx.test"]);
    assert!(out.contains("250 2.0.0 Ok: queued"));
    assert_eq!(s.wait_mail("after", "mx.test", 1).len(), 1);
}

#[test]
fn starttls_with_pipelined_plaintext_is_discarded() {
    let s = Server::start("starttls-inject", "");
    // swaks can not pipeline behind STARTTLS, so a raw client does it: the
    // injected commands must not be executed, and the TLS handshake that
    // follows sees them as garbage (the connection fails or starts clean).
    let mut c = Raw::open(v6(s.port));
    assert!(c.cmd("EHLO c.example").contains("STARTTLS"));
    c.send(b"STARTTLS\r\nMAIL FROM:<inject@example.org>\r\nRCPT TO:<inject@mx.test>\r\nDATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.reply(), "220 2.0.0 Ready to start TLS\r\n");
    // No further plaintext reply may come: the server now waits for a TLS ClientHello.
    c.w.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut c.r, &mut rest);
    assert!(!rest.contains("250"), "plaintext after STARTTLS was executed: {rest}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(s.wait_mail("inject", "mx.test", 0).is_empty());
}

#[test]
fn disconnect_mid_data_leaves_nothing() {
    let mut s = Server::start("middata", "");
    for addr in [v6(s.port), v4(s.port)] {
        let mut c = Raw::open(addr);
        start_tx(&mut c, "cut@mx.test");
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(b"Subject: cut\r\n\r\nhalf a message\r\n");
        drop(c);
    }
    // BDAT cut in the middle of a chunk, too.
    let mut c = Raw::open(v6(s.port));
    start_tx(&mut c, "cut@mx.test");
    c.send(b"BDAT 1000 LAST\r\nSubject: cut\r\n");
    drop(c);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(s.wait_mail("cut", "mx.test", 0).is_empty());
    // Nor after a restart: the spool holds no trace of them.
    s.kill9();
    s.spawn(&[]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(s.wait_mail("cut", "mx.test", 0).is_empty());
    assert!(s.log_has("lost connection during message transfer"));
    assert!(!s.log_text().contains("recovered queued messages"));
}
