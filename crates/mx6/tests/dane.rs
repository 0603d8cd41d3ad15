//! DANE for SMTP end to end (RFC 7672): a validating **unbound** on loopback
//! serves test zones signed in the test by **ldns-signzone**, with their
//! keys as its trust anchors; the sending mx6 uses it with `[dns] dnssec =
//! "trust-ad"`, and a second mx6 receives with certificates from a test CA.
//!
//! - `good.test`: TLSA 3 1 1 of the receiver's key delivers over IPv6 and
//!   IPv4 (`tls_policy="dane"`), DANE-TA (2 0 1 of the CA, the chain sent by
//!   SNI) delivers too;
//! - `bad.good.test`: a TLSA record that matches nothing defers with
//!   `tlsa-invalid`, nothing arrives;
//! - `bogus.test`: a TLSA record whose signature was tampered with makes
//!   unbound answer SERVFAIL: deferred with `dnssec-invalid`;
//! - `insecure.test`: unsigned, its TLSA record is ignored: delivered with
//!   opportunistic TLS.
//!
//! Each outcome shows in `mx6_delivery_tls_total{policy="dane"}`, in the log
//! line and in the TLS-RPT counts (`tlsa` policy type).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::https::{ca_and_cert, openssl};
use common::*;

/// SHA-256 of `cert`'s SubjectPublicKeyInfo (DER), hex.
fn spki_sha256(dir: &Path, cert: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("openssl x509 -in {cert} -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum"))
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

/// SHA-256 of `cert` (DER), hex.
fn cert_sha256(dir: &Path, cert: &str) -> String {
    openssl(&["x509", "-in", cert, "-outform", "DER", "-out", &format!("{cert}.der")], dir);
    let out = Command::new("sha256sum").arg(format!("{cert}.der")).current_dir(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/test.sh installs ldnsutils and unbound)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sign `zone` (text, origin `name`) in `dir`; returns its DS record.
fn sign(dir: &Path, name: &str, zone: &str) -> String {
    std::fs::write(dir.join(format!("{name}.zone")), zone).unwrap();
    let base = run(Command::new("ldns-keygen").args(["-a", "ECDSAP256SHA256", "-k", name]).current_dir(dir)).trim().to_string();
    run(Command::new("ldns-signzone").args([&format!("{name}.zone"), &base]).current_dir(dir));
    std::fs::read_to_string(dir.join(format!("{base}.ds"))).unwrap()
}

fn zone(origin: &str, body: &str) -> String {
    format!(
        "$ORIGIN {origin}.\n$TTL 300\n@ IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 300\n@ IN NS ns.{origin}.\nns IN AAAA ::1\n{body}"
    )
}

struct Unbound {
    child: Child,
    port: u16,
}

impl Unbound {
    fn start(dir: &Path, anchors: &str, zones: &[(&str, &str)]) -> Unbound {
        std::fs::write(dir.join("anchors.ds"), anchors).unwrap();
        let port = free_port();
        let mut conf = format!(
            "server:\n  interface: ::1@{port}\n  interface: 127.0.0.1@{port}\n  do-daemonize: no\n  chroot: \"\"\n  username: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n  val-log-level: 2\n  access-control: ::1 allow\n  access-control: 127.0.0.0/8 allow\n  module-config: \"validator iterator\"\n  trust-anchor-file: \"{d}/anchors.ds\"\n  root-hints: \"\"\n  local-zone: \"test.\" nodefault\n",
            d = dir.display()
        );
        for (name, file) in zones {
            conf.push_str(&format!(
                "auth-zone:\n  name: \"{name}.\"\n  zonefile: \"{}/{file}\"\n  for-upstream: yes\n  for-downstream: no\n  fallback-enabled: no\n",
                dir.display()
            ));
        }
        std::fs::write(dir.join("unbound.conf"), conf).unwrap();
        let log = std::fs::File::create(dir.join("unbound.log")).unwrap();
        let child = Command::new("unbound")
            .args(["-d", "-c", "unbound.conf"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("unbound (scripts/test.sh installs it)");
        // Ready once it answers over TCP on both families.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("::1", port)).is_err() || std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "unbound did not start: {}",
                std::fs::read_to_string(dir.join("unbound.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Unbound { child, port }
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const DOMAINS: &str = "[\"good.test\", \"ta.good.test\", \"bad.good.test\", \"bogus.test\", \"insecure.test\"]";

fn sender(name: &str, unbound: u16, port: u16, family: &str) -> Server {
    let pref = if family == "ipv4" { "address_preference = \"ipv4-only\"\n" } else { "" };
    let mut s = Server::prepare(
        name,
        &format!(
            "[local]\ndomains = [\"src.test\"]\n[delivery]\nport = {port}\n{pref}[queue]\nretry_initial = \"1s\"\nretry_max = \"2s\"\n"
        ),
    );
    let text = std::fs::read_to_string(&s.config).unwrap();
    let start = text.find("nameservers = [").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let text = format!("{}nameservers = [\"[::1]:{unbound}\"]\ndnssec = \"trust-ad\"{}", &text[..start], &text[end..]);
    std::fs::write(&s.config, text).unwrap();
    s.spawn(&[]);
    s
}

#[test]
fn tlsa_records_of_signed_zones_decide_and_insecure_zones_fall_back() {
    let dir = std::env::temp_dir().join(format!("mx6-dane-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ca_and_cert(&dir, "mx", "mx.good.test", "DNS:mx.good.test");
    ca_and_cert(&dir, "ta", "mx.ta.good.test", "DNS:mx.ta.good.test");
    let chain = std::fs::read_to_string(dir.join("ta.crt")).unwrap() + &std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    std::fs::write(dir.join("ta-chain.crt"), chain).unwrap();
    let ee = spki_sha256(&dir, "mx.crt");
    let ta = cert_sha256(&dir, "ca.crt");
    let zeros = "00".repeat(32);
    let d = dir.display();
    let r = Server::start(
        "dane-recv",
        &format!(
            "[local]\ndomains = {DOMAINS}\n[relay]\nmynetworks = []\n[policy]\nallow_networks = [\"::1/128\", \"127.0.0.0/8\"]\n[tls]\ncert = \"{d}/mx.crt\"\nkey = \"{d}/mx.key\"\n[[tls.certificate]]\nnames = [\"mx.ta.good.test\"]\ncert = \"{d}/ta-chain.crt\"\nkey = \"{d}/ta.key\"\n"
        ),
    );
    // TLSA records live at the port SMTP uses (RFC 7672 §2.2): the receiver's.
    let p = r.port;
    let hosts = "IN AAAA ::1\n{h} IN A 127.0.0.1\n";
    let host = |h: &str| format!("{h} {}", hosts.replace("{h}", h));

    let good = zone(
        "good.test",
        &format!(
            "@ IN MX 10 mx.good.test.\n{}_{p}._tcp.mx IN TLSA 3 1 1 {ee}\nta IN MX 10 mx.ta.good.test.\n{}_{p}._tcp.mx.ta IN TLSA 2 0 1 {ta}\nbad IN MX 10 mx.bad.good.test.\n{}_{p}._tcp.mx.bad IN TLSA 3 1 1 {zeros}\n",
            host("mx"),
            host("mx.ta"),
            host("mx.bad")
        ),
    );
    let bogus = zone("bogus.test", &format!("@ IN MX 10 mx.bogus.test.\n{}_{p}._tcp.mx IN TLSA 3 1 1 {ee}\n", host("mx")));
    let insecure = zone("insecure.test", &format!("@ IN MX 10 mx.insecure.test.\n{}_{p}._tcp.mx IN TLSA 3 1 1 {zeros}\n", host("mx")));
    let mut anchors = sign(&dir, "good.test", &good);
    anchors += &sign(&dir, "bogus.test", &bogus);
    // Tamper with the TLSA record's signature in bogus.test.
    let signed = std::fs::read_to_string(dir.join("bogus.test.zone.signed")).unwrap();
    let tampered: Vec<String> = signed
        .lines()
        .map(|l| {
            if l.contains("RRSIG\tTLSA") {
                let (head, sig) = l.rsplit_once(' ').unwrap();
                let flipped: String = sig
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if i == 10 {
                            if c == 'A' {
                                'B'
                            } else {
                                'A'
                            }
                        } else {
                            c
                        }
                    })
                    .collect();
                format!("{head} {flipped}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_ne!(tampered.join("\n"), signed.trim_end(), "a TLSA signature was found and changed");
    std::fs::write(dir.join("bogus.test.zone.signed"), tampered.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("insecure.test.zone"), &insecure).unwrap();
    let unbound = Unbound::start(
        &dir,
        &anchors,
        &[("good.test", "good.test.zone.signed"), ("bogus.test", "bogus.test.zone.signed"), ("insecure.test", "insecure.test.zone")],
    );

    for family in ["ipv6", "ipv4"] {
        let s = sender(&format!("dane-send-{family}"), unbound.port, r.port, family);
        let ip = if family == "ipv4" { "127.0.0.1" } else { "::1" };
        let series = |result: &str| format!("mx6_delivery_tls_total{{family=\"{family}\",policy=\"dane\",result=\"{result}\"}}");

        // DANE-EE matches the receiver's key.
        s.submit("a@src.test", &format!("ee-{family}@good.test"));
        assert_eq!(r.wait_mail(&format!("ee-{family}"), "good.test", 1).len(), 1, "sender:\n{}", s.log_text());
        s.wait_log("tls_policy=\"dane\" tls_result=\"success\"");
        assert_eq!(s.metric(&series("success")), 1.0);
        let shown = s.state_show("good.test");
        assert!(shown.contains(&format!("|tlsa|success|mx.good.test|{ip}|{ip}  count 1")), "{shown}");

        // DANE-TA: the CA the chain ends with, and the MX name checked.
        s.submit("a@src.test", &format!("ta-{family}@ta.good.test"));
        assert_eq!(r.wait_mail(&format!("ta-{family}"), "ta.good.test", 1).len(), 1, "sender:\n{}", s.log_text());
        s.wait_log(&format!("to=ta-{family}@ta.good.test"));
        assert_eq!(s.metric(&series("success")), 2.0, "{}", s.log_text());

        // A record that matches nothing: the mail waits.
        s.submit("a@src.test", &format!("bad-{family}@bad.good.test"));
        s.wait_log("4.7.5 TLS with the server failed (tlsa-invalid)");
        assert!(s.metric(&series("tlsa-invalid")) >= 1.0);
        assert!(s.state_show("bad.good.test").contains("|tlsa|tlsa-invalid|mx.bad.good.test|"));

        // A bogus signature: SERVFAIL, the host is not used.
        s.submit("a@src.test", &format!("bogus-{family}@bogus.test"));
        s.wait_log(&format!("4.7.5 DANE: _{p}._tcp.mx.bogus.test TLSA: SERVFAIL"));
        assert!(s.state_show("bogus.test").contains("|tlsa|dnssec-invalid|mx.bogus.test||  count"), "{}", s.state_show("bogus.test"));

        // Unsigned: the TLSA record means nothing, opportunistic TLS.
        s.submit("a@src.test", &format!("plain-{family}@insecure.test"));
        let m = r.mail_texts(&format!("plain-{family}"), "insecure.test", 1);
        assert_eq!(m.len(), 1, "sender:\n{}", s.log_text());
        assert!(m[0].contains("ESMTPS"), "{}", m[0]);
        s.wait_log(&format!("to=plain-{family}@insecure.test"));
        assert!(s.log_has("tls_policy=\"opportunistic\""), "{}", s.log_text());

        // mx6 check sees the same: secure records, and whether each MX address matches them.
        if family == "ipv6" {
            let audit = |domain: &str| {
                let out = Command::new(mx6_bin())
                    .args(["check", domain, "--port", &r.port.to_string(), "--config"])
                    .arg(&s.config)
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let good = audit("good.test");
            assert!(good.contains("the MX records are DNSSEC-secure"), "{good}");
            assert!(good.contains(&format!("_{p}._tcp.mx.good.test: secure TLSA records: 3 1 1")), "{good}");
            for addr in ["[::1]", "127.0.0.1"] {
                assert!(good.contains(&format!("mx.good.test {addr}:{p}: the certificate matches TLSA 3 1 1")), "{good}");
            }
            let bad = audit("bad.good.test");
            assert!(bad.contains("matches none of the TLSA records"), "{bad}");
            let insecure = audit("insecure.test");
            assert!(insecure.contains("the MX records are not DNSSEC-secure"), "{insecure}");
        }

        std::thread::sleep(Duration::from_millis(500));
        assert!(r.wait_mail(&format!("bad-{family}"), "bad.good.test", 1).is_empty(), "nothing arrives past a failed TLSA match");
        assert!(r.wait_mail(&format!("bogus-{family}"), "bogus.test", 1).is_empty(), "nothing arrives past a bogus answer");
    }
}
