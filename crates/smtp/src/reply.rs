//! SMTP replies: the one place where reply codes and texts are written.
//!
//! Every reply carries an RFC 3463 enhanced status code (RFC 2034); policy codes
//! follow RFC 7372. Basic codes and their meaning follow RFC 5321 §4.2 and §4.3.2.
//! Texts never echo raw client input beyond what was validated, so a reply line
//! can not be used to inject CR/LF.

use std::borrow::Cow;
use std::fmt;

/// One (possibly multi-line) SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code, e.g. "5.7.1".
    pub status: Cow<'static, str>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        Reply { code, status: Cow::Borrowed(status), lines: vec![sanitize(text.into())] }
    }

    /// A reply whose first line has no enhanced code (the 220 greeting, EHLO lines).
    fn plain(code: u16, lines: Vec<String>) -> Reply {
        Reply { code, status: Cow::Borrowed(""), lines }
    }

    /// A reply a filter chose (a milter's `SMFIR_REPLYCODE`): `550 5.7.1 text`,
    /// or several lines `550-5.7.1 first` … `550 5.7.1 last`. The code must be
    /// a 4xx or 5xx one and the same on every line; an enhanced code is kept
    /// when it is well-formed and agrees with the code's class, else
    /// `default_status` is used. Line framing is sanitized, so the text can
    /// never add reply lines of its own.
    pub fn custom(text: &str, default_status: &'static str) -> Option<Reply> {
        let raw: Vec<&str> = text.split('\n').map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty()).collect();
        let first = raw.first()?;
        let code: u16 = first.get(..3)?.parse().ok().filter(|c| (400..600).contains(c))?;
        let mut status: Option<String> = None;
        let mut lines = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            if l.get(..3) != first.get(..3) || !matches!(l.as_bytes().get(3), None | Some(b' ' | b'-')) {
                return None;
            }
            let mut rest = l.get(4..).unwrap_or("").trim_start();
            if let Some(e) = rest.split(' ').next().filter(|e| is_enhanced(e, code)) {
                if i == 0 {
                    status = Some(e.to_string());
                }
                rest = rest[e.len()..].trim_start();
            }
            lines.push(sanitize(rest.chars().filter(|c| !c.is_control()).collect()));
        }
        let status = status.map(Cow::Owned).unwrap_or(Cow::Borrowed(default_status));
        Some(Reply { code, status, lines })
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// First text line, for logs.
    pub fn text(&self) -> &str {
        self.lines.first().map(String::as_str).unwrap_or("")
    }

    /// Wire form, CRLF-terminated lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    /// Append the reply as sent on the wire to `out`, reserving its length
    /// once (a reply is written for every command).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let n = self.lines.len().max(1);
        out.reserve(self.lines.iter().map(|l| l.len()).sum::<usize>() + n * (8 + self.status.len()));
        for i in 0..n {
            let c = self.code;
            match c {
                100..=999 => out.extend_from_slice(&[b'0' + (c / 100) as u8, b'0' + (c / 10 % 10) as u8, b'0' + (c % 10) as u8]),
                _ => out.extend_from_slice(c.to_string().as_bytes()),
            }
            out.push(if i + 1 == n { b' ' } else { b'-' });
            if !self.status.is_empty() {
                out.extend_from_slice(self.status.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(self.lines.get(i).map(String::as_str).unwrap_or("").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.lines.len().max(1);
        for i in 0..n {
            let sep = if i + 1 == n { ' ' } else { '-' };
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            if self.status.is_empty() {
                write!(f, "{}{}{}\r\n", self.code, sep, text)?;
            } else {
                write!(f, "{}{}{} {}\r\n", self.code, sep, self.status, text)?;
            }
        }
        Ok(())
    }
}

/// `x.y.z` with the class of `code` (RFC 3463 §2).
fn is_enhanced(e: &str, code: u16) -> bool {
    let p: Vec<&str> = e.split('.').collect();
    p.len() == 3
        && p.iter().all(|x| !x.is_empty() && x.len() <= 3 && x.bytes().all(|b| b.is_ascii_digit()))
        && p[0] == (code / 100).to_string()
}

/// Strip anything that could break the reply framing.
fn sanitize(s: String) -> String {
    if s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        s.chars().map(|c| if c == '\r' || c == '\n' || c == '\0' { ' ' } else { c }).collect()
    } else {
        s
    }
}

// ---- connection ---------------------------------------------------------------

/// RFC 5321 §4.2: 220 greeting. The hostname comes from configuration.
pub fn greeting(hostname: &str) -> Reply {
    Reply::plain(220, vec![format!("{hostname} ESMTP mx6")])
}

/// RFC 5321 §4.1.1.10: the answer to QUIT.
pub fn closing(hostname: &str) -> Reply {
    Reply::new(221, "2.0.0", format!("{hostname} closing connection"))
}

pub fn service_unavailable(hostname: &str) -> Reply {
    Reply::new(421, "4.3.2", format!("{hostname} service shutting down, closing connection"))
}

pub fn too_many_sessions(hostname: &str) -> Reply {
    Reply::new(421, "4.7.0", format!("{hostname} too many concurrent sessions, try again later"))
}

pub fn timeout(hostname: &str) -> Reply {
    Reply::new(421, "4.4.2", format!("{hostname} timeout exceeded, closing connection"))
}

pub fn too_many_errors(hostname: &str) -> Reply {
    Reply::new(421, "4.7.0", format!("{hostname} too many errors, closing connection"))
}

pub fn not_smtp(hostname: &str) -> Reply {
    Reply::new(421, "4.7.0", format!("{hostname} non-SMTP command, closing connection"))
}

// ---- greeting and informational ------------------------------------------------

pub fn helo(hostname: &str, client: &str) -> Reply {
    Reply::plain(250, vec![format!("{hostname} Hello {client}")])
}

pub fn ehlo(hostname: &str, client: &str, extensions: &[String]) -> Reply {
    let mut lines = vec![format!("{hostname} Hello {client}")];
    lines.extend(extensions.iter().cloned());
    Reply::plain(250, lines)
}

pub fn ok() -> Reply {
    Reply::new(250, "2.0.0", "Ok")
}
pub fn sender_ok() -> Reply {
    Reply::new(250, "2.1.0", "Sender ok")
}
pub fn recipient_ok() -> Reply {
    Reply::new(250, "2.1.5", "Recipient ok")
}
pub fn reset_ok() -> Reply {
    Reply::new(250, "2.0.0", "Reset state")
}
pub fn queued(queue_id: &str) -> Reply {
    Reply::new(250, "2.0.0", format!("Ok: queued as {queue_id}"))
}
pub fn chunk_ok(octets: u64) -> Reply {
    Reply::new(250, "2.0.0", format!("{octets} octets received"))
}
/// RFC 5321 §3.5.3: VRFY is not answered with user data.
pub fn vrfy() -> Reply {
    Reply::new(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
}
pub fn help() -> Reply {
    Reply::new(214, "2.0.0", "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS")
}
pub fn start_data() -> Reply {
    Reply::plain(354, vec!["End data with <CR><LF>.<CR><LF>".into()])
}
pub fn ready_tls() -> Reply {
    Reply::new(220, "2.0.0", "Ready to start TLS")
}

// ---- syntax and sequence (RFC 5321 §4.3.2, RFC 3463 x.5.x) ---------------------

pub fn unknown_command() -> Reply {
    Reply::new(500, "5.5.2", "Error: command not recognized")
}
pub fn line_too_long() -> Reply {
    Reply::new(500, "5.5.2", "Error: command line too long")
}
pub fn bad_command_chars() -> Reply {
    Reply::new(500, "5.5.2", "Error: NUL or bare CR in command")
}
pub fn syntax(what: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Syntax: {what}"))
}
pub fn bad_helo() -> Reply {
    Reply::new(501, "5.5.4", "Syntax: EHLO hostname or address literal")
}
pub fn need_helo() -> Reply {
    Reply::new(503, "5.5.1", "Error: send HELO/EHLO first")
}
pub fn nested_mail() -> Reply {
    Reply::new(503, "5.5.1", "Error: nested MAIL command")
}
/// After a 554 greeting (RFC 5321 §3.1).
pub fn no_service() -> Reply {
    Reply::new(503, "5.5.1", "Error: no SMTP service here")
}
pub fn need_mail() -> Reply {
    Reply::new(503, "5.5.1", "Error: need MAIL command")
}
pub fn need_rcpt() -> Reply {
    Reply::new(503, "5.5.1", "Error: need RCPT command")
}
/// RFC 2920 §3.1: DATA after all recipients were refused.
pub fn no_valid_recipients() -> Reply {
    Reply::new(554, "5.5.1", "Error: no valid recipients")
}
pub fn bdat_data_mix() -> Reply {
    Reply::new(503, "5.5.1", "Error: DATA and BDAT can not be mixed in one transaction")
}
pub fn tls_already_active() -> Reply {
    Reply::new(503, "5.5.1", "Error: TLS already active")
}
pub fn tls_not_available() -> Reply {
    Reply::new(454, "4.7.0", "TLS not available")
}
pub fn bad_parameter(param: &str) -> Reply {
    Reply::new(555, "5.5.4", format!("Unsupported parameter {param}"))
}
pub fn bad_address(detail: &str) -> Reply {
    Reply::new(501, "5.1.3", format!("Bad address syntax: {detail}"))
}
pub fn bad_sender_syntax(detail: &str) -> Reply {
    Reply::new(501, "5.1.7", format!("Bad sender address syntax: {detail}"))
}
/// RFC 6531 §3.7.4.1.
/// RFC 8689 §4.1: REQUIRETLS is offered only once the session is under TLS.
pub fn requiretls_needs_tls() -> Reply {
    Reply::new(530, "5.7.10", "REQUIRETLS needs a TLS session (STARTTLS first)")
}
pub fn needs_smtputf8() -> Reply {
    Reply::new(553, "5.6.7", "Address requires SMTPUTF8")
}
pub fn too_many_recipients() -> Reply {
    Reply::new(452, "4.5.3", "Error: too many recipients")
}
pub fn auth_not_available() -> Reply {
    Reply::new(503, "5.5.1", "Error: authentication not enabled")
}

// ---- SMTP AUTH (RFC 4954) ---------------------------------------------------------

/// A SASL challenge: `334 <base64>`, no enhanced code (RFC 4954 §4).
pub fn auth_challenge(b64: &str) -> Reply {
    Reply::plain(334, vec![b64.to_string()])
}
pub fn auth_ok() -> Reply {
    Reply::new(235, "2.7.0", "Authentication successful")
}
pub fn auth_invalid() -> Reply {
    Reply::new(535, "5.7.8", "Error: authentication credentials invalid")
}
pub fn auth_temporary() -> Reply {
    Reply::new(454, "4.7.0", "Temporary authentication failure, try again later")
}
/// Every slot for checking credentials is busy (an AUTH flood).
pub fn auth_busy() -> Reply {
    Reply::new(454, "4.7.0", "Authentication temporarily unavailable (too many attempts at once), try again later")
}
pub fn auth_throttled() -> Reply {
    Reply::new(454, "4.7.0", "Too many failed authentications from your network, try again later")
}
pub fn auth_encryption_required() -> Reply {
    Reply::new(538, "5.7.11", "Encryption required for requested authentication mechanism")
}
pub fn auth_required() -> Reply {
    Reply::new(530, "5.7.0", "Authentication required")
}
pub fn auth_already() -> Reply {
    Reply::new(503, "5.5.1", "Error: already authenticated")
}
pub fn auth_in_transaction() -> Reply {
    Reply::new(503, "5.5.1", "Error: AUTH not allowed during a mail transaction")
}
pub fn auth_mechanism() -> Reply {
    Reply::new(504, "5.5.4", "Unrecognized authentication type; use PLAIN or LOGIN")
}
pub fn auth_cancelled() -> Reply {
    Reply::new(501, "5.0.0", "Authentication cancelled")
}
pub fn auth_bad_base64() -> Reply {
    Reply::new(501, "5.5.2", "Cannot Base64-decode client response")
}
/// RFC 4954 §5 / RFC 6409 §6.1: an authenticated user sending as someone else.
pub fn sender_not_owned() -> Reply {
    Reply::new(553, "5.7.1", "Sender address rejected: not owned by the authenticated user")
}

// ---- message content --------------------------------------------------------

/// RFC 1870: message size exceeds fixed maximum.
pub fn message_too_big() -> Reply {
    Reply::new(552, "5.3.4", "Message size exceeds fixed limit")
}
/// SMTP smuggling defense: only CRLF is a line ending inside DATA/BDAT.
pub fn bare_newline() -> Reply {
    Reply::new(550, "5.5.2", "Error: bare <CR> or <LF> in message data; lines must end with <CR><LF>")
}
/// RFC 5321 §4.5.3.1.6: text lines are at most 1000 octets including CRLF.
pub fn data_line_too_long() -> Reply {
    Reply::new(550, "5.6.0", "Error: message line too long")
}
pub fn nul_in_data() -> Reply {
    Reply::new(550, "5.6.0", "Error: NUL byte in message data")
}
pub fn storage_failure() -> Reply {
    Reply::new(451, "4.3.0", "Error: queue file write error, try again later")
}
/// RFC 3463 4.3.1, mail system full: the spool could not take the message.
pub fn storage_full() -> Reply {
    Reply::new(452, "4.3.1", "Error: insufficient system storage, try again later")
}
/// At MAIL, before any data: the spool's free space is below `queue.min_free`
/// (RFC 5321 §4.5.3.1.10, RFC 3463 4.3.1).
pub fn insufficient_storage() -> Reply {
    Reply::new(452, "4.3.1", "Insufficient system storage")
}
// ---- recipients and policy ------------------------------------------------------

pub fn unknown_user() -> Reply {
    Reply::new(550, "5.1.1", "Recipient address rejected: user unknown")
}
pub fn relay_denied() -> Reply {
    Reply::new(554, "5.7.1", "Relay access denied")
}
/// Percent hack, bang path or `@` inside the local part.
pub fn unroutable_address() -> Reply {
    Reply::new(550, "5.1.3", "Recipient address rejected: routing characters (% ! @) in the local part are not accepted")
}
pub fn access_denied() -> Reply {
    Reply::new(554, "5.7.1", "Access denied")
}

// ---- inbound authentication policy (RFC 7372 codes) -------------------------------

/// RFC 7372 §3.3: the client has no PTR record.
pub fn no_ptr(client: &str) -> Reply {
    Reply::new(550, "5.7.25", format!("Client address [{client}] has no reverse DNS (PTR) record"))
}
/// RFC 7372 §3.3: the PTR name does not resolve back to the client address.
pub fn fcrdns_mismatch(client: &str) -> Reply {
    Reply::new(550, "5.7.25", format!("Reverse DNS of [{client}] does not resolve back to it (FCrDNS)"))
}
/// A reverse DNS lookup failed temporarily (timeout, SERVFAIL).
pub fn reverse_dns_temp(client: &str) -> Reply {
    Reply::new(451, "4.7.25", format!("Reverse DNS of [{client}] could not be checked now, try again later"))
}
/// RFC 7372 §3.2: SPF validation failed (RFC 7208 §8.4).
pub fn spf_fail(domain: &str, client: &str) -> Reply {
    Reply::new(550, "5.7.23", format!("SPF of {domain} does not permit sending from [{client}]"))
}
/// RFC 7372 §3.1: neither SPF nor DKIM passed.
pub fn spf_or_dkim_required(client: &str) -> Reply {
    Reply::new(550, "5.7.26", format!("Unauthenticated mail from [{client}]: neither SPF nor DKIM passes"))
}
/// SPF or DKIM could not be evaluated now.
pub fn auth_temp() -> Reply {
    Reply::new(451, "4.7.26", "SPF/DKIM could not be checked now, try again later")
}
/// RFC 7489 §6.6.3: the From domain publishes p=reject and DMARC failed.
pub fn dmarc_reject(domain: &str) -> Reply {
    Reply::new(550, "5.7.1", format!("Rejected by DMARC policy of {domain}"))
}
pub fn dmarc_temp(domain: &str) -> Reply {
    Reply::new(451, "4.7.1", format!("DMARC of {domain} could not be checked now, try again later"))
}
/// RFC 5782: the client is listed on DNS blocklists whose score reaches the threshold.
pub fn dnsbl(client: &str, zones: &str) -> Reply {
    Reply::new(554, "5.7.1", format!("Service unavailable; client [{client}] blocked using {zones}"))
}
pub fn dnsbl_temp(client: &str) -> Reply {
    Reply::new(451, "4.7.1", format!("DNS blocklists for [{client}] could not be checked now, try again later"))
}

// ---- abuse defenses: greylisting, rate limits, early talkers ----

/// A greylisted triplet (RFC 6647 §2.1: a temporary failure an MTA retries).
pub fn greylisted(retry_in_secs: u64) -> Reply {
    Reply::new(451, "4.7.1", format!("Greylisted, please try again in {retry_in_secs} seconds"))
}
/// At connect: too many connections from the client's network (or its
/// aggregate is escalated).
pub fn rate_limited_connect(hostname: &str, prefix: &str) -> Reply {
    Reply::new(421, "4.7.0", format!("{hostname} too many connections from {prefix}, try again later"))
}
/// MAIL or RCPT over a message or recipient rate.
pub fn rate_limited(prefix: &str) -> Reply {
    Reply::new(451, "4.7.1", format!("Rate limit exceeded for {prefix}, try again later"))
}
/// STARTTLS over the TLS session rate.
pub fn tls_rate_limited(prefix: &str) -> Reply {
    Reply::new(454, "4.7.0", format!("TLS not available now: too many TLS sessions from {prefix}, try again later"))
}
/// The state store (greylist, counters) could not be reached.
pub fn state_unavailable() -> Reply {
    Reply::new(451, "4.3.0", "Temporary local problem, try again later")
}
pub fn state_unavailable_connect(hostname: &str) -> Reply {
    Reply::new(421, "4.3.0", format!("{hostname} temporary local problem, try again later"))
}
/// The client spoke before the greeting ended (postscreen's pregreet test).
pub fn early_talker() -> Reply {
    Reply::new(521, "5.5.1", "Protocol error: you talked before the greeting")
}

// ---- content filters ----

/// spamd scored the message at or above `content_filter.reject_score`.
pub fn spam(score: f64) -> Reply {
    Reply::new(550, "5.7.1", format!("Message refused as spam (score {score:.1})"))
}
pub fn milter_reject() -> Reply {
    Reply::new(550, "5.7.1", "Message refused by a content filter")
}
pub fn milter_tempfail() -> Reply {
    Reply::new(451, "4.7.1", "Message deferred by a content filter, try again later")
}
/// A milter's reject of a command (Postfix's words).
pub fn milter_command_reject() -> Reply {
    Reply::new(550, "5.7.1", "Command rejected")
}
/// A milter's tempfail of a command.
pub fn milter_command_tempfail() -> Reply {
    Reply::new(451, "4.7.1", "Service unavailable - try again later")
}
/// A milter that failed, with `on_failure = "reject"`.
pub fn filter_failed_reject() -> Reply {
    Reply::new(550, "5.5.0", "Service unavailable")
}
/// A milter asked to end the session (`SMFIR_SHUTDOWN`).
pub fn milter_shutdown(hostname: &str) -> Reply {
    Reply::new(421, "4.7.0", format!("{hostname} Server closing connection"))
}
/// A content filter (spamd, a milter) could not be asked.
pub fn filter_unavailable() -> Reply {
    Reply::new(451, "4.7.1", "Content filter unavailable, try again later")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_bytes_are_the_display_form() {
        let multi = Reply { code: 250, status: Cow::Borrowed(""), lines: vec!["mx.test".into(), "PIPELINING".into(), "SIZE 100".into()] };
        for r in [multi, Reply::new(550, "5.7.1", "no"), Reply { code: 220, status: Cow::Borrowed(""), lines: vec![] }] {
            let mut out = b"before".to_vec();
            r.write_to(&mut out);
            assert_eq!(out, [b"before".as_slice(), r.to_string().as_bytes()].concat());
            assert_eq!(r.to_bytes(), r.to_string().into_bytes());
        }
        assert_eq!(Reply::new(550, "5.7.1", "no").to_bytes(), b"550 5.7.1 no\r\n");
    }

    #[test]
    fn custom_replies_from_filters() {
        let r = Reply::custom("550 5.7.0 no thanks", "5.7.1").unwrap();
        assert_eq!(r.to_string(), "550 5.7.0 no thanks\r\n");
        let r = Reply::custom("451 try later", "4.7.1").unwrap();
        assert_eq!(r.to_string(), "451 4.7.1 try later\r\n");
        let r = Reply::custom("550-5.7.1 first\r\n550 5.7.1 second", "5.7.1").unwrap();
        assert_eq!(r.to_string(), "550-5.7.1 first\r\n550 5.7.1 second\r\n");
        assert!(Reply::custom("250 fine", "5.7.1").is_none(), "not a refusal");
        assert!(Reply::custom("550 a\r\n451 b", "5.7.1").is_none(), "codes must agree");
        assert!(Reply::custom("junk", "5.7.1").is_none());
        let r = Reply::custom("550 4.7.1 wrong class", "5.7.1").unwrap();
        assert_eq!(r.status, "5.7.1");
        assert_eq!(
            Reply::custom("550 5.7.1 a\x00b\x07c", "5.7.1").unwrap().to_string(),
            "550 5.7.1 abc\r\n",
            "control characters are dropped"
        );
    }

    #[test]
    fn multi_line_uses_dash_continuation() {
        let r = ehlo("mx.test", "client", &["PIPELINING".into(), "8BITMIME".into()]);
        assert_eq!(r.to_string(), "250-mx.test Hello client\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
    }

    #[test]
    fn enhanced_code_is_written() {
        assert_eq!(relay_denied().to_string(), "554 5.7.1 Relay access denied\r\n");
    }

    #[test]
    fn text_can_not_break_framing() {
        let r = Reply::new(250, "2.0.0", "a\r\n250 fake");
        assert_eq!(r.to_string(), "250 2.0.0 a  250 fake\r\n");
    }
}
