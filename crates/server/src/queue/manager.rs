//! The queue manager: takes committed messages (new ones from sessions, old
//! ones recovered from the spool on start) and runs delivery batches, at most
//! two at once (one writes while the other waits on fsync), each batch taking
//! whatever arrived meanwhile. Local recipients are delivered by
//! [`crate::queue::local`], the others by [`crate::queue::remote`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mx6_config::{LocalConfig, QueueConfig};
use mx6_queue::schedule::Schedule;
use mx6_queue::{Recovered, SpoolHandle};
use tokio::sync::{mpsc, Semaphore};

use crate::admin::metrics::Metrics;
use crate::queue::context::{Ctx, Job};
use crate::queue::destinations::Destinations;
use crate::queue::registry::Registry;

/// Delivery batches running at once: one writes while the other waits on fsync.
const CONCURRENCY: usize = 2;
/// Most jobs in one batch.
const MAX_BATCH: usize = 256;

#[derive(Clone)]
pub struct QueueManager {
    tx: mpsc::UnboundedSender<Job>,
    running: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
}

/// What the queue manager is started with.
pub struct Start<'a> {
    pub queue: &'a QueueConfig,
    pub local: &'a LocalConfig,
    pub data_dir: &'a Path,
    pub hostname: &'a str,
    pub spool: SpoolHandle,
    pub recovered: Vec<Recovered>,
    pub metrics: Arc<Metrics>,
    pub destinations: Destinations,
}

impl QueueManager {
    pub fn start(s: Start<'_>) -> QueueManager {
        let schedule = Schedule { initial: s.queue.retry_initial, max: s.queue.retry_max, max_age: s.queue.max_age };
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let running = Arc::new(Semaphore::new(CONCURRENCY));
        let registry = Arc::new(Registry::new(&s.data_dir.join("spool")));
        let metrics = s.metrics;
        let ctx = Arc::new(Ctx {
            spool: s.spool,
            data_dir: s.data_dir.to_path_buf(),
            maildir: s.local.maildir.clone(),
            hostname: s.hostname.to_string(),
            schedule,
            tx: tx.clone(),
            metrics: metrics.clone(),
            destinations: Arc::new(s.destinations),
            registry: registry.clone(),
        });
        metrics.queue_messages.with_label_values(&["active"]).add(s.recovered.len() as i64);
        for r in s.recovered {
            let done = mx6_queue::ops::done_flags(&r);
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
                    crate::queue::local::deliver_batch(&ctx, batch).await;
                    drop(permit);
                });
            }
        });
        QueueManager { tx, running, metrics, registry }
    }

    /// A message a session just committed.
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
