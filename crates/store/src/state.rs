//! The operations every state backend offers ([`StateStore`]), their error
//! and the helpers on keys and time they share.

use std::future::Future;

pub use mx6_policy::greylist::{Outcome, Times};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("state store did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("state snapshot {path}: {source}")]
    Snapshot { path: String, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One entry as `mx6 state show` prints it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Shown {
    pub key: String,
    pub value: String,
    /// Milliseconds until it expires; `None` = no expiry.
    pub expires_in_ms: Option<u64>,
}

/// The operations the abuse defenses need; each is atomic.
pub trait StateStore: Send + Sync {
    /// One greylisting attempt on `triplet` (see [`mx6_policy::greylist::step`]).
    /// `client` counts the client's triplets that passed; once it reaches
    /// `auto_allowlist` (0 = off) the client is allowlisted.
    fn greylist(
        &self,
        triplet: &str,
        client: &str,
        now: u64,
        t: &Times,
        auto_allowlist: u64,
    ) -> impl Future<Output = Result<Outcome>> + Send;
    /// Count one event in a fixed window of `window` ms starting at the first
    /// event; returns the count including this one.
    fn hit(&self, key: &str, window: u64, now: u64) -> impl Future<Output = Result<u64>> + Send;
    /// Take back one count of `key` (never below 0; the window is kept): an
    /// attempt that was counted before it was judged turned out fine.
    fn unhit(&self, key: &str, now: u64) -> impl Future<Output = Result<()>> + Send;
    /// The current count without adding.
    fn peek(&self, key: &str, now: u64) -> impl Future<Output = Result<u64>> + Send;
    /// Add `delta` to a concurrency gauge (never below 0); returns the new value.
    fn concurrent(&self, key: &str, delta: i64, now: u64) -> impl Future<Output = Result<i64>> + Send;
    /// Record that `child` hit a limit inside `parent`; returns how many
    /// distinct children did within `window` ms.
    fn child_hit(&self, parent: &str, child: &str, now: u64, window: u64) -> impl Future<Output = Result<u64>> + Send;
    /// Set a flag for `ttl` ms.
    fn set_flag(&self, key: &str, now: u64, ttl: u64) -> impl Future<Output = Result<()>> + Send;
    /// Milliseconds left on a flag, if set.
    fn flag(&self, key: &str, now: u64) -> impl Future<Output = Result<Option<u64>>> + Send;
    /// Keep `value` under `key` for `ttl` ms (a record, e.g. a cached
    /// MTA-STS policy), replacing what was there.
    fn put(&self, key: &str, value: &str, now: u64, ttl: u64) -> impl Future<Output = Result<()>> + Send;
    /// The record under `key`, if it has not expired.
    fn get(&self, key: &str, now: u64) -> impl Future<Output = Result<Option<String>>> + Send;
    /// Decayed reputation scores of `keys` (0 when unknown).
    fn scores(&self, keys: &[String], now: u64, half_life: u64) -> impl Future<Output = Result<Vec<f64>>> + Send;
    /// Add `delta` to each of `keys`, bounded to ±`cap`.
    fn add_score(&self, keys: &[String], delta: f64, now: u64, half_life: u64, cap: f64) -> impl Future<Output = Result<()>> + Send;
    /// Entries whose key has `part` as one of its `|`-separated parts
    /// (scores decayed with `half_life`).
    fn show(&self, part: &str, now: u64, half_life: u64) -> impl Future<Output = Result<Vec<Shown>>> + Send;
    /// Delete them; returns how many.
    fn clear(&self, part: &str) -> impl Future<Output = Result<u64>> + Send;
    /// Delete exactly these keys (a report's counts once it is queued).
    fn delete(&self, keys: &[String]) -> impl Future<Output = Result<()>> + Send;
}

/// Whether `key` has `part` as one of its `|`-separated parts.
pub fn key_has(key: &str, part: &str) -> bool {
    key.split('|').any(|p| p == part)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
