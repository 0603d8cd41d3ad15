//! End-to-end submission (RFC 6409, RFC 8314) and SMTP AUTH (RFC 4954) with
//! swaks over both families: who may send, as whom, and what the message gets.

mod common;

use common::*;

fn server(name: &str, extra: &str) -> Server {
    let s = Server::start(name, &format!("[local]\ndomains = [\"mx.test\"]\n[submission]\nauth_failure_delay = \"10ms\"\n{extra}"));
    let out = s.user(&["add", "alice@mx.test", "--sender", "sales@mx.test"], "alice-pw\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn starttls_auth_plain_and_login_relay_over_both_families() {
    let s = server("sub-relay", "");
    for host in ["::1", "127.0.0.1"] {
        for mech in ["PLAIN", "LOGIN"] {
            let out = swaks_ok(&[
                "--server",
                host,
                "--port",
                &s.sub_port.to_string(),
                "--tls",
                "--auth",
                mech,
                "--auth-user",
                "alice@mx.test",
                "--auth-password",
                "alice-pw",
                "--from",
                "alice@mx.test",
                "--to",
                "bob@remote.test",
            ]);
            assert!(out.contains("<~  235 2.7.0 Authentication successful"), "{out}");
            assert!(out.contains("<~  250 2.0.0 Ok: queued as"), "{out}");
        }
    }
    let log = s.log_text();
    assert_eq!(log.matches("to=bob@remote.test status=\"deferred\"").count(), 4, "{log}");
    assert!(log.contains("user=\"alice@mx.test\""), "{log}");
    assert!(!log.contains("alice-pw"), "a password reached the log");
}

#[test]
fn submissions_is_implicit_tls() {
    let s = server("subs", "");
    for host in ["::1", "127.0.0.1"] {
        let out = swaks_ok(&[
            "--server",
            host,
            "--port",
            &s.subs_port.to_string(),
            "--tlsc",
            "--auth",
            "LOGIN",
            "--auth-user",
            "alice@mx.test",
            "--auth-password",
            "alice-pw",
            "--from",
            "alice@mx.test",
            "--to",
            "alice@mx.test",
        ]);
        assert!(out.contains("<~  250 2.0.0 Ok: queued as"), "{out}");
        assert!(!out.contains("STARTTLS"), "no STARTTLS inside implicit TLS: {out}");
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
    let out = swaks(&["--server", "::1", "--port", &s.sub_port.to_string(), "--quit-after", "EHLO"]);
    let t = text(&out);
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
    assert!(out.contains("<~  250 AUTH PLAIN LOGIN"), "{out}");
    // Port 25 never offers AUTH.
    let out = swaks_ok(&["--server", "::1", "--port", &s.port.to_string(), "--tls", "--quit-after", "EHLO"]);
    assert!(!out.contains("AUTH"), "{out}");
}

#[test]
fn wrong_password_and_foreign_sender_are_refused() {
    let s = server("sub-refuse", "");
    let out = swaks(&[
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
        "wrong",
        "--to",
        "x@remote.test",
    ]);
    assert!(text(&out).contains("<~* 535 5.7.8 Error: authentication credentials invalid"), "{}", text(&out));
    let out = swaks(&[
        "--server",
        "127.0.0.1",
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
        "ceo@mx.test",
        "--to",
        "x@remote.test",
    ]);
    assert!(text(&out).contains("<~* 553 5.7.1 Sender address rejected: not owned by the authenticated user"), "{}", text(&out));
    // A listed extra sender address is fine.
    let out = swaks_ok(&[
        "--server",
        "127.0.0.1",
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
        "sales@mx.test",
        "--to",
        "x@remote.test",
    ]);
    assert!(out.contains("<~  250 2.0.0 Ok: queued"), "{out}");
    assert!(s.log_text().contains("reason=\"sender_not_owned\""));
    assert!(s.log_text().contains("reason=\"auth_failed\""));
}

#[test]
fn repeated_failures_from_one_prefix_are_throttled() {
    let s = server("sub-throttle", "auth_failures = 2\n");
    let attempt = |pw: &str| {
        text(&swaks(&[
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
            pw,
            "--quit-after",
            "AUTH",
        ]))
    };
    assert!(attempt("bad1").contains("535 5.7.8"));
    assert!(attempt("bad2").contains("535 5.7.8"));
    let t = attempt("alice-pw");
    assert!(t.contains("454 4.7.0 Too many failed authentications"), "{t}");
    // The other family is another prefix.
    let t = text(&swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &s.sub_port.to_string(),
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@mx.test",
        "--auth-password",
        "alice-pw",
        "--quit-after",
        "AUTH",
    ]));
    assert!(t.contains("235 2.7.0"), "{t}");
}

#[test]
fn submission_hygiene_headers() {
    let s = server("sub-hygiene", "");
    let out = swaks_ok(&[
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
        "--data",
        "Subject: no date\n\nbody\n",
    ]);
    assert!(out.contains("250 2.0.0 Ok: queued"));
    let m = &s.mail_texts("alice", "mx.test", 1)[0];
    assert!(m.contains("Received: from "), "{m}");
    assert!(m.contains("[IPv6:::1]"), "{m}");
    assert!(m.contains(" with ESMTPSA id "), "{m}");
    assert!(m.contains("\r\nDate: "), "{m}");
    assert!(m.contains("\r\nMessage-ID: <") && m.contains("@mx.test>\r\n"), "{m}");
    // A message that has them keeps its own, once.
    let out = swaks_ok(&[
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
        "--data",
        "Subject: has both\nmessage-id: <mine@client>\nDATE: Fri, 27 Nov 2026 10:00:00 +0000\n\nbody\n",
    ]);
    assert!(out.contains("250 2.0.0 Ok: queued"));
    let mails = s.mail_texts("alice", "mx.test", 2);
    let m = mails.iter().find(|m| m.contains("<mine@client>")).expect("second message");
    assert!(!m.contains("Message-ID:") && !m.contains("\r\nDate:"), "nothing added: {m}");
}

#[test]
fn hide_client_leaves_the_address_out() {
    let s = server("sub-hide", "hide_client = true\n");
    swaks_ok(&[
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
        "--helo",
        "laptop.home",
    ]);
    let m = &s.mail_texts("alice", "mx.test", 1)[0];
    assert!(m.contains("Received: (using TLSv1."), "{m}");
    assert!(!m.contains("::1") && !m.contains("laptop.home"), "{m}");
}

#[test]
fn user_command_round_trip() {
    let s = server("sub-users", "");
    let auth = |pw: &str| {
        text(&swaks(&[
            "--server",
            "::1",
            "--port",
            &s.sub_port.to_string(),
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            "bob@mx.test",
            "--auth-password",
            pw,
            "--quit-after",
            "AUTH",
        ]))
    };
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
