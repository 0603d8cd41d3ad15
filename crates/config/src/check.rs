//! Checks that need the whole file, run by `mx6 config check` and before
//! `mx6 serve` starts: keys that contradict each other, and values a parser
//! alone cannot judge. Every finding names its key and line in the one
//! [`ConfigError`] style.

use std::time::Duration;

use crate::abuse::StoreBackend;
use crate::error::{ConfigError, Severity};
use crate::file::Config;
use crate::units::hostname_problem;

/// Findings collected against the file's key lines.
pub struct Findings<'a> {
    cfg: &'a Config,
    pub list: Vec<ConfigError>,
}

impl<'a> Findings<'a> {
    pub fn new(cfg: &'a Config) -> Findings<'a> {
        Findings { cfg, list: Vec::new() }
    }

    fn push(&mut self, severity: Severity, key: &str, message: String) {
        let s = &self.cfg.source;
        self.list.push(ConfigError { file: s.file.clone(), line: s.line(key), key: key.into(), message, severity });
    }

    /// An error at `key` unless `ok`.
    pub fn require(&mut self, ok: bool, key: &str, message: impl Into<String>) {
        if !ok {
            self.push(Severity::Error, key, message.into());
        }
    }

    /// A warning at `key` when `bad`.
    pub fn warn_if(&mut self, bad: bool, key: &str, message: impl Into<String>) {
        if bad {
            self.push(Severity::Warning, key, message.into());
        }
    }
}

const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86400);

fn show(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 86400 && s % 86400 == 0 => format!("{}d", s / 86400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        0 => format!("{}ms", d.as_millis()),
        s => format!("{s}s"),
    }
}

impl<'a> Findings<'a> {
    /// A duration within `min..=max`.
    fn duration(&mut self, key: &str, d: Duration, min: Duration, max: Duration) {
        self.require(d <= max, key, format!("{} is longer than the most mx6 allows here, {}", show(d), show(max)));
        self.require(d >= min, key, format!("{} is shorter than the least that works here, {}", show(d), show(min)));
    }

    /// A number within `min..=max`.
    fn count(&mut self, key: &str, n: u64, min: u64, max: u64) {
        self.require((min..=max).contains(&n), key, format!("{n} is outside {min}..={max}"));
    }
}

impl Config {
    /// Every finding of the whole-file checks, errors and warnings.
    pub fn findings(&self) -> Vec<ConfigError> {
        let mut f = Findings::new(self);
        if let Some(p) = hostname_problem(&self.hostname) {
            f.require(false, "hostname", p);
        }
        for (i, l) in self.listener.iter().enumerate() {
            f.require(
                !l.proxy_protocol || !l.allow.is_empty(),
                &format!("listener[{i}].proxy_protocol"),
                "a PROXY listener must have an `allow` list of the proxies: anyone else could claim any client address (mynetworks included)",
            );
        }
        for (i, n) in self.relay.mynetworks.iter().enumerate() {
            let key = format!("relay.mynetworks[{i}]");
            let (len, v4) = match n {
                ipnet::IpNet::V4(n) => (n.prefix_len(), true),
                ipnet::IpNet::V6(n) if n.addr().to_ipv4_mapped().is_some() && n.prefix_len() >= 96 => (n.prefix_len() - 96, true),
                ipnet::IpNet::V6(n) => (n.prefix_len(), false),
            };
            f.require(len > 0, &key, format!("{n} covers every {} address: an open relay", if v4 { "IPv4" } else { "IPv6" }));
            f.warn_if(len > 0 && len < if v4 { 8 } else { 16 }, &key, format!("{n} is very wide for networks allowed to relay"));
        }
        for (i, n) in self.policy.allow_networks.iter().enumerate() {
            f.warn_if(
                n.prefix_len() == 0,
                &format!("policy.allow_networks[{i}]"),
                format!("{n} exempts every client from the inbound checks"),
            );
        }
        let l = &self.limits;
        f.duration("limits.command_timeout", l.command_timeout, SEC, HOUR);
        f.duration("limits.data_timeout", l.data_timeout, SEC, HOUR);
        f.duration("limits.data_total_timeout", l.data_total_timeout, SEC, DAY);
        f.duration("limits.session_timeout", l.session_timeout, SEC, 7 * DAY);
        f.count("limits.sessions", l.sessions as u64, 1, 1_000_000);
        f.count("limits.message_size", l.message_size as u64, 1024, 1 << 30);
        f.count("limits.recipients", l.recipients as u64, 1, 100_000);
        f.count("limits.errors", l.errors.into(), 1, 1_000_000);
        let q = &self.queue;
        f.duration("queue.retry_initial", q.retry_initial, SEC, DAY);
        f.duration("queue.retry_max", q.retry_max, SEC, 7 * DAY);
        f.duration("queue.max_age", q.max_age, SEC, 60 * DAY);
        f.duration("queue.delay_warning", q.delay_warning, Duration::ZERO, 60 * DAY);
        // RFC 8461 §3.2: max_age at most 31557600 s (a year).
        f.duration("mta_sts.max_age", self.mta_sts.max_age, SEC, Duration::from_secs(31_557_600));
        f.warn_if(
            !self.mta_sts.listen.is_empty() && self.mta_sts.domains.is_empty() && self.local.domains.is_empty(),
            "mta_sts.domains",
            "no domains: neither mta_sts.domains nor local.domains lists one, so no policy is served",
        );
        f.warn_if(
            !q.delay_warning.is_zero() && q.delay_warning >= q.max_age,
            "queue.delay_warning",
            format!("{} is not shorter than queue.max_age, so no delay warning is ever sent", show(q.delay_warning)),
        );
        f.count("queue.active_limit", q.active_limit as u64, 1, 10_000_000);
        f.count("queue.segment_size", q.segment_size as u64, 64 << 10, 4 << 30);
        f.duration("dns.timeout", self.dns.timeout, Duration::from_millis(10), MIN);
        f.count("dns.attempts", self.dns.attempts as u64, 1, 10);
        let d = &self.delivery;
        f.duration("delivery.connect_timeout", d.connect_timeout, Duration::from_millis(100), 10 * MIN);
        f.count("delivery.concurrency", d.concurrency as u64, 1, 100_000);
        f.count("delivery.destination_concurrency", d.destination_concurrency as u64, 1, 100_000);
        match mx6_delivery::trust::roots(&d.ca_file) {
            Err(e) if !d.ca_file.is_empty() => f.require(false, "delivery.ca_file", e.to_string()),
            Err(e) => f.warn_if(d.mta_sts, "delivery.mta_sts", format!("{e}: MTA-STS policies can not be fetched")),
            Ok(_) => {}
        }
        for (i, e) in d.tls_policy.iter().enumerate() {
            let key = |k: &str| format!("delivery.tls_policy[{i}].{k}");
            f.require(!e.domain.trim().is_empty(), &key("domain"), "a domain (or `relayhost`) is required");
            let known = mx6_delivery::tls_policy::Level::parse(&e.level);
            f.require(
                known.is_some(),
                &key("level"),
                format!("unknown `{}`; expected none, may, encrypt, verify, dane or dane-only", e.level),
            );
            f.require(
                !(known.is_some_and(|l| l.dane()) && self.dns.dnssec == "off"),
                &key("level"),
                format!("`{}` needs DNSSEC: set dns.dnssec = \"trust-ad\" with a validating resolver", e.level),
            );
            f.warn_if(
                !e.names.is_empty() && known != Some(mx6_delivery::tls_policy::Level::Verify),
                &key("match"),
                "names to match are only checked with level verify",
            );
            let twice = d.tls_policy[..i].iter().any(|o| o.domain.eq_ignore_ascii_case(&e.domain));
            f.require(!twice, &key("domain"), format!("`{}` has an entry already", e.domain));
        }
        match self.dns.dnssec.as_str() {
            "trust-ad" | "off" => {}
            "validate" => f.require(
                false,
                "dns.dnssec",
                "`validate` (DNSSEC validation inside mx6) is not implemented; run a validating resolver such as unbound on loopback, list it in dns.nameservers and use \"trust-ad\"",
            ),
            other => f.require(false, "dns.dnssec", format!("unknown `{other}`; expected trust-ad, validate or off")),
        }
        f.duration("store.timeout", self.store.timeout, Duration::from_millis(1), MIN);
        let g = &self.greylist;
        f.duration("greylist.delay", g.delay, Duration::ZERO, DAY);
        f.duration("greylist.retry_window", g.retry_window, SEC, 30 * DAY);
        f.duration("greylist.lifetime", g.lifetime, SEC, 366 * DAY);
        for (i, r) in self.ratelimit.iter().flatten().enumerate() {
            f.duration(&format!("ratelimit[{i}].window"), r.window, Duration::ZERO, 7 * DAY);
            f.duration(&format!("ratelimit[{i}].tarpit"), r.tarpit, Duration::ZERO, 5 * MIN);
        }
        let e = &self.ratelimit_escalation;
        f.duration("ratelimit_escalation.window", e.window, SEC, 7 * DAY);
        f.duration("ratelimit_escalation.duration", e.duration, SEC, 30 * DAY);
        f.duration("reputation.half_life", self.reputation.half_life, MIN, 366 * DAY);
        f.duration("pregreet.wait", self.pregreet.wait, Duration::ZERO, MIN);
        let sub = &self.submission;
        f.duration("submission.auth_failure_delay", sub.auth_failure_delay, Duration::ZERO, MIN);
        f.duration("submission.auth_failure_window", sub.auth_failure_window, SEC, 7 * DAY);
        f.duration("content_filter.timeout", self.content_filter.timeout, Duration::from_millis(100), HOUR);
        f.count("content_filter.max_size", self.content_filter.max_size as u64, 0, 1 << 30);
        for (i, m) in self.milter.iter().enumerate() {
            f.duration(&format!("milter[{i}].timeout"), m.timeout, Duration::from_millis(100), HOUR);
            f.duration(&format!("milter[{i}].content_timeout"), m.content_timeout, Duration::from_millis(100), HOUR);
        }
        let mut seen = std::collections::HashSet::new();
        for (i, l) in self.listener.iter().enumerate() {
            f.require(seen.insert(l.address), &format!("listener[{i}].address"), format!("{} is configured twice", l.address));
        }
        f.require(self.tls.cert.is_empty() == self.tls.key.is_empty(), "tls", "set both cert and key, or neither");
        for (i, c) in self.tls.certificate.iter().enumerate() {
            let key = format!("tls.certificate[{i}]");
            f.require(!c.names.is_empty(), &key, "names: list the names this certificate is chosen for");
            f.require(!c.cert.is_empty() && !c.key.is_empty(), &key, "set both cert and key");
        }
        let a = &self.acme;
        if a.enabled() {
            f.require(
                a.directory.starts_with("https://"),
                "acme.directory",
                format!("`{}` is not an https:// URL (RFC 8555 §6.1)", a.directory),
            );
            f.require(
                a.challenge != crate::acme::Challenge::TlsAlpn01 || !self.mta_sts.listen.is_empty(),
                "acme.challenge",
                "tls-alpn-01 is answered on the MTA-STS HTTPS listener: set [mta_sts] listen (port 443), or use http-01",
            );
            f.require(
                a.challenge != crate::acme::Challenge::Http01 || !a.http_listen.is_empty(),
                "acme.http_listen",
                "http-01 needs a listener on port 80",
            );
            f.duration("acme.renew_before", a.renew_before, MIN, 366 * DAY);
            for (i, c) in a.contact.iter().enumerate() {
                f.require(c.starts_with("mailto:"), &format!("acme.contact[{i}]"), format!("`{c}` is not a mailto: URL"));
            }
            for (i, n) in a.names.iter().enumerate() {
                f.require(
                    hostname_problem(n).is_none(),
                    &format!("acme.names[{i}]"),
                    format!("`{n}` is not a host name (wildcards need DNS-01, which mx6 does not do)"),
                );
            }
            f.warn_if(
                !self.tls.cert.is_empty(),
                "tls.cert",
                "is set, so it stays the default certificate; the ACME certificate is chosen by SNI for its names",
            );
        }
        let r = &self.reports;
        f.require(
            mx6_reports::period::valid(r.interval.as_secs()),
            "reports.interval",
            "must divide the day (1h, 2h, 3h, 4h, 6h, 8h, 12h, 24h) or be whole days up to 7d, so periods align to UTC midnight",
        );
        let sender = r.sender(&self.hostname);
        f.require(sender.contains('@') && !sender.starts_with('@'), "reports.from", format!("`{sender}` is not an address"));
        for (i, a) in r.receive.iter().enumerate() {
            let local = a.rsplit_once('@').is_some_and(|(_, d)| self.local.domains.iter().any(|l| l.eq_ignore_ascii_case(d)));
            f.require(a.contains('@'), &format!("reports.receive[{i}]"), format!("`{a}` is not an address"));
            f.warn_if(
                a.contains('@') && !local,
                &format!("reports.receive[{i}]"),
                format!("`{a}` is not in [local] domains: mail to it is not delivered here, so its reports are never read"),
            );
        }
        f.require(self.local.maildir.contains("{user}"), "local.maildir", "the template must contain {user}");
        f.require(
            self.store.backend != StoreBackend::Redis || !self.store.url.is_empty(),
            "store.url",
            "backend = \"redis\" needs url = \"redis://host:port/db\"",
        );
        f.require((1..=128).contains(&self.greylist.ipv6_prefix), "greylist.ipv6_prefix", "must be 1..=128");
        f.require((1..=32).contains(&self.greylist.ipv4_prefix), "greylist.ipv4_prefix", "must be 1..=32");
        f.require(
            (1..=64).contains(&self.ratelimit_escalation.ipv6_prefix),
            "ratelimit_escalation.ipv6_prefix",
            "must be 1..=64 (the aggregate of /64s)",
        );
        f.require((1..=32).contains(&self.ratelimit_escalation.ipv4_prefix), "ratelimit_escalation.ipv4_prefix", "must be 1..=32");
        f.require(self.greylist.delay <= self.greylist.retry_window, "greylist.delay", "is longer than greylist.retry_window");
        f.require(
            self.reputation.bad_limit_factor > 0.0 && self.reputation.bad_limit_factor <= 1.0,
            "reputation.bad_limit_factor",
            "must be in (0, 1]",
        );
        f.require(self.reputation.bad < self.reputation.good, "reputation.bad", "must be below reputation.good");
        f.require(
            self.content_filter.mark_score <= self.content_filter.reject_score,
            "content_filter.mark_score",
            "must not be above content_filter.reject_score",
        );
        f.require(self.queue.retry_initial <= self.queue.retry_max, "queue.retry_initial", "is longer than queue.retry_max");
        f.list
    }

    /// The errors among [`Config::findings`] (what stops `mx6 serve`).
    pub fn validate(&self) -> Vec<ConfigError> {
        self.findings().into_iter().filter(|e| e.severity == Severity::Error).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_name_file_key_and_line() {
        let c =
            Config::parse("hostname = \"mx.test\"\n[queue]\nretry_initial = \"5h\"\nretry_max = \"1h\"\n[tls]\ncert = \"x\"\n", "f.toml")
                .unwrap();
        let e = c.validate();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].to_string(), "f.toml:5: tls: set both cert and key, or neither");
        assert_eq!(e[1].to_string(), "f.toml:3: queue.retry_initial: is longer than queue.retry_max");
    }

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, "f.toml") {
            Ok(c) => c.findings().iter().map(|e| e.to_string()).collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn report_settings_are_checked_with_their_line() {
        let e = errors("hostname = \"mx.test\"\n[local]\ndomains = [\"mx.test\"]\n[reports]\ninterval = \"7h\"\nfrom = \"nobody\"\nreceive = [\"dmarc@elsewhere.example\", \"dmarc@mx.test\"]\n");
        assert!(e.iter().any(|e| e.starts_with("f.toml:5: reports.interval: must divide the day")), "{e:?}");
        assert!(e.iter().any(|e| e.starts_with("f.toml:6: reports.from: `nobody` is not an address")), "{e:?}");
        assert!(e.iter().any(|e| e.contains("reports.receive[0]: warning: `dmarc@elsewhere.example` is not in [local] domains")), "{e:?}");
        assert!(!e.iter().any(|e| e.contains("reports.receive[1]")), "{e:?}");
        assert!(errors("hostname = \"mx.test\"\n[reports]\ninterval = \"6h\"\n").iter().all(|e| !e.contains("reports.")));
    }

    #[test]
    fn tls_policies_that_cannot_work_are_refused_with_their_line() {
        let e = errors(
            "hostname = \"mx.test\"\n[[delivery.tls_policy]]\ndomain = \"a.test\"\nlevel = \"secure\"\n[[delivery.tls_policy]]\ndomain = \"b.test\"\nlevel = \"dane\"\n[[delivery.tls_policy]]\ndomain = \"A.test\"\nlevel = \"verify\"\n[[delivery.tls_policy]]\nlevel = \"may\"\n",
        );
        let has = |p: &str| e.iter().any(|e| e.starts_with(p));
        assert!(has("f.toml:4: delivery.tls_policy[0].level: unknown `secure`"), "{e:?}");
        assert!(has("f.toml:9: delivery.tls_policy[2].domain: `A.test` has an entry already"), "{e:?}");
        assert!(has("f.toml:11: delivery.tls_policy[3].domain: a domain (or `relayhost`) is required"), "{e:?}");
        let e = errors("hostname = \"mx.test\"\n[delivery]\ntls = \"secure\"\n");
        assert!(e.iter().any(|e| e.contains("delivery.tls") && e.contains("unknown `secure`")), "{e:?}");
    }

    #[test]
    fn acme_settings_that_cannot_work_are_refused_with_their_line() {
        let e = errors("hostname = \"mx.test\"\n[acme]\ndirectory = \"http://ca.test/dir\"\nchallenge = \"tls-alpn-01\"\ncontact = [\"admin@example.org\"]\n");
        assert!(e.iter().any(|e| e.starts_with("f.toml:3: acme.directory: `http://ca.test/dir` is not an https:// URL")), "{e:?}");
        assert!(
            e.iter().any(|e| e.starts_with("f.toml:4: acme.challenge: tls-alpn-01 is answered on the MTA-STS HTTPS listener")),
            "{e:?}"
        );
        assert!(e.iter().any(|e| e.starts_with("f.toml:5: acme.contact[0]: `admin@example.org` is not a mailto: URL")), "{e:?}");
        let e = errors(
            "hostname = \"mx.test\"\n[acme]\ndirectory = \"https://ca.test/dir\"\nnames = [\"*.example.org\"]\nchallenge = \"dns-01\"\n",
        );
        assert!(e.iter().any(|e| e.contains("acme.challenge") && e.contains("expected http-01 or tls-alpn-01")), "{e:?}");
        let e = errors("hostname = \"mx.test\"\n[acme]\ndirectory = \"https://ca.test/dir\"\nnames = [\"*.example.org\"]\n");
        assert!(e.iter().any(|e| e.starts_with("f.toml:4: acme.names[0]: `*.example.org` is not a host name")), "{e:?}");
        assert!(errors("hostname = \"mx.test\"\n[acme]\ndirectory = \"https://ca.test/dir\"\n").is_empty());
        let c = Config::parse(
            "hostname = \"MX.test\"\n[local]\ndomains = [\"example.org\"]\n[mta_sts]\nlisten = [\"[::]:443\"]\n[acme]\ndirectory = \"https://ca.test/dir\"\n",
            "f.toml",
        )
        .unwrap();
        assert_eq!(c.acme_names(), ["mx.test", "mta-sts.example.org"]);
    }

    #[test]
    fn what_would_break_the_server_is_refused_with_key_and_line() {
        let e = errors("hostname = \"mx.test\"\n[limits]\ncommand_timeout = \"999999999999999d\"\n");
        assert!(e.iter().any(|e| e.starts_with("f.toml:3: limits.command_timeout: duration `999999999999999d` is too long")), "{e:?}");
        let e = errors("hostname = \"mx.test\"\n[limits]\ncommand_timeout = \"2h\"\n");
        assert!(e.iter().any(|e| e == "f.toml:3: limits.command_timeout: 2h is longer than the most mx6 allows here, 1h"), "{e:?}");
        let e = errors("hostname = \"mx.test\\r\\n250 injected\"\n");
        assert!(e.iter().any(|e| e.starts_with("f.toml:1: hostname: contains control characters")), "{e:?}");
        assert!(errors("hostname = \"mx_1.example\"\n").iter().any(|e| e.contains("hostname: `mx_1.example` is not a domain name")));
        assert!(errors("hostname = \"[IPv6:2001:db8::1]\"\n").is_empty());
        let e = errors("hostname = \"mx.test\"\n[[listener]]\naddress = \"[::]:25\"\nproxy_protocol = true\n");
        assert!(
            e.iter().any(|e| e.starts_with("f.toml:4: listener[0].proxy_protocol: a PROXY listener must have an `allow` list")),
            "{e:?}"
        );
        let e = errors("hostname = \"mx.test\"\n[relay]\nmynetworks = [\"::1/128\", \"::/0\"]\n");
        assert!(e.iter().any(|e| e.contains("relay.mynetworks[1]: ::/0 covers every IPv6 address: an open relay")), "{e:?}");
        let e = errors("hostname = \"mx.test\"\n[relay]\nmynetworks = [\"10.0.0.0/4\", \"2001::/12\"]\n");
        assert_eq!(e.iter().filter(|e| e.contains("warning: ") && e.contains("very wide")).count(), 2, "{e:?}");
        let c = Config::parse("hostname = \"mx.test\"\n[relay]\nmynetworks = [\"10.0.0.0/4\"]\n", "f.toml").unwrap();
        assert!(c.validate().is_empty(), "a warning does not stop the server");
        assert!(errors("hostname = \"mx.test\"\n[relay]\nmynetworks = [\"0.0.0.0/0\"]\n").iter().any(|e| e.contains("every IPv4 address")));
        assert!(errors("hostname = \"mx.test\"\n[limits]\ndata_timeout = \"0s\"\n")
            .iter()
            .any(|e| e.contains("limits.data_timeout: 0ms is shorter")));
    }
}
