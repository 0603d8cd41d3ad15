//! Envelope addresses: the `Path` / `Mailbox` grammar of RFC 5321 §4.1.2,
//! address literals (§4.1.3) and internationalised addresses (RFC 6531 §3.3).
//!
//! Defends against: overlong parts (§4.5.3.1: local part 64, domain 255, path 256
//! octets), control characters, unbalanced brackets and quotes. Source routes
//! (`<@a,@b:user@c>`) are parsed and recorded, never followed (§4.1.1.3, App. C).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A parsed mailbox `local@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// Local part as it appeared on the wire (quotes removed, escapes resolved).
    pub local: String,
    pub domain: Domain,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A host name, lower-cased, without a trailing dot.
    Name(String),
    /// `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
    Literal(IpAddr),
}

/// A reverse or forward path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// `None` is the null reverse path `<>`.
    pub mailbox: Option<Mailbox>,
    /// A source route was present (and ignored).
    pub had_source_route: bool,
    /// The local part was a quoted string.
    pub quoted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address must be enclosed in <>")]
    MissingBrackets,
    #[error("empty address")]
    Empty,
    #[error("local part too long")]
    LocalTooLong,
    #[error("domain too long")]
    DomainTooLong,
    #[error("path too long")]
    PathTooLong,
    #[error("invalid local part")]
    BadLocal,
    #[error("invalid domain")]
    BadDomain,
    #[error("invalid address literal")]
    BadLiteral,
    #[error("invalid source route")]
    BadRoute,
    #[error("missing @domain")]
    MissingDomain,
    #[error("non-ASCII address without SMTPUTF8")]
    NeedsUtf8,
}

impl Mailbox {
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii()
            && match &self.domain {
                Domain::Name(n) => n.is_ascii(),
                Domain::Literal(_) => true,
            }
    }

    pub fn domain_str(&self) -> String {
        self.domain.to_string()
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(n) => f.write_str(n),
            Domain::Literal(ip) => f.write_str(&address_literal(*ip)),
        }
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if local_needs_quotes(&self.local) {
            f.write_str("\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\"")?;
        } else {
            f.write_str(&self.local)?;
        }
        write!(f, "@{}", self.domain)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mailbox {
            None => f.write_str("<>"),
            Some(m) => write!(f, "<{m}>"),
        }
    }
}

/// `[192.0.2.1]` / `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3). IPv4-mapped IPv6
/// addresses are written as IPv4: such a client is an IPv4 client.
pub fn address_literal(ip: IpAddr) -> String {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn is_atext(c: char, utf8: bool) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || (utf8 && !c.is_ascii() && !c.is_control())
}

fn local_needs_quotes(local: &str) -> bool {
    local.is_empty()
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || !local.chars().all(|c| c == '.' || is_atext(c, true))
}

/// Parse `<path>` as given after `MAIL FROM:` / `RCPT TO:`. Returns the path and
/// the rest of the line (the ESMTP parameters).
pub fn parse_path(input: &str, allow_null: bool, utf8: bool) -> Result<(Path, &str), AddressError> {
    let input = input.trim_start_matches(' ');
    if !input.starts_with('<') {
        return Err(AddressError::MissingBrackets);
    }
    // Find the closing '>' outside a quoted string.
    let bytes = input.as_bytes();
    let mut i = 1;
    let mut in_quotes = false;
    let mut end = None;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b'>' if !in_quotes => {
                end = Some(i);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let end = end.ok_or(AddressError::MissingBrackets)?;
    let inner = &input[1..end];
    let rest = &input[end + 1..];
    if inner.len() > 256 {
        return Err(AddressError::PathTooLong);
    }
    if inner.is_empty() {
        return if allow_null {
            Ok((Path { mailbox: None, had_source_route: false, quoted: false }, rest))
        } else {
            Err(AddressError::Empty)
        };
    }
    let (mailbox_str, had_source_route) = strip_source_route(inner)?;
    let (mailbox, quoted) = parse_mailbox(mailbox_str, utf8)?;
    Ok((Path { mailbox: Some(mailbox), had_source_route, quoted }, rest))
}

/// `@a,@b:user@c` → `user@c`.
fn strip_source_route(inner: &str) -> Result<(&str, bool), AddressError> {
    if !inner.starts_with('@') {
        return Ok((inner, false));
    }
    let colon = inner.find(':').ok_or(AddressError::BadRoute)?;
    for hop in inner[..colon].split(',') {
        let hop = hop.strip_prefix('@').ok_or(AddressError::BadRoute)?;
        parse_domain(hop, true).map_err(|_| AddressError::BadRoute)?;
    }
    Ok((&inner[colon + 1..], true))
}

/// Parse `local@domain`. Returns whether the local part was quoted.
pub fn parse_mailbox(s: &str, utf8: bool) -> Result<(Mailbox, bool), AddressError> {
    if s.chars().any(|c| c.is_control()) {
        return Err(AddressError::BadLocal);
    }
    let (local, rest, quoted) = if let Some(body) = s.strip_prefix('"') {
        let mut local = String::new();
        let mut chars = body.char_indices();
        let mut close = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) if (' '..='~').contains(&e) || (utf8 && !e.is_ascii()) => local.push(e),
                    _ => return Err(AddressError::BadLocal),
                },
                '"' => {
                    close = Some(i);
                    break;
                }
                c if (' '..='~').contains(&c) || (utf8 && !c.is_ascii()) => local.push(c),
                _ => return Err(AddressError::BadLocal),
            }
        }
        let close = close.ok_or(AddressError::BadLocal)?;
        (local, &body[close + 1..], true)
    } else {
        let at = s.rfind('@').ok_or(AddressError::MissingDomain)?;
        let local = &s[..at];
        if local.is_empty()
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
            || !local.chars().all(|c| c == '.' || is_atext(c, true))
        {
            return Err(AddressError::BadLocal);
        }
        (local.to_string(), &s[at..], false)
    };
    let domain = rest.strip_prefix('@').ok_or(AddressError::MissingDomain)?;
    if local.len() > 64 {
        return Err(AddressError::LocalTooLong);
    }
    let domain = parse_domain(domain, utf8)?;
    let mailbox = Mailbox { local, domain };
    if !utf8 && !mailbox.is_ascii() {
        return Err(AddressError::NeedsUtf8);
    }
    Ok((mailbox, quoted))
}

/// A domain name (LDH labels, or U-labels with SMTPUTF8) or an address literal.
pub fn parse_domain(s: &str, utf8: bool) -> Result<Domain, AddressError> {
    if let Some(lit) = s.strip_prefix('[') {
        let lit = lit.strip_suffix(']').ok_or(AddressError::BadLiteral)?;
        return parse_literal(lit).map(Domain::Literal);
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.is_empty() {
        return Err(AddressError::BadDomain);
    }
    if name.len() > 255 {
        return Err(AddressError::DomainTooLong);
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || (utf8 && !c.is_ascii() && c.is_alphanumeric()));
        if !ok {
            return Err(AddressError::BadDomain);
        }
    }
    if !utf8 && !name.is_ascii() {
        return Err(AddressError::NeedsUtf8);
    }
    Ok(Domain::Name(name.to_lowercase()))
}

/// The inside of `[...]`: an IPv4 dotted quad or `IPv6:` followed by an IPv6 address.
pub fn parse_literal(lit: &str) -> Result<IpAddr, AddressError> {
    if lit.get(..5).is_some_and(|tag| tag.eq_ignore_ascii_case("IPv6:")) {
        return lit[5..].parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| AddressError::BadLiteral);
    }
    lit.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| AddressError::BadLiteral)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbox(s: &str) -> Mailbox {
        parse_path(s, false, true).unwrap().0.mailbox.unwrap()
    }

    #[test]
    fn plain_and_null_paths() {
        assert_eq!(mbox("<User@Example.ORG>").to_string(), "User@example.org");
        let (p, rest) = parse_path("<> SIZE=10", true, false).unwrap();
        assert!(p.mailbox.is_none());
        assert_eq!(rest, " SIZE=10");
        assert_eq!(parse_path("<>", false, false).unwrap_err(), AddressError::Empty);
    }

    #[test]
    fn literals_and_routes() {
        assert_eq!(mbox("<a@[IPv6:2001:db8::1]>").domain, Domain::Literal("2001:db8::1".parse().unwrap()));
        assert_eq!(mbox("<a@[192.0.2.1]>").domain, Domain::Literal("192.0.2.1".parse().unwrap()));
        let (p, _) = parse_path("<@a.test,@b.test:u@c.test>", false, false).unwrap();
        assert!(p.had_source_route);
        assert_eq!(p.mailbox.unwrap().to_string(), "u@c.test");
        assert!(parse_path("<a@[IPv6:nonsense]>", false, false).is_err());
        assert!(parse_path("<a@[IPv\u{16f}:1]>", false, true).is_err());
    }

    #[test]
    fn quoted_local_parts() {
        let (p, _) = parse_path("<\"a b@c\"@example.org>", false, false).unwrap();
        assert!(p.quoted);
        assert_eq!(p.mailbox.as_ref().unwrap().local, "a b@c");
        assert_eq!(p.mailbox.unwrap().to_string(), "\"a b@c\"@example.org");
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["user@example.org", "<user>", "<@example.org>", "<a..b@x.test>", "<a@-x.test>", "<a@x..test>", "<a\u{1}@x.test>"] {
            assert!(parse_path(bad, false, true).is_err(), "{bad}");
        }
        let long = format!("<{}@x.test>", "a".repeat(65));
        assert_eq!(parse_path(&long, false, false).unwrap_err(), AddressError::LocalTooLong);
    }

    #[test]
    fn utf8_needs_smtputf8() {
        assert_eq!(parse_path("<jörg@example.org>", false, false).unwrap_err(), AddressError::NeedsUtf8);
        assert_eq!(mbox("<jörg@bücher.example>").to_string(), "jörg@bücher.example");
    }

    #[test]
    fn mapped_v4_is_v4() {
        assert_eq!(address_literal("::ffff:192.0.2.7".parse().unwrap()), "[192.0.2.7]");
        assert_eq!(address_literal("2001:db8::1".parse().unwrap()), "[IPv6:2001:db8::1]");
    }
}
