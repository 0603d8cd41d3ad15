//! Delivery status notifications: RFC 3464 `message/delivery-status` inside
//! an RFC 6522 `multipart/report`, one notice per message and kind (failed,
//! delayed, delivered or relayed) covering every recipient of that kind, sent
//! to the envelope sender (never to the null sender, RFC 5321 §6.1).
//!
//! - per-message fields: `Reporting-MTA`, `Original-Envelope-Id` (the sender's
//!   ENVID, RFC 3461 §6.3), `Arrival-Date`;
//! - per-recipient fields: `Original-Recipient` (ORCPT), `Final-Recipient`,
//!   `Action`, `Status`, `Remote-MTA`, `Diagnostic-Code`, `Last-Attempt-Date`,
//!   `Will-Retry-Until` (delay warnings);
//! - the third part: the whole message (`message/rfc822`) for a failure when
//!   the sender said `RET=FULL`, otherwise its header section
//!   (`text/rfc822-headers`, RFC 6522 §4);
//! - for SMTPUTF8 messages the RFC 6533 forms: `message/global-delivery-status`,
//!   `message/global-headers`, `message/global`, and `utf-8` addresses.

use std::fmt::Write as _;

use mx6_smtp::dsn::{NoticeKind, Orcpt, Ret};

/// One recipient that failed (the queue's record of a permanent failure or
/// an expiry, before it becomes a line of a notice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Index of the recipient in its message.
    pub rcpt: usize,
    pub recipient: String,
    /// RFC 3463 status, e.g. `5.1.1`.
    pub status: String,
    /// The remote host that answered, if one did.
    pub remote_mta: Option<String>,
    /// The remote reply (`550 5.1.1 user unknown`) or our own reason.
    pub diagnostic: String,
    /// The diagnostic is an SMTP reply of `remote_mta` (else our own words).
    pub smtp_reply: bool,
}

/// RFC 3464 §2.3.3 `Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }

    /// The NOTIFY condition this action answers (RFC 3461 §4.1).
    pub fn kind(self) -> NoticeKind {
        match self {
            Action::Failed => NoticeKind::Failure,
            Action::Delayed => NoticeKind::Delay,
            Action::Delivered | Action::Relayed | Action::Expanded => NoticeKind::Success,
        }
    }
}

/// One recipient's block of a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub recipient: String,
    pub orcpt: Option<Orcpt>,
    pub action: Action,
    pub status: String,
    pub remote_mta: Option<String>,
    /// `(diagnostic type, text)`: `("smtp", "550 5.1.1 …")` for a remote reply.
    pub diagnostic: Option<(String, String)>,
    /// Unix seconds.
    pub last_attempt: Option<i64>,
    /// Unix seconds; for `delayed`.
    pub will_retry_until: Option<i64>,
}

impl Entry {
    /// The block of a recipient that failed (`Failed`) or is still being
    /// tried (`Delayed`), from what the attempt said.
    pub fn of(f: &Failure, action: Action, orcpt: Option<Orcpt>, now: i64) -> Entry {
        let kind = if f.smtp_reply { "smtp" } else { "x-mx6" };
        Entry {
            recipient: f.recipient.clone(),
            orcpt,
            action,
            status: f.status.clone(),
            remote_mta: f.remote_mta.clone(),
            diagnostic: Some((kind.into(), f.diagnostic.clone())),
            last_attempt: Some(now),
            will_retry_until: None,
        }
    }

    /// The block of a failure.
    pub fn failed(f: &Failure, orcpt: Option<Orcpt>, now: i64) -> Entry {
        Entry::of(f, Action::Failed, orcpt, now)
    }
}

/// What the notice needs to know about the original message.
#[derive(Debug, Clone)]
pub struct Original<'a> {
    pub queue_id: &'a str,
    pub from: &'a str,
    /// Unix seconds.
    pub arrival: i64,
    pub envid: Option<&'a str>,
    pub ret: Option<Ret>,
    pub smtputf8: bool,
    /// The message as queued.
    pub message: &'a [u8],
}

fn rfc2822(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default().to_rfc2822()
}

/// Strip anything that could break a header or a DSN field line.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The address type and address for `Final-Recipient`.
fn final_recipient(addr: &str, utf8: bool) -> String {
    if addr.is_ascii() || !utf8 {
        format!("rfc822; {}", clean(addr))
    } else {
        format!("utf-8; {}", clean(addr))
    }
}

/// The complete notice (headers and body, CRLF lines). `entries` are all of
/// one kind; `notice_id` is the notice's own queue id (its Message-ID and
/// MIME boundary).
pub fn notice(reporting_mta: &str, notice_id: &str, original: &Original<'_>, entries: &[Entry], now: i64) -> Vec<u8> {
    let action = entries.first().map_or(Action::Failed, |e| e.action);
    let utf8 = original.smtputf8;
    let boundary = format!("{notice_id}/{reporting_mta}");
    let (subject, text) = match action {
        Action::Failed => ("Undelivered Mail Returned to Sender", "Your message could not be delivered to one or more recipients."),
        Action::Delayed => (
            "Delayed Mail (still being retried)",
            "Your message could not be delivered yet to one or more recipients.\r\n\
             It will be retried until it is too old; you do not need to send it again.",
        ),
        Action::Delivered | Action::Expanded => {
            ("Successful Mail Delivery Report", "Your message was delivered to the recipients below, as you asked.")
        }
        Action::Relayed => (
            "Successful Mail Delivery Report",
            "Your message was relayed to the recipients below, as you asked.\r\n\
             The next system does not offer delivery notices, so none will follow.",
        ),
    };
    let mut m = String::new();
    let _ = write!(
        m,
        "From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{notice_id}.{kind}@{reporting_mta}>\r\n\
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
         {text}\r\n\
         \r\n",
        to = clean(original.from),
        date = rfc2822(now),
        kind = action.as_str(),
    );
    for e in entries {
        let why = e.diagnostic.as_ref().map(|(_, t)| clean(t)).unwrap_or_else(|| action.as_str().into());
        let _ = write!(m, "<{}>: {}\r\n", clean(&e.recipient), why);
    }
    let status_type = if utf8 { "message/global-delivery-status" } else { "message/delivery-status" };
    let _ = write!(
        m,
        "\r\n--{boundary}\r\n\
         Content-Description: Delivery report\r\n\
         Content-Type: {status_type}\r\n\
         \r\n\
         Reporting-MTA: dns; {reporting_mta}\r\n"
    );
    if let Some(envid) = original.envid {
        let _ = write!(m, "Original-Envelope-Id: {}\r\n", clean(envid));
    }
    let _ = write!(m, "X-Mx6-Queue-ID: {}\r\nArrival-Date: {}\r\n", original.queue_id, rfc2822(original.arrival));
    for e in entries {
        m.push_str("\r\n");
        if let Some(o) = &e.orcpt {
            let _ = write!(m, "Original-Recipient: {}\r\n", clean(&o.field(utf8)));
        }
        let _ = write!(
            m,
            "Final-Recipient: {}\r\nAction: {}\r\nStatus: {}\r\n",
            final_recipient(&e.recipient, utf8),
            e.action.as_str(),
            clean(&e.status)
        );
        if let Some(r) = &e.remote_mta {
            let _ = write!(m, "Remote-MTA: dns; {}\r\n", clean(r));
        }
        if let Some((kind, text)) = &e.diagnostic {
            let _ = write!(m, "Diagnostic-Code: {kind}; {}\r\n", clean(text));
        }
        if let Some(t) = e.last_attempt {
            let _ = write!(m, "Last-Attempt-Date: {}\r\n", rfc2822(t));
        }
        if let Some(t) = e.will_retry_until {
            let _ = write!(m, "Will-Retry-Until: {}\r\n", rfc2822(t));
        }
    }
    let full = action == Action::Failed && original.ret == Some(Ret::Full);
    let (desc, ctype) = match (full, action == Action::Failed, utf8) {
        (true, _, false) => ("Undelivered Message", "message/rfc822"),
        (true, _, true) => ("Undelivered Message", "message/global"),
        (false, true, false) => ("Undelivered Message Headers", "text/rfc822-headers"),
        (false, false, false) => ("Message Headers", "text/rfc822-headers"),
        (false, true, true) => ("Undelivered Message Headers", "message/global-headers"),
        (false, false, true) => ("Message Headers", "message/global-headers"),
    };
    let _ = write!(m, "\r\n--{boundary}\r\nContent-Description: {desc}\r\nContent-Type: {ctype}\r\n\r\n");
    let mut out = m.into_bytes();
    if full {
        out.extend_from_slice(original.message);
        if !original.message.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
    } else {
        out.extend_from_slice(mx6_message::header_section(original.message));
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: a@x.test\r\nSubject: hi\r\n\r\nsecret body\r\n";

    fn original(ret: Option<Ret>, smtputf8: bool) -> Original<'static> {
        Original { queue_id: "q1", from: "a@x.test", arrival: 0, envid: Some("QQ 31"), ret, smtputf8, message: MSG }
    }

    fn failure() -> Failure {
        Failure {
            rcpt: 0,
            recipient: "b@y.test".into(),
            status: "5.1.1".into(),
            remote_mta: Some("mx.y.test".into()),
            diagnostic: "550 5.1.1 no such user".into(),
            smtp_reply: true,
        }
    }

    #[test]
    fn failure_report_structure() {
        let orcpt = Some(Orcpt { addr_type: "rfc822".into(), addr: "B@y.test".into() });
        let b = notice("mx.test", "n1", &original(None, false), &[Entry::failed(&failure(), orcpt, 0)], 0);
        let t = String::from_utf8(b).unwrap();
        assert!(t.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(t.contains("Subject: Undelivered Mail Returned to Sender\r\n"));
        assert!(t.contains("Reporting-MTA: dns; mx.test\r\nOriginal-Envelope-Id: QQ 31\r\n"));
        assert!(t.contains(
            "Original-Recipient: rfc822; B@y.test\r\nFinal-Recipient: rfc822; b@y.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\
             Remote-MTA: dns; mx.y.test\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\nLast-Attempt-Date: "
        ));
        assert!(t.contains("Content-Type: text/rfc822-headers\r\n\r\nFrom: a@x.test\r\nSubject: hi\r\n"));
        assert!(!t.contains("secret body"), "RET not given: headers only");
        assert!(t.ends_with("--n1/mx.test--\r\n"));
    }

    #[test]
    fn ret_full_returns_the_message_and_only_for_failures() {
        let t =
            String::from_utf8(notice("mx.test", "n", &original(Some(Ret::Full), false), &[Entry::failed(&failure(), None, 0)], 0)).unwrap();
        assert!(t.contains("Content-Type: message/rfc822\r\n\r\nFrom: a@x.test\r\nSubject: hi\r\n\r\nsecret body\r\n\r\n--n/"));
        let delayed =
            Entry { action: Action::Delayed, status: "4.4.1".into(), will_retry_until: Some(86400), ..Entry::failed(&failure(), None, 0) };
        let t = String::from_utf8(notice("mx.test", "n", &original(Some(Ret::Full), false), &[delayed], 0)).unwrap();
        assert!(t.contains("Subject: Delayed Mail (still being retried)"));
        assert!(t.contains("Action: delayed\r\nStatus: 4.4.1\r\n"));
        assert!(t.contains("Will-Retry-Until: Fri, 2 Jan 1970 00:00:00 +0000\r\n"));
        assert!(!t.contains("secret body"), "a delay warning carries the headers only");
    }

    #[test]
    fn smtputf8_messages_get_the_global_forms() {
        let f = Failure { recipient: "jörg@y.test".into(), ..failure() };
        let orcpt = Some(Orcpt { addr_type: "utf-8".into(), addr: "Jörg@y.test".into() });
        let t = String::from_utf8(notice("mx.test", "n", &original(None, true), &[Entry::failed(&f, orcpt, 0)], 0)).unwrap();
        assert!(t.contains("Content-Type: message/global-delivery-status\r\n"));
        assert!(t.contains("Original-Recipient: utf-8; Jörg@y.test\r\nFinal-Recipient: utf-8; jörg@y.test\r\n"));
        assert!(t.contains("Content-Type: message/global-headers\r\n"));
    }
}
