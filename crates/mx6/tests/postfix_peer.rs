//! A real Postfix uses mx6 as its relayhost over IPv6: STARTTLS, SASL AUTH
//! (Postfix's Cyrus SASL client) on mx6's submission port, then local delivery;
//! Postfix's bounces (null sender) take the same path. And Postfix with
//! `check_policy_service` pointing at `mx6 policyd`.
//! Needs root (Postfix's master) and Debian's `postfix` and `libsasl2-modules`,
//! which scripts/test.sh installs.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

struct Postfix {
    dir: std::path::PathBuf,
}

impl Postfix {
    /// `extra` main.cf lines override the defaults above them.
    fn start(dir: &std::path::Path, port: u16, relayhost: &str, extra: &str) -> Postfix {
        Postfix::start_on(dir, &format!("127.0.0.1:{port}"), port, relayhost, extra)
    }

    /// `listen`: the master.cf service address (`127.0.0.1:25`, or `25` for
    /// every `inet_interfaces` address).
    fn start_on(dir: &std::path::Path, listen: &str, port: u16, relayhost: &str, extra: &str) -> Postfix {
        let q = dir.join("queue");
        let data = dir.join("data");
        std::fs::create_dir_all(&q).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        assert!(Command::new("chown").arg("postfix").arg(&data).status().unwrap().success(), "needs root and the postfix user");
        let d = dir.display();
        let overridden: Vec<&str> = extra.lines().filter_map(|l| l.split_once(" = ").map(|(k, _)| k)).collect();
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = all
myhostname = postfix.test
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
smtpd_recipient_restrictions = permit_mynetworks, reject
relayhost = {relayhost}
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = static:alice@mx.test:alice-pw
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_sasl_mechanism_filter = plain, login
smtp_tls_security_level = encrypt
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
"
        );
        let main_cf: String = main_cf
            .lines()
            .filter(|l| !overridden.iter().any(|k| l.split_once('=').is_some_and(|(d, _)| d.trim() == *k)))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(dir.join("main.cf"), format!("{main_cf}{extra}\n")).unwrap();
        std::fs::write(
            dir.join("master.cf"),
            format!(
                "{listen} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
virtual unix - n n - - virtual
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
tlsmgr unix - - n 1000? 1 tlsmgr
postlog unix-dgram n - n - 1 postlogd
"
            ),
        )
        .unwrap();
        let st = Command::new("postfix").arg("-c").arg(dir).arg("check").status().unwrap();
        assert!(st.success(), "postfix check failed; run `script -qc \"postfix -c {d} check\" /dev/null` to see why");
        assert!(Command::new("postfix").arg("-c").arg(dir).arg("start").status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "postfix did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Postfix { dir: dir.to_path_buf() }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix").arg("-c").arg(&self.dir).arg("stop").status();
    }
}

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
