//! SMTP command parser (RFC 5321 §4.1.1) with the ESMTP parameters of
//! RFC 1870 (SIZE), RFC 6152 (BODY=8BITMIME), RFC 6531 (SMTPUTF8),
//! RFC 3461 (DSN: RET, ENVID, NOTIFY, ORCPT; [`crate::dsn`]) and RFC 3030 (BDAT).
//!
//! Input is one command line without its line ending. Verbs are case-insensitive;
//! unknown parameters are refused by the session (555 5.5.4), malformed
//! values of known ones are syntax errors (501 5.5.4).

use crate::address::{parse_domain, parse_path, AddressError, Domain, Path};
use crate::dsn::{self, MailDsn, RcptDsn};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(HeloArg),
    Helo(HeloArg),
    Mail {
        path: Path,
        params: MailParams,
    },
    Rcpt {
        path: Path,
        dsn: RcptDsn,
    },
    /// `RCPT TO:<postmaster>` without a domain (RFC 5321 §4.5.1: always accepted).
    RcptPostmaster {
        dsn: RcptDsn,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    Auth(String),
    /// A line that looks like HTTP or another protocol: the client is not an SMTP client.
    NotSmtp,
}

/// The HELO/EHLO argument as given (recorded, never refused for a mismatch: RFC 5321 §4.1.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeloArg {
    pub raw: String,
    pub domain: Option<Domain>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body_8bit: bool,
    pub smtputf8: bool,
    pub dsn: MailDsn,
    /// RFC 8689 REQUIRETLS: relay only over verified TLS.
    pub requiretls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command not recognized")]
    Unknown,
    #[error("syntax: {0}")]
    Syntax(&'static str),
    #[error("bad address: {0}")]
    Address(#[from] AddressError),
    #[error("unsupported parameter {0}")]
    Parameter(String),
}

/// Parse one command line (no CRLF).
pub fn parse(line: &str) -> Result<Command, CommandError> {
    let (verb, arg) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let upper = verb.to_ascii_uppercase();
    match upper.as_str() {
        "EHLO" => helo_arg(arg).map(Command::Ehlo),
        "HELO" => helo_arg(arg).map(Command::Helo),
        "MAIL" => mail(arg),
        "RCPT" => rcpt(arg),
        "DATA" => no_arg(arg, Command::Data, "DATA"),
        "BDAT" => bdat(arg),
        "RSET" => no_arg(arg, Command::Rset, "RSET"),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_arg(arg, Command::Quit, "QUIT"),
        "VRFY" | "EXPN" => Ok(Command::Vrfy),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_arg(arg, Command::StartTls, "STARTTLS"),
        "AUTH" => Ok(Command::Auth(arg.to_string())),
        "GET" | "POST" | "PUT" | "HEAD" | "CONNECT" | "OPTIONS" | "HOST:" | "USER-AGENT:" => Ok(Command::NotSmtp),
        _ => Err(CommandError::Unknown),
    }
}

fn no_arg(arg: &str, cmd: Command, name: &'static str) -> Result<Command, CommandError> {
    if arg.trim().is_empty() {
        Ok(cmd)
    } else {
        Err(CommandError::Syntax(match name {
            "DATA" => "DATA takes no arguments",
            "RSET" => "RSET takes no arguments",
            "QUIT" => "QUIT takes no arguments",
            _ => "STARTTLS takes no arguments",
        }))
    }
}

fn helo_arg(arg: &str) -> Result<HeloArg, CommandError> {
    let raw = arg.trim();
    if raw.is_empty() || raw.contains(' ') || raw.len() > 255 {
        return Err(CommandError::Syntax("EHLO hostname"));
    }
    // Anything printable is recorded; a parsed domain is kept when it is valid.
    if !raw.chars().all(|c| !c.is_control()) {
        return Err(CommandError::Syntax("EHLO hostname"));
    }
    Ok(HeloArg { raw: raw.to_string(), domain: parse_domain(raw, true).ok() })
}

fn strip_keyword<'a>(arg: &'a str, kw: &str) -> Option<&'a str> {
    // `get` because the argument may be UTF-8 and `kw.len()` not a char boundary.
    if arg.get(..kw.len()).is_some_and(|head| head.eq_ignore_ascii_case(kw)) {
        Some(arg[kw.len()..].trim_start_matches(' '))
    } else {
        None
    }
}

fn mail(arg: &str) -> Result<Command, CommandError> {
    let rest = strip_keyword(arg, "FROM:").ok_or(CommandError::Syntax("MAIL FROM:<address>"))?;
    // SMTPUTF8 is a parameter after the path: look for it first so the path
    // parser knows whether UTF-8 is allowed.
    let utf8 = rest.split(' ').skip(1).any(|p| p.eq_ignore_ascii_case("SMTPUTF8"));
    let (path, params_str) = parse_path(rest, true, utf8)?;
    let mut params = MailParams { smtputf8: utf8, ..Default::default() };
    for p in params_str.split(' ').filter(|p| !p.is_empty()) {
        let (k, v) = match p.find('=') {
            Some(i) => (&p[..i], Some(&p[i + 1..])),
            None => (p, None),
        };
        let key = k.to_ascii_uppercase();
        if dsn::mail_param(&mut params.dsn, &key, v).map_err(CommandError::Syntax)? {
            continue;
        }
        match (key.as_str(), v) {
            ("SIZE", Some(v)) => {
                params.size = Some(
                    v.parse()
                        .ok()
                        .filter(|_| v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()))
                        .ok_or(CommandError::Syntax("SIZE=number"))?,
                )
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => params.body_8bit = true,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => params.body_8bit = false,
            ("SMTPUTF8", None) => params.smtputf8 = true,
            ("REQUIRETLS", None) => params.requiretls = true,
            _ => return Err(CommandError::Parameter(k.chars().take(32).filter(|c| c.is_ascii_graphic()).collect())),
        }
    }
    Ok(Command::Mail { path, params })
}

fn rcpt(arg: &str) -> Result<Command, CommandError> {
    let rest = strip_keyword(arg, "TO:").ok_or(CommandError::Syntax("RCPT TO:<address>"))?;
    let bare = rest.trim_start_matches(' ');
    if bare.get(..12).is_some_and(|p| p.eq_ignore_ascii_case("<postmaster>")) {
        return Ok(Command::RcptPostmaster { dsn: rcpt_params(&bare[12..])? });
    }
    // RCPT addresses may be UTF-8; the session checks that MAIL said SMTPUTF8.
    let (path, params_str) = parse_path(rest, false, true)?;
    Ok(Command::Rcpt { path, dsn: rcpt_params(params_str)? })
}

/// The parameters of RCPT: only the DSN ones exist.
fn rcpt_params(params: &str) -> Result<RcptDsn, CommandError> {
    let mut d = RcptDsn::default();
    for p in params.split(' ').filter(|p| !p.is_empty()) {
        let (k, v) = match p.find('=') {
            Some(i) => (&p[..i], Some(&p[i + 1..])),
            None => (p, None),
        };
        if !dsn::rcpt_param(&mut d, &k.to_ascii_uppercase(), v, true).map_err(CommandError::Syntax)? {
            return Err(CommandError::Parameter(k.chars().take(32).filter(|c| c.is_ascii_graphic()).collect()));
        }
    }
    Ok(d)
}

fn bdat(arg: &str) -> Result<Command, CommandError> {
    let mut parts = arg.split(' ').filter(|p| !p.is_empty());
    let size = parts
        .next()
        .filter(|s| s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or(CommandError::Syntax("BDAT size [LAST]"))?;
    let last = match parts.next() {
        None => false,
        Some(l) if l.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(CommandError::Syntax("BDAT size [LAST]")),
    };
    if parts.next().is_some() {
        return Err(CommandError::Syntax("BDAT size [LAST]"));
    }
    Ok(Command::Bdat { size, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(parse("quit").unwrap(), Command::Quit);
        assert_eq!(parse("NoOp whatever").unwrap(), Command::Noop);
        assert!(matches!(parse("ehlo [IPv6:2001:db8::1]").unwrap(), Command::Ehlo(HeloArg { domain: Some(Domain::Literal(_)), .. })));
    }

    #[test]
    fn mail_parameters() {
        let Command::Mail { params, .. } = parse("MAIL FROM:<a@b.test> SIZE=1000 BODY=8BITMIME").unwrap() else { panic!() };
        assert_eq!(params, MailParams { size: Some(1000), body_8bit: true, ..Default::default() });
        assert!(matches!(parse("MAIL FROM:<a@b.test> FOO=1"), Err(CommandError::Parameter(p)) if p == "FOO"));
        assert!(matches!(parse("MAIL FROM: <a@b.test>"), Ok(Command::Mail { .. })));
        assert!(matches!(parse("MAIL FROM:<jörg@b.test> SMTPUTF8"), Ok(Command::Mail { params: MailParams { smtputf8: true, .. }, .. })));
        assert!(parse("MAIL FROM:<jörg@b.test>").is_err());
        assert!(parse("MAIL TO:<a@b.test>").is_err());
    }

    #[test]
    fn dsn_parameters() {
        let Command::Mail { params, .. } = parse("MAIL FROM:<a@b.test> RET=HDRS ENVID=QQ+2B1 SIZE=5").unwrap() else { panic!() };
        assert_eq!(params.dsn, MailDsn { ret: Some(dsn::Ret::Hdrs), envid: Some("QQ+1".into()) });
        assert_eq!(params.size, Some(5));
        assert!(matches!(parse("MAIL FROM:<a@b.test> RET=BODY"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse("MAIL FROM:<a@b.test> ENVID=a+0Db"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse("MAIL FROM:<a@b.test> NOTIFY=NEVER"), Err(CommandError::Parameter(p)) if p == "NOTIFY"));
        let Command::Rcpt { dsn, .. } = parse("RCPT TO:<c@d.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;C@d.test").unwrap() else { panic!() };
        assert_eq!(dsn.notify, Some(dsn::Notify { success: true, failure: false, delay: true }));
        assert_eq!(dsn.orcpt.unwrap().addr, "C@d.test");
        assert!(matches!(parse("RCPT TO:<c@d.test> NOTIFY=NEVER,SUCCESS"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse("RCPT TO:<c@d.test> ORCPT=c@d.test"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse("RCPT TO:<c@d.test> NOTIFY=FAILURE NOTIFY=DELAY"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse("RCPT TO:<c@d.test> FOO=1"), Err(CommandError::Parameter(p)) if p == "FOO"));
        assert!(matches!(parse("RCPT TO:<Postmaster> NOTIFY=NEVER"), Ok(Command::RcptPostmaster { dsn: RcptDsn { notify: Some(_), .. } })));
    }

    #[test]
    fn bdat_syntax() {
        assert_eq!(parse("BDAT 100 LAST").unwrap(), Command::Bdat { size: 100, last: true });
        assert_eq!(parse("bdat 0").unwrap(), Command::Bdat { size: 0, last: false });
        assert!(parse("BDAT x").is_err());
        assert!(parse("BDAT 1 LAST x").is_err());
    }

    #[test]
    fn utf8_where_a_keyword_is_expected_does_not_panic() {
        // Found by `cargo fuzz run command`: slicing inside a multi-byte char.
        assert!(parse("MAIL h HP\u{16f}SPUTT").is_err());
        assert!(parse("MAIL FR\u{16f}M:<a@b.test>").is_err());
        assert!(parse("RCPT T\u{e9}:<a@b.test>").is_err());
    }

    #[test]
    fn http_is_not_smtp() {
        assert_eq!(parse("GET / HTTP/1.1").unwrap(), Command::NotSmtp);
    }
}
