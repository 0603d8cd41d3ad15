//! End of data, before the 250: DKIM, DMARC and "SPF or DKIM" checks
//! (RFC 6376, RFC 7489; [`mx6_policy::inbound::InboundPolicy::decide_data`]),
//! the message assembled with our headers ([`crate::session::assemble`]), the
//! content filters, DKIM signing, and the durable append to the spool. The
//! 250 is given only once the spool says the message is on stable storage
//! (RFC 5321 §4.1.1.4).

use std::sync::Arc;

use mx6_policy::inbound::{AuthResult, Verdict};
use mx6_policy::reputation::Event as RepEvent;
use mx6_policy::Route;
use mx6_queue::{QueuedMessage, Recipient};
use mx6_smtp::{reply, Answer, Envelope};

use crate::content_filter::message::{Message, Origin, Verdict as FilterVerdict};
use crate::queue::context::Job;
use crate::session::assemble::{self, Checked};
use crate::session::context::{slog, Ctx};
use crate::session::services::Services;

/// A complete message: check, assemble, filter, sign, store.
pub async fn message(ctx: &mut Ctx, s: &Services, env: Envelope) -> Answer {
    let checked = match check(ctx, s, &env).await {
        Ok(c) => c,
        Err(a) => return a,
    };
    let r = store(ctx, s, env, checked).await;
    if matches!(r, Answer::Queued(_)) {
        ctx.messages += 1;
        ctx.record(s, RepEvent::Accepted);
    }
    r
}

/// The end-of-data checks and the Authentication-Results header for every
/// accepted message.
async fn check(ctx: &mut Ctx, s: &Services, env: &Envelope) -> Result<Checked, Answer> {
    let hostname = &s.hostname;
    let Some(txn) = ctx.txn.take() else {
        let results =
            mx6_auth::results(&mx6_auth::ResultsInput { authserv_id: hostname, auth_user: env.auth.as_deref(), ..Default::default() });
        return Ok(Checked { results, junk: None });
    };
    let m = s.inbound.auth.message(&env.data, &txn.spf).await;
    let facts = ctx.client_check.get().await.cloned().unwrap_or_default();
    let domain = env.from.mailbox.as_ref().map(|m| m.domain.to_string());
    let client = ctx.policy_client(domain.as_deref());
    let verdict = s.inbound.policy.decide_data(&client, &facts, &txn.spf.facts, &m.facts);
    if let Some(interval) = s.dmarc_reports {
        if let Some((e, p)) = crate::reports::evaluations::evaluation(ctx.client, &ctx.helo, &txn.sender, &txn.spf, &m, &verdict) {
            // Counted off the session's path: the reply does not wait on the store.
            let state = s.state.clone();
            tokio::spawn(async move {
                if let Err(err) = mx6_reports::evaluation::record(state.store(), &e, &p, interval, mx6_store::now_ms()).await {
                    tracing::warn!(domain = %p.domain, error = %err, "a DMARC evaluation was not counted for the aggregate report");
                }
            });
        }
    }
    if m.facts.dmarc == AuthResult::Fail {
        ctx.record(s, RepEvent::DmarcFail);
    } else if matches!(verdict, Verdict::Refuse { .. }) {
        ctx.record(s, RepEvent::Refused);
    }
    let junk = match verdict {
        Verdict::Refuse { reason, reply } => {
            ctx.rejected(
                s,
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

async fn store(ctx: &mut Ctx, s: &Services, mut env: Envelope, checked: Checked) -> Answer {
    // Milters heard the id at MAIL (macro `i`).
    let id = ctx.queue_id.take().unwrap_or_else(mx6_queue::id::next);
    if env.rcpts.len() != ctx.routes.len() || env.rcpt_dsn.len() != env.rcpts.len() {
        slog!(error, ctx, "recipient routes out of step with the transaction");
        return Answer::Reject(reply::storage_failure());
    }
    let data = assemble::message(ctx, s, &mut env, &checked, &id);
    let from = env.from.mailbox.as_ref().map(|m| m.to_string()).unwrap_or_default();
    let mut msg =
        Message { from, rcpts: env.rcpts.iter().map(|m| m.to_string()).collect(), data, junk: checked.junk.is_some(), hold: None };
    let mut routes: Vec<Route> = ctx.routes.clone();
    // Each recipient's DSN parameters, in step with `msg.rcpts` and `routes`.
    let mut dsn = std::mem::take(&mut env.rcpt_dsn);
    if s.filters.active() {
        let mut milters = ctx.milters.take();
        let origin = Origin {
            queue_id: &id,
            hostname: &s.hostname,
            client: ctx.client,
            client_port: ctx.port,
            client_name: ctx.confirmed_name(),
            helo: &env.helo,
            auth: env.auth.as_deref(),
            tls: ctx.tls.as_deref(),
        };
        let before = msg.rcpts.clone();
        let verdict = s.filters.run(&origin, milters.as_mut(), msg, &s.metrics).await;
        ctx.milters = milters;
        match verdict {
            FilterVerdict::Deliver(m) => msg = m,
            FilterVerdict::Refuse { reply, reason, by } => {
                ctx.rejected(s, "data", reason, format_args!("{} by {by} queue_id={id}", reply.text()));
                if reason == "spam" || reason == "milter_reject" {
                    ctx.record(s, RepEvent::Refused);
                }
                return if reply.code == 421 { Answer::Close(reply) } else { Answer::Reject(reply) };
            }
            FilterVerdict::Discard { by } => {
                slog!(info, ctx, queue_id = %id, "discarded by {by}: accepted and dropped");
                return Answer::Queued(id);
            }
        }
        let (rcpts, r) = crate::content_filter::reroute::reroute(
            &s.routing,
            &s.users.get().local,
            ctx.client,
            &id,
            &before,
            &ctx.routes,
            std::mem::take(&mut msg.rcpts),
        );
        (msg.rcpts, routes) = (rcpts, r);
        // Those a milter kept keep their parameters; one it added has none.
        dsn = msg
            .rcpts
            .iter()
            .map(|a| before.iter().position(|b| b.eq_ignore_ascii_case(a)).and_then(|i| dsn.get(i)).cloned().unwrap_or_default())
            .collect();
        if msg.rcpts.is_empty() {
            slog!(info, ctx, queue_id = %id, "content filters removed every recipient: accepted and dropped");
            return Answer::Queued(id);
        }
    }
    assemble::sign(ctx, s, env.auth.is_some(), &mut msg.data);
    let rcpts: Vec<Recipient> = msg
        .rcpts
        .iter()
        .zip(routes.iter())
        .zip(dsn)
        .map(|((a, route), dsn)| Recipient {
            address: a.clone(),
            local: match route {
                Route::Local { user, domain } => Some((user.clone(), domain.clone())),
                Route::Relay => None,
            },
            notify: dsn.notify,
            orcpt: dsn.orcpt,
        })
        .collect();
    // It may wait in memory for delivery: no spare capacity from the DATA
    // decoder's buffer (shrinking in place, not a copy).
    msg.data.shrink_to_fit();
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
        ret: env.params.dsn.ret,
        envid: env.params.dsn.envid.clone(),
        requiretls: env.params.requiretls,
        // RFC 8689 §5: ignored when REQUIRETLS was asked for.
        tls_optional: !env.params.requiretls
            && mx6_message::fields::fields(&body).any(|f| f.is("TLS-Required") && f.unfolded().eq_ignore_ascii_case("no")),
    };
    match s.spool.append(&qm, body.clone()).await {
        Ok(loc) => {
            slog!(
                info, ctx, queue_id = %id, from = %format!("<{}>", qm.from), size = body.len(), nrcpt = qm.rcpts.len(),
                protocol = env.protocol, user = env.auth.as_deref().unwrap_or(""), requiretls = qm.requiretls, "queued"
            );
            s.metrics.messages_accepted.with_label_values(&[ctx.family.as_str(), &ctx.listener]).inc();
            if let Some(reason) = &msg.hold {
                // Quarantined by a milter: on hold until `mx6 queue release`.
                tracing::info!(queue_id = %id, reason = %reason, "quarantined: on hold until `mx6 queue release`");
            }
            s.queue.submit(Job::new(qm, loc, body), msg.hold.is_some());
            Answer::Queued(id)
        }
        Err(e) => {
            // Never a 250 for a message that is not on stable storage.
            let (kind, r, reason) = if e.is_full() {
                ("full", reply::storage_full(), "storage_full")
            } else {
                ("io", reply::storage_failure(), "storage_failure")
            };
            s.metrics.spool_write_failures.with_label_values(&[kind]).inc();
            ctx.rejected(s, "data", reason, format_args!("{} ({e})", r.text()));
            Answer::Reject(r)
        }
    }
}
