//! The queue manager: takes committed messages (new ones from sessions, old ones
//! recovered from the spool on start), delivers their local recipients into
//! Maildirs, records each outcome durably, and retries failures on the
//! `[queue]` schedule. Recipients for other domains go to [`crate::outbound`].
//!
//! A delivery failure (permissions, disk full) is never a loss: the recipient
//! stays open in the spool and is tried again after `retry_initial`, doubling up
//! to `retry_max`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mx6_delivery::maildir;
use mx6_policy::Family;
use mx6_queue::dsn::Failure;
use mx6_queue::schedule::Schedule;
use mx6_queue::{DoneEntry, DoneStatus, Location, QueuedMessage, Recipient, Recovered, SpoolHandle};
use tokio::sync::{mpsc, Semaphore};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::queue_registry::Registry;

/// Delivery batches running at once: one writes while the other waits on fsync.
const CONCURRENCY: usize = 2;
/// Most jobs in one batch.
const MAX_BATCH: usize = 256;

pub struct Job {
    pub msg: Arc<QueuedMessage>,
    pub loc: Location,
    /// The body when it is still in memory (fresh messages).
    pub body: Option<Arc<Vec<u8>>>,
    pub done: Vec<bool>,
    pub failures: u32,
    /// Came from the spool at start: a delivery may already have happened.
    pub recovered: bool,
}

#[derive(Clone)]
pub struct QueueManager {
    tx: mpsc::UnboundedSender<Job>,
    running: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
}

pub(crate) struct Ctx {
    pub(crate) spool: SpoolHandle,
    data_dir: PathBuf,
    maildir: String,
    pub(crate) hostname: String,
    pub(crate) schedule: Schedule,
    pub(crate) tx: mpsc::UnboundedSender<Job>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) outbound: Arc<Outbound>,
    pub(crate) registry: Arc<Registry>,
}

impl Ctx {
    /// Whether recipient `r` goes out through [`crate::outbound`] (remote, or
    /// local over LMTP) rather than into a Maildir here.
    pub(crate) fn outbound_rcpt(&self, r: &Recipient) -> bool {
        r.local.is_none() || self.outbound.lmtp.is_some()
    }
}

impl QueueManager {
    pub fn start(cfg: &Config, spool: SpoolHandle, recovered: Vec<Recovered>, metrics: Arc<Metrics>, outbound: Outbound) -> QueueManager {
        let data_dir = cfg.data_dir.clone();
        let maildir = cfg.local.maildir.clone();
        let hostname = cfg.hostname.clone();
        let schedule = Schedule { initial: cfg.queue.retry_initial, max: cfg.queue.retry_max, max_age: cfg.queue.max_age };
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let running = Arc::new(Semaphore::new(CONCURRENCY));
        let registry = Arc::new(Registry::new(&data_dir));
        let ctx = Arc::new(Ctx {
            spool,
            data_dir,
            maildir,
            hostname,
            schedule,
            tx: tx.clone(),
            metrics: metrics.clone(),
            outbound: Arc::new(outbound),
            registry: registry.clone(),
        });
        metrics.queue_messages.with_label_values(&["active"]).add(recovered.len() as i64);
        for r in recovered {
            let mut done = vec![false; r.message.rcpts.len()];
            for i in r.done {
                done[i] = true;
            }
            let msg = Arc::new(r.message);
            registry.track(&msg, r.location, &done, 0);
            let _ = tx.send(Job { msg, loc: r.location, body: None, done, failures: 0, recovered: true });
        }
        let sem = running.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let Ok(permit) = sem.clone().acquire_owned().await else { break };
                // Whatever arrived while the workers were busy goes in one batch.
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => batch.push(j),
                        Err(_) => break,
                    }
                }
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    deliver_batch(&ctx, batch).await;
                    drop(permit);
                });
            }
        });
        QueueManager { tx, running, metrics, registry }
    }

    pub fn submit(&self, job: Job) {
        self.registry.track(&job.msg, job.loc, &job.done, job.failures);
        self.metrics.queue_messages.with_label_values(&["active"]).inc();
        let _ = self.tx.send(job);
    }

    /// Wait (at most `limit`) for the deliveries in progress to finish. Messages
    /// not yet started stay in the spool for the next start.
    pub async fn drain(&self, limit: Duration) {
        if let Ok(Ok(p)) = tokio::time::timeout(limit, self.running.acquire_many(CONCURRENCY as u32)).await {
            p.forget();
        }
        self.running.close();
    }
}

/// A message with local recipients that expired: what its bounce needs.
type Expired = (Arc<QueuedMessage>, Location, Option<Arc<Vec<u8>>>, Vec<Failure>);

/// What happened to one job's local recipients in a batch.
struct JobResult {
    job: Job,
    read_error: Option<String>,
    outcomes: Vec<(usize, Result<maildir::Outcome, maildir::MaildirError>)>,
}

/// Deliver a batch of jobs: one blocking pass writes every Maildir file with
/// group commit, then one spool write records every outcome.
async fn deliver_batch(ctx: &Arc<Ctx>, jobs: Vec<Job>) {
    // Held or deleted while they waited: not delivered now.
    let (jobs, parked): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| ctx.registry.flags(&j.msg.id) == (false, false));
    for job in parked {
        ctx.metrics.queue_messages.with_label_values(&["active"]).dec();
        ctx.metrics.queue_messages.with_label_values(&["deferred"]).inc();
        tokio::spawn(wait_then_requeue(ctx.clone(), job, Duration::ZERO));
    }
    let ctx2 = ctx.clone();
    let results = match tokio::task::spawn_blocking(move || write_batch(&ctx2, jobs)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "delivery worker failed; messages stay queued until restart");
            return;
        }
    };
    let mut entries = Vec::new();
    let mut retries = Vec::new();
    let mut remote = Vec::new();
    let mut expired_rcpts = Vec::new();
    let m = &ctx.metrics;
    for JobResult { mut job, read_error, outcomes } in results {
        let family = job.msg.client.parse::<std::net::IpAddr>().map(|ip| Family::of(ip).as_str()).unwrap_or("ipv6");
        let age = mx6_queue::id::age(&job.msg.id).as_secs_f64();
        m.queue_messages.with_label_values(&["active"]).dec();
        if let Some(err) = read_error {
            tracing::error!(queue_id = %job.msg.id, error = %err, "can not read message from the spool; will retry");
            retries.push((job, format!("spool read: {err}")));
            continue;
        }
        let mut failed: Option<String> = None;
        let before = entries.len();
        for (i, r) in outcomes {
            match r {
                Ok(outcome) => {
                    job.done[i] = true;
                    m.delivery(family, "delivered", age);
                    entries.push(DoneEntry { id: job.msg.id.clone(), rcpt: i, status: DoneStatus::Delivered, release: None });
                    let (path, note) = match &outcome {
                        maildir::Outcome::Delivered(p) => (p, "delivered to maildir"),
                        maildir::Outcome::AlreadyDelivered(p) => (p, "already delivered to maildir before a restart"),
                    };
                    tracing::info!(
                        queue_id = %job.msg.id,
                        from = %format!("<{}>", job.msg.from),
                        to = %job.msg.rcpts[i].address,
                        relay = "local",
                        family,
                        delay = format!("{age:.3}"),
                        status = "sent",
                        file = %path.display(),
                        "{note}"
                    );
                }
                Err(e) => {
                    // Past queue.max_age the recipient bounces instead (RFC 5321 §4.5.4.1).
                    let expired = ctx.schedule.expired(mx6_queue::id::age(&job.msg.id));
                    let (status, result) = if expired { ("expired", "bounced") } else { ("deferred", "deferred") };
                    m.delivery(family, result, age);
                    tracing::warn!(
                        queue_id = %job.msg.id,
                        from = %format!("<{}>", job.msg.from),
                        to = %job.msg.rcpts[i].address,
                        relay = "local",
                        family,
                        delay = format!("{age:.3}"),
                        status,
                        error = %e,
                        "local delivery failed"
                    );
                    if expired {
                        job.done[i] = true;
                        entries.push(DoneEntry { id: job.msg.id.clone(), rcpt: i, status: DoneStatus::Bounced, release: None });
                        expired_rcpts.push((
                            job.msg.clone(),
                            job.loc,
                            job.body.clone(),
                            Failure {
                                recipient: job.msg.rcpts[i].address.clone(),
                                status: "4.4.7".into(),
                                remote_mta: None,
                                diagnostic: format!("delivery time expired; local delivery failed: {e}"),
                            },
                        ));
                    } else {
                        failed = Some(e.to_string());
                    }
                }
            }
        }
        if entries.len() > before && job.done.iter().all(|d| *d) {
            if let Some(last) = entries.last_mut() {
                last.release = Some(job.loc.segment);
            }
        }
        let relay_open = (0..job.msg.rcpts.len()).any(|i| !job.done[i] && ctx.outbound_rcpt(&job.msg.rcpts[i]));
        if let Some(e) = failed {
            retries.push((job, e));
        } else if relay_open {
            remote.push(job);
        } else if job.done.iter().all(|d| *d) {
            ctx.registry.finished(&job.msg.id);
        }
    }
    if !entries.is_empty() {
        if let Err(e) = ctx.spool.done(entries).await {
            // The deliveries happened; the record of them did not. After a
            // restart the Maildir file names show they are done.
            tracing::error!(error = %e, "could not record delivery outcomes");
        }
    }
    for (job, error) in retries {
        retry(ctx, job, &error);
    }
    // Bounces for local recipients that expired, one per message.
    let mut by_msg: Vec<Expired> = Vec::new();
    for (msg, loc, body, f) in expired_rcpts {
        match by_msg.iter_mut().find(|(m, ..)| m.id == msg.id) {
            Some(e) => e.3.push(f),
            None => by_msg.push((msg, loc, body, vec![f])),
        }
    }
    for (msg, loc, body, failures) in by_msg {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let body = match body {
                Some(b) => b,
                None => match ctx.spool.read_body(&loc) {
                    Ok(b) => Arc::new(b),
                    Err(e) => {
                        tracing::error!(queue_id = %msg.id, error = %e, "can not read the expired message for its bounce");
                        return;
                    }
                },
            };
            crate::outbound::bounce(&ctx, &msg, &body, &failures).await;
        });
    }
    for job in remote {
        m.queue_messages.with_label_values(&["active"]).inc();
        tokio::spawn(crate::outbound::attempt(ctx.clone(), job));
    }
}

fn write_batch(ctx: &Ctx, jobs: Vec<Job>) -> Vec<JobResult> {
    let mut bodies: Vec<Result<Arc<Vec<u8>>, String>> = Vec::with_capacity(jobs.len());
    for job in &jobs {
        bodies.push(match &job.body {
            Some(b) => Ok(b.clone()),
            None => ctx.spool.read_body(&job.loc).map(Arc::new).map_err(|e| e.to_string()),
        });
    }
    let mut items = Vec::new();
    let mut owners = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let Ok(body) = &bodies[j] else { continue };
        let arrival = mx6_queue::id::micros(&job.msg.id).unwrap_or(0);
        let check = job.recovered || job.failures > 0;
        for (i, r) in job.msg.rcpts.iter().enumerate() {
            let Some((user, domain)) = &r.local else { continue };
            if job.done[i] || ctx.outbound_rcpt(r) {
                continue;
            }
            let mut dir = maildir::mailbox_dir(&ctx.data_dir, &ctx.maildir, user, domain);
            if job.msg.junk {
                // Maildir++ subfolder, as Dovecot and Courier name it.
                dir.push(".Junk");
            }
            items.push(maildir::Item {
                dir,
                name: maildir::file_name(arrival, &job.msg.id, i, &ctx.hostname),
                header: format!("Return-Path: <{}>\r\nDelivered-To: {}\r\n", job.msg.from, r.address).into_bytes(),
                body: body.as_slice(),
                check_existing: check,
            });
            owners.push((j, i));
        }
    }
    let outcomes = maildir::deliver_batch(&items);
    drop(items);
    let mut results: Vec<JobResult> = Vec::with_capacity(jobs.len());
    for (job, body) in jobs.into_iter().zip(bodies) {
        results.push(JobResult { job, read_error: body.err(), outcomes: Vec::new() });
    }
    for ((j, i), o) in owners.into_iter().zip(outcomes) {
        results[j].outcomes.push((i, o));
    }
    results
}

pub(crate) fn retry(ctx: &Arc<Ctx>, mut job: Job, error: &str) {
    job.failures += 1;
    let delay = ctx.schedule.delay(job.failures);
    tracing::info!(queue_id = %job.msg.id, retry_in_secs = delay.as_secs(), attempts = job.failures, "delivery deferred");
    let next = chrono::Utc::now().timestamp() + delay.as_secs() as i64;
    ctx.registry.deferred(&job.msg.id, &job.done, job.failures, next, error);
    ctx.metrics.queue_messages.with_label_values(&["deferred"]).inc();
    tokio::spawn(wait_then_requeue(ctx.clone(), job, delay));
}

/// Wait for the next attempt (or a flush), stay while held, and honour a
/// delete; then hand the job back to the queue. Counted as deferred (or hold)
/// meanwhile.
async fn wait_then_requeue(ctx: Arc<Ctx>, job: Job, delay: Duration) {
    let m = ctx.metrics.clone();
    let wake = ctx.registry.track(&job.msg, job.loc, &job.done, job.failures);
    if !delay.is_zero() {
        let next = chrono::Utc::now().timestamp() + delay.as_secs() as i64;
        ctx.registry.deferred(&job.msg.id, &job.done, job.failures, next, "");
    }
    let mut state = "deferred";
    let mut sleep_for = delay;
    loop {
        if !sleep_for.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(sleep_for) => {}
                _ = wake.notified() => {}
            }
        }
        let (held, deleted) = ctx.registry.flags(&job.msg.id);
        if deleted {
            m.queue_messages.with_label_values(&[state]).dec();
            let open: Vec<usize> = (0..job.done.len()).filter(|&i| !job.done[i]).collect();
            let n = open.len();
            let entries: Vec<DoneEntry> = open
                .into_iter()
                .enumerate()
                .map(|(k, i)| DoneEntry {
                    id: job.msg.id.clone(),
                    rcpt: i,
                    status: DoneStatus::Deleted,
                    release: (k + 1 == n).then_some(job.loc.segment),
                })
                .collect();
            if let Err(e) = ctx.spool.done(entries).await {
                tracing::error!(queue_id = %job.msg.id, error = %e, "could not record the deletion");
            }
            tracing::info!(queue_id = %job.msg.id, from = %format!("<{}>", job.msg.from), status = "deleted", "removed from the queue by the operator");
            ctx.registry.finished(&job.msg.id);
            return;
        }
        if held {
            if state != "hold" {
                m.queue_messages.with_label_values(&[state]).dec();
                m.queue_messages.with_label_values(&["hold"]).inc();
                state = "hold";
            }
            wake.notified().await;
            sleep_for = Duration::ZERO;
            continue;
        }
        break;
    }
    m.queue_messages.with_label_values(&[state]).dec();
    m.queue_messages.with_label_values(&["active"]).inc();
    let _ = ctx.tx.send(job);
}
