//! The SMTP server session as a sans-IO state machine (RFC 5321 §4.1, §4.3.2;
//! PIPELINING RFC 2920, CHUNKING RFC 3030, STARTTLS RFC 3207, SIZE RFC 1870,
//! 8BITMIME RFC 6152, SMTPUTF8 RFC 6531, ENHANCEDSTATUSCODES RFC 2034, DSN RFC 3461).
//!
//! Bytes and time go in (`receive`, `handle_timeout`); replies, questions for
//! the policy ("may this recipient be accepted?", "store this message") and
//! connection actions come out of `poll_event`. While a question is open, further
//! input is only buffered, so pipelined commands are answered in order.
//!
//! Defends against: overlong command lines (2048 octets), NUL and bare CR in
//! commands, plaintext pipelined behind STARTTLS (CVE-2011-0411: discarded, the
//! session restarts after the handshake), clients that keep failing (error limit,
//! then 421), idle clients (RFC 5321 §4.5.3.2 timeouts), BDAT chunks that would
//! exceed the size limit (read and discarded, never buffered).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use memchr::memchr;

use crate::address::AddressError;
use crate::address::{Domain, Mailbox, Path};
use crate::command::{self, Command, CommandError, HeloArg, MailParams};
use crate::data::{check_chunked, ContentError, DataDecoder};
use crate::dsn::RcptDsn;
use crate::reply::{self, Reply};

/// Longest command line we read (RFC 5321 §4.5.3.1.4 asks for at least 512;
/// extensions make lines longer, so we allow what Postfix allows).
pub const MAX_COMMAND_LINE: usize = 2048;

/// Longest SASL response line (RFC 4954 §4 asks for at least 12288 octets).
pub const MAX_AUTH_LINE: usize = 12288;

/// Deadlines (RFC 5321 §4.5.3.2), not idle timers: a byte now and then does
/// not keep a session alive.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A whole command line must arrive within this, counted from the end
    /// of the previous one (§4.5.3.2.7: 5 minutes).
    pub command: Duration,
    /// Each block of [`DATA_BLOCK`] octets of message content must arrive
    /// within this (§4.5.3.2.5: 3 minutes), like Postfix's
    /// `smtpd_per_record_deadline`: a minimum rate.
    pub data_block: Duration,
    /// The whole content of one message must arrive within this.
    pub data_total: Duration,
    /// The most a session may last.
    pub session: Duration,
}

/// Message content is timed per block of this many octets.
pub const DATA_BLOCK: u64 = 64 << 10;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            command: Duration::from_secs(300),
            data_block: Duration::from_secs(180),
            data_total: Duration::from_secs(1800),
            session: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name, for the greeting and EHLO.
    pub hostname: String,
    /// The client as an address literal, for the EHLO greeting line.
    pub client_literal: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// Error replies before the session is closed with 421.
    pub max_errors: u32,
    /// STARTTLS may be offered (a certificate exists and the listener allows it).
    pub starttls: bool,
    /// The connection is already TLS (implicit TLS listener).
    pub tls_active: bool,
    /// SMTP AUTH (PLAIN, LOGIN) is offered, but only once TLS is active (RFC 4954 §4,
    /// RFC 8314).
    pub auth: bool,
    /// MAIL needs a successful AUTH first (submission, RFC 6409 §4.3): 530 5.7.0.
    pub require_auth: bool,
    pub timeouts: Timeouts,
    /// Longest text line of message content, without its CRLF
    /// ([`crate::data::MAX_TEXT_LINE`] refuses long lines, [`crate::data::LONG_LINE`] accepts them).
    pub max_line: usize,
    /// `RCPT TO:<postmaster>` (no domain) means postmaster at this domain.
    pub postmaster_domain: String,
}

/// What the driver must do.
#[derive(Debug)]
pub enum Event {
    /// Write this reply.
    Reply(Reply),
    /// A decision is needed; answer with [`Session::answer`].
    Ask(Ask),
    /// Flush pending replies, then run the TLS handshake and call
    /// [`Session::tls_established`].
    StartTls,
    /// Flush pending replies and close the connection.
    Close,
    /// The session itself refused something (for logs and metrics): the stage
    /// (`mail`, `rcpt`, `data`) and a stable reason token.
    Rejected { stage: &'static str, reason: &'static str },
    /// A transaction in progress was abandoned (RSET, a new EHLO or HELO,
    /// STARTTLS): content filters that saw it must forget it (milter ABORT).
    Reset,
}

#[derive(Debug)]
pub enum Ask {
    Helo {
        arg: HeloArg,
        esmtp: bool,
    },
    /// Check SASL credentials (the password must never be logged).
    Auth {
        mechanism: &'static str,
        authzid: String,
        username: String,
        password: String,
    },
    /// `auth` is the authenticated user, if any.
    Mail {
        from: Path,
        params: MailParams,
        auth: Option<String>,
    },
    Rcpt {
        to: Mailbox,
        from: Path,
        /// Its DSN parameters (for milters, which see the RCPT arguments).
        dsn: RcptDsn,
    },
    /// STARTTLS: may this client start a TLS session now (TLS rate limits)?
    StartTls,
    /// DATA, or the first BDAT of a transaction: may the content follow? A
    /// refusal ends the transaction (a BDAT chunk is still read, RFC 3030 §4.2).
    Data,
    /// A complete message: store it durably and answer `Queued(id)` (RFC 5321 §4.1.1.4:
    /// the 250 means we took responsibility).
    Message(Envelope),
}

/// The answer to an [`Ask`].
#[derive(Debug, Clone)]
pub enum Answer {
    Accept,
    Queued(String),
    Reject(Reply),
    /// Reject and close the connection (the reply should be a 421).
    Close(Reply),
}

/// A finished transaction handed to the driver for storage.
#[derive(Debug)]
pub struct Envelope {
    pub from: Path,
    pub params: MailParams,
    pub rcpts: Vec<Mailbox>,
    /// The DSN parameters of each of `rcpts`, in the same order (RFC 3461).
    pub rcpt_dsn: Vec<RcptDsn>,
    pub helo: String,
    /// The authenticated user (RFC 4954).
    pub auth: Option<String>,
    /// RFC 3848 / RFC 6531 "with" keyword (ESMTP, ESMTPSA, UTF8SMTPS, ...).
    pub protocol: &'static str,
    /// Message content: CRLF lines, dot-stuffing removed.
    pub data: Vec<u8>,
}

#[derive(Debug)]
enum State {
    Command,
    /// Reading a line longer than MAX_COMMAND_LINE: discard through the LF.
    LongLine,
    Data(Box<DataDecoder>),
    /// Reading `remaining` octets of a BDAT chunk; `keep` = append to the message;
    /// `reply` = the command failed, answer this once the chunk is read.
    Bdat {
        remaining: u64,
        last: bool,
        keep: bool,
        reply: Option<Reply>,
    },
    /// A question is open.
    Waiting,
    /// STARTTLS answered; waiting for the handshake.
    Handshake,
    /// AUTH PLAIN without an initial response: waiting for it.
    AuthPlain,
    /// AUTH LOGIN: waiting for the user name (`None`) or the password.
    AuthLogin(Option<String>),
    Closed,
}

#[derive(Debug)]
struct Transaction {
    from: Path,
    params: MailParams,
    rcpts: Vec<Mailbox>,
    rcpt_dsn: Vec<RcptDsn>,
    /// DATA or BDAT seen (they can not be mixed).
    chunks: Option<Vec<u8>>,
    /// A BDAT chunk overflowed the size limit: read the rest, then refuse.
    chunk_error: Option<ContentError>,
}

#[derive(Debug)]
enum Pending {
    StartTls,
    Helo {
        arg: HeloArg,
        esmtp: bool,
    },
    Auth {
        username: String,
    },
    Mail {
        from: Path,
        params: MailParams,
    },
    Rcpt {
        to: Mailbox,
        dsn: RcptDsn,
    },
    /// DATA (`None`) or the first BDAT chunk's size and LAST flag.
    Data {
        bdat: Option<(u64, bool)>,
    },
    Message,
}

pub struct Session {
    cfg: SessionConfig,
    state: State,
    input: Vec<u8>,
    pos: usize,
    /// Where [`Session::input_buffer`] last handed the buffer out.
    filled_to: usize,
    events: VecDeque<Event>,
    helo: Option<(String, bool)>,
    tx: Option<Transaction>,
    pending: Option<Pending>,
    tls: bool,
    auth: Option<String>,
    errors: u32,
    /// The time given with the latest input.
    now: Instant,
    started: Instant,
    /// When the wait for the current command line began.
    line_since: Instant,
    /// When the current message's content began, and its current block.
    data_since: Instant,
    block_since: Instant,
    /// Content octets at the start of the current block.
    block_base: u64,
    /// Content octets of the current BDAT transaction so far.
    bdat_consumed: u64,
    /// Greeted with 554: every command but QUIT gets 503 (RFC 5321 §3.1).
    refused: bool,
}

impl Session {
    /// A new session; the greeting is the first event.
    pub fn new(cfg: SessionConfig, now: Instant) -> Session {
        let tls = cfg.tls_active;
        let mut s = Session {
            state: State::Command,
            input: Vec::new(),
            pos: 0,
            filled_to: 0,
            events: VecDeque::new(),
            helo: None,
            tx: None,
            pending: None,
            tls,
            auth: None,
            errors: 0,
            now,
            started: now,
            line_since: now,
            data_since: now,
            block_since: now,
            block_base: 0,
            bdat_consumed: 0,
            refused: false,
            cfg,
        };
        s.events.push_back(Event::Reply(reply::greeting(&s.cfg.hostname)));
        s
    }

    /// A session refused at connect (a milter's reject): greeted with
    /// `greeting` (a 554), it then answers every command but QUIT with 503
    /// (RFC 5321 §3.1) until the client leaves or the error limit ends it.
    pub fn refused(cfg: SessionConfig, greeting: Reply, now: Instant) -> Session {
        let mut s = Session::new(cfg, now);
        s.events.clear();
        s.events.push_back(Event::Reply(greeting));
        s.refused = true;
        s
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether the session is inside a DATA/BDAT transfer (for logs on disconnect).
    pub fn in_message(&self) -> bool {
        matches!(self.state, State::Data(_) | State::Bdat { .. }) || matches!(self.pending, Some(Pending::Message))
    }

    /// The authenticated user, if any.
    pub fn auth_user(&self) -> Option<&str> {
        self.auth.as_deref()
    }

    pub fn helo_name(&self) -> Option<&str> {
        self.helo.as_ref().map(|(h, _)| h.as_str())
    }

    /// When `handle_timeout` must be called, whatever input arrives (these are
    /// deadlines: input that does not complete a line or a block does not
    /// move them).
    pub fn deadline(&self) -> Option<Instant> {
        let t = &self.cfg.timeouts;
        let session = self.started.checked_add(t.session);
        let own = match self.state {
            State::Waiting | State::Handshake | State::Closed => return None,
            State::Data(_) | State::Bdat { .. } => {
                earliest(self.block_since.checked_add(t.data_block), self.data_since.checked_add(t.data_total))
            }
            State::Command | State::LongLine | State::AuthPlain | State::AuthLogin(_) => self.line_since.checked_add(t.command),
        };
        earliest(own, session)
    }

    /// The stage a timeout hits, for the metric.
    fn stage(&self) -> &'static str {
        match (&self.state, &self.tx, &self.helo) {
            (State::Data(_) | State::Bdat { .. }, _, _) => "data",
            (_, Some(_), _) => "rcpt",
            (_, None, Some(_)) => "mail",
            _ => "helo",
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.deadline().is_some_and(|d| now >= d) {
            self.events.push_back(Event::Rejected { stage: self.stage(), reason: "timeout" });
            self.events.push_back(Event::Reply(reply::timeout(&self.cfg.hostname)));
            self.close();
        }
    }

    /// Bytes from the client.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) {
        self.input_buffer(bytes.len()).extend_from_slice(bytes);
        self.received(now);
    }

    /// The session's own input buffer, with room for at least `want` more
    /// octets, for a driver that reads straight into it (no buffer of its
    /// own, no copy); then it calls [`Session::received`]. Only append.
    pub fn input_buffer(&mut self, want: usize) -> &mut Vec<u8> {
        if self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        } else if self.pos > 65536 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.filled_to = self.input.len();
        self.input.reserve(want);
        &mut self.input
    }

    /// What was appended to [`Session::input_buffer`] is taken in.
    pub fn received(&mut self, now: Instant) {
        if matches!(self.state, State::Closed | State::Handshake) {
            // CVE-2011-0411: nothing read before the handshake counts.
            self.input.truncate(self.filled_to);
            return;
        }
        self.now = now;
        self.process();
    }

    /// The driver answers the open question.
    pub fn answer(&mut self, answer: Answer) {
        let Some(pending) = self.pending.take() else { return };
        if !matches!(self.state, State::Waiting) {
            return;
        }
        self.state = State::Command;
        self.line_since = self.now;
        match (pending, answer) {
            (_, Answer::Close(r)) => {
                self.reply(r);
                self.close();
                return;
            }
            (Pending::Message, a) => {
                self.tx = None;
                match a {
                    Answer::Queued(id) => self.reply(reply::queued(&id)),
                    Answer::Reject(r) => self.reply(r),
                    Answer::Accept => self.reply(reply::ok()),
                    Answer::Close(_) => unreachable!(),
                }
            }
            (Pending::Data { bdat }, Answer::Reject(r)) => {
                self.reset_tx();
                match bdat {
                    None => self.reply(r),
                    Some((size, last)) => self.state = State::Bdat { remaining: size, last, keep: false, reply: Some(r) },
                }
            }
            (_, Answer::Reject(r)) => self.reply(r),
            (Pending::Data { bdat: None }, _) => {
                self.events.push_back(Event::Reply(reply::start_data()));
                self.content_starts();
                self.state = State::Data(Box::new(DataDecoder::new(self.cfg.max_message_size, self.cfg.max_line)));
            }
            (Pending::Data { bdat: Some((size, last)) }, _) => self.bdat_accepted(size, last),
            (Pending::Helo { arg, esmtp }, _) => {
                self.reset_tx();
                let r = if esmtp {
                    reply::ehlo(&self.cfg.hostname, &self.cfg.client_literal, &self.extensions())
                } else {
                    reply::helo(&self.cfg.hostname, &self.cfg.client_literal)
                };
                self.helo = Some((arg.raw, esmtp));
                self.reply(r);
            }
            (Pending::StartTls, _) => {
                self.events.push_back(Event::Reply(reply::ready_tls()));
                self.events.push_back(Event::StartTls);
                self.state = State::Handshake;
                // CVE-2011-0411: drop whatever was pipelined behind STARTTLS.
                self.input.clear();
                self.pos = 0;
                return;
            }
            (Pending::Auth { username }, _) => {
                self.auth = Some(username);
                self.reply(reply::auth_ok());
            }
            (Pending::Mail { from, params }, _) => {
                self.tx = Some(Transaction { from, params, rcpts: Vec::new(), rcpt_dsn: Vec::new(), chunks: None, chunk_error: None });
                self.reply(reply::sender_ok());
            }
            (Pending::Rcpt { to, dsn }, _) => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.rcpts.push(to);
                    tx.rcpt_dsn.push(dsn);
                }
                self.reply(reply::recipient_ok());
            }
        }
        self.process();
    }

    /// The TLS handshake after STARTTLS finished: the session starts over
    /// (RFC 3207 §4.2), with anything buffered before it thrown away.
    pub fn tls_established(&mut self) {
        if matches!(self.state, State::Handshake) {
            self.input.clear();
            self.pos = 0;
            self.helo = None;
            self.reset_tx();
            self.auth = None;
            self.tls = true;
            self.state = State::Command;
            self.line_since = self.now;
        }
    }

    fn extensions(&self) -> Vec<String> {
        let mut e = vec![
            "PIPELINING".to_string(),
            format!("SIZE {}", self.cfg.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
            "DSN".into(),
        ];
        if self.cfg.starttls && !self.tls {
            e.push("STARTTLS".into());
        }
        if self.cfg.auth && self.tls {
            e.push("AUTH PLAIN LOGIN".into());
        }
        if self.tls {
            e.push("REQUIRETLS".into());
        }
        e
    }

    /// The "with" keyword for the Received header.
    fn protocol(&self, utf8: bool) -> &'static str {
        let esmtp = self.helo.as_ref().is_some_and(|(_, e)| *e);
        let auth = self.auth.is_some();
        match (utf8, esmtp, self.tls, auth) {
            (true, _, true, true) => "UTF8SMTPSA",
            (true, _, true, false) => "UTF8SMTPS",
            (true, _, false, true) => "UTF8SMTPA",
            (true, _, false, false) => "UTF8SMTP",
            (false, true, true, true) => "ESMTPSA",
            (false, true, true, false) => "ESMTPS",
            (false, true, false, true) => "ESMTPA",
            (false, true, false, false) => "ESMTP",
            (false, false, _, _) => "SMTP",
        }
    }

    fn reply(&mut self, r: Reply) {
        let failed = r.code >= 400;
        self.events.push_back(Event::Reply(r));
        if failed {
            self.errors += 1;
            if self.errors >= self.cfg.max_errors && !self.is_closed() {
                self.events.push_back(Event::Reply(reply::too_many_errors(&self.cfg.hostname)));
                self.close();
            }
        }
    }

    fn close(&mut self) {
        if !self.is_closed() {
            self.state = State::Closed;
            self.events.push_back(Event::Close);
            self.input.clear();
            self.pos = 0;
        }
    }

    fn ask(&mut self, pending: Pending, ask: Ask) {
        self.pending = Some(pending);
        self.state = State::Waiting;
        self.events.push_back(Event::Ask(ask));
    }

    fn process(&mut self) {
        loop {
            let avail = &self.input[self.pos..];
            match &mut self.state {
                State::Closed | State::Waiting | State::Handshake => return,
                State::LongLine => match memchr(b'\n', avail) {
                    Some(i) => {
                        self.pos += i + 1;
                        self.line_since = self.now;
                        self.state = State::Command;
                        self.reply(reply::line_too_long());
                    }
                    None => {
                        self.pos = self.input.len();
                        return;
                    }
                },
                State::Command | State::AuthPlain | State::AuthLogin(_) => {
                    let in_auth = !matches!(self.state, State::Command);
                    let limit = if in_auth { MAX_AUTH_LINE } else { MAX_COMMAND_LINE };
                    let Some(i) = memchr(b'\n', avail) else {
                        if avail.len() > limit {
                            self.pos = self.input.len();
                            self.state = State::LongLine;
                        }
                        return;
                    };
                    let start = self.pos;
                    self.pos += i + 1;
                    self.line_since = self.now;
                    if i + 1 > limit {
                        self.state = State::Command;
                        self.reply(reply::line_too_long());
                        continue;
                    }
                    let end = if i > 0 && self.input[start + i - 1] == b'\r' { start + i - 1 } else { start + i };
                    let line = self.input[start..end].to_vec();
                    if in_auth {
                        self.auth_line(&line);
                    } else {
                        self.command(&line);
                    }
                }
                State::Data(dec) => {
                    let (n, done) = dec.feed(avail);
                    self.pos += n;
                    if dec.consumed - self.block_base >= DATA_BLOCK {
                        self.block_base = dec.consumed;
                        self.block_since = self.now;
                    }
                    if !done {
                        return;
                    }
                    let State::Data(dec) = std::mem::replace(&mut self.state, State::Command) else { unreachable!() };
                    match dec.finish() {
                        Ok(data) => self.message_complete(data),
                        Err(e) => self.content_refused(e),
                    }
                }
                State::Bdat { remaining, last, keep, reply } => {
                    let take = (*remaining).min(avail.len() as u64) as usize;
                    if *keep {
                        if let Some(buf) = self.tx.as_mut().and_then(|t| t.chunks.as_mut()) {
                            buf.extend_from_slice(&avail[..take]);
                        }
                    }
                    *remaining -= take as u64;
                    self.pos += take;
                    self.bdat_consumed += take as u64;
                    if self.bdat_consumed - self.block_base >= DATA_BLOCK {
                        self.block_base = self.bdat_consumed;
                        self.block_since = self.now;
                    }
                    if *remaining > 0 {
                        return;
                    }
                    let (last, r) = (*last, reply.take());
                    self.state = State::Command;
                    self.chunk_done(last, r);
                }
            }
        }
    }

    fn chunk_done(&mut self, last: bool, r: Option<Reply>) {
        if let Some(r) = r {
            self.reply(r);
            return;
        }
        let Some(tx) = self.tx.as_mut() else { return };
        let received = tx.chunks.as_ref().map_or(0, |c| c.len()) as u64;
        if !last {
            if tx.chunk_error.is_none() {
                self.reply(reply::chunk_ok(received));
            } else {
                self.reply(reply::message_too_big());
            }
            return;
        }
        if let Some(e) = tx.chunk_error {
            return self.content_refused(e);
        }
        let data = tx.chunks.take().unwrap_or_default();
        match check_chunked(data, self.cfg.max_line) {
            Ok(data) => self.message_complete(data),
            Err(e) => self.content_refused(e),
        }
    }

    fn content_refused(&mut self, e: ContentError) {
        self.tx = None;
        let reason = match e {
            ContentError::TooBig => "message_too_big",
            ContentError::BareNewline => "bare_newline",
            ContentError::LineTooLong => "line_too_long",
            ContentError::Nul => "nul_byte",
        };
        self.events.push_back(Event::Rejected { stage: "data", reason });
        self.reply(content_reply(e));
    }

    fn message_complete(&mut self, data: Vec<u8>) {
        let Some(tx) = self.tx.take() else { return };
        let protocol = self.protocol(tx.params.smtputf8);
        let env = Envelope {
            from: tx.from,
            params: tx.params,
            rcpts: tx.rcpts,
            rcpt_dsn: tx.rcpt_dsn,
            helo: self.helo.as_ref().map(|(h, _)| h.clone()).unwrap_or_default(),
            auth: self.auth.clone(),
            protocol,
            data,
        };
        self.ask(Pending::Message, Ask::Message(env));
    }

    fn command(&mut self, line: &[u8]) {
        if memchr(0, line).is_some() || memchr(b'\r', line).is_some() {
            self.reply(reply::bad_command_chars());
            return;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            self.reply(reply::syntax("command is not valid UTF-8"));
            return;
        };
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(e) => {
                let r = self.parse_error_reply(line, e);
                self.reply(r);
                return;
            }
        };
        if self.refused {
            match cmd {
                Command::Quit => {
                    let r = reply::closing(&self.cfg.hostname);
                    self.reply(r);
                    self.close();
                }
                _ => self.reply(reply::no_service()),
            }
            return;
        }
        match cmd {
            Command::Ehlo(arg) => self.ask(Pending::Helo { arg: arg.clone(), esmtp: true }, Ask::Helo { arg, esmtp: true }),
            Command::Helo(arg) => self.ask(Pending::Helo { arg: arg.clone(), esmtp: false }, Ask::Helo { arg, esmtp: false }),
            Command::Mail { path, params } => {
                if self.helo.is_none() {
                    self.reply(reply::need_helo());
                } else if self.tx.is_some() {
                    self.reply(reply::nested_mail());
                } else if self.cfg.require_auth && self.auth.is_none() {
                    self.reply(reply::auth_required());
                } else if params.size.is_some_and(|s| s > self.cfg.max_message_size as u64) {
                    self.events.push_back(Event::Rejected { stage: "mail", reason: "message_too_big" });
                    self.reply(reply::message_too_big());
                } else if params.requiretls && !self.tls {
                    self.reply(reply::requiretls_needs_tls());
                } else {
                    let auth = self.auth.clone();
                    self.ask(Pending::Mail { from: path.clone(), params: params.clone() }, Ask::Mail { from: path, params, auth });
                }
            }
            Command::RcptPostmaster { dsn } => {
                let to = Mailbox { local: "postmaster".into(), domain: Domain::Name(self.cfg.postmaster_domain.clone()) };
                self.rcpt(to, dsn);
            }
            Command::Rcpt { path, dsn } => {
                let Some(to) = path.mailbox else {
                    if self.tx.is_none() {
                        let r = if self.helo.is_none() { reply::need_helo() } else { reply::need_mail() };
                        return self.reply(r);
                    }
                    return self.reply(reply::bad_address("empty recipient"));
                };
                self.rcpt(to, dsn);
            }
            Command::Data => match self.tx.as_ref() {
                None if self.helo.is_none() => self.reply(reply::need_helo()),
                None => self.reply(reply::need_mail()),
                Some(tx) if tx.chunks.is_some() => self.reply(reply::bdat_data_mix()),
                Some(tx) if tx.rcpts.is_empty() => self.reply(reply::no_valid_recipients()),
                Some(_) => self.ask(Pending::Data { bdat: None }, Ask::Data),
            },
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.reset_tx();
                self.reply(reply::reset_ok());
            }
            Command::Noop => self.reply(reply::ok()),
            Command::Quit => {
                let r = reply::closing(&self.cfg.hostname);
                self.reply(r);
                self.close();
            }
            Command::Vrfy => self.reply(reply::vrfy()),
            Command::Help => self.reply(reply::help()),
            Command::StartTls => {
                if self.tls {
                    self.reply(reply::tls_already_active());
                } else if !self.cfg.starttls {
                    self.reply(reply::tls_not_available());
                } else if self.helo.is_none() {
                    self.reply(reply::need_helo());
                } else {
                    self.ask(Pending::StartTls, Ask::StartTls);
                }
            }
            Command::Auth(arg) => self.auth_command(&arg),
            Command::NotSmtp => {
                let r = reply::not_smtp(&self.cfg.hostname);
                self.events.push_back(Event::Reply(r));
                self.close();
            }
        }
    }

    fn rcpt(&mut self, to: Mailbox, dsn: RcptDsn) {
        let Some(tx) = self.tx.as_ref() else {
            let r = if self.helo.is_none() { reply::need_helo() } else { reply::need_mail() };
            return self.reply(r);
        };
        if tx.chunks.is_some() {
            self.reply(reply::need_rcpt());
        } else if !tx.params.smtputf8 && !to.is_ascii() {
            self.reply(reply::needs_smtputf8());
        } else if tx.rcpts.len() >= self.cfg.max_recipients {
            self.events.push_back(Event::Rejected { stage: "rcpt", reason: "too_many_recipients" });
            self.reply(reply::too_many_recipients());
        } else {
            let from = tx.from.clone();
            self.ask(Pending::Rcpt { to: to.clone(), dsn: dsn.clone() }, Ask::Rcpt { to, from, dsn });
        }
    }

    /// `AUTH mechanism [initial-response]` (RFC 4954 §4).
    fn auth_command(&mut self, arg: &str) {
        if !self.cfg.auth {
            return self.reply(reply::auth_not_available());
        }
        if !self.tls {
            return self.reply(reply::auth_encryption_required());
        }
        if self.helo.is_none() {
            return self.reply(reply::need_helo());
        }
        if self.auth.is_some() {
            return self.reply(reply::auth_already());
        }
        if self.tx.is_some() {
            return self.reply(reply::auth_in_transaction());
        }
        let mut parts = arg.split(' ').filter(|p| !p.is_empty());
        let mech = parts.next().unwrap_or("").to_ascii_uppercase();
        // RFC 4954 §4: "=" is an initial response of zero length.
        let initial = parts.next().map(|r| if r == "=" { "" } else { r });
        if parts.next().is_some() {
            return self.reply(reply::syntax("AUTH mechanism [initial-response]"));
        }
        match (mech.as_str(), initial) {
            ("PLAIN", None) => {
                self.events.push_back(Event::Reply(reply::auth_challenge("")));
                self.state = State::AuthPlain;
            }
            ("PLAIN", Some(resp)) => self.auth_plain(resp.as_bytes()),
            ("LOGIN", None) => {
                self.events.push_back(Event::Reply(reply::auth_challenge("VXNlcm5hbWU6")));
                self.state = State::AuthLogin(None);
            }
            ("LOGIN", Some(resp)) => match decode_b64(resp.as_bytes()) {
                Some(user) => {
                    self.events.push_back(Event::Reply(reply::auth_challenge("UGFzc3dvcmQ6")));
                    self.state = State::AuthLogin(Some(user));
                }
                None => self.reply(reply::auth_bad_base64()),
            },
            _ => self.reply(reply::auth_mechanism()),
        }
    }

    /// A client response line inside an AUTH exchange.
    fn auth_line(&mut self, line: &[u8]) {
        let state = std::mem::replace(&mut self.state, State::Command);
        if line == b"*" {
            return self.reply(reply::auth_cancelled());
        }
        match state {
            State::AuthPlain => self.auth_plain(line),
            State::AuthLogin(None) => match decode_b64(line) {
                Some(user) => {
                    self.events.push_back(Event::Reply(reply::auth_challenge("UGFzc3dvcmQ6")));
                    self.state = State::AuthLogin(Some(user));
                }
                None => self.reply(reply::auth_bad_base64()),
            },
            State::AuthLogin(Some(user)) => match decode_b64(line) {
                // A NUL is no part of a name or a password (found by fuzzing:
                // LOGIN decodes to any bytes).
                Some(_) if user.contains('\0') => self.reply(reply::auth_invalid()),
                Some(password) => {
                    let ask = Ask::Auth { mechanism: "LOGIN", authzid: String::new(), username: user.clone(), password };
                    self.ask(Pending::Auth { username: user }, ask);
                }
                None => self.reply(reply::auth_bad_base64()),
            },
            other => self.state = other,
        }
    }

    /// RFC 4616: `authzid NUL authcid NUL passwd`.
    fn auth_plain(&mut self, b64: &[u8]) {
        let Some(text) = decode_b64(b64) else { return self.reply(reply::auth_bad_base64()) };
        let mut parts = text.splitn(3, '\0');
        let (Some(authzid), Some(username), Some(password)) = (parts.next(), parts.next(), parts.next()) else {
            return self.reply(reply::auth_invalid());
        };
        if !authzid.is_empty() && authzid != username {
            // Acting for another identity is not supported.
            return self.reply(reply::auth_invalid());
        }
        let ask =
            Ask::Auth { mechanism: "PLAIN", authzid: authzid.to_string(), username: username.to_string(), password: password.to_string() };
        self.ask(Pending::Auth { username: username.to_string() }, ask);
    }

    /// Abandon the transaction in progress, if there is one.
    fn reset_tx(&mut self) {
        if self.tx.take().is_some() {
            self.events.push_back(Event::Reset);
        }
    }

    /// The deadlines of message content start now.
    fn content_starts(&mut self) {
        self.data_since = self.now;
        self.block_since = self.now;
        self.block_base = 0;
        self.bdat_consumed = 0;
    }

    fn bdat(&mut self, size: u64, last: bool) {
        let early = match self.tx.as_ref() {
            None if self.helo.is_none() => Some(reply::need_helo()),
            None => Some(reply::need_mail()),
            Some(tx) if tx.rcpts.is_empty() => Some(reply::no_valid_recipients()),
            Some(_) => None,
        };
        if let Some(r) = early {
            // RFC 3030 §4.2: the chunk is read even when the command fails.
            self.state = State::Bdat { remaining: size, last, keep: false, reply: Some(r) };
            return;
        }
        if self.tx.as_ref().is_some_and(|t| t.chunks.is_none()) {
            self.ask(Pending::Data { bdat: Some((size, last)) }, Ask::Data);
            return;
        }
        // Between chunks the command line is timed; the block goes on.
        self.block_since = self.block_since.max(self.line_since);
        self.bdat_chunk(size, last);
    }

    /// The first chunk of a transaction may follow.
    fn bdat_accepted(&mut self, size: u64, last: bool) {
        self.content_starts();
        self.bdat_chunk(size, last);
    }

    fn bdat_chunk(&mut self, size: u64, last: bool) {
        let max = self.cfg.max_message_size as u64;
        let Some(tx) = self.tx.as_mut() else { return };
        let have = tx.chunks.get_or_insert_with(Vec::new).len() as u64;
        let keep = tx.chunk_error.is_none() && have.saturating_add(size) <= max;
        if !keep {
            tx.chunk_error = Some(ContentError::TooBig);
            tx.chunks = Some(Vec::new());
        } else if let Some(c) = tx.chunks.as_mut() {
            c.reserve(size as usize);
        }
        self.state = State::Bdat { remaining: size, last, keep, reply: None };
    }

    fn parse_error_reply(&self, line: &str, e: CommandError) -> Reply {
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        match e {
            CommandError::Unknown => reply::unknown_command(),
            CommandError::Syntax(s) if verb == "EHLO" || verb == "HELO" => {
                let _ = s;
                reply::bad_helo()
            }
            CommandError::Syntax(s) => reply::syntax(s),
            CommandError::Parameter(p) => reply::bad_parameter(&p),
            CommandError::Address(AddressError::NeedsUtf8) => reply::needs_smtputf8(),
            CommandError::Address(a) if verb == "MAIL" => reply::bad_sender_syntax(&a.to_string()),
            CommandError::Address(a) => reply::bad_address(&a.to_string()),
        }
    }
}

/// The earlier of two deadlines (`None`: never).
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Base64 (RFC 4648) to UTF-8 text; `None` when either fails.
fn decode_b64(b: &[u8]) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b.trim_ascii()).ok()?;
    String::from_utf8(bytes).ok()
}

fn content_reply(e: ContentError) -> Reply {
    match e {
        ContentError::TooBig => reply::message_too_big(),
        ContentError::BareNewline => reply::bare_newline(),
        ContentError::LineTooLong => reply::data_line_too_long(),
        ContentError::Nul => reply::nul_in_data(),
    }
}
