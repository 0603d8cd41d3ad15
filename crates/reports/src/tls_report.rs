//! The TLS-RPT report (RFC 8460 §4) of one policy domain and UTC day, from
//! the counts outbound delivery keeps (`tlsrpt|<domain>|<day>|<policy>|
//! <result>|<mx>|<receiving-ip>|<sending-ip>`, see
//! `mx6_delivery::tls_record`): one `policies` entry per policy (the
//! MTA-STS policy with its text and `mx` patterns, each MX host's TLSA
//! policy, or `no-policy-found`), its success and failure counts, and one
//! `failure-details` entry per result type, sending IP, MX host and
//! receiving IP. It travels gzip-compressed as `application/tlsrpt+gzip`,
//! in a `multipart/report; report-type=tlsrpt` message with the
//! `TLS-Report-Domain` and `TLS-Report-Submitter` headers (§5.3), or as
//! the body of an HTTPS POST.

use std::net::IpAddr;

use mail_auth::report::tlsrpt::{DateRange, FailureDetails, Policy, PolicyDetails, PolicyType, ResultType, Summary, TlsReport};
use mx6_store::{StateStore, StoreError};

/// One counted tuple read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub key: String,
    pub policy: String,
    pub result: String,
    pub mx: String,
    pub receiving: Option<IpAddr>,
    pub sending: Option<IpAddr>,
    pub sessions: u32,
    /// The latest detail of a failure.
    pub detail: Option<String>,
}

/// The counts of one domain and day.
#[derive(Debug, Clone)]
pub struct Day {
    pub domain: String,
    /// `YYYY-MM-DD`.
    pub day: String,
    pub counts: Vec<Count>,
}

impl Day {
    /// Unix seconds of the day's start and end.
    pub fn range(&self) -> (i64, i64) {
        let start = chrono::NaiveDate::parse_from_str(&self.day, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp())
            .unwrap_or(0);
        (start, start + 86_400)
    }

    pub fn report_id(&self) -> String {
        format!("{}.{}", self.day, self.domain)
    }
}

/// Every day with counts, the current one (`today`) only when `open`.
pub async fn days<S: StateStore>(store: &S, now_ms: u64, today: &str, open: bool) -> Result<Vec<Day>, StoreError> {
    let mut out: Vec<Day> = Vec::new();
    for shown in store.show("tlsrpt", now_ms, 1).await? {
        let p: Vec<&str> = shown.key.splitn(8, '|').collect();
        let ["tlsrpt", domain, day, policy, result, mx, rip, sip] = p.as_slice() else { continue };
        // Sessions that did not try TLS because a manual policy said `none`
        // are not TLS sessions (RFC 8460 §4.3 counts attempts at TLS).
        if *result == "plaintext" || (!open && *day >= today) {
            continue;
        }
        let sessions = store.peek(&shown.key, now_ms).await? as u32;
        if sessions == 0 {
            continue;
        }
        let detail =
            if *result != "success" { store.get(&format!("tlsrpt-why{}", &shown.key["tlsrpt".len()..]), now_ms).await? } else { None };
        let c = Count {
            key: shown.key.clone(),
            policy: policy.to_string(),
            result: result.to_string(),
            mx: mx.to_string(),
            receiving: rip.parse().ok(),
            sending: sip.parse().ok(),
            sessions,
            detail,
        };
        match out.iter_mut().find(|d| d.domain == *domain && d.day == *day) {
            Some(d) => d.counts.push(c),
            None => out.push(Day { domain: domain.to_string(), day: day.to_string(), counts: vec![c] }),
        }
    }
    for d in &mut out {
        d.counts.sort_by(|a, b| a.key.cmp(&b.key));
    }
    out.sort_by(|a, b| (&a.domain, &a.day).cmp(&(&b.domain, &b.day)));
    Ok(out)
}

fn policy_type(s: &str) -> PolicyType {
    match s {
        "sts" => PolicyType::Sts,
        "tlsa" => PolicyType::Tlsa,
        _ => PolicyType::NoPolicyFound,
    }
}

fn result_type(s: &str) -> ResultType {
    serde_json::from_value(serde_json::Value::String(s.to_string())).unwrap_or(ResultType::Other)
}

/// Who reports.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub org_name: String,
    /// `contact-info`: `[reports] from`.
    pub contact: String,
    pub submitter: String,
}

/// The report of one day. `sts_policy` is the MTA-STS policy file as it
/// was fetched, quoted line by line in `policy-string` (RFC 8460 §4.4).
pub fn build(day: &Day, reporter: &Reporter, sts_policy: Option<&str>) -> TlsReport {
    let (start, end) = day.range();
    // One policy per (type, and for DANE the MX host: TLSA records are per host).
    let mut policies: Vec<(String, String, Policy)> = Vec::new();
    for c in &day.counts {
        let scope = if c.policy == "tlsa" { c.mx.clone() } else { String::new() };
        let i = match policies.iter().position(|(t, s, _)| *t == c.policy && *s == scope) {
            Some(i) => i,
            None => {
                let mut details = PolicyDetails::new(policy_type(&c.policy), day.domain.clone());
                match c.policy.as_str() {
                    "sts" => {
                        let text = sts_policy.unwrap_or_default();
                        details.policy_string = text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
                        details.mx_host =
                            details.policy_string.iter().filter_map(|l| l.strip_prefix("mx:")).map(|m| m.trim().to_string()).collect();
                    }
                    "tlsa" => details.mx_host = vec![c.mx.clone()],
                    _ => {}
                }
                policies.push((
                    c.policy.clone(),
                    scope,
                    Policy { policy: details, summary: Summary { total_success: 0, total_failure: 0 }, failure_details: Vec::new() },
                ));
                policies.len() - 1
            }
        };
        let p = &mut policies[i].2;
        if c.policy != "sts" && c.policy != "tlsa" && !c.mx.is_empty() && !p.policy.mx_host.contains(&c.mx) {
            p.policy.mx_host.push(c.mx.clone());
        }
        if c.result == "success" {
            p.summary.total_success += c.sessions;
            continue;
        }
        p.summary.total_failure += c.sessions;
        let rt = result_type(&c.result);
        match p.failure_details.iter_mut().find(|f| {
            f.result_type == rt
                && f.sending_mta_ip == c.sending
                && f.receiving_ip == c.receiving
                && f.receiving_mx_hostname.as_deref() == Some(c.mx.as_str()).filter(|m| !m.is_empty())
        }) {
            Some(f) => f.failed_session_count += c.sessions,
            None => p.failure_details.push(FailureDetails {
                result_type: rt,
                sending_mta_ip: c.sending,
                receiving_mx_hostname: (!c.mx.is_empty()).then(|| c.mx.clone()),
                receiving_mx_helo: None,
                receiving_ip: c.receiving,
                failed_session_count: c.sessions,
                additional_information: None,
                failure_reason_code: c.detail.clone(),
            }),
        }
    }
    TlsReport {
        organization_name: Some(reporter.org_name.clone()),
        date_range: DateRange::from_timestamps(start, end),
        contact_info: Some(reporter.contact.clone()),
        report_id: day.report_id(),
        policies: policies.into_iter().map(|(_, _, p)| p).collect(),
    }
}

/// The message that carries the compressed report `gz` to `to`.
pub fn message(report: &TlsReport, domain: &str, reporter: &Reporter, gz: &[u8], to: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    let from = mail_builder::headers::address::Address::new_address(None::<&str>, reporter.contact.as_str());
    let _ = report.write_rfc5322_from_bytes(domain, &reporter.submitter, from, to.iter().map(String::as_str), gz, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(policy: &str, result: &str, mx: &str, n: u32) -> Count {
        Count {
            key: format!("{policy}{result}{mx}"),
            policy: policy.into(),
            result: result.into(),
            mx: mx.into(),
            receiving: Some("2001:db8::25".parse().unwrap()),
            sending: Some("2001:db8::1".parse().unwrap()),
            sessions: n,
            detail: (result != "success").then(|| "why".to_string()),
        }
    }

    #[test]
    fn one_policy_entry_per_policy_with_its_counts() {
        let day = Day {
            domain: "example.net".into(),
            day: "2026-12-03".into(),
            counts: vec![
                count("sts", "success", "mx1.example.net", 5),
                count("sts", "certificate-host-mismatch", "mx2.example.net", 2),
                count("sts", "certificate-host-mismatch", "mx2.example.net", 1),
                count("tlsa", "tlsa-invalid", "mx3.example.net", 1),
            ],
        };
        let r = Reporter { org_name: "mx.test".into(), contact: "postmaster@mx.test".into(), submitter: "mx.test".into() };
        let rep = build(&day, &r, Some("version: STSv1\nmode: enforce\nmx: mx1.example.net\nmx: *.example.net\nmax_age: 86400\n"));
        assert_eq!(rep.report_id, "2026-12-03.example.net");
        assert_eq!(rep.policies.len(), 2);
        let sts = &rep.policies[0];
        assert_eq!(sts.policy.policy_type, PolicyType::Sts);
        assert_eq!(sts.policy.mx_host, vec!["mx1.example.net", "*.example.net"]);
        assert_eq!(sts.policy.policy_string.len(), 5);
        assert_eq!((sts.summary.total_success, sts.summary.total_failure), (5, 3));
        assert_eq!(sts.failure_details.len(), 1);
        assert_eq!(sts.failure_details[0].failed_session_count, 3);
        assert_eq!(sts.failure_details[0].result_type, ResultType::CertificateHostMismatch);
        let json: serde_json::Value = serde_json::from_str(&rep.to_json()).unwrap();
        assert_eq!(json["date-range"]["start-datetime"], "2026-12-03T00:00:00Z");
        assert_eq!(json["policies"][1]["policy"]["policy-type"], "tlsa");
        assert_eq!(json["policies"][0]["failure-details"][0]["receiving-mx-hostname"], "mx2.example.net");
        let gz = crate::dmarc_report::gzip(rep.to_json().as_bytes());
        let m = message(&rep, "example.net", &r, &gz, &["tls@example.net".into()]);
        let text = String::from_utf8_lossy(&m);
        assert!(
            text.contains("TLS-Report-Domain: example.net") && text.contains("report-type=\"tlsrpt\"")
                || text.contains("report-type=tlsrpt"),
            "{text}"
        );
        assert_eq!(TlsReport::parse_rfc5322(&m, 1 << 20).unwrap().report_id, rep.report_id);
    }
}
