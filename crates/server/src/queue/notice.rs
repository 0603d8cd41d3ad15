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
use mx6_smtp::dsn::{NoticeKind, Notify};

use crate::queue::context::{Ctx, Job};
use crate::queue::outcome::Tally;

/// The recipients of `msg` that asked for a notice of `entries`' kind.
fn wanted(msg: &QueuedMessage, entries: Vec<(usize, Entry)>) -> Vec<Entry> {
    entries.into_iter().filter(|(i, e)| Notify::wants(msg.rcpts.get(*i).and_then(|r| r.notify), e.action.kind())).map(|(_, e)| e).collect()
}

/// Whether recipient `i` of `msg` asked for a success notice (most do not,
/// and nothing is built for them).
pub fn wants_success(msg: &QueuedMessage, i: usize) -> bool {
    Notify::wants(msg.rcpts.get(i).and_then(|r| r.notify), NoticeKind::Success)
}

/// The block of a failed recipient.
pub fn failed(msg: &QueuedMessage, f: &Failure, now: i64) -> (usize, Entry) {
    (f.rcpt, Entry::failed(f, msg.rcpts.get(f.rcpt).and_then(|r| r.orcpt.clone()), now))
}

/// The block of a recipient delivered (`Delivered`) or handed to a host that
/// does not speak DSN (`Relayed`), with the reply that said so.
pub fn succeeded(
    msg: &QueuedMessage,
    i: usize,
    action: Action,
    remote_mta: Option<&str>,
    reply: Option<String>,
    now: i64,
) -> (usize, Entry) {
    let status = reply
        .as_deref()
        .and_then(|r| r.split_whitespace().nth(1))
        .filter(|s| s.starts_with("2.") && s.split('.').count() == 3)
        .unwrap_or("2.0.0")
        .to_string();
    let e = Entry {
        recipient: msg.rcpts.get(i).map(|r| r.address.clone()).unwrap_or_default(),
        orcpt: msg.rcpts.get(i).and_then(|r| r.orcpt.clone()),
        action,
        status,
        remote_mta: remote_mta.map(str::to_string),
        diagnostic: reply.map(|r| ("smtp".to_string(), r)),
        last_attempt: Some(now),
        will_retry_until: None,
    };
    (i, e)
}

/// Queue one notice about `msg` covering `entries` (all of one kind; those
/// whose recipient did not ask for it are left out). False when it could not
/// be queued; true when it was, or when none is due.
pub async fn send(ctx: &Arc<Ctx>, msg: &QueuedMessage, body: &[u8], entries: Vec<(usize, Entry)>) -> bool {
    let entries = wanted(msg, entries);
    let Some(action) = entries.first().map(|e| e.action) else { return true };
    if msg.from.is_empty() {
        tracing::info!(queue_id = %msg.id, action = action.as_str(), "no notice for a message from the null sender, RFC 5321 §6.1");
        return true;
    }
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
    let mut report = dsn::notice(&ctx.hostname, &id, &original, &entries, now);
    let (sigs, failed) = mx6_auth::sign::signatures(&ctx.dkim, &report);
    for (key, e) in failed {
        tracing::error!(queue_id = %id, domain = %key.domain, error = %e, "DKIM signing of a notice failed; sent unsigned");
    }
    let received = format!("Received: by {} (mx6) id {id};\r\n\t{}\r\n", ctx.hostname, chrono::Utc::now().to_rfc2822());
    let mut full = received.into_bytes();
    full.extend_from_slice(sigs.as_bytes());
    full.append(&mut report);
    let notice = QueuedMessage {
        id: id.clone(),
        from: String::new(),
        rcpts: vec![ctx.destinations.route(&msg.from)],
        received: now,
        client: "127.0.0.1".into(),
        helo: ctx.hostname.clone(),
        smtputf8: msg.smtputf8,
        ..Default::default()
    };
    let full = Arc::new(full);
    match ctx.spool.append(&notice, full.clone()).await {
        Ok(loc) => {
            let rcpts: Vec<&str> = entries.iter().map(|e| e.recipient.as_str()).collect();
            tracing::info!(queue_id = %id, original = %msg.id, to = %msg.from, action = action.as_str(), rcpts = %rcpts.join(","), "delivery status notice queued");
            ctx.metrics.dsn.with_label_values(&[action.as_str()]).inc();
            ctx.submit(Job::new(notice, loc, full));
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
    let successes = std::mem::take(&mut tally.successes);
    if failures.is_empty() && successes.is_empty() {
        return;
    }
    let Some(body) = body_of(ctx, &job.msg, job.loc, job.body.clone()).await else {
        tally.unbounce(job, &failures);
        return;
    };
    if !failures.is_empty() {
        let entries = failures.iter().map(|f| failed(&job.msg, f, now)).collect();
        if !send(ctx, &job.msg, &body, entries).await {
            tally.unbounce(job, &failures);
        }
    }
    if !successes.is_empty() && !send(ctx, &job.msg, &body, successes).await {
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
    let entries: Vec<(usize, Entry)> = (0..job.done.len())
        .filter(|&i| !job.done[i])
        .map(|i| {
            let r = &job.msg.rcpts[i];
            let why = delays.iter().find(|f| f.rcpt == i);
            let kind = if why.is_some_and(|f| f.smtp_reply) { "smtp" } else { "x-mx6" };
            let e = Entry {
                recipient: r.address.clone(),
                orcpt: r.orcpt.clone(),
                action: Action::Delayed,
                status: why.map_or_else(|| "4.0.0".to_string(), |f| f.status.clone()),
                remote_mta: why.and_then(|f| f.remote_mta.clone()),
                diagnostic: why.map(|f| (kind.to_string(), f.diagnostic.clone())),
                last_attempt: Some(now),
                will_retry_until: Some(until),
            };
            (i, e)
        })
        .collect();
    let Some(body) = body_of(ctx, &job.msg, job.loc, job.body.clone()).await else { return };
    if send(ctx, &job.msg, &body, entries).await {
        job.warned = true;
        ctx.spool.mark_warned(&job.msg.id);
        ctx.registry.warned(&job.msg.id);
    }
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
