//! What the queue holds right now, for `mx6 queue`: every message not yet
//! finished, with its attempts, next attempt, last error and hold state; and
//! the operations on it (hold, release, delete, flush).
//!
//! Holds are kept in `data_dir/spool/hold` (one queue id per line) so they
//! survive a restart and can be set while the server is stopped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mx6_queue::{Location, QueuedMessage};
use serde::Serialize;
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

/// One message as `mx6 queue list --json` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Listed {
    pub id: String,
    pub from: String,
    pub recipients: Vec<ListedRcpt>,
    pub age_secs: u64,
    pub attempts: u32,
    /// RFC 3339, or null while being delivered.
    pub next_attempt: Option<String>,
    pub last_error: String,
    /// active | deferred | hold
    pub state: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ListedRcpt {
    pub address: String,
    pub done: bool,
}

pub fn hold_file(data_dir: &Path) -> PathBuf {
    data_dir.join("spool").join("hold")
}

pub fn read_holds(data_dir: &Path) -> HashSet<String> {
    std::fs::read_to_string(hold_file(data_dir))
        .map(|s| s.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
        .unwrap_or_default()
}

/// Write the hold list atomically.
pub fn write_holds(data_dir: &Path, ids: &HashSet<String>) -> std::io::Result<()> {
    let path = hold_file(data_dir);
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("tmp");
    let mut v: Vec<&String> = ids.iter().collect();
    v.sort();
    std::fs::write(&tmp, v.iter().map(|s| format!("{s}\n")).collect::<String>())?;
    std::fs::rename(tmp, path)
}

pub fn listed(msg: &QueuedMessage, done: &[bool], attempts: u32, next: Option<i64>, last_error: &str, held: bool) -> Listed {
    let state = if held {
        "hold"
    } else if next.is_some() {
        "deferred"
    } else {
        "active"
    };
    Listed {
        id: msg.id.clone(),
        from: msg.from.clone(),
        recipients: msg.rcpts.iter().zip(done).map(|(r, d)| ListedRcpt { address: r.address.clone(), done: *d }).collect(),
        age_secs: mx6_queue::id::age(&msg.id).as_secs(),
        attempts,
        next_attempt: next.and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|d| d.to_rfc3339()),
        last_error: last_error.to_string(),
        state: state.into(),
    }
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<HashMap<String, Tracked>>,
    data_dir: PathBuf,
    holds: Mutex<HashSet<String>>,
}

impl Registry {
    pub fn new(data_dir: &Path) -> Registry {
        Registry { inner: Mutex::new(HashMap::new()), data_dir: data_dir.to_path_buf(), holds: Mutex::new(read_holds(data_dir)) }
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
        write_holds(&self.data_dir, &h)
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
            let _ = write_holds(&self.data_dir, &h);
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

    /// Apply `op` to `id` (or every message for flush); false when unknown.
    pub fn act(&self, op: &str, id: Option<&str>) -> Result<usize, String> {
        let mut m = self.lock();
        let ids: Vec<String> = match id {
            Some(i) if m.contains_key(i) => vec![i.to_string()],
            Some(i) => return Err(format!("{i}: no such message in the queue")),
            None => m.keys().cloned().collect(),
        };
        for i in &ids {
            let e = m.get_mut(i).expect("present");
            match op {
                "hold" => {
                    e.held = true;
                    // The waiting task moves it to the hold state now.
                    e.wake.notify_one();
                }
                "release" => {
                    e.held = false;
                    e.wake.notify_one();
                }
                "delete" => {
                    e.deleted = true;
                    e.wake.notify_one();
                }
                "flush" => {
                    if !e.held {
                        e.wake.notify_one();
                    }
                }
                _ => return Err(format!("unknown operation {op}")),
            }
        }
        drop(m);
        if op == "hold" || op == "release" {
            let mut h = self.holds.lock().unwrap_or_else(|e| e.into_inner());
            for i in &ids {
                if op == "hold" {
                    h.insert(i.clone());
                } else {
                    h.remove(i);
                }
            }
            write_holds(&self.data_dir, &h).map_err(|e| format!("hold file: {e}"))?;
        }
        Ok(ids.len())
    }
}
