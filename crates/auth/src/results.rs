//! The Authentication-Results header (RFC 8601) and the removal of forged ones.
//!
//! Our header names every check made: `iprev` with `smtp.remote-ip` (§2.7.3),
//! `spf` for MAIL FROM and HELO (§2.7.2), `dkim` per signature with `header.d`,
//! `header.s` and the first bytes of `header.b` (§2.7.1, RFC 6008), `dmarc`
//! with `header.from` (RFC 7489 §11.2), and `auth` for submissions (§2.7.4).
//! Incoming headers that carry our authserv-id are removed before ours is
//! added (§5), so a sender cannot pre-fill our verdicts.

use std::fmt::Write;
use std::net::IpAddr;

use mx6_policy::inbound::{AuthResult, ClientFacts, DmarcPolicy, MessageFacts, SpfFacts};

/// One DKIM signature's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimSummary {
    pub result: AuthResult,
    pub domain: String,
    pub selector: String,
    /// First bytes of the signature, for `header.b` (RFC 6008).
    pub b: Vec<u8>,
}

/// Everything the header reports; `None` means "not checked".
#[derive(Debug, Default)]
pub struct ResultsInput<'a> {
    pub authserv_id: &'a str,
    pub ip: Option<IpAddr>,
    pub client: Option<&'a ClientFacts>,
    /// SPF facts with the envelope sender (empty for the null sender) and HELO.
    pub spf: Option<(&'a SpfFacts, &'a str, &'a str)>,
    pub message: Option<(&'a MessageFacts, &'a [DkimSummary])>,
    pub auth_user: Option<&'a str>,
}

/// The header field, folded, ending in CRLF.
pub fn results(r: &ResultsInput<'_>) -> String {
    let mut items: Vec<String> = Vec::new();
    if let Some(user) = r.auth_user {
        items.push(format!("auth=pass smtp.auth={}", pvalue(user)));
    }
    if let (Some(c), Some(ip)) = (r.client, r.ip) {
        let mut s = format!("iprev={}", c.iprev.as_str());
        if let Some(name) = c.confirmed_name.as_deref().or(c.ptr_names.first().map(String::as_str)) {
            let _ = write!(s, " ({})", comment(name));
        }
        let _ = write!(s, " smtp.remote-ip={}", ip);
        items.push(s);
    }
    if let Some((spf, sender, helo)) = r.spf {
        if !sender.is_empty() {
            items.push(format!("spf={} smtp.mailfrom={}", spf.result.as_str(), pvalue(sender)));
        }
        if !helo.is_empty() {
            items.push(format!("spf={} smtp.helo={}", spf.helo.as_str(), pvalue(helo)));
        }
    }
    if let Some((m, sigs)) = r.message {
        if sigs.is_empty() {
            items.push("dkim=none".into());
        }
        for s in sigs {
            let mut t = format!("dkim={}", s.result.as_str());
            if !s.domain.is_empty() {
                let _ = write!(t, " header.d={} header.s={}", pvalue(&s.domain), pvalue(&s.selector));
            }
            if !s.b.is_empty() {
                let _ = write!(t, " header.b={}", base64_prefix(&s.b));
            }
            items.push(t);
        }
        let mut t = format!("dmarc={}", m.dmarc.as_str());
        if m.dmarc_policy != DmarcPolicy::None || m.dmarc == AuthResult::Fail {
            let _ = write!(t, " (p={})", m.dmarc_policy.as_str());
        }
        if !m.dmarc_domain.is_empty() {
            let _ = write!(t, " header.from={}", pvalue(&m.dmarc_domain));
        }
        items.push(t);
    }
    let mut h = format!("Authentication-Results: {}", r.authserv_id);
    if items.is_empty() {
        h.push_str("; none");
    }
    for i in items {
        h.push_str(";\r\n\t");
        h.push_str(&i);
    }
    h.push_str("\r\n");
    h
}

/// RFC 8601 §2.2 pvalue: written bare when every character is safe, else quoted.
fn pvalue(v: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.@".contains(c) || !c.is_ascii();
    if !v.is_empty() && v.chars().all(safe) && !v.starts_with('@') {
        v.to_string()
    } else {
        let mut s = String::from("\"");
        for c in v.chars().filter(|c| !c.is_control()) {
            if c == '"' || c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
        s
    }
}

fn comment(v: &str) -> String {
    v.chars().filter(|c| !c.is_control() && !"()\\".contains(*c)).collect()
}

fn base64_prefix(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in b.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &x)| acc | (x as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

/// Remove Authentication-Results fields whose authserv-id is ours. Returns
/// `None` when there was nothing to remove.
pub fn strip_forged(data: &[u8], authserv_id: &str) -> Option<Vec<u8>> {
    mx6_message::remove_fields(data, |field| is_ours(field, authserv_id))
}

/// The 1-based occurrences among the message's Authentication-Results
/// fields of those whose authserv-id is ours: what a milter asks the MTA to
/// delete (`SMFIR_CHGHEADER` with an empty value).
pub fn forged_occurrences(data: &[u8], authserv_id: &str) -> Vec<u32> {
    mx6_message::fields(data)
        .filter(|f| f.is("authentication-results"))
        .enumerate()
        .filter(|(_, f)| is_ours(f, authserv_id))
        .map(|(i, _)| i as u32 + 1)
        .collect()
}

fn is_ours(field: &mx6_message::Field<'_>, authserv_id: &str) -> bool {
    if !field.is("authentication-results") {
        return false;
    }
    let value = String::from_utf8_lossy(field.value());
    // Drop CFWS comments before the authserv-id.
    let mut v = value.trim_start();
    while let Some(rest) = v.strip_prefix('(') {
        v = rest.split_once(')').map(|(_, r)| r.trim_start()).unwrap_or("");
    }
    let id: String = v.chars().take_while(|c| !c.is_whitespace() && *c != ';' && *c != '(').collect();
    id.eq_ignore_ascii_case(authserv_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_fields_are_found_by_occurrence() {
        let m = b"Authentication-Results: other.example; spf=pass\r\nAuthentication-Results: (c) MX.test; dkim=pass\r\nSubject: x\r\nAuthentication-Results: mx.test; spf=pass\r\n\r\nAuthentication-Results: mx.test\r\n";
        assert_eq!(forged_occurrences(m, "mx.test"), [2, 3], "the body does not count");
        assert!(forged_occurrences(b"Subject: x\r\n\r\n", "mx.test").is_empty());
    }

    #[test]
    fn header_lists_every_check() {
        let client = ClientFacts { iprev: AuthResult::Pass, confirmed_name: Some("mail.example.com".into()), ..Default::default() };
        let spf = SpfFacts { result: AuthResult::Pass, domain: "example.com".into(), helo: AuthResult::None };
        let m = MessageFacts {
            dkim: AuthResult::Pass,
            dmarc: AuthResult::Pass,
            dmarc_domain: "example.com".into(),
            dmarc_policy: DmarcPolicy::Reject,
        };
        let sigs =
            [DkimSummary { result: AuthResult::Pass, domain: "example.com".into(), selector: "s1".into(), b: vec![1, 2, 3, 4, 5, 6] }];
        let h = results(&ResultsInput {
            authserv_id: "mx.test",
            ip: Some("2001:db8::1".parse().unwrap()),
            client: Some(&client),
            spf: Some((&spf, "a b@example.com", "mail.example.com")),
            message: Some((&m, &sigs)),
            auth_user: None,
        });
        assert_eq!(
            h,
            "Authentication-Results: mx.test;\r\n\tiprev=pass (mail.example.com) smtp.remote-ip=2001:db8::1;\r\n\t\
             spf=pass smtp.mailfrom=\"a b@example.com\";\r\n\tspf=none smtp.helo=mail.example.com;\r\n\t\
             dkim=pass header.d=example.com header.s=s1 header.b=AQIDBAUG;\r\n\tdmarc=pass (p=reject) header.from=example.com\r\n"
        );
        assert_eq!(results(&ResultsInput { authserv_id: "mx.test", ..Default::default() }), "Authentication-Results: mx.test; none\r\n");
    }

    #[test]
    fn forged_results_with_our_id_are_removed() {
        let msg = b"Authentication-Results: MX.test;\r\n\tspf=pass\r\nAuthentication-Results: other.example; dkim=pass\r\n\
                    Authentication-Results: (c) mx.test; dkim=pass\r\nSubject: x\r\n\r\nAuthentication-Results: mx.test; body\r\n";
        let out = strip_forged(msg, "mx.test").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Authentication-Results: other.example; dkim=pass\r\nSubject: x\r\n\r\nAuthentication-Results: mx.test; body\r\n"
        );
        assert!(strip_forged(b"Subject: x\r\n\r\nbody", "mx.test").is_none());
    }
}
