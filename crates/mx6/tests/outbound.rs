//! Outbound delivery end to end: one mx6 sends, a second mx6 receives, both
//! resolving through a DNS server on loopback whose MX, AAAA and A records
//! point at `::1` and `127.0.0.1` (the remote port set by `delivery.port`).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const SENDER_ZONE: &str = "
dest.test MX 10 mx.dest.test
mx.dest.test AAAA ::1
mx.dest.test A 127.0.0.1
other.test MX 10 mx.dest.test
nullmx.test MX 0 .
v6refuse.test MX 10 mx.dest.test
hang.test MX 10 mx.hang.test
mx.hang.test AAAA 2001:db8:ffff::30
mx.hang.test A 127.0.0.1
";

/// The receiver: SPF for src.test covers loopback; nospf.test has none.
const RECEIVER_ZONE: &str = "
src.test TXT \"v=spf1 ip6:::1 ip4:127.0.0.1 -all\"
";

fn receiver(name: &str, extra: &str) -> Server {
    Server::start_with_zone(
        name,
        RECEIVER_ZONE,
        &format!("[local]\ndomains = [\"dest.test\", \"v6refuse.test\", \"hang.test\"]\n[relay]\nmynetworks = []\n{extra}"),
    )
}

fn sender(name: &str, port: u16, extra: &str) -> Server {
    Server::start_with_zone(
        name,
        SENDER_ZONE,
        &format!(
            "[local]\ndomains = [\"src.test\"]\n[delivery]\nport = {port}\n{extra}[queue]\nretry_initial = \"1s\"\nretry_max = \"2s\"\n"
        ),
    )
}

fn send(s: &Server, from: &str, to: &str) {
    let out = swaks_ok(&["--server", "::1", "--port", &s.port.to_string(), "--from", from, "--to", to, "--h-Subject", "outbound test"]);
    assert!(out.contains("250 2.0.0 Ok: queued"), "{out}");
}

/// Maildir files of user@domain on `s`, waiting up to 20 s for `want`.
fn wait_files(s: &Server, user: &str, domain: &str, want: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let f = s.wait_mail(user, domain, want);
        if f.len() >= want || Instant::now() > deadline {
            return f.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
        }
    }
}

#[test]
fn delivers_over_ipv6_and_bounces_what_is_refused() {
    let r = receiver("out-recv", "");
    let s = sender("out-send", r.port, "");
    send(&s, "a@src.test", "u@dest.test");
    let m = &wait_files(&r, "u", "dest.test", 1);
    assert_eq!(m.len(), 1, "sender log:\n{}", s.log_text());
    assert!(m[0].contains("[IPv6:::1])") && m[0].contains("(using TLS"), "{}", m[0]);
    assert!(m[0].contains("spf=pass smtp.mailfrom=a@src.test"), "{}", m[0]);
    assert!(s.log_has("relay=mx.dest.test[::1]:") && s.log_has("status=\"sent\"") || s.log_has("status=sent"), "{}", s.log_text());

    // The receiver refuses relaying to other.test: a bounce lands in the local sender's Maildir.
    send(&s, "a@src.test", "x@other.test");
    let b = wait_files(&s, "a", "src.test", 1);
    assert_eq!(b.len(), 1, "{}", s.log_text());
    assert!(b[0].starts_with("Return-Path: <>\r\n"), "{}", b[0]);
    let py = "import sys,email\nm=email.message_from_string(sys.stdin.read())\nassert m.get_content_type()=='multipart/report', m.get_content_type()\n\
              assert m.get_param('report-type')=='delivery-status'\nparts=[p.get_content_type() for p in m.walk()]\nprint(parts)\n\
              ds=[p for p in m.walk() if p.get_content_type()=='message/delivery-status'][0]\n\
              blocks=ds.get_payload()\nprint([(b.get('Final-Recipient'),b.get('Status'),b.get('Remote-MTA'),b.get('Action')) for b in blocks])";
    let out = run_with_stdin(Command::new("/usr/bin/python3").args(["-c", py]), b[0].as_bytes());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), b[0]);
    assert!(
        text.contains("'text/rfc822-headers'") && text.contains("('rfc822; x@other.test', '5.7.1', 'dns; mx.dest.test', 'failed')"),
        "{text}"
    );

    // Null MX: bounced at once, without a connection.
    send(&s, "a@src.test", "y@nullmx.test");
    let b = wait_files(&s, "a", "src.test", 2);
    assert!(b.iter().any(|t| t.contains("Status: 5.1.10") && t.contains("null MX")), "{b:?}");
}

#[test]
fn ipv6_refusal_is_retried_over_ipv4_at_once() {
    // IPv6 clients must pass SPF or DKIM at the receiver; nospf.test has neither.
    let r = receiver("out-recv6", "");
    let s = sender("out-send6", r.port, "");
    send(&s, "b@nospf.test", "v@v6refuse.test");
    let m = wait_files(&r, "v", "v6refuse.test", 1);
    assert_eq!(m.len(), 1, "sender:\n{}\nreceiver:\n{}", s.log_text(), r.log_text());
    assert!(m[0].contains("[127.0.0.1])"), "{}", m[0]);
    assert!(r.log_has("reason=\"auth_required\""));
    assert!(s.log_has("relay=mx.dest.test[127.0.0.1]:"), "{}", s.log_text());
    assert!(!s.log_text().contains("bounce queued"));
}

/// A listener whose accept queue is full: SYNs to it are dropped, so a
/// connection attempt hangs (what a broken IPv6 path looks like).
fn hanging_listener(addr: SocketAddr) -> (socket2::Socket, Vec<std::net::TcpStream>) {
    let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
    s.set_only_v6(true).unwrap();
    s.bind(&addr.into()).unwrap();
    s.listen(0).unwrap();
    let mut fill = Vec::new();
    for _ in 0..4 {
        if let Ok(c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fill.push(c);
        }
    }
    (s, fill)
}

#[test]
fn happy_eyeballs_uses_ipv4_when_ipv6_hangs() {
    let a = "2001:db8:ffff::30";
    let _lo = LoAddresses::add(&["2001:db8:ffff::30"]);
    let r = receiver("out-recv-he", "");
    let _hang = hanging_listener(SocketAddr::new(a.parse().unwrap(), r.port));
    let s = sender("out-send-he", r.port, "");
    let t0 = Instant::now();
    send(&s, "a@src.test", "w@hang.test");
    let m = wait_files(&r, "w", "hang.test", 1);
    assert_eq!(m.len(), 1, "sender:\n{}", s.log_text());
    assert!(m[0].contains("[127.0.0.1])"), "{}", m[0]);
    // First attempt, not after a 30 s connect timeout or a retry.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(!s.log_text().contains("status=\"deferred\"") && !s.log_text().contains("status=deferred"), "{}", s.log_text());
}

#[test]
fn temporary_failure_then_success_after_a_retry() {
    // The receiver defers while SPF of slow.test times out (IPv4 strict here too).
    let r = Server::start_with_zone(
        "out-recv-retry",
        "slow.test TIMEOUT\n",
        "[local]\ndomains = [\"dest.test\"]\n[relay]\nmynetworks = []\n[policy.ipv4]\nrequire_spf_or_dkim = true\n",
    );
    let s = sender("out-send-retry", r.port, "");
    send(&s, "c@slow.test", "z@dest.test");
    assert!(s.log_has("status=\"deferred\"") || s.log_has("status=deferred"), "{}", s.log_text());
    r.dns.set_zone(mx6_testdns::Zone::parse("slow.test TXT \"v=spf1 ip6:::1 ip4:127.0.0.1 -all\"\n"));
    let m = wait_files(&r, "z", "dest.test", 1);
    assert_eq!(m.len(), 1, "sender:\n{}\nreceiver:\n{}", s.log_text(), r.log_text());
}

#[test]
fn relayhost_ipv6_literal_with_auth() {
    let r = Server::start("out-relayhost", "[local]\ndomains = [\"dest.test\"]\n");
    assert!(r.user(&["add", "relay@dest.test"], "relay-pw\n").status.success());
    let s = sender(
        "out-send-relayhost",
        r.port,
        &format!("relayhost = \"[::1]:{}\"\nrelayhost_username = \"relay@dest.test\"\nrelayhost_password = \"relay-pw\"\n", r.sub_port),
    );
    send(&s, "relay@dest.test", "relay@dest.test");
    let m = wait_files(&r, "relay", "dest.test", 1);
    assert_eq!(m.len(), 1, "sender:\n{}\nreceiver:\n{}", s.log_text(), r.log_text());
    assert!(m[0].contains(" with ESMTPSA id ") && m[0].contains("[IPv6:::1]"), "{}", m[0]);
    assert!(r.log_has("user=relay@dest.test"), "{}", r.log_text());
}

/// `mx6 dkim keygen` writes ed25519 and RSA keys; mail from mynetworks is
/// signed with both; dkimpy (Debian python3-dkim) verifies each signature
/// against the published records.
#[test]
fn dkim_signatures_verify_with_dkimpy() {
    let r = receiver("out-recv-dkim", "");
    let mut s = sender("out-send-dkim", r.port, "");
    let mut records = Vec::new();
    for (sel, alg) in [("ed", "ed25519"), ("rsa", "rsa2048")] {
        let out = Command::new(mx6_bin())
            .args(["dkim", "keygen", "--domain", "src.test", "--selector", sel, "--algorithm", alg, "--config"])
            .arg(&s.config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(s.data().join(format!("dkim/src.test.{sel}.key")).exists());
        let line = text.lines().find(|l| l.starts_with(&format!("{sel}._domainkey.src.test. IN TXT "))).unwrap().to_string();
        let value: String = line.split('"').skip(1).step_by(2).collect();
        records.push((format!("{sel}._domainkey.src.test."), value));
    }
    // A second keygen never overwrites.
    let again = Command::new(mx6_bin())
        .args(["dkim", "keygen", "--domain", "src.test", "--selector", "ed", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    s.kill9();
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push_str("[[dkim]]\ndomain = \"src.test\"\nselector = \"ed\"\n[[dkim]]\ndomain = \"src.test\"\nselector = \"rsa\"\n");
    std::fs::write(&s.config, cfg).unwrap();
    s.spawn(&[]);
    send(&s, "a@src.test", "k@dest.test");
    let m = wait_files(&r, "k", "dest.test", 1);
    assert_eq!(m.len(), 1, "{}", s.log_text());
    assert_eq!(m[0].matches("DKIM-Signature:").count(), 2, "{}", m[0]);
    let py = "import sys,json,dkim\nrecs=json.loads(sys.argv[1])\n\
              def dns(name, timeout=5):\n    return recs.get(name.decode() if isinstance(name, bytes) else name, '').encode()\n\
              msg=sys.stdin.buffer.read()\nd=dkim.DKIM(msg)\nn=msg.count(b'DKIM-Signature:')\n\
              res=[d.verify(idx=i, dnsfunc=dns) for i in range(n)]\nprint(res)\nsys.exit(0 if all(res) else 1)";
    let json = serde_json::to_string(&records.iter().cloned().collect::<std::collections::HashMap<_, _>>()).unwrap();
    // The receiver added its own Received and Return-Path lines above the signatures; dkimpy ignores unsigned headers.
    let out = run_with_stdin(Command::new("/usr/bin/python3").args(["-c", py, &json]), m[0].as_bytes());
    assert!(out.status.success(), "dkimpy: {} {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr), m[0]);
    assert!(m[0].contains("a=ed25519-sha256") && m[0].contains("a=rsa-sha256"), "{}", m[0]);
}

/// The sender's IPv6 source address (`bind_ipv6`, on `lo`) has no PTR: the
/// receiver answers 550 5.7.25 over IPv6, and mx6 delivers over IPv4 at once.
#[test]
fn no_ptr_refusal_over_ipv6_falls_back_to_ipv4() {
    let a = "2001:db8:ffff::40";
    let _lo = LoAddresses::add(&["2001:db8:ffff::40"]);
    let r = receiver("out-recv-ptr", "");
    let s = sender("out-send-ptr", r.port, &format!("bind_ipv6 = \"{a}\"\n"));
    send(&s, "a@src.test", "p@dest.test");
    let m = wait_files(&r, "p", "dest.test", 1);
    assert_eq!(m.len(), 1, "sender:\n{}\nreceiver:\n{}", s.log_text(), r.log_text());
    assert!(m[0].contains("[127.0.0.1])"), "{}", m[0]);
    assert!(r.log_has(&format!("client={a}")) && r.log_has("reason=\"no_ptr\""), "{}", r.log_text());
    assert!(!s.log_text().contains("bounce queued"));
}

/// A backup MX (relay.domains) never delivers to itself or to less preferred
/// hosts: with only itself left, the mail bounces as a loop (RFC 5321 §5.1).
#[test]
fn backup_mx_does_not_loop_to_itself() {
    let zone = "backup.test MX 10 mx.test\n";
    let s = Server::start_with_zone("out-loop", zone, "[local]\ndomains = [\"src.test\"]\n[relay]\ndomains = [\"backup.test\"]\n");
    send(&s, "a@src.test", "b@backup.test");
    let b = wait_files(&s, "a", "src.test", 1);
    assert_eq!(b.len(), 1, "{}", s.log_text());
    assert!(b[0].contains("Status: 5.4.6") && b[0].contains("loops back to myself"), "{}", b[0]);
}
