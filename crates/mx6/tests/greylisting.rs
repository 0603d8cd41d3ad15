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
