//! One DMARC evaluation (RFC 7489 §7.2: what a `record` of an aggregate
//! report says), counted in the state store. Evaluations that say the same
//! thing are one row with a count: the key is
//! `dmarc|<policy-domain>|<begin>|<end>|<row>` (period in Unix seconds; the
//! row's fields `|`-separated and %-escaped), the value a counter, so the
//! counts of several nodes on one Redis add up. The record as published is
//! kept beside it under `dmarc-policy|<policy-domain>|<begin>|<end>`.

use std::net::IpAddr;

use mail_auth::report::{
    ActionDisposition, AuthResult, DKIMAuthResult, DkimResult, DmarcResult, Identifier, PolicyEvaluated, PolicyOverride,
    PolicyOverrideReason, Record, Row, SPFAuthResult, SPFDomainScope, SpfResult,
};
use mx6_store::{StateStore, StoreError};
use serde::{Deserialize, Serialize};

use crate::period;

/// How long counts outlive their period: a report that cannot be built at
/// once (store down, no DNS) is tried again for a week.
pub const KEEP_MS: u64 = 8 * 86_400_000;

/// The DMARC record that applied, as it was published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// Where the record was found (the From domain or its organizational
    /// domain, RFC 7489 §6.6.3).
    pub domain: String,
    /// The TXT record, verbatim.
    pub record: String,
}

impl Published {
    /// The value of `tag` in the record.
    pub fn tag(&self, name: &str) -> Option<&str> {
        crate::destination::tag(&self.record, name)
    }

    /// `ri` in seconds.
    pub fn ri(&self) -> Option<u64> {
        self.tag("ri").and_then(|v| v.parse().ok())
    }
}

/// One DKIM signature's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dkim {
    pub result: String,
    pub domain: String,
    pub selector: String,
}

/// What one message's evaluation found. Results are RFC 8601 words (`pass`,
/// `fail`, `softfail`, `neutral`, `none`, `temperror`, `permerror`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub source_ip: IpAddr,
    pub header_from: String,
    /// The MAIL FROM domain (the HELO name for the null sender).
    pub envelope_from: String,
    pub spf_result: String,
    pub spf_domain: String,
    /// `mfrom` or `helo`.
    pub spf_scope: String,
    pub dkim: Vec<Dkim>,
    /// DMARC's own verdicts: an aligned DKIM pass, an aligned SPF pass.
    pub dkim_aligned: bool,
    pub spf_aligned: bool,
    /// `none`, `quarantine` or `reject`: what we did.
    pub disposition: String,
    /// Why that differs from the policy (`local_policy`, `sampled_out`,
    /// `mailing_list`, `trusted_forwarder`, `other`), if it does.
    pub override_reason: Option<String>,
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => o.push_str("%25"),
            '|' => o.push_str("%7C"),
            ',' => o.push_str("%2C"),
            ';' => o.push_str("%3B"),
            c if c.is_control() => {}
            c => o.push(c),
        }
    }
    o
}

fn unesc(s: &str) -> String {
    s.replace("%3B", ";").replace("%2C", ",").replace("%7C", "|").replace("%25", "%")
}

fn pass(b: bool) -> &'static str {
    if b {
        "pass"
    } else {
        "fail"
    }
}

impl Evaluation {
    /// The row part of the key.
    pub fn row(&self) -> String {
        let dkim: Vec<String> = self.dkim.iter().map(|d| format!("{};{};{}", esc(&d.result), esc(&d.domain), esc(&d.selector))).collect();
        [
            self.source_ip.to_string(),
            esc(&self.header_from),
            esc(&self.envelope_from),
            esc(&self.spf_result),
            esc(&self.spf_domain),
            esc(&self.spf_scope),
            dkim.join(","),
            pass(self.dkim_aligned).to_string(),
            pass(self.spf_aligned).to_string(),
            esc(&self.disposition),
            self.override_reason.as_deref().map(esc).unwrap_or_default(),
        ]
        .join("|")
    }

    /// Read a row back.
    pub fn parse_row(row: &str) -> Option<Evaluation> {
        let f: Vec<&str> = row.split('|').collect();
        let [ip, hf, ef, sr, sd, ss, dkim, da, sa, disp, why] = f.as_slice() else { return None };
        let dkim = dkim
            .split(',')
            .filter(|d| !d.is_empty())
            .filter_map(|d| {
                let mut p = d.split(';');
                Some(Dkim { result: unesc(p.next()?), domain: unesc(p.next()?), selector: unesc(p.next()?) })
            })
            .collect();
        Some(Evaluation {
            source_ip: ip.parse().ok()?,
            header_from: unesc(hf),
            envelope_from: unesc(ef),
            spf_result: unesc(sr),
            spf_domain: unesc(sd),
            spf_scope: unesc(ss),
            dkim,
            dkim_aligned: *da == "pass",
            spf_aligned: *sa == "pass",
            disposition: unesc(disp),
            override_reason: (!why.is_empty()).then(|| unesc(why)),
        })
    }

    /// The report `record` of this row, seen `count` times.
    pub fn to_record(&self, count: u32) -> Record {
        let dmarc = |b: bool| if b { DmarcResult::Pass } else { DmarcResult::Fail };
        let reason = self
            .override_reason
            .iter()
            .map(|r| match r.as_str() {
                "local_policy" => PolicyOverrideReason { type_: PolicyOverride::LocalPolicy, comment: None },
                "mailing_list" => PolicyOverrideReason { type_: PolicyOverride::MailingList, comment: None },
                "trusted_forwarder" => PolicyOverrideReason { type_: PolicyOverride::TrustedForwarder, comment: None },
                other => PolicyOverrideReason { type_: PolicyOverride::Other, comment: Some(other.to_string()) },
            })
            .collect();
        let disposition = match self.disposition.as_str() {
            "reject" => ActionDisposition::Reject,
            "quarantine" => ActionDisposition::Quarantine,
            _ => ActionDisposition::None,
        };
        Record {
            row: Row {
                source_ip: Some(self.source_ip),
                count,
                policy_evaluated: PolicyEvaluated { disposition, dkim: dmarc(self.dkim_aligned), spf: dmarc(self.spf_aligned), reason },
            },
            identifiers: Identifier { envelope_to: None, envelope_from: self.envelope_from.clone(), header_from: self.header_from.clone() },
            auth_results: AuthResult {
                dkim: self
                    .dkim
                    .iter()
                    .map(|d| DKIMAuthResult {
                        domain: d.domain.clone(),
                        selector: d.selector.clone(),
                        result: dkim_result(&d.result),
                        human_result: None,
                    })
                    .collect(),
                spf: vec![SPFAuthResult {
                    domain: self.spf_domain.clone(),
                    scope: if self.spf_scope == "helo" { SPFDomainScope::Helo } else { SPFDomainScope::MailFrom },
                    result: spf_result(&self.spf_result),
                    human_result: None,
                }],
            },
            extensions: Vec::new(),
        }
    }
}

fn dkim_result(s: &str) -> DkimResult {
    match s {
        "pass" => DkimResult::Pass,
        "fail" => DkimResult::Fail,
        "policy" => DkimResult::Policy,
        "neutral" => DkimResult::Neutral,
        "temperror" => DkimResult::TempError,
        "permerror" => DkimResult::PermError,
        _ => DkimResult::None,
    }
}

fn spf_result(s: &str) -> SpfResult {
    match s {
        "pass" => SpfResult::Pass,
        "fail" => SpfResult::Fail,
        "softfail" => SpfResult::SoftFail,
        "neutral" => SpfResult::Neutral,
        "temperror" => SpfResult::TempError,
        "permerror" => SpfResult::PermError,
        _ => SpfResult::None,
    }
}

/// Count one evaluation in its domain's current period (`interval`: our
/// `[reports] interval` in seconds; the record's `ri` may shorten it).
pub async fn record<S: StateStore>(store: &S, e: &Evaluation, p: &Published, interval: u64, now_ms: u64) -> Result<(), StoreError> {
    let (begin, end) = period::containing(now_ms / 1000, period::interval(interval, p.ri()));
    let keep = (end * 1000).saturating_sub(now_ms) + KEEP_MS;
    let n = store.hit(&format!("dmarc|{}|{begin}|{end}|{}", p.domain, e.row()), keep, now_ms).await?;
    // The record is written with each row's first count, not with every
    // message: a row seen again adds one store operation, not two.
    if n > 1 {
        return Ok(());
    }
    let policy = serde_json::to_string(p).unwrap_or_default();
    store.put(&format!("dmarc-policy|{}|{begin}|{end}", p.domain), &policy, now_ms, keep).await
}

/// The rows of one domain's period, read from the store.
#[derive(Debug, Clone)]
pub struct Period {
    pub domain: String,
    pub begin: u64,
    pub end: u64,
    pub published: Option<Published>,
    /// (key, evaluation, count)
    pub rows: Vec<(String, Evaluation, u32)>,
}

/// Every period with counts; those still open (end after `now_ms`) only
/// when `open` (a flush).
pub async fn periods<S: StateStore>(store: &S, now_ms: u64, open: bool) -> Result<Vec<Period>, StoreError> {
    let mut out: Vec<Period> = Vec::new();
    for shown in store.show("dmarc", now_ms, 1).await? {
        let mut parts = shown.key.splitn(5, '|');
        let (Some("dmarc"), Some(domain), Some(begin), Some(end), Some(row)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(begin), Ok(end), Some(eval)) = (begin.parse::<u64>(), end.parse::<u64>(), Evaluation::parse_row(row)) else {
            tracing::warn!(key = %shown.key, "an unreadable DMARC count in the store was skipped");
            continue;
        };
        if !open && end * 1000 > now_ms {
            continue;
        }
        let count = store.peek(&shown.key, now_ms).await? as u32;
        if count == 0 {
            continue;
        }
        match out.iter_mut().find(|p| p.domain == domain && p.begin == begin && p.end == end) {
            Some(p) => p.rows.push((shown.key.clone(), eval, count)),
            None => {
                out.push(Period { domain: domain.to_string(), begin, end, published: None, rows: vec![(shown.key.clone(), eval, count)] })
            }
        }
    }
    for p in &mut out {
        let key = format!("dmarc-policy|{}|{}|{}", p.domain, p.begin, p.end);
        p.published = store.get(&key, now_ms).await?.and_then(|v| serde_json::from_str(&v).ok());
        p.rows.sort_by(|a, b| a.0.cmp(&b.0));
    }
    out.sort_by(|a, b| (&a.domain, a.begin).cmp(&(&b.domain, b.begin)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(ip: &str) -> Evaluation {
        Evaluation {
            source_ip: ip.parse().unwrap(),
            header_from: "example.org".into(),
            envelope_from: "bounce|odd.example.org".into(),
            spf_result: "pass".into(),
            spf_domain: "bounce.example.org".into(),
            spf_scope: "mfrom".into(),
            dkim: vec![
                Dkim { result: "pass".into(), domain: "example.org".into(), selector: "s1".into() },
                Dkim { result: "fail".into(), domain: "other.example".into(), selector: "a;b".into() },
            ],
            dkim_aligned: true,
            spf_aligned: false,
            disposition: "none".into(),
            override_reason: Some("local_policy".into()),
        }
    }

    #[test]
    fn rows_read_back_as_written() {
        let e = eval("2001:db8:1:2::25");
        assert_eq!(Evaluation::parse_row(&e.row()), Some(e.clone()));
        let r = e.to_record(3);
        assert_eq!(r.row.count, 3);
        assert_eq!(r.auth_results.dkim.len(), 2);
        assert_eq!(r.row.policy_evaluated.reason[0].type_, PolicyOverride::LocalPolicy);
    }

    #[tokio::test]
    async fn evaluations_count_per_row_and_period() {
        let s = mx6_store::embedded::Embedded::memory();
        let p = Published { domain: "example.org".into(), record: "v=DMARC1; p=reject; rua=mailto:d@example.org; ri=3600".into() };
        let t0 = 1_796_342_400_000 + 1_000; // just after midnight
        record(&s, &eval("2001:db8::1"), &p, 86_400, t0).await.unwrap();
        record(&s, &eval("2001:db8::1"), &p, 86_400, t0 + 10).await.unwrap();
        record(&s, &eval("192.0.2.1"), &p, 86_400, t0 + 20).await.unwrap();
        assert!(periods(&s, t0 + 30, false).await.unwrap().is_empty(), "the period is still open");
        let ps = periods(&s, t0 + 3_600_000, false).await.unwrap();
        assert_eq!(ps.len(), 1);
        assert_eq!((ps[0].begin, ps[0].end), (1_796_342_400, 1_796_342_400 + 3600), "the record's ri of an hour applies");
        let counts: Vec<u32> = ps[0].rows.iter().map(|r| r.2).collect();
        assert_eq!(counts.iter().sum::<u32>(), 3);
        assert_eq!(ps[0].published.as_ref(), Some(&p));
    }
}
