//! Outbound delivery of queued messages: the open recipients for other domains
//! are grouped by destination (domain, or the relayhost), delivered with a
//! global and a per-destination limit on sessions, and every outcome is
//! recorded in the spool. Permanent failures, and temporary ones older than
//! `queue.max_age` (RFC 5321 §4.5.4.1), bounce: an RFC 3464 report goes to the
//! envelope sender, never to the null sender.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use mx6_delivery::remote::{self, AddressPreference, Delivery, RemoteConfig};
use mx6_dns::Resolver;
use mx6_queue::dsn::{self, Failure};
use mx6_queue::{DoneEntry, DoneStatus, QueuedMessage, Recipient};
use mx6_smtp::client::{RcptResult, Transaction};
use tokio::sync::Semaphore;

use crate::queue_manager::{Ctx, Job};

pub struct Outbound {
    pub resolver: Resolver,
    pub remote: RemoteConfig,
    global: Arc<Semaphore>,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    destination_limit: usize,
    /// Local domains (comparable form), for routing bounces.
    local_domains: Vec<String>,
    /// Local recipients go over LMTP.
    pub lmtp: Option<mx6_delivery::remote::LmtpTarget>,
}

impl Outbound {
    pub fn new(
        resolver: Resolver,
        remote: RemoteConfig,
        concurrency: usize,
        destination_limit: usize,
        local_domains: Vec<String>,
        lmtp: Option<mx6_delivery::remote::LmtpTarget>,
    ) -> Outbound {
        Outbound {
            resolver,
            remote,
            global: Arc::new(Semaphore::new(concurrency.max(1))),
            per_destination: Mutex::new(HashMap::new()),
            destination_limit: destination_limit.max(1),
            local_domains,
            lmtp,
        }
    }

    fn destination_permit(&self, key: &str) -> Arc<Semaphore> {
        let mut m = self.per_destination.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 10_000 {
            m.retain(|_, s| s.available_permits() < self.destination_limit);
        }
        m.entry(key.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.destination_limit))).clone()
    }

    /// Where a bounce to `addr` goes.
    fn route(&self, addr: &str) -> Recipient {
        let (user, domain) = addr.rsplit_once('@').unwrap_or((addr, ""));
        let d = mx6_policy::normalize_domain(domain);
        Recipient { address: addr.to_string(), local: self.local_domains.contains(&d).then(|| (user.to_lowercase(), d)) }
    }
}

fn domain_of(addr: &str) -> String {
    mx6_policy::normalize_domain(addr.rsplit_once('@').map(|(_, d)| d).unwrap_or(""))
}

/// One attempt at every open remote recipient of `job`; then record, bounce
/// and reschedule.
pub(crate) async fn attempt(ctx: Arc<Ctx>, mut job: Job) {
    let out = ctx.outbound.clone();
    let body = match &job.body {
        Some(b) => b.clone(),
        None => {
            let spool = ctx.spool.clone();
            let loc = job.loc;
            match tokio::task::spawn_blocking(move || spool.read_body(&loc)).await {
                Ok(Ok(b)) => Arc::new(b),
                _ => {
                    tracing::error!(queue_id = %job.msg.id, "can not read message from the spool; will retry");
                    return crate::queue_manager::retry(&ctx, job, "spool read failed");
                }
            }
        }
    };
    let open: Vec<usize> = (0..job.msg.rcpts.len()).filter(|&i| !job.done[i] && ctx.outbound_rcpt(&job.msg.rcpts[i])).collect();
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for i in open {
        let key = match (&out.remote.relayhost, &job.msg.rcpts[i].local, &out.lmtp) {
            (_, Some(_), Some(t)) => t.to_string(),
            (Some(r), None, _) => format!("[{}]:{}", r.host, r.port),
            (None, None, _) => domain_of(&job.msg.rcpts[i].address),
            (_, Some(_), None) => continue, // Maildir, handled by the queue manager
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
            let _g = out.global.clone().acquire_owned().await;
            let dest = out.destination_permit(&key);
            let _d = dest.acquire_owned().await;
            let txn = Transaction {
                from: msg.from.clone(),
                rcpts: idx.iter().map(|&i| msg.rcpts[i].address.clone()).collect(),
                size: body.len(),
                eight_bit,
                smtputf8: msg.smtputf8,
            };
            let d = match (&out.lmtp, key.starts_with("lmtp:")) {
                (Some(t), true) => remote::lmtp(t, &out.remote.hostname, &txn, &body, out.remote.reply_timeout).await,
                // With a relayhost the key names it and the domain is not looked up.
                _ => remote::deliver(&out.resolver, &out.remote, &key, &txn, &body).await,
            };
            (key, idx, d)
        }
    });
    let results: Vec<(String, Vec<usize>, Delivery)> = futures_util::future::join_all(attempts).await;

    let expired = ctx.schedule.expired(mx6_queue::id::age(&job.msg.id));
    let age = mx6_queue::id::age(&job.msg.id).as_secs_f64();
    let m = &ctx.metrics;
    let mut entries = Vec::new();
    let mut failures = Vec::new();
    let mut deferred: Option<String> = None;
    for (key, idx, d) in results {
        let lmtp = key.starts_with("lmtp:");
        // Local (LMTP) deliveries count under the client's family, as Maildir ones do.
        let client_family = job.msg.client.parse::<std::net::IpAddr>().map(|ip| mx6_policy::Family::of(ip).as_str()).unwrap_or("ipv6");
        let family = match (&d.peer, out.remote.preference) {
            (Some((_, a)), _) => family_of(a),
            (None, _) if lmtp => client_family,
            (None, AddressPreference::Ipv4Only) => "ipv4",
            (None, _) => "ipv6",
        };
        let relay = match &d.peer {
            Some((h, a)) => format!("{h}[{}]:{}", a.ip(), a.port()),
            None if lmtp => key.clone(),
            None => "none".into(),
        };
        for (i, r) in idx.into_iter().zip(d.rcpts) {
            let to = &job.msg.rcpts[i].address;
            let reply = r.reply().text();
            let (status, result) = match &r {
                RcptResult::Delivered(_) => ("sent", "delivered"),
                RcptResult::Failed(_) => ("bounced", "bounced"),
                RcptResult::Deferred(_) if expired => ("expired", "bounced"),
                RcptResult::Deferred(_) => ("deferred", "deferred"),
            };
            m.delivery(family, result, age);
            tracing::info!(
                queue_id = %job.msg.id,
                from = %format!("<{}>", job.msg.from),
                to = %to,
                relay = %relay,
                family,
                tls = d.tls,
                delay = format!("{age:.3}"),
                status,
                "{reply}"
            );
            match (&r, status) {
                (RcptResult::Delivered(_), _) => {
                    job.done[i] = true;
                    entries.push(DoneEntry { id: job.msg.id.clone(), rcpt: i, status: DoneStatus::Delivered, release: None });
                }
                (_, "bounced") | (_, "expired") => {
                    job.done[i] = true;
                    entries.push(DoneEntry { id: job.msg.id.clone(), rcpt: i, status: DoneStatus::Bounced, release: None });
                    let (st, diag) = if status == "expired" {
                        ("4.4.7".to_string(), format!("delivery time expired; last error: {reply}"))
                    } else {
                        (r.reply().status(), reply.clone())
                    };
                    failures.push(Failure {
                        recipient: to.clone(),
                        status: st,
                        remote_mta: d.peer.as_ref().map(|(h, _)| h.clone()),
                        diagnostic: diag,
                    });
                }
                _ => deferred = Some(reply.clone()),
            }
        }
    }
    if !entries.is_empty() && job.done.iter().all(|d| *d) {
        if let Some(last) = entries.last_mut() {
            last.release = Some(job.loc.segment);
        }
    }
    if !entries.is_empty() {
        if let Err(e) = ctx.spool.done(entries).await {
            tracing::error!(queue_id = %job.msg.id, error = %e, "could not record delivery outcomes");
        }
    }
    if !failures.is_empty() {
        bounce(&ctx, &job.msg, &body, &failures).await;
    }
    m.queue_messages.with_label_values(&["active"]).dec();
    match deferred {
        Some(e) => crate::queue_manager::retry(&ctx, job, &e),
        None if job.done.iter().all(|d| *d) => ctx.registry.finished(&job.msg.id),
        None => {}
    }
}

fn family_of(a: &SocketAddr) -> &'static str {
    mx6_policy::Family::of(a.ip()).as_str()
}

/// Queue a bounce for `failures` to the sender of `msg` (not for the null sender).
pub(crate) async fn bounce(ctx: &Arc<Ctx>, msg: &QueuedMessage, body: &[u8], failures: &[Failure]) {
    if msg.from.is_empty() {
        tracing::info!(queue_id = %msg.id, "undeliverable bounce (null sender) is dropped, RFC 5321 §6.1");
        return;
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
        rcpts: vec![ctx.outbound.route(&msg.from)],
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
            let n = bounce.rcpts.len();
            let job = Job { msg: Arc::new(bounce), loc, body: Some(full), done: vec![false; n], failures: 0, recovered: false };
            ctx.metrics.queue_messages.with_label_values(&["active"]).inc();
            let _ = ctx.tx.send(job);
        }
        Err(e) => tracing::error!(queue_id = %msg.id, error = %e, "could not queue the bounce"),
    }
}
