//! A real Postfix uses mx6 as its relayhost over IPv6: STARTTLS, SASL AUTH
//! (Postfix's Cyrus SASL client) on mx6's submission port, then local delivery;
//! Postfix's bounces (null sender) take the same path. And Postfix with
//! `check_policy_service` pointing at `mx6 policyd`.
//! Needs root (Postfix's master) and Debian's `postfix` and `libsasl2-modules`,
//! which scripts/test.sh installs.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::postfix::Postfix;
use common::*;

#[test]
fn postfix_relays_through_mx6_with_starttls_and_auth_over_ipv6() {
    let s = Server::start("postfix-peer", "[local]\ndomains = [\"mx.test\"]\n");
    assert!(s.user(&["add", "alice@mx.test"], "alice-pw\n").status.success());
    let pf_port = free_port();
    let pf = Postfix::start(&s.dir.join("postfix"), pf_port, &format!("[ipv6:::1]:{}", s.sub_port), "");
    let out = swaks_ok(&["--server", "127.0.0.1", "--port", &pf_port.to_string(), "--from", "alice@mx.test", "--to", "alice@mx.test"]);
    assert!(out.contains("250 2.0.0 Ok: queued"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let files = loop {
        let f = s.wait_mail("alice", "mx.test", 1);
        if !f.is_empty() || Instant::now() > deadline {
            break f;
        }
    };
    assert_eq!(files.len(), 1, "postfix log:\n{}\nmx6 log:\n{}", pf.log(), s.log_text());
    let m = std::fs::read_to_string(&files[0]).unwrap();
    assert!(m.contains("Received: from postfix.test (unknown [IPv6:::1])"), "{m}");
    assert!(m.contains(" with ESMTPSA id "), "{m}");
    assert!(s.log_has("authenticated") && s.log_has("user=alice@mx.test"), "{}", s.log_text());
    assert!(pf.log().contains("status=sent"), "{}", pf.log());

    // Postfix's own bounces (null sender) also go through: to an unknown user,
    // mx6 refuses the recipient, Postfix returns the message to alice via mx6.
    swaks_ok(&["--server", "127.0.0.1", "--port", &pf_port.to_string(), "--from", "alice@mx.test", "--to", "nobody@mx.test"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let files = loop {
        let f = s.wait_mail("alice", "mx.test", 2);
        if f.len() >= 2 || Instant::now() > deadline {
            break f;
        }
    };
    assert_eq!(files.len(), 2, "postfix log:\n{}\nmx6 log:\n{}", pf.log(), s.log_text());
    let texts: Vec<String> = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    assert!(texts.iter().any(|t| t.starts_with("Return-Path: <>\r\n") && t.contains("nobody@mx.test")), "{texts:?}");
}

/// A running `mx6 policyd`, stopped when dropped.
struct Policyd(std::process::Child);

impl Drop for Policyd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `mx6 policyd` with `listen`, the test DNS server and `extra` config;
/// wait until it answers.
fn policyd(dir: &std::path::Path, listen: &str, dns: &mx6_testdns::TestDns, extra: &str) -> Policyd {
    std::fs::create_dir_all(dir).unwrap();
    let name = listen.replace(['/', ':', '[', ']'], "_");
    let cfg = dir.join(format!("policyd-{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "hostname = \"mx.test\"\ndata_dir = \"{}\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n[policyd]\nlisten = \"{listen}\"\n{extra}",
            dir.join(format!("data-{name}")).display(),
            dns.addr
        ),
    )
    .unwrap();
    let child =
        Policyd(Command::new(mx6_bin()).arg("policyd").arg("--config").arg(&cfg).stderr(std::process::Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = match listen.strip_prefix("unix:") {
            Some(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            None => std::net::TcpStream::connect(listen).is_ok(),
        };
        if up {
            return child;
        }
        assert!(Instant::now() < deadline, "mx6 policyd did not listen on {listen}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ask<S: std::io::Read + std::io::Write>(mut s: S, attrs: &str) -> String {
    s.write_all(format!("{attrs}\n").as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\n\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "policyd closed");
        buf.push(b[0]);
    }
    String::from_utf8(buf).unwrap()
}

const POLICY_ZONE: &str = "
2001:db8:10::3 PTR good.example.org
good.example.org AAAA 2001:db8:10::3
spf-pass.test TXT \"v=spf1 ip6:2001:db8:10::/48 -all\"
spf-fail.test TXT \"v=spf1 -all\"
";

#[test]
fn postfix_asks_mx6_policyd() {
    let dns = mx6_testdns::TestDns::start(mx6_testdns::Zone::parse(POLICY_ZONE));
    let dir = std::env::temp_dir().join(format!("mx6-policyd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Over TCP with greylisting (as postgrey would be), over the unix socket without.
    let _tcp = policyd(&dir, &listen, &dns, "[greylist]\ndelay = \"1s\"\n");
    let sock = dir.join("policyd.sock");
    let unix_listen = format!("unix:{}", sock.display());
    let _unix = policyd(&dir, &unix_listen, &dns, "[greylist]\nenabled = false\n");

    // The protocol directly, over TCP and the unix socket.
    let base = "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nhelo_name=client.example\nrecipient=u@policy.test\n";
    let a = ask(
        std::net::TcpStream::connect(&listen).unwrap(),
        &format!("{base}client_address=2001:db8:10::1\nsender=a@spf-pass.test\ninstance=1\n"),
    );
    assert!(a.starts_with("action=REJECT 5.7.25 "), "{a}");
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let a = ask(&mut c, &format!("{base}client_address=2001:db8:10::3\nsender=a@spf-pass.test\ninstance=2\n"));
    assert!(
        a.starts_with("action=PREPEND Authentication-Results: mx.test; iprev=pass (good.example.org) smtp.remote-ip=2001:db8:10::3; spf=pass smtp.mailfrom=a@spf-pass.test"),
        "{a}"
    );
    // The second recipient of the same message: no second header.
    assert_eq!(ask(&mut c, &format!("{base}client_address=2001:db8:10::3\nsender=a@spf-pass.test\ninstance=2\n")), "action=DUNNO\n\n");
    let a = ask(&mut c, &format!("{base}client_address=2001:db8:10::3\nsender=a@spf-fail.test\ninstance=3\n"));
    assert!(a.starts_with("action=REJECT 5.7.23 "), "{a}");

    // Postfix with check_policy_service; XCLIENT sets the client address.
    let pf_port = free_port();
    let pf = Postfix::start(
        &dir.join("postfix"),
        pf_port,
        "",
        &format!(
            "mydestination = policy.test\nlocal_transport = discard\nlocal_recipient_maps =\nalias_maps =\n\
             smtpd_authorized_xclient_hosts = 127.0.0.0/8\n\
             smtpd_recipient_restrictions = check_policy_service inet:{listen}, permit"
        ),
    );
    let p = pf_port.to_string();
    let xclient = |addr: &str, from: &str| {
        swaks(&[
            "--server",
            "127.0.0.1",
            "--port",
            &p,
            "--helo",
            "client.example",
            "--xclient-addr",
            addr,
            "--from",
            from,
            "--to",
            "u@policy.test",
        ])
    };
    let refused = xclient("IPV6:2001:db8:10::1", "a@spf-pass.test");
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(text.contains("<** 554 5.7.25 "), "{text}\n{}", pf.log());
    // Greylisted first (Postfix turns DEFER_IF_PERMIT into 450), accepted on a retry after the delay.
    let deferred = xclient("IPV6:2001:db8:10::3", "a@spf-pass.test");
    let text = String::from_utf8_lossy(&deferred.stdout);
    assert!(text.contains("<** 450 4.7.1 ") && text.contains("Greylisted, please try again"), "{text}\n{}", pf.log());
    std::thread::sleep(Duration::from_millis(1300));
    let accepted = xclient("IPV6:2001:db8:10::3", "a@spf-pass.test");
    let text = String::from_utf8_lossy(&accepted.stdout);
    assert!(text.contains("<-  250 2.0.0 Ok: queued"), "{text}\n{}", pf.log());
}

/// Postfix as the receiving MTA: mx6 delivers over IPv6 when both families
/// work, and Postfix's Received header says so.
#[test]
fn mx6_delivers_to_postfix_over_ipv6() {
    let pf_port = free_port();
    let zone = "dest.test MX 10 mx.dest.test\nmx.dest.test AAAA ::1\nmx.dest.test A 127.0.0.1\n";
    let s = Server::start_with_zone("to-postfix", zone, &format!("[delivery]\nport = {pf_port}\n"));
    let dir = s.dir.join("postfix-rx");
    let vmail = dir.join("vmail");
    std::fs::create_dir_all(&vmail).unwrap();
    assert!(Command::new("chown").arg("65534:65534").arg(&vmail).status().unwrap().success());
    let pf = Postfix::start_on(
        &dir,
        &pf_port.to_string(),
        pf_port,
        "",
        &format!(
            "inet_interfaces = 127.0.0.1, [::1]\nmynetworks = 127.0.0.0/8, [::1]/128\nsmtpd_recipient_restrictions = permit_mynetworks, reject\n\
             virtual_mailbox_domains = dest.test\nvirtual_mailbox_base = {}\nvirtual_mailbox_maps = static:dest.test/u/\n\
             virtual_uid_maps = static:65534\nvirtual_gid_maps = static:65534",
            vmail.display()
        ),
    );
    let out = swaks_ok(&[
        "--server",
        "::1",
        "--port",
        &s.port.to_string(),
        "--from",
        "a@mx.test",
        "--to",
        "u@dest.test",
        "--h-Subject",
        "to postfix",
    ]);
    assert!(out.contains("250 2.0.0 Ok: queued"), "{out}");
    let new = vmail.join("dest.test/u/new");
    let deadline = Instant::now() + Duration::from_secs(30);
    let file = loop {
        if let Some(f) = std::fs::read_dir(&new).ok().and_then(|mut d| d.next()).and_then(|e| e.ok()) {
            break f.path();
        }
        assert!(Instant::now() < deadline, "postfix log:\n{}\nmx6 log:\n{}", pf.log(), s.log_text());
        std::thread::sleep(Duration::from_millis(100));
    };
    let m = std::fs::read_to_string(file).unwrap();
    assert!(m.contains("Received: from mx.test (unknown [IPv6:::1])\n\tby postfix.test (Postfix)"), "{m}");
    assert!(s.log_has("relay=mx.dest.test[::1]:") && s.log_has("family=\"ipv6\""), "{}", s.log_text());
}

/// GET `path` from the metrics endpoint on [::1]:`port`.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("::1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

const MILTER_ZONE: &str = "
2001:db8:20::5 PTR client.good.test
client.good.test AAAA 2001:db8:20::5
2001:db8:21::5 PTR client2.good.test
client2.good.test AAAA 2001:db8:21::5
reject.test TXT \"v=spf1 ?all\"
_dmarc.reject.test TXT \"v=DMARC1; p=reject\"
";

/// A message from `from` (as one line per header), CRLF.
fn mail_text(from: &str, subject: &str, extra: &str) -> String {
    format!("{extra}From: <{from}>\r\nTo: <u@milter.test>\r\nSubject: {subject}\r\nMessage-ID: <{}@test>\r\nDate: Wed, 02 Dec 2026 12:00:00 +0000\r\n\r\nHello.\r\n", subject.replace(' ', "-"))
}

/// `mx6 milter` as Postfix's `smtpd_milters`, in front: a message DKIM-signed
/// by dkimpy passes with mx6's Authentication-Results (`dkim=pass`, a forged
/// one with our authserv-id removed) and the `X-Mx6-Client` facts; a DMARC
/// `p=reject` failure and an IPv6 client with neither SPF nor DKIM are
/// refused with `mx6 serve`'s replies; a message from an authenticated user
/// (XCLIENT LOGIN, `{auth_authen}`) is signed and dkimpy verifies it;
/// with mx6 stopped, Postfix's `milter_default_action = tempfail` holds.
#[test]
fn postfix_uses_mx6_milter() {
    let dir = std::env::temp_dir().join(format!("mx6-milter-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // dkimpy's key for dkim.test, published in the test DNS server.
    let (key, txt) = dkim_rsa_key(&dir);
    let zone = format!("{MILTER_ZONE}\nsel._domainkey.dkim.test TXT {txt}\n");
    let dns = mx6_testdns::TestDns::start(mx6_testdns::Zone::parse(&zone));

    // mx6 milter, with an ed25519 key for sign.test made by `mx6 dkim keygen`.
    let (port, metrics_port) = (free_port(), free_port());
    let cfg = dir.join("milter.toml");
    std::fs::write(
        &cfg,
        format!(
            "hostname = \"mx.test\"\ndata_dir = \"{}\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n\
             [milter_server]\nlisten = \"inet:127.0.0.1:{port}\"\n[metrics]\nlisten = \"[::1]:{metrics_port}\"\n",
            dir.join("data").display(),
            dns.addr
        ),
    )
    .unwrap();
    let out = Command::new(mx6_bin())
        .args(["dkim", "keygen", "--domain", "sign.test", "--selector", "ed", "--algorithm", "ed25519", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let line = text.lines().find(|l| l.starts_with("ed._domainkey.sign.test. IN TXT ")).unwrap().to_string();
    let sign_record: String = line.split('"').skip(1).step_by(2).collect();
    let mut c = std::fs::read_to_string(&cfg).unwrap();
    c.push_str("[[dkim]]\ndomain = \"sign.test\"\nselector = \"ed\"\n");
    std::fs::write(&cfg, c).unwrap();
    let mut milter = Policyd(
        Command::new(mx6_bin())
            .arg("milter")
            .arg("--config")
            .arg(&cfg)
            .stderr(std::fs::File::create(dir.join("milter.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mx6 milter did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Postfix delivers milter.test to a Maildir (virtual(8), as nobody).
    let vmail = dir.join("vmail");
    std::fs::create_dir_all(&vmail).unwrap();
    assert!(Command::new("chown").arg("nobody:nogroup").arg(&vmail).status().unwrap().success());
    // Real source addresses on lo, so Postfix and its milter see them as they are.
    let _lo = LoAddresses::add(&["2001:db8:20::5", "2001:db8:21::5"]);
    let pf_port = free_port();
    let pf = Postfix::start_on(
        &dir.join("postfix"),
        &pf_port.to_string(),
        pf_port,
        "",
        &format!(
            "inet_interfaces = 127.0.0.1, [::1]\nvirtual_mailbox_domains = milter.test\nvirtual_mailbox_base = {}\nvirtual_mailbox_maps = static:u/\n\
             virtual_uid_maps = static:65534\nvirtual_gid_maps = static:65534\nvirtual_minimum_uid = 1\n\
             smtpd_authorized_xclient_hosts = [2001:db8:21::]/64\nsmtpd_recipient_restrictions = permit\n\
             smtpd_milters = inet:127.0.0.1:{port}\nmilter_default_action = tempfail\nmilter_protocol = 6",
            vmail.display()
        ),
    );
    let p = pf_port.to_string();
    let send = |source: &str, from: &str, data: &str| {
        let f = dir.join("msg.eml");
        std::fs::write(&f, data).unwrap();
        let (source, login) = source.split_once(' ').unwrap_or((source, ""));
        let file = format!("@{}", f.display());
        let mut args = vec![
            "--server",
            "::1",
            "--port",
            &p,
            "--local-interface",
            source,
            "--helo",
            "client.good.test",
            "--from",
            from,
            "--to",
            "u@milter.test",
            "--data",
            &file,
        ];
        if !login.is_empty() {
            args.extend(["--xclient", login]);
        }
        let out = swaks(&args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let delivered = |n: usize| -> Vec<String> {
        let new = vmail.join("u/new");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut files: Vec<_> = std::fs::read_dir(&new).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
            if files.len() >= n || Instant::now() > deadline {
                files.sort_by_key(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok());
                return files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // 1. Signed by dkimpy; a forged Authentication-Results with our id on top.
    let msg = mail_text("a@dkim.test", "signed by dkimpy", "Authentication-Results: mx.test; dkim=pass header.d=forged.test\r\n");
    let script = "import sys,dkim\nkey=open(sys.argv[1],'rb').read()\nmsg=sys.stdin.buffer.read()\n\
                  sig=dkim.sign(msg,b'sel',b'dkim.test',key,include_headers=[b'from',b'to',b'subject',b'message-id'])\n\
                  sys.stdout.buffer.write(sig+msg)";
    let signed = run_with_stdin(Command::new("/usr/bin/python3").args(["-c", script]).arg(&key), msg.as_bytes());
    assert!(signed.status.success(), "dkimpy: {}", String::from_utf8_lossy(&signed.stderr));
    let out = send("2001:db8:20::5", "a@dkim.test", &String::from_utf8(signed.stdout).unwrap());
    assert!(out.contains("<-  250 2.0.0 Ok: queued"), "{out}\n{}", pf.log());
    let m = delivered(1);
    assert_eq!(m.len(), 1, "{}", pf.log());
    assert_eq!(m[0].matches("Authentication-Results: mx.test;").count(), 1, "the forged one is gone:\n{}", m[0]);
    assert!(!m[0].contains("forged.test"), "{}", m[0]);
    let ar = m[0].split("Authentication-Results: mx.test;").nth(1).unwrap();
    assert!(ar.contains("dkim=pass") && ar.contains("header.d=dkim.test") && ar.contains("iprev=pass"), "{}", m[0]);
    assert!(m[0].contains("X-Mx6-Client: family=ipv6; prefix=2001:db8:20::/64; agg=2001:db8:20::/48; iprev=pass"), "{}", m[0]);

    // 2. DMARC p=reject, neither SPF nor DKIM aligned: mx6's reply.
    let out = send("2001:db8:20::5", "a@reject.test", &mail_text("a@reject.test", "dmarc reject", ""));
    assert!(out.contains("<** 550 5.7.1 Rejected by DMARC policy of reject.test"), "{out}\n{}", pf.log());
    // 3. An IPv6 client, no SPF, no DKIM.
    let out = send("2001:db8:20::5", "a@none.test", &mail_text("a@none.test", "unauthenticated", ""));
    assert!(out.contains("<** 550 5.7.26 Unauthenticated mail from [2001:db8:20::5]: neither SPF nor DKIM passes"), "{out}\n{}", pf.log());
    // A packet that breaks the protocol closes that connection only.
    {
        use std::io::{Read, Write};
        let mut bad = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        bad.write_all(b"\x00\x00\x00\x05Zjunk").unwrap();
        bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(bad.read(&mut [0u8; 16]), Ok(0)), "closed on a bad packet");
    }
    // 4. An authenticated user: signed for sign.test, and the signature verifies.
    let out = send("2001:db8:21::5 LOGIN=alice", "alice@sign.test", &mail_text("alice@sign.test", "from alice", ""));
    assert!(out.contains("<-  250 2.0.0 Ok: queued"), "{out}\n{}", pf.log());
    let m = delivered(2);
    let alice = m.iter().find(|t| t.contains("Subject: from alice")).expect("alice's message delivered");
    assert!(alice.contains("DKIM-Signature:") && alice.contains("d=sign.test"), "{alice}");
    assert!(alice.contains("Authentication-Results: mx.test;") && alice.contains("auth=pass"), "{alice}");
    assert!(!alice.contains("X-Mx6-Client:"), "not for our own users: {alice}");
    let py = "import sys,dkim\nrec=sys.argv[1].encode()\n\
              def dns(name, timeout=5):\n    return rec if name in (b'ed._domainkey.sign.test.', 'ed._domainkey.sign.test.') else b''\n\
              msg=sys.stdin.buffer.read()\nok=dkim.verify(msg, dnsfunc=dns)\nprint(ok)\nsys.exit(0 if ok else 1)";
    let v = run_with_stdin(Command::new("/usr/bin/python3").args(["-c", py, &sign_record]), alice.replace('\n', "\r\n").as_bytes());
    assert!(v.status.success(), "dkimpy: {} {}\n{alice}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
    // Counted as mx6 serve counts.
    let metrics = http_get(metrics_port, "/metrics");
    for line in [
        "mx6_rejections_total{family=\"ipv6\",reason=\"dmarc_reject\",stage=\"data\"} 1",
        "mx6_rejections_total{family=\"ipv6\",reason=\"auth_required\",stage=\"data\"} 1",
        "mx6_messages_accepted_total{family=\"ipv6\",listener=\"milter\"} 2",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    // 5. mx6 milter down: Postfix's milter_default_action.
    let _ = milter.0.kill();
    let _ = milter.0.wait();
    let out = send("2001:db8:20::5", "a@dkim.test", &mail_text("a@dkim.test", "milter down", ""));
    assert!(out.contains("<** 451 4.7.1 "), "{out}\n{}", pf.log());
    // Postfix is stopped with its config directory, so before it goes.
    drop(pf);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mx6 policyd` with the rate limits of `mx6 serve`: the connection rate at
/// CONNECT (Postfix answers `421 4.7.0` with mx6's text and hangs up), recipients per
/// /64 at RCPT, messages at END-OF-MESSAGE, escalation of the /48 whose
/// /64s keep hitting limits (a fresh /64 in it is refused at once), and the
/// hits counted in the same metrics.
#[test]
fn postfix_asks_mx6_policyd_with_rate_limits() {
    let dns = mx6_testdns::TestDns::start(mx6_testdns::Zone::parse(POLICY_ZONE));
    let dir = std::env::temp_dir().join(format!("mx6-policyd-rl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (port, metrics_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let rule = |what: &str, prefix: &str, limit: u32| {
        format!("[[ratelimit]]\nwhat = \"{what}\"\nprefix = \"{prefix}\"\nlimit = {limit}\nwindow = \"60s\"\n")
    };
    let extra = format!(
        "[greylist]\nenabled = false\n[policy.ipv6]\nrequire_ptr = false\nrequire_fcrdns = false\n[metrics]\nlisten = \"[::1]:{metrics_port}\"\n{}{}{}[ratelimit_escalation]\nchildren = 3\nwindow = \"60s\"\nduration = \"60s\"\n",
        rule("connection_rate", "ipv6/64", 2),
        rule("recipients", "ipv6/64", 3),
        rule("messages", "ipv6/64", 1),
    );
    let _p = policyd(&dir, &listen, &dns, &extra);

    // The protocol directly: recipients at RCPT, messages at END-OF-MESSAGE.
    let base =
        "request=smtpd_access_policy\nprotocol_name=ESMTP\nhelo_name=client.example\nsender=a@spf-pass.test\nrecipient=u@policy.test\n";
    let mut c = std::net::TcpStream::connect(&listen).unwrap();
    let rcpt = |c: &mut std::net::TcpStream, ip: &str, instance: u32| {
        ask(c, &format!("{base}protocol_state=RCPT\nclient_address={ip}\ninstance={instance}\n"))
    };
    for _ in 0..3 {
        let a = rcpt(&mut c, "2001:db8:10::3", 1);
        assert!(a == "action=DUNNO\n\n" || a.starts_with("action=PREPEND Authentication-Results"), "{a}");
    }
    let a = rcpt(&mut c, "2001:db8:10::4", 1);
    assert_eq!(a, "action=451 4.7.1 Rate limit exceeded for 2001:db8:10::/64, try again later\n\n");
    let eom =
        |c: &mut std::net::TcpStream, ip: &str| ask(c, &format!("{base}protocol_state=END-OF-MESSAGE\nclient_address={ip}\ninstance=9\n"));
    assert_eq!(eom(&mut c, "2001:db8:11::1"), "action=DUNNO\n\n");
    assert_eq!(eom(&mut c, "2001:db8:11::1"), "action=451 4.7.1 Rate limit exceeded for 2001:db8:11::/64, try again later\n\n");

    // Postfix with policyd at CONNECT, clients from real addresses on lo.
    let _lo = LoAddresses::add(&["2001:db8:e5:1::1", "2001:db8:e5:2::1", "2001:db8:e5:3::1", "2001:db8:e5:99::1", "2001:db8:e6:1::1"]);
    let pf_port = free_port();
    let pf = Postfix::start_on(
        &dir.join("postfix"),
        &pf_port.to_string(),
        pf_port,
        "",
        &format!(
            "inet_interfaces = 127.0.0.1, [::1]\nmydestination = policy.test\nlocal_transport = discard\nlocal_recipient_maps =\nalias_maps =\n\
             smtpd_client_restrictions = check_policy_service inet:{listen}\n\
             smtpd_delay_reject = no\nsmtpd_recipient_restrictions = permit"
        ),
    );
    let p = pf_port.to_string();
    let from = |source: &str| {
        let out = swaks(&[
            "--server",
            "::1",
            "--port",
            &p,
            "--local-interface",
            source,
            "--helo",
            "client.example",
            "--from",
            "a@spf-pass.test",
            "--to",
            "u@policy.test",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for child in ["2001:db8:e5:1::1", "2001:db8:e5:2::1", "2001:db8:e5:3::1"] {
        for _ in 0..2 {
            let out = from(child);
            assert!(out.contains("<-  250 2.0.0 Ok"), "{child}: {out}\n{}", pf.log());
        }
        let out = from(child);
        let (p64, _) = child.rsplit_once("::").unwrap();
        // Postfix puts its "Client host rejected" before mx6's text.
        assert!(
            out.contains("<** 421 4.7.0 ") && out.contains(&format!("Client host rejected: mx.test too many connections from {p64}::/64")),
            "third from {child}: {out}\n{}",
            pf.log()
        );
    }
    let out = from("2001:db8:e5:99::1");
    assert!(
        out.contains("<** 421 4.7.0 ") && out.contains("mx.test too many connections from 2001:db8:e5::/48"),
        "escalated /48: {out}\n{}",
        pf.log()
    );
    assert!(from("2001:db8:e6:1::1").contains("<-  250 2.0.0 Ok"), "another /48 is untouched");
    let metrics = http_get(metrics_port, "/metrics");
    for line in [
        "mx6_ratelimit_hits_total{family=\"ipv6\",limit=\"connection_rate\",prefix_len=\"64\"} 3",
        "mx6_ratelimit_hits_total{family=\"ipv6\",limit=\"escalation\",prefix_len=\"48\"} 1",
        "mx6_ratelimit_hits_total{family=\"ipv6\",limit=\"recipients\",prefix_len=\"64\"} 1",
        "mx6_rejections_total{family=\"ipv6\",reason=\"rate_limited\",stage=\"connect\"} 4",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    // Postfix is stopped with its config directory, so before it goes.
    drop(pf);
    let _ = std::fs::remove_dir_all(&dir);
}
