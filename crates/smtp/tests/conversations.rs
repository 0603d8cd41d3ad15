//! Scripted conversations against the sans-IO session, in the style of Postfix's
//! `smtpd_check.in` / `.ref`: each `scripts/NAME.smtp` holds client lines
//! (`C: ...`) and the exact replies expected after them (`S: ...`).
//!
//! Escapes in client lines: `\r`, `\n`, `\0`, `\xNN`; a client line is sent with
//! CRLF appended unless it ends in `\c` (then exactly as written). `C+` lines are
//! sent in the same write as the line before (pipelining). The harness answers
//! every question as a permissive policy would, except that recipients in the
//! domain `refuse.test` get 550 5.1.1, DATA (or the first BDAT) of a sender
//! in `refuse-data.test` gets 554 5.7.1 (as a milter refusing at DATA), and
//! the `Message` question answers `Queued(QID<n>)`. Lines `S: ~ prefix` match a reply line by prefix.

use std::time::{Duration, Instant};

use mx6_smtp::reply::Reply;
use mx6_smtp::{Answer, Ask, Event, Session, SessionConfig, Timeouts};

fn config() -> SessionConfig {
    SessionConfig {
        hostname: "mx.test".into(),
        client_literal: "[IPv6:2001:db8::1]".into(),
        max_message_size: 1200,
        max_recipients: 3,
        max_errors: 12,
        starttls: true,
        tls_active: false,
        auth: false,
        require_auth: false,
        timeouts: Timeouts::default(),
        max_line: mx6_smtp::data::MAX_TEXT_LINE,
        postmaster_domain: "mx.test".into(),
    }
}

fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b'0' => out.push(0),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap());
                    i += 2;
                }
                c => panic!("bad escape \\{}", c as char),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

struct Harness {
    s: Session,
    queued: usize,
    closed: bool,
    tls_pending: bool,
    out: Vec<String>,
    messages: Vec<Vec<u8>>,
    refuse_data: bool,
}

impl Harness {
    fn drain(&mut self) {
        while let Some(ev) = self.s.poll_event() {
            match ev {
                Event::Reply(r) => self.push(r),
                Event::Close => self.closed = true,
                Event::Rejected { .. } | Event::Reset => {}
                Event::StartTls => self.tls_pending = true,
                Event::Ask(ask) => {
                    let a = match ask {
                        Ask::Rcpt { to, .. } if to.domain.to_string() == "refuse.test" => Answer::Reject(mx6_smtp::reply::unknown_user()),
                        Ask::Auth { username, password, .. } => {
                            if username == "alice" && password == "secret" {
                                Answer::Accept
                            } else {
                                Answer::Reject(mx6_smtp::reply::auth_invalid())
                            }
                        }
                        Ask::Mail { from, .. } => {
                            self.refuse_data = from.mailbox.is_some_and(|m| m.domain.to_string() == "refuse-data.test");
                            Answer::Accept
                        }
                        Ask::Data if self.refuse_data => {
                            Answer::Reject(mx6_smtp::reply::Reply::new(554, "5.7.1", "Error: content refused at DATA"))
                        }
                        Ask::Message(env) => {
                            self.queued += 1;
                            self.messages.push(env.data);
                            Answer::Queued(format!("QID{}", self.queued))
                        }
                        _ => Answer::Accept,
                    };
                    self.s.answer(a);
                }
            }
        }
    }
    fn push(&mut self, r: Reply) {
        for l in r.to_string().split("\r\n").filter(|l| !l.is_empty()) {
            self.out.push(l.to_string());
        }
    }
}

fn run_script(name: &str, text: &str) {
    let now = Instant::now();
    let mut cfg = config();
    // `# config: submission` at the top: AUTH offered, and required before MAIL.
    if text.starts_with("# config: submission") {
        cfg.auth = true;
        cfg.require_auth = true;
    }
    let mut h = Harness {
        s: Session::new(cfg, now),
        queued: 0,
        closed: false,
        tls_pending: false,
        out: vec![],
        messages: vec![],
        refuse_data: false,
    };
    h.drain();
    let mut expected: Vec<(usize, String)> = Vec::new();
    let mut pending_write: Vec<u8> = Vec::new();
    let mut got: Vec<String> = Vec::new();
    let flush = |h: &mut Harness, w: &mut Vec<u8>, got: &mut Vec<String>| {
        if !w.is_empty() {
            h.s.receive(w, now);
            w.clear();
            h.drain();
        }
        got.append(&mut h.out);
    };
    for (lineno, line) in text.lines().enumerate() {
        if let Some(c) = line.strip_prefix("C+ ") {
            let raw = c.strip_suffix("\\c");
            pending_write.extend(unescape(raw.unwrap_or(c)));
            if raw.is_none() {
                pending_write.extend(b"\r\n");
            }
        } else if let Some(c) = line.strip_prefix("C: ").or(if line == "C:" { Some("") } else { None }) {
            flush(&mut h, &mut pending_write, &mut got);
            let raw = c.strip_suffix("\\c");
            pending_write.extend(unescape(raw.unwrap_or(c)));
            if raw.is_none() {
                pending_write.extend(b"\r\n");
            }
        } else if line == "TLS" {
            flush(&mut h, &mut pending_write, &mut got);
            assert!(h.tls_pending, "{name}:{}: no STARTTLS event", lineno + 1);
            h.s.tls_established();
            h.tls_pending = false;
        } else if line == "TIMEOUT" {
            flush(&mut h, &mut pending_write, &mut got);
            h.s.handle_timeout(now + Duration::from_secs(3600));
            h.drain();
            got.append(&mut h.out);
        } else if line == "CLOSED" {
            flush(&mut h, &mut pending_write, &mut got);
            expected.push((lineno + 1, "<closed>".into()));
            if h.closed {
                got.push("<closed>".into());
            }
        } else if let Some(s) = line.strip_prefix("S: ") {
            expected.push((lineno + 1, s.to_string()));
        } else if let Some(s) = line.strip_prefix("MSG: ") {
            flush(&mut h, &mut pending_write, &mut got);
            let want = unescape(s);
            let have = h.messages.last().cloned().unwrap_or_default();
            assert_eq!(String::from_utf8_lossy(&have), String::from_utf8_lossy(&want), "{name}:{}", lineno + 1);
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            panic!("{name}:{}: bad script line", lineno + 1);
        }
    }
    flush(&mut h, &mut pending_write, &mut got);
    let mut gi = got.iter();
    for (ln, want) in &expected {
        let g = gi.next().unwrap_or_else(|| panic!("{name}:{ln}: expected {want:?}, got nothing more; all replies: {got:#?}"));
        let ok = match want.strip_prefix("~ ") {
            Some(p) => g.starts_with(p),
            None => g == want,
        };
        assert!(ok, "{name}:{ln}: expected {want:?}, got {g:?}; all replies: {got:#?}");
    }
    if let Some(extra) = gi.next() {
        panic!("{name}: unexpected extra reply {extra:?}; all replies: {got:#?}");
    }
}

#[test]
fn scripted_conversations() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts");
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.extension().is_some_and(|e| e == "smtp") {
            let text = std::fs::read_to_string(&p).unwrap();
            run_script(&p.file_name().unwrap().to_string_lossy(), &text);
            n += 1;
        }
    }
    assert!(n >= 10, "only {n} scripts found");
}
