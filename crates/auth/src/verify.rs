//! Verification: SPF (RFC 7208) of the HELO and MAIL FROM identities with
//! mail-auth's check_host (10 DNS-mechanism and 2 void lookup limits, §4.6.4;
//! IPv4-mapped clients checked as IPv4); DKIM (RFC 6376) of every signature;
//! DMARC (RFC 7489) with alignment, `p`/`sp`, and `pct` (§6.6.4) applied here
//! because mail-auth follows DMARCbis, which dropped it.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use mail_auth::{
    dmarc::{verify::DmarcParameters, Policy},
    spf::verify::SpfParameters,
    AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, SpfOutput, SpfResult,
};
use mx6_policy::inbound::{AuthResult, DmarcPolicy, MessageFacts, SpfFacts};

use crate::results::DkimSummary;

/// SPF facts plus what DMARC needs later.
#[derive(Debug, Clone)]
pub struct Spf {
    pub facts: SpfFacts,
    mail_from: Option<SpfOutput>,
    /// The domain SPF authenticated for DMARC: MAIL FROM's, or HELO's for the null sender.
    pub domain: String,
}

/// DKIM and DMARC outcome of one message.
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub facts: MessageFacts,
    pub dkim: Vec<DkimSummary>,
    /// What DMARC evaluated, when the From domain publishes a record (for
    /// aggregate reports, RFC 7489 §7.2).
    pub dmarc: Option<DmarcEvaluation>,
}

/// One DMARC evaluation as an aggregate report records it.
#[derive(Debug, Clone, Default)]
pub struct DmarcEvaluation {
    /// The RFC 5322.From domain.
    pub header_from: String,
    /// Where the record was found (the From domain or a parent).
    pub record_domain: String,
    /// The record, verbatim.
    pub record: String,
    /// An aligned DKIM pass; an aligned SPF pass.
    pub dkim_aligned: bool,
    pub spf_aligned: bool,
    /// The policy the record asks for this domain (`p`, or `sp` for a
    /// subdomain), before `pct` sampling.
    pub requested: DmarcPolicy,
}

pub struct Authenticator {
    ma: MessageAuthenticator,
    hostname: String,
}

impl Authenticator {
    pub fn new(resolver: &mx6_dns::Resolver, hostname: &str) -> Authenticator {
        Authenticator { ma: MessageAuthenticator(resolver.hickory().clone()), hostname: hostname.to_string() }
    }

    /// SPF of the HELO identity and of MAIL FROM (`sender` empty for the null
    /// sender, whose identity is postmaster@HELO, RFC 7208 §2.4).
    pub async fn spf(&self, ip: IpAddr, helo: &str, sender: &str) -> Spf {
        let ip = mx6_policy::prefix::canonical(ip);
        let helo_is_name = !helo.starts_with('[') && helo.contains('.');
        let helo_out =
            if helo_is_name { Some(self.ma.verify_spf(SpfParameters::verify_ehlo(ip, helo, &self.hostname)).await) } else { None };
        let helo_result = helo_out.as_ref().map(|o| convert_spf(o.result())).unwrap_or(AuthResult::None);
        if sender.is_empty() {
            return Spf {
                facts: SpfFacts { result: helo_result, domain: helo.to_string(), helo: helo_result },
                mail_from: helo_out,
                domain: helo.to_string(),
            };
        }
        let domain = sender.rsplit_once('@').map(|(_, d)| d).unwrap_or(sender).to_string();
        // RFC 7208 §4.3: a domain that is not a valid name (an address
        // literal, an empty label) gives "none" without a lookup.
        if domain.starts_with('[') || domain.split('.').any(str::is_empty) {
            let facts = SpfFacts { result: AuthResult::None, domain: domain.clone(), helo: helo_result };
            return Spf { facts, mail_from: None, domain };
        }
        let out = self.ma.verify_spf(SpfParameters::verify_mail_from(ip, helo, &self.hostname, sender)).await;
        Spf {
            facts: SpfFacts { result: convert_spf(out.result()), domain: domain.clone(), helo: helo_result },
            mail_from: Some(out),
            domain,
        }
    }

    /// DKIM and DMARC of a message (`data` as received, headers and body).
    /// `pct_sample` (0..100) decides DMARC `pct` sampling.
    pub async fn message(&self, data: &[u8], spf: &Spf) -> Message {
        let Some(msg) = AuthenticatedMessage::parse(data) else {
            return Message::default();
        };
        let dkim = self.ma.verify_dkim(&msg).await;
        let summaries: Vec<DkimSummary> = dkim
            .iter()
            .map(|o| DkimSummary {
                result: convert_dkim(o.result()),
                domain: o.signature().map(|s| s.d.clone()).unwrap_or_default(),
                selector: o.signature().map(|s| s.s.clone()).unwrap_or_default(),
                b: o.signature().map(|s| s.b.get(..6).unwrap_or(&s.b).to_vec()).unwrap_or_default(),
            })
            .collect();
        let dkim_best = [AuthResult::Pass, AuthResult::TempError, AuthResult::Fail, AuthResult::PermError, AuthResult::Neutral]
            .into_iter()
            .find(|r| summaries.iter().any(|s| s.result == *r))
            .unwrap_or(AuthResult::None);
        let none = SpfOutput::new(String::new());
        let spf_out = spf.mail_from.as_ref().unwrap_or(&none);
        let dmarc = self.ma.verify_dmarc(DmarcParameters::new(&msg, &dkim, &spf.domain, spf_out)).await;
        let dmarc_result = match dmarc.result() {
            DmarcResult::Pass => AuthResult::Pass,
            DmarcResult::Fail(_) => AuthResult::Fail,
            DmarcResult::TempError(_) => AuthResult::TempError,
            DmarcResult::PermError(_) => AuthResult::PermError,
            DmarcResult::None => AuthResult::None,
        };
        let requested = match dmarc.policy() {
            Policy::Reject => DmarcPolicy::Reject,
            Policy::Quarantine => DmarcPolicy::Quarantine,
            _ => DmarcPolicy::None,
        };
        let mut policy = requested;
        // The record as published: for `pct`, and for the aggregate report.
        let published = match dmarc.dmarc_record() {
            Some(_) => self.dmarc_record(dmarc.domain()).await,
            None => None,
        };
        if dmarc_result == AuthResult::Fail && policy != DmarcPolicy::None {
            let pct = published.as_ref().map(|(_, r)| parse_pct(r)).unwrap_or(100);
            policy = policy.apply_pct(pct, random_percent());
        }
        let evaluation = published.map(|(record_domain, record)| DmarcEvaluation {
            header_from: dmarc.domain().to_string(),
            record_domain,
            record,
            dkim_aligned: matches!(dmarc.dkim_result(), DmarcResult::Pass),
            spf_aligned: matches!(dmarc.spf_result(), DmarcResult::Pass),
            requested,
        });
        Message {
            facts: MessageFacts { dkim: dkim_best, dmarc: dmarc_result, dmarc_domain: dmarc.domain().to_string(), dmarc_policy: policy },
            dkim: summaries,
            dmarc: evaluation,
        }
    }

    /// The DMARC record that applies to `domain` (the domain's own, else
    /// the nearest parent's), with the domain it was found at. Answers come
    /// from the resolver's cache: mail-auth has just asked the same.
    async fn dmarc_record(&self, domain: &str) -> Option<(String, String)> {
        let mut d = domain.trim_end_matches('.');
        loop {
            if let Ok(raw) = self.ma.txt_raw_lookup(format!("_dmarc.{d}.")).await {
                let txt = String::from_utf8_lossy(&raw);
                if txt.trim_start().starts_with("v=DMARC1") {
                    return Some((d.to_ascii_lowercase(), txt.trim().to_string()));
                }
            }
            match d.split_once('.') {
                Some((_, rest)) if rest.contains('.') => d = rest,
                _ => return None,
            }
        }
    }
}

fn parse_pct(record: &str) -> u8 {
    record_tag(record, "pct").and_then(|v| v.parse::<u8>().ok()).map(|p| p.min(100)).unwrap_or(100)
}

/// The value of tag `name` in a `tag=value; …` DNS record (DMARC, DKIM, TLS-RPT).
pub fn record_tag<'a>(record: &'a str, name: &str) -> Option<&'a str> {
    record.split(';').filter_map(|t| t.split_once('=')).find(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
}

/// 0..100 from the std hasher's per-process random keys.
fn random_percent() -> u8 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0));
    (h.finish() % 100) as u8
}

fn convert_spf(r: SpfResult) -> AuthResult {
    match r {
        SpfResult::Pass => AuthResult::Pass,
        SpfResult::Fail => AuthResult::Fail,
        SpfResult::SoftFail => AuthResult::SoftFail,
        SpfResult::Neutral => AuthResult::Neutral,
        SpfResult::TempError => AuthResult::TempError,
        SpfResult::PermError => AuthResult::PermError,
        SpfResult::None => AuthResult::None,
    }
}

fn convert_dkim(r: &DkimResult) -> AuthResult {
    match r {
        DkimResult::Pass => AuthResult::Pass,
        // A body that does not match its hash failed verification (RFC 6376
        // §6.1.3): "fail" in RFC 8601 terms, though mail-auth says neutral.
        DkimResult::Neutral(mail_auth::Error::Dkim(mail_auth::dkim::DkimError::FailedBodyHashMatch)) => AuthResult::Fail,
        DkimResult::Neutral(_) => AuthResult::Neutral,
        DkimResult::Fail(_) => AuthResult::Fail,
        DkimResult::PermError(_) => AuthResult::PermError,
        DkimResult::TempError(_) => AuthResult::TempError,
        DkimResult::None => AuthResult::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pct_parsing() {
        assert_eq!(parse_pct("v=DMARC1; p=reject; pct=20"), 20);
        assert_eq!(parse_pct("v=DMARC1; p=reject"), 100);
        assert_eq!(parse_pct("v=DMARC1; p=reject; PCT = 300"), 100);
        assert!(random_percent() < 100);
    }
}
