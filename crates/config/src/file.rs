//! The whole configuration file: its sections, built-in defaults, loading
//! and parsing (errors name the key and the line).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::abuse::*;
use crate::acme::AcmeConfig;
use crate::admin::*;
use crate::delivery::*;
use crate::error::ConfigError;
use crate::filters::*;
use crate::inbound::*;
use crate::listener::*;
use crate::mta_sts::MtaStsConfig;
use crate::reports::ReportsConfig;
use crate::source::Source;
use crate::tls::TlsConfig;

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
    pub milter_server: MilterServerConfig,
    pub mta_sts: MtaStsConfig,
    pub acme: AcmeConfig,
    pub reports: ReportsConfig,
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
    /// Where the file and each key came from, for the findings of [`Config::findings`].
    #[serde(skip)]
    pub source: Source,
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
            milter_server: MilterServerConfig::default(),
            mta_sts: MtaStsConfig::default(),
            acme: AcmeConfig::default(),
            reports: ReportsConfig::default(),
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
            source: Source::defaults(),
        }
    }
}

impl Config {
    /// Load `path`, or the built-in defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg = match path {
            None => Config::default(),
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| ConfigError::new(&p.display().to_string(), 0, "(file)", e.to_string()))?;
                Config::parse(&text, &p.display().to_string())?
            }
        };
        cfg.fill_defaults();
        Ok(cfg)
    }

    /// Parse TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let err = |line: usize, key: String, message: String| ConfigError::new(file, line, key, message);
        let de =
            toml::de::Deserializer::parse(text).map_err(|e| err(line_of(text, e.span()), "(syntax)".into(), e.message().to_string()))?;
        let mut cfg = serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            // For an unknown key, name the key itself.
            let key = match message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
                Some(k) if key == "." => k.to_string(),
                Some(k) if key != k && !key.ends_with(&format!(".{k}")) => format!("{key}.{k}"),
                _ => key,
            };
            let key = match key.trim_start_matches('.') {
                // `"" = 1`: a key with an empty name (found by fuzzing).
                "" => "\"\"".to_string(),
                k => k.to_string(),
            };
            err(line_of(text, inner.span()), key, message)
        })?;
        cfg.source = Source::index(file, text);
        Ok(cfg)
    }

    fn fill_defaults(&mut self) {
        if self.hostname.is_empty() {
            self.hostname = system_hostname();
            // A system name that could not go into a banner is not used.
            if crate::units::hostname_problem(&self.hostname.to_lowercase()).is_some() {
                self.hostname = "localhost".into();
            }
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

    pub fn path_in_data(&self, rel: &str) -> PathBuf {
        self.data_dir.join(rel)
    }

    /// The rate-limit rules in force ([`crate::abuse::ratelimit_rules`]).
    pub fn ratelimit_rules(&self) -> Vec<mx6_policy::ratelimit::Rule> {
        ratelimit_rules(self.ratelimit.as_deref(), &self.submission)
    }
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> usize {
    match span {
        Some(s) => text[..s.start.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1,
        None => 0,
    }
}

/// What the sections say together.
impl Config {
    /// The domains whose policy is served: `[mta_sts] domains`, or else the
    /// `[local] domains`.
    pub fn mta_sts_domains(&self) -> Vec<String> {
        if self.mta_sts.domains.is_empty() {
            self.local.domains.clone()
        } else {
            self.mta_sts.domains.clone()
        }
    }

    /// The policy file served: `[mta_sts] mode`, `mx` (default: the
    /// hostname) and `max_age`.
    pub fn mta_sts_policy(&self) -> String {
        let m = &self.mta_sts;
        let mx = if m.mx.is_empty() { std::slice::from_ref(&self.hostname) } else { &m.mx[..] };
        mx6_policy::mta_sts::policy_text(m.mode.as_str(), mx, m.max_age.as_secs())
    }

    /// The names of the ACME certificate (empty when ACME is off):
    /// `[acme] names`, or the hostname and `mta-sts.<domain>` for each domain
    /// whose MTA-STS policy is served.
    pub fn acme_names(&self) -> Vec<String> {
        if !self.acme.enabled() {
            return Vec::new();
        }
        let mut v: Vec<String> = if self.acme.names.is_empty() {
            let mut v = vec![self.hostname.clone()];
            if !self.mta_sts.listen.is_empty() {
                v.extend(self.mta_sts_domains().iter().map(|d| format!("mta-sts.{d}")));
            }
            v
        } else {
            self.acme.names.clone()
        };
        for n in &mut v {
            *n = n.trim_end_matches('.').to_ascii_lowercase();
        }
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        // Found by fuzzing: a key with an empty name is still named.
        let e = Config::parse("\"\"=1\n", "f.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (1, "\"\""), "{e}");
    }

    #[test]
    fn defaults_work_without_a_file() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.listener.len(), 2);
        assert!(c.local.domains.contains(&"localhost".to_string()));
        assert_eq!(c.limits.message_size, 25 << 20);
    }
}
