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

/// One operation of a [`StateStore::batch`]; each is the single-operation
/// method of the same name.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Greylist { triplet: String, client: String, times: Times, auto_allowlist: u64 },
    Hit { key: String, window: u64 },
    Unhit { key: String },
    Concurrent { key: String, delta: i64 },
    ChildHit { parent: String, child: String, window: u64 },
    SetFlag { key: String, ttl: u64 },
    Flag { key: String },
    Scores { keys: Vec<String>, half_life: u64 },
    AddScore { keys: Vec<String>, delta: f64, half_life: u64, cap: f64 },
}

/// The answer to one [`Op`], in the same position.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Greylist(Outcome),
    /// `Hit`, `ChildHit`: the count including this one.
    Count(u64),
    /// `Concurrent`: the new value.
    Gauge(i64),
    /// `Flag`: milliseconds left, if set.
    Flag(Option<u64>),
    Scores(Vec<f64>),
    /// `Unhit`, `SetFlag`, `AddScore`.
    Done,
}

impl Reply {
    pub fn count(&self) -> u64 {
        match self {
            Reply::Count(n) => *n,
            Reply::Gauge(n) => (*n).max(0) as u64,
            _ => 0,
        }
    }
}

/// The operations the abuse defenses need; each is atomic.
pub trait StateStore: Send + Sync {
    /// Several operations in one request (one round trip to Redis): a
    /// stage asks everything it needs at once. The answers come in the
    /// order of `ops`; the operations run in order, and on Redis atomically
    /// together.
    fn batch(&self, ops: &[Op], now: u64) -> impl Future<Output = Result<Vec<Reply>>> + Send {
        async move {
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                out.push(match op {
                    Op::Greylist { triplet, client, times, auto_allowlist } => {
                        Reply::Greylist(self.greylist(triplet, client, now, times, *auto_allowlist).await?)
                    }
                    Op::Hit { key, window } => Reply::Count(self.hit(key, *window, now).await?),
                    Op::Unhit { key } => self.unhit(key, now).await.map(|_| Reply::Done)?,
                    Op::Concurrent { key, delta } => Reply::Gauge(self.concurrent(key, *delta, now).await?),
                    Op::ChildHit { parent, child, window } => Reply::Count(self.child_hit(parent, child, now, *window).await?),
                    Op::SetFlag { key, ttl } => self.set_flag(key, now, *ttl).await.map(|_| Reply::Done)?,
                    Op::Flag { key } => Reply::Flag(self.flag(key, now).await?),
                    Op::Scores { keys, half_life } => Reply::Scores(self.scores(keys, now, *half_life).await?),
                    Op::AddScore { keys, delta, half_life, cap } => {
                        self.add_score(keys, *delta, now, *half_life, *cap).await.map(|_| Reply::Done)?
                    }
                });
            }
            Ok(out)
        }
    }

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
