//! The `[[milter]]`s of one SMTP session, in order, at every stage: connect,
//! HELO, MAIL, each RCPT, DATA, then at end of data the headers, end of
//! headers, the body in chunks and end of message; ABORT when a transaction
//! is abandoned, QUIT when the session ends. This follows Postfix's milter8
//! client (and Sendmail's), so milters written for them behave the same:
//!
//! - a refusal applies where the milter put it: at connect the session
//!   (a `554` greeting, or `421`), at HELO that command and every later one,
//!   at MAIL or DATA the transaction, at RCPT that recipient only, from the
//!   headers on the message; a `421` reply closes the session;
//! - ACCEPT at connect or HELO takes the milter out of the session, later it
//!   takes it out of the message; DISCARD drops the message (at connect or
//!   HELO it is ignored, as Postfix does); SKIP ends that kind of event for
//!   the message (headers, body chunks);
//! - a milter that fails — cannot be reached, stalls past its `timeout`,
//!   closes the connection, breaks the protocol — gets its `on_failure`:
//!   `accept` takes it out of the session, `tempfail` (451 4.7.1) and
//!   `reject` (550 5.5.0) refuse the stage it failed at and every later one;
//! - the milters see the message one after another, each with the changes
//!   of the ones before it (as Postfix's cleanup does).

use std::sync::Arc;

use mx6_config::{MilterConfig, MilterFailure};
use mx6_filter::milter::{self, Peer, Reply as MReply, Step};
use mx6_smtp::reply::{self, Reply};

use crate::admin::metrics::Metrics;
use crate::content_filter::message::Message;
use crate::content_filter::milter::conn::MilterConn;
use crate::content_filter::milter::error::MilterError;
use crate::content_filter::milter::mods::Mods;

/// What the milters decided at one stage.
#[derive(Debug)]
pub enum Outcome {
    Continue,
    /// Refuse the command (or recipient, or message); a `421` reply ends
    /// the session.
    Refuse {
        reply: Reply,
        reason: &'static str,
        by: String,
    },
    /// Accept the message and drop it.
    Discard {
        by: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Takes part.
    Active,
    /// Accepted the connection, or failed with `on_failure = "accept"`.
    Off,
    /// Accepted (or discarded) the message: not asked again until the next MAIL.
    DoneWithMessage,
    /// Refused at HELO, or failed with tempfail/reject: every later stage
    /// gets this reply.
    Refusing { reply: Reply, reason: &'static str },
}

struct Slot {
    cfg: MilterConfig,
    by: String,
    conn: Option<MilterConn>,
    state: State,
    /// Saw MAIL, and the transaction did not end at its end of message.
    in_tx: bool,
}

/// What a milter said about a stage, before it becomes an [`Outcome`].
enum Said {
    Continue,
    /// Accept: the milter leaves the session (connect, HELO) or the message.
    Accept,
    Refuse(Reply, &'static str),
    Discard,
    Skip,
}

/// A log line about a milter in this session (CONTRACT: session, client, family).
macro_rules! mlog {
    ($level:ident, $m:expr, $i:expr, $($rest:tt)*) => {
        tracing::$level!(session = %$m.session, client = %$m.client, family = $m.family, milter = %$m.slots[$i].cfg.address, $($rest)*)
    };
}

pub struct Milters {
    slots: Vec<Slot>,
    session: String,
    client: std::net::IpAddr,
    /// The macros known so far (`j`, `{client_addr}`, `i`, `{rcpt_addr}`, …).
    known: Vec<(&'static str, String)>,
    hostname: String,
    family: &'static str,
    metrics: Arc<Metrics>,
    /// The message size limit: the largest replacement body taken.
    max_size: usize,
    /// A milter asked to discard the message in progress.
    discard: Option<String>,
}

/// Postfix's `%%` → `%` for Sendmail-style reply texts (single `%` dropped).
fn unpercent(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        if c == '%' {
            if it.peek() == Some(&'%') {
                it.next();
                out.push('%');
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn default_refusal(step: Step, tempfail: bool) -> Reply {
    match (step, tempfail) {
        (Step::Header | Step::Eoh | Step::Body | Step::Eom, false) => reply::milter_reject(),
        (Step::Header | Step::Eoh | Step::Body | Step::Eom, true) => reply::milter_tempfail(),
        (_, false) => reply::milter_command_reject(),
        (_, true) => reply::milter_command_tempfail(),
    }
}

fn reason(r: &Reply) -> &'static str {
    if r.code >= 500 {
        "milter_reject"
    } else {
        "milter_tempfail"
    }
}

impl Milters {
    /// The milters of session `session` with `client` (nothing connects yet).
    pub fn new(
        cfgs: &[MilterConfig],
        session: &str,
        client: std::net::IpAddr,
        hostname: &str,
        metrics: Arc<Metrics>,
        max_size: usize,
    ) -> Milters {
        let family = mx6_policy::Family::of(client).as_str();
        let slots = cfgs
            .iter()
            .map(|c| Slot { cfg: c.clone(), by: format!("milter {}", c.address), conn: None, state: State::Active, in_tx: false })
            .collect();
        Milters {
            slots,
            session: session.to_string(),
            client,
            known: Vec::new(),
            hostname: hostname.to_string(),
            family,
            metrics,
            max_size,
            discard: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Set macro `name` for the steps that follow (an empty value unsets it).
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) {
        let value = value.into();
        match self.known.iter_mut().find(|(k, _)| *k == name) {
            Some(e) => e.1 = value,
            None => self.known.push((name, value)),
        }
    }

    fn count(&self, verdict: &str) {
        self.metrics.content_filter.with_label_values(&[self.family, "milter", verdict]).inc();
    }

    /// A milter failed: its `on_failure` from now on; the refusal it gives now.
    fn failed(&mut self, i: usize, step: Step, e: &MilterError) -> Option<(Reply, &'static str)> {
        self.count("failed");
        mlog!(warn, self, i, step = step.as_str(), error = %e, on_failure = ?self.slots[i].cfg.on_failure, "milter failed");
        let slot = &mut self.slots[i];
        slot.conn = None;
        slot.in_tx = false;
        let (reply, reason) = match slot.cfg.on_failure {
            MilterFailure::Accept => {
                slot.state = State::Off;
                return None;
            }
            MilterFailure::Tempfail => (reply::filter_unavailable(), "content_filter_unavailable"),
            MilterFailure::Reject => (reply::filter_failed_reject(), "milter_reject"),
        };
        slot.state = State::Refusing { reply: reply.clone(), reason };
        Some((reply, reason))
    }

    /// What a final reply means at `step`.
    fn said(&self, step: Step, r: MReply) -> Result<Said, MilterError> {
        let refuse = |reply: Reply| {
            let why = reason(&reply);
            Said::Refuse(reply, why)
        };
        Ok(match r {
            MReply::Continue => Said::Continue,
            MReply::Accept => Said::Accept,
            MReply::Reject => refuse(default_refusal(step, false)),
            MReply::Tempfail => refuse(default_refusal(step, true)),
            MReply::ReplyCode(text) => {
                let text = unpercent(&text);
                let tempfail = text.starts_with('4');
                let status = if tempfail { "4.7.1" } else { "5.7.1" };
                refuse(Reply::custom(&text, status).unwrap_or_else(|| default_refusal(step, tempfail)))
            }
            MReply::Discard => Said::Discard,
            MReply::Skip => Said::Skip,
            MReply::Shutdown => Said::Refuse(reply::milter_shutdown(&self.hostname), "milter_tempfail"),
            other => return Err(MilterError::Unexpected(Box::new(other), step.as_str())),
        })
    }

    /// Send one envelope step to every milter still taking part, in order;
    /// the first refusal ends it.
    async fn envelope(&mut self, step: Step, packet: &[u8]) -> Outcome {
        for i in 0..self.slots.len() {
            if let Some(o) = self.ask(i, step, packet).await {
                return o;
            }
        }
        Outcome::Continue
    }

    /// One milter, one envelope step: `Some` when it refused.
    async fn ask(&mut self, i: usize, step: Step, packet: &[u8]) -> Option<Outcome> {
        let by = self.slots[i].by.clone();
        match &self.slots[i].state {
            State::Off => return None,
            State::DoneWithMessage if !matches!(step, Step::Connect | Step::Helo) => return None,
            State::Refusing { reply, reason } => return Some(Outcome::Refuse { reply: reply.clone(), reason, by }),
            _ => {}
        }
        let conn = self.slots[i].conn.as_mut()?;
        let r = conn.step(step, &self.known, packet, None).await;
        if step == Step::Mail {
            self.slots[i].in_tx = true;
        }
        let said = match r.and_then(|r| r.map(|r| self.said(step, r)).transpose()) {
            Ok(s) => s.unwrap_or(Said::Continue),
            Err(e) => {
                let (reply, reason) = self.failed(i, step, &e)?;
                return Some(Outcome::Refuse { reply, reason, by });
            }
        };
        let session_level = matches!(step, Step::Connect | Step::Helo);
        match said {
            Said::Continue | Said::Skip => None,
            Said::Accept if session_level => {
                self.count("accept");
                self.slots[i].state = State::Off;
                if let Some(mut c) = self.slots[i].conn.take() {
                    let _ = c.send(&milter::quit()).await;
                }
                None
            }
            Said::Accept => {
                self.count("accept");
                self.slots[i].state = State::DoneWithMessage;
                None
            }
            Said::Discard if session_level => {
                mlog!(warn, self, i, step = step.as_str(), "milter asked to discard at connect or HELO; ignored");
                None
            }
            Said::Discard => {
                self.count("discard");
                self.slots[i].state = State::DoneWithMessage;
                self.discard = Some(by);
                None
            }
            Said::Refuse(reply, reason) => {
                self.count(if reply.code >= 500 { "reject" } else { "tempfail" });
                if step == Step::Helo {
                    self.slots[i].state = State::Refusing { reply: reply.clone(), reason };
                }
                if matches!(step, Step::Mail | Step::Data) {
                    self.abort().await;
                }
                Some(Outcome::Refuse { reply, reason, by })
            }
        }
    }

    /// Connect every milter and tell it about the client, one after the
    /// other. A refusal here refuses the session.
    pub async fn connect(&mut self, client_name: &str, peer: Peer) -> Outcome {
        let packet = milter::connect(client_name, peer);
        for i in 0..self.slots.len() {
            let refused = match MilterConn::open(&self.slots[i].cfg).await {
                Ok(c) => {
                    self.slots[i].conn = Some(c);
                    self.ask(i, Step::Connect, &packet).await
                }
                Err(e) => {
                    self.failed(i, Step::Connect, &e).map(|(reply, reason)| Outcome::Refuse { reply, reason, by: self.slots[i].by.clone() })
                }
            };
            if let Some(Outcome::Refuse { reply, reason, by }) = refused {
                self.quit().await;
                return Outcome::Refuse { reply, reason, by };
            }
        }
        Outcome::Continue
    }

    pub async fn helo(&mut self, name: &str) -> Outcome {
        self.envelope(Step::Helo, &milter::helo(name)).await
    }

    /// MAIL: a new transaction (an unfinished one is aborted first).
    pub async fn mail(&mut self, args: &[&str]) -> Outcome {
        self.abort().await;
        self.discard = None;
        for s in &mut self.slots {
            if s.state == State::DoneWithMessage {
                s.state = State::Active;
            }
        }
        self.envelope(Step::Mail, &milter::mail(args)).await
    }

    pub async fn rcpt(&mut self, args: &[&str]) -> Outcome {
        self.envelope(Step::Rcpt, &milter::rcpt(args)).await
    }

    pub async fn data(&mut self) -> Outcome {
        self.envelope(Step::Data, &milter::data()).await
    }

    /// End of data: each milter in turn sees the message as the ones before
    /// it left it — headers, end of headers, body, end of message — and its
    /// modifications are applied to `m`.
    pub async fn message(&mut self, m: &mut Message) -> Outcome {
        if let Some(by) = self.discard.take() {
            self.abort().await;
            return Outcome::Discard { by };
        }
        for i in 0..self.slots.len() {
            match &self.slots[i].state {
                State::Active => {}
                State::Refusing { reply, reason } => {
                    let o = Outcome::Refuse { reply: reply.clone(), reason, by: self.slots[i].by.clone() };
                    self.abort().await;
                    return o;
                }
                State::Off | State::DoneWithMessage => continue,
            }
            let Some(mut conn) = self.slots[i].conn.take() else { continue };
            let mut mods = Mods::new(conn.neg.leadspc(), self.max_size);
            let r = content(&mut conn, &self.known, &m.data, &mut mods).await;
            self.slots[i].conn = Some(conn);
            // A milter that decided before end of message still has the
            // message open on its side: it gets an ABORT.
            let early = matches!(&r, Ok(Some((step, _))) if *step != Step::Eom);
            let said = match r.and_then(|r| r.map(|(step, r)| self.said(step, r)).transpose()) {
                Ok(s) => s.unwrap_or(Said::Continue),
                Err(e) => match self.failed(i, Step::Eom, &e) {
                    None => continue,
                    Some((reply, reason)) => {
                        let by = self.slots[i].by.clone();
                        self.abort().await;
                        return Outcome::Refuse { reply, reason, by };
                    }
                },
            };
            self.slots[i].in_tx = early;
            let by = self.slots[i].by.clone();
            let verdict = match &said {
                Said::Accept | Said::Continue | Said::Skip if mods.quarantined() => "quarantine",
                Said::Accept => "accept",
                Said::Continue | Said::Skip => "continue",
                Said::Discard => "discard",
                Said::Refuse(r, ..) if r.code >= 500 => "reject",
                Said::Refuse(..) => "tempfail",
            };
            self.count(verdict);
            let queue_id = self.known.iter().find(|(k, _)| *k == "i").map(|(_, v)| v.as_str()).unwrap_or("");
            mlog!(info, self, i, queue_id, verdict, changes = %mods.describe(), "milter");
            match said {
                Said::Continue | Said::Skip | Said::Accept => mods.apply(m),
                Said::Discard => {
                    self.abort().await;
                    return Outcome::Discard { by };
                }
                Said::Refuse(reply, reason) => {
                    self.abort().await;
                    return Outcome::Refuse { reply, reason, by };
                }
            }
        }
        Outcome::Continue
    }

    /// The transaction is abandoned (RSET, a new HELO, a refusal): ABORT to
    /// every milter that saw its MAIL and did not finish it.
    pub async fn abort(&mut self) {
        for i in 0..self.slots.len() {
            if !self.slots[i].in_tx {
                continue;
            }
            self.slots[i].in_tx = false;
            if let Some(c) = self.slots[i].conn.as_mut() {
                if let Err(e) = c.send(&milter::abort()).await {
                    self.failed(i, Step::Mail, &e);
                }
            }
        }
    }

    /// The session ends.
    pub async fn quit(&mut self) {
        self.abort().await;
        for s in &mut self.slots {
            if let Some(mut c) = s.conn.take() {
                let _ = c.send(&milter::quit()).await;
            }
        }
    }
}

/// The content steps for one milter: the final reply that ended them early
/// (and at which step), or end of message's.
async fn content(
    c: &mut MilterConn,
    known: &[(&'static str, String)],
    data: &[u8],
    mods: &mut Mods,
) -> Result<Option<(Step, MReply)>, MilterError> {
    let decided = |r: &MReply| !matches!(r, MReply::Continue | MReply::Skip);
    if c.neg.wants(Step::Header) {
        let lead = c.neg.leadspc();
        for f in mx6_message::fields(data) {
            // A line without a colon is no field: kept, but not shown.
            if !f.raw.contains(&b':') {
                continue;
            }
            let packet = milter::header(f.name(), &milter::field_value(f.value(), lead));
            match c.step(Step::Header, known, &packet, None).await? {
                Some(MReply::Skip) => break,
                Some(r) if decided(&r) => return Ok(Some((Step::Header, r))),
                _ => {}
            }
        }
    }
    if let Some(r) = c.step(Step::Eoh, known, &milter::eoh(), None).await? {
        if decided(&r) {
            return Ok(Some((Step::Eoh, r)));
        }
    }
    if c.neg.wants(Step::Body) {
        for chunk in mx6_message::body(data).chunks(milter::CHUNK) {
            match c.step(Step::Body, known, &milter::body(chunk), None).await? {
                Some(MReply::Skip) => break,
                Some(r) if decided(&r) => return Ok(Some((Step::Body, r))),
                _ => {}
            }
        }
    }
    let r = c.step(Step::Eom, known, &milter::eom(), Some(mods)).await?;
    if let Some(q) = c.quarantine.take() {
        mods.take(MReply::Quarantine(q))?;
    }
    Ok(r.map(|r| (Step::Eom, r)))
}
