//! Bounces: an RFC 3464 report of the recipients that failed, queued to the
//! envelope sender like any other message (from the null sender, so it is
//! never bounced in turn). A message from the null sender is not bounced at
//! all (RFC 5321 §6.1). The bounce is queued before the failed recipients are
//! recorded as bounced, so a bounce that cannot be queued (disk full) leaves
//! them open to be tried again, and no report is ever lost.

use std::sync::Arc;

use mx6_queue::dsn::{self, Failure};
use mx6_queue::{Location, QueuedMessage};

use crate::queue::context::{Ctx, Job};

/// Queue a bounce for `failures` to the sender of `msg`; false when it could
/// not be queued.
pub async fn bounce(ctx: &Arc<Ctx>, msg: &QueuedMessage, body: &[u8], failures: &[Failure]) -> bool {
    if msg.from.is_empty() {
        tracing::info!(queue_id = %msg.id, "undeliverable bounce (null sender) is dropped, RFC 5321 §6.1");
        return true;
    }
    let now = chrono::Utc::now().timestamp();
    let report = dsn::bounce(
        &ctx.hostname,
        &dsn::Original { queue_id: &msg.id, from: &msg.from, arrival: msg.received, message: body },
        failures,
        now,
    );
    let id = mx6_queue::id::next();
    let received = format!("Received: by {} (mx6) id {id};\r\n\t{}\r\n", ctx.hostname, chrono::Utc::now().to_rfc2822());
    let mut full = received.into_bytes();
    full.extend_from_slice(&report);
    let bounce = QueuedMessage {
        id: id.clone(),
        from: String::new(),
        rcpts: vec![ctx.destinations.route(&msg.from)],
        received: now,
        client: "127.0.0.1".into(),
        helo: ctx.hostname.clone(),
        smtputf8: msg.smtputf8,
        junk: false,
    };
    let full = Arc::new(full);
    match ctx.spool.append(&bounce, full.clone()).await {
        Ok(loc) => {
            tracing::info!(queue_id = %id, original = %msg.id, to = %msg.from, "bounce queued");
            ctx.submit(Job::new(bounce, loc, full));
            true
        }
        Err(e) => {
            tracing::error!(queue_id = %msg.id, error = %e, "could not queue the bounce; the failed recipients stay queued");
            false
        }
    }
}

/// [`bounce`] for a message whose body may be only in the spool.
pub async fn queue_for(ctx: &Arc<Ctx>, msg: &QueuedMessage, loc: Location, body: Option<Arc<Vec<u8>>>, failures: &[Failure]) -> bool {
    let body = match body {
        Some(b) => b,
        None => {
            let spool = ctx.spool.clone();
            match tokio::task::spawn_blocking(move || spool.read_body(&loc)).await {
                Ok(Ok(b)) => Arc::new(b),
                _ => {
                    tracing::error!(queue_id = %msg.id, "can not read the message for its bounce; the failed recipients stay queued");
                    return false;
                }
            }
        }
    };
    bounce(ctx, msg, &body, failures).await
}
