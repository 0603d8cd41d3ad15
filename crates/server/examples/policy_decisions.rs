//! Policy decisions per second of the abuse defenses alone, without SMTP:
//! each decision is what one message from a stranger costs — the
//! connect-time limits (escalation, concurrent connections, connection
//! rate), a message and a recipient count, one greylist triplet, the
//! reputation read and the accepted-message record. Clients are spread over
//! 4,096 /64s in 64 /48s.
//!
//!   cargo run --release -p mx6-server --example policy_decisions -- embedded
//!   cargo run --release -p mx6-server --example policy_decisions -- redis://127.0.0.1:6379/0
//!
//! Prints `decisions/s` for the backend (used by bench/abuse-defense.sh).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use mx6_config::Config;
use mx6_policy::ratelimit::{Kind, Standing};
use mx6_policy::reputation::Event;
use mx6_server::checks::connect;
use mx6_server::checks::greylisting::{Greylisting, Presented};
use mx6_server::checks::rate_limits::{Asker, RateLimits};
use mx6_server::checks::reputation::Reputation;
use mx6_server::checks::state::{self, State};

fn main() {
    let backend = std::env::args().nth(1).unwrap_or_else(|| "embedded".into());
    let decisions: usize = std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let tasks: usize = 64;
    let store = if backend == "embedded" {
        "backend = \"embedded\"".to_string()
    } else {
        format!("backend = \"redis\"\nurl = \"{backend}\"\ntimeout = \"2s\"")
    };
    let dir = std::env::temp_dir().join(format!("mx6-decisions-{}", std::process::id()));
    let text = format!(
        r#"data_dir = "{}"
[store]
{store}
[greylist]
delay = "0s"
[[ratelimit]]
what = "connections"
prefix = "ipv6/64"
limit = 1000000
[[ratelimit]]
what = "connection_rate"
prefix = "ipv6/48"
limit = 100000000
[[ratelimit]]
what = "messages"
prefix = "ipv6/64"
limit = 100000000
[[ratelimit]]
what = "recipients"
prefix = "ipv6/48"
limit = 100000000
"#,
        dir.display()
    );
    let cfg = Config::parse(&text, "bench").expect("bench config");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let metrics = Arc::new(mx6_server::admin::metrics::Metrics::new());
        let state = Arc::new(State::open(&cfg.store, &cfg.data_dir, metrics.clone()).expect("store"));
        let escalation = cfg.ratelimit_escalation.escalation();
        let levels = state::levels(&cfg.ratelimit_rules(), &cfg.greylist, &escalation);
        let limits = Arc::new(RateLimits::new(cfg.ratelimit_rules(), escalation, 0.5, metrics));
        let grey = Arc::new(Greylisting::new(&cfg.greylist));
        let rep = Arc::new(Reputation::new(&cfg.reputation, levels));
        let start = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let (state, limits, grey, rep) = (state.clone(), limits.clone(), grey.clone(), rep.clone());
            handles.push(tokio::spawn(async move {
                for i in (t..decisions).step_by(tasks) {
                    let n = (i % 4096) as u16;
                    let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, n / 64, n % 64, 0, 0, 0, 1));
                    let mut a = Asker { ip, standing: Standing { mynetworks: false, authenticated: false }, bad: false };
                    let guard = connect::admit(&state, &limits, &rep, &mut a, true, false).await.limits.expect("under the limits");
                    limits.count(&state, Kind::Messages, &a).await.expect("under the limits");
                    limits.count(&state, Kind::Recipients, &a).await.expect("under the limits");
                    let sender = format!("s{}@example.com", i % 97);
                    let p = Presented { ip, spf_pass_domain: None, confirmed_name: None, sender: &sender, rcpt: "user@example.org" };
                    grey.check(&state, &p).await.expect("store answers");
                    rep.record(&state, ip, Event::Accepted);
                    drop(guard);
                }
            }));
        }
        for h in handles {
            h.await.expect("task");
        }
        let secs = start.elapsed().as_secs_f64();
        println!("{backend}: {decisions} decisions in {secs:.2} s = {:.0} decisions/s", decisions as f64 / secs);
    });
    let _ = std::fs::remove_dir_all(dir);
}
