//! The queue manager: takes committed messages (new ones from sessions, old ones
//! recovered from the spool on start), delivers their local recipients into
//! Maildirs, records each outcome durably, and retries failures on the
//! `[queue]` schedule. Recipients for other domains wait in the spool for
//! outbound delivery, which this version does not have.
//!
//! A delivery failure (permissions, disk full) is never a loss: the recipient
//! stays open in the spool and is tried again after `retry_initial`, doubling up
//! to `retry_max`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mx6_delivery::maildir;
use mx6_queue::schedule::Schedule;
use mx6_queue::{DoneEntry, DoneStatus, Location, QueuedMessage, Recovered, SpoolHandle};
use tokio::sync::{mpsc, Semaphore};

/// Deliveries running at once.
const CONCURRENCY: usize = 64;

pub struct Job {
    pub msg: Arc<QueuedMessage>,
    pub loc: Location,
    /// The body when it is still in memory (fresh messages).
    pub body: Option<Arc<Vec<u8>>>,
    pub done: Vec<bool>,
    pub failures: u32,
    /// Came from the spool at start: a delivery may already have happened.
    pub recovered: bool,
    pub enqueued: Instant,
}

#[derive(Clone)]
pub struct QueueManager {
    tx: mpsc::UnboundedSender<Job>,
    running: Arc<Semaphore>,
}

struct Ctx {
    spool: SpoolHandle,
    data_dir: PathBuf,
    maildir: String,
    hostname: String,
    schedule: Schedule,
    tx: mpsc::UnboundedSender<Job>,
}

impl QueueManager {
    pub fn start(
        spool: SpoolHandle,
        data_dir: PathBuf,
        maildir: String,
        hostname: String,
        schedule: Schedule,
        recovered: Vec<Recovered>,
    ) -> QueueManager {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let running = Arc::new(Semaphore::new(CONCURRENCY));
        let ctx = Arc::new(Ctx { spool, data_dir, maildir, hostname, schedule, tx: tx.clone() });
        for r in recovered {
            let mut done = vec![false; r.message.rcpts.len()];
            for i in r.done {
                done[i] = true;
            }
            let _ = tx.send(Job {
                msg: Arc::new(r.message),
                loc: r.location,
                body: None,
                done,
                failures: 0,
                recovered: true,
                enqueued: Instant::now(),
            });
        }
        let sem = running.clone();
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let Ok(permit) = sem.clone().acquire_owned().await else { break };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    deliver(&ctx, job).await;
                    drop(permit);
                });
            }
        });
        QueueManager { tx, running }
    }

    pub fn submit(&self, job: Job) {
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

async fn deliver(ctx: &Arc<Ctx>, mut job: Job) {
    let body = match job.body.take() {
        Some(b) => b,
        None => {
            let spool = ctx.spool.clone();
            let loc = job.loc;
            match tokio::task::spawn_blocking(move || spool.read_body(&loc)).await {
                Ok(Ok(b)) => Arc::new(b),
                other => {
                    let err = match other {
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                        Ok(Ok(_)) => unreachable!(),
                    };
                    tracing::error!(queue_id = %job.msg.id, error = %err, "can not read message from the spool; will retry");
                    retry(ctx, job, None);
                    return;
                }
            }
        }
    };
    let todo: Vec<usize> = (0..job.msg.rcpts.len()).filter(|&i| !job.done[i] && job.msg.rcpts[i].local.is_some()).collect();
    let msg = job.msg.clone();
    let ctx2 = ctx.clone();
    let body2 = body.clone();
    let check = job.recovered || job.failures > 0;
    let results = tokio::task::spawn_blocking(move || {
        let arrival = mx6_queue::id::micros(&msg.id).unwrap_or(0);
        todo.into_iter()
            .map(|i| {
                let r = &msg.rcpts[i];
                let (user, domain) = r.local.as_ref().expect("filtered to local recipients");
                let dir = maildir::mailbox_dir(&ctx2.data_dir, &ctx2.maildir, user, domain);
                let name = maildir::file_name(arrival, &msg.id, i, &ctx2.hostname);
                let header = format!("Return-Path: <{}>\r\nDelivered-To: {}\r\n", msg.from, r.address);
                (i, maildir::deliver(&dir, &name, header.as_bytes(), &body2, check))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();

    let mut entries = Vec::new();
    let mut failed = Vec::new();
    for (i, r) in results {
        match r {
            Ok(outcome) => {
                job.done[i] = true;
                entries.push(DoneEntry { id: job.msg.id.clone(), rcpt: i, status: DoneStatus::Delivered, release: None });
                let (path, note) = match &outcome {
                    maildir::Outcome::Delivered(p) => (p, "delivered to maildir"),
                    maildir::Outcome::AlreadyDelivered(p) => (p, "already delivered to maildir before a restart"),
                };
                tracing::info!(
                    queue_id = %job.msg.id,
                    to = %job.msg.rcpts[i].address,
                    relay = "local",
                    delay = format!("{:.3}", job.enqueued.elapsed().as_secs_f64()),
                    status = "sent",
                    file = %path.display(),
                    "{note}"
                );
            }
            Err(e) => {
                tracing::warn!(queue_id = %job.msg.id, to = %job.msg.rcpts[i].address, relay = "local", status = "deferred", error = %e, "local delivery failed");
                failed.push(i);
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
            // The deliveries happened; the record of them did not. After a
            // restart the Maildir file names show they are done.
            tracing::error!(queue_id = %job.msg.id, error = %e, "could not record delivery outcome");
        }
    }
    let relay_open = (0..job.msg.rcpts.len()).any(|i| !job.done[i] && job.msg.rcpts[i].local.is_none());
    if relay_open && job.failures == 0 && !job.recovered {
        for r in job.msg.rcpts.iter().filter(|r| r.local.is_none()) {
            tracing::info!(queue_id = %job.msg.id, to = %r.address, status = "deferred", "waiting in the queue: outbound delivery is not available in this version");
        }
    }
    if !failed.is_empty() {
        retry(ctx, job, Some(body));
    }
}

fn retry(ctx: &Arc<Ctx>, mut job: Job, _body: Option<Arc<Vec<u8>>>) {
    job.failures += 1;
    let delay = ctx.schedule.delay(job.failures);
    let age = Duration::from_micros(
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros() as u64)
            .saturating_sub(mx6_queue::id::micros(&job.msg.id).unwrap_or(0)),
    );
    if ctx.schedule.expired(age) {
        // Returning the message needs outbound delivery (DSN); until then it is
        // kept and retried rather than dropped.
        tracing::error!(queue_id = %job.msg.id, age_secs = age.as_secs(), "message is past queue.max_age and still undeliverable; kept for retry");
    }
    tracing::info!(queue_id = %job.msg.id, retry_in_secs = delay.as_secs(), attempts = job.failures, "delivery deferred");
    let tx = ctx.tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = tx.send(job);
    });
}
