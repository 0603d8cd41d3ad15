//! What a hostile or sloppy client meets in the session itself: deadlines
//! that a byte now and then does not push back (slowloris, in commands and in
//! DATA), a cap on a message's transfer and on the session, `AUTH PLAIN =`,
//! `RCPT TO:<postmaster>`, and long lines accepted or refused.

use std::time::{Duration, Instant};

use mx6_smtp::{Answer, Ask, Event, Session, SessionConfig, Timeouts};

fn cfg(max_line: usize) -> SessionConfig {
    SessionConfig {
        hostname: "mx.test".into(),
        client_literal: "[127.0.0.1]".into(),
        max_message_size: 1 << 20,
        max_recipients: 5,
        max_errors: 1000,
        starttls: false,
        tls_active: true,
        auth: true,
        require_auth: false,
        timeouts: Timeouts {
            command: Duration::from_secs(10),
            data_block: Duration::from_secs(10),
            data_total: Duration::from_secs(30),
            session: Duration::from_secs(100),
        },
        max_line,
        postmaster_domain: "mx.test".into(),
    }
}

/// Replies and asks so far; asks are answered with Accept / Queued.
fn drive(s: &mut Session, out: &mut Vec<String>, asks: &mut Vec<String>) {
    while let Some(ev) = s.poll_event() {
        match ev {
            Event::Reply(r) => out.push(r.to_string()),
            Event::Ask(a) => {
                let answer = match &a {
                    Ask::Message(_) => Answer::Queued("Q1".into()),
                    _ => Answer::Accept,
                };
                asks.push(format!("{a:?}"));
                s.answer(answer);
            }
            Event::Rejected { stage, reason } => out.push(format!("rejected {stage} {reason}")),
            Event::Close => out.push("CLOSE".into()),
            Event::Reset => out.push("RESET".into()),
            Event::StartTls => {}
        }
    }
}

struct T {
    s: Session,
    t0: Instant,
    out: Vec<String>,
    asks: Vec<String>,
}

impl T {
    fn new(max_line: usize) -> T {
        let t0 = Instant::now();
        let mut t = T { s: Session::new(cfg(max_line), t0), t0, out: Vec::new(), asks: Vec::new() };
        t.pump();
        t
    }
    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }
    fn pump(&mut self) {
        drive(&mut self.s, &mut self.out, &mut self.asks);
    }
    fn send(&mut self, secs: f64, bytes: &[u8]) {
        let now = self.at(secs);
        self.s.receive(bytes, now);
        self.pump();
    }
    fn tick(&mut self, secs: f64) {
        let now = self.at(secs);
        self.s.handle_timeout(now);
        self.pump();
    }
    fn timed_out(&self) -> bool {
        self.out.iter().any(|l| l.starts_with("421 4.4.2")) && self.out.last().map(String::as_str) == Some("CLOSE")
    }
}

#[test]
fn a_command_dripped_a_byte_at_a_time_hits_its_deadline() {
    let mut t = T::new(998);
    for (i, b) in b"EHLO x".iter().enumerate() {
        t.send(1.5 * i as f64, &[*b]);
        t.tick(1.5 * i as f64);
    }
    assert!(!t.timed_out());
    t.tick(9.9);
    assert!(!t.timed_out());
    t.tick(10.0);
    assert!(t.timed_out(), "{:?}", t.out);
    assert!(t.out.contains(&"rejected helo timeout".to_string()));
}

#[test]
fn whole_commands_keep_a_session_going_until_its_cap() {
    let mut t = T::new(998);
    for i in 0..20 {
        t.send(5.0 * i as f64, b"NOOP\r\n");
        t.tick(5.0 * i as f64);
        assert!(!t.timed_out(), "at {}s: {:?}", 5 * i, t.out);
    }
    t.send(99.0, b"NOOP\r\n");
    t.tick(100.0);
    assert!(t.timed_out(), "the session lifetime cap: {:?}", t.out);
}

fn into_data(t: &mut T) {
    t.send(0.0, b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@mx.test>\r\nDATA\r\n");
    assert!(t.out.iter().any(|l| l.starts_with("354")), "{:?}", t.out);
}

#[test]
fn data_must_keep_a_minimum_rate() {
    let mut t = T::new(998);
    into_data(&mut t);
    for i in 1..10 {
        t.send(i as f64, b"x");
    }
    t.tick(9.9);
    assert!(!t.timed_out());
    t.tick(10.0);
    assert!(t.timed_out(), "one byte a second is not a block in 10 s: {:?}", t.out);
    assert!(t.out.contains(&"rejected data timeout".to_string()));
}

#[test]
fn data_at_a_good_rate_is_still_bounded_in_total() {
    let mut t = T::new(998);
    into_data(&mut t);
    let block = [b"y".repeat(998), b"\r\n".to_vec()].concat().repeat(70); // just over 64 KiB
    for i in 1..=6 {
        t.send(5.0 * i as f64 - 1.0, &block);
        t.tick(5.0 * i as f64 - 1.0);
        assert!(!t.timed_out(), "a block every 5 s is fast enough: {:?}", t.out);
    }
    t.tick(30.0);
    assert!(t.timed_out(), "the whole message within data_total: {:?}", t.out);
}

#[test]
fn auth_plain_with_an_empty_initial_response() {
    let mut t = T::new(998);
    t.send(0.0, b"EHLO x\r\nAUTH PLAIN =\r\n");
    let last = t.out.last().unwrap();
    assert!(last.starts_with("535 5.7.8"), "an empty response is not malformed, it is wrong: {:?}", t.out);
    assert!(t.asks.iter().all(|a| !a.contains("Auth")), "nothing to check: no credentials");
}

#[test]
fn rcpt_to_bare_postmaster_is_postmaster_of_the_primary_domain() {
    let mut t = T::new(998);
    t.send(0.0, b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<PostMaster>\r\n");
    assert!(t.out.last().unwrap().starts_with("250 2.1.5"), "{:?}", t.out);
    let rcpt = t.asks.iter().find(|a| a.starts_with("Rcpt")).unwrap();
    assert!(rcpt.contains("local: \"postmaster\"") && rcpt.contains("Name(\"mx.test\")"), "{rcpt}");
    t.send(0.0, b"RCPT TO:<postmaster> NOTIFY=NEVER\r\n");
    assert!(t.out.last().unwrap().starts_with("250 2.1.5"), "DSN parameters are allowed: {:?}", t.out);
    t.send(0.0, b"RCPT TO:<postmaster> XFOO\r\n");
    assert!(t.out.last().unwrap().starts_with("555 5.5.4"), "{:?}", t.out);
}

#[test]
fn long_lines_accepted_or_refused() {
    let line = [b"Subject: x\r\n\r\n".to_vec(), b"z".repeat(5000), b"\r\n.\r\n".to_vec()].concat();
    let mut t = T::new(mx6_smtp::data::LONG_LINE);
    into_data(&mut t);
    t.send(1.0, &line);
    assert!(t.out.last().unwrap().starts_with("250 2.0.0"), "{:?}", t.out);
    let mut t = T::new(mx6_smtp::data::MAX_TEXT_LINE);
    into_data(&mut t);
    t.send(1.0, &line);
    assert!(t.out.iter().any(|l| l.starts_with("550 5.6.0")), "{:?}", t.out);
}

#[test]
fn a_login_name_with_a_nul_is_refused_without_a_check() {
    // Found by fuzzing (fuzz/fuzz_targets/auth.rs): "AUoA" decodes to 01 4a 00.
    let mut t = T::new(998);
    t.send(0.0, b"EHLO x\r\nAUTH LOGIN AUoA\r\nAUoA\r\n");
    assert!(t.out.last().unwrap().starts_with("535 5.7.8"), "{:?}", t.out);
    assert!(t.asks.iter().all(|a| !a.contains("Auth")));
}

#[test]
fn a_session_refused_at_connect_answers_503_until_quit() {
    let t0 = Instant::now();
    let greeting = mx6_smtp::reply::Reply::custom("554 5.7.1 go away", "5.7.1").unwrap();
    let mut t = T { s: Session::refused(cfg(1000), greeting, t0), t0, out: Vec::new(), asks: Vec::new() };
    t.pump();
    t.send(1.0, b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\n");
    assert_eq!(
        t.out,
        [
            "554 5.7.1 go away\r\n",
            "503 5.5.1 Error: no SMTP service here\r\n",
            "503 5.5.1 Error: no SMTP service here\r\n",
            "221 2.0.0 mx.test closing connection\r\n",
            "CLOSE"
        ]
    );
    assert!(t.asks.is_empty(), "nothing is asked of a refused session: {:?}", t.asks);
}
