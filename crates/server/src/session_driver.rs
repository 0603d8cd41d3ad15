//! The tokio driver around the sans-IO [`mx6_smtp::Session`]: moves bytes
//! between the socket and the session, answers its questions (recipient policy,
//! durable storage), runs the STARTTLS handshake, enforces timeouts, and writes
//! the session's log lines.
//!
//! Replies to pipelined commands are written together, once the session has
//! consumed all buffered input (RFC 2920 §3.2). Read buffers start small and
//! grow only while a client sends a lot, so idle sessions stay cheap.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use mx6_policy::{decide_recipient, Family, RecipientVerdict, Route};
use mx6_queue::{QueuedMessage, Recipient};
use mx6_smtp::address::address_literal;
use mx6_smtp::received::Received;
use mx6_smtp::{reply, Answer, Ask, Envelope, Event, Session, SessionConfig, Timeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use mx6_policy::inbound::{AuthResult, Client, Verdict};
use mx6_policy::ratelimit::Kind;
use mx6_policy::reputation::{Event as RepEvent, Standing as RepStanding};

use crate::greylisting::Presented;
use crate::pregreet::Pregreet;
use crate::rate_limits::{Asker, Stop};

use crate::config::{ListenerConfig, ListenerKind};
use crate::inbound::{self, ClientCheck, Transaction};
use crate::queue_manager::Job;
use crate::Shared;

const MIN_BUF: usize = 1024;
const MAX_BUF: usize = 64 * 1024;

/// The connection, plain or TLS (after STARTTLS, or from the start on an
/// implicit-TLS listener).
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

impl Conn {
    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            Conn::Gone => Ok(0),
        }
    }
    pub(crate) async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(b).await,
            Conn::Tls(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
            Conn::Gone => Ok(()),
        }
    }
    async fn shutdown(&mut self) {
        let _ = match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::Tls(s) => s.shutdown().await,
            Conn::Gone => Ok(()),
        };
    }
}

/// Per-session facts used for answers and logs.
struct Ctx {
    id: String,
    client: IpAddr,
    family: Family,
    listener: String,
    tls: Option<String>,
    routes: Vec<Route>,
    /// The authenticated user, normalised.
    auth: Option<String>,
    /// HELO/EHLO argument as given.
    helo: String,
    /// Client in relay.mynetworks.
    mynetworks: bool,
    /// Connect-time facts (reverse DNS, DNSBL).
    client_check: ClientCheck,
    /// SPF of the transaction in progress, when the inbound checks apply.
    txn: Option<Transaction>,
    /// A submission listener (AUTH required).
    submission: bool,
    /// The client as rate limits see it.
    asker: Asker,
    /// Reputation is kept for this client (port 25, outside mynetworks).
    tracked: bool,
    reputation: RepStanding,
    /// Reputation scores at connect, finest level first.
    rep_scores: Vec<f64>,
    /// Greylisting of the transaction: passed, allowlisted, or off.
    greylist: &'static str,
    port: u16,
}

impl Ctx {
    /// A refusal: one log line and one metric count, with the same stage and
    /// reason token.
    fn rejected(&self, shared: &Shared, stage: &'static str, reason: &'static str, detail: std::fmt::Arguments<'_>) {
        shared.metrics.reject(self.family.as_str(), stage, reason);
        tracing::info!(session = %self.id, client = %self.client, family = self.family.as_str(), stage, reason, "reject: {detail}");
    }

    async fn record(&self, shared: &Shared, ev: RepEvent) {
        if self.tracked {
            shared.reputation.record(&shared.state, self.client, ev).await;
        }
    }

    /// A rate limit or a state failure stopped this step: log, count, hold a
    /// tarpitted client, and give the reply (`limited` makes it from the prefix).
    async fn stopped(&self, shared: &Shared, stage: &'static str, stop: Stop, limited: impl Fn(&str) -> reply::Reply) -> reply::Reply {
        match stop {
            Stop::Limited(hit) => {
                let r = limited(&hit.prefix.to_string());
                self.rejected(
                    shared,
                    stage,
                    "rate_limited",
                    format_args!("{} limit={} prefix={} count={} max={}", r.text(), hit.limit, hit.prefix, hit.count, hit.max),
                );
                self.record(shared, RepEvent::RateLimited).await;
                if !hit.tarpit.is_zero() {
                    tokio::time::sleep(hit.tarpit).await;
                }
                r
            }
            Stop::Unavailable => {
                self.rejected(
                    shared,
                    stage,
                    "state_unavailable",
                    format_args!("the state store did not answer (store.on_failure = \"tempfail\")"),
                );
                if stage == "connect" {
                    reply::state_unavailable_connect(&shared.cfg.hostname)
                } else {
                    reply::state_unavailable()
                }
            }
        }
    }
}

pub async fn run(conn: Conn, client: SocketAddr, listener: &ListenerConfig, shared: Arc<Shared>) {
    let ip = mx6_smtp::address::canonical_ip(client.ip());
    let family = Family::of(ip);
    let id = format!("{:x}", shared.next_session());
    let tls_desc = match &conn {
        Conn::Tls(t) => Some(crate::tls::describe(t.get_ref().1)),
        _ => None,
    };
    let submission = listener.kind != ListenerKind::Smtp;
    let mynetworks = mx6_policy::prefix::contains_any(&shared.routing.mynetworks, ip);
    // Inbound checks are for mail from strangers on port 25.
    let client_check = if submission || mynetworks { ClientCheck::Skipped } else { ClientCheck::start(&shared.inbound, ip) };
    let mut ctx = Ctx {
        id,
        client: ip,
        family,
        listener: listener.address.to_string(),
        tls: tls_desc,
        routes: Vec::new(),
        auth: None,
        helo: String::new(),
        mynetworks,
        client_check,
        txn: None,
        submission,
        asker: Asker { ip, standing: mx6_policy::ratelimit::Standing { mynetworks, authenticated: submission }, bad: false },
        tracked: !submission && !mynetworks,
        reputation: RepStanding::Neutral,
        rep_scores: Vec::new(),
        greylist: "off",
        port: client.port(),
    };
    tracing::info!(session = %ctx.id, client = %ip, family = family.as_str(), listener = %ctx.listener, kind = listener.kind.as_str(), "connect");
    let mut conn = conn;
    let Some((_guard, early)) = admit(&mut ctx, &shared, &mut conn, listener).await else {
        conn.shutdown().await;
        tracing::info!(session = %ctx.id, client = %ctx.client, family = ctx.family.as_str(), messages = 0, "disconnect: refused at connect");
        return;
    };
    let cfg = &shared.cfg;
    let scfg = SessionConfig {
        hostname: cfg.hostname.clone(),
        client_literal: address_literal(ip),
        max_message_size: cfg.limits.message_size,
        max_recipients: cfg.limits.recipients,
        max_errors: cfg.limits.errors,
        starttls: shared.tls.is_some() && matches!(conn, Conn::Plain(_)),
        tls_active: matches!(conn, Conn::Tls(_)),
        auth: submission,
        require_auth: submission,
        timeouts: Timeouts { command: cfg.limits.command_timeout, data_block: cfg.limits.data_timeout },
    };
    let mut session = Session::new(scfg, Instant::now());
    if !early.is_empty() {
        session.receive(&early, Instant::now());
    }
    let mut out: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; MIN_BUF];
    let mut shutdown = shared.shutdown.clone();
    let mut messages = 0u32;
    let end: &str = 'session: loop {
        while let Some(ev) = session.poll_event() {
            match ev {
                Event::Reply(r) => {
                    if r.code >= 400 {
                        tracing::info!(session = %ctx.id, client = %ctx.client, family = ctx.family.as_str(), code = r.code, status = r.status, "reply: {}", r.text());
                    }
                    out.extend_from_slice(&r.to_bytes());
                }
                Event::Ask(ask) => {
                    let answer = answer(&mut ctx, &shared, ask, &mut messages).await;
                    session.answer(answer);
                }
                Event::StartTls => {
                    if conn.write_all(&out).await.is_err() {
                        break 'session "write error";
                    }
                    out.clear();
                    let Conn::Plain(tcp) = std::mem::replace(&mut conn, Conn::Gone) else { break 'session "TLS state" };
                    let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.clone().expect("STARTTLS offered only with TLS"));
                    let hs = tokio::time::timeout(std::time::Duration::from_secs(60), acceptor.accept(tcp)).await;
                    match hs {
                        Ok(Ok(tls)) => {
                            let desc = crate::tls::describe(tls.get_ref().1);
                            tracing::info!(session = %ctx.id, client = %ctx.client, family = ctx.family.as_str(), tls = %desc, "STARTTLS");
                            ctx.tls = Some(desc);
                            conn = Conn::Tls(Box::new(tls));
                            session.tls_established();
                        }
                        Ok(Err(e)) => {
                            tracing::info!(session = %ctx.id, client = %ctx.client, family = ctx.family.as_str(), error = %e, "TLS handshake failed");
                            break 'session "TLS handshake failed";
                        }
                        Err(_) => break 'session "TLS handshake timeout",
                    }
                }
                Event::Rejected { stage, reason } => ctx.rejected(&shared, stage, reason, format_args!("protocol limit")),
                Event::Close => {
                    let _ = conn.write_all(&out).await;
                    conn.shutdown().await;
                    break 'session "closed";
                }
            }
        }
        if !out.is_empty() {
            if conn.write_all(&out).await.is_err() {
                break 'session "write error";
            }
            out.clear();
        }
        let deadline = session.deadline().map(tokio::time::Instant::from_std);
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let stopping = *shutdown.borrow();
        tokio::select! {
            r = conn.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    if session.in_message() {
                        tracing::info!(session = %ctx.id, client = %ctx.client, family = ctx.family.as_str(), "lost connection during message transfer; nothing kept");
                    }
                    break 'session "client disconnected";
                }
                Ok(n) => {
                    session.receive(&buf[..n], Instant::now());
                    if n == buf.len() && buf.len() < MAX_BUF {
                        buf.resize(buf.len() * 2, 0);
                    }
                }
            },
            _ = sleep => {
                session.handle_timeout(Instant::now());
            }
            _ = shutdown.changed(), if !stopping => {}
        }
        if *shutdown.borrow() && !session.in_message() && !session.is_closed() {
            let _ = conn.write_all(&out).await;
            out.clear();
            let _ = conn.write_all(&reply::service_unavailable(&shared.cfg.hostname).to_bytes()).await;
            conn.shutdown().await;
            break 'session "server shutting down";
        }
    };
    tracing::info!(session = %ctx.id, client = %ctx.client, family = ctx.family.as_str(), messages, "disconnect: {end}");
}

async fn answer(ctx: &mut Ctx, shared: &Arc<Shared>, ask: Ask, messages: &mut u32) -> Answer {
    match ask {
        Ask::Helo { arg, .. } => {
            // RFC 5321 §4.1.4: a HELO that does not match the client is recorded, never refused.
            if let Some(mx6_smtp::address::Domain::Literal(lit)) = &arg.domain {
                if mx6_policy::prefix::canonical(*lit) != ctx.client {
                    tracing::info!(session = %ctx.id, client = %ctx.client, family = ctx.family.as_str(), helo = %arg.raw, "HELO address literal is not the client address");
                }
            }
            ctx.helo = arg.raw;
            Answer::Accept
        }
        Ask::Auth { mechanism, username, password, .. } => authenticate(ctx, shared, mechanism, username, password).await,
        Ask::StartTls => match shared.limits.count(&shared.state, Kind::TlsSessions, &ctx.asker).await {
            Ok(()) => Answer::Accept,
            Err(stop) => Answer::Reject(ctx.stopped(shared, "helo", stop, reply::tls_rate_limited).await),
        },
        Ask::Mail { from, auth, .. } => {
            ctx.routes.clear();
            // The null sender is allowed: an MTA that relays through us (a
            // Postfix with mx6 as relayhost) sends its bounces that way.
            if let (Some(user), Some(sender)) = (auth, from.mailbox.as_ref()) {
                if !shared.users.get().may_send_as(&user, &sender.to_string()) {
                    ctx.rejected(shared, "mail", "sender_not_owned", format_args!("sender {from} not owned by {user}"));
                    return Answer::Reject(reply::sender_not_owned());
                }
            }
            ctx.txn = None;
            if let Err(stop) = shared.limits.count(&shared.state, Kind::Messages, &ctx.asker).await {
                return Answer::Reject(ctx.stopped(shared, "mail", stop, reply::rate_limited).await);
            }
            let sender = from.mailbox.as_ref().map(|m| m.to_string()).unwrap_or_default();
            let Some(facts) = ctx.client_check.get().await.cloned() else { return Answer::Accept };
            let domain = from.mailbox.as_ref().map(|m| m.domain.to_string());
            let client =
                Client { ip: ctx.client, authenticated: ctx.auth.is_some(), mynetworks: ctx.mynetworks, sender_domain: domain.as_deref() };
            let (verdict, txn) = inbound::check_mail(&shared.inbound, &client, &facts, &ctx.helo, &sender).await;
            match verdict {
                Verdict::Refuse { reason, reply } => {
                    let spf = txn.as_ref().map(|t| t.spf.facts.result.as_str()).unwrap_or("none");
                    ctx.rejected(
                        shared,
                        "mail",
                        reason,
                        format_args!("{} from=<{sender}> iprev={} spf={spf}", reply.text(), facts.iprev.as_str()),
                    );
                    ctx.record(shared, RepEvent::Refused).await;
                    Answer::Reject(reply)
                }
                _ => {
                    ctx.txn = txn;
                    Answer::Accept
                }
            }
        }
        Ask::Rcpt { to, from } => match decide_recipient(&shared.routing, &shared.users.get().local, ctx.client, ctx.auth.is_some(), &to) {
            RecipientVerdict::Accept(route) => {
                if let Err(stop) = shared.limits.count(&shared.state, Kind::Recipients, &ctx.asker).await {
                    return Answer::Reject(ctx.stopped(shared, "rcpt", stop, reply::rate_limited).await);
                }
                if let Some(r) = greylist(ctx, shared, &to.to_string(), &from).await {
                    return Answer::Reject(r);
                }
                ctx.routes.push(route);
                Answer::Accept
            }
            RecipientVerdict::Reject { reason, reply } => {
                ctx.rejected(shared, "rcpt", reason, format_args!("{} from={from} to=<{to}>", reply.text()));
                if matches!(reason, "relay_denied" | "unknown_user") {
                    ctx.record(shared, RepEvent::Refused).await;
                }
                Answer::Reject(reply)
            }
        },
        Ask::Message(env) => {
            let checked = match check_data(ctx, shared, &env).await {
                Ok(c) => c,
                Err(a) => return a,
            };
            let r = store(ctx, shared, env, checked).await;
            if matches!(r, Answer::Queued(_)) {
                *messages += 1;
                ctx.record(shared, RepEvent::Accepted).await;
            }
            r
        }
    }
}

/// Before the greeting: escalation, connection limits (and, on an
/// implicit-TLS listener, the TLS session rate), then the early-talker test.
/// `None` when the client was refused (the reply is written); otherwise the
/// connection counts to hold for the session and any bytes an early talker
/// sent that the session should read (`pregreet.action = "log"`).
async fn admit(
    ctx: &mut Ctx,
    shared: &Arc<Shared>,
    conn: &mut Conn,
    listener: &ListenerConfig,
) -> Option<(crate::rate_limits::ConnGuard, Vec<u8>)> {
    if ctx.tracked {
        let (standing, scores) = shared.reputation.standing(&shared.state, ctx.client).await;
        ctx.reputation = standing;
        ctx.rep_scores = scores;
        ctx.asker.bad = standing == RepStanding::Bad;
    }
    let hostname = shared.cfg.hostname.clone();
    let guard = match shared.limits.connect(&shared.state, &ctx.asker).await {
        Ok(g) => g,
        Err(stop) => {
            let r = ctx.stopped(shared, "connect", stop, |p| reply::rate_limited_connect(&hostname, p)).await;
            let _ = conn.write_all(&r.to_bytes()).await;
            return None;
        }
    };
    if matches!(conn, Conn::Tls(_)) {
        if let Err(stop) = shared.limits.count(&shared.state, Kind::TlsSessions, &ctx.asker).await {
            let r = ctx.stopped(shared, "connect", stop, |p| reply::rate_limited_connect(&hostname, p)).await;
            let _ = conn.write_all(&r.to_bytes()).await;
            return None;
        }
    }
    let p = &shared.cfg.pregreet;
    if p.wait.is_zero() || listener.kind != ListenerKind::Smtp || ctx.mynetworks {
        return Some((guard, Vec::new()));
    }
    match crate::pregreet::listen(conn, &hostname, p.wait).await {
        Pregreet::Quiet => Some((guard, Vec::new())),
        Pregreet::Gone => None,
        Pregreet::Talked(bytes) => {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).escape_debug().to_string();
            ctx.record(shared, RepEvent::EarlyTalker).await;
            if p.action == crate::config::PregreetAction::Refuse {
                ctx.rejected(shared, "connect", "early_talker", format_args!("spoke before the greeting ended: \"{shown}\""));
                let _ = conn.write_all(&reply::early_talker().to_bytes()).await;
                return None;
            }
            tracing::info!(session = %ctx.id, client = %ctx.client, family = ctx.family.as_str(), "early talker (logged only): \"{shown}\"");
            Some((guard, bytes))
        }
    }
}

/// Greylisting at RCPT for port-25 strangers; `Some(reply)` refuses.
async fn greylist(ctx: &mut Ctx, shared: &Arc<Shared>, rcpt: &str, from: &mx6_smtp::address::Path) -> Option<reply::Reply> {
    if !shared.greylisting.enabled || ctx.mynetworks || ctx.auth.is_some() || ctx.submission {
        return None;
    }
    let fam = ctx.family.as_str();
    let sender = from.mailbox.as_ref().map(|m| m.to_string()).unwrap_or_default();
    let domain = from.mailbox.as_ref().map(|m| m.domain.to_string());
    let client = Client { ip: ctx.client, authenticated: false, mynetworks: false, sender_domain: domain.as_deref() };
    let facts = ctx.client_check.get().await.cloned();
    let exempt = if shared.inbound.policy.exempt(&client) {
        Some("allowlist")
    } else if facts.as_ref().is_some_and(|f| f.dnsbl.allowlisted) {
        Some("dnswl")
    } else if ctx.reputation == RepStanding::Good {
        Some("reputation")
    } else {
        None
    };
    if let Some(why) = exempt {
        ctx.greylist = "allowlisted";
        shared.metrics.greylist.with_label_values(&[fam, "allowlisted"]).inc();
        tracing::info!(session = %ctx.id, client = %ctx.client, family = fam, result = "allowlisted", why, from = %format!("<{sender}>"), to = %format!("<{rcpt}>"), "greylist");
        return None;
    }
    let spf_pass = ctx.txn.as_ref().filter(|t| t.spf.facts.result == AuthResult::Pass).map(|t| t.spf.facts.domain.clone());
    let presented = Presented {
        ip: ctx.client,
        spf_pass_domain: spf_pass.as_deref(),
        confirmed_name: facts.as_ref().and_then(|f| f.confirmed_name.as_deref()),
        sender: &sender,
        rcpt,
    };
    match shared.greylisting.check(&shared.state, &presented).await {
        Ok((outcome, identity)) => {
            shared.metrics.greylist.with_label_values(&[fam, outcome.as_str()]).inc();
            if outcome.passes() {
                ctx.greylist = outcome.as_str();
            }
            tracing::info!(session = %ctx.id, client = %ctx.client, family = fam, result = outcome.as_str(), identity = %identity, from = %format!("<{sender}>"), to = %format!("<{rcpt}>"), "greylist");
            if let Some(r) = crate::greylisting::Greylisting::refusal(outcome) {
                ctx.rejected(shared, "rcpt", "greylisted", format_args!("{} identity={identity} from=<{sender}> to=<{rcpt}>", r.text()));
                return Some(r);
            }
            if outcome == (mx6_store::Outcome::Passed { first: true }) {
                ctx.record(shared, RepEvent::GreylistPassed).await;
            }
            None
        }
        Err(_) => Some(ctx.stopped(shared, "rcpt", Stop::Unavailable, |_| reply::state_unavailable()).await),
    }
}

/// Check credentials off the runtime (argon2 is slow on purpose); a failure
/// waits `submission.auth_failure_delay` and counts against the client's prefix.
async fn authenticate(ctx: &mut Ctx, shared: &Arc<Shared>, mechanism: &str, username: String, password: String) -> Answer {
    let log_user: String = username.chars().filter(|c| !c.is_control()).take(128).collect();
    if let Err(stop) = shared.limits.at_limit(&shared.state, Kind::AuthFailures, &ctx.asker).await {
        let r = ctx.stopped(shared, "auth", stop, |_| reply::auth_throttled()).await;
        return Answer::Reject(if r.code == 454 { r } else { reply::auth_temporary() });
    }
    let shared2 = shared.clone();
    let user2 = username.clone();
    let ok = tokio::task::spawn_blocking(move || shared2.users.authenticate(&user2, &password)).await;
    match ok {
        Ok(true) => {
            let user = crate::users::normalize(&username);
            tracing::info!(session = %ctx.id, client = %ctx.client, family = ctx.family.as_str(), user = %user, mechanism, "authenticated");
            ctx.auth = Some(user);
            ctx.asker.standing.authenticated = true;
            Answer::Accept
        }
        Ok(false) => {
            let _ = shared.limits.count(&shared.state, Kind::AuthFailures, &ctx.asker).await;
            tokio::time::sleep(shared.cfg.submission.auth_failure_delay).await;
            ctx.rejected(shared, "auth", "auth_failed", format_args!("authentication failed, user={log_user} mechanism={mechanism}"));
            Answer::Reject(reply::auth_invalid())
        }
        Err(_) => Answer::Reject(reply::auth_temporary()),
    }
}

/// RFC 6409 §8.2/§8.3: a submitted message without Date or Message-ID gets them.
fn submission_headers(data: &[u8], queue_id: &str, hostname: &str) -> String {
    let header_end = data.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 2).unwrap_or(data.len());
    let (mut date, mut msgid) = (false, false);
    for line in data[..header_end].split(|&b| b == b'\n') {
        let l = line.get(..11).map(|h| h.to_ascii_lowercase()).unwrap_or_default();
        date |= l.starts_with(b"date:");
        msgid |= l.starts_with(b"message-id:");
    }
    let mut add = String::new();
    if !date {
        add.push_str(&format!("Date: {}\r\n", chrono::Utc::now().to_rfc2822()));
    }
    if !msgid {
        add.push_str(&format!("Message-ID: <{queue_id}@{hostname}>\r\n"));
    }
    add
}

/// What end of data adds to a message: our Authentication-Results, and
/// whether it goes to the Junk folder.
struct Checked {
    results: String,
    junk: Option<&'static str>,
}

/// End-of-data checks (DKIM, DMARC, "SPF or DKIM") and the
/// Authentication-Results header for every accepted message.
async fn check_data(ctx: &mut Ctx, shared: &Arc<Shared>, env: &Envelope) -> Result<Checked, Answer> {
    let hostname = &shared.cfg.hostname;
    let Some(txn) = ctx.txn.take() else {
        let results =
            mx6_auth::results(&mx6_auth::ResultsInput { authserv_id: hostname, auth_user: env.auth.as_deref(), ..Default::default() });
        return Ok(Checked { results, junk: None });
    };
    let m = shared.inbound.auth.message(&env.data, &txn.spf).await;
    let facts = ctx.client_check.get().await.cloned().unwrap_or_default();
    let domain = env.from.mailbox.as_ref().map(|m| m.domain.to_string());
    let client = Client { ip: ctx.client, authenticated: false, mynetworks: ctx.mynetworks, sender_domain: domain.as_deref() };
    let verdict = shared.inbound.policy.decide_data(&client, &facts, &txn.spf.facts, &m.facts);
    if m.facts.dmarc == AuthResult::Fail {
        ctx.record(shared, RepEvent::DmarcFail).await;
    } else if matches!(verdict, Verdict::Refuse { .. }) {
        ctx.record(shared, RepEvent::Refused).await;
    }
    let junk = match verdict {
        Verdict::Refuse { reason, reply } => {
            ctx.rejected(
                shared,
                "data",
                reason,
                format_args!(
                    "{} from=<{}> spf={} dkim={} dmarc={} (p={})",
                    reply.text(),
                    txn.sender,
                    txn.spf.facts.result.as_str(),
                    m.facts.dkim.as_str(),
                    m.facts.dmarc.as_str(),
                    m.facts.dmarc_policy.as_str()
                ),
            );
            return Err(Answer::Reject(reply));
        }
        Verdict::Quarantine { reason } => Some(reason),
        Verdict::Pass => None,
    };
    let results = mx6_auth::results(&mx6_auth::ResultsInput {
        authserv_id: hostname,
        ip: Some(ctx.client),
        client: Some(&facts),
        spf: Some((&txn.spf.facts, &txn.sender, &ctx.helo)),
        message: Some((&m.facts, &m.dkim)),
        auth_user: None,
    });
    Ok(Checked { results, junk })
}

/// What mx6 knows about the client's IPv6 position, for content filters and
/// their rules (`deploy/spamassassin/mx6.cf`): family, prefix and aggregate,
/// reverse DNS, reputation and greylisting.
fn client_header(ctx: &Ctx, shared: &Shared) -> String {
    let (agg, prefix) = shared.limits.escalation.prefixes(ctx.client);
    let (iprev, ptr) = match &ctx.client_check {
        ClientCheck::Ready(f) => {
            (f.iprev.as_str(), f.confirmed_name.as_deref().or(f.ptr_names.first().map(|s| s.as_str())).unwrap_or("none"))
        }
        _ => ("none", "none"),
    };
    let score = ctx.rep_scores.first().copied().unwrap_or(0.0);
    let history = if ctx.rep_scores.iter().all(|s| s.abs() < 0.01) { "none" } else { "known" };
    format!(
        "X-Mx6-Client: family={}; prefix={prefix}; agg={agg}; iprev={iprev}; ptr={ptr};\r\n\treputation={score:.2}; standing={}; history={history}; greylist={}\r\n",
        ctx.family.as_str(),
        ctx.reputation.as_str(),
        ctx.greylist,
    )
}

async fn store(ctx: &mut Ctx, shared: &Arc<Shared>, env: Envelope, checked: Checked) -> Answer {
    let id = mx6_queue::id::next();
    if env.rcpts.len() != ctx.routes.len() {
        tracing::error!(session = %ctx.id, "recipient routes out of step with the transaction");
        return Answer::Reject(reply::storage_failure());
    }
    let single = (env.rcpts.len() == 1).then(|| env.rcpts[0].to_string());
    let hide = env.auth.is_some() && shared.cfg.submission.hide_client;
    let received = Received {
        hide_client: hide,
        helo: &env.helo,
        rdns: match &ctx.client_check {
            ClientCheck::Ready(f) => f.confirmed_name.as_deref(),
            _ => None,
        },
        client: ctx.client,
        hostname: &shared.cfg.hostname,
        protocol: env.protocol,
        queue_id: &id,
        tls: ctx.tls.as_deref(),
        single_rcpt: single.as_deref(),
        date: chrono::Utc::now(),
    }
    .render();
    let mut extra = checked.results;
    if let Some(reason) = checked.junk {
        extra.push_str(&format!("X-Mx6-Quarantine: {reason}\r\n"));
    }
    if ctx.tracked {
        extra.push_str(&client_header(ctx, shared));
    }
    if env.auth.is_some() {
        extra.push_str(&submission_headers(&env.data, &id, &shared.cfg.hostname));
    }
    let stripped = mx6_auth::strip_forged(&env.data, &shared.cfg.hostname);
    let data = stripped.as_deref().unwrap_or(&env.data);
    let stripped = crate::content_filter::strip_field(data, "X-Mx6-Client");
    let data = stripped.as_deref().unwrap_or(data);
    let mut body = Vec::with_capacity(received.len() + extra.len() + data.len());
    body.extend_from_slice(received.as_bytes());
    body.extend_from_slice(extra.as_bytes());
    body.extend_from_slice(data);
    let from = env.from.mailbox.as_ref().map(|m| m.to_string()).unwrap_or_default();
    let mut msg = crate::content_filter::Message {
        from,
        rcpts: env.rcpts.iter().map(|m| m.to_string()).collect(),
        data: body,
        junk: checked.junk.is_some(),
        hold: None,
    };
    let mut routes: Vec<Route> = ctx.routes.clone();
    if shared.filters.active() {
        let origin = crate::content_filter::Origin {
            queue_id: &id,
            hostname: &shared.cfg.hostname,
            client: ctx.client,
            client_port: ctx.port,
            client_name: match &ctx.client_check {
                ClientCheck::Ready(f) => f.confirmed_name.as_deref(),
                _ => None,
            },
            helo: &env.helo,
            auth: env.auth.as_deref(),
            tls: ctx.tls.as_deref(),
        };
        let before = msg.rcpts.clone();
        match shared.filters.run(&origin, msg, &shared.metrics).await {
            crate::content_filter::Verdict::Deliver(m) => msg = m,
            crate::content_filter::Verdict::Refuse { reply, reason, by } => {
                ctx.rejected(shared, "data", reason, format_args!("{} by {by} queue_id={id}", reply.text()));
                if reason == "spam" || reason == "milter_reject" {
                    ctx.record(shared, RepEvent::Refused).await;
                }
                return Answer::Reject(reply);
            }
            crate::content_filter::Verdict::Discard { by } => {
                tracing::info!(session = %ctx.id, client = %ctx.client, family = ctx.family.as_str(), queue_id = %id, "discarded by {by}: accepted and dropped");
                return Answer::Queued(id);
            }
        }
        // Recipients a milter added are routed like those of an authenticated client.
        routes = Vec::with_capacity(msg.rcpts.len());
        let mut kept = Vec::with_capacity(msg.rcpts.len());
        for r in &msg.rcpts {
            let route = match before.iter().position(|b| b.eq_ignore_ascii_case(r)) {
                Some(i) => Some(ctx.routes[i].clone()),
                None => match mx6_smtp::address::parse_mailbox(r, true) {
                    Ok((mb, _)) => match decide_recipient(&shared.routing, &shared.users.get().local, ctx.client, true, &mb) {
                        RecipientVerdict::Accept(route) => Some(route),
                        RecipientVerdict::Reject { reason, .. } => {
                            tracing::warn!(queue_id = %id, rcpt = %r, reason, "recipient added by a milter is not deliverable; left out");
                            None
                        }
                    },
                    Err(_) => {
                        tracing::warn!(queue_id = %id, rcpt = %r, "recipient added by a milter is not an address; left out");
                        None
                    }
                },
            };
            if let Some(route) = route {
                routes.push(route);
                kept.push(r.clone());
            }
        }
        msg.rcpts = kept;
        if msg.rcpts.is_empty() {
            tracing::info!(session = %ctx.id, client = %ctx.client, family = ctx.family.as_str(), queue_id = %id, "content filters removed every recipient: accepted and dropped");
            return Answer::Queued(id);
        }
    }
    // DKIM: mail from our users and networks, signed for its From domain.
    if (env.auth.is_some() || ctx.mynetworks) && !shared.dkim.is_empty() {
        if let Some(domain) = mx6_auth::sign::from_domain(&msg.data) {
            let mut sigs = String::new();
            for key in shared.dkim.iter().filter(|k| k.domain == domain) {
                match key.sign(&msg.data) {
                    Ok(h) => sigs.insert_str(0, &h),
                    Err(e) => tracing::error!(session = %ctx.id, domain = %domain, error = %e, "DKIM signing failed; sent unsigned"),
                }
            }
            msg.data.splice(0..0, sigs.into_bytes());
        }
    }
    let rcpts: Vec<Recipient> = msg
        .rcpts
        .iter()
        .zip(routes.iter())
        .map(|(a, route)| Recipient {
            address: a.clone(),
            local: match route {
                Route::Local { user, domain } => Some((user.clone(), domain.clone())),
                Route::Relay => None,
            },
        })
        .collect();
    let body = Arc::new(msg.data);
    let qm = QueuedMessage {
        id: id.clone(),
        from: msg.from,
        rcpts,
        received: chrono::Utc::now().timestamp(),
        client: ctx.client.to_string(),
        helo: env.helo.clone(),
        smtputf8: env.params.smtputf8,
        junk: msg.junk,
    };
    match shared.spool.append(&qm, body.clone()).await {
        Ok(loc) => {
            tracing::info!(
                session = %ctx.id, client = %ctx.client, family = ctx.family.as_str(), queue_id = %id,
                from = %format!("<{}>", qm.from), size = body.len(), nrcpt = qm.rcpts.len(), protocol = env.protocol,
                user = env.auth.as_deref().unwrap_or(""),
                "queued"
            );
            shared.metrics.messages_accepted.with_label_values(&[ctx.family.as_str(), &ctx.listener]).inc();
            let n = qm.rcpts.len();
            if let Some(reason) = &msg.hold {
                // Quarantined by a milter: on hold until `mx6 queue release`.
                if let Err(e) = shared.queue.registry.hold_new(&id) {
                    tracing::error!(queue_id = %id, error = %e, "could not record the hold");
                }
                tracing::info!(queue_id = %id, reason = %reason, "quarantined: on hold until `mx6 queue release`");
            }
            shared.queue.submit(Job { msg: Arc::new(qm), loc, body: Some(body), done: vec![false; n], failures: 0, recovered: false });
            Answer::Queued(id)
        }
        Err(e) => {
            tracing::error!(session = %ctx.id, client = %ctx.client, family = ctx.family.as_str(), error = %e, "spool write failed");
            Answer::Reject(reply::storage_failure())
        }
    }
}
