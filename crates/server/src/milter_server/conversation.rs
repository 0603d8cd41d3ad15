//! One MTA connection to `mx6 milter`: OPTNEG, then the commands of one SMTP
//! session after another (`SMFIC_QUIT_NC` keeps the connection for the
//! next), each answered unless it is a macro, an abort, or a step the MTA
//! was told not to wait for.
//!
//! Negotiated: only the steps the judgement needs — connect, HELO, MAIL,
//! the headers and the body — with `SMFIP_NORCPT`, `SMFIP_NODATA`,
//! `SMFIP_NOUNKNOWN`, no replies to connect, HELO and headers (`SMFIP_NR_*`)
//! and values with their leading space (`SMFIP_HDR_LEADSPC`), each only when
//! the MTA offers it; actions: add and change headers.
//!
//! Defends against: a packet that breaks the protocol (that connection is
//! closed, no other), a message larger than `limits.message_size` (the rest
//! is not kept; it passes unjudged, as the MTA has its own limit), an MTA
//! that goes silent (the connection is dropped after 10 minutes).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mx6_filter::milter::{self, action, decode_command, encode_reply, proto, Command, Negotiated, Reply as MReply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::checks::inbound::{ClientCheck, Transaction};
use crate::milter_server::judge::{reply_code, Judge, Sender};

/// How long an MTA may stay silent inside a connection.
const IDLE: Duration = Duration::from_secs(600);

/// The steps and behaviours asked for, of those the MTA offers.
const WANTED: u32 = proto::NORCPT | proto::NODATA | proto::NOUNKNOWN | proto::NR_CONN | proto::NR_HELO | proto::NR_HDR | proto::HDR_LEADSPC;

#[derive(Default)]
struct Session {
    macros: HashMap<String, String>,
    ip: Option<IpAddr>,
    check: Option<ClientCheck>,
    helo: String,
    sender: Option<Sender>,
    txn: Option<Transaction>,
    /// A refusal at MAIL: nothing more to judge in this transaction.
    refused: bool,
    message: Vec<u8>,
    body_started: bool,
    too_big: bool,
}

impl Session {
    fn reset_message(&mut self) {
        self.sender = None;
        self.txn = None;
        self.refused = false;
        self.message.clear();
        self.body_started = false;
        self.too_big = false;
    }

    fn macro_value(&self, name: &str) -> Option<&str> {
        self.macros.get(name.trim_matches(['{', '}'])).map(String::as_str).filter(|v| !v.is_empty())
    }
}

struct Conn<S> {
    s: S,
    buf: Vec<u8>,
    protocol: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    async fn command(&mut self) -> Option<Command> {
        loop {
            match decode_command(&self.buf) {
                Ok(Some((c, n))) => {
                    self.buf.drain(..n);
                    return Some(c);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::info!(error = %e, "milter: connection closed");
                    return None;
                }
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout(IDLE, self.s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    async fn send(&mut self, r: &MReply) -> bool {
        self.s.write_all(&encode_reply(r)).await.is_ok()
    }

    fn leadspc(&self) -> bool {
        self.protocol & proto::HDR_LEADSPC != 0
    }

    fn replies(&self, nr: u32) -> bool {
        self.protocol & nr == 0
    }
}

/// Serve one MTA connection until it quits, breaks the protocol or goes.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(stream: S, judge: Arc<Judge>) {
    let mut c = Conn { s: stream, buf: Vec::new(), protocol: 0 };
    let mut sess = Session::default();
    while let Some(cmd) = c.command().await {
        let reply = match cmd {
            Command::OptNeg { version, actions, protocol } => {
                if version < 2 {
                    tracing::info!(version, "milter: MTA protocol version too old; connection closed");
                    return;
                }
                c.protocol = WANTED & protocol;
                let actions = (action::ADDHDRS | action::CHGHDRS) & actions;
                Some(MReply::OptNeg(Negotiated {
                    version: version.min(milter::VERSION),
                    actions,
                    protocol: c.protocol,
                    macros: Vec::new(),
                }))
            }
            Command::Macro { pairs, .. } => {
                for (k, v) in pairs {
                    sess.macros.insert(k.trim_matches(['{', '}']).to_string(), v);
                }
                None
            }
            Command::Connect { addr, .. } => {
                sess.ip = addr.map(mx6_policy::prefix::canonical);
                sess.check = sess.ip.map(|ip| ClientCheck::start(&judge.inbound, ip));
                c.replies(proto::NR_CONN).then_some(MReply::Continue)
            }
            Command::Helo(name) => {
                sess.helo = name;
                c.replies(proto::NR_HELO).then_some(MReply::Continue)
            }
            Command::Mail(args) => {
                sess.reset_message();
                Some(mail(&judge, &mut sess, &args).await)
            }
            Command::Rcpt(_) | Command::Data | Command::Unknown(_) | Command::Eoh => Some(MReply::Continue),
            Command::Header { name, value } => {
                if !sess.too_big {
                    sess.message.extend_from_slice(&milter::milter_field(&name, &value, c.leadspc()));
                    sess.too_big = sess.message.len() > judge.max_size;
                }
                c.replies(proto::NR_HDR).then_some(MReply::Continue)
            }
            Command::Body(chunk) => {
                if !sess.body_started {
                    sess.message.extend_from_slice(b"\r\n");
                    sess.body_started = true;
                }
                if !sess.too_big {
                    sess.message.extend_from_slice(&chunk);
                    sess.too_big = sess.message.len() > judge.max_size;
                }
                Some(MReply::Continue)
            }
            Command::Eom => {
                if !sess.body_started {
                    sess.message.extend_from_slice(b"\r\n");
                }
                let replies = end_of_message(&judge, &mut sess, c.leadspc()).await;
                let (last, mods) = replies.split_last().expect("a final reply");
                for m in mods {
                    if !c.send(m).await {
                        return;
                    }
                }
                sess.reset_message();
                Some(last.clone())
            }
            Command::Abort => {
                sess.reset_message();
                None
            }
            Command::QuitNewConnection => {
                sess = Session::default();
                None
            }
            Command::Quit => return,
        };
        if let Some(r) = reply {
            if !c.send(&r).await {
                return;
            }
        }
    }
}

async fn mail(judge: &Judge, sess: &mut Session, args: &[String]) -> MReply {
    let Some(ip) = sess.ip else { return MReply::Continue };
    let address = args.first().map(|a| a.trim().trim_start_matches('<').trim_end_matches('>').to_string()).unwrap_or_default();
    let who = Sender {
        ip,
        helo: sess.helo.clone(),
        address,
        auth_user: sess.macro_value("auth_authen").map(str::to_string),
        mynetworks: mx6_policy::prefix::contains_any(&judge.mynetworks, ip),
    };
    let facts = match sess.check.as_mut() {
        Some(c) => c.get().await.cloned().unwrap_or_default(),
        None => Default::default(),
    };
    let r = match judge.mail(&who, &facts).await {
        Ok(txn) => {
            sess.txn = txn;
            MReply::Continue
        }
        Err(reply) => {
            sess.refused = true;
            reply_code(&reply)
        }
    };
    sess.sender = Some(who);
    r
}

/// The changes and the final reply for the message.
async fn end_of_message(judge: &Judge, sess: &mut Session, leadspc: bool) -> Vec<MReply> {
    let Some(who) = sess.sender.clone() else { return vec![MReply::Continue] };
    if sess.refused {
        return vec![MReply::Continue];
    }
    if sess.too_big {
        tracing::info!(client = %who.ip, size_over = judge.max_size, "milter: message over limits.message_size passed unjudged");
        return vec![MReply::Continue];
    }
    let queue_id = sess.macro_value("i").unwrap_or("").to_string();
    let facts = match sess.check.as_mut() {
        Some(c) => c.get().await.cloned(),
        None => None,
    };
    match judge.message(&who, facts.as_ref(), sess.txn.as_ref(), &sess.message, &queue_id).await {
        Ok(mut mods) => {
            if !leadspc {
                for m in &mut mods {
                    if let MReply::InsertHeader { value, .. } = m {
                        if value.first() == Some(&b' ') {
                            value.remove(0);
                        }
                    }
                }
            }
            mods.push(MReply::Continue);
            mods
        }
        Err(reply) => vec![reply_code(&reply)],
    }
}
