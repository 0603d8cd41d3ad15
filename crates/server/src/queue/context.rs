//! What every part of the queue shares: the spool, the schedule, the
//! hand-off channel back to the queue manager, metrics, destinations and the
//! registry; the [`Job`] that travels between them (a message loaded for
//! delivery); and what happens when an attempt leaves recipients open (the
//! message waits on disk for its next attempt, RFC 5321 §4.5.4.1), when an
//! operator deletes it, or when its record turns out corrupt.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mx6_auth::sign::DkimKey;
use mx6_queue::index::Effect;
use mx6_queue::schedule::Schedule;
use mx6_queue::{DoneEntry, DoneStatus, Location, QueuedMessage, SpoolError, SpoolHandle};
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
    /// Attempts so far that left recipients open.
    pub failures: u32,
    /// Came from the spool at start: a delivery may already have happened.
    pub recovered: bool,
    /// Its delay warning has been sent.
    pub warned: bool,
    /// Success notices of Maildir deliveries in this pass, sent with those of
    /// the SMTP/LMTP recipients that follow (one notice per kind).
    pub successes: Vec<(usize, mx6_queue::dsn::Entry)>,
}

impl Job {
    /// A message just committed to the spool.
    pub fn new(msg: QueuedMessage, loc: Location, body: Arc<Vec<u8>>) -> Job {
        let n = msg.rcpts.len();
        Job {
            msg: Arc::new(msg),
            loc,
            body: Some(body),
            done: vec![false; n],
            failures: 0,
            recovered: false,
            warned: false,
            successes: Vec::new(),
        }
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
    /// To the queue manager.
    pub tx: mpsc::UnboundedSender<Job>,
    pub metrics: Arc<Metrics>,
    pub destinations: Arc<Destinations>,
    pub registry: Arc<Registry>,
    /// Keys for signing notices (those matching their From domain are used).
    pub dkim: Arc<Vec<DkimKey>>,
    /// `queue.delay_warning`; zero = never.
    pub delay_warning: Duration,
    /// `[reports] receive`: local addresses whose mail is read for reports.
    pub report_inboxes: Vec<String>,
}

impl Ctx {
    /// A new message (a bounce) for the queue: delivered now when a slot is
    /// free, otherwise it waits on disk.
    pub fn submit(&self, job: Job) {
        if self.registry.admit(&job.msg.id, job.loc, &job.done, false) {
            let _ = self.tx.send(job);
        }
    }

    /// A delivery attempt left recipients open: it waits for the next one on
    /// disk (its envelope and body leave memory).
    pub fn retry(self: &Arc<Self>, mut job: Job, error: &str) {
        job.failures += 1;
        if job.failures == 1 {
            // After a restart it is then scheduled by its age, not tried at once.
            self.spool.mark_deferred(&job.msg.id);
        }
        let delay = self.schedule.delay(job.failures);
        tracing::info!(queue_id = %job.msg.id, retry_in_secs = delay.as_secs(), attempts = job.failures, "delivery deferred");
        let next = super::registry::now() + delay.as_secs() as i64;
        let effect = self.registry.deferred(&job.msg.id, &job.done, job.failures, next, error);
        self.apply(effect, &job.msg.from);
    }

    /// Held or deleted before its attempt: back to the index without one.
    pub fn park(self: &Arc<Self>, job: Job) {
        let effect = self.registry.deferred(&job.msg.id, &job.done, job.failures, super::registry::now(), "");
        self.apply(effect, &job.msg.from);
    }

    /// Carry out what the registry asks after an operation.
    pub fn apply(self: &Arc<Self>, effect: Option<Effect>, from: &str) {
        let Some(Effect::Delete { id, loc, done }) = effect else { return };
        let ctx = self.clone();
        let from = from.to_string();
        tokio::spawn(async move { ctx.delete(&mx6_queue::index::format_id(id), loc, &done, &from).await });
    }

    /// Record an operator's deletion.
    pub async fn delete(&self, id: &str, loc: Location, done: &[bool], from: &str) {
        let entries = mx6_queue::ops::deletion(id, done, loc.segment);
        if let Err(e) = self.spool.done(entries).await {
            tracing::error!(queue_id = %id, error = %e, "could not record the deletion");
        }
        tracing::info!(queue_id = %id, from = %format!("<{from}>"), status = "deleted", "removed from the queue by the operator");
        self.registry.finished(id);
    }

    /// The message's record is corrupt: it cannot be delivered. Its open
    /// recipients are recorded as such, the record is counted and logged.
    pub async fn corrupt(&self, job: Job, error: &SpoolError) {
        self.metrics.spool_corrupt.inc();
        tracing::error!(queue_id = %job.msg.id, from = %format!("<{}>", job.msg.from), error = %error, "the spool record of this message is corrupt; it cannot be delivered");
        let open: Vec<usize> = (0..job.done.len()).filter(|&i| !job.done[i]).collect();
        let n = open.len();
        let entries: Vec<DoneEntry> = open
            .into_iter()
            .enumerate()
            .map(|(k, i)| DoneEntry {
                id: job.msg.id.clone(),
                rcpt: i,
                status: DoneStatus::Corrupt,
                release: (k + 1 == n).then_some(job.loc.segment),
            })
            .collect();
        if let Err(e) = self.spool.done(entries).await {
            tracing::error!(queue_id = %job.msg.id, error = %e, "could not record the corrupt message");
        }
        self.registry.finished(&job.msg.id);
    }
}
