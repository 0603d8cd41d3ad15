//! The session stages end to end through the real driver and services, but
//! without sockets: each conversation runs over an in-memory stream, like the
//! scripted `.smtp` conversations of `mx6-smtp`. `C:` lines are sent (with
//! CRLF), `S:` lines are the exact replies expected, `S: ~prefix` matches by
//! prefix. The resolver points at a closed port, so every lookup fails at
//! once: what the stages do with "lookup failed" is part of what is tested.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mx6_config::{Config, ListenerConfig, ListenerKind};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::net::conn::Conn;
use crate::runtime::{assemble, Assembled};

struct World {
    dir: PathBuf,
    a: Assembled,
    _stop: tokio::sync::watch::Sender<bool>,
}

fn world(name: &str, extra: &str) -> World {
    let dir = std::env::temp_dir().join(format!("mx6-stages-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "hostname = \"mx.test\"\ndata_dir = \"{}\"\n[local]\ndomains = [\"mx.test\"]\n[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"200ms\"\nattempts = 1\n[submission]\nauth_failure_delay = \"0s\"\n{extra}",
        dir.display()
    );
    let cfg = Config::parse(&text, "test").unwrap();
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let (stop, rx) = tokio::sync::watch::channel(false);
    World { a: assemble(&cfg, rx).unwrap(), dir, _stop: stop }
}

impl World {
    /// Run one conversation from `client` on a listener of `kind`.
    async fn talk(&self, client: &str, kind: ListenerKind, script: &str) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let listener = ListenerConfig { address: "[::1]:25".parse().unwrap(), kind, proxy_protocol: false, allow: vec![] };
        let client: SocketAddr = client.parse().unwrap();
        let services = self.a.services.clone();
        let session =
            tokio::spawn(
                async move { crate::session::driver::run(Conn::Plain(theirs), client, listener.address, &listener, services).await },
            );
        let (r, mut w) = tokio::io::split(ours);
        let mut r = BufReader::new(r);
        for (n, line) in script.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).enumerate() {
            if let Some(c) = line.strip_prefix("C: ").or(line.strip_prefix("C:")) {
                w.write_all(format!("{c}\r\n").as_bytes()).await.unwrap();
                continue;
            }
            let want = line.strip_prefix("S: ").unwrap_or_else(|| panic!("line {n}: neither C: nor S: {line}"));
            let mut got = String::new();
            tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut got))
                .await
                .unwrap_or_else(|_| panic!("line {n}: no reply, expected {want}"))
                .unwrap();
            let got = got.trim_end_matches("\r\n");
            match want.strip_prefix('~') {
                Some(prefix) => assert!(got.starts_with(prefix), "line {n}: expected {want}, got {got}"),
                None => assert_eq!(got, want, "line {n}"),
            }
        }
        drop(w);
        let _ = tokio::time::timeout(Duration::from_secs(10), session).await;
    }

    /// The messages delivered into `user`'s Maildir, waiting up to 10 s for `n`.
    async fn maildir(&self, user: &str, n: usize) -> Vec<String> {
        let dir = self.dir.join("mail/mx.test").join(user).join("new");
        for _ in 0..500 {
            let files: Vec<String> = std::fs::read_dir(&dir)
                .map(|d| d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect())
                .unwrap_or_default();
            if files.len() >= n {
                return files;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("fewer than {n} messages for {user} in {}", dir.display());
    }

    fn metrics(&self) -> String {
        self.a.metrics.render()
    }
}

const EHLO_V6: &str = "
S: ~220 mx.test ESMTP
C: EHLO client.example
S: 250-mx.test Hello [IPv6:::1]
S: 250-PIPELINING
S: ~250-SIZE
S: 250-8BITMIME
S: 250-SMTPUTF8
S: 250-ENHANCEDSTATUSCODES
S: 250-CHUNKING
S: 250-DSN
S: 250 STARTTLS
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mynetworks_message_is_stored_and_delivered_with_our_headers() {
    let w = world("mynet", "");
    let script = format!(
        "{EHLO_V6}
C: MAIL FROM:<a@client.example>
S: 250 2.1.0 Sender ok
C: RCPT TO:<Bob@mx.test>
S: 250 2.1.5 Recipient ok
C: RCPT TO:<x@elsewhere.example>
S: 250 2.1.5 Recipient ok
C: DATA
S: ~354
C: Subject: hi
C: Authentication-Results: mx.test; spf=pass (forged)
C:
C: ..dot
C: .
S: ~250 2.0.0 Ok: queued as
C: QUIT
S: ~221"
    );
    w.talk("[::1]:4000", ListenerKind::Smtp, &script).await;
    let m = w.maildir("bob", 1).await;
    assert!(m[0].contains("from client.example (unknown [IPv6:::1])"), "{}", m[0]);
    assert!(m[0].contains("Authentication-Results: mx.test; none\r\n"), "{}", m[0]);
    assert!(!m[0].contains("(forged)"), "forged Authentication-Results kept: {}", m[0]);
    assert!(m[0].ends_with("Subject: hi\r\n\r\n.dot\r\n"), "{}", m[0]);
    assert!(w.metrics().contains("mx6_messages_accepted_total{family=\"ipv6\",listener=\"[::1]:25\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranger_relay_denied_then_greylisted_and_rate_limited() {
    let w = world("stranger", "[greylist]\nenabled = true\n[[ratelimit]]\nwhat = \"messages\"\nprefix = \"ipv4/32\"\nlimit = 2\n");
    w.talk(
        "192.0.2.9:4000",
        ListenerKind::Smtp,
        "
S: ~220 mx.test ESMTP
C: HELO client.example
S: 250 mx.test Hello [192.0.2.9]
C: MAIL FROM:<a@client.example>
S: 250 2.1.0 Sender ok
C: RCPT TO:<x@elsewhere.example>
S: ~554 5.7.1
C: RCPT TO:<bob@mx.test>
S: ~451 4.7.1 Greylisted, please try again in 300 seconds
C: RSET
S: ~250
C: MAIL FROM:<a@client.example>
S: 250 2.1.0 Sender ok
C: RSET
S: ~250
C: MAIL FROM:<a@client.example>
S: ~451 4.7.1
C: QUIT
S: ~221",
    )
    .await;
    let m = w.metrics();
    assert!(m.contains("mx6_rejections_total{family=\"ipv4\",reason=\"relay_denied\",stage=\"rcpt\"} 1"), "{m}");
    assert!(m.contains("mx6_greylist_total{family=\"ipv4\",result=\"new\"} 1"), "{m}");
    assert!(m.contains("mx6_rejections_total{family=\"ipv4\",reason=\"rate_limited\",stage=\"mail\"} 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reverse_dns_lookup_defers_an_ipv6_stranger() {
    let w = world("v6stranger", "");
    w.talk(
        "[2001:db8::5]:4000",
        ListenerKind::Smtp,
        "
S: ~220 mx.test ESMTP
C: HELO client.example
S: 250 mx.test Hello [IPv6:2001:db8::5]
C: MAIL FROM:<a@client.example>
S: ~451 4.7.25
C: QUIT
S: ~221",
    )
    .await;
    assert!(w.metrics().contains("reason=\"dns_temperror\",stage=\"mail\"} 1"), "{}", w.metrics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_needs_tls_and_auth_before_mail() {
    let w = world("submission", "");
    w.talk(
        "[2001:db8::7]:4000",
        ListenerKind::Submission,
        "
S: ~220 mx.test ESMTP
C: EHLO client.example
S: 250-mx.test Hello [IPv6:2001:db8::7]
S: 250-PIPELINING
S: ~250-SIZE
S: 250-8BITMIME
S: 250-SMTPUTF8
S: 250-ENHANCEDSTATUSCODES
S: 250-CHUNKING
S: 250-DSN
S: 250 STARTTLS
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: ~538 5.7.11
C: MAIL FROM:<alice@mx.test>
S: ~530 5.7.0
C: QUIT
S: ~221",
    )
    .await;
}
