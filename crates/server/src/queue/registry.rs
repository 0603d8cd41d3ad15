//! What the queue holds right now, for `mx6 queue`: every message not yet
//! finished, with its attempts, next attempt, last error and hold state; and
//! the operations on it (hold, release, delete, flush).
//!
//! Holds are kept in the spool's hold file ([`mx6_queue::holds`]), so they
//! survive a restart and can be set while the server is stopped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mx6_queue::listing::{listed, Listed};
use mx6_queue::ops::Action;
use mx6_queue::{holds, Location, QueuedMessage};
use tokio::sync::Notify;

#[derive(Debug)]
pub struct Tracked {
    pub msg: Arc<QueuedMessage>,
    pub loc: Location,
    pub done: Vec<bool>,
    pub attempts: u32,
    /// Unix seconds; `None` while a delivery is in progress.
    pub next_attempt: Option<i64>,
    pub last_error: String,
    pub held: bool,
    pub deleted: bool,
    /// Wakes the retry wait (flush, release, delete).
    pub wake: Arc<Notify>,
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<HashMap<String, Tracked>>,
    spool_dir: PathBuf,
    holds: Mutex<HashSet<String>>,
}

impl Registry {
    pub fn new(spool_dir: &Path) -> Registry {
        Registry { inner: Mutex::new(HashMap::new()), spool_dir: spool_dir.to_path_buf(), holds: Mutex::new(holds::read(spool_dir)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tracked>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn track(&self, msg: &Arc<QueuedMessage>, loc: Location, done: &[bool], attempts: u32) -> Arc<Notify> {
        let held = self.holds.lock().unwrap_or_else(|e| e.into_inner()).contains(&msg.id);
        let mut m = self.lock();
        let e = m.entry(msg.id.clone()).or_insert_with(|| Tracked {
            msg: msg.clone(),
            loc,
            done: done.to_vec(),
            attempts,
            next_attempt: None,
            last_error: String::new(),
            held,
            deleted: false,
            wake: Arc::new(Notify::new()),
        });
        e.done = done.to_vec();
        e.next_attempt = None;
        e.wake.clone()
    }

    /// Hold a message that is about to be submitted (a milter quarantined it),
    /// so it is never tried before `mx6 queue release`.
    pub fn hold_new(&self, id: &str) -> std::io::Result<()> {
        let mut h = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        h.insert(id.to_string());
        holds::write(&self.spool_dir, &h)
    }

    /// A delivery attempt left recipients open.
    pub fn deferred(&self, id: &str, done: &[bool], attempts: u32, next: i64, error: &str) {
        if let Some(e) = self.lock().get_mut(id) {
            e.done = done.to_vec();
            e.attempts = attempts;
            e.next_attempt = Some(next);
            if !error.is_empty() {
                e.last_error = error.to_string();
            }
        }
    }

    pub fn finished(&self, id: &str) {
        self.lock().remove(id);
        let mut h = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        if h.remove(id) {
            let _ = holds::write(&self.spool_dir, &h);
        }
    }

    /// (held, deleted) of a message.
    pub fn flags(&self, id: &str) -> (bool, bool) {
        self.lock().get(id).map(|e| (e.held, e.deleted)).unwrap_or((false, false))
    }

    pub fn list(&self) -> Vec<Listed> {
        let m = self.lock();
        let mut v: Vec<Listed> = m.values().map(|e| listed(&e.msg, &e.done, e.attempts, e.next_attempt, &e.last_error, e.held)).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn location(&self, id: &str) -> Option<Location> {
        self.lock().get(id).map(|e| e.loc)
    }

    /// Apply `action` to `id` (every message when `None`); the number of
    /// messages it applied to.
    pub fn act(&self, action: Action, id: Option<&str>) -> Result<usize, String> {
        let mut m = self.lock();
        let ids: Vec<String> = match id {
            Some(i) if m.contains_key(i) => vec![i.to_string()],
            Some(i) => return Err(format!("{i}: no such message in the queue")),
            None => m.keys().cloned().collect(),
        };
        for i in &ids {
            let e = m.get_mut(i).expect("present");
            match action {
                // The waiting task moves it to the hold state now.
                Action::Hold => e.held = true,
                Action::Release => e.held = false,
                Action::Delete => e.deleted = true,
                Action::Flush if e.held => continue,
                Action::Flush => {}
            }
            e.wake.notify_one();
        }
        drop(m);
        if matches!(action, Action::Hold | Action::Release) {
            let mut h = self.holds.lock().unwrap_or_else(|e| e.into_inner());
            for i in &ids {
                if action == Action::Hold {
                    h.insert(i.clone());
                } else {
                    h.remove(i);
                }
            }
            holds::write(&self.spool_dir, &h).map_err(|e| format!("hold file: {e}"))?;
        }
        Ok(ids.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mx6_queue::Recipient;

    #[test]
    fn actions_on_tracked_messages() {
        let dir = std::env::temp_dir().join(format!("mx6-registry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let r = Registry::new(&dir);
        let msg = Arc::new(QueuedMessage {
            id: "q1".into(),
            from: "a@x.test".into(),
            rcpts: vec![Recipient { address: "b@y.test".into(), local: None }],
            received: 0,
            client: "::1".into(),
            helo: "h".into(),
            smtputf8: false,
            junk: false,
        });
        r.track(&msg, Location { segment: 1, offset: 0, len: 0 }, &[false], 0);
        assert_eq!(r.act(Action::Hold, Some("q1")), Ok(1));
        assert_eq!(r.flags("q1"), (true, false));
        assert!(holds::read(&dir).contains("q1"));
        assert_eq!(r.list()[0].state, "hold");
        assert_eq!(r.act(Action::Release, None), Ok(1));
        assert!(holds::read(&dir).is_empty());
        assert_eq!(r.act(Action::Delete, Some("nope")), Err("nope: no such message in the queue".into()));
        assert_eq!(r.act(Action::Delete, Some("q1")), Ok(1));
        assert_eq!(r.flags("q1"), (false, true));
        r.finished("q1");
        assert!(r.list().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
