//! Two mx6 nodes sharing one real Redis: greylisting and rate limits count
//! across both; with Redis stopped each `store.on_failure` mode behaves as
//! configured, every message that got 250 is delivered, and the nodes
//! reconnect by themselves when Redis is back.

mod common;

use std::time::Duration;

use common::*;

/// The inbound checks these tests do not exercise.
const NO_IPREV_SPF: &str = "[policy.ipv6]\nrequire_ptr = false\nrequire_fcrdns = false\nrequire_spf_or_dkim = false\n";

fn node(name: &str, redis: &RedisServer, on_failure: &str) -> Server {
    let extra = format!(
        r#"[store]
backend = "redis"
url = "{}"
on_failure = "{on_failure}"
timeout = "300ms"
[greylist]
enabled = true
delay = "2s"
auto_allowlist = 0
[[ratelimit]]
what = "connection_rate"
prefix = "ipv6/64"
limit = 3
window = "60s"
[ratelimit_escalation]
children = 0
{NO_IPREV_SPF}"#,
        redis.url()
    );
    Server::start(name, &extra)
}

fn attempt(s: &Server, src: &str, from: &str) -> String {
    Raw::proxied_mail(s.proxy_port, src, from, "u@mx.test", &format!("From: <{from}>\r\nSubject: via {src}\r\n\r\nhello"))
}

#[test]
fn two_nodes_share_state_and_survive_redis_going_away() {
    let mut redis = RedisServer::start();
    let a = node("redis-a", &redis, "open");
    let b = node("redis-b", &redis, "tempfail");

    // A triplet first seen on A passes on B after the delay.
    assert!(attempt(&a, "2001:db8:1:1::1", "x@nospf.example.com").starts_with("451 4.7.1 Greylisted"));
    std::thread::sleep(Duration::from_millis(2300));
    let r = attempt(&b, "2001:db8:1:1::2", "x@nospf.example.com");
    assert!(r.starts_with("250 "), "on node B: {r}");
    let mut accepted = 1;

    // The connection rate counts connections to both nodes: 2 above + 1 here = 3.
    assert!(Raw::proxied(a.proxy_port, "2001:db8:1:1::3").reply().starts_with("220 "));
    let g = Raw::proxied(b.proxy_port, "2001:db8:1:1::4").reply();
    assert!(g.starts_with("421 4.7.0 "), "fourth connection of the /64, across nodes: {g}");

    // Redis goes away.
    redis.stop();
    // Node B (tempfail): refuses with a 4xx at connect, never a 5xx.
    let g = Raw::proxied(b.proxy_port, "2001:db8:2:1::1").reply();
    assert!(g.starts_with("421 4.3.0 "), "tempfail node without Redis: {g}");
    // Node A (open): decides locally; a new triplet is greylisted locally and passes on retry.
    assert!(attempt(&a, "2001:db8:2:2::1", "y@nospf.example.com").starts_with("451 4.7.1 Greylisted"));
    std::thread::sleep(Duration::from_millis(2300));
    let r = attempt(&a, "2001:db8:2:2::1", "y@nospf.example.com");
    assert!(r.starts_with("250 "), "fail-open node without Redis: {r}");
    accepted += 1;
    assert!(a.metric("mx6_store_failures_total{backend=\"redis\",mode=\"open\"}") > 0.0);
    assert!(b.metric("mx6_store_failures_total{backend=\"redis\",mode=\"tempfail\"}") > 0.0);
    assert!(a.log_has("state store failed") && b.log_has("state store failed"));

    // Redis is back: node B reconnects by itself.
    redis.resume();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let g = Raw::proxied(b.proxy_port, "2001:db8:3:1::1").reply();
        if g.starts_with("220 ") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "node B did not recover: {g}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Every 250 was delivered.
    let delivered = a.wait_mail("u", "mx.test", 1).len() + b.wait_mail("u", "mx.test", 1).len();
    assert_eq!(delivered, accepted);
}

/// Each stage asks Redis everything it needs in one request: a message from
/// a stranger whose triplet has passed costs one round trip at connect
/// (reputation, escalation flag, connection count and rate), one at MAIL
/// (the message rates), one at RCPT (greylisting), and two writes nobody
/// waits for: the reputation update and the connection count given back.
#[test]
fn one_round_trip_per_stage() {
    let redis = RedisServer::start();
    let extra = format!(
        r#"[store]
backend = "redis"
url = "{}"
[greylist]
enabled = true
delay = "1s"
auto_allowlist = 0
[[ratelimit]]
what = "connections"
prefix = "ipv6/64"
limit = 10
[[ratelimit]]
what = "connection_rate"
prefix = "ipv6/48"
limit = 100
window = "60s"
[[ratelimit]]
what = "messages"
prefix = "ipv6/64"
limit = 100
window = "60s"
[[ratelimit]]
what = "messages"
prefix = "ipv6/48"
limit = 1000
window = "60s"
[ratelimit_escalation]
children = 4
{NO_IPREV_SPF}"#,
        redis.url()
    );
    let s = Server::start("redis-trips", &extra);
    let trips = || s.metric("mx6_store_requests_total{backend=\"redis\"}");
    assert!(attempt(&s, "2001:db8:7:1::1", "t@nospf.example.com").starts_with("451 4.7.1 Greylisted"));
    std::thread::sleep(Duration::from_millis(1200));
    assert!(attempt(&s, "2001:db8:7:1::1", "t@nospf.example.com").starts_with("250 "));
    // The writes nobody waits for have landed once the count has stood
    // still for a second (a loaded machine may run them late).
    let settled = || {
        let (mut last, mut still) = (trips(), 0);
        while still < 4 {
            std::thread::sleep(Duration::from_millis(250));
            let now = trips();
            still = if now == last { still + 1 } else { 0 };
            last = now;
        }
        last
    };
    let before = settled();
    assert!(attempt(&s, "2001:db8:7:1::2", "t@nospf.example.com").starts_with("250 "));
    assert_eq!(settled() - before, 5.0, "connect, MAIL, RCPT, the reputation update, the connection given back");
}
