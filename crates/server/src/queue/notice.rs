//! Delivery status notices to senders (RFC 3461 §6, RFC 3464): failures
//! (bounces), delay warnings, and the success notices a sender asked for with
//! `NOTIFY=SUCCESS` (`delivered` for Maildir and LMTP, `relayed` for a next
//! hop that does not speak DSN). Each is queued like any other message, from
//! the null sender (so it is never answered by another notice: no loops),
//! DKIM-signed when a key matches its From domain. A message from the null
//! sender gets no notice at all (RFC 5321 §6.1), and a recipient gets only the
//! kinds its NOTIFY asked for.
//!
//! Failure notices are queued before the failed recipients are recorded as
//! bounced, so one that cannot be queued (disk full) leaves them open to be
//! tried again, and no failure report is ever lost.

use std::sync::Arc;

use mx6_queue::dsn::{self, Action, Entry, Failure};
use mx6_queue::{Location, QueuedMessage};
use mx6_smtp::client::ServerReply;
use mx6_smtp::dsn::{NoticeKind, Notify};

use crate::queue::context::{Ctx, Job};
use crate::queue::generated;
use crate::queue::outcome::Tally;

/// The entries of a notice that is due: those whose recipient asked for
/// their kind (RFC 3461 §4.1); none for a message from the null sender (RFC
/// 5321 §6.1). Decided before the message is read back for the notice.
fn due(msg: &QueuedMessage, entries: Vec<(usize, Entry)>) -> Vec<Entry> {
    if msg.from.is_empty() {
        if let Some((_, e)) = entries.first() {
            tracing::info!(queue_id = %msg.id, action = e.action.as_str(), "no notice for a message from the null sender, RFC 5321 §6.1");
        }
        return Vec::new();
    }
    entries.into_iter().filter(|(i, e)| Notify::wants(msg.rcpts.get(*i).and_then(|r| r.notify), e.action.kind())).map(|(_, e)| e).collect()
}

/// Whether recipient `i` of `msg` asked for a success notice (most do not,
/// and nothing is built for them).
pub fn wants_success(msg: &QueuedMessage, i: usize) -> bool {
    Notify::wants(msg.rcpts.get(i).and_then(|r| r.notify), NoticeKind::Success)
}

fn orcpt(msg: &QueuedMessage, i: usize) -> Option<mx6_smtp::dsn::Orcpt> {
    msg.rcpts.get(i).and_then(|r| r.orcpt.clone())
}

/// The block of a recipient delivered (`Delivered`) or handed to a host that
/// does not speak DSN (`Relayed`), with the reply that said so.
pub fn succeeded(
    msg: &QueuedMessage,
    i: usize,
    action: Action,
    remote_mta: Option<&str>,
    reply: Option<&ServerReply>,
    now: i64,
) -> (usize, Entry) {
    let status = reply.and_then(ServerReply::enhanced).filter(|s| s.starts_with("2.")).unwrap_or("2.0.0").to_string();
    let e = Entry {
        recipient: msg.rcpts.get(i).map(|r| r.address.clone()).unwrap_or_default(),
        orcpt: orcpt(msg, i),
        action,
        status,
        remote_mta: remote_mta.map(str::to_string),
        diagnostic: reply.map(|r| ("smtp".to_string(), r.text())),
        last_attempt: Some(now),
        will_retry_until: None,
    };
    (i, e)
}

/// Queue one notice about `msg` covering `entries` (all of one kind, already
/// [`due`]). False when it could not be queued.
async fn send(ctx: &Arc<Ctx>, msg: &QueuedMessage, body: &[u8], entries: Vec<Entry>) -> bool {
    let Some(action) = entries.first().map(|e| e.action) else { return true };
    let now = chrono::Utc::now().timestamp();
    let id = mx6_queue::id::next();
    let original = dsn::Original {
        queue_id: &msg.id,
        from: &msg.from,
        arrival: msg.received,
        envid: msg.envid.as_deref(),
        ret: msg.ret,
        smtputf8: msg.smtputf8,
        message: body,
    };
    let report = dsn::notice(&ctx.hostname, &id, &original, &entries, now);
    // RFC 8689 §4.2.1: notices about a REQUIRETLS message obey it too.
    let flags = generated::Flags { smtputf8: msg.smtputf8, requiretls: msg.requiretls };
    match generated::queue(ctx, &id, std::slice::from_ref(&msg.from), report, flags).await {
        Ok(()) => {
            let rcpts: Vec<&str> = entries.iter().map(|e| e.recipient.as_str()).collect();
            tracing::info!(queue_id = %id, original = %msg.id, to = %msg.from, action = action.as_str(), rcpts = %rcpts.join(","), "delivery status notice queued");
            ctx.metrics.dsn.with_label_values(&[action.as_str()]).inc();
            true
        }
        Err(e) => {
            tracing::error!(queue_id = %msg.id, action = action.as_str(), error = %e, "could not queue the delivery status notice");
            false
        }
    }
}

/// Queue the notices an attempt made due: the failure notice first (one that
/// cannot be queued leaves its recipients open), then the success notice.
pub async fn settle(ctx: &Arc<Ctx>, job: &mut Job, tally: &mut Tally, now: i64) {
    let failures = std::mem::take(&mut tally.failures);
    let failed = due(&job.msg, failures.iter().map(|f| (f.rcpt, Entry::failed(f, orcpt(&job.msg, f.rcpt), now))).collect());
    let succeeded = due(&job.msg, std::mem::take(&mut tally.successes));
    if failed.is_empty() && succeeded.is_empty() {
        return;
    }
    let Some(body) = body_of(ctx, &job.msg, job.loc, job.body.clone()).await else {
        if !failed.is_empty() {
            tally.unbounce(job, &failures);
        }
        return;
    };
    if !send(ctx, &job.msg, &body, failed).await {
        tally.unbounce(job, &failures);
    }
    if !send(ctx, &job.msg, &body, succeeded).await {
        tracing::warn!(queue_id = %job.msg.id, "the success notice could not be queued; the deliveries stand");
    }
}

/// Once a message has waited `queue.delay_warning`, its sender is told
/// once (Postfix's `delay_warning_time`), for the open recipients whose
/// NOTIFY allows it, with how long we keep trying (`Will-Retry-Until`).
pub async fn warn_if_delayed(ctx: &Arc<Ctx>, job: &mut Job, delays: &[Failure]) {
    let age = mx6_queue::id::age(&job.msg.id);
    if job.warned || ctx.delay_warning.is_zero() || age < ctx.delay_warning || ctx.schedule.expired(age) {
        return;
    }
    let now = chrono::Utc::now().timestamp();
    let until = job.msg.received + ctx.schedule.max_age.as_secs() as i64;
    let open = (0..job.done.len()).filter(|&i| !job.done[i]);
    let entries = open
        .map(|i| {
            let e = match delays.iter().find(|f| f.rcpt == i) {
                Some(f) => Entry::of(f, Action::Delayed, orcpt(&job.msg, i), now),
                None => Entry {
                    recipient: job.msg.rcpts[i].address.clone(),
                    orcpt: orcpt(&job.msg, i),
                    action: Action::Delayed,
                    status: "4.0.0".into(),
                    remote_mta: None,
                    diagnostic: None,
                    last_attempt: Some(now),
                    will_retry_until: None,
                },
            };
            (i, Entry { will_retry_until: Some(until), ..e })
        })
        .collect();
    let entries = due(&job.msg, entries);
    if !entries.is_empty() {
        let Some(body) = body_of(ctx, &job.msg, job.loc, job.body.clone()).await else { return };
        if !send(ctx, &job.msg, &body, entries).await {
            return;
        }
    }
    job.warned = true;
    ctx.spool.mark_warned(&job.msg.id);
    ctx.registry.warned(&job.msg.id);
}

/// The message of `job` (from memory, or read back from the spool).
pub async fn body_of(ctx: &Arc<Ctx>, msg: &QueuedMessage, loc: Location, body: Option<Arc<Vec<u8>>>) -> Option<Arc<Vec<u8>>> {
    if let Some(b) = body {
        return Some(b);
    }
    let spool = ctx.spool.clone();
    match tokio::task::spawn_blocking(move || spool.read_body(&loc)).await {
        Ok(Ok(b)) => Some(Arc::new(b)),
        _ => {
            tracing::error!(queue_id = %msg.id, "can not read the message for its notice");
            None
        }
    }
}
