//! mx6-store: the state behind greylisting, rate limits, escalation and
//! prefix reputation, behind one trait ([`StateStore`]) with two backends:
//!
//! - [`embedded`]: in memory, snapshotted to `data_dir/state/embedded.json`
//!   (periodically and at shutdown) so it survives restarts; expired entries
//!   are pruned;
//! - [`redis`]: shared by several mx6 nodes; every read-modify-write is one
//!   Lua script, so updates are atomic across nodes.
//!
//! Keys are strings of `|`-separated parts whose second part is the client
//! identity or prefix (`rl|messages|60000|2001:db8:1:2::/64`), so
//! `mx6 state show|clear PREFIX` finds everything about a prefix. Times are
//! Unix milliseconds.

pub mod embedded;
pub mod redis;

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
    /// Decayed reputation scores of `keys` (0 when unknown).
    fn scores(&self, keys: &[String], now: u64, half_life: u64) -> impl Future<Output = Result<Vec<f64>>> + Send;
    /// Add `delta` to each of `keys`, bounded to ±`cap`.
    fn add_score(&self, keys: &[String], delta: f64, now: u64, half_life: u64, cap: f64) -> impl Future<Output = Result<()>> + Send;
    /// Entries whose key has `part` as one of its `|`-separated parts
    /// (scores decayed with `half_life`).
    fn show(&self, part: &str, now: u64, half_life: u64) -> impl Future<Output = Result<Vec<Shown>>> + Send;
    /// Delete them; returns how many.
    fn clear(&self, part: &str) -> impl Future<Output = Result<u64>> + Send;
}

/// The configured backend.
pub enum Store {
    Embedded(std::sync::Arc<embedded::Embedded>),
    Redis(Box<redis::Redis>),
}

impl Store {
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "embedded",
            Store::Redis(_) => "redis",
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
    async fn greylist(&self, triplet: &str, client: &str, now: u64, t: &Times, auto: u64) -> Result<Outcome> {
        delegate!(self, greylist(triplet, client, now, t, auto))
    }
    async fn hit(&self, key: &str, window: u64, now: u64) -> Result<u64> {
        delegate!(self, hit(key, window, now))
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
}

/// Whether `key` has `part` as one of its `|`-separated parts.
pub fn key_has(key: &str, part: &str) -> bool {
    key.split('|').any(|p| p == part)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
