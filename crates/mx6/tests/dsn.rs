//! The DSN extension end to end (RFC 3461, RFC 3464): a client (Python's
//! smtplib, per-recipient parameters) gives RET, ENVID, NOTIFY and ORCPT to
//! mx6, which delivers locally and to a real Postfix that listens twice: on
//! `[::1]` with DSN (mx.dsn.test) and on `127.0.0.1` with
//! `smtpd_discard_ehlo_keywords = dsn` (mx.nodsn.test). Postfix refuses
//! `bad@` (554) and defers `later@` (451), and sends its own notices back to
//! mx6 as its relayhost. Every notice that lands in the sender's Maildir is
//! parsed by Python's `email` package (tests/fixtures/parse_dsn.py).
//! Needs root (Postfix's master) and Debian's `postfix`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::postfix::Postfix;
use common::*;
use serde_json::Value;

const ZONE: &str = "
dsn.test MX 10 mx.dsn.test
mx.dsn.test AAAA ::1
nodsn.test MX 10 mx.nodsn.test
mx.nodsn.test A 127.0.0.1
";

/// mx6 for src.test, delivering to `pf_port`, retrying every second or two.
fn sender(name: &str, pf_port: u16, queue: &str) -> Server {
    Server::start_with_zone(
        name,
        ZONE,
        &format!(
            "[local]\ndomains = [\"src.test\"]\n[delivery]\nport = {pf_port}\n[queue]\nretry_initial = \"1s\"\nretry_max = \"2s\"\n{queue}"
        ),
    )
}

/// Postfix on `port`: DSN on [::1], none on 127.0.0.1; its notices go to `relay_port`.
fn postfix(dir: &Path, port: u16, relay_port: u16) -> Postfix {
    let vmail = dir.join("vmail");
    std::fs::create_dir_all(&vmail).unwrap();
    assert!(Command::new("chown").arg("65534:65534").arg(&vmail).status().unwrap().success());
    Postfix::start_services(
        dir,
        &format!("[::1]:{port} inet n - n - - smtpd\n127.0.0.1:{port} inet n - n - - smtpd -o smtpd_discard_ehlo_keywords=dsn\n"),
        port,
        &format!("[::1]:{relay_port}"),
        &format!(
            "inet_interfaces = 127.0.0.1, [::1]\nmynetworks = 127.0.0.0/8, [::1]/128\n\
             smtpd_recipient_restrictions = check_recipient_access inline:{{ {{ bad@ = REJECT no such user here }}, {{ later@ = 451 4.7.1 come back later }} }}, permit_mynetworks, reject\n\
             virtual_mailbox_domains = dsn.test, nodsn.test\nvirtual_mailbox_base = {}\nvirtual_mailbox_maps = static:box/\n\
             virtual_uid_maps = static:65534\nvirtual_gid_maps = static:65534\n\
             smtp_sasl_auth_enable = no\nsmtp_tls_security_level = may",
            vmail.display()
        ),
    )
}

/// Send one message with smtplib: `mail_opts` on MAIL, each recipient with its
/// own options; the reply to the end of data (or the error).
fn send(port: u16, from: &str, mail_opts: &[&str], rcpts: &[(&str, &[&str])], body: &str) -> String {
    let spec = serde_json::json!({
        "port": port, "from": from, "mail_opts": mail_opts,
        "rcpts": rcpts.iter().map(|(a, o)| serde_json::json!([a, o])).collect::<Vec<_>>(),
        "body": body,
    });
    let py = r#"
import json, smtplib, sys
s = json.loads(sys.stdin.read())
c = smtplib.SMTP("::1", s["port"], timeout=30)
c.ehlo("client.test")
assert c.has_extn("dsn"), c.esmtp_features
code, msg = c.mail(s["from"], s["mail_opts"])
assert code == 250, (code, msg)
for addr, opts in s["rcpts"]:
    code, msg = c.rcpt(addr, opts)
    assert code == 250, (addr, code, msg)
code, msg = c.data(s["body"].encode())
print(code, msg.decode())
c.quit()
"#;
    let out = run_with_stdin(Command::new("/usr/bin/python3").args(["-c", py]), spec.to_string().as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn queue_id(reply: &str) -> String {
    assert!(reply.starts_with("250 "), "{reply}");
    reply.rsplit(' ').next().unwrap().to_string()
}

/// Every notice in the sender's Maildir, parsed, once at least `want` are
/// there (waiting up to 30 s).
fn notices(s: &Server, want: usize) -> Vec<Value> {
    let dir = s.data().join("mail/src.test/a/new");
    let deadline = Instant::now() + Duration::from_secs(30);
    while list(&dir).len() < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut files = list(&dir);
    files.sort();
    let parser = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/parse_dsn.py");
    files
        .iter()
        .map(|f| {
            let out = run_with_stdin(Command::new("/usr/bin/python3").arg(parser), &std::fs::read(f).unwrap());
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect()
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The notices whose recipient blocks say `action`.
fn of_action<'a>(n: &'a [Value], action: &str) -> Vec<&'a Value> {
    n.iter().filter(|v| v["recipients"].as_array().unwrap().iter().any(|r| field(r, "Action") == action)).collect()
}

/// Give `s` an ed25519 key for its own name (the notices' From domain) and
/// restart it; the DKIM record as (name, value).
fn sign_notices(s: &mut Server) -> (String, String) {
    let out = Command::new(mx6_bin())
        .args(["dkim", "keygen", "--domain", "mx.test", "--selector", "dsn", "--algorithm", "ed25519", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let line = text.lines().find(|l| l.starts_with("dsn._domainkey.mx.test. IN TXT ")).unwrap().to_string();
    s.kill9();
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push_str("[[dkim]]\ndomain = \"mx.test\"\nselector = \"dsn\"\n");
    std::fs::write(&s.config, cfg).unwrap();
    s.spawn(&[]);
    ("dsn._domainkey.mx.test.".into(), line.split('"').skip(1).step_by(2).collect())
}

/// dkimpy verifies the signature of the notice in `file` against `record`.
fn dkim_verifies(file: &Path, record: &(String, String)) -> bool {
    let py = "import sys,dkim\nname,value=sys.argv[1],sys.argv[2]\n\
              def dns(n, timeout=5):\n    return value.encode() if (n.decode() if isinstance(n, bytes) else n)==name else b''\n\
              print(dkim.verify(sys.stdin.buffer.read(), dnsfunc=dns))";
    let out = run_with_stdin(Command::new("/usr/bin/python3").args(["-c", py, &record.0, &record.1]), &std::fs::read(file).unwrap());
    String::from_utf8_lossy(&out.stdout).trim() == "True"
}

const BODY: &str = "From: a@src.test\r\nTo: someone\r\nSubject: dsn test\r\n\r\nthe body marker\r\n";

#[test]
fn parameters_reach_a_dsn_peer_and_a_peer_without_dsn_gets_a_relayed_notice() {
    let pf_port = free_port();
    let mut s = sender("dsn-relay", pf_port, "");
    let record = sign_notices(&mut s);
    let _pf = postfix(&s.dir.join("postfix"), pf_port, s.port);
    let r = send(
        s.port,
        "a@src.test",
        &["RET=HDRS", "ENVID=env-one"],
        &[
            ("u@dsn.test", &["NOTIFY=SUCCESS", "ORCPT=rfc822;U@dsn.test"]),
            ("v@nodsn.test", &["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;V@nodsn.test"]),
        ],
        BODY,
    );
    queue_id(&r);
    let n = notices(&s, 2);
    assert_eq!(n.len(), 2, "{n:#?}\n{}", s.log_text());
    // Postfix got NOTIFY, ORCPT and ENVID, delivered, and reported it itself.
    let pf = of_action(&n, "delivered");
    assert_eq!(pf.len(), 1, "{n:#?}");
    assert_eq!(field(&pf[0]["message"], "Reporting-MTA"), "dns; postfix.test");
    assert_eq!(field(&pf[0]["message"], "Original-Envelope-Id"), "env-one");
    let b = &pf[0]["recipients"][0];
    assert_eq!(field(b, "Original-Recipient"), "rfc822;U@dsn.test");
    assert!(field(b, "Final-Recipient").ends_with("u@dsn.test"), "{b}");
    // The peer without DSN: mx6 says "relayed" (RFC 3461 §5.2.2).
    let relayed = of_action(&n, "relayed");
    assert_eq!(relayed.len(), 1, "{n:#?}");
    let m = &relayed[0]["message"];
    assert_eq!((field(m, "Reporting-MTA"), field(m, "Original-Envelope-Id")), ("dns; mx.test", "env-one"));
    assert!(!field(m, "Arrival-Date").is_empty(), "{m}");
    let rs = relayed[0]["recipients"].as_array().unwrap();
    assert_eq!(rs.len(), 1, "only the recipient relayed to a host without DSN: {rs:?}");
    assert_eq!(field(&rs[0], "Final-Recipient"), "rfc822; v@nodsn.test");
    assert_eq!(field(&rs[0], "Original-Recipient"), "rfc822; V@nodsn.test");
    assert_eq!(field(&rs[0], "Remote-MTA"), "dns; mx.nodsn.test");
    assert!(field(&rs[0], "Status").starts_with("2."), "{rs:?}");
    assert!(field(&rs[0], "Diagnostic-Code").starts_with("smtp; 250"), "{rs:?}");
    assert_eq!(field(relayed[0], "subject"), "Successful Mail Delivery Report");
    assert_eq!(field(relayed[0], "auto_submitted"), "auto-replied");
    assert!(field(relayed[0], "returned").contains("Subject: dsn test"));
    assert!(!field(relayed[0], "returned").contains("the body marker"));
    assert!(s.log_has("dsn=true") && s.log_has("dsn=false"), "{}", s.log_text());
    // mx6's notice is DKIM-signed for its own name; Postfix's is not signed.
    assert!(relayed[0]["dkim"].as_bool().unwrap() && !pf[0]["dkim"].as_bool().unwrap());
    let files = list(&s.data().join("mail/src.test/a/new"));
    let signed: Vec<_> = files.iter().filter(|f| std::fs::read_to_string(f).unwrap().contains("DKIM-Signature:")).collect();
    assert_eq!(signed.len(), 1);
    assert!(dkim_verifies(signed[0], &record), "{}", std::fs::read_to_string(signed[0]).unwrap());
    assert!(s.metric("mx6_dsn_total{action=\"relayed\"}") >= 1.0);
}

#[test]
fn each_recipient_gets_the_notice_it_asked_for() {
    let pf_port = free_port();
    let s = sender("dsn-combos", pf_port, "");
    let _pf = postfix(&s.dir.join("postfix"), pf_port, s.port);
    // Syntax is checked strictly.
    let mut raw = Raw::open(v6(s.port));
    assert!(raw.cmd("EHLO client.test").contains("250-DSN"));
    assert!(raw.cmd("MAIL FROM:<a@src.test> RET=ALL").starts_with("501 5.5.4"));
    assert!(raw.cmd("MAIL FROM:<a@src.test> ENVID=a+0Db").starts_with("501 5.5.4"));
    assert!(raw.cmd("MAIL FROM:<a@src.test> RET=FULL ENVID=x").starts_with("250"));
    assert!(raw.cmd("RCPT TO:<b@src.test> NOTIFY=NEVER,SUCCESS").starts_with("501 5.5.4"));
    assert!(raw.cmd("RCPT TO:<b@src.test> ORCPT=b@src.test").starts_with("501 5.5.4"));
    assert!(raw.cmd("RCPT TO:<b@src.test> NOTIFY=DELAY NOTIFY=DELAY").starts_with("501 5.5.4"));
    drop(raw);

    let r = send(
        s.port,
        "a@src.test",
        &["RET=HDRS", "ENVID=combo"],
        &[
            ("b@src.test", &["NOTIFY=SUCCESS", "ORCPT=rfc822;B@src.test"]),
            ("c@src.test", &["NOTIFY=NEVER"]),
            ("d@src.test", &[]),
            ("bad@dsn.test", &["NOTIFY=FAILURE", "ORCPT=rfc822;Bad@dsn.test"]),
            ("bad@nodsn.test", &["NOTIFY=NEVER"]),
            ("w@dsn.test", &["NOTIFY=FAILURE,DELAY"]),
            ("y@nodsn.test", &["NOTIFY=SUCCESS"]),
        ],
        BODY,
    );
    queue_id(&r);
    let n = notices(&s, 2);
    for u in ["b", "c", "d"] {
        assert_eq!(s.wait_mail(u, "src.test", 1).len(), 1, "{u}");
    }
    // Give a wrong third notice the time to arrive.
    std::thread::sleep(Duration::from_secs(2));
    let n2 = notices(&s, 2);
    assert_eq!(n2.len(), 2, "one success notice, one failure notice, nothing for NEVER, none unasked: {n:#?}");
    let delivered = of_action(&n2, "delivered");
    assert_eq!(delivered.len(), 1, "{n2:#?}");
    let d = &delivered[0];
    let rs = d["recipients"].as_array().unwrap();
    // The Maildir delivery and the relay in the same pass make one notice.
    assert_eq!(rs.len(), 2, "{rs:?}");
    assert_eq!((field(&rs[1], "Final-Recipient"), field(&rs[1], "Action")), ("rfc822; y@nodsn.test", "relayed"), "{rs:?}");
    assert_eq!(field(&rs[0], "Final-Recipient"), "rfc822; b@src.test");
    assert_eq!(field(&rs[0], "Original-Recipient"), "rfc822; B@src.test");
    assert_eq!(field(&rs[0], "Status"), "2.0.0");
    assert!(!field(&rs[0], "Last-Attempt-Date").is_empty());
    assert_eq!(field(&d["message"], "Original-Envelope-Id"), "combo");
    assert_eq!(d["parts"], serde_json::json!(["text/plain", "message/delivery-status", "text/rfc822-headers"]));

    let failed = of_action(&n2, "failed");
    assert_eq!(failed.len(), 1, "{n2:#?}");
    let f = failed[0];
    assert_eq!(field(f, "subject"), "Undelivered Mail Returned to Sender");
    assert_eq!(field(f, "to"), "<a@src.test>");
    assert!(field(f, "from").contains("MAILER-DAEMON@mx.test"));
    let rs = f["recipients"].as_array().unwrap();
    assert_eq!(rs.len(), 1, "bad@nodsn.test said NEVER: {rs:?}");
    let b = &rs[0];
    assert_eq!(field(b, "Final-Recipient"), "rfc822; bad@dsn.test");
    assert_eq!(field(b, "Original-Recipient"), "rfc822; Bad@dsn.test");
    assert_eq!(field(b, "Action"), "failed");
    assert_eq!(field(b, "Status"), "5.7.1");
    assert_eq!(field(b, "Remote-MTA"), "dns; mx.dsn.test");
    assert!(field(b, "Diagnostic-Code").starts_with("smtp; 554 5.7.1") && field(b, "Diagnostic-Code").contains("no such user here"), "{b}");
    assert!(field(f, "returned").contains("Subject: dsn test") && !field(f, "returned").contains("the body marker"), "RET=HDRS");

    // RET=FULL returns the whole message; no RET returns its headers.
    queue_id(&send(s.port, "a@src.test", &["RET=FULL", "ENVID=full"], &[("bad@dsn.test", &[])], BODY));
    queue_id(&send(s.port, "a@src.test", &["ENVID=noret"], &[("bad@dsn.test", &[])], BODY));
    // From the null sender: never a notice.
    queue_id(&send(s.port, "", &[], &[("bad@dsn.test", &["NOTIFY=FAILURE"])], BODY));
    let n3 = notices(&s, 4);
    std::thread::sleep(Duration::from_secs(2));
    let n3 = if n3.len() == 4 { notices(&s, 4) } else { n3 };
    assert_eq!(n3.len(), 4, "{n3:#?}");
    let by_envid =
        |id: &str| n3.iter().find(|v| field(&v["message"], "Original-Envelope-Id") == id).unwrap_or_else(|| panic!("{id}: {n3:#?}"));
    let full = by_envid("full");
    assert_eq!(full["parts"][2], "message/rfc822");
    assert!(field(full, "returned").contains("the body marker"), "{full}");
    let noret = by_envid("noret");
    assert_eq!(noret["parts"][2], "text/rfc822-headers");
    assert!(!field(noret, "returned").contains("the body marker"));
    assert!(s.log_has("no notice for a message from the null sender"), "{}", s.log_text());
}

#[test]
fn a_delay_warning_goes_out_once_even_across_a_restart() {
    let pf_port = free_port();
    let mut s = sender("dsn-delay", pf_port, "delay_warning = \"2s\"\n");
    let _pf = postfix(&s.dir.join("postfix"), pf_port, s.port);
    let r = send(
        s.port,
        "a@src.test",
        &["ENVID=slow"],
        &[("later@dsn.test", &[]), ("later@nodsn.test", &["NOTIFY=FAILURE", "ORCPT=rfc822;Later@nodsn.test"])],
        BODY,
    );
    let id = queue_id(&r);
    let n = notices(&s, 1);
    assert_eq!(n.len(), 1, "{}", s.log_text());
    let w = &n[0];
    assert_eq!(field(w, "subject"), "Delayed Mail (still being retried)");
    let rs = w["recipients"].as_array().unwrap();
    assert_eq!(rs.len(), 1, "later@nodsn.test left DELAY out of NOTIFY: {rs:?}");
    let b = &rs[0];
    assert_eq!((field(b, "Final-Recipient"), field(b, "Action"), field(b, "Status")), ("rfc822; later@dsn.test", "delayed", "4.7.1"));
    assert_eq!(field(b, "Remote-MTA"), "dns; mx.dsn.test");
    assert!(field(b, "Diagnostic-Code").starts_with("smtp; 451 4.7.1") && field(b, "Diagnostic-Code").contains("come back later"), "{b}");
    assert!(!field(b, "Will-Retry-Until").is_empty() && !field(b, "Last-Attempt-Date").is_empty(), "{b}");
    assert_eq!(field(&w["message"], "Original-Envelope-Id"), "slow");

    // `mx6 queue show` and `list --json` carry the parameters and the warning.
    let show = mx6(&["queue".as_ref(), "show".as_ref(), id.as_ref(), "--config".as_ref(), s.config.as_os_str()]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("dsn: ENVID=slow") && text.contains("delay warning sent"), "{text}");
    assert!(text.contains("later@nodsn.test  NOTIFY=FAILURE ORCPT=rfc822;Later@nodsn.test"), "{text}");
    let list = mx6(&["queue".as_ref(), "list".as_ref(), "--json".as_ref(), "--config".as_ref(), s.config.as_os_str()]);
    let v: Value = serde_json::from_slice(&list.stdout).unwrap();
    let m = v.as_array().unwrap().iter().find(|m| m["id"] == id.as_str()).unwrap();
    assert_eq!((m["envid"].as_str(), m["warned"].as_bool()), (Some("slow"), Some(true)), "{m}");
    assert_eq!(m["recipients"][1]["notify"], "FAILURE");

    // More retries, and a restart: still one warning.
    std::thread::sleep(Duration::from_secs(4));
    s.terminate();
    s.spawn(&[]);
    std::thread::sleep(Duration::from_secs(5));
    assert!(s.log_text().matches("delivery deferred").count() >= 1, "{}", s.log_text());
    let n = notices(&s, 1);
    assert_eq!(of_action(&n, "delayed").len(), 1, "{n:#?}");
}

#[test]
fn the_parameters_survive_a_restart_before_the_notice() {
    let pf_port = free_port();
    let mut s = sender("dsn-restart", pf_port, "");
    // No peer yet: the message waits.
    let r = send(
        s.port,
        "a@src.test",
        &["RET=FULL", "ENVID=before+2Brestart"],
        &[("bad@dsn.test", &["NOTIFY=FAILURE", "ORCPT=rfc822;Bad@dsn.test"])],
        BODY,
    );
    let id = queue_id(&r);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.log_has("delivery deferred") {
        assert!(Instant::now() < deadline, "{}", s.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    s.terminate();
    // The stopped server's spool says what was asked.
    let list = mx6(&["queue".as_ref(), "list".as_ref(), "--json".as_ref(), "--config".as_ref(), s.config.as_os_str()]);
    let v: Value = serde_json::from_slice(&list.stdout).unwrap();
    let m = &v[0];
    assert_eq!(
        (m["id"].as_str(), m["ret"].as_str(), m["envid"].as_str()),
        (Some(id.as_str()), Some("FULL"), Some("before+restart")),
        "{v}"
    );
    assert_eq!(
        (m["recipients"][0]["notify"].as_str(), m["recipients"][0]["orcpt"].as_str()),
        (Some("FAILURE"), Some("rfc822;Bad@dsn.test"))
    );
    s.spawn(&[]);
    let _pf = postfix(&s.dir.join("postfix"), pf_port, s.port);
    let n = notices(&s, 1);
    assert_eq!(n.len(), 1, "{}", s.log_text());
    let f = &n[0];
    assert_eq!(field(&f["message"], "Original-Envelope-Id"), "before+restart");
    let b = &f["recipients"][0];
    assert_eq!((field(b, "Action"), field(b, "Original-Recipient")), ("failed", "rfc822; Bad@dsn.test"));
    assert_eq!(f["parts"][2], "message/rfc822");
    assert!(field(f, "returned").contains("the body marker"));
}
