//! What outbound TLS saw, kept for TLS-RPT (RFC 8460 §4): every session's
//! result is counted in the state store per policy domain, UTC day, policy
//! type (`sts`, `tlsa`, `no-policy-found`), result type, MX host, receiving
//! and sending IP; a failure also keeps its latest detail. Keys are
//! `tlsrpt|<domain>|<day>|<policy>|<result>|<mx>|<receiving>|<sending>`
//! (details under `tlsrpt-why|…`), kept [`KEEP`], so a node on Redis counts
//! into the same report as its peers and `mx6 state show <domain>` lists them.

use std::net::IpAddr;
use std::time::Duration;

use mx6_store::StateStore;

use crate::tls_policy::{Source, TlsResult};

/// How long counts are kept: a day's report can be late by a week.
pub const KEEP: Duration = Duration::from_secs(8 * 86400);

/// One counted tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    pub domain: String,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// RFC 8460 §4.4 policy type.
    pub policy: &'static str,
    pub result: TlsResult,
    pub mx: String,
    pub receiving: Option<IpAddr>,
    pub sending: Option<IpAddr>,
}

/// The RFC 8460 policy type of a TLS source.
pub fn policy_type(s: Source) -> &'static str {
    match s {
        Source::MtaSts => "sts",
        Source::Dane => "tlsa",
        _ => "no-policy-found",
    }
}

/// The UTC day of `now` (Unix ms).
pub fn day(now: u64) -> String {
    chrono::DateTime::from_timestamp_millis(now as i64).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

fn ip(a: &Option<IpAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_default()
}

impl Tuple {
    pub fn key(&self) -> String {
        format!(
            "tlsrpt|{}|{}|{}|{}|{}|{}|{}",
            self.domain,
            self.day,
            self.policy,
            self.result.as_str(),
            self.mx,
            ip(&self.receiving),
            ip(&self.sending)
        )
    }
}

/// Count one session (or one failure to obtain a policy), with its detail.
pub async fn record<S: StateStore>(store: &S, t: &Tuple, detail: &str, now: u64) {
    let keep = KEEP.as_millis() as u64;
    let key = t.key();
    if let Err(e) = store.hit(&key, keep, now).await {
        tracing::debug!(error = %e, "a TLS-RPT count was not kept");
        return;
    }
    if !detail.is_empty() && t.result != TlsResult::Success {
        let why = format!("tlsrpt-why{}", key.strip_prefix("tlsrpt").unwrap_or(&key));
        let _ = store.put(&why, detail, now, keep).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(951_782_400_000), "2000-02-29");
        assert_eq!(day(1_796_342_399_000), "2026-12-03");
    }

    #[tokio::test]
    async fn sessions_count_per_tuple_and_keep_the_latest_detail() {
        let s = mx6_store::embedded::Embedded::memory();
        let t = Tuple {
            domain: "example.org".into(),
            day: "2026-12-04".into(),
            policy: "sts",
            result: TlsResult::CertificateHostMismatch,
            mx: "mx.example.org".into(),
            receiving: Some("2001:db8::25".parse().unwrap()),
            sending: Some("2001:db8::1".parse().unwrap()),
        };
        record(&s, &t, "first", 1000).await;
        record(&s, &t, "second", 2000).await;
        assert_eq!(t.key(), "tlsrpt|example.org|2026-12-04|sts|certificate-host-mismatch|mx.example.org|2001:db8::25|2001:db8::1");
        assert_eq!(s.peek(&t.key(), 3000).await.unwrap(), 2);
        let why = s.get(&t.key().replacen("tlsrpt", "tlsrpt-why", 1), 3000).await.unwrap();
        assert_eq!(why.as_deref(), Some("second"));
    }
}
