//! Rate limits (`[[ratelimit]]`) and escalation (`[ratelimit_escalation]`)
//! counted in the state store, so several nodes on one Redis count together.
//!
//! - at connect: an escalated aggregate, concurrent connections and the
//!   connection rate (421 4.7.0, then close);
//! - at STARTTLS (or the handshake of an implicit-TLS listener): new TLS
//!   sessions (454 4.7.0);
//! - at MAIL and RCPT: messages and recipients (451 4.7.1);
//! - at AUTH: failed attempts (454 4.7.0 once over).
//!
//! Every hit is counted in `mx6_ratelimit_hits_total{family,limit,prefix_len}`
//! and logged with the prefix that decided; it also marks the client's /64
//! (/32) as a limited child of its /48 (/24), and when `children` distinct
//! ones did within `window`, the aggregate is refused as one client for
//! `duration`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use mx6_policy::prefix::Family;
use mx6_policy::ratelimit::{Escalation, Kind, Rule, Standing};

use crate::admin::metrics::Metrics;
use crate::checks::state::{State, Unavailable};

pub struct RateLimits {
    pub rules: Vec<Rule>,
    pub escalation: Escalation,
    bad_limit_factor: f64,
    metrics: Arc<Metrics>,
}

/// A limit that decided.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The rule kind, or `escalation`.
    pub limit: &'static str,
    pub prefix: IpNet,
    pub count: u64,
    pub max: u64,
    pub tarpit: Duration,
}

/// Why a step may not go on.
#[derive(Debug, Clone)]
pub enum Stop {
    Limited(Hit),
    Unavailable,
}

impl From<Unavailable> for Stop {
    fn from(_: Unavailable) -> Stop {
        Stop::Unavailable
    }
}

/// Who is asking: the client, its standing for rule scopes, and whether its
/// reputation is bad (tighter limits).
#[derive(Debug, Clone, Copy)]
pub struct Asker {
    pub ip: IpAddr,
    pub standing: Standing,
    pub bad: bool,
}

/// Concurrent-connection counts held by a session; released when dropped.
pub struct ConnGuard {
    state: Option<Arc<State>>,
    keys: Vec<String>,
}

impl ConnGuard {
    pub fn none() -> ConnGuard {
        ConnGuard { state: None, keys: Vec::new() }
    }

    /// Give the counts back now (a refused connection), so the next
    /// connection from the prefix never sees them.
    async fn release(mut self) {
        if let Some(state) = self.state.take() {
            let now = mx6_store::now_ms();
            for k in std::mem::take(&mut self.keys) {
                let _ = state.concurrent(&k, -1, now).await;
            }
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let (Some(state), false) = (self.state.take(), self.keys.is_empty()) {
            let keys = std::mem::take(&mut self.keys);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let now = mx6_store::now_ms();
                    for k in keys {
                        let _ = state.concurrent(&k, -1, now).await;
                    }
                });
            }
        }
    }
}

fn rate_key(r: &Rule, prefix: &IpNet) -> String {
    format!("rl|{}|{}|{prefix}", r.kind.as_str(), r.window.as_millis())
}

fn block_key(agg: &IpNet) -> String {
    format!("blk|{agg}")
}

impl RateLimits {
    pub fn new(rules: Vec<Rule>, escalation: Escalation, bad_limit_factor: f64, metrics: Arc<Metrics>) -> RateLimits {
        RateLimits { rules, escalation, bad_limit_factor, metrics }
    }

    fn applicable<'a>(&'a self, kind: Kind, a: &'a Asker) -> impl Iterator<Item = (&'a Rule, IpNet)> + 'a {
        self.rules.iter().filter(move |r| r.kind == kind).filter_map(move |r| r.key(a.ip, a.standing).map(|p| (r, p)))
    }

    /// Whether any rule of `kind` could apply (no store access otherwise).
    pub fn any(&self, kind: Kind, a: &Asker) -> bool {
        self.applicable(kind, a).next().is_some()
    }

    /// The connect-time checks. On success the returned guard holds the
    /// concurrent-connection counts until the session ends.
    pub async fn connect(&self, state: &Arc<State>, a: &Asker) -> Result<ConnGuard, Stop> {
        if let Some(hit) = self.escalated(state, a).await? {
            return Err(self.hit(state, a, hit).await);
        }
        let now = mx6_store::now_ms();
        let mut guard = ConnGuard { state: Some(state.clone()), keys: Vec::new() };
        let mut first: Option<Hit> = None;
        // Each prefix is counted once, even when several rules share its level.
        let mut counts: Vec<(String, i64)> = Vec::new();
        for (r, p) in self.applicable(Kind::Connections, a) {
            let key = format!("cc|{p}");
            let n = match counts.iter().find(|(k, _)| *k == key) {
                Some((_, n)) => *n,
                None => match state.concurrent(&key, 1, now).await {
                    Ok(n) => {
                        guard.keys.push(key.clone());
                        counts.push((key, n));
                        n
                    }
                    Err(e) => {
                        guard.release().await;
                        return Err(e.into());
                    }
                },
            };
            let max = r.limit_for(a.bad, self.bad_limit_factor);
            if n as u64 > max && first.is_none() {
                first = Some(Hit { limit: r.kind.as_str(), prefix: p, count: n as u64, max, tarpit: r.tarpit });
            }
        }
        if first.is_none() {
            match self.count_rules(state, Kind::ConnectionRate, a, now).await {
                Ok(h) => first = h,
                Err(e) => {
                    guard.release().await;
                    return Err(e.into());
                }
            }
        }
        match first {
            Some(hit) => {
                guard.release().await;
                Err(self.hit(state, a, hit).await)
            }
            None => Ok(guard),
        }
    }

    /// The connect-time checks without the concurrency count, for a caller
    /// that never hears when a connection ends (`mx6 policyd` at Postfix's
    /// CONNECT state): an escalated aggregate, then the connection rate.
    pub async fn connect_rate(&self, state: &State, a: &Asker) -> Result<(), Stop> {
        if let Some(hit) = self.escalated(state, a).await? {
            return Err(self.hit(state, a, hit).await);
        }
        self.count(state, Kind::ConnectionRate, a).await
    }

    /// Count one event of `kind` (messages, recipients, tls_sessions,
    /// auth_failures) and say whether a limit is now exceeded.
    pub async fn count(&self, state: &State, kind: Kind, a: &Asker) -> Result<(), Stop> {
        if !self.any(kind, a) {
            return Ok(());
        }
        match self.count_rules(state, kind, a, mx6_store::now_ms()).await? {
            Some(hit) => Err(self.hit(state, a, hit).await),
            None => Ok(()),
        }
    }

    /// Take back one count of `kind` (an AUTH attempt, counted before its
    /// password was checked, that succeeded).
    pub async fn uncount(&self, state: &State, kind: Kind, a: &Asker) {
        let now = mx6_store::now_ms();
        for (r, p) in self.applicable(kind, a) {
            let _ = state.unhit(&rate_key(r, &p), now).await;
        }
    }

    async fn count_rules(&self, state: &State, kind: Kind, a: &Asker, now: u64) -> Result<Option<Hit>, Unavailable> {
        let mut first = None;
        for (r, p) in self.applicable(kind, a) {
            let n = state.hit(&rate_key(r, &p), r.window.as_millis() as u64, now).await?;
            let max = r.limit_for(a.bad, self.bad_limit_factor);
            if n > max && first.is_none() {
                first = Some(Hit { limit: r.kind.as_str(), prefix: p, count: n, max, tarpit: r.tarpit });
            }
        }
        Ok(first)
    }

    /// The client's aggregate, when it is escalated (never for mynetworks:
    /// the operator's own networks are not blocked, nor made to depend on
    /// the store).
    async fn escalated(&self, state: &State, a: &Asker) -> Result<Option<Hit>, Unavailable> {
        if !self.escalation.enabled() || a.standing.mynetworks || !self.any_rule_covers(a) {
            return Ok(None);
        }
        let (agg, _) = self.escalation.prefixes(a.ip);
        Ok(state.flag(&block_key(&agg), mx6_store::now_ms()).await?.map(|_| Hit {
            limit: "escalation",
            prefix: agg,
            count: 0,
            max: 0,
            tarpit: Duration::ZERO,
        }))
    }

    fn any_rule_covers(&self, a: &Asker) -> bool {
        self.rules.iter().any(|r| r.scope.covers(a.standing))
    }

    /// Count, log and escalate a hit; returns it as the stop reason.
    async fn hit(&self, state: &State, a: &Asker, hit: Hit) -> Stop {
        let family = Family::of(a.ip).as_str();
        self.metrics.ratelimit_hits.with_label_values(&[family, hit.limit, &hit.prefix.prefix_len().to_string()]).inc();
        tracing::info!(client = %a.ip, family, limit = hit.limit, prefix = %hit.prefix, count = hit.count, max = hit.max, "rate limit hit");
        if self.escalation.enabled() && hit.limit != "escalation" {
            let (agg, child) = self.escalation.prefixes(a.ip);
            let now = mx6_store::now_ms();
            let e = &self.escalation;
            if let Ok(n) = state.child_hit(&format!("esc|{agg}"), &child.to_string(), now, e.window.as_millis() as u64).await {
                if n >= e.children && state.set_flag(&block_key(&agg), now, e.duration.as_millis() as u64).await.is_ok() {
                    tracing::warn!(
                        client = %a.ip, family, prefix = %agg, children = n, duration = ?e.duration,
                        "rate limit escalated: {n} prefixes of {agg} hit limits; the whole {agg} is limited"
                    );
                }
            }
        }
        Stop::Limited(hit)
    }
}
