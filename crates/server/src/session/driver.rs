//! The tokio driver around the sans-IO [`mx6_smtp::Session`]: moves bytes
//! between the connection and the session, hands its questions to the stages
//! ([`crate::session::stages`], [`crate::session::auth`],
//! [`crate::session::end_of_data`]), runs the STARTTLS handshake (RFC 3207)
//! and enforces the session's deadlines. Nothing else lives here.
//!
//! Replies to pipelined commands are written together, once the session has
//! consumed all buffered input (RFC 2920 §3.2). Reads go straight into the
//! session's own input buffer, with room that starts small and grows only
//! while a client sends a lot, so idle sessions stay cheap.
//!
//! Defends against: TLS handshakes that never finish (60 s), writes to a
//! client that went away, shutdown in the middle of a message (the message is
//! finished first, then 421).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mx6_config::{ListenerConfig, ListenerKind, LongLines};
use mx6_policy::reputation::Standing as RepStanding;
use mx6_policy::Family;
use mx6_smtp::address::address_literal;
use mx6_smtp::{reply, Answer, Ask, Event, Session, SessionConfig, Timeouts};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::checks::inbound::ClientCheck;
use crate::checks::rate_limits::Asker;
use crate::net::conn::Conn;
use crate::session::context::{slog, Ctx};
use crate::session::services::Services;

const MIN_BUF: usize = 1024;
const MAX_BUF: usize = 64 * 1024;

/// Run one SMTP session until it ends.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    conn: Conn<S>,
    client: SocketAddr,
    local: SocketAddr,
    listener: &ListenerConfig,
    s: Arc<Services>,
) {
    let ip = mx6_smtp::address::canonical_ip(client.ip());
    let submission = listener.kind != ListenerKind::Smtp;
    let mynetworks = mx6_policy::prefix::contains_any(&s.routing.mynetworks, ip);
    // Inbound checks are for mail from strangers on port 25.
    let client_check = if submission || mynetworks { ClientCheck::Skipped } else { ClientCheck::start(&s.inbound, ip) };
    let mut ctx = Ctx {
        id: format!("{:x}", s.next_session()),
        client: ip,
        port: client.port(),
        family: Family::of(ip),
        listener: listener.address.to_string(),
        tls: conn.tls_description(),
        routes: Vec::new(),
        auth: None,
        helo: String::new(),
        mynetworks,
        submission,
        client_check,
        txn: None,
        asker: Asker { ip, standing: mx6_policy::ratelimit::Standing { mynetworks, authenticated: submission }, bad: false },
        tracked: !submission && !mynetworks,
        reputation: RepStanding::Neutral,
        rep_scores: Vec::new(),
        greylist: "off",
        messages: 0,
        local,
        auth_mechanism: None,
        queue_id: None,
        milters: None,
    };
    slog!(info, ctx, listener = %ctx.listener, kind = listener.kind.as_str(), "connect");
    let mut conn = conn;
    let Some((_guard, early)) = Box::pin(crate::session::admission::admit(&mut ctx, &s, &mut conn, listener.kind)).await else {
        conn.shutdown().await;
        slog!(info, ctx, messages = 0, "disconnect: refused at connect");
        return;
    };
    let scfg = SessionConfig {
        hostname: s.hostname.clone(),
        client_literal: address_literal(ip),
        max_message_size: s.limits.message_size,
        max_recipients: s.limits.recipients,
        max_errors: s.limits.errors,
        starttls: s.tls.is_some() && !conn.is_tls(),
        tls_active: conn.is_tls(),
        auth: submission,
        require_auth: submission,
        timeouts: Timeouts {
            command: s.limits.command_timeout,
            data_block: s.limits.data_timeout,
            data_total: s.limits.data_total_timeout,
            session: s.limits.session_timeout,
        },
        max_line: match s.limits.long_lines {
            LongLines::Accept => mx6_smtp::data::LONG_LINE,
            LongLines::Refuse => mx6_smtp::data::MAX_TEXT_LINE,
        },
        postmaster_domain: s.routing.local_domains.first().cloned().unwrap_or_else(|| s.hostname.clone()),
    };
    let mut session = match Box::pin(crate::session::milters::connect(&mut ctx, &s, listener.kind.as_str())).await {
        None => Session::new(scfg, Instant::now()),
        // A milter refused the session: a 554 greeting, then 503 to all but QUIT.
        Some(r) if r.code == 554 => Session::refused(scfg, r, Instant::now()),
        Some(r) => {
            let _ = conn.write_all(&r.to_bytes()).await;
            conn.shutdown().await;
            slog!(info, ctx, messages = 0, "disconnect: refused at connect by a milter");
            return;
        }
    };
    if !early.is_empty() {
        session.receive(&early, Instant::now());
    }
    let end = drive(&mut ctx, &s, &mut session, &mut conn).await;
    Box::pin(crate::session::milters::quit(&mut ctx)).await;
    slog!(info, ctx, messages = ctx.messages, "disconnect: {end}");
}

/// The I/O loop; returns why the session ended.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &mut Ctx,
    s: &Arc<Services>,
    session: &mut Session,
    conn: &mut Conn<S>,
) -> &'static str {
    let mut out: Vec<u8> = Vec::new();
    // How much room the next read gets in the session's input buffer: it
    // doubles while reads fill it.
    let mut chunk = MIN_BUF;
    let mut shutdown = s.shutdown.clone();
    loop {
        while let Some(ev) = session.poll_event() {
            match ev {
                Event::Reply(r) => {
                    if r.code >= 400 {
                        slog!(info, ctx, code = r.code, status = %r.status, "reply: {}", r.text());
                    }
                    r.write_to(&mut out);
                }
                Event::Ask(ask) => {
                    // Boxed: the stages' futures are large, and an idle
                    // session should not carry their space (bench/idle-sessions.sh).
                    let answer = Box::pin(answer(ctx, s, ask)).await;
                    session.answer(answer);
                }
                Event::StartTls => {
                    if conn.write_all(&out).await.is_err() {
                        return "write error";
                    }
                    out.clear();
                    let Some(tls) = s.tls.clone() else { return "TLS state" };
                    let Conn::Plain(tcp) = std::mem::replace(conn, Conn::Gone) else { return "TLS state" };
                    let hs =
                        Box::pin(tokio::time::timeout(Duration::from_secs(60), tokio_rustls::TlsAcceptor::from(tls).accept(tcp))).await;
                    match hs {
                        Ok(Ok(tls)) => {
                            let desc = crate::net::tls::describe(tls.get_ref().1);
                            slog!(info, ctx, tls = %desc, "STARTTLS");
                            ctx.tls = Some(desc);
                            *conn = Conn::Tls(Box::new(tls));
                            session.tls_established();
                        }
                        Ok(Err(e)) => {
                            slog!(info, ctx, error = %e, "TLS handshake failed");
                            return "TLS handshake failed";
                        }
                        Err(_) => return "TLS handshake timeout",
                    }
                }
                Event::Rejected { stage, reason } => ctx.rejected(s, stage, reason, format_args!("protocol limit")),
                Event::Reset => Box::pin(crate::session::milters::reset(ctx)).await,
                Event::Close => {
                    let _ = conn.write_all(&out).await;
                    conn.shutdown().await;
                    return "closed";
                }
            }
        }
        if !out.is_empty() {
            if conn.write_all(&out).await.is_err() {
                return "write error";
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
            // At most `chunk`: the buffer's spare room may be larger, and
            // filling it all would grow `chunk` for no reason.
            r = conn.read_buf(session.input_buffer(chunk), chunk) => match r {
                Ok(0) | Err(_) => {
                    if session.in_message() {
                        slog!(info, ctx, "lost connection during message transfer; nothing kept");
                    }
                    return "client disconnected";
                }
                Ok(n) => {
                    session.received(Instant::now());
                    if n == chunk && chunk < MAX_BUF {
                        chunk *= 2;
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
            let _ = conn.write_all(&reply::service_unavailable(&s.hostname).to_bytes()).await;
            conn.shutdown().await;
            return "server shutting down";
        }
    }
}

/// The answer to one of the session's questions, from the stage it belongs to.
async fn answer(ctx: &mut Ctx, s: &Arc<Services>, ask: Ask) -> Answer {
    use crate::session::{auth, end_of_data, stages};
    match ask {
        Ask::Helo { arg, .. } => stages::helo(ctx, s, arg).await,
        Ask::Auth { mechanism, username, password, .. } => auth::authenticate(ctx, s, mechanism, username, password).await,
        Ask::StartTls => stages::starttls(ctx, s).await,
        Ask::Mail { from, params, auth } => stages::mail(ctx, s, from, &params, auth).await,
        Ask::Rcpt { to, from, dsn } => stages::rcpt(ctx, s, to, from, &dsn).await,
        Ask::Data => crate::session::milters::data(ctx, s).await,
        Ask::Message(env) => end_of_data::message(ctx, s, env).await,
    }
}
