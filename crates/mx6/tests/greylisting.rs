//! Greylisting end to end, with real connections from many client addresses
//! (PROXY headers) against the loopback DNS server: prefixes, not addresses,
//! are the client; a sender with SPF or FCrDNS identity passes when it retries
//! over the other family; delay, retry window and lifetime are honoured; the
//! embedded state survives a restart; `mx6 state` shows and clears it.

mod common;

use std::time::Duration;

use common::*;

const ZONE: &str = r#"
spf.example.org TXT "v=spf1 ip6:2001:db8:5::/48 ip4:192.0.2.0/24 -all"
2001:db8:6::1 PTR mx1.fcrdns.example.net
mx1.fcrdns.example.net AAAA 2001:db8:6::1
192.0.2.60 PTR mx2.fcrdns.example.net
mx2.fcrdns.example.net A 192.0.2.60
"#;

/// Relaxed reverse-DNS policy, so clients without PTR reach greylisting.
fn config(delay: &str, window: &str, lifetime: &str) -> String {
    format!(
        r#"[greylist]
enabled = true
delay = "{delay}"
retry_window = "{window}"
lifetime = "{lifetime}"
auto_allowlist = 0
[policy.ipv6]
require_ptr = false
require_fcrdns = false
require_spf_or_dkim = false
"#
    )
}

/// A transaction from `src`: the RCPT reply when it is not positive, else
/// the reply to the message.
fn attempt(s: &Server, src: &str, from: &str, rcpt: &str) -> String {
    Raw::proxied_mail(s.proxy_port, src, from, rcpt, &format!("From: <{from}>\r\nSubject: from {src}\r\n\r\nhello"))
}

#[test]
fn prefix_is_the_client_and_timings_hold() {
    let s = Server::start_with_zone("grey-prefix", ZONE, &config("2s", "30s", "60s"));
    let r = attempt(&s, "2001:db8:1:2::10", "alice@nospf.example.com", "u@mx.test");
    assert!(r.starts_with("451 4.7.1 Greylisted, please try again in 2 seconds"), "{r}");
    // A retry before the delay is greylisted again ("early").
    let r = attempt(&s, "2001:db8:1:2::10", "alice@nospf.example.com", "u@mx.test");
    assert!(r.starts_with("451 4.7.1 Greylisted"), "{r}");
    std::thread::sleep(Duration::from_millis(2300));
    // Another address in the same /64 is the same client: it passes.
    let r = attempt(&s, "2001:db8:1:2::99", "alice@nospf.example.com", "u@mx.test");
    assert!(r.starts_with("250 "), "same /64 after the delay: {r}");
    // Another /64 is another client.
    let r = attempt(&s, "2001:db8:1:3::10", "alice@nospf.example.com", "u@mx.test");
    assert!(r.starts_with("451 4.7.1 Greylisted"), "other /64: {r}");
    // SRS/BATV/VERP tags do not make a new triplet.
    let r = attempt(&s, "2001:db8:1:2::77", "prvs=1234567890=alice@nospf.example.com", "u@mx.test");
    assert!(r.starts_with("250 "), "BATV-tagged sender: {r}");
    // IPv4: two addresses of one /24 are one client.
    assert!(attempt(&s, "198.51.100.7", "bob@nospf.example.com", "u@mx.test").starts_with("451 4.7.1 Greylisted"));
    std::thread::sleep(Duration::from_millis(2300));
    assert!(attempt(&s, "198.51.100.200", "bob@nospf.example.com", "u@mx.test").starts_with("250 "));
    assert_eq!(s.wait_mail("u", "mx.test", 3).len(), 3);

    assert!(
        s.log_has("result=\"new\" identity=2001:db8:1:2::/64") || s.log_has("result=new identity=2001:db8:1:2::/64"),
        "{}",
        s.log_text()
    );
    assert_eq!(s.metric("mx6_greylist_total{family=\"ipv6\",result=\"early\"}"), 1.0);
    assert_eq!(s.metric("mx6_greylist_total{family=\"ipv6\",result=\"passed\"}"), 2.0);
    assert_eq!(s.metric("mx6_greylist_total{family=\"ipv6\",result=\"new\"}"), 2.0);
    assert_eq!(s.metric("mx6_greylist_total{family=\"ipv4\",result=\"passed\"}"), 1.0);
    assert_eq!(s.metric("mx6_rejections_total{family=\"ipv6\",reason=\"greylisted\",stage=\"rcpt\"}"), 3.0);
    // Loopback (mynetworks) is never greylisted.
    let mut c = Raw::open(v6(s.port));
    c.cmd("EHLO localhost");
    c.cmd("MAIL FROM:<x@nospf.example.com>");
    assert!(c.cmd("RCPT TO:<u@mx.test>").starts_with("250 "));
}

#[test]
fn retry_window_and_lifetime() {
    let s = Server::start_with_zone("grey-window", ZONE, &config("1s", "3s", "4s"));
    let src = "2001:db8:2:2::1";
    assert!(attempt(&s, src, "w@nospf.example.com", "u@mx.test").starts_with("451 4.7.1 Greylisted"));
    // Retried only after the window: starts over.
    std::thread::sleep(Duration::from_millis(3500));
    assert!(attempt(&s, src, "w@nospf.example.com", "u@mx.test").starts_with("451 4.7.1 Greylisted"), "after the retry window");
    std::thread::sleep(Duration::from_millis(1200));
    assert!(attempt(&s, src, "w@nospf.example.com", "u@mx.test").starts_with("250 "));
    // Used within the lifetime: stays passed.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(attempt(&s, src, "w@nospf.example.com", "u@mx.test").starts_with("250 "));
    // Unused for longer than the lifetime: greylisted again.
    std::thread::sleep(Duration::from_millis(4500));
    assert!(attempt(&s, src, "w@nospf.example.com", "u@mx.test").starts_with("451 4.7.1 Greylisted"), "after the lifetime");
}

#[test]
fn identity_passes_over_the_other_family() {
    let s = Server::start_with_zone("grey-family", ZONE, &config("2s", "30s", "60s"));
    // SPF identity: the sender's domain authorises both addresses.
    assert!(attempt(&s, "2001:db8:5::1", "carol@spf.example.org", "u@mx.test").starts_with("451 4.7.1 Greylisted"));
    // FCrDNS identity: both PTR names are in example.net.
    assert!(attempt(&s, "2001:db8:6::1", "dave@nospf.example.com", "u@mx.test").starts_with("451 4.7.1 Greylisted"));
    // No identity: the prefix is the client.
    assert!(attempt(&s, "2001:db8:7::1", "erin@nospf.example.com", "u@mx.test").starts_with("451 4.7.1 Greylisted"));
    std::thread::sleep(Duration::from_millis(2300));
    let r = attempt(&s, "192.0.2.50", "carol@spf.example.org", "u@mx.test");
    assert!(r.starts_with("250 "), "SPF identity over IPv4: {r}");
    let r = attempt(&s, "192.0.2.60", "dave@nospf.example.com", "u@mx.test");
    assert!(r.starts_with("250 "), "FCrDNS identity over IPv4: {r}");
    let r = attempt(&s, "192.0.2.70", "erin@nospf.example.com", "u@mx.test");
    assert!(r.starts_with("451 4.7.1 Greylisted"), "no identity, other family: {r}");
    assert!(s.log_has("identity=spf:spf.example.org"), "{}", s.log_text());
    assert!(s.log_has("identity=ptr:example.net"));
}

#[test]
fn embedded_state_survives_restart_and_mx6_state_clears_it() {
    let mut s = Server::start_with_zone("grey-restart", ZONE, &config("1s", "30s", "60s"));
    let src = "2001:db8:3:3::1";
    assert!(attempt(&s, src, "frank@nospf.example.com", "u@mx.test").starts_with("451 4.7.1 Greylisted"));
    std::thread::sleep(Duration::from_millis(1200));
    assert!(attempt(&s, src, "frank@nospf.example.com", "u@mx.test").starts_with("250 "));
    // On the running server, through the control socket.
    let cfg = s.config.clone();
    let out = mx6(&["state".as_ref(), "show".as_ref(), "2001:db8:3:3::77".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("2001:db8:3:3::/64") && text.contains("greylist passed"), "{text}");
    assert!(text.contains("rep|2001:db8:3:3::/64  score"), "{text}");
    assert_eq!(s.terminate(), Some(0));
    // Stopped: the snapshot holds it.
    let out = mx6(&["state".as_ref(), "show".as_ref(), "2001:db8:3:3::/64".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("greylist passed"), "{}", String::from_utf8_lossy(&out.stdout));
    s.spawn(&[]);
    assert!(
        attempt(&s, "2001:db8:3:3::2", "frank@nospf.example.com", "u@mx.test").starts_with("250 "),
        "passed triplet kept across the restart"
    );
    let out = mx6(&["state".as_ref(), "clear".as_ref(), "2001:db8:3:3::/64".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("cleared"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(attempt(&s, "2001:db8:3:3::2", "frank@nospf.example.com", "u@mx.test").starts_with("451 4.7.1 Greylisted"), "cleared");
}

/// Reputation: a prefix that passed greylisting and delivered is good and
/// skips greylisting for new triplets; one refused repeatedly is bad and gets
/// half the rate limit.
#[test]
fn reputation_skips_greylisting_and_tightens_limits() {
    let extra = config("1s", "30s", "60s")
        + "[reputation]\ngood = 2.5\nbad = -3.0\nbad_limit_factor = 0.5\n\
           [[ratelimit]]\nwhat = \"messages\"\nprefix = \"ipv6/64\"\nlimit = 4\nwindow = \"60s\"\n\
           [ratelimit_escalation]\nchildren = 0\n";
    let s = Server::start_with_zone("reputation", ZONE, &extra);
    // Good: greylist passed (+2) and delivered (+1) = 3 (a little less once it decays).
    let good = "2001:db8:40:1::1";
    assert!(attempt(&s, good, "g@nospf.example.com", "u@mx.test").starts_with("451 4.7.1 Greylisted"));
    std::thread::sleep(Duration::from_millis(1200));
    assert!(attempt(&s, good, "g@nospf.example.com", "u@mx.test").starts_with("250 "));
    let r = attempt(&s, "2001:db8:40:1::2", "another@nospf.example.com", "u@mx.test");
    assert!(r.starts_with("250 "), "a new triplet from a good /64 is not greylisted: {r}");
    assert!(s.log_has("why=\"reputation\"") || s.log_has("why=reputation"), "{}", s.log_text());
    // A neutral /64 is still greylisted.
    assert!(attempt(&s, "2001:db8:40:2::1", "another@nospf.example.com", "u@mx.test").starts_with("451 4.7.1 Greylisted"));

    // Bad: two relay attempts (-2 each) = -4.
    let bad = "2001:db8:41:1::1";
    for _ in 0..2 {
        let r = Raw::proxied_mail(s.proxy_port, bad, "b@nospf.example.com", "victim@elsewhere.example", "x");
        assert!(r.starts_with("554 5.7.1") || r.starts_with("550 5.7.1"), "relay attempt: {r}");
    }
    let mut c = Raw::proxied(s.proxy_port, "2001:db8:41:1::2");
    assert!(c.reply().starts_with("220 "));
    c.cmd("EHLO client.example");
    // Limit 4 halved to 2, and the two relay attempts already counted two MAILs.
    let r = c.cmd("MAIL FROM:<b@nospf.example.com>");
    assert!(r.starts_with("451 4.7.1 Rate limit exceeded for 2001:db8:41:1::/64"), "bad prefix, tighter limit: {r}");
    // Three MAILs from a neutral /64 are within its limit of 4.
    let mut n = Raw::proxied(s.proxy_port, "2001:db8:42:1::1");
    n.reply();
    n.cmd("EHLO client.example");
    for _ in 0..3 {
        assert!(n.cmd("MAIL FROM:<n@nospf.example.com>").starts_with("250 "));
        n.cmd("RSET");
    }
    let out = mx6(&["state".as_ref(), "show".as_ref(), bad.as_ref(), "--config".as_ref(), s.config.as_os_str()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("rep|2001:db8:41:1::/64  score -"), "{}", String::from_utf8_lossy(&out.stdout));
}
