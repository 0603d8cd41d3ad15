//! The queue manager: takes committed messages (new ones from sessions, and
//! those of the spool recovered in the background after a start) and runs
//! delivery batches, at most two at once (one writes while the other waits on
//! fsync), each batch taking whatever arrived meanwhile. Local recipients are
//! delivered by [`crate::queue::local`], the others by [`crate::queue::remote`].
//!
//! Memory stays bounded however big the queue grows: at most
//! `queue.active_limit` messages are loaded for delivery; the others wait in
//! the registry's compact index and are loaded by the scheduler, oldest due
//! first, as slots free up.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mx6_config::{LocalConfig, QueueConfig};
use mx6_queue::schedule::Schedule;
use mx6_queue::spool::{Recovery, Report};
use mx6_queue::SpoolHandle;
use tokio::sync::{mpsc, Semaphore};

use crate::admin::metrics::Metrics;
use crate::queue::context::{Ctx, Job};
use crate::queue::destinations::Destinations;
use crate::queue::registry::Registry;

/// Delivery batches running at once: one writes while the other waits on fsync.
const CONCURRENCY: usize = 2;
/// Most jobs in one batch.
const MAX_BATCH: usize = 256;
/// A batch smaller than this waits [`GATHER`] for more before it is written.
const GATHER_BELOW: usize = 32;
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

fn drain(rx: &mut mpsc::UnboundedReceiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(j) => batch.push(j),
            Err(_) => break,
        }
    }
}

#[derive(Clone)]
pub struct QueueManager {
    tx: mpsc::UnboundedSender<Job>,
    running: Arc<Semaphore>,
    ctx: Arc<Ctx>,
    pub registry: Arc<Registry>,
}

/// What the queue manager is started with.
pub struct Start<'a> {
    pub queue: &'a QueueConfig,
    pub local: &'a LocalConfig,
    pub data_dir: &'a Path,
    pub hostname: &'a str,
    pub spool: SpoolHandle,
    pub metrics: Arc<Metrics>,
    pub destinations: Destinations,
    /// Keys for signing notices.
    pub dkim: Arc<Vec<mx6_auth::sign::DkimKey>>,
    /// `[reports] receive`.
    pub report_inboxes: Vec<String>,
}

impl QueueManager {
    pub fn start(s: Start<'_>) -> QueueManager {
        let schedule = Schedule { initial: s.queue.retry_initial, max: s.queue.retry_max, max_age: s.queue.max_age };
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let running = Arc::new(Semaphore::new(CONCURRENCY));
        let registry = Arc::new(Registry::new(s.spool.dir(), s.queue.active_limit, s.metrics.clone()));
        let ctx = Arc::new(Ctx {
            spool: s.spool,
            data_dir: s.data_dir.to_path_buf(),
            maildir: s.local.maildir.clone(),
            hostname: s.hostname.to_string(),
            schedule,
            tx: tx.clone(),
            metrics: s.metrics,
            destinations: Arc::new(s.destinations),
            registry: registry.clone(),
            dkim: s.dkim,
            delay_warning: s.queue.delay_warning,
            report_inboxes: s.report_inboxes,
        });
        let sem = running.clone();
        let c = ctx.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let Ok(permit) = sem.clone().acquire_owned().await else { break };
                // Whatever arrived while the workers were busy goes in one
                // batch; a small one waits a moment for more, so under load
                // one pass (one blocking hand-off, one fsync per Maildir, one
                // spool record) serves many messages.
                let mut batch = vec![first];
                drain(&mut rx, &mut batch);
                if batch.len() < GATHER_BELOW {
                    tokio::time::sleep(GATHER).await;
                    drain(&mut rx, &mut batch);
                }
                let ctx = c.clone();
                tokio::spawn(async move {
                    crate::queue::local::deliver_batch(&ctx, batch).await;
                    drop(permit);
                });
            }
        });
        tokio::spawn(schedule_loop(ctx.clone()));
        QueueManager { tx, running, ctx, registry }
    }

    /// A message a session just committed (`hold`: quarantined by a milter).
    /// Queue a message mx6 wrote (a report) for `rcpts`; its queue id.
    pub async fn queue_generated(&self, rcpts: &[String], message: Vec<u8>) -> Result<String, mx6_queue::SpoolError> {
        let id = mx6_queue::id::next();
        crate::queue::generated::queue(&self.ctx, &id, rcpts, message, Default::default()).await?;
        Ok(id)
    }

    pub fn submit(&self, job: Job, hold: bool) {
        if self.registry.admit(&job.msg.id, job.loc, &job.done, hold) {
            let _ = self.tx.send(job);
        }
    }

    /// An operator action (`mx6 queue hold|release|delete|flush`): how many
    /// messages it applied to. Deletions of waiting messages are recorded
    /// before this returns.
    pub async fn act(&self, action: mx6_queue::ops::Action, id: Option<&str>) -> Result<usize, String> {
        let (n, effects) = self.registry.act(action, id)?;
        for mx6_queue::index::Effect::Delete { id, loc, done } in effects {
            let from = self.ctx.spool.read_envelope(&loc).map(|m| m.from).unwrap_or_default();
            self.ctx.delete(&mx6_queue::index::format_id(id), loc, &done, &from).await;
        }
        Ok(n)
    }

    /// Read the spool's old segments in the background into the queue.
    pub fn recover(&self, recovery: Recovery) -> tokio::task::JoinHandle<Option<Report>> {
        let ctx = self.ctx.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let reg = ctx.registry.clone();
            let schedule = ctx.schedule;
            match recovery.run(|r| reg.recovered(&r, &schedule)) {
                Ok(report) => {
                    ctx.metrics.spool_corrupt.inc_by(report.corrupt);
                    if report.messages > 0 || report.corrupt > 0 || report.incomplete > 0 {
                        tracing::info!(
                            messages = report.messages,
                            corrupt = report.corrupt,
                            incomplete = report.incomplete,
                            segments_removed = report.segments_removed,
                            secs = format!("{:.2}", started.elapsed().as_secs_f64()),
                            "recovered queued messages from the spool"
                        );
                    }
                    reg.wake.notify_one();
                    Some(report)
                }
                Err(e) => {
                    tracing::error!(error = %e, "spool recovery failed; the messages it did not reach stay in the spool for the next start");
                    None
                }
            }
        })
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

/// Load due messages into free active slots, oldest due first; sleep until
/// the next is due or the registry says something changed.
async fn schedule_loop(ctx: Arc<Ctx>) {
    loop {
        let due = ctx.registry.take_due();
        if !due.is_empty() {
            let spool = ctx.spool.clone();
            let loaded = tokio::task::spawn_blocking(move || due.into_iter().map(|d| (spool.read_envelope(&d.loc), d)).collect::<Vec<_>>())
                .await
                .unwrap_or_default();
            for (env, d) in loaded {
                let id = mx6_queue::index::format_id(d.id);
                match env {
                    Ok(msg) => {
                        let job = Job {
                            msg: Arc::new(msg),
                            loc: d.loc,
                            body: None,
                            done: d.done,
                            failures: d.attempts,
                            recovered: true,
                            warned: d.warned,
                            successes: Vec::new(),
                        };
                        let _ = ctx.tx.send(job);
                    }
                    Err(e) if matches!(e, mx6_queue::SpoolError::Corrupt { .. }) => {
                        ctx.metrics.spool_corrupt.inc();
                        tracing::error!(queue_id = %id, error = %e, "the spool record of this message is corrupt; it cannot be delivered");
                        ctx.registry.finished(&id);
                    }
                    Err(e) => {
                        tracing::error!(queue_id = %id, error = %e, "can not read the envelope from the spool; will retry");
                        let next = crate::queue::registry::now() + ctx.schedule.initial.as_secs() as i64;
                        let effect = ctx.registry.deferred(&id, &d.done, d.attempts, next, &format!("spool read: {e}"));
                        ctx.apply(effect, "");
                    }
                }
            }
            continue;
        }
        let wait = match ctx.registry.next_due() {
            Some(t) => Duration::from_secs((t - crate::queue::registry::now()).clamp(1, 60) as u64),
            None => Duration::from_secs(60),
        };
        tokio::select! {
            _ = ctx.registry.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
