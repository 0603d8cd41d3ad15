//! The DMARC aggregate report (RFC 7489 §7.2, Appendix C): `report_metadata`
//! (`org_name`, `email`, `report_id`, `date_range`), `policy_published`
//! (with `pct`, which RFC 7489 has and DMARCbis dropped) and one `record` per
//! row, gzip-compressed, in a message whose subject is
//! `Report Domain: … Submitter: … Report-ID: <…>` (§7.2.1.1) with the
//! report as an `application/gzip` attachment named
//! `submitter!domain!begin!end.xml.gz`.

use std::io::Write;

use mail_auth::report::{Alignment, Disposition, PolicyPublished, Report};
use mail_builder::headers::address::Address;
use mail_builder::headers::HeaderType;
use mail_builder::MessageBuilder;

use crate::evaluation::{Period, Published};

/// Who reports.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// `[reports] org_name`.
    pub org_name: String,
    /// `[reports] from`.
    pub email: String,
    /// Our hostname: the `Submitter` and the Message-ID's domain.
    pub submitter: String,
}

fn disposition(v: Option<&str>) -> Disposition {
    match v.map(str::to_ascii_lowercase).as_deref() {
        Some("none") => Disposition::None,
        Some("quarantine") => Disposition::Quarantine,
        Some("reject") => Disposition::Reject,
        _ => Disposition::Unspecified,
    }
}

fn alignment(v: Option<&str>) -> Alignment {
    match v.map(str::to_ascii_lowercase).as_deref() {
        Some("s") => Alignment::Strict,
        _ => Alignment::Relaxed,
    }
}

/// `policy_published` from the record as published (RFC 7489 §6.3 defaults:
/// `sp` = `p`, `adkim` = `aspf` = relaxed).
pub fn policy_published(p: &Published) -> PolicyPublished {
    let pol = disposition(p.tag("p"));
    PolicyPublished {
        domain: p.domain.clone(),
        version_published: None,
        adkim: alignment(p.tag("adkim")),
        aspf: alignment(p.tag("aspf")),
        p: pol,
        sp: p.tag("sp").map(|v| disposition(Some(v))).unwrap_or(pol),
        np: Disposition::Unspecified,
        testing: false,
        discovery_method: Default::default(),
        fo: p.tag("fo").map(str::to_string),
    }
}

/// `pct` as published (RFC 7489 §6.3: 100 when absent).
pub fn pct(p: &Published) -> u8 {
    p.tag("pct").and_then(|v| v.parse::<u8>().ok()).map(|v| v.min(100)).unwrap_or(100)
}

/// The report id of a period: the same for every node that builds it.
pub fn report_id(period: &Period) -> String {
    format!("{}.{}.{}", period.domain, period.begin, period.end)
}

/// The report of one period (its `begin` moved to `from` when an earlier
/// flush already reported the first part).
pub fn build(period: &Period, reporter: &Reporter, begin: u64) -> Report {
    let published = period.published.clone().unwrap_or(Published { domain: period.domain.clone(), record: String::new() });
    let mut r = Report::new()
        .with_org_name(reporter.org_name.clone())
        .with_email(reporter.email.clone())
        .with_report_id(report_id(period))
        .with_date_range_begin(begin)
        .with_date_range_end(period.end)
        .with_policy_published(policy_published(&published))
        .with_generator(concat!("mx6 ", env!("CARGO_PKG_VERSION")));
    for (_, e, count) in &period.rows {
        r.add_record(e.to_record(*count));
    }
    r
}

/// The report as XML (RFC 7489 Appendix C), `pct` in its place after `sp`.
pub fn xml(report: &Report, pct: u8) -> String {
    let x = report.to_xml();
    match x.find("</sp>") {
        Some(i) => {
            let at = i + "</sp>".len();
            format!("{}\n\t\t<pct>{pct}</pct>{}", &x[..at], &x[at..])
        }
        None => x,
    }
}

/// gzip of the XML.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4 + 64), flate2::Compression::default());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// The message that carries `gz` (the compressed report) to `to`.
pub fn message(report: &Report, reporter: &Reporter, gz: Vec<u8>, to: &[String], message_id: &str) -> Vec<u8> {
    let subject = format!("Report Domain: {} Submitter: {} Report-ID: <{}>", report.domain(), reporter.submitter, report.report_id());
    let text = format!(
        "DMARC aggregate report from {}\r\n\r\nReport Domain: {}\r\nSubmitter: {}\r\nReport-ID: {}\r\n",
        reporter.org_name,
        report.domain(),
        reporter.submitter,
        report.report_id()
    );
    let name = format!("{}!{}!{}!{}.xml.gz", reporter.submitter, report.domain(), report.date_range_begin(), report.date_range_end());
    let to: Vec<Address> = to.iter().map(|a| Address::new_address(None::<&str>, a.as_str())).collect();
    MessageBuilder::new()
        .from(Address::new_address(None::<&str>, reporter.email.as_str()))
        .header("To", HeaderType::Address(Address::new_list(to)))
        .header("Auto-Submitted", HeaderType::Text("auto-generated".into()))
        .message_id(message_id.to_string())
        // As one line, the way other reporters send it (not an encoded word).
        .header("Subject", HeaderType::Raw(mail_builder::headers::raw::Raw::new(subject)))
        .text_body(text)
        .attachment("application/gzip", name, gz)
        .write_to_vec()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::{Dkim, Evaluation};

    fn period() -> Period {
        let e = Evaluation {
            source_ip: "2001:db8:5::25".parse().unwrap(),
            header_from: "example.org".into(),
            envelope_from: "example.org".into(),
            spf_result: "fail".into(),
            spf_domain: "example.org".into(),
            spf_scope: "mfrom".into(),
            dkim: vec![Dkim { result: "none".into(), domain: String::new(), selector: String::new() }],
            dkim_aligned: false,
            spf_aligned: false,
            disposition: "reject".into(),
            override_reason: None,
        };
        Period {
            domain: "example.org".into(),
            begin: 1_796_342_400,
            end: 1_796_428_800,
            published: Some(Published {
                domain: "example.org".into(),
                record: "v=DMARC1; p=reject; pct=50; adkim=s; rua=mailto:d@example.org".into(),
            }),
            rows: vec![("k".into(), e, 7)],
        }
    }

    fn reporter() -> Reporter {
        Reporter { org_name: "mx.test".into(), email: "postmaster@mx.test".into(), submitter: "mx.test".into() }
    }

    #[test]
    fn the_report_has_the_published_policy_and_every_row() {
        let p = period();
        let r = build(&p, &reporter(), p.begin);
        let x = xml(&r, pct(p.published.as_ref().unwrap()));
        for want in [
            "<org_name>mx.test</org_name>",
            "<report_id>example.org.1796342400.1796428800</report_id>",
            "<begin>1796342400</begin>",
            "<p>reject</p>",
            "<sp>reject</sp>\n\t\t<pct>50</pct>",
            "<adkim>s</adkim>",
            "<source_ip>2001:db8:5::25</source_ip>",
            "<count>7</count>",
            "<disposition>reject</disposition>",
        ] {
            assert!(x.contains(want), "{want} in\n{x}");
        }
        // What we send reads back.
        let back = Report::parse_xml(x.as_bytes()).unwrap();
        assert_eq!(back.records().len(), 1);
        assert_eq!(back.records()[0].count(), 7);
    }

    #[test]
    fn the_message_carries_the_compressed_report() {
        let p = period();
        let r = build(&p, &reporter(), p.begin);
        let gz = gzip(xml(&r, 100).as_bytes());
        let m = message(&r, &reporter(), gz, &["d@example.org".into()], "x@mx.test");
        let text = String::from_utf8_lossy(&m).replace("\r\n ", " ");
        assert!(
            text.contains("Subject: Report Domain: example.org Submitter: mx.test Report-ID: <example.org.1796342400.1796428800>"),
            "{text}"
        );
        assert!(text.contains("application/gzip"), "{text}");
        let back = Report::parse_rfc5322(&m, 1 << 20).unwrap();
        assert_eq!(back.domain(), "example.org");
        assert_eq!(back.records()[0].source_ip(), Some("2001:db8:5::25".parse().unwrap()));
    }
}
