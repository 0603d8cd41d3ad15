//! Crash safety: many clients send at once, the server is killed with SIGKILL
//! in the middle of the load and started again on the same data directory.
//! Every message that got a 250 is delivered exactly once; nothing appears that
//! was not completely sent; every delivered file is whole.
//!
//! A message whose final dot was sent but whose reply was lost in the kill may
//! or may not have been stored (the RFC 1047 window every MTA has); it may
//! appear, at most once. A message whose dot was never sent must not appear.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

#[derive(Default)]
struct Record {
    acked: HashSet<String>,
    maybe: HashSet<String>,
}

fn client(port: u16, t: usize, stop: Arc<Mutex<bool>>, rec: Arc<Mutex<Record>>) {
    let mut seq = 0;
    while !*stop.lock().unwrap() {
        let addr = if t.is_multiple_of(2) { v6(port) } else { v4(port) };
        let Ok(s) = std::net::TcpStream::connect(addr) else { return };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let w = s.try_clone().unwrap();
        let mut c = Raw { r: std::io::BufReader::new(s), w };
        if !c.reply().starts_with("220") {
            return;
        }
        // Several messages per connection, so kills land in every state.
        for k in 0..3 {
            seq += 1;
            let token = format!("T{t}-{seq}");
            let mut head = String::from("EHLO c.example\r\nMAIL FROM:<load@example.org>\r\nRCPT TO:<crash@mx.test>\r\nDATA\r\n");
            if k > 0 {
                head = head.replacen("EHLO c.example\r\n", "", 1);
            }
            use std::io::Write;
            if c.w.write_all(head.as_bytes()).is_err() {
                return;
            }
            let expect = if k > 0 { 3 } else { 4 };
            for i in 0..expect {
                let r = c.reply();
                let ok = if i == expect - 1 { r.starts_with("354") } else { r.starts_with("250") };
                if !ok {
                    return;
                }
            }
            let body = format!("Subject: {token}\r\n\r\n{}\r\nEND-{token}\r\n", "filler line for the crash test\r\n".repeat(60));
            if c.w.write_all(body.as_bytes()).is_err() {
                return;
            }
            if c.w.write_all(b".\r\n").is_err() {
                rec.lock().unwrap().maybe.insert(token);
                return;
            }
            let r = c.reply();
            if r.starts_with("250 2.0.0 Ok: queued") {
                rec.lock().unwrap().acked.insert(token);
            } else {
                rec.lock().unwrap().maybe.insert(token);
                return;
            }
        }
        let _ = c.cmd("QUIT");
    }
}

#[test]
fn sigkill_under_load_loses_nothing_and_duplicates_nothing() {
    let mut s = Server::start("crash", "");
    let stop = Arc::new(Mutex::new(false));
    let rec = Arc::new(Mutex::new(Record::default()));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (stop, rec, port) = (stop.clone(), rec.clone(), s.port);
            std::thread::spawn(move || client(port, t, stop, rec))
        })
        .collect();
    // Let the load build up, then kill mid-flight.
    let start = Instant::now();
    while rec.lock().unwrap().acked.len() < 1000 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    s.kill9();
    *stop.lock().unwrap() = true;
    for t in threads {
        t.join().unwrap();
    }
    let rec = Arc::try_unwrap(rec).ok().unwrap().into_inner().unwrap();
    assert!(rec.acked.len() >= 100, "load did not build up: {} acked", rec.acked.len());

    s.spawn(&[]);
    // Wait until deliveries settle.
    let dir = s.data().join("mail/mx.test/crash/new");
    let mut last = usize::MAX;
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let n = list(&dir).len();
        if n != last {
            last = n;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_millis(1500) && n >= rec.acked.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for f in list(&dir) {
        let text = String::from_utf8(std::fs::read(&f).unwrap()).unwrap();
        let token = text.lines().find_map(|l| l.strip_prefix("Subject: ")).expect("subject").to_string();
        assert!(text.ends_with(&format!("\r\nEND-{token}\r\n")), "incomplete file {}", f.display());
        *seen.entry(token).or_default() += 1;
    }
    for (t, n) in &seen {
        assert_eq!(*n, 1, "{t} delivered {n} times");
        assert!(rec.acked.contains(t) || rec.maybe.contains(t), "{t} was never completely sent but was delivered");
    }
    let missing: Vec<_> = rec.acked.iter().filter(|t| !seen.contains_key(*t)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}; log:\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        s.log_text()
    );
    eprintln!("acked {}, ambiguous {}, delivered {}", rec.acked.len(), rec.maybe.len(), seen.len());
}
