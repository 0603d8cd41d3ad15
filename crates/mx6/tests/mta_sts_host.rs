//! mx6 serves its own MTA-STS policy (RFC 8461 §3.3) over HTTPS, with a
//! certificate for `mta-sts.example.org` from a test CA (made by openssl)
//! chosen by SNI; curl fetches it over IPv6 and IPv4 and verifies the
//! certificate against that CA.

mod common;

use common::https::{ca_and_cert, curl};
use common::*;

#[test]
fn the_policy_is_served_over_both_families_with_a_verified_certificate() {
    let dir = std::env::temp_dir().join(format!("mx6-mta-sts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ca_and_cert(&dir, "sts", "mta-sts.example.org", "DNS:mta-sts.example.org");
    let port = free_port();
    let d = dir.display();
    let s = Server::start(
        "mta-sts-host",
        &format!(
            "[local]\ndomains = [\"example.org\"]\n[[tls.certificate]]\nnames = [\"mta-sts.example.org\"]\ncert = \"{d}/sts.crt\"\nkey = \"{d}/sts.key\"\n\
             [mta_sts]\nlisten = [\"[::1]:{port}\", \"127.0.0.1:{port}\"]\nmx = [\"mx.example.org\", \"*.backup.example.org\"]\nmax_age = \"7d\"\n"
        ),
    );
    let policy = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.org\r\nmx: *.backup.example.org\r\nmax_age: 604800\r\n";
    for addr in ["[::1]", "127.0.0.1"] {
        let (code, ctype, body) = curl(&dir, "mta-sts.example.org", port, addr, "GET", "/.well-known/mta-sts.txt", Some("ca.crt"));
        assert_eq!((code.as_str(), ctype.as_str(), body.as_str()), ("200", "text/plain", policy), "over {addr}\n{}", s.log_text());
    }
    // Nothing else is served.
    assert_eq!(curl(&dir, "mta-sts.example.org", port, "[::1]", "GET", "/", Some("ca.crt")).0, "404");
    assert_eq!(curl(&dir, "mta-sts.example.org", port, "[::1]", "GET", "/.well-known/other.txt", Some("ca.crt")).0, "404");
    assert_eq!(curl(&dir, "mta-sts.example.org", port, "[::1]", "POST", "/.well-known/mta-sts.txt", Some("ca.crt")).0, "405");
    assert_eq!(curl(&dir, "mta-sts.other.test", port, "127.0.0.1", "GET", "/.well-known/mta-sts.txt", None).0, "404");
    // The record to publish, with an id that follows the policy.
    let id = s.log_text().lines().find(|l| l.contains("_mta-sts.example.org. IN TXT")).map(str::to_string).unwrap_or_default();
    assert!(id.contains("v=STSv1; id="), "{}", s.log_text());
    let _ = std::fs::remove_dir_all(&dir);
}
