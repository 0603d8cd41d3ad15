//! End-to-end submission (RFC 6409, RFC 8314) and SMTP AUTH (RFC 4954) with
//! swaks over both families: who may send, as whom, and what the message gets.

mod common;

use std::process::Output;

use common::*;

fn server(name: &str, extra: &str) -> Server {
    let s = Server::start(name, &format!("[local]\ndomains = [\"mx.test\"]\n[submission]\nauth_failure_delay = \"10ms\"\n{extra}"));
    let out = s.user(&["add", "alice@mx.test", "--sender", "sales@mx.test"], "alice-pw\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// swaks to the submission port with STARTTLS (or `--tlsc` on `port`) and AUTH
/// as `user`/`password` with `mech`, plus `extra` arguments.
fn submit(host: &str, port: u16, tls: &str, mech: &str, user: &str, password: &str, extra: &[&str]) -> Output {
    let port = port.to_string();
    let mut args = vec!["--server", host, "--port", &port, tls, "--auth", mech, "--auth-user", user, "--auth-password", password];
    args.extend_from_slice(extra);
    swaks(&args)
}

fn alice(s: &Server, host: &str, mech: &str, extra: &[&str]) -> String {
    let out = submit(host, s.sub_port, "--tls", mech, "alice@mx.test", "alice-pw", extra);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    t
}

#[test]
fn starttls_auth_plain_and_login_relay_over_both_families() {
    let s = server("sub-relay", "");
    for host in ["::1", "127.0.0.1"] {
        for mech in ["PLAIN", "LOGIN"] {
            let out = alice(&s, host, mech, &["--from", "alice@mx.test", "--to", "bob@remote.test"]);
            assert!(out.contains("<~  235 2.7.0 Authentication successful"), "{out}");
            assert!(out.contains("<~  250 2.0.0 Ok: queued as"), "{out}");
        }
    }
    // The queue manager logs asynchronously: wait for all four lines.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let deferred = |log: &str| log.lines().filter(|l| l.contains("to=bob@remote.test") && l.contains("status=\"deferred\"")).count();
    let mut log = s.log_text();
    while deferred(&log) < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        log = s.log_text();
    }
    // remote.test does not resolve on the test DNS server: each one waits for a retry.
    assert_eq!(deferred(&log), 4, "{log}");
    assert!(log.contains("user=\"alice@mx.test\""), "{log}");
    assert!(!log.contains("alice-pw"), "a password reached the log");
}

#[test]
fn submissions_is_implicit_tls() {
    let s = server("subs", "");
    for host in ["::1", "127.0.0.1"] {
        let out = submit(
            host,
            s.subs_port,
            "--tlsc",
            "LOGIN",
            "alice@mx.test",
            "alice-pw",
            &["--from", "alice@mx.test", "--to", "alice@mx.test"],
        );
        let t = text(&out);
        assert!(t.contains("<~  250 2.0.0 Ok: queued as"), "{t}");
        assert!(!t.contains("STARTTLS"), "no STARTTLS inside implicit TLS: {t}");
    }
    let mails = s.mail_texts("alice", "mx.test", 2);
    assert_eq!(mails.len(), 2);
    for m in mails {
        assert!(m.contains(" with ESMTPSA id "), "{m}");
    }
}

#[test]
fn auth_only_inside_tls_and_required_before_mail() {
    let s = server("sub-rules", "");
    // Not advertised before STARTTLS, refused when tried.
    let t = text(&swaks(&["--server", "::1", "--port", &s.sub_port.to_string(), "--quit-after", "EHLO"]));
    assert!(!t.contains("AUTH"), "{t}");
    let mut c = Raw::open(v6(s.sub_port));
    c.cmd("EHLO c.example");
    assert_eq!(
        c.cmd("AUTH PLAIN AGFsaWNlQG14LnRlc3QAYWxpY2UtcHc="),
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    // MAIL before AUTH, even inside TLS.
    let out =
        swaks(&["--server", "127.0.0.1", "--port", &s.sub_port.to_string(), "--tls", "--from", "alice@mx.test", "--to", "x@remote.test"]);
    assert!(text(&out).contains("<~* 530 5.7.0 Authentication required"), "{}", text(&out));
    // Advertised after STARTTLS.
    let out = swaks_ok(&["--server", "::1", "--port", &s.sub_port.to_string(), "--tls", "--quit-after", "EHLO"]);
    assert!(out.contains("<~  250-AUTH PLAIN LOGIN") && out.contains("<~  250 REQUIRETLS"), "{out}");
    // Port 25 never offers AUTH.
    let out = swaks_ok(&["--server", "::1", "--port", &s.port.to_string(), "--tls", "--quit-after", "EHLO"]);
    assert!(!out.contains("AUTH"), "{out}");
}

#[test]
fn wrong_password_and_foreign_sender_are_refused() {
    let s = server("sub-refuse", "");
    let t = text(&submit("::1", s.sub_port, "--tls", "PLAIN", "alice@mx.test", "wrong", &["--to", "x@remote.test"]));
    assert!(t.contains("<~* 535 5.7.8 Error: authentication credentials invalid"), "{t}");
    let t = text(&submit(
        "127.0.0.1",
        s.sub_port,
        "--tls",
        "PLAIN",
        "alice@mx.test",
        "alice-pw",
        &["--from", "ceo@mx.test", "--to", "x@remote.test"],
    ));
    assert!(t.contains("<~* 553 5.7.1 Sender address rejected: not owned by the authenticated user"), "{t}");
    // A listed extra sender address is fine.
    let out = alice(&s, "127.0.0.1", "PLAIN", &["--from", "sales@mx.test", "--to", "x@remote.test"]);
    assert!(out.contains("<~  250 2.0.0 Ok: queued"), "{out}");
    assert!(s.log_has("reason=\"sender_not_owned\""));
    assert!(s.log_has("reason=\"auth_failed\""));
}

#[test]
fn repeated_failures_from_one_prefix_are_throttled() {
    let s = server("sub-throttle", "auth_failures = 2\n");
    let attempt = |host: &str, pw: &str| text(&submit(host, s.sub_port, "--tls", "PLAIN", "alice@mx.test", pw, &["--quit-after", "AUTH"]));
    assert!(attempt("::1", "bad1").contains("535 5.7.8"));
    assert!(attempt("::1", "bad2").contains("535 5.7.8"));
    let t = attempt("::1", "alice-pw");
    assert!(t.contains("454 4.7.0 Too many failed authentications"), "{t}");
    // The other family is another prefix.
    let t = attempt("127.0.0.1", "alice-pw");
    assert!(t.contains("235 2.7.0"), "{t}");
}

#[test]
fn submission_hygiene_headers() {
    let s = server("sub-hygiene", "");
    let out = alice(&s, "::1", "PLAIN", &["--from", "alice@mx.test", "--to", "alice@mx.test", "--data", "Subject: no date\n\nbody\n"]);
    assert!(out.contains("250 2.0.0 Ok: queued"));
    let m = &s.mail_texts("alice", "mx.test", 1)[0];
    assert!(m.contains("Received: from "), "{m}");
    assert!(m.contains("[IPv6:::1]"), "{m}");
    assert!(m.contains(" with ESMTPSA id "), "{m}");
    assert!(m.contains("\r\nDate: "), "{m}");
    assert!(m.contains("\r\nMessage-ID: <") && m.contains("@mx.test>\r\n"), "{m}");
    // A message that has them keeps its own, once.
    let data = "Subject: has both\nmessage-id: <mine@client>\nDATE: Fri, 27 Nov 2026 10:00:00 +0000\n\nbody\n";
    let out = alice(&s, "::1", "PLAIN", &["--from", "alice@mx.test", "--to", "alice@mx.test", "--data", data]);
    assert!(out.contains("250 2.0.0 Ok: queued"));
    let mails = s.mail_texts("alice", "mx.test", 2);
    let m = mails.iter().find(|m| m.contains("<mine@client>")).expect("second message");
    assert!(!m.contains("Message-ID:") && !m.contains("\r\nDate:"), "nothing added: {m}");
}

#[test]
fn hide_client_leaves_the_address_out() {
    let s = server("sub-hide", "hide_client = true\n");
    alice(&s, "::1", "PLAIN", &["--from", "alice@mx.test", "--to", "alice@mx.test", "--helo", "laptop.home"]);
    let m = &s.mail_texts("alice", "mx.test", 1)[0];
    assert!(m.contains("Received: (using TLSv1."), "{m}");
    assert!(!m.contains("::1") && !m.contains("laptop.home"), "{m}");
}

#[test]
fn user_command_round_trip() {
    let s = server("sub-users", "");
    let auth = |pw: &str| text(&submit("::1", s.sub_port, "--tls", "LOGIN", "bob@mx.test", pw, &["--quit-after", "AUTH"]));
    let out = s.user(&["add", "bob@mx.test"], "first\n");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&s.user(&["list"], "").stdout).contains("bob@mx.test"));
    // Wait out the file's mtime granularity so the server sees each change.
    let settle = || std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(auth("first").contains("235 2.7.0"));
    assert!(s.user(&["passwd", "bob@mx.test"], "second\n").status.success());
    settle();
    assert!(auth("first").contains("535 5.7.8"));
    assert!(auth("second").contains("235 2.7.0"));
    assert!(s.user(&["del", "bob@mx.test"], "").status.success());
    settle();
    assert!(auth("second").contains("535 5.7.8"));
    assert_eq!(s.user(&["del", "bob@mx.test"], "").status.code(), Some(1));
    assert_eq!(s.user(&["add", "alice@mx.test"], "x\n").status.code(), Some(1));
    let stored = std::fs::read_to_string(s.data().join("users.toml")).unwrap();
    assert!(stored.contains("$argon2id$") && !stored.contains("alice-pw"));
}
