//! The queue of the running server as `mx6 queue` sees it and as the queue
//! manager schedules it: a compact index of every message not yet finished
//! ([`mx6_queue::index`]) behind a lock, with the holds that survive a
//! restart ([`mx6_queue::holds`]) and the queue gauges kept in step. At most
//! `active` messages are loaded for delivery at once; the others wait on disk.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use mx6_queue::index::{self, Counts, Due, Effect, Id, Index, State};
use mx6_queue::listing::{listed, Listed};
use mx6_queue::ops::Action;
use mx6_queue::schedule::Schedule;
use mx6_queue::{holds, Location, Recovered, SpoolHandle};
use tokio::sync::Notify;

use crate::admin::metrics::Metrics;

pub struct Registry {
    index: Mutex<Index>,
    holds: Mutex<HashSet<String>>,
    spool_dir: PathBuf,
    /// Most messages loaded for delivery at once (`queue.active_limit`).
    limit: usize,
    /// Wakes the scheduler: something became due, or an active slot freed.
    pub wake: Notify,
    metrics: Arc<Metrics>,
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Registry {
    pub fn new(spool_dir: &Path, limit: usize, metrics: Arc<Metrics>) -> Registry {
        Registry {
            index: Mutex::new(Index::default()),
            holds: Mutex::new(holds::read(spool_dir)),
            spool_dir: spool_dir.to_path_buf(),
            limit: limit.max(1),
            wake: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gauges(&self, c: Counts) {
        let q = &self.metrics.queue_messages;
        q.with_label_values(&["active"]).set(c.active as i64);
        q.with_label_values(&["deferred"]).set(c.waiting as i64);
        q.with_label_values(&["hold"]).set(c.held as i64);
    }

    fn held(&self, id: &str) -> bool {
        self.holds.lock().unwrap_or_else(|e| e.into_inner()).contains(id)
    }

    /// A message just committed (`hold`: quarantined by a milter). True when
    /// it may be delivered now, with its body still in memory; otherwise it
    /// waits on disk for a free slot (or for `mx6 queue release`).
    pub fn admit(&self, id: &str, loc: Location, done: &[bool], hold: bool) -> bool {
        let Some(n) = index::parse_id(id) else { return false };
        if hold {
            let mut h = self.holds.lock().unwrap_or_else(|e| e.into_inner());
            h.insert(id.to_string());
            if let Err(e) = holds::write(&self.spool_dir, &h) {
                tracing::error!(queue_id = id, error = %e, "could not record the hold");
            }
        }
        let mut x = self.lock();
        let active = !hold && x.counts().active < self.limit;
        let state = match (hold, active) {
            (true, _) => State::Held,
            (false, true) => State::Active,
            (false, false) => State::Waiting,
        };
        x.insert(n, loc, done, 0, state, now());
        self.gauges(x.counts());
        drop(x);
        if state == State::Waiting {
            self.wake.notify_one();
        }
        active
    }

    /// A message found in the spool at start: due now, unless it had been
    /// deferred (then by its age on `schedule`) or is held.
    pub fn recovered(&self, r: &Recovered, schedule: &Schedule) {
        let Some(n) = index::parse_id(&r.id) else { return };
        let done = mx6_queue::ops::done_flags(r);
        let (attempts, next) = if r.deferred {
            let (a, d) = schedule.after_restart(mx6_queue::id::age(&r.id));
            (a, now() + d.as_secs() as i64)
        } else {
            (0, now())
        };
        let state = if self.held(&r.id) { State::Held } else { State::Waiting };
        let mut x = self.lock();
        x.insert(n, r.location, &done, attempts, state, next);
        if r.warned {
            x.set_warned(n);
        }
        self.gauges(x.counts());
    }

    /// Messages due now, as many as there are free active slots.
    pub fn take_due(&self) -> Vec<Due> {
        let mut x = self.lock();
        let room = self.limit.saturating_sub(x.counts().active);
        let due = x.take_due(now(), room);
        self.gauges(x.counts());
        due
    }

    /// When the next waiting message is due (unix seconds).
    pub fn next_due(&self) -> Option<i64> {
        self.lock().next_due()
    }

    /// An attempt left recipients open: wait until `next`.
    pub fn deferred(&self, id: &str, done: &[bool], attempts: u32, next: i64, error: &str) -> Option<Effect> {
        let n = index::parse_id(id)?;
        let mut x = self.lock();
        let effect = x.deferred(n, done, attempts, next, error);
        self.gauges(x.counts());
        drop(x);
        self.wake.notify_one();
        effect
    }

    /// The delay warning of `id` was sent.
    pub fn warned(&self, id: &str) {
        if let Some(n) = index::parse_id(id) {
            self.lock().set_warned(n);
        }
    }

    /// Whether an active message was held or deleted before its attempt.
    pub fn parked(&self, id: &str) -> bool {
        index::parse_id(id).is_some_and(|n| self.lock().parked(n))
    }

    /// Every recipient is done.
    pub fn finished(&self, id: &str) {
        if let Some(n) = index::parse_id(id) {
            let mut x = self.lock();
            x.finished(n);
            self.gauges(x.counts());
        }
        let mut h = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        if h.remove(id) {
            let _ = holds::write(&self.spool_dir, &h);
        }
        self.wake.notify_one();
    }

    /// An operator action on `id` (every message when `None`): how many it
    /// applied to, and the deletions to record.
    pub fn act(&self, action: Action, id: Option<&str>) -> Result<(usize, Vec<Effect>), String> {
        let missing = |i: &str| format!("{i}: no such message in the queue");
        let n = match id {
            Some(i) => Some(index::parse_id(i).ok_or_else(|| missing(i))?),
            None => None,
        };
        let mut x = self.lock();
        let (count, effects) = x.act(action, n, now()).map_err(|i| missing(&index::format_id(i)))?;
        let ids: Vec<String> = match n {
            Some(n) => vec![index::format_id(n)],
            None => x.ids().into_iter().map(index::format_id).collect(),
        };
        self.gauges(x.counts());
        drop(x);
        if matches!(action, Action::Hold | Action::Release) {
            let mut h = self.holds.lock().unwrap_or_else(|e| e.into_inner());
            for i in ids {
                if action == Action::Hold {
                    h.insert(i);
                } else {
                    h.remove(&i);
                }
            }
            holds::write(&self.spool_dir, &h).map_err(|e| format!("hold file: {e}"))?;
        }
        self.wake.notify_one();
        Ok((count, effects))
    }

    /// Where a message's record is.
    pub fn location(&self, id: &str) -> Option<Location> {
        index::parse_id(id).and_then(|n| self.lock().get(n).map(|e| e.loc))
    }

    /// Every message as `mx6 queue list` shows it (blocking: the envelopes
    /// are read from the spool).
    pub fn list(&self, spool: &SpoolHandle) -> Vec<Listed> {
        struct Row {
            id: Id,
            loc: Location,
            done: Vec<bool>,
            attempts: u32,
            next: Option<i64>,
            error: Option<Arc<str>>,
            held: bool,
            warned: bool,
        }
        let rows: Vec<Row> = {
            let x = self.lock();
            x.ids()
                .into_iter()
                .filter_map(|n| {
                    let e = x.get(n)?;
                    Some(Row {
                        id: n,
                        loc: e.loc,
                        done: x.done(n, e),
                        attempts: e.attempts(),
                        next: (e.state != State::Active).then(|| e.next()),
                        error: x.last_error(e),
                        held: e.state == State::Held,
                        warned: e.warned,
                    })
                })
                .collect()
        };
        rows.into_iter()
            .filter_map(|r| {
                let msg = match spool.read_envelope(&r.loc) {
                    Ok(m) => m,
                    Err(err) => {
                        tracing::warn!(queue_id = %index::format_id(r.id), error = %err, "can not read the envelope for the listing");
                        return None;
                    }
                };
                Some(listed(&msg, &r.done, r.attempts, r.next, r.error.as_deref().unwrap_or(""), r.held, r.warned))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_limit_holds_and_actions() {
        let dir = std::env::temp_dir().join(format!("mx6-registry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let r = Registry::new(&dir, 2, Arc::new(Metrics::new()));
        let loc = Location { segment: 1, offset: 0, env_len: 1, body_len: 1, v1: false };
        let id = |i: u64| index::format_id(i);
        assert!(r.admit(&id(1), loc, &[false], false));
        assert!(r.admit(&id(2), loc, &[false], false));
        assert!(!r.admit(&id(3), loc, &[false], false), "over the active limit: waits on disk");
        assert!(!r.admit(&id(4), loc, &[false], true), "quarantined: held");
        assert!(holds::read(&dir).contains(&id(4)));
        assert!(r.take_due().is_empty(), "no free slot");
        r.finished(&id(1));
        assert_eq!(r.take_due().iter().map(|d| d.id).collect::<Vec<_>>(), [3]);
        assert_eq!(r.act(Action::Hold, Some(&id(2))).map(|x| x.0), Ok(1));
        assert!(r.parked(&id(2)));
        assert_eq!(r.act(Action::Release, Some(&id(4))).map(|x| x.0), Ok(1));
        assert!(!holds::read(&dir).contains(&id(4)));
        assert_eq!(r.act(Action::Delete, Some("zz")), Err("zz: no such message in the queue".into()));
        let text = r.metrics.render();
        assert!(text.contains("mx6_queue_messages{state=\"active\"} 2"), "{text}");
        assert!(text.contains("mx6_queue_messages{state=\"deferred\"} 1"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
