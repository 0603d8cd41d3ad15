//! The session's side of the `[[milter]]`s
//! ([`crate::content_filter::milter::Milters`]): the macros it knows at each
//! stage, the call at each stage, and what a refusal becomes — a `554`
//! greeting or `421` at connect, the command's reply (a recipient's only, at
//! RCPT) later, the session closed on a `421`. Every refusal is logged and
//! counted under its stage, as mx6's own are.

use mx6_filter::milter::Peer;
use mx6_policy::inbound::AuthResult;
use mx6_policy::Route;
use mx6_smtp::address::{Mailbox, Path};
use mx6_smtp::command::MailParams;
use mx6_smtp::reply::Reply;
use mx6_smtp::Answer;

use crate::content_filter::milter::{Milters, Outcome};
use crate::session::context::Ctx;
use crate::session::services::Services;

/// The refusal of a stage as the session's answer (logged and counted).
fn answer(ctx: &Ctx, s: &Services, stage: &'static str, o: Outcome) -> Option<Answer> {
    match o {
        Outcome::Continue => None,
        // A discard is carried out at end of data.
        Outcome::Discard { .. } => None,
        Outcome::Refuse { reply, reason, by } => {
            ctx.rejected(s, stage, reason, format_args!("{} by {by}", reply.text()));
            Some(if reply.code == 421 { Answer::Close(reply) } else { Answer::Reject(reply) })
        }
    }
}

/// TLS macros from "TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384".
fn tls_macros(m: &mut Milters, tls: Option<&str>) {
    let (version, cipher) = match tls.and_then(|t| t.split_once(" with cipher ")) {
        Some((v, c)) => (v.to_string(), c.to_string()),
        None => (String::new(), String::new()),
    };
    let bits = if cipher.contains("128") {
        "128"
    } else if cipher.contains("256") || cipher.contains("CHACHA20") {
        "256"
    } else {
        ""
    };
    m.set("{tls_version}", version);
    m.set("{cipher}", cipher);
    m.set("{cipher_bits}", bits);
}

/// Before the greeting: connect the milters. `Some(reply)` refuses the
/// session with it (a `554` greeting, or a `421` and the connection closed).
pub async fn connect(ctx: &mut Ctx, s: &Services, kind: &'static str) -> Option<Reply> {
    if s.filters.milters.is_empty() {
        return None;
    }
    let mut m = Milters::new(&s.filters.milters, &ctx.id, ctx.client, &s.hostname, s.metrics.clone(), s.limits.message_size);
    let facts = ctx.client_check.get().await.cloned();
    let name = ctx.confirmed_name().unwrap_or("unknown").to_string();
    let ptr = facts.as_ref().and_then(|f| f.ptr_names.first().cloned()).unwrap_or_else(|| "unknown".into());
    let resolve = match facts.as_ref().map(|f| f.iprev) {
        Some(AuthResult::Pass) => "OK",
        Some(AuthResult::Fail) => "FORGED",
        Some(AuthResult::TempError) => "TEMP",
        _ => "FAIL",
    };
    let addr = ctx.client.to_string();
    m.set("j", s.hostname.clone());
    m.set("{daemon_name}", kind);
    m.set("{daemon_addr}", ctx.local.ip().to_string());
    m.set("v", concat!("mx6 ", env!("CARGO_PKG_VERSION")));
    m.set("_", format!("{name} [{addr}]"));
    m.set("{client_addr}", addr);
    m.set("{client_port}", ctx.port.to_string());
    m.set("{client_name}", name.clone());
    m.set("{client_ptr}", ptr);
    m.set("{client_resolve}", resolve);
    m.set("{if_name}", s.hostname.clone());
    m.set("{if_addr}", ctx.local.ip().to_string());
    tls_macros(&mut m, ctx.tls.as_deref());
    let peer = match ctx.client {
        std::net::IpAddr::V4(a) => Peer::Ipv4(a, ctx.port),
        std::net::IpAddr::V6(a) => Peer::Ipv6(a, ctx.port),
    };
    let o = m.connect(&name, peer).await;
    ctx.milters = Some(m);
    match o {
        Outcome::Refuse { mut reply, reason, by } => {
            ctx.rejected(s, "connect", reason, format_args!("{} by {by}", reply.text()));
            reply.code = if reply.code >= 500 { 554 } else { 421 };
            Some(reply)
        }
        _ => None,
    }
}

pub async fn helo(ctx: &mut Ctx, s: &Services, name: &str) -> Option<Answer> {
    let tls = ctx.tls.clone();
    let m = ctx.milters.as_mut()?;
    tls_macros(m, tls.as_deref());
    let o = m.helo(name).await;
    answer(ctx, s, "helo", o)
}

pub async fn mail(ctx: &mut Ctx, s: &Services, from: &Path, params: &MailParams) -> Option<Answer> {
    ctx.milters.as_ref()?;
    let id = mx6_queue::id::next();
    ctx.queue_id = Some(id.clone());
    let (user, mechanism) = (ctx.auth.clone().unwrap_or_default(), ctx.auth_mechanism.unwrap_or(""));
    let m = ctx.milters.as_mut()?;
    let sender = from.mailbox.as_ref().map(|b| b.to_string()).unwrap_or_default();
    m.set("i", id);
    m.set("{auth_type}", if user.is_empty() { "" } else { mechanism });
    m.set("{auth_authen}", user);
    m.set("{mail_addr}", sender.clone());
    m.set("{mail_host}", from.mailbox.as_ref().map(|b| b.domain.to_string()).unwrap_or_default());
    m.set("{mail_mailer}", "smtp");
    let mut args = vec![format!("<{sender}>")];
    if let Some(size) = params.size {
        args.push(format!("SIZE={size}"));
    }
    if params.body_8bit {
        args.push("BODY=8BITMIME".into());
    }
    if params.smtputf8 {
        args.push("SMTPUTF8".into());
    }
    args.extend(params.dsn.params().split_whitespace().map(str::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = m.mail(&args).await;
    answer(ctx, s, "mail", o)
}

/// One recipient mx6 accepted: `Some` when a milter refuses it.
pub async fn rcpt(ctx: &mut Ctx, s: &Services, to: &Mailbox, route: &Route, dsn: &mx6_smtp::dsn::RcptDsn) -> Option<Answer> {
    let m = ctx.milters.as_mut()?;
    let addr = to.to_string();
    m.set("{rcpt_addr}", addr.clone());
    m.set("{rcpt_host}", to.domain.to_string());
    m.set("{rcpt_mailer}", if matches!(route, Route::Local { .. }) { "local" } else { "smtp" });
    let mut args = vec![format!("<{addr}>")];
    args.extend(dsn.params().split_whitespace().map(str::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = m.rcpt(&args).await;
    answer(ctx, s, "rcpt", o)
}

/// DATA (or the first BDAT): may the content follow?
pub async fn data(ctx: &mut Ctx, s: &Services) -> Answer {
    let Some(m) = ctx.milters.as_mut() else { return Answer::Accept };
    let o = m.data().await;
    answer(ctx, s, "data", o).unwrap_or(Answer::Accept)
}

/// The transaction was abandoned (RSET, HELO, STARTTLS).
pub async fn reset(ctx: &mut Ctx) {
    if let Some(m) = ctx.milters.as_mut() {
        m.abort().await;
    }
}

/// The session ends.
pub async fn quit(ctx: &mut Ctx) {
    if let Some(m) = ctx.milters.as_mut() {
        m.quit().await;
    }
}
