//! The Received trace header (RFC 5321 §4.4, "with" keywords from RFC 3848 and
//! RFC 6531). IPv6 clients are written `[IPv6:2001:db8::1]` (§4.1.3); IPv4-mapped
//! clients as IPv4. The HELO name is the client's claim and is cleaned so it can
//! not end the header or open a comment.

use std::net::IpAddr;

use crate::address::address_literal;

pub struct Received<'a> {
    /// Leave out the `from` clause (client name and address) for privacy.
    pub hide_client: bool,
    pub helo: &'a str,
    /// Verified reverse DNS name, when known.
    pub rdns: Option<&'a str>,
    pub client: IpAddr,
    pub hostname: &'a str,
    pub protocol: &'a str,
    pub queue_id: &'a str,
    /// e.g. "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384".
    pub tls: Option<&'a str>,
    /// Written only for single-recipient messages (it would disclose Bcc).
    pub single_rcpt: Option<&'a str>,
    pub date: chrono::DateTime<chrono::Utc>,
}

fn clean(s: &str) -> String {
    let c: String = s.chars().map(|c| if c.is_control() || c.is_whitespace() || "();\\".contains(c) { '_' } else { c }).take(255).collect();
    if c.is_empty() {
        "unknown".into()
    } else {
        c
    }
}

impl Received<'_> {
    /// The header field with its CRLF, folded over several lines.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        // One string, sized once: a header is rendered for every message.
        let mut h = String::with_capacity(256 + self.tls.map_or(0, str::len));
        h.push_str("Received: ");
        if !self.hide_client {
            let rdns = self.rdns.map(clean);
            let _ =
                write!(h, "from {} ({} {})\r\n\t", clean(self.helo), rdns.as_deref().unwrap_or("unknown"), address_literal(self.client));
        }
        if let Some(tls) = self.tls {
            let _ = write!(h, "(using {})\r\n\t", clean_comment(tls));
        }
        let _ = write!(h, "by {} (mx6) with {} id {}", self.hostname, self.protocol, self.queue_id);
        if let Some(r) = self.single_rcpt {
            h.push_str("\r\n\tfor <");
            h.extend(r.chars().filter(|c| !matches!(c, '\r' | '\n' | '>')));
            h.push('>');
        }
        let _ = write!(h, ";\r\n\t{}\r\n", self.date.to_rfc2822());
        h
    }
}

fn clean_comment(s: &str) -> String {
    s.chars().map(|c| if c.is_control() || "()\\".contains(c) { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ipv6_client_and_tls() {
        let r = Received {
            hide_client: false,
            helo: "client.example",
            rdns: None,
            client: "2001:db8::1".parse().unwrap(),
            hostname: "mx.test",
            protocol: "ESMTPS",
            queue_id: "0123abc",
            tls: Some("TLSv1.3 with cipher TLS_AES_128_GCM_SHA256"),
            single_rcpt: Some("a@mx.test"),
            date: chrono::Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap(),
        };
        assert_eq!(
            r.render(),
            "Received: from client.example (unknown [IPv6:2001:db8::1])\r\n\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n\tby mx.test (mx6) with ESMTPS id 0123abc\r\n\tfor <a@mx.test>;\r\n\tSat, 28 Nov 2026 12:00:00 +0000\r\n"
        );
    }

    #[test]
    fn helo_can_not_inject() {
        let r = Received {
            hide_client: false,
            helo: "evil)(x;",
            rdns: None,
            client: "::ffff:192.0.2.1".parse().unwrap(),
            hostname: "mx.test",
            protocol: "SMTP",
            queue_id: "q",
            tls: None,
            single_rcpt: None,
            date: chrono::Utc::now(),
        };
        assert!(r.render().starts_with("Received: from evil__x_ (unknown [192.0.2.1])\r\n\tby mx.test (mx6) with SMTP id q;"));
    }
}
