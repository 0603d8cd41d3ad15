//! Nothing `mx6 config check` accepts may panic the server: configs with
//! timeouts, sizes and retry schedules anywhere in (and around) the accepted
//! ranges are parsed and checked, and every one the checker accepts drives
//! the code that does arithmetic with those values — the SMTP session's
//! deadlines, the retry schedule, the restart schedule — past its limits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mx6_config::Config;
use mx6_queue::schedule::Schedule;
use mx6_smtp::{Answer, Event, Session, SessionConfig, Timeouts};
use proptest::prelude::*;

/// A duration in seconds, mostly within `1..=max`, sometimes anything, in a
/// unit that states it exactly.
fn duration(max: u64) -> impl Strategy<Value = String> {
    prop_oneof![
        9 => (1..=max).prop_map(|n| format!("{n}s")),
        1 => (0u64..=u64::MAX / 2, prop::sample::select(vec!["ms", "s", "m", "h", "d", "w"])).prop_map(|(n, u)| format!("{n}{u}")),
    ]
}

fn drive(s: &mut Session) {
    while let Some(ev) = s.poll_event() {
        match ev {
            Event::Ask(_) => s.answer(Answer::Accept),
            Event::StartTls => s.tls_established(),
            _ => {}
        }
    }
}

static ACCEPTED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn accepted_configs_never_panic() {
    let keys = (
        (duration(3600), duration(3600), duration(86400), duration(7 * 86400)),
        (duration(86400), duration(7 * 86400), duration(60 * 86400)),
        prop_oneof![9 => 1024u64..=(1 << 30), 1 => any::<u64>()],
        prop_oneof![9 => 1u64..=100_000, 1 => any::<u64>()],
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 512, ..ProptestConfig::default() });
    runner.run(&keys, |((c, d, dt, st), (ri, rm, ma), size, recipients)| check(&[c, d, dt, st, ri, rm, ma], size, recipients)).unwrap();
    let n = ACCEPTED.load(Ordering::Relaxed);
    assert!(n > 100, "only {n} of 512 generated configs were accepted: the test would prove little");
}

fn check(d: &[String], size: u64, recipients: u64) -> Result<(), TestCaseError> {
    {
        let text = format!(
            "hostname = \"mx.test\"\n[limits]\ncommand_timeout = \"{}\"\ndata_timeout = \"{}\"\ndata_total_timeout = \"{}\"\nsession_timeout = \"{}\"\nmessage_size = {size}\nrecipients = {recipients}\n[queue]\nretry_initial = \"{}\"\nretry_max = \"{}\"\nmax_age = \"{}\"\n",
            d[0], d[1], d[2], d[3], d[4], d[5], d[6]
        );
        let Ok(cfg) = Config::parse(&text, "prop.toml") else { return Ok(()) };
        if !cfg.validate().is_empty() {
            return Ok(());
        }
        ACCEPTED.fetch_add(1, Ordering::Relaxed);
        let l = &cfg.limits;
        let timeouts = Timeouts {
            command: l.command_timeout,
            data_block: l.data_timeout,
            data_total: l.data_total_timeout,
            session: l.session_timeout,
        };
        let t0 = Instant::now();
        let mut s = Session::new(
            SessionConfig {
                hostname: cfg.hostname.clone(),
                client_literal: "[IPv6:2001:db8::1]".into(),
                max_message_size: l.message_size,
                max_recipients: l.recipients,
                max_errors: l.errors,
                starttls: false,
                tls_active: false,
                auth: false,
                require_auth: false,
                timeouts,
                max_line: mx6_smtp::data::LONG_LINE,
                postmaster_domain: "mx.test".into(),
            },
            t0,
        );
        drive(&mut s);
        s.receive(b"EHLO x\r\nMAIL FROM:<a@b.example> SIZE=99999999999\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@mx.test>\r\nDATA\r\nSubject: x\r\n", t0);
        drive(&mut s);
        let late = t0 + Duration::from_secs(8 * 86400);
        let _ = s.deadline();
        s.handle_timeout(late);
        drive(&mut s);
        prop_assert!(s.is_closed(), "every deadline is within a week");
        let q = &cfg.queue;
        let sched = Schedule { initial: q.retry_initial, max: q.retry_max, max_age: q.max_age };
        for n in [1, 2, 30, 1000, u32::MAX] {
            prop_assert!(sched.delay(n) <= q.retry_max);
        }
        for age in [Duration::ZERO, q.retry_initial, q.max_age, q.max_age * 2] {
            let (_, next) = sched.after_restart(age);
            prop_assert!(next <= q.max_age + q.retry_max);
        }
        Ok(())
    }
}
