//! LMTP local delivery (`local.delivery = "lmtp://…"`, RFC 2033) into a real
//! Dovecot (Debian dovecot-lmtpd), and the message read back over IMAP
//! (dovecot-imapd) with Python's imaplib. Needs root to start Dovecot.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

struct Dovecot(Child);

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const ANY_USER: &str = "driver = static\n  args = uid=nobody gid=nogroup home=%h";

/// Dovecot with LMTP and IMAP; `userdb` is the body of its userdb block
/// (`%h` stands for the mailbox directory of the user).
fn dovecot(dir: &std::path::Path, lmtp_port: u16, imap_port: u16, userdb: &str) -> Dovecot {
    let _ = std::fs::remove_dir_all(dir);
    for d in ["run", "state", "mail"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let _ = Command::new("chmod").args(["-R", "0777"]).arg(dir.join("mail")).status();
    let _ = Command::new("chmod").arg("0755").arg(dir).status();
    let d = dir.display();
    let userdb = userdb.replace("%h", &format!("{d}/mail/%d/%n"));
    let conf = dir.join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = lmtp imap
listen = 127.0.0.1, ::1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{d}/mail/%d/%n
first_valid_uid = 1
passdb {{
  driver = static
  args = password=imap-pw
}}
userdb {{
  {userdb}
}}
service lmtp {{
  inet_listener lmtp {{
    port = {lmtp_port}
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"
        ),
    )
    .unwrap();
    let child = Command::new("dovecot").arg("-F").arg("-c").arg(&conf).spawn().expect("dovecot (Debian dovecot-core)");
    let dv = Dovecot(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", lmtp_port)).is_err() || std::net::TcpStream::connect(("127.0.0.1", imap_port)).is_err()
    {
        assert!(
            Instant::now() < deadline,
            "dovecot did not start:\n{}",
            std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    dv
}

#[test]
fn lmtp_to_dovecot_and_read_back_over_imap() {
    let (lmtp_port, imap_port) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("mx6-dovecot-{}", std::process::id()));
    let _dv = dovecot(&dir, lmtp_port, imap_port, ANY_USER);
    let s = Server::start("lmtp", &format!("[local]\ndomains = [\"dest.test\"]\ndelivery = \"lmtp://127.0.0.1:{lmtp_port}\"\n"));
    for user in ["anna", "ben"] {
        let out =
            swaks_ok(&["--server", "::1", "--port", &s.port.to_string(), "--to", &format!("{user}@dest.test"), "--h-Subject", "via lmtp"]);
        assert!(out.contains("250 2.0.0 Ok: queued"), "{out}");
    }
    assert!(s.log_has(&format!("relay=lmtp://127.0.0.1:{lmtp_port}")), "{}", s.log_text());
    let py = format!(
        "import imaplib,time\nfor u in ['anna','ben']:\n  for i in range(100):\n    m=imaplib.IMAP4('127.0.0.1',{imap_port})\n    m.login(u+'@dest.test','imap-pw')\n    \
         typ,data=m.select('INBOX')\n    if int(data[0])>0: break\n    m.logout(); time.sleep(0.1)\n  typ,data=m.fetch('1','(BODY[HEADER.FIELDS (SUBJECT RECEIVED)])')\n  \
         print(u, data[0][1].decode())\n  m.logout()\n"
    );
    let out = Command::new("/usr/bin/python3").args(["-c", &py]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}\nmx6:\n{}", String::from_utf8_lossy(&out.stderr), s.log_text());
    assert_eq!(text.matches("Subject: via lmtp").count(), 2, "{text}");
    assert!(text.contains("by mx.test (mx6)"), "{text}");
    // Nothing went into mx6's own Maildirs.
    assert!(!s.data().join("mail").exists(), "local delivery bypassed LMTP");
}

/// Each LMTP recipient has its own reply (RFC 2033 §4.2), so each gets the
/// notice it asked for: Dovecot knows anna and a, not ghost (550 at RCPT).
/// The notices are themselves delivered over LMTP, to a's INBOX.
#[test]
fn lmtp_recipients_get_the_notices_they_asked_for() {
    let (lmtp_port, imap_port) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("mx6-dovecot-dsn-{}", std::process::id()));
    let users = dir.join("users");
    let home = |u: &str| format!("{}/mail/dest.test/{u}", dir.display());
    let userdb = format!("driver = passwd-file\n  args = username_format=%u {}", users.display());
    // Written once Dovecot has made its directory; it reads the file at each lookup.
    let _dv = dovecot(&dir, lmtp_port, imap_port, &userdb);
    std::fs::write(&users, format!("anna@dest.test::65534:65534::{}::\na@dest.test::65534:65534::{}::\n", home("anna"), home("a")))
        .unwrap();
    let _ = Command::new("chmod").arg("0644").arg(&users).status();
    let s = Server::start("lmtp-dsn", &format!("[local]\ndomains = [\"dest.test\"]\ndelivery = \"lmtp://127.0.0.1:{lmtp_port}\"\n"));
    let py = format!(
        "import smtplib\nc=smtplib.SMTP('::1',{port})\nc.ehlo('client.test')\nc.mail('a@dest.test',['ENVID=lmtp-1'])\n\
         c.rcpt('anna@dest.test',['NOTIFY=SUCCESS','ORCPT=rfc822;Anna@dest.test'])\nc.rcpt('ghost@dest.test',['NOTIFY=FAILURE'])\n\
         print(c.data(b'Subject: lmtp dsn\\r\\n\\r\\nhello\\r\\n'))\nc.quit()\n",
        port = s.port
    );
    let out = Command::new("/usr/bin/python3").args(["-c", &py]).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("250"), "{out:?}");
    // Read a's INBOX over IMAP until both notices are there; parse each.
    let fetch = format!(
        "import imaplib,time,sys\nfor i in range(200):\n  m=imaplib.IMAP4('127.0.0.1',{imap_port})\n  m.login('a@dest.test','imap-pw')\n  \
         typ,data=m.select('INBOX')\n  if int(data[0])>=2: break\n  m.logout(); time.sleep(0.1)\n\
         for n in range(1,int(data[0])+1):\n  typ,d=m.fetch(str(n),'(RFC822)')\n  sys.stdout.buffer.write(d[0][1]+b'\\n=====\\n')\n"
    );
    let out = Command::new("/usr/bin/python3").args(["-c", &fetch]).output().unwrap();
    assert!(out.status.success(), "{}\nmx6:\n{}", String::from_utf8_lossy(&out.stderr), s.log_text());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let parser = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/parse_dsn.py");
    let notices: Vec<serde_json::Value> = text
        .split("\n=====\n")
        .filter(|m| !m.trim().is_empty())
        .map(|m| {
            let o = run_with_stdin(Command::new("/usr/bin/python3").arg(parser), m.as_bytes());
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            serde_json::from_slice(&o.stdout).unwrap()
        })
        .collect();
    assert_eq!(notices.len(), 2, "{text}\nmx6:\n{}", s.log_text());
    let block = |action: &str| {
        notices
            .iter()
            .flat_map(|n| n["recipients"].as_array().unwrap().clone())
            .find(|r| r["Action"] == action)
            .unwrap_or_else(|| panic!("no {action} notice: {notices:?}"))
    };
    let d = block("delivered");
    assert_eq!(
        (d["Final-Recipient"].as_str(), d["Original-Recipient"].as_str()),
        (Some("rfc822; anna@dest.test"), Some("rfc822; Anna@dest.test"))
    );
    assert!(d["Diagnostic-Code"].as_str().unwrap().starts_with("smtp; 250"), "{d}");
    let f = block("failed");
    assert_eq!(f["Final-Recipient"], "rfc822; ghost@dest.test");
    assert!(f["Status"].as_str().unwrap().starts_with("5.1."), "{f}");
    assert!(f["Diagnostic-Code"].as_str().unwrap().starts_with("smtp; 550"), "{f}");
    assert!(notices.iter().all(|n| n["message"]["Original-Envelope-Id"] == "lmtp-1"), "{notices:?}");
    assert!(notices.iter().all(|n| n["recipients"].as_array().unwrap().len() == 1), "one recipient per notice kind: {notices:?}");
}
