//! Content filters end to end: a real `spamd` (Debian's spamassassin, the
//! shipped rules plus deploy/spamassassin/mx6.cf), a real `opendkim` in
//! signing mode, and a scripted libmilter milter (pymilter) that rejects,
//! tempfails, discards, quarantines and changes headers, recipients and body.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
const RELAXED: &str = "[policy.ipv6]\nrequire_ptr = false\nrequire_fcrdns = false\nrequire_spf_or_dkim = false\n";

struct Daemon {
    child: Child,
    name: &'static str,
}

impl Daemon {
    fn wait_port(mut self, port: u16) -> Daemon {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("{} exited with {st}", self.name);
            }
            assert!(Instant::now() < deadline, "{} did not start", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// spamd on 127.0.0.1:`port`: local tests only (no network), site rules
/// from `dir` (Debian's *.pre, our mx6.cf and a test rule worth 6 points).
fn spamd(dir: &Path, port: u16) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir("/etc/spamassassin").unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "pre") {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/spamassassin/mx6.cf");
    std::fs::copy(root, dir.join("mx6.cf")).unwrap();
    std::fs::write(dir.join("local.cf"), "use_bayes 0\nbody MX6_TEST_MARK /MARK-ME-AS-SPAM/\nscore MX6_TEST_MARK 6.0\n").unwrap();
    let child = Command::new("spamd")
        .args(["-L", "-x", "-u", "nobody", "-i", "127.0.0.1", "-A", "127.0.0.1", "--max-children", "2", "-s", "stderr"])
        .arg("-p")
        .arg(port.to_string())
        .arg(format!("--siteconfigpath={}", dir.display()))
        .arg(format!("--pidfile={}", dir.join("spamd.pid").display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("spamd.log")).unwrap())
        .spawn()
        .expect("spamd (Debian package spamassassin; scripts/test.sh installs it)");
    Daemon { child, name: "spamd" }.wait_port(port)
}

/// Now, as an RFC 5322 date (an old Date would score in SpamAssassin).
fn now_rfc2822() -> String {
    String::from_utf8(Command::new("date").arg("-R").output().unwrap().stdout).unwrap().trim().to_string()
}

fn send(s: &Server, src: &str, subject: &str, body: &str) -> String {
    let message = format!(
        "From: <sender@nospf.example.com>\r\nTo: <u@mx.test>\r\nSubject: {subject}\r\nDate: {}\r\nMessage-ID: <{}@nospf.example.com>\r\n\r\n{body}",
        now_rfc2822(),
        subject.replace(' ', "-")
    );
    Raw::proxied_mail(s.proxy_port, src, "sender@nospf.example.com", "u@mx.test", &message)
}

#[test]
fn spamd_verdicts_headers_and_failure_modes() {
    let dir = std::env::temp_dir().join(format!("mx6-spamd-{}", std::process::id()));
    let port = free_port();
    let mut sa = spamd(&dir.join("sa"), port);
    let s = Server::start(
        "spamd",
        &format!(
            "[content_filter]\nspamd = \"127.0.0.1:{port}\"\nmark_score = 7.0\nreject_score = 15.0\non_failure = \"tempfail\"\n{RELAXED}"
        ),
    );
    // GTUBE: refused at end of data.
    let r = send(&s, "2001:db8:20::1", "gtube", GTUBE);
    assert!(r.starts_with("550 5.7.1 Message refused as spam"), "{r}");
    // A plain message from an IPv6 client without FCrDNS: delivered with the
    // X-Spam headers, and mx6.cf's rule on X-Mx6-Client scored.
    let r = send(&s, "2001:db8:20::2", "hello", "Just a short note about tomorrow's meeting.");
    assert!(r.starts_with("250 "), "{r}");
    let m = s.mail_texts("u", "mx.test", 1);
    assert_eq!(m.len(), 1);
    assert!(m[0].contains("X-Spam-Status: No, score="), "{}", m[0]);
    assert!(m[0].contains("X-Spam-Score: "), "{}", m[0]);
    assert!(m[0].contains("MX6_IPV6_NO_FCRDNS"), "the shipped rule did not score: {}", m[0]);
    assert!(m[0].contains("X-Mx6-Client: family=ipv6; prefix=2001:db8:20::/64; agg=2001:db8:20::/48; iprev=permerror"), "{}", m[0]);
    // Between the thresholds (the test rule MX6_TEST_MARK is worth 6): delivered marked, into Junk.
    let r = send(&s, "2001:db8:20::3", "marked", "MARK-ME-AS-SPAM");
    assert!(r.starts_with("250 "), "{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut junk = walk(&s.data().join("mail/mx.test/u/.Junk/new"));
    while junk.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        junk = walk(&s.data().join("mail/mx.test/u/.Junk/new"));
    }
    assert_eq!(
        junk.len(),
        1,
        "marked message in Junk: {}",
        s.log_text().lines().filter(|l| l.contains("spamd") || l.contains("deliver")).collect::<Vec<_>>().join("\n")
    );
    let j = std::fs::read_to_string(&junk[0]).unwrap();
    assert!(j.contains("X-Spam-Flag: YES") && j.contains("X-Spam-Status: Yes, score="), "{j}");
    assert_eq!(s.metric("mx6_content_filter_total{family=\"ipv6\",filter=\"spamd\",verdict=\"rejected\"}"), 1.0);
    assert_eq!(s.metric("mx6_content_filter_total{family=\"ipv6\",filter=\"spamd\",verdict=\"marked\"}"), 1.0);
    assert_eq!(s.metric("mx6_rejections_total{family=\"ipv6\",reason=\"spam\",stage=\"data\"}"), 1.0);

    // Above max_size: not scanned, even GTUBE.
    let big = Server::start("spamd-size", &format!("[content_filter]\nspamd = \"127.0.0.1:{port}\"\nmax_size = \"2KiB\"\n{RELAXED}"));
    let r = send(&big, "2001:db8:20::6", "big", &format!("{GTUBE}\r\n{}", "padding line of the message\r\n".repeat(100)));
    assert!(r.starts_with("250 "), "{r}");
    assert!(!big.mail_texts("u", "mx.test", 1)[0].contains("X-Spam-Status"));
    assert_eq!(big.metric("mx6_content_filter_total{family=\"ipv6\",filter=\"spamd\",verdict=\"skipped_size\"}"), 1.0);

    // spamd stopped: tempfail here; accept unscanned on a second server.
    sa.stop();
    let r = send(&s, "2001:db8:20::4", "no spamd", "hello");
    assert!(r.starts_with("451 4.7.1 Content filter unavailable"), "{r}");
    let t = Server::start("spamd-accept", &format!("[content_filter]\nspamd = \"127.0.0.1:{port}\"\non_failure = \"accept\"\n{RELAXED}"));
    let r = send(&t, "2001:db8:20::5", "no spamd", "hello");
    assert!(r.starts_with("250 "), "{r}");
    let m = t.mail_texts("u", "mx.test", 1);
    assert!(!m[0].contains("X-Spam-Status"), "{}", m[0]);
    assert!(t.log_has("spamd failed"));
    assert_eq!(t.metric("mx6_content_filter_total{family=\"ipv6\",filter=\"spamd\",verdict=\"failed\"}"), 1.0);
    let _ = std::fs::remove_dir_all(dir);
}

fn scripted_milter(port: u16) -> Daemon {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scripted_milter.py");
    let child = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("python3-milter (Debian; scripts/test.sh installs it)");
    Daemon { child, name: "scripted milter" }.wait_port(port)
}

#[test]
fn scripted_milter_actions() {
    let port = free_port();
    let _milter = scripted_milter(port);
    let s = Server::start("milter", &format!("[[milter]]\naddress = \"inet:127.0.0.1:{port}\"\ntimeout = \"10s\"\n{RELAXED}"));
    let r = send(&s, "2001:db8:30::1", "reject", "x");
    assert!(r.starts_with("550 5.7.0 scripted refusal"), "{r}");
    let r = send(&s, "2001:db8:30::1", "tempfail", "x");
    assert!(r.starts_with("451 4.7.1 "), "{r}");
    let r = send(&s, "2001:db8:30::1", "discard", "x");
    assert!(r.starts_with("250 "), "discard is accepted: {r}");
    let r = send(&s, "2001:db8:30::1", "plain", "x");
    assert!(r.starts_with("250 "), "{r}");
    let m = s.mail_texts("u", "mx.test", 1);
    assert_eq!(m.len(), 1, "the discarded message was not delivered");
    let x = m[0].lines().find(|l| l.starts_with("X-Scripted:")).unwrap_or_default().to_string();
    assert!(x.contains("client_addr=2001:db8:30::1") && x.contains("hostaddr=2001:db8:30::1") && x.contains("j=mx.test"), "{x}");
    assert!(x.contains("mail_addr=sender@nospf.example.com") && x.contains("rcpts=<u@mx.test>"), "{x}");
    // The milter saw the X-Mx6-Client header and the queue id macro.
    assert!(!x.contains("i=None"), "{x}");

    // Header, recipient and body changes.
    let mut c = Raw::proxied(s.proxy_port, "2001:db8:30::2");
    c.reply();
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<sender@nospf.example.com>");
    assert!(c.cmd("RCPT TO:<u@mx.test>").starts_with("250"));
    c.cmd("DATA");
    let r = c.cmd("From: <sender@nospf.example.com>\r\nSubject: change\r\nX-Remove-Me: yes\r\n\r\noriginal body\r\n.");
    assert!(r.starts_with("250 "), "{r}");
    let extra = s.mail_texts("extra", "mx.test", 1);
    assert_eq!(extra.len(), 1, "added recipient got it");
    let e = &extra[0];
    assert!(
        e.contains("Subject: changed by the milter")
            && !e.contains("X-Remove-Me")
            && e.contains("replaced body")
            && !e.contains("original body"),
        "{e}"
    );
    assert!(e.contains("\r\nX-Inserted: at the top\r\n") || e.starts_with("X-Inserted: at the top\r\n"), "{e}");
    assert_eq!(s.wait_mail("u", "mx.test", 2).len(), 1, "removed recipient did not get it");

    // Quarantine: accepted and held.
    let r = send(&s, "2001:db8:30::3", "quarantine", "x");
    assert!(r.starts_with("250 "), "{r}");
    assert!(s.log_has("quarantined: on hold"));
    let out = mx6(&["queue".as_ref(), "list".as_ref(), "--config".as_ref(), s.config.as_os_str()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("hold"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(s.metric("mx6_content_filter_total{family=\"ipv6\",filter=\"milter\",verdict=\"reject\"}"), 1.0);
    assert_eq!(s.metric("mx6_content_filter_total{family=\"ipv6\",filter=\"milter\",verdict=\"quarantine\"}"), 1.0);
    assert_eq!(s.metric("mx6_rejections_total{family=\"ipv6\",reason=\"milter_reject\",stage=\"data\"}"), 1.0);
}

#[test]
fn milter_failure_modes() {
    let dead = free_port();
    for (mode, want) in [("tempfail", "451 4.7.1 Content filter unavailable"), ("reject", "550 5.7.1 "), ("accept", "250 ")] {
        let s = Server::start(
            &format!("milter-{mode}"),
            &format!("[[milter]]\naddress = \"inet:127.0.0.1:{dead}\"\ntimeout = \"2s\"\non_failure = \"{mode}\"\n{RELAXED}"),
        );
        let r = send(&s, "2001:db8:31::1", "x", "x");
        assert!(r.starts_with(want), "{mode}: {r}");
        assert!(s.log_has("milter failed"));
    }
}

/// A real milter from Debian: opendkim signs mail from mynetworks; dkimpy
/// verifies the signature on the delivered message.
#[test]
fn opendkim_signs_through_the_milter_protocol() {
    let dir = std::env::temp_dir().join(format!("mx6-opendkim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let st = Command::new("opendkim-genkey").args(["-b", "2048", "-d", "example.org", "-s", "mx6test", "-D"]).arg(&dir).status().unwrap();
    assert!(st.success(), "opendkim-genkey (Debian opendkim-tools)");
    let port = free_port();
    let conf: PathBuf = dir.join("opendkim.conf");
    std::fs::write(
        &conf,
        format!(
            "Mode sv\nDomain example.org\nSelector mx6test\nKeyFile {}\nSocket inet:{port}@127.0.0.1\nInternalHosts 127.0.0.1,::1\nRequireSafeKeys false\nCanonicalization relaxed/simple\nUserID root\nBackground false\nPidFile {}\nSyslog false\n",
            dir.join("mx6test.private").display(),
            dir.join("opendkim.pid").display()
        ),
    )
    .unwrap();
    let child =
        Command::new("opendkim").arg("-f").arg("-x").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("opendkim");
    let _od = Daemon { child, name: "opendkim" }.wait_port(port);
    let s = Server::start("opendkim", &format!("[[milter]]\naddress = \"inet:127.0.0.1:{port}\"\n"));
    let out = swaks(&[
        "--server",
        "::1",
        "--port",
        &s.port.to_string(),
        "--from",
        "alice@example.org",
        "--to",
        "u@mx.test",
        "--header",
        "From: <alice@example.org>",
        "--header",
        "Subject: signed by opendkim",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let m = s.mail_texts("u", "mx.test", 1);
    assert!(m[0].contains("DKIM-Signature:") && m[0].contains("d=example.org") && m[0].contains("s=mx6test"), "{}", m[0]);
    // The TXT record opendkim-genkey wrote, joined into one string.
    let txt = std::fs::read_to_string(dir.join("mx6test.txt")).unwrap();
    let record: String = txt.split('"').skip(1).step_by(2).collect();
    let py = "import sys,dkim\nrec=sys.argv[1].encode()\n\
              def dns(name, timeout=5):\n    return rec if name in (b'mx6test._domainkey.example.org.', 'mx6test._domainkey.example.org.') else b''\n\
              msg=sys.stdin.buffer.read()\nok=dkim.verify(msg, dnsfunc=dns)\nprint(ok)\nsys.exit(0 if ok else 1)";
    let out = run_with_stdin(Command::new("/usr/bin/python3").args(["-c", py, &record]), m[0].as_bytes());
    assert!(out.status.success(), "dkimpy: {} {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr), m[0]);
    let _ = std::fs::remove_dir_all(dir);
}
