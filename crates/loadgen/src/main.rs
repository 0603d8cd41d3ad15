//! mx6-loadgen: SMTP load for `bench/` (RFC 5321 client side, no
//! pipelining). `--sessions` tasks run at once; each connects from its own
//! source address, sends `--per-conn` messages, QUITs and connects again,
//! until `--messages` have been sent or `--seconds` have passed. IPv6
//! sources are the 4,096 (`--sources`) /64s of a /42 spread over its 64
//! /48s (`--source6 2001:db8:100::/42`, routed locally: `ip -6 route add
//! local 2001:db8:100::/42 dev lo`); `--v4-share` of the sessions come from
//! 198.18.0.0/16 instead. Prints msg/s, the time from sending the content to
//! the 250 (p50, p99), and every non-2xx reply by code.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// IPv6 server address, e.g. [::1]:2525.
    #[arg(long)]
    target6: SocketAddr,
    /// IPv4 server address, for the IPv4 share.
    #[arg(long)]
    target4: Option<SocketAddr>,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 20)]
    sessions: usize,
    /// Messages per connection.
    #[arg(long, default_value_t = 1)]
    per_conn: usize,
    /// Stop after this many messages in all (0: only --seconds).
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Stop after this many connections (0: no limit): with --sources,
    /// one pass over every source (a greylisting warm-up).
    #[arg(long, default_value_t = 0)]
    connections: u64,
    /// Stop after this many seconds (0: only --messages).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// The /42 the IPv6 sources come from (empty: no source binding).
    #[arg(long, default_value = "")]
    source6: String,
    /// Distinct IPv6 /64s used.
    #[arg(long, default_value_t = 4096)]
    sources: u32,
    /// Fraction of sessions over IPv4 (from 198.18.0.0/16).
    #[arg(long, default_value_t = 0.0)]
    v4_share: f64,
    /// A message file (headers and body, CRLF) sent as is; `{n}` in it is
    /// not replaced. Default: a 4 KiB message made here.
    #[arg(long)]
    message_file: Option<std::path::PathBuf>,
    /// MAIL FROM address.
    #[arg(long, default_value = "bench@example.com")]
    from: String,
    /// Senders from N domains: the session from source i sends as
    /// `bench@s<i % N>.bench.test` the message `<i % N>.eml` of
    /// `--message-dir` (pre-signed with that domain's DKIM key).
    #[arg(long, default_value_t = 0)]
    from_domains: u32,
    #[arg(long)]
    message_dir: Option<std::path::PathBuf>,
    /// Fraction of messages sent to a recipient never seen before (a new
    /// greylisting triplet).
    #[arg(long, default_value_t = 0.0)]
    new_share: f64,
    /// RCPT TO address.
    #[arg(long, default_value = "user@bench.test")]
    to: String,
    /// HELO name.
    #[arg(long, default_value = "client.bench.test")]
    helo: String,
}

/// The i-th IPv6 source: /48 number i % 64 and /64 number i / 64 inside
/// it, host ::1 (so 4,096 sources cover 64 /48s with 64 /64s each).
fn source6(base: Ipv6Addr, i: u32) -> Ipv6Addr {
    let b = u128::from(base);
    let s48 = (i % 64) as u128;
    let s64 = (i / 64) as u128;
    Ipv6Addr::from(b | (s48 << 80) | (s64 << 64) | 1)
}

/// The i-th IPv4 source: 198.18.(i / 250).(i % 250 + 1), in the RFC 2544
/// benchmarking range (routed locally: `ip route add local 198.18.0.0/16
/// dev lo`). Not 127.0.0.0/8: resolvers answer its reverse names
/// themselves (`localhost`, RFC 6761), so no source there has its own PTR.
fn source4(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250 + 1) as u8)
}

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    attempts: AtomicU64,
    latencies: Mutex<Vec<u32>>,
    errors: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Stats {
    fn error(&self, what: String) {
        *self.errors.lock().unwrap().entry(what).or_default() += 1;
    }
}

/// How long a reply may take before the session counts as failed: a
/// connection the server never accepted (its listen queue overflowed and the
/// handshake's last ACK was dropped) looks established here and would
/// otherwise wait for its greeting for ever.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, line: &mut String) -> anyhow::Result<String> {
    loop {
        line.clear();
        match tokio::time::timeout(REPLY_TIMEOUT, r.read_line(line)).await {
            Err(_) => anyhow::bail!("no reply within {} s", REPLY_TIMEOUT.as_secs()),
            Ok(Ok(0)) => anyhow::bail!("connection closed"),
            Ok(r) => r?,
        };
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return Ok(line.trim_end().to_string());
        }
    }
}

async fn session(a: &Args, i: u64, bodies: &[Vec<u8>], stats: &Stats, stop: &AtomicBool) -> anyhow::Result<()> {
    let source = (i % a.sources as u64) as u32;
    let (from, body) = if a.from_domains > 0 {
        let d = source % a.from_domains;
        (format!("bench@s{d}.bench.test"), &bodies[d as usize % bodies.len()])
    } else {
        (a.from.clone(), &bodies[0])
    };
    // The family is the source's: source n always connects the same way.
    let v4 = a.target4.is_some() && ((source % 1000) as f64) < a.v4_share * 1000.0;
    let (target, sock) = if v4 {
        let t = a.target4.unwrap();
        let s = TcpSocket::new_v4()?;
        s.bind(SocketAddr::new(IpAddr::V4(source4(source)), 0))?;
        (t, s)
    } else {
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
        s.set_nonblocking(true)?;
        if !a.source6.is_empty() {
            // The prefix is routed to lo (`ip -6 route add local`); binding
            // an address of it needs IPV6_FREEBIND.
            s.set_freebind_v6(true)?;
            let base: Ipv6Addr = a.source6.split('/').next().unwrap_or_default().parse()?;
            s.bind(&SocketAddr::new(IpAddr::V6(source6(base, source)), 0).into())?;
        }
        (a.target6, TcpSocket::from_std_stream(std::net::TcpStream::from(s)))
    };
    let stream = sock.connect(target).await?;
    // Like a real MTA's client: no Nagle delay on the short command lines.
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    let greet = reply(&mut r, &mut line).await?;
    if !greet.starts_with("220") {
        anyhow::bail!("greeting {greet}");
    }
    w.write_all(format!("EHLO {}\r\n", a.helo).as_bytes()).await?;
    reply(&mut r, &mut line).await?;
    for _ in 0..a.per_conn {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let n = stats.attempts.fetch_add(1, Ordering::Relaxed);
        let to = if a.new_share > 0.0 && ((n % 1000) as f64) < a.new_share * 1000.0 {
            format!("new{n}.{}@bench.test", std::process::id())
        } else {
            a.to.clone()
        };
        for cmd in [format!("MAIL FROM:<{from}>\r\n"), format!("RCPT TO:<{to}>\r\n"), "DATA\r\n".to_string()] {
            w.write_all(cmd.as_bytes()).await?;
            let rep = reply(&mut r, &mut line).await?;
            if !rep.starts_with('2') && !rep.starts_with('3') {
                w.write_all(b"RSET\r\n").await?;
                reply(&mut r, &mut line).await?;
                anyhow::bail!("{}", &rep[..rep.len().min(3)]);
            }
        }
        // The content and its final dot in one write, as smtp-source does.
        let t = Instant::now();
        w.write_all(body).await?;
        let rep = reply(&mut r, &mut line).await?;
        let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
        if rep.starts_with("250") {
            stats.latencies.lock().unwrap().push(us);
            let n = stats.sent.fetch_add(1, Ordering::Relaxed) + 1;
            if a.messages > 0 && n >= a.messages {
                stop.store(true, Ordering::Relaxed);
            }
        } else {
            stats.error(rep[..rep.len().min(3)].to_string());
        }
    }
    w.write_all(b"QUIT\r\n").await?;
    let _ = reply(&mut r, &mut line).await;
    Ok(())
}

fn message() -> Vec<u8> {
    let mut m = b"From: <bench@example.com>\r\nTo: <user@bench.test>\r\nSubject: load\r\n\r\n".to_vec();
    while m.len() < 4096 {
        m.extend_from_slice(b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n");
    }
    m
}

fn pct(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut bodies = match (&a.message_dir, &a.message_file) {
        (Some(dir), _) => (0..a.from_domains.max(1)).map(|d| std::fs::read(dir.join(format!("{d}.eml")))).collect::<Result<Vec<_>, _>>()?,
        (None, Some(p)) => vec![std::fs::read(p)?],
        (None, None) => vec![message()],
    };
    for body in &mut bodies {
        if !body.ends_with(b"\r\n") {
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b".\r\n");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    rt.block_on(async {
        if a.seconds > 0 {
            let stop = stop.clone();
            let secs = a.seconds;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                stop.store(true, Ordering::Relaxed);
            });
        }
        let mut tasks = Vec::new();
        for _ in 0..a.sessions {
            let (a, bodies, stats, stop, next) = (a.clone(), bodies.clone(), stats.clone(), stop.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if a.connections > 0 && i >= a.connections {
                        break;
                    }
                    if let Err(e) = session(&a, i, &bodies, &stats, &stop).await {
                        stats.error(e.to_string());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let sent = stats.sent.load(Ordering::Relaxed);
    let mut lat = stats.latencies.lock().unwrap().clone();
    lat.sort_unstable();
    println!("sessions: {}  messages: {sent} in {secs:.2} s  rate: {:.0} msg/s", a.sessions, sent as f64 / secs);
    println!("time to 250 (content and dot sent, 250 read): p50 {:.2} ms  p99 {:.2} ms", pct(&lat, 0.5), pct(&lat, 0.99));
    let errors = stats.errors.lock().unwrap();
    if errors.is_empty() {
        println!("errors: none");
    }
    for (e, n) in errors.iter() {
        println!("error: {n} × {e}");
    }
    Ok(())
}
