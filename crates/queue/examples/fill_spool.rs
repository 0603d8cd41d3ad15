//! For `bench/big-queue.sh`: write N messages of SIZE octets into a spool as
//! a running mx6 would have after deferring each of them once (a record, and
//! the "deferred" mark in the done-log), to measure a server that starts on
//! a big queue without first making a million delivery attempts.
//!
//!   cargo run --release -p mx6-queue --example fill_spool -- DATA_DIR N SIZE RCPT

use std::sync::Arc;

use mx6_queue::spool::{self, Options};
use mx6_queue::{QueuedMessage, Recipient};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, data_dir, n, size, rcpt] = &args[..] else {
        eprintln!("usage: fill_spool DATA_DIR N SIZE RCPT");
        std::process::exit(2);
    };
    let (n, size): (usize, usize) = (n.parse().expect("N"), size.parse().expect("SIZE"));
    let dir = std::path::Path::new(data_dir).join("spool");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (h, _) = spool::open(&dir, Options::for_dir(&dir)).expect("open the spool");
    let mut body = format!("From: bench@client.test\r\nTo: {rcpt}\r\nSubject: big queue\r\n\r\n").into_bytes();
    while body.len() < size {
        body.extend_from_slice(b"0123456789 0123456789 0123456789 0123456789 0123456789 0123456789 01234\r\n");
    }
    body.truncate(size);
    let body = Arc::new(body);
    let started = std::time::Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for k in 0..64 {
            let (h, body, rcpt) = (h.clone(), body.clone(), rcpt.clone());
            tasks.push(tokio::spawn(async move {
                for _ in (k..n).step_by(64) {
                    let msg = QueuedMessage {
                        id: mx6_queue::id::next(),
                        from: "bench@client.test".into(),
                        rcpts: vec![Recipient { address: rcpt.clone(), local: None, ..Default::default() }],
                        received: chrono::Utc::now().timestamp(),
                        client: "2001:db8::1".into(),
                        helo: "client.test".into(),
                        smtputf8: false,
                        junk: false,
                        ..Default::default()
                    };
                    h.append(&msg, body.clone()).await.expect("append");
                    h.mark_deferred(&msg.id);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // The last marks go out with one more commit.
        h.done(Vec::new()).await.ok();
    });
    eprintln!("wrote {n} messages of {size} octets in {:.1} s", started.elapsed().as_secs_f64());
}
