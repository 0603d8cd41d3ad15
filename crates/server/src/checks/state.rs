//! The abuse-defense state as the server uses it: the configured
//! [`mx6_store::Store`] (`[store]`), and what happens when it fails. With
//! `on_failure = "open"` a Redis error falls back to a local in-memory store
//! (this node decides alone until Redis is back); with `"tempfail"` the caller
//! answers 4xx (CONTRACT: a failed lookup is never a 5xx). Either way the
//! failure is counted (`mx6_store_failures_total`) and logged, at most once a
//! second. An accepted message never depends on the store: the spool is its
//! own durable record.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mx6_store::embedded::Embedded;
use mx6_store::{Op, Outcome, Reply, Shown, StateStore, Store, Times};

use mx6_config::{FailMode, GreylistConfig, StoreBackend, StoreConfig};
use mx6_policy::prefix::Level;
use mx6_policy::ratelimit::{Escalation, Rule};

use crate::admin::metrics::Metrics;

/// The store could not answer and the config says tempfail.
#[derive(Debug, Clone, Copy)]
pub struct Unavailable;

pub struct State {
    store: Store,
    /// Local decisions while Redis is unreachable (fail-open).
    fallback: Option<Store>,
    mode: FailMode,
    metrics: Arc<Metrics>,
    last_log: Mutex<Option<Instant>>,
}

/// Run a store write nobody waits for (a reputation update, connection
/// counts given back): finished here when it can finish at once, as on the
/// embedded store, which then costs no task; else it goes on in a task of its
/// own (a Redis round trip). Outside a runtime (a guard dropped while the
/// server shuts down) it is dropped.
pub fn unwaited(write: impl std::future::Future<Output = ()> + Send + 'static) {
    use futures_util::FutureExt;
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    let mut write = Box::pin(write);
    if write.as_mut().now_or_never().is_none() {
        rt.spawn(write);
    }
}

/// The snapshot file of the embedded store.
pub fn snapshot_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state/embedded.json")
}

/// The configured store, without the server around it (`mx6 state` on a
/// stopped server).
pub fn open_store(store: &StoreConfig, data_dir: &Path) -> Result<Store, mx6_store::StoreError> {
    Ok(match store.backend {
        StoreBackend::Embedded => Store::Embedded(Arc::new(Embedded::open(&snapshot_path(data_dir))?)),
        StoreBackend::Redis => Store::Redis(Box::new(mx6_store::redis::Redis::new(&store.url, store.timeout)?)),
    })
}

/// The prefix levels state is kept on: every rate-limit rule's, the
/// greylist client levels, the escalation aggregates, and /64.
pub fn levels(rules: &[Rule], greylist: &GreylistConfig, e: &Escalation) -> Vec<Level> {
    let g = greylist;
    mx6_policy::ratelimit::levels(
        rules,
        &[Level::v6(g.ipv6_prefix), Level::v4(g.ipv4_prefix), Level::v6(e.ipv6.0), Level::v4(e.ipv4.0), Level::v6(64)],
    )
}

/// What `mx6 state show|clear ARG` looks at: an address → its prefix at
/// every level; a prefix → that prefix; anything else (a greylist identity
/// such as `spf:example.org` or `ptr:example.net`) → itself.
pub fn parts(levels: &[Level], arg: &str) -> Vec<String> {
    if let Ok(ip) = arg.parse::<std::net::IpAddr>() {
        return levels.iter().filter_map(|l| l.of(ip)).map(|p| p.to_string()).collect();
    }
    if let Ok(net) = arg.parse::<ipnet::IpNet>() {
        let ip = mx6_policy::prefix::canonical(net.addr());
        let len = if ip.is_ipv4() && net.addr().is_ipv6() { net.prefix_len().saturating_sub(96) } else { net.prefix_len() };
        return vec![ipnet::IpNet::new(ip, len).map(|n| n.trunc()).unwrap_or(net).to_string()];
    }
    vec![arg.to_ascii_lowercase()]
}

macro_rules! via {
    ($self:ident, $m:ident ( $($a:expr),* )) => {
        match $self.store.$m($($a),*).await {
            Ok(v) => Ok(v),
            Err(e) => {
                $self.failed(stringify!($m), &e);
                match &$self.fallback {
                    Some(f) => f.$m($($a),*).await.map_err(|_| Unavailable),
                    None => Err(Unavailable),
                }
            }
        }
    };
}

impl State {
    pub fn open(cfg: &StoreConfig, data_dir: &Path, metrics: Arc<Metrics>) -> Result<State, mx6_store::StoreError> {
        let store = open_store(cfg, data_dir)?;
        let fallback =
            (cfg.backend == StoreBackend::Redis && cfg.on_failure == FailMode::Open).then(|| Store::Embedded(Arc::new(Embedded::memory())));
        for mode in ["open", "tempfail"] {
            metrics.store_failures.with_label_values(&[store.backend(), mode]).inc_by(0);
        }
        if let Some(count) = store.request_counter() {
            metrics.watch_store_requests(store.backend(), count);
        }
        Ok(State { store, fallback, mode: cfg.on_failure, metrics, last_log: Mutex::new(None) })
    }

    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// The store itself, for records that need no fallback (a cached
    /// MTA-STS policy: without the store it is fetched again).
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn failed(&self, op: &str, e: &mx6_store::StoreError) {
        let mode = match self.mode {
            FailMode::Open => "open",
            FailMode::Tempfail => "tempfail",
        };
        self.metrics.store_failures.with_label_values(&[self.store.backend(), mode]).inc();
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            tracing::warn!(backend = self.store.backend(), op, error = %e, on_failure = mode, "state store failed");
        }
    }

    /// Save the embedded snapshot (no-op for Redis).
    pub fn save(&self) {
        if let Store::Embedded(e) = &self.store {
            if let Err(e) = e.save() {
                tracing::error!(error = %e, "saving the embedded state failed");
            }
        }
    }

    /// Save every `every` until `stop` changes, then once more.
    pub async fn saver(self: Arc<Self>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        if !matches!(self.store, Store::Embedded(_)) {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => break,
            }
            let s = self.clone();
            let _ = tokio::task::spawn_blocking(move || s.save()).await;
        }
    }

    /// Several operations in one request (see [`StateStore::batch`]).
    pub async fn batch(&self, ops: &[Op], now: u64) -> Result<Vec<Reply>, Unavailable> {
        via!(self, batch(ops, now))
    }
    pub async fn greylist(&self, triplet: &str, client: &str, now: u64, t: &Times, auto: u64) -> Result<Outcome, Unavailable> {
        via!(self, greylist(triplet, client, now, t, auto))
    }
    pub async fn hit(&self, key: &str, window: u64, now: u64) -> Result<u64, Unavailable> {
        via!(self, hit(key, window, now))
    }
    pub async fn unhit(&self, key: &str, now: u64) -> Result<(), Unavailable> {
        via!(self, unhit(key, now))
    }
    pub async fn peek(&self, key: &str, now: u64) -> Result<u64, Unavailable> {
        via!(self, peek(key, now))
    }
    pub async fn concurrent(&self, key: &str, delta: i64, now: u64) -> Result<i64, Unavailable> {
        via!(self, concurrent(key, delta, now))
    }
    pub async fn child_hit(&self, parent: &str, child: &str, now: u64, window: u64) -> Result<u64, Unavailable> {
        via!(self, child_hit(parent, child, now, window))
    }
    pub async fn set_flag(&self, key: &str, now: u64, ttl: u64) -> Result<(), Unavailable> {
        via!(self, set_flag(key, now, ttl))
    }
    pub async fn flag(&self, key: &str, now: u64) -> Result<Option<u64>, Unavailable> {
        via!(self, flag(key, now))
    }
    pub async fn scores(&self, keys: &[String], now: u64, half_life: u64) -> Result<Vec<f64>, Unavailable> {
        via!(self, scores(keys, now, half_life))
    }
    pub async fn add_score(&self, keys: &[String], delta: f64, now: u64, half_life: u64, cap: f64) -> Result<(), Unavailable> {
        via!(self, add_score(keys, delta, now, half_life, cap))
    }
    /// For `mx6 state show`: the shared store only (no fallback).
    pub async fn show(&self, part: &str, now: u64, half_life: u64) -> Result<Vec<Shown>, mx6_store::StoreError> {
        self.store.show(part, now, half_life).await
    }
    pub async fn clear(&self, part: &str) -> Result<u64, mx6_store::StoreError> {
        let n = self.store.clear(part).await?;
        if let Some(f) = &self.fallback {
            let _ = f.clear(part).await;
        }
        Ok(n)
    }
}
