//! The Sendmail milter protocol, version 6 (libmilter's `mfdef.h`): packets
//! are a 4-byte big-endian length, a command byte and data. The MTA offers
//! actions and protocol steps in `OPTNEG`; the milter answers with the
//! actions it will use and the steps it wants skipped (`NO*`) or sent without
//! waiting for a reply (`NR_*`). This module encodes commands, decodes
//! replies, and applies the modifications a milter asked for at end of
//! message to a message.

/// Protocol version offered.
pub const VERSION: u32 = 6;

/// Actions (SMFIF_*) mx6 can carry out.
pub mod action {
    pub const ADDHDRS: u32 = 0x01;
    pub const CHGBODY: u32 = 0x02;
    pub const ADDRCPT: u32 = 0x04;
    pub const DELRCPT: u32 = 0x08;
    pub const CHGHDRS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHGFROM: u32 = 0x40;
    pub const ADDRCPT_PAR: u32 = 0x80;
    pub const SETSYMLIST: u32 = 0x100;
    pub const ALL: u32 = 0x1ff;
}

/// Protocol flags (SMFIP_*).
pub mod proto {
    pub const NOCONNECT: u32 = 0x01;
    pub const NOHELO: u32 = 0x02;
    pub const NOMAIL: u32 = 0x04;
    pub const NORCPT: u32 = 0x08;
    pub const NOBODY: u32 = 0x10;
    pub const NOHDRS: u32 = 0x20;
    pub const NOEOH: u32 = 0x40;
    pub const NR_HDR: u32 = 0x80;
    pub const NOUNKNOWN: u32 = 0x100;
    pub const NODATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJ: u32 = 0x800;
    pub const NR_CONN: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    pub const HDR_LEADSPC: u32 = 0x100000;
    /// Everything mx6 understands (offered in OPTNEG).
    pub const ALL: u32 = 0x1fffff;
}

/// Largest body chunk (libmilter's MILTER_CHUNK_SIZE).
pub const CHUNK: usize = 65535;

/// The steps of a conversation, for deciding what to send and await.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    Header,
    Eoh,
    Body,
    Eom,
}

impl Step {
    /// The macro class sent before this step (`D` packets name the command).
    pub fn command(self) -> u8 {
        match self {
            Step::Connect => b'C',
            Step::Helo => b'H',
            Step::Mail => b'M',
            Step::Rcpt => b'R',
            Step::Data => b'T',
            Step::Header => b'L',
            Step::Eoh => b'N',
            Step::Body => b'B',
            Step::Eom => b'E',
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Helo => "helo",
            Step::Mail => "mail",
            Step::Rcpt => "rcpt",
            Step::Data => "data",
            Step::Header => "header",
            Step::Eoh => "eoh",
            Step::Body => "body",
            Step::Eom => "eom",
        }
    }
}

/// What the milter agreed to in OPTNEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    pub actions: u32,
    pub protocol: u32,
}

impl Negotiated {
    /// Whether the milter wants this step at all.
    pub fn wants(&self, s: Step) -> bool {
        let no = match s {
            Step::Connect => proto::NOCONNECT,
            Step::Helo => proto::NOHELO,
            Step::Mail => proto::NOMAIL,
            Step::Rcpt => proto::NORCPT,
            Step::Data => proto::NODATA,
            Step::Header => proto::NOHDRS,
            Step::Eoh => proto::NOEOH,
            Step::Body => proto::NOBODY,
            Step::Eom => 0,
        };
        self.protocol & no == 0
    }
    /// Whether the milter answers this step.
    pub fn replies(&self, s: Step) -> bool {
        let nr = match s {
            Step::Connect => proto::NR_CONN,
            Step::Helo => proto::NR_HELO,
            Step::Mail => proto::NR_MAIL,
            Step::Rcpt => proto::NR_RCPT,
            Step::Data => proto::NR_DATA,
            Step::Header => proto::NR_HDR,
            Step::Eoh => proto::NR_EOH,
            Step::Body => proto::NR_BODY,
            Step::Eom => 0,
        };
        self.protocol & nr == 0
    }
}

fn packet(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + data.len());
    p.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
    p.push(cmd);
    p.extend_from_slice(data);
    p
}

fn cstrs(parts: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p.as_bytes());
        v.push(0);
    }
    v
}

/// OPTNEG: version 6, every action and protocol step mx6 supports.
pub fn optneg() -> Vec<u8> {
    let mut d = Vec::with_capacity(12);
    d.extend_from_slice(&VERSION.to_be_bytes());
    d.extend_from_slice(&action::ALL.to_be_bytes());
    d.extend_from_slice(&proto::ALL.to_be_bytes());
    packet(b'O', &d)
}

/// Macros for the step that follows (`D`).
pub fn macros(step: Step, pairs: &[(&str, String)]) -> Vec<u8> {
    let mut d = vec![step.command()];
    for (k, v) in pairs {
        d.extend_from_slice(k.as_bytes());
        d.push(0);
        d.extend_from_slice(v.as_bytes());
        d.push(0);
    }
    packet(b'D', &d)
}

/// The client's address for CONNECT.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Ipv4(std::net::Ipv4Addr, u16),
    Ipv6(std::net::Ipv6Addr, u16),
}

/// CONNECT: host name, family (`4`/`6`), port, address.
pub fn connect(hostname: &str, peer: Peer) -> Vec<u8> {
    let mut d = cstrs(&[hostname]);
    let (fam, port, addr) = match peer {
        Peer::Ipv4(a, p) => (b'4', p, a.to_string()),
        Peer::Ipv6(a, p) => (b'6', p, a.to_string()),
    };
    d.push(fam);
    d.extend_from_slice(&port.to_be_bytes());
    d.extend_from_slice(addr.as_bytes());
    d.push(0);
    packet(b'C', &d)
}

pub fn helo(name: &str) -> Vec<u8> {
    packet(b'H', &cstrs(&[name]))
}

/// MAIL: `<sender>` then ESMTP arguments.
pub fn mail(args: &[&str]) -> Vec<u8> {
    packet(b'M', &cstrs(args))
}

pub fn rcpt(args: &[&str]) -> Vec<u8> {
    packet(b'R', &cstrs(args))
}

pub fn data() -> Vec<u8> {
    packet(b'T', &[])
}

/// One header; `value` without the space after the colon (unless the milter
/// asked for HDR_LEADSPC) and with folded lines joined by LF, as Sendmail does.
pub fn header(name: &str, value: &str) -> Vec<u8> {
    packet(b'L', &cstrs(&[name, value]))
}

pub fn eoh() -> Vec<u8> {
    packet(b'N', &[])
}

/// Body chunks of at most [`CHUNK`] bytes.
pub fn body(chunk: &[u8]) -> Vec<u8> {
    packet(b'B', chunk)
}

pub fn eom() -> Vec<u8> {
    packet(b'E', &[])
}

pub fn abort() -> Vec<u8> {
    packet(b'A', &[])
}

pub fn quit() -> Vec<u8> {
    packet(b'Q', &[])
}

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
        name: String,
        value: String,
    },
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
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

/// Decode one reply from the front of `buf`: `Ok(None)` when more bytes are
/// needed, else the reply and the bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, Error> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > MAX_PACKET {
        return Err(Error::TooLarge(len));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let cmd = buf[4];
    let d = &buf[5..4 + len];
    let c = cmd as char;
    let strs = || -> Vec<String> {
        let mut v: Vec<String> = d.split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
        if d.last() == Some(&0) {
            v.pop();
        }
        v
    };
    let idx = || -> Result<(u32, Vec<String>), Error> {
        if d.len() < 4 {
            return Err(Error::Malformed(c));
        }
        let i = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        let mut v: Vec<String> = d[4..].split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
        if d.last() == Some(&0) {
            v.pop();
        }
        Ok((i, v))
    };
    let r = match cmd {
        b'O' => {
            if d.len() < 12 {
                return Err(Error::Malformed(c));
            }
            let u = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
            Reply::OptNeg(Negotiated { version: u(0), actions: u(4), protocol: u(8) })
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
        b'h' => match strs().as_slice() {
            [n, v, ..] => Reply::AddHeader { name: n.clone(), value: v.clone() },
            [n] => Reply::AddHeader { name: n.clone(), value: String::new() },
            _ => return Err(Error::Malformed(c)),
        },
        b'i' | b'm' => {
            let (index, v) = idx()?;
            let (name, value) = match v.as_slice() {
                [n, v, ..] => (n.clone(), v.clone()),
                [n] => (n.clone(), String::new()),
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
    Ok(Some((r, 4 + len)))
}

/// A message split into header fields (name, value as sent to milters) and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// (name, value): the value without the space after the colon, folded
    /// lines joined with LF.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Split a CRLF message into header fields and body.
pub fn parse(message: &[u8]) -> Parsed {
    let (head, body) = (mx6_message::header_section(message), mx6_message::body(message).to_vec());
    let text = String::from_utf8_lossy(head);
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push('\n');
                last.1.push_str(line);
            }
            continue;
        }
        let (n, v) = line.split_once(':').unwrap_or((line, ""));
        headers.push((n.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()));
    }
    Parsed { headers, body }
}

/// Render header fields and body back into a CRLF message.
pub fn render(p: &Parsed) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.body.len() + p.headers.len() * 64);
    for (n, v) in &p.headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.replace("\r\n", "\n").replace('\n', "\r\n").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&p.body);
    out
}

/// Apply one header or body modification (libmilter semantics: insert at a
/// 0-based position; change the `index`-th (1-based) field of that name, an
/// empty value deleting it; a replaced body replaces the whole body, its
/// chunks concatenated). Returns false for a reply that is not a message
/// modification.
pub fn modify(p: &mut Parsed, r: &Reply, body_replaced: &mut bool) -> bool {
    match r {
        Reply::AddHeader { name, value } => p.headers.push((name.clone(), value.clone())),
        Reply::InsertHeader { index, name, value } => {
            let at = (*index as usize).min(p.headers.len());
            p.headers.insert(at, (name.clone(), value.clone()));
        }
        Reply::ChangeHeader { index, name, value } => {
            let pos = p
                .headers
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| n.eq_ignore_ascii_case(name))
                .nth((*index).max(1) as usize - 1)
                .map(|(i, _)| i);
            match (pos, value.is_empty()) {
                (Some(i), true) => {
                    p.headers.remove(i);
                }
                (Some(i), false) => p.headers[i].1 = value.clone(),
                // libmilter: changing a field that does not exist adds it.
                (None, false) => p.headers.push((name.clone(), value.clone())),
                (None, true) => {}
            }
        }
        Reply::ReplaceBody(chunk) => {
            if !*body_replaced {
                p.body.clear();
                *body_replaced = true;
            }
            p.body.extend_from_slice(chunk);
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets() {
        assert_eq!(helo("mx.example"), b"\0\0\0\x0cHmx.example\0");
        let c = connect("mail.example", Peer::Ipv6("2001:db8::1".parse().unwrap(), 25));
        assert_eq!(&c[4..], b"Cmail.example\x006\x00\x192001:db8::1\0");
        let m = macros(Step::Mail, &[("{mail_addr}", "a@b".into())]);
        assert_eq!(&m[4..], b"DM{mail_addr}\0a@b\0");
        assert_eq!(optneg()[4], b'O');
    }

    #[test]
    fn replies_decode_in_pieces() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&packet(b'h', b"X-Test\0yes\0"));
        buf.extend_from_slice(&packet(b'm', b"\0\0\0\x01Subject\0\0"));
        buf.extend_from_slice(&packet(b'y', b"550 5.7.1 go away\0"));
        assert_eq!(decode(&buf[..3]).unwrap(), None);
        let (r, n) = decode(&buf).unwrap().unwrap();
        assert_eq!(r, Reply::AddHeader { name: "X-Test".into(), value: "yes".into() });
        let (r, m) = decode(&buf[n..]).unwrap().unwrap();
        assert_eq!(r, Reply::ChangeHeader { index: 1, name: "Subject".into(), value: String::new() });
        let (r, _) = decode(&buf[n + m..]).unwrap().unwrap();
        assert_eq!(r, Reply::ReplyCode("550 5.7.1 go away".into()));
        assert!(r.is_final());
        assert_eq!(decode(&packet(b'Z', b"")), Err(Error::Unknown('Z')));
        let neg = Negotiated { version: 6, actions: 1, protocol: proto::NOHELO | proto::NR_HDR };
        assert!(!neg.wants(Step::Helo) && neg.wants(Step::Mail) && !neg.replies(Step::Header) && neg.replies(Step::Eom));
    }

    #[test]
    fn modifications() {
        let msg = b"Received: from x\r\n\tby y\r\nSubject: hi\r\nSubject: again\r\n\r\nbody\r\n";
        let mut p = parse(msg);
        assert_eq!(p.headers[0], ("Received".into(), "from x\n\tby y".into()));
        let mut replaced = false;
        modify(&mut p, &Reply::InsertHeader { index: 0, name: "DKIM-Signature".into(), value: "v=1".into() }, &mut replaced);
        modify(&mut p, &Reply::ChangeHeader { index: 2, name: "subject".into(), value: "changed".into() }, &mut replaced);
        modify(&mut p, &Reply::ChangeHeader { index: 1, name: "Subject".into(), value: String::new() }, &mut replaced);
        modify(&mut p, &Reply::AddHeader { name: "X-Added".into(), value: "1".into() }, &mut replaced);
        modify(&mut p, &Reply::ReplaceBody(b"new ".to_vec()), &mut replaced);
        modify(&mut p, &Reply::ReplaceBody(b"body\r\n".to_vec()), &mut replaced);
        assert_eq!(
            String::from_utf8(render(&p)).unwrap(),
            "DKIM-Signature: v=1\r\nReceived: from x\r\n\tby y\r\nSubject: changed\r\nX-Added: 1\r\n\r\nnew body\r\n"
        );
    }
}
