//! The open-relay battery: from a client outside mynetworks (its address given
//! by a PROXY header), over both families, every address trick is refused and
//! nothing is queued for a remote domain. The same tricks from mynetworks and
//! authenticated users are checked in the policy crate's unit tests.

mod common;

use common::*;

const TRICKS: &[&str] = &[
    "user%other.test@mx.test",
    "other.test!user@mx.test",
    "@mx.test:user@other.test",
    "@mx.test,@other.test:user@other.test",
    "\"user@other.test\"@mx.test",
    "\"user%other.test\"@mx.test",
    "\"other.test!user\"@mx.test",
    "user@other.test@mx.test",
    "user@[192.0.2.1]",
    "user@[IPv6:2001:db8::1]",
    "user@[127.0.0.1]",
    "user@[IPv6:::1]",
    "user@other.test.",
    "USER@OTHER.TEST",
    "user@sub.mx.test",
    "user@mx.test.other.test",
    "user@xn--mnchen-3ya.test",
    "user@other.test%mx.test",
];

#[test]
fn tricks_from_strangers_never_relay_on_either_family() {
    let s = Server::start_with_zone("open-relay", STRANGERS, "[local]\ndomains = [\"mx.test\", \"bücher.test\"]\n");
    for proxy in ["PROXY TCP6 2001:db8:bad::5 ::1 40000 25\r\n", "PROXY TCP4 192.0.2.5 127.0.0.1 40000 25\r\n"] {
        for trick in TRICKS {
            let mut c = Raw::connect(v6(s.proxy_port));
            c.send(proxy.as_bytes());
            assert!(c.reply().starts_with("220 "));
            c.cmd("EHLO stranger.example");
            assert!(c.cmd("MAIL FROM:<spam@example.net>").starts_with("250"));
            let r = c.cmd(&format!("RCPT TO:<{trick}>"));
            assert!(r.starts_with('5'), "{trick} via {proxy:?}: {r}");
            assert_eq!(c.cmd("DATA"), "554 5.5.1 Error: no valid recipients\r\n", "{trick}");
        }
        // Local domains in any spelling are still delivered locally.
        for (ok, user, domain) in [("Local@MX.test.", "local", "mx.test"), ("idn@xn--bcher-kva.test", "idn", "xn--bcher-kva.test")] {
            let mut c = Raw::connect(v6(s.proxy_port));
            c.send(proxy.as_bytes());
            c.reply();
            c.cmd("EHLO stranger.example");
            c.cmd("MAIL FROM:<someone@example.net>");
            assert!(c.cmd(&format!("RCPT TO:<{ok}>")).starts_with("250"), "{ok}");
            assert!(c.cmd("DATA").starts_with("354"));
            assert!(c.cmd("Subject: ok\r\n\r\nhi\r\n.").starts_with("250 2.0.0 Ok: queued"));
            assert!(!s.wait_mail(user, domain, 1).is_empty(), "{ok}");
        }
    }
    let want = 2 * (TRICKS.len() - 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut log = s.log_text();
    while log.matches("reason=\"relay_denied\"").count() < want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        log = s.log_text();
    }
    assert!(log.matches("reason=\"relay_denied\"").count() >= want, "{log}");
    // Every queued message was delivered locally; no outbound attempt was made.
    let outbound: Vec<&str> = log.lines().filter(|l| l.contains(" relay=") && !l.contains("relay=\"local\"")).collect();
    assert!(outbound.is_empty(), "something was queued for a remote domain:\n{outbound:?}");
}
