//! Outbound TLS levels end to end (`[delivery] tls`, `[[delivery.tls_policy]]`):
//! one mx6 sends, a second mx6 receives with a certificate from a test CA
//! made by openssl, both resolving through a DNS server on loopback. `verify`
//! delivers only to a certificate that chains to `delivery.ca_file` and
//! names the MX host (or a `match` name), over IPv6 and IPv4; a wrong name
//! defers with `4.7.5` and nothing arrives; `may` takes any certificate;
//! `none` sends in clear. Each outcome shows in `mx6_delivery_tls_total` and
//! in the delivery log line.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::https::ca_and_cert;
use common::*;

const SENDER_ZONE: &str = "
dest.test MX 10 mx.dest.test
mx.dest.test AAAA ::1
mx.dest.test A 127.0.0.1
";

const RECEIVER_ZONE: &str = "
src.test TXT \"v=spf1 ip6:::1 ip4:127.0.0.1 -all\"
";

fn certs(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mx6-outtls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ca_and_cert(&dir, "mx", "mx.dest.test", "DNS:mx.dest.test");
    ca_and_cert(&dir, "wrong", "wrong.test", "DNS:wrong.test");
    dir
}

/// A receiver for dest.test presenting `<stem>.crt` of `dir`.
fn receiver(name: &str, dir: &Path, stem: &str) -> Server {
    let d = dir.display();
    Server::start_with_zone(
        name,
        RECEIVER_ZONE,
        &format!(
            "[local]\ndomains = [\"dest.test\"]\n[relay]\nmynetworks = []\n[tls]\ncert = \"{d}/{stem}.crt\"\nkey = \"{d}/{stem}.key\"\n"
        ),
    )
}

fn sender(name: &str, port: u16, dir: &Path, delivery: &str, policies: &str) -> Server {
    Server::start_with_zone(
        name,
        SENDER_ZONE,
        &format!(
            "[local]\ndomains = [\"src.test\"]\n[delivery]\nport = {port}\nca_file = \"{}/ca.crt\"\n{delivery}\n{policies}\n[queue]\nretry_initial = \"1s\"\nretry_max = \"2s\"\n",
            dir.display()
        ),
    )
}

const VERIFY: &str = "[[delivery.tls_policy]]\ndomain = \"dest.test\"\nlevel = \"verify\"\n";

#[test]
fn verify_delivers_to_a_trusted_certificate_for_the_mx_name_over_both_families() {
    let dir = certs("good");
    let r = receiver("otls-recv-good", &dir, "mx");
    let s6 = sender("otls-send-good6", r.port, &dir, "", VERIFY);
    s6.submit("a@src.test", "u@dest.test");
    assert_eq!(r.wait_mail("u", "dest.test", 1).len(), 1, "sender:\n{}", s6.log_text());
    s6.wait_log("tls_policy=\"manual\"");
    assert!(s6.log_has("tls_result=\"success\""), "{}", s6.log_text());
    assert!(s6.log_has("relay=mx.dest.test[::1]:"), "{}", s6.log_text());
    assert_eq!(s6.metric("mx6_delivery_tls_total{family=\"ipv6\",policy=\"manual\",result=\"success\"}"), 1.0);

    let s4 = sender("otls-send-good4", r.port, &dir, "address_preference = \"ipv4-only\"", VERIFY);
    s4.submit("a@src.test", "w@dest.test");
    assert_eq!(r.wait_mail("w", "dest.test", 1).len(), 1, "sender:\n{}", s4.log_text());
    s4.wait_log("tls_result=\"success\"");
    assert_eq!(s4.metric("mx6_delivery_tls_total{family=\"ipv4\",policy=\"manual\",result=\"success\"}"), 1.0);
}

#[test]
fn verify_defers_a_certificate_for_another_name_unless_the_policy_matches_it() {
    let dir = certs("wrong");
    let r = receiver("otls-recv-wrong", &dir, "wrong");
    for (tag, pref, family) in [("6", "", "ipv6"), ("4", "address_preference = \"ipv4-only\"", "ipv4")] {
        let s = sender(&format!("otls-send-wrong{tag}"), r.port, &dir, pref, VERIFY);
        s.submit("a@src.test", &format!("u{tag}@dest.test"));
        s.wait_log("4.7.5 TLS with the server failed (certificate-host-mismatch)");
        assert!(s.log_has("status=deferred") || s.log_has("status=\"deferred\""), "{}", s.log_text());
        let series = format!("mx6_delivery_tls_total{{family=\"{family}\",policy=\"manual\",result=\"certificate-host-mismatch\"}}");
        assert!(s.metric(&series) >= 1.0, "{series}");
        std::thread::sleep(Duration::from_millis(500));
        assert!(r.wait_mail(&format!("u{tag}"), "dest.test", 1).is_empty(), "nothing may arrive over an unverified path");
    }
    // `match` names the certificate's name instead of the MX host.
    let policy = "[[delivery.tls_policy]]\ndomain = \"dest.test\"\nlevel = \"verify\"\nmatch = [\"wrong.test\"]\n";
    let s = sender("otls-send-match", r.port, &dir, "", policy);
    s.submit("a@src.test", "m@dest.test");
    assert_eq!(r.wait_mail("m", "dest.test", 1).len(), 1, "sender:\n{}", s.log_text());
    s.wait_log("tls_result=\"success\"");
}

#[test]
fn may_takes_any_certificate_and_none_sends_in_clear() {
    let dir = certs("may");
    let r = receiver("otls-recv-may", &dir, "wrong");
    // No entry: the default `may` does not check the certificate.
    let s = sender("otls-send-may", r.port, &dir, "", "");
    s.submit("a@src.test", "u@dest.test");
    let m = r.mail_texts("u", "dest.test", 1);
    assert_eq!(m.len(), 1, "sender:\n{}", s.log_text());
    assert!(m[0].contains("ESMTPS"), "TLS was used: {}", m[0]);
    s.wait_log("tls_policy=\"opportunistic\"");
    assert_eq!(s.metric("mx6_delivery_tls_total{family=\"ipv6\",policy=\"opportunistic\",result=\"success\"}"), 1.0);

    let s = sender("otls-send-none", r.port, &dir, "tls = \"none\"", "");
    s.submit("a@src.test", "n@dest.test");
    let m = r.mail_texts("n", "dest.test", 1);
    assert_eq!(m.len(), 1, "sender:\n{}", s.log_text());
    assert!(!m[0].contains("ESMTPS"), "no TLS: {}", m[0]);
    s.wait_log("tls_result=\"plaintext\"");
    assert_eq!(s.metric("mx6_delivery_tls_total{family=\"ipv6\",policy=\"none\",result=\"plaintext\"}"), 1.0);
}
