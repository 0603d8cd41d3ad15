//! The configured backend, embedded or Redis, behind one [`StateStore`].

use crate::embedded::Embedded;
use crate::redis::Redis;
use crate::state::{Op, Outcome, Reply, Result, Shown, StateStore, Times};

/// The configured backend.
pub enum Store {
    Embedded(std::sync::Arc<Embedded>),
    Redis(Box<Redis>),
}

impl Store {
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "embedded",
            Store::Redis(_) => "redis",
        }
    }

    /// The live count of requests sent to a remote store (each one round
    /// trip); `None` for the embedded store, which has no round trips.
    pub fn request_counter(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicU64>> {
        match self {
            Store::Embedded(_) => None,
            Store::Redis(r) => Some(r.request_counter()),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $m:ident ( $($a:expr),* )) => {
        match $self {
            Store::Embedded(s) => s.$m($($a),*).await,
            Store::Redis(s) => s.$m($($a),*).await,
        }
    };
}

impl StateStore for Store {
    async fn batch(&self, ops: &[Op], now: u64) -> Result<Vec<Reply>> {
        delegate!(self, batch(ops, now))
    }
    async fn greylist(&self, triplet: &str, client: &str, now: u64, t: &Times, auto: u64) -> Result<Outcome> {
        delegate!(self, greylist(triplet, client, now, t, auto))
    }
    async fn hit(&self, key: &str, window: u64, now: u64) -> Result<u64> {
        delegate!(self, hit(key, window, now))
    }
    async fn unhit(&self, key: &str, now: u64) -> Result<()> {
        delegate!(self, unhit(key, now))
    }
    async fn peek(&self, key: &str, now: u64) -> Result<u64> {
        delegate!(self, peek(key, now))
    }
    async fn concurrent(&self, key: &str, delta: i64, now: u64) -> Result<i64> {
        delegate!(self, concurrent(key, delta, now))
    }
    async fn child_hit(&self, parent: &str, child: &str, now: u64, window: u64) -> Result<u64> {
        delegate!(self, child_hit(parent, child, now, window))
    }
    async fn set_flag(&self, key: &str, now: u64, ttl: u64) -> Result<()> {
        delegate!(self, set_flag(key, now, ttl))
    }
    async fn flag(&self, key: &str, now: u64) -> Result<Option<u64>> {
        delegate!(self, flag(key, now))
    }
    async fn put(&self, key: &str, value: &str, now: u64, ttl: u64) -> Result<()> {
        delegate!(self, put(key, value, now, ttl))
    }
    async fn get(&self, key: &str, now: u64) -> Result<Option<String>> {
        delegate!(self, get(key, now))
    }
    async fn scores(&self, keys: &[String], now: u64, half_life: u64) -> Result<Vec<f64>> {
        delegate!(self, scores(keys, now, half_life))
    }
    async fn add_score(&self, keys: &[String], delta: f64, now: u64, half_life: u64, cap: f64) -> Result<()> {
        delegate!(self, add_score(keys, delta, now, half_life, cap))
    }
    async fn show(&self, part: &str, now: u64, half_life: u64) -> Result<Vec<Shown>> {
        delegate!(self, show(part, now, half_life))
    }
    async fn clear(&self, part: &str) -> Result<u64> {
        delegate!(self, clear(part))
    }
    async fn delete(&self, keys: &[String]) -> Result<()> {
        delegate!(self, delete(keys))
    }
}
