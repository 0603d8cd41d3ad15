//! Delivery status notifications (bounces): RFC 3464 `message/delivery-status`
//! inside an RFC 6522 `multipart/report`, sent to the envelope sender (never to
//! the null sender, RFC 5321 §6.1), with the original headers attached
//! (`text/rfc822-headers`).

use std::fmt::Write as _;

/// One recipient that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub recipient: String,
    /// RFC 3463 status, e.g. `5.1.1`.
    pub status: String,
    /// The remote host that answered, if one did.
    pub remote_mta: Option<String>,
    /// The remote reply (`550 5.1.1 user unknown`) or our own reason.
    pub diagnostic: String,
}

/// What the DSN needs to know about the original message.
#[derive(Debug, Clone)]
pub struct Original<'a> {
    pub queue_id: &'a str,
    pub from: &'a str,
    /// Unix seconds.
    pub arrival: i64,
    /// The message (its header section is attached).
    pub message: &'a [u8],
}

fn rfc2822(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default().to_rfc2822()
}

/// Strip anything that could break a header or a DSN field line.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The complete bounce message (headers and body, CRLF lines).
pub fn bounce(reporting_mta: &str, original: &Original<'_>, failures: &[Failure], now: i64) -> Vec<u8> {
    let boundary = format!("{}/{}", original.queue_id, reporting_mta);
    let mut m = String::new();
    let _ = write!(
        m,
        "From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n\
         To: <{to}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}.bounce@{reporting_mta}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Notification\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         This is the mail system at host {reporting_mta}.\r\n\
         \r\n\
         Your message could not be delivered to one or more recipients.\r\n\
         \r\n",
        to = clean(original.from),
        date = rfc2822(now),
        id = original.queue_id,
    );
    for f in failures {
        let _ = write!(m, "<{}>: {}\r\n", clean(&f.recipient), clean(&f.diagnostic));
    }
    let _ = write!(
        m,
        "\r\n--{boundary}\r\n\
         Content-Description: Delivery report\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {reporting_mta}\r\n\
         X-Mx6-Queue-ID: {id}\r\n\
         Arrival-Date: {arrival}\r\n",
        id = original.queue_id,
        arrival = rfc2822(original.arrival),
    );
    for f in failures {
        let _ = write!(m, "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\n", clean(&f.recipient), clean(&f.status));
        if let Some(r) = &f.remote_mta {
            let _ = write!(m, "Remote-MTA: dns; {}\r\n", clean(r));
        }
        let kind = if f.remote_mta.is_some() { "smtp" } else { "x-mx6" };
        let _ = write!(m, "Diagnostic-Code: {kind}; {}\r\n", clean(&f.diagnostic));
    }
    let _ = write!(m, "\r\n--{boundary}\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n");
    let mut out = m.into_bytes();
    out.extend_from_slice(mx6_message::header_section(original.message));
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_structure() {
        let msg = b"From: a@x.test\r\nSubject: hi\r\n\r\nsecret body\r\n";
        let b = bounce(
            "mx.test",
            &Original { queue_id: "q1", from: "a@x.test", arrival: 0, message: msg },
            &[Failure {
                recipient: "b@y.test".into(),
                status: "5.1.1".into(),
                remote_mta: Some("mx.y.test".into()),
                diagnostic: "550 5.1.1 no such user".into(),
            }],
            0,
        );
        let t = String::from_utf8(b).unwrap();
        assert!(t.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(t.contains("Final-Recipient: rfc822; b@y.test\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.y.test\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
        assert!(t.contains("Subject: hi\r\n"));
        assert!(!t.contains("secret body"));
        assert!(t.ends_with("--q1/mx.test--\r\n"));
    }
}
