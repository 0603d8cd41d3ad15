//! End-to-end: the real binary on loopback, real clients (swaks, Python smtplib),
//! both address families; assertions on replies, Maildir files and headers.

mod common;

use common::*;

#[test]
fn swaks_plain_over_both_families() {
    let s = Server::start("plain", "");
    for (host, literal) in [("::1", "[IPv6:::1]"), ("127.0.0.1", "[127.0.0.1]")] {
        let user = if host == "::1" { "six" } else { "four" };
        let out = swaks_ok(&[
            "--server",
            host,
            "--port",
            &s.port.to_string(),
            "--from",
            "a@example.org",
            "--to",
            &format!("{user}@mx.test"),
            "--helo",
            "client.example",
        ]);
        assert!(out.contains("250 2.0.0 Ok: queued as"), "{out}");
        let mails = s.mail_texts(user, "mx.test", 1);
        assert_eq!(mails.len(), 1, "{user}: {}", s.log_text());
        let m = &mails[0];
        assert!(m.starts_with(&format!("Return-Path: <a@example.org>\r\nDelivered-To: {user}@mx.test\r\nReceived: from client.example (unknown {literal})\r\n\tby mx.test (mx6) with ESMTP id ")), "{m}");
        assert!(m.contains(&format!("\tfor <{user}@mx.test>;\r\n")), "{m}");
        assert!(m.contains("This is a test mailing"));
    }
}

#[test]
fn swaks_starttls_and_pipelining() {
    let s = Server::start("tls", "");
    for host in ["::1", "127.0.0.1"] {
        let out = swaks_ok(&["--server", host, "--port", &s.port.to_string(), "--to", "t@mx.test", "--tls", "--pipeline"]);
        assert!(out.contains("<~  250 2.0.0 Ok: queued as"), "{out}");
    }
    let mails = s.mail_texts("t", "mx.test", 2);
    assert_eq!(mails.len(), 2);
    for m in &mails {
        assert!(m.contains("(using TLSv1."), "{m}");
        assert!(m.contains(" with ESMTPS id "), "{m}");
    }
    // STARTTLS is advertised before TLS and not after it.
    let out = swaks_ok(&["--server", "::1", "--port", &s.port.to_string(), "--to", "t@mx.test", "--tls", "--quit-after", "EHLO"]);
    assert!(out.contains("<-  250 STARTTLS") || out.contains("<-  250-STARTTLS"), "{out}");
    assert!(!out.contains("<~  250-STARTTLS") && !out.contains("<~  250 STARTTLS"), "{out}");
}

#[test]
fn bdat_chunks_are_delivered_exactly() {
    let s = Server::start("bdat", "");
    for addr in [v6(s.port), v4(s.port)] {
        let mut c = Raw::open(addr);
        assert!(c.cmd("EHLO c.example").contains("250-CHUNKING"));
        let body1 = b"Subject: chunked\r\n\r\nfirst part, ";
        let body2 = b"second part\r\n.not stuffed\r\n";
        let mut w = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<bdat@mx.test>\r\n".to_vec();
        w.extend_from_slice(format!("BDAT {}\r\n", body1.len()).as_bytes());
        w.extend_from_slice(body1);
        w.extend_from_slice(format!("BDAT {} LAST\r\n", body2.len()).as_bytes());
        w.extend_from_slice(body2);
        c.send(&w);
        assert!(c.reply().starts_with("250 2.1.0"));
        assert!(c.reply().starts_with("250 2.1.5"));
        assert_eq!(c.reply(), format!("250 2.0.0 {} octets received\r\n", body1.len()));
        assert!(c.reply().starts_with("250 2.0.0 Ok: queued as"));
    }
    let mails = s.mail_texts("bdat", "mx.test", 2);
    assert_eq!(mails.len(), 2);
    for m in mails {
        assert!(m.ends_with("Subject: chunked\r\n\r\nfirst part, second part\r\n.not stuffed\r\n"), "{m:?}");
    }
}

#[test]
fn smtputf8_with_python_smtplib() {
    let s = Server::start("utf8", "");
    let script = format!(
        r#"
import smtplib
for host in ("::1", "127.0.0.1"):
    with smtplib.SMTP(host, {port}) as c:
        c.ehlo("client.example")
        assert c.has_extn("smtputf8")
        c.sendmail("jörg@example.org", ["用户@mx.test"], "Subject: utf8\r\n\r\nGrüße\r\n".encode(), mail_options=["SMTPUTF8", "BODY=8BITMIME"])
"#,
        port = s.port
    );
    let out = std::process::Command::new("python3").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mails = s.mail_texts("用户", "mx.test", 2);
    assert_eq!(mails.len(), 2, "{}", s.log_text());
    for m in mails {
        assert!(m.starts_with("Return-Path: <jörg@example.org>\r\nDelivered-To: 用户@mx.test\r\n"), "{m}");
        assert!(m.contains(" with UTF8SMTP id "), "{m}");
        assert!(m.contains("Grüße"));
    }
}

#[test]
fn relay_is_refused_for_strangers_and_proxy_address_is_used() {
    let s = Server::start_with_zone("relay", STRANGERS, "[local]\ndomains = [\"mx.test\"]\n");
    let port = s.proxy_port.to_string();
    // A stranger (address from the PROXY header) may send to us, not through us.
    let out = swaks(&[
        "--server",
        "::1",
        "--port",
        &port,
        "--proxy-version",
        "2",
        "--proxy-family",
        "AF_INET6",
        "--proxy-protocol",
        "STREAM",
        "--proxy-source",
        "2001:db8::5",
        "--proxy-source-port",
        "40000",
        "--proxy-dest",
        "::1",
        "--proxy-dest-port",
        &port,
        "--to",
        "x@other.test",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("<** 554 5.7.1 Relay access denied"), "{text}");
    let out = swaks_ok(&[
        "--server",
        "::1",
        "--port",
        &port,
        "--proxy-version",
        "1",
        "--proxy-family",
        "TCP6",
        "--proxy-source",
        "2001:db8::5",
        "--proxy-source-port",
        "40000",
        "--proxy-dest",
        "::1",
        "--proxy-dest-port",
        &port,
        "--to",
        "p@mx.test",
        "--from",
        "someone@example.net",
        "--helo",
        "h.example",
    ]);
    assert!(out.contains("250 2.0.0 Ok: queued"));
    let m = &s.mail_texts("p", "mx.test", 1)[0];
    assert!(m.contains("Received: from h.example (stranger.example.net [IPv6:2001:db8::5])"), "{m}");
    assert!(m.contains("Authentication-Results: mx.test;\r\n\tiprev=pass (stranger.example.net) smtp.remote-ip=2001:db8::5;\r\n\tspf=pass smtp.mailfrom=someone@example.net"), "{m}");
    // mynetworks (loopback) may relay: the message waits in the queue.
    let out = swaks_ok(&["--server", "127.0.0.1", "--port", &s.port.to_string(), "--to", "x@other.test"]);
    assert!(out.contains("250 2.0.0 Ok: queued"));
    // IPv4-mapped PROXY source is an IPv4 client, outside mynetworks here.
    let mut c = Raw::connect(v6(s.proxy_port));
    c.send(b"PROXY TCP6 ::ffff:192.0.2.7 ::1 40000 25\r\n");
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("HELO x.example").contains("Hello [192.0.2.7]"));
    c.cmd("MAIL FROM:<a@example.org>");
    assert_eq!(c.cmd("RCPT TO:<x@other.test>"), "554 5.7.1 Relay access denied\r\n");
    // Without a PROXY header the connection is dropped.
    let mut c = Raw::connect(v6(s.proxy_port));
    c.send(b"EHLO x\r\n");
    assert_eq!(c.reply(), "");
    assert!(s.log_has("reason=\"relay_denied\""), "{}", s.log_text());
}

#[test]
fn listener_allow_list_and_session_cap() {
    let mut s = Server::start("acl", "[limits]\nsessions = 2\n");
    s.kill9();
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    // On the PROXY listener `allow` names the proxies; this one is not ::1.
    cfg = cfg.replacen("proxy_protocol = true\nallow = [\"::1/128\"]\n", "proxy_protocol = true\nallow = [\"2001:db8:1::/48\"]\n", 1);
    // A plain listener's `allow` names its clients.
    let v4_line = format!("address = \"127.0.0.1:{}\"\n", s.port);
    cfg = cfg.replacen(&v4_line, &format!("{v4_line}allow = [\"192.0.2.0/24\"]\n"), 1);
    std::fs::write(&s.config, cfg).unwrap();
    s.spawn(&[]);
    let mut c = Raw::connect(v6(s.proxy_port));
    assert_eq!(c.reply(), "554 5.7.1 Access denied\r\n", "refused before any PROXY header is read");
    let mut c = Raw::connect(v4(s.port));
    assert_eq!(c.reply(), "554 5.7.1 Access denied\r\n");
    let _a = Raw::open(v6(s.port));
    let _b = Raw::open(v6(s.port));
    let mut third = Raw::connect(v6(s.port));
    assert_eq!(third.reply(), "421 4.7.0 mx.test too many concurrent sessions, try again later\r\n");
}

#[test]
fn unknown_users_with_a_users_file() {
    let s = Server::start("users", "[local]\ndomains = [\"mx.test\"]\n");
    std::fs::create_dir_all(s.data()).unwrap();
    // The users file is read at start: restart with it in place.
    let mut s = s;
    s.kill9();
    std::fs::write(s.data().join("users.toml"), "[[user]]\naddress = \"alice@mx.test\"\n").unwrap();
    s.spawn(&[]);
    let mut c = Raw::open(v6(s.port));
    c.cmd("EHLO c.example");
    c.cmd("MAIL FROM:<a@example.org>");
    assert_eq!(c.cmd("RCPT TO:<bob@mx.test>"), "550 5.1.1 Recipient address rejected: user unknown\r\n");
    assert!(c.cmd("RCPT TO:<Alice@MX.test>").starts_with("250 2.1.5"));
    assert!(c.cmd("RCPT TO:<postmaster@mx.test>").starts_with("250 2.1.5"));
}

#[test]
fn idle_client_times_out_and_shutdown_is_graceful() {
    let mut s = Server::start("timeout", "[limits]\ncommand_timeout = \"1s\"\n");
    let mut c = Raw::open(v6(s.port));
    c.cmd("EHLO c.example");
    assert_eq!(c.reply(), "421 4.4.2 mx.test timeout exceeded, closing connection\r\n");
    // SIGTERM: an idle session is told 421 and the server exits 0; a session in
    // the middle of a message finishes it first.
    let mut idle = Raw::open(v4(s.port));
    let mut busy = Raw::open(v6(s.port));
    busy.cmd("EHLO c.example");
    busy.cmd("MAIL FROM:<a@example.org>");
    busy.cmd("RCPT TO:<late@mx.test>");
    assert!(busy.cmd("DATA").starts_with("354"));
    busy.send(b"Subject: late\r\n\r\n");
    let pid = s.pid();
    std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
    assert_eq!(idle.reply(), "421 4.3.2 mx.test service shutting down, closing connection\r\n");
    busy.send(b"still here\r\n.\r\n");
    assert!(busy.reply().starts_with("250 2.0.0 Ok: queued as"));
    assert_eq!(s.terminate(), Some(0));
    assert_eq!(s.wait_mail("late", "mx.test", 1).len(), 1);
}

#[test]
fn json_logs_carry_session_client_family_and_queue_id() {
    let mut s = Server::start("json", "");
    s.kill9();
    s.spawn(&["--log-format", "json"]);
    swaks_ok(&["--server", "::1", "--port", &s.port.to_string(), "--to", "j@mx.test"]);
    s.wait_mail("j", "mx.test", 1);
    assert!(s.log_has("\"message\":\"queued\""), "{}", s.log_text());
    let log = s.log_text();
    let queued = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["message"] == "queued")
        .unwrap_or_else(|| panic!("no queued line in {log}"));
    assert_eq!(queued["family"], "ipv6");
    assert_eq!(queued["client"], "::1");
    assert!(queued["session"].is_string());
    assert_eq!(queued["queue_id"].as_str().unwrap().len(), 16);
}

#[test]
fn config_check_names_key_and_line() {
    let dir = std::env::temp_dir().join(format!("mx6-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.toml");
    std::fs::write(&p, "hostname = \"mx.test\"\n\n[limits]\nmessage_size = \"lots\"\n").unwrap();
    let out = mx6(&["config".as_ref(), "check".as_ref(), "--config".as_ref(), p.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4: limits.message_size: invalid size `lots`"), "{err}");
    std::fs::write(&p, "[relay]\nmynetwork = []\n").unwrap();
    let out = mx6(&["config".as_ref(), "check".as_ref(), "--config".as_ref(), p.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(":2: relay.mynetwork: unknown field"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // serve refuses the same file.
    let out = mx6(&["serve".as_ref(), "--config".as_ref(), p.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    std::fs::write(&p, "hostname = \"mx.test\"\n").unwrap();
    let out = mx6(&["config".as_ref(), "check".as_ref(), "--config".as_ref(), p.as_os_str()]);
    assert_eq!(out.status.code(), Some(0));
    let out = mx6(&["frobnicate".as_ref()]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failed_local_delivery_is_retried_not_dropped() {
    let s = Server::start("retry", "[queue]\nretry_initial = \"1s\"\nretry_max = \"2s\"\n");
    // A file where the mailbox directory should be: delivery fails (even as root).
    let blocked = s.data().join("mail/mx.test/blocked");
    std::fs::create_dir_all(blocked.parent().unwrap()).unwrap();
    std::fs::write(&blocked, "not a directory").unwrap();
    let out = swaks_ok(&["--server", "::1", "--port", &s.port.to_string(), "--to", "blocked@mx.test"]);
    assert!(out.contains("250 2.0.0 Ok: queued"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.log_text().contains("local delivery failed") {
        assert!(std::time::Instant::now() < deadline, "no failure logged: {}", s.log_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::remove_file(&blocked).unwrap();
    let mails = s.mail_texts("blocked", "mx.test", 1);
    assert_eq!(mails.len(), 1, "not delivered after the retry: {}", s.log_text());
    assert!(s.log_has("delivery deferred"));
}

#[test]
fn local_delivery_failing_past_max_age_bounces() {
    let s = Server::start("expire", "[queue]\nretry_initial = \"1s\"\nretry_max = \"1s\"\nmax_age = \"2s\"\n");
    let blocked = s.data().join("mail/mx.test/stuck");
    std::fs::create_dir_all(blocked.parent().unwrap()).unwrap();
    std::fs::write(&blocked, "not a directory").unwrap();
    let out = swaks_ok(&["--server", "::1", "--port", &s.port.to_string(), "--from", "sender@mx.test", "--to", "stuck@mx.test"]);
    assert!(out.contains("250 2.0.0 Ok: queued"));
    // The bounce reaches the (local) sender; the stuck recipient is given up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let bounce = loop {
        if let Some(t) = s.mail_texts("sender", "mx.test", 1).into_iter().next() {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "no bounce: {}", s.log_text());
    };
    assert!(bounce.contains("Status: 4.4.7") && bounce.contains("Final-Recipient: rfc822; stuck@mx.test"), "{bounce}");
    assert!(s.log_has("status=\"expired\""), "{}", s.log_text());
}
