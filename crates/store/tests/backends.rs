//! The same cases against both backends: the embedded store, and a real
//! `redis-server` (Debian's package) started on a loopback port. The Redis
//! Lua scripts must behave exactly as the embedded Rust code.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mx6_store::embedded::Embedded;
use mx6_store::redis::Redis;
use mx6_store::{Op, Outcome, Reply, StateStore, Times};

struct RedisServer(Child, u16);

impl RedisServer {
    fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed; scripts/test.sh installs it");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return RedisServer(child, port);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const T: Times = Times { delay: 1000, retry_window: 10_000, lifetime: 100_000 };

async fn cases(s: &impl StateStore, base: u64) {
    // Greylisting, with the auto-allowlist after two passed triplets.
    assert_eq!(s.greylist("gl|c|a|b", "gla|c", base, &T, 2).await.unwrap(), Outcome::New { retry_in: 1000 });
    assert_eq!(s.greylist("gl|c|a|b", "gla|c", base + 400, &T, 2).await.unwrap(), Outcome::Early { retry_in: 600 });
    assert_eq!(s.greylist("gl|c|a|b", "gla|c", base + 1000, &T, 2).await.unwrap(), Outcome::Passed { first: true });
    assert_eq!(s.greylist("gl|c|a|b", "gla|c", base + 2000, &T, 2).await.unwrap(), Outcome::Passed { first: false });
    assert_eq!(s.greylist("gl|c|a|d", "gla|c", base + 2000, &T, 2).await.unwrap(), Outcome::New { retry_in: 1000 });
    // After the retry window it starts over.
    assert_eq!(s.greylist("gl|c|a|d", "gla|c", base + 12_001, &T, 2).await.unwrap(), Outcome::New { retry_in: 1000 });
    assert_eq!(s.greylist("gl|c|a|d", "gla|c", base + 13_001, &T, 2).await.unwrap(), Outcome::Passed { first: true });
    assert_eq!(s.greylist("gl|c|x|y", "gla|c", base + 13_001, &T, 2).await.unwrap(), Outcome::Allowlisted);
    assert_eq!(s.greylist("gl|e|x|y", "gla|e", base + 13_001, &T, 0).await.unwrap(), Outcome::New { retry_in: 1000 });

    // Counters in a window.
    for n in 1..=3 {
        assert_eq!(s.hit("rl|messages|60000|2001:db8::/64", 60_000, base).await.unwrap(), n);
    }
    assert_eq!(s.peek("rl|messages|60000|2001:db8::/64", base).await.unwrap(), 3);
    // An attempt counted before it was judged is taken back, never below 0.
    s.unhit("rl|messages|60000|2001:db8::/64", base).await.unwrap();
    assert_eq!(s.peek("rl|messages|60000|2001:db8::/64", base).await.unwrap(), 2);
    s.unhit("rl|nothing|60000|2001:db8::/64", base).await.unwrap();
    assert_eq!(s.peek("rl|nothing|60000|2001:db8::/64", base).await.unwrap(), 0);
    assert_eq!(s.hit("rl|messages|60000|2001:db8::/64", 60_000, base).await.unwrap(), 3);
    assert_eq!(s.peek("rl|messages|60000|2001:db8:1::/64", base).await.unwrap(), 0);

    // Concurrency gauge never goes below zero.
    assert_eq!(s.concurrent("cc|2001:db8::/64", 1, base).await.unwrap(), 1);
    assert_eq!(s.concurrent("cc|2001:db8::/64", 1, base).await.unwrap(), 2);
    assert_eq!(s.concurrent("cc|2001:db8::/64", -1, base).await.unwrap(), 1);
    assert_eq!(s.concurrent("cc|2001:db8::/64", -5, base).await.unwrap(), 0);

    // Distinct children within the window.
    assert_eq!(s.child_hit("esc|2001:db8::/48", "2001:db8:0:1::/64", base, 10_000).await.unwrap(), 1);
    assert_eq!(s.child_hit("esc|2001:db8::/48", "2001:db8:0:1::/64", base + 1, 10_000).await.unwrap(), 1);
    assert_eq!(s.child_hit("esc|2001:db8::/48", "2001:db8:0:2::/64", base + 2, 10_000).await.unwrap(), 2);

    // Flags.
    assert_eq!(s.flag("blk|2001:db8::/48", base).await.unwrap(), None);
    s.set_flag("blk|2001:db8::/48", base, 60_000).await.unwrap();
    let left = s.flag("blk|2001:db8::/48", base).await.unwrap().unwrap();
    assert!(left > 50_000 && left <= 60_000, "{left}");

    // Records: kept, replaced, shown as they are, gone after their time.
    assert_eq!(s.get("sts|example.org", base).await.unwrap(), None);
    s.put("sts|example.org", "{\"id\":\"1\"}", base, 60_000).await.unwrap();
    s.put("sts|example.org", "{\"id\":\"2\"}", base, 60_000).await.unwrap();
    assert_eq!(s.get("sts|example.org", base).await.unwrap().as_deref(), Some("{\"id\":\"2\"}"));
    let shown = s.show("example.org", base, 1000).await.unwrap();
    assert_eq!(shown[0].value, "{\"id\":\"2\"}", "{shown:?}");

    // Scores decay and are capped.
    let keys = vec!["rep|2001:db8::/64".to_string(), "rep|2001:db8::/48".to_string()];
    s.add_score(&keys, 4.0, base, 1000, 10.0).await.unwrap();
    s.add_score(&keys[..1], 100.0, base, 1000, 10.0).await.unwrap();
    let sc = s.scores(&keys, base + 1000, 1000).await.unwrap();
    assert!((sc[0] - 5.0).abs() < 1e-6 && (sc[1] - 2.0).abs() < 1e-6, "{sc:?}");

    // Show and clear by prefix.
    let shown = s.show("2001:db8::/64", base, 1000).await.unwrap();
    let keys: Vec<&str> = shown.iter().map(|x| x.key.as_str()).collect();
    assert_eq!(keys, ["rep|2001:db8::/64", "rl|messages|60000|2001:db8::/64"], "{shown:?}");
    assert_eq!(s.clear("2001:db8::/64").await.unwrap(), 2);
    assert!(s.show("2001:db8::/64", base, 1000).await.unwrap().is_empty());
    assert_eq!(s.show("2001:db8::/48", base, 1000).await.unwrap().len(), 3, "the /48 entries stay");
}

/// A stage's questions asked at once: the answers come in order and are
/// what the single operations give.
async fn batch_case(s: &impl StateStore, base: u64) {
    let p = "2001:db8:9::/64";
    let ops = vec![
        Op::Scores { keys: vec![format!("rep|{p}")], half_life: 1000 },
        Op::Flag { key: "blk|2001:db8:9::/48".into() },
        Op::Concurrent { key: format!("cc|{p}"), delta: 1 },
        Op::Hit { key: format!("rl|connection_rate|60000|{p}"), window: 60_000 },
        Op::Hit { key: format!("rl|connection_rate|60000|{p}"), window: 60_000 },
        Op::Unhit { key: format!("rl|connection_rate|60000|{p}") },
        Op::Greylist { triplet: format!("gl|{p}|a|b"), client: format!("gla|{p}"), times: T, auto_allowlist: 0 },
        Op::AddScore { keys: vec![format!("rep|{p}")], delta: 3.0, half_life: 1000, cap: 10.0 },
        Op::Scores { keys: vec![format!("rep|{p}"), "rep|2001:db8:9::/48".into()], half_life: 1000 },
        Op::ChildHit { parent: "esc|2001:db8:9::/48".into(), child: p.into(), window: 10_000 },
        Op::SetFlag { key: "blk|2001:db8:9::/48".into(), ttl: 60_000 },
    ];
    let answers = s.batch(&ops, base).await.unwrap();
    assert_eq!(
        answers,
        vec![
            Reply::Scores(vec![0.0]),
            Reply::Flag(None),
            Reply::Gauge(1),
            Reply::Count(1),
            Reply::Count(2),
            Reply::Done,
            Reply::Greylist(Outcome::New { retry_in: 1000 }),
            Reply::Done,
            Reply::Scores(vec![3.0, 0.0]),
            Reply::Count(1),
            Reply::Done,
        ]
    );
    assert_eq!(s.peek(&format!("rl|connection_rate|60000|{p}"), base).await.unwrap(), 1);
    assert!(s.flag("blk|2001:db8:9::/48", base).await.unwrap().is_some());
    assert_eq!(s.batch(&[], base).await.unwrap(), vec![]);
}

#[tokio::test]
async fn embedded_backend() {
    cases(&Embedded::memory(), mx6_store::now_ms()).await;
    batch_case(&Embedded::memory(), mx6_store::now_ms()).await;
}

#[tokio::test]
async fn redis_backend() {
    let server = RedisServer::start();
    let r = Redis::new(&format!("redis://127.0.0.1:{}/0", server.1), Duration::from_secs(2)).unwrap();
    cases(&r, mx6_store::now_ms()).await;
    // A whole batch is one request: one round trip.
    let before = r.requests();
    batch_case(&r, mx6_store::now_ms()).await;
    assert_eq!(r.requests() - before, 3, "the batch, then the peek and the flag read");
    // Redis gone: errors, quickly, never a hang; back: works again.
    drop(server);
    let t = std::time::Instant::now();
    assert!(r.hit("rl|x|y", 1000, 0).await.is_err());
    assert!(t.elapsed() < Duration::from_secs(5));
}
