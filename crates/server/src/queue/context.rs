//! What every part of the queue shares: the spool, the schedule, the
//! hand-off channel back to the queue manager, metrics, destinations and the
//! registry; the [`Job`] that travels between them; and the retry wait
//! (RFC 5321 §4.5.4.1), which honours hold, release, delete and flush.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mx6_queue::schedule::Schedule;
use mx6_queue::{Location, QueuedMessage, SpoolHandle};
use tokio::sync::mpsc;

use crate::admin::metrics::Metrics;
use crate::queue::destinations::Destinations;
use crate::queue::registry::Registry;

/// A message on its way through the queue.
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

impl Job {
    /// A message just committed to the spool.
    pub fn new(msg: QueuedMessage, loc: Location, body: Arc<Vec<u8>>) -> Job {
        let n = msg.rcpts.len();
        Job { msg: Arc::new(msg), loc, body: Some(body), done: vec![false; n], failures: 0, recovered: false }
    }

    /// The family of the client the message came from (`ipv6` when unknown),
    /// for local deliveries, which have no peer.
    pub fn client_family(&self) -> &'static str {
        self.msg.client.parse::<std::net::IpAddr>().map(|ip| mx6_policy::Family::of(ip).as_str()).unwrap_or("ipv6")
    }

    pub fn finished(&self) -> bool {
        self.done.iter().all(|d| *d)
    }
}

pub struct Ctx {
    pub spool: SpoolHandle,
    pub data_dir: PathBuf,
    /// The Maildir template of `[local] maildir`.
    pub maildir: String,
    pub hostname: String,
    pub schedule: Schedule,
    /// Back to the queue manager.
    pub tx: mpsc::UnboundedSender<Job>,
    pub metrics: Arc<Metrics>,
    pub destinations: Arc<Destinations>,
    pub registry: Arc<Registry>,
}

impl Ctx {
    /// Hand a job to the queue manager as active.
    pub fn requeue(&self, job: Job) {
        self.metrics.queue_messages.with_label_values(&["active"]).inc();
        let _ = self.tx.send(job);
    }

    /// A delivery attempt left recipients open: wait for the next attempt.
    pub fn retry(self: &Arc<Self>, mut job: Job, error: &str) {
        job.failures += 1;
        let delay = self.schedule.delay(job.failures);
        tracing::info!(queue_id = %job.msg.id, retry_in_secs = delay.as_secs(), attempts = job.failures, "delivery deferred");
        let next = chrono::Utc::now().timestamp() + delay.as_secs() as i64;
        self.registry.deferred(&job.msg.id, &job.done, job.failures, next, error);
        self.metrics.queue_messages.with_label_values(&["deferred"]).inc();
        tokio::spawn(wait_then_requeue(self.clone(), job, delay));
    }

    /// Held or deleted before its attempt: park it without an attempt.
    pub fn park(self: &Arc<Self>, job: Job) {
        self.metrics.queue_messages.with_label_values(&["active"]).dec();
        self.metrics.queue_messages.with_label_values(&["deferred"]).inc();
        tokio::spawn(wait_then_requeue(self.clone(), job, Duration::ZERO));
    }
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
            let entries = mx6_queue::ops::deletion(&job.msg.id, &job.done, job.loc.segment);
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
    ctx.requeue(job);
}
