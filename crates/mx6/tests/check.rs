//! `mx6 check` against a DNS server on loopback and mx6 itself as the MX: a
//! correct domain passes; each broken domain produces its own finding and
//! exit 1, in text and JSON.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

use common::*;

const ZONE: &str = r#"
::1 PTR mx.good.test
127.0.0.1 PTR mx.good.test
mx.good.test AAAA ::1
mx.good.test A 127.0.0.1
good.test MX 10 mx.good.test
good.test TXT "v=spf1 ip6:::1 ip4:127.0.0.1 ip6:2001:db8::/32 -all"
_dmarc.good.test TXT "v=DMARC1; p=reject; rua=mailto:dmarc@good.test"
mx6._domainkey.good.test TXT "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
_mta-sts.good.test TXT "v=STSv1; id=20261128"
mta-sts.good.test AAAA ::1
mta-sts.good.test A 127.0.0.1
_smtp._tls.good.test TXT "v=TLSRPTv1; rua=mailto:tls@good.test"

noaaaa.test MX 10 mx4.noaaaa.test
mx4.noaaaa.test A 127.0.0.1
noaaaa.test TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.noaaaa.test TXT "v=DMARC1; p=reject"

noptr.test MX 10 mx.noptr.test
mx.noptr.test AAAA 2001:db8:ffff::25
noptr.test TXT "v=spf1 ip6:2001:db8:ffff::/48 -all"
_dmarc.noptr.test TXT "v=DMARC1; p=reject"

unconfirmed.test MX 10 mx.unconfirmed.test
mx.unconfirmed.test AAAA 2001:db8:ffff::26
2001:db8:ffff::26 PTR elsewhere.test
elsewhere.test AAAA 2001:db8:ffff::99
unconfirmed.test TXT "v=spf1 ip6:2001:db8:ffff::/48 -all"
_dmarc.unconfirmed.test TXT "v=DMARC1; p=reject"

spf4only.test MX 10 mx.good.test
spf4only.test TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.spf4only.test TXT "v=DMARC1; p=reject"

spflong.test MX 10 mx.good.test
spflong.test TXT "v=spf1 ip6:::1 ip4:127.0.0.1 include:i1.spflong.test -all"
i1.spflong.test TXT "v=spf1 a:a1.test a:a2.test a:a3.test a:a4.test a:a5.test include:i2.spflong.test -all"
i2.spflong.test TXT "v=spf1 a:a6.test a:a7.test a:a8.test a:a9.test a:a10.test -all"
_dmarc.spflong.test TXT "v=DMARC1; p=reject"

nodmarc.test MX 10 mx.good.test
nodmarc.test TXT "v=spf1 ip6:::1 ip4:127.0.0.1 -all"

notls.test MX 10 mx.good.test
notls.test TXT "v=spf1 ip6:::1 ip4:127.0.0.1 -all"
_dmarc.notls.test TXT "v=DMARC1; p=none"

nosts.test MX 10 mx.good.test
nosts.test TXT "v=spf1 ip6:::1 ip4:127.0.0.1 -all"
_dmarc.nosts.test TXT "v=DMARC1; p=reject"
_mta-sts.nosts.test TXT "v=STSv1; id=1"
"#;

fn check(s: &Server, port: u16, args: &[&str]) -> (i32, String) {
    let out = Command::new(mx6_bin())
        .arg("check")
        .args(args)
        .arg("--port")
        .arg(port.to_string())
        .arg("--config")
        .arg(&s.config)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An SMTP server on [::1] and 127.0.0.1 that offers no STARTTLS.
fn plain_smtp() -> u16 {
    let port = free_port();
    for addr in [format!("[::1]:{port}"), format!("127.0.0.1:{port}")] {
        let l = TcpListener::bind(&addr).unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut w = c.try_clone().unwrap();
                    let _ = w.write_all(b"220 plain.test ESMTP\r\n");
                    for line in BufReader::new(c).lines().map_while(Result::ok) {
                        let r: &[u8] = if line.to_ascii_uppercase().starts_with("EHLO") {
                            b"250-plain.test\r\n250 PIPELINING\r\n"
                        } else if line.to_ascii_uppercase().starts_with("QUIT") {
                            let _ = w.write_all(b"221 bye\r\n");
                            return;
                        } else {
                            b"502 no\r\n"
                        };
                        let _ = w.write_all(r);
                    }
                });
            }
        });
    }
    port
}

// hickory answers every loopback reverse lookup with "localhost" itself
// (RFC 6761), so the cases without (or with a wrong) PTR use addresses on `lo`.
#[test]
fn audit_findings_and_exit_codes() {
    let _lo = LoAddresses::add(&["2001:db8:ffff::25", "2001:db8:ffff::26"]);
    // mx6 also serves good.test's MTA-STS policy, with a certificate from a test CA.
    let ca = std::env::temp_dir().join(format!("mx6-check-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ca);
    std::fs::create_dir_all(&ca).unwrap();
    common::https::ca_and_cert(&ca, "sts", "mta-sts.good.test", "DNS:mta-sts.good.test");
    let sts = free_port();
    let d = ca.display();
    let s = Server::start_with_zone(
        "check",
        ZONE,
        &format!(
            "[[tls.certificate]]\nnames = [\"mta-sts.good.test\"]\ncert = \"{d}/sts.crt\"\nkey = \"{d}/sts.key\"\n\
             [mta_sts]\nlisten = [\"[::1]:{sts}\", \"127.0.0.1:{sts}\"]\ndomains = [\"good.test\"]\nmx = [\"mx.good.test\"]\n\
             [delivery]\nmta_sts_port = {sts}\nca_file = \"{d}/ca.crt\"\n"
        ),
    );
    let (code, text) = check(&s, s.port, &["good.test", "--ip", "2001:db8::25"]);
    assert_eq!(code, 0, "{text}");
    let sts6 = format!("ok       https://mta-sts.good.test:{sts} ::1: policy: mode enforce, mx mx.good.test, max_age 604800");
    let sts4 = format!("ok       https://mta-sts.good.test:{sts} 127.0.0.1: policy: mode enforce");
    for want in [
        "ok       mx.good.test: preference 10",
        "ok       mx.good.test: AAAA ::1",
        // hickory answers loopback reverse lookups itself (RFC 6761 "localhost").
        "ok       ::1: PTR ",
        "ok       127.0.0.1: PTR ",
        "ok       2001:db8::25: authorised",
        "ok       _dmarc.good.test: v=DMARC1; p=reject",
        "ok       mx6._domainkey.good.test: key published",
        "ok       mx.good.test [::1]:",
        &sts6,
        &sts4,
        "STARTTLS: TLSv1_3",
        "0 errors",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
    let (code, json) = check(&s, s.port, &["good.test", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["errors"], 0);

    let plain = plain_smtp();
    let cases: &[(&str, u16, &str, &str)] = &[
        ("noaaaa.test", s.port, "address", "no MX host has an AAAA record"),
        ("noptr.test", s.port, "ptr", "no PTR record"),
        ("unconfirmed.test", s.port, "ptr", "PTR elsewhere.test does not resolve back"),
        ("spf4only.test", s.port, "spf", "not authorised by SPF"),
        ("spflong.test", s.port, "spf", "more than 10 DNS lookups"),
        ("nodmarc.test", s.port, "dmarc", "no DMARC record"),
        ("notls.test", plain, "smtp", "no STARTTLS"),
        ("nosts.test", s.port, "mta-sts", "the policy host has no address"),
    ];
    for (domain, port, group, finding) in cases {
        let (code, text) = check(&s, *port, &[domain]);
        assert_eq!(code, 1, "{domain}:\n{text}");
        assert!(text.lines().any(|l| l.trim_start().starts_with("error") && l.contains(finding)), "{domain}: {finding} in\n{text}");
        let (code, json) = check(&s, *port, &[domain, "--json"]);
        assert_eq!(code, 1);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let hit = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == *group && f["level"] == "error" && f["message"].as_str().unwrap().contains(finding));
        assert!(hit, "{domain}: {group}/{finding} in\n{json}");
    }
    // p=none is a warning, not an error.
    let (_, text) = check(&s, plain, &["notls.test"]);
    assert!(text.contains("warning  _dmarc.notls.test: v=DMARC1; p=none"), "{text}");
    let _ = std::fs::remove_dir_all(&ca);
}
