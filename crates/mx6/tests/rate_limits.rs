//! Rate limits end to end: every kind counted on IPv6 /64 and /48 and on
//! IPv4 /32 and /24, with clients on many addresses (PROXY headers);
//! escalation of a /48 (/24) whose /64s (/32s) keep hitting limits; the
//! tarpit; the early-talker test.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn rule(what: &str, prefix: &str, limit: u32) -> String {
    format!("[[ratelimit]]\nwhat = \"{what}\"\nprefix = \"{prefix}\"\nlimit = {limit}\nwindow = \"60s\"\n")
}

const RELAXED: &str = "[policy.ipv6]\nrequire_ptr = false\nrequire_fcrdns = false\nrequire_spf_or_dkim = false\n";

fn greeting(s: &Server, src: &str) -> (Raw, String) {
    let mut c = Raw::proxied(s.proxy_port, src);
    let g = c.reply();
    (c, g)
}

#[test]
fn concurrent_connections_per_prefix_level() {
    let extra = [
        rule("connections", "ipv6/64", 2),
        rule("connections", "ipv6/48", 3),
        rule("connections", "ipv4/32", 2),
        rule("connections", "ipv4/24", 3),
    ]
    .concat()
        + "[ratelimit_escalation]\nchildren = 0\n";
    let s = Server::start("rl-conn", &extra);
    let (_a, g) = greeting(&s, "2001:db8:a:1::1");
    assert!(g.starts_with("220 "), "{g}");
    let (b, g) = greeting(&s, "2001:db8:a:1::2");
    assert!(g.starts_with("220 "), "{g}");
    let (_, g) = greeting(&s, "2001:db8:a:1::3");
    assert!(g.starts_with("421 4.7.0 mx.test too many connections from 2001:db8:a:1::/64"), "third in the /64: {g}");
    let (_c, g) = greeting(&s, "2001:db8:a:2::1");
    assert!(g.starts_with("220 "), "third in the /48: {g}");
    let (_, g) = greeting(&s, "2001:db8:a:3::1");
    assert!(g.starts_with("421 4.7.0 mx.test too many connections from 2001:db8:a::/48"), "fourth in the /48: {g}");
    // A closed session frees its place.
    drop(b);
    std::thread::sleep(Duration::from_millis(300));
    let (_d, g) = greeting(&s, "2001:db8:a:1::4");
    assert!(g.starts_with("220 "), "after one left: {g}");

    let (_e, g) = greeting(&s, "192.0.2.1");
    assert!(g.starts_with("220 "));
    let (_f, g) = greeting(&s, "192.0.2.1");
    assert!(g.starts_with("220 "));
    let (_, g) = greeting(&s, "192.0.2.1");
    assert!(g.starts_with("421 4.7.0 mx.test too many connections from 192.0.2.1/32"), "{g}");
    let (_h, g) = greeting(&s, "192.0.2.2");
    assert!(g.starts_with("220 "));
    let (_, g) = greeting(&s, "192.0.2.3");
    assert!(g.starts_with("421 4.7.0 mx.test too many connections from 192.0.2.0/24"), "{g}");

    // Strangers' rules do not touch mynetworks.
    let _local: Vec<Raw> = (0..5).map(|_| Raw::open(v6(s.port))).collect();
    for (fam, len) in [("ipv6", 64), ("ipv6", 48), ("ipv4", 32), ("ipv4", 24)] {
        let series = format!("mx6_ratelimit_hits_total{{family=\"{fam}\",limit=\"connections\",prefix_len=\"{len}\"}}");
        assert_eq!(s.metric(&series), 1.0, "{series}");
    }
    assert!(s.log_has("rate limit hit") && s.log_has("prefix=2001:db8:a::/48"));
    assert!(s.metric("mx6_rejections_total{family=\"ipv6\",reason=\"rate_limited\",stage=\"connect\"}") >= 2.0);
}

/// Client addresses for one prefix level: `addr(k, h)` is host `h` inside
/// the k-th prefix of that level (hosts differ below the level, so they count
/// as one client); `k` apart gives another prefix.
fn addr(level: &str, k: u32, h: u32) -> String {
    match level {
        "ipv6/64" => format!("2001:db8:{k:x}:1::{h:x}"),
        "ipv6/48" => format!("2001:db8:{k:x}:{h:x}::1"),
        "ipv4/32" => format!("10.0.{k}.1"),
        "ipv4/24" => format!("10.0.{k}.{h}"),
        _ => unreachable!(),
    }
}

/// Every counted kind (connection rate, messages, recipients, TLS sessions)
/// at each of IPv6 /64 and /48 and IPv4 /32 and /24: the limit holds for
/// several addresses of one prefix and not for the next prefix.
#[test]
fn rates_at_every_prefix_level() {
    for level in ["ipv6/64", "ipv6/48", "ipv4/32", "ipv4/24"] {
        let extra =
            [rule("connection_rate", level, 3), rule("messages", level, 2), rule("recipients", level, 3), rule("tls_sessions", level, 1)]
                .concat()
                + "[ratelimit_escalation]\nchildren = 0\n"
                + RELAXED;
        let s = Server::start(&format!("rl-rates-{}", level.replace('/', "-")), &extra);
        let len = level.split('/').nth(1).unwrap();
        let fam = level.split('/').next().unwrap();
        let session = |src: &str| {
            let (mut c, g) = greeting(&s, src);
            assert!(g.starts_with("220 "), "{level} {src}: {g}");
            c.cmd("EHLO client.example");
            c
        };

        // connection_rate: prefix 1.
        for h in 1..=3 {
            assert!(greeting(&s, &addr(level, 1, h)).1.starts_with("220 "), "{level}: connection {h}");
        }
        let g = greeting(&s, &addr(level, 1, 4)).1;
        assert!(g.starts_with("421 4.7.0 mx.test too many connections from "), "{level}: fourth connection in a minute: {g}");
        assert!(greeting(&s, &addr(level, 101, 1)).1.starts_with("220 "), "{level}: another prefix");

        // messages (counted at MAIL): prefix 2.
        let mut c = session(&addr(level, 2, 1));
        assert!(c.cmd("MAIL FROM:<m@nospf.example.com>").starts_with("250 "));
        c.cmd("RSET");
        let mut d = session(&addr(level, 2, 2));
        assert!(d.cmd("MAIL FROM:<m@nospf.example.com>").starts_with("250 "));
        d.cmd("RSET");
        let r = d.cmd("MAIL FROM:<m@nospf.example.com>");
        assert!(r.starts_with("451 4.7.1 Rate limit exceeded for "), "{level}: third message: {r}");
        assert!(session(&addr(level, 102, 1)).cmd("MAIL FROM:<m@nospf.example.com>").starts_with("250 "), "{level}: another prefix");

        // recipients: prefix 3.
        let mut c = session(&addr(level, 3, 1));
        c.cmd("MAIL FROM:<r@nospf.example.com>");
        let r: Vec<String> = (0..2).map(|i| c.cmd(&format!("RCPT TO:<u{i}@mx.test>"))).collect();
        assert!(r.iter().all(|x| x.starts_with("250 ")), "{level}: {r:?}");
        let mut d = session(&addr(level, 3, 2));
        d.cmd("MAIL FROM:<r@nospf.example.com>");
        assert!(d.cmd("RCPT TO:<u3@mx.test>").starts_with("250 "));
        let r = d.cmd("RCPT TO:<u4@mx.test>");
        assert!(r.starts_with("451 4.7.1 Rate limit exceeded for "), "{level}: fourth recipient: {r}");
        let mut e = session(&addr(level, 103, 1));
        e.cmd("MAIL FROM:<r@nospf.example.com>");
        assert!(e.cmd("RCPT TO:<u5@mx.test>").starts_with("250 "), "{level}: another prefix");

        // tls_sessions (at STARTTLS; the handshake is never made): prefix 4.
        assert!(session(&addr(level, 4, 1)).cmd("STARTTLS").starts_with("220 "));
        let r = session(&addr(level, 4, 2)).cmd("STARTTLS");
        assert!(r.starts_with("454 4.7.0 TLS not available now: too many TLS sessions from "), "{level}: {r}");
        assert!(session(&addr(level, 104, 1)).cmd("STARTTLS").starts_with("220 "), "{level}: another prefix");

        for limit in ["connection_rate", "messages", "recipients", "tls_sessions"] {
            let series = format!("mx6_ratelimit_hits_total{{family=\"{fam}\",limit=\"{limit}\",prefix_len=\"{len}\"}}");
            assert_eq!(s.metric(&series), 1.0, "{series}");
        }
        assert!(s.metric(&format!("mx6_rejections_total{{family=\"{fam}\",reason=\"rate_limited\",stage=\"rcpt\"}}")) == 1.0);
    }
}

/// Failed AUTH attempts, counted on the prefix of a submission client (over
/// PROXY, with swaks as the client).
#[test]
fn auth_failures_per_prefix_level() {
    let sub = free_port();
    let extra = format!(
        "[[listener]]\naddress = \"[::1]:{sub}\"\nkind = \"submission\"\nproxy_protocol = true\nallow = [\"::1/128\"]\n{}[ratelimit_escalation]\nchildren = 0\n[submission]\nauth_failure_delay = \"0s\"\n",
        [rule("auth_failures", "ipv6/48", 2), rule("auth_failures", "ipv4/24", 2)].concat().replace("limit = 2\n", "limit = 2\nscope = \"all\"\n")
    );
    let s = Server::start("rl-auth", &extra);
    let attempt = |src: &str| {
        let fam = if src.contains(':') { "6" } else { "4" };
        let o = swaks(&[
            "--server",
            "::1",
            "--port",
            &sub.to_string(),
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "nobody@mx.test",
            "--auth-password",
            "wrong",
            "--to",
            "u@mx.test",
            "--from",
            "nobody@mx.test",
            "--proxy-version",
            "1",
            "--proxy-family",
            &format!("TCP{fam}"),
            "--proxy-source",
            src,
            "--proxy-source-port",
            "40000",
            "--proxy-dest",
            if fam == "6" { "::1" } else { "127.0.0.1" },
            "--proxy-dest-port",
            "587",
        ]);
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert!(attempt("2001:db8:1:1::1").contains("535 5.7.8"));
    assert!(attempt("2001:db8:1:2::1").contains("535 5.7.8"));
    let t = attempt("2001:db8:1:3::1");
    assert!(t.contains("454 4.7.0 Too many failed authentications"), "third failure in the /48: {t}");
    assert!(attempt("2001:db8:2:1::1").contains("535 5.7.8"), "another /48");
    assert!(attempt("192.0.2.1").contains("535 5.7.8"));
    assert!(attempt("192.0.2.2").contains("535 5.7.8"));
    assert!(attempt("192.0.2.3").contains("454 4.7.0"), "third in the /24");
    assert_eq!(s.metric("mx6_ratelimit_hits_total{family=\"ipv6\",limit=\"auth_failures\",prefix_len=\"48\"}"), 1.0);
    assert_eq!(s.metric("mx6_ratelimit_hits_total{family=\"ipv4\",limit=\"auth_failures\",prefix_len=\"24\"}"), 1.0);
}

#[test]
fn escalation_limits_the_aggregate_and_tarpit_holds() {
    let extra = rule("connection_rate", "ipv6/64", 1)
        + &rule("connection_rate", "ipv4/32", 1)
        + "[ratelimit_escalation]\nchildren = 3\nwindow = \"60s\"\nduration = \"60s\"\n";
    let s = Server::start("rl-escalate", &extra);
    for child in ["2001:db8:e:1::1", "2001:db8:e:2::1", "2001:db8:e:3::1"] {
        assert!(greeting(&s, child).1.starts_with("220 "));
        assert!(greeting(&s, child).1.starts_with("421 "), "second connection from {child}");
    }
    let (_, g) = greeting(&s, "2001:db8:e:99::1");
    assert!(g.starts_with("421 4.7.0 mx.test too many connections from 2001:db8:e::/48"), "a fresh /64 in the escalated /48: {g}");
    assert!(greeting(&s, "2001:db8:ee:1::1").1.starts_with("220 "), "another /48 is untouched");
    for child in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        assert!(greeting(&s, child).1.starts_with("220 "));
        assert!(greeting(&s, child).1.starts_with("421 "));
    }
    assert!(greeting(&s, "198.51.100.77").1.starts_with("421 4.7.0 mx.test too many connections from 198.51.100.0/24"));
    assert!(greeting(&s, "203.0.113.1").1.starts_with("220 "));
    assert!(s.log_has("rate limit escalated"));
    assert_eq!(s.metric("mx6_ratelimit_hits_total{family=\"ipv6\",limit=\"escalation\",prefix_len=\"48\"}"), 1.0);
    assert_eq!(s.metric("mx6_ratelimit_hits_total{family=\"ipv4\",limit=\"escalation\",prefix_len=\"24\"}"), 1.0);
    // mx6 state shows the block.
    let out = mx6(&["state".as_ref(), "show".as_ref(), "2001:db8:e::/48".as_ref(), "--config".as_ref(), s.config.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("blk|2001:db8:e::/48  set") && text.contains("esc|2001:db8:e::/48  3 children"), "{text}");

    // Tarpit: the refusal comes only after the configured delay.
    let t = Server::start("rl-tarpit", &(rule("messages", "ipv6/64", 1) + "tarpit = \"1500ms\"\n" + RELAXED));
    let (mut c, _) = greeting(&t, "2001:db8:7:7::1");
    c.cmd("EHLO client.example");
    assert!(c.cmd("MAIL FROM:<a@nospf.example.com>").starts_with("250 "));
    c.cmd("RSET");
    let start = Instant::now();
    assert!(c.cmd("MAIL FROM:<a@nospf.example.com>").starts_with("451 4.7.1 "));
    assert!(start.elapsed() >= Duration::from_millis(1400), "{:?}", start.elapsed());
}

#[test]
fn early_talker_refused_when_enabled() {
    let s = Server::start("pregreet", "[pregreet]\nwait = \"1s\"\naction = \"refuse\"\n");
    let mut c = Raw::proxied(s.proxy_port, "2001:db8:9::1");
    let first = {
        let mut l = String::new();
        std::io::BufRead::read_line(&mut c.r, &mut l).unwrap();
        l
    };
    assert_eq!(first, "220-mx.test ESMTP mx6\r\n");
    c.send(b"EHLO impatient.example\r\n");
    let r = c.reply();
    assert!(r.starts_with("521 5.5.1 Protocol error"), "{r}");
    assert!(c.closed());
    // A client that waits gets the whole greeting and carries on.
    let mut c = Raw::proxied(s.proxy_port, "2001:db8:9::2");
    let g = c.reply();
    assert!(g.starts_with("220-mx.test ESMTP mx6\r\n220 "), "{g}");
    assert!(c.cmd("EHLO patient.example").starts_with("250"));
    assert_eq!(s.metric("mx6_rejections_total{family=\"ipv6\",reason=\"early_talker\",stage=\"connect\"}"), 1.0);
    // mynetworks is not tested.
    let mut c = Raw::connect(v6(s.port));
    assert!(c.reply().starts_with("220 "));
}

/// Separate limits per kind of client: a rule with `scope = "authenticated"`
/// counts submission users, and the strangers' rule does not touch them.
#[test]
fn authenticated_sessions_have_their_own_limits() {
    let extra = rule("messages", "ipv6/64", 1)
        + "scope = \"authenticated\"\n"
        + &rule("messages", "ipv6/128", 1)
        + "[ratelimit_escalation]\nchildren = 0\n";
    let s = Server::start("rl-scope", &extra);
    let out = s.user(&["add", "alice@mx.test"], "alice-pw\n");
    assert!(out.status.success());
    let send = || {
        let o = swaks(&[
            "--server",
            "::1",
            "--port",
            &s.sub_port.to_string(),
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@mx.test",
            "--auth-password",
            "alice-pw",
            "--from",
            "alice@mx.test",
            "--to",
            "alice@mx.test",
        ]);
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let t = send();
    assert!(t.contains("250 2.0.0 Ok: queued"), "first message: {t}");
    let t = send();
    assert!(t.contains("451 4.7.1 Rate limit exceeded for ::/64"), "second message in the window: {t}");
    // The strangers' rule (1 message per /128) does not count mynetworks clients on port 25.
    for _ in 0..3 {
        let mut c = Raw::open(v6(s.port));
        c.cmd("EHLO localhost");
        assert!(c.cmd("MAIL FROM:<x@mx.test>").starts_with("250 "));
    }
}
