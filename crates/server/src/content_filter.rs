//! Content filters at end of data, before the 250: the `[[milter]]`s in
//! order, then SpamAssassin's spamd (`[content_filter]`). They see the
//! message as it will be stored — with our Received, Authentication-Results
//! and `X-Mx6-Client` headers — and their verdicts decide whether it is
//! refused, discarded, held, marked as spam, or delivered with their changes.
//!
//! The milter conversation for a message runs at end of data: connect, HELO,
//! MAIL, every RCPT, DATA, the headers, the body and end of message are sent
//! then, each with the macros real milters read (`j`, `{daemon_name}`, `_`,
//! `{client_addr}`, `{client_name}`, `{client_port}`, `i`, `{auth_authen}`,
//! `{mail_addr}`, `{rcpt_addr}`, `{tls_version}`, …). A refusal at any step
//! refuses the message.

use std::net::IpAddr;
use std::time::Duration;

use mx6_filter::milter::{self, Negotiated, Parsed, Peer, Reply as MReply, Step};
use mx6_filter::spamd;
use mx6_policy::Family;
use mx6_smtp::reply::{self, Reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::{Config, ContentFilterConfig, FilterAddress, MilterConfig, MilterFailure, SpamdFailure};
use crate::metrics::Metrics;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn open(addr: &FilterAddress) -> std::io::Result<Box<dyn Stream>> {
    Ok(match addr {
        FilterAddress::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a).await?),
        FilterAddress::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
    })
}

/// What the session knows about the message's origin.
pub struct Origin<'a> {
    pub queue_id: &'a str,
    pub hostname: &'a str,
    pub client: IpAddr,
    pub client_port: u16,
    /// The forward-confirmed PTR name.
    pub client_name: Option<&'a str>,
    pub helo: &'a str,
    pub auth: Option<&'a str>,
    pub tls: Option<&'a str>,
}

/// The envelope and message the filters work on; they may change all three.
#[derive(Debug, Clone)]
pub struct Message {
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
    /// Deliver into the Junk folder (spam at or above `mark_score`).
    pub junk: bool,
    /// A milter quarantined it: keep it on hold with this reason.
    pub hold: Option<String>,
}

pub enum Verdict {
    Deliver(Message),
    Refuse { reply: Reply, reason: &'static str, by: String },
    Discard { by: String },
}

pub struct Filters {
    spamd: ContentFilterConfig,
    milters: Vec<MilterConfig>,
}

impl Filters {
    pub fn new(cfg: &Config) -> Filters {
        Filters { spamd: cfg.content_filter.clone(), milters: cfg.milter.clone() }
    }

    pub fn active(&self) -> bool {
        self.spamd.spamd.is_some() || !self.milters.is_empty()
    }

    pub async fn run(&self, o: &Origin<'_>, mut m: Message, metrics: &Metrics) -> Verdict {
        let family = Family::of(o.client).as_str();
        let count = |filter: &str, verdict: &str| metrics.content_filter.with_label_values(&[family, filter, verdict]).inc();
        for cfg in &self.milters {
            let by = format!("milter {}", cfg.address);
            let r = tokio::time::timeout(cfg.timeout, converse(cfg, o, &m)).await.unwrap_or(Err(MilterError::Timeout(cfg.timeout)));
            match r {
                Ok(Done { verdict, mods, log }) => {
                    count("milter", verdict);
                    tracing::info!(queue_id = o.queue_id, client = %o.client, family, milter = %cfg.address, verdict, changes = %log, "milter");
                    match verdict {
                        "reject" | "tempfail" => {
                            let reply = mods.reply.unwrap_or_else(|| {
                                if verdict == "reject" {
                                    reply::milter_reject()
                                } else {
                                    reply::milter_tempfail()
                                }
                            });
                            let reason = if reply.code >= 500 { "milter_reject" } else { "milter_tempfail" };
                            return Verdict::Refuse { reply, reason, by };
                        }
                        "discard" => return Verdict::Discard { by },
                        _ => {}
                    }
                    mods.apply(&mut m);
                }
                Err(e) => {
                    count("milter", "failed");
                    tracing::warn!(queue_id = o.queue_id, client = %o.client, family, milter = %cfg.address, error = %e, on_failure = ?cfg.on_failure, "milter failed");
                    match cfg.on_failure {
                        MilterFailure::Accept => {}
                        MilterFailure::Tempfail => {
                            return Verdict::Refuse { reply: reply::filter_unavailable(), reason: "content_filter_unavailable", by };
                        }
                        MilterFailure::Reject => return Verdict::Refuse { reply: reply::milter_reject(), reason: "milter_reject", by },
                    }
                }
            }
        }
        if let Some(addr) = &self.spamd.spamd {
            let c = &self.spamd;
            if m.data.len() > c.max_size {
                count("spamd", "skipped_size");
                tracing::info!(queue_id = o.queue_id, client = %o.client, family, size = m.data.len(), max_size = c.max_size, "spamd: not scanned (larger than content_filter.max_size)");
                return Verdict::Deliver(m);
            }
            match tokio::time::timeout(c.timeout, scan(addr, &m.data))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {:?}", c.timeout)))
            {
                Ok(v) => {
                    let tests = v.tests.join(",");
                    let verdict = if v.score >= c.reject_score {
                        "rejected"
                    } else if v.score >= c.mark_score {
                        "marked"
                    } else {
                        "clean"
                    };
                    count("spamd", verdict);
                    tracing::info!(queue_id = o.queue_id, client = %o.client, family, score = v.score, tests = %tests, verdict, "spamd");
                    if verdict == "rejected" {
                        return Verdict::Refuse { reply: reply::spam(v.score), reason: "spam", by: format!("spamd {addr}") };
                    }
                    let spam = verdict == "marked";
                    let mut h = format!(
                        "X-Spam-Status: {}, score={:.1} required={:.1} tests={}\r\nX-Spam-Score: {:.1}\r\n",
                        if spam { "Yes" } else { "No" },
                        v.score,
                        c.mark_score,
                        fold_tests(&tests),
                        v.score
                    );
                    if spam {
                        h.push_str("X-Spam-Flag: YES\r\n");
                        m.junk = true;
                    }
                    m.data.splice(0..0, h.into_bytes());
                }
                Err(e) => {
                    count("spamd", "failed");
                    tracing::warn!(queue_id = o.queue_id, client = %o.client, family, spamd = %addr, error = %e, on_failure = ?c.on_failure, "spamd failed");
                    if c.on_failure == SpamdFailure::Tempfail {
                        return Verdict::Refuse {
                            reply: reply::filter_unavailable(),
                            reason: "content_filter_unavailable",
                            by: format!("spamd {addr}"),
                        };
                    }
                }
            }
        }
        Verdict::Deliver(m)
    }
}

/// `tests=` wrapped so no header line exceeds 78 characters.
fn fold_tests(tests: &str) -> String {
    let mut out = String::new();
    let mut col = 40;
    for (i, t) in tests.split(',').filter(|t| !t.is_empty()).enumerate() {
        if i > 0 {
            out.push(',');
            col += 1;
        }
        if col + t.len() > 76 {
            out.push_str("\r\n\t");
            col = 8;
        }
        out.push_str(t);
        col += t.len();
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

async fn scan(addr: &FilterAddress, data: &[u8]) -> Result<spamd::Verdict, String> {
    let mut s = open(addr).await.map_err(|e| format!("connect: {e}"))?;
    s.write_all(&spamd::request(data)).await.map_err(|e| e.to_string())?;
    s.shutdown().await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    s.take(1 << 20).read_to_end(&mut answer).await.map_err(|e| e.to_string())?;
    spamd::parse(&answer).map_err(|e| e.to_string())
}

#[derive(Debug, thiserror::Error)]
enum MilterError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] milter::Error),
    #[error("milter closed the connection")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("milter speaks protocol version {0}; mx6 needs 2 or later")]
    Version(u32),
    #[error("unexpected reply {0:?} during {1}")]
    Unexpected(Box<MReply>, &'static str),
}

/// What one milter asked for.
#[derive(Default)]
struct Mods {
    header_and_body: Vec<MReply>,
    add_rcpt: Vec<String>,
    del_rcpt: Vec<String>,
    from: Option<String>,
    quarantine: Option<String>,
    /// The milter's own reply text for reject/tempfail.
    reply: Option<Reply>,
}

impl Mods {
    fn apply(self, m: &mut Message) {
        if !self.header_and_body.is_empty() {
            let mut p = milter::parse(&m.data);
            let mut replaced = false;
            for r in &self.header_and_body {
                milter::modify(&mut p, r, &mut replaced);
            }
            m.data = milter::render(&p);
        }
        let bare = |a: &str| a.trim().trim_start_matches('<').trim_end_matches('>').to_string();
        for d in &self.del_rcpt {
            let d = bare(d);
            m.rcpts.retain(|r| !r.eq_ignore_ascii_case(&d));
        }
        for a in &self.add_rcpt {
            let a = bare(a);
            if !m.rcpts.iter().any(|r| r.eq_ignore_ascii_case(&a)) {
                m.rcpts.push(a);
            }
        }
        if let Some(f) = self.from {
            m.from = bare(&f);
        }
        if let Some(q) = self.quarantine {
            m.hold = Some(q);
        }
    }

    fn describe(&self) -> String {
        let mut v = Vec::new();
        for r in &self.header_and_body {
            v.push(match r {
                MReply::AddHeader { name, .. } => format!("add header {name}"),
                MReply::InsertHeader { name, index, .. } => format!("insert header {name} at {index}"),
                MReply::ChangeHeader { name, value, .. } if value.is_empty() => format!("delete header {name}"),
                MReply::ChangeHeader { name, .. } => format!("change header {name}"),
                _ => "replace body".into(),
            });
        }
        v.dedup();
        v.extend(self.add_rcpt.iter().map(|r| format!("add rcpt {r}")));
        v.extend(self.del_rcpt.iter().map(|r| format!("delete rcpt {r}")));
        if let Some(f) = &self.from {
            v.push(format!("change sender {f}"));
        }
        if let Some(q) = &self.quarantine {
            v.push(format!("quarantine ({q})"));
        }
        v.join("; ")
    }
}

/// How one milter's conversation ended.
struct Done {
    /// accept, continue, reject, tempfail, discard or quarantine.
    verdict: &'static str,
    mods: Mods,
    /// The changes it asked for, for the log.
    log: String,
}

struct Conn {
    s: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl Conn {
    async fn send(&mut self, b: &[u8]) -> Result<(), MilterError> {
        Ok(self.s.write_all(b).await?)
    }
    async fn reply(&mut self) -> Result<MReply, MilterError> {
        loop {
            if let Some((r, n)) = milter::decode(&self.buf)? {
                self.buf.drain(..n);
                return Ok(r);
            }
            let mut chunk = [0u8; 8192];
            let n = self.s.read(&mut chunk).await?;
            if n == 0 {
                return Err(MilterError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A final reply to a step, with modifications collected on the way (only
/// end of message carries them).
async fn step_reply(c: &mut Conn, mods: &mut Mods, step: Step) -> Result<MReply, MilterError> {
    loop {
        let r = c.reply().await?;
        match r {
            MReply::Progress => continue,
            MReply::AddHeader { .. } | MReply::InsertHeader { .. } | MReply::ChangeHeader { .. } | MReply::ReplaceBody(_)
                if step == Step::Eom =>
            {
                mods.header_and_body.push(r)
            }
            MReply::AddRcpt { rcpt, .. } if step == Step::Eom => mods.add_rcpt.push(rcpt),
            MReply::DelRcpt(rcpt) if step == Step::Eom => mods.del_rcpt.push(rcpt),
            MReply::ChangeFrom { from, .. } if step == Step::Eom => mods.from = Some(from),
            MReply::Quarantine(reason) if step == Step::Eom => mods.quarantine = Some(reason),
            r if r.is_final() => return Ok(r),
            other => return Err(MilterError::Unexpected(Box::new(other), step.as_str())),
        }
    }
}

/// "550 5.7.1 text" from a milter's SMFIR_REPLYCODE.
fn reply_code(text: &str, default: Reply) -> Reply {
    let mut parts = text.splitn(3, ' ');
    let code: u16 = match parts.next().and_then(|c| c.parse().ok()) {
        Some(c) if (400..600).contains(&c) => c,
        _ => return default,
    };
    // Enhanced codes are static strings in mx6; the ones milters use are known.
    const KNOWN: [&str; 16] = [
        "5.7.0", "5.7.1", "5.7.26", "5.7.25", "5.7.23", "5.1.1", "5.2.0", "5.6.0", "5.5.0", "4.7.0", "4.7.1", "4.7.26", "4.3.0", "4.2.0",
        "4.5.0", "4.6.0",
    ];
    let rest: Vec<&str> = parts.collect();
    let fallback = if code >= 500 { "5.7.1" } else { "4.7.1" };
    let (enhanced, msg) = match rest.as_slice() {
        [e, m] if e.split('.').count() == 3 && e.starts_with(['4', '5']) => match KNOWN.iter().find(|k| *k == e) {
            Some(k) => (*k, m.to_string()),
            None => (fallback, format!("{e} {m}")),
        },
        _ => (fallback, rest.join(" ")),
    };
    Reply::new(code, enhanced, msg.trim().to_string())
}

/// One step of the conversation: the step, its macros, its packets.
type Planned<'a> = (Step, Vec<(&'a str, String)>, Vec<Vec<u8>>);

async fn converse(cfg: &MilterConfig, o: &Origin<'_>, m: &Message) -> Result<Done, MilterError> {
    let mut c = Conn { s: open(&cfg.address).await?, buf: Vec::new() };
    c.send(&milter::optneg()).await?;
    let neg: Negotiated = match c.reply().await? {
        MReply::OptNeg(n) if n.version >= 2 => n,
        MReply::OptNeg(n) => return Err(MilterError::Version(n.version)),
        other => return Err(MilterError::Unexpected(Box::new(other), "optneg")),
    };
    let mut mods = Mods::default();
    let client_name = o.client_name.unwrap_or("unknown").to_string();
    let addr = o.client.to_string();
    let common = |extra: &[(&'static str, String)]| {
        let mut v: Vec<(&str, String)> = vec![("i", o.queue_id.to_string())];
        v.extend(extra.iter().cloned());
        v
    };
    let tls_version = o.tls.and_then(|t| t.split_whitespace().next()).unwrap_or("").to_string();
    let cipher = o.tls.and_then(|t| t.split_whitespace().nth(1)).unwrap_or("").to_string();
    let sender = format!("<{}>", m.from);
    let rcpt_args: Vec<String> = m.rcpts.iter().map(|r| format!("<{r}>")).collect();
    let parsed: Parsed = milter::parse(&m.data);
    let lead = neg.protocol & milter::proto::HDR_LEADSPC != 0;

    // (step, macros, packets)
    let mut steps: Vec<Planned> = vec![
        (
            Step::Connect,
            vec![
                ("j", o.hostname.to_string()),
                ("{daemon_name}", "mx6".into()),
                ("v", "mx6".into()),
                ("_", format!("{client_name} [{addr}]")),
                ("{client_addr}", addr.clone()),
                ("{client_name}", client_name.clone()),
                ("{client_ptr}", client_name.clone()),
                ("{client_port}", o.client_port.to_string()),
                ("{client_resolve}", if o.client_name.is_some() { "OK".into() } else { "FAIL".into() }),
            ],
            vec![milter::connect(
                &client_name,
                match o.client {
                    IpAddr::V4(a) => Peer::Ipv4(a, o.client_port),
                    IpAddr::V6(a) => Peer::Ipv6(a, o.client_port),
                },
            )],
        ),
        (Step::Helo, vec![("{tls_version}", tls_version), ("{cipher}", cipher)], vec![milter::helo(o.helo)]),
        (
            Step::Mail,
            common(&[
                ("{mail_addr}", m.from.clone()),
                ("{mail_mailer}", "esmtp".into()),
                ("{auth_authen}", o.auth.unwrap_or("").to_string()),
                ("{auth_type}", if o.auth.is_some() { "PLAIN".into() } else { String::new() }),
            ]),
            vec![milter::mail(&[&sender])],
        ),
    ];
    for (r, arg) in m.rcpts.iter().zip(&rcpt_args) {
        let host = r.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        steps.push((Step::Rcpt, common(&[("{rcpt_addr}", r.clone()), ("{rcpt_host}", host)]), vec![milter::rcpt(&[arg])]));
    }
    steps.push((Step::Data, common(&[]), vec![milter::data()]));
    for (n, v) in &parsed.headers {
        let v = if lead { format!(" {v}") } else { v.clone() };
        steps.push((Step::Header, Vec::new(), vec![milter::header(n, &v)]));
    }
    steps.push((Step::Eoh, common(&[]), vec![milter::eoh()]));
    let body_chunks: Vec<Vec<u8>> = parsed.body.chunks(milter::CHUNK).map(milter::body).collect();
    for chunk in body_chunks {
        steps.push((Step::Body, Vec::new(), vec![chunk]));
    }
    steps.push((Step::Eom, common(&[]), vec![milter::eom()]));

    let mut skip_body = false;
    for (step, macros, packets) in steps {
        if !neg.wants(step) || (step == Step::Body && skip_body) {
            continue;
        }
        if !macros.is_empty() {
            c.send(&milter::macros(step, &macros)).await?;
        }
        for p in packets {
            c.send(&p).await?;
        }
        if !neg.replies(step) {
            continue;
        }
        let r = step_reply(&mut c, &mut mods, step).await?;
        let verdict = match r {
            MReply::Continue => continue,
            MReply::Skip if step == Step::Body => {
                skip_body = true;
                continue;
            }
            MReply::Accept => "accept",
            MReply::Reject => "reject",
            MReply::Tempfail => "tempfail",
            MReply::Discard => "discard",
            MReply::ReplyCode(text) => {
                let default = if text.starts_with('4') { reply::milter_tempfail() } else { reply::milter_reject() };
                let reply = reply_code(&text, default);
                let v = if reply.code >= 500 { "reject" } else { "tempfail" };
                mods.reply = Some(reply);
                v
            }
            MReply::Shutdown | MReply::ConnFail => "tempfail",
            other => return Err(MilterError::Unexpected(Box::new(other), step.as_str())),
        };
        let _ = c.send(&milter::quit()).await;
        // Accept before end of message: the rest of the message is not looked at.
        let verdict = if verdict == "accept" && mods.quarantine.is_some() { "quarantine" } else { verdict };
        let log = mods.describe();
        return Ok(Done { verdict, mods, log });
    }
    let _ = c.send(&milter::quit()).await;
    // End of message answered `continue` (as `accept`).
    let verdict = if mods.quarantine.is_some() { "quarantine" } else { "continue" };
    let log = mods.describe();
    Ok(Done { verdict, mods, log })
}

/// Remove header fields named `name` (case-insensitive) that a client sent,
/// with their continuation lines.
pub fn strip_field(data: &[u8], name: &str) -> Option<Vec<u8>> {
    let prefix = format!("{name}:");
    mx6_auth::remove_fields(data, |f| f.len() >= prefix.len() && f[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milter_reply_codes() {
        let r = reply_code("550 5.7.0 no thanks", reply::milter_reject());
        assert_eq!((r.code, r.status, r.text()), (550, "5.7.0", "no thanks"));
        let r = reply_code("451 try later", reply::milter_tempfail());
        assert_eq!((r.code, r.status), (451, "4.7.1"));
        assert_eq!(reply_code("junk", reply::milter_reject()).code, 550);
    }

    #[test]
    fn strips_client_fields() {
        let m = b"X-Mx6-Client: forged\r\n\tmore\r\nSubject: x\r\nx-mx6-client: again\r\n\r\nX-Mx6-Client: body\r\n";
        assert_eq!(strip_field(m, "X-Mx6-Client").unwrap(), b"Subject: x\r\n\r\nX-Mx6-Client: body\r\n");
        assert_eq!(strip_field(b"Subject: x\r\n\r\n", "X-Mx6-Client"), None);
    }

    #[test]
    fn tests_are_folded() {
        let t = (0..20).map(|i| format!("RULE_NUMBER_{i}")).collect::<Vec<_>>().join(",");
        assert!(fold_tests(&t).split("\r\n").all(|l| l.len() < 78));
        assert_eq!(fold_tests(""), "none");
    }
}
