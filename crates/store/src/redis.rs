//! The Redis backend: state shared by every mx6 node pointing at the same
//! Redis. Each read-modify-write is one Lua script (atomic on the server);
//! keys are prefixed `mx6:` and carry a TTL, so Redis expires them itself.
//!
//! The connection is made lazily and re-made by redis-rs's
//! `ConnectionManager` after a failure; every operation is bounded by
//! `timeout`, so an unreachable Redis gives an error quickly, never a hang.
//! What to do with the error (fail open or tempfail) is the caller's choice.
//!
//! The greylist script mirrors [`mx6_policy::greylist::step`]; the store's
//! tests run the same cases against both backends.

use std::time::Duration;

use mx6_policy::greylist::{Outcome, Times};
use mx6_policy::reputation::Score;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use crate::state::{key_has, Result, Shown, StateStore, StoreError};

const GREYLIST: &str = r#"
local now, delay, win, life, auto = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if auto > 0 then
  local n = tonumber(redis.call('GET', KEYS[2]) or '0')
  if n >= auto then return {'allowlisted', 0} end
end
local v = redis.call('GET', KEYS[1])
local first, last, passed = now, now, false
local res, retry = 'new', delay
if v then
  local a, b, c = string.match(v, '^(%d+) (%d+) (%d)$')
  first, last, passed = tonumber(a), tonumber(b), c == '1'
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
redis.call('SET', KEYS[1], string.format('%d %d %d', first, last, passed and 1 or 0), 'PX', ttl)
if res == 'first_pass' then
  redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], life)
end
return {res, retry}
"#;

/// A count taken back, never below 0; DECR keeps the key's expiry.
const UNHIT: &str = r"
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v > 0 then return redis.call('DECR', KEYS[1]) end
return 0
";

const HIT: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"#;

const CONCURRENT: &str = r#"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n <= 0 then redis.call('DEL', KEYS[1]) return 0 end
redis.call('PEXPIRE', KEYS[1], 86400000)
return n
"#;

const CHILD: &str = r#"
local now, win = tonumber(ARGV[1]), tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - win - 1)
redis.call('PEXPIRE', KEYS[1], win)
return redis.call('ZCARD', KEYS[1])
"#;

const ADD_SCORE: &str = r#"
local delta, now, hl, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  local value = 0
  if v then
    local a, b = string.match(v, '^(%S+) (%d+)$')
    value = tonumber(a) * math.pow(0.5, (now - tonumber(b)) / hl)
  end
  value = math.max(-cap, math.min(cap, value + delta))
  redis.call('SET', k, string.format('%.6f %d', value, now), 'PX', 8 * hl)
end
return 1
"#;

pub struct Redis {
    conn: ConnectionManager,
    timeout: Duration,
    greylist: Script,
    hit: Script,
    unhit: Script,
    concurrent: Script,
    child: Script,
    add_score: Script,
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
        Ok(Redis {
            conn,
            timeout,
            greylist: Script::new(GREYLIST),
            hit: Script::new(HIT),
            unhit: Script::new(UNHIT),
            concurrent: Script::new(CONCURRENT),
            child: Script::new(CHILD),
            add_score: Script::new(ADD_SCORE),
        })
    }

    async fn run<T>(&self, f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(|e| StoreError::Redis(e.to_string())),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }
}

fn k(key: &str) -> String {
    format!("mx6:{key}")
}

impl StateStore for Redis {
    async fn greylist(&self, triplet: &str, client: &str, now: u64, t: &Times, auto: u64) -> Result<Outcome> {
        let mut c = self.conn.clone();
        let mut inv = self.greylist.prepare_invoke();
        inv.key(k(triplet)).key(k(client)).arg(now).arg(t.delay).arg(t.retry_window).arg(t.lifetime).arg(auto);
        let (res, retry): (String, u64) = self.run(inv.invoke_async(&mut c)).await?;
        Ok(match res.as_str() {
            "allowlisted" => Outcome::Allowlisted,
            "passed" => Outcome::Passed { first: false },
            "first_pass" => Outcome::Passed { first: true },
            "early" => Outcome::Early { retry_in: retry },
            _ => Outcome::New { retry_in: retry },
        })
    }

    async fn hit(&self, key: &str, window: u64, _now: u64) -> Result<u64> {
        let mut c = self.conn.clone();
        let mut inv = self.hit.prepare_invoke();
        inv.key(k(key)).arg(window.max(1));
        self.run(inv.invoke_async(&mut c)).await
    }

    async fn unhit(&self, key: &str, _now: u64) -> Result<()> {
        let mut c = self.conn.clone();
        let mut inv = self.unhit.prepare_invoke();
        inv.key(k(key));
        let _: i64 = self.run(inv.invoke_async(&mut c)).await?;
        Ok(())
    }

    async fn peek(&self, key: &str, _now: u64) -> Result<u64> {
        let mut c = self.conn.clone();
        let v: Option<i64> = self.run(redis::cmd("GET").arg(k(key)).query_async(&mut c)).await?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    async fn concurrent(&self, key: &str, delta: i64, _now: u64) -> Result<i64> {
        let mut c = self.conn.clone();
        let mut inv = self.concurrent.prepare_invoke();
        inv.key(k(key)).arg(delta);
        self.run(inv.invoke_async(&mut c)).await
    }

    async fn child_hit(&self, parent: &str, child: &str, now: u64, window: u64) -> Result<u64> {
        let mut c = self.conn.clone();
        let mut inv = self.child.prepare_invoke();
        inv.key(k(parent)).arg(now).arg(child).arg(window.max(1));
        self.run(inv.invoke_async(&mut c)).await
    }

    async fn set_flag(&self, key: &str, _now: u64, ttl: u64) -> Result<()> {
        let mut c = self.conn.clone();
        self.run(redis::cmd("SET").arg(k(key)).arg(1).arg("PX").arg(ttl.max(1)).query_async(&mut c)).await
    }

    async fn flag(&self, key: &str, _now: u64) -> Result<Option<u64>> {
        let mut c = self.conn.clone();
        let ttl: i64 = self.run(redis::cmd("PTTL").arg(k(key)).query_async(&mut c)).await?;
        Ok((ttl > 0).then_some(ttl as u64))
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
        let mut c = self.conn.clone();
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(k(key));
        }
        let vals: Vec<Option<String>> = self.run(cmd.query_async(&mut c)).await?;
        Ok(vals.iter().map(|v| v.as_deref().and_then(parse_score).map(|s| s.at(now, half_life)).unwrap_or(0.0)).collect())
    }

    async fn add_score(&self, keys: &[String], delta: f64, now: u64, half_life: u64, cap: f64) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let mut inv = self.add_score.prepare_invoke();
        for key in keys {
            inv.key(k(key));
        }
        inv.arg(delta).arg(now).arg(half_life.max(1)).arg(cap);
        let _: i64 = self.run(inv.invoke_async(&mut c)).await?;
        Ok(())
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
