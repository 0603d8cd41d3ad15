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

fn dovecot(dir: &std::path::Path, lmtp_port: u16, imap_port: u16) -> Dovecot {
    let _ = std::fs::remove_dir_all(dir);
    for d in ["run", "state", "mail"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let _ = Command::new("chmod").args(["-R", "0777"]).arg(dir.join("mail")).status();
    let _ = Command::new("chmod").arg("0755").arg(dir).status();
    let d = dir.display();
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
  driver = static
  args = uid=nobody gid=nogroup home={d}/mail/%d/%n
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
    let _dv = dovecot(&dir, lmtp_port, imap_port);
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
