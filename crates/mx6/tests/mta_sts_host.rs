//! mx6 serves its own MTA-STS policy (RFC 8461 §3.3) over HTTPS, with a
//! certificate for `mta-sts.example.org` from a test CA (made by openssl)
//! chosen by SNI; curl fetches it over IPv6 and IPv4 and verifies the
//! certificate against that CA.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and a certificate for `name` signed by it: (ca.crt, name.crt, name.key).
fn ca_and_cert(dir: &Path, name: &str) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        &[&["req", "-x509"], &ec[..], &["-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=mx6 test CA", "-days", "2"]].concat(),
        dir,
    );
    openssl(&[&["req"], &ec[..], &["-keyout", "sts.key", "-out", "sts.csr", "-subj", &format!("/CN={name}")]].concat(), dir);
    std::fs::write(dir.join("ext"), format!("subjectAltName=DNS:{name}\n")).unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "sts.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "sts.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
        dir,
    );
}

/// curl `url` for `host` resolved to `addr`: (HTTP status, content type, body).
fn curl(dir: &Path, host: &str, port: u16, addr: &str, method: &str, path: &str, verify: bool) -> (String, String, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "-X", method, "--max-time", "10", "-o", "body", "-w", "%{http_code} %{content_type}"]);
    if verify {
        c.args(["--cacert", "ca.crt"]);
    } else {
        c.arg("-k");
    }
    let out = c
        .arg("--resolve")
        .arg(format!("{host}:{port}:{addr}"))
        .arg(format!("https://{host}:{port}{path}"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let w = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, ctype) = w.split_once(' ').unwrap_or((&w, ""));
    (code.to_string(), ctype.to_string(), std::fs::read_to_string(dir.join("body")).unwrap_or_default())
}

#[test]
fn the_policy_is_served_over_both_families_with_a_verified_certificate() {
    let dir = std::env::temp_dir().join(format!("mx6-mta-sts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ca_and_cert(&dir, "mta-sts.example.org");
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
        let (code, ctype, body) = curl(&dir, "mta-sts.example.org", port, addr, "GET", "/.well-known/mta-sts.txt", true);
        assert_eq!((code.as_str(), ctype.as_str(), body.as_str()), ("200", "text/plain", policy), "over {addr}\n{}", s.log_text());
    }
    // Nothing else is served.
    assert_eq!(curl(&dir, "mta-sts.example.org", port, "[::1]", "GET", "/", true).0, "404");
    assert_eq!(curl(&dir, "mta-sts.example.org", port, "[::1]", "GET", "/.well-known/other.txt", true).0, "404");
    assert_eq!(curl(&dir, "mta-sts.example.org", port, "[::1]", "POST", "/.well-known/mta-sts.txt", true).0, "405");
    assert_eq!(curl(&dir, "mta-sts.other.test", port, "127.0.0.1", "GET", "/.well-known/mta-sts.txt", false).0, "404");
    // The record to publish, with an id that follows the policy.
    let id = s.log_text().lines().find(|l| l.contains("_mta-sts.example.org. IN TXT")).map(str::to_string).unwrap_or_default();
    assert!(id.contains("v=STSv1; id="), "{}", s.log_text());
    let _ = std::fs::remove_dir_all(&dir);
}
