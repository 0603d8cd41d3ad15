//! One milter conversation per message (the Sendmail milter protocol v6,
//! [`mx6_filter::milter`]): connect, HELO, MAIL, every RCPT, DATA, the headers,
//! the body and end of message are sent at end of data, each with the macros
//! real milters read (`j`, `{daemon_name}`, `_`, `{client_addr}`,
//! `{client_name}`, `{client_port}`, `i`, `{auth_authen}`, `{mail_addr}`,
//! `{rcpt_addr}`, `{tls_version}`, …), honouring the steps and replies the
//! milter negotiated away. A refusal at any step refuses the message; the
//! modifications asked for at end of message are collected in [`Mods`].
//!
//! Defends against: milters that stall (the caller's timeout), break the
//! protocol or reply out of turn (an error, then `on_failure`).

use std::net::IpAddr;
use std::time::Duration;

use mx6_config::MilterConfig;
use mx6_filter::milter::{self, Negotiated, Parsed, Peer, Reply as MReply, Step};
use mx6_smtp::reply::{self, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::content_filter::message::{Message, Origin};
use crate::content_filter::stream::{open, Stream};

#[derive(Debug, thiserror::Error)]
pub enum MilterError {
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
pub struct Mods {
    header_and_body: Vec<MReply>,
    add_rcpt: Vec<String>,
    del_rcpt: Vec<String>,
    from: Option<String>,
    quarantine: Option<String>,
    /// The milter's own reply text for reject/tempfail.
    pub reply: Option<Reply>,
}

impl Mods {
    pub fn apply(self, m: &mut Message) {
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
pub struct Done {
    /// accept, continue, reject, tempfail, discard or quarantine.
    pub verdict: &'static str,
    pub mods: Mods,
    /// The changes it asked for, for the log.
    pub log: String,
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

pub async fn converse(cfg: &MilterConfig, o: &Origin<'_>, m: &Message) -> Result<Done, MilterError> {
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
}
