//! The SMTP (RFC 5321) and LMTP (RFC 2033) client as a state machine without
//! I/O: server bytes in ([`Client::receive`]), actions out ([`Client::poll`]:
//! bytes to send, "start TLS now", or the outcome).
//!
//! Speaks EHLO (LHLO for LMTP), STARTTLS (RFC 3207; opportunistic or required),
//! AUTH PLAIN/LOGIN (RFC 4954, only inside TLS), PIPELINING (RFC 2920: MAIL,
//! every RCPT and DATA in one write), SIZE (RFC 1870), 8BITMIME (RFC 6152) and
//! SMTPUTF8 (RFC 6531: a message that needs it is not sent to a server without
//! it) and DSN (RFC 3461: the sender's RET, ENVID, NOTIFY and ORCPT are passed
//! on to a server that offers it; [`Outcome::dsn`] says whether it did). Every recipient gets its own result; with LMTP, one reply per accepted
//! recipient after the data (RFC 2033 §4.2).
//!
//! Defends against: servers that send endless or malformed replies (bounded
//! reply size, a malformed reply ends the session as a temporary failure).

use base64::Engine as _;

/// Most bytes of one reply (all its lines).
const MAX_REPLY: usize = 64 * 1024;

/// A reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    pub code: u16,
    /// Text lines without the code.
    pub lines: Vec<String>,
}

impl ServerReply {
    fn local(code: u16, text: &str) -> ServerReply {
        ServerReply { code, lines: vec![text.to_string()] }
    }
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
    /// One line for logs and DSNs: `550 5.7.1 text`.
    pub fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" "))
    }
    /// The enhanced status code at the start of the first line, if any.
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?.split_whitespace().next()?;
        let ok = first.split('.').count() == 3 && first.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        ok.then_some(first)
    }
    /// The RFC 3463 status for a DSN: the enhanced code, else the class default.
    pub fn status(&self) -> String {
        match self.enhanced() {
            Some(s) => s.to_string(),
            None if self.code < 500 => "4.0.0".into(),
            None => "5.0.0".into(),
        }
    }

    /// A refusal of IPv6 senders as such (Gmail 550 5.7.25 no PTR, 5.7.26
    /// unauthenticated, "IPv6 sending guidelines"; Microsoft 5.2.1 "does not
    /// accept email over IPv6"): worth retrying the same host over IPv4 at once.
    pub fn refuses_ipv6(&self) -> bool {
        if self.code < 400 {
            return false;
        }
        let t = self.lines.join(" ").to_ascii_lowercase();
        matches!(self.enhanced(), Some("5.7.25" | "4.7.25" | "5.7.26" | "4.7.26"))
            || t.contains("ipv6 sending guidelines")
            || (t.contains("ipv6") && (t.contains("not accept") || t.contains("does not accept") || t.contains("ptr")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Use STARTTLS when offered (RFC 3207 opportunistic).
    Opportunistic,
    /// Fail (temporarily) when STARTTLS is not offered or fails.
    Required,
    /// Never (after a failed TLS attempt, the retry in clear text).
    Off,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Our name for EHLO/LHLO.
    pub hostname: String,
    pub tls: TlsPolicy,
    /// AUTH credentials (relayhost); sent only inside TLS.
    pub auth: Option<(String, String)>,
    pub lmtp: bool,
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// Reverse path without brackets; empty for the null sender.
    pub from: String,
    pub rcpts: Vec<String>,
    pub size: usize,
    pub eight_bit: bool,
    pub smtputf8: bool,
    /// The sender's DSN parameters, passed on when the server offers DSN.
    pub dsn: crate::dsn::MailDsn,
    /// One per recipient (or empty: none given).
    pub rcpt_dsn: Vec<crate::dsn::RcptDsn>,
    /// RFC 8689: the message goes only to a server that offers REQUIRETLS,
    /// under TLS, and the parameter goes with it.
    pub requiretls: bool,
}

/// The result for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    Delivered(ServerReply),
    /// Try again later.
    Deferred(ServerReply),
    Failed(ServerReply),
}

impl RcptResult {
    fn from_reply(r: ServerReply) -> RcptResult {
        if r.is_positive() {
            RcptResult::Delivered(r)
        } else if r.is_permanent() {
            RcptResult::Failed(r)
        } else {
            RcptResult::Deferred(r)
        }
    }
    pub fn reply(&self) -> &ServerReply {
        match self {
            RcptResult::Delivered(r) | RcptResult::Deferred(r) | RcptResult::Failed(r) => r,
        }
    }
}

/// What the session achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// One per recipient of the transaction, in order.
    pub rcpts: Vec<RcptResult>,
    /// TLS was used.
    pub tls: bool,
    /// The server's name from its EHLO reply.
    pub server_name: String,
    /// The server offered DSN, so the DSN parameters went with the
    /// transaction and notices of success are its business (RFC 3461 §5.2.2).
    pub dsn: bool,
    /// The server offered STARTTLS (RFC 3207) in its first EHLO reply.
    pub starttls_offered: bool,
}

/// The next thing the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Vec<u8>),
    /// Send the pending bytes, then do the TLS handshake and call [`Client::tls_established`].
    StartTls,
    /// Send pending bytes, then close.
    Done(Outcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    AuthLogin(u8),
    /// Waiting for the replies to MAIL, RCPTs and DATA (pipelined or not).
    Envelope,
    Data,
    Finished,
}

pub struct Client {
    cfg: ClientConfig,
    txn: Transaction,
    state: State,
    buf: Vec<u8>,
    lines: Vec<String>,
    actions: std::collections::VecDeque<Action>,
    ext: Vec<String>,
    tls: bool,
    starttls_offered: bool,
    server_name: String,
    /// Envelope replies expected, in order: MAIL, RCPT×n, DATA.
    expected: usize,
    got: Vec<ServerReply>,
    pipelined: bool,
    /// The server offered DSN (known once MAIL is sent).
    dsn: bool,
    /// Recipient results so far; `None` = undecided.
    results: Vec<Option<RcptResult>>,
    /// LMTP: indexes of accepted recipients still waiting for their final reply.
    lmtp_waiting: Vec<usize>,
    body: Option<Vec<u8>>,
}

impl Client {
    /// `body`: the message as stored (CRLF lines, not dot-stuffed).
    pub fn new(cfg: ClientConfig, txn: Transaction, body: Vec<u8>) -> Client {
        let n = txn.rcpts.len();
        Client {
            cfg,
            txn,
            state: State::Greeting,
            buf: Vec::new(),
            lines: Vec::new(),
            actions: Default::default(),
            ext: Vec::new(),
            tls: false,
            server_name: String::new(),
            expected: 0,
            got: Vec::new(),
            pipelined: false,
            dsn: false,
            starttls_offered: false,
            results: vec![None; n],
            lmtp_waiting: Vec::new(),
            body: Some(body),
        }
    }

    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// The connection ended or timed out before the outcome: every undecided
    /// recipient is deferred with `why`.
    /// Stop here with `reply` as the answer of every open recipient (a TLS
    /// peer that failed verification: `4.7.5`).
    pub fn refuse(&mut self, reply: ServerReply) -> Outcome {
        self.state = State::Finished;
        self.outcome_with(reply)
    }

    pub fn abort(&mut self, why: &str) -> Outcome {
        self.state = State::Finished;
        self.outcome_with(ServerReply::local(451, &format!("4.4.2 {why}")))
    }

    /// After the TLS handshake: EHLO again (RFC 3207 §4.2).
    pub fn tls_established(&mut self) {
        self.tls = true;
        self.ext.clear();
        self.state = State::Ehlo;
        self.send(format!("{} {}\r\n", self.hello(), self.cfg.hostname));
    }

    pub fn receive(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
            if self.state == State::Finished {
                return;
            }
            let (code, more, text) = match parse_line(&line) {
                Some(p) => p,
                None => {
                    let o = self.abort("malformed reply from the server");
                    self.actions.push_back(Action::Done(o));
                    return;
                }
            };
            self.lines.push(text);
            if self.lines.iter().map(String::len).sum::<usize>() > MAX_REPLY {
                let o = self.abort("reply from the server too long");
                self.actions.push_back(Action::Done(o));
                return;
            }
            if !more {
                let r = ServerReply { code, lines: std::mem::take(&mut self.lines) };
                self.on_reply(r);
            }
        }
        if self.buf.len() > MAX_REPLY {
            let o = self.abort("reply line from the server too long");
            self.actions.push_back(Action::Done(o));
        }
    }

    fn hello(&self) -> &'static str {
        if self.cfg.lmtp {
            "LHLO"
        } else {
            "EHLO"
        }
    }

    fn send(&mut self, s: String) {
        self.actions.push_back(Action::Send(s.into_bytes()));
    }

    fn has(&self, ext: &str) -> bool {
        self.ext.iter().any(|e| e.split_whitespace().next().is_some_and(|k| k.eq_ignore_ascii_case(ext)))
    }

    /// Every undecided recipient gets `r` (as deferred or failed by its code).
    fn outcome_with(&mut self, r: ServerReply) -> Outcome {
        let rcpts = self.results.iter().map(|x| x.clone().unwrap_or_else(|| RcptResult::from_reply(r.clone()))).collect();
        Outcome { rcpts, tls: self.tls, server_name: self.server_name.clone(), dsn: self.dsn, starttls_offered: self.starttls_offered }
    }

    /// End the session: QUIT, then the outcome.
    fn finish(&mut self, fill: ServerReply) {
        let o = self.outcome_with(fill);
        self.send("QUIT\r\n".into());
        self.state = State::Finished;
        self.actions.push_back(Action::Done(o));
    }

    fn on_reply(&mut self, r: ServerReply) {
        match self.state {
            State::Greeting => {
                if r.code != 220 {
                    return self.finish(r);
                }
                self.state = State::Ehlo;
                self.send(format!("{} {}\r\n", self.hello(), self.cfg.hostname));
            }
            State::Ehlo => {
                if r.code != 250 {
                    return self.finish(r);
                }
                self.server_name = r.lines.first().and_then(|l| l.split_whitespace().next()).unwrap_or("").to_string();
                self.ext = r.lines.iter().skip(1).cloned().collect();
                if !self.tls && self.has("STARTTLS") {
                    self.starttls_offered = true;
                }
                if !self.tls && self.cfg.tls != TlsPolicy::Off && self.has("STARTTLS") {
                    self.state = State::StartTls;
                    return self.send("STARTTLS\r\n".into());
                }
                if !self.tls && self.cfg.tls == TlsPolicy::Required {
                    return self.finish(ServerReply::local(451, "4.7.10 the server does not offer STARTTLS, which is required"));
                }
                self.after_hello();
            }
            State::StartTls => {
                if r.code == 220 {
                    self.actions.push_back(Action::StartTls);
                } else if self.cfg.tls == TlsPolicy::Required {
                    self.finish(r);
                } else {
                    self.after_hello();
                }
            }
            State::Auth => {
                if r.code == 235 {
                    self.mail();
                } else {
                    self.finish(r);
                }
            }
            State::AuthLogin(step) => {
                let (user, pass) = self.cfg.auth.clone().unwrap_or_default();
                match (step, r.code) {
                    (0, 334) => {
                        self.state = State::AuthLogin(1);
                        self.send(format!("{}\r\n", b64(user.as_bytes())));
                    }
                    (1, 334) => {
                        self.state = State::AuthLogin(2);
                        self.send(format!("{}\r\n", b64(pass.as_bytes())));
                    }
                    (2, 235) => self.mail(),
                    _ => self.finish(r),
                }
            }
            State::Envelope => self.on_envelope_reply(r),
            State::Data => self.on_data_reply(r),
            State::Finished => {}
        }
    }

    fn after_hello(&mut self) {
        if self.txn.smtputf8 && !self.has("SMTPUTF8") {
            return self.finish(ServerReply::local(550, "5.6.7 the message needs SMTPUTF8, which the server does not offer"));
        }
        if let Some(max) = self.ext.iter().find_map(|e| {
            let mut p = e.split_whitespace();
            (p.next()?.eq_ignore_ascii_case("SIZE")).then(|| p.next()?.parse::<usize>().ok()).flatten()
        }) {
            if max > 0 && self.txn.size > max {
                return self
                    .finish(ServerReply::local(552, &format!("5.3.4 the message is larger than the server's limit of {max} octets")));
            }
        }
        if let Some((user, pass)) = self.cfg.auth.clone() {
            if !self.tls {
                return self.finish(ServerReply::local(451, "4.7.10 AUTH credentials are never sent without TLS"));
            }
            let mechs: Vec<String> = self
                .ext
                .iter()
                .filter(|e| e.to_ascii_uppercase().starts_with("AUTH"))
                .flat_map(|e| e.split_whitespace().skip(1).map(str::to_ascii_uppercase).collect::<Vec<_>>())
                .collect();
            if mechs.iter().any(|m| m == "PLAIN") {
                self.state = State::Auth;
                let token = b64(format!("\0{user}\0{pass}").as_bytes());
                return self.send(format!("AUTH PLAIN {token}\r\n"));
            }
            if mechs.iter().any(|m| m == "LOGIN") {
                self.state = State::AuthLogin(0);
                return self.send("AUTH LOGIN\r\n".into());
            }
            return self.finish(ServerReply::local(451, "4.7.12 the server offers neither AUTH PLAIN nor AUTH LOGIN"));
        }
        self.mail();
    }

    fn mail(&mut self) {
        if self.txn.requiretls && !(self.tls && self.has("REQUIRETLS")) {
            return self.finish(ServerReply::local(451, "4.7.10 REQUIRETLS: the server does not offer REQUIRETLS under TLS"));
        }
        let mut cmd = format!("MAIL FROM:<{}>", self.txn.from);
        if self.has("SIZE") {
            cmd.push_str(&format!(" SIZE={}", self.txn.size));
        }
        if self.txn.eight_bit && self.has("8BITMIME") {
            cmd.push_str(" BODY=8BITMIME");
        }
        if self.txn.smtputf8 {
            cmd.push_str(" SMTPUTF8");
        }
        if self.txn.requiretls {
            cmd.push_str(" REQUIRETLS");
        }
        self.dsn = self.has("DSN");
        if self.dsn {
            cmd.push_str(&self.txn.dsn.params());
        }
        cmd.push_str("\r\n");
        self.state = State::Envelope;
        self.pipelined = self.has("PIPELINING");
        self.expected = self.txn.rcpts.len() + 2;
        self.got.clear();
        if self.pipelined {
            for i in 0..self.txn.rcpts.len() {
                cmd.push_str(&self.rcpt_command(i));
            }
            cmd.push_str("DATA\r\n");
        }
        self.send(cmd);
    }

    /// `RCPT TO:<…>`, with the recipient's DSN parameters when the server offers DSN.
    fn rcpt_command(&self, i: usize) -> String {
        let dsn = match self.txn.rcpt_dsn.get(i) {
            Some(d) if self.dsn => d.params(),
            _ => String::new(),
        };
        format!("RCPT TO:<{}>{dsn}\r\n", self.txn.rcpts[i])
    }

    fn on_envelope_reply(&mut self, r: ServerReply) {
        let i = self.got.len();
        self.got.push(r.clone());
        let n = self.txn.rcpts.len();
        if i == 0 && !r.is_positive() {
            // MAIL refused: every recipient shares its fate.
            if self.pipelined {
                // The RCPT and DATA replies still come; wait for them.
                self.results = vec![Some(RcptResult::from_reply(r)); n];
                return self.maybe_envelope_done();
            }
            return self.finish(r);
        }
        if i == 0 && !self.pipelined {
            return self.send(self.rcpt_command(0));
        }
        if (1..=n).contains(&i) {
            if self.results[i - 1].is_none() && !r.is_positive() {
                self.results[i - 1] = Some(RcptResult::from_reply(r.clone()));
            }
            if !self.pipelined {
                if i < n {
                    return self.send(self.rcpt_command(i));
                }
                if self.results.iter().all(Option::is_some) {
                    return self.finish(ServerReply::local(451, "4.4.0 no recipient accepted"));
                }
                return self.send("DATA\r\n".into());
            }
        }
        self.maybe_envelope_done();
    }

    /// All envelope replies are in (the last is DATA's).
    fn maybe_envelope_done(&mut self) {
        if self.got.len() < self.expected {
            return;
        }
        let data = self.got.last().cloned().expect("DATA reply");
        if data.code != 354 {
            return self.finish(data);
        }
        if self.results.iter().all(Option::is_some) {
            // DATA accepted although every recipient was refused (RFC 2920
            // §3.1): end it with a lone dot; the results stand.
            self.send(".\r\n".into());
            self.state = State::Data;
            self.lmtp_waiting.clear();
            return;
        }
        let body = self.body.take().unwrap_or_default();
        self.actions.push_back(Action::Send(dot_stuff(&body)));
        self.state = State::Data;
        self.lmtp_waiting = (0..self.txn.rcpts.len()).filter(|&i| self.results[i].is_none()).collect();
    }

    fn on_data_reply(&mut self, r: ServerReply) {
        if self.cfg.lmtp && !self.lmtp_waiting.is_empty() {
            let i = self.lmtp_waiting.remove(0);
            self.results[i] = Some(RcptResult::from_reply(r.clone()));
            if !self.lmtp_waiting.is_empty() {
                return;
            }
            return self.finish(r);
        }
        for x in self.results.iter_mut().filter(|x| x.is_none()) {
            *x = Some(RcptResult::from_reply(r.clone()));
        }
        self.finish(r);
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `250-text` / `250 text` / `250`: (code, more lines follow, text).
pub fn parse_line(line: &str) -> Option<(u16, bool, String)> {
    let code: u16 = line.get(..3)?.parse().ok()?;
    if !(200..600).contains(&code) {
        return None;
    }
    match line.as_bytes().get(3) {
        None => Some((code, false, String::new())),
        Some(b' ') => Some((code, false, line[4..].to_string())),
        Some(b'-') => Some((code, true, line[4..].to_string())),
        _ => None,
    }
}

/// Text lines sent are at most this long (RFC 5321 §4.5.3.1.6); longer ones
/// (accepted from sloppy senders) are broken as Postfix's
/// `smtp_line_length_limit` does, by inserting CRLF and a space.
pub const LINE_LIMIT: usize = 998;

/// RFC 5321 §4.5.2: a leading dot doubled; the message ends with CRLF.CRLF.
/// Lines over [`LINE_LIMIT`] octets are broken.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 5);
    let mut at_line_start = true;
    let mut column = 0usize;
    for &b in body {
        if column >= LINE_LIMIT && b != b'\r' && b != b'\n' {
            out.extend_from_slice(b"\r\n ");
            column = 1;
        }
        if at_line_start && b == b'.' {
            out.push(b'.');
            column += 1;
        }
        out.push(b);
        at_line_start = b == b'\n';
        column = if b == b'\n' { 0 } else { column + 1 };
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_broken_for_the_wire() {
        let line = vec![b'a'; 2500];
        let mut body = b"Subject: x\r\n\r\n".to_vec();
        body.extend_from_slice(&line);
        body.extend_from_slice(b"\r\n.end\r\n");
        body.extend_from_slice(&[b'b'; 998]);
        body.extend_from_slice(b"\r\n");
        let out = dot_stuff(&body);
        let text = String::from_utf8(out).unwrap();
        assert!(text.split("\r\n").all(|l| l.len() <= LINE_LIMIT), "a line over the limit was sent");
        let unbroken: String = text.split("\r\n").skip(2).take(3).collect::<Vec<_>>().join("");
        assert_eq!(unbroken.replace(' ', ""), "a".repeat(2500), "nothing lost, only CRLF SP inserted");
        assert!(text.contains("\r\n..end\r\n"));
        assert!(text.contains(&format!("\r\n{}\r\n.\r\n", "b".repeat(998))), "a line at the limit is not broken");
    }

    fn client(lmtp: bool, rcpts: &[&str]) -> Client {
        Client::new(
            ClientConfig { hostname: "me.test".into(), tls: TlsPolicy::Opportunistic, auth: None, lmtp },
            Transaction {
                from: "a@me.test".into(),
                rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
                size: 10,
                eight_bit: false,
                smtputf8: false,
                dsn: Default::default(),
                rcpt_dsn: Vec::new(),
                requiretls: false,
            },
            b"Subject: x\r\n\r\n.hi\r\n".to_vec(),
        )
    }

    #[test]
    fn requiretls_goes_only_to_a_server_that_offers_it_under_tls() {
        let mut c = client(false, &["x@a.test"]);
        c.txn.requiretls = true;
        let (sent, o) = run(&mut c, &["220 mx", "250-mx", "250 STARTTLS", "220 go ahead", "250-mx", "250 REQUIRETLS", "250 ok", "250 ok"]);
        assert!(sent.contains("MAIL FROM:<a@me.test> REQUIRETLS\r\n"), "{sent}");
        assert!(o.is_none() || o.unwrap().tls);
        let mut c = client(false, &["x@a.test"]);
        c.txn.requiretls = true;
        let (sent, o) = run(&mut c, &["220 mx", "250-mx", "250 STARTTLS", "220 go ahead", "250 mx"]);
        assert!(!sent.contains("MAIL FROM"), "{sent}");
        let o = o.unwrap();
        assert!(matches!(&o.rcpts[0], RcptResult::Deferred(r) if r.text().contains("4.7.10 REQUIRETLS")), "{:?}", o.rcpts);
    }

    /// Feed server lines; collect everything the client sends and the outcome.
    fn run(c: &mut Client, server: &[&str]) -> (String, Option<Outcome>) {
        let mut sent = String::new();
        let mut outcome = None;
        for s in server {
            c.receive(format!("{s}\r\n").as_bytes());
            while let Some(a) = c.poll() {
                match a {
                    Action::Send(b) => sent.push_str(&String::from_utf8_lossy(&b)),
                    Action::StartTls => c.tls_established(),
                    Action::Done(o) => outcome = Some(o),
                }
            }
        }
        (sent, outcome)
    }

    #[test]
    fn pipelined_transaction_with_one_refused_recipient() {
        let mut c = client(false, &["x@a.test", "y@a.test"]);
        let (sent, o) = run(
            &mut c,
            &[
                "220 mx ESMTP",
                "250-mx hi",
                "250 PIPELINING",
                "250 2.1.0 ok",
                "550 5.1.1 no such user",
                "250 2.1.5 ok",
                "354 go",
                "250 2.0.0 queued",
            ],
        );
        assert_eq!(
            sent,
            "EHLO me.test\r\nMAIL FROM:<a@me.test>\r\nRCPT TO:<x@a.test>\r\nRCPT TO:<y@a.test>\r\nDATA\r\nSubject: x\r\n\r\n..hi\r\n.\r\nQUIT\r\n"
        );
        let o = o.unwrap();
        assert!(matches!(&o.rcpts[0], RcptResult::Failed(r) if r.code == 550));
        assert!(matches!(&o.rcpts[1], RcptResult::Delivered(r) if r.code == 250));
    }

    #[test]
    fn starttls_then_ehlo_again_and_temporary_failures() {
        let mut c = client(false, &["x@a.test"]);
        let (sent, o) = run(&mut c, &["220 mx", "250-mx", "250 STARTTLS", "220 go ahead", "250 mx", "250 ok", "451 4.3.0 try later"]);
        assert!(sent.starts_with("EHLO me.test\r\nSTARTTLS\r\nEHLO me.test\r\nMAIL FROM:<a@me.test>\r\nRCPT TO:<x@a.test>\r\n"), "{sent}");
        let o = o.unwrap();
        assert!(o.tls);
        assert!(matches!(&o.rcpts[0], RcptResult::Deferred(r) if r.code == 451));
    }

    #[test]
    fn lmtp_gives_one_reply_per_recipient() {
        let mut c = client(true, &["x@a.test", "y@a.test"]);
        let (sent, o) = run(
            &mut c,
            &["220 lmtp", "250-lmtp", "250 PIPELINING", "250 ok", "250 ok", "250 ok", "354 go", "250 2.0.0 x ok", "452 4.2.2 y over quota"],
        );
        assert!(sent.starts_with("LHLO me.test\r\n"));
        let o = o.unwrap();
        assert!(matches!(&o.rcpts[0], RcptResult::Delivered(_)));
        assert!(matches!(&o.rcpts[1], RcptResult::Deferred(r) if r.code == 452));
    }

    #[test]
    fn dsn_parameters_go_only_to_a_server_that_offers_dsn() {
        use crate::dsn::{MailDsn, Notify, RcptDsn, Ret};
        let with = |c: &mut Client| {
            c.txn.dsn = MailDsn { ret: Some(Ret::Hdrs), envid: Some("id 1".into()) };
            c.txn.rcpt_dsn = vec![RcptDsn { notify: Some(Notify::NEVER), orcpt: None }, RcptDsn::default()];
        };
        let mut c = client(false, &["x@a.test", "y@a.test"]);
        with(&mut c);
        let (sent, o) = run(&mut c, &["220 mx", "250-mx", "250 DSN", "250 ok", "250 ok", "250 ok", "354 go", "250 ok"]);
        assert!(
            sent.contains("MAIL FROM:<a@me.test> RET=HDRS ENVID=id+201\r\nRCPT TO:<x@a.test> NOTIFY=NEVER\r\nRCPT TO:<y@a.test>\r\n"),
            "{sent}"
        );
        assert!(o.unwrap().dsn);
        let mut c = client(false, &["x@a.test", "y@a.test"]);
        with(&mut c);
        let (sent, o) = run(&mut c, &["220 mx", "250 mx", "250 ok", "250 ok", "250 ok", "354 go", "250 ok"]);
        assert!(sent.contains("MAIL FROM:<a@me.test>\r\nRCPT TO:<x@a.test>\r\n"), "{sent}");
        assert!(!o.unwrap().dsn);
    }

    #[test]
    fn greeting_refusal_and_garbage() {
        let mut c = client(false, &["x@a.test"]);
        let (_, o) = run(&mut c, &["554 5.7.1 go away"]);
        assert!(matches!(&o.unwrap().rcpts[0], RcptResult::Failed(r) if r.code == 554));
        let mut c = client(false, &["x@a.test"]);
        let (_, o) = run(&mut c, &["HTTP/1.1 400 Bad"]);
        assert!(matches!(&o.unwrap().rcpts[0], RcptResult::Deferred(_)));
    }

    #[test]
    fn ipv6_refusals_are_recognised() {
        let r = |code, t: &str| ServerReply { code, lines: vec![t.into()] };
        assert!(r(550, "5.7.25 The IP address sending this message does not have a PTR record").refuses_ipv6());
        assert!(
            r(550, "5.7.1 [2001:db8::1] Our system has detected that this message does not meet IPv6 sending guidelines").refuses_ipv6()
        );
        assert!(r(550, "5.2.1 Service unavailable, mail.example does not accept email over IPv6").refuses_ipv6());
        assert!(!r(550, "5.1.1 user unknown").refuses_ipv6());
        assert_eq!(r(550, "5.7.1 no").status(), "5.7.1");
        assert_eq!(r(451, "try later").status(), "4.0.0");
    }

    #[test]
    fn smtputf8_needs_the_extension_and_auth_needs_tls() {
        let mut c = client(false, &["x@a.test"]);
        c.txn.smtputf8 = true;
        let (_, o) = run(&mut c, &["220 mx", "250 mx"]);
        assert!(matches!(&o.unwrap().rcpts[0], RcptResult::Failed(r) if r.text().contains("SMTPUTF8")));
        let mut c = client(false, &["x@a.test"]);
        c.cfg.auth = Some(("u".into(), "p".into()));
        c.cfg.tls = TlsPolicy::Off;
        let (sent, o) = run(&mut c, &["220 mx", "250-mx", "250 AUTH PLAIN"]);
        assert!(!sent.contains("AUTH"));
        assert!(matches!(&o.unwrap().rcpts[0], RcptResult::Deferred(_)));
    }
}
