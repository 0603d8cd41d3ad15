//! The SMTP stages before the message: HELO/EHLO (recorded, never refused by
//! mx6 itself, RFC 5321 §4.1.4), STARTTLS (TLS session rate), MAIL (sender
//! ownership for authenticated users, the message rate, reverse DNS, DNSBL
//! and SPF), RCPT (routing and relay control, the recipient rate,
//! greylisting). What mx6 accepts then goes to the milters
//! ([`crate::session::milters`]), which may still refuse it.

use mx6_policy::greylist;
use mx6_policy::inbound::{AuthResult, Verdict};
use mx6_policy::ratelimit::Kind;
use mx6_policy::reputation::Event as RepEvent;
use mx6_policy::{decide_recipient, RecipientVerdict};
use mx6_smtp::address::{Domain, Mailbox, Path};
use mx6_smtp::command::{HeloArg, MailParams};
use mx6_smtp::{reply, Answer};

use crate::checks::greylisting::{Greylisting, Presented};
use crate::checks::inbound;
use crate::checks::rate_limits::Stop;
use crate::session::context::{slog, Ctx};
use crate::session::milters;
use crate::session::services::Services;

pub async fn helo(ctx: &mut Ctx, s: &Services, arg: HeloArg) -> Answer {
    if let Some(Domain::Literal(lit)) = &arg.domain {
        if mx6_policy::prefix::canonical(*lit) != ctx.client {
            slog!(info, ctx, helo = %arg.raw, "HELO address literal is not the client address");
        }
    }
    // A transaction in progress ends before the milters hear the new HELO.
    milters::reset(ctx).await;
    if let Some(a) = milters::helo(ctx, s, &arg.raw).await {
        return a;
    }
    ctx.helo = arg.raw;
    Answer::Accept
}

pub async fn starttls(ctx: &mut Ctx, s: &Services) -> Answer {
    match s.rate_limits.count(&s.state, Kind::TlsSessions, &ctx.asker).await {
        Ok(()) => Answer::Accept,
        Err(stop) => Answer::Reject(ctx.stopped(s, "helo", stop, reply::tls_rate_limited).await),
    }
}

/// The spool's filesystem must keep `queue.min_free` free after a message of
/// the announced SIZE (RFC 1870) — checked before any data is taken, as
/// Postfix's `queue_minfree`. Local delivery is not held back by it, so the
/// queue can drain.
fn room(ctx: &Ctx, s: &Services, size: Option<u64>) -> Option<reply::Reply> {
    let free = match s.spool.free_space() {
        Ok(f) => f,
        Err(e) => {
            slog!(warn, ctx, error = %e, "can not tell the spool's free space");
            return None;
        }
    };
    s.metrics.spool_free_bytes.set(free.min(i64::MAX as u64) as i64);
    let need = s.min_free.saturating_add(size.unwrap_or(0));
    if free >= need {
        return None;
    }
    ctx.rejected(
        s,
        "mail",
        "insufficient_storage",
        format_args!("the spool's filesystem has {free} octets free, below queue.min_free ({}) plus the message size", s.min_free),
    );
    Some(reply::insufficient_storage())
}

pub async fn mail(ctx: &mut Ctx, s: &Services, from: Path, params: &MailParams, auth: Option<String>) -> Answer {
    let a = mail_checks(ctx, s, &from, params, auth).await;
    if !matches!(a, Answer::Accept) {
        return a;
    }
    milters::mail(ctx, s, &from, params).await.unwrap_or(Answer::Accept)
}

async fn mail_checks(ctx: &mut Ctx, s: &Services, from: &Path, params: &MailParams, auth: Option<String>) -> Answer {
    ctx.routes.clear();
    ctx.queue_id = None;
    if let Some(r) = room(ctx, s, params.size) {
        return Answer::Reject(r);
    }
    // The null sender is allowed: an MTA that relays through us (a Postfix
    // with mx6 as relayhost) sends its bounces that way.
    if let (Some(user), Some(sender)) = (auth, from.mailbox.as_ref()) {
        if !s.users.get().may_send_as(&user, &sender.to_string()) {
            ctx.rejected(s, "mail", "sender_not_owned", format_args!("sender {from} not owned by {user}"));
            return Answer::Reject(reply::sender_not_owned());
        }
    }
    ctx.txn = None;
    if let Err(stop) = s.rate_limits.count(&s.state, Kind::Messages, &ctx.asker).await {
        return Answer::Reject(ctx.stopped(s, "mail", stop, reply::rate_limited).await);
    }
    let sender = from.mailbox.as_ref().map(|m| m.to_string()).unwrap_or_default();
    let Some(facts) = ctx.client_check.get().await.cloned() else { return Answer::Accept };
    let domain = from.mailbox.as_ref().map(|m| m.domain.to_string());
    let client = ctx.policy_client(domain.as_deref());
    let (verdict, txn) = inbound::check_mail(&s.inbound, &client, &facts, &ctx.helo, &sender).await;
    match verdict {
        Verdict::Refuse { reason, reply } => {
            let spf = txn.as_ref().map(|t| t.spf.facts.result.as_str()).unwrap_or("none");
            ctx.rejected(s, "mail", reason, format_args!("{} from=<{sender}> iprev={} spf={spf}", reply.text(), facts.iprev.as_str()));
            ctx.record(s, RepEvent::Refused);
            Answer::Reject(reply)
        }
        _ => {
            ctx.txn = txn;
            Answer::Accept
        }
    }
}

pub async fn rcpt(ctx: &mut Ctx, s: &Services, to: Mailbox, from: Path, dsn: &mx6_smtp::dsn::RcptDsn) -> Answer {
    match decide_recipient(&s.routing, &s.users.get().local, ctx.client, ctx.auth.is_some(), &to) {
        RecipientVerdict::Accept(route) => {
            if let Err(stop) = s.rate_limits.count(&s.state, Kind::Recipients, &ctx.asker).await {
                return Answer::Reject(ctx.stopped(s, "rcpt", stop, reply::rate_limited).await);
            }
            if let Some(r) = greylist_rcpt(ctx, s, &to.to_string(), &from).await {
                return Answer::Reject(r);
            }
            if let Some(a) = milters::rcpt(ctx, s, &to, &route, dsn).await {
                return a;
            }
            ctx.routes.push(route);
            Answer::Accept
        }
        RecipientVerdict::Reject { reason, reply } => {
            ctx.rejected(s, "rcpt", reason, format_args!("{} from={from} to=<{to}>", reply.text()));
            if matches!(reason, "relay_denied" | "unknown_user") {
                ctx.record(s, RepEvent::Refused);
            }
            Answer::Reject(reply)
        }
    }
}

/// Greylisting at RCPT for port-25 strangers; `Some(reply)` refuses.
async fn greylist_rcpt(ctx: &mut Ctx, s: &Services, rcpt: &str, from: &Path) -> Option<reply::Reply> {
    let domain = from.mailbox.as_ref().map(|m| m.domain.to_string());
    let client = ctx.policy_client(domain.as_deref());
    if !s.greylisting.enabled || ctx.submission || !greylist::applies(&client) {
        return None;
    }
    let fam = ctx.family.as_str();
    let sender = from.mailbox.as_ref().map(|m| m.to_string()).unwrap_or_default();
    let facts = ctx.client_check.get().await.cloned();
    let dnswl = facts.as_ref().is_some_and(|f| f.dnsbl.allowlisted);
    if let Some(why) = greylist::exemption(&s.inbound.policy, &client, dnswl, ctx.reputation) {
        ctx.greylist = "allowlisted";
        s.metrics.greylist.with_label_values(&[fam, "allowlisted"]).inc();
        slog!(info, ctx, result = "allowlisted", why, from = %format!("<{sender}>"), to = %format!("<{rcpt}>"), "greylist");
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
    match s.greylisting.check(&s.state, &presented).await {
        Ok((outcome, identity)) => {
            s.metrics.greylist.with_label_values(&[fam, outcome.as_str()]).inc();
            if outcome.passes() {
                ctx.greylist = outcome.as_str();
            }
            slog!(info, ctx, result = outcome.as_str(), identity = %identity, from = %format!("<{sender}>"), to = %format!("<{rcpt}>"), "greylist");
            if let Some(r) = Greylisting::refusal(outcome) {
                ctx.rejected(s, "rcpt", "greylisted", format_args!("{} identity={identity} from=<{sender}> to=<{rcpt}>", r.text()));
                return Some(r);
            }
            if outcome == (mx6_store::Outcome::Passed { first: true }) {
                ctx.record(s, RepEvent::GreylistPassed);
            }
            None
        }
        Err(_) => Some(ctx.stopped(s, "rcpt", Stop::Unavailable, |_| reply::state_unavailable()).await),
    }
}
