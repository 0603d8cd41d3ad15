//! Messages mx6 writes itself (delivery status notices, DMARC and TLS-RPT
//! reports): from the null sender, so no notice ever answers them (RFC 5321
//! §6.1) and one that cannot be delivered is dropped with a log line once
//! `queue.max_age` has passed; DKIM-signed when a key matches their From
//! domain; a Received line of our own; appended to the spool and handed to
//! delivery like any other message.

use std::sync::Arc;

use mx6_queue::{QueuedMessage, SpoolError};

use crate::queue::context::{Ctx, Job};

/// How a generated message travels.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    pub smtputf8: bool,
    /// RFC 8689 §4.2.1: notices about a REQUIRETLS message obey it too.
    pub requiretls: bool,
}

/// Queue `message` (header and body, without a Received line) as `id` for
/// `rcpts`.
pub async fn queue(ctx: &Arc<Ctx>, id: &str, rcpts: &[String], mut message: Vec<u8>, flags: Flags) -> Result<(), SpoolError> {
    let (sigs, failed) = mx6_auth::sign::signatures(&ctx.dkim, &message);
    for (key, e) in failed {
        tracing::error!(queue_id = %id, domain = %key.domain, error = %e, "DKIM signing of a message mx6 wrote failed; sent unsigned");
    }
    let received = format!("Received: by {} (mx6) id {id};\r\n\t{}\r\n", ctx.hostname, chrono::Utc::now().to_rfc2822());
    let mut full = received.into_bytes();
    full.extend_from_slice(sigs.as_bytes());
    full.append(&mut message);
    let msg = QueuedMessage {
        id: id.to_string(),
        from: String::new(),
        rcpts: rcpts.iter().map(|r| ctx.destinations.route(r)).collect(),
        received: chrono::Utc::now().timestamp(),
        client: "127.0.0.1".into(),
        helo: ctx.hostname.clone(),
        smtputf8: flags.smtputf8,
        requiretls: flags.requiretls,
        ..Default::default()
    };
    let full = Arc::new(full);
    let loc = ctx.spool.append(&msg, full.clone()).await?;
    ctx.submit(Job::new(msg, loc, full));
    Ok(())
}
