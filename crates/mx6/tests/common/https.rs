//! A test CA made by openssl, and curl as the HTTPS client.

use std::path::Path;
use std::process::Command;

pub fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`ca.crt`, `ca.key`, made once per directory) and a certificate
/// `<stem>.crt`/`<stem>.key` signed by it for `san` (openssl's
/// subjectAltName form: `DNS:a.test,IP:::1`), common name `cn`.
pub fn ca_and_cert(dir: &Path, stem: &str, cn: &str, san: &str) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    if !dir.join("ca.crt").exists() {
        openssl(
            &[&["req", "-x509"], &ec[..], &["-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=mx6 test CA", "-days", "2"]].concat(),
            dir,
        );
    }
    let (key, csr, crt, ext) = (format!("{stem}.key"), format!("{stem}.csr"), format!("{stem}.crt"), format!("{stem}.ext"));
    openssl(&[&["req"], &ec[..], &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={cn}")]].concat(), dir);
    std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n")).unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
        dir,
    );
}

/// curl `https://host:port/path` with `host` resolved to `addr`, verifying
/// against `cacert` (a file in `dir`; `None` = no verification):
/// (HTTP status, content type, body).
pub fn curl(dir: &Path, host: &str, port: u16, addr: &str, method: &str, path: &str, cacert: Option<&str>) -> (String, String, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "-X", method, "--max-time", "10", "-o", "body", "-w", "%{http_code} %{content_type}"]);
    match cacert {
        Some(ca) => c.args(["--cacert", ca]),
        None => c.arg("-k"),
    };
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
