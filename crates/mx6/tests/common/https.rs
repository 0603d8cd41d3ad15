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

/// A plain HTTPS server (Python's `http.server` with `ssl`) on [::1] and
/// 127.0.0.1 serving `policy.txt` of its directory as
/// `/.well-known/mta-sts.txt` (404 for anything else), with `<stem>.crt`.
/// What is POSTed to it is kept in its directory: the body as `posted.gz`
/// (renamed into place once whole), `Content-Type` and path in `posted.ct`.
pub struct PolicyServer {
    child: Option<std::process::Child>,
    pub port: u16,
    pub dir: std::path::PathBuf,
}

const POLICY_SERVER: &str = r#"
import http.server, os, socket, ssl, sys, threading
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/.well-known/mta-sts.txt":
            self.send_error(404)
            return
        body = open("policy.txt", "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        open("posted.tmp", "wb").write(body)
        open("posted.ct", "w").write(self.headers.get("Content-Type", "") + " " + self.path)
        os.rename("posted.tmp", "posted.gz")
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
class V6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
servers = [V6(("::1", port), H), http.server.ThreadingHTTPServer(("127.0.0.1", port), H)]
for s in servers:
    s.socket = ctx.wrap_socket(s.socket, server_side=True)
    threading.Thread(target=s.serve_forever, daemon=True).start()
threading.Event().wait()
"#;

impl PolicyServer {
    /// Serve `policy` from `dir` (which holds `<stem>.crt`/`<stem>.key`).
    pub fn start(dir: &Path, stem: &str, policy: &str) -> PolicyServer {
        std::fs::write(dir.join("policy.txt"), policy).unwrap();
        let port = super::free_port();
        let child = Command::new("python3")
            .args(["-c", POLICY_SERVER, &port.to_string(), &format!("{stem}.crt"), &format!("{stem}.key")])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("::1", port)).is_err() || std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the policy server did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        PolicyServer { child: Some(child), port, dir: dir.to_path_buf() }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.stop();
    }
}
