//! Helpers for the end-to-end tests: start the real `mx6` binary on loopback
//! with a test configuration, talk to it with real clients (swaks, Python's
//! smtplib) or a raw socket, and read what landed in the Maildirs.
#![allow(dead_code)]

pub mod https;
pub mod postfix;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn mx6_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mx6")
}

/// A port free on both families and not handed out before in this process
/// (the kernel may offer the same ephemeral port again once it is closed).
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768-60999): a port handed out
    // here is never also given to a `bind(…:0)` (the test DNS servers, the
    // daemons a test starts) or taken as the source port of a connection
    // between the check and the moment its server binds it.
    static NEXT: std::sync::Mutex<u16> = std::sync::Mutex::new(0);
    let mut next = NEXT.lock().unwrap();
    if *next == 0 {
        // Each test binary starts elsewhere in the range, so the ones cargo
        // runs one after another rarely meet a port still in TIME_WAIT.
        *next = 20000 + (std::process::id() % 600) as u16 * 20;
    }
    loop {
        let p = *next;
        *next = if p >= 32700 { 20000 } else { p + 1 };
        if TcpListener::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("::1", p)).is_ok() {
            return p;
        }
    }
}

/// Test zone for clients that pass the inbound checks: the PROXY-header
/// addresses the tests use have forward-confirmed reverse DNS, and
/// `example.net` publishes SPF for them.
pub const STRANGERS: &str = "
2001:db8::5 PTR stranger.example.net
2001:db8:bad::5 PTR stranger.example.net
192.0.2.5 PTR stranger.example.net
192.0.2.7 PTR stranger.example.net
stranger.example.net AAAA 2001:db8::5
stranger.example.net AAAA 2001:db8:bad::5
stranger.example.net A 192.0.2.5
stranger.example.net A 192.0.2.7
example.net TXT \"v=spf1 ip6:2001:db8::/32 ip4:192.0.2.0/24 -all\"
";

pub struct Server {
    pub dir: PathBuf,
    pub port: u16,
    pub proxy_port: u16,
    /// `submission` (STARTTLS + AUTH) on both families.
    pub sub_port: u16,
    /// `submissions` (implicit TLS + AUTH) on both families.
    pub subs_port: u16,
    /// `/metrics` and `/healthz` on [::1].
    pub metrics_port: u16,
    pub config: PathBuf,
    child: Option<Child>,
    pub log: PathBuf,
    /// The DNS server `[dns] nameservers` points at.
    pub dns: mx6_testdns::TestDns,
}

impl Server {
    /// Start with listeners on [::1]:port and 127.0.0.1:port (plain SMTP) and
    /// [::1]:proxy_port (PROXY protocol), plus `extra` TOML appended.
    pub fn start(name: &str, extra: &str) -> Server {
        Server::start_with_zone(name, "", extra)
    }

    /// Like [`Server::start`], without starting it (the test spawns it).
    pub fn prepare(name: &str, extra: &str) -> Server {
        Server::configure(name, "", extra)
    }

    /// Like [`Server::start`], with `zone` (mx6_testdns text form) served by
    /// the test DNS server.
    pub fn start_with_zone(name: &str, zone: &str, extra: &str) -> Server {
        let mut s = Server::configure(name, zone, extra);
        s.spawn(&[]);
        s
    }

    fn configure(name: &str, zone: &str, extra: &str) -> Server {
        let dns = mx6_testdns::TestDns::start(mx6_testdns::Zone::parse(zone));
        let dir = std::env::temp_dir().join(format!("mx6-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let proxy_port = free_port();
        let sub_port = free_port();
        let subs_port = free_port();
        let metrics_port = free_port();
        let config = dir.join("mx6.toml");
        // Greylisting is on by default; tests that are not about it turn it off.
        let greylist = if extra.contains("[greylist]") { "" } else { "[greylist]\nenabled = false\n" };
        let text = format!(
            r#"hostname = "mx.test"
data_dir = "{data}"
[[listener]]
address = "[::1]:{port}"
[[listener]]
address = "127.0.0.1:{port}"
[[listener]]
address = "[::1]:{proxy_port}"
proxy_protocol = true
allow = ["::1/128"]
[[listener]]
address = "[::1]:{sub_port}"
kind = "submission"
[[listener]]
address = "127.0.0.1:{sub_port}"
kind = "submission"
[[listener]]
address = "[::1]:{subs_port}"
kind = "submissions"
[[listener]]
address = "127.0.0.1:{subs_port}"
kind = "submissions"
[metrics]
listen = "[::1]:{metrics_port}"
[dns]
nameservers = ["{dns}"]
timeout = "1s"
attempts = 1
{extra}
{greylist}"#,
            data = dir.join("data").display(),
            dns = dns.addr,
        );
        std::fs::write(&config, text).unwrap();
        Server { dir: dir.clone(), port, proxy_port, sub_port, subs_port, metrics_port, config, child: None, log: dir.join("mx6.log"), dns }
    }

    pub fn spawn(&mut self, args: &[&str]) {
        let mut cmd = Command::new(mx6_bin());
        cmd.arg("serve").arg("--config").arg(&self.config).args(args);
        self.spawn_command(cmd);
    }

    /// Start `mx6 serve` in a mount namespace of its own, after the shell
    /// commands `pre` (mounting a small filesystem for a fault, say); `exec`
    /// makes the server the process the test sees and kills.
    pub fn spawn_in_namespace(&mut self, pre: &str, env: &[(&str, &str)]) {
        let script = format!("set -e; {pre}; exec {} serve --config {}", mx6_bin(), self.config.display());
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.spawn_command(cmd);
    }

    /// Run a shell command inside the server's mount namespace.
    pub fn in_namespace(&self, script: &str) -> Output {
        Command::new("nsenter").args(["-t", &self.pid().to_string(), "-m", "sh", "-c", script]).output().expect("nsenter")
    }

    fn spawn_command(&mut self, mut cmd: Command) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        cmd.stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().expect("start mx6"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("::1", self.port)).is_ok() && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mx6 exited early with {st}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mx6 did not start listening; log:\n{}", self.log_text());
    }

    /// `mx6 user ARGS` against this server's config, `stdin` as the password.
    pub fn user(&self, args: &[&str], stdin: &str) -> Output {
        run_with_stdin(Command::new(mx6_bin()).arg("user").args(args).arg("--config").arg(&self.config), stdin.as_bytes())
    }

    /// GET a path on the metrics endpoint: (status line, body).
    pub fn http_get(&self, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(("::1", self.metrics_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        (head.lines().next().unwrap_or("").to_string(), body.to_string())
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait up to 20 s for `needle` in the log; fail with the log if it never comes.
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log_text().contains(needle) {
            assert!(Instant::now() < deadline, "no `{needle}` in:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `mx6 state show ARG` of this (running) server.
    pub fn state_show(&self, arg: &str) -> String {
        let out = mx6(&["state".as_ref(), "show".as_ref(), arg.as_ref(), "--config".as_ref(), self.config.as_os_str()]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Queue one message from `from` to `to` through the plain listener (swaks).
    pub fn submit(&self, from: &str, to: &str) {
        let out = swaks_ok(&["--server", "::1", "--port", &self.port.to_string(), "--from", from, "--to", to, "--h-Subject", "test"]);
        assert!(out.contains("250 2.0.0 Ok: queued"), "{out}");
    }

    /// Whether the log contains `needle`, waiting up to 10 s for it (log lines
    /// are written by a background thread, a moment after the event).
    pub fn log_has(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.log_text().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        None
    }

    /// The value of one metric series (`name{labels}` exactly as exposed), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Files in a mailbox's new/ directory, waiting up to 10 s for `want` of them.
    pub fn wait_mail(&self, user: &str, domain: &str, want: usize) -> Vec<PathBuf> {
        let dir = self.data().join("mail").join(domain).join(user).join("new");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let files = list(&dir);
            if files.len() >= want || Instant::now() > deadline {
                return files;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn mail_texts(&self, user: &str, domain: &str, want: usize) -> Vec<String> {
        self.wait_mail(user, domain, want).iter().map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// All files under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for p in list(&d) {
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn swaks(args: &[&str]) -> Output {
    Command::new("swaks").args(args).output().expect("swaks is installed (scripts/test.sh installs it)")
}

pub fn swaks_ok(args: &[&str]) -> String {
    let out = swaks(args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "swaks {args:?} failed:\n{text}");
    text
}

/// A raw SMTP client for conversations no ordinary client would have.
pub struct Raw {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let w = s.try_clone().unwrap();
        Raw { r: BufReader::new(s), w }
    }

    /// Connect and consume the greeting.
    pub fn open(addr: SocketAddr) -> Raw {
        let mut r = Raw::connect(addr);
        let g = r.reply();
        assert!(g.starts_with("220 "), "greeting: {g}");
        r
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    /// One whole reply (all lines), or "" at EOF.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.r.read_line(&mut line) {
                Ok(0) | Err(_) => return all,
                Ok(_) => {}
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Connect to the PROXY listener on [::1]:`port` as client `src` (either
    /// family); the greeting is not read.
    pub fn proxied(port: u16, src: &str) -> Raw {
        let mut c = Raw::connect(v6(port));
        let hdr = if src.contains(':') {
            format!("PROXY TCP6 {src} ::1 40000 25\r\n")
        } else {
            format!("PROXY TCP4 {src} 127.0.0.1 40000 25\r\n")
        };
        c.send(hdr.as_bytes());
        c
    }

    /// One transaction through the PROXY listener on [::1]:`port` as client
    /// `src`: greeting, EHLO, MAIL, RCPT, DATA with `message` (without the
    /// final dot). Returns the first reply that is not positive (the greeting
    /// included), or the reply to the message.
    pub fn proxied_mail(port: u16, src: &str, from: &str, rcpt: &str, message: &str) -> String {
        let mut c = Raw::proxied(port, src);
        let g = c.reply();
        if !g.starts_with("220 ") {
            return g;
        }
        c.cmd("EHLO client.example");
        for cmd in [format!("MAIL FROM:<{from}>"), format!("RCPT TO:<{rcpt}>"), "DATA".to_string()] {
            let r = c.cmd(&cmd);
            if !r.starts_with('2') && !r.starts_with('3') {
                return r;
            }
        }
        c.cmd(&format!("{message}\r\n."))
    }

    /// True when the server closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0))
    }
}

/// IPv6 documentation addresses added to `lo` for one test (needs root), and
/// removed when dropped. Used where ::1 will not do: hickory answers loopback
/// reverse lookups itself, and some tests need a second local IPv6 address.
pub struct LoAddresses(&'static [&'static str]);

impl LoAddresses {
    pub fn add(addrs: &'static [&'static str]) -> LoAddresses {
        for a in addrs {
            // nodad: usable at once as a source address.
            let _ = Command::new("ip").args(["-6", "addr", "add", &format!("{a}/128"), "dev", "lo", "nodad"]).output();
        }
        LoAddresses(addrs)
    }
}

impl Drop for LoAddresses {
    fn drop(&mut self) {
        for a in self.0 {
            let _ = Command::new("ip").args(["-6", "addr", "del", &format!("{a}/128"), "dev", "lo"]).output();
        }
    }
}

/// An RSA 2048 key for dkimpy to sign with (`dir/key.pem`, made by openssl)
/// and its DKIM record as test-zone TXT data (quoted strings of 200 octets).
pub fn dkim_rsa_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("key.pem");
    assert!(Command::new("openssl").args(["genrsa", "-out"]).arg(&key).arg("2048").output().unwrap().status.success());
    let der = Command::new("openssl").args(["rsa", "-pubout", "-outform", "DER", "-in"]).arg(&key).output().unwrap().stdout;
    let b64 = run_with_stdin(
        Command::new("/usr/bin/python3").args(["-c", "import sys,base64; print(base64.b64encode(sys.stdin.buffer.read()).decode())"]),
        &der,
    );
    let record = format!("v=DKIM1; k=rsa; p={}", String::from_utf8(b64.stdout).unwrap().trim());
    let chunks: Vec<String> = record.as_bytes().chunks(200).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
    (key, chunks.join(" "))
}

/// Run `cmd` with `input` on its stdin; stdout and stderr are captured.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    // A command that exits before reading all of stdin is not an error here.
    let _ = child.stdin.take().expect("stdin").write_all(input);
    child.wait_with_output().expect("wait")
}

pub fn v6(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port))
}

pub fn v4(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Run `mx6 ARGS` to completion, killing it after 30 s so a hang fails the test
/// instead of stalling the suite.
pub fn mx6(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(mx6_bin()).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run mx6");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("mx6 {args:?} did not finish within 30 s");
}

/// A real `redis-server` (Debian's package) on a loopback port, without
/// persistence; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut r = RedisServer { child: None, port: free_port() };
        r.resume();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kill it (its data is gone with it).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port.
    pub fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
