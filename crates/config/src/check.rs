//! Checks that need the whole file, run by `mx6 config check` and before
//! `mx6 serve` starts: keys that contradict each other, and values a parser
//! alone cannot judge. Every finding names its key and line in the one
//! [`ConfigError`] style.

use crate::abuse::StoreBackend;
use crate::error::{ConfigError, Severity};
use crate::file::Config;

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

impl Config {
    /// Every finding of the whole-file checks, errors and warnings.
    pub fn findings(&self) -> Vec<ConfigError> {
        let mut f = Findings::new(self);
        let mut seen = std::collections::HashSet::new();
        for (i, l) in self.listener.iter().enumerate() {
            f.require(seen.insert(l.address), &format!("listener[{i}].address"), format!("{} is configured twice", l.address));
        }
        f.require(self.tls.cert.is_empty() == self.tls.key.is_empty(), "tls", "set both cert and key, or neither");
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
        f.require(self.queue.active_limit > 0, "queue.active_limit", "must be at least 1");
        f.require(self.queue.segment_size >= 64 << 10, "queue.segment_size", "must be at least 64KiB");
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
}
