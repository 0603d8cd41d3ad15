//! mx6 obtains and renews its certificates from a real ACME server: pebble
//! (Debian's `pebble`), resolving our names through the test DNS server and
//! validating HTTP-01 and TLS-ALPN-01 against mx6 on loopback. openssl
//! `s_client` over STARTTLS sees each new certificate without a restart; a
//! session opened before a renewal still sends its message after it; with
//! pebble gone the certificate in use stays and the order is retried; the
//! MTA-STS policy verifies with curl against pebble's root over IPv6 and
//! IPv4, and `mx6 check` fetches and verifies it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::https::{ca_and_cert, curl};
use common::*;

struct Pebble {
    child: Child,
    port: u16,
    mgmt: u16,
}

impl Pebble {
    /// Pebble on 127.0.0.1 with its HTTPS certificate from the test CA in
    /// `dir`, validating on `http_port` (HTTP-01) and `tls_port`
    /// (TLS-ALPN-01), issuing certificates valid for `validity` seconds.
    fn start(dir: &Path, dns: std::net::SocketAddr, http_port: u16, tls_port: u16, validity: u64) -> Pebble {
        if !dir.join("pebble.crt").exists() {
            ca_and_cert(dir, "pebble", "localhost", "DNS:localhost,IP:127.0.0.1");
        }
        let (port, mgmt) = (free_port(), free_port());
        let config = format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{port}", "managementListenAddress": "127.0.0.1:{mgmt}",
  "certificate": "{d}/pebble.crt", "privateKey": "{d}/pebble.key", "httpPort": {http_port}, "tlsPort": {tls_port},
  "ocspResponderURL": "", "externalAccountBindingRequired": false, "certificateValidityPeriod": {validity}}}}}"#,
            d = dir.display()
        );
        std::fs::write(dir.join("pebble.json"), config).unwrap();
        let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .arg("-dnsserver")
            .arg(dns.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pebble is installed (scripts/test.sh installs it)");
        let p = Pebble { child, port, mgmt };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pebble did not start: {}", std::fs::read_to_string(dir.join("pebble.log")).unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.port)
    }

    /// Pebble's issuing root, written to `dir/<file>`.
    fn root(&self, dir: &Path, file: &str) -> PathBuf {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert", "ca.crt", "-o", file])
            .arg(format!("https://localhost:{}/roots/0", self.mgmt))
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "pebble root: {}", String::from_utf8_lossy(&out.stderr));
        dir.join(file)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The certificate mx6 presents after STARTTLS on `addr` without SNI:
/// (serial, whether it verifies for `mx.test` against `root`).
fn smtp_certificate(addr: &str, root: &Path) -> (String, bool) {
    let script = format!(
        "out=$(openssl s_client -starttls smtp -connect '{addr}' -noservername -CAfile '{}' -verify_hostname mx.test </dev/null 2>&1); \
         echo \"$out\" | grep -o 'Verify return code: [0-9]*'; echo \"$out\" | openssl x509 -noout -serial",
        root.display()
    );
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let serial = text.lines().find_map(|l| l.strip_prefix("serial=")).unwrap_or_default().to_string();
    assert!(!serial.is_empty(), "no certificate from {addr}: {text}{}", String::from_utf8_lossy(&out.stderr));
    (serial, text.contains("Verify return code: 0"))
}

/// Wait until the log has `n` lines containing `needle`.
fn wait_log(s: &Server, needle: &str, n: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while s.log_text().matches(needle).count() < n {
        assert!(Instant::now() < deadline, "waited {secs} s for {n} × {needle:?}:\n{}", s.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
}

const ZONE: &str = "\
mx.test AAAA ::1
mx.test A 127.0.0.1
mta-sts.example.org AAAA ::1
mta-sts.example.org A 127.0.0.1
example.org MX 10 mx.test
";

fn config(pebble: &Pebble, dir: &Path, challenge: &str, http_port: u16, tls_port: u16) -> String {
    format!(
        "[local]\ndomains = [\"mx.test\", \"example.org\"]\n\
         [mta_sts]\nlisten = [\"[::1]:{tls_port}\", \"127.0.0.1:{tls_port}\"]\ndomains = [\"example.org\"]\nmx = [\"mx.test\"]\nmax_age = \"1d\"\n\
         [acme]\ndirectory = \"{}\"\nca_file = \"{d}/ca.crt\"\ncontact = [\"mailto:postmaster@example.org\"]\nchallenge = \"{challenge}\"\n\
         http_listen = [\"[::1]:{http_port}\", \"127.0.0.1:{http_port}\"]\nrenew_before = \"1m\"\n\
         [delivery]\nmta_sts_port = {tls_port}\nca_file = \"{d}/root.pem\"\n",
        pebble.directory(),
        d = dir.display()
    )
}

#[test]
fn http01_orders_renews_under_live_sessions_and_keeps_the_certificate_when_the_ca_is_gone() {
    let dir = std::env::temp_dir().join(format!("mx6-acme-http-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (http_port, tls_port) = (free_port(), free_port());
    let mut s = Server::prepare("acme-http01", "");
    s.dns.set_zone(mx6_testdns::Zone::parse(ZONE));
    // Certificates valid 60 s: renewed after 30 s (half of it; renew_before is longer).
    let mut pebble = Pebble::start(&dir, s.dns.addr, http_port, tls_port, 60);
    // `delivery.ca_file` must exist when the config is checked.
    pebble.root(&dir, "root.pem");
    let text = std::fs::read_to_string(&s.config).unwrap() + &config(&pebble, &dir, "http-01", http_port, tls_port);
    std::fs::write(&s.config, text).unwrap();
    assert!(s.user(&["add", "alice@mx.test"], "pw\n").status.success());
    s.spawn(&[]);
    wait_log(&s, "ACME certificate obtained", 1, 60);
    let root = pebble.root(&dir, "root.pem");
    let v6 = format!("[::1]:{}", s.port);
    let v4 = format!("127.0.0.1:{}", s.port);
    let (first, ok) = smtp_certificate(&v6, &root);
    assert!(ok, "the ACME certificate verifies for mx.test against pebble's root");
    assert_eq!(smtp_certificate(&v4, &root).0, first);
    // The certificate and the account are private.
    for f in ["cert.pem", "key.pem", "account.json"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.data().join("acme").join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    assert!(s.metric("mx6_tls_certificate_expiry_seconds{name=\"mx.test\"}") > 0.0);

    // A session under TLS opened now sends its message after the renewal.
    let mut held = Command::new("python3")
        .arg("-c")
        .arg(
            "import smtplib, ssl, sys\n\
             s = smtplib.SMTP('::1', int(sys.argv[1]), local_hostname='client.test', timeout=120)\n\
             s.starttls(context=ssl._create_unverified_context())\n\
             print('tls', flush=True)\n\
             sys.stdin.readline()\n\
             s.sendmail('bob@example.net', ['alice@mx.test'], 'Subject: held\\r\\n\\r\\nsent across a renewal\\r\\n')\n\
             print('sent', flush=True)\n\
             s.quit()\n",
        )
        .arg(s.port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "tls");
    wait_log(&s, "ACME certificate obtained", 2, 60);
    let (second, ok) = smtp_certificate(&v6, &root);
    assert!(ok && second != first, "a new handshake gets the renewed certificate ({first} → {second})");
    held.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "sent", "the session opened before the renewal still sends");
    assert!(held.wait().unwrap().success());
    assert_eq!(s.wait_mail("alice", "mx.test", 1).len(), 1);

    // The CA goes away: the renewal fails, the certificate in use stays, and
    // the order is retried after a pause, not in a loop.
    pebble.stop();
    wait_log(&s, "ACME order failed", 1, 60);
    assert_eq!(smtp_certificate(&v6, &root).0, second);
    let status = std::fs::read_to_string(s.data().join("acme/status.toml")).unwrap();
    assert!(status.contains("failures = 1") && status.contains("last_error = \""), "{status}");
    assert!(s.log_text().contains("keeping the certificate in use"), "{}", s.log_text());
    let failed_at = Instant::now();
    wait_log(&s, "ACME order failed", 2, 60);
    let pause = failed_at.elapsed();
    assert!(pause >= Duration::from_secs(15), "the retry waited {pause:?}");
    assert_eq!(s.log_text().matches("ACME order failed").count(), 2, "no tight loop");
    assert_eq!(smtp_certificate(&v4, &root).0, second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_alpn01_certifies_the_policy_host_and_mx6_check_verifies_the_policy() {
    let dir = std::env::temp_dir().join(format!("mx6-acme-alpn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (http_port, tls_port) = (free_port(), free_port());
    let mut s = Server::prepare("acme-alpn", "");
    // A policy id that is not the served policy's, and a second MX the policy does not name.
    let stale = format!("{ZONE}_mta-sts.example.org TXT \"v=STSv1; id=stale1\"\nexample.org MX 20 backup.test\nbackup.test AAAA ::1\n");
    s.dns.set_zone(mx6_testdns::Zone::parse(&stale));
    let pebble = Pebble::start(&dir, s.dns.addr, http_port, tls_port, 86400);
    // `delivery.ca_file` must exist when the config is checked.
    pebble.root(&dir, "root.pem");
    let text = std::fs::read_to_string(&s.config).unwrap() + &config(&pebble, &dir, "tls-alpn-01", http_port, tls_port);
    std::fs::write(&s.config, text).unwrap();
    s.spawn(&[]);
    wait_log(&s, "ACME certificate obtained", 1, 60);
    assert!(s.log_text().contains("ACME TLS-ALPN-01 validation handshake"), "{}", s.log_text());
    let root = pebble.root(&dir, "root.pem");
    let policy = "version: STSv1\r\nmode: enforce\r\nmx: mx.test\r\nmax_age: 86400\r\n";
    for addr in ["[::1]", "127.0.0.1"] {
        let (code, _, body) = curl(&dir, "mta-sts.example.org", tls_port, addr, "GET", "/.well-known/mta-sts.txt", Some("root.pem"));
        assert_eq!((code.as_str(), body.as_str()), ("200", policy), "over {addr}");
    }
    assert!(smtp_certificate(&format!("[::1]:{}", s.port), &root).1, "SMTP has the ACME certificate too");

    let check = |s: &Server| {
        let out = mx6(&[
            "--config".as_ref(),
            s.config.as_os_str(),
            "check".as_ref(),
            "example.org".as_ref(),
            "--port".as_ref(),
            s.port.to_string().as_ref(),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let report = check(&s);
    for addr in ["::1", "127.0.0.1"] {
        let line = format!("https://mta-sts.example.org:{tls_port} {addr}");
        assert!(
            report.lines().any(|l| l.contains(&line) && l.contains("policy: mode enforce, mx mx.test, max_age 86400")),
            "{line} in:\n{report}"
        );
    }
    assert!(report.lines().any(|l| l.contains("backup.test") && l.contains("not covered")), "{report}");
    let log = s.log_text();
    let record = log.lines().find(|l| l.contains("_mta-sts.example.org. IN TXT")).unwrap_or_default();
    let id: String = record.split("id=").nth(1).unwrap_or_default().chars().take_while(char::is_ascii_alphanumeric).collect();
    assert_eq!(id.len(), 16, "{record}");
    assert!(report.contains(&format!("publish `v=STSv1; id={id}`")), "the id should change to {id}:\n{report}");
    assert!(report.lines().any(|l| l.contains("mx.test, mta-sts.example.org") && l.contains("certificate expires")), "{report}");
    // Published: the warning goes.
    s.dns.set_zone(mx6_testdns::Zone::parse(&format!("{ZONE}_mta-sts.example.org TXT \"v=STSv1; id={id}\"\n")));
    let report = check(&s);
    assert!(!report.contains("the policy changed but the id did not"), "{report}");
    assert!(!report.contains("not covered"), "{report}");
    // A policy host whose certificate does not chain to a trusted root is an error.
    let text = std::fs::read_to_string(&s.config).unwrap().replace("/root.pem\"", "/ca.crt\"");
    std::fs::write(&s.config, text).unwrap();
    let report = check(&s);
    assert!(
        report.lines().any(|l| l.contains(&format!("{tls_port} ::1")) && l.contains("policy not fetched: TLS with mta-sts.example.org")),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
