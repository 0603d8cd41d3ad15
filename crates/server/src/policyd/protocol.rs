//! Postfix's policy delegation protocol (SMTPD_POLICY_README), without I/O:
//! a request is `name=value` lines ended by an empty line; the answer is
//! `action=…` and an empty line.
//!
//! Defends against: overlong lines (4 KiB) and requests with too many
//! attributes (100): the connection is closed.

use std::collections::HashMap;

pub const MAX_LINE: usize = 4096;
pub const MAX_ATTRIBUTES: usize = 100;

/// Parsed request attributes.
pub type Request = HashMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("request line longer than {MAX_LINE} octets")]
    LineTooLong,
    #[error("more than {MAX_ATTRIBUTES} attributes in one request")]
    TooManyAttributes,
}

/// Collects the lines of one request.
#[derive(Debug, Default)]
pub struct Reader {
    req: Request,
}

impl Reader {
    /// One line (with or without its line ending); the whole request once the
    /// empty line arrives. Lines without `=` are ignored, as Postfix does.
    pub fn line(&mut self, line: &str) -> Result<Option<Request>, ProtocolError> {
        if line.len() > MAX_LINE {
            return Err(ProtocolError::LineTooLong);
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok(Some(std::mem::take(&mut self.req)));
        }
        if self.req.len() >= MAX_ATTRIBUTES {
            return Err(ProtocolError::TooManyAttributes);
        }
        if let Some((k, v)) = line.split_once('=') {
            self.req.insert(k.to_string(), v.to_string());
        }
        Ok(None)
    }
}

/// The answer to one request.
pub fn answer(action: &str) -> String {
    // One line per answer: nothing a judge wrote may end it early.
    let action: String = action.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    format!("action={action}\n\n")
}

/// A request attribute, `""` when absent.
pub fn get<'a>(req: &'a Request, name: &str) -> &'a str {
    req.get(name).map(String::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers() {
        let mut r = Reader::default();
        for l in ["request=smtpd_access_policy\n", "protocol_state=RCPT\r\n", "client_address=2001:db8::1\n", "junk\n"] {
            assert_eq!(r.line(l), Ok(None));
        }
        let req = r.line("\n").unwrap().unwrap();
        assert_eq!((get(&req, "protocol_state"), get(&req, "client_address"), get(&req, "sender")), ("RCPT", "2001:db8::1", ""));
        assert_eq!(req.len(), 3);
        assert!(r.line("\n").unwrap().unwrap().is_empty(), "the reader starts over");
        assert_eq!(r.line(&"x".repeat(MAX_LINE + 1)), Err(ProtocolError::LineTooLong));
        let mut r = Reader::default();
        for i in 0..MAX_ATTRIBUTES {
            r.line(&format!("a{i}=1")).unwrap();
        }
        assert_eq!(r.line("one=more"), Err(ProtocolError::TooManyAttributes));
        assert_eq!(answer("DUNNO"), "action=DUNNO\n\n");
        assert_eq!(answer("REJECT 5.7.1 no\r\nfoo"), "action=REJECT 5.7.1 no  foo\n\n");
    }
}
