//! Outbound MTA-STS end to end (RFC 8461): one mx6 sends to `dest.test`,
//! whose `_mta-sts` TXT record and policy file (served over HTTPS by
//! Python's `http.server` with a certificate from a test CA) say `enforce`
//! or `testing`; a second mx6 receives, presenting a certificate from the
//! same CA, all names resolved by a DNS server on loopback.
//!
//! Under `enforce`, a good certificate delivers over verified TLS; a
//! certificate for another name, an MX host outside the policy and a
//! STARTTLS stripped by a man in the middle all defer with `4.7.5` and
//! nothing arrives. Under `testing` the same three deliver and the failure
//! is reported. Each shows in `mx6_delivery_tls_total{policy="mta_sts"}` and
//! in the TLS-RPT counts of the state store, over IPv6 and IPv4. The policy
//! is cached: after a restart, with the policy server gone and a new id
//! published, the cached policy still refuses a bad certificate; on Redis a
//! node that never fetched the policy obeys the one another node fetched.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::https::{ca_and_cert, PolicyServer};
use common::*;

fn zone(id: &str) -> String {
    format!(
        "
dest.test MX 10 mx.dest.test
mx.dest.test AAAA ::1
mx.dest.test A 127.0.0.1
_mta-sts.dest.test TXT \"v=STSv1; id={id}\"
mta-sts.dest.test AAAA ::1
mta-sts.dest.test A 127.0.0.1
nopolicy.test MX 10 mx.dest.test
"
    )
}

const RECEIVER_ZONE: &str = "
src.test TXT \"v=spf1 ip6:::1 ip4:127.0.0.1 -all\"
";

fn certs(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mx6-sts-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ca_and_cert(&dir, "mx", "mx.dest.test", "DNS:mx.dest.test");
    ca_and_cert(&dir, "wrong", "wrong.test", "DNS:wrong.test");
    ca_and_cert(&dir, "policy", "mta-sts.dest.test", "DNS:mta-sts.dest.test");
    dir
}

fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

/// A receiver for dest.test presenting `<stem>.crt` of `dir`.
fn receiver(name: &str, dir: &Path, stem: &str) -> Server {
    let d = dir.display();
    Server::start_with_zone(
        name,
        RECEIVER_ZONE,
        &format!(
            "[local]\ndomains = [\"dest.test\", \"nopolicy.test\"]\n[relay]\nmynetworks = []\n[tls]\ncert = \"{d}/{stem}.crt\"\nkey = \"{d}/{stem}.key\"\n"
        ),
    )
}

fn sender(name: &str, port: u16, dir: &Path, sts_port: u16, family: &str) -> Server {
    sender_with(name, port, dir, sts_port, family, "")
}

/// A sender with `extra` config appended (a `[store]` section, say).
fn sender_with(name: &str, port: u16, dir: &Path, sts_port: u16, family: &str, extra: &str) -> Server {
    let pref = if family == "ipv4" { "address_preference = \"ipv4-only\"\n" } else { "" };
    Server::start_with_zone(
        name,
        &zone("1"),
        &format!(
            "[local]\ndomains = [\"src.test\"]\n[delivery]\nport = {port}\nmta_sts_port = {sts_port}\nca_file = \"{}/ca.crt\"\n{pref}[queue]\nretry_initial = \"1s\"\nretry_max = \"2s\"\n{extra}",
            dir.display()
        ),
    )
}

fn tls_series(family: &str, result: &str) -> String {
    format!("mx6_delivery_tls_total{{family=\"{family}\",policy=\"mta_sts\",result=\"{result}\"}}")
}

/// The loopback address of `family`.
fn lo(family: &str) -> &'static str {
    if family == "ipv4" {
        "127.0.0.1"
    } else {
        "::1"
    }
}

/// A man in the middle on [::1] and 127.0.0.1 that forwards to `to` and
/// rewrites STARTTLS in the server's EHLO reply to `XXXXXXXA`, as some
/// firewalls do.
fn strip_starttls(to: u16) -> u16 {
    let port = free_port();
    for addr in [format!("[::1]:{port}"), format!("127.0.0.1:{port}")] {
        let l = TcpListener::bind(addr).unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let Ok(up) = TcpStream::connect(("::1", to)) else { return };
                    let (mut c2, up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                    let mut up_w = up;
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut BufReader::new(c), &mut up_w);
                    });
                    let mut r = BufReader::new(up2);
                    let mut line = Vec::new();
                    while r.read_until(b'\n', &mut line).map(|n| n > 0).unwrap_or(false) {
                        if line.len() >= 12 && line[4..12].eq_ignore_ascii_case(b"STARTTLS") {
                            line[4..12].copy_from_slice(b"XXXXXXXA");
                        }
                        if c2.write_all(&line).is_err() {
                            return;
                        }
                        line.clear();
                    }
                });
            }
        });
    }
    port
}

#[test]
fn enforce_delivers_over_verified_tls_and_the_cached_policy_outlives_its_server_and_a_restart() {
    let dir = certs("good");
    let mut policy_server = PolicyServer::start(&dir, "policy", &policy("enforce", "mx.dest.test"));
    let r = receiver("sts-recv-good", &dir, "mx");
    for family in ["ipv6", "ipv4"] {
        let s = sender(&format!("sts-send-good-{family}"), r.port, &dir, policy_server.port, family);
        let user = format!("u-{family}");
        s.submit("a@src.test", &format!("{user}@dest.test"));
        assert_eq!(r.wait_mail(&user, "dest.test", 1).len(), 1, "sender:\n{}", s.log_text());
        s.wait_log("tls_policy=\"mta_sts\"");
        assert!(s.log_has("tls_result=\"success\""), "{}", s.log_text());
        assert_eq!(s.metric(&tls_series(family, "success")), 1.0);
        let shown = s.state_show("dest.test");
        assert!(shown.contains("sts|dest.test") && shown.contains("mode: enforce"), "the policy is cached:\n{shown}");
        let ip = lo(family);
        let rpt = format!("|sts|success|mx.dest.test|{ip}|{ip}  count 1");
        assert!(shown.contains("tlsrpt|dest.test|") && shown.contains(&rpt), "TLS-RPT counts `{rpt}`:\n{shown}");
    }

    // The policy server goes away, a new id is published, the sender
    // restarts and the MX now shows a certificate for another name: the
    // cached policy still says enforce, so the mail waits.
    let mut s = sender("sts-send-cached", r.port, &dir, policy_server.port, "ipv6");
    s.submit("a@src.test", "first@dest.test");
    assert_eq!(r.wait_mail("first", "dest.test", 1).len(), 1, "sender:\n{}", s.log_text());
    policy_server.stop();
    s.terminate();
    s.dns.set_zone(mx6_testdns::Zone::parse(&zone("2")));
    let bad = receiver("sts-recv-bad", &dir, "wrong");
    let text = std::fs::read_to_string(&s.config).unwrap().replace(&format!("port = {}\n", r.port), &format!("port = {}\n", bad.port));
    std::fs::write(&s.config, text).unwrap();
    s.spawn(&[]);
    s.submit("a@src.test", "second@dest.test");
    s.wait_log("4.7.5 TLS with the server failed (certificate-host-mismatch)");
    assert!(s.log_has("MTA-STS policy not fetched"), "the refresh was tried: {}", s.log_text());
    assert!(s.log_has("tls_policy=\"mta_sts\""), "{}", s.log_text());
    std::thread::sleep(Duration::from_millis(500));
    assert!(bad.wait_mail("second", "dest.test", 1).is_empty(), "nothing may arrive over an unverified path");
    let shown = s.state_show("dest.test");
    assert!(shown.contains("|sts|sts-policy-fetch-error|||"), "the failed refresh is reported:\n{shown}");
    assert!(shown.contains("|sts|certificate-host-mismatch|mx.dest.test|::1|::1"), "{shown}");
}

/// One failure case under enforce (deferred, nothing arrives) and under
/// testing (delivered, the failure reported), over both families.
fn enforce_defers_and_testing_reports(tag: &str, receiver_stem: &str, mx: &str, strip: bool, result: &str, reply: &str) {
    let dir = certs(tag);
    let enforce = PolicyServer::start(&dir, "policy", &policy("enforce", mx));
    let testing_dir = dir.join("testing");
    std::fs::create_dir_all(&testing_dir).unwrap();
    for f in ["policy.crt", "policy.key"] {
        std::fs::copy(dir.join(f), testing_dir.join(f)).unwrap();
    }
    let testing = PolicyServer::start(&testing_dir, "policy", &policy("testing", mx));
    let r = receiver(&format!("sts-recv-{tag}"), &dir, receiver_stem);
    let port = if strip { strip_starttls(r.port) } else { r.port };
    for family in ["ipv6", "ipv4"] {
        let s = sender(&format!("sts-send-{tag}-e-{family}"), port, &dir, enforce.port, family);
        let user = format!("e-{family}");
        s.submit("a@src.test", &format!("{user}@dest.test"));
        s.wait_log(reply);
        assert!(s.log_has("status=deferred") || s.log_has("status=\"deferred\""), "{}", s.log_text());
        assert!(s.log_has("tls_policy=\"mta_sts\""), "{}", s.log_text());
        if !mx.contains("elsewhere") {
            assert!(s.metric(&tls_series(family, result)) >= 1.0, "{}", tls_series(family, result));
        }
        let shown = s.state_show("dest.test");
        assert!(shown.contains(&format!("|sts|{result}|mx.dest.test|")), "TLS-RPT counts {result}:\n{shown}");
        std::thread::sleep(Duration::from_millis(300));
        assert!(r.wait_mail(&user, "dest.test", 1).is_empty(), "enforce: nothing may arrive");

        let s = sender(&format!("sts-send-{tag}-t-{family}"), port, &dir, testing.port, family);
        let user = format!("t-{family}");
        s.submit("a@src.test", &format!("{user}@dest.test"));
        assert_eq!(r.wait_mail(&user, "dest.test", 1).len(), 1, "testing delivers; sender:\n{}", s.log_text());
        s.wait_log(&format!("tls_result=\"{result}\""));
        assert_eq!(s.metric(&tls_series(family, result)), 1.0, "{}", tls_series(family, result));
        let ip = lo(family);
        let shown = s.state_show("dest.test");
        assert!(shown.contains(&format!("|sts|{result}|mx.dest.test|{ip}|{ip}  count 1")), "testing reports {result}:\n{shown}");
    }
}

#[test]
fn a_certificate_for_another_name_defers_under_enforce_and_is_reported_under_testing() {
    enforce_defers_and_testing_reports(
        "name",
        "wrong",
        "mx.dest.test",
        false,
        "certificate-host-mismatch",
        "4.7.5 TLS with the server failed (certificate-host-mismatch)",
    );
}

#[test]
fn an_mx_outside_the_policy_defers_under_enforce_and_is_reported_under_testing() {
    enforce_defers_and_testing_reports(
        "outside",
        "mx",
        "mx.elsewhere.test",
        false,
        "validation-failure",
        "4.7.5 no MX host of dest.test matches its MTA-STS policy",
    );
}

#[test]
fn a_stripped_starttls_defers_under_enforce_and_is_reported_under_testing() {
    enforce_defers_and_testing_reports(
        "strip",
        "mx",
        "mx.dest.test",
        true,
        "starttls-not-supported",
        "does not offer STARTTLS, which is required",
    );
}

/// Python's smtplib as the submitting client: what EHLO offers before and
/// after STARTTLS, MAIL with REQUIRETLS in clear, then a message sent with
/// REQUIRETLS under TLS.
const REQUIRETLS_CLIENT: &str = r#"
import smtplib, ssl, sys
port, to = int(sys.argv[1]), sys.argv[2]
s = smtplib.SMTP("::1", port)
s.ehlo("client.test")
print("before-tls", s.has_extn("requiretls"))
code, msg = s.docmd("MAIL FROM:<a@src.test> REQUIRETLS")
print("in-clear", code, msg.decode())
s.rset()
s.starttls(context=ssl._create_unverified_context())
s.ehlo("client.test")
print("after-tls", s.has_extn("requiretls"))
s.sendmail("a@src.test", [to], "Subject: rtls\r\n\r\nhi\r\n", mail_options=["REQUIRETLS"])
print("sent")
s.quit()
"#;

fn requiretls_send(s: &Server, to: &str) -> String {
    let out = std::process::Command::new("python3").args(["-c", REQUIRETLS_CLIENT, &s.port.to_string(), to]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn requiretls_goes_only_over_a_verified_path_and_tls_required_no_sets_policies_aside() {
    let dir = certs("rtls");
    let policy_server = PolicyServer::start(&dir, "policy", &policy("enforce", "mx.dest.test"));
    let r = receiver("sts-recv-rtls", &dir, "mx");
    for family in ["ipv6", "ipv4"] {
        let s = sender(&format!("sts-send-rtls-{family}"), r.port, &dir, policy_server.port, family);
        // Offered only under TLS (RFC 8689 §4.1); refused in clear.
        let out = requiretls_send(&s, &format!("r-{family}@dest.test"));
        assert!(out.contains("before-tls False") && out.contains("after-tls True"), "{out}");
        assert!(out.contains("in-clear 530 5.7.10"), "{out}");
        s.wait_log("requiretls=true");
        // MTA-STS enforce is a verified path: delivered, REQUIRETLS passed on.
        assert_eq!(r.wait_mail(&format!("r-{family}"), "dest.test", 1).len(), 1, "sender:\n{}", s.log_text());
        assert!(r.log_has("requiretls=true"), "the receiver was asked for REQUIRETLS: {}", r.log_text());

        // No policy for nopolicy.test: no verified path, so it comes back with 5.7.10.
        requiretls_send(&s, &format!("n-{family}@nopolicy.test"));
        let bounce = s.mail_texts("a", "src.test", 1);
        assert_eq!(bounce.len(), 1, "the sender hears of it:\n{}", s.log_text());
        assert!(bounce[0].contains("5.7.10"), "{}", bounce[0]);
        assert!(r.wait_mail(&format!("n-{family}"), "nopolicy.test", 1).is_empty(), "nothing went out unverified");
    }

    // TLS-Required: No (§5): the policy is set aside, the mail goes to a
    // certificate enforce would refuse.
    let wrong = receiver("sts-recv-rtls-wrong", &dir, "wrong");
    let s = sender("sts-send-rtls-no", wrong.port, &dir, policy_server.port, "ipv6");
    let args = ["--server", "::1", "--port", &s.port.to_string(), "--from", "a@src.test", "--to", "no@dest.test"];
    let out = swaks_ok(&[&args[..], &["--add-header", "TLS-Required: No", "--h-Subject", "optional"]].concat());
    assert!(out.contains("250 2.0.0 Ok: queued"), "{out}");
    assert_eq!(wrong.wait_mail("no", "dest.test", 1).len(), 1, "sender:\n{}", s.log_text());
    s.submit("a@src.test", "yes@dest.test");
    s.wait_log("4.7.5 TLS with the server failed (certificate-host-mismatch)");
    assert!(wrong.wait_mail("yes", "dest.test", 1).is_empty(), "without the header the policy holds");
}

#[test]
fn nodes_on_one_redis_share_the_policy_one_of_them_fetched() {
    let dir = certs("redis");
    let mut policy_server = PolicyServer::start(&dir, "policy", &policy("enforce", "mx.dest.test"));
    let redis = RedisServer::start();
    let store = format!("[store]\nbackend = \"redis\"\nurl = \"{}\"\n", redis.url());
    let good = receiver("sts-recv-redis", &dir, "mx");
    let a = sender_with("sts-send-redis-a", good.port, &dir, policy_server.port, "ipv6", &store);
    a.submit("a@src.test", "a@dest.test");
    assert_eq!(good.wait_mail("a", "dest.test", 1).len(), 1, "sender:\n{}", a.log_text());
    a.wait_log("tls_policy=\"mta_sts\"");
    // The policy server goes away; node B never fetched the policy itself,
    // yet it knows it from Redis and refuses a certificate for another name.
    policy_server.stop();
    let bad = receiver("sts-recv-redis-bad", &dir, "wrong");
    let b = sender_with("sts-send-redis-b", bad.port, &dir, policy_server.port, "ipv4", &store);
    b.submit("a@src.test", "b@dest.test");
    b.wait_log("4.7.5 TLS with the server failed (certificate-host-mismatch)");
    assert!(b.log_has("tls_policy=\"mta_sts\""), "{}", b.log_text());
    assert!(!b.log_has("MTA-STS policy not fetched"), "B did not need to fetch: {}", b.log_text());
    std::thread::sleep(Duration::from_millis(500));
    assert!(bad.wait_mail("b", "dest.test", 1).is_empty(), "nothing went to the wrong certificate");
    let shown = b.state_show("dest.test");
    assert!(
        shown.contains("sts|dest.test") && shown.contains("|sts|success|mx.dest.test|::1|::1  count 1"),
        "both nodes count into one store:\n{shown}"
    );
    assert!(shown.contains("|sts|certificate-host-mismatch|mx.dest.test|127.0.0.1|127.0.0.1"), "{shown}");
}
