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
//! Each stage asks all its questions of the store in one request
//! ([`Plan`]): one round trip to Redis however many rules apply.
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
use mx6_store::{Op, Reply};

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

fn release_ops(keys: Vec<String>) -> Vec<Op> {
    keys.into_iter().map(|key| Op::Concurrent { key, delta: -1 }).collect()
}

impl ConnGuard {
    pub fn none() -> ConnGuard {
        ConnGuard { state: None, keys: Vec::new() }
    }

    /// Give the counts back now (a refused connection), so the next
    /// connection from the prefix never sees them.
    async fn release(mut self) {
        if let (Some(state), false) = (self.state.take(), self.keys.is_empty()) {
            let _ = state.batch(&release_ops(std::mem::take(&mut self.keys)), mx6_store::now_ms()).await;
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let (Some(state), false) = (self.state.take(), self.keys.is_empty()) {
            let ops = release_ops(std::mem::take(&mut self.keys));
            crate::checks::state::unwaited(async move {
                let _ = state.batch(&ops, mx6_store::now_ms()).await;
            });
        }
    }
}

fn rate_key(r: &Rule, prefix: &IpNet) -> String {
    format!("rl|{}|{}|{prefix}", r.kind.as_str(), r.window.as_millis())
}

fn block_key(agg: &IpNet) -> String {
    format!("blk|{agg}")
}

/// What one answer of a [`Plan`] decides.
#[derive(Debug, Clone)]
enum Ask {
    /// Whether the aggregate is escalated.
    Escalation(IpNet),
    /// A rule's count (or concurrency gauge) on its prefix.
    Limit(usize, IpNet),
}

/// The questions of one stage, asked of the store in one request
/// ([`State::batch`]), and what each answer decides. Callers may add
/// their own operations with [`Plan::with`] (the reputation read at connect).
#[derive(Debug, Default)]
pub struct Plan {
    ops: Vec<Op>,
    /// Each decision and the position of its answer in `ops`.
    asks: Vec<(Ask, usize)>,
    /// Concurrency gauges counted up; a guard gives them back.
    held: Vec<String>,
    len: usize,
}

impl Plan {
    /// The operations to send, the plan's own and any added with [`Plan::with`].
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Ask `op` in the same request, after the plan's own; the position of
    /// its answer.
    pub fn with(&mut self, op: Op) -> usize {
        self.ops.push(op);
        self.ops.len() - 1
    }

    /// Whether the plan asks nothing of its own.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl RateLimits {
    pub fn new(rules: Vec<Rule>, escalation: Escalation, bad_limit_factor: f64, metrics: Arc<Metrics>) -> RateLimits {
        RateLimits { rules, escalation, bad_limit_factor, metrics }
    }

    fn applicable<'a>(&'a self, kind: Kind, a: &'a Asker) -> impl Iterator<Item = (usize, &'a Rule, IpNet)> + 'a {
        self.rules
            .iter()
            .enumerate()
            .filter(move |(_, r)| r.kind == kind)
            .filter_map(move |(i, r)| r.key(a.ip, a.standing).map(|p| (i, r, p)))
    }

    /// Whether any rule of `kind` could apply (no store access otherwise).
    pub fn any(&self, kind: Kind, a: &Asker) -> bool {
        self.applicable(kind, a).next().is_some()
    }

    /// The questions for `kinds`, with the escalation flag first when
    /// `escalation`: concurrent connections count up a gauge (each prefix
    /// once, however many rules share its level), every other kind counts
    /// an event in its rule's window.
    fn plan(&self, a: &Asker, kinds: &[Kind], escalation: bool) -> Plan {
        let mut p = Plan::default();
        if escalation && self.escalation.enabled() && !a.standing.mynetworks && self.rules.iter().any(|r| r.scope.covers(a.standing)) {
            let (agg, _) = self.escalation.prefixes(a.ip);
            p.asks.push((Ask::Escalation(agg), p.ops.len()));
            p.ops.push(Op::Flag { key: block_key(&agg) });
        }
        for &kind in kinds {
            for (i, r, prefix) in self.applicable(kind, a) {
                let op = if kind == Kind::Connections {
                    let key = format!("cc|{prefix}");
                    if let Some(at) = p.ops.iter().position(|o| matches!(o, Op::Concurrent { key: k, .. } if *k == key)) {
                        p.asks.push((Ask::Limit(i, prefix), at));
                        continue;
                    }
                    p.held.push(key.clone());
                    Op::Concurrent { key, delta: 1 }
                } else {
                    Op::Hit { key: rate_key(r, &prefix), window: r.window.as_millis() as u64 }
                };
                p.asks.push((Ask::Limit(i, prefix), p.ops.len()));
                p.ops.push(op);
            }
        }
        p.len = p.ops.len();
        p
    }

    /// The connect-time questions: an escalated aggregate, concurrent
    /// connections, the connection rate and, on an implicit-TLS listener
    /// (`tls`), the TLS session rate. Ask them with [`State::batch`] (with
    /// anything else the stage needs appended) and give the answers to
    /// [`RateLimits::judge`].
    pub fn connect_plan(&self, a: &Asker, tls: bool) -> Plan {
        let kinds: &[Kind] =
            if tls { &[Kind::Connections, Kind::ConnectionRate, Kind::TlsSessions] } else { &[Kind::Connections, Kind::ConnectionRate] };
        self.plan(a, kinds, true)
    }

    /// Decide on a plan's answers. On success the returned guard holds the
    /// concurrent-connection counts until the session ends; on a refusal
    /// they are given back at once. Every question was asked, so a refused
    /// connection still counts against the connection rate (as Postfix's
    /// anvil counts it).
    pub async fn judge(&self, state: &Arc<State>, a: &Asker, plan: Plan, answers: &[Reply]) -> Result<ConnGuard, Stop> {
        let guard = ConnGuard { state: Some(state.clone()), keys: plan.held };
        let mut first: Option<Hit> = None;
        for (ask, at) in &plan.asks {
            let answer = answers.get(*at);
            match ask {
                Ask::Escalation(agg) => {
                    if let Some(Reply::Flag(Some(_))) = answer {
                        first = Some(Hit { limit: "escalation", prefix: *agg, count: 0, max: 0, tarpit: Duration::ZERO });
                        break;
                    }
                }
                Ask::Limit(i, prefix) => {
                    let r = &self.rules[*i];
                    let n = answer.map(Reply::count).unwrap_or(0);
                    let max = r.limit_for(a.bad, self.bad_limit_factor);
                    if n > max && first.is_none() {
                        first = Some(Hit { limit: r.kind.as_str(), prefix: *prefix, count: n, max, tarpit: r.tarpit });
                    }
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
    pub async fn connect_rate(&self, state: &Arc<State>, a: &Asker) -> Result<(), Stop> {
        self.ask(state, a, self.plan(a, &[Kind::ConnectionRate], true)).await
    }

    /// Count one event of `kind` (messages, recipients, tls_sessions,
    /// auth_failures) on every rule's prefix, in one request, and say
    /// whether a limit is now exceeded.
    pub async fn count(&self, state: &Arc<State>, kind: Kind, a: &Asker) -> Result<(), Stop> {
        self.ask(state, a, self.plan(a, &[kind], false)).await
    }

    async fn ask(&self, state: &Arc<State>, a: &Asker, plan: Plan) -> Result<(), Stop> {
        if plan.is_empty() {
            return Ok(());
        }
        let answers = state.batch(&plan.ops, mx6_store::now_ms()).await?;
        self.judge(state, a, plan, &answers).await.map(|_| ())
    }

    /// Take back one count of `kind` (an AUTH attempt, counted before its
    /// password was checked, that succeeded).
    pub async fn uncount(&self, state: &State, kind: Kind, a: &Asker) {
        let ops: Vec<Op> = self.applicable(kind, a).map(|(_, r, p)| Op::Unhit { key: rate_key(r, &p) }).collect();
        if !ops.is_empty() {
            let _ = state.batch(&ops, mx6_store::now_ms()).await;
        }
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
