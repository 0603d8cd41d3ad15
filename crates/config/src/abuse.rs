//! The abuse-defense sections: `[store]`, `[greylist]`, `[[ratelimit]]`,
//! `[ratelimit_escalation]`, `[reputation]`, `[pregreet]`, and the rules they
//! make for `mx6_policy`.

use std::time::Duration;

use serde::Deserialize;

use crate::listener::SubmissionConfig;
use crate::units::{duration, parsed};

/// Where greylist, counter and reputation state lives (`[store]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// `redis://host:port/db` (or `redis://[::1]:6379/0`) when backend = "redis".
    pub url: String,
    /// Redis unreachable: `open` decides on local state (logged, counted);
    /// `tempfail` answers 4xx.
    pub on_failure: FailMode,
    /// Longest wait for one Redis operation.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { backend: StoreBackend::Embedded, url: String::new(), on_failure: FailMode::Open, timeout: Duration::from_millis(500) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Embedded,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    Open,
    Tempfail,
}

/// `[greylist]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GreylistConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "duration")]
    pub delay: Duration,
    #[serde(deserialize_with = "duration")]
    pub retry_window: Duration,
    #[serde(deserialize_with = "duration")]
    pub lifetime: Duration,
    /// Client part of the triplet when the client has no SPF or FCrDNS identity.
    pub ipv6_prefix: u8,
    pub ipv4_prefix: u8,
    /// After this many of a client's triplets passed, it is no longer
    /// greylisted (postgrey's auto-allowlist); 0 = off.
    pub auto_allowlist: u64,
}

impl Default for GreylistConfig {
    fn default() -> Self {
        GreylistConfig {
            enabled: true,
            delay: Duration::from_secs(300),
            retry_window: Duration::from_secs(2 * 86400),
            lifetime: Duration::from_secs(35 * 86400),
            ipv6_prefix: 64,
            ipv4_prefix: 24,
            auto_allowlist: 5,
        }
    }
}

impl GreylistConfig {
    pub fn times(&self) -> mx6_policy::greylist::Times {
        mx6_policy::greylist::Times {
            delay: self.delay.as_millis() as u64,
            retry_window: self.retry_window.as_millis() as u64,
            lifetime: self.lifetime.as_millis() as u64,
        }
    }
}

/// One `[[ratelimit]]` rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(deserialize_with = "parsed")]
    pub what: mx6_policy::ratelimit::Kind,
    #[serde(deserialize_with = "parsed")]
    pub prefix: mx6_policy::prefix::Level,
    pub limit: u64,
    #[serde(default = "minute", deserialize_with = "duration")]
    pub window: Duration,
    /// strangers (default) | authenticated | mynetworks | all
    #[serde(default = "strangers", deserialize_with = "parsed")]
    pub scope: mx6_policy::ratelimit::Scope,
    /// Hold a client that hit the limit this long before answering; "0s" = off.
    #[serde(default, deserialize_with = "duration")]
    pub tarpit: Duration,
}

fn minute() -> Duration {
    Duration::from_secs(60)
}

fn strangers() -> mx6_policy::ratelimit::Scope {
    mx6_policy::ratelimit::Scope::Strangers
}

/// `[ratelimit_escalation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationConfig {
    /// Distinct /64s (IPv4: /32s) of one aggregate that must hit a limit; 0 = off.
    pub children: u64,
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    /// The aggregate: IPv6 /48, IPv4 /24 by default.
    pub ipv6_prefix: u8,
    pub ipv4_prefix: u8,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        let e = mx6_policy::ratelimit::Escalation::default();
        EscalationConfig { children: e.children, window: e.window, duration: e.duration, ipv6_prefix: e.ipv6.0, ipv4_prefix: e.ipv4.0 }
    }
}

/// `[reputation]`: decaying score per prefix level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReputationConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "duration")]
    pub half_life: Duration,
    /// At or above (finest level): greylisting is skipped.
    pub good: f64,
    /// At or below (any level): rate limits are multiplied by `bad_limit_factor`.
    pub bad: f64,
    pub bad_limit_factor: f64,
}

impl Default for ReputationConfig {
    fn default() -> Self {
        ReputationConfig { enabled: true, half_life: Duration::from_secs(7 * 86400), good: 10.0, bad: -10.0, bad_limit_factor: 0.5 }
    }
}

/// `[pregreet]`: the early-talker test (Postfix postscreen's pregreet). The
/// banner starts as `220-` and the client must wait `wait` for its end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PregreetConfig {
    /// "0s" = off.
    #[serde(deserialize_with = "duration")]
    pub wait: Duration,
    pub action: PregreetAction,
}

impl Default for PregreetConfig {
    fn default() -> Self {
        PregreetConfig { wait: Duration::ZERO, action: PregreetAction::Refuse }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PregreetAction {
    /// 554 5.5.1 and close.
    Refuse,
    /// Log and count, then carry on.
    Log,
}

/// The rate-limit rules in force: the configured ones (or the built-in
/// defaults when `[[ratelimit]]` is absent), plus failed-AUTH limits from
/// `[submission]` unless a rule counts `auth_failures` itself.
pub fn ratelimit_rules(configured: Option<&[RateLimitConfig]>, submission: &SubmissionConfig) -> Vec<mx6_policy::ratelimit::Rule> {
    use mx6_policy::prefix::Level;
    use mx6_policy::ratelimit::{Kind, Rule, Scope};
    let rule = |kind, level, limit, window, scope| Rule { kind, level, limit, window, scope, tarpit: Duration::ZERO };
    let mut rules: Vec<Rule> = match configured {
        Some(v) => v
            .iter()
            .map(|r| Rule { kind: r.what, level: r.prefix, limit: r.limit, window: r.window, scope: r.scope, tarpit: r.tarpit })
            .collect(),
        None => vec![
            rule(Kind::Connections, Level::v6(64), 50, Duration::ZERO, Scope::Strangers),
            rule(Kind::Connections, Level::v6(48), 200, Duration::ZERO, Scope::Strangers),
            rule(Kind::Connections, Level::v4(32), 50, Duration::ZERO, Scope::Strangers),
        ],
    };
    if !rules.iter().any(|r| r.kind == Kind::AuthFailures) && submission.auth_failures > 0 {
        let (n, w) = (submission.auth_failures as u64, submission.auth_failure_window);
        rules.push(rule(Kind::AuthFailures, Level::v6(64), n, w, Scope::All));
        rules.push(rule(Kind::AuthFailures, Level::v4(32), n, w, Scope::All));
    }
    rules
}

impl EscalationConfig {
    pub fn escalation(&self) -> mx6_policy::ratelimit::Escalation {
        mx6_policy::ratelimit::Escalation {
            children: self.children,
            window: self.window,
            duration: self.duration,
            ipv6: (self.ipv6_prefix, 64),
            ipv4: (self.ipv4_prefix, 32),
        }
    }
}
