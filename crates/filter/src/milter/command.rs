//! The milter's side of the conversation, for `mx6 milter`: the MTA's
//! commands (`SMFIC_*`) decoded, and the milter's replies (`SMFIR_*`)
//! encoded — the mirror of [`super::packet`] and [`super::reply`], so each
//! direction is tested against the other.

use std::net::IpAddr;

use super::packet::{nul_strings as strings, nul_terminated, packet};
use super::protocol::Negotiated;
use super::reply::Reply;

/// One command from the MTA.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `SMFIC_OPTNEG`: the MTA's version, actions and protocol steps.
    OptNeg {
        version: u32,
        actions: u32,
        protocol: u32,
    },
    /// `SMFIC_MACRO`: the macros for the command named by `stage` (`C`, `H`, …).
    Macro {
        stage: u8,
        pairs: Vec<(String, String)>,
    },
    /// `SMFIC_CONNECT`: host name and the client's address (`None` for an
    /// unknown family, e.g. a unix-socket client).
    Connect {
        hostname: String,
        addr: Option<IpAddr>,
        port: u16,
    },
    Helo(String),
    /// `SMFIC_MAIL` / `SMFIC_RCPT`: the address (`<…>`) then ESMTP arguments.
    Mail(Vec<String>),
    Rcpt(Vec<String>),
    Data,
    /// A header field: name and value as the MTA sent them (bytes: values
    /// may be 8-bit; folds joined by LF).
    Header {
        name: Vec<u8>,
        value: Vec<u8>,
    },
    Eoh,
    Body(Vec<u8>),
    Eom,
    Abort,
    Quit,
    /// `SMFIC_QUIT_NC`: the connection is kept for a new SMTP session.
    QuitNewConnection,
    Unknown(Vec<u8>),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CommandError {
    #[error("MTA packet of {0} bytes is too large")]
    TooLarge(usize),
    #[error("MTA sent an unknown command `{0}`")]
    Unknown(char),
    #[error("MTA command `{0}` is malformed")]
    Malformed(char),
}

/// Largest packet taken from the MTA (body chunks are at most 64 KiB).
const MAX_PACKET: usize = 1 << 20;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Decode one command from the front of `buf`: `Ok(None)` when more bytes
/// are needed, else the command and the bytes it used.
pub fn decode_command(buf: &[u8]) -> Result<Option<(Command, usize)>, CommandError> {
    let Some((cmd, d, used)) = super::packet::frame(buf, MAX_PACKET).map_err(CommandError::TooLarge)? else { return Ok(None) };
    let bad = || CommandError::Malformed(cmd as char);
    let c = match cmd {
        b'O' => {
            if d.len() < 12 {
                return Err(bad());
            }
            let u = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
            Command::OptNeg { version: u(0), actions: u(4), protocol: u(8) }
        }
        b'D' => {
            let (&stage, rest) = d.split_first().ok_or_else(bad)?;
            let s = strings(rest);
            let pairs = s.chunks(2).map(|p| (text(&p[0]), p.get(1).map(|v| text(v)).unwrap_or_default())).collect();
            Command::Macro { stage, pairs }
        }
        b'C' => {
            let end = d.iter().position(|&b| b == 0).ok_or_else(bad)?;
            let hostname = text(&d[..end]);
            let rest = &d[end + 1..];
            let (&family, rest) = rest.split_first().ok_or_else(bad)?;
            match family {
                b'4' | b'6' => {
                    if rest.len() < 2 {
                        return Err(bad());
                    }
                    let port = u16::from_be_bytes([rest[0], rest[1]]);
                    let a = text(strings(&rest[2..]).first().map(Vec::as_slice).unwrap_or_default());
                    // Sendmail writes IPv6 addresses as `IPv6:…`.
                    let a = a.strip_prefix("IPv6:").or_else(|| a.strip_prefix("IPV6:")).unwrap_or(&a);
                    let addr = a.parse::<IpAddr>().map_err(|_| bad())?;
                    Command::Connect { hostname, addr: Some(addr), port }
                }
                _ => Command::Connect { hostname, addr: None, port: 0 },
            }
        }
        b'H' => Command::Helo(text(strings(d).first().map(Vec::as_slice).unwrap_or_default())),
        b'M' => Command::Mail(strings(d).iter().map(|s| text(s)).collect()),
        b'R' => Command::Rcpt(strings(d).iter().map(|s| text(s)).collect()),
        b'T' => Command::Data,
        b'L' => {
            let s = strings(d);
            let name = s.first().cloned().ok_or_else(bad)?;
            Command::Header { name, value: s.get(1).cloned().unwrap_or_default() }
        }
        b'N' => Command::Eoh,
        b'B' => Command::Body(d.to_vec()),
        b'E' => Command::Eom,
        b'A' => Command::Abort,
        b'Q' => Command::Quit,
        b'K' => Command::QuitNewConnection,
        b'U' => Command::Unknown(d.to_vec()),
        other => return Err(CommandError::Unknown(other as char)),
    };
    Ok(Some((c, used)))
}

/// Encode a reply the milter sends (OPTNEG, verdicts, header changes).
pub fn encode_reply(r: &Reply) -> Vec<u8> {
    match r {
        Reply::OptNeg(Negotiated { version, actions, protocol, .. }) => {
            let mut d = Vec::with_capacity(12);
            for v in [version, actions, protocol] {
                d.extend_from_slice(&v.to_be_bytes());
            }
            packet(b'O', &d)
        }
        Reply::Continue => packet(b'c', &[]),
        Reply::Accept => packet(b'a', &[]),
        Reply::Reject => packet(b'r', &[]),
        Reply::Tempfail => packet(b't', &[]),
        Reply::Discard => packet(b'd', &[]),
        Reply::Skip => packet(b's', &[]),
        Reply::Progress => packet(b'p', &[]),
        Reply::ReplyCode(text) => packet(b'y', &nul_terminated(&[text.as_bytes()])),
        Reply::Quarantine(why) => packet(b'q', &nul_terminated(&[why.as_bytes()])),
        Reply::AddHeader { name, value } => packet(b'h', &nul_terminated(&[name, value])),
        Reply::InsertHeader { index, name, value } | Reply::ChangeHeader { index, name, value } => {
            let mut d = index.to_be_bytes().to_vec();
            d.extend_from_slice(&nul_terminated(&[name, value]));
            packet(if matches!(r, Reply::InsertHeader { .. }) { b'i' } else { b'm' }, &d)
        }
        Reply::AddRcpt { rcpt, args } => match args {
            Some(a) => packet(b'2', &nul_terminated(&[rcpt.as_bytes(), a.as_bytes()])),
            None => packet(b'+', &nul_terminated(&[rcpt.as_bytes()])),
        },
        Reply::DelRcpt(rcpt) => packet(b'-', &nul_terminated(&[rcpt.as_bytes()])),
        Reply::ReplaceBody(b) => packet(b'b', b),
        Reply::ChangeFrom { from, args } => packet(b'e', &nul_terminated(&[from.as_str(), args.as_deref().unwrap_or("")])),
        Reply::SetSymList => packet(b'l', &[]),
        Reply::Shutdown => packet(b'4', &[]),
        Reply::ConnFail => packet(b'f', &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milter::packet::{self, Peer};
    use crate::milter::reply::decode;
    use crate::milter::Step;

    /// What the MTA side encodes, the milter side decodes.
    #[test]
    fn commands_round_trip_from_the_mta_side() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&packet::optneg(0x1fffff));
        buf.extend_from_slice(&packet::macros(Step::Mail, &[("{auth_authen}", "alice"), ("i", "Q1")]));
        buf.extend_from_slice(&packet::connect("client.example", Peer::Ipv6("2001:db8::7".parse().unwrap(), 2525)));
        buf.extend_from_slice(&packet::helo("client.example"));
        buf.extend_from_slice(&packet::mail(&["<a@b.example>", "SIZE=10"]));
        buf.extend_from_slice(&packet::header(b"Subject", b" caf\xc3\xa9\n\tfolded"));
        buf.extend_from_slice(&packet::body(b"body\r\n"));
        buf.extend_from_slice(&packet::eom());
        let mut got = Vec::new();
        let mut rest = &buf[..];
        while let Some((c, n)) = decode_command(rest).unwrap() {
            got.push(c);
            rest = &rest[n..];
        }
        assert!(rest.is_empty());
        assert_eq!(got[0], Command::OptNeg { version: 6, actions: 0x1ff, protocol: 0x1fffff });
        assert_eq!(
            got[1],
            Command::Macro { stage: b'M', pairs: vec![("{auth_authen}".into(), "alice".into()), ("i".into(), "Q1".into())] }
        );
        assert_eq!(got[2], Command::Connect { hostname: "client.example".into(), addr: Some("2001:db8::7".parse().unwrap()), port: 2525 });
        assert_eq!(got[3], Command::Helo("client.example".into()));
        assert_eq!(got[4], Command::Mail(vec!["<a@b.example>".into(), "SIZE=10".into()]));
        assert_eq!(got[5], Command::Header { name: b"Subject".to_vec(), value: b" caf\xc3\xa9\n\tfolded".to_vec() });
        assert_eq!(got[6], Command::Body(b"body\r\n".to_vec()));
        assert_eq!(got[7], Command::Eom);
        assert_eq!(decode_command(&buf[..3]).unwrap(), None);
    }

    #[test]
    fn sendmail_ipv6_addresses_and_bad_packets() {
        let mut d = b"h\x006".to_vec();
        d.extend_from_slice(&25u16.to_be_bytes());
        d.extend_from_slice(b"IPv6:2001:db8::1\0");
        let (c, _) = decode_command(&packet(b'C', &d)).unwrap().unwrap();
        assert_eq!(c, Command::Connect { hostname: "h".into(), addr: Some("2001:db8::1".parse().unwrap()), port: 25 });
        let (c, _) = decode_command(&packet(b'C', b"localhost\0U")).unwrap().unwrap();
        assert_eq!(c, Command::Connect { hostname: "localhost".into(), addr: None, port: 0 });
        assert_eq!(decode_command(&packet(b'C', b"h\x006\x00\x19not-an-ip\0")), Err(CommandError::Malformed('C')));
        assert_eq!(decode_command(&packet(b'z', b"")), Err(CommandError::Unknown('z')));
        assert_eq!(decode_command(&[0, 0, 0, 0]), Err(CommandError::TooLarge(0)));
        assert_eq!(decode_command(&[0x7f, 0, 0, 0, b'B']), Err(CommandError::TooLarge(0x7f00_0000)));
        assert_eq!(decode_command(&packet(b'O', b"short")), Err(CommandError::Malformed('O')));
    }

    /// What the milter side encodes, the MTA side decodes.
    #[test]
    fn replies_round_trip_to_the_mta_side() {
        let replies = [
            Reply::OptNeg(Negotiated { version: 6, actions: 0x11, protocol: 0x100000, macros: vec![] }),
            Reply::Continue,
            Reply::Accept,
            Reply::Tempfail,
            Reply::ReplyCode("550 5.7.26 Unauthenticated mail".into()),
            Reply::InsertHeader { index: 0, name: b"Authentication-Results".to_vec(), value: b" mx.test;\n\tdkim=pass".to_vec() },
            Reply::ChangeHeader { index: 2, name: b"X-Mx6-Client".to_vec(), value: Vec::new() },
            Reply::AddHeader { name: b"X-Mx6-Quarantine".to_vec(), value: b"dmarc".to_vec() },
        ];
        for r in replies {
            let (back, n) = decode(&encode_reply(&r)).unwrap().unwrap();
            assert_eq!(back, r);
            assert_eq!(n, encode_reply(&r).len());
        }
    }
}
