//! Certificates without a restart: the `[tls]` certificate is replaced on disk
//! (picked up within seconds) or rewritten with its old modification time and
//! SIGHUP sent; a broken file is refused and the old certificate stays; a
//! session in progress keeps its TLS and goes on; `[[tls.certificate]]` entries
//! are chosen by SNI, the default when SNI is absent. Python's ssl module is
//! the client (STARTTLS, then the peer certificate's SHA-256); openssl makes the
//! certificates.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A fresh P-256 certificate for `name` in `dir/<file>.crt` and `.key`; its fingerprint.
fn make_cert(dir: &Path, file: &str, name: &str) -> String {
    let (c, k) = (dir.join(format!("{file}.crt")), dir.join(format!("{file}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{name}"))
        .arg("-keyout")
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fingerprint(&c)
}

fn fingerprint(pem: &Path) -> String {
    let py = "import ssl,hashlib,sys\nprint(hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(sys.argv[1]).read())).hexdigest())";
    let out = Command::new("/usr/bin/python3").args(["-c", py]).arg(pem).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const CLIENT: &str = r#"
import hashlib, smtplib, ssl, sys
port, sni, hold = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "hold"
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
c = smtplib.SMTP("::1", port, timeout=20)
c.ehlo("client.test")
code, _ = c.docmd("STARTTLS")
assert code == 220, code
c.sock = ctx.wrap_socket(c.sock, server_hostname=sni or None)
c.file = None
print(hashlib.sha256(c.sock.getpeercert(True)).hexdigest(), flush=True)
if hold:
    sys.stdin.readline()
    code, _ = c.ehlo("client.test")
    print(code, hashlib.sha256(c.sock.getpeercert(True)).hexdigest(), c.noop()[0], flush=True)
c.quit()
"#;

/// The fingerprint of the certificate mx6 presents after STARTTLS for `sni`.
fn served(port: u16, sni: &str) -> String {
    let out = Command::new("/usr/bin/python3").args(["-c", CLIENT, &port.to_string(), sni, "once"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_served(s: &Server, sni: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while served(s.port, sni) != want {
        assert!(Instant::now() < deadline, "still the old certificate for {sni:?}\n{}", s.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn certificates_change_without_a_restart_and_sni_chooses() {
    let dir = std::env::temp_dir().join(format!("mx6-tls-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let a = make_cert(&dir, "main", "mx.test");
    let other = make_cert(&dir, "other", "mail.example.net");
    let d = dir.display();
    let mut s = Server::start(
        "tls-reload",
        &format!(
            "[tls]\ncert = \"{d}/main.crt\"\nkey = \"{d}/main.key\"\n[[tls.certificate]]\nnames = [\"mail.example.net\"]\ncert = \"{d}/other.crt\"\nkey = \"{d}/other.key\"\n"
        ),
    );
    let pid = s.pid();
    let expiry = s.metric("mx6_tls_certificate_expiry_seconds{name=\"mx.test\"}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as f64;
    assert!((now + 86400.0..now + 3.0 * 86400.0).contains(&expiry), "a 2-day certificate: {expiry}");
    assert!(s.metric("mx6_tls_certificate_expiry_seconds{name=\"mail.example.net\"}") > now);
    assert_eq!(served(s.port, ""), a, "no SNI: the default");
    assert_eq!(served(s.port, "mx.test"), a);
    assert_eq!(served(s.port, "mail.example.net"), other, "SNI chooses the entry");

    // A session in progress before the change.
    let mut held = Command::new("/usr/bin/python3")
        .args(["-c", CLIENT, &s.port.to_string(), "", "hold"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), a);

    // New files (renamed into place, as certbot and ACME clients do): taken within seconds.
    let b = make_cert(&dir, "next", "mx.test");
    std::fs::rename(dir.join("next.key"), dir.join("main.key")).unwrap();
    std::fs::rename(dir.join("next.crt"), dir.join("main.crt")).unwrap();
    wait_served(&s, "", &b);
    assert!(s.log_has("TLS certificates reloaded") && s.log_has("file changed"), "{}", s.log_text());
    assert_eq!(served(s.port, "mail.example.net"), other);

    // The session from before goes on with its own TLS.
    held.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("250 {a} 250"), "the session in progress kept its certificate");
    assert!(held.wait().unwrap().success());

    // A broken certificate is refused; the one in use stays.
    std::fs::write(dir.join("main.crt"), "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !s.log_has("TLS certificates not reloaded") {
        assert!(Instant::now() < deadline, "{}", s.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(served(s.port, ""), b);

    // SIGHUP: files rewritten with their old modification time are read again.
    // Each new file gets the old one's time before it is renamed into place,
    // so the file watcher never sees a change.
    let c = make_cert(&dir, "third", "mx.test");
    for ext in ["crt", "key"] {
        let main = dir.join(format!("main.{ext}"));
        let stamp = std::fs::metadata(&main).unwrap().modified().unwrap();
        let new = dir.join(format!("third.{ext}"));
        std::fs::File::options().write(true).open(&new).unwrap().set_modified(stamp).unwrap();
        std::fs::rename(&new, &main).unwrap();
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(served(s.port, ""), b, "no reload without a change or a signal");
    assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    wait_served(&s, "", &c);
    assert!(s.log_has("reason=\"SIGHUP\"") || s.log_has("reason=SIGHUP"), "{}", s.log_text());
    assert_eq!(s.pid(), pid, "same process, never restarted");
    assert!(s.terminate().is_some(), "still running after SIGHUP");
    let _ = std::fs::remove_dir_all(&dir);
}
