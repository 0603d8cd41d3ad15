//! Configuration: the TOML file of CONTRACT.md, its built-in defaults, and
//! errors that name the key and the line.
//!
//! Every value is checked while it is read (durations, sizes, addresses, CIDRs,
//! enumerations), so one pass reports the first bad key with its line. Unknown
//! keys are errors, never ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub hostname: String,
    pub data_dir: PathBuf,
    /// Started as root: bind, give data_dir to this user, continue as it.
    pub user: String,
    pub listener: Vec<ListenerConfig>,
    pub tls: TlsConfig,
    pub local: LocalConfig,
    pub relay: RelayConfig,
    pub dns: DnsConfig,
    pub limits: LimitsConfig,
    pub queue: QueueConfig,
    pub submission: SubmissionConfig,
    pub metrics: MetricsConfig,
    pub policy: PolicyConfig,
    pub dnsbl: DnsblConfig,
    pub policyd: PolicydConfig,
    pub delivery: DeliveryConfig,
    /// DKIM signing keys (`[[dkim]]`).
    pub dkim: Vec<DkimConfig>,
    pub store: StoreConfig,
    pub greylist: GreylistConfig,
    /// `[[ratelimit]]` rules; absent = the built-in defaults, `ratelimit = []` = none.
    pub ratelimit: Option<Vec<RateLimitConfig>>,
    pub ratelimit_escalation: EscalationConfig,
    pub reputation: ReputationConfig,
    pub pregreet: PregreetConfig,
    pub content_filter: ContentFilterConfig,
    /// `[[milter]]`, called in order.
    pub milter: Vec<MilterConfig>,
}

/// Where a content filter listens: TCP (an IP address and port) or a unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for FilterAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FilterAddress::Tcp(a) => write!(f, "{a}"),
            FilterAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl FilterAddress {
    /// `[v6]:port`, `v4:port`, `unix:/path`; for milters also Sendmail's and
    /// Postfix's `inet:[v6]:port`, `inet:v4:port`, `inet:port@host`,
    /// `inet6:port@host`, `local:/path`.
    pub fn parse(s: &str) -> Result<FilterAddress, String> {
        let bad = || format!("`{s}` is not a filter address; use \"[::1]:8891\", \"127.0.0.1:783\", \"inet:[::1]:8891\" or \"unix:/path\"");
        if let Some(p) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("local:")) {
            return if p.is_empty() { Err(bad()) } else { Ok(FilterAddress::Unix(PathBuf::from(p))) };
        }
        let rest = s.strip_prefix("inet6:").or_else(|| s.strip_prefix("inet:")).unwrap_or(s);
        if let Some((port, host)) = rest.split_once('@') {
            let ip: std::net::IpAddr = host.trim_matches(['[', ']']).parse().map_err(|_| bad())?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            return Ok(FilterAddress::Tcp(SocketAddr::new(ip, port)));
        }
        rest.parse().map(FilterAddress::Tcp).map_err(|_| bad())
    }
}

fn filter_address<'de, D: Deserializer<'de>>(d: D) -> Result<FilterAddress, D::Error> {
    FilterAddress::parse(&String::deserialize(d)?).map_err(de::Error::custom)
}

fn optional_filter_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FilterAddress>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    FilterAddress::parse(&s).map(Some).map_err(de::Error::custom)
}

/// `[content_filter]`: SpamAssassin's spamd at end of data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentFilterConfig {
    /// `""` = off.
    #[serde(deserialize_with = "optional_filter_address")]
    pub spamd: Option<FilterAddress>,
    /// At or above: delivered marked (`X-Spam-Flag: YES`, Junk folder).
    pub mark_score: f64,
    /// At or above: 550 5.7.1.
    pub reject_score: f64,
    /// spamd down or too slow: tempfail (451) or accept unscanned.
    pub on_failure: SpamdFailure,
    /// Larger messages are not scanned (as spamc's 500 KB default).
    #[serde(deserialize_with = "size")]
    pub max_size: usize,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for ContentFilterConfig {
    fn default() -> Self {
        ContentFilterConfig {
            spamd: None,
            mark_score: 5.0,
            reject_score: 10.0,
            on_failure: SpamdFailure::Tempfail,
            max_size: 512 << 10,
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpamdFailure {
    Tempfail,
    Accept,
}

/// One `[[milter]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilterConfig {
    #[serde(deserialize_with = "filter_address")]
    pub address: FilterAddress,
    #[serde(default = "thirty_seconds", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "milter_tempfail")]
    pub on_failure: MilterFailure,
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

fn milter_tempfail() -> MilterFailure {
    MilterFailure::Tempfail
}

/// A milter that cannot be reached or breaks the protocol: 451, skip it, or 550.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MilterFailure {
    Tempfail,
    Accept,
    Reject,
}

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

/// One DKIM signing key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    pub domain: String,
    pub selector: String,
    /// Relative to data_dir; default `dkim/<domain>.<selector>.key`.
    #[serde(default)]
    pub key: String,
}

impl DkimConfig {
    pub fn key_path(&self, data_dir: &Path) -> PathBuf {
        if self.key.is_empty() {
            data_dir.join("dkim").join(format!("{}.{}.key", self.domain, self.selector))
        } else {
            data_dir.join(&self.key)
        }
    }
}

/// Outbound delivery (`[delivery]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// `host:port`, `[host]:port` (no MX lookup) or `[2001:db8::1]:587`; empty = MX delivery.
    #[serde(deserialize_with = "relayhost")]
    pub relayhost: Option<mx6_delivery::remote::Relayhost>,
    /// AUTH credentials for the relayhost (sent only inside TLS).
    pub relayhost_username: String,
    pub relayhost_password: String,
    /// Remote SMTP port for MX delivery.
    pub port: u16,
    #[serde(deserialize_with = "optional_ipv6")]
    pub bind_ipv6: Option<std::net::Ipv6Addr>,
    #[serde(deserialize_with = "optional_ipv4")]
    pub bind_ipv4: Option<std::net::Ipv4Addr>,
    #[serde(deserialize_with = "preference")]
    pub address_preference: mx6_delivery::remote::AddressPreference,
    /// Outbound sessions at once, all destinations together.
    pub concurrency: usize,
    /// Outbound sessions at once to one destination domain.
    pub destination_concurrency: usize,
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            relayhost: None,
            relayhost_username: String::new(),
            relayhost_password: String::new(),
            port: 25,
            bind_ipv6: None,
            bind_ipv4: None,
            address_preference: mx6_delivery::remote::AddressPreference::HappyEyeballs,
            concurrency: 100,
            destination_concurrency: 10,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

impl DeliveryConfig {
    pub fn remote(&self, hostname: &str) -> mx6_delivery::remote::RemoteConfig {
        let mut r = mx6_delivery::remote::RemoteConfig::new(hostname);
        r.port = self.port;
        r.relayhost = self.relayhost.clone();
        r.auth = (!self.relayhost_username.is_empty()).then(|| (self.relayhost_username.clone(), self.relayhost_password.clone()));
        r.bind_ipv6 = self.bind_ipv6;
        r.bind_ipv4 = self.bind_ipv4;
        r.preference = self.address_preference;
        r.connect_timeout = self.connect_timeout;
        r
    }
}

fn relayhost<'de, D: Deserializer<'de>>(d: D) -> Result<Option<mx6_delivery::remote::Relayhost>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    mx6_delivery::remote::Relayhost::parse(&s).map(Some).map_err(de::Error::custom)
}

fn preference<'de, D: Deserializer<'de>>(d: D) -> Result<mx6_delivery::remote::AddressPreference, D::Error> {
    use mx6_delivery::remote::AddressPreference as P;
    let s = String::deserialize(d)?;
    Ok(match s.as_str() {
        "happy-eyeballs" => P::HappyEyeballs,
        "ipv6-first" => P::Ipv6First,
        "ipv4-first" => P::Ipv4First,
        "ipv6-only" => P::Ipv6Only,
        "ipv4-only" => P::Ipv4Only,
        _ => {
            return Err(de::Error::custom(format!(
                "unknown `{s}`; expected happy-eyeballs, ipv6-first, ipv4-first, ipv6-only or ipv4-only"
            )))
        }
    })
}

/// Inbound authentication policy (`[policy]`, `[policy.ipv6]`, `[policy.ipv4]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub ipv6: FamilyPolicyConfig,
    pub ipv4: FamilyPolicyConfig,
    /// Refuse mail whose SPF result is `fail` (550 5.7.23).
    pub reject_spf_fail: bool,
    /// Apply DMARC `p=reject` (550 5.7.1) and `p=quarantine` (Junk).
    pub enforce_dmarc: bool,
    /// Clients in these networks skip the inbound checks.
    pub allow_networks: Vec<IpNet>,
    /// Envelope senders in these domains (and their subdomains) skip them.
    #[serde(deserialize_with = "domains")]
    pub allow_sender_domains: Vec<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            ipv6: FamilyPolicyConfig::strict(),
            ipv4: FamilyPolicyConfig::default(),
            reject_spf_fail: true,
            enforce_dmarc: true,
            allow_networks: Vec::new(),
            allow_sender_domains: Vec::new(),
        }
    }
}

/// Requirements for one address family. IPv4 defaults: all false.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FamilyPolicyConfig {
    pub require_ptr: bool,
    pub require_fcrdns: bool,
    pub require_spf_or_dkim: bool,
}

impl FamilyPolicyConfig {
    fn strict() -> Self {
        FamilyPolicyConfig { require_ptr: true, require_fcrdns: true, require_spf_or_dkim: true }
    }
}

/// DNS blocklists and allowlists (`[dnsbl]`, `[[dnsbl.sites]]`), scored like
/// Postfix postscreen's `postscreen_dnsbl_sites`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsblConfig {
    /// Score at or above which a client is refused (554 5.7.1).
    pub threshold: i32,
    pub sites: Vec<DnsblSiteConfig>,
}

impl Default for DnsblConfig {
    fn default() -> Self {
        DnsblConfig { threshold: 1, sites: Vec::new() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsblSiteConfig {
    pub zone: String,
    /// Negative for allowlists (DNSWL).
    #[serde(default = "one")]
    pub weight: i32,
    /// Return codes that count, as addresses or CIDRs; empty = any 127.0.0.0/8.
    #[serde(default, deserialize_with = "v4_nets")]
    pub codes: Vec<ipnet::Ipv4Net>,
}

fn one() -> i32 {
    1
}

/// `mx6 policyd`: Postfix policy delegation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicydConfig {
    /// `[v6]:port`, `v4:port` or `unix:/path`.
    pub listen: String,
}

impl Default for PolicydConfig {
    fn default() -> Self {
        PolicydConfig { listen: "[::1]:10040".into() }
    }
}

/// The admin HTTP endpoint: `/metrics` and `/healthz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `[v6]:port` or `v4:port`; `""` in the file = off.
    #[serde(deserialize_with = "optional_address")]
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: Some(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 9325))) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    #[serde(default)]
    pub kind: ListenerKind,
    #[serde(default)]
    pub proxy_protocol: bool,
    #[serde(default)]
    pub allow: Vec<IpNet>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Port 25: receives mail; STARTTLS offered; no AUTH.
    #[default]
    Smtp,
    /// Port 587 (RFC 6409): STARTTLS, then AUTH, then MAIL.
    Submission,
    /// Port 465 (RFC 8314): implicit TLS, then AUTH, then MAIL.
    Submissions,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Smtp => "smtp",
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
        }
    }
}

/// Mail submission (RFC 6409) and SMTP AUTH (RFC 4954).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmissionConfig {
    /// Leave the client's address and HELO name out of the Received header of
    /// authenticated submissions (privacy).
    pub hide_client: bool,
    /// Pause before answering a failed AUTH.
    #[serde(deserialize_with = "duration")]
    pub auth_failure_delay: Duration,
    /// Failed AUTHs from one prefix (IPv6 /64, IPv4 /32) within `auth_failure_window`
    /// before further attempts from it are refused with 454 4.7.0.
    pub auth_failures: u32,
    #[serde(deserialize_with = "duration")]
    pub auth_failure_window: Duration,
}

impl Default for SubmissionConfig {
    fn default() -> Self {
        SubmissionConfig {
            hide_client: false,
            auth_failure_delay: Duration::from_secs(1),
            auth_failures: 5,
            auth_failure_window: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    #[serde(deserialize_with = "domains")]
    pub domains: Vec<String>,
    pub users_file: String,
    pub delivery: LocalDelivery,
    pub maildir: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LocalDelivery {
    #[default]
    Maildir,
    /// LMTP (RFC 2033) to Dovecot or another local delivery agent.
    Lmtp(mx6_delivery::remote::LmtpTarget),
}

impl<'de> Deserialize<'de> for LocalDelivery {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "maildir" => Ok(LocalDelivery::Maildir),
            s if s.starts_with("lmtp:") => mx6_delivery::remote::LmtpTarget::parse(s).map(LocalDelivery::Lmtp).map_err(de::Error::custom),
            _ => {
                Err(de::Error::custom(format!("unknown delivery `{s}`; expected \"maildir\", \"lmtp://[::1]:24\" or \"lmtp:unix:/path\"")))
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    pub mynetworks: Vec<IpNet>,
    #[serde(deserialize_with = "domains")]
    pub domains: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Empty: the system resolver.
    pub nameservers: Vec<SocketAddr>,
    /// Per query; a lookup that gets no answer is a temporary failure (4xx).
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    pub attempts: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig { nameservers: Vec::new(), timeout: Duration::from_secs(5), attempts: 2 }
    }
}

impl DnsConfig {
    pub fn settings(&self) -> mx6_dns::Settings {
        mx6_dns::Settings { nameservers: self.nameservers.clone(), timeout: self.timeout, attempts: self.attempts }
    }
}

impl PolicyConfig {
    /// The pure policy this configures.
    pub fn inbound(&self, dnsbl: &DnsblConfig) -> mx6_policy::inbound::InboundPolicy {
        let rules = |f: &FamilyPolicyConfig| mx6_policy::inbound::FamilyRules {
            require_ptr: f.require_ptr,
            require_fcrdns: f.require_fcrdns,
            require_spf_or_dkim: f.require_spf_or_dkim,
        };
        mx6_policy::inbound::InboundPolicy {
            ipv6: rules(&self.ipv6),
            ipv4: rules(&self.ipv4),
            reject_spf_fail: self.reject_spf_fail,
            enforce_dmarc: self.enforce_dmarc,
            dnsbl_threshold: dnsbl.threshold,
            allow_networks: self.allow_networks.clone(),
            allow_sender_domains: self.allow_sender_domains.iter().map(|d| mx6_policy::normalize_domain(d)).collect(),
        }
    }
}

impl DnsblConfig {
    pub fn sites(&self) -> Vec<mx6_policy::dnsbl::Site> {
        self.sites
            .iter()
            .map(|s| mx6_policy::dnsbl::Site {
                zone: s.zone.trim_end_matches('.').to_lowercase(),
                weight: s.weight,
                codes: s.codes.clone(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub sessions: usize,
    #[serde(deserialize_with = "size")]
    pub message_size: usize,
    pub recipients: usize,
    /// Error replies in one session before it is closed with 421.
    pub errors: u32,
    /// Waiting for a command (RFC 5321 §4.5.3.2.7).
    #[serde(deserialize_with = "duration")]
    pub command_timeout: Duration,
    /// Waiting for the next block of message data (§4.5.3.2.5).
    #[serde(deserialize_with = "duration")]
    pub data_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    #[serde(deserialize_with = "duration")]
    pub retry_initial: Duration,
    #[serde(deserialize_with = "duration")]
    pub retry_max: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
}

pub fn system_hostname() -> String {
    let h = gethostname::gethostname().to_string_lossy().trim().to_lowercase();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: String::new(),
            data_dir: PathBuf::from("./mx6-data"),
            user: String::new(),
            listener: Vec::new(),
            tls: TlsConfig::default(),
            local: LocalConfig::default(),
            relay: RelayConfig::default(),
            dns: DnsConfig::default(),
            limits: LimitsConfig::default(),
            queue: QueueConfig::default(),
            submission: SubmissionConfig::default(),
            metrics: MetricsConfig::default(),
            policy: PolicyConfig::default(),
            dnsbl: DnsblConfig::default(),
            policyd: PolicydConfig::default(),
            delivery: DeliveryConfig::default(),
            dkim: Vec::new(),
            store: StoreConfig::default(),
            greylist: GreylistConfig::default(),
            ratelimit: None,
            ratelimit_escalation: EscalationConfig::default(),
            reputation: ReputationConfig::default(),
            pregreet: PregreetConfig::default(),
            content_filter: ContentFilterConfig::default(),
            milter: Vec::new(),
        }
    }
}

impl Config {
    /// The rate-limit rules in force: the configured ones (or the built-in
    /// defaults), plus failed-AUTH limits from `[submission]` unless a rule
    /// counts `auth_failures` itself.
    pub fn ratelimit_rules(&self) -> Vec<mx6_policy::ratelimit::Rule> {
        use mx6_policy::prefix::Level;
        use mx6_policy::ratelimit::{Kind, Rule, Scope};
        let rule = |kind, level, limit, window, scope| Rule { kind, level, limit, window, scope, tarpit: Duration::ZERO };
        let mut rules: Vec<Rule> = match &self.ratelimit {
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
        if !rules.iter().any(|r| r.kind == Kind::AuthFailures) && self.submission.auth_failures > 0 {
            let (n, w) = (self.submission.auth_failures as u64, self.submission.auth_failure_window);
            rules.push(rule(Kind::AuthFailures, Level::v6(64), n, w, Scope::All));
            rules.push(rule(Kind::AuthFailures, Level::v4(32), n, w, Scope::All));
        }
        rules
    }

    pub fn escalation(&self) -> mx6_policy::ratelimit::Escalation {
        let e = &self.ratelimit_escalation;
        mx6_policy::ratelimit::Escalation {
            children: e.children,
            window: e.window,
            duration: e.duration,
            ipv6: (e.ipv6_prefix, 64),
            ipv4: (e.ipv4_prefix, 32),
        }
    }
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            domains: Vec::new(),
            users_file: "users.toml".into(),
            delivery: LocalDelivery::Maildir,
            maildir: "mail/{domain}/{user}".into(),
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig { mynetworks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()], domains: Vec::new() }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            sessions: 10000,
            message_size: 25 << 20,
            recipients: 100,
            errors: 20,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            retry_initial: Duration::from_secs(300),
            retry_max: Duration::from_secs(4 * 3600),
            max_age: Duration::from_secs(5 * 86400),
        }
    }
}

/// A configuration error: where and what.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the error is not tied to a line.
    pub line: usize,
    /// Dotted key path, e.g. `limits.message_size`.
    pub key: String,
    pub message: String,
}

impl Config {
    /// Load `path`, or the built-in defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg = match path {
            None => Config::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                    file: p.display().to_string(),
                    line: 0,
                    key: "(file)".into(),
                    message: e.to_string(),
                })?;
                Config::parse(&text, &p.display().to_string())?
            }
        };
        cfg.fill_defaults();
        Ok(cfg)
    }

    /// Parse TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let err = |line: usize, key: String, message: String| ConfigError { file: file.into(), line, key, message };
        let de =
            toml::de::Deserializer::parse(text).map_err(|e| err(line_of(text, e.span()), "(syntax)".into(), e.message().to_string()))?;
        serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            // For an unknown key, name the key itself.
            let key = match message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
                Some(k) if key == "." => k.to_string(),
                Some(k) if key != k && !key.ends_with(&format!(".{k}")) => format!("{key}.{k}"),
                _ => key,
            };
            err(line_of(text, inner.span()), key.replace("[", ".[").trim_start_matches('.').to_string(), message)
        })
    }

    fn fill_defaults(&mut self) {
        if self.hostname.is_empty() {
            self.hostname = system_hostname();
        }
        self.hostname = self.hostname.trim_end_matches('.').to_lowercase();
        if self.local.domains.is_empty() {
            self.local.domains = vec!["localhost".into()];
            if self.hostname != "localhost" {
                self.local.domains.push(self.hostname.clone());
            }
        }
        if self.listener.is_empty() {
            for a in ["[::]:2525", "0.0.0.0:2525"] {
                self.listener.push(ListenerConfig {
                    address: a.parse().unwrap(),
                    kind: ListenerKind::Smtp,
                    proxy_protocol: false,
                    allow: vec![],
                });
            }
        }
    }

    /// Checks that need the whole file (run by `config check` and `serve`).
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, l) in self.listener.iter().enumerate() {
            if !seen.insert(l.address) {
                errs.push(ConfigError {
                    file: String::new(),
                    line: 0,
                    key: format!("listener[{i}].address"),
                    message: format!("{} is configured twice", l.address),
                });
            }
        }
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            errs.push(ConfigError { file: String::new(), line: 0, key: "tls".into(), message: "set both cert and key, or neither".into() });
        }
        if !self.local.maildir.contains("{user}") {
            errs.push(ConfigError {
                file: String::new(),
                line: 0,
                key: "local.maildir".into(),
                message: "the template must contain {user}".into(),
            });
        }
        let mut check = |ok: bool, key: &str, message: &str| {
            if !ok {
                errs.push(ConfigError { file: String::new(), line: 0, key: key.into(), message: message.into() });
            }
        };
        check(
            self.store.backend != StoreBackend::Redis || !self.store.url.is_empty(),
            "store.url",
            "backend = \"redis\" needs url = \"redis://host:port/db\"",
        );
        check((1..=128).contains(&self.greylist.ipv6_prefix), "greylist.ipv6_prefix", "must be 1..=128");
        check((1..=32).contains(&self.greylist.ipv4_prefix), "greylist.ipv4_prefix", "must be 1..=32");
        check(
            (1..=64).contains(&self.ratelimit_escalation.ipv6_prefix),
            "ratelimit_escalation.ipv6_prefix",
            "must be 1..=64 (the aggregate of /64s)",
        );
        check((1..=32).contains(&self.ratelimit_escalation.ipv4_prefix), "ratelimit_escalation.ipv4_prefix", "must be 1..=32");
        check(self.greylist.delay <= self.greylist.retry_window, "greylist.delay", "is longer than greylist.retry_window");
        check(
            self.reputation.bad_limit_factor > 0.0 && self.reputation.bad_limit_factor <= 1.0,
            "reputation.bad_limit_factor",
            "must be in (0, 1]",
        );
        check(self.reputation.bad < self.reputation.good, "reputation.bad", "must be below reputation.good");
        check(
            self.content_filter.mark_score <= self.content_filter.reject_score,
            "content_filter.mark_score",
            "must not be above content_filter.reject_score",
        );
        if self.queue.retry_initial > self.queue.retry_max {
            errs.push(ConfigError {
                file: String::new(),
                line: 0,
                key: "queue.retry_initial".into(),
                message: "is longer than queue.retry_max".into(),
            });
        }
        errs
    }

    pub fn path_in_data(&self, rel: &str) -> PathBuf {
        self.data_dir.join(rel)
    }
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> usize {
    match span {
        Some(s) => text[..s.start.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1,
        None => 0,
    }
}

/// `"300s"`, `"5m"`, `"4h"`, `"5d"`, `"250ms"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration `{s}`; use a number and a unit: \"300s\", \"5m\", \"4h\", \"5d\""))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(format!("invalid duration unit in `{s}`; use ms, s, m, h, d or w")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// `"25MiB"`, `"10MB"`, `"512KiB"`, `"1024"` (bytes).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("invalid size `{s}`; use e.g. \"25MiB\""))?;
    let mul: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(format!("invalid size unit in `{s}`; use B, KiB, MiB, GiB, KB, MB or GB")),
    };
    n.checked_mul(mul).ok_or_else(|| format!("size `{s}` is too large"))
}

/// A string parsed with `FromStr`, its error message kept.
fn parsed<'de, D: Deserializer<'de>, T: std::str::FromStr<Err = String>>(d: D) -> Result<T, D::Error> {
    String::deserialize(d)?.parse().map_err(de::Error::custom)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(de::Error::custom)
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum S {
        N(u64),
        S(String),
    }
    match S::deserialize(d)? {
        S::N(n) => Ok(n as usize),
        S::S(s) => parse_size(&s).map_err(de::Error::custom),
    }
}

/// An address with a port, or `""` for none.
/// `""` = none; otherwise parsed as `T`, the error naming what was expected.
fn optional<'de, D: Deserializer<'de>, T: std::str::FromStr>(d: D, what: &str) -> Result<Option<T>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| de::Error::custom(format!("`{s}` is not {what}")))
}

fn optional_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    optional(d, "an address with a port, e.g. \"[::1]:9325\"")
}

fn optional_ipv6<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::net::Ipv6Addr>, D::Error> {
    optional(d, "an IPv6 address")
}

fn optional_ipv4<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::net::Ipv4Addr>, D::Error> {
    optional(d, "an IPv4 address")
}

/// `"127.0.0.2"` or `"127.0.0.0/24"`.
fn v4_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::Ipv4Net>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.into_iter()
        .map(|s| {
            s.parse::<ipnet::Ipv4Net>()
                .or_else(|_| s.parse::<std::net::Ipv4Addr>().map(ipnet::Ipv4Net::from))
                .map_err(|_| de::Error::custom(format!("`{s}` is not an IPv4 address or CIDR")))
        })
        .collect()
}

fn domains<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.into_iter()
        .map(|s| match mx6_smtp::address::parse_domain(&s, true) {
            Ok(mx6_smtp::address::Domain::Name(n)) => Ok(n),
            _ => Err(de::Error::custom(format!("`{s}` is not a domain name"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses() {
        let c = Config::parse(
            r#"
hostname = "mx.example.org"
data_dir = "/var/lib/mx6"
[[listener]]
address = "[::]:25"
kind = "smtp"
proxy_protocol = false
allow = ["2001:db8::/32", "192.0.2.0/24"]
[tls]
cert = "/etc/mx6/cert.pem"
key = "/etc/mx6/key.pem"
[local]
domains = ["Example.ORG."]
[relay]
mynetworks = ["127.0.0.0/8", "::1/128"]
[dns]
nameservers = ["127.0.0.1:5353", "[::1]:5353"]
[limits]
sessions = 100
message_size = "10MiB"
recipients = 50
[queue]
retry_initial = "5m"
retry_max = "4h"
max_age = "5d"
"#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.local.domains, vec!["example.org"]);
        assert_eq!(c.limits.message_size, 10 << 20);
        assert_eq!(c.queue.max_age, Duration::from_secs(5 * 86400));
        assert!(c.validate().is_empty());
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = Config::parse("hostname = \"x\"\n[limits]\nmessage_size = \"ten\"\n", "f.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "limits.message_size"), "{e}");
        let e = Config::parse("[limits]\nsessions = 1\nbogus = 2\n", "f.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "limits.bogus"), "{e}");
        let e = Config::parse("[[listener]]\naddress = \"[::]:25\"\n[[listener]]\naddress = \"nonsense\"\n", "f.toml").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.key.starts_with("listener"), "{e}");
        let e = Config::parse("[queue]\nretry_max = \"4x\"\n", "f.toml").unwrap_err();
        assert_eq!(e.line, 2);
        let e = Config::parse("hostname = \n", "f.toml").unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn defaults_work_without_a_file() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.listener.len(), 2);
        assert!(c.local.domains.contains(&"localhost".to_string()));
        assert_eq!(c.limits.message_size, 25 << 20);
    }

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
        assert!(parse_duration("5").is_err());
        assert_eq!(parse_size("1KB").unwrap(), 1000);
        assert!(parse_size("1TB").is_err());
    }
}
