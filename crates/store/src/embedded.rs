//! The embedded backend: a map in memory behind one mutex (each operation is
//! a few hash lookups), written as a JSON snapshot to a file every few seconds
//! when changed and when the server stops, and read back at start. Expired
//! entries are pruned when the snapshot is written. Concurrency gauges are
//! never saved: the connections they count are gone after a restart.
//!
//! A crash loses at most the changes since the last snapshot (default 10 s):
//! a greylisted sender retries once more, counters restart a little low.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mx6_policy::greylist::{self, Entry, Outcome, Times};
use mx6_policy::reputation::Score;
use serde::{Deserialize, Serialize};

use crate::state::{key_has, now_ms, Result, Shown, StateStore, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Val {
    Grey { first: u64, last: u64, passed: bool },
    Count(i64),
    Children(Vec<(String, u64)>),
    Flag,
    Score { value: f64, at: u64 },
    Text(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slot {
    val: Val,
    /// Unix ms; 0 = never.
    exp: u64,
}

impl Slot {
    fn live(&self, now: u64) -> bool {
        self.exp == 0 || self.exp > now
    }
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Slot>,
    dirty: bool,
}

pub struct Embedded {
    inner: Mutex<Inner>,
    /// The snapshot file; `None` = memory only (tests, fail-open fallback).
    path: Option<PathBuf>,
}

impl Embedded {
    /// Memory only.
    pub fn memory() -> Embedded {
        Embedded { inner: Mutex::new(Inner::default()), path: None }
    }

    /// Backed by the snapshot at `path` (created on first save).
    pub fn open(path: &Path) -> Result<Embedded> {
        let err = |source| StoreError::Snapshot { path: path.display().to_string(), source };
        let mut map = HashMap::new();
        match std::fs::read(path) {
            Ok(bytes) => {
                let entries: Vec<(String, Slot)> = serde_json::from_slice(&bytes).map_err(|e| err(std::io::Error::other(e)))?;
                let now = now_ms();
                map.extend(entries.into_iter().filter(|(_, s)| s.live(now)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        Ok(Embedded { inner: Mutex::new(Inner { map, dirty: false }), path: Some(path.to_path_buf()) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Slot>) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.dirty = true;
        f(&mut g.map)
    }

    /// Write the snapshot if anything changed (pruning expired entries):
    /// a temporary file, fsync, rename, so a crash leaves the old or the new one.
    pub fn save(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let now = now_ms();
        let entries: Vec<(String, Slot)> = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if !g.dirty {
                return Ok(());
            }
            g.dirty = false;
            g.map.retain(|_, s| s.live(now));
            g.map.iter().filter(|(k, _)| !k.starts_with("cc|")).map(|(k, s)| (k.clone(), s.clone())).collect()
        };
        let err = |source| StoreError::Snapshot { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&entries).map_err(|e| err(std::io::Error::other(e)))?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(&bytes).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        Ok(())
    }

    /// Entries held (for tests and `mx6 state`).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|g| g.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn describe(val: &Val, now: u64, half_life: u64) -> String {
    match val {
        Val::Grey { first, last, passed } => format!(
            "greylist {} first seen {}s ago, last {}s ago",
            if *passed { "passed" } else { "waiting" },
            now.saturating_sub(*first) / 1000,
            now.saturating_sub(*last) / 1000
        ),
        Val::Count(n) => format!("count {n}"),
        Val::Children(c) => format!("{} children: {}", c.len(), c.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")),
        Val::Flag => "set".into(),
        Val::Score { value, at } => format!("score {:.2}", Score { value: *value, at: *at }.at(now, half_life)),
        Val::Text(t) => t.clone(),
    }
}

impl StateStore for Embedded {
    async fn greylist(&self, triplet: &str, client: &str, now: u64, t: &Times, auto: u64) -> Result<Outcome> {
        Ok(self.with(|m| {
            if auto > 0 {
                if let Some(Slot { val: Val::Count(n), .. }) = m.get(client).filter(|s| s.live(now)) {
                    if *n as u64 >= auto {
                        return Outcome::Allowlisted;
                    }
                }
            }
            let old = match m.get(triplet) {
                Some(s @ Slot { val: Val::Grey { first, last, passed }, .. }) if s.live(now) => {
                    Some(Entry { first: *first, last: *last, passed: *passed })
                }
                _ => None,
            };
            let (o, e) = greylist::step(old, now, t);
            let exp = now + greylist::ttl(&e, t);
            m.insert(triplet.to_string(), Slot { val: Val::Grey { first: e.first, last: e.last, passed: e.passed }, exp });
            if o == (Outcome::Passed { first: true }) {
                let n = match m.get(client) {
                    Some(s @ Slot { val: Val::Count(n), .. }) if s.live(now) => *n,
                    _ => 0,
                };
                m.insert(client.to_string(), Slot { val: Val::Count(n + 1), exp: now + t.lifetime });
            }
            o
        }))
    }

    async fn hit(&self, key: &str, window: u64, now: u64) -> Result<u64> {
        Ok(self.with(|m| {
            let slot = m.entry(key.to_string()).or_insert(Slot { val: Val::Count(0), exp: now + window });
            if !slot.live(now) || !matches!(slot.val, Val::Count(_)) {
                *slot = Slot { val: Val::Count(0), exp: now + window };
            }
            let Val::Count(n) = &mut slot.val else { unreachable!("reset above") };
            *n += 1;
            *n as u64
        }))
    }

    async fn unhit(&self, key: &str, now: u64) -> Result<()> {
        self.with(|m| {
            if let Some(s @ Slot { val: Val::Count(_), .. }) = m.get_mut(key) {
                if s.live(now) {
                    if let Val::Count(n) = &mut s.val {
                        *n = (*n - 1).max(0);
                    }
                }
            }
        });
        Ok(())
    }

    async fn peek(&self, key: &str, now: u64) -> Result<u64> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match g.map.get(key) {
            Some(s @ Slot { val: Val::Count(n), .. }) if s.live(now) => (*n).max(0) as u64,
            _ => 0,
        })
    }

    async fn concurrent(&self, key: &str, delta: i64, _now: u64) -> Result<i64> {
        Ok(self.with(|m| {
            let slot = m.entry(key.to_string()).or_insert(Slot { val: Val::Count(0), exp: 0 });
            let n = match &mut slot.val {
                Val::Count(n) => {
                    *n = (*n + delta).max(0);
                    *n
                }
                v => {
                    *v = Val::Count(delta.max(0));
                    delta.max(0)
                }
            };
            if n == 0 {
                m.remove(key);
            }
            n
        }))
    }

    async fn child_hit(&self, parent: &str, child: &str, now: u64, window: u64) -> Result<u64> {
        Ok(self.with(|m| {
            let slot = m.entry(parent.to_string()).or_insert(Slot { val: Val::Children(Vec::new()), exp: 0 });
            if !matches!(slot.val, Val::Children(_)) {
                slot.val = Val::Children(Vec::new());
            }
            slot.exp = now + window;
            let Val::Children(c) = &mut slot.val else { unreachable!("reset above") };
            c.retain(|(k, t)| k != child && now.saturating_sub(*t) <= window);
            c.push((child.to_string(), now));
            c.len() as u64
        }))
    }

    async fn set_flag(&self, key: &str, now: u64, ttl: u64) -> Result<()> {
        self.with(|m| m.insert(key.to_string(), Slot { val: Val::Flag, exp: now + ttl }));
        Ok(())
    }

    async fn flag(&self, key: &str, now: u64) -> Result<Option<u64>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match g.map.get(key) {
            Some(s @ Slot { val: Val::Flag, exp }) if s.live(now) => Some(exp.saturating_sub(now)),
            _ => None,
        })
    }

    async fn put(&self, key: &str, value: &str, now: u64, ttl: u64) -> Result<()> {
        self.with(|m| m.insert(key.to_string(), Slot { val: Val::Text(value.to_string()), exp: now + ttl.max(1) }));
        Ok(())
    }

    async fn get(&self, key: &str, now: u64) -> Result<Option<String>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match g.map.get(key) {
            Some(s @ Slot { val: Val::Text(t), .. }) if s.live(now) => Some(t.clone()),
            _ => None,
        })
    }

    async fn scores(&self, keys: &[String], now: u64, half_life: u64) -> Result<Vec<f64>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(keys
            .iter()
            .map(|k| match g.map.get(k) {
                Some(s @ Slot { val: Val::Score { value, at }, .. }) if s.live(now) => Score { value: *value, at: *at }.at(now, half_life),
                _ => 0.0,
            })
            .collect())
    }

    async fn add_score(&self, keys: &[String], delta: f64, now: u64, half_life: u64, cap: f64) -> Result<()> {
        self.with(|m| {
            for k in keys {
                let old = match m.get(k) {
                    Some(s @ Slot { val: Val::Score { value, at }, .. }) if s.live(now) => Score { value: *value, at: *at },
                    _ => Score::default(),
                };
                let s = old.add(delta, now, half_life, cap);
                // Gone once it has decayed below 1/256 of the cap.
                m.insert(k.clone(), Slot { val: Val::Score { value: s.value, at: s.at }, exp: now + 8 * half_life.max(1) });
            }
        });
        Ok(())
    }

    async fn show(&self, part: &str, now: u64, half_life: u64) -> Result<Vec<Shown>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Shown> = g
            .map
            .iter()
            .filter(|(k, s)| s.live(now) && key_has(k, part))
            .map(|(k, s)| Shown {
                key: k.clone(),
                value: describe(&s.val, now, half_life),
                expires_in_ms: (s.exp != 0).then(|| s.exp.saturating_sub(now)),
            })
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(v)
    }

    async fn clear(&self, part: &str) -> Result<u64> {
        Ok(self.with(|m| {
            let before = m.len();
            m.retain(|k, _| !key_has(k, part));
            (before - m.len()) as u64
        }))
    }

    async fn delete(&self, keys: &[String]) -> Result<()> {
        self.with(|m| {
            for k in keys {
                m.remove(k);
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Times = Times { delay: 1000, retry_window: 10_000, lifetime: 100_000 };

    #[tokio::test]
    async fn greylist_and_auto_allowlist() {
        let s = Embedded::memory();
        assert!(matches!(s.greylist("gl|c|a|b", "gla|c", 0, &T, 2).await.unwrap(), Outcome::New { .. }));
        assert!(matches!(s.greylist("gl|c|a|b", "gla|c", 500, &T, 2).await.unwrap(), Outcome::Early { retry_in: 500 }));
        assert_eq!(s.greylist("gl|c|a|b", "gla|c", 1500, &T, 2).await.unwrap(), Outcome::Passed { first: true });
        s.greylist("gl|c|a|d", "gla|c", 1500, &T, 2).await.unwrap();
        assert_eq!(s.greylist("gl|c|a|d", "gla|c", 3000, &T, 2).await.unwrap(), Outcome::Passed { first: true });
        // Two triplets passed: the client is allowlisted for new ones.
        assert_eq!(s.greylist("gl|c|x|y", "gla|c", 3000, &T, 2).await.unwrap(), Outcome::Allowlisted);
    }

    #[tokio::test]
    async fn counters_flags_scores_persist() {
        let dir = std::env::temp_dir().join(format!("mx6-store-{}", std::process::id()));
        let path = dir.join("embedded.json");
        let now = now_ms();
        {
            let s = Embedded::open(&path).unwrap();
            assert_eq!(s.hit("rl|x|2001:db8::/64", 60_000, now).await.unwrap(), 1);
            assert_eq!(s.hit("rl|x|2001:db8::/64", 60_000, now + 1).await.unwrap(), 2);
            assert_eq!(s.hit("rl|x|2001:db8::/64", 60_000, now + 60_001).await.unwrap(), 1, "a new window");
            assert_eq!(s.concurrent("cc|2001:db8::/64", 1, now).await.unwrap(), 1);
            assert_eq!(s.child_hit("esc|2001:db8::/48", "a", now, 1000).await.unwrap(), 1);
            assert_eq!(s.child_hit("esc|2001:db8::/48", "a", now, 1000).await.unwrap(), 1);
            assert_eq!(s.child_hit("esc|2001:db8::/48", "b", now, 1000).await.unwrap(), 2);
            assert_eq!(s.child_hit("esc|2001:db8::/48", "c", now + 2000, 1000).await.unwrap(), 1, "older children aged out");
            s.set_flag("blk|2001:db8::/48", now, 5000).await.unwrap();
            s.add_score(&["rep|2001:db8::/64".into()], 3.0, now, 1000, 50.0).await.unwrap();
            s.put("sts|example.org", "{\"id\":\"1\"}", now, 5000).await.unwrap();
            s.save().unwrap();
        }
        let s = Embedded::open(&path).unwrap();
        assert_eq!(s.peek("rl|x|2001:db8::/64", now + 60_002).await.unwrap(), 1);
        assert_eq!(s.concurrent("cc|2001:db8::/64", 0, now).await.unwrap(), 0, "gauges are not saved");
        assert!(s.flag("blk|2001:db8::/48", now + 10).await.unwrap().is_some());
        assert_eq!(s.flag("blk|2001:db8::/48", now + 5001).await.unwrap(), None);
        assert_eq!(s.get("sts|example.org", now + 10).await.unwrap().as_deref(), Some("{\"id\":\"1\"}"), "records persist");
        assert_eq!(s.get("sts|example.org", now + 5001).await.unwrap(), None, "and expire");
        let sc = s.scores(&["rep|2001:db8::/64".into()], now + 1000, 1000).await.unwrap();
        assert!((sc[0] - 1.5).abs() < 1e-9);
        assert_eq!(s.show("2001:db8::/64", now, 1000).await.unwrap().len(), 2);
        assert_eq!(s.clear("2001:db8::/64").await.unwrap(), 2);
        assert!(s.show("2001:db8::/64", now, 1000).await.unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
