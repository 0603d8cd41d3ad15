//! Delivery of queued messages to other hosts: the open recipients that go
//! out over SMTP (or LMTP for local ones, when configured) are grouped by
//! destination (domain, the relayhost, the LMTP target), each group delivered
//! in one session within the global and per-destination session limits
//! ([`crate::queue::destinations`]) under the domain's MTA-STS policy, and
//! every outcome is recorded in the spool; every TLS outcome is counted for
//! TLS-RPT ([`mx6_delivery::tls_record`]) and in `mx6_delivery_tls_total`.
//! Permanent failures, and temporary ones older than `queue.max_age`
//! (RFC 5321 §4.5.4.1), bounce ([`crate::queue::bounce`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use mx6_delivery::remote::{self, AddressPreference, Delivery, TlsSession};
use mx6_smtp::client::Transaction;

use mx6_queue::dsn::Action;
use mx6_smtp::client::RcptResult;

use crate::queue::context::{Ctx, Job};
use crate::queue::notice;
use crate::queue::outcome::{self, Fate, Tally};

fn domain_of(addr: &str) -> String {
    mx6_policy::normalize_domain(addr.rsplit_once('@').map(|(_, d)| d).unwrap_or(""))
}

fn family_of(a: &SocketAddr) -> &'static str {
    mx6_policy::Family::of(a.ip()).as_str()
}

/// One attempt at every open outbound recipient of `job`; then record,
/// bounce and reschedule.
pub async fn attempt(ctx: Arc<Ctx>, mut job: Job) {
    let out = ctx.destinations.clone();
    let body = match &job.body {
        Some(b) => b.clone(),
        None => {
            let spool = ctx.spool.clone();
            let loc = job.loc;
            match tokio::task::spawn_blocking(move || spool.read_body(&loc)).await {
                Ok(Ok(b)) => Arc::new(b),
                Ok(Err(e @ mx6_queue::SpoolError::Corrupt { .. })) => return ctx.corrupt(job, &e).await,
                _ => {
                    tracing::error!(queue_id = %job.msg.id, "can not read message from the spool; will retry");
                    return ctx.retry(job, "spool read failed");
                }
            }
        }
    };
    let open: Vec<usize> = (0..job.msg.rcpts.len()).filter(|&i| !job.done[i] && out.outbound(&job.msg.rcpts[i])).collect();
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for i in open {
        let key = match (&out.remote.relayhost, &job.msg.rcpts[i].local, &out.lmtp) {
            (_, Some(_), Some(t)) => t.to_string(),
            (Some(r), None, _) => format!("[{}]:{}", r.host, r.port),
            (None, None, _) => domain_of(&job.msg.rcpts[i].address),
            (_, Some(_), None) => continue, // Maildir, delivered by crate::queue::local
        };
        groups.entry(key).or_default().push(i);
    }
    let eight_bit = body.iter().any(|&b| b >= 0x80);
    let msg = job.msg.clone();
    let attempts = groups.into_iter().map(|(key, idx)| {
        let out = out.clone();
        let body = body.clone();
        let msg = msg.clone();
        async move {
            let _g = out.global().acquire_owned().await;
            let _d = out.destination(&key).acquire_owned().await;
            let lmtp = key.starts_with("lmtp:");
            // LMTP is final delivery: its per-recipient replies are the
            // outcome, and the notices asked for are ours to send, so the DSN
            // parameters go only to SMTP peers.
            let txn = Transaction {
                from: msg.from.clone(),
                rcpts: idx.iter().map(|&i| msg.rcpts[i].address.clone()).collect(),
                size: body.len(),
                eight_bit,
                smtputf8: msg.smtputf8,
                dsn: if lmtp { Default::default() } else { msg.dsn() },
                rcpt_dsn: if lmtp { Vec::new() } else { idx.iter().map(|&i| msg.rcpts[i].dsn()).collect() },
                // LMTP is final delivery: REQUIRETLS ends here.
                requiretls: msg.requiretls && !lmtp,
            };
            let d = match (&out.lmtp, lmtp) {
                (Some(t), true) => remote::lmtp(t, &out.remote.hostname, &txn, &body, out.remote.reply_timeout).await,
                // With a relayhost the key names it and the domain is not looked up.
                _ => {
                    // RFC 8689 §5: `TLS-Required: No` sets the domain's policies aside.
                    let sts = if msg.tls_optional { Default::default() } else { out.mta_sts(&key).await };
                    let mut remote_cfg = std::borrow::Cow::Borrowed(&out.remote);
                    if msg.tls_optional {
                        remote_cfg.to_mut().dane = false;
                    }
                    let mut d = remote::deliver(&out.resolver, &remote_cfg, &key, sts.policy.as_ref(), &txn, &body).await;
                    if let Some((result, detail)) = sts.failure {
                        d.tls_sessions.insert(0, TlsSession { result, mx: String::new(), receiving: None, sending: None, detail });
                    }
                    out.record_tls(&key, &d).await;
                    d
                }
            };
            (key, idx, d)
        }
    });
    let results: Vec<(String, Vec<usize>, Delivery)> = futures_util::future::join_all(attempts).await;

    let now = chrono::Utc::now().timestamp();
    let expired = ctx.schedule.expired(mx6_queue::id::age(&job.msg.id));
    let age = mx6_queue::id::age(&job.msg.id).as_secs_f64();
    let m = &ctx.metrics;
    let mut tally = Tally::default();
    for (key, idx, d) in results {
        let lmtp = key.starts_with("lmtp:");
        // Local (LMTP) deliveries count under the client's family, as Maildir ones do.
        let family = match (&d.peer, out.remote.preference) {
            (Some((_, a)), _) => family_of(a),
            (None, _) if lmtp => job.client_family(),
            (None, AddressPreference::Ipv4Only) => "ipv4",
            (None, _) => "ipv6",
        };
        let relay = match &d.peer {
            Some((h, a)) => format!("{h}[{}]:{}", a.ip(), a.port()),
            None if lmtp => key.clone(),
            None => "none".into(),
        };
        let tls_result = d.tls_result.map(|r| r.as_str()).unwrap_or("none");
        for s in d.tls_sessions.iter().filter(|s| s.receiving.is_some()) {
            let f = s.receiving.map(|ip| mx6_policy::Family::of(ip).as_str()).unwrap_or(family);
            m.delivery_tls.with_label_values(&[f, d.tls_source.as_str(), s.result.as_str()]).inc();
        }
        for (i, r) in idx.into_iter().zip(d.rcpts) {
            let to = job.msg.rcpts[i].address.clone();
            let remote_mta = d.peer.as_ref().map(|(h, _)| h.as_str());
            let fate = outcome::remote(&r, expired, i, &to, remote_mta);
            let (status, result) = fate.labels(expired);
            m.delivery(family, result, age);
            tracing::info!(
                queue_id = %job.msg.id, from = %format!("<{}>", job.msg.from), to = %to, relay = %relay, family,
                tls = d.tls, tls_policy = d.tls_source.as_str(), tls_result, dsn = d.dsn, delay = format!("{age:.3}"), status, "{}", r.reply().text()
            );
            if let (Fate::Delivered, RcptResult::Delivered(reply), true) = (&fate, &r, notice::wants_success(&job.msg, i)) {
                // RFC 3461 §5.2.2: a peer that speaks DSN got the parameters and
                // reports success itself; one that does not makes it "relayed".
                let action = if lmtp { Some(Action::Delivered) } else { (!d.dsn).then_some(Action::Relayed) };
                if let Some(a) = action {
                    tally.successes.push(notice::succeeded(&job.msg, i, a, remote_mta, Some(reply), now));
                }
            }
            tally.record(&mut job, i, fate);
        }
    }
    tally.successes.splice(0..0, std::mem::take(&mut job.successes));
    notice::settle(&ctx, &mut job, &mut tally, now).await;
    tally.release_if_finished(&job);
    if !tally.entries.is_empty() {
        if let Err(e) = ctx.spool.done(std::mem::take(&mut tally.entries)).await {
            tracing::error!(queue_id = %job.msg.id, error = %e, "could not record delivery outcomes");
        }
    }
    match tally.deferred.take() {
        Some(e) => {
            notice::warn_if_delayed(&ctx, &mut job, &tally.delays).await;
            ctx.retry(job, &e);
        }
        None if job.finished() => ctx.registry.finished(&job.msg.id),
        None => {}
    }
}
