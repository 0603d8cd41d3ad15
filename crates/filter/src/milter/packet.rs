//! The MTA's side of the conversation: OPTNEG, macros, and one packet per
//! SMTP event (libmilter's `SMFIC_*` commands).

use super::protocol::{action, proto, Step, VERSION};

pub(crate) fn packet(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + data.len());
    p.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
    p.push(cmd);
    p.extend_from_slice(data);
    p
}

/// A packet's command byte, its data, and the bytes it took.
pub(crate) type Frame<'a> = (u8, &'a [u8], usize);

/// One packet from the front of `buf`, either direction: `Ok(None)` when
/// more bytes are needed, else its command byte, its data and the bytes it
/// used; `Err(len)` for a length of zero or over `max`.
pub(crate) fn frame(buf: &[u8], max: usize) -> Result<Option<Frame<'_>>, usize> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > max {
        return Err(len);
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some((buf[4], &buf[5..4 + len], 4 + len)))
}

/// Each part followed by a NUL.
pub(crate) fn nul_terminated<P: AsRef<[u8]>>(parts: &[P]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p.as_ref());
        v.push(0);
    }
    v
}

/// NUL-terminated strings, kept as bytes (header values may be 8-bit).
pub(crate) fn nul_strings(d: &[u8]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = d.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
    if d.last() == Some(&0) {
        v.pop();
    }
    v
}

fn cstrs(parts: &[&str]) -> Vec<u8> {
    nul_terminated(parts)
}

/// OPTNEG: version 6, every action, and the protocol flags `protocol` the
/// MTA will honour (a subset of [`proto::ALL`]).
pub fn optneg(protocol: u32) -> Vec<u8> {
    let mut d = Vec::with_capacity(12);
    d.extend_from_slice(&VERSION.to_be_bytes());
    d.extend_from_slice(&action::ALL.to_be_bytes());
    d.extend_from_slice(&(protocol & proto::ALL).to_be_bytes());
    packet(b'O', &d)
}

/// Macros for the step that follows (`D`).
pub fn macros(step: Step, pairs: &[(&str, &str)]) -> Vec<u8> {
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

/// One header field: its name and its value as [`super::field_value`] gives it.
pub fn header(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(name.len() + value.len() + 2);
    d.extend_from_slice(name);
    d.push(0);
    d.extend_from_slice(value);
    d.push(0);
    packet(b'L', &d)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets() {
        assert_eq!(helo("mx.example"), b"\0\0\0\x0cHmx.example\0");
        let c = connect("mail.example", Peer::Ipv6("2001:db8::1".parse().unwrap(), 25));
        assert_eq!(&c[4..], b"Cmail.example\x006\x00\x192001:db8::1\0");
        let m = macros(Step::Mail, &[("{mail_addr}", "a@b")]);
        assert_eq!(&m[4..], b"DM{mail_addr}\0a@b\0");
        assert_eq!(optneg(proto::ALL)[4], b'O');
        assert_eq!(&header(b"X-8bit", b"caf\xc3\xa9")[4..], b"LX-8bit\0caf\xc3\xa9\0");
    }
}
