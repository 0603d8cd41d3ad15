//! The milter's replies (`SMFIR_*`): verdicts, progress, and the
//! modifications it may ask for at end of message.

use super::packet::nul_strings;
use super::protocol::Negotiated;

/// A milter's reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    OptNeg(Negotiated),
    Continue,
    Accept,
    Reject,
    Tempfail,
    Discard,
    /// `550 5.7.1 text` chosen by the milter.
    ReplyCode(String),
    Skip,
    Progress,
    Quarantine(String),
    AddHeader {
        name: Vec<u8>,
        value: Vec<u8>,
    },
    InsertHeader {
        index: u32,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    ChangeHeader {
        index: u32,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    AddRcpt {
        rcpt: String,
        args: Option<String>,
    },
    DelRcpt(String),
    ReplaceBody(Vec<u8>),
    ChangeFrom {
        from: String,
        args: Option<String>,
    },
    SetSymList,
    Shutdown,
    ConnFail,
}

impl Reply {
    /// A reply that ends the step (as opposed to a modification or progress).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Reply::Continue
                | Reply::Accept
                | Reply::Reject
                | Reply::Tempfail
                | Reply::Discard
                | Reply::ReplyCode(_)
                | Reply::Skip
                | Reply::Shutdown
                | Reply::ConnFail
                | Reply::OptNeg(_)
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("milter packet of {0} bytes is too large")]
    TooLarge(usize),
    #[error("milter sent an unknown reply `{0}`")]
    Unknown(char),
    #[error("milter reply `{0}` is malformed")]
    Malformed(char),
}

/// Largest reply accepted (a replaced body comes in chunks).
const MAX_PACKET: usize = 16 << 20;

/// A field name a milter may add (RFC 5322 §2.2: printable, no colon).
fn valid_name(n: &[u8]) -> bool {
    !n.is_empty() && n.len() <= 256 && n.iter().all(|&b| (33..=126).contains(&b) && b != b':')
}

/// Decode one reply from the front of `buf`: `Ok(None)` when more bytes are
/// needed, else the reply and the bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, Error> {
    let Some((cmd, d, used)) = super::packet::frame(buf, MAX_PACKET).map_err(Error::TooLarge)? else { return Ok(None) };
    let c = cmd as char;
    let strs = || -> Vec<String> { nul_strings(d).iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect() };
    let raw = nul_strings;
    let idx = || -> Result<(u32, Vec<Vec<u8>>), Error> {
        if d.len() < 4 {
            return Err(Error::Malformed(c));
        }
        let i = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        Ok((i, raw(&d[4..])))
    };
    let r = match cmd {
        b'O' => {
            if d.len() < 12 {
                return Err(Error::Malformed(c));
            }
            let u = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
            // SMFIR_SETSYMLIST data: (u32 stage, NUL-terminated macro names)…
            let mut macros = Vec::new();
            let mut rest = &d[12..];
            while rest.len() >= 4 {
                let stage = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let end = rest[4..].iter().position(|&b| b == 0).map(|p| p + 4).unwrap_or(rest.len());
                let names =
                    String::from_utf8_lossy(&rest[4..end]).split([' ', ',']).filter(|n| !n.is_empty()).map(str::to_string).collect();
                macros.push((stage, names));
                rest = &rest[(end + 1).min(rest.len())..];
            }
            Reply::OptNeg(Negotiated { version: u(0), actions: u(4), protocol: u(8), macros })
        }
        b'c' => Reply::Continue,
        b'a' => Reply::Accept,
        b'r' => Reply::Reject,
        b't' => Reply::Tempfail,
        b'd' => Reply::Discard,
        b's' => Reply::Skip,
        b'p' => Reply::Progress,
        b'4' => Reply::Shutdown,
        b'f' => Reply::ConnFail,
        b'l' => Reply::SetSymList,
        b'y' => Reply::ReplyCode(strs().into_iter().next().unwrap_or_default()),
        b'q' => Reply::Quarantine(strs().into_iter().next().unwrap_or_default()),
        b'h' => match raw(d).as_slice() {
            [n, v, ..] if valid_name(n) => Reply::AddHeader { name: n.clone(), value: v.clone() },
            [n] if valid_name(n) => Reply::AddHeader { name: n.clone(), value: Vec::new() },
            _ => return Err(Error::Malformed(c)),
        },
        b'i' | b'm' => {
            let (index, v) = idx()?;
            let (name, value) = match v.as_slice() {
                [n, v, ..] if valid_name(n) => (n.clone(), v.clone()),
                [n] if valid_name(n) => (n.clone(), Vec::new()),
                _ => return Err(Error::Malformed(c)),
            };
            if cmd == b'i' {
                Reply::InsertHeader { index, name, value }
            } else {
                Reply::ChangeHeader { index, name, value }
            }
        }
        b'+' | b'2' => {
            let v = strs();
            let rcpt = v.first().cloned().ok_or(Error::Malformed(c))?;
            Reply::AddRcpt { rcpt, args: v.get(1).cloned().filter(|a| !a.is_empty()) }
        }
        b'-' => Reply::DelRcpt(strs().into_iter().next().ok_or(Error::Malformed(c))?),
        b'b' => Reply::ReplaceBody(d.to_vec()),
        b'e' => {
            let v = strs();
            let from = v.first().cloned().ok_or(Error::Malformed(c))?;
            Reply::ChangeFrom { from, args: v.get(1).cloned().filter(|a| !a.is_empty()) }
        }
        other => return Err(Error::Unknown(other as char)),
    };
    Ok(Some((r, used)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milter::packet::packet;
    use crate::milter::{proto, Step};

    #[test]
    fn replies_decode_in_pieces() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&packet(b'h', b"X-Test\0yes\xff\0"));
        buf.extend_from_slice(&packet(b'm', b"\0\0\0\x01Subject\0\0"));
        buf.extend_from_slice(&packet(b'y', b"550 5.7.1 go away\0"));
        assert_eq!(decode(&buf[..3]).unwrap(), None);
        let (r, n) = decode(&buf).unwrap().unwrap();
        assert_eq!(r, Reply::AddHeader { name: b"X-Test".to_vec(), value: b"yes\xff".to_vec() }, "8-bit values stay as they are");
        let (r, m) = decode(&buf[n..]).unwrap().unwrap();
        assert_eq!(r, Reply::ChangeHeader { index: 1, name: b"Subject".to_vec(), value: Vec::new() });
        let (r, _) = decode(&buf[n + m..]).unwrap().unwrap();
        assert_eq!(r, Reply::ReplyCode("550 5.7.1 go away".into()));
        assert!(r.is_final());
        assert_eq!(decode(&packet(b'Z', b"")), Err(Error::Unknown('Z')));
        assert_eq!(decode(&packet(b'h', b"Bad:Name\0v\0")), Err(Error::Malformed('h')));
        let neg = Negotiated { version: 6, actions: 1, protocol: proto::NOHELO | proto::NR_HDR, macros: vec![] };
        assert!(!neg.wants(Step::Helo) && neg.wants(Step::Mail) && !neg.replies(Step::Header) && neg.replies(Step::Eom));
    }

    #[test]
    fn optneg_with_macro_lists() {
        let mut d = Vec::new();
        for v in [6u32, 0x1ff, proto::HDR_LEADSPC] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        d.extend_from_slice(&2u32.to_be_bytes());
        d.extend_from_slice(b"{mail_addr} i\0");
        d.extend_from_slice(&3u32.to_be_bytes());
        d.extend_from_slice(b"{rcpt_addr}\0");
        let Reply::OptNeg(n) = decode(&packet(b'O', &d)).unwrap().unwrap().0 else { panic!() };
        assert!(n.leadspc());
        assert_eq!(n.macro_list(Step::Mail).unwrap(), ["{mail_addr}", "i"]);
        assert_eq!(n.macro_list(Step::Rcpt).unwrap(), ["{rcpt_addr}"]);
        assert_eq!(n.macro_list(Step::Connect), None, "a stage it did not list gets the defaults");
    }
}
