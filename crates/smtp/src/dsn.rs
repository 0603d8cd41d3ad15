//! The DSN extension's parameters (RFC 3461): `RET` and `ENVID` on MAIL,
//! `NOTIFY` and `ORCPT` on RCPT, with the xtext encoding of RFC 3461 §4 and
//! the `utf-8` address type of RFC 6533 §3 (`\x{HEX}` escapes).
//!
//! Parsing is strict: a malformed value, a control character after decoding,
//! a value over the RFC's length limit or a parameter given twice is a syntax
//! error, answered `501 5.5.4` by the session. The types serialize into the
//! spool record, so what a sender asked for survives a restart.

use serde::{Deserialize, Serialize};

/// `RET`: what a failure notice carries of the message (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Ret {
    Full,
    Hdrs,
}

impl Ret {
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

/// `NOTIFY` (RFC 3461 §4.1): the notices a recipient asked for. All false is
/// `NEVER`. A recipient without the parameter has `None` where this is held:
/// then failures and delays are reported, success is not (§4.1 leaves the
/// default to the MTA; this is Postfix's and Sendmail's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    pub const NEVER: Notify = Notify { success: false, failure: false, delay: false };

    /// The parameter's value: `NEVER` or a comma list.
    pub fn to_param(self) -> String {
        let mut v = Vec::new();
        if self.success {
            v.push("SUCCESS");
        }
        if self.failure {
            v.push("FAILURE");
        }
        if self.delay {
            v.push("DELAY");
        }
        if v.is_empty() {
            "NEVER".into()
        } else {
            v.join(",")
        }
    }

    /// Parse `NEVER` or `SUCCESS,FAILURE,DELAY` (any subset, any case).
    pub fn parse(v: &str) -> Result<Notify, &'static str> {
        if v.eq_ignore_ascii_case("NEVER") {
            return Ok(Notify::NEVER);
        }
        let mut n = Notify::NEVER;
        for part in v.split(',') {
            match part.to_ascii_uppercase().as_str() {
                "SUCCESS" => n.success = true,
                "FAILURE" => n.failure = true,
                "DELAY" => n.delay = true,
                "NEVER" => return Err("NOTIFY=NEVER can not be combined with other values"),
                _ => return Err("NOTIFY=NEVER or a list of SUCCESS, FAILURE, DELAY"),
            }
        }
        Ok(n)
    }

    /// What a recipient that gave `notify` (or none) wants for `kind`.
    pub fn wants(notify: Option<Notify>, kind: NoticeKind) -> bool {
        match (notify, kind) {
            (None, NoticeKind::Success) => false,
            (None, _) => true,
            (Some(n), NoticeKind::Success) => n.success,
            (Some(n), NoticeKind::Failure) => n.failure,
            (Some(n), NoticeKind::Delay) => n.delay,
        }
    }
}

impl From<Notify> for String {
    fn from(n: Notify) -> String {
        n.to_param()
    }
}

impl TryFrom<String> for Notify {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Notify, &'static str> {
        Notify::parse(&s)
    }
}

/// The three conditions a recipient can ask to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// Delivered, or relayed to a host that does not speak DSN.
    Success,
    Failure,
    Delay,
}

/// `ORCPT`: the recipient as the sender first addressed it (RFC 3461 §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orcpt {
    /// `rfc822`, or `utf-8` (RFC 6533); kept as given, compared case-insensitively.
    pub addr_type: String,
    /// The address, decoded.
    pub addr: String,
}

impl Orcpt {
    pub fn is_utf8_type(&self) -> bool {
        self.addr_type.eq_ignore_ascii_case("utf-8")
    }

    /// The parameter's value, encoded again for the next hop.
    pub fn to_param(&self) -> String {
        if self.is_utf8_type() {
            format!("{};{}", self.addr_type, utf8_xtext(&self.addr))
        } else {
            format!("{};{}", self.addr_type, xtext(&self.addr))
        }
    }

    /// For an `Original-Recipient` field: the decoded address when it can be
    /// written there (ASCII, or a UTF-8 report), else its xtext form.
    pub fn field(&self, utf8_report: bool) -> String {
        if self.addr.is_ascii() || utf8_report {
            format!("{}; {}", self.addr_type, self.addr)
        } else {
            format!("{}; {}", self.addr_type, utf8_xtext(&self.addr))
        }
    }

    fn parse(v: &str, utf8_allowed: bool) -> Result<Orcpt, &'static str> {
        const ERR: &str = "ORCPT=addr-type;xtext";
        if v.len() > 500 {
            return Err("ORCPT is longer than 500 characters");
        }
        let (t, x) = v.split_once(';').ok_or(ERR)?;
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)) {
            return Err(ERR);
        }
        let addr = if t.eq_ignore_ascii_case("utf-8") { decode_utf8_xtext(x, utf8_allowed)? } else { decode_xtext(x)? };
        if addr.is_empty() {
            return Err(ERR);
        }
        Ok(Orcpt { addr_type: t.to_string(), addr })
    }
}

/// The DSN parameters of MAIL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailDsn {
    pub ret: Option<Ret>,
    /// ENVID, decoded.
    pub envid: Option<String>,
}

/// The DSN parameters of one RCPT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptDsn {
    pub notify: Option<Notify>,
    pub orcpt: Option<Orcpt>,
}

impl RcptDsn {
    /// ` NOTIFY=… ORCPT=…` for a RCPT command to a host that offers DSN.
    pub fn params(&self) -> String {
        let mut s = String::new();
        if let Some(n) = self.notify {
            s.push_str(" NOTIFY=");
            s.push_str(&n.to_param());
        }
        if let Some(o) = &self.orcpt {
            s.push_str(" ORCPT=");
            s.push_str(&o.to_param());
        }
        s
    }
}

impl MailDsn {
    /// ` RET=… ENVID=…` for a MAIL command to a host that offers DSN.
    pub fn params(&self) -> String {
        let mut s = String::new();
        if let Some(r) = self.ret {
            s.push_str(" RET=");
            s.push_str(r.as_str());
        }
        if let Some(e) = &self.envid {
            s.push_str(" ENVID=");
            s.push_str(&xtext(e));
        }
        s
    }
}

/// Take `RET` or `ENVID` (`key` upper-cased) into `dsn`; `Ok(false)` when
/// `key` is not a DSN MAIL parameter.
pub fn mail_param(dsn: &mut MailDsn, key: &str, value: Option<&str>) -> Result<bool, &'static str> {
    match (key, value) {
        ("RET", Some(v)) => {
            if dsn.ret.is_some() {
                return Err("RET given twice");
            }
            dsn.ret = Some(match v.to_ascii_uppercase().as_str() {
                "FULL" => Ret::Full,
                "HDRS" => Ret::Hdrs,
                _ => return Err("RET=FULL or RET=HDRS"),
            });
        }
        ("ENVID", Some(v)) => {
            if dsn.envid.is_some() {
                return Err("ENVID given twice");
            }
            if v.len() > 100 {
                return Err("ENVID is longer than 100 characters");
            }
            let e = decode_xtext(v).map_err(|_| "ENVID=xtext")?;
            if e.is_empty() {
                return Err("ENVID=xtext");
            }
            dsn.envid = Some(e);
        }
        ("RET" | "ENVID", None) => return Err("RET and ENVID take a value"),
        _ => return Ok(false),
    }
    Ok(true)
}

/// Take `NOTIFY` or `ORCPT` (`key` upper-cased) into `dsn`; `Ok(false)` when
/// `key` is not a DSN RCPT parameter. `utf8`: the transaction said SMTPUTF8,
/// so a `utf-8` ORCPT may carry raw UTF-8 (RFC 6533 §3).
pub fn rcpt_param(dsn: &mut RcptDsn, key: &str, value: Option<&str>, utf8: bool) -> Result<bool, &'static str> {
    match (key, value) {
        ("NOTIFY", Some(v)) => {
            if dsn.notify.is_some() {
                return Err("NOTIFY given twice");
            }
            dsn.notify = Some(Notify::parse(v)?);
        }
        ("ORCPT", Some(v)) => {
            if dsn.orcpt.is_some() {
                return Err("ORCPT given twice");
            }
            dsn.orcpt = Some(Orcpt::parse(v, utf8)?);
        }
        ("NOTIFY" | "ORCPT", None) => return Err("NOTIFY and ORCPT take a value"),
        _ => return Ok(false),
    }
    Ok(true)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// RFC 3461 §4: `xchar` is `!`..`~` but `+` and `=`; `+HH` is any octet.
/// The decoded value must be printable (no control characters: it ends up in
/// a header field of the notice) and UTF-8.
pub fn decode_xtext(x: &str) -> Result<String, &'static str> {
    const ERR: &str = "malformed xtext";
    let b = x.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let (Some(h), Some(l)) = (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) else {
                    return Err(ERR);
                };
                out.push(h << 4 | l);
                i += 3;
            }
            c @ b'!'..=b'~' if c != b'=' => {
                out.push(c);
                i += 1;
            }
            _ => return Err(ERR),
        }
    }
    let s = String::from_utf8(out).map_err(|_| ERR)?;
    if s.chars().any(char::is_control) {
        return Err(ERR);
    }
    Ok(s)
}

/// RFC 6533 §3 `utf-8-addr-xtext` (and, under SMTPUTF8, `utf-8-addr-unitext`):
/// ASCII but `+`, `=`, `\` as themselves, `\x{HEX}` for any code point, and raw
/// UTF-8 when `raw_utf8`.
fn decode_utf8_xtext(x: &str, raw_utf8: bool) -> Result<String, &'static str> {
    const ERR: &str = "malformed utf-8-addr-xtext";
    let mut out = String::with_capacity(x.len());
    let mut rest = x;
    while let Some(c) = rest.chars().next() {
        if let Some(tail) = rest.strip_prefix("\\x{") {
            let end = tail.find('}').ok_or(ERR)?;
            let h = &tail[..end];
            if h.is_empty() || h.len() > 6 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ERR);
            }
            let cp = u32::from_str_radix(h, 16).map_err(|_| ERR)?;
            out.push(char::from_u32(cp).ok_or(ERR)?);
            rest = &tail[end + 1..];
            continue;
        }
        let ok = match c {
            '!'..='~' => !matches!(c, '+' | '=' | '\\'),
            _ => raw_utf8 && !c.is_ascii() && !c.is_control(),
        };
        if !ok {
            return Err(ERR);
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if out.chars().any(char::is_control) {
        return Err(ERR);
    }
    Ok(out)
}

/// Encode `s` as xtext.
pub fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Encode `s` as RFC 6533 `utf-8-addr-xtext` (ASCII only).
pub fn utf8_xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if ('!'..='~').contains(&c) && !matches!(c, '+' | '=' | '\\') {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:X}}}", c as u32));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_round_trips_and_refuses_what_the_rfc_refuses() {
        assert_eq!(decode_xtext("a+2Bb+3Dc").unwrap(), "a+b=c");
        assert_eq!(decode_xtext("QQ+2c1").unwrap(), "QQ,1");
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        for bad in ["a=b", "a+2", "a+GG", "a b", "+0D+0Ainjected", "+FF"] {
            assert!(decode_xtext(bad).is_err(), "{bad}");
        }
        let s = "id with spaces+and=signs";
        assert_eq!(decode_xtext(&xtext(s)).unwrap(), s);
    }

    #[test]
    fn notify_values() {
        assert_eq!(Notify::parse("never").unwrap(), Notify::NEVER);
        assert_eq!(Notify::parse("SUCCESS,delay").unwrap(), Notify { success: true, failure: false, delay: true });
        assert!(Notify::parse("NEVER,SUCCESS").is_err());
        assert!(Notify::parse("SUCCESS,").is_err());
        assert!(Notify::parse("ALWAYS").is_err());
        assert_eq!(Notify { success: true, failure: true, delay: false }.to_param(), "SUCCESS,FAILURE");
        assert!(!Notify::wants(None, NoticeKind::Success));
        assert!(Notify::wants(None, NoticeKind::Delay));
        assert!(!Notify::wants(Some(Notify::NEVER), NoticeKind::Failure));
        assert!(!Notify::wants(Some(Notify::parse("SUCCESS,FAILURE").unwrap()), NoticeKind::Delay));
    }

    #[test]
    fn orcpt_types() {
        let o = Orcpt::parse("rfc822;a+2Bx@b.test", false).unwrap();
        assert_eq!((o.addr_type.as_str(), o.addr.as_str()), ("rfc822", "a+x@b.test"));
        assert_eq!(o.to_param(), "rfc822;a+2Bx@b.test");
        let u = Orcpt::parse("utf-8;j\\x{F6}rg@b.test", false).unwrap();
        assert_eq!(u.addr, "jörg@b.test");
        assert_eq!(u.to_param(), "utf-8;j\\x{F6}rg@b.test");
        assert!(Orcpt::parse("utf-8;jörg@b.test", false).is_err());
        assert_eq!(Orcpt::parse("utf-8;jörg@b.test", true).unwrap().addr, "jörg@b.test");
        for bad in ["rfc822", ";a@b", "rfc 822;a@b", "rfc822;", "rfc822;a=b", "utf-8;\\x{D800}", "utf-8;\\x{}"] {
            assert!(Orcpt::parse(bad, true).is_err(), "{bad}");
        }
        assert!(Orcpt::parse(&format!("rfc822;{}", "a".repeat(500)), false).is_err());
    }

    #[test]
    fn parameters_once_each() {
        let mut m = MailDsn::default();
        assert_eq!(mail_param(&mut m, "RET", Some("hdrs")), Ok(true));
        assert!(mail_param(&mut m, "RET", Some("FULL")).is_err());
        assert_eq!(mail_param(&mut m, "ENVID", Some("QQ314159")), Ok(true));
        assert_eq!(mail_param(&mut m, "SIZE", Some("1")), Ok(false));
        assert!(mail_param(&mut MailDsn::default(), "ENVID", Some(&"x".repeat(101))).is_err());
        assert!(mail_param(&mut MailDsn::default(), "RET", None).is_err());
        assert_eq!(m.params(), " RET=HDRS ENVID=QQ314159");
        let mut r = RcptDsn::default();
        assert_eq!(rcpt_param(&mut r, "NOTIFY", Some("SUCCESS,FAILURE"), false), Ok(true));
        assert!(rcpt_param(&mut r, "NOTIFY", Some("NEVER"), false).is_err());
        assert_eq!(rcpt_param(&mut r, "ORCPT", Some("rfc822;x@y.test"), false), Ok(true));
        assert_eq!(r.params(), " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y.test");
    }

    #[test]
    fn notify_serializes_as_its_parameter() {
        let n = Notify::parse("DELAY,SUCCESS").unwrap();
        let j = serde_json::to_string(&n).unwrap();
        assert_eq!(j, "\"SUCCESS,DELAY\"");
        assert_eq!(serde_json::from_str::<Notify>(&j).unwrap(), n);
    }
}
