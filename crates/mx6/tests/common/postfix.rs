//! A real Postfix for the end-to-end tests, in its own directory (main.cf,
//! master.cf, queue, maillog), started with `postfix -c DIR start` and stopped
//! when dropped. Needs root and Debian's `postfix`.

use std::process::Command;
use std::time::{Duration, Instant};

pub struct Postfix {
    pub dir: std::path::PathBuf,
}

impl Postfix {
    /// `extra` main.cf lines override the defaults above them.
    pub fn start(dir: &std::path::Path, port: u16, relayhost: &str, extra: &str) -> Postfix {
        Postfix::start_on(dir, &format!("127.0.0.1:{port}"), port, relayhost, extra)
    }

    /// `listen`: the master.cf service address (`127.0.0.1:25`, or `25` for
    /// every `inet_interfaces` address).
    pub fn start_on(dir: &std::path::Path, listen: &str, port: u16, relayhost: &str, extra: &str) -> Postfix {
        Postfix::start_services(dir, &format!("{listen} inet n - n - - smtpd\n"), port, relayhost, extra)
    }

    /// `services`: the master.cf lines of the smtpd listeners (each may carry
    /// `-o` overrides); `port` is one of them, waited for.
    pub fn start_services(dir: &std::path::Path, services: &str, port: u16, relayhost: &str, extra: &str) -> Postfix {
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
                "{services}pickup unix n - n 60 1 pickup
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
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && std::net::TcpStream::connect(("::1", port)).is_err() {
            assert!(Instant::now() < deadline, "postfix did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Postfix { dir: dir.to_path_buf() }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix").arg("-c").arg(&self.dir).arg("stop").status();
    }
}
