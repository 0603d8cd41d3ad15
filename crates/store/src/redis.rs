//! The Redis backend: state shared by every mx6 node pointing at the same
//! Redis. Every read-modify-write goes through one Lua script that runs a
//! batch of operations atomically on the server, so a stage that needs
//! several (the connect-time reputation, escalation flag, connection counts
//! and rates) costs one round trip; keys are prefixed `mx6:` and carry a
//! TTL, so Redis expires them itself. The keys of one batch must live on
//! one server (no Redis Cluster slot spreading).
//!
//! The connection is made lazily and re-made by redis-rs's
//! `ConnectionManager` after a failure; every operation is bounded by
//! `timeout`, so an unreachable Redis gives an error quickly, never a hang.
//! What to do with the error (fail open or tempfail) is the caller's choice.
//!
//! The script's greylist step mirrors [`mx6_policy::greylist::step`]; the
//! store's tests run the same cases against both backends.

use std::time::Duration;

use mx6_policy::greylist::{Outcome, Times};
use mx6_policy::reputation::Score;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use crate::state::{key_has, Op, Reply, Result, Shown, StateStore, StoreError};

/// Every read-modify-write, as one script that runs a list of operations
/// ([`Op`]) in order: one round trip however many a stage asks. KEYS holds
/// the keys the operations name, in order; ARGV is `now`, then each
/// operation's name and arguments. Each answer is one string. The greylist
/// step mirrors [`mx6_policy::greylist::step`].
const BATCH: &str = r#"
local now = tonumber(ARGV[1])
local a, k, out = 2, 1, {}
local function arg() a = a + 1; return ARGV[a - 1] end
local function num() return tonumber(arg()) end
local function key() k = k + 1; return KEYS[k - 1] end
while a <= #ARGV do
  local op = arg()
  local r = '1'
  if op == 'hit' then
    local key, win = key(), num()
    local n = redis.call('INCR', key)
    if n == 1 or redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, win) end
    r = tostring(n)
  elseif op == 'unhit' then
    local key = key()
    if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
  elseif op == 'concurrent' then
    local key, delta = key(), num()
    local n = redis.call('INCRBY', key, delta)
    if n <= 0 then redis.call('DEL', key); n = 0 else redis.call('PEXPIRE', key, 86400000) end
    r = tostring(n)
  elseif op == 'child' then
    local key, child, win = key(), arg(), num()
    redis.call('ZADD', key, now, child)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win - 1)
    redis.call('PEXPIRE', key, win)
    r = tostring(redis.call('ZCARD', key))
  elseif op == 'set_flag' then
    redis.call('SET', key(), 1, 'PX', num())
  elseif op == 'flag' then
    r = tostring(redis.call('PTTL', key()))
  elseif op == 'scores' then
    local n, vals = num(), {}
    for i = 1, n do vals[i] = redis.call('GET', key()) or '-' end
    r = table.concat(vals, ',')
  elseif op == 'add_score' then
    local n, delta, hl, cap = num(), num(), num(), num()
    for i = 1, n do
      local key = key()
      local v, value = redis.call('GET', key), 0
      if v then
        local x, at = string.match(v, '^(%S+) (%d+)$')
        if x then value = tonumber(x) * math.pow(0.5, (now - tonumber(at)) / hl) end
      end
      value = math.max(-cap, math.min(cap, value + delta))
      redis.call('SET', key, string.format('%.6f %d', value, now), 'PX', 8 * hl)
    end
  elseif op == 'greylist' then
    local triplet, client = key(), key()
    local delay, win, life, auto = num(), num(), num(), num()
    local res, retry = nil, delay
    if auto > 0 and tonumber(redis.call('GET', client) or '0') >= auto then res, retry = 'allowlisted', 0 end
    if not res then
      local v = redis.call('GET', triplet)
      local first, last, passed = now, now, false
      res = 'new'
      if v then
        local x, y, z = string.match(v, '^(%d+) (%d+) (%d)$')
        first, last, passed = tonumber(x), tonumber(y), z == '1'
        if passed and now - last <= life then
          res, retry, last = 'passed', 0, now
        elseif (not passed) and now - first <= win then
          last = now
          if now - first < delay then
            res, retry = 'early', delay - (now - first)
          else
            res, retry, passed = 'first_pass', 0, true
          end
        else
          first, last, passed = now, now, false
        end
      end
      local ttl = win
      if passed then ttl = life end
      redis.call('SET', triplet, string.format('%d %d %d', first, last, passed and 1 or 0), 'PX', ttl)
      if res == 'first_pass' then
        redis.call('INCR', client)
        redis.call('PEXPIRE', client, life)
      end
    end
    r = res .. ' ' .. string.format('%d', retry)
  else
    return redis.error_reply('mx6 batch: unknown operation ' .. tostring(op))
  end
  out[#out + 1] = r
end
return out
"#;

pub struct Redis {
    conn: ConnectionManager,
    timeout: Duration,
    batch: Script,
    /// Requests sent (each one round trip), for `mx6_store_requests_total`.
    requests: Arc<AtomicU64>,
}

impl Redis {
    /// Connects lazily: a Redis that is down at start is tried again on use.
    pub fn new(url: &str, timeout: Duration) -> Result<Redis> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Redis(e.to_string()))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, cfg).map_err(|e| StoreError::Redis(e.to_string()))?;
        Ok(Redis { conn, timeout, batch: Script::new(BATCH), requests: Arc::new(AtomicU64::new(0)) })
    }

    /// Requests sent so far; each is one round trip.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The live count of requests, for a metric read when scraped.
    pub fn request_counter(&self) -> Arc<AtomicU64> {
        self.requests.clone()
    }

    async fn run<T>(&self, f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(|e| StoreError::Redis(e.to_string())),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// One operation alone.
    async fn one(&self, op: Op, now: u64) -> Result<Reply> {
        let mut r = self.batch(std::slice::from_ref(&op), now).await?;
        r.pop().ok_or_else(|| StoreError::Redis("empty answer to a batch".into()))
    }
}

fn k(key: &str) -> String {
    format!("mx6:{key}")
}

fn bad(what: &str, v: &str) -> StoreError {
    StoreError::Redis(format!("unexpected answer to {what}: {v:?}"))
}

/// The typed answer to `op` from the script's string.
fn reply(op: &Op, v: &str, now: u64) -> Result<Reply> {
    let int = |what: &str| v.parse::<i64>().map_err(|_| bad(what, v));
    Ok(match op {
        Op::Hit { .. } => Reply::Count(int("hit")?.max(0) as u64),
        Op::ChildHit { .. } => Reply::Count(int("child_hit")?.max(0) as u64),
        Op::Concurrent { .. } => Reply::Gauge(int("concurrent")?),
        Op::Flag { .. } => {
            let ttl = int("flag")?;
            Reply::Flag((ttl > 0).then_some(ttl as u64))
        }
        Op::Scores { half_life, .. } => {
            Reply::Scores(v.split(',').map(|x| parse_score(x).map(|s| s.at(now, *half_life)).unwrap_or(0.0)).collect())
        }
        Op::Greylist { .. } => {
            let (res, retry) = v.split_once(' ').ok_or_else(|| bad("greylist", v))?;
            let retry: u64 = retry.parse().map_err(|_| bad("greylist", v))?;
            Reply::Greylist(match res {
                "allowlisted" => Outcome::Allowlisted,
                "passed" => Outcome::Passed { first: false },
                "first_pass" => Outcome::Passed { first: true },
                "early" => Outcome::Early { retry_in: retry },
                "new" => Outcome::New { retry_in: retry },
                _ => return Err(bad("greylist", v)),
            })
        }
        Op::Unhit { .. } | Op::SetFlag { .. } | Op::AddScore { .. } => Reply::Done,
    })
}

impl StateStore for Redis {
    async fn batch(&self, ops: &[Op], now: u64) -> Result<Vec<Reply>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.batch.prepare_invoke();
        inv.arg(now);
        for op in ops {
            match op {
                Op::Greylist { triplet, client, times, auto_allowlist } => {
                    inv.key(k(triplet)).key(k(client));
                    inv.arg("greylist").arg(times.delay).arg(times.retry_window).arg(times.lifetime).arg(auto_allowlist);
                }
                Op::Hit { key, window } => {
                    inv.key(k(key)).arg("hit").arg(window.max(&1));
                }
                Op::Unhit { key } => {
                    inv.key(k(key)).arg("unhit");
                }
                Op::Concurrent { key, delta } => {
                    inv.key(k(key)).arg("concurrent").arg(delta);
                }
                Op::ChildHit { parent, child, window } => {
                    inv.key(k(parent)).arg("child").arg(child).arg(window.max(&1));
                }
                Op::SetFlag { key, ttl } => {
                    inv.key(k(key)).arg("set_flag").arg(ttl.max(&1));
                }
                Op::Flag { key } => {
                    inv.key(k(key)).arg("flag");
                }
                Op::Scores { keys, .. } => {
                    keys.iter().for_each(|key| {
                        inv.key(k(key));
                    });
                    inv.arg("scores").arg(keys.len());
                }
                Op::AddScore { keys, delta, half_life, cap } => {
                    keys.iter().for_each(|key| {
                        inv.key(k(key));
                    });
                    inv.arg("add_score").arg(keys.len()).arg(delta).arg(half_life.max(&1)).arg(cap);
                }
            }
        }
        let mut c = self.conn.clone();
        let answers: Vec<String> = self.run(inv.invoke_async(&mut c)).await?;
        if answers.len() != ops.len() {
            return Err(StoreError::Redis(format!("{} answers to {} operations", answers.len(), ops.len())));
        }
        ops.iter().zip(&answers).map(|(op, v)| reply(op, v, now)).collect()
    }

    async fn greylist(&self, triplet: &str, client: &str, now: u64, t: &Times, auto: u64) -> Result<Outcome> {
        let op = Op::Greylist { triplet: triplet.into(), client: client.into(), times: *t, auto_allowlist: auto };
        match self.one(op, now).await? {
            Reply::Greylist(o) => Ok(o),
            r => Err(bad("greylist", &format!("{r:?}"))),
        }
    }

    async fn hit(&self, key: &str, window: u64, now: u64) -> Result<u64> {
        Ok(self.one(Op::Hit { key: key.into(), window }, now).await?.count())
    }

    async fn unhit(&self, key: &str, now: u64) -> Result<()> {
        self.one(Op::Unhit { key: key.into() }, now).await.map(|_| ())
    }

    async fn peek(&self, key: &str, _now: u64) -> Result<u64> {
        let mut c = self.conn.clone();
        let v: Option<i64> = self.run(redis::cmd("GET").arg(k(key)).query_async(&mut c)).await?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    async fn concurrent(&self, key: &str, delta: i64, now: u64) -> Result<i64> {
        match self.one(Op::Concurrent { key: key.into(), delta }, now).await? {
            Reply::Gauge(n) => Ok(n),
            r => Err(bad("concurrent", &format!("{r:?}"))),
        }
    }

    async fn child_hit(&self, parent: &str, child: &str, now: u64, window: u64) -> Result<u64> {
        Ok(self.one(Op::ChildHit { parent: parent.into(), child: child.into(), window }, now).await?.count())
    }

    async fn set_flag(&self, key: &str, now: u64, ttl: u64) -> Result<()> {
        self.one(Op::SetFlag { key: key.into(), ttl }, now).await.map(|_| ())
    }

    async fn flag(&self, key: &str, now: u64) -> Result<Option<u64>> {
        match self.one(Op::Flag { key: key.into() }, now).await? {
            Reply::Flag(f) => Ok(f),
            r => Err(bad("flag", &format!("{r:?}"))),
        }
    }

    async fn put(&self, key: &str, value: &str, _now: u64, ttl: u64) -> Result<()> {
        let mut c = self.conn.clone();
        self.run(redis::cmd("SET").arg(k(key)).arg(value).arg("PX").arg(ttl.max(1)).query_async(&mut c)).await
    }

    async fn get(&self, key: &str, _now: u64) -> Result<Option<String>> {
        let mut c = self.conn.clone();
        self.run(redis::cmd("GET").arg(k(key)).query_async(&mut c)).await
    }

    async fn scores(&self, keys: &[String], now: u64, half_life: u64) -> Result<Vec<f64>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match self.one(Op::Scores { keys: keys.to_vec(), half_life }, now).await? {
            Reply::Scores(s) => Ok(s),
            r => Err(bad("scores", &format!("{r:?}"))),
        }
    }

    async fn add_score(&self, keys: &[String], delta: f64, now: u64, half_life: u64, cap: f64) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.one(Op::AddScore { keys: keys.to_vec(), delta, half_life, cap }, now).await.map(|_| ())
    }

    async fn show(&self, part: &str, now: u64, half_life: u64) -> Result<Vec<Shown>> {
        let mut c = self.conn.clone();
        let keys = self.scan(part).await?;
        let mut out = Vec::new();
        for key in keys {
            let ttl: i64 = self.run(redis::cmd("PTTL").arg(&key).query_async(&mut c)).await?;
            let kind: String = self.run(redis::cmd("TYPE").arg(&key).query_async(&mut c)).await?;
            let value = if kind == "zset" {
                let members: Vec<String> = self.run(redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).query_async(&mut c)).await?;
                format!("{} children: {}", members.len(), members.join(", "))
            } else {
                let v: Option<String> = self.run(redis::cmd("GET").arg(&key).query_async(&mut c)).await?;
                let v = v.unwrap_or_default();
                let name = key.trim_start_matches("mx6:");
                if name.starts_with("rep|") {
                    format!("score {:.2}", parse_score(&v).map(|s| s.at(now, half_life)).unwrap_or(0.0))
                } else if name.starts_with("gl|") {
                    let p: Vec<u64> = v.split(' ').filter_map(|x| x.parse().ok()).collect();
                    match p.as_slice() {
                        [first, last, passed] => format!(
                            "greylist {} first seen {}s ago, last {}s ago",
                            if *passed == 1 { "passed" } else { "waiting" },
                            now.saturating_sub(*first) / 1000,
                            now.saturating_sub(*last) / 1000
                        ),
                        _ => v,
                    }
                } else if name.starts_with("sts|") || name.starts_with("tlsrpt-why|") {
                    v
                } else if name.starts_with("blk|") {
                    "set".into()
                } else {
                    format!("count {v}")
                }
            };
            out.push(Shown { key: key.trim_start_matches("mx6:").to_string(), value, expires_in_ms: (ttl > 0).then_some(ttl as u64) });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn clear(&self, part: &str) -> Result<u64> {
        let keys = self.scan(part).await?;
        if keys.is_empty() {
            return Ok(0);
        }
        let mut c = self.conn.clone();
        self.run(redis::cmd("DEL").arg(&keys).query_async(&mut c)).await
    }

    async fn delete(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let keys: Vec<String> = keys.iter().map(|key| k(key)).collect();
        let _: i64 = self.run(redis::cmd("DEL").arg(&keys).query_async(&mut c)).await?;
        Ok(())
    }
}

impl Redis {
    /// Keys (with the `mx6:` prefix) that have `part` as one of their parts.
    async fn scan(&self, part: &str) -> Result<Vec<String>> {
        let mut c = self.conn.clone();
        let pattern = format!("mx6:*{}*", part.replace(['*', '?', '[', ']', '\\'], "?"));
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) =
                self.run(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query_async(&mut c)).await?;
            keys.extend(batch.into_iter().filter(|key| key_has(key.trim_start_matches("mx6:"), part)));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(keys)
    }
}

fn parse_score(v: &str) -> Option<Score> {
    let (a, b) = v.split_once(' ')?;
    Some(Score { value: a.parse().ok()?, at: b.parse().ok()? })
}
