//! Hostile clients and careless configs against the real binary: AUTH floods
//! (memory and the failure limit under a race), `AUTH PLAIN =`, configs that
//! would crash the server, inject reply lines or open a relay, slow clients in
//! commands and in DATA, `RCPT TO:<postmaster>`, and long lines.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn b64(s: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.chunks(3) {
        let n = c.iter().enumerate().fold(0u32, |a, (i, &b)| a | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= c.len() { T[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// `auth_flood.py`: N AUTH PLAIN attempts at once over implicit TLS; reply code counts.
fn flood(port: u16, n: usize, payload: &str) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth_flood.py");
    let out = Command::new("python3").args([script, "::1", &port.to_string(), &n.to_string(), payload]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()).unwrap().parse().unwrap()
}

fn with_user(name: &str, extra: &str) -> Server {
    let s = Server::start(name, &format!("[local]\ndomains = [\"mx.test\"]\n[submission]\nauth_failure_delay = \"0s\"\n{extra}"));
    let out = s.user(&["add", "alice@mx.test"], "alice-pw\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s
}

#[test]
fn five_hundred_auth_attempts_at_once_do_not_take_the_host_down() {
    // No failure limit: every attempt reaches the password check.
    let s = with_user("auth-flood", "auth_failures = 0\n[limits]\nsessions = 2000\n");
    let before = status_kib(s.pid(), "VmHWM:");
    let c = flood(s.subs_port, 500, &b64(b"\0alice@mx.test\0wrong"));
    let peak = status_kib(s.pid(), "VmHWM:");
    let checked = c["535"].as_u64().unwrap_or(0);
    let busy = c["454"].as_u64().unwrap_or(0);
    assert_eq!(checked + busy, 500, "{c}");
    assert!(checked >= 100, "most attempts are checked, a few at a time: {c}");
    assert!(peak - before < 100 * 1024, "peak RSS grew by {} MiB (from {} MiB)", (peak - before) / 1024, before / 1024);
}

#[test]
fn the_auth_failure_limit_holds_against_simultaneous_attempts() {
    let s = with_user("auth-race", "auth_failures = 5\nauth_failure_window = \"10m\"\n");
    let c = flood(s.subs_port, 45, &b64(b"\0alice@mx.test\0wrong"));
    assert_eq!(c["535"].as_u64().unwrap_or(0), 5, "only the limit is ever checked: {c}");
    assert_eq!(c["454"].as_u64().unwrap_or(0), 40, "{c}");
    // A correct password from the same /64 is refused too while the limit holds.
    let c = flood(s.subs_port, 1, &b64(b"\0alice@mx.test\0alice-pw"));
    assert_eq!(c["454"], 1, "{c}");
}

#[test]
fn auth_plain_with_an_empty_initial_response_is_not_malformed() {
    let s = with_user("auth-empty", "");
    let c = flood(s.subs_port, 1, "=");
    assert_eq!(c["535"], 1, "{c}");
    assert_eq!(flood(s.subs_port, 1, &b64(b"\0alice@mx.test\0alice-pw"))["235"], 1);
}

fn config_check(text: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("mx6-careless-{}-{}", std::process::id(), text.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("mx6.toml");
    std::fs::write(&p, text).unwrap();
    let out = mx6(&["config".as_ref(), "check".as_ref(), "--config".as_ref(), p.as_os_str()]);
    if out.status.code() == Some(1) {
        let serve = mx6(&["serve".as_ref(), "--config".as_ref(), p.as_os_str()]);
        assert_eq!(serve.status.code(), Some(1), "serve refuses what check refuses: {}", String::from_utf8_lossy(&serve.stderr));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), err)
}

#[test]
fn configs_that_would_break_the_server_or_open_a_relay_are_refused() {
    let (code, err) = config_check("hostname = \"mx.test\"\n[limits]\ncommand_timeout = \"999999999999999d\"\n");
    assert_eq!(code, 1);
    assert!(err.contains("mx6.toml:3: limits.command_timeout: duration `999999999999999d` is too long"), "{err}");
    let (code, err) = config_check("hostname = \"mx.test\\r\\n250-injected\"\n");
    assert_eq!(code, 1);
    assert!(err.contains("mx6.toml:1: hostname: contains control characters"), "{err}");
    let (code, err) = config_check("hostname = \"mx.test\"\n[[listener]]\naddress = \"[::1]:2599\"\nproxy_protocol = true\n");
    assert_eq!(code, 1);
    assert!(err.contains("mx6.toml:4: listener[0].proxy_protocol: a PROXY listener must have an `allow` list"), "{err}");
    let (code, err) = config_check("hostname = \"mx.test\"\n[relay]\nmynetworks = [\"::/0\"]\n");
    assert_eq!(code, 1);
    assert!(err.contains("mx6.toml:3: relay.mynetworks[0]: ::/0 covers every IPv6 address: an open relay"), "{err}");
    let (code, err) = config_check("hostname = \"mx.test\"\n[relay]\nmynetworks = [\"2001::/12\"]\n[metrics]\nlisten = \"\"\n");
    assert_eq!(code, 0, "a wide network is a warning: {err}");
    assert!(err.contains("mx6: config warning: ") && err.contains("relay.mynetworks[0]: warning: 2001::/12 is very wide"), "{err}");
}

#[test]
fn slow_clients_are_closed_with_421_and_counted() {
    let s = Server::start("slowloris", "[limits]\ncommand_timeout = \"2s\"\ndata_timeout = \"2s\"\n");
    // A command dripped a byte at a time: the deadline does not move.
    // The clock starts before the connection: the server's deadline starts
    // after it, so at least the full 2 s pass before the 421.
    let t0 = Instant::now();
    let mut c = Raw::open(v6(s.port));
    let mut closed = String::new();
    for b in b"EHLO slow.example".iter().cycle() {
        if c.w.write_all_nonfatal(&[*b]) {
            break;
        }
        if let Some(line) = poll_line(&mut c, 300) {
            closed = line;
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "never closed");
    }
    assert!(closed.starts_with("421 4.4.2 "), "{closed}");
    assert!(t0.elapsed() >= Duration::from_secs(2) && t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(c.closed());
    // DATA at one byte a second is below the minimum rate.
    let mut c = Raw::open(v4(s.port));
    c.cmd("EHLO slow.example");
    c.cmd("MAIL FROM:<a@client.example>");
    c.cmd("RCPT TO:<slow@mx.test>");
    assert!(c.cmd("DATA").starts_with("354"));
    let t0 = Instant::now();
    let mut r = String::new();
    while t0.elapsed() < Duration::from_secs(10) {
        c.send(b"x");
        if let Some(line) = poll_line(&mut c, 500) {
            r = line;
            break;
        }
    }
    assert!(r.starts_with("421 4.4.2 "), "{r}");
    assert_eq!(s.metric("mx6_rejections_total{family=\"ipv6\",reason=\"timeout\",stage=\"helo\"}"), 1.0);
    assert_eq!(s.metric("mx6_rejections_total{family=\"ipv4\",reason=\"timeout\",stage=\"data\"}"), 1.0);
    assert!(s.wait_mail("slow", "mx.test", 1).is_empty(), "nothing kept of the slow message");
}

/// A reply line if one arrives within `ms`.
fn poll_line(c: &mut Raw, ms: u64) -> Option<String> {
    c.r.get_ref().set_read_timeout(Some(Duration::from_millis(ms))).unwrap();
    let mut line = String::new();
    let got = std::io::BufRead::read_line(&mut c.r, &mut line);
    c.r.get_ref().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    match got {
        Ok(n) if n > 0 => Some(line),
        _ => None,
    }
}

trait WriteNonFatal {
    /// Write; true when the peer is gone.
    fn write_all_nonfatal(&mut self, b: &[u8]) -> bool;
}

impl WriteNonFatal for std::net::TcpStream {
    fn write_all_nonfatal(&mut self, b: &[u8]) -> bool {
        std::io::Write::write_all(self, b).is_err()
    }
}

#[test]
fn rcpt_to_bare_postmaster_is_accepted_and_delivered() {
    let s = Server::start("postmaster", "[local]\ndomains = [\"mx.test\", \"other.test\"]\n");
    let out = s.user(&["add", "alice@mx.test"], "pw\n");
    assert!(out.status.success());
    let mut c = Raw::open(v6(s.port));
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@client.example>");
    assert!(c.cmd("RCPT TO:<Postmaster>").starts_with("250 2.1.5"));
    assert!(c.cmd("RCPT TO:<postmaster@other.test>").starts_with("250 2.1.5"), "not in the users file, and accepted");
    assert!(c.cmd("RCPT TO:<nobody@mx.test>").starts_with("550 5.1.1"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c.cmd("Subject: to the postmaster\r\n\r\nhello\r\n.").starts_with("250 "));
    assert_eq!(s.wait_mail("postmaster", "mx.test", 1).len(), 1);
    assert_eq!(s.wait_mail("postmaster", "other.test", 1).len(), 1);
}

#[test]
fn long_lines_are_stored_as_received_and_broken_when_relayed() {
    let r = Server::start("long-recv", "[local]\ndomains = [\"dest.test\"]\n");
    let zone = "dest.test MX 10 mx.dest.test\nmx.dest.test A 127.0.0.1\n";
    let s = Server::start_with_zone("long-send", zone, &format!("[delivery]\nport = {}\n", r.port));
    let long = "L".repeat(5000);
    let body = format!("Subject: long\r\n\r\nbefore\r\n{long}\r\nafter\r\n.");
    let mut c = Raw::open(v6(s.port));
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@client.example>");
    c.cmd("RCPT TO:<here@mx.test>");
    c.cmd("RCPT TO:<there@dest.test>");
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c.cmd(&body).starts_with("250 "), "accepted by default");
    let local = s.mail_texts("here", "mx.test", 1);
    assert!(local[0].contains(&format!("\r\n{long}\r\n")), "stored as received");
    let relayed = r.mail_texts("there", "dest.test", 1);
    assert_eq!(relayed.len(), 1, "{}", s.log_text());
    assert!(relayed[0].split("\r\n").all(|l| l.len() <= 998), "no line over 998 octets on the wire");
    let joined = relayed[0].replace("\r\n ", "");
    assert!(joined.contains(&format!("\r\n{long}\r\n")), "broken with CRLF SP, nothing lost");
    // Refused when the operator says so.
    let s2 = Server::start("long-refuse", "[limits]\nlong_lines = \"refuse\"\n");
    let mut c = Raw::open(v6(s2.port));
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@client.example>");
    c.cmd("RCPT TO:<here@mx.test>");
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c.cmd(&body).starts_with("550 5.6.0"));
}
