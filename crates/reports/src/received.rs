//! Reports others send about our domains: a message to one of the
//! `[reports] receive` addresses is parsed on arrival (a DMARC aggregate
//! report as XML, plain, gzip or zip, RFC 7489 §7.2.1.1; a TLS-RPT report as
//! JSON, gzip or plain, RFC 8460 §5.3) and what it says is kept, compactly,
//! as one JSON file per report under
//! `data_dir/reports/received/<domain>/<end>-<id>.json` for
//! [`crate::summary`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use mail_auth::report::tlsrpt::TlsReport;
use mail_auth::report::{ActionDisposition, DmarcResult, Report};
use serde::{Deserialize, Serialize};

/// Largest report we decompress.
pub const MAX_REPORT: usize = 20 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("no DMARC or TLS-RPT report in the message ({0})")]
    NoReport(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// One row of a received report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// DMARC: the sending source; TLS-RPT: our receiving address (a
    /// failure's `receiving-ip`), `None` for a policy's successes.
    pub ip: Option<IpAddr>,
    /// Messages (DMARC) or sessions (TLS-RPT).
    pub count: u64,
    /// DMARC: an aligned DKIM or SPF pass; TLS-RPT: a successful session.
    pub pass: bool,
    /// What failed: `dkim`, `spf` or `dkim,spf` (DMARC), the result type (TLS-RPT).
    pub what: String,
}

/// What one received report says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// `dmarc` or `tls`.
    pub kind: String,
    /// The reporting organization.
    pub reporter: String,
    pub report_id: String,
    /// The policy domain reported on.
    pub domain: String,
    pub begin: i64,
    pub end: i64,
    pub rows: Vec<Row>,
}

fn dmarc(r: &Report) -> Received {
    let rows = r
        .records()
        .iter()
        .map(|rec| {
            let dkim = rec.dmarc_dkim_result() == DmarcResult::Pass;
            let spf = rec.dmarc_spf_result() == DmarcResult::Pass;
            let mut what = Vec::new();
            if !dkim {
                what.push("dkim");
            }
            if !spf {
                what.push("spf");
            }
            let rejected = matches!(rec.action_disposition(), ActionDisposition::Reject);
            if rejected && (dkim || spf) {
                what.push("rejected");
            }
            Row { ip: rec.source_ip(), count: rec.count() as u64, pass: dkim || spf, what: what.join(",") }
        })
        .collect();
    Received {
        kind: "dmarc".into(),
        reporter: r.org_name().to_string(),
        report_id: r.report_id().to_string(),
        domain: r.domain().to_ascii_lowercase(),
        begin: r.date_range_begin() as i64,
        end: r.date_range_end() as i64,
        rows,
    }
}

fn tls(r: &TlsReport) -> Vec<Received> {
    // One record per policy domain in the report (usually one).
    let mut out: Vec<Received> = Vec::new();
    for p in &r.policies {
        let domain = p.policy.policy_domain.to_ascii_lowercase();
        let i = match out.iter().position(|x| x.domain == domain) {
            Some(i) => i,
            None => {
                out.push(Received {
                    kind: "tls".into(),
                    reporter: r.organization_name.clone().unwrap_or_default(),
                    report_id: r.report_id.clone(),
                    domain,
                    begin: r.date_range.start_datetime.to_timestamp(),
                    end: r.date_range.end_datetime.to_timestamp(),
                    rows: Vec::new(),
                });
                out.len() - 1
            }
        };
        let rows = &mut out[i].rows;
        if p.summary.total_success > 0 {
            rows.push(Row { ip: None, count: p.summary.total_success as u64, pass: true, what: String::new() });
        }
        let mut detailed = 0u64;
        for f in &p.failure_details {
            let what = serde_json::to_value(f.result_type).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            rows.push(Row { ip: f.receiving_ip, count: f.failed_session_count as u64, pass: false, what });
            detailed += f.failed_session_count as u64;
        }
        // Failures the details do not cover still count.
        let rest = (p.summary.total_failure as u64).saturating_sub(detailed);
        if rest > 0 {
            rows.push(Row { ip: None, count: rest, pass: false, what: "unspecified".into() });
        }
    }
    out
}

/// The reports in a message: one DMARC report, or a TLS-RPT report (one
/// entry per policy domain it covers).
pub fn parse(message: &[u8]) -> Result<Vec<Received>, ReceiveError> {
    let dmarc_err = match Report::parse_rfc5322(message, MAX_REPORT) {
        Ok(r) => return Ok(vec![dmarc(&r)]),
        Err(e) => e,
    };
    match TlsReport::parse_rfc5322(message, MAX_REPORT) {
        Ok(r) => Ok(tls(&r)),
        Err(e) => Err(ReceiveError::NoReport(format!("DMARC: {dmarc_err:?}; TLS-RPT: {e:?}"))),
    }
}

/// `data_dir/reports/received`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("reports").join("received")
}

fn safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@') { c } else { '_' }).take(120).collect()
}

/// Keep one report (a temporary file, fsync, rename); the same report
/// received twice is kept once.
pub fn store(data_dir: &Path, r: &Received) -> Result<PathBuf, ReceiveError> {
    let d = dir(data_dir).join(safe(&r.domain));
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ReceiveError::Io { path, source }
    };
    std::fs::create_dir_all(&d).map_err(io(&d))?;
    let path = d.join(format!("{}-{}-{}.json", r.end, r.kind, safe(&format!("{}-{}", r.reporter, r.report_id))));
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec(r).unwrap_or_default();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&json).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(path)
}

/// The reports kept about `domain` whose period ended at or after `since`
/// (Unix seconds).
pub fn load(data_dir: &Path, domain: &str, since: i64) -> Vec<Received> {
    let d = dir(data_dir).join(safe(&domain.to_ascii_lowercase()));
    let Ok(entries) = std::fs::read_dir(&d) else { return Vec::new() };
    let mut out: Vec<Received> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<Received>(&b).ok())
        .filter(|r| r.end >= since)
        .collect();
    out.sort_by(|a, b| (a.end, &a.reporter).cmp(&(b.end, &b.reporter)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<?xml version="1.0"?>
<feedback>
  <report_metadata><org_name>google.com</org_name><email>noreply-dmarc-support@google.com</email>
    <report_id>123</report_id><date_range><begin>1796256000</begin><end>1796342399</end></date_range></report_metadata>
  <policy_published><domain>example.org</domain><adkim>r</adkim><aspf>r</aspf><p>reject</p><sp>reject</sp><pct>100</pct></policy_published>
  <record><row><source_ip>2001:db8:1:2::25</source_ip><count>4</count>
    <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>fail</spf></policy_evaluated></row>
    <identifiers><header_from>example.org</header_from></identifiers>
    <auth_results><dkim><domain>example.org</domain><result>pass</result></dkim><spf><domain>example.org</domain><result>fail</result></spf></auth_results></record>
  <record><row><source_ip>192.0.2.9</source_ip><count>2</count>
    <policy_evaluated><disposition>reject</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row>
    <identifiers><header_from>example.org</header_from></identifiers>
    <auth_results><spf><domain>example.org</domain><result>fail</result></spf></auth_results></record>
</feedback>"#;

    fn mail(ct: &str, name: &str, body: &[u8]) -> Vec<u8> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(body);
        format!(
            "From: r@google.com\r\nTo: dmarc@example.org\r\nSubject: Report\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nreport\r\n--b\r\nContent-Type: {ct}\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn dmarc_reports_plain_gzip_and_zip() {
        let gz = crate::dmarc_report::gzip(XML.as_bytes());
        for m in [mail("text/xml", "r.xml", XML.as_bytes()), mail("application/gzip", "r.xml.gz", &gz)] {
            let r = parse(&m).unwrap();
            assert_eq!(r.len(), 1);
            assert_eq!((r[0].kind.as_str(), r[0].reporter.as_str(), r[0].domain.as_str()), ("dmarc", "google.com", "example.org"));
            assert_eq!(r[0].rows[0], Row { ip: Some("2001:db8:1:2::25".parse().unwrap()), count: 4, pass: true, what: "spf".into() });
            assert!(!r[0].rows[1].pass);
        }
    }

    #[test]
    fn reports_are_kept_once_and_read_back() {
        let dir = std::env::temp_dir().join(format!("mx6-received-{}", std::process::id()));
        let r = parse(&mail("text/xml", "r.xml", XML.as_bytes())).unwrap().remove(0);
        store(&dir, &r).unwrap();
        store(&dir, &r).unwrap();
        assert_eq!(load(&dir, "example.org", 0), vec![r.clone()]);
        assert!(load(&dir, "example.org", r.end + 1).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_message_without_a_report_is_an_error() {
        assert!(matches!(parse(b"Subject: hi\r\n\r\nhello\r\n"), Err(ReceiveError::NoReport(_))));
    }
}
