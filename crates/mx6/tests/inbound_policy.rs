//! Inbound policy end to end: clients on both families (addresses from PROXY
//! headers) against a loopback DNS server with a zone for every case —
//! reverse DNS, SPF, DKIM (signed by dkimpy), DMARC, DNSBL, lookups that never
//! answer — asserting the reply code, the enhanced status and the
//! Authentication-Results header of what was delivered.

mod common;

use std::process::Command;

use common::*;

/// The reversed-nibble (or reversed-octet) DNSBL label of an address.
fn bl_label(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>().unwrap() {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        std::net::IpAddr::V6(v6) => v6.octets().iter().rev().map(|b| format!("{:x}.{:x}", b & 0xf, b >> 4)).collect::<Vec<_>>().join("."),
    }
}

const ZONE: &str = r#"
2001:db8:10::2 PTR liar.example.org
liar.example.org AAAA 2001:db8:99::1
2001:db8:10::3 PTR good.example.org
good.example.org AAAA 2001:db8:10::3
2001:db8:10::9 TIMEOUT
192.0.2.30 PTR v4.example.org
v4.example.org A 192.0.2.30
spf-pass.test TXT "v=spf1 ip6:2001:db8:10::/48 ip4:192.0.2.0/24 -all"
spf-fail.test TXT "v=spf1 -all"
spf-soft.test TXT "v=spf1 ~all"
spf-perm.test TXT "v=spf1 a:a1.test a:a2.test a:a3.test a:a4.test a:a5.test a:a6.test a:a7.test a:a8.test a:a9.test a:a10.test a:a11.test -all"
spf-slow.test TIMEOUT
_dmarc.dmarc-reject.test TXT "v=DMARC1; p=reject"
_dmarc.dmarc-quar.test TXT "v=DMARC1; p=quarantine"
_dmarc.dmarc-none.test TXT "v=DMARC1; p=none"
"#;

struct Client {
    c: Raw,
}

impl Client {
    /// Connect through the PROXY listener as `src`, EHLO `helo`.
    fn new(s: &Server, src: &str, helo: &str) -> Client {
        let mut c = Raw::connect(v6(s.proxy_port));
        let hdr = if src.contains(':') {
            format!("PROXY TCP6 {src} ::1 40000 25\r\n")
        } else {
            format!("PROXY TCP4 {src} 127.0.0.1 40000 25\r\n")
        };
        c.send(hdr.as_bytes());
        assert!(c.reply().starts_with("220 "));
        c.cmd(&format!("EHLO {helo}"));
        Client { c }
    }

    /// MAIL, RCPT, DATA with `message`; returns the first reply that is not
    /// positive, or the final one.
    fn send(&mut self, from: &str, rcpt: &str, message: &str) -> String {
        let r = self.c.cmd(&format!("MAIL FROM:<{from}>"));
        if !r.starts_with("250") {
            return r;
        }
        let r = self.c.cmd(&format!("RCPT TO:<{rcpt}>"));
        if !r.starts_with("250") {
            return r;
        }
        assert!(self.c.cmd("DATA").starts_with("354"));
        self.c.cmd(&format!("{message}\r\n."))
    }
}

fn message(from_header: &str, subject: &str) -> String {
    format!("From: <{from_header}>\r\nTo: <u@mx.test>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\r\nbody of {subject}\r\n")
}

fn extra() -> String {
    "[local]\ndomains = [\"mx.test\"]\n[dnsbl]\nthreshold = 1\n[[dnsbl.sites]]\nzone = \"bl.test\"\ncodes = [\"127.0.0.2\"]\n".into()
}

#[test]
fn reverse_dns_spf_dmarc_and_dnsbl() {
    let zone = format!(
        "{ZONE}\n{}.bl.test A 127.0.0.2\n{}.bl.test A 127.0.0.2\n{}.bl.test A 127.0.0.9\n",
        bl_label("2001:db8:10::66"),
        bl_label("192.0.2.66"),
        bl_label("2001:db8:10::3")
    );
    let s = Server::start_with_zone("inbound", &zone, &extra());
    let good6 = "2001:db8:10::3";
    let cases: &[(&str, &str, &str, &str)] = &[
        // (client, envelope sender, header From, expected reply prefix)
        ("2001:db8:10::1", "a@spf-pass.test", "a@spf-pass.test", "550 5.7.25"), // no PTR
        ("2001:db8:10::2", "a@spf-pass.test", "a@spf-pass.test", "550 5.7.25"), // PTR not confirmed
        ("2001:db8:10::9", "a@spf-pass.test", "a@spf-pass.test", "451 4.7.25"), // PTR lookup never answers
        (good6, "a@spf-fail.test", "a@spf-fail.test", "550 5.7.23"),
        (good6, "a@spf-soft.test", "a@spf-soft.test", "550 5.7.26"), // softfail: neither SPF nor DKIM passes
        (good6, "a@spf-perm.test", "a@spf-perm.test", "550 5.7.26"),
        (good6, "a@spf-slow.test", "a@spf-slow.test", "451 4.7.26"), // SPF lookup never answers: defer
        (good6, "a@spf-pass.test", "x@dmarc-reject.test", "550 5.7.1"),
        ("2001:db8:10::66", "a@spf-pass.test", "a@spf-pass.test", "554 5.7.1"), // DNSBL, IPv6
        ("192.0.2.66", "a@spf-pass.test", "a@spf-pass.test", "554 5.7.1"),      // DNSBL, IPv4
        // Accepted:
        (good6, "a@spf-pass.test", "a@spf-pass.test", "250 2.0.0"),
        (good6, "a@spf-pass.test", "x@dmarc-quar.test", "250 2.0.0"),
        (good6, "a@spf-pass.test", "x@dmarc-none.test", "250 2.0.0"),
        ("192.0.2.30", "a@spf-perm.test", "a@spf-perm.test", "250 2.0.0"), // IPv4: recorded, not enforced
        ("192.0.2.31", "a@spf-soft.test", "a@spf-soft.test", "250 2.0.0"), // IPv4 without PTR
    ];
    for (i, (client, from, hfrom, want)) in cases.iter().enumerate() {
        let mut c = Client::new(&s, client, "client.example");
        let r = c.send(from, &format!("u{i}@mx.test"), &message(hfrom, &format!("case{i}")));
        assert!(r.starts_with(want), "case {i} {client} {from} {hfrom}: want {want}, got {r}\n{}", s.log_text());
    }
    let ar = |i: usize| {
        let m = &s.mail_texts(&format!("u{i}"), "mx.test", 1)[0];
        let start = m.find("Authentication-Results: mx.test;").unwrap_or_else(|| panic!("no A-R in {m}"));
        let end = m[start..].find("\r\n").map(|e| {
            // The folded header ends at the first line that does not start with a tab.
            let mut p = start + e;
            while m[p + 2..].starts_with('\t') {
                p += 2 + m[p + 2..].find("\r\n").unwrap();
            }
            p
        });
        m[start..end.unwrap()].to_string()
    };
    let a = ar(10);
    for want in [
        "iprev=pass (good.example.org) smtp.remote-ip=2001:db8:10::3",
        "spf=pass smtp.mailfrom=a@spf-pass.test",
        "dkim=none",
        "dmarc=none header.from=spf-pass.test",
    ] {
        assert!(a.contains(want), "{want} in {a}");
    }
    assert!(ar(12).contains("dmarc=fail (p=none) header.from=dmarc-none.test"), "{}", ar(12));
    assert!(ar(13).contains("spf=permerror smtp.mailfrom=a@spf-perm.test"), "{}", ar(13));
    assert!(ar(14).contains("iprev=permerror smtp.remote-ip=192.0.2.31") && ar(14).contains("spf=softfail"), "{}", ar(14));
    // DMARC quarantine: into Junk, marked.
    let junk = s.data().join("mail/mx.test/u11/.Junk/new");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(&junk).map(|d| d.count()).unwrap_or(0) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let f = std::fs::read_dir(&junk).unwrap().next().unwrap().unwrap().path();
    let q = std::fs::read_to_string(f).unwrap();
    assert!(q.contains("X-Mx6-Quarantine: dmarc_quarantine") && q.contains("dmarc=fail (p=quarantine) header.from=dmarc-quar.test"), "{q}");
    // Reason tokens in logs and metrics.
    for reason in ["no_ptr", "fcrdns_mismatch", "spf_fail", "auth_required", "dmarc_reject", "dnsbl", "dns_temperror"] {
        assert!(s.log_has(&format!("reason=\"{reason}\"")), "{reason} not logged");
    }
    let (_, metrics) = s.http_get("/metrics");
    for series in [
        "mx6_rejections_total{family=\"ipv6\",reason=\"no_ptr\",stage=\"mail\"} 1",
        "mx6_rejections_total{family=\"ipv6\",reason=\"fcrdns_mismatch\",stage=\"mail\"} 1",
        "mx6_rejections_total{family=\"ipv6\",reason=\"spf_fail\",stage=\"mail\"} 1",
        "mx6_rejections_total{family=\"ipv6\",reason=\"auth_required\",stage=\"data\"} 2",
        "mx6_rejections_total{family=\"ipv6\",reason=\"dmarc_reject\",stage=\"data\"} 1",
        "mx6_rejections_total{family=\"ipv6\",reason=\"dnsbl\",stage=\"mail\"} 1",
        "mx6_rejections_total{family=\"ipv4\",reason=\"dnsbl\",stage=\"mail\"} 1",
        "mx6_rejections_total{family=\"ipv6\",reason=\"dns_temperror\",stage=\"mail\"} 1",
        "mx6_rejections_total{family=\"ipv6\",reason=\"dns_temperror\",stage=\"data\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}

#[test]
fn forged_results_removed_and_exemptions_apply() {
    let s = Server::start_with_zone(
        "inbound-exempt",
        ZONE,
        &format!("{}[policy]\nallow_networks = [\"2001:db8:77::/48\"]\nallow_sender_domains = [\"partner.test\"]\n", extra()),
    );
    let forged =
        "Authentication-Results: mx.test; spf=pass smtp.mailfrom=a@spf-fail.test\r\nAuthentication-Results: other.example; dkim=pass\r\n";
    let mut c = Client::new(&s, "2001:db8:10::3", "client.example");
    let r = c.send("a@spf-pass.test", "f@mx.test", &format!("{forged}{}", message("a@spf-pass.test", "forged")));
    assert!(r.starts_with("250 "), "{r}");
    let m = &s.mail_texts("f", "mx.test", 1)[0];
    assert_eq!(m.matches("Authentication-Results: mx.test;").count(), 1, "{m}");
    assert!(!m.contains("smtp.mailfrom=a@spf-fail.test"), "{m}");
    assert!(m.contains("Authentication-Results: other.example; dkim=pass"), "{m}");
    // An allowlisted network and an allowlisted sender domain skip the checks.
    let mut c = Client::new(&s, "2001:db8:77::1", "client.example");
    assert!(c.send("a@nowhere.test", "g@mx.test", &message("a@nowhere.test", "allowed")).starts_with("250 "));
    let mut c = Client::new(&s, "2001:db8:10::1", "client.example");
    assert!(c.send("a@mail.partner.test", "h@mx.test", &message("a@mail.partner.test", "partner")).starts_with("250 "));
    // Loopback is in mynetworks: no checks, a header that says so.
    let out = swaks_ok(&["--server", "::1", "--port", &s.port.to_string(), "--to", "i@mx.test"]);
    assert!(out.contains("250 2.0.0 Ok: queued"));
    assert!(s.mail_texts("i", "mx.test", 1)[0].contains("Authentication-Results: mx.test; none\r\n"));
}

/// dkimpy (Debian python3-dkim) signs; mx6 verifies.
#[test]
fn dkim_signatures_from_dkimpy() {
    let dir = std::env::temp_dir().join(format!("mx6-dkim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, txt) = dkim_rsa_key(&dir);
    let zone = format!("{ZONE}\nsel._domainkey.dkim.test TXT {txt}\n");
    let s = Server::start_with_zone("inbound-dkim", &zone, &extra());

    let msg = message("a@dkim.test", "signed");
    let script = "import sys,dkim\nkey=open(sys.argv[1],'rb').read()\nmsg=sys.stdin.buffer.read()\n\
                  sig=dkim.sign(msg,b'sel',b'dkim.test',key,include_headers=[b'from',b'to',b'subject',b'message-id'])\n\
                  sys.stdout.buffer.write(sig+msg)";
    let signed = run_with_stdin(Command::new("/usr/bin/python3").args(["-c", script]).arg(&key), msg.as_bytes());
    assert!(signed.status.success(), "dkimpy: {}", String::from_utf8_lossy(&signed.stderr));
    let signed = String::from_utf8(signed.stdout).unwrap().replace("\r\n", "\n").replace('\n', "\r\n");
    let signed = signed.trim_end_matches("\r\n").to_string();
    // IPv6 client with FCrDNS, no SPF for dkim.test: DKIM alone satisfies the policy.
    let mut c = Client::new(&s, "2001:db8:10::3", "client.example");
    let r = c.send("a@dkim.test", "d1@mx.test", &signed);
    assert!(r.starts_with("250 "), "{r}\n{}", s.log_text());
    let m = &s.mail_texts("d1", "mx.test", 1)[0];
    assert!(m.contains("dkim=pass header.d=dkim.test header.s=sel"), "{m}");
    assert!(m.contains("dmarc=none") || m.contains("dmarc=pass"), "{m}");
    // A modified body fails: refused over IPv6 (nothing passes), recorded over IPv4.
    let tampered = signed.replace("body of signed", "body of tampered");
    let mut c = Client::new(&s, "2001:db8:10::3", "client.example");
    assert!(c.send("a@dkim.test", "d2@mx.test", &tampered).starts_with("550 5.7.26"));
    let mut c = Client::new(&s, "192.0.2.30", "client.example");
    assert!(c.send("a@dkim.test", "d3@mx.test", &tampered).starts_with("250 "));
    assert!(s.mail_texts("d3", "mx.test", 1)[0].contains("dkim=fail header.d=dkim.test header.s=sel"));
}
